//! Host tests of the ACPI path, on tables synthesized in [`SparseMemory`].

use super::test_tables::{
    entry, fix_checksum, madt, madt_body, memory, put, rsdp_v1, rsdp_v2, rsdt, sdt, set_bda, xsdt,
};
use super::*;
use crate::mem::SparseMemory;
use proptest::prelude::*;

const RSDT_AT: u64 = 0x7FE_0000;
const MADT_AT: u64 = 0x7FE_1000;
const XSDT_AT: u64 = 0x1_0000_0000;
const MADT2_AT: u64 = 0x1_0000_1000;
const ROM_RSDP_AT: u64 = 0xE_1230;
const EBDA_AT: u64 = 0x9_FC00;

/// Four processors (APIC 0 and 1 enabled, 2 disabled, 3 online-capable),
/// an I/O APIC, an IRQ 0 -> GSI 2 override and LINT1 as NMI on all CPUs.
fn four_cpu_entries() -> Vec<Vec<u8>> {
    vec![
        entry::local_apic(0, 0, 1),
        entry::local_apic(1, 1, 1),
        entry::local_apic(2, 2, 0),
        entry::local_apic(3, 3, 2),
        entry::io_apic(4, 0xFEC0_0000, 0),
        entry::interrupt_source_override(0, 2, 0),
        entry::local_apic_nmi(0xFF, 0b0101, 1),
    ]
}

/// RSDT at `RSDT_AT` -> MADT at `MADT_AT`, RSDP v1 in the BIOS ROM.
fn acpi1_memory(madt_bytes: &[u8]) -> SparseMemory {
    memory(&[
        (ROM_RSDP_AT, &rsdp_v1(RSDT_AT as u32)),
        (RSDT_AT, &rsdt(&[MADT_AT as u32])),
        (MADT_AT, madt_bytes),
    ])
}

fn apic_ids(list: &CpuList) -> Vec<u32> {
    list.cpus().iter().map(|cpu| cpu.apic_id).collect()
}

#[test]
fn acpi1_madt_lists_enabled_and_online_capable_cpus() {
    let mem = acpi1_memory(&madt(&four_cpu_entries()));
    let list = cpus_from_madt(&mem, None).unwrap();

    assert_eq!(list.source(), CpuSource::Acpi);
    assert_eq!(apic_ids(&list), [0, 1, 3]);
    let enabled: Vec<bool> = list.cpus().iter().map(|c| c.enabled).collect();
    assert_eq!(enabled, [true, true, false]);
    assert_eq!(list.cpus()[2].acpi_processor_uid, Some(3));
    assert_eq!(list.cpus().ignored(), 0);
    assert_eq!(list.local_apic_base(), 0xFEE0_0000);
    assert!(list.has_8259_pics());
    assert_eq!(
        &list.io_apics()[..],
        [IoApic {
            id: 4,
            address: 0xFEC0_0000,
            gsi_base: 0
        }]
    );
    let iso = list.interrupt_source_overrides()[0];
    assert_eq!((iso.bus, iso.source, iso.gsi), (0, 0, 2));
    let nmi = list.local_apic_nmis()[0];
    assert_eq!(nmi.acpi_processor_uid, None);
    assert_eq!(nmi.lint, 1);
    assert_eq!(nmi.flags.polarity(), Polarity::ActiveHigh);
    assert_eq!(nmi.flags.trigger_mode(), TriggerMode::Edge);
}

#[test]
fn rsdp_hint_as_bytes_or_address_is_used_without_scanning() {
    let mut mem = memory(&[
        (RSDT_AT, &rsdt(&[MADT_AT as u32])),
        (MADT_AT, &madt(&four_cpu_entries())),
    ]);
    let rsdp = rsdp_v1(RSDT_AT as u32);
    let list = cpus_from_madt(&mem, Some(RsdpHint::Bytes(&rsdp))).unwrap();
    assert_eq!(apic_ids(&list), [0, 1, 3]);

    put(&mut mem, 0x5000, &rsdp);
    let list = cpus_from_madt(&mem, Some(RsdpHint::Address(0x5000))).unwrap();
    assert_eq!(apic_ids(&list), [0, 1, 3]);
    assert_eq!(
        cpus_from_madt(&mem, None),
        Err(Error::NotFound(Structure::Rsdp))
    );
}

