//! EPT hierarchies derived from L2's base EPT, for the SWITCH_EPT and
//! LARGE_PAGE options (SDM Vol. 3C 29.3.2 "EPT Translation Mechanism",
//! 25.6.11 "Extended-Page-Table Pointer", 31.3 "INVEPT").
//!
//! - A *derived* hierarchy has its own PML4 and PDPT; every PDPT entry but
//!   one is copied from the base hierarchy (so the base's page directories,
//!   and with them the EPT option's hole, are shared), and the one GiB it
//!   owns gets its own identity page directory, which the caller then
//!   edits (4-KiB remaps split one of its 2-MiB leaves into a page table).
//!   Base edits at PDPT level reach a derived hierarchy by [`sync`].
//! - The LARGE_PAGE edits: two 2-MiB leaves swapped ([`set_swapped_2m`])
//!   and a 1-GiB leaf aliasing low memory ([`Alias1G`]).
//! - Where a CPU's scratch memory lies ([`scratch_chunk`]), its layout, the
//!   marker values, and the expected outcome of an INVEPT ([`invept_expect`]).
//!
//! Everything works on [`PhysMemory`] and a [`FrameAlloc`], so that it is
//! checked on the host with the shared EPT walker.

use shared::ept::entry::{EptEntry, level_index};
use shared::ept::{BuildError, EptBuilder, EptConfig, Eptp, FrameAlloc, Mapping, MemoryType};
use shared::mem::PhysMemory;
use shared::vmx::caps::EptVpidCap;

use crate::invvpid_cases::Expect;

/// 4 KiB.
pub const PAGE_4K: u64 = 1 << 12;
/// 2 MiB.
pub const PAGE_2M: u64 = 1 << 21;
/// 1 GiB.
pub const PAGE_1G: u64 = 1 << 30;
/// GiBs of guest-physical space the base EPT maps (identity, `[0, 4 GiB)`).
pub const BASE_GIBS: u64 = 4;

/// The guest-physical GiB the SWITCH_EPT hierarchies own: `[2, 3) GiB`, no
/// RAM on the machines LHV runs on, identity-mapped by LHV's paging.
pub const SWITCH_GIB: u64 = 2;
/// The guest-physical GiB LARGE_PAGE maps to host-physical `[0, 1 GiB)`
/// with one 1-GiB leaf: `[1, 2) GiB`.
pub const ALIAS_GIB: u64 = 1;
/// The two SWITCH_EPT test pages (guest-physical, also L2's linear
/// addresses through LHV's identity paging).
pub const SWITCH_TEST_GPA: [u64; 2] = [SWITCH_GIB * PAGE_1G, SWITCH_GIB * PAGE_1G + PAGE_4K];

/// Layout of one CPU's scratch chunk (offsets from its 2-MiB aligned base).
pub mod scratch {
    use super::{PAGE_2M, PAGE_4K};
    /// LARGE_PAGE's region A.
    pub const LARGE_A: u64 = 0;
    /// LARGE_PAGE's region B.
    pub const LARGE_B: u64 = PAGE_2M;
    /// Frames for derived paging structures.
    pub const FRAMES: u64 = 2 * PAGE_2M;
    /// How many frames.
    pub const FRAME_COUNT: u64 = 96;
    /// SWITCH_EPT's marker pages.
    pub const MARKERS: u64 = FRAMES + FRAME_COUNT * PAGE_4K;
    /// How many marker pages.
    pub const MARKER_COUNT: u64 = 8;
    /// The chunk's size.
    pub const SIZE: u64 = 3 * PAGE_2M;
}

/// The `index`-th chunk of `size` bytes, aligned to `align`, of the usable
/// ranges `[start, end)` after removing `excluded` and everything at or
/// above `limit`; `None` if there are not that many.
pub fn scratch_chunk(
    usable: &[(u64, u64)],
    excluded: &[(u64, u64)],
    index: usize,
    size: u64,
    align: u64,
    limit: u64,
) -> Option<u64> {
    let mut left = index as u64;
    for &(s, e) in usable {
        let e = e.min(limit);
        let mut a = s.checked_next_multiple_of(align)?;
        while a.checked_add(size).is_some_and(|end| end <= e) {
            let end = a + size;
            match excluded.iter().find(|&&(xs, xe)| xs < end && a < xe) {
                // Skip past the overlap.
                Some(&(_, xe)) => a = xe.checked_next_multiple_of(align)?,
                None if left == 0 => return Some(a),
                None => {
                    left -= 1;
                    a = end;
                }
            }
        }
    }
    None
}

