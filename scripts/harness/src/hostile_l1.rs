//! LHV's hostile-L1 suite (`mode=hostile-l1`, lhv/src/hostile_l1/): the
//! per-case markers and the summary, judged line by line, and the
//! comparison of a run under L0 with its bare twin.
//!
//! Each case prints `HOSTILE-L1: <case> PASS (<outcome>)`, `HOSTILE-L1:
//! <case> SKIP <why>` or `HOSTILE-L1: <case> FAIL <what>`, and the run ends
//! with `HOSTILE-L1 SUMMARY passed=N failed=F skipped=K`. A FAIL fails the
//! run at once, and so does a SKIP of a case the scenario does not declare
//! (`Check::HostileL1 { skips }`); the summary must agree with the case
//! lines. Under L0, every case that passed on bare Bochs must pass with the
//! same outcome (the bare run shows the hardware's answer).

use crate::runner::Status;

/// The twin every `l0-hostile-l1...` scenario is compared with.
pub const TWIN: &str = "hostile-l1";

/// How one case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseLine {
    Pass { case: String, outcome: String },
    Skip { case: String, why: String },
    Fail { case: String, what: String },
}

const PREFIX: &str = "HOSTILE-L1: ";
const SUMMARY: &str = "HOSTILE-L1 SUMMARY ";

/// Parses a case line.
pub fn parse_case(line: &str) -> Option<CaseLine> {
    let rest = &line[line.find(PREFIX)? + PREFIX.len()..];
    let (case, rest) = rest.split_once(' ')?;
    let well_formed = !case.is_empty()
        && case
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !well_formed {
        return None;
    }
    let case = case.to_string();
    let (word, tail) = rest.split_once(' ').unwrap_or((rest, ""));
    let tail = tail.trim().to_string();
    match word {
        "PASS" => Some(CaseLine::Pass {
            case,
            outcome: tail,
        }),
        "SKIP" => Some(CaseLine::Skip { case, why: tail }),
        "FAIL" => Some(CaseLine::Fail { case, what: tail }),
        _ => None,
    }
}

/// `passed`, `failed`, `skipped` of the summary line.
pub fn parse_summary(line: &str) -> Option<(u32, u32, u32)> {
    let rest = &line[line.find(SUMMARY)? + SUMMARY.len()..];
    let mut v = [None; 3];
    for w in rest.split_whitespace() {
        let (k, n) = w.split_once('=')?;
        let i = ["passed", "failed", "skipped"]
            .iter()
            .position(|x| *x == k)?;
        v[i] = n.parse().ok();
    }
    Some((v[0]?, v[1]?, v[2]?))
}

/// The state of one run's judging.
#[derive(Debug, Default)]
pub struct Tally {
    passed: u32,
    skipped: u32,
    summary: Option<(u32, u32, u32)>,
}

impl Tally {
    /// One serial line; `Some(reason)` fails the run.
    pub fn line(&mut self, line: &str, skips: &[&str]) -> Option<String> {
        if let Some(s) = parse_summary(line) {
            self.summary = Some(s);
            return None;
        }
        match parse_case(line)? {
            CaseLine::Pass { .. } => self.passed += 1,
            CaseLine::Skip { case, why } => {
                if !skips.contains(&case.as_str()) {
                    return Some(format!(
                        "hostile-l1 case {case} skipped ({why}), which this scenario does not allow"
                    ));
                }
                self.skipped += 1;
            }
            CaseLine::Fail { case, what } => {
                return Some(format!("hostile-l1 case {case} failed: {what}"));
            }
        }
        None
    }

    /// Once the pass markers are in: `Some(reason)` unless the summary
    /// agrees with the case lines.
    pub fn missing(&self) -> Option<String> {
        let Some((p, f, s)) = self.summary else {
            return Some("no `HOSTILE-L1 SUMMARY` line".into());
        };
        if f != 0 || p != self.passed || s != self.skipped || p == 0 {
            return Some(format!(
                "HOSTILE-L1 SUMMARY passed={p} failed={f} skipped={s}, but the case lines say {} passed, {} skipped",
                self.passed, self.skipped
            ));
        }
        None
    }
}

/// The case lines of a log.
pub fn cases(log: &str) -> Vec<CaseLine> {
    log.lines().filter_map(parse_case).collect()
}

