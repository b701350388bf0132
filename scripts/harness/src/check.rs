//! Per-scenario checks that need more than "this substring appeared": they
//! read every serial line and may fail the run, or refuse to let it pass.
//! A scenario names its check in the table (`Scenario::check`); the judge
//! runs it (see `verdict.rs`). Pure logic, unit-tested on the host.

/// Which extra check a scenario runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    None,
    /// L0 prints `L0: region [0x<start>, 0x<end>)` (half-open) and the Linux
    /// guest's /init prints `LINUX: e820 [0x<start>, 0x<end>] <type>`
    /// (inclusive, as in /sys/firmware/memmap). No `System RAM` range may
    /// overlap L0's region; both the region and at least one usable range
    /// must have been seen before the run can pass.
    E820AvoidsL0Region,
    /// An LHV test run under L0 (`l0-lhv/<opt>/<n>cpu`) must print the same
    /// option counts (`CPU(n): LHV counts ...`) as its bare twin
    /// `lhv/<opt>/<n>cpu`. Compared once both runs are over (`twins.rs`);
    /// nothing to do line by line.
    LhvCountsMatchTwin,
    /// A fuzz run under L0 (`l0-fuzz/<name>`) must print the same outcome
    /// for every case as its bare twin `fuzz/<name>` (`fuzz.rs`), compared
    /// once both runs are over (`twins.rs`).
    FuzzMatchesTwin,
    /// The machine resets once (a guest triple fault under L0) and boots
    /// into L0 again: `L0 hypervisor ... starting` must appear twice.
    RebootsIntoL0,
    /// LHV's hostile-L1 suite (`hostile_l1.rs`): no case FAILs, a case
    /// SKIPs only if listed in [`HostileL1::skips`], the summary agrees
    /// with the case lines; with [`HostileL1::twin`], a run under L0 also
    /// passes every case its bare twin [`crate::hostile_l1::TWIN`] passed,
    /// with the same outcome.
    HostileL1(&'static HostileL1),
}

/// What [`Check::HostileL1`] allows and compares (behind a reference, to
/// keep [`Check`] small).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostileL1 {
    /// The cases that may SKIP.
    pub skips: &'static [&'static str],
    /// Compare with the bare twin.
    pub twin: bool,
}

/// The line L0 prints first at every boot.
pub const L0_START: &str = "L0 hypervisor ";

impl Check {
    /// Machine resets (after the power-on one) that the check expects.
    pub const fn resets_allowed(self) -> u32 {
        match self {
            Check::RebootsIntoL0 => 1,
            _ => 0,
        }
    }
}

/// A check's state during one run.
#[derive(Debug)]
pub struct Checker {
    kind: Check,
    region: Option<(u64, u64)>,
    /// Usable (inclusive) ranges seen so far.
    usable: Vec<(u64, u64)>,
    /// L0 boots seen.
    l0_boots: u32,
    /// The hostile-L1 suite's case lines so far.
    hostile_l1: crate::hostile_l1::Tally,
}

/// The type /sys/firmware/memmap gives usable RAM.
pub const USABLE: &str = "System RAM";

/// One `LINUX: e820` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E820Line {
    pub start: u64,
    /// Inclusive.
    pub end: u64,
    pub kind: String,
}

fn hex(s: &str) -> Option<u64> {
    let s = s.trim();
    let d = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    u64::from_str_radix(d, 16).ok()
}

/// Parses `... L0: region [0x<start>, 0x<end>)` into a half-open range.
pub fn parse_l0_region(line: &str) -> Option<(u64, u64)> {
    let rest = &line[line.find("L0: region [")? + "L0: region [".len()..];
    let (a, rest) = rest.split_once(',')?;
    let (b, _) = rest.split_once(')')?;
    let (a, b) = (hex(a)?, hex(b)?);
    (a < b).then_some((a, b))
}

/// Parses a guest's E820 line: Linux's /init prints
/// `... LINUX: e820 [0x<start>, 0x<end>] <type>` (inclusive end, the type as
/// /sys/firmware/memmap names it); LHV's probe prints
/// `... E820: [0x<start>, 0x<end>) type <n>` (half-open, the E820 number;
/// type 1 is usable RAM, reported as [`USABLE`]).
pub fn parse_e820(line: &str) -> Option<E820Line> {
    parse_linux_e820(line).or_else(|| parse_lhv_e820(line))
}

fn parse_lhv_e820(line: &str) -> Option<E820Line> {
    let rest = &line[line.find("E820: [")? + "E820: [".len()..];
    let (a, rest) = rest.split_once(',')?;
    let (b, kind) = rest.split_once(')')?;
    let (start, end) = (hex(a)?, hex(b)?);
    let n: u32 = kind.trim().strip_prefix("type ")?.trim().parse().ok()?;
    (start < end).then(|| E820Line {
        start,
        end: end - 1,
        kind: if n == 1 {
            USABLE.to_string()
        } else {
            format!("type {n}")
        },
    })
}

