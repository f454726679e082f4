//! The driver's memory region: one memfd, mapped shared at one place.
//!
//! The mapping is a vm-memory [`GuestRegionMmap`] at guest address 0, so a
//! driver-domain address, a "guest physical" address in the vhost-user memory
//! table, and a [`MemoryRegionAddress`] are the same number. The memfd can be
//! handed to a NIC (vhost-user `SET_MEM_TABLE`) and, later, to another process.
//!
//! Limits: the region is fixed-size; it is not sealed (a later issue may add seals
//! when the fd crosses a trust boundary).

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};

use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryRegion, GuestRegionMmap, MemoryRegionAddress, MmapRegion,
    VolatileSlice,
};

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// `memfd_create` or `ftruncate` failed.
    #[error("cannot create a {len}-byte memfd region")]
    CreateMemfd {
        /// Requested size.
        len: u64,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Mapping the memfd failed.
    #[error("cannot map the {len}-byte region")]
    MapRegion {
        /// Requested size.
        len: u64,
        /// Cause.
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    /// The size is zero or does not fit this process's address space.
    #[error("invalid region size {0}")]
    InvalidSize(u64),
    /// The file is shorter than the region.
    #[error("the region file has {actual} bytes, the region needs {len}")]
    FileTooShort {
        /// Requested size.
        len: u64,
        /// The file's size.
        actual: u64,
    },
    /// `GuestRegionMmap::new` refused the mapping (address overflow).
    #[error("cannot place the region at address 0")]
    PlaceRegion,
}

/// A memfd-backed region mapped into this process.
#[derive(Debug)]
pub struct Region {
    file: File,
    mem: GuestRegionMmap,
    len: u64,
}

impl Region {
    /// Creates a zeroed region of `len` bytes (rounded up to 4 KiB) named `name`
    /// (visible in `/proc/PID/fd`).
    pub fn create(name: &str, len: u64) -> Result<Self, RegionError> {
        Self::create_with(name, len, true)
    }

    /// Like [`Region::create`] but without seals: whoever gets the fd may shrink the
    /// file. For tests that play a client truncating its memory under a device.
    pub fn create_unsealed(name: &str, len: u64) -> Result<Self, RegionError> {
        Self::create_with(name, len, false)
    }

    fn create_with(name: &str, len: u64, seal: bool) -> Result<Self, RegionError> {
        let len = len.div_ceil(4096) * 4096;
        if len == 0 {
            return Err(RegionError::InvalidSize(len));
        }
        let flags = rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING;
        let fd = rustix::fs::memfd_create(name, flags).map_err(|e| RegionError::CreateMemfd {
            len,
            source: e.into(),
        })?;
        rustix::fs::ftruncate(&fd, len).map_err(|e| RegionError::CreateMemfd {
            len,
            source: e.into(),
        })?;
        // Every peer this region is shared with (a NIC, later a driver domain) gets
        // this fd. Sealed, its size can no longer change: a peer that truncated it
        // would otherwise make our next access a SIGBUS.
        if seal {
            let seals = rustix::fs::SealFlags::SHRINK
                | rustix::fs::SealFlags::GROW
                | rustix::fs::SealFlags::SEAL;
            rustix::fs::fcntl_add_seals(&fd, seals).map_err(|e| RegionError::CreateMemfd {
                len,
                source: e.into(),
            })?;
        }
        Self::map(File::from(fd), len)
    }

    /// Maps an existing region file of `len` bytes (a memfd received from elsewhere).
    pub fn map(file: File, len: u64) -> Result<Self, RegionError> {
        let size = usize::try_from(len).map_err(|_| RegionError::InvalidSize(len))?;
        if size == 0 {
            return Err(RegionError::InvalidSize(len));
        }
        // A file shorter than the mapping would turn accesses past its end into
        // SIGBUS.
        let actual = file
            .metadata()
            .map_err(|e| RegionError::CreateMemfd { len, source: e })?
            .len();
        if actual < len {
            return Err(RegionError::FileTooShort { len, actual });
        }
        let map_file = file
            .try_clone()
            .map_err(|e| RegionError::CreateMemfd { len, source: e })?;
        let mapping = MmapRegion::from_file(FileOffset::new(map_file, 0), size)
            .map_err(|source| RegionError::MapRegion { len, source })?;
        let mem = GuestRegionMmap::new(mapping, GuestAddress(0)).ok_or(RegionError::PlaceRegion)?;
        Ok(Self { file, mem, len })
    }

    /// A region over a mapping made elsewhere: an AF_XDP driver's space, whose
    /// pieces (state memfd, the socket's rings, the UMEM) lie side by side in one
    /// reservation (`kernel_nic::xdp::map_space`). `file` is its first piece, the
    /// driver's state memfd.
    pub fn from_mapping(file: File, mapping: MmapRegion) -> Result<Self, RegionError> {
        let len = mapping.size() as u64;
        let mem = GuestRegionMmap::new(mapping, GuestAddress(0)).ok_or(RegionError::PlaceRegion)?;
        Ok(Self { file, mem, len })
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the region is empty (never, for a created region).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memfd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The memfd as a `File`.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The mapping.
    pub fn mem(&self) -> &GuestRegionMmap {
        &self.mem
    }

    /// The raw mapping (offsets are driver-domain addresses): for accessors that
    /// need no region lookup.
    #[inline]
    pub fn mapping(&self) -> &MmapRegion {
        &self.mem
    }

    /// This process's virtual address of region offset 0 (for vhost-user ring
    /// addresses and the memory table's `userspace_addr`).
    pub fn host_addr(&self) -> u64 {
        self.mem
            .get_host_address(MemoryRegionAddress(0))
            .map_or(0, |p| p as usize as u64)
    }

    /// `len` bytes at offset `addr` as a volatile slice, if in bounds.
    pub fn slice(&self, addr: u64, len: usize) -> Option<VolatileSlice<'_>> {
        self.mem.get_slice(MemoryRegionAddress(addr), len).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn a_peer_cannot_resize_the_region() {
        let r = Region::create("test-sealed", 8192).unwrap();
        // What a hostile NIC holding the fd would try.
        assert!(rustix::fs::ftruncate(r.file(), 4096).is_err());
        assert!(rustix::fs::ftruncate(r.file(), 1 << 20).is_err());
        assert_eq!(r.file().metadata().unwrap().len(), 8192);
    }

    #[test]
    fn a_short_file_is_refused() {
        let fd = rustix::fs::memfd_create("short", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 4096).unwrap();
        assert!(matches!(
            Region::map(File::from(fd), 8192),
            Err(RegionError::FileTooShort {
                len: 8192,
                actual: 4096
            })
        ));
    }

    #[test]
    fn create_map_and_share() {
        let r = Region::create("test-region", 5000).unwrap();
        assert_eq!(r.len(), 8192);
        r.mem()
            .write_obj(0x1234_5678u32, MemoryRegionAddress(16))
            .unwrap();
        // A second mapping of the same memfd sees the write.
        let r2 = Region::map(r.file().try_clone().unwrap(), r.len()).unwrap();
        assert_eq!(
            r2.mem().read_obj::<u32>(MemoryRegionAddress(16)).unwrap(),
            0x1234_5678
        );
        assert!(r.slice(8190, 4).is_none());
        assert_ne!(r.host_addr(), 0);
    }
}
