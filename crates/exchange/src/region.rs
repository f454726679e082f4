//! The exchange region itself: the sealed memfd, its header page, the DD heartbeat,
//! status word and control fields.
//!
//! The switch [`create`](ExchangeRegion::create)s a region per DD start and hands the
//! memfd to the DD, which [`attach`](ExchangeRegion::attach)es it. The memfd is
//! sealed against shrinking and growing before anyone else sees it, so a DD cannot
//! truncate it under the switch's mapping (which would turn the switch's next access
//! into a `SIGBUS`).
//!
//! Everything the DD writes here (heartbeat, status, control fields, and the header
//! words it must never write) is untrusted: each value is loaded once and checked.
//! The geometry a handle uses is the one this process validated when it created or
//! attached the region, never re-read from shared memory; [`ExchangeRegion::check_header`]
//! only *detects* a changed header so the switch can restart the DD.
//!
//! Limits: a region is meant for one DD lifetime (ring indices start at zero); a
//! restarted DD gets a fresh region. The meaning of the control fields is left to
//! the protocol above this crate.

use std::fs::File;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use driver_host::region::Region;
use vm_memory::{VolatileMemory, VolatileSlice};

use crate::layout::{
    Geometry, GeometryError, Layout, RingId, CONTROL_FIELDS, HEADER_WORDS, OFF_CONS_EVENT,
    OFF_CONTROL, OFF_HEARTBEAT, OFF_MAGIC, OFF_PROD_EVENT, OFF_SLOTS, OFF_STATUS, PAGE,
};

/// Error of this module.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// The requested or announced geometry breaks the rules.
    #[error("bad exchange geometry")]
    Geometry(#[from] GeometryError),
    /// Creating or sealing the memfd failed.
    #[error("cannot create the {len}-byte exchange memfd")]
    Create {
        /// Region length.
        len: u64,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Mapping the memfd failed.
    #[error("cannot map the exchange region")]
    Map(#[from] driver_host::region::RegionError),
    /// The file is shorter than its header says (or than a header page).
    #[error("exchange region file is {file} bytes, its header needs {needed}")]
    Length {
        /// File length.
        file: u64,
        /// Length the header announces (or one page).
        needed: u64,
    },
    /// A header word does not read what it must.
    #[error(
        "exchange header corrupt at offset {offset:#x}: found {found:#x}, expected {expected:#x}"
    )]
    Corrupt {
        /// Offset of the word.
        offset: u64,
        /// What it reads.
        found: u64,
        /// What it must read.
        expected: u64,
    },
    /// The DD status word holds no valid status.
    #[error("invalid DD status word {0:#x}")]
    BadStatus(u64),
    /// Control field index out of range.
    #[error("no control field {0} (there are {CONTROL_FIELDS})")]
    NoSuchControl(usize),
    /// A header field could not be accessed (cannot happen for a validated region).
    #[error("exchange region access at {0:#x} failed")]
    Access(u64),
}

/// What the DD says it is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdState {
    /// Set up, not yet serving (the initial value of a fresh region).
    Starting,
    /// Serving the rings.
    Running,
    /// Gave up; see the code.
    Failed,
}

/// The DD status word: a state and a DD-defined code (an errno, a reason number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DdStatus {
    /// State.
    pub state: DdState,
    /// Code; meaningful mostly with [`DdState::Failed`].
    pub code: u32,
}

impl DdStatus {
    /// The shared-memory encoding: state in bits 0..8, code in bits 32..64, the rest 0.
    pub fn to_raw(self) -> u64 {
        let s: u64 = match self.state {
            DdState::Starting => 0,
            DdState::Running => 1,
            DdState::Failed => 2,
        };
        s | (u64::from(self.code) << 32)
    }

    /// Decodes a status word read from shared memory.
    pub fn from_raw(raw: u64) -> Result<Self, RegionError> {
        let state = match raw & 0xffff_ffff {
            0 => DdState::Starting,
            1 => DdState::Running,
            2 => DdState::Failed,
            _ => return Err(RegionError::BadStatus(raw)),
        };
        Ok(Self {
            state,
            code: (raw >> 32) as u32,
        })
    }
}

/// A mapped exchange region with its validated layout.
#[derive(Debug)]
pub struct ExchangeRegion {
    region: Region,
    layout: Layout,
    header: [u64; HEADER_WORDS],
}

