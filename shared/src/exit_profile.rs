//! L0's exit profile: for each basic exit reason, and for exits of L1 and
//! of L2 apart, how many exits L0 handled and the TSC cycles its handler
//! took (from the exit stub's call to the return that resumes a guest).
//! In Bochs the TSC counts instructions, so the figures are L0's own work
//! per exit, repeatable from run to run; the time the guests ran (and the
//! processor's transitions) is the gap between one exit's end and the
//! next one's start. Pure bookkeeping, host-tested; L0 keeps one per CPU
//! and prints its heaviest lines with the Stats hypercall.

use core::fmt;

/// Basic exit reasons recorded (SDM Appendix C; higher ones share the last).
pub const REASONS: usize = 80;

/// Where the exit came from: the guest L0 runs itself, or L2 (VMCS02).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// L0's own guest (VMCS01).
    L1,
    /// A guest hypervisor's guest (a VMCS02).
    L2,
}

/// One line of the profile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Line {
    /// Exits handled.
    pub count: u64,
    /// Cycles of L0's handler, summed.
    pub cycles: u64,
}

impl Line {
    /// Nothing recorded.
    pub const ZERO: Self = Self::new(0, 0);

    /// `count` events that took `cycles` in all.
    pub const fn new(count: u64, cycles: u64) -> Self {
        Self { count, cycles }
    }
}

/// One CPU's profile.
#[derive(Clone, Debug)]
pub struct ExitProfile {
    lines: [[Line; REASONS]; 2],
    /// Cycles between exits (guest code and the transitions).
    outside: u64,
    /// When the last handler ended (0 before the first).
    last_end: u64,
}

impl Default for ExitProfile {
    fn default() -> Self {
        Self::new()
    }
}

impl ExitProfile {
    /// An empty profile.
    pub const fn new() -> Self {
        Self {
            lines: [[Line::ZERO; REASONS]; 2],
            outside: 0,
            last_end: 0,
        }
    }

    /// Records one exit of basic reason `reason` from `origin`, whose
    /// handler ran from TSC `start` to `end`.
    pub fn record(&mut self, origin: Origin, reason: u16, start: u64, end: u64) {
        if self.last_end != 0 {
            self.outside += start.saturating_sub(self.last_end);
        }
        self.last_end = end;
        let line = &mut self.lines[origin as usize][usize::from(reason).min(REASONS - 1)];
        line.count += 1;
        line.cycles += end.saturating_sub(start);
    }

    /// The line of `origin` and `reason`.
    pub fn line(&self, origin: Origin, reason: u16) -> Line {
        self.lines[origin as usize][usize::from(reason).min(REASONS - 1)]
    }

    /// Exits handled and handler cycles, all lines.
    pub fn total(&self) -> Line {
        self.lines
            .iter()
            .flatten()
            .fold(Line::default(), |a, l| Line {
                count: a.count + l.count,
                cycles: a.cycles + l.cycles,
            })
    }

    /// Cycles spent outside L0's handler since the first exit.
    pub const fn outside(&self) -> u64 {
        self.outside
    }