/// Hands out consecutive frames of `[next, end)`, which the caller has
/// zeroed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bump {
    /// Next frame.
    pub next: u64,
    /// End of the frames.
    pub end: u64,
}

impl FrameAlloc for Bump {
    fn alloc_zeroed(&mut self) -> Option<u64> {
        let f = self.next;
        (f < self.end).then(|| {
            self.next += PAGE_4K;
            f
        })
    }
}

/// The read/write/execute bits of a non-leaf entry.
const TABLE_RWX: u64 = 0b111;

/// A derived hierarchy's own tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Derived {
    /// Its PML4 (the EPTP root).
    pub pml4: u64,
    /// Its PDPT.
    pub pdpt: u64,
    /// The page directory of the GiB it owns.
    pub pd: u64,
    /// The GiB it owns.
    pub gib: u64,
}

impl Derived {
    /// Its EPTP: 4-level walk, WB, no A/D (as the base's).
    pub const fn eptp(&self) -> Eptp {
        Eptp::new(self.pml4, MemoryType::WriteBack, 4, false)
    }
}

/// The base's PDPT (the table its PML4 entry 0 points to).
fn base_pdpt(mem: &impl PhysMemory, base_root: u64) -> Result<u64, BuildError> {
    let e = EptEntry(mem.read_u64(base_root)?);
    Ok(e.addr())
}

/// Builds a hierarchy that shares the base's page directories for every
/// GiB of `[0, BASE_GIBS)` but `gib`, which it maps itself: identity, with
/// 2-MiB write-back RWX leaves.
pub fn derive(
    mem: &mut impl PhysMemory,
    alloc: &mut impl FrameAlloc,
    base_root: u64,
    gib: u64,
) -> Result<Derived, BuildError> {
    assert!(gib < BASE_GIBS, "GiB {gib}");
    let mut frame = || alloc.alloc_zeroed().ok_or(BuildError::OutOfFrames);
    let (pml4, pdpt, pd) = (frame()?, frame()?, frame()?);
    mem.write_u64(pml4, EptEntry::table(pdpt).0)?;
    for i in 0..512u64 {
        let leaf = EptEntry::leaf(
            gib * PAGE_1G + i * PAGE_2M,
            2,
            shared::ept::EptPerms::RWX,
            MemoryType::WriteBack,
        );
        mem.write_u64(pd + 8 * i, leaf.0)?;
    }
    let d = Derived {
        pml4,
        pdpt,
        pd,
        gib,
    };
    sync(mem, &d, base_root)?;
    Ok(d)
}

/// Copies the base's PDPT entries into `d`'s, except the GiB `d` owns
/// (which points to `d`'s directory).
pub fn sync(mem: &mut impl PhysMemory, d: &Derived, base_root: u64) -> Result<(), BuildError> {
    let base = base_pdpt(mem, base_root)?;
    for g in 0..BASE_GIBS {
        let e = if g == d.gib {
            d.pd | TABLE_RWX
        } else {
            mem.read_u64(base + 8 * g)?
        };
        mem.write_u64(d.pdpt + 8 * g, e)?;
    }
    Ok(())
}

/// Maps the 4-KiB page at `gpa` to `hpa` (RWX, WB) in the hierarchy at
/// `root`, splitting a 2-MiB leaf the first time.
pub fn remap_4k(
    mem: &mut impl PhysMemory,
    alloc: &mut impl FrameAlloc,
    cfg: &EptConfig,
    root: u64,
    gpa: u64,
    hpa: u64,
) -> Result<(), BuildError> {
    let mut b = EptBuilder::from_root(root, cfg);
    b.map_range(mem, alloc, gpa, hpa, PAGE_4K, Mapping::RAM)
}

