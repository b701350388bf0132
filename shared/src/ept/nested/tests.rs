//! Nested EPT against random EPT12 and EPT01 hierarchies: every EPT02 leaf
//! [`resolve`] produces equals the composition of the two walks over its
//! whole page, with intersected rights, and none leads to L0's memory.

use super::*;
use crate::ept::build::{EptBuilder, FrameAlloc, Mapping};
use crate::ept::entry::{ENTRY_SIZE, MemoryType, level_index};
use crate::ept::ept02::Ept02;
use crate::mem::SparseMemory;
use proptest::prelude::*;

const GIB: u64 = 1 << 30;
const MIB2: u64 = 2 << 20;
/// L1-physical space EPT12 maps into, and L2's space: [0, 4 GiB).
const SPACE: u64 = 4 * GIB;
/// Host-physical base of EPT01's map: EPT01(x) = x + HOST_BASE.
const HOST_BASE: u64 = 8 * GIB;
/// Where the tables of EPT12, EPT01 and EPT02 live (above everything).
const TABLES12: u64 = 0x100_0000_0000;
const TABLES01: u64 = 0x200_0000_0000;
const TABLES02: u64 = 0x300_0000_0000;
const FRAMES: u64 = 2048;

/// A bump allocator over pre-mapped frames, also a (leaky) FramePool.
struct Bump {
    next: u64,
    end: u64,
}

impl FrameAlloc for Bump {
    fn alloc_zeroed(&mut self) -> Option<u64> {
        (self.next < self.end).then(|| {
            self.next += 4096;
            self.next - 4096
        })
    }
}

use super::tests_support::ListPool;

fn perms_of(bits: u8) -> EptPerms {
    // Valid rights only (write implies read); 0 is not present.
    let p = EptPerms::from_bits_truncate(bits & 7);
    if p.is_write_without_read() {
        p | EptPerms::READ
    } else {
        p
    }
}

fn mt_of(i: u8) -> MemoryType {
    [
        MemoryType::Uncacheable,
        MemoryType::WriteCombining,
        MemoryType::WriteThrough,
        MemoryType::WriteProtected,
        MemoryType::WriteBack,
    ][usize::from(i) % 5]
}

/// One random mapping of EPT12: size class, page index in L2 and L1
/// space, rights, memory type.
#[derive(Clone, Debug)]
struct Map12 {
    size: u8,
    gpa2_page: u64,
    gpa1_page: u64,
    perms: u8,
    mt: u8,
    ipat: bool,
}

/// An edit of an entry of EPT12 at some level: rights narrowed, or a
/// misconfiguration.
#[derive(Clone, Debug)]
struct Edit12 {
    gpa2: u64,
    level: u8,
    and_perms: u8,
    misconfig: Option<u8>,
}

fn map12() -> impl Strategy<Value = Map12> {
    (
        0u8..3,
        any::<u64>(),
        any::<u64>(),
        1u8..8,
        0u8..5,
        any::<bool>(),
    )
        .prop_map(|(size, a, b, perms, mt, ipat)| Map12 {
            size,
            gpa2_page: a,
            gpa1_page: b,
            perms,
            mt,
            ipat,
        })
}

fn edit12() -> impl Strategy<Value = Edit12> {
    (
        0..SPACE / 4096,
        // The one PML4E covers all of L2's space: rarely edited.
        prop_oneof![8 => 1u8..4, 1 => Just(4u8)],
        0u8..8,
        prop::option::weighted(0.3, 0u8..4),
    )
        .prop_map(|(p, level, and_perms, misconfig)| Edit12 {
            gpa2: p * 4096,
            level,
            and_perms,
            misconfig,
        })
}

fn page_bytes(class: u8) -> u64 {
    [4096, MIB2, GIB][usize::from(class)]
}

