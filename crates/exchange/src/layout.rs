//! Where everything lives in the exchange region, and the geometry rules.
//!
//! ```text
//! offset 0            header page (4096 bytes)
//!   0x000  magic u64 ("TWINXCHG")     0x008  version u32, reserved u32
//!   0x010  slots u32, slot_size u32   0x018  total length u64
//!   0x020  to_nic ring offset u64     0x028  from_nic ring offset u64
//!   0x030  upcalls ring offset u64
//!   0x080  heartbeat u64 (DD writes)  0x088  DD status u64 (DD writes)
//!   0x100  CONTROL_FIELDS x u64 control fields
//! 0x1000              to_nic ring: control page, then `slots` slots
//! ...                 from_nic ring: control page, then `slots` slots
//! ...                 upcalls ring: control page, then `slots` slots (a twin's
//!                     slow-path requests to the DD, one small message per slot)
//! ```
//!
//! A ring's control page has the producer's cache line at offset 0 (producer index,
//! producer event index) and the consumer's at offset [`CONSUMER_LINE`] (consumer
//! index, consumer event index), 128 bytes apart so that the adjacent-line
//! prefetcher does not pair them. A slot is a [`SLOT_HEADER`]-byte header (frame
//! length `u32` at offset 0, the rest reserved) followed by the frame bytes.
//!
//! Limits: one geometry for all three rings; this module only computes offsets, it never
//! touches memory.

/// Magic number at offset 0 ("TWINXCHG" in little-endian bytes).
pub const MAGIC: u64 = u64::from_le_bytes(*b"TWINXCHG");
/// Layout version.
pub const VERSION: u32 = 2;
/// Page size the layout is built from.
pub const PAGE: u64 = 4096;

/// Header: magic (`u64`).
pub const OFF_MAGIC: u64 = 0x000;
/// Header: version (`u32`), then a reserved `u32`.
pub const OFF_VERSION: u64 = 0x008;
/// Header: slots per ring (`u32`).
pub const OFF_SLOTS: u64 = 0x010;
/// Header: slot size in bytes (`u32`).
pub const OFF_SLOT_SIZE: u64 = 0x014;
/// Header: total region length (`u64`).
pub const OFF_TOTAL_LEN: u64 = 0x018;
/// Header: offset of the `to_nic` ring (`u64`).
pub const OFF_TO_NIC: u64 = 0x020;
/// Header: offset of the `from_nic` ring (`u64`).
pub const OFF_FROM_NIC: u64 = 0x028;
/// Header: offset of the `upcalls` ring (`u64`).
pub const OFF_UPCALLS: u64 = 0x030;
/// Number of `u64` header words that never change after creation (0x00..0x38).
pub const HEADER_WORDS: usize = 7;
/// Header: heartbeat counter (`u64`), incremented by the DD.
pub const OFF_HEARTBEAT: u64 = 0x080;
/// Header: DD status word (`u64`), written by the DD.
pub const OFF_STATUS: u64 = 0x088;
/// Header: first control field (`u64` each).
pub const OFF_CONTROL: u64 = 0x100;
/// Number of `u64` control fields (0x100..0x1c0 of the header page).
pub const CONTROL_FIELDS: usize = 24;

/// Ring control page: producer index (`u32`), written by the producer.
pub const OFF_PROD_IDX: u64 = 0x00;
/// Ring control page: producer event index (`u32`): "notify me when the consumer
/// index passes this", written by a producer waiting for space.
pub const OFF_PROD_EVENT: u64 = 0x04;
/// Ring control page: offset of the consumer's cache line.
pub const CONSUMER_LINE: u64 = 0x80;
/// Ring control page: consumer index (`u32`), written by the consumer.
pub const OFF_CONS_IDX: u64 = CONSUMER_LINE;
/// Ring control page: consumer event index (`u32`): "notify me when the producer
/// index passes this", written by a consumer about to sleep.
pub const OFF_CONS_EVENT: u64 = CONSUMER_LINE + 0x04;

/// Bytes of a slot before the frame: the frame length (`u32`) and reserved space.
pub const SLOT_HEADER: u32 = 16;
/// Shortest valid frame: an Ethernet header.
pub const MIN_FRAME: u32 = 14;
/// Most slots per ring.
pub const MAX_SLOTS: u32 = 32768;
/// Smallest slot size.
pub const MIN_SLOT_SIZE: u32 = 64;
/// Largest slot size.
pub const MAX_SLOT_SIZE: u32 = 65536;

