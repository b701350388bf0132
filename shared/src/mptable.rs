//! The fallback for machines without ACPI: the Intel MultiProcessor
//! Specification 1.4 tables.
//!
//! The MP Floating Pointer Structure (`"_MP_"`, chapter 4.1) is searched for
//! in the first KiB of the EBDA, the last KiB of base memory and the BIOS
//! ROM (0xF0000-0xFFFFF). It points at the MP Configuration Table
//! (`"PCMP"`, 4.2), whose base section is a header followed by entries of
//! fixed sizes per type (table 4-3): processors (20 bytes), buses, I/O
//! APICs, I/O and local interrupt assignments (8 bytes each). A non-zero
//! MP feature byte 1 instead selects one of the default configurations
//! (chapter 5), which have no configuration table.
//!
//! Like [`crate::acpi`], everything is read through [`PhysMemory`] with
//! checked lengths and produces a [`CpuList`].

use crate::acpi::bios::{self, Area};
use crate::acpi::bytes::{u8_at, u16_at, u32_at};
use crate::acpi::{Cpu, CpuList, CpuSource, Error, IoApic, Structure};
use crate::mem::{PhysMemory, range_end};

const FLOATING_POINTER_SIGNATURE: &[u8; 4] = b"_MP_";
const CONFIG_TABLE_SIGNATURE: &[u8; 4] = b"PCMP";

/// The BIOS ROM area searched last.
const BIOS_ROM: Area = Area::between(0xF0000, 0x10_0000);

/// Size of the floating pointer structure, and the unit of its `LENGTH`.
const FLOATING_POINTER_LEN: usize = 16;
// Floating pointer field offsets.
const PHYSICAL_ADDRESS_POINTER: usize = 4;
const LENGTH: usize = 8;
const SPEC_REV: usize = 9;
const MP_FEATURE_1: usize = 11;
const MP_FEATURE_2: usize = 12;
/// MP feature byte 2: the IMCR is present (PIC mode is implemented).
const IMCRP: u8 = 1 << 7;

/// Size of the configuration table header.
const HEADER_LEN: usize = 44;
// Configuration table header field offsets.
const BASE_TABLE_LENGTH: usize = 4;
const ENTRY_COUNT: usize = 34;
const ADDRESS_OF_LOCAL_APIC: usize = 36;

// Base entry types (table 4-3).
const PROCESSOR: u8 = 0;
const BUS: u8 = 1;
const IO_APIC: u8 = 2;
const IO_INTERRUPT_ASSIGNMENT: u8 = 3;
const LOCAL_INTERRUPT_ASSIGNMENT: u8 = 4;
/// Size of a processor entry; the other base entries are 8 bytes.
const PROCESSOR_ENTRY_LEN: usize = 20;
const OTHER_ENTRY_LEN: usize = 8;

// Processor entry: CPU flags (byte 3).
const CPU_EN: u8 = 1 << 0;
const CPU_BP: u8 = 1 << 1;
// I/O APIC entry: flags (byte 3).
const IO_APIC_EN: u8 = 1 << 0;

/// The local APIC and I/O APIC addresses of the default configurations
/// (chapter 5), which have two processors, with APIC IDs 0 and 1, and one
/// I/O APIC, with ID 2.
const DEFAULT_LOCAL_APIC_BASE: u64 = 0xFEE0_0000;
const DEFAULT_IO_APIC: IoApic = IoApic {
    id: 2,
    address: 0xFEC0_0000,
    gsi_base: 0,
};

/// A validated MP Floating Pointer Structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloatingPointer {
    /// Where it was found.
    pub addr: u64,
    /// Physical address of the MP Configuration Table (0: none).
    pub config_table: u32,
    /// Version of the MP Specification (1: 1.1, 4: 1.4).
    pub spec_rev: u8,
    /// MP feature byte 1: 0 if the configuration table is present, else
    /// the number of the default configuration implemented.
    pub default_config: u8,
    /// The IMCR is present and PIC mode implemented.
    pub imcr_present: bool,
}

