//! The STARTUP IPI a hypervisor must not lose while it emulates INIT.
//!
//! A processor latches a SIPI only in the wait-for-SIPI state (SDM 9.4.4,
//! 26.2: in VMX non-root operation it is a SIPI VM exit); one that arrives
//! in VMX root is ignored. A hypervisor that emulates INIT puts the target
//! in that state from VMX root: between the INIT and the target's next VM
//! entry (or when the INIT has not been taken yet) the guest's SIPI would
//! be lost, and its AP never start. The sender therefore also posts the
//! SIPI's vector in the target's latch, which the target takes either at
//! its SIPI VM exit or just before it would enter the guest waiting for
//! SIPI; the sender sends the physical SIPI again while the latch is full,
//! which is harmless once the target has taken it.

use core::sync::atomic::{AtomicU32, Ordering};

/// One vCPU's latch: empty, or `FULL | vector`.
#[derive(Debug, Default)]
pub struct SipiLatch(AtomicU32);

/// Marks a posted SIPI.
const FULL: u32 = 1 << 8;

impl SipiLatch {
    pub const fn new() -> Self {
        Self(AtomicU32::new(0))
    }

    /// Posts a SIPI with `vector` if the target will wait for one:
    /// `expects` is whether it is waiting for SIPI or has an INIT to take
    /// (a SIPI to a running processor is ignored, SDM 9.4.4). A later SIPI
    /// replaces an earlier one not yet taken, as the processor would start
    /// at the first and ignore the second, which carries the same vector
    /// in the MP protocol (SDM 9.4.4.1). Returns whether it was posted.
    pub fn post(&self, vector: u8, expects: bool) -> bool {
        if expects {
            self.0.store(FULL | u32::from(vector), Ordering::Release);
        }
        expects
    }

    /// Takes the posted SIPI's vector (the target leaves wait-for-SIPI).
    pub fn take(&self) -> Option<u8> {
        let v = self.0.swap(0, Ordering::AcqRel);
        (v & FULL != 0).then_some(v as u8)
    }

    /// Whether a posted SIPI has not been taken yet.
    pub fn is_full(&self) -> bool {
        self.0.load(Ordering::Acquire) & FULL != 0
    }

    /// Forgets a posted SIPI (the target left wait-for-SIPI otherwise).
    pub fn clear(&self) {
        self.0.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_sipi_before_the_init_is_taken_is_kept() {
        // INIT posted, target still running: the SIPI waits for it.
        let l = SipiLatch::new();
        assert!(l.post(0x9a, true));
        assert!(l.is_full());
        assert_eq!(l.take(), Some(0x9a));
        assert_eq!(l.take(), None, "taken once");
        assert!(!l.is_full());
    }

    #[test]
    fn a_sipi_to_a_running_cpu_is_ignored() {
        let l = SipiLatch::new();
        assert!(!l.post(0x10, false));
        assert_eq!(l.take(), None);
    }

    #[test]
    fn vector_zero_is_a_sipi() {
        let l = SipiLatch::new();
        l.post(0, true);
        assert_eq!(l.take(), Some(0));
    }

    #[test]
    fn clear_forgets() {
        let l = SipiLatch::new();
        l.post(1, true);
        l.clear();
        assert_eq!(l.take(), None);
    }

    #[test]
    fn a_concurrent_post_is_taken_exactly_once() {
        use std::sync::Arc;
        for _ in 0..50 {
            let l = Arc::new(SipiLatch::new());
            let sender = {
                let l = Arc::clone(&l);
                std::thread::spawn(move || {
                    l.post(0x42, true);
                })
            };
            let mut got = 0;
            while got == 0 {
                got += u32::from(l.take().is_some());
                if sender.is_finished() {
                    got += u32::from(l.take().is_some());
                    break;
                }
            }
            sender.join().unwrap();
            got += u32::from(l.take().is_some());
            assert_eq!(got, 1);
        }
    }

    proptest! {
        /// Any sequence of posts and takes: a take returns the last vector
        /// posted (with `expects`) since the previous take, else nothing.
        #[test]
        fn takes_see_the_last_post(ops in proptest::collection::vec((any::<bool>(), any::<u8>(), any::<bool>()), 0..32)) {
            let l = SipiLatch::new();
            let mut model: Option<u8> = None;
            for (is_post, vector, expects) in ops {
                if is_post {
                    if l.post(vector, expects) {
                        model = Some(vector);
                    }
                } else {
                    prop_assert_eq!(l.take(), model.take());
                }
                prop_assert_eq!(l.is_full(), model.is_some());
            }
        }
    }
}
