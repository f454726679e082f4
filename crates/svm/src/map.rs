//! The validated access map and the per-operation translation tables built from it.

use driver_env::access::{Access, AccessRange};

use crate::fault::{Op, SvmError};

/// A half-open span `[start, end)` of driver-domain addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: u64,
    pub(crate) end: u64,
}

impl Span {
    /// A span that covers no access (`start > end`).
    pub(crate) const NOTHING: Span = Span {
        start: u64::MAX,
        end: 0,
    };

    /// Whether `[addr, addr + size)` lies inside this span (overflow-safe: `size` is
    /// compared with the room left, never added to `addr`). A zero-size access is
    /// inside if `addr` lies in `[start, end]`.
    #[inline(always)]
    pub(crate) fn covers(self, addr: u64, size: u64) -> bool {
        addr >= self.start && addr <= self.end && size <= self.end - addr
    }
}

/// Validates `map` against a region of `region_len` bytes and returns it sorted by
/// start.
pub(crate) fn validate(map: &[AccessRange], region_len: u64) -> Result<Vec<AccessRange>, SvmError> {
    for r in map {
        if r.len == 0 {
            return Err(SvmError::EmptyRange {
                name: r.name,
                start: r.start,
            });
        }
        match r.start.checked_add(r.len) {
            Some(end) if end <= region_len => {}
            _ => {
                return Err(SvmError::OutsideRegion {
                    name: r.name,
                    start: r.start,
                    len: r.len,
                    region_len,
                })
            }
        }
    }
    let mut sorted = map.to_vec();
    sorted.sort_by_key(|r| r.start);
    for w in sorted.windows(2) {
        // Both ends are <= region_len (checked above), so no overflow.
        if w[0].start + w[0].len > w[1].start {
            return Err(SvmError::Overlap {
                first: w[0].name,
                second: w[1].name,
                at: w[1].start,
            });
        }
    }
    Ok(sorted)
}

/// Whether `access` allows `op`.
#[inline]
pub(crate) fn permits(access: Access, op: Op) -> bool {
    match op {
        Op::Read => access.can_read(),
        Op::Write => access.can_write(),
    }
}

/// The spans of a sorted, validated map where `op` is allowed, adjacent ones merged
/// (so an access spanning, say, a read-write and a read-only range is one span for
/// reads). Gaps and ranges that forbid `op` are simply absent.
pub(crate) fn spans_for(sorted: &[AccessRange], op: Op) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    for r in sorted.iter().filter(|r| permits(r.access, op)) {
        let end = r.start + r.len;
        match out.last_mut() {
            Some(last) if last.end == r.start => last.end = end,
            _ => out.push(Span {
                start: r.start,
                end,
            }),
        }
    }
    out
}

/// Most entries a granule table may have (per operation).
pub(crate) const MAX_GRANULES: u64 = 1 << 14;
/// Granule entry: no span of the table touches the granule.
pub(crate) const G_NONE: u16 = u16::MAX;
/// Granule entry: the granule is not inside a single span (search).
pub(crate) const G_MIXED: u16 = u16::MAX - 1;

/// A direct-mapped hint table: for each granule of `1 << shift` bytes of the region,
/// the index of the span that contains all of it, or [`G_NONE`]/[`G_MIXED`]. The
/// granule is the largest power of two all span boundaries are multiples of (so
/// every granule is "pure"), made coarser if the table would exceed
/// [`MAX_GRANULES`] entries. Only a hint: a lookup still checks the span it names.
#[derive(Debug)]
pub(crate) struct Granules {
    pub(crate) shift: u32,
    pub(crate) entries: Box<[u16]>,
}

impl Granules {
    pub(crate) fn new(spans: &[Span], region_len: u64) -> Self {
        if spans.is_empty() || spans.len() >= usize::from(G_MIXED) {
            return Self {
                shift: 63,
                entries: Box::new([]),
            };
        }
        let mut shift = spans
            .iter()
            .flat_map(|s| [s.start, s.end])
            .map(u64::trailing_zeros)
            .min()
            .unwrap_or(63)
            .min(63);
        while region_len.div_ceil(1 << shift) > MAX_GRANULES {
            shift += 1;
        }
        let count = region_len.div_ceil(1 << shift);
        // count <= MAX_GRANULES, fits usize.
        let mut entries = vec![G_NONE; count as usize];
        let size = 1u128 << shift;
        for (i, s) in spans.iter().enumerate() {
            let first = s.start >> shift;
            let last = (s.end - 1) >> shift;
            for g in first..=last {
                let g_start = u128::from(g) << shift;
                let whole = u128::from(s.start) <= g_start && g_start + size <= u128::from(s.end);
                if let Some(e) = entries.get_mut(g as usize) {
                    // i < G_MIXED (checked above).
                    *e = if whole && *e == G_NONE {
                        i as u16
                    } else {
                        G_MIXED
                    };
                }
            }
        }
        Self {
            shift,
            entries: entries.into_boxed_slice(),
        }
    }

