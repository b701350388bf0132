//! NO_INTERRUPT (0x200): no LAPIC timer (one-shot PIT only, no HLT waits);
//! checked here: no timer interrupt ever arrives, in LHV or as an exit.

use ::core::sync::atomic::Ordering;
use lhv::opt::LhvOpt;

use super::TestOption;
use crate::assert::test_assert_eq;
use crate::irq;
use crate::test_loop::Ctx;

/// The NO_INTERRUPT checks.
pub struct NoInterrupt {
    checks: u64,
}

impl NoInterrupt {
    /// Fresh state.
    pub const fn new() -> Self {
        Self { checks: 0 }
    }
}

impl TestOption for NoInterrupt {
    fn bit(&self) -> LhvOpt {
        LhvOpt::NO_INTERRUPT
    }

    fn after_iteration(&mut self, _ctx: &mut Ctx) {
        let timer = irq::counters().timer.load(Ordering::Relaxed);
        test_assert_eq!(timer, 0, "LAPIC timer interrupts with NO_INTERRUPT");
        self.checks += 1;
    }

    fn count(&self) -> u64 {
        self.checks
    }
}
