//! The SMP cases (2+ CPUs).

use lhv::negative_cases::Skip;
use shared::boot::BootInfo;
use shared::vmx::VmxCaps;

use super::Verdict;

/// The names of the SMP cases.
pub const NAMES: &[&str] = &["nmi-storm"];

/// Runs the SMP cases.
pub fn run(
    _boot: &'static BootInfo,
    _caps: &'static VmxCaps,
    _l0: bool,
) -> [(&'static str, Result<Verdict, Skip>); 1] {
    [("nmi-storm", Err(Skip::Unsupported("not yet")))]
}