#[test]
fn acpi2_uses_the_xsdt_over_the_rsdt() {
    let mem = memory(&[
        (ROM_RSDP_AT, &rsdp_v2(RSDT_AT as u32, XSDT_AT)),
        (RSDT_AT, &rsdt(&[MADT_AT as u32])),
        (MADT_AT, &madt(&[entry::local_apic(0, 7, 1)])),
        (XSDT_AT, &xsdt(&[0, MADT2_AT])),
        (MADT2_AT, &madt(&[entry::local_apic(0, 9, 1)])),
    ]);
    let rsdp = Rsdp::find(&mem, None).unwrap();
    assert_eq!(
        (rsdp.revision, rsdp.xsdt_address, &rsdp.oem_id),
        (2, XSDT_AT, b"TESTOE")
    );
    assert_eq!(apic_ids(&cpus_from_madt(&mem, None).unwrap()), [9]);

    // Revision 2 without an XSDT address: the RSDT.
    let mut mem = mem;
    put(&mut mem, ROM_RSDP_AT, &rsdp_v2(RSDT_AT as u32, 0));
    assert_eq!(apic_ids(&cpus_from_madt(&mem, None).unwrap()), [7]);
}

#[test]
fn invalid_xsdt_falls_back_to_the_rsdt() {
    let mut bad_xsdt = xsdt(&[MADT2_AT]);
    bad_xsdt[9] ^= 1;
    let mem = memory(&[
        (ROM_RSDP_AT, &rsdp_v2(RSDT_AT as u32, XSDT_AT)),
        (RSDT_AT, &rsdt(&[MADT_AT as u32])),
        (MADT_AT, &madt(&[entry::local_apic(0, 7, 1)])),
        (XSDT_AT, &bad_xsdt),
    ]);
    assert_eq!(apic_ids(&cpus_from_madt(&mem, None).unwrap()), [7]);

    let no_rsdt = memory(&[(ROM_RSDP_AT, &rsdp_v2(0, XSDT_AT)), (XSDT_AT, &bad_xsdt)]);
    let xsdt_error = Error::Checksum {
        structure: Structure::Xsdt,
        addr: XSDT_AT,
    };
    assert_eq!(cpus_from_madt(&no_rsdt, None), Err(xsdt_error));
}

#[test]
fn x2apic_structures_give_32_bit_ids_and_duplicates_are_dropped() {
    let entries = [
        entry::local_apic(0, 0, 1),
        entry::local_x2apic(0, 1, 0), // the BSP again, as an x2APIC structure
        entry::local_x2apic(0x100, 1, 1),
        entry::local_x2apic(0x101, 2, 2),
        entry::local_x2apic(0x102, 0, 3),
        entry::local_x2apic_nmi(u32::MAX, 0, 1),
        entry::local_x2apic_nmi(1, 0b1111, 0),
    ];
    let list = cpus_from_madt(&acpi1_memory(&madt(&entries)), None).unwrap();
    assert_eq!(apic_ids(&list), [0, 0x100, 0x101]);
    assert!(!list.cpus()[2].enabled);
    let nmis = list.local_apic_nmis();
    assert_eq!((nmis[0].acpi_processor_uid, nmis[0].lint), (None, 1));
    assert_eq!((nmis[1].acpi_processor_uid, nmis[1].lint), (Some(1), 0));
    assert_eq!(nmis[1].flags.polarity(), Polarity::ActiveLow);
    assert_eq!(nmis[1].flags.trigger_mode(), TriggerMode::Level);
}

