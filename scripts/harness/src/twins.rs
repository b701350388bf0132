//! LHV runs under L0 and their bare twins: `l0-lhv/<opt>/<n>cpu` must print
//! the same option counts (`CPU(n): LHV counts A=1 B=2 ... TIMER=.. PIT=..`)
//! as `lhv/<opt>/<n>cpu`, since for a given option set and `iters` they do
//! not depend on timing. TIMER and PIT count interrupts, which do, so they
//! are left out.
//!
//! The design: whoever runs a scenario with a twin also runs the twin, in
//! the same invocation (the twins go first, so they are done early), and
//! once both are over [`cross_check`] compares the two serial logs. No
//! reference counts are kept anywhere: they can never go stale.

use std::collections::BTreeMap;

use crate::runner::{Row, Status};
use crate::scenario::{self, Check, Scenario};

/// The bare twin's name, for scenarios with [`Check::LhvCountsMatchTwin`]
/// or [`Check::FuzzMatchesTwin`]: the name without its `l0-` prefixes
/// (`l0-lhv/0x4/2cpu` and `l0-l0-lhv/0x4/2cpu` are twins of `lhv/0x4/2cpu`).
pub fn twin_name(s: &Scenario) -> Option<String> {
    if let Check::HostileL1(h) = s.check {
        return h.twin.then(|| crate::hostile_l1::TWIN.to_string());
    }
    matches!(s.check, Check::LhvCountsMatchTwin | Check::FuzzMatchesTwin)
        .then(|| s.name.trim_start_matches("l0-").to_string())
}

/// `selected` with the twins it needs and lacks, those first (in order).
pub fn with_twins(selected: Vec<Scenario>) -> Result<Vec<Scenario>, String> {
    let mut twins: Vec<Scenario> = Vec::new();
    for s in &selected {
        let Some(t) = twin_name(s) else { continue };
        let twin =
            scenario::find(&t).ok_or_else(|| format!("{}: no twin scenario `{t}`", s.name))?;
        let have = |v: &[Scenario]| v.iter().any(|x| x.name == twin.name);
        if !have(&selected) && !have(&twins) {
            twins.push(twin);
        }
    }
    twins.extend(selected);
    Ok(twins)
}

/// Option counts per CPU: CPU number -> (option, count) in printed order.
pub type Counts = BTreeMap<u32, Vec<(String, u64)>>;

/// Counters that depend on timing, not on the options.
const TIMING: &[&str] = &["TIMER", "PIT"];

/// The `CPU(n): LHV counts ...` lines of a serial log (the last per CPU).
pub fn counts(log: &str) -> Counts {
    let mut out = Counts::new();
    for line in log.lines() {
        let Some(at) = line.find("CPU(") else {
            continue;
        };
        let rest = &line[at + 4..];
        let Some((cpu, rest)) = rest.split_once("): LHV counts") else {
            continue;
        };
        let Ok(cpu) = cpu.parse::<u32>() else {
            continue;
        };
        let pairs = rest
            .split_whitespace()
            .filter_map(|w| {
                let (k, v) = w.split_once('=')?;
                Some((k.to_string(), v.parse::<u64>().ok()?))
            })
            .filter(|(k, _)| !TIMING.contains(&k.as_str()))
            .collect();
        out.insert(cpu, pairs);
    }
    out
}

/// `Err(reason)` when the run's counts differ from the twin's: the first
/// difference, naming the option and both values.
pub fn compare(twin: &str, twin_counts: &Counts, run: &Counts) -> Result<(), String> {
    if twin_counts.is_empty() {
        return Err(format!("the bare twin {twin} printed no `LHV counts` line"));
    }
    for (cpu, want) in twin_counts {
        let Some(got) = run.get(cpu) else {
            return Err(format!(
                "CPU({cpu}) printed no `LHV counts` line (the bare twin {twin} did)"
            ));
        };
        let get = |v: &[(String, u64)], k: &str| v.iter().find(|(n, _)| n == k).map(|(_, c)| *c);
        for (name, bare) in want {
            match get(got, name) {
                Some(n) if n == *bare => {}
                Some(n) => {
                    return Err(format!(
                        "CPU({cpu}) LHV counts {name}={n} under L0, but {name}={bare} on bare Bochs ({twin})"
                    ));
                }
                None => {
                    return Err(format!(
                        "CPU({cpu}) LHV counts lack {name} under L0, but {name}={bare} on bare Bochs ({twin})"
                    ));
                }
            }
        }
        if let Some((name, n)) = got.iter().find(|(k, _)| get(want, k).is_none()) {
            return Err(format!(
                "CPU({cpu}) LHV counts {name}={n} under L0, absent on bare Bochs ({twin})"
            ));
        }
    }
    Ok(())
}

