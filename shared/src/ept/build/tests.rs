//! Tests of the builder, checked with the walker.

use super::*;
use crate::ept::walk::{EptFault, walk};
use crate::mem::SparseMemory;
use proptest::prelude::*;

const MIB2: u64 = 2 << 20;
const GIB: u64 = 1 << 30;
/// Where the test allocator takes its frames (above every mapped GPA).
const POOL: u64 = 0x40_0000_0000;

/// Frames from a pre-mapped pool of zeroed sparse memory.
pub(crate) struct PoolAlloc {
    next: u64,
    end: u64,
}

impl FrameAlloc for PoolAlloc {
    fn alloc_zeroed(&mut self) -> Option<u64> {
        (self.next < self.end).then(|| {
            self.next += PAGE_SIZE;
            self.next - PAGE_SIZE
        })
    }
}

impl PoolAlloc {
    /// Frames handed out so far.
    pub(crate) fn used(&self) -> u64 {
        (self.next - POOL) / PAGE_SIZE
    }
}

pub(crate) fn setup(frames: u64) -> (SparseMemory, PoolAlloc, EptBuilder, EptConfig) {
    let mut mem = SparseMemory::new();
    mem.map(POOL, frames * PAGE_SIZE);
    let mut alloc = PoolAlloc {
        next: POOL,
        end: POOL + frames * PAGE_SIZE,
    };
    let cfg = EptConfig::full(46);
    let b = EptBuilder::new(&mut alloc, &cfg).unwrap();
    (mem, alloc, b, cfg)
}

fn translate(
    mem: &SparseMemory,
    b: &EptBuilder,
    cfg: &EptConfig,
    gpa: u64,
    access: EptPerms,
) -> Result<crate::ept::walk::Translation, EptFault> {
    walk(mem, b.eptp(MemoryType::WriteBack, false), gpa, access, cfg)
}

#[test]
fn largest_pages_are_used() {
    let (mut mem, mut alloc, mut b, cfg) = setup(64);
    // 4 KiB below 2 MiB, then a 2 MiB page, then 1 GiB at 1 GiB.
    let start = MIB2 - PAGE_SIZE;
    b.identity_map(&mut mem, &mut alloc, start, 2 * GIB - start, Mapping::RAM)
        .unwrap();
    let size = |a| {
        translate(&mem, &b, &cfg, a, EptPerms::READ)
            .unwrap()
            .page_size
    };
    assert_eq!(size(start), PageSize::Size4K);
    assert_eq!(size(MIB2), PageSize::Size2M);
    assert_eq!(size(GIB - 1), PageSize::Size2M);
    assert_eq!(size(GIB + 12345), PageSize::Size1G);
    assert!(matches!(
        translate(&mem, &b, &cfg, 0, EptPerms::READ),
        Err(EptFault::Violation(_))
    ));
    // PML4 + PDPT + PD (first GiB) + PT (the 4-KiB page).
    assert_eq!(alloc.next - POOL, 4 * PAGE_SIZE);
}

#[test]
fn no_large_pages_without_support() {
    let mut mem = SparseMemory::new();
    mem.map(POOL, 16 * PAGE_SIZE);
    let mut alloc = PoolAlloc {
        next: POOL,
        end: POOL + 16 * PAGE_SIZE,
    };
    let cfg = EptConfig {
        pages_2m: false,
        pages_1g: false,
        ..EptConfig::full(46)
    };
    let mut b = EptBuilder::new(&mut alloc, &cfg).unwrap();
    b.identity_map(&mut mem, &mut alloc, 0, MIB2, Mapping::RAM)
        .unwrap();
    let t = walk(
        &mem,
        b.eptp(MemoryType::WriteBack, false),
        0x1234,
        EptPerms::READ,
        &cfg,
    )
    .unwrap();
    assert_eq!(t.page_size, PageSize::Size4K);
}

