//! The test harness: builds L0 and LHV, makes GRUB boot images, boots them
//! under Bochs or QEMU and judges the serial output. See `harness help`.

mod build;
mod check;
mod cli;
mod cpio;
mod deps;
mod emulator;
mod images;
mod linux;
mod paths;
mod plan;
mod runner;
mod scenario;
mod selftest;
mod serial;
mod session;
mod verdict;

use std::process::ExitCode;

use cli::{Command, RunOpts, TestOpts};
use runner::{Status, Task};
use scenario::{Boot, Guest, Scenario};
use session::Stream;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match cli::parse(&args) {
        Ok(Command::Run(o)) => run(&o),
        Ok(Command::Test(o)) => test(&o),
        Ok(Command::List) => {
            list();
            ExitCode::SUCCESS
        }
        Ok(Command::Deps) => {
            if deps::report() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok(Command::ReproImage(o)) => repro_image(&o),
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("harness: {e}\n\n{}", cli::USAGE);
            ExitCode::from(2)
        }
    }
}

/// `repro-image NAME`: an LHV GRUB image with `lhv_repro=NAME`, copied to
/// `target/harness/repro-NAME.img` for a bug report.
fn repro_image(o: &cli::ReproImageOpts) -> ExitCode {
    let made = build::kernel("lhv", o.verbose).and_then(|elf| {
        let kernel = std::fs::read(&elf).map_err(|e| format!("read {}: {e}", elf.display()))?;
        let cached = images::make(
            &images::ImageSpec {
                kind: "lhv",
                template: "grub-lhv.cfg.template",
                kernel_name: "lhv",
                kernel: &kernel,
                cmdline: &images::repro_cmdline(&o.name),
            },
            o.verbose,
        )?;
        let out = images::repro_image_path(&o.name);
        std::fs::copy(&cached, &out)
            .map_err(|e| format!("copy {} to {}: {e}", cached.display(), out.display()))?;
        Ok(out)
    });
    match made {
        Ok(out) => {
            println!("{}", out.display());
            println!(
                "boot it with: qemu-system-x86_64 -enable-kvm -cpu host,+vmx -hda {}",
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("harness: repro-image: {e}");
            ExitCode::FAILURE
        }
    }
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

/// The scenario a `run` means: a named one or one made from the options,
/// with the options applied on top.
fn run_scenario(o: &RunOpts) -> Result<Scenario, String> {
    let named = o.scenario.is_some();
    let mut s = match &o.scenario {
        Some(n) => scenario::find(n).ok_or_else(|| {
            let names: Vec<_> = scenario::SCENARIOS.iter().map(|s| s.name).collect();
            format!("no scenario `{n}`; known: {}", names.join(", "))
        })?,
        None => match (o.guest, o.no_l0) {
            (Some(Guest::Linux), true) => scenario::BOCHS_LINUX,
            (Some(Guest::Linux), false) => scenario::BOCHS_L0_LINUX,
            (_, true) => scenario::BOCHS_LHV,
            (_, false) => scenario::BOCHS_L0,
        },
    };
    if let Some(g) = o.guest {
        s.guest = g;
    }
    if o.no_l0 {
        s.boot = match s.guest {
            Guest::Lhv => Boot::Lhv,
            Guest::Linux => Boot::Linux,
        };
    }
    if let Some(e) = o.emulator {
        s.emulator = e;
    }
    if let Some(n) = o.cpus {
        s.cpus = n;
    }
    if let Some(m) = o.memory {
        s.memory_mb = m;
    }
    if let Some(x) = o.lhv_opt {
        s.lhv_opt = x;
    }
    if let Some(a) = &o.lhv_args {
        s.lhv_args = leak(a);
    }
    if let Some(a) = &o.l0_args {
        s.l0_args = leak(a);
    }
    if let Some(t) = o.timeout {
        s.timeout_s = t;
    }
    if let Some(m) = &o.model {
        s.model = leak(m);
    }
    if !named {
        s.name = leak(&scenario::derived_name(
            s.boot, s.guest, s.lhv_opt, s.emulator,
        ));
    }
    Ok(s)
}

fn run(o: &RunOpts) -> ExitCode {
    let s = match run_scenario(o) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("harness: {e}");
            return ExitCode::from(2);
        }
    };
    let stream = Stream::Raw;
    let task = plan::tasks(&[s], stream, o.verbose).remove(0);
    let job = match task {
        Task::Run(job) => job,
        Task::Decided(name, status) => {
            let row = runner::Row {
                name: name.into(),
                status: status.clone(),
                secs: 0.0,
                log: None,
            };
            println!("{}", runner::finish_line(&row));
            return match status {
                Status::Fail(_) => ExitCode::FAILURE,
                _ => ExitCode::SUCCESS,
            };
        }
    };
    if o.keep {
        return match session::keep(&job) {
            Ok(how) => {
                println!(
                    "KEEP {}: emulator ended ({how}); serial log {}",
                    s.name,
                    paths::short(&job.serial_log())
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("FAIL {}: {e}", s.name);
                ExitCode::FAILURE
            }
        };
    }
    match session::execute(&job) {
        verdict::Outcome::Pass => {
            println!("PASS {}", s.name);
            ExitCode::SUCCESS
        }
        verdict::Outcome::Fail(why) => {
            println!("FAIL {}: {why}", s.name);
            ExitCode::FAILURE
        }
    }
}

fn test(o: &TestOpts) -> ExitCode {
    let scenarios = scenario::filter(&o.filters);
    if scenarios.is_empty() {
        eprintln!(
            "harness: no scenario name contains any of: {}",
            o.filters.join(", ")
        );
        list();
        return ExitCode::from(2);
    }
    let mut cargo_ok = true;
    if !o.no_cargo_test {
        let (ok, summary) = build::host_tests();
        for l in &summary {
            println!("  {l}");
        }
        println!("cargo test: {}", if ok { "ok" } else { "FAILED" });
        cargo_ok = ok;
    }
    let stream = if o.verbose {
        Stream::Prefixed
    } else {
        Stream::Quiet
    };
    let tasks = plan::tasks(&scenarios, stream, o.verbose);
    let workers = o.jobs.unwrap_or_else(runner::cores);
    let n_run = tasks.iter().filter(|t| matches!(t, Task::Run(_))).count();
    paths::progress(
        "test",
        &format!("running {n_run} scenario(s) on {workers} worker(s)"),
    );
    let rows = runner::run_all(tasks, workers);
    println!();
    print!("{}", runner::table(&rows));
    for r in &rows {
        if let Status::Skip(_) | Status::Fail(_) = r.status {
            println!("{}", runner::finish_line(r));
        }
    }
    if !cargo_ok {
        println!("cargo test FAILED (see above)");
    }
    println!("{}", runner::summary_line(&rows));
    let failed = rows.iter().any(|r| matches!(r.status, Status::Fail(_)));
    if failed || !cargo_ok {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn list() {
    println!(
        "{:<24} {:<6} {:>4} {:>6}  {:<9} PASS MARKERS",
        "SCENARIO", "EMU", "CPUS", "MB", "BOOT"
    );
    for s in scenario::SCENARIOS {
        println!(
            "{:<24} {:<6} {:>4} {:>6}  {:<9} {}",
            s.name,
            s.emulator.name(),
            s.cpus,
            s.memory_mb,
            match (s.boot, s.guest) {
                (Boot::L0, Guest::Linux) => "L0+Linux".to_string(),
                (b, _) => format!("{b:?}"),
            },
            s.expanded_pass().join(" | ")
        );
    }
}
