//! EPT01: the identity map L0 gives its guest, with L0's own memory hidden.
//!
//! Every guest-physical page in `[0, limit)` maps to the same host page,
//! with all rights and the memory type the MTRRs give it (see
//! [`crate::mtrr`]); pages of the hidden range (L0's region) map instead to
//! one read-and-execute-only "dummy" page that L0 fills with all ones, so a
//! guest read there sees unbacked memory and a write causes an EPT
//! violation, which L0 handles without ever exposing its memory.
//!
//! The same walk builds the tables ([`map_all`]) and, after an MTRR write,
//! rewrites the memory types of the ranges whose type changed ([`retype`]:
//! existing leaves are replaced; tables stay where they are).

use crate::ept::entry::{level_index, level_size};
use crate::ept::{
    BuildError, EptBuilder, EptEntry, EptPerms, FrameAlloc, Mapping, MemoryType, PageSize,
};
use crate::mem::{MemError, PhysMemory};

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
    walk_chunks(ept, mem, alloc, layout, types, &|_, _| false)
}

/// Re-types `ept`, which maps `layout` with the types `old`, to the types
/// `new`, rewriting only the ranges whose type changes: a range both give
/// one and the same type is left alone, so an MTRR write that changes one
/// variable range costs a few leaves, not the whole map. The result
/// translates every page exactly as [`map_all`] with `new` would (host
/// test `retype_is_map_all_of_the_new_types`).
pub fn retype(
    ept: &mut EptBuilder,
    mem: &mut impl PhysMemory,
    alloc: &mut impl FrameAlloc,
    layout: &Layout,
    old: &impl Fn(u64, u64) -> Option<MemoryType>,
    new: &impl Fn(u64, u64) -> Option<MemoryType>,
) -> Result<(), BuildError> {
    let unchanged = |start, len| match (old(start, len), new(start, len)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    walk_chunks(ept, mem, alloc, layout, new, &unchanged)
}

/// [`map_all`], leaving alone every chunk `skip(start, len)` names.
fn walk_chunks(
    ept: &mut EptBuilder,
    mem: &mut impl PhysMemory,
    alloc: &mut impl FrameAlloc,
    layout: &Layout,
    types: &impl Fn(u64, u64) -> Option<MemoryType>,
    skip: &impl Fn(u64, u64) -> bool,
) -> Result<(), BuildError> {
    let mut w = Walk {
        ept,
        mem,
        alloc,
        layout,
        types,
        skip,
    };
    let top = PageSize::Size1G.bytes();
    let mut start = 0;
    while start < layout.limit {
        w.chunk(start, top)?;
        start += top;
    }
    Ok(())
}

/// One (re-)mapping pass of [`walk_chunks`].
struct Walk<'a, M, A, T, S> {
    ept: &'a mut EptBuilder,
    mem: &'a mut M,
    alloc: &'a mut A,
    layout: &'a Layout,
    types: &'a T,
    skip: &'a S,
}

impl<M, A, T, S> Walk<'_, M, A, T, S>
where
    M: PhysMemory,
    A: FrameAlloc,
    T: Fn(u64, u64) -> Option<MemoryType>,
    S: Fn(u64, u64) -> bool,
{
    /// Maps the aligned chunk `[start, start + len)`: as one page of its
    /// uniform type if it can, else in 512 smaller chunks.
    fn chunk(&mut self, start: u64, len: u64) -> Result<(), BuildError> {
        let page = PageSize::Size4K.bytes();
        let layout = self.layout;
        if start >= layout.limit || (self.skip)(start, len) {
            return Ok(());
        }
        let whole = start + len <= layout.limit && !layout.overlaps_hidden(start, len);
        if len == page {
            return if layout.is_hidden(start) {
                let m = Mapping::new(HIDDEN_PERMS, MemoryType::WriteBack);
                self.ept
                    .map_range(self.mem, self.alloc, start, layout.dummy_page, page, m)
            } else {
                let t = (self.types)(start, page).unwrap_or(MemoryType::Uncacheable);
                let m = Mapping::new(EptPerms::RWX, t);
                self.ept.identity_map(self.mem, self.alloc, start, page, m)
            };
        }
        if whole && let Some(t) = (self.types)(start, len) {
            let m = Mapping::new(EptPerms::RWX, t);
            return self.ept.identity_map(self.mem, self.alloc, start, len, m);
        }
        let sub = len / 512;
        for i in 0..512 {
            self.chunk(start + i * sub, sub)?;
        }
        Ok(())
    }
}

