//! The VM-entry/VM-exit MSR-load and MSR-store areas (Intel SDM Vol. 3C,
//! 25.7.2 "VM-Exit Controls for MSRs", 25.8.2 "VM-Entry Controls for MSRs";
//! checks from 26.2.1.2/26.2.1.3, 26.4 "Loading MSRs", 28.4 "Saving MSRs"
//! and 28.6 "Loading MSRs" on VM exit).
//!
//! An area is an array of 16-byte entries in guest memory, read and written
//! here through [`PhysMemory`]; the L0 emulation of a guest's areas uses
//! these checks, and reports failing entries as the SDM requires.

use crate::mem::{MemError, PhysMemory};
use core::fmt;

/// Size of one entry in bytes.
pub const MSR_ENTRY_SIZE: u64 = 16;
/// Required alignment of an area (bits 3:0 of its address are zero).
pub const MSR_AREA_ALIGN: u64 = 16;

/// IA32_SMM_MONITOR_CTL: writable only in SMM.
pub const IA32_SMM_MONITOR_CTL: u32 = 0x9b;
/// IA32_SMBASE: readable only in SMM.
pub const IA32_SMBASE: u32 = 0x9e;
/// IA32_FS_BASE: may not be loaded from an MSR area.
pub const IA32_FS_BASE: u32 = 0xc000_0100;
/// IA32_GS_BASE: may not be loaded from an MSR area.
pub const IA32_GS_BASE: u32 = 0xc000_0101;
/// Bits 31:8 of the x2APIC MSR range 800H-8FFH.
const X2APIC_RANGE_HIGH: u32 = 0x8;

/// One entry of an MSR area (Table 25-15 / 25-17).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct MsrEntry {
    /// Bits 31:0: the MSR index.
    pub index: u32,
    /// Bits 63:32: reserved, must be 0.
    pub reserved: u32,
    /// Bits 127:64: the MSR data.
    pub data: u64,
}

impl MsrEntry {
    /// An entry for `index` and `data`.
    pub const fn new(index: u32, data: u64) -> Self {
        Self {
            index,
            reserved: 0,
            data,
        }
    }
}

/// Which list an area is, which decides the rules its entries obey.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AreaKind {
    /// VM-entry MSR-load area (failure: VM-entry failure, exit reason 34,
    /// exit qualification = 1-based entry index).
    EntryLoad,
    /// VM-exit MSR-store area (failure: VMX abort).
    ExitStore,
    /// VM-exit MSR-load area (failure: VMX abort).
    ExitLoad,
}

/// Why an entry may not be processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryError {
    /// Bits 63:32 of the entry are not zero.
    ReservedBits,
    /// IA32_FS_BASE or IA32_GS_BASE in a load area.
    SegmentBase,
    /// An x2APIC MSR (800H-8FFH).
    X2Apic,
    /// IA32_SMM_MONITOR_CTL in a load area (writable only in SMM).
    SmmMonitorCtl,
    /// IA32_SMBASE in a store area (readable only in SMM).
    SmBase,
}

/// Why an area as a whole is invalid (the VM-entry checks on controls).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AreaError {
    /// Bits 3:0 of the address are not zero.
    Misaligned,
    /// The area, from its first to its last byte, is not within the
    /// physical-address width.
    BeyondPhysicalAddressWidth,
}

/// Why processing an area failed, with the entry that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrAreaError {
    /// The 1-based index of the failing entry (the exit qualification of a
    /// VM-entry failure due to MSR loading).
    pub index: u32,
    /// What failed.
    pub reason: MsrAreaFailure,
}

/// The reasons of [`MsrAreaError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrAreaFailure {
    /// The entry breaks a rule.
    Entry(EntryError),
    /// The count exceeds the recommended maximum of IA32_VMX_MISC; `index`
    /// is then the first entry beyond it.
    TooManyEntries,
    /// The entry could not be read from (or written to) memory.
    Memory(MemError),
    /// The RDMSR or WRMSR the entry stands for would raise #GP (an MSR
    /// that does not exist, is read-only or locked, or a reserved value).
    Refused,
}