/// Finds the entry at `level` on `gpa`'s walk through tables at `root`.
fn entry_addr(mem: &SparseMemory, root: u64, gpa: u64, level: u8) -> Option<u64> {
    let mut table = root;
    let mut l = 4;
    loop {
        let a = table + level_index(gpa, l) * ENTRY_SIZE;
        let e = EptEntry(mem.read_u64(a).ok()?);
        if l == level {
            return Some(a);
        }
        if !e.is_present() || e.is_leaf(l) {
            return None;
        }
        table = e.addr();
        l -= 1;
    }
}

struct World {
    mem: SparseMemory,
    eptp12: Eptp,
    eptp01: Eptp,
    hidden: (u64, u64),
    cfg: EptConfig,
}

impl World {
    fn ept01(&self) -> impl Ept01View + '_ {
        move |gpa1: u64| {
            if gpa1 >= self.hidden.0 && gpa1 < self.hidden.1 {
                return None;
            }
            let t = walk(&self.mem, self.eptp01, gpa1, EptPerms::empty(), &self.cfg).ok()?;
            // As L0's view: a page that contains L0's memory is reported
            // as 4 KiB (its other pages are not L0's).
            let size = t.page_size.bytes();
            let start = gpa1 & !(size - 1);
            let page_size = if start < self.hidden.1 && self.hidden.0 < start + size {
                PageSize::Size4K
            } else {
                t.page_size
            };
            Some(Ept01Leaf {
                hpa: t.hpa,
                perms: t.perms,
                page_size,
            })
        }
    }

    fn l0_host_range(&self) -> (u64, u64) {
        (self.hidden.0 + HOST_BASE, self.hidden.1 + HOST_BASE)
    }
}

fn build(
    maps: &[Map12],
    edits: &[Edit12],
    ept01_holes: &[(u64, u8, u8)],
    hidden: (u64, u64),
) -> World {
    let cfg = EptConfig::full(46);
    let mut mem = SparseMemory::new();
    mem.map(TABLES12, FRAMES * 4096);
    mem.map(TABLES01, FRAMES * 4096);
    let mut a12 = Bump {
        next: TABLES12,
        end: TABLES12 + FRAMES * 4096,
    };
    let mut a01 = Bump {
        next: TABLES01,
        end: TABLES01 + FRAMES * 4096,
    };
    let mut b12 = EptBuilder::new(&mut a12, &cfg).unwrap();
    for m in maps {
        let bytes = page_bytes(m.size);
        let g2 = (m.gpa2_page % (SPACE / bytes)) * bytes;
        let g1 = (m.gpa1_page % (SPACE / bytes)) * bytes;
        let mapping = Mapping::new(perms_of(m.perms), mt_of(m.mt));
        b12.map_range(&mut mem, &mut a12, g2, g1, bytes, mapping)
            .unwrap();
        if m.ipat
            && let Ok(t) = walk(
                &mem,
                b12.eptp(MemoryType::WriteBack, false),
                g2,
                EptPerms::empty(),
                &cfg,
            )
        {
            let e = mem.read_u64(t.leaf_entry_addr).unwrap();
            mem.write_u64(t.leaf_entry_addr, e | EptEntry::IGNORE_PAT)
                .unwrap();
        }
    }
    let eptp12 = b12.eptp(MemoryType::WriteBack, false);
    for e in edits {
        let Some(a) = entry_addr(&mem, eptp12.root(), e.gpa2, e.level) else {
            continue;
        };
        let old = EptEntry(mem.read_u64(a).unwrap());
        if !old.is_present() {
            continue;
        }
        let new = match e.misconfig {
            // Write without read.
            Some(0) => (old.0 & !7) | 2,
            // A reserved bit: above MAXPHYADDR.
            Some(1) => old.0 | (1 << 47),
            // Memory type 2 in a leaf, or bit 3 in a table entry.
            Some(2) => (old.0 & !EptEntry::MEMORY_TYPE_MASK) | (2 << 3),
            // Bit 7 in a PML4E.
            Some(_) if e.level == 4 => old.0 | EptEntry::LARGE,
            _ => old.with_perms(perms_of(e.and_perms) & old.perms()).0,
        };
        mem.write_u64(a, new).unwrap();
    }
    // EPT01: [0, 4 GiB) -> [8 GiB, 12 GiB), 1-GiB pages, then holes
    // punched or narrowed at 4-KiB or 2-MiB granularity.
    let mut b01 = EptBuilder::new(&mut a01, &cfg).unwrap();
    b01.map_range(&mut mem, &mut a01, 0, HOST_BASE, SPACE, Mapping::RAM)
        .unwrap();
    for &(page, class, perms) in ept01_holes {
        let bytes = page_bytes(class.min(1));
        let g = (page % (SPACE / bytes)) * bytes;
        b01.protect(&mut mem, &mut a01, g, bytes, perms_of(perms))
            .unwrap();
    }
    // L0's region: EPT01 maps it elsewhere (the model's dummy), and the
    // view says it is L0's.
    let eptp01 = b01.eptp(MemoryType::WriteBack, false);
    World {
        mem,
        eptp12,
        eptp01,
        hidden,
        cfg,
    }
}

