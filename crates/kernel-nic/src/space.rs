//! The driver space of a ring kind (AF_PACKET, AF_XDP): one reservation of
//! address space with each piece (the driver's state memfd, the socket's
//! rings, a UMEM) mapped at its layout's offset. The driver domain and the
//! switch (for the driver's twin) build the same space from the same
//! descriptors, so a driver address means the same in both.

use std::os::fd::{BorrowedFd, OwnedFd};

use vm_memory::MmapRegion;

use crate::sys;

/// Why a driver space could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    /// The space or a piece does not fit this process's address size.
    #[error("the driver space's {0} does not fit this process")]
    Size(&'static str),
    /// The address space could not be reserved.
    #[error("cannot reserve the driver space")]
    Reserve(#[source] vm_memory::mmap::MmapRegionError),
    /// A piece could not be placed in the space.
    #[error("cannot place the {what} in the driver's space")]
    Piece {
        /// Which piece.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One piece of a driver space: `len` bytes of `fd` from `file_offset`, at
/// `at` in the space (both page multiples).
pub(crate) struct Piece<'a> {
    pub at: u64,
    pub len: u64,
    pub fd: BorrowedFd<'a>,
    pub file_offset: u64,
    pub what: &'static str,
}

/// Reserves `len` bytes and maps each piece at its place. Dropping the mapping
/// unmaps all of it.
pub(crate) fn map_pieces(len: u64, pieces: &[Piece<'_>]) -> Result<MmapRegion<()>, SpaceError> {
    let len = usize::try_from(len).map_err(|_| SpaceError::Size("size"))?;
    let space = MmapRegion::<()>::build(
        None,
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
    )
    .map_err(SpaceError::Reserve)?;
    for p in pieces {
        let (Ok(at), Ok(len)) = (usize::try_from(p.at), usize::try_from(p.len)) else {
            return Err(SpaceError::Size(p.what));
        };
        sys::map_shared_within(&space, at, len, p.fd, p.file_offset).map_err(|source| {
            SpaceError::Piece {
                what: p.what,
                source,
            }
        })?;
    }
    Ok(space)
}

/// A memfd of `len` bytes for a driver's state or a UMEM, close-on-exec, sealed
/// against resizing (a domain that shrank it would make every mapping of it
/// fault).
pub(crate) fn sealed_memfd(name: &str, len: u64) -> rustix::io::Result<OwnedFd> {
    let flags = rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING;
    let fd = rustix::fs::memfd_create(name, flags)?;
    rustix::fs::ftruncate(&fd, len)?;
    let seals =
        rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::GROW | rustix::fs::SealFlags::SEAL;
    rustix::fs::fcntl_add_seals(&fd, seals)?;
    Ok(fd)
}