impl fmt::Display for MsrAreaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MSR area entry {}: {:?}", self.index, self.reason)
    }
}

/// Checks the area's address for the VM-entry checks on VM-exit and
/// VM-entry controls (SDM 26.2.1.2, 26.2.1.3): bits 3:0 zero, and if
/// `count` is not zero, the address of the last byte
/// (`addr + 16 * count - 1`) within `phys_addr_bits`.
pub const fn check_area(addr: u64, count: u32, phys_addr_bits: u8) -> Result<(), AreaError> {
    if !addr.is_multiple_of(MSR_AREA_ALIGN) {
        return Err(AreaError::Misaligned);
    }
    let limit = if phys_addr_bits >= 64 {
        u64::MAX
    } else {
        (1u64 << phys_addr_bits) - 1
    };
    if addr > limit {
        return Err(AreaError::BeyondPhysicalAddressWidth);
    }
    if count == 0 {
        return Ok(());
    }
    match addr.checked_add(count as u64 * MSR_ENTRY_SIZE - 1) {
        Some(last) if last <= limit => Ok(()),
        _ => Err(AreaError::BeyondPhysicalAddressWidth),
    }
}

/// Checks one entry against the rules for its kind of area (SDM 26.4,
/// 28.4, 28.6). Failures that depend on the value (WRMSR or RDMSR would
/// fault) are for the code that performs the access.
pub const fn check_entry(kind: AreaKind, entry: &MsrEntry) -> Result<(), EntryError> {
    if entry.reserved != 0 {
        return Err(EntryError::ReservedBits);
    }
    if entry.index >> 8 == X2APIC_RANGE_HIGH {
        return Err(EntryError::X2Apic);
    }
    match kind {
        AreaKind::EntryLoad | AreaKind::ExitLoad => match entry.index {
            IA32_FS_BASE | IA32_GS_BASE => Err(EntryError::SegmentBase),
            IA32_SMM_MONITOR_CTL => Err(EntryError::SmmMonitorCtl),
            _ => Ok(()),
        },
        AreaKind::ExitStore => match entry.index {
            IA32_SMBASE => Err(EntryError::SmBase),
            _ => Ok(()),
        },
    }
}

/// Address of entry `i` (0-based) of the area at `area`.
pub const fn entry_addr(area: u64, i: u32) -> Option<u64> {
    area.checked_add(i as u64 * MSR_ENTRY_SIZE)
}

/// Reads entry `i` (0-based) of the area at physical address `area`.
pub fn read_entry(mem: &impl PhysMemory, area: u64, i: u32) -> Result<MsrEntry, MemError> {
    let addr = entry_addr(area, i).ok_or(MemError::Overflow)?;
    let mut b = [0u8; MSR_ENTRY_SIZE as usize];
    mem.read(addr, &mut b)?;
    let word = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    Ok(MsrEntry {
        index: word(0),
        reserved: word(4),
        data: u64::from(word(8)) | (u64::from(word(12)) << 32),
    })
}

/// Writes the data of entry `i` (bits 127:64): what a VM exit stores for
/// each entry of the MSR-store area (SDM 28.4).
pub fn store_data(mem: &mut impl PhysMemory, area: u64, i: u32, data: u64) -> Result<(), MemError> {
    let addr = entry_addr(area, i).ok_or(MemError::Overflow)?;
    mem.write_u64(addr.checked_add(8).ok_or(MemError::Overflow)?, data)
}

