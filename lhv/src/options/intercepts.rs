//! INTERCEPTS (0x8000): placeholder.

use lhv::opt::LhvOpt;

use super::TestOption;

/// The intercept checks of one CPU.
pub struct Intercepts {
    checks: u64,
}

impl Intercepts {
    /// Fresh state.
    pub const fn new() -> Self {
        Self { checks: 0 }
    }
}

impl TestOption for Intercepts {
    fn bit(&self) -> LhvOpt {
        LhvOpt::INTERCEPTS
    }

    fn count(&self) -> u64 {
        self.checks
    }
}
