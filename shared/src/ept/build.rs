//! Building and editing EPT paging structures: map a range with the
//! largest pages that fit, unmap (splitting large pages), change rights.
//!
//! Frames come from a caller-supplied [`FrameAlloc`]; tables are written
//! through [`PhysMemory`]. Edits of tables in use by a processor must be
//! followed by INVEPT, which is the caller's business. Frames are never
//! freed: a table that becomes unused stays allocated (the builders here
//! serve long-lived maps such as L0's EPT01 and LHV's test EPTs).

use super::entry::{
    ENTRIES_PER_TABLE, ENTRY_SIZE, EptConfig, EptEntry, EptPerms, Eptp, MemoryType, PAGE_SIZE,
    PageSize, level_index, level_size,
};
use crate::mem::{MemError, PhysMemory};
use core::fmt;

/// A source of zeroed 4-KiB frames for paging structures.
pub trait FrameAlloc {
    /// Allocates one zeroed, 4-KiB aligned frame; returns its physical
    /// address, or `None` when none is left.
    fn alloc_zeroed(&mut self) -> Option<u64>;
}

/// Why a build operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The frame allocator is exhausted.
    OutOfFrames,
    /// An address or length is not 4-KiB aligned.
    Misaligned(u64),
    /// The range wraps or goes beyond the 48 bits a 4-level walk translates.
    OutOfRange,
    /// The rights allow writes without reads (always a misconfiguration).
    WriteWithoutRead,
    /// A frame from the allocator is not 4-KiB aligned.
    BadFrame(u64),
    /// A table could not be accessed.
    Memory(MemError),
}

impl From<MemError> for BuildError {
    fn from(e: MemError) -> Self {
        Self::Memory(e)
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfFrames => f.write_str("out of frames for EPT tables"),
            Self::Misaligned(a) => write!(f, "{a:#x} is not 4-KiB aligned"),
            Self::OutOfRange => f.write_str("range outside the 48-bit EPT address space"),
            Self::WriteWithoutRead => f.write_str("EPT rights with write but no read"),
            Self::BadFrame(a) => write!(f, "allocator returned unaligned frame {a:#x}"),
            Self::Memory(e) => write!(f, "EPT table access failed: {e:?}"),
        }
    }
}

/// The attributes of the leaves [`EptBuilder::map_range`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// Access rights.
    pub perms: EptPerms,
    /// Leaf memory type.
    pub memory_type: MemoryType,
}

impl Mapping {
    /// Read, write, execute; write back: ordinary RAM.
    pub const RAM: Self = Self {
        perms: EptPerms::RWX,
        memory_type: MemoryType::WriteBack,
    };

    /// A mapping with `perms` and `memory_type`.
    pub const fn new(perms: EptPerms, memory_type: MemoryType) -> Self {
        Self { perms, memory_type }
    }
}

/// Levels of the tables this builder makes (a 4-level walk).
const LEVELS: u8 = 4;
/// Addresses a 4-level walk translates.
const ADDRESS_LIMIT: u64 = 1 << 48;

/// A 4-level EPT hierarchy under construction (or being edited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptBuilder {
    root: u64,
    pages_2m: bool,
    pages_1g: bool,
}

/// Where a walk of the builder's tables stopped for an address.
struct Slot {
    /// Physical address of the entry.
    addr: u64,
    entry: EptEntry,
    level: u8,
}

impl EptBuilder {
    /// Allocates an empty PML4. Large pages are used as far as `cfg`
    /// allows.
    pub fn new(alloc: &mut impl FrameAlloc, cfg: &EptConfig) -> Result<Self, BuildError> {
        Ok(Self {
            root: alloc_table(alloc)?,
            pages_2m: cfg.pages_2m,
            pages_1g: cfg.pages_1g,
        })
    }

    /// Edits existing tables rooted at `root` (a 4-level hierarchy).
    pub const fn from_root(root: u64, cfg: &EptConfig) -> Self {
        Self {
            root,
            pages_2m: cfg.pages_2m,
            pages_1g: cfg.pages_1g,
        }
    }

    /// Physical address of the PML4.
    pub const fn root(&self) -> u64 {
        self.root
    }

    /// An EPTP for these tables.
    pub const fn eptp(&self, memory_type: MemoryType, accessed_dirty: bool) -> Eptp {
        Eptp::new(self.root, memory_type, LEVELS, accessed_dirty)
    }

