//! The differential VMCS fuzzer's judge and the `fuzz` subcommand: LHV's
//! `mode=fuzz` prints `FUZZ <case> <outcome>` per case, `FUZZ profile ...`
//! (what it may mutate), `FUZZ digest <hex> cases=<n>` and `FUZZ done`. The
//! same seed must give the same lines on bare Bochs and under L0; every
//! case whose line differs is a divergence.
//!
//! Scenarios `l0-fuzz/<name>` are compared with their bare twins
//! `fuzz/<name>` (see `twins.rs`); `harness fuzz --seed N --cases N` runs
//! an ad-hoc pair, prints every divergence and re-runs up to `--dump`
//! of them alone with `fuzz_dump=<case>` on both sides, showing the
//! mutated VMCS12 fields (`CPU(0): VMCS12 <encoding> <name> = <value>`).

use std::collections::BTreeMap;
use std::process::ExitCode;

use crate::runner::{self, Row, Status};
use crate::scenario::{Boot, Check, Guest, Scenario};
use crate::session::Stream;

/// What one `mode=fuzz` run printed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FuzzLog {
    /// The `FUZZ profile` line's body.
    pub profile: Option<String>,
    /// Case -> outcome.
    pub outcomes: BTreeMap<u64, String>,
    /// The digest and its case count.
    pub digest: Option<(String, u64)>,
    /// `FUZZ done` was seen.
    pub done: bool,
    /// `CPU(n): VMCS12 ...` and `FUZZ msr ...` lines (a `fuzz_dump` run).
    pub dump: Vec<String>,
    /// Frames in L0's pool after the first case and after the run (L0's
    /// Stats, under L0 only).
    pub pool: (Option<u64>, Option<u64>),
}

fn pool_value(s: &str) -> Option<u64> {
    let v = &s[s.find("pool=")? + 5..];
    v.split_whitespace().next()?.parse().ok()
}

/// Strips a `[name] ` prefix or anything before `FUZZ`/`CPU(`.
fn tail<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|at| &line[at..])
}

/// Parses a serial log.
pub fn parse(log: &str) -> FuzzLog {
    let mut f = FuzzLog::default();
    // Between `FUZZ case <n> writes:` and the case's outcome line: LHV's
    // dump (L0 may print VMCS12 dumps of its own later, when it gives up).
    let mut in_writes = false;
    for line in log.lines() {
        let line = line.trim_end();
        if let Some(t) = tail(line, "CPU(").filter(|t| t.contains("): VMCS12 ")) {
            if in_writes {
                f.dump.push(t.to_string());
            }
            continue;
        }
        let Some(t) = tail(line, "FUZZ ") else {
            continue;
        };
        let rest = &t[5..];
        if rest.starts_with("case ") && rest.ends_with(" writes:") {
            in_writes = true;
            continue;
        }
        if !rest.starts_with("msr ") {
            in_writes = false;
        }
        if rest.starts_with("L0: pool=") {
            f.pool.0 = pool_value(rest);
        } else if rest.starts_with("L0: alive after the suite") {
            f.pool.1 = pool_value(rest);
        } else if let Some(p) = rest.strip_prefix("profile ") {
            f.profile = Some(p.to_string());
        } else if rest == "done" {
            f.done = true;
        } else if let Some(d) = rest.strip_prefix("digest ") {
            let mut w = d.split_whitespace();
            let hex = w.next().unwrap_or("").to_string();
            let n = w
                .next()
                .and_then(|c| c.strip_prefix("cases="))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            f.digest = Some((hex, n));
        } else if rest.starts_with("msr ") {
            f.dump.push(t.to_string());
        } else if let Some((case, outcome)) = rest.split_once(' ')
            && let Ok(case) = case.parse::<u64>()
        {
            f.outcomes.insert(case, outcome.to_string());
        }
    }
    f
}

/// One case whose outcomes differ (`None`: the side printed no line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    pub case: u64,
    pub bare: Option<String>,
    pub l0: Option<String>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |o: &Option<String>| o.clone().unwrap_or_else(|| "(no line)".into());
        write!(
            f,
            "case {}: bare `{}`, under L0 `{}`",
            self.case,
            s(&self.bare),
            s(&self.l0)
        )
    }
}