impl ExchangeRegion {
    /// Creates a fresh, zeroed, sealed region named `name` (visible in
    /// `/proc/PID/fd`) for `geometry`, and writes its header. Switch side.
    pub fn create(name: &str, geometry: Geometry) -> Result<Self, RegionError> {
        let layout = Layout::new(geometry)?;
        // A sealed memfd: a driver domain cannot resize it under our mapping.
        let region = Region::create(name, layout.total_len())?;
        if region.len() != layout.total_len() {
            return Err(RegionError::Length {
                file: region.len(),
                needed: layout.total_len(),
            });
        }
        let me = Self {
            region,
            layout,
            header: layout.header_words(),
        };
        for (i, w) in me.header.iter().enumerate() {
            me.u64_at(OFF_MAGIC + 8 * i as u64)?
                .store(*w, Ordering::Relaxed);
        }
        // Nobody asks for notifications until a peer arms: an event index just
        // behind index 0 is passed only after 2^32 frames.
        for ring in RingId::ALL {
            let base = layout.ring(ring);
            me.u32_at(base + OFF_CONS_EVENT)?
                .store(u32::MAX, Ordering::Relaxed);
            me.u32_at(base + OFF_PROD_EVENT)?
                .store(u32::MAX, Ordering::Relaxed);
        }
        std::sync::atomic::fence(Ordering::Release);
        Ok(me)
    }

    /// Maps a region received from the switch and validates its header. DD side (or
    /// a second view in tests).
    pub fn attach(file: File) -> Result<Self, RegionError> {
        let file_len = file
            .metadata()
            .map_err(|source| RegionError::Create { len: 0, source })?
            .len();
        if file_len < PAGE {
            return Err(RegionError::Length {
                file: file_len,
                needed: PAGE,
            });
        }
        // Map the header page first: the file may be too short for what it claims.
        let head = Region::map(
            file.try_clone().map_err(|source| RegionError::Create {
                len: file_len,
                source,
            })?,
            PAGE,
        )?;
        let geo_word = head
            .mapping()
            .get_atomic_ref::<AtomicU64>(OFF_SLOTS as usize)
            .map_err(|_| RegionError::Access(OFF_SLOTS))?
            .load(Ordering::Acquire);
        let layout = Layout::new(Geometry {
            slots: geo_word as u32,
            slot_size: (geo_word >> 32) as u32,
        })?;
        drop(head);
        if file_len < layout.total_len() {
            return Err(RegionError::Length {
                file: file_len,
                needed: layout.total_len(),
            });
        }
        let region = Region::map(file, layout.total_len())?;
        let me = Self {
            region,
            layout,
            header: layout.header_words(),
        };
        me.check_header()?;
        Ok(me)
    }

    /// The layout this process validated.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The geometry this process validated.
    pub fn geometry(&self) -> Geometry {
        self.layout.geometry()
    }

    /// Region length in bytes.
    pub fn len(&self) -> u64 {
        self.layout.total_len()
    }

