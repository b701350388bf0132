//! Builders of firmware tables for host tests.

use crate::mem::{PhysMemory, SparseMemory};

/// Sets the byte at `at` so that `bytes` sums to zero.
pub(crate) fn fix_checksum(bytes: &mut [u8], at: usize) {
    bytes[at] = 0;
    let sum = bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    bytes[at] = sum.wrapping_neg();
}

/// An ACPI 1.0 RSDP (20 bytes).
pub(crate) fn rsdp_v1(rsdt: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"RSD PTR ");
    b.push(0);
    b.extend_from_slice(b"TESTOE");
    b.push(0);
    b.extend_from_slice(&rsdt.to_le_bytes());
    fix_checksum(&mut b, 8);
    b
}

/// An ACPI 2.0 RSDP (36 bytes).
pub(crate) fn rsdp_v2(rsdt: u32, xsdt: u64) -> Vec<u8> {
    let mut b = rsdp_v1(rsdt);
    b[15] = 2;
    fix_checksum(&mut b, 8);
    b.extend_from_slice(&36u32.to_le_bytes());
    b.extend_from_slice(&xsdt.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    fix_checksum(&mut b, 32);
    b
}

/// A system description table: a 36-byte header then `body`.
pub(crate) fn sdt(signature: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(signature);
    b.extend_from_slice(&(36 + body.len() as u32).to_le_bytes());
    b.push(1);
    b.push(0);
    b.extend_from_slice(b"TESTOETESTTABL");
    b.extend_from_slice(&[1, 0, 0, 0, b'T', b'E', b'S', b'T', 1, 0, 0, 0]);
    assert_eq!(b.len(), 36);
    b.extend_from_slice(body);
    fix_checksum(&mut b, 9);
    b
}

/// An RSDT listing `tables`.
pub(crate) fn rsdt(tables: &[u32]) -> Vec<u8> {
    sdt(
        b"RSDT",
        &tables
            .iter()
            .flat_map(|t| t.to_le_bytes())
            .collect::<Vec<_>>(),
    )
}

/// An XSDT listing `tables`.
pub(crate) fn xsdt(tables: &[u64]) -> Vec<u8> {
    sdt(
        b"XSDT",
        &tables
            .iter()
            .flat_map(|t| t.to_le_bytes())
            .collect::<Vec<_>>(),
    )
}

/// The body of a MADT (without the SDT header).
pub(crate) fn madt_body(local_apic: u32, flags: u32, entries: &[Vec<u8>]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&local_apic.to_le_bytes());
    b.extend_from_slice(&flags.to_le_bytes());
    entries.iter().for_each(|e| b.extend_from_slice(e));
    b
}

/// A MADT with `PCAT_COMPAT`, the local APIC at 0xFEE00000 and `entries`.
pub(crate) fn madt(entries: &[Vec<u8>]) -> Vec<u8> {
    sdt(b"APIC", &madt_body(0xFEE0_0000, 1, entries))
}

/// MADT interrupt controller structures.
pub(crate) mod entry {
    /// Processor Local APIC.
    pub(crate) fn local_apic(uid: u8, apic_id: u8, flags: u32) -> Vec<u8> {
        let mut b = vec![0, 8, uid, apic_id];
        b.extend_from_slice(&flags.to_le_bytes());
        b
    }

    /// Processor Local x2APIC.
    pub(crate) fn local_x2apic(x2apic_id: u32, flags: u32, uid: u32) -> Vec<u8> {
        let mut b = vec![9, 16, 0, 0];
        [x2apic_id, flags, uid]
            .iter()
            .for_each(|v| b.extend_from_slice(&v.to_le_bytes()));
        b
    }

    /// I/O APIC.
    pub(crate) fn io_apic(id: u8, address: u32, gsi_base: u32) -> Vec<u8> {
        let mut b = vec![1, 12, id, 0];
        b.extend_from_slice(&address.to_le_bytes());
        b.extend_from_slice(&gsi_base.to_le_bytes());
        b
    }

    /// Interrupt Source Override.
    pub(crate) fn interrupt_source_override(source: u8, gsi: u32, flags: u16) -> Vec<u8> {
        let mut b = vec![2, 10, 0, source];
        b.extend_from_slice(&gsi.to_le_bytes());
        b.extend_from_slice(&flags.to_le_bytes());
        b
    }

    /// Local APIC NMI.
    pub(crate) fn local_apic_nmi(uid: u8, flags: u16, lint: u8) -> Vec<u8> {
        let mut b = vec![4, 6, uid];
        b.extend_from_slice(&flags.to_le_bytes());
        b.push(lint);
        b
    }

    /// Local x2APIC NMI.
    pub(crate) fn local_x2apic_nmi(uid: u32, flags: u16, lint: u8) -> Vec<u8> {
        let mut b = vec![0xA, 12];
        b.extend_from_slice(&flags.to_le_bytes());
        b.extend_from_slice(&uid.to_le_bytes());
        b.extend_from_slice(&[lint, 0, 0, 0]);
        b
    }

    /// Local APIC Address Override.
    pub(crate) fn local_apic_address_override(address: u64) -> Vec<u8> {
        let mut b = vec![5, 12, 0, 0];
        b.extend_from_slice(&address.to_le_bytes());
        b
    }
}

/// A memory holding each `(address, bytes)` blob (pages mapped as needed).
pub(crate) fn memory(blobs: &[(u64, &[u8])]) -> SparseMemory {
    let mut mem = SparseMemory::new();
    for &(addr, bytes) in blobs {
        mem.map(addr, bytes.len() as u64);
        mem.write(addr, bytes).unwrap();
    }
    mem
}

/// Writes `bytes` at `addr`, mapping the pages first.
pub(crate) fn put(mem: &mut SparseMemory, addr: u64, bytes: &[u8]) {
    mem.map(addr, bytes.len() as u64);
    mem.write(addr, bytes).unwrap();
}

/// Maps the BIOS Data Area page and points its EBDA segment at `ebda`
/// (a physical address, 16-byte aligned) and its base memory size at
/// `base_kib`.
pub(crate) fn set_bda(mem: &mut SparseMemory, ebda: u64, base_kib: u16) {
    put(mem, 0x40E, &((ebda >> 4) as u16).to_le_bytes());
    put(mem, 0x413, &base_kib.to_le_bytes());
}