impl FloatingPointer {
    /// Scans, in order, the first KiB of the EBDA, the last KiB of base
    /// memory and the BIOS ROM (0xF0000-0xFFFFF) on 16-byte boundaries.
    pub fn find(mem: &impl PhysMemory) -> Result<Self, Error> {
        let areas = [
            bios::ebda_first_kib(mem).unwrap_or(Area::EMPTY),
            bios::base_memory_last_kib(mem),
            BIOS_ROM,
        ];
        bios::scan(
            mem,
            &areas,
            FLOATING_POINTER_SIGNATURE,
            Structure::MpFloatingPointer,
            |addr| Self::read(mem, addr),
        )
    }

    /// Validates the structure at `addr`: signature, a `LENGTH` of at
    /// least one 16-byte paragraph, and a zero checksum over it.
    pub fn read(mem: &impl PhysMemory, addr: u64) -> Result<Self, Error> {
        let structure = Structure::MpFloatingPointer;
        let mut raw = [0u8; FLOATING_POINTER_LEN];
        mem.read(addr, &mut raw)?;
        if raw[..4] != FLOATING_POINTER_SIGNATURE[..] {
            return Err(Error::Signature { structure, addr });
        }
        let paragraphs = raw[LENGTH];
        if paragraphs == 0 {
            return Err(Error::Length {
                structure,
                addr,
                length: 0,
            });
        }
        let length = u32::from(paragraphs) * FLOATING_POINTER_LEN as u32;
        if bios::checksum(mem, addr, length)? != 0 {
            return Err(Error::Checksum { structure, addr });
        }
        Ok(Self {
            addr,
            config_table: u32_at(&raw, PHYSICAL_ADDRESS_POINTER).unwrap_or_default(),
            spec_rev: raw[SPEC_REV],
            default_config: raw[MP_FEATURE_1],
            imcr_present: raw[MP_FEATURE_2] & IMCRP != 0,
        })
    }
}

/// Lists the processors and I/O APICs from the MP tables.
///
/// Only enabled processors and I/O APICs are kept; the BSP is marked.
pub fn cpus_from_mp_table(mem: &impl PhysMemory) -> Result<CpuList, Error> {
    let pointer = FloatingPointer::find(mem)?;
    if pointer.default_config != 0 {
        return Ok(default_configuration());
    }
    if pointer.config_table == 0 {
        return Err(Error::NotFound(Structure::MpConfigTable));
    }
    parse_config_table(mem, u64::from(pointer.config_table))
}

/// The processors and I/O APIC of every default configuration.
fn default_configuration() -> CpuList {
    let mut list = CpuList::new(CpuSource::MpTable, DEFAULT_LOCAL_APIC_BASE);
    list.pcat_compat = true;
    for apic_id in 0..2 {
        list.add_cpu(Cpu {
            apic_id,
            acpi_processor_uid: None,
            enabled: true,
            bsp: false,
        });
    }
    list.io_apics.push(DEFAULT_IO_APIC);
    list
}

/// The base section of a validated configuration table.
struct ConfigTable {
    addr: u64,
    base_table_length: u16,
    entry_count: u16,
    local_apic_base: u32,
}

impl ConfigTable {
    /// Validates the table at `addr`: signature, a base table length that
    /// holds the header, and a zero checksum over the base table.
    fn read(mem: &impl PhysMemory, addr: u64) -> Result<Self, Error> {
        let structure = Structure::MpConfigTable;
        let mut header = [0u8; HEADER_LEN];
        mem.read(addr, &mut header)?;
        if header[..4] != CONFIG_TABLE_SIGNATURE[..] {
            return Err(Error::Signature { structure, addr });
        }
        let base_table_length = u16_at(&header, BASE_TABLE_LENGTH).unwrap_or_default();
        if usize::from(base_table_length) < HEADER_LEN {
            return Err(Error::Length {
                structure,
                addr,
                length: base_table_length.into(),
            });
        }
        range_end(addr, base_table_length.into())?;
        if bios::checksum(mem, addr, base_table_length.into())? != 0 {
            return Err(Error::Checksum { structure, addr });
        }
        Ok(Self {
            addr,
            base_table_length,
            entry_count: u16_at(&header, ENTRY_COUNT).unwrap_or_default(),
            local_apic_base: u32_at(&header, ADDRESS_OF_LOCAL_APIC).unwrap_or_default(),
        })
    }