    /// Always false (a region has at least a header page).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The memfd (to hand to the DD).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.region.fd()
    }

    /// The memfd as a `File`.
    pub fn file(&self) -> &File {
        self.region.file()
    }

    /// The underlying mapping (for tests and tools that inspect the raw bytes).
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Checks that the constant header words still read what this process
    /// validated. Only detection: no handle ever uses the shared geometry.
    pub fn check_header(&self) -> Result<(), RegionError> {
        match self.header_mismatch() {
            None => Ok(()),
            Some((offset, found)) => Err(RegionError::Corrupt {
                offset,
                found,
                expected: self.header[(offset / 8) as usize % HEADER_WORDS],
            }),
        }
    }

    /// The first header word that changed: `(offset, value read)`.
    pub(crate) fn header_mismatch(&self) -> Option<(u64, u64)> {
        for (i, want) in self.header.iter().enumerate() {
            let off = OFF_MAGIC + 8 * i as u64;
            let Ok(a) = self.u64_at(off) else {
                return Some((off, 0));
            };
            let found = a.load(Ordering::Relaxed);
            if found != *want {
                return Some((off, found));
            }
        }
        None
    }

    /// DD side: one unit of progress. Call it from the DD's loop, also when idle
    /// (a DD asleep in epoll should wake on a timer to beat).
    pub fn beat(&self) {
        if let Ok(a) = self.u64_at(OFF_HEARTBEAT) {
            // The DD is the only writer; a load and a store are enough.
            let v = a.load(Ordering::Relaxed);
            a.store(v.wrapping_add(1), Ordering::Release);
        }
    }

    /// Switch side: the heartbeat counter. A watchdog compares successive reads;
    /// the value itself is untrusted (any change counts as progress).
    pub fn heartbeat(&self) -> u64 {
        self.u64_at(OFF_HEARTBEAT)
            .map_or(0, |a| a.load(Ordering::Acquire))
    }

    /// DD side: publishes the DD's status.
    pub fn set_status(&self, status: DdStatus) {
        if let Ok(a) = self.u64_at(OFF_STATUS) {
            a.store(status.to_raw(), Ordering::Release);
        }
    }

    /// Switch side: the DD's status, read once and decoded.
    pub fn status(&self) -> Result<DdStatus, RegionError> {
        DdStatus::from_raw(self.u64_at(OFF_STATUS)?.load(Ordering::Acquire))
    }

    /// Reads control field `i` (untrusted when the DD may write it).
    pub fn control(&self, i: usize) -> Result<u64, RegionError> {
        Ok(self.control_at(i)?.load(Ordering::Acquire))
    }

    /// Writes control field `i`.
    pub fn set_control(&self, i: usize, value: u64) -> Result<(), RegionError> {
        self.control_at(i)?.store(value, Ordering::Release);
        Ok(())
    }

    fn control_at(&self, i: usize) -> Result<&AtomicU64, RegionError> {
        if i >= CONTROL_FIELDS {
            return Err(RegionError::NoSuchControl(i));
        }
        self.u64_at(OFF_CONTROL + 8 * i as u64)
    }

    /// The `u32` at `off` as an atomic (bounds and alignment checked).
    #[inline]
    pub(crate) fn u32_at(&self, off: u64) -> Result<&AtomicU32, RegionError> {
        self.region
            .mapping()
            .get_atomic_ref::<AtomicU32>(off as usize)
            .map_err(|_| RegionError::Access(off))
    }

    /// The `u64` at `off` as an atomic (bounds and alignment checked).
    #[inline]
    pub(crate) fn u64_at(&self, off: u64) -> Result<&AtomicU64, RegionError> {
        self.region
            .mapping()
            .get_atomic_ref::<AtomicU64>(off as usize)
            .map_err(|_| RegionError::Access(off))
    }

    /// `len` bytes at `off`, if in bounds.
    #[inline]
    pub(crate) fn bytes(&self, off: u64, len: usize) -> Option<VolatileSlice<'_>> {
        self.region.mapping().get_slice(off as usize, len).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (ExchangeRegion, ExchangeRegion) {
        let sw = ExchangeRegion::create("xchg-test", Geometry::default()).unwrap();
        let dd = ExchangeRegion::attach(sw.file().try_clone().unwrap()).unwrap();
        (sw, dd)
    }

    #[test]
    fn create_attach_and_header() {
        let (sw, dd) = pair();
        assert_eq!(dd.geometry(), Geometry::default());
        // A header page and three rings of a control page and 256 * 2 KiB slots.
        assert_eq!(sw.len(), 4096 + 3 * (4096 + 256 * 2048));
        assert_eq!(dd.len(), sw.len());
        assert_eq!(sw.file().metadata().unwrap().len(), sw.len());
        sw.check_header().unwrap();
        dd.check_header().unwrap();
    }

    #[test]
    fn sealed_against_resize() {
        let (sw, _dd) = pair();
        assert!(rustix::fs::ftruncate(sw.fd(), 4096).is_err());
        assert!(rustix::fs::ftruncate(sw.fd(), sw.len() * 2).is_err());
        let seals = rustix::fs::fcntl_get_seals(sw.fd()).unwrap();
        assert!(seals.contains(rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::GROW));
    }

    #[test]
    fn heartbeat_status_control() {
        let (sw, dd) = pair();
        assert_eq!(sw.heartbeat(), 0);
        dd.beat();
        dd.beat();
        assert_eq!(sw.heartbeat(), 2);
        assert_eq!(sw.status().unwrap().state, DdState::Starting);
        let failed = DdStatus {
            state: DdState::Failed,
            code: 0xdead,
        };
        dd.set_status(failed);
        assert_eq!(sw.status().unwrap(), failed);
        dd.set_control(3, 77).unwrap();
        assert_eq!(sw.control(3).unwrap(), 77);
        assert!(matches!(
            sw.control(CONTROL_FIELDS),
            Err(RegionError::NoSuchControl(_))
        ));
    }

    #[test]
    fn every_status_round_trips_through_its_documented_encoding() {
        let (sw, dd) = pair();
        for (state, raw_state) in [
            (DdState::Starting, 0),
            (DdState::Running, 1),
            (DdState::Failed, 2),
        ] {
            let st = DdStatus {
                state,
                code: 0x8000_0001,
            };
            let raw = raw_state | (0x8000_0001 << 32);
            assert_eq!(st.to_raw(), raw);
            assert_eq!(DdStatus::from_raw(raw).unwrap(), st);
            dd.set_status(st);
            assert_eq!(sw.u64_at(OFF_STATUS).unwrap().load(Ordering::Relaxed), raw);
            assert_eq!(sw.status().unwrap(), st);
        }
        assert!(!sw.is_empty());
    }

    /// Control field `i` is the `u64` at `OFF_CONTROL + 8 * i`, and no field
    /// aliases another or the heartbeat and status words below them.
    #[test]
    fn control_fields_sit_at_their_documented_offsets() {
        let (sw, dd) = pair();
        for i in 0..CONTROL_FIELDS {
            dd.set_control(i, 0x1000 + i as u64).unwrap();
        }
        for i in 0..CONTROL_FIELDS {
            let raw = sw.u64_at(OFF_CONTROL + 8 * i as u64).unwrap();
            assert_eq!(raw.load(Ordering::Relaxed), 0x1000 + i as u64);
            assert_eq!(sw.control(i).unwrap(), 0x1000 + i as u64);
        }
        assert_eq!(sw.heartbeat(), 0);
        assert_eq!(sw.status().unwrap().state, DdState::Starting);
        sw.check_header().unwrap();
        assert!(matches!(
            dd.set_control(CONTROL_FIELDS, 1),
            Err(RegionError::NoSuchControl(CONTROL_FIELDS))
        ));
    }

    /// A changed header word is reported with its offset, what it reads and what it
    /// must read, for each of the constant words.
    #[test]
    fn a_corrupt_header_word_is_reported_exactly() {
        let (sw, dd) = pair();
        let words = sw.layout().header_words();
        for (i, want) in words.iter().enumerate() {
            let off = OFF_MAGIC + 8 * i as u64;
            dd.u64_at(off).unwrap().store(!*want, Ordering::Relaxed);
            match sw.check_header() {
                Err(RegionError::Corrupt {
                    offset,
                    found,
                    expected,
                }) => assert_eq!((offset, found, expected), (off, !*want, *want)),
                other => panic!("word {i}: {other:?}"),
            }
            dd.u64_at(off).unwrap().store(*want, Ordering::Relaxed);
            sw.check_header().unwrap();
        }
    }

    #[test]
    fn hostile_status_word() {
        let (sw, dd) = pair();
        dd.u64_at(OFF_STATUS)
            .unwrap()
            .store(0x1234_0000_0007, Ordering::Relaxed);
        assert!(matches!(
            sw.status(),
            Err(RegionError::BadStatus(0x1234_0000_0007))
        ));
        dd.u64_at(OFF_STATUS)
            .unwrap()
            .store(1 << 20, Ordering::Relaxed);
        assert!(matches!(sw.status(), Err(RegionError::BadStatus(_))));
    }

    #[test]
    fn corrupt_header_detected_and_attach_refused() {
        let (sw, dd) = pair();
        // A malicious DD doubles the slot count.
        let g = Geometry::default();
        dd.u64_at(OFF_SLOTS).unwrap().store(
            u64::from(g.slots * 2) | (u64::from(g.slot_size) << 32),
            Ordering::Relaxed,
        );
        assert!(matches!(
            sw.check_header(),
            Err(RegionError::Corrupt {
                offset: OFF_SLOTS,
                ..
            })
        ));
        // The file is now shorter than the header claims.
        assert!(matches!(
            ExchangeRegion::attach(sw.file().try_clone().unwrap()),
            Err(RegionError::Length { .. })
        ));
        // Nonsense geometry.
        dd.u64_at(OFF_SLOTS).unwrap().store(3, Ordering::Relaxed);
        assert!(matches!(
            ExchangeRegion::attach(sw.file().try_clone().unwrap()),
            Err(RegionError::Geometry(_))
        ));
        // Wrong magic.
        dd.u64_at(OFF_SLOTS).unwrap().store(
            u64::from(g.slots) | (u64::from(g.slot_size) << 32),
            Ordering::Relaxed,
        );
        dd.u64_at(OFF_MAGIC).unwrap().store(0, Ordering::Relaxed);
        assert!(matches!(
            ExchangeRegion::attach(sw.file().try_clone().unwrap()),
            Err(RegionError::Corrupt { offset: 0, .. })
        ));
    }

    #[test]
    fn attach_refuses_short_files() {
        let f =
            File::from(rustix::fs::memfd_create("short", rustix::fs::MemfdFlags::CLOEXEC).unwrap());
        assert!(matches!(
            ExchangeRegion::attach(f.try_clone().unwrap()),
            Err(RegionError::Length { .. })
        ));
        f.set_len(4096).unwrap();
        // A zero header: geometry 0 slots.
        assert!(matches!(
            ExchangeRegion::attach(f),
            Err(RegionError::Geometry(_))
        ));
    }
}