/// Error of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    /// Slots per ring is not a power of two in `2..=MAX_SLOTS`.
    #[error("slots per ring must be a power of two in 2..={MAX_SLOTS}, got {0}")]
    BadSlots(u32),
    /// Slot size not a multiple of 64 in `MIN_SLOT_SIZE..=MAX_SLOT_SIZE`.
    #[error("slot size must be a multiple of 64 in {MIN_SLOT_SIZE}..={MAX_SLOT_SIZE}, got {0}")]
    BadSlotSize(u32),
}

/// Ring geometry (the same for both rings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Slots per ring (a power of two).
    pub slots: u32,
    /// Bytes per slot, header included (a multiple of 64).
    pub slot_size: u32,
}

impl Default for Geometry {
    /// 256 slots of 2048 bytes (frames up to 2032 bytes).
    fn default() -> Self {
        Self {
            slots: 256,
            slot_size: 2048,
        }
    }
}

impl Geometry {
    /// Checks the rules.
    pub fn validate(self) -> Result<Self, GeometryError> {
        if self.slots < 2 || self.slots > MAX_SLOTS || !self.slots.is_power_of_two() {
            return Err(GeometryError::BadSlots(self.slots));
        }
        if !(MIN_SLOT_SIZE..=MAX_SLOT_SIZE).contains(&self.slot_size)
            || !self.slot_size.is_multiple_of(64)
        {
            return Err(GeometryError::BadSlotSize(self.slot_size));
        }
        Ok(self)
    }

    /// Largest frame a slot holds.
    pub fn frame_capacity(self) -> u32 {
        self.slot_size - SLOT_HEADER
    }
}

/// Which ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingId {
    /// Switch to DD: the switch produces.
    ToNic,
    /// DD to switch: the DD produces.
    FromNic,
    /// Switch to DD: upcalls from the twin (the switch produces).
    Upcalls,
}

impl RingId {
    /// Every ring, in layout order.
    pub const ALL: [RingId; 3] = [RingId::ToNic, RingId::FromNic, RingId::Upcalls];
}

/// All offsets of a region with a given (validated) geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    geometry: Geometry,
    ring_len: u64,
}

impl Layout {
    /// The layout for `geometry`.
    pub fn new(geometry: Geometry) -> Result<Self, GeometryError> {
        let geometry = geometry.validate()?;
        // At most 32768 * 65536 = 2 GiB per ring: no overflow in u64.
        let slots_len = u64::from(geometry.slots) * u64::from(geometry.slot_size);
        let ring_len = PAGE + slots_len.div_ceil(PAGE) * PAGE;
        Ok(Self { geometry, ring_len })
    }

    /// The geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Total region length.
    pub fn total_len(&self) -> u64 {
        PAGE + 3 * self.ring_len
    }

    /// Offset of a ring's control page.
    pub fn ring(&self, id: RingId) -> u64 {
        match id {
            RingId::ToNic => PAGE,
            RingId::FromNic => PAGE + self.ring_len,
            RingId::Upcalls => PAGE + 2 * self.ring_len,
        }
    }

    /// Offset of a ring's first slot.
    pub fn slots(&self, id: RingId) -> u64 {
        self.ring(id) + PAGE
    }

    /// Offset of the slot that ring index `idx` maps to.
    pub fn slot(&self, id: RingId, idx: u32) -> u64 {
        let i = idx & (self.geometry.slots - 1);
        self.slots(id) + u64::from(i) * u64::from(self.geometry.slot_size)
    }