#[test]
fn swapped_large_pages_and_unmapped_page() {
    let (mut mem, mut alloc, mut b, cfg) = setup(64);
    b.identity_map(&mut mem, &mut alloc, 0, 8 * MIB2, Mapping::RAM)
        .unwrap();
    // Swap the 2-MiB pages at 4 MiB and 6 MiB.
    b.map_range(&mut mem, &mut alloc, 2 * MIB2, 3 * MIB2, MIB2, Mapping::RAM)
        .unwrap();
    b.map_range(&mut mem, &mut alloc, 3 * MIB2, 2 * MIB2, MIB2, Mapping::RAM)
        .unwrap();
    assert_eq!(
        translate(&mem, &b, &cfg, 2 * MIB2 + 5, EptPerms::READ)
            .unwrap()
            .hpa,
        3 * MIB2 + 5
    );
    assert_eq!(
        translate(&mem, &b, &cfg, 3 * MIB2 + 5, EptPerms::READ)
            .unwrap()
            .hpa,
        2 * MIB2 + 5
    );
    b.unmap_4k(&mut mem, &mut alloc, 0x5000).unwrap();
    match translate(&mem, &b, &cfg, 0x5000, EptPerms::READ) {
        Err(EptFault::Violation(v)) => assert!(v.not_present && v.level == 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        translate(&mem, &b, &cfg, 0x4fff, EptPerms::READ)
            .unwrap()
            .hpa,
        0x4fff
    );
    // Unmapping again is a no-op; an unmapped hole stays unmapped under protect.
    b.unmap_4k(&mut mem, &mut alloc, 0x5000).unwrap();
    b.protect(&mut mem, &mut alloc, 0, MIB2, EptPerms::READ)
        .unwrap();
    assert!(translate(&mem, &b, &cfg, 0x5000, EptPerms::READ).is_err());
    assert_eq!(
        translate(&mem, &b, &cfg, 0x6000, EptPerms::READ)
            .unwrap()
            .perms,
        EptPerms::READ
    );
}

#[test]
fn errors() {
    let (mut mem, mut alloc, mut b, _) = setup(4);
    let wb = MemoryType::WriteBack;
    assert_eq!(
        b.identity_map(&mut mem, &mut alloc, 0x1001, PAGE_SIZE, Mapping::RAM),
        Err(BuildError::Misaligned(0x1001))
    );
    assert_eq!(
        b.identity_map(
            &mut mem,
            &mut alloc,
            0,
            PAGE_SIZE,
            Mapping::new(EptPerms::WRITE, wb)
        ),
        Err(BuildError::WriteWithoutRead)
    );
    assert_eq!(
        b.identity_map(&mut mem, &mut alloc, 1 << 48, PAGE_SIZE, Mapping::RAM),
        Err(BuildError::OutOfRange)
    );
    assert_eq!(
        b.identity_map(&mut mem, &mut alloc, !0xfff, PAGE_SIZE, Mapping::RAM,),
        Err(BuildError::OutOfRange)
    );
    // 3 frames left: PDPT, PD, PT; a second PT needs a fourth.
    b.identity_map(&mut mem, &mut alloc, 0, PAGE_SIZE, Mapping::RAM)
        .unwrap();
    assert_eq!(
        b.identity_map(&mut mem, &mut alloc, GIB, PAGE_SIZE, Mapping::RAM),
        Err(BuildError::OutOfFrames)
    );
}

/// A range to map: start page and length in pages, chosen so that large
/// pages occur.
fn range() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        (0u64..(8 * GIB / PAGE_SIZE), 1u64..600).prop_map(|(p, n)| (p * PAGE_SIZE, n * PAGE_SIZE)),
        (0u64..4096, 1u64..4).prop_map(|(p, n)| (p * MIB2, n * MIB2 + PAGE_SIZE)),
        (0u64..8, 1u64..3).prop_map(|(p, n)| (p * GIB, n * GIB)),
        (0u64..8).prop_map(|p| (p * GIB - MIB2 * (p.min(1)), GIB + 2 * MIB2)),
    ]
}

fn perms() -> impl Strategy<Value = EptPerms> {
    prop_oneof![
        Just(EptPerms::READ),
        Just(EptPerms::RW),
        Just(EptPerms::RX),
        Just(EptPerms::RWX),
        Just(EptPerms::EXECUTE),
    ]
}

