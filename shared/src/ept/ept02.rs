//! EPT02: the tables L0 builds for L2 from EPT12 and EPT01 (see
//! [`super::nested`]), and the per-CPU cache of their roots.
//!
//! - [`Ept02`]: one 4-level hierarchy, filled one leaf at a time
//!   ([`Ept02::install`]), freed as a whole ([`Ept02::free`]) into a
//!   [`FramePool`] that takes frames back.
//! - [`RootCache`]: the EPT02 roots of one CPU keyed by EPTP12, least
//!   recently used evicted first (XMHF64's policy), invalidated by L1's
//!   INVEPT ([`RootCache::invalidate`], [`RootCache::invalidate_all`]).
//!
//! TLB rule for the caller (SDM 29.4.3.1: translations are tagged with the
//! EPTP): a root frame may have been a root before, so the caller flushes
//! the EPTP of every root [`RootCache::get`] creates (`created`) before
//! entering L2 with it, and the EPTP of a root whose present entries an
//! [`Ept02::install`] replaced (`replaced`). Frames of freed tables are
//! then never reachable through a cached translation.

use super::build::{BuildError, FrameAlloc};
use super::entry::{
    ENTRIES_PER_TABLE, ENTRY_SIZE, EptEntry, Eptp, MemoryType, PAGE_SIZE, PageSize, level_index,
};
use crate::mem::PhysMemory;

/// A frame allocator that takes frames back.
pub trait FramePool: FrameAlloc {
    /// Returns a frame obtained from [`FrameAlloc::alloc_zeroed`].
    fn free(&mut self, frame: u64);
}

/// Levels of an EPT02 hierarchy.
const LEVELS: u8 = 4;

/// One EPT02 hierarchy (its PML4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ept02 {
    root: u64,
}

/// What an [`Ept02::install`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Installed {
    /// A present entry was replaced (a leaf, or a table whose frames were
    /// freed): the caller flushes the root's EPTP.
    pub replaced: bool,
    /// Table frames allocated.
    pub new_tables: u32,
}

impl Ept02 {
    /// An empty hierarchy (a zeroed PML4).
    pub fn new(mem: &mut impl PhysMemory, pool: &mut impl FramePool) -> Result<Self, BuildError> {
        Ok(Self {
            root: alloc_table(mem, pool)?,
        })
    }

    /// Physical address of the PML4.
    pub const fn root(&self) -> u64 {
        self.root
    }

    /// The EPTP of VMCS02 (WB paging-structure accesses, no A/D).
    pub const fn eptp(&self) -> Eptp {
        Eptp::new(self.root, MemoryType::WriteBack, LEVELS, false)
    }

    /// Writes `leaf` as the entry of size `size` for `gpa2`, creating the
    /// tables above it. A table in its place (smaller pages installed
    /// before) is freed; a large leaf above it is replaced by a table.
    pub fn install(
        &self,
        mem: &mut impl PhysMemory,
        pool: &mut impl FramePool,
        gpa2: u64,
        size: PageSize,
        leaf: EptEntry,
    ) -> Result<Installed, BuildError> {
        let target = size.level();
        let mut done = Installed {
            replaced: false,
            new_tables: 0,
        };
        let mut table = self.root;
        let mut level = LEVELS;
        loop {
            let addr = table + level_index(gpa2, level) * ENTRY_SIZE;
            let entry = EptEntry(mem.read_u64(addr)?);
            if level == target {
                if entry.is_present() {
                    done.replaced = true;
                    if !entry.is_leaf(level) {
                        free_tree(mem, pool, entry.addr(), level - 1);
                    }
                }
                mem.write_u64(addr, leaf.0)?;
                return Ok(done);
            }
            if entry.is_present() && !entry.is_leaf(level) {
                table = entry.addr();
            } else {
                // Not present, or a large leaf whose other parts fault in
                // again on demand.
                let new = alloc_table(mem, pool)?;
                done.new_tables += 1;
                done.replaced |= entry.is_present();
                mem.write_u64(addr, EptEntry::table(new).0)?;
                table = new;
            }
            level -= 1;
        }
    }

    /// The leaf that maps `gpa2` and its level, if any.
    pub fn lookup(&self, mem: &impl PhysMemory, gpa2: u64) -> Option<(EptEntry, u8)> {
        let mut table = self.root;
        let mut level = LEVELS;
        loop {
            let entry = EptEntry(
                mem.read_u64(table + level_index(gpa2, level) * ENTRY_SIZE)
                    .ok()?,
            );
            if !entry.is_present() {
                return None;
            }
            if entry.is_leaf(level) {
                return Some((entry, level));
            }
            table = entry.addr();
            level -= 1;
        }
    }