    /// Reads the entry at `offset` into `buf`, checking that its type is
    /// known and that it ends inside the base table.
    fn read_entry<'b>(
        &self,
        mem: &impl PhysMemory,
        offset: usize,
        buf: &'b mut [u8; PROCESSOR_ENTRY_LEN],
    ) -> Result<&'b [u8], Error> {
        let at = |offset: usize| self.addr + offset as u64;
        let error = |kind| Error::Entry {
            structure: Structure::MpConfigTable,
            offset: offset as u32,
            kind,
        };
        let table_len = usize::from(self.base_table_length);
        if offset >= table_len {
            return Err(error(0));
        }
        let kind = mem.read_u8(at(offset))?;
        let len = match kind {
            PROCESSOR => PROCESSOR_ENTRY_LEN,
            BUS | IO_APIC | IO_INTERRUPT_ASSIGNMENT | LOCAL_INTERRUPT_ASSIGNMENT => OTHER_ENTRY_LEN,
            _ => return Err(error(kind)),
        };
        if offset + len > table_len {
            return Err(error(kind));
        }
        let raw = &mut buf[..len];
        mem.read(at(offset), raw)?;
        Ok(raw)
    }
}

/// Builds the [`CpuList`] from the configuration table at `addr`, walking
/// `ENTRY_COUNT` base entries, each within the base table length.
fn parse_config_table(mem: &impl PhysMemory, addr: u64) -> Result<CpuList, Error> {
    let table = ConfigTable::read(mem, addr)?;
    let mut list = CpuList::new(CpuSource::MpTable, table.local_apic_base.into());
    list.pcat_compat = true;
    let mut offset = HEADER_LEN;
    let mut buf = [0u8; PROCESSOR_ENTRY_LEN];
    for _ in 0..table.entry_count {
        let raw = table.read_entry(mem, offset, &mut buf)?;
        add_entry(&mut list, raw);
        offset += raw.len();
    }
    match list.cpus.is_empty() {
        true => Err(Error::NoCpus(Structure::MpConfigTable)),
        false => Ok(list),
    }
}