    /// The header words `0x00..0x38` as they must read forever.
    pub fn header_words(&self) -> [u64; HEADER_WORDS] {
        [
            MAGIC,
            u64::from(VERSION),
            u64::from(self.geometry.slots) | (u64::from(self.geometry.slot_size) << 32),
            self.total_len(),
            self.ring(RingId::ToNic),
            self.ring(RingId::FromNic),
            self.ring(RingId::Upcalls),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_rules() {
        assert!(Geometry::default().validate().is_ok());
        assert_eq!(
            Geometry {
                slots: 3,
                slot_size: 2048
            }
            .validate(),
            Err(GeometryError::BadSlots(3))
        );
        assert_eq!(
            Geometry {
                slots: 65536,
                slot_size: 2048
            }
            .validate(),
            Err(GeometryError::BadSlots(65536))
        );
        assert_eq!(
            Geometry {
                slots: 4,
                slot_size: 100
            }
            .validate(),
            Err(GeometryError::BadSlotSize(100))
        );
        assert_eq!(
            Geometry {
                slots: 4,
                slot_size: 0
            }
            .validate(),
            Err(GeometryError::BadSlotSize(0))
        );
    }

    #[test]
    fn geometry_bounds_are_inclusive() {
        let g = |slots, slot_size| Geometry { slots, slot_size }.validate();
        // The smallest and largest of each rule are valid...
        assert_eq!(
            g(2, 64),
            Ok(Geometry {
                slots: 2,
                slot_size: 64
            })
        );
        assert!(g(MAX_SLOTS, MAX_SLOT_SIZE).is_ok());
        // ...one step outside is not.
        assert_eq!(g(1, 64), Err(GeometryError::BadSlots(1)));
        assert_eq!(g(0, 64), Err(GeometryError::BadSlots(0)));
        assert_eq!(
            g(2 * MAX_SLOTS, 64),
            Err(GeometryError::BadSlots(2 * MAX_SLOTS))
        );
        assert_eq!(g(6, 64), Err(GeometryError::BadSlots(6)));
        assert_eq!(g(2, 32), Err(GeometryError::BadSlotSize(32)));
        assert_eq!(
            g(2, MAX_SLOT_SIZE + 64),
            Err(GeometryError::BadSlotSize(MAX_SLOT_SIZE + 64))
        );
        // In range but not a multiple of 64.
        assert_eq!(g(2, 96), Err(GeometryError::BadSlotSize(96)));
        // A slot count error is reported before a slot size error.
        assert_eq!(g(3, 1), Err(GeometryError::BadSlots(3)));
    }

    /// The control page is shared by two processes: its offsets are the ones the
    /// module documentation gives, the producer's and the consumer's lines 128 bytes
    /// apart.
    #[test]
    fn ring_control_offsets_are_the_documented_ones() {
        assert_eq!(
            [OFF_PROD_IDX, OFF_PROD_EVENT, OFF_CONS_IDX, OFF_CONS_EVENT],
            [0x00, 0x04, 0x80, 0x84]
        );
    }

    #[test]
    fn layout_reports_its_geometry_and_all_three_rings() {
        let g = Geometry {
            slots: 8,
            slot_size: 1024,
        };
        let l = Layout::new(g).unwrap();
        assert_eq!(l.geometry(), g);
        // 8 KiB of slots: two pages after each control page.
        assert_eq!(l.ring(RingId::ToNic), 0x1000);
        assert_eq!(l.ring(RingId::FromNic), 0x4000);
        assert_eq!(l.ring(RingId::Upcalls), 0x7000);
        assert_eq!(l.slots(RingId::Upcalls), 0x8000);
        assert_eq!(l.slot(RingId::Upcalls, 7), 0x8000 + 7 * 1024);
        assert_eq!(l.slot(RingId::Upcalls, 8), 0x8000);
        assert_eq!(l.total_len(), 0xa000);
        assert_eq!(
            l.header_words(),
            [MAGIC, 2, 8 | (1024 << 32), 0xa000, 0x1000, 0x4000, 0x7000]
        );
        assert_eq!(g.frame_capacity(), 1024 - 16);
    }

    #[test]
    fn offsets() {
        let l = Layout::new(Geometry {
            slots: 4,
            slot_size: 64,
        })
        .unwrap();
        assert_eq!(l.ring(RingId::ToNic), 4096);
        assert_eq!(l.slots(RingId::ToNic), 8192);
        assert_eq!(l.ring(RingId::FromNic), 12288);
        assert_eq!(l.total_len(), 28672);
        assert_eq!(l.slot(RingId::FromNic, 5), 16384 + 64);
        let big = Layout::new(Geometry {
            slots: MAX_SLOTS,
            slot_size: MAX_SLOT_SIZE,
        })
        .unwrap();
        assert_eq!(big.total_len(), 4096 + 3 * (4096 + (1u64 << 31)));
    }
}
