//! Access to physical memory by address, behind a trait.
//!
//! Everything that parses structures living in memory owned by someone else
//! (ACPI tables, a guest's VMCS12, EPT12 tables, MSR areas, bitmaps) reads it
//! through [`PhysMemory`], never through raw pointers. L0 and LHV implement it
//! over their identity map (host physical) or over EPT01 (guest physical); host
//! tests implement it with [`SparseMemory`].

/// Why an access to physical memory failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemError {
    /// Part of the range is not backed by memory that may be accessed
    /// (unmapped, outside RAM, or owned by L0).
    Unmapped {
        /// First address of the access that could not be served.
        addr: u64,
    },
    /// The range wraps around the end of the address space.
    Overflow,
}

/// Byte-addressed physical memory.
pub trait PhysMemory {
    /// Reads `buf.len()` bytes starting at physical address `addr`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError>;

    /// Writes `buf` starting at physical address `addr`.
    fn write(&mut self, addr: u64, buf: &[u8]) -> Result<(), MemError>;

    /// Reads a little-endian `u8`.
    fn read_u8(&self, addr: u64) -> Result<u8, MemError> {
        let mut b = [0u8; 1];
        self.read(addr, &mut b)?;
        Ok(b[0])
    }

    /// Reads a little-endian `u16`.
    fn read_u16(&self, addr: u64) -> Result<u16, MemError> {
        let mut b = [0u8; 2];
        self.read(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Reads a little-endian `u32`.
    fn read_u32(&self, addr: u64) -> Result<u32, MemError> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads a little-endian `u64`.
    fn read_u64(&self, addr: u64) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian `u32`.
    fn write_u32(&mut self, addr: u64, value: u32) -> Result<(), MemError> {
        self.write(addr, &value.to_le_bytes())
    }

    /// Writes a little-endian `u64`.
    fn write_u64(&mut self, addr: u64, value: u64) -> Result<(), MemError> {
        self.write(addr, &value.to_le_bytes())
    }
}

/// Checks that `[addr, addr + len)` does not wrap; returns the end address.
pub fn range_end(addr: u64, len: usize) -> Result<u64, MemError> {
    addr.checked_add(len as u64).ok_or(MemError::Overflow)
}

#[cfg(test)]
pub use sparse::SparseMemory;

#[cfg(test)]
mod sparse {
    use super::{MemError, PhysMemory, range_end};
    use std::collections::BTreeMap;

    /// Page-granular sparse memory for host tests: only pages that were
    /// mapped with [`SparseMemory::map`] are accessible; they start zeroed.
    #[derive(Default, Clone, Debug)]
    pub struct SparseMemory {
        pages: BTreeMap<u64, Box<[u8; 4096]>>,
    }

    impl SparseMemory {
        /// An empty memory: every access fails.
        pub fn new() -> Self {
            Self::default()
        }

        /// Makes `[addr, addr + len)` accessible (rounded out to 4 KiB pages).
        pub fn map(&mut self, addr: u64, len: u64) {
            let first = addr & !0xfff;
            let last = (addr + len.max(1) - 1) & !0xfff;
            let mut page = first;
            while page <= last {
                self.pages
                    .entry(page)
                    .or_insert_with(|| Box::new([0; 4096]));
                page += 4096;
            }
        }

        fn for_each_chunk(
            addr: u64,
            len: usize,
            mut f: impl FnMut(u64, usize, usize) -> Result<(), MemError>,
        ) -> Result<(), MemError> {
            range_end(addr, len)?;
            let mut done = 0usize;
            while done < len {
                let a = addr + done as u64;
                let in_page = (a & 0xfff) as usize;
                let n = (4096 - in_page).min(len - done);
                f(a, done, n)?;
                done += n;
            }
            Ok(())
        }
    }

    impl PhysMemory for SparseMemory {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
            Self::for_each_chunk(addr, buf.len(), |a, off, n| {
                let page = self
                    .pages
                    .get(&(a & !0xfff))
                    .ok_or(MemError::Unmapped { addr: a })?;
                let p = (a & 0xfff) as usize;
                buf[off..off + n].copy_from_slice(&page[p..p + n]);
                Ok(())
            })
        }

        fn write(&mut self, addr: u64, buf: &[u8]) -> Result<(), MemError> {
            let pages = &mut self.pages;
            Self::for_each_chunk(addr, buf.len(), |a, off, n| {
                let page = pages
                    .get_mut(&(a & !0xfff))
                    .ok_or(MemError::Unmapped { addr: a })?;
                let p = (a & 0xfff) as usize;
                page[p..p + n].copy_from_slice(&buf[off..off + n]);
                Ok(())
            })
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn unmapped_access_fails_and_mapped_roundtrips_across_pages() {
            let mut m = SparseMemory::new();
            assert_eq!(m.read_u32(0x1000), Err(MemError::Unmapped { addr: 0x1000 }));
            m.map(0x1ffc, 8);
            m.write_u64(0x1ffc, 0x1122_3344_5566_7788).unwrap();
            assert_eq!(m.read_u64(0x1ffc).unwrap(), 0x1122_3344_5566_7788);
            assert_eq!(m.read_u32(0x2000).unwrap(), 0x1122_3344);
            assert!(m.read_u8(0x3000).is_err());
            assert_eq!(m.read(u64::MAX, &mut [0; 2]), Err(MemError::Overflow));
        }
    }
}

/// Host-physical memory through the kernels' identity map of the low 4 GiB
/// (see `boot/entry.S`). Accesses above it fail with `Unmapped`.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdentityMemory;

/// End of the identity map set up at boot.
pub const IDENTITY_MAP_END: u64 = 4 << 30;

impl IdentityMemory {
    fn check(addr: u64, len: usize) -> Result<(), MemError> {
        let end = range_end(addr, len)?;
        if end > IDENTITY_MAP_END {
            return Err(MemError::Unmapped {
                addr: addr.max(IDENTITY_MAP_END),
            });
        }
        Ok(())
    }
}

impl PhysMemory for IdentityMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        Self::check(addr, buf.len())?;
        // SAFETY: the range is inside the identity map; physical memory may
        // change under us (devices, other CPUs), so it is read as raw bytes
        // with volatile semantics and no reference to it is formed.
        unsafe {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = core::ptr::read_volatile((addr as usize + i) as *const u8);
            }
        }
        Ok(())
    }

    fn write(&mut self, addr: u64, buf: &[u8]) -> Result<(), MemError> {
        Self::check(addr, buf.len())?;
        // SAFETY: as in `read`; callers write only memory they own.
        unsafe {
            for (i, b) in buf.iter().enumerate() {
                core::ptr::write_volatile((addr as usize + i) as *mut u8, *b);
            }
        }
        Ok(())
    }
}