/// Maps the 2-MiB regions `a` and `b` to each other (`swapped`) or to
/// themselves, with 2-MiB leaves, in the hierarchy at `root`.
pub fn set_swapped_2m(
    mem: &mut impl PhysMemory,
    alloc: &mut impl FrameAlloc,
    cfg: &EptConfig,
    root: u64,
    (a, b): (u64, u64),
    swapped: bool,
) -> Result<(), BuildError> {
    let (ta, tb) = if swapped { (b, a) } else { (a, b) };
    let mut builder = EptBuilder::from_root(root, cfg);
    builder.map_range(mem, alloc, a, ta, PAGE_2M, Mapping::RAM)?;
    builder.map_range(mem, alloc, b, tb, PAGE_2M, Mapping::RAM)
}

/// One PDPT entry of a 4-level hierarchy switched between its original
/// value and a 1-GiB leaf to host-physical `target`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alias1G {
    /// Physical address of the PDPT entry.
    pub entry_addr: u64,
    /// Its original value.
    pub original: u64,
    /// The 1-GiB leaf.
    pub leaf: u64,
}

impl Alias1G {
    /// Records the entry for `gpa`'s GiB in the hierarchy at `root`.
    pub fn new(
        mem: &impl PhysMemory,
        root: u64,
        gpa: u64,
        target: u64,
    ) -> Result<Self, BuildError> {
        assert!(
            gpa.is_multiple_of(PAGE_1G) && target.is_multiple_of(PAGE_1G),
            "1-GiB alias {gpa:#x} -> {target:#x}"
        );
        let pml4e = EptEntry(mem.read_u64(root + 8 * level_index(gpa, 4))?);
        let entry_addr = pml4e.addr() + 8 * level_index(gpa, 3);
        Ok(Self {
            entry_addr,
            original: mem.read_u64(entry_addr)?,
            leaf: EptEntry::leaf(target, 3, shared::ept::EptPerms::RWX, MemoryType::WriteBack).0,
        })
    }

    /// Writes the leaf (`on`) or the original entry.
    pub fn set(&self, mem: &mut impl PhysMemory, on: bool) -> Result<(), BuildError> {
        let v = if on { self.leaf } else { self.original };
        Ok(mem.write_u64(self.entry_addr, v)?)
    }
}

/// The qword at index `i` of SWITCH_EPT's marker page `m` on CPU `cpu`.
pub const fn marker(cpu: usize, m: u64, i: u64) -> u64 {
    0x5357_4550_0000_0000 ^ ((cpu as u64) << 40) ^ (m << 24) ^ i
}

/// The qword LARGE_PAGE's L1 writes at host-physical `hpa` in iteration
/// `iter` (changes every iteration, so stale data is seen).
pub const fn large_pattern(hpa: u64, iter: u64) -> u64 {
    0x4c50_0000_0000_0000 ^ hpa ^ (iter << 44)
}

/// The expected outcome of INVEPT type `kind` (raw) with descriptor EPTP
/// `eptp` (SDM 31.3 "INVEPT", Operation): VMfailValid with error 28 for a
/// type the processor does not support (types other than 1 and 2 never
/// are), and for single-context with an EPTP that fails the VM-entry checks
/// of SDM 26.2.1.1.
pub fn invept_expect(cap: &EptVpidCap, cfg: &EptConfig, kind: u64, eptp: u64) -> Expect {
    let ok = cap.invept
        && match kind {
            1 => cap.invept_single_context && Eptp(eptp).validate(cfg).is_ok(),
            2 => cap.invept_all_context,
            _ => false,
        };
    if ok {
        Expect::Success
    } else {
        Expect::InvalidOperand
    }
}

