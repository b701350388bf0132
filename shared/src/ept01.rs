//! EPT01: the identity map L0 gives its guest, with L0's own memory hidden.
//!
//! Every guest-physical page in `[0, limit)` maps to the same host page,
//! with all rights and the memory type the MTRRs give it (see
//! [`crate::mtrr`]); pages of the hidden range (L0's region) map instead to
//! one read-and-execute-only "dummy" page that L0 fills with all ones, so a
//! guest read there sees unbacked memory and a write causes an EPT
//! violation, which L0 handles without ever exposing its memory.
//!
//! The same function builds the tables and, called again, rewrites the
//! memory types after an MTRR write (existing leaves are replaced; tables
//! stay where they are).

use crate::ept::{BuildError, EptBuilder, EptPerms, FrameAlloc, Mapping, MemoryType, PageSize};
use crate::mem::PhysMemory;

/// What EPT01 maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Map `[0, limit)` (4-KiB aligned).
    pub limit: u64,
    /// The hidden range `[start, end)` (4-KiB aligned), L0's region.
    pub hidden: (u64, u64),
    /// Host-physical address of the all-ones page hidden pages map to.
    pub dummy_page: u64,
}

/// Rights of a hidden page: reads (and fetches) see the dummy page, writes
/// fault.
pub const HIDDEN_PERMS: EptPerms = EptPerms::RX;

impl Layout {
    /// Whether `gpa` is in the hidden range.
    pub const fn is_hidden(&self, gpa: u64) -> bool {
        gpa >= self.hidden.0 && gpa < self.hidden.1
    }

    fn overlaps_hidden(&self, start: u64, len: u64) -> bool {
        start < self.hidden.1 && self.hidden.0 < start + len
    }
}

/// Maps (or re-types) all of `layout` in `ept`. `types(start, len)` gives
/// the memory type of an aligned power-of-two range when it is uniform
/// (`None` asks for smaller pieces), e.g. [`crate::mtrr::MtrrState::uniform_type`].
pub fn map_all(
    ept: &mut EptBuilder,
    mem: &mut impl PhysMemory,
    alloc: &mut impl FrameAlloc,
    layout: &Layout,
    types: &impl Fn(u64, u64) -> Option<MemoryType>,
) -> Result<(), BuildError> {
    let top = PageSize::Size1G.bytes();
    let mut start = 0;
    while start < layout.limit {
        map_chunk(ept, mem, alloc, layout, types, start, top)?;
        start += top;
    }
    Ok(())
}

