//! NO_EFLAGS_IF (0x2): LHV never executes STI. Its interrupts then reach it
//! only as external-interrupt VM exits, acknowledged on exit; checked here:
//! RFLAGS.IF stays 0 in LHV for the whole run.

use lhv::opt::LhvOpt;

use super::TestOption;
use crate::assert::test_assert_eq;
use crate::test_loop::Ctx;
use crate::vmcs_setup::RFLAGS_IF;

/// The NO_EFLAGS_IF checks.
pub struct NoEflagsIf {
    checks: u64,
}

impl NoEflagsIf {
    /// Fresh state.
    pub const fn new() -> Self {
        Self { checks: 0 }
    }
}

impl TestOption for NoEflagsIf {
    fn bit(&self) -> LhvOpt {
        LhvOpt::NO_EFLAGS_IF
    }

    fn before_entry(&mut self, _ctx: &mut Ctx) {
        test_assert_eq!(
            shared::x86::read_rflags() & RFLAGS_IF,
            0,
            "LHV's RFLAGS.IF with NO_EFLAGS_IF"
        );
        self.checks += 1;
    }

    fn count(&self) -> u64 {
        self.checks
    }
}
