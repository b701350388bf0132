//! Test support shared by the nested-EPT tests.

use crate::ept::build::FrameAlloc;
use crate::ept::ept02::FramePool;
use crate::mem::SparseMemory;

/// A pool with a free list, counting frames out.
pub struct ListPool {
    pub free: Vec<u64>,
    pub out: std::collections::BTreeSet<u64>,
}

impl ListPool {
    pub fn new(mem: &mut SparseMemory, base: u64, frames: u64) -> Self {
        mem.map(base, frames * 4096);
        Self {
            free: (0..frames).rev().map(|i| base + i * 4096).collect(),
            out: Default::default(),
        }
    }
}

impl FrameAlloc for ListPool {
    fn alloc_zeroed(&mut self) -> Option<u64> {
        let f = self.free.pop()?;
        assert!(self.out.insert(f), "frame {f:#x} handed out twice");
        Some(f)
    }
}

impl FramePool for ListPool {
    fn free(&mut self, frame: u64) {
        assert!(
            self.out.remove(&frame),
            "frame {frame:#x} freed but not out"
        );
        self.free.push(frame);
    }
}
