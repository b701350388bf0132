//! EPT02 tables and the root cache: frames come back, roots are never
//! stale after INVEPT, LRU order.

use super::*;
use crate::ept::entry::EptPerms;
use crate::ept::nested::tests_support::ListPool;
use crate::mem::SparseMemory;
use proptest::prelude::*;

const BASE: u64 = 0x300_0000_0000;

fn leaf(addr: u64, size: PageSize) -> EptEntry {
    EptEntry::leaf(addr, size.level(), EptPerms::RWX, MemoryType::WriteBack)
}

#[test]
fn install_replaces_tables_and_large_leaves() {
    let mut mem = SparseMemory::new();
    let mut pool = ListPool::new(&mut mem, BASE, 64);
    let e = Ept02::new(&mut mem, &mut pool).unwrap();
    let i = e
        .install(
            &mut mem,
            &mut pool,
            0x20_1000,
            PageSize::Size4K,
            leaf(0x5000, PageSize::Size4K),
        )
        .unwrap();
    assert_eq!((i.replaced, i.new_tables), (false, 3));
    assert_eq!(e.frames(&mem), 4);
    // A 2-MiB leaf over the PT: the PT is freed, a flush is asked for.
    let i = e
        .install(
            &mut mem,
            &mut pool,
            0x20_0000,
            PageSize::Size2M,
            leaf(0x40_0000, PageSize::Size2M),
        )
        .unwrap();
    assert_eq!((i.replaced, i.new_tables), (true, 0));
    assert_eq!(e.frames(&mem), 3);
    assert_eq!(
        e.lookup(&mem, 0x2f_ffff).map(|(l, lv)| (l.addr(), lv)),
        Some((0x40_0000, 2))
    );
    // A 4-KiB leaf under the 2-MiB leaf: a new PT with only that page.
    let i = e
        .install(
            &mut mem,
            &mut pool,
            0x20_3000,
            PageSize::Size4K,
            leaf(0x9000, PageSize::Size4K),
        )
        .unwrap();
    assert_eq!((i.replaced, i.new_tables), (true, 1));
    assert_eq!(e.lookup(&mem, 0x20_0000), None);
    assert_eq!(
        e.lookup(&mem, 0x20_3fff).map(|(l, _)| l.addr()),
        Some(0x9000)
    );
    // Cleared in place: only the PML4 is left, and it maps nothing.
    e.clear(&mut mem, &mut pool);
    assert_eq!((e.frames(&mem), pool.out.len()), (1, 1));
    assert_eq!(e.lookup(&mem, 0x20_3000), None);
    e.free(&mem, &mut pool);
    assert!(pool.out.is_empty());
}

#[test]
fn out_of_frames_is_an_error_and_leaks_nothing() {
    let mut mem = SparseMemory::new();
    let mut pool = ListPool::new(&mut mem, BASE, 2);
    let e = Ept02::new(&mut mem, &mut pool).unwrap();
    assert_eq!(
        e.install(
            &mut mem,
            &mut pool,
            0,
            PageSize::Size4K,
            leaf(0, PageSize::Size4K)
        ),
        Err(BuildError::OutOfFrames)
    );
    e.free(&mem, &mut pool);
    assert!(pool.out.is_empty());
    // The cache evicts to make room for a new root.
    let mut pool = ListPool::new(&mut mem, BASE + 0x10_0000, 1);
    let mut c = RootCache::new(4);
    let a = c.get(&mut mem, &mut pool, 0x1000).unwrap();
    assert!(a.created);
    let b = c.get(&mut mem, &mut pool, 0x2000).unwrap();
    assert!(b.created && c.peek(0x1000).is_none() && c.stats.evictions == 1);
    // The one frame came back as the new root (which the caller flushes).
    assert_eq!(a.ept02, b.ept02);
    assert!(c.reset(&mut mem, &mut pool, b.ept02));
    assert_eq!(c.peek(0x2000), Some(b.ept02));
    c.invalidate_all(&mem, &mut pool);
    assert!(!c.reset(&mut mem, &mut pool, b.ept02));
}

