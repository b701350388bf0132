//! The Root System Description Pointer (ACPI 6.5, 5.2.5).

use super::bios::{self, Area, SliceMemory};
use super::bytes::{array_at, u32_at, u64_at};
use super::{Error, Structure};
use crate::mem::PhysMemory;

/// `"RSD PTR "`, on a 16-byte boundary.
const SIGNATURE: &[u8; 8] = b"RSD PTR ";
/// Bytes covered by the ACPI 1.0 checksum: up to and including `RsdtAddress`.
const V1_LEN: u32 = 20;
/// Size of the ACPI 2.0+ structure, covered by the extended checksum.
const V2_LEN: u32 = 36;
/// Upper bound accepted for the ACPI 2.0+ `Length` field (the structure is
/// 36 bytes; leave room for growth, refuse garbage).
const MAX_LEN: u32 = 4096;

// Field offsets.
const OEM_ID: usize = 9;
const REVISION: usize = 15;
const RSDT_ADDRESS: usize = 16;
const LENGTH: usize = 20;
const XSDT_ADDRESS: usize = 24;

/// The BIOS read-only memory area searched for the RSDP.
const BIOS_ROM: Area = Area::between(0xE0000, 0x10_0000);

/// Where the boot loader said the RSDP is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsdpHint<'a> {
    /// A copy of the RSDP (the multiboot2 "ACPI old/new RSDP" tags carry
    /// one: 20 bytes for ACPI 1.0, 36 for 2.0+).
    Bytes(&'a [u8]),
    /// The physical address of the RSDP.
    Address(u64),
}

/// A validated Root System Description Pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rsdp {
    /// 0 for ACPI 1.0, 2 for ACPI 2.0 and later.
    pub revision: u8,
    /// The OEM-supplied identifier.
    pub oem_id: [u8; 6],
    /// Physical address of the RSDT.
    pub rsdt_address: u32,
    /// Physical address of the XSDT (revision 2 and later; 0 before).
    pub xsdt_address: u64,
}

impl Rsdp {
    /// Finds the RSDP: from `hint` if it is valid, else by scanning the
    /// first KiB of the EBDA and then the BIOS ROM (0xE0000-0xFFFFF) on
    /// 16-byte boundaries.
    ///
    /// An invalid hint is not fatal (the scan may still succeed), but it is
    /// the error reported when the scan finds nothing either.
    pub fn find(mem: &impl PhysMemory, hint: Option<RsdpHint<'_>>) -> Result<Self, Error> {
        let hinted = hint.map(|hint| match hint {
            RsdpHint::Bytes(bytes) => Self::parse(bytes),
            RsdpHint::Address(addr) => Self::read(mem, addr),
        });
        if let Some(Ok(rsdp)) = hinted {
            return Ok(rsdp);
        }
        match (Self::scan(mem), hinted) {
            (Err(Error::NotFound(_)), Some(Err(hint_error))) => Err(hint_error),
            (scanned, _) => scanned,
        }
    }

    /// Scans the BIOS areas (ACPI 5.2.5.1) for a valid RSDP.
    pub fn scan(mem: &impl PhysMemory) -> Result<Self, Error> {
        let ebda = bios::ebda_first_kib(mem).unwrap_or(Area::EMPTY);
        bios::scan(mem, &[ebda, BIOS_ROM], SIGNATURE, Structure::Rsdp, |addr| {
            Self::read(mem, addr)
        })
    }

    /// Validates a copy of the RSDP.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        Self::read(&SliceMemory(bytes), 0)
    }

    /// Validates the RSDP at `addr`: the signature, the ACPI 1.0 checksum
    /// over the first 20 bytes and, for revision 2 and later, the `Length`
    /// field and the extended checksum over `Length` bytes.
    pub fn read(mem: &impl PhysMemory, addr: u64) -> Result<Self, Error> {
        let mut raw = [0u8; V2_LEN as usize];
        mem.read(addr, &mut raw[..V1_LEN as usize])?;
        if raw[..SIGNATURE.len()] != SIGNATURE[..] {
            return Err(Error::Signature {
                structure: Structure::Rsdp,
                addr,
            });
        }
        verify_checksum(mem, addr, V1_LEN)?;
        let revision = raw[REVISION];
        if revision >= 2 {
            mem.read(addr, &mut raw)?;
            let length = u32_at(&raw, LENGTH).unwrap_or_default();
            if !(V2_LEN..=MAX_LEN).contains(&length) {
                return Err(Error::Length {
                    structure: Structure::Rsdp,
                    addr,
                    length,
                });
            }
            verify_checksum(mem, addr, length)?;
        }
        // The fields lie inside `raw`: the defaults are never used.
        Ok(Self {
            revision,
            oem_id: array_at(&raw, OEM_ID).unwrap_or_default(),
            rsdt_address: u32_at(&raw, RSDT_ADDRESS).unwrap_or_default(),
            xsdt_address: match revision {
                0 | 1 => 0,
                _ => u64_at(&raw, XSDT_ADDRESS).unwrap_or_default(),
            },
        })
    }
}

fn verify_checksum(mem: &impl PhysMemory, addr: u64, len: u32) -> Result<(), Error> {
    match bios::checksum(mem, addr, len)? {
        0 => Ok(()),
        _ => Err(Error::Checksum {
            structure: Structure::Rsdp,
            addr,
        }),
    }
}