/// Adds a processor or I/O APIC entry (`raw` has its type's full size).
fn add_entry(list: &mut CpuList, raw: &[u8]) {
    let field = |at| u8_at(raw, at).unwrap_or_default();
    let flags = field(3);
    match field(0) {
        PROCESSOR if flags & CPU_EN != 0 => list.add_cpu(Cpu {
            apic_id: field(1).into(),
            acpi_processor_uid: None,
            enabled: true,
            bsp: flags & CPU_BP != 0,
        }),
        IO_APIC if flags & IO_APIC_EN != 0 => list.io_apics.push(IoApic {
            id: field(1),
            address: u32_at(raw, 4).unwrap_or_default(),
            gsi_base: 0,
        }),
        _ => {}
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::acpi::test_tables::{fix_checksum, memory, put, set_bda};
    use crate::mem::SparseMemory;
    use proptest::prelude::*;

    const FLOATING_POINTER_AT: u64 = 0xF_0000;
    const CONFIG_TABLE_AT: u64 = 0xF_0400;

    /// An MP Floating Pointer Structure.
    fn floating_pointer(config_table: u32, feature1: u8) -> Vec<u8> {
        let mut b = b"_MP_".to_vec();
        b.extend_from_slice(&config_table.to_le_bytes());
        b.extend_from_slice(&[1, 4, 0, feature1, IMCRP, 0, 0, 0]);
        fix_checksum(&mut b, 10);
        b
    }

    /// An MP Configuration Table with `entries`.
    fn config_table(entries: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = entries.concat();
        let mut b = b"PCMP".to_vec();
        b.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_le_bytes());
        b.extend_from_slice(&[4, 0]);
        b.extend_from_slice(b"TESTOEM TESTPRODUCT ");
        b.extend_from_slice(&[0; 6]);
        b.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        b.extend_from_slice(&0xFEE0_0000u32.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        assert_eq!(b.len(), HEADER_LEN);
        b.extend_from_slice(&body);
        fix_checksum(&mut b, 7);
        b
    }

    fn processor(apic_id: u8, flags: u8) -> Vec<u8> {
        let mut b = vec![PROCESSOR, apic_id, 0x14, flags];
        b.extend_from_slice(&[0; 16]);
        b
    }

    fn io_apic(id: u8, flags: u8, address: u32) -> Vec<u8> {
        let mut b = vec![IO_APIC, id, 0x11, flags];
        b.extend_from_slice(&address.to_le_bytes());
        b
    }

    /// Processors 0 (BSP), 1 (disabled) and 2; a bus; two I/O APICs, the
    /// second disabled; interrupt assignments.
    fn entries() -> Vec<Vec<u8>> {
        vec![
            processor(0, CPU_EN | CPU_BP),
            processor(1, 0),
            processor(2, CPU_EN),
            vec![BUS, 0, b'I', b'S', b'A', b' ', b' ', b' '],
            io_apic(3, IO_APIC_EN, 0xFEC0_0000),
            io_apic(4, 0, 0xFEC0_1000),
            vec![IO_INTERRUPT_ASSIGNMENT, 0, 0, 0, 0, 0, 3, 0],
            vec![LOCAL_INTERRUPT_ASSIGNMENT, 1, 0, 0, 0, 0, 0xFF, 1],
        ]
    }

    /// The floating pointer in the BIOS ROM and a configuration table.
    pub(crate) fn mp_memory() -> SparseMemory {
        memory(&[
            (
                FLOATING_POINTER_AT,
                &floating_pointer(CONFIG_TABLE_AT as u32, 0),
            ),
            (CONFIG_TABLE_AT, &config_table(&entries())),
        ])
    }

    fn apic_ids(list: &CpuList) -> Vec<u32> {
        list.cpus().iter().map(|cpu| cpu.apic_id).collect()
    }

    #[test]
    fn configuration_table_lists_enabled_processors_and_io_apics() {
        let list = cpus_from_mp_table(&mp_memory()).unwrap();
        assert_eq!(list.source(), CpuSource::MpTable);
        assert_eq!(apic_ids(&list), [0, 2]);
        assert_eq!(
            list.cpus().iter().map(|c| c.bsp).collect::<Vec<_>>(),
            [true, false]
        );
        assert_eq!(
            &list.io_apics()[..],
            [IoApic {
                id: 3,
                address: 0xFEC0_0000,
                gsi_base: 0
            }]
        );
        assert_eq!(list.local_apic_base(), 0xFEE0_0000);
        assert!(list.has_8259_pics());
    }

    #[test]
    fn floating_pointer_fields_are_decoded() {
        let pointer = FloatingPointer::find(&mp_memory()).unwrap();
        assert_eq!(pointer.addr, FLOATING_POINTER_AT);
        assert_eq!(pointer.config_table, CONFIG_TABLE_AT as u32);
        assert_eq!((pointer.spec_rev, pointer.default_config), (4, 0));
        assert!(pointer.imcr_present);
    }

    #[test]
    fn scan_order_is_ebda_then_top_of_base_memory_then_bios_rom() {
        let table = |id| config_table(&[processor(id, CPU_EN)]);
        let mut mem = memory(&[
            (0xF_8000, &floating_pointer(0x1000, 0)),
            (0x1000, &table(1)),
            (0x7_FC00, &floating_pointer(0x2000, 0)),
            (0x2000, &table(2)),
            (0x9_F000, &floating_pointer(0x3000, 0)),
            (0x3000, &table(3)),
        ]);
        let first_id = |mem: &SparseMemory| apic_ids(&cpus_from_mp_table(mem).unwrap())[0];
        // No BDA: no EBDA and base memory assumed to end at 640 KiB.
        assert_eq!(first_id(&mem), 1);
        set_bda(&mut mem, 0, 512); // base memory ends at 512 KiB
        assert_eq!(first_id(&mem), 2);
        set_bda(&mut mem, 0x9_F000, 512);
        assert_eq!(first_id(&mem), 3);
    }

    #[test]
    fn default_configuration_has_two_processors() {
        let mem = memory(&[(FLOATING_POINTER_AT, &floating_pointer(0, 5))]);
        let list = cpus_from_mp_table(&mem).unwrap();
        assert_eq!(apic_ids(&list), [0, 1]);
        assert_eq!(list.io_apics()[0], DEFAULT_IO_APIC);
        assert_eq!(list.local_apic_base(), DEFAULT_LOCAL_APIC_BASE);

        let none = memory(&[(FLOATING_POINTER_AT, &floating_pointer(0, 0))]);
        assert_eq!(
            cpus_from_mp_table(&none),
            Err(Error::NotFound(Structure::MpConfigTable))
        );
    }

    #[test]
    fn bad_checksums_are_rejected() {
        let mut pointer = floating_pointer(CONFIG_TABLE_AT as u32, 0);
        pointer[4] ^= 1;
        let mem = memory(&[(FLOATING_POINTER_AT, &pointer)]);
        let error = Error::Checksum {
            structure: Structure::MpFloatingPointer,
            addr: 0xF_0000,
        };
        assert_eq!(cpus_from_mp_table(&mem), Err(error));

        let mut mem = mp_memory();
        put(&mut mem, CONFIG_TABLE_AT + HEADER_LEN as u64 + 1, &[7]);
        let error = Error::Checksum {
            structure: Structure::MpConfigTable,
            addr: CONFIG_TABLE_AT,
        };
        assert_eq!(cpus_from_mp_table(&mem), Err(error));
    }

    #[test]
    fn malformed_entries_and_lengths_are_errors() {
        let entry_error = |offset, kind| Error::Entry {
            structure: Structure::MpConfigTable,
            offset,
            kind,
        };
        let with_table = |table: &[u8]| {
            memory(&[
                (
                    FLOATING_POINTER_AT,
                    &floating_pointer(CONFIG_TABLE_AT as u32, 0),
                ),
                (CONFIG_TABLE_AT, table),
            ])
        };
        // An entry type of unknown size.
        let unknown = config_table(&[processor(0, CPU_EN), vec![0x80, 0, 0, 0, 0, 0, 0, 0]]);
        assert_eq!(
            cpus_from_mp_table(&with_table(&unknown)),
            Err(entry_error(64, 0x80))
        );

        // More entries than the base table holds.
        let mut too_many = config_table(&[processor(0, CPU_EN)]);
        too_many[ENTRY_COUNT] = 2;
        fix_checksum(&mut too_many, 7);
        assert_eq!(
            cpus_from_mp_table(&with_table(&too_many)),
            Err(entry_error(64, 0))
        );

        // A processor entry cut by the base table length.
        let mut cut = config_table(&[processor(0, CPU_EN)]);
        cut[BASE_TABLE_LENGTH] -= 4;
        fix_checksum(&mut cut, 7);
        assert_eq!(
            cpus_from_mp_table(&with_table(&cut)),
            Err(entry_error(44, PROCESSOR))
        );

        // A base table length shorter than the header.
        let mut short = config_table(&[]);
        short[BASE_TABLE_LENGTH] = 10;
        fix_checksum(&mut short, 7);
        let error = Error::Length {
            structure: Structure::MpConfigTable,
            addr: CONFIG_TABLE_AT,
            length: 10,
        };
        assert_eq!(cpus_from_mp_table(&with_table(&short)), Err(error));

        // No enabled processor.
        let disabled = config_table(&[processor(0, 0)]);
        let error = Error::NoCpus(Structure::MpConfigTable);
        assert_eq!(cpus_from_mp_table(&with_table(&disabled)), Err(error));

        // A floating pointer of length 0.
        let mut empty = floating_pointer(CONFIG_TABLE_AT as u32, 0);
        empty[LENGTH] = 0;
        fix_checksum(&mut empty, 10);
        let result = FloatingPointer::read(&memory(&[(0x1000, &empty)]), 0x1000);
        assert!(matches!(result, Err(Error::Length { length: 0, .. })));
    }

    proptest! {
        #[test]
        fn random_configuration_tables_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            entry_count in any::<u16>(),
            length in any::<u16>(),
        ) {
            let mut table = config_table(&[]);
            table.extend_from_slice(&body);
            table[BASE_TABLE_LENGTH..BASE_TABLE_LENGTH + 2].copy_from_slice(&length.to_le_bytes());
            table[ENTRY_COUNT..ENTRY_COUNT + 2].copy_from_slice(&entry_count.to_le_bytes());
            let clamp = usize::from(length).clamp(8, table.len());
            fix_checksum(&mut table[..clamp], 7);
            let mem = memory(&[
                (FLOATING_POINTER_AT, &floating_pointer(CONFIG_TABLE_AT as u32, 0)),
                (CONFIG_TABLE_AT, &table),
            ]);
            let _ = cpus_from_mp_table(&mem);
        }
    }
}
