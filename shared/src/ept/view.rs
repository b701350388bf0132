//! A guest's physical memory as its EPT presents it: addresses of L2's
//! physical space, translated by L1's EPT12 and read from L1's memory.
//! L0 reads L2's code and paging structures this way when it decodes an
//! instruction of L2's (an xAPIC write, see `hypervisor::nested::ept02`).
//!
//! The view only translates: it reads what a present EPT12 leaf names,
//! whatever the leaf's rights (L0 reads on L2's behalf, as the processor
//! does its own paging-structure and instruction fetches, whose rights
//! were already checked when the access that exited was made). It is
//! read-only: L0 never writes L2's memory through it.

use super::entry::{EptConfig, EptPerms, Eptp, PAGE_SHIFT};
use super::walk::walk;
use crate::mem::{MemError, PhysMemory};

const PAGE: u64 = 1 << PAGE_SHIFT;

/// The physical memory of a guest whose EPT is `eptp` (tables and data in
/// `mem`, with `cfg`'s walk rules).
#[derive(Clone, Copy, Debug)]
pub struct EptView<'a, M> {
    mem: &'a M,
    eptp: Eptp,
    cfg: &'a EptConfig,
}

impl<'a, M: PhysMemory> EptView<'a, M> {
    /// The memory `eptp` maps from `mem`.
    pub const fn new(mem: &'a M, eptp: Eptp, cfg: &'a EptConfig) -> Self {
        Self { mem, eptp, cfg }
    }

    /// Where guest-physical `gpa` lies in `mem`, if the walk allows
    /// `access` (empty: translation only).
    pub fn translate(&self, gpa: u64, access: EptPerms) -> Result<u64, MemError> {
        walk(self.mem, self.eptp, gpa, access, self.cfg)
            .map(|t| t.hpa)
            .map_err(|_| MemError::Unmapped { addr: gpa })
    }

    /// Calls `f(address in mem, offset in the range, length)` for each
    /// piece of `[addr, addr + len)` within one guest page (consecutive
    /// guest pages may lie anywhere), each translated for `access`; stops
    /// at the first error.
    pub fn for_each_piece(
        &self,
        addr: u64,
        len: usize,
        access: EptPerms,
        mut f: impl FnMut(u64, usize, usize) -> Result<(), MemError>,
    ) -> Result<(), MemError> {
        crate::mem::range_end(addr, len)?;
        let mut done = 0;
        while done < len {
            let gpa = addr + done as u64;
            let n = ((PAGE - (gpa & (PAGE - 1))) as usize).min(len - done);
            f(self.translate(gpa, access)?, done, n)?;
            done += n;
        }
        Ok(())
    }
}

impl<M: PhysMemory> PhysMemory for EptView<'_, M> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.for_each_piece(addr, buf.len(), EptPerms::empty(), |hpa, at, n| {
            self.mem.read(hpa, &mut buf[at..at + n])
        })
    }

    fn write(&mut self, addr: u64, _buf: &[u8]) -> Result<(), MemError> {
        Err(MemError::Unmapped { addr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ept::build::{EptBuilder, FrameAlloc, Mapping};
    use crate::ept::entry::MemoryType;
    use crate::mem::SparseMemory;
    use proptest::prelude::*;

    struct Bump(u64);
    impl FrameAlloc for Bump {
        fn alloc_zeroed(&mut self) -> Option<u64> {
            self.0 += PAGE;
            Some(self.0 - PAGE)
        }
    }

    const TABLES: u64 = 0x10_0000_0000;
    const DATA: u64 = 0x100_0000;

    fn cfg() -> EptConfig {
        EptConfig {
            max_phys_addr: 46,
            execute_only: true,
            walk_4: true,
            walk_5: false,
            memory_type_uc: true,
            memory_type_wb: true,
            pages_2m: true,
            pages_1g: true,
            accessed_dirty: false,
        }
    }

    /// Guest pages 0 and 1 at host pages 5 and 2 of DATA (out of order);
    /// page 2 execute-only; page 3 not mapped.
    fn setup() -> (SparseMemory, Eptp) {
        let mut mem = SparseMemory::new();
        mem.map(TABLES, 64 * PAGE);
        mem.map(DATA, 8 * PAGE);
        let bytes: Vec<u8> = (0..8 * PAGE)
            .map(|i| (i / PAGE) as u8 * 16 + (i % 7) as u8)
            .collect();
        mem.write(DATA, &bytes).unwrap();
        let mut alloc = Bump(TABLES);
        let c = cfg();
        let mut b = EptBuilder::new(&mut alloc, &c).unwrap();
        for (g, h, perms) in [
            (0, 5, EptPerms::RWX),
            (1, 2, EptPerms::READ),
            (2, 7, EptPerms::EXECUTE),
        ] {
            let m = Mapping::new(perms, MemoryType::WriteBack);
            b.map_range(&mut mem, &mut alloc, g * PAGE, DATA + h * PAGE, PAGE, m)
                .unwrap();
        }
        (mem, b.eptp(MemoryType::WriteBack, false))
    }

    #[test]
    fn reads_follow_the_translation_across_pages() {
        let (mem, eptp) = setup();
        let c = cfg();
        let view = EptView::new(&mem, eptp, &c);
        let mut buf = [0u8; 8];
        view.read(PAGE - 4, &mut buf).unwrap();
        let mut want = [0u8; 8];
        mem.read(DATA + 6 * PAGE - 4, &mut want[..4]).unwrap();
        mem.read(DATA + 2 * PAGE, &mut want[4..]).unwrap();
        assert_eq!(buf, want);
        // An execute-only page is read too (translation only).
        assert_eq!(
            view.read_u8(2 * PAGE + 3).unwrap(),
            mem.read_u8(DATA + 7 * PAGE + 3).unwrap()
        );
    }

    #[test]
    fn unmapped_pages_and_writes_fail() {
        let (mem, eptp) = setup();
        let c = cfg();
        let mut view = EptView::new(&mem, eptp, &c);
        let mut buf = [0u8; 2];
        assert_eq!(
            view.read(3 * PAGE - 1, &mut buf),
            Err(MemError::Unmapped { addr: 3 * PAGE })
        );
        assert_eq!(view.write(0, &[1]), Err(MemError::Unmapped { addr: 0 }));
        assert_eq!(view.read(u64::MAX, &mut buf), Err(MemError::Overflow));
    }

    proptest! {
        /// Every byte read equals the byte at its own translation.
        #[test]
        fn bytes_match_their_translation(start in 0u64..3 * PAGE, len in 1usize..64) {
            let (mem, eptp) = setup();
            let c = cfg();
            let view = EptView::new(&mem, eptp, &c);
            let mut buf = vec![0u8; len];
            let end = start + len as u64;
            let r = view.read(start, &mut buf);
            prop_assert_eq!(r.is_ok(), end <= 3 * PAGE);
            if r.is_ok() {
                for (i, b) in buf.iter().enumerate() {
                    let g = start + i as u64;
                    let h = [5, 2, 7][(g / PAGE) as usize] * PAGE + g % PAGE;
                    prop_assert_eq!(*b, mem.read_u8(DATA + h).unwrap());
                }
            }
        }
    }
}