/// INVEPT operands that must fail with error 28, given a valid `eptp`:
/// unsupported types 0 and 3, and single-context with EPTPs that break one
/// rule each (memory type 2, a 1-level walk, bit 11 set, an address bit
/// at MAXPHYADDR `max_phys_addr`).
pub fn invalid_invept_cases(eptp: u64, max_phys_addr: u8) -> [(u64, u64, &'static str); 6] {
    let mt2 = (eptp & !0b111) | 2;
    let walk1 = eptp & !(0b111 << 3);
    let reserved = eptp | (1 << 11);
    let wide = eptp | (1u64 << max_phys_addr.min(51));
    [
        (0, eptp, "type 0"),
        (3, eptp, "type 3"),
        (1, mt2, "single-context, EPTP memory type 2"),
        (1, walk1, "single-context, EPTP 1-level walk"),
        (1, reserved, "single-context, EPTP bit 11"),
        (1, wide, "single-context, EPTP address beyond MAXPHYADDR"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::ept::entry::PageSize;
    use shared::ept::{EptPerms, walk};
    use shared::mem::MemError;
    use std::collections::HashMap;

    /// Zero-filled sparse memory, one page at a time.
    #[derive(Default)]
    struct TestMem(HashMap<u64, Box<[u8; 4096]>>);

    impl PhysMemory for TestMem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
            for (k, b) in buf.iter_mut().enumerate() {
                let a = addr.checked_add(k as u64).ok_or(MemError::Overflow)?;
                *b = self
                    .0
                    .get(&(a & !0xfff))
                    .map_or(0, |p| p[(a & 0xfff) as usize]);
            }
            Ok(())
        }
        fn write(&mut self, addr: u64, buf: &[u8]) -> Result<(), MemError> {
            for (k, b) in buf.iter().enumerate() {
                let a = addr.checked_add(k as u64).ok_or(MemError::Overflow)?;
                let page = self
                    .0
                    .entry(a & !0xfff)
                    .or_insert_with(|| Box::new([0; 4096]));
                page[(a & 0xfff) as usize] = *b;
            }
            Ok(())
        }
    }

    const CFG: EptConfig = EptConfig::full(39);
    const HOLE: u64 = 0x0123_4000;

    /// A base like the EPT option's: identity `[0, 4 GiB)` with 2-MiB
    /// pages and page directories, one 4-KiB hole.
    fn base(mem: &mut TestMem, alloc: &mut Bump) -> u64 {
        let cfg = EptConfig {
            pages_1g: false,
            ..CFG
        };
        let mut b = EptBuilder::new(alloc, &cfg).unwrap();
        b.identity_map(mem, alloc, 0, BASE_GIBS * PAGE_1G, Mapping::RAM)
            .unwrap();
        b.unmap_4k(mem, alloc, HOLE).unwrap();
        b.root()
    }

    fn setup() -> (TestMem, Bump, u64) {
        let mut mem = TestMem::default();
        let mut alloc = Bump {
            next: 0x1_0000_0000,
            end: 0x1_0010_0000,
        };
        let root = base(&mut mem, &mut alloc);
        (mem, alloc, root)
    }

    fn eptp(root: u64) -> Eptp {
        Eptp::new(root, MemoryType::WriteBack, 4, false)
    }

    fn tr(mem: &TestMem, root: u64, gpa: u64) -> Option<(u64, PageSize)> {
        walk(mem, eptp(root), gpa, EptPerms::READ, &CFG)
            .ok()
            .map(|t| (t.hpa, t.page_size))
    }

    #[test]
    fn derived_hierarchies_differ_only_in_their_test_pages() {
        let (mut mem, mut alloc, root) = setup();
        let markers = [0x50_0000u64, 0x50_1000, 0x50_2000];
        let mut ds = Vec::new();
        for (k, &m) in markers.iter().enumerate() {
            let d = derive(&mut mem, &mut alloc, root, SWITCH_GIB).unwrap();
            remap_4k(&mut mem, &mut alloc, &CFG, d.pml4, SWITCH_TEST_GPA[0], m).unwrap();
            let m2 = markers[(k + 1) % markers.len()];
            remap_4k(&mut mem, &mut alloc, &CFG, d.pml4, SWITCH_TEST_GPA[1], m2).unwrap();
            ds.push(d);
        }
        for (k, d) in ds.iter().enumerate() {
            assert_eq!(
                tr(&mem, d.pml4, SWITCH_TEST_GPA[0] + 0x18),
                Some((markers[k] + 0x18, PageSize::Size4K))
            );
            assert_eq!(
                tr(&mem, d.pml4, SWITCH_TEST_GPA[1]),
                Some((markers[(k + 1) % 3], PageSize::Size4K))
            );
            // The rest of the split 2-MiB region and of the GiB: identity.
            for gpa in [
                SWITCH_TEST_GPA[1] + PAGE_4K,
                SWITCH_GIB * PAGE_1G + PAGE_2M - 8,
                SWITCH_GIB * PAGE_1G + PAGE_2M,
                (SWITCH_GIB + 1) * PAGE_1G - 8,
                0x20_0000,
                0xfee0_0000,
                (BASE_GIBS - 1) * PAGE_1G + 5 * PAGE_2M,
            ] {
                assert_eq!(tr(&mem, d.pml4, gpa).map(|t| t.0), Some(gpa), "{gpa:#x}");
            }
            assert_eq!(tr(&mem, d.pml4, HOLE), None, "the base's hole is shared");
            assert_eq!(tr(&mem, d.pml4, BASE_GIBS * PAGE_1G), None);
            assert_eq!(d.eptp().0, d.pml4 | 0x1e);
        }
        // The base is untouched.
        assert_eq!(
            tr(&mem, root, SWITCH_TEST_GPA[0]),
            Some((SWITCH_TEST_GPA[0], PageSize::Size2M))
        );
        // Mapping the base's hole shows through every derived hierarchy.
        let mut b = EptBuilder::from_root(root, &CFG);
        b.map_range(&mut mem, &mut alloc, HOLE, HOLE, PAGE_4K, Mapping::RAM)
            .unwrap();
        assert_eq!(tr(&mem, ds[2].pml4, HOLE).map(|t| t.0), Some(HOLE));
    }

    #[test]
    fn sync_carries_base_pdpt_edits() {
        let (mut mem, mut alloc, root) = setup();
        let d = derive(&mut mem, &mut alloc, root, SWITCH_GIB).unwrap();
        let alias = Alias1G::new(&mem, root, ALIAS_GIB * PAGE_1G, 0).unwrap();
        alias.set(&mut mem, true).unwrap();
        let probe = ALIAS_GIB * PAGE_1G + 0x30_1238;
        assert_eq!(tr(&mem, root, probe), Some((0x30_1238, PageSize::Size1G)));
        // Not yet in the derived copy...
        assert_eq!(tr(&mem, d.pml4, probe), Some((probe, PageSize::Size2M)));
        sync(&mut mem, &d, root).unwrap();
        assert_eq!(tr(&mem, d.pml4, probe), Some((0x30_1238, PageSize::Size1G)));
        alias.set(&mut mem, false).unwrap();
        sync(&mut mem, &d, root).unwrap();
        assert_eq!(tr(&mem, d.pml4, probe), Some((probe, PageSize::Size2M)));
        // ... and the owned GiB keeps its own directory.
        let e = mem.read_u64(d.pdpt + 8 * SWITCH_GIB).unwrap();
        assert_eq!(EptEntry(e).addr(), d.pd);
    }

    #[test]
    fn two_megabyte_swap_and_back() {
        let (mut mem, mut alloc, root) = setup();
        let (a, b) = (0x0400_0000, 0x0420_0000);
        let frames_before = alloc.next;
        for _ in 0..3 {
            set_swapped_2m(&mut mem, &mut alloc, &CFG, root, (a, b), true).unwrap();
            assert_eq!(
                tr(&mem, root, a + 0x1_2348),
                Some((b + 0x1_2348, PageSize::Size2M))
            );
            assert_eq!(
                tr(&mem, root, b + PAGE_2M - 8),
                Some((a + PAGE_2M - 8, PageSize::Size2M))
            );
            assert_eq!(tr(&mem, root, b + PAGE_2M).map(|t| t.0), Some(b + PAGE_2M));
            assert_eq!(tr(&mem, root, a - 8).map(|t| t.0), Some(a - 8));
            set_swapped_2m(&mut mem, &mut alloc, &CFG, root, (a, b), false).unwrap();
            assert_eq!(tr(&mem, root, a + 8), Some((a + 8, PageSize::Size2M)));
            assert_eq!(tr(&mem, root, b + 8), Some((b + 8, PageSize::Size2M)));
        }
        // Leaves are rewritten in place: no table was allocated.
        assert_eq!(alloc.next, frames_before);
    }

    #[test]
    fn scratch_chunks_avoid_exclusions_and_limits() {
        let usable = [(0x10_0000, 0x9f_0000), (0x100_0000, 0x2000_0000)];
        let image = (0x20_0000, 0x160_0000);
        let size = scratch::SIZE;
        let c0 = scratch_chunk(&usable, &[image], 0, size, PAGE_2M, 1 << 32).unwrap();
        assert_eq!(c0, 0x160_0000);
        let c1 = scratch_chunk(&usable, &[image], 1, size, PAGE_2M, 1 << 32).unwrap();
        assert_eq!(c1, c0 + size);
        assert_eq!(
            scratch_chunk(&usable, &[image], 0, size, PAGE_2M, 0x160_0000 + size - 1),
            None
        );
        // An exclusion in the middle of a candidate pushes it past.
        let mbi = (0x1a0_0000, 0x1a0_1000);
        let c = scratch_chunk(&usable, &[image, mbi], 0, size, PAGE_2M, 1 << 32).unwrap();
        assert_eq!(c, 0x1c0_0000);
        let n = (0..200)
            .take_while(|&i| scratch_chunk(&usable, &[image], i, size, PAGE_2M, 1 << 32).is_some())
            .count() as u64;
        assert_eq!(n, (0x2000_0000 - 0x160_0000) / size);
        assert_eq!(scratch_chunk(&[], &[], 0, size, PAGE_2M, 1 << 32), None);
        assert_eq!(
            scratch_chunk(&[(u64::MAX - 10, u64::MAX)], &[], 0, 8, 16, u64::MAX),
            None
        );
        const { assert!(scratch::MARKERS + scratch::MARKER_COUNT * PAGE_4K <= scratch::SIZE) };
    }

    #[test]
    fn invept_outcomes_follow_caps_and_eptp_checks() {
        let mut cap = EptVpidCap {
            invept: true,
            invept_single_context: true,
            invept_all_context: true,
            ..EptVpidCap::default()
        };
        let cfg = EptConfig {
            accessed_dirty: false,
            ..CFG
        };
        let good = eptp(0x1234_5000).0;
        assert_eq!(invept_expect(&cap, &cfg, 1, good), Expect::Success);
        assert_eq!(invept_expect(&cap, &cfg, 2, good), Expect::Success);
        assert_eq!(
            invept_expect(&cap, &cfg, 2, 0),
            Expect::Success,
            "all-context ignores the EPTP"
        );
        for (kind, e, what) in invalid_invept_cases(good, cfg.max_phys_addr) {
            assert_eq!(
                invept_expect(&cap, &cfg, kind, e),
                Expect::InvalidOperand,
                "{what}"
            );
        }
        assert_eq!(
            invept_expect(&cap, &cfg, 1, good | Eptp::ACCESSED_DIRTY),
            Expect::InvalidOperand
        );
        cap.invept_all_context = false;
        assert_eq!(invept_expect(&cap, &cfg, 2, good), Expect::InvalidOperand);
        cap.invept = false;
        assert_eq!(invept_expect(&cap, &cfg, 1, good), Expect::InvalidOperand);
    }

    #[test]
    fn markers_and_patterns_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for cpu in 0..4 {
            for m in 0..scratch::MARKER_COUNT {
                for i in [0, 1, 511] {
                    assert!(seen.insert(marker(cpu, m, i)));
                }
            }
        }
        assert_ne!(large_pattern(0x40_0000, 1), large_pattern(0x40_0000, 2));
        assert_ne!(large_pattern(0x40_0000, 1), large_pattern(0x60_0000, 1));
    }
}