/// Frames of a private view ([`build_private_view`]): PML4, PDPT, PD, PT.
pub const VIEW_TABLES: usize = 4;

/// Builds in `frames` one CPU's private view of the 4-level EPT hierarchy
/// at `root`: a copy of the four tables on the path to the 4-KiB page
/// `page`, whose leaf becomes `leaf`. Every other entry is the same as in
/// the shared tables (naming the same lower tables, which are never freed),
/// and a large page on the path is split into equal smaller ones, so the
/// view translates every other guest-physical address exactly as `root`
/// does. Returns the view's root (`frames[0]`). The caller flushes the
/// view's EPTP (INVEPT) after each rebuild, as it may hold translations of
/// the last one.
///
/// L0 runs a CPU on such a view for one single-stepped instruction that
/// writes the xAPIC page: the page then names a per-CPU scratch page, so
/// that no other CPU's write can pass while this one's is captured.
pub fn build_private_view(
    mem: &mut impl PhysMemory,
    root: u64,
    frames: [u64; VIEW_TABLES],
    page: u64,
    leaf: EptEntry,
) -> Result<u64, MemError> {
    /// What the next table of the view starts from.
    enum Source {
        Table(u64),
        Split(EptEntry),
        Empty,
    }
    let mut source = Source::Table(root);
    let mut table = [0u8; TABLE_BYTES];
    for (i, level) in (1..=4u8).rev().enumerate() {
        match source {
            Source::Table(t) => mem.read(t & EptEntry::ADDR_MASK, &mut table)?,
            Source::Split(big) => {
                let size = level_size(level);
                let attrs = big.0 & !EptEntry::ADDR_MASK & !EptEntry::LARGE;
                let large = if level > 1 { EptEntry::LARGE } else { 0 };
                for (j, chunk) in table.chunks_exact_mut(8).enumerate() {
                    let e = attrs | large | (big.addr() + j as u64 * size);
                    chunk.copy_from_slice(&e.to_le_bytes());
                }
            }
            Source::Empty => table.fill(0),
        }
        let idx = level_index(page, level) as usize * 8;
        let e = EptEntry(u64::from_le_bytes(
            table[idx..idx + 8].try_into().unwrap_or([0; 8]),
        ));
        let new = if level == 1 {
            leaf
        } else {
            source = if !e.is_present() {
                Source::Empty
            } else if e.is_leaf(level) {
                Source::Split(e)
            } else {
                Source::Table(e.addr())
            };
            // A table entry keeps its rights (they bound the subtree);
            // a split leaf or a hole becomes a table entry with all rights.
            match source {
                Source::Table(_) => EptEntry((e.0 & !EptEntry::ADDR_MASK) | frames[i + 1]),
                _ => EptEntry::table(frames[i + 1]),
            }
        };
        table[idx..idx + 8].copy_from_slice(&new.0.to_le_bytes());
        mem.write(frames[i], &table)?;
    }
    Ok(frames[0])
}

