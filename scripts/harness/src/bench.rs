//! `harness bench` (`scripts/bench`): LHV's `mode=bench` on bare Bochs and
//! as L1 under L0, both on 1 CPU, then one table of the two. Benchmarks are
//! not tests: these scenarios are not in the test table.

use std::process::ExitCode;

use crate::bench_table::{self, Side};
use crate::cli::BenchOpts;
use crate::runner::{self, Row, Status};
use crate::scenario::{BOCHS_LHV, Boot, Guest, Scenario};
use crate::session::Stream;

/// LHV's benchmark on bare Bochs, 1 CPU.
pub const BARE: Scenario = Scenario {
    name: "bench/bare",
    cpus: 1,
    boot: Boot::Lhv,
    lhv_args: "mode=bench",
    pass: &["BENCH op=vmcall", "BENCH op=cpuid", "BENCH done"],
    skip: &["SKIP bench:"],
    expect_exit: true,
    timeout_s: 300,
    ..BOCHS_LHV
};

/// The same with L0 in front and LHV on the second disk (as `l0-guest-lhv`).
pub const UNDER_L0: Scenario = Scenario {
    name: "bench/l0",
    boot: Boot::L0,
    guest: Guest::Lhv,
    pass: &[
        "L0: booting the guest",
        "BENCH op=vmcall",
        "BENCH op=cpuid",
        "BENCH done",
    ],
    timeout_s: 600,
    ..BARE
};

/// Both benchmark scenarios (`run --scenario bench/...` finds them too).
pub const SCENARIOS: &[Scenario] = &[BARE, UNDER_L0];

fn side(row: &Row) -> Side {
    match &row.status {
        Status::Pass => {
            let log = row
                .log
                .as_deref()
                .and_then(|p| std::fs::read(p).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            Side::from_log(&log)
        }
        Status::Skip(line) => Side::Skipped(line.clone()),
        Status::Fail(why) => Side::Failed(why.clone()),
    }
}

/// Runs both and prints the table; fails when a run failed (a SKIP under
/// L0, while L0 hides VMX, is not a failure).
pub fn run(o: &BenchOpts) -> ExitCode {
    let args = match o.n {
        Some(n) => Box::leak(format!("mode=bench bench_n={n}").into_boxed_str()),
        None => BARE.lhv_args,
    };
    let scenarios: Vec<Scenario> = SCENARIOS
        .iter()
        .map(|s| Scenario {
            lhv_args: args,
            ..*s
        })
        .collect();
    let stream = if o.verbose {
        Stream::Prefixed
    } else {
        Stream::Quiet
    };
    let tasks = crate::plan::tasks(&scenarios, stream, o.verbose);
    crate::paths::progress(
        "bench",
        "LHV mode=bench on bare Bochs and under L0, 1 CPU each",
    );
    let rows = runner::run_all(tasks, runner::cores());
    println!();
    print!("{}", runner::table(&rows));
    println!();
    let (bare, l0) = (side(&rows[0]), side(&rows[1]));
    print!("{}", bench_table::table(&bare, &l0));
    let failed = rows.iter().any(|r| matches!(r.status, Status::Fail(_)))
        || matches!(bare, Side::Skipped(_));
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_runs_measure_the_same_thing_on_one_cpu() {
        assert_eq!((BARE.cpus, UNDER_L0.cpus), (1, 1));
        assert_eq!(BARE.lhv_args, UNDER_L0.lhv_args);
        assert_eq!((BARE.boot, UNDER_L0.boot), (Boot::Lhv, Boot::L0));
        assert_eq!(UNDER_L0.l0_args, crate::scenario::BOCHS_L0.l0_args);
        assert!(UNDER_L0.skip.contains(&"SKIP bench:"));
    }

    #[test]
    fn a_skip_line_ends_the_run_as_skip() {
        let mut j = crate::verdict::Judge::new(&UNDER_L0);
        assert_eq!(
            j.serial_line("SKIP bench: VMX is not available: CPUID.1:ECX.VMX[bit 5] is 0"),
            Some(crate::verdict::Outcome::Skip(
                "VMX is not available: CPUID.1:ECX.VMX[bit 5] is 0".into()
            ))
        );
        let mut j = crate::verdict::Judge::new(&BARE);
        assert_eq!(
            j.serial_line("BENCH op=vmcall n=1 cycles_per_exit=1 min=1 l0_exits_per_exit=n/a"),
            None
        );
        assert_eq!(
            j.serial_line("BENCH op=cpuid n=1 cycles_per_exit=1 min=1 l0_exits_per_exit=n/a"),
            None
        );
        assert_eq!(j.serial_line("BENCH done"), None);
        assert_eq!(j.exited("exit status 1"), crate::verdict::Outcome::Pass);
    }
}