fn map_chunk(
    ept: &mut EptBuilder,
    mem: &mut impl PhysMemory,
    alloc: &mut impl FrameAlloc,
    layout: &Layout,
    types: &impl Fn(u64, u64) -> Option<MemoryType>,
    start: u64,
    len: u64,
) -> Result<(), BuildError> {
    let page = PageSize::Size4K.bytes();
    if start >= layout.limit {
        return Ok(());
    }
    let whole = start + len <= layout.limit && !layout.overlaps_hidden(start, len);
    if len == page {
        return if layout.is_hidden(start) {
            let m = Mapping::new(HIDDEN_PERMS, MemoryType::WriteBack);
            ept.map_range(mem, alloc, start, layout.dummy_page, page, m)
        } else {
            let t = types(start, page).unwrap_or(MemoryType::Uncacheable);
            ept.identity_map(mem, alloc, start, page, Mapping::new(EptPerms::RWX, t))
        };
    }
    if whole && let Some(t) = types(start, len) {
        return ept.identity_map(mem, alloc, start, len, Mapping::new(EptPerms::RWX, t));
    }
    let sub = len / 512;
    for i in 0..512 {
        map_chunk(ept, mem, alloc, layout, types, start + i * sub, sub)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ept::build::tests::setup;
    use crate::ept::{EptFault, walk};
    use crate::mtrr::MtrrState;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    fn mtrrs(uc_base: u64, uc_size_log2: u32) -> MtrrState {
        let mut s = MtrrState {
            def_type: (1 << 11) | (1 << 10) | 6,
            variable_count: 2,
            fixed_supported: true,
            ..MtrrState::default()
        };
        s.fixed = [0x0606_0606_0606_0606; 11];
        s.fixed[2] = 0; // VGA window UC
        let size = 1u64 << uc_size_log2;
        s.variable[0] = (
            uc_base & !(size - 1),
            (0xF_FFFF_F000 & !(size - 1)) | (1 << 11),
        );
        s
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// No page of the hidden range reaches its host page; every other
        /// page below the limit is mapped to itself with the MTRR type.
        #[test]
        fn hidden_range_is_never_mapped_and_everything_else_is(
            hidden_start in 1u64..60,
            hidden_pages in 1u64..600,
            uc_base in 0u64..64,
            uc_log2 in 12u32..24,
        ) {
            let (mut mem, mut alloc, mut ept, cfg) = setup(4096);
            let limit = 64 * MIB;
            let start = hidden_start * MIB + 0x3000;
            let layout = Layout {
                limit,
                hidden: (start, (start + hidden_pages * 0x1000).min(limit)),
                dummy_page: 0x7F_0000_0000,
            };
            let m = mtrrs(uc_base * MIB, uc_log2);
            let types = |s, l| m.uniform_type(s, l);
            map_all(&mut ept, &mut mem, &mut alloc, &layout, &types).unwrap();
            // Re-typing after an MTRR change keeps the property.
            let m2 = mtrrs((uc_base + 3) * MIB, uc_log2);
            let types2 = |s, l| m2.uniform_type(s, l);
            map_all(&mut ept, &mut mem, &mut alloc, &layout, &types2).unwrap();
            let eptp = ept.eptp(MemoryType::WriteBack, false);
            let mut gpa = 0;
            while gpa < limit {
                let t = walk(&mem, eptp, gpa, EptPerms::READ, &cfg).unwrap();
                if layout.is_hidden(gpa) {
                    prop_assert_eq!(t.hpa, layout.dummy_page);
                    prop_assert!(!t.perms.contains(EptPerms::WRITE));
                    let w = walk(&mem, eptp, gpa, EptPerms::WRITE, &cfg);
                    prop_assert!(matches!(w, Err(EptFault::Violation(_))));
                } else {
                    prop_assert_eq!(t.hpa, gpa);
                    prop_assert_eq!(t.perms, EptPerms::RWX);
                    prop_assert_eq!(t.memory_type, m2.page_type(gpa));
                }
                gpa += 0x1000;
            }
            let beyond = walk(&mem, eptp, limit, EptPerms::READ, &cfg);
            prop_assert!(matches!(beyond, Err(EptFault::Violation(_))));
        }

        /// Re-typing as MTRR ranges move reuses the tables it made: going
        /// through the same moves again takes no new frame, so a guest
        /// that keeps moving its MTRRs cannot drain L0's pool (issue 7).
        #[test]
        fn moving_ranges_take_no_new_frames_the_second_time(
            moves in proptest::collection::vec((0u64..60, 12u32..24), 1..6),
        ) {
            let (mut mem, mut alloc, mut ept, _) = setup(8192);
            let layout = Layout {
                limit: 64 * MIB,
                hidden: (40 * MIB, 44 * MIB),
                dummy_page: 0x7F_0000_0000,
            };
            let mut pass = |alloc: &mut _| {
                for &(base, log2) in &moves {
                    let m = mtrrs(base * MIB + 0x5000, log2);
                    let types = |s, l| m.uniform_type(s, l);
                    map_all(&mut ept, &mut mem, alloc, &layout, &types).unwrap();
                }
            };
            pass(&mut alloc);
            let after_first = alloc.used();
            pass(&mut alloc);
            prop_assert_eq!(alloc.used(), after_first);
        }
    }
}