/// Bytes of one EPT table.
const TABLE_BYTES: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ept::build::tests::setup;
    use crate::ept::{EptFault, Eptp, walk};
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

        /// A CPU's private view maps every page as the shared EPT01 does,
        /// but the one page (the xAPIC page, mapped read-only with 4-KiB
        /// pages as L0 traps it, or inside a large page), which names the
        /// scratch page; the shared tables are unchanged.
        #[test]
        fn private_view_differs_only_at_its_page(
            page_index in 0u64..(64 * MIB / 0x1000),
            trapped in any::<bool>(),
            hidden_start in 8u64..60,
        ) {
            let (mut mem, mut alloc, mut ept, cfg) = setup(4096);
            let limit = 64 * MIB;
            let layout = Layout {
                limit,
                hidden: (hidden_start * MIB, hidden_start * MIB + 0x20_0000),
                dummy_page: 0x7F_0000_0000,
            };
            let types = |_, _| Some(MemoryType::WriteBack);
            map_all(&mut ept, &mut mem, &mut alloc, &layout, &types).unwrap();
            let page = page_index * 0x1000;
            if trapped && !layout.is_hidden(page) {
                let m = Mapping::new(EptPerms::RX, MemoryType::Uncacheable);
                ept.map_range(&mut mem, &mut alloc, page, page, 0x1000, m).unwrap();
            }
            let eptp = ept.eptp(MemoryType::WriteBack, false);
            let before: Vec<_> = (0..limit / 0x1000)
                .map(|i| walk(&mem, eptp, i * 0x1000, EptPerms::READ, &cfg).ok())
                .collect();
            let frames = [(); VIEW_TABLES].map(|_| alloc.alloc_zeroed().unwrap());
            let scratch = 0x7E_0000_0000;
            let leaf = EptEntry::leaf(scratch, 1, EptPerms::RW, MemoryType::WriteBack);
            let root = build_private_view(&mut mem, ept.root(), frames, page, leaf).unwrap();
            let view = Eptp((eptp.0 & !EptEntry::ADDR_MASK) | root);
            for i in 0..limit / 0x1000 {
                let gpa = i * 0x1000 + 0x18;
                let shared = walk(&mem, eptp, gpa, EptPerms::READ, &cfg).ok();
                prop_assert_eq!(
                    shared.map(|t| t.hpa),
                    before[i as usize].map(|t| t.hpa + 0x18)
                );
                let mine = walk(&mem, view, gpa, EptPerms::READ, &cfg);
                if gpa & !0xfff == page {
                    let t = mine.unwrap();
                    prop_assert_eq!(t.hpa, scratch + 0x18);
                    prop_assert_eq!(t.perms, EptPerms::RW);
                    prop_assert!(walk(&mem, eptp, gpa, EptPerms::WRITE, &cfg).is_err() || !trapped);
                } else {
                    let (a, b) = (mine.ok(), shared);
                    prop_assert_eq!(a.map(|t| (t.hpa, t.perms, t.memory_type)),
                        b.map(|t| (t.hpa, t.perms, t.memory_type)), "gpa {:#x}", gpa);
                }
            }
            // Beyond the map, the view is as empty as EPT01.
            prop_assert!(walk(&mem, view, limit, EptPerms::READ, &cfg).is_err());
            prop_assert!(walk(&mem, view, 1 << 40, EptPerms::READ, &cfg).is_err());
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

        /// Re-typing only what changed gives what a whole re-map gives:
        /// every page translates to the same host page with the same
        /// rights and type, after a chain of MTRR moves (each `retype`
        /// from the previous types), and the hidden range stays hidden.
        #[test]
        fn retype_is_map_all_of_the_new_types(
            moves in proptest::collection::vec((0u64..60, 12u32..26), 1..5),
            hidden_start in 1u64..60,
        ) {
            let layout = Layout {
                limit: 64 * MIB,
                hidden: (hidden_start * MIB + 0x3000, hidden_start * MIB + 0x40_3000),
                dummy_page: 0x7F_0000_0000,
            };
            let (mut mem, mut alloc, mut ept, cfg) = setup(8192);
            let first = mtrrs(0, 12);
            let types = |s, l| first.uniform_type(s, l);
            map_all(&mut ept, &mut mem, &mut alloc, &layout, &types).unwrap();
            let mut old = first;
            for &(base, log2) in &moves {
                let new = mtrrs(base * MIB + 0x5000, log2);
                let (o, n) = (|s, l| old.uniform_type(s, l), |s, l| new.uniform_type(s, l));
                retype(&mut ept, &mut mem, &mut alloc, &layout, &o, &n).unwrap();
                old = new;
            }
            let (mut fmem, mut falloc, mut fresh, _) = setup(8192);
            let types = |s, l| old.uniform_type(s, l);
            map_all(&mut fresh, &mut fmem, &mut falloc, &layout, &types).unwrap();
            let (a, b) = (ept.eptp(MemoryType::WriteBack, false), fresh.eptp(MemoryType::WriteBack, false));
            for i in 0..layout.limit / 0x1000 {
                let gpa = i * 0x1000;
                let got = walk(&mem, a, gpa, EptPerms::READ, &cfg).ok();
                let want = walk(&fmem, b, gpa, EptPerms::READ, &cfg).ok();
                prop_assert_eq!(
                    got.map(|t| (t.hpa, t.perms, t.memory_type)),
                    want.map(|t| (t.hpa, t.perms, t.memory_type)),
                    "gpa {:#x}", gpa
                );
            }
        }
    }
}
