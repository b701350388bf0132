//! The Multiple APIC Description Table (ACPI 6.5, 5.2.12): a header, the
//! local APIC address and flags, then variable-length interrupt controller
//! structures, each starting with its type and length bytes.

use super::bytes::{u8_at, u16_at, u32_at, u64_at};
use super::cpu_list::{
    Cpu, CpuList, CpuSource, InterruptSourceOverride, IoApic, LocalApicNmi, MpsIntiFlags,
};
use super::sdt::Sdt;
use super::{Error, Structure};
use crate::mem::PhysMemory;

/// The MADT signature.
pub(super) const SIGNATURE: &[u8; 4] = b"APIC";

// MADT field offsets.
const LOCAL_INTERRUPT_CONTROLLER_ADDRESS: u32 = 36;
const FLAGS: u32 = 40;
const INTERRUPT_CONTROLLER_STRUCTURES: u32 = 44;

/// MADT flag: the system also has dual 8259 PICs.
const PCAT_COMPAT: u32 = 1 << 0;

// Interrupt controller structure types (table 5.21).
const PROCESSOR_LOCAL_APIC: u8 = 0;
const IO_APIC: u8 = 1;
const INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
const LOCAL_APIC_NMI: u8 = 4;
const LOCAL_APIC_ADDRESS_OVERRIDE: u8 = 5;
const PROCESSOR_LOCAL_X2APIC: u8 = 9;
const LOCAL_X2APIC_NMI: u8 = 0xA;

// Local APIC flags (table 5.23), shared by the x2APIC structure.
const ENABLED: u32 = 1 << 0;
const ONLINE_CAPABLE: u32 = 1 << 1;

/// ACPI Processor UID meaning "all processors" in a Local APIC NMI
/// structure; the Local x2APIC NMI structure uses `u32::MAX`.
const ALL_PROCESSORS_UID: u8 = 0xFF;

/// An interrupt controller structure, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    /// Processor Local APIC or Processor Local x2APIC structure.
    Processor {
        apic_id: u32,
        acpi_processor_uid: u32,
        flags: u32,
    },
    IoApic(IoApic),
    InterruptSourceOverride(InterruptSourceOverride),
    /// Local APIC NMI or Local x2APIC NMI structure.
    LocalApicNmi(LocalApicNmi),
    /// The 64-bit local APIC address replacing the header's 32-bit one.
    LocalApicAddressOverride(u64),
    /// A structure of a type not used here.
    Other,
}

impl Entry {
    /// Decodes the structure `raw` (type and length bytes included); `None`
    /// if it is too short for its type. Longer structures are accepted:
    /// later revisions may append fields.
    fn decode(raw: &[u8]) -> Option<Self> {
        Some(match u8_at(raw, 0)? {
            PROCESSOR_LOCAL_APIC => Self::Processor {
                acpi_processor_uid: u32::from(u8_at(raw, 2)?),
                apic_id: u32::from(u8_at(raw, 3)?),
                flags: u32_at(raw, 4)?,
            },
            PROCESSOR_LOCAL_X2APIC => Self::Processor {
                apic_id: u32_at(raw, 4)?,
                flags: u32_at(raw, 8)?,
                acpi_processor_uid: u32_at(raw, 12)?,
            },
            IO_APIC => Self::IoApic(IoApic {
                id: u8_at(raw, 2)?,
                address: u32_at(raw, 4)?,
                gsi_base: u32_at(raw, 8)?,
            }),
            INTERRUPT_SOURCE_OVERRIDE => Self::InterruptSourceOverride(InterruptSourceOverride {
                bus: u8_at(raw, 2)?,
                source: u8_at(raw, 3)?,
                gsi: u32_at(raw, 4)?,
                flags: MpsIntiFlags(u16_at(raw, 8)?),
            }),
            LOCAL_APIC_NMI => {
                let uid = u8_at(raw, 2)?;
                Self::LocalApicNmi(LocalApicNmi {
                    acpi_processor_uid: (uid != ALL_PROCESSORS_UID).then_some(u32::from(uid)),
                    flags: MpsIntiFlags(u16_at(raw, 3)?),
                    lint: u8_at(raw, 5)?,
                })
            }
            LOCAL_X2APIC_NMI => {
                let uid = u32_at(raw, 4)?;
                Self::LocalApicNmi(LocalApicNmi {
                    acpi_processor_uid: (uid != u32::MAX).then_some(uid),
                    flags: MpsIntiFlags(u16_at(raw, 2)?),
                    lint: u8_at(raw, 8)?,
                })
            }
            LOCAL_APIC_ADDRESS_OVERRIDE => Self::LocalApicAddressOverride(u64_at(raw, 4)?),
            _ => Self::Other,
        })
    }
}