fn parse_linux_e820(line: &str) -> Option<E820Line> {
    let rest = &line[line.find("LINUX: e820 [")? + "LINUX: e820 [".len()..];
    let (a, rest) = rest.split_once(',')?;
    let (b, kind) = rest.split_once(']')?;
    let (start, end) = (hex(a)?, hex(b)?);
    (start <= end).then(|| E820Line {
        start,
        end,
        kind: kind.trim().to_string(),
    })
}

/// Whether the inclusive range `[s, e]` overlaps the half-open `[rs, re)`.
pub fn overlaps((s, e): (u64, u64), (rs, re): (u64, u64)) -> bool {
    s < re && e >= rs
}

impl Checker {
    pub fn new(kind: Check) -> Self {
        Checker {
            kind,
            region: None,
            usable: Vec::new(),
            l0_boots: 0,
            hostile_l1: crate::hostile_l1::Tally::default(),
        }
    }

    /// One serial line; `Some(reason)` fails the run at once.
    pub fn line(&mut self, line: &str) -> Option<String> {
        match self.kind {
            Check::None | Check::LhvCountsMatchTwin | Check::FuzzMatchesTwin => None,
            Check::HostileL1(h) => self.hostile_l1.line(line, h.skips),
            Check::RebootsIntoL0 => {
                if line.contains(L0_START) && line.contains(" starting") {
                    self.l0_boots += 1;
                }
                None
            }
            Check::E820AvoidsL0Region => {
                if let Some(r) = parse_l0_region(line) {
                    self.region = Some(r);
                    return self.usable.iter().find_map(|&u| self.clash(u));
                }
                if let Some(e) = parse_e820(line)
                    && e.kind == USABLE
                {
                    self.usable.push((e.start, e.end));
                    return self.clash((e.start, e.end));
                }
                None
            }
        }
    }

    fn clash(&self, u: (u64, u64)) -> Option<String> {
        let r = self.region?;
        overlaps(u, r).then(|| {
            format!(
                "the guest's E820 usable range [{:#x}, {:#x}] overlaps L0's region [{:#x}, {:#x})",
                u.0, u.1, r.0, r.1
            )
        })
    }