/// The verdict of a run with a twin, given both statuses and logs.
pub fn judge(twin: &str, twin_status: &Status, twin_log: &str, run_log: &str) -> Status {
    if *twin_status != Status::Pass {
        return Status::Fail(format!(
            "its bare twin {twin} did not pass, so the LHV counts cannot be compared"
        ));
    }
    match compare(twin, &counts(twin_log), &counts(run_log)) {
        Ok(()) => Status::Pass,
        Err(why) => Status::Fail(why),
    }
}

fn read(row: &Row) -> String {
    row.log
        .as_deref()
        .and_then(|p| std::fs::read(p).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Turns the PASS of every run whose counts differ from its twin's (or
/// whose twin did not pass) into a FAIL saying why. Rows are matched by
/// name; `scenarios` are the ones that ran.
pub fn cross_check(scenarios: &[Scenario], rows: &mut [Row]) {
    for s in scenarios {
        let Some(twin) = twin_name(s) else { continue };
        let (Some(ri), Some(ti)) = (
            rows.iter().position(|r| r.name == s.name),
            rows.iter().position(|r| r.name == twin),
        ) else {
            continue;
        };
        if rows[ri].status != Status::Pass {
            continue;
        }
        let judge = match s.check {
            Check::FuzzMatchesTwin => crate::fuzz::judge,
            Check::HostileL1(_) => crate::hostile_l1::judge,
            _ => judge,
        };
        let verdict = judge(&twin, &rows[ti].status, &read(&rows[ti]), &read(&rows[ri]));
        rows[ri].status = verdict;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARE: &str = "LHV_OPT = 0x8001
CPU(1): LHV done
CPU(1): LHV counts BASE=60 MSR_LOAD=25 INTERCEPTS=140 TIMER=8 PIT=0
CPU(0): LHV done
CPU(0): LHV counts BASE=60 MSR_LOAD=25 INTERCEPTS=140 TIMER=5 PIT=20
LHV: all CPUs done
";

    fn l0_log(cpu1: &str) -> String {
        format!(
            "L0: booting the guest from drive 0x81\nLHV_OPT = 0x8001\n\
             CPU(0): LHV counts BASE=60 MSR_LOAD=25 INTERCEPTS=140 TIMER=31 PIT=20\n\
             CPU(1): LHV counts {cpu1}\nLHV: L0 alive (Stats: 5 exits)\n"
        )
    }

    #[test]
    fn parses_counts_without_timing_counters() {
        let c = counts(BARE);
        assert_eq!(c.len(), 2);
        let want: Vec<(String, u64)> = [("BASE", 60), ("MSR_LOAD", 25), ("INTERCEPTS", 140)]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        assert_eq!(c[&0], want);
        assert_eq!(c[&1], want);
        assert!(counts("CPU(x): LHV counts A=1\nLHV counts B=2\n").is_empty());
        let c = counts("[l0] CPU(3): LHV counts A=1 B=zz TIMER=4");
        assert_eq!(c[&3], vec![("A".to_string(), 1)]);
    }

    #[test]
    fn equal_counts_pass_whatever_the_timer_did() {
        let run = l0_log("BASE=60 MSR_LOAD=25 INTERCEPTS=140 TIMER=99 PIT=0");
        assert_eq!(
            judge("lhv/0x8001/2cpu", &Status::Pass, BARE, &run),
            Status::Pass
        );
    }

    #[test]
    fn a_different_count_names_the_option_and_both_values() {
        let run = l0_log("BASE=60 MSR_LOAD=24 INTERCEPTS=140 TIMER=8 PIT=0");
        let Status::Fail(why) = judge("lhv/0x8001/2cpu", &Status::Pass, BARE, &run) else {
            panic!("must fail")
        };
        assert_eq!(
            why,
            "CPU(1) LHV counts MSR_LOAD=24 under L0, but MSR_LOAD=25 on bare Bochs (lhv/0x8001/2cpu)"
        );
    }

    #[test]
    fn missing_or_extra_options_and_cpus_fail() {
        let t = "lhv/0x8001/2cpu";
        let run = l0_log("BASE=60 INTERCEPTS=140");
        assert!(matches!(judge(t, &Status::Pass, BARE, &run),
            Status::Fail(w) if w.contains("lack MSR_LOAD") && w.contains("MSR_LOAD=25")));
        let run = l0_log("BASE=60 MSR_LOAD=25 INTERCEPTS=140 NMI=3");
        assert!(matches!(judge(t, &Status::Pass, BARE, &run),
            Status::Fail(w) if w.contains("NMI=3 under L0, absent")));
        let run = l0_log("x").replace("CPU(1): LHV counts x\n", "");
        assert!(matches!(judge(t, &Status::Pass, BARE, &run),
            Status::Fail(w) if w.starts_with("CPU(1) printed no")));
        assert!(matches!(judge(t, &Status::Pass, "nothing\n", &run),
            Status::Fail(w) if w.contains("printed no `LHV counts` line")));
    }

    #[test]
    fn a_failed_twin_fails_the_comparison() {
        let run = l0_log("BASE=60 MSR_LOAD=25 INTERCEPTS=140");
        let st = Status::Fail("timeout".into());
        assert!(matches!(judge("lhv/0x8001/2cpu", &st, BARE, &run),
            Status::Fail(w) if w.contains("did not pass")));
    }

    #[test]
    fn every_nested_scenario_has_a_bare_twin_with_the_same_setup() {
        let nested: Vec<_> = scenario::SCENARIOS
            .iter()
            .filter(|s| s.check == Check::LhvCountsMatchTwin)
            .collect();
        assert!(nested.len() >= 13);
        for s in nested {
            let twin = scenario::find(&twin_name(s).unwrap()).expect(s.name);
            assert_eq!(
                (twin.lhv_opt, twin.cpus, twin.lhv_args, twin.boot),
                (s.lhv_opt, s.cpus, s.lhv_args, scenario::Boot::Lhv),
                "{}",
                s.name
            );
        }
    }

    #[test]
    fn l0_on_l0_has_the_bare_twin() {
        let s = scenario::find("l0-l0-lhv/0x4/2cpu").unwrap();
        assert_eq!(twin_name(&s).as_deref(), Some("lhv/0x4/2cpu"));
        let fuzz = scenario::find("l0-fuzz/quick").unwrap();
        assert_eq!(twin_name(&fuzz).as_deref(), Some("fuzz/quick"));
    }

    #[test]
    fn twins_are_added_first_and_once() {
        let pick = |names: &[&str]| -> Vec<Scenario> {
            names.iter().map(|n| scenario::find(n).unwrap()).collect()
        };
        let got = with_twins(pick(&["lhv-vmxon", "l0-lhv/0x1/2cpu", "l0-lhv/0x0/2cpu"])).unwrap();
        let names: Vec<_> = got.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            vec![
                "lhv/0x1/2cpu",
                "lhv/0x0/2cpu",
                "lhv-vmxon",
                "l0-lhv/0x1/2cpu",
                "l0-lhv/0x0/2cpu"
            ]
        );
        let got = with_twins(pick(&["lhv/0x0/2cpu", "l0-lhv/0x0/2cpu"])).unwrap();
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn cross_check_rewrites_only_passing_runs_with_twins() {
        let dir = std::env::temp_dir().join(format!("harness-twins-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (bare, run) = (dir.join("bare.log"), dir.join("run.log"));
        std::fs::write(&bare, BARE).unwrap();
        std::fs::write(&run, l0_log("BASE=61 MSR_LOAD=25 INTERCEPTS=140")).unwrap();
        let row = |name: &str, status: Status, log: &std::path::Path| Row {
            name: name.into(),
            status,
            secs: 1.0,
            log: Some(log.to_path_buf()),
        };
        let scen: Vec<_> = ["lhv/0x1/2cpu", "l0-lhv/0x1/2cpu"]
            .iter()
            .map(|n| scenario::find(n).unwrap())
            .collect();
        let mut rows = vec![
            row("lhv/0x1/2cpu", Status::Pass, &bare),
            row("l0-lhv/0x1/2cpu", Status::Pass, &run),
        ];
        cross_check(&scen, &mut rows);
        assert_eq!(rows[0].status, Status::Pass);
        assert!(
            matches!(&rows[1].status, Status::Fail(w) if w.contains("BASE=61 under L0, but BASE=60"))
        );
        let mut rows = vec![
            row("lhv/0x1/2cpu", Status::Pass, &bare),
            row("l0-lhv/0x1/2cpu", Status::Fail("timeout".into()), &run),
        ];
        cross_check(&scen, &mut rows);
        assert_eq!(rows[1].status, Status::Fail("timeout".into()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