/// Sampled addresses of `[start, start + len)`: both ends and a few
/// fractions, page-crossing neighbours included.
fn samples(start: u64, len: u64, fracs: &[u16]) -> Vec<u64> {
    let mut v = vec![start, start + len - 1];
    v.extend(
        fracs
            .iter()
            .map(|&f| start + (len - 1) * u64::from(f) / u64::from(u16::MAX)),
    );
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn map_range_then_walk_translates_identically(
        ranges in prop::collection::vec((range(), perms(), any::<bool>()), 1..5),
        fracs in prop::collection::vec(any::<u16>(), 8),
    ) {
        let (mut mem, mut alloc, mut b, cfg) = setup(512);
        for &((start, len), p, uc) in &ranges {
            let mt = if uc { MemoryType::Uncacheable } else { MemoryType::WriteBack };
            b.identity_map(&mut mem, &mut alloc, start, len, Mapping::new(p, mt)).unwrap();
        }
        for (i, &((start, len), _, _)) in ranges.iter().enumerate() {
            for a in samples(start, len, &fracs) {
                // The last range containing the address decides.
                let (_, p, uc) = ranges[i..]
                    .iter()
                    .rev()
                    .find(|((s, l), _, _)| (*s..s + l).contains(&a))
                    .copied()
                    .unwrap();
                let t = translate(&mem, &b, &cfg, a, p).unwrap();
                prop_assert_eq!(t.hpa, a);
                prop_assert_eq!(t.perms, p);
                let mt = if uc { MemoryType::Uncacheable } else { MemoryType::WriteBack };
                prop_assert_eq!(t.memory_type, mt);
                let denied = EptPerms::RWX.difference(p);
                if !denied.is_empty() {
                    let is_rights_violation = matches!(
                        translate(&mem, &b, &cfg, a, denied),
                        Err(EptFault::Violation(v)) if !v.not_present && v.allowed == p
                    );
                    prop_assert!(is_rights_violation);
                }
            }
        }
    }

    #[test]
    fn unmap_faults_that_page_only(
        (start, len) in range(),
        p in perms(),
        frac in any::<u16>(),
    ) {
        let (mut mem, mut alloc, mut b, cfg) = setup(512);
        b.identity_map(&mut mem, &mut alloc, start, len, Mapping::new(p, MemoryType::WriteBack)).unwrap();
        let page = (start + (len - 1) * u64::from(frac) / u64::from(u16::MAX)) & !(PAGE_SIZE - 1);
        b.unmap_4k(&mut mem, &mut alloc, page).unwrap();
        let unmapped = matches!(
            translate(&mem, &b, &cfg, page + 8, p),
            Err(EptFault::Violation(v)) if v.not_present
        );
        prop_assert!(unmapped);
        for n in [page.wrapping_sub(1), page + PAGE_SIZE] {
            if (start..start + len).contains(&n) {
                let t = translate(&mem, &b, &cfg, n, p).unwrap();
                prop_assert_eq!((t.hpa, t.perms), (n, p));
            }
        }
    }

    #[test]
    fn splitting_keeps_translations(
        big in prop_oneof![Just(MIB2), Just(GIB)],
        base in 0u64..4,
        frac in any::<u16>(),
        fracs in prop::collection::vec(any::<u16>(), 16),
    ) {
        let (mut mem, mut alloc, mut b, cfg) = setup(512);
        let start = base * big;
        b.identity_map(&mut mem, &mut alloc, start, big, Mapping::RAM)
            .unwrap();
        let before = translate(&mem, &b, &cfg, start, EptPerms::READ).unwrap().page_size;
        prop_assert_eq!(before.bytes(), big);
        let page = (start + (big - 1) * u64::from(frac) / u64::from(u16::MAX)) & !(PAGE_SIZE - 1);
        b.protect(&mut mem, &mut alloc, page, PAGE_SIZE, EptPerms::READ).unwrap();
        for a in samples(start, big, &fracs).into_iter().chain([page, page + 4095]) {
            let t = translate(&mem, &b, &cfg, a, EptPerms::READ).unwrap();
            prop_assert_eq!(t.hpa, a);
            let want = if a & !(PAGE_SIZE - 1) == page { EptPerms::READ } else { EptPerms::RWX };
            prop_assert_eq!(t.perms, want);
        }
    }
}