    /// The hinted span index for `addr` (an index past the table's spans if none).
    #[inline(always)]
    pub(crate) fn hint(&self, addr: u64) -> usize {
        // `addr >> shift` may exceed usize on 32-bit targets: then the truncated index
        // is merely a wrong hint, which the caller's span check rejects.
        self.entries
            .get((addr >> self.shift) as usize)
            .map_or(usize::MAX, |&e| usize::from(e))
    }
}

/// Index of the range of `sorted` that contains `addr`, if any.
pub(crate) fn find_range(sorted: &[AccessRange], addr: u64) -> Option<usize> {
    let i = sorted.partition_point(|r| r.start <= addr).checked_sub(1)?;
    let r = &sorted[i];
    (addr - r.start < r.len).then_some(i)
}

/// Index of the span of `spans` that contains `[addr, addr + size)`, if any.
#[inline]
pub(crate) fn find_span(spans: &[Span], addr: u64, size: u64) -> Option<usize> {
    let i = spans.partition_point(|s| s.start <= addr).checked_sub(1)?;
    spans[i].covers(addr, size).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, len: u64, access: Access, name: &'static str) -> AccessRange {
        AccessRange {
            start,
            len,
            access,
            name,
        }
    }

    #[test]
    fn spans_merge_adjacent_ranges_per_op() {
        let map = [
            r(0, 16, Access::ReadWrite, "a"),
            r(16, 16, Access::ReadOnly, "b"),
            r(32, 16, Access::ReadWrite, "c"),
            r(64, 16, Access::ReadWrite, "d"),
            r(80, 16, Access::None, "e"),
        ];
        assert_eq!(
            spans_for(&map, Op::Read),
            vec![Span { start: 0, end: 48 }, Span { start: 64, end: 80 }]
        );
        assert_eq!(
            spans_for(&map, Op::Write),
            vec![
                Span { start: 0, end: 16 },
                Span { start: 32, end: 48 },
                Span { start: 64, end: 80 }
            ]
        );
    }

    #[test]
    fn span_cover_is_overflow_safe() {
        let s = Span { start: 8, end: 16 };
        assert!(s.covers(8, 8));
        assert!(s.covers(16, 0));
        assert!(!s.covers(9, 8));
        assert!(!s.covers(8, u64::MAX));
        assert!(!s.covers(u64::MAX, 1));
        assert!(!s.covers(7, 1));
    }

    #[test]
    fn find_range_and_span() {
        let map = [
            r(16, 16, Access::ReadOnly, "a"),
            r(48, 16, Access::None, "b"),
        ];
        assert_eq!(find_range(&map, 15), None);
        assert_eq!(find_range(&map, 16), Some(0));
        assert_eq!(find_range(&map, 31), Some(0));
        assert_eq!(find_range(&map, 32), None);
        assert_eq!(find_range(&map, 63), Some(1));
        assert_eq!(find_range(&map, u64::MAX), None);
        let spans = spans_for(&map, Op::Read);
        assert_eq!(find_span(&spans, 16, 16), Some(0));
        assert_eq!(find_span(&spans, 16, 17), None);
        assert_eq!(find_span(&spans, 48, 1), None);
    }

    #[test]
    fn granules_name_the_span_of_each_pure_granule() {
        let spans = [
            Span {
                start: 0,
                end: 0x100,
            },
            Span {
                start: 0x400,
                end: 0x1000,
            },
        ];
        let g = Granules::new(&spans, 0x2000);
        assert_eq!(g.shift, 8);
        assert_eq!(g.entries.len(), 0x20);
        assert_eq!(g.hint(0x0ff), 0);
        assert_eq!(g.hint(0x100), usize::from(G_NONE));
        assert_eq!(g.hint(0x400), 1);
        assert_eq!(g.hint(0xfff), 1);
        assert_eq!(g.hint(0x1000), usize::from(G_NONE));
        assert_eq!(g.hint(0x2000), usize::MAX);
        assert_eq!(g.hint(u64::MAX), usize::MAX);
        // No spans: no table.
        assert_eq!(Granules::new(&[], 0x2000).hint(0), usize::MAX);
    }

    #[test]
    fn granules_are_capped_and_mark_straddled_granules() {
        // Byte-granular boundaries in a 1 MiB region: the table is capped, so a
        // granule holding a boundary is "mixed".
        let spans = [Span {
            start: 3,
            end: 0x8_0001,
        }];
        let g = Granules::new(&spans, 1 << 20);
        assert!(g.entries.len() as u64 <= MAX_GRANULES);
        assert_eq!(g.shift, 6);
        assert_eq!(g.hint(3), usize::from(G_MIXED));
        assert_eq!(g.hint(0x40), 0);
        assert_eq!(g.hint(0x7_ffff), 0);
        assert_eq!(g.hint(0x8_0000), usize::from(G_MIXED));
        assert_eq!(g.hint(0x8_0040), usize::from(G_NONE));
        // A straddled granule is told apart from one no span touches.
        assert_ne!(g.hint(3), g.hint(0x8_0040));
    }
}
