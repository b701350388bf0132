//! `exit_profile=1`: with each Stats hypercall, L0 prints the calling
//! CPU's exit profile (`shared::exit_profile`): its heaviest exit reasons,
//! of L1 and of L2 apart, with the exits handled and L0's cycles per exit.
//! The profile is always kept (two RDTSCs per exit); only the printing is
//! optional, as benchmarks call Stats often.

use core::sync::atomic::{AtomicBool, Ordering};

use shared::exit_profile::{ExitProfile, Origin};
use shared::vmx::ExitReason;

static PRINT: AtomicBool = AtomicBool::new(false);

/// Reads `exit_profile=` from L0's command line (BSP, at boot).
pub fn configure(cmdline: &str) {
    PRINT.store(
        shared::cmdline::get(cmdline, "exit_profile") == Some("1"),
        Ordering::Relaxed,
    );
}

/// Lines printed: the heaviest reasons.
const LINES: usize = 10;

/// Prints `profile` (the calling CPU's) if `exit_profile=1`.
pub fn report(profile: &ExitProfile) {
    if !PRINT.load(Ordering::Relaxed) {
        return;
    }
    let total = profile.total();
    shared::cpu_println!(
        "L0 exit profile: {} exits, {} cycles in L0's handlers ({} per exit), {} outside",
        total.count,
        total.cycles,
        total.cycles / total.count.max(1),
        profile.outside()
    );
    for (origin, reason, line) in profile.heaviest::<LINES>() {
        shared::cpu_println!(
            "L0 exit profile: {origin} {} n={} cycles={} per_exit={}",
            ExitReason::from_u32(u32::from(reason)),
            line.count,
            line.cycles,
            line.cycles / line.count.max(1)
        );
    }
}

/// Where the exit being handled came from.
pub const fn origin(in_l2: bool) -> Origin {
    if in_l2 { Origin::L2 } else { Origin::L1 }
}