#[test]
fn local_apic_address_override_replaces_the_header_address() {
    let entries = [
        entry::local_apic(0, 0, 1),
        entry::local_apic_address_override(0x1_2345_6000),
    ];
    let list = cpus_from_madt(&acpi1_memory(&madt(&entries)), None).unwrap();
    assert_eq!(list.local_apic_base(), 0x1_2345_6000);
}

#[test]
fn unknown_and_longer_structures_are_skipped_by_their_length() {
    let mut longer = entry::local_apic(1, 1, 1);
    longer[1] = 12;
    longer.extend_from_slice(&[0xAA; 4]);
    let entries = [entry::local_apic(0, 0, 1), vec![0x7F, 5, 1, 2, 3], longer];
    let list = cpus_from_madt(&acpi1_memory(&madt(&entries)), None).unwrap();
    assert_eq!(apic_ids(&list), [0, 1]);
}

#[test]
fn cpus_beyond_capacity_are_counted_as_ignored() {
    let entries: Vec<_> = (0..70).map(|id| entry::local_x2apic(id, 1, id)).collect();
    let list = cpus_from_madt(&acpi1_memory(&madt(&entries)), None).unwrap();
    assert_eq!(list.cpus().len(), MAX_CPUS);
    assert_eq!(list.cpus().ignored(), 70 - MAX_CPUS);
    assert_eq!(list.cpus().last().unwrap().apic_id, MAX_CPUS as u32 - 1);
}

#[test]
fn madt_without_usable_cpus_is_an_error() {
    let entries = [
        entry::local_apic(0, 0, 0),
        entry::io_apic(1, 0xFEC0_0000, 0),
    ];
    let mem = acpi1_memory(&madt(&entries));
    assert_eq!(
        cpus_from_madt(&mem, None),
        Err(Error::NoCpus(Structure::Madt))
    );
}

#[test]
fn bad_rsdp_checksums_are_rejected() {
    let mut v1 = rsdp_v1(RSDT_AT as u32);
    v1[16] ^= 1;
    let checksum = Err(Error::Checksum {
        structure: Structure::Rsdp,
        addr: 0,
    });
    assert_eq!(Rsdp::parse(&v1), checksum);

    let mut v2 = rsdp_v2(RSDT_AT as u32, XSDT_AT);
    v2[24] ^= 1; // only the extended checksum covers the XSDT address
    assert_eq!(Rsdp::parse(&v2), checksum);

    let mem = memory(&[(ROM_RSDP_AT, &v2)]);
    let at_rom = Err(Error::Checksum {
        structure: Structure::Rsdp,
        addr: ROM_RSDP_AT,
    });
    assert_eq!(Rsdp::find(&mem, None), at_rom);
}

#[test]
fn bad_table_checksums_are_rejected() {
    let mut bad_madt = madt(&four_cpu_entries());
    bad_madt[50] ^= 0x10;
    let madt_error = Error::Checksum {
        structure: Structure::Madt,
        addr: MADT_AT,
    };
    assert_eq!(
        cpus_from_madt(&acpi1_memory(&bad_madt), None),
        Err(madt_error)
    );

    let mut bad_rsdt = rsdt(&[MADT_AT as u32]);
    bad_rsdt[36] ^= 1;
    let mem = memory(&[
        (ROM_RSDP_AT, &rsdp_v1(RSDT_AT as u32)),
        (RSDT_AT, &bad_rsdt),
    ]);
    let rsdt_error = Error::Checksum {
        structure: Structure::Rsdt,
        addr: RSDT_AT,
    };
    assert_eq!(cpus_from_madt(&mem, None), Err(rsdt_error));
}