    /// Maps `[gpa, gpa + len)` to `[hpa, hpa + len)` with the rights and
    /// memory type of `mapping`, using the largest pages that fit
    /// (a page size is used where both addresses are aligned to it and the
    /// rest of the range covers it, and no table is already in its place).
    /// Existing mappings in the range are replaced.
    pub fn map_range(
        &mut self,
        mem: &mut impl PhysMemory,
        alloc: &mut impl FrameAlloc,
        gpa: u64,
        hpa: u64,
        len: u64,
        mapping: Mapping,
    ) -> Result<(), BuildError> {
        let Mapping { perms, memory_type } = mapping;
        let end = check_range(gpa, len, perms)?;
        check_aligned(hpa)?;
        hpa.checked_add(len)
            .filter(|&e| e <= ADDRESS_LIMIT)
            .ok_or(BuildError::OutOfRange)?;
        let mut offset = 0;
        while gpa + offset < end {
            let (g, h, left) = (gpa + offset, hpa + offset, end - gpa - offset);
            let mut mapped = 0;
            for size in [PageSize::Size1G, PageSize::Size2M, PageSize::Size4K] {
                let bytes = size.bytes();
                if !self.allows(size)
                    || !g.is_multiple_of(bytes)
                    || !h.is_multiple_of(bytes)
                    || left < bytes
                {
                    continue;
                }
                let leaf = EptEntry::leaf(h, size.level(), perms, memory_type);
                if self.set_leaf(mem, alloc, g, size.level(), leaf)? {
                    mapped = bytes;
                    break;
                }
            }
            // A 4-KiB leaf always fits; the guard keeps the loop finite.
            if mapped == 0 {
                return Err(BuildError::Misaligned(g));
            }
            offset += mapped;
        }
        Ok(())
    }

    /// Identity-maps `[start, start + len)`: see [`EptBuilder::map_range`].
    pub fn identity_map(
        &mut self,
        mem: &mut impl PhysMemory,
        alloc: &mut impl FrameAlloc,
        start: u64,
        len: u64,
        mapping: Mapping,
    ) -> Result<(), BuildError> {
        self.map_range(mem, alloc, start, start, len, mapping)
    }

    /// Unmaps `[gpa, gpa + len)`, splitting large pages that straddle its
    /// ends; parts already unmapped are skipped.
    pub fn unmap_range(
        &mut self,
        mem: &mut impl PhysMemory,
        alloc: &mut impl FrameAlloc,
        gpa: u64,
        len: u64,
    ) -> Result<(), BuildError> {
        self.update_range(mem, alloc, gpa, len, EptPerms::empty(), |_| EptEntry::EMPTY)
    }

    /// Unmaps the 4-KiB page at `gpa` (splitting a large page around it).
    pub fn unmap_4k(
        &mut self,
        mem: &mut impl PhysMemory,
        alloc: &mut impl FrameAlloc,
        gpa: u64,
    ) -> Result<(), BuildError> {
        self.unmap_range(mem, alloc, gpa, PAGE_SIZE)
    }

    /// Sets the rights of the mapped parts of `[gpa, gpa + len)` to
    /// `perms`, splitting large pages that straddle its ends. Unmapped
    /// parts stay unmapped; empty `perms` unmap.
    pub fn protect(
        &mut self,
        mem: &mut impl PhysMemory,
        alloc: &mut impl FrameAlloc,
        gpa: u64,
        len: u64,
        perms: EptPerms,
    ) -> Result<(), BuildError> {
        self.update_range(mem, alloc, gpa, len, perms, |e| e.with_perms(perms))
    }

    const fn allows(&self, size: PageSize) -> bool {
        match size {
            PageSize::Size4K => true,
            PageSize::Size2M => self.pages_2m,
            PageSize::Size1G => self.pages_1g,
        }
    }

    /// Applies `edit` to every leaf covering `[gpa, gpa + len)`, splitting
    /// leaves that are only partly inside.
    fn update_range(
        &mut self,
        mem: &mut impl PhysMemory,
        alloc: &mut impl FrameAlloc,
        gpa: u64,
        len: u64,
        perms: EptPerms,
        edit: impl Fn(EptEntry) -> EptEntry,
    ) -> Result<(), BuildError> {
        let end = check_range(gpa, len, perms)?;
        let mut cur = gpa;
        while cur < end {
            let slot = self.find(mem, cur)?;
            let size = level_size(slot.level);
            let start_of_slot = cur & !(size - 1);
            if !slot.entry.is_present() {
                cur = start_of_slot + size;
            } else if cur == start_of_slot && end - cur >= size {
                mem.write_u64(slot.addr, edit(slot.entry).0)?;
                cur += size;
            } else {
                // A large leaf only partly in the range (level 1 leaves are
                // always whole, as addresses are 4-KiB aligned).
                split(mem, alloc, &slot)?;
            }
        }
        Ok(())
    }

