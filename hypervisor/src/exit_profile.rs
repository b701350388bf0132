//! `exit_profile=1`: with each Stats hypercall, L0 prints the calling
//! CPU's exit profile (`shared::exit_profile`): its heaviest exit reasons,
//! of L1 and of L2 apart, with the exits handled and L0's cycles per exit.
//! The profile is always kept (two RDTSCs per exit); only the printing is
//! optional, as benchmarks call Stats often. `exit_profile=phases` also
//! times the phases of every nested entry and reflected exit
//! (`shared::exit_profile::Phase`, one RDTSC each) and prints them too.

use core::sync::atomic::{AtomicBool, Ordering};

use shared::exit_profile::{ExitProfile, Origin, Phase, PhaseTimer};
use shared::vmx::ExitReason;

static PRINT: AtomicBool = AtomicBool::new(false);
static PHASES: AtomicBool = AtomicBool::new(false);

/// Reads `exit_profile=` from L0's command line (BSP, at boot).
pub fn configure(cmdline: &str) {
    let value = shared::cmdline::get(cmdline, "exit_profile");
    let phases = value == Some("phases");
    PRINT.store(value == Some("1") || phases, Ordering::Relaxed);
    PHASES.store(phases, Ordering::Relaxed);
}

/// A nested transition starts (`exit_profile=phases`).
pub fn phase_start(timer: &mut PhaseTimer) {
    if PHASES.load(Ordering::Relaxed) {
        timer.start(shared::x86::rdtsc());
    }
}

/// `phase` of the current nested transition ended.
pub fn phase_end(timer: &mut PhaseTimer, phase: Phase) {
    if PHASES.load(Ordering::Relaxed) {
        timer.mark(phase, shared::x86::rdtsc());
    }
}

/// Lines printed: the heaviest reasons.
const LINES: usize = 10;

/// Prints `profile` and `phases` (the calling CPU's) if `exit_profile=1`
/// or `phases`.
pub fn report(profile: &ExitProfile, phases: &PhaseTimer) {
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
    for (phase, line) in phases.lines() {
        shared::cpu_println!(
            "L0 nested phase: {phase} n={} cycles={} per_transition={}",
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