#[test]
fn a_valid_madt_after_a_corrupt_one_is_used() {
    let mut bad_madt = madt(&[entry::local_apic(0, 1, 1)]);
    bad_madt[40] ^= 1;
    let mem = memory(&[
        (ROM_RSDP_AT, &rsdp_v1(RSDT_AT as u32)),
        (
            RSDT_AT,
            &rsdt(&[0xDEAD_0000, MADT_AT as u32, MADT_AT as u32 + 0x1000]),
        ),
        (MADT_AT, &bad_madt),
        (MADT_AT + 0x1000, &madt(&[entry::local_apic(0, 2, 1)])),
    ]);
    assert_eq!(apic_ids(&cpus_from_madt(&mem, None).unwrap()), [2]);
}

#[test]
fn truncated_and_overlong_table_lengths_are_rejected() {
    let length_error = |length| Error::Length {
        structure: Structure::Madt,
        addr: MADT_AT,
        length,
    };
    // Shorter than the header.
    let mut short = madt(&four_cpu_entries());
    short[4..8].copy_from_slice(&20u32.to_le_bytes());
    fix_checksum(&mut short, 9);
    assert_eq!(
        cpus_from_madt(&acpi1_memory(&short), None),
        Err(length_error(20))
    );

    // Holds the header but not the local APIC address and flags.
    let header_only = sdt(b"APIC", &[0; 4]);
    assert_eq!(
        cpus_from_madt(&acpi1_memory(&header_only), None),
        Err(length_error(40))
    );

    // Implausibly long.
    let mut huge = madt(&four_cpu_entries());
    huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        cpus_from_madt(&acpi1_memory(&huge), None),
        Err(length_error(u32::MAX))
    );

    // Longer than the memory behind it.
    let mut overlong = madt(&four_cpu_entries());
    overlong[4..8].copy_from_slice(&0x2000u32.to_le_bytes());
    let result = cpus_from_madt(&acpi1_memory(&overlong), None);
    assert!(matches!(result, Err(Error::Memory(_))), "{result:?}");

    // An RSDP v2 whose Length does not cover the 2.0 fields.
    let mut rsdp = rsdp_v2(RSDT_AT as u32, XSDT_AT);
    rsdp[20] = 24;
    fix_checksum(&mut rsdp, 32);
    let rsdp_error = Error::Length {
        structure: Structure::Rsdp,
        addr: 0,
        length: 24,
    };
    assert_eq!(Rsdp::parse(&rsdp), Err(rsdp_error));
    assert!(Rsdp::parse(&rsdp_v2(1, 2)[..30]).is_err());
    assert!(Rsdp::parse(&[]).is_err());
}

#[test]
fn malformed_structure_lengths_are_errors_not_loops() {
    let cases: [(Vec<u8>, u8); 4] = [
        (vec![0, 0, 0, 0, 1, 0, 0, 0], 0), // length 0
        (vec![9, 1], 9),                   // length 1
        (vec![0, 4, 0, 0], 0),             // too short for a local APIC
        (vec![1, 40, 0, 0], 1),            // runs past the table
    ];
    for (bad, kind) in cases {
        let entries = [entry::local_apic(0, 0, 1), bad];
        let error = Error::Entry {
            structure: Structure::Madt,
            offset: 52,
            kind,
        };
        assert_eq!(
            cpus_from_madt(&acpi1_memory(&madt(&entries)), None),
            Err(error)
        );
    }
    // A lone trailing byte.
    let entries = [entry::local_apic(0, 0, 1), vec![2]];
    let error = Error::Entry {
        structure: Structure::Madt,
        offset: 52,
        kind: 2,
    };
    assert_eq!(
        cpus_from_madt(&acpi1_memory(&madt(&entries)), None),
        Err(error)
    );
}

