//! The legacy BIOS areas where firmware places its table pointers: the BIOS
//! Data Area (BDA), the Extended BIOS Data Area (EBDA), the top of base
//! memory and the BIOS read-only memory.

use super::{Error, Structure};
use crate::mem::{MemError, PhysMemory};

/// One KiB.
pub(crate) const KIB: u64 = 1024;

/// BDA word holding the real-mode segment of the EBDA.
const BDA_EBDA_SEGMENT: u64 = 0x40E;
/// BDA word holding the size of base memory in KiB.
const BDA_BASE_MEMORY_KIB: u64 = 0x413;
/// End of conventional (base) memory: 640 KiB.
const BASE_MEMORY_END: u64 = 0xA0000;

/// Signatures are searched for on 16-byte boundaries (ACPI 5.2.5.1,
/// MP Specification 4.1).
const SCAN_ALIGN: u64 = 16;

/// A physical address range to search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Area {
    /// First address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Area {
    /// An area with no address in it.
    pub const EMPTY: Self = Self { start: 0, len: 0 };

    /// The range `[start, end)`.
    pub const fn between(start: u64, end: u64) -> Self {
        Self {
            start,
            len: end - start,
        }
    }

    /// The 16-byte aligned addresses in the area where a signature of
    /// `sig_len` bytes fits.
    fn candidates(self, sig_len: u64) -> impl Iterator<Item = u64> {
        let end = self.start.saturating_add(self.len);
        (self.start.next_multiple_of(SCAN_ALIGN)..end)
            .step_by(SCAN_ALIGN as usize)
            .take_while(move |a| a.checked_add(sig_len).is_some_and(|e| e <= end))
    }
}

/// The first KiB of the EBDA, if the BDA points at one below 640 KiB.
pub(crate) fn ebda_first_kib(mem: &impl PhysMemory) -> Option<Area> {
    let segment = mem.read_u16(BDA_EBDA_SEGMENT).ok()?;
    let start = u64::from(segment) << 4;
    (start != 0 && start + KIB <= BASE_MEMORY_END).then_some(Area { start, len: KIB })
}

/// The last KiB of base memory, whose size the BDA gives in KiB; 639-640 KiB
/// if the BDA value is missing or implausible.
pub(crate) fn base_memory_last_kib(mem: &impl PhysMemory) -> Area {
    let end = mem
        .read_u16(BDA_BASE_MEMORY_KIB)
        .ok()
        .map(|kib| u64::from(kib) * KIB)
        .filter(|end| (KIB..=BASE_MEMORY_END).contains(end))
        .unwrap_or(BASE_MEMORY_END);
    Area {
        start: end - KIB,
        len: KIB,
    }
}

/// Searches `areas`, in order, for `signature` on 16-byte boundaries and
/// returns the first candidate that `probe` accepts.
///
/// If no candidate is accepted, returns the error of the first rejected one
/// (a structure with a bad checksum is a more useful diagnosis than "not
/// found"), else [`Error::NotFound`]. Unreadable addresses are skipped.
pub(crate) fn scan<T>(
    mem: &impl PhysMemory,
    areas: &[Area],
    signature: &[u8],
    structure: Structure,
    mut probe: impl FnMut(u64) -> Result<T, Error>,
) -> Result<T, Error> {
    let mut first_error = None;
    let mut found = [0u8; 8];
    let found = &mut found[..signature.len()];
    for area in areas {
        for addr in area.candidates(signature.len() as u64) {
            if mem.read(addr, found).is_err() || found != signature {
                continue;
            }
            match probe(addr) {
                Ok(t) => return Ok(t),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    Err(first_error.unwrap_or(Error::NotFound(structure)))
}

/// The 8-bit sum of `len` bytes at `addr`; zero for a valid structure.
pub(crate) fn checksum(mem: &impl PhysMemory, addr: u64, len: u32) -> Result<u8, Error> {
    let mut chunk = [0u8; 64];
    let mut sum = 0u8;
    let mut done = 0u64;
    let len = u64::from(len);
    while done < len {
        let n = (len - done).min(chunk.len() as u64) as usize;
        let a = addr.checked_add(done).ok_or(MemError::Overflow)?;
        mem.read(a, &mut chunk[..n])?;
        sum = chunk[..n].iter().fold(sum, |s, b| s.wrapping_add(*b));
        done += n as u64;
    }
    Ok(sum)
}

/// A byte slice seen as physical memory at address 0, so that structures
/// handed over by the boot loader (the RSDP copy in the multiboot2 ACPI
/// tags) are parsed by the same code as structures in memory.
pub(crate) struct SliceMemory<'a>(pub &'a [u8]);

impl PhysMemory for SliceMemory<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let src = usize::try_from(addr)
            .ok()
            .and_then(|start| self.0.get(start..start.checked_add(buf.len())?))
            .ok_or(MemError::Unmapped { addr })?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write(&mut self, addr: u64, _buf: &[u8]) -> Result<(), MemError> {
        Err(MemError::Unmapped { addr })
    }
}