/// Builds the [`CpuList`] described by a validated MADT.
///
/// Processors are kept if Enabled or Online Capable, in table order (the
/// BSP first, by convention); every structure's length is checked, so a
/// length of zero or one running past the table is an [`Error::Entry`].
pub(super) fn parse(mem: &impl PhysMemory, madt: &Sdt) -> Result<CpuList, Error> {
    let address = madt.read_u32(mem, LOCAL_INTERRUPT_CONTROLLER_ADDRESS)?;
    let mut list = CpuList::new(CpuSource::Acpi, u64::from(address));
    list.pcat_compat = madt.read_u32(mem, FLAGS)? & PCAT_COMPAT != 0;

    let mut offset = INTERRUPT_CONTROLLER_STRUCTURES;
    let mut buf = [0u8; u8::MAX as usize];
    while offset < madt.length {
        let raw = read_structure(mem, madt, offset, &mut buf)?;
        let entry = Entry::decode(raw).ok_or_else(|| entry_error(offset, raw[0]))?;
        add_entry(&mut list, entry);
        // `read_structure` guarantees a length of at least 2: progress.
        offset += raw.len() as u32;
    }

    match list.cpus.is_empty() {
        true => Err(Error::NoCpus(Structure::Madt)),
        false => Ok(list),
    }
}

/// Reads the interrupt controller structure at `offset` into `buf`,
/// checking that its length covers its type and length bytes and stays
/// inside the table.
fn read_structure<'b>(
    mem: &impl PhysMemory,
    madt: &Sdt,
    offset: u32,
    buf: &'b mut [u8; u8::MAX as usize],
) -> Result<&'b [u8], Error> {
    let mut kind = [0u8; 1];
    madt.read(mem, offset, &mut kind)?;
    let mut len = [0u8; 1];
    madt.read(mem, offset + 1, &mut len)
        .map_err(|_| entry_error(offset, kind[0]))?;
    let len = len[0];
    if len < 2 || offset + u32::from(len) > madt.length {
        return Err(entry_error(offset, kind[0]));
    }
    let raw = &mut buf[..usize::from(len)];
    madt.read(mem, offset, raw)?;
    Ok(raw)
}

fn entry_error(offset: u32, kind: u8) -> Error {
    Error::Entry {
        structure: Structure::Madt,
        offset,
        kind,
    }
}

fn add_entry(list: &mut CpuList, entry: Entry) {
    match entry {
        Entry::Processor {
            apic_id,
            acpi_processor_uid,
            flags,
        } => {
            if flags & (ENABLED | ONLINE_CAPABLE) != 0 {
                list.add_cpu(Cpu {
                    apic_id,
                    acpi_processor_uid: Some(acpi_processor_uid),
                    enabled: flags & ENABLED != 0,
                    bsp: false,
                });
            }
        }
        Entry::IoApic(io_apic) => list.io_apics.push(io_apic),
        Entry::InterruptSourceOverride(iso) => list.overrides.push(iso),
        Entry::LocalApicNmi(nmi) => list.local_apic_nmis.push(nmi),
        Entry::LocalApicAddressOverride(address) => list.local_apic_base = address,
        Entry::Other => {}
    }
}