/// Reads and checks entries `0..count` of an area in order, calling
/// `each(i, entry)` for every valid one (to perform the load or store), and
/// stops at the first failure: a rule broken, unreadable memory, an error
/// from `each`, or more entries than `max_count` (IA32_VMX_MISC's
/// recommended maximum, `VmxMisc::max_msr_list`).
///
/// Entries before the failing one have been processed, as on the
/// processor (SDM 26.4: "MSRs are loaded in order ... until a failure").
pub fn process_area<M: PhysMemory>(
    mem: &mut M,
    kind: AreaKind,
    area: u64,
    count: u32,
    max_count: u32,
    mut each: impl FnMut(&mut M, u32, &MsrEntry) -> Result<(), MsrAreaFailure>,
) -> Result<(), MsrAreaError> {
    if count > max_count {
        return Err(MsrAreaError {
            index: max_count.saturating_add(1),
            reason: MsrAreaFailure::TooManyEntries,
        });
    }
    for i in 0..count {
        let entry = checked_entry(mem, kind, area, i)?;
        each(mem, i, &entry).map_err(|reason| MsrAreaError {
            index: i + 1,
            reason,
        })?;
    }
    Ok(())
}

/// Reads and checks entry `i` (0-based), naming it 1-based on failure.
fn checked_entry(
    mem: &impl PhysMemory,
    kind: AreaKind,
    area: u64,
    i: u32,
) -> Result<MsrEntry, MsrAreaError> {
    let fail = |reason| MsrAreaError {
        index: i + 1,
        reason,
    };
    let entry = read_entry(mem, area, i).map_err(|e| fail(MsrAreaFailure::Memory(e)))?;
    check_entry(kind, &entry).map_err(|e| fail(MsrAreaFailure::Entry(e)))?;
    Ok(entry)
}