/// The comparison of a bare run with an L0 run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub divergences: Vec<Divergence>,
    /// Why the runs cannot be compared at all, if so.
    pub incomparable: Option<String>,
    /// Cases compared.
    pub cases: u64,
}

/// The number of mutations of a case line (` m=<n>`, 1 without it).
fn mutations(outcome: &str) -> u32 {
    outcome
        .rsplit_once(" m=")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(1)
}

/// What of an outcome the SDM fixes when several checks may fail: which
/// one an implementation reports is its choice (SDM 26.2 "These checks may
/// be performed in any order", and likewise among the guest-state checks,
/// whose exit qualification says which kind failed). So VMfailValid 7 and
/// 8 are one class, and so is every qualification of exit reason 33.
fn class(outcome: &str) -> String {
    let o = outcome.rsplit_once(" m=").map_or(outcome, |(o, _)| o);
    let (head, refused) = match o.split_once(" refused=") {
        Some((h, r)) => (h, format!(" refused={r}")),
        None => (o, String::new()),
    };
    let head = match head {
        "vmfail-valid 7" | "vmfail-valid 8" => "vmfail-valid 7|8",
        h if h.starts_with("exit 0x80000021 ") => "exit 0x80000021",
        h => h,
    };
    format!("{head}{refused}")
}

/// Whether two outcome lines agree: exactly, or, for a case of several
/// mutations on both sides, in [`class`].
pub fn agree(bare: &str, l0: &str) -> bool {
    bare == l0 || {
        let m = mutations(bare);
        m > 1 && m == mutations(l0) && class(bare) == class(l0)
    }
}

/// Compares two runs case by case.
pub fn compare(bare: &FuzzLog, l0: &FuzzLog) -> Report {
    let mut r = Report {
        divergences: Vec::new(),
        incomparable: None,
        cases: 0,
    };
    if bare.profile != l0.profile {
        r.incomparable = Some(format!(
            "the fuzz profiles differ (the mutations would too): bare `{}`, under L0 `{}`",
            bare.profile.as_deref().unwrap_or("none"),
            l0.profile.as_deref().unwrap_or("none")
        ));
        return r;
    }
    if bare.outcomes.is_empty() {
        r.incomparable = Some("the bare run printed no FUZZ case line".into());
        return r;
    }
    let cases: std::collections::BTreeSet<u64> = bare
        .outcomes
        .keys()
        .chain(l0.outcomes.keys())
        .copied()
        .collect();
    r.cases = cases.len() as u64;
    for case in cases {
        let (b, l) = (bare.outcomes.get(&case), l0.outcomes.get(&case));
        let same = match (b, l) {
            (Some(b), Some(l)) => agree(b, l),
            _ => false,
        };
        if !same {
            r.divergences.push(Divergence {
                case,
                bare: b.cloned(),
                l0: l.cloned(),
            });
        }
    }
    r
}

/// Most divergences a verdict names.
const SHOWN: usize = 5;

/// The verdict of `l0-fuzz/...` against its bare twin.
pub fn judge(twin: &str, twin_status: &Status, twin_log: &str, run_log: &str) -> Status {
    if *twin_status != Status::Pass {
        return Status::Fail(format!(
            "its bare twin {twin} did not pass, so the outcomes cannot be compared"
        ));
    }
    let (bare, l0) = (parse(twin_log), parse(run_log));
    let r = compare(&bare, &l0);
    if let Some(why) = r.incomparable {
        return Status::Fail(why);
    }
    let complete = l0.digest.is_some() && l0.done;
    if let (Some(first), Some(end)) = l0.pool
        && end < first
    {
        return Status::Fail(format!(
            "L0's pool shrank from {first} frames after the first case to {end} after the run (a leak)"
        ));
    }
    if r.divergences.is_empty() {
        return if complete {
            Status::Pass
        } else {
            Status::Fail("the L0 run printed no `FUZZ digest` and `FUZZ done`".into())
        };
    }
    let shown: Vec<String> = r
        .divergences
        .iter()
        .take(SHOWN)
        .map(ToString::to_string)
        .collect();
    Status::Fail(format!(
        "{} of {} cases diverge from {twin}{}: {}{}",
        r.divergences.len(),
        r.cases,
        if complete {
            ""
        } else {
            " (the L0 run ended early)"
        },
        shown.join("; "),
        if r.divergences.len() > SHOWN {
            "; ..."
        } else {
            ""
        }
    ))
}

