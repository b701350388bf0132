//! System description tables: the common header (ACPI 6.5, 5.2.6) and the
//! root tables that point at all the others, the RSDT (5.2.7, 32-bit
//! entries) and the XSDT (5.2.8, 64-bit entries).

use super::bios;
use super::{Error, Rsdp, Structure};
use crate::mem::{PhysMemory, range_end};

/// Size of the system description table header.
pub(super) const HEADER_LEN: u32 = 36;
/// Upper bound accepted for a table's `Length` (the tables parsed here are
/// a few KiB; refuse to checksum gigabytes because of a corrupt field).
pub(super) const MAX_TABLE_LEN: u32 = 1 << 20;

// Header field offsets.
const LENGTH: usize = 4;

/// A table whose signature, length and checksum have been checked; reads
/// inside it are bounds-checked against its `Length`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Sdt {
    /// Physical address of the header.
    pub addr: u64,
    /// `Length`: size of the whole table, header included.
    pub length: u32,
    /// The table, for errors.
    pub structure: Structure,
}

impl Sdt {
    /// Validates the table at `addr`: `signature`, a `Length` between the
    /// header size and [`MAX_TABLE_LEN`], and a zero checksum over `Length`
    /// bytes.
    pub fn load(
        mem: &impl PhysMemory,
        addr: u64,
        signature: &[u8; 4],
        structure: Structure,
    ) -> Result<Self, Error> {
        let mut header = [0u8; HEADER_LEN as usize];
        mem.read(addr, &mut header)?;
        if header[..4] != signature[..] {
            return Err(Error::Signature { structure, addr });
        }
        let length = u32::from_le_bytes([
            header[LENGTH],
            header[LENGTH + 1],
            header[LENGTH + 2],
            header[LENGTH + 3],
        ]);
        if !(HEADER_LEN..=MAX_TABLE_LEN).contains(&length) {
            return Err(Error::Length {
                structure,
                addr,
                length,
            });
        }
        range_end(addr, length as usize)?;
        if bios::checksum(mem, addr, length)? != 0 {
            return Err(Error::Checksum { structure, addr });
        }
        Ok(Self {
            addr,
            length,
            structure,
        })
    }

    /// Reads `buf.len()` bytes at `offset` from the start of the table,
    /// refusing to read past `Length`.
    pub fn read(&self, mem: &impl PhysMemory, offset: u32, buf: &mut [u8]) -> Result<(), Error> {
        let end = u64::from(offset) + buf.len() as u64;
        if end > u64::from(self.length) {
            return Err(self.length_error());
        }
        mem.read(self.addr + u64::from(offset), buf)?;
        Ok(())
    }

    /// Reads a little-endian `u32` at `offset`, inside the table.
    pub fn read_u32(&self, mem: &impl PhysMemory, offset: u32) -> Result<u32, Error> {
        let mut b = [0u8; 4];
        self.read(mem, offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads a little-endian `u64` at `offset`, inside the table.
    pub fn read_u64(&self, mem: &impl PhysMemory, offset: u32) -> Result<u64, Error> {
        let mut b = [0u8; 8];
        self.read(mem, offset, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// The error for a table too short for what it must contain.
    pub fn length_error(&self) -> Error {
        Error::Length {
            structure: self.structure,
            addr: self.addr,
            length: self.length,
        }
    }
}

/// The RSDT or the XSDT: a header followed by physical addresses of tables.
struct RootTable {
    sdt: Sdt,
    /// 4 (RSDT) or 8 (XSDT).
    entry_size: u32,
}

impl RootTable {
    /// The XSDT if the RSDP is revision 2 or later with a non-zero
    /// `XsdtAddress` and the XSDT is valid; the RSDT otherwise.
    fn load(mem: &impl PhysMemory, rsdp: &Rsdp) -> Result<Self, Error> {
        let xsdt_error = if rsdp.revision >= 2 && rsdp.xsdt_address != 0 {
            match Sdt::load(mem, rsdp.xsdt_address, b"XSDT", Structure::Xsdt) {
                Ok(sdt) => return Ok(Self { sdt, entry_size: 8 }),
                Err(e) => Some(e),
            }
        } else {
            None
        };
        // On failure, report the XSDT's error: it is the table that should
        // have been used.
        if rsdp.rsdt_address == 0 {
            return Err(xsdt_error.unwrap_or(Error::NotFound(Structure::Rsdt)));
        }
        Sdt::load(mem, u64::from(rsdp.rsdt_address), b"RSDT", Structure::Rsdt)
            .map(|sdt| Self { sdt, entry_size: 4 })
            .map_err(|e| xsdt_error.unwrap_or(e))
    }

    /// Number of entries; a trailing partial entry is ignored.
    fn len(&self) -> u32 {
        (self.sdt.length - HEADER_LEN) / self.entry_size
    }

    /// The table address in entry `index` (`index < self.len()`).
    fn entry(&self, mem: &impl PhysMemory, index: u32) -> Result<u64, Error> {
        let offset = HEADER_LEN + index * self.entry_size;
        match self.entry_size {
            8 => self.sdt.read_u64(mem, offset),
            _ => self.sdt.read_u32(mem, offset).map(u64::from),
        }
    }
}

/// Finds the first valid table with `signature` listed in the root table
/// (XSDT or RSDT) that `rsdp` points at.
///
/// Null or unreadable entries are skipped; if tables with the signature are
/// found but none is valid, the first one's error is returned.
pub(super) fn find_table(
    mem: &impl PhysMemory,
    rsdp: &Rsdp,
    signature: &[u8; 4],
    structure: Structure,
) -> Result<Sdt, Error> {
    let root = RootTable::load(mem, rsdp)?;
    let mut first_error = None;
    for index in 0..root.len() {
        let addr = root.entry(mem, index)?;
        if !has_signature(mem, addr, signature) {
            continue;
        }
        match Sdt::load(mem, addr, signature, structure) {
            Ok(sdt) => return Ok(sdt),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or(Error::NotFound(structure)))
}

/// Whether the 4 bytes at `addr` (non-null and readable) are `signature`.
fn has_signature(mem: &impl PhysMemory, addr: u64, signature: &[u8; 4]) -> bool {
    let mut found = [0u8; 4];
    addr != 0 && mem.read(addr, &mut found).is_ok() && found == *signature
}