/// Checks every entry of an area without acting on it: `Ok` or the first
/// failing entry (1-based).
pub fn validate_area(
    mem: &impl PhysMemory,
    kind: AreaKind,
    area: u64,
    count: u32,
    max_count: u32,
) -> Result<(), MsrAreaError> {
    if count > max_count {
        return Err(MsrAreaError {
            index: max_count.saturating_add(1),
            reason: MsrAreaFailure::TooManyEntries,
        });
    }
    (0..count).try_for_each(|i| checked_entry(mem, kind, area, i).map(drop))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::SparseMemory;

    fn write_entry(mem: &mut SparseMemory, area: u64, i: u32, e: MsrEntry) {
        let a = area + u64::from(i) * MSR_ENTRY_SIZE;
        mem.write_u32(a, e.index).unwrap();
        mem.write_u32(a + 4, e.reserved).unwrap();
        mem.write_u64(a + 8, e.data).unwrap();
    }

    #[test]
    fn area_address_checks() {
        assert_eq!(check_area(0x1000, 4, 36), Ok(()));
        assert_eq!(check_area(0x1008, 4, 36), Err(AreaError::Misaligned));
        assert_eq!(check_area((1 << 36) - 16, 1, 36), Ok(()));
        assert_eq!(
            check_area((1 << 36) - 16, 2, 36),
            Err(AreaError::BeyondPhysicalAddressWidth)
        );
        assert_eq!(
            check_area(1 << 36, 0, 36),
            Err(AreaError::BeyondPhysicalAddressWidth)
        );
        assert_eq!(check_area(!15, 1, 64), Ok(()));
        assert_eq!(
            check_area(!15, 2, 64),
            Err(AreaError::BeyondPhysicalAddressWidth)
        );
    }

    #[test]
    fn entry_rules_by_kind() {
        use AreaKind::*;
        let e = |i| MsrEntry::new(i, 0);
        assert_eq!(check_entry(EntryLoad, &e(0xc000_0080)), Ok(()));
        assert_eq!(
            check_entry(EntryLoad, &e(IA32_FS_BASE)),
            Err(EntryError::SegmentBase)
        );
        assert_eq!(
            check_entry(ExitLoad, &e(IA32_GS_BASE)),
            Err(EntryError::SegmentBase)
        );
        assert_eq!(check_entry(ExitStore, &e(IA32_GS_BASE)), Ok(()));
        assert_eq!(check_entry(EntryLoad, &e(0x808)), Err(EntryError::X2Apic));
        assert_eq!(check_entry(ExitStore, &e(0x8ff)), Err(EntryError::X2Apic));
        assert_eq!(check_entry(ExitStore, &e(0x900)), Ok(()));
        assert_eq!(
            check_entry(EntryLoad, &e(IA32_SMM_MONITOR_CTL)),
            Err(EntryError::SmmMonitorCtl)
        );
        assert_eq!(check_entry(ExitStore, &e(IA32_SMM_MONITOR_CTL)), Ok(()));
        assert_eq!(
            check_entry(ExitStore, &e(IA32_SMBASE)),
            Err(EntryError::SmBase)
        );
        assert_eq!(check_entry(EntryLoad, &e(IA32_SMBASE)), Ok(()));
        let r = MsrEntry {
            index: 0x10,
            reserved: 1,
            data: 0,
        };
        assert_eq!(check_entry(ExitStore, &r), Err(EntryError::ReservedBits));
    }

    #[test]
    fn area_crossing_a_page_boundary() {
        let mut mem = SparseMemory::new();
        let area = 0x1fe0; // entries 0-1 in the first page, 2-3 in the second
        mem.map(area, 4 * MSR_ENTRY_SIZE);
        for i in 0..4 {
            write_entry(
                &mut mem,
                area,
                i,
                MsrEntry::new(0x174 + i, 0x1111 * u64::from(i)),
            );
        }
        assert_eq!(
            read_entry(&mem, area, 2).unwrap(),
            MsrEntry::new(0x176, 0x2222)
        );
        let mut seen = Vec::new();
        process_area(&mut mem, AreaKind::EntryLoad, area, 4, 512, |_, i, e| {
            seen.push((i, e.index));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [(0, 0x174), (1, 0x175), (2, 0x176), (3, 0x177)]);

        store_data(&mut mem, area, 3, 0xdead_beef_0000_0001).unwrap();
        assert_eq!(
            read_entry(&mem, area, 3).unwrap().data,
            0xdead_beef_0000_0001
        );
    }

    #[test]
    fn failing_entry_is_reported_one_based() {
        let mut mem = SparseMemory::new();
        mem.map(0x3000, PAGE);
        write_entry(&mut mem, 0x3000, 0, MsrEntry::new(0x277, 6));
        write_entry(&mut mem, 0x3000, 1, MsrEntry::new(0x10, 0));
        write_entry(&mut mem, 0x3000, 2, MsrEntry::new(IA32_FS_BASE, 0));
        let err = validate_area(&mem, AreaKind::EntryLoad, 0x3000, 3, 512).unwrap_err();
        assert_eq!(
            err,
            MsrAreaError {
                index: 3,
                reason: MsrAreaFailure::Entry(EntryError::SegmentBase)
            }
        );
        // The entries before the failure were processed.
        let mut n = 0;
        let _ = process_area(&mut mem, AreaKind::EntryLoad, 0x3000, 3, 512, |_, _, _| {
            n += 1;
            Ok(())
        });
        assert_eq!(n, 2);
        // An error from the callback (e.g. WRMSR would fault) names the entry.
        let err = process_area(&mut mem, AreaKind::EntryLoad, 0x3000, 3, 512, |_, i, _| {
            if i == 1 {
                Err(MsrAreaFailure::Entry(EntryError::ReservedBits))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(err.index, 2);
    }

    #[test]
    fn too_many_and_unmapped() {
        let mut mem = SparseMemory::new();
        mem.map(0x3000, PAGE);
        let err = validate_area(&mem, AreaKind::ExitStore, 0x3000, 513, 512).unwrap_err();
        assert_eq!(
            err,
            MsrAreaError {
                index: 513,
                reason: MsrAreaFailure::TooManyEntries
            }
        );
        // 256 entries fill the page; the 257th is unmapped.
        let err = validate_area(&mem, AreaKind::ExitStore, 0x3000, 257, 512).unwrap_err();
        assert_eq!(err.index, 257);
        assert!(matches!(
            err.reason,
            MsrAreaFailure::Memory(MemError::Unmapped { addr: 0x4000 })
        ));
        assert_eq!(
            validate_area(&mem, AreaKind::ExitStore, 0x3000, 256, 512),
            Ok(())
        );
        assert_eq!(read_entry(&mem, u64::MAX - 8, 0), Err(MemError::Overflow));
    }

    const PAGE: u64 = 4096;
}