    /// Calls `f(gpa2, leaf, level)` for every leaf.
    pub fn for_each_leaf(&self, mem: &impl PhysMemory, mut f: impl FnMut(u64, EptEntry, u8)) {
        visit(mem, self.root, LEVELS, 0, &mut f);
    }

    /// Frames of the hierarchy, root included.
    pub fn frames(&self, mem: &impl PhysMemory) -> u64 {
        count_tables(mem, self.root, LEVELS)
    }

    /// Frees every table below the PML4 and empties it (the EPTP stays
    /// valid; the caller flushes it).
    pub fn clear(&self, mem: &mut impl PhysMemory, pool: &mut impl FramePool) {
        for i in 0..ENTRIES_PER_TABLE {
            let addr = self.root + i * ENTRY_SIZE;
            let Ok(e) = mem.read_u64(addr).map(EptEntry) else {
                continue;
            };
            if e.is_present() {
                if !e.is_leaf(LEVELS) {
                    free_tree(mem, pool, e.addr(), LEVELS - 1);
                }
                let _ = mem.write_u64(addr, 0);
            }
        }
    }

    /// Frees every table of the hierarchy, root included.
    pub fn free(self, mem: &impl PhysMemory, pool: &mut impl FramePool) {
        free_tree(mem, pool, self.root, LEVELS);
    }
}

fn alloc_table(mem: &mut impl PhysMemory, pool: &mut impl FramePool) -> Result<u64, BuildError> {
    let frame = pool.alloc_zeroed().ok_or(BuildError::OutOfFrames)?;
    if !frame.is_multiple_of(PAGE_SIZE) || frame & !EptEntry::ADDR_MASK != 0 {
        return Err(BuildError::BadFrame(frame));
    }
    // Zeroed here too: a frame must not carry entries from its last use
    // whatever the pool does.
    if let Err(e) = mem.write(frame, &[0; PAGE_SIZE as usize]) {
        pool.free(frame);
        return Err(e.into());
    }
    Ok(frame)
}

/// Frees the table at `table` (of `level`) and every table below it.
fn free_tree(mem: &impl PhysMemory, pool: &mut impl FramePool, table: u64, level: u8) {
    if level > 1 {
        for i in 0..ENTRIES_PER_TABLE {
            let Ok(e) = mem.read_u64(table + i * ENTRY_SIZE).map(EptEntry) else {
                continue;
            };
            if e.is_present() && !e.is_leaf(level) {
                free_tree(mem, pool, e.addr(), level - 1);
            }
        }
    }
    pool.free(table);
}

fn count_tables(mem: &impl PhysMemory, table: u64, level: u8) -> u64 {
    let mut n = 1;
    if level > 1 {
        for i in 0..ENTRIES_PER_TABLE {
            if let Ok(e) = mem.read_u64(table + i * ENTRY_SIZE).map(EptEntry)
                && e.is_present()
                && !e.is_leaf(level)
            {
                n += count_tables(mem, e.addr(), level - 1);
            }
        }
    }
    n
}

fn visit(
    mem: &impl PhysMemory,
    table: u64,
    level: u8,
    base: u64,
    f: &mut impl FnMut(u64, EptEntry, u8),
) {
    let span = super::entry::level_size(level);
    for i in 0..ENTRIES_PER_TABLE {
        let Ok(e) = mem.read_u64(table + i * ENTRY_SIZE).map(EptEntry) else {
            continue;
        };
        if !e.is_present() {
            continue;
        }
        let gpa = base + i * span;
        if e.is_leaf(level) {
            f(gpa, e, level);
        } else {
            visit(mem, e.addr(), level - 1, gpa, f);
        }
    }
}

/// Most roots a [`RootCache`] holds.
pub const MAX_ROOTS: usize = 16;

#[derive(Clone, Copy, Debug)]
struct Slot {
    eptp12: u64,
    ept02: Ept02,
    /// Time of last use (larger is more recent).
    used: u64,
}

/// A root from [`RootCache::get`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Root {
    pub ept02: Ept02,
    /// Made now (a miss): the caller flushes its EPTP before use.
    pub created: bool,
}

/// Counters of a [`RootCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub invalidations: u64,
}

/// The EPT02 roots of one CPU, keyed by EPTP12, LRU.
#[derive(Debug)]
pub struct RootCache {
    slots: [Option<Slot>; MAX_ROOTS],
    capacity: usize,
    clock: u64,
    pub stats: CacheStats,
}