/// Checks one installed EPT02 leaf against the composition at `x`.
fn check_leaf_at(
    w: &World,
    gpa2: u64,
    leaf: EptEntry,
    level: u8,
    x: u64,
) -> Result<(), TestCaseError> {
    let size = crate::ept::entry::level_size(level);
    let t12 = walk(&w.mem, w.eptp12, x, EptPerms::empty(), &w.cfg);
    let t12 = t12.map_err(|e| TestCaseError::fail(format!("{x:#x}: EPT12 {e}")))?;
    let t01 = w.ept01().lookup(t12.hpa);
    let t01 =
        t01.ok_or_else(|| TestCaseError::fail(format!("{x:#x}: EPT02 maps L0's {:#x}", t12.hpa)))?;
    prop_assert_eq!(leaf.addr() + (x - gpa2), t01.hpa, "address at {:#x}", x);
    prop_assert_eq!(leaf.perms(), t12.perms & t01.perms, "rights at {:#x}", x);
    prop_assert_eq!(leaf.memory_type(), Some(t12.memory_type));
    prop_assert_eq!(leaf.ignore_pat(), t12.ignore_pat);
    let (l0s, l0e) = w.l0_host_range();
    prop_assert!(
        leaf.addr() + size <= l0s || leaf.addr() >= l0e,
        "EPT02 leaf reaches L0's memory"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn ept02_is_the_composition_and_never_maps_l0(
        maps in prop::collection::vec(map12(), 1..24),
        edits in prop::collection::vec(edit12(), 0..6),
        holes in prop::collection::vec((any::<u64>(), 0u8..2, 0u8..8), 0..16),
        hidden_mib in 0u64..4000,
        hidden_pages in 1u64..1024,
        probes in prop::collection::vec((any::<u64>(), 0usize..24, 1u8..8, any::<bool>()), 64),
    ) {
        let hs = hidden_mib << 20;
        let w = build(&maps, &edits, &holes, (hs, hs + hidden_pages * 4096));
        let mut mem02 = w.mem.clone();
        let mut pool = ListPool::new(&mut mem02, TABLES02, FRAMES);
        let ept02 = Ept02::new(&mut mem02, &mut pool).unwrap();
        let p = Resolve { eptp12: w.eptp12, cfg12: &w.cfg, cfg02: &w.cfg };
        let mut installed = 0;
        for (r, which, access_bits, near) in probes {
            // Half the probes inside a mapping of EPT12, half anywhere.
            let gpa2 = if near {
                let m = &maps[which % maps.len()];
                let bytes = page_bytes(m.size);
                (m.gpa2_page % (SPACE / bytes)) * bytes + (r % bytes)
            } else {
                r % SPACE
            };
            let access = EptPerms::from_bits_truncate(access_bits);
            let qual = u64::from(access.bits()) | EptViolationQual::GLA_VALID | (r & EptViolationQual::NMI_UNBLOCKING);
            let out = resolve(&p, &w.mem, &w.ept01(), gpa2, qual);
            let t12 = walk(&w.mem, w.eptp12, gpa2, access, &w.cfg);
            match out {
                Ept02Outcome::Install(i) => {
                    let t12 = t12.map_err(|e| TestCaseError::fail(format!("install but EPT12 says {e}")))?;
                    prop_assert!(i.leaf.perms().contains(access));
                    prop_assert_eq!(i.gpa1 + (gpa2 - i.gpa2), t12.hpa);
                    ept02.install(&mut mem02, &mut pool, i.gpa2, i.page_size, i.leaf).unwrap();
                    installed += 1;
                }
                Ept02Outcome::Violation { qualification } => {
                    let Err(EptFault::Violation(v)) = t12 else {
                        return Err(TestCaseError::fail(format!("violation but EPT12 says {t12:?}")));
                    };
                    prop_assert_eq!(qualification & 7, u64::from(access.bits()));
                    prop_assert_eq!((qualification >> 3) & 7, u64::from(v.allowed.bits()));
                    prop_assert_eq!(qualification & !(COPIED_QUAL_BITS | 0x38), 0);
                    prop_assert_eq!(qualification & (EptViolationQual::GLA_VALID | EptViolationQual::NMI_UNBLOCKING), qual & (EptViolationQual::GLA_VALID | EptViolationQual::NMI_UNBLOCKING));
                }
                Ept02Outcome::Misconfig => {
                    prop_assert!(matches!(t12, Err(EptFault::Misconfig(_))), "{:?}", t12);
                }
                Ept02Outcome::L0Fault { gpa1, perms12 } => {
                    let t12 = t12.map_err(|e| TestCaseError::fail(format!("L0 fault but EPT12 says {e}")))?;
                    prop_assert_eq!(gpa1, t12.hpa);
                    prop_assert_eq!(perms12, t12.perms);
                    let l01 = w.ept01().lookup(gpa1);
                    prop_assert!(l01.is_none_or(|l| !(l.perms & t12.perms).contains(access)));
                }
            }
        }
        // Every leaf of EPT02, at its first, last and middle byte.
        let mut leaves = 0;
        let mut result = Ok(());
        ept02.for_each_leaf(&mem02, |gpa2, leaf, level| {
            leaves += 1;
            let size = crate::ept::entry::level_size(level);
            for x in [gpa2, gpa2 + size / 2 + 0x123, gpa2 + size - 1] {
                if result.is_ok() {
                    result = check_leaf_at(&w, gpa2, leaf, level, x);
                }
            }
        });
        result?;
        prop_assert!(leaves <= installed);
        // Freeing returns every frame.
        ept02.free(&mem02, &mut pool);
        prop_assert!(pool.out.is_empty());
    }
}

#[test]
fn upper_level_rights_count_and_large_pages_combine() {
    // EPT12: 1-GiB page at 0 -> 1 GiB, RWX, WT; its PDPTE... the PML4E
    // narrowed to read/execute: a write is L1's violation with bits 5:3 = RX.
    let maps = [Map12 {
        size: 2,
        gpa2_page: 0,
        gpa1_page: 1,
        perms: 7,
        mt: 2,
        ipat: true,
    }];
    let edits = [Edit12 {
        gpa2: 0,
        level: 4,
        and_perms: 5,
        misconfig: None,
    }];
    let w = build(&maps, &edits, &[(0x40100, 0, 1)], (3 * GIB, 3 * GIB + 4096));
    let p = Resolve {
        eptp12: w.eptp12,
        cfg12: &w.cfg,
        cfg02: &w.cfg,
    };
    let out = resolve(&p, &w.mem, &w.ept01(), 0x1234, 0x2 | 0x180);
    assert_eq!(
        out,
        Ept02Outcome::Violation {
            qualification: 0x2 | 0x180 | (5 << 3)
        }
    );
    // A read: EPT01 maps [1 GiB, 2 GiB) with 2-MiB pages after the split
    // around its narrowed (read-only) 4-KiB page at 1 GiB + 1 MiB.
    let Ept02Outcome::Install(i) = resolve(&p, &w.mem, &w.ept01(), 0x40_1234, 0x1) else {
        panic!()
    };
    assert_eq!((i.gpa2, i.page_size), (0x40_0000, PageSize::Size2M));
    assert_eq!(i.leaf.addr(), HOST_BASE + GIB + 0x40_0000);
    assert_eq!(i.leaf.perms(), EptPerms::RX);
    assert_eq!(i.leaf.memory_type(), Some(MemoryType::WriteThrough));
    assert!(i.leaf.ignore_pat());
    let Ept02Outcome::Install(i) = resolve(&p, &w.mem, &w.ept01(), 0x0010_0000, 0x1) else {
        panic!()
    };
    assert_eq!((i.gpa2, i.page_size), (0x0010_0000, PageSize::Size4K));
    assert_eq!(i.leaf.perms(), EptPerms::READ);
    // The narrowed page allows reads only: a fetch is L0's fault.
    let no_2m = EptConfig {
        pages_2m: false,
        ..w.cfg
    };
    let p4k = Resolve { cfg02: &no_2m, ..p };
    let Ept02Outcome::Install(i) = resolve(&p4k, &w.mem, &w.ept01(), 0x1234, 0x1) else {
        panic!()
    };
    assert_eq!(i.page_size, PageSize::Size4K);
    assert_eq!(
        resolve(&p, &w.mem, &w.ept01(), 0x0010_0000 + 5, 0x4),
        Ept02Outcome::L0Fault {
            gpa1: GIB + 0x0010_0000 + 5,
            perms12: EptPerms::RX
        }
    );
}

#[test]
fn hidden_memory_and_bad_tables_are_never_installed() {
    let maps = [Map12 {
        size: 1,
        gpa2_page: 0,
        gpa1_page: 1,
        perms: 7,
        mt: 4,
        ipat: false,
    }];
    let w = build(&maps, &[], &[], (MIB2 + 0x5000, MIB2 + 0x6000));
    let p = Resolve {
        eptp12: w.eptp12,
        cfg12: &w.cfg,
        cfg02: &w.cfg,
    };
    assert!(matches!(
        resolve(&p, &w.mem, &w.ept01(), 0x5010, 0x1),
        Ept02Outcome::L0Fault {
            gpa1: 0x20_5010,
            ..
        }
    ));
    // Next to it: 4-KiB EPT02 pages only (EPT01's page holds L0's memory).
    let Ept02Outcome::Install(i) = resolve(&p, &w.mem, &w.ept01(), 0x4010, 0x1) else {
        panic!()
    };
    assert_eq!(
        (i.gpa2, i.page_size, i.leaf.addr()),
        (0x4000, PageSize::Size4K, HOST_BASE + 0x20_4000)
    );
    // An EPTP whose PML4 is outside L1's memory: misconfiguration.
    let far = Resolve {
        eptp12: Eptp::new(0x7000_0000, MemoryType::WriteBack, 4, false),
        ..p
    };
    assert_eq!(
        resolve(&far, &w.mem, &w.ept01(), 0x5010, 0x1),
        Ept02Outcome::Misconfig
    );
    // Beyond what the walk translates: a violation, rights 0.
    assert_eq!(
        resolve(&p, &w.mem, &w.ept01(), 1 << 50, 0x81),
        Ept02Outcome::Violation {
            qualification: 0x81
        }
    );
    // No access bits (Bochs, some paging-structure reads): a read.
    assert_eq!(access_of(0x80), EptPerms::READ);
}