    /// Descends to the entry that maps `gpa` or is not present.
    fn find(&self, mem: &impl PhysMemory, gpa: u64) -> Result<Slot, BuildError> {
        let mut table = self.root;
        let mut level = LEVELS;
        loop {
            let addr = table + level_index(gpa, level) * ENTRY_SIZE;
            let entry = EptEntry(mem.read_u64(addr)?);
            if !entry.is_present() || entry.is_leaf(level) {
                return Ok(Slot { addr, entry, level });
            }
            table = entry.addr();
            level -= 1;
        }
    }

    /// Writes `leaf` as the entry for `gpa` at `target` level, creating
    /// tables and splitting large pages above it. Returns `false` (and
    /// changes nothing at `target`) when a table is already there.
    fn set_leaf(
        &mut self,
        mem: &mut impl PhysMemory,
        alloc: &mut impl FrameAlloc,
        gpa: u64,
        target: u8,
        leaf: EptEntry,
    ) -> Result<bool, BuildError> {
        let mut table = self.root;
        let mut level = LEVELS;
        loop {
            let addr = table + level_index(gpa, level) * ENTRY_SIZE;
            let entry = EptEntry(mem.read_u64(addr)?);
            if level == target {
                if entry.is_present() && !entry.is_leaf(level) {
                    return Ok(false);
                }
                mem.write_u64(addr, leaf.0)?;
                return Ok(true);
            }
            table = if !entry.is_present() {
                let new = alloc_table(alloc)?;
                mem.write_u64(addr, EptEntry::table(new).0)?;
                new
            } else if entry.is_leaf(level) {
                split(mem, alloc, &Slot { addr, entry, level })?
            } else {
                entry.addr()
            };
            level -= 1;
        }
    }
}

/// Replaces the large leaf in `slot` by a table of 512 leaves one level
/// down with the same translation and attributes; returns the new table.
fn split(
    mem: &mut impl PhysMemory,
    alloc: &mut impl FrameAlloc,
    slot: &Slot,
) -> Result<u64, BuildError> {
    let table = alloc_table(alloc)?;
    let child_level = slot.level - 1;
    let child_size = level_size(child_level);
    // Attribute bits (rights, memory type, ignore PAT, A/D, ...) without
    // the address and the page-size bit.
    let attrs = slot.entry.0 & !EptEntry::ADDR_MASK & !EptEntry::LARGE;
    let large = if child_level > 1 { EptEntry::LARGE } else { 0 };
    for i in 0..ENTRIES_PER_TABLE {
        let child = (slot.entry.addr() + i * child_size) | attrs | large;
        mem.write_u64(table + i * ENTRY_SIZE, child)?;
    }
    mem.write_u64(slot.addr, EptEntry::table(table).0)?;
    Ok(table)
}

fn alloc_table(alloc: &mut impl FrameAlloc) -> Result<u64, BuildError> {
    let frame = alloc.alloc_zeroed().ok_or(BuildError::OutOfFrames)?;
    if !frame.is_multiple_of(PAGE_SIZE) || frame & !EptEntry::ADDR_MASK != 0 {
        return Err(BuildError::BadFrame(frame));
    }
    Ok(frame)
}

const fn check_aligned(addr: u64) -> Result<(), BuildError> {
    if !addr.is_multiple_of(PAGE_SIZE) {
        Err(BuildError::Misaligned(addr))
    } else {
        Ok(())
    }
}

/// Checks alignment, the 48-bit limit and the rights; returns the end.
const fn check_range(gpa: u64, len: u64, perms: EptPerms) -> Result<u64, BuildError> {
    if perms.is_write_without_read() {
        return Err(BuildError::WriteWithoutRead);
    }
    if let Err(e) = check_aligned(gpa) {
        return Err(e);
    }
    if let Err(e) = check_aligned(len) {
        return Err(e);
    }
    match gpa.checked_add(len) {
        Some(end) if end <= ADDRESS_LIMIT => Ok(end),
        _ => Err(BuildError::OutOfRange),
    }
}

#[cfg(test)]
pub(crate) mod tests;