/// `Err(reason)` unless every case that passed bare passed under L0 with
/// the same outcome.
pub fn compare(bare: &[CaseLine], l0: &[CaseLine]) -> Result<(), String> {
    let mut any = false;
    for b in bare {
        let CaseLine::Pass { case, outcome } = b else {
            continue;
        };
        any = true;
        let got = l0.iter().find(|c| match c {
            CaseLine::Pass { case: n, .. }
            | CaseLine::Skip { case: n, .. }
            | CaseLine::Fail { case: n, .. } => n == case,
        });
        match got {
            Some(CaseLine::Pass { outcome: o, .. }) if o == outcome => {}
            Some(other) => {
                return Err(format!(
                    "hostile-l1 case {case}: {outcome} on bare Bochs ({TWIN}), but {other:?} under L0"
                ));
            }
            None => {
                return Err(format!(
                    "hostile-l1 case {case} passed on bare Bochs ({TWIN}) but did not run under L0"
                ));
            }
        }
    }
    if any {
        Ok(())
    } else {
        Err(format!("the bare twin {TWIN} passed no case"))
    }
}

/// The verdict of an `l0-hostile-l1...` run against its bare twin.
pub fn judge(twin: &str, twin_status: &Status, twin_log: &str, run_log: &str) -> Status {
    if *twin_status != Status::Pass {
        return Status::Fail(format!(
            "its bare twin {twin} did not pass, so the outcomes cannot be compared"
        ));
    }
    match compare(&cases(twin_log), &cases(run_log)) {
        Ok(()) => Status::Pass,
        Err(why) => Status::Fail(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKIPS: &[&str] = &["ept12-maps-l0-region"];

    #[test]
    fn parses_the_three_kinds_and_the_summary() {
        assert_eq!(
            parse_case(
                "HOSTILE-L1: msr-load-vmx-basic PASS (entry failure exit 34 qualification 0x2)"
            ),
            Some(CaseLine::Pass {
                case: "msr-load-vmx-basic".into(),
                outcome: "(entry failure exit 34 qualification 0x2)".into()
            })
        );
        assert_eq!(
            parse_case("[x] HOSTILE-L1: a-b SKIP no L0 (bare)"),
            Some(CaseLine::Skip {
                case: "a-b".into(),
                why: "no L0 (bare)".into()
            })
        );
        assert!(matches!(
            parse_case("HOSTILE-L1: a FAIL expected x, got y"),
            Some(CaseLine::Fail { .. })
        ));
        assert_eq!(parse_case("HOSTILE-L1: mode=hostile-l1"), None);
        assert_eq!(parse_case("HOSTILE-L1: 2 CPUs online"), None);
        assert_eq!(
            parse_summary("HOSTILE-L1 SUMMARY passed=19 failed=0 skipped=2"),
            Some((19, 0, 2))
        );
        assert_eq!(parse_summary("HOSTILE-L1 SUMMARY passed=1"), None);
    }

    #[test]
    fn undeclared_skips_and_failures_fail_at_once() {
        let mut t = Tally::default();
        assert_eq!(
            t.line("HOSTILE-L1: ept12-maps-l0-region SKIP no L0 (bare)", SKIPS),
            None
        );
        assert!(
            t.line("HOSTILE-L1: nmi-storm SKIP one CPU", SKIPS)
                .is_some()
        );
        assert!(
            t.line("HOSTILE-L1: x FAIL expected a, got b", SKIPS)
                .is_some()
        );
    }

    #[test]
    fn the_summary_must_match_the_lines() {
        let mut t = Tally::default();
        assert!(t.missing().is_some());
        t.line("HOSTILE-L1: a PASS (success)", SKIPS);
        t.line("HOSTILE-L1: ept12-maps-l0-region SKIP no L0 (bare)", SKIPS);
        t.line("HOSTILE-L1 SUMMARY passed=1 failed=0 skipped=1", SKIPS);
        assert_eq!(t.missing(), None);
        t.line("HOSTILE-L1 SUMMARY passed=2 failed=0 skipped=1", SKIPS);
        assert!(t.missing().is_some());
    }

    #[test]
    fn under_l0_every_bare_pass_passes_alike() {
        let bare = cases(
            "HOSTILE-L1: a PASS (success)\nHOSTILE-L1: b SKIP no L0 (bare)\nHOSTILE-L1: c PASS (VM exit 0x1e qualification 0x800008)\n",
        );
        let good = cases(
            "HOSTILE-L1: a PASS (success)\nHOSTILE-L1: b PASS (success)\nHOSTILE-L1: c PASS (VM exit 0x1e qualification 0x800008)\n",
        );
        assert_eq!(compare(&bare, &good), Ok(()));
        let differs = cases(
            "HOSTILE-L1: a PASS (success)\nHOSTILE-L1: c PASS (VM exit 0x1f qualification 0x0)\n",
        );
        assert!(compare(&bare, &differs).unwrap_err().contains("case c"));
        let lacks = cases("HOSTILE-L1: a PASS (success)\n");
        assert!(compare(&bare, &lacks).unwrap_err().contains("did not run"));
        assert!(compare(&[], &good).is_err());
        assert_eq!(
            judge(TWIN, &Status::Fail("x".into()), "", ""),
            Status::Fail(format!(
                "its bare twin {TWIN} did not pass, so the outcomes cannot be compared"
            ))
        );
    }
}