    /// Called once every pass marker has been seen: `Some(reason)` when the
    /// check cannot confirm the run.
    pub fn missing(&self) -> Option<String> {
        match self.kind {
            Check::None | Check::LhvCountsMatchTwin | Check::FuzzMatchesTwin => None,
            Check::HostileL1(_) => self.hostile_l1.missing(),
            Check::RebootsIntoL0 if self.l0_boots < 2 => Some(format!(
                "L0 booted {} time(s), expected twice (before and after the reset)",
                self.l0_boots
            )),
            Check::RebootsIntoL0 => None,
            Check::E820AvoidsL0Region if self.region.is_none() => {
                Some("L0 never printed its `L0: region [0x.., 0x..)` line".into())
            }
            Check::E820AvoidsL0Region if self.usable.is_empty() => {
                Some("the guest printed no usable E820 range".to_string())
            }
            Check::E820AvoidsL0Region => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reboot_check_counts_l0_boots() {
        let mut c = Checker::new(Check::RebootsIntoL0);
        assert_eq!(c.line("L0 hypervisor 0.1.0 starting"), None);
        assert!(c.missing().is_some());
        assert_eq!(c.line("L0 hypervisor 0.1.0 starting"), None);
        assert_eq!(c.missing(), None);
        assert_eq!(Check::RebootsIntoL0.resets_allowed(), 1);
        assert_eq!(Check::None.resets_allowed(), 0);
    }

    #[test]
    fn parses_the_l0_region_line() {
        assert_eq!(
            parse_l0_region("L0: region [0x1c000000, 0x20000000)"),
            Some((0x1c00_0000, 0x2000_0000))
        );
        assert_eq!(
            parse_l0_region("[cpu0] L0: region [0X100000,0x200000) (16 MiB)"),
            Some((0x10_0000, 0x20_0000))
        );
        assert_eq!(parse_l0_region("L0: region [0x200, 0x100)"), None);
        assert_eq!(parse_l0_region("L0: region [0x100, 0x200]"), None);
        assert_eq!(parse_l0_region("L0: region [100, 200)"), None);
        assert_eq!(parse_l0_region("L0 region [0x1, 0x2)"), None);
    }

    #[test]
    fn parses_e820_lines() {
        assert_eq!(
            parse_e820("LINUX: e820 [0x100000, 0x1fedffff] System RAM"),
            Some(E820Line {
                start: 0x10_0000,
                end: 0x1fed_ffff,
                kind: "System RAM".into()
            })
        );
        assert_eq!(
            parse_e820("LINUX: e820 [0xfffc0000, 0xffffffff] Reserved").map(|e| e.kind),
            Some("Reserved".into())
        );
        assert_eq!(parse_e820("LINUX: e820 [0x10, 0x0] System RAM"), None);
        assert_eq!(
            parse_e820("E820: [0x100000, 0x1be00000) type 1"),
            Some(E820Line {
                start: 0x100000,
                end: 0x1bdf_ffff,
                kind: USABLE.into()
            })
        );
        assert_eq!(
            parse_e820("E820: [0x1be00000, 0x1fe00000) type 2").map(|e| e.kind),
            Some("type 2".into())
        );
        assert_eq!(parse_e820("E820: [0x10, 0x10) type 1"), None);
        assert_eq!(parse_e820("LINUX: e820 [zz, 0x0] System RAM"), None);
        assert_eq!(parse_e820("LINUX: cpus=2"), None);
    }

    #[test]
    fn overlap_uses_inclusive_e820_and_half_open_region() {
        let r = (0x1000, 0x2000);
        assert!(!overlaps((0x0, 0xfff), r));
        assert!(overlaps((0x0, 0x1000), r));
        assert!(overlaps((0x1fff, 0x3000), r));
        assert!(!overlaps((0x2000, 0x3000), r));
        assert!(overlaps((0x0, 0xffff_ffff), r));
        assert!(overlaps((0x1800, 0x1800), r));
    }

    const GOOD: &str = "L0: region [0x1f000000, 0x20000000)
LINUX: cpus=2
LINUX: e820 [0x0, 0x9fbff] System RAM
LINUX: e820 [0x9fc00, 0x9ffff] Reserved
LINUX: e820 [0x100000, 0x1effffff] System RAM
LINUX: e820 [0x1f000000, 0x1fffffff] Reserved
LINUX: init reached";

    fn run(c: &mut Checker, log: &str) -> Option<String> {
        log.lines().find_map(|l| c.line(l))
    }

    #[test]
    fn a_map_without_l0s_region_passes() {
        let mut c = Checker::new(Check::E820AvoidsL0Region);
        assert_eq!(run(&mut c, GOOD), None);
        assert_eq!(c.missing(), None);
    }

    #[test]
    fn usable_ram_over_l0s_region_fails() {
        let mut c = Checker::new(Check::E820AvoidsL0Region);
        let bad = GOOD.replace("0x1effffff] System RAM", "0x1fffffff] System RAM");
        let why = run(&mut c, &bad).unwrap();
        assert!(why.contains("[0x100000, 0x1fffffff]"), "{why}");
        assert!(why.contains("[0x1f000000, 0x20000000)"), "{why}");
    }

    #[test]
    fn a_region_printed_after_the_map_is_still_checked() {
        let mut c = Checker::new(Check::E820AvoidsL0Region);
        assert_eq!(
            c.line("LINUX: e820 [0x100000, 0x1fffffff] System RAM"),
            None
        );
        assert!(c.line("L0: region [0x1f000000, 0x20000000)").is_some());
    }

    #[test]
    fn reserved_ranges_may_cover_the_region() {
        let mut c = Checker::new(Check::E820AvoidsL0Region);
        assert_eq!(c.line("L0: region [0x1000, 0x2000)"), None);
        assert_eq!(c.line("LINUX: e820 [0x0, 0xffffffff] Reserved"), None);
        // Only reserved ranges: nothing usable seen yet.
        assert!(c.missing().unwrap().contains("no usable"));
    }

    #[test]
    fn missing_region_or_map_is_reported() {
        let mut c = Checker::new(Check::E820AvoidsL0Region);
        assert!(c.missing().unwrap().contains("L0 never printed"));
        c.line("LINUX: e820 [0x0, 0x9fbff] System RAM");
        assert!(c.missing().unwrap().contains("L0 never printed"));
        let mut c = Checker::new(Check::E820AvoidsL0Region);
        c.line("L0: region [0x1000, 0x2000)");
        assert!(c.missing().unwrap().contains("no usable"));
    }

    #[test]
    fn no_check_never_objects() {
        let mut c = Checker::new(Check::None);
        assert_eq!(
            run(
                &mut c,
                "L0: region [0x0, 0x1000)\nLINUX: e820 [0x0, 0xfff] System RAM"
            ),
            None
        );
        assert_eq!(c.missing(), None);
    }
}