/// Pass markers of a bare fuzz run.
pub const BARE_PASS: &[&str] = &[
    "FUZZ L0: none (bare)",
    "FUZZ profile",
    "FUZZ digest",
    "FUZZ done",
];
/// Pass markers of a fuzz run under L0.
pub const L0_PASS: &[&str] = &[
    "L0: booting the guest",
    "FUZZ L0: present",
    "FUZZ profile",
    "FUZZ digest",
    "FUZZ L0: alive after the suite",
    "FUZZ done",
];

/// LHV's `mode=fuzz` on bare Bochs, 1 CPU (the twin of [`under_l0`]).
pub const fn bare(name: &'static str, lhv_args: &'static str, timeout_s: u64) -> Scenario {
    Scenario {
        name,
        cpus: 1,
        lhv_args,
        pass: BARE_PASS,
        expect_exit: true,
        timeout_s,
        ..crate::scenario::BOCHS_LHV
    }
}

/// The same under L0, compared with `fuzz/<name>` case by case.
pub const fn under_l0(name: &'static str, lhv_args: &'static str, timeout_s: u64) -> Scenario {
    Scenario {
        name,
        cpus: 1,
        boot: Boot::L0,
        guest: Guest::Lhv,
        lhv_args,
        pass: L0_PASS,
        expect_exit: true,
        timeout_s,
        check: Check::FuzzMatchesTwin,
        ..crate::scenario::BOCHS_L0
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn read(row: &Row) -> String {
    row.log
        .as_deref()
        .and_then(|p| std::fs::read(p).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Runs a pair of scenarios (bare first) and returns their rows and logs.
fn run_pair(bare: Scenario, l0: Scenario, verbose: bool) -> Vec<(Row, String)> {
    let stream = if verbose {
        Stream::Prefixed
    } else {
        Stream::Quiet
    };
    let tasks = crate::plan::tasks(&[bare, l0], stream, verbose);
    runner::run_all(tasks, runner::cores())
        .into_iter()
        .map(|r| {
            let log = read(&r);
            (r, log)
        })
        .collect()
}

/// `harness fuzz`: both runs, the divergences, and the dumps of the first.
pub fn run(o: &crate::cli::FuzzOpts) -> ExitCode {
    let args = leak(format!("mode=fuzz seed={} cases={}", o.seed, o.cases));
    // Bochs runs about 80 cases a second bare, 6 to 11 under L0.
    let timeout = 120 + o.cases / 2;
    let name = leak(format!("fuzz/seed{}", o.seed));
    let l0_name = leak(format!("l0-fuzz/seed{}", o.seed));
    crate::paths::progress(
        "fuzz",
        &format!(
            "LHV mode=fuzz seed={} cases={} on bare Bochs and under L0",
            o.seed, o.cases
        ),
    );
    let rows = run_pair(
        bare(name, args, timeout),
        under_l0(l0_name, args, timeout),
        o.verbose,
    );
    println!();
    let plain: Vec<Row> = rows.iter().map(|(r, _)| r.clone()).collect();
    print!("{}", runner::table(&plain));
    let (b, l) = (parse(&rows[0].1), parse(&rows[1].1));
    let r = compare(&b, &l);
    let l0_ok = rows[1].0.status == Status::Pass;
    if let Some(why) = &r.incomparable {
        println!("FAIL fuzz: {why}");
        return ExitCode::FAILURE;
    }
    println!(
        "fuzz seed={} cases={}: {} compared, {} divergences; digests bare {} under L0 {}",
        o.seed,
        o.cases,
        r.cases,
        r.divergences.len(),
        b.digest.as_ref().map_or("none", |d| d.0.as_str()),
        l.digest.as_ref().map_or("none", |d| d.0.as_str()),
    );
    if !l0_ok {
        println!("L0 run: {}", runner::finish_line(&rows[1].0));
    }
    for d in &r.divergences {
        println!("DIVERGENCE {d}");
    }
    for d in r.divergences.iter().take(o.dump) {
        let args = leak(format!(
            "mode=fuzz seed={} cases={} fuzz_dump={}",
            o.seed, o.cases, d.case
        ));
        let rows = run_pair(
            bare(leak(format!("fuzz/dump{}", d.case)), args, 120),
            under_l0(leak(format!("l0-fuzz/dump{}", d.case)), args, 300),
            o.verbose,
        );
        println!("case {} (seed {}): the mutated fields", d.case, o.seed);
        let (bd, ld) = (parse(&rows[0].1), parse(&rows[1].1));
        print!("{}", dump_table(&bd, &ld));
    }
    if r.divergences.is_empty() && l0_ok {
        println!("PASS fuzz: 0 divergences, L0 alive");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The dump lines of both sides, marked where they differ.
pub fn dump_table(bare: &FuzzLog, l0: &FuzzLog) -> String {
    let mut out = String::new();
    let n = bare.dump.len().max(l0.dump.len());
    for i in 0..n {
        let (b, l) = (bare.dump.get(i), l0.dump.get(i));
        if b == l {
            out += &format!("  {}\n", b.map_or("", String::as_str));
        } else {
            out += &format!(
                "  bare:  {}\n  L0:    {}\n",
                b.map_or("(none)", String::as_str),
                l.map_or("(none)", String::as_str)
            );
        }
    }
    for (side, f) in [("bare", bare), ("L0", l0)] {
        if let Some(o) = f.outcomes.values().next() {
            out += &format!("  outcome {side}: {o}\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARE: &str = "FUZZ L0: none (bare)
FUZZ profile pin=00000016/0000007f maxphys=40
FUZZ 0 l2-ran
FUZZ 1 vmfail-valid 7
FUZZ 2 exit 0x80000021 q=0x0
FUZZ digest 0123 cases=3 (10 cycles)
FUZZ done
";

    fn l0(lines: &str) -> String {
        format!(
            "[l0-fuzz/quick] FUZZ L0: present\nFUZZ profile pin=00000016/0000007f maxphys=40\nFUZZ L0: pool=100 after the first case\n{lines}FUZZ digest 4567 cases=3\nFUZZ L0: alive after the suite, exits=5 cpus=1 pool=100\nFUZZ done\n"
        )
    }

    #[test]
    fn parses_cases_profile_digest_and_dumps() {
        let f = parse(&format!(
            "{BARE}FUZZ case 3 writes:\nCPU(0): VMCS12 0x4016 VmEntryInterruptionInfo = 0x80000306\nFUZZ msr entry-load[0] = 0x174 0x0 0x5\nFUZZ 3 l2-ran\nCPU(0): VMCS12 0x4016 VmEntryInterruptionInfo = 0x0\n"
        ));
        assert_eq!(f.outcomes.len(), 4);
        assert_eq!(f.outcomes[&2], "exit 0x80000021 q=0x0");
        assert_eq!(f.digest, Some(("0123".into(), 3)));
        assert!(f.done);
        assert_eq!(
            f.profile.as_deref(),
            Some("pin=00000016/0000007f maxphys=40")
        );
        assert_eq!(f.dump.len(), 2);
    }

    #[test]
    fn equal_outcomes_pass() {
        let run = l0("FUZZ 0 l2-ran\nFUZZ 1 vmfail-valid 7\nFUZZ 2 exit 0x80000021 q=0x0\n");
        assert_eq!(judge("fuzz/quick", &Status::Pass, BARE, &run), Status::Pass);
    }

    #[test]
    fn a_shrinking_pool_fails() {
        let run = l0("FUZZ 0 l2-ran\nFUZZ 1 vmfail-valid 7\nFUZZ 2 exit 0x80000021 q=0x0\n");
        assert_eq!(parse(&run).pool, (Some(100), Some(100)));
        let run = run.replace("cpus=1 pool=100", "cpus=1 pool=97");
        assert!(matches!(judge("t", &Status::Pass, BARE, &run),
            Status::Fail(w) if w.contains("shrank from 100 frames after the first case to 97")));
    }

    #[test]
    fn a_divergence_names_the_case_and_both_outcomes() {
        let run = l0("FUZZ 0 l2-ran\nFUZZ 1 vmfail-valid 8\nFUZZ 2 exit 0x80000021 q=0x0\n");
        let Status::Fail(why) = judge("fuzz/quick", &Status::Pass, BARE, &run) else {
            panic!("must fail")
        };
        assert_eq!(
            why,
            "1 of 3 cases diverge from fuzz/quick: case 1: bare `vmfail-valid 7`, under L0 `vmfail-valid 8`"
        );
    }

    #[test]
    fn missing_cases_profiles_and_crashes_fail() {
        let run = l0("FUZZ 0 l2-ran\nFUZZ 1 vmfail-valid 7\n");
        assert!(matches!(judge("t", &Status::Pass, BARE, &run),
            Status::Fail(w) if w.contains("case 2: bare `exit 0x80000021 q=0x0`, under L0 `(no line)`")));
        let run = l0("FUZZ 0 l2-ran\n").replace("maxphys=40", "maxphys=39");
        assert!(matches!(judge("t", &Status::Pass, BARE, &run),
            Status::Fail(w) if w.contains("profiles differ")));
        let run = "FUZZ profile pin=00000016/0000007f maxphys=40\nFUZZ 0 l2-ran\nPANIC on CPU(0)";
        assert!(matches!(judge("t", &Status::Pass, BARE, run),
            Status::Fail(w) if w.contains("diverge") ));
        assert!(matches!(judge("t", &Status::Fail("x".into()), BARE, run),
            Status::Fail(w) if w.contains("did not pass")));
    }

    #[test]
    fn every_l0_fuzz_scenario_has_a_bare_twin_with_the_same_arguments() {
        let nested: Vec<_> = crate::scenario::SCENARIOS
            .iter()
            .filter(|s| s.check == Check::FuzzMatchesTwin)
            .collect();
        assert!(nested.len() >= 5);
        let mut full_cases = 0;
        for s in nested {
            let twin = crate::scenario::find(&crate::twins::twin_name(s).unwrap()).expect(s.name);
            assert_eq!(
                (twin.lhv_args, twin.cpus, twin.boot, twin.tier),
                (s.lhv_args, s.cpus, Boot::Lhv, s.tier),
                "{}",
                s.name
            );
            if s.tier == crate::scenario::Tier::Full {
                let n: u64 = s.lhv_args.rsplit_once("cases=").unwrap().1.parse().unwrap();
                full_cases += n;
            }
        }
        assert_eq!(full_cases, 100_000, "the Full tier's 100,000 cases");
        assert_eq!(
            crate::scenario::find("l0-fuzz/quick").unwrap().tier,
            crate::scenario::Tier::Default
        );
    }

    #[test]
    fn several_mutations_compare_the_kind_of_failure_only() {
        assert!(agree("vmfail-valid 7 m=2", "vmfail-valid 8 m=2"));
        assert!(agree(
            "exit 0x80000021 q=0x4 m=3",
            "exit 0x80000021 q=0x0 m=3"
        ));
        assert!(
            !agree("vmfail-valid 7", "vmfail-valid 8"),
            "one mutation: exact"
        );
        assert!(!agree("exit 0x80000021 q=0x4", "exit 0x80000021 q=0x0"));
        assert!(!agree("exit 0x80000021 q=0x4 m=2", "l2-ran m=2"));
        assert!(!agree(
            "exit 0x80000022 q=0x1 m=2",
            "exit 0x80000022 q=0x2 m=2"
        ));
        assert!(!agree("vmfail-valid 7 m=2", "vmfail-valid 7 m=3"));
    }

    #[test]
    fn dump_table_marks_differing_fields() {
        let b = parse(
            "FUZZ case 3 writes:\nCPU(0): VMCS12 0x4002 PrimaryProcBasedVmExecControls = 0x1\nFUZZ 3 l2-ran\n",
        );
        let l = parse(
            "FUZZ case 3 writes:\nCPU(0): VMCS12 0x4002 PrimaryProcBasedVmExecControls = 0x3\nFUZZ 3 vmfail-valid 7\n",
        );
        let t = dump_table(&b, &l);
        assert!(t.contains("bare:  CPU(0): VMCS12 0x4002 PrimaryProcBasedVmExecControls = 0x1"));
        assert!(t.contains("L0:    CPU(0): VMCS12 0x4002 PrimaryProcBasedVmExecControls = 0x3"));
        assert!(t.contains("outcome L0: vmfail-valid 7"));
    }
}