impl RootCache {
    /// An empty cache of `capacity` roots (1 to [`MAX_ROOTS`]).
    pub const fn new(capacity: usize) -> Self {
        let capacity = if capacity == 0 {
            1
        } else if capacity > MAX_ROOTS {
            MAX_ROOTS
        } else {
            capacity
        };
        Self {
            slots: [None; MAX_ROOTS],
            capacity,
            clock: 0,
            stats: CacheStats {
                hits: 0,
                misses: 0,
                evictions: 0,
                invalidations: 0,
            },
        }
    }

    /// How many roots it may hold.
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// Roots held.
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Whether no root is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached hierarchy whose PML4 is at `root`, if any.
    pub fn find_root(&self, root: u64) -> Option<Ept02> {
        self.slots
            .iter()
            .flatten()
            .find(|s| s.ept02.root == root)
            .map(|s| s.ept02)
    }

    /// The root for `eptp12` without touching the LRU order.
    pub fn peek(&self, eptp12: u64) -> Option<Ept02> {
        self.slots
            .iter()
            .flatten()
            .find(|s| s.eptp12 == eptp12)
            .map(|s| s.ept02)
    }

    /// The root for `eptp12`, made (after evicting the least recently used
    /// root if the cache is full) if there is none.
    pub fn get(
        &mut self,
        mem: &mut impl PhysMemory,
        pool: &mut impl FramePool,
        eptp12: u64,
    ) -> Result<Root, BuildError> {
        self.clock += 1;
        let now = self.clock;
        if let Some(s) = self.slots.iter_mut().flatten().find(|s| s.eptp12 == eptp12) {
            s.used = now;
            self.stats.hits += 1;
            return Ok(Root {
                ept02: s.ept02,
                created: false,
            });
        }
        self.stats.misses += 1;
        if self.len() >= self.capacity {
            self.evict_lru(mem, pool, None);
        }
        let ept02 = loop {
            match Ept02::new(mem, pool) {
                Ok(e) => break e,
                Err(BuildError::OutOfFrames) if self.evict_lru(mem, pool, None) => {}
                Err(e) => return Err(e),
            }
        };
        let Some(free) = self.slots.iter_mut().find(|s| s.is_none()) else {
            // Unreachable: eviction left a free slot; kept total.
            ept02.free(mem, pool);
            return Err(BuildError::OutOfFrames);
        };
        *free = Some(Slot {
            eptp12,
            ept02,
            used: now,
        });
        Ok(Root {
            ept02,
            created: true,
        })
    }

    /// Frees the least recently used root other than `keep`; false if
    /// there is none.
    pub fn evict_lru(
        &mut self,
        mem: &impl PhysMemory,
        pool: &mut impl FramePool,
        keep: Option<Ept02>,
    ) -> bool {
        let victim = self
            .slots
            .iter_mut()
            .filter(|s| s.is_some_and(|s| Some(s.ept02) != keep))
            .min_by_key(|s| s.map_or(u64::MAX, |s| s.used));
        let Some(slot) = victim.and_then(Option::take) else {
            return false;
        };
        slot.ept02.free(mem, pool);
        self.stats.evictions += 1;
        true
    }

    /// Drops the roots derived from the EPT whose PML4 is `eptp12`'s
    /// (INVEPT single-context invalidates by bits 51:12 of the EPTP, SDM
    /// 31.3 "INVEPT"). Returns how many were dropped.
    pub fn invalidate(
        &mut self,
        mem: &impl PhysMemory,
        pool: &mut impl FramePool,
        eptp12: u64,
    ) -> usize {
        let root = Eptp(eptp12).root();
        self.drop_where(mem, pool, |s| Eptp(s.eptp12).root() == root)
    }

    /// Drops every root (INVEPT all-context, VMXOFF, EPT01 changes).
    pub fn invalidate_all(&mut self, mem: &impl PhysMemory, pool: &mut impl FramePool) -> usize {
        self.drop_where(mem, pool, |_| true)
    }

    fn drop_where(
        &mut self,
        mem: &impl PhysMemory,
        pool: &mut impl FramePool,
        pred: impl Fn(&Slot) -> bool,
    ) -> usize {
        let mut n = 0;
        for s in &mut self.slots {
            if s.as_ref().is_some_and(&pred)
                && let Some(slot) = s.take()
            {
                slot.ept02.free(mem, pool);
                n += 1;
            }
        }
        self.stats.invalidations += n as u64;
        n
    }

    /// Empties the root `ept02` in place (frees the tables below its
    /// PML4, which stays): the last resort when frames run out, needing no
    /// frame itself. False if `ept02` is not cached.
    pub fn reset(
        &mut self,
        mem: &mut impl PhysMemory,
        pool: &mut impl FramePool,
        ept02: Ept02,
    ) -> bool {
        if self.find_root(ept02.root).is_none() {
            return false;
        }
        ept02.clear(mem, pool);
        true
    }
}

#[cfg(test)]
mod tests;
