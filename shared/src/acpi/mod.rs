//! Finding the processors (and the interrupt controllers) from firmware
//! tables: ACPI first, the Intel MultiProcessor Specification table second.
//!
//! The path through ACPI is: the Root System Description Pointer
//! ([`Rsdp`], from a boot-loader hint or found by scanning the BIOS areas),
//! the Root or Extended System Description Table (RSDT/XSDT), and the
//! Multiple APIC Description Table (MADT, signature `"APIC"`) whose
//! interrupt controller structures list the local APICs, I/O APICs and
//! interrupt overrides. The result is a [`CpuList`], which the MP table
//! fallback ([`crate::mptable`]) produces too; [`enumerate_cpus`] tries both.
//!
//! Firmware tables are untrusted input: everything is read through
//! [`PhysMemory`], every length and offset is checked, and a malformed table
//! gives an [`Error`], never a panic or an unbounded loop. Nothing allocates.
//!
//! References: ACPI Specification 6.5, sections 5.2.5 (RSDP), 5.2.6 (system
//! description table header), 5.2.7/5.2.8 (RSDT/XSDT) and 5.2.12 (MADT).

pub(crate) mod bios;
pub(crate) mod bytes;
mod cpu_list;
mod madt;
mod rsdp;
mod sdt;

#[cfg(test)]
pub(crate) mod test_tables;
#[cfg(test)]
mod tests;

pub use cpu_list::{
    Cpu, CpuList, CpuSource, FixedList, InterruptSourceOverride, IoApic, LocalApicNmi, MAX_CPUS,
    MAX_INTERRUPT_SOURCE_OVERRIDES, MAX_IO_APICS, MAX_LOCAL_APIC_NMIS, MpsIntiFlags, Polarity,
    TriggerMode,
};
pub use rsdp::{Rsdp, RsdpHint};

use crate::mem::{MemError, PhysMemory};
use crate::mptable;

/// A firmware structure, named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    /// ACPI Root System Description Pointer (`"RSD PTR "`).
    Rsdp,
    /// ACPI Root System Description Table (`"RSDT"`).
    Rsdt,
    /// ACPI Extended System Description Table (`"XSDT"`).
    Xsdt,
    /// ACPI Multiple APIC Description Table (`"APIC"`).
    Madt,
    /// MP Floating Pointer Structure (`"_MP_"`).
    MpFloatingPointer,
    /// MP Configuration Table (`"PCMP"`).
    MpConfigTable,
}

/// Why firmware tables could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Reading physical memory failed.
    Memory(MemError),
    /// The structure was not found (not in the hint, the scanned areas or
    /// the root table).
    NotFound(Structure),
    /// The structure at `addr` does not carry the expected signature.
    Signature {
        /// Which structure was expected.
        structure: Structure,
        /// Where it was expected.
        addr: u64,
    },
    /// The bytes of the structure at `addr` do not sum to zero.
    Checksum {
        /// The structure whose checksum is wrong.
        structure: Structure,
        /// Where it is.
        addr: u64,
    },
    /// The structure at `addr` declares a length that is too short for its
    /// fixed fields or implausibly long.
    Length {
        /// The structure whose length is wrong.
        structure: Structure,
        /// Where it is.
        addr: u64,
        /// The declared length in bytes.
        length: u32,
    },
    /// An entry of a table is malformed: a length of zero, a length running
    /// past the end of the table, too short for its type, or (MP table) a
    /// type whose size is unknown.
    Entry {
        /// The table holding the entry.
        structure: Structure,
        /// Offset of the entry from the start of the table.
        offset: u32,
        /// The entry type.
        kind: u8,
    },
    /// The table is well formed but lists no usable processor.
    NoCpus(Structure),
}

impl From<MemError> for Error {
    fn from(e: MemError) -> Self {
        Error::Memory(e)
    }
}

/// Neither ACPI nor the MP table gave a processor list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnumerateError {
    /// Why ACPI failed.
    pub acpi: Error,
    /// Why the MP table failed.
    pub mp_table: Error,
}

/// Lists the processors and interrupt controllers from the ACPI MADT,
/// falling back to the MP Configuration Table when ACPI is absent or
/// unusable.
///
/// `rsdp_hint` is the RSDP the boot loader handed over (the multiboot2
/// ACPI tags carry a copy), if any; see [`Rsdp::find`].
pub fn enumerate_cpus(
    mem: &impl PhysMemory,
    rsdp_hint: Option<RsdpHint<'_>>,
) -> Result<CpuList, EnumerateError> {
    let acpi = match cpus_from_madt(mem, rsdp_hint) {
        Ok(list) => return Ok(list),
        Err(e) => e,
    };
    mptable::cpus_from_mp_table(mem).map_err(|mp_table| EnumerateError { acpi, mp_table })
}

/// Lists the processors and interrupt controllers from the ACPI MADT.
///
/// Finds the RSDP (see [`Rsdp::find`]), then the MADT through the XSDT
/// (ACPI 2.0+, falling back to the RSDT if the XSDT is unusable) or the
/// RSDT, checking the checksum and length of every table used.
pub fn cpus_from_madt(
    mem: &impl PhysMemory,
    rsdp_hint: Option<RsdpHint<'_>>,
) -> Result<CpuList, Error> {
    let rsdp = Rsdp::find(mem, rsdp_hint)?;
    let madt = sdt::find_table(mem, &rsdp, madt::SIGNATURE, Structure::Madt)?;
    madt::parse(mem, &madt)
}