#[test]
fn lru_evicts_the_least_recently_used() {
    let mut mem = SparseMemory::new();
    let mut pool = ListPool::new(&mut mem, BASE, 64);
    let mut c = RootCache::new(2);
    c.get(&mut mem, &mut pool, 0x1000).unwrap();
    c.get(&mut mem, &mut pool, 0x2000).unwrap();
    assert!(!c.get(&mut mem, &mut pool, 0x1000).unwrap().created);
    c.get(&mut mem, &mut pool, 0x3000).unwrap();
    assert!(c.peek(0x2000).is_none() && c.peek(0x1000).is_some() && c.peek(0x3000).is_some());
    assert_eq!(
        c.stats,
        CacheStats {
            hits: 1,
            misses: 3,
            evictions: 1,
            invalidations: 0
        }
    );
    // Single-context INVEPT matches bits 51:12 only.
    assert_eq!(c.invalidate(&mem, &mut pool, 0x101e), 1);
    assert_eq!(c.invalidate_all(&mem, &mut pool), 1);
    assert!(c.is_empty() && pool.out.is_empty());
}

#[derive(Clone, Debug)]
enum Op {
    Get(u8),
    Fault(u8, u64),
    Invept(u8),
    InveptAll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6).prop_map(Op::Get),
        6 => ((0u8..6), 0u64..(1 << 33)).prop_map(|(k, g)| Op::Fault(k, g)),
        1 => (0u8..6).prop_map(Op::Invept),
        1 => Just(Op::InveptAll),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Against a model: after INVEPT of an EPTP (or all), its next root is
    /// a new, empty one; at most `capacity` roots are held; the frames out
    /// are exactly the tables of the roots held, and all come back.
    #[test]
    fn never_stale_after_invept_and_frames_come_back(
        capacity in 1usize..5,
        frames in 8u64..64,
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut mem = SparseMemory::new();
        let mut pool = ListPool::new(&mut mem, BASE, frames);
        let mut c = RootCache::new(capacity);
        // Model: which EPTPs were invalidated since their root was made.
        let key = |k: u8| (0x10_0000u64 * (u64::from(k) + 1)) | 0x1e;
        let mut must_be_fresh = [true; 6];
        for o in ops {
            match o {
                Op::Get(k) | Op::Fault(k, _) => {
                    let Ok(r) = c.get(&mut mem, &mut pool, key(k)) else { continue };
                    if must_be_fresh[usize::from(k)] {
                        prop_assert!(r.created, "stale root for {:#x}", key(k));
                        let mut n = 0;
                        r.ept02.for_each_leaf(&mem, |_, _, _| n += 1);
                        prop_assert_eq!(n, 0);
                    }
                    must_be_fresh[usize::from(k)] = false;
                    if let Op::Fault(_, g) = o {
                        let g = g & !0xfff;
                        let mut res = r.ept02.install(&mut mem, &mut pool, g, PageSize::Size4K, leaf(g, PageSize::Size4K));
                        while res == Err(BuildError::OutOfFrames) && c.evict_lru(&mem, &mut pool, Some(r.ept02)) {
                            res = r.ept02.install(&mut mem, &mut pool, g, PageSize::Size4K, leaf(g, PageSize::Size4K));
                        }
                    }
                }
                Op::Invept(k) => {
                    c.invalidate(&mem, &mut pool, key(k));
                    must_be_fresh[usize::from(k)] = true;
                }
                Op::InveptAll => {
                    c.invalidate_all(&mem, &mut pool);
                    must_be_fresh = [true; 6];
                }
            }
            // Evicted roots are fresh when they come back as well.
            for k in 0..6u8 {
                if c.peek(key(k)).is_none() {
                    must_be_fresh[usize::from(k)] = true;
                }
            }
            prop_assert!(c.len() <= capacity);
            let held: u64 = (0..6u8).filter_map(|k| c.peek(key(k))).map(|e| e.frames(&mem)).sum();
            prop_assert_eq!(held, pool.out.len() as u64);
        }
        c.invalidate_all(&mem, &mut pool);
        prop_assert!(pool.out.is_empty());
        prop_assert_eq!(pool.free.len() as u64, frames);
    }
}