    /// The `N` lines with the most handler cycles, heaviest first (fewer
    /// if fewer lines have exits).
    pub fn heaviest<const N: usize>(&self) -> heapless::Vec<(Origin, u16, Line), N> {
        let mut top: heapless::Vec<(Origin, u16, Line), N> = heapless::Vec::new();
        for (o, origin) in [Origin::L1, Origin::L2].into_iter().enumerate() {
            for (r, &line) in self.lines[o].iter().enumerate() {
                if line.count == 0 {
                    continue;
                }
                let at = top
                    .iter()
                    .position(|&(_, _, l)| l.cycles < line.cycles)
                    .unwrap_or(top.len());
                if at < N {
                    if top.is_full() {
                        top.pop();
                    }
                    let _ = top.insert(at, (origin, r as u16, line));
                }
            }
        }
        top
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::L1 => "L1",
            Self::L2 => "L2",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn records_count_cycles_and_the_gaps_between_exits() {
        let mut p = ExitProfile::new();
        p.record(Origin::L1, 18, 100, 150);
        p.record(Origin::L1, 18, 400, 470);
        p.record(Origin::L2, 18, 1000, 1010);
        assert_eq!(p.line(Origin::L1, 18), Line::new(2, 120));
        assert_eq!(p.line(Origin::L2, 18), Line::new(1, 10));
        assert_eq!(p.total(), Line::new(3, 130));
        assert_eq!(p.outside(), (400 - 150) + (1000 - 470));
    }

    #[test]
    fn reasons_beyond_the_table_share_its_last_line() {
        let mut p = ExitProfile::new();
        p.record(Origin::L2, 500, 0, 5);
        assert_eq!(p.line(Origin::L2, REASONS as u16 - 1).count, 1);
    }

    proptest! {
        /// The heaviest lines are the N largest by cycles, in order, and
        /// every line with exits that is heavier than the last shown is shown.
        #[test]
        fn heaviest_is_the_top_n_in_order(
            exits in proptest::collection::vec((any::<bool>(), 0u16..90, 0u64..10_000), 0..60),
        ) {
            let mut p = ExitProfile::new();
            let mut t = 1;
            for &(l2, reason, len) in &exits {
                let origin = if l2 { Origin::L2 } else { Origin::L1 };
                p.record(origin, reason, t, t + len);
                t += len + 1;
            }
            let top = p.heaviest::<5>();
            let mut all: Vec<_> = [Origin::L1, Origin::L2]
                .into_iter()
                .flat_map(|o| (0..REASONS as u16).map(move |r| (o, r)))
                .map(|(o, r)| p.line(o, r))
                .filter(|l| l.count > 0)
                .map(|l| l.cycles)
                .collect();
            all.sort_unstable_by(|a, b| b.cmp(a));
            let got: Vec<_> = top.iter().map(|&(_, _, l)| l.cycles).collect();
            prop_assert_eq!(&got[..], &all[..all.len().min(5)]);
            for &(o, r, l) in &top {
                prop_assert_eq!(p.line(o, r), l);
            }
        }
    }
}

/// The phases of a nested transition that L0 times when asked
/// (`exit_profile=phases`): L1's VMLAUNCH/VMRESUME and the reflection of an
/// exit of L2 to L1, in the order of KVM's nested.c.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// The instruction's checks and the VM-entry checks of VMCS12.
    EntryChecks,
    /// The VM-entry MSR-load area.
    EntryMsrLoads,
    /// L0's part of VMCS02: EPT02 root, MSR and I/O bitmaps, PDPTEs.
    EntryL0Part,
    /// VMPTRLD of VMCS02 (and its host state when new).
    EntryLoadVmcs02,
    /// VMCS02 prepared from VMCS12.
    EntryPrepare,
    /// Pointers, MSR-loaded fields, VPID flush.
    EntryFinish,
    /// Whose the exit is: L0's own, or does L1 want it.
    ExitDecide,
    /// VMCS02's guest state saved into VMCS12 (SDM 28.3).
    ExitSaveGuest,
    /// Exit information written (SDM 28.2) and the VM-exit MSR-store area.
    ExitInfo,
    /// VMPTRLD of VMCS01.
    ExitLoadVmcs01,
    /// L1's host state from VMCS12 (SDM 28.5), the VM-exit MSR-load area.
    ExitLoadHost,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 11] = [
        Phase::EntryChecks,
        Phase::EntryMsrLoads,
        Phase::EntryL0Part,
        Phase::EntryLoadVmcs02,
        Phase::EntryPrepare,
        Phase::EntryFinish,
        Phase::ExitDecide,
        Phase::ExitSaveGuest,
        Phase::ExitInfo,
        Phase::ExitLoadVmcs01,
        Phase::ExitLoadHost,
    ];

    /// Short name for the report.
    pub const fn name(self) -> &'static str {
        match self {
            Phase::EntryChecks => "entry checks",
            Phase::EntryMsrLoads => "entry MSR loads",
            Phase::EntryL0Part => "entry L0 part",
            Phase::EntryLoadVmcs02 => "entry VMPTRLD 02",
            Phase::EntryPrepare => "entry prepare VMCS02",
            Phase::EntryFinish => "entry finish",
            Phase::ExitDecide => "exit decide",
            Phase::ExitSaveGuest => "exit save guest state",
            Phase::ExitInfo => "exit info and MSR store",
            Phase::ExitLoadVmcs01 => "exit VMPTRLD 01",
            Phase::ExitLoadHost => "exit load L1 host state",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One CPU's phase timer: [`PhaseTimer::start`] at the start of a
/// transition, then [`PhaseTimer::mark`] at the end of each phase, which
/// charges the cycles since the previous mark (or the start) to it.
#[derive(Clone, Debug, Default)]
pub struct PhaseTimer {
    lines: [Line; Phase::ALL.len()],
    last: u64,
}

impl PhaseTimer {
    /// An empty timer.
    pub const fn new() -> Self {
        Self {
            lines: [Line::ZERO; Phase::ALL.len()],
            last: 0,
        }
    }

    /// A transition starts at TSC `now`.
    pub fn start(&mut self, now: u64) {
        self.last = now;
    }

    /// `phase` ended at TSC `now`.
    pub fn mark(&mut self, phase: Phase, now: u64) {
        let line = &mut self.lines[phase as usize];
        line.count += 1;
        line.cycles += now.saturating_sub(self.last);
        self.last = now;
    }

    /// The line of `phase`.
    pub fn line(&self, phase: Phase) -> Line {
        self.lines[phase as usize]
    }

    /// The phases timed at least once, in order.
    pub fn lines(&self) -> impl Iterator<Item = (Phase, Line)> + '_ {
        Phase::ALL
            .into_iter()
            .map(|p| (p, self.line(p)))
            .filter(|(_, l)| l.count > 0)
    }
}

#[cfg(test)]
mod phase_tests {
    use super::*;

    #[test]
    fn marks_charge_the_time_since_the_previous_mark() {
        let mut t = PhaseTimer::new();
        t.start(100);
        t.mark(Phase::EntryChecks, 130);
        t.mark(Phase::EntryPrepare, 200);
        t.start(1000);
        t.mark(Phase::EntryChecks, 1010);
        assert_eq!(t.line(Phase::EntryChecks), Line::new(2, 40));
        assert_eq!(t.line(Phase::EntryPrepare), Line::new(1, 70));
        let timed: Vec<_> = t.lines().map(|(p, _)| p).collect();
        assert_eq!(timed, [Phase::EntryChecks, Phase::EntryPrepare]);
    }

    #[test]
    fn a_clock_that_goes_back_charges_nothing() {
        let mut t = PhaseTimer::new();
        t.start(500);
        t.mark(Phase::ExitDecide, 400);
        assert_eq!(t.line(Phase::ExitDecide), Line::new(1, 0));
    }

    #[test]
    fn phases_are_listed_in_order_with_distinct_names() {
        for (i, p) in Phase::ALL.iter().enumerate() {
            assert_eq!(*p as usize, i);
        }
        let mut names: Vec<_> = Phase::ALL.iter().map(|p| p.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Phase::ALL.len());
    }
}