#[test]
fn scan_prefers_the_ebda_to_the_bios_rom() {
    let mut mem = memory(&[
        (ROM_RSDP_AT, &rsdp_v1(0x1000)),
        (EBDA_AT + 0x40, &rsdp_v1(0x2000)),
        (0x8_0000, &rsdp_v1(0x3000)), // outside both areas
    ]);
    assert_eq!(Rsdp::scan(&mem).unwrap().rsdt_address, 0x1000);
    set_bda(&mut mem, EBDA_AT, 639);
    assert_eq!(Rsdp::scan(&mem).unwrap().rsdt_address, 0x2000);
    // Only the first KiB of the EBDA is searched; only 16-byte boundaries.
    set_bda(&mut mem, EBDA_AT - 0x400, 639);
    assert_eq!(Rsdp::scan(&mem).unwrap().rsdt_address, 0x1000);
    let mut unaligned = memory(&[(0xE_0008, &rsdp_v1(0x1000))]);
    assert_eq!(
        Rsdp::scan(&unaligned),
        Err(Error::NotFound(Structure::Rsdp))
    );
    put(&mut unaligned, 0xF_FFF0, b"RSD PTR "); // signature at the very end
    assert!(matches!(Rsdp::scan(&unaligned), Err(Error::Memory(_))));
}

#[test]
fn invalid_hint_falls_back_to_the_scan_then_reports_the_hint() {
    let mem = memory(&[(ROM_RSDP_AT, &rsdp_v1(0x1000))]);
    let garbage = [0u8; 20];
    let hinted = Rsdp::find(&mem, Some(RsdpHint::Bytes(&garbage))).unwrap();
    assert_eq!(hinted.rsdt_address, 0x1000);

    let empty = SparseMemory::new();
    let signature = Err(Error::Signature {
        structure: Structure::Rsdp,
        addr: 0,
    });
    assert_eq!(
        Rsdp::find(&empty, Some(RsdpHint::Bytes(&garbage))),
        signature
    );
    let unmapped = Rsdp::find(&empty, Some(RsdpHint::Address(0x5000)));
    assert!(matches!(unmapped, Err(Error::Memory(_))));
}

#[test]
fn enumerate_cpus_falls_back_to_the_mp_table() {
    let mem = acpi1_memory(&madt(&four_cpu_entries()));
    assert_eq!(apic_ids(&enumerate_cpus(&mem, None).unwrap()), [0, 1, 3]);

    let mut mp = crate::mptable::tests::mp_memory();
    let list = enumerate_cpus(&mp, None).unwrap();
    assert_eq!(list.source(), CpuSource::MpTable);

    put(&mut mp, 0xF_0000, &[0; 16]); // remove the floating pointer
    let error = EnumerateError {
        acpi: Error::NotFound(Structure::Rsdp),
        mp_table: Error::NotFound(Structure::MpFloatingPointer),
    };
    assert_eq!(enumerate_cpus(&mp, None), Err(error));
}

/// Memory holding an RSDP, an RSDT and, at `MADT_AT`, `table`.
fn madt_memory(table: &[u8]) -> SparseMemory {
    let mut mem = acpi1_memory(&[]);
    mem.map(MADT_AT, 0x2000);
    mem.write(MADT_AT, table).unwrap();
    mem
}

proptest! {
    #[test]
    fn random_madt_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = cpus_from_madt(&madt_memory(&sdt(b"APIC", &body)), None);
    }

    #[test]
    fn random_madt_entries_never_panic(
        entries in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 0..16)
    ) {
        let mut body = madt_body(0xFEE0_0000, 1, &[]);
        for mut e in entries {
            if let Some(len) = e.get_mut(1) {
                *len %= 24; // mostly plausible lengths, so parsing gets deep
            }
            body.extend_from_slice(&e);
        }
        let _ = cpus_from_madt(&madt_memory(&sdt(b"APIC", &body)), None);
    }

    #[test]
    fn random_tables_and_rsdps_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        rsdp in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut table = bytes.clone();
        if table.len() >= 4 {
            table[..4].copy_from_slice(b"APIC");
        }
        let _ = cpus_from_madt(&madt_memory(&table), None);
        let _ = Rsdp::parse(&rsdp);
    }
}
