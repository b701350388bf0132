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

    /// Reads `out.len()` little-endian `u64`s starting at `addr` (bulk
    /// copies of pages: implementations override it with word accesses).
    fn read_words(&self, addr: u64, out: &mut [u64]) -> Result<(), MemError> {
        for (i, w) in out.iter_mut().enumerate() {
            *w = self.read_u64(addr.wrapping_add(8 * i as u64))?;
        }
        Ok(())
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
        // Physical memory may change under us (devices, other CPUs), so it
        // is read with volatile accesses (or `rep movsq`) and no reference to
        // it is formed: bytes up to an 8-byte boundary, then aligned 64-bit
        // words in one `rep movsq`, then the last bytes.
        let (head, rest) = buf.split_at_mut(head_len(addr, buf.len()));
        let (words, tail) = rest.split_at_mut(rest.len() & !7);
        let mut a = addr as usize;
        for b in head {
            // SAFETY: inside the identity map (checked above).
            *b = unsafe { core::ptr::read_volatile(a as *const u8) };
            a += 1;
        }
        // SAFETY: inside the identity map and 8-byte aligned; `words` is
        // ours (any alignment serves `rep movsq`) and cannot overlap memory
        // read for a guest.
        unsafe {
            crate::x86::rep_movsq(words.as_mut_ptr().cast(), a as *const u64, words.len() / 8)
        };
        a += words.len();
        for b in tail {
            // SAFETY: inside the identity map.
            *b = unsafe { core::ptr::read_volatile(a as *const u8) };
            a += 1;
        }
        Ok(())
    }

    /// One aligned load (page-table walks read entry by entry: the byte
    /// path of [`Self::read`] costs several times more per entry).
    fn read_u64(&self, addr: u64) -> Result<u64, MemError> {
        if !addr.is_multiple_of(8) {
            let mut b = [0u8; 8];
            self.read(addr, &mut b)?;
            return Ok(u64::from_le_bytes(b));
        }
        Self::check(addr, 8)?;
        // SAFETY: inside the identity map (checked above), 8-byte aligned;
        // volatile as in `read`.
        Ok(unsafe { core::ptr::read_volatile(addr as usize as *const u64) })
    }

    fn read_words(&self, addr: u64, out: &mut [u64]) -> Result<(), MemError> {
        if !addr.is_multiple_of(8) {
            for (i, w) in out.iter_mut().enumerate() {
                *w = self.read_u64(addr.wrapping_add(8 * i as u64))?;
            }
            return Ok(());
        }
        Self::check(addr, out.len().saturating_mul(8))?;
        // SAFETY: the source is inside the identity map (checked above) and
        // 8-byte aligned, `out` is ours and cannot overlap memory read for a
        // guest; like `read`'s volatile loads, `rep movsq` takes whatever
        // the guest wrote meanwhile.
        unsafe { crate::x86::rep_movsq(out.as_mut_ptr(), addr as usize as *const u64, out.len()) };
        Ok(())
    }

    fn write(&mut self, addr: u64, buf: &[u8]) -> Result<(), MemError> {
        Self::check(addr, buf.len())?;
        // As in `read`; callers write only memory they own.
        let (head, rest) = buf.split_at(head_len(addr, buf.len()));
        let (words, tail) = rest.split_at(rest.len() & !7);
        let mut a = addr as usize;
        for b in head {
            // SAFETY: inside the identity map (checked above).
            unsafe { core::ptr::write_volatile(a as *mut u8, *b) };
            a += 1;
        }
        for w in words.chunks_exact(8) {
            let mut v = [0u8; 8];
            v.copy_from_slice(w);
            // SAFETY: inside the identity map and 8-byte aligned.
            unsafe { core::ptr::write_volatile(a as *mut u64, u64::from_le_bytes(v)) };
            a += 8;
        }
        for b in tail {
            // SAFETY: inside the identity map.
            unsafe { core::ptr::write_volatile(a as *mut u8, *b) };
            a += 1;
        }
        Ok(())
    }
}

/// Bytes from `addr` to the next 8-byte boundary, at most `len`.
const fn head_len(addr: u64, len: usize) -> usize {
    let to_boundary = (addr.wrapping_neg() & 7) as usize;
    if to_boundary < len { to_boundary } else { len }
}

#[cfg(test)]
mod identity_tests {
    use super::head_len;

    #[test]
    fn head_reaches_the_next_word_boundary() {
        assert_eq!(head_len(0x1000, 4096), 0);
        assert_eq!(head_len(0x1001, 4096), 7);
        assert_eq!(head_len(0x1007, 4096), 1);
        assert_eq!(head_len(0x1003, 2), 2);
        assert_eq!(head_len(u64::MAX, 8), 1);
    }
}
