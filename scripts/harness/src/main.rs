//! The test harness: builds L0 and LHV, makes GRUB boot images, boots them
//! under Bochs or QEMU and judges the serial output. See `harness help`.

mod bench;
mod bench_table;
mod build;
mod check;
mod cli;
mod cpio;
mod deps;
mod emulator;
mod fuzz;
mod hostile_l1;
mod images;
mod linux;
mod paths;
mod plan;
mod runner;
mod scenario;
mod selftest;
mod serial;
mod session;
mod twins;
mod verdict;
mod vmcs_diff;

use std::process::ExitCode;

use cli::{Command, RunOpts, TestOpts};
use runner::{Status, Task};
use scenario::{Boot, Guest, Scenario};
use session::Stream;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if cli::wants_help(&args) {
        print!("{}", cli::USAGE);
        return ExitCode::SUCCESS;
    }
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
        Ok(Command::Bench(o)) => bench::run(&o),
        Ok(Command::VmcsDiff(o)) => vmcs_diff(&o),
        Ok(Command::Fuzz(o)) => fuzz::run(&o),
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Err(e) => {
            // One line and where to read more: the whole usage would scroll
            // the error away.
            eprintln!("harness: {e}\n{}", cli::help_hint(&args));
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

/// `vmcs-diff`: prints the differing fields of two VMCS dumps.
fn vmcs_diff(o: &cli::VmcsDiffOpts) -> ExitCode {
    let read = |p: &str| {
        std::fs::read(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| format!("read {p}: {e}"))
    };
    let logs = read(&o.log).and_then(|a| Ok((a, o.log2.as_deref().map(read).transpose()?)));
    let picked = logs.and_then(|(a, b)| {
        vmcs_diff::pick(&vmcs_diff::Request {
            log: &a,
            log2: b.as_deref(),
            cpu: o.cpu,
            kind: &o.kind,
            against: o.against.as_deref(),
        })
    });
    match picked {
        Ok((a, b)) => {
            for l in vmcs_diff::diff(&a, &b) {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("harness: vmcs-diff: {e}");
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
        Some(n) => scenario::find(n)
            .or_else(|| bench::SCENARIOS.iter().copied().find(|s| s.name == n))
            .ok_or_else(|| {
                let names: Vec<_> = scenario::SCENARIOS
                    .iter()
                    .chain(bench::SCENARIOS)
                    .map(|s| s.name)
                    .collect();
                format!("no scenario `{n}`; known: {}", names.join(", "))
            })?,
        None => match (o.guest, o.no_l0) {
            (Some(Guest::Linux), true) => scenario::BOCHS_LINUX,
            (Some(Guest::Linux), false) => scenario::BOCHS_L0_LINUX,
            (Some(Guest::LinuxKvm), true) => scenario::BOCHS_LINUX_KVM,
            (Some(Guest::LinuxKvm), false) => scenario::BOCHS_L0_LINUX_KVM,
            (Some(Guest::Image), true) => scenario::BOCHS_IMAGE,
            (Some(Guest::Image), false) => scenario::BOCHS_L0_IMAGE,
            (Some(Guest::L0Lhv), false) => scenario::BOCHS_L0_L0,
            (_, true) => scenario::BOCHS_LHV,
            (_, false) => scenario::BOCHS_L0,
        },
    };
    if let Some(g) = o.guest {
        s.guest = g;
    }
    if let Some(f) = &o.guest_image {
        // Before anything is built or booted.
        s.guest_image = leak(plan::user_image(f)?);
    }
    if o.no_l0 {
        s.boot = match s.guest {
            Guest::Lhv => Boot::Lhv,
            Guest::Linux | Guest::LinuxKvm | Guest::Image => Boot::Bare,
            // Without the first L0, the second one is L0 alone.
            Guest::L0Lhv => {
                s.guest = Guest::Lhv;
                Boot::L0
            }
        };
    }
    if let Some(a) = &o.linux_args {
        s.linux_args = leak(a);
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
    if let Some(a) = &o.inner_l0_args {
        s.inner_l0_args = leak(a);
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
    // A run compared with a bare twin needs the twin's counts: run it first.
    let mut rows = Vec::new();
    if let Some(twin) = twins::twin_name(&s).and_then(|t| scenario::find(&t)) {
        paths::progress(
            "run",
            &format!(
                "first the bare twin {} (its LHV counts are the reference)",
                twin.name
            ),
        );
        rows.extend(runner::run_all(
            plan::tasks(&[twin], Stream::Quiet, o.verbose),
            1,
        ));
    }
    let start = std::time::Instant::now();
    let status = match session::execute(&job) {
        verdict::Outcome::Pass => Status::Pass,
        verdict::Outcome::Fail(why) => Status::Fail(why),
        verdict::Outcome::Skip(why) => Status::Skip(why),
    };
    rows.push(runner::Row {
        name: s.name.into(),
        status,
        secs: start.elapsed().as_secs_f64(),
        log: Some(job.serial_log()),
    });
    twins::cross_check(&[s], &mut rows);
    let row = &rows[rows.len() - 1];
    println!("{}", runner::finish_line(row));
    match row.status {
        Status::Fail(_) => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}

fn test(o: &TestOpts) -> ExitCode {
    let selected = scenario::filter(&o.filters, o.full);
    if selected.is_empty() {
        if !o.full && !scenario::filter(&o.filters, true).is_empty() {
            eprintln!(
                "harness: the scenarios matching {} are all in the Full tier: add --full",
                o.filters.join(", ")
            );
        } else {
            eprintln!(
                "harness: no scenario name contains any of: {}",
                o.filters.join(", ")
            );
            list();
        }
        return ExitCode::from(2);
    }
    let scenarios = match twins::with_twins(selected) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("harness: {e}");
            return ExitCode::from(2);
        }
    };
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
    let mut rows = runner::run_all(tasks, workers);
    twins::cross_check(&scenarios, &mut rows);
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
        "{:<24} {:<7} {:<6} {:>4} {:>6}  {:<9} PASS MARKERS",
        "SCENARIO", "TIER", "EMU", "CPUS", "MB", "BOOT"
    );
    for s in scenario::SCENARIOS {
        println!(
            "{:<24} {:<7} {:<6} {:>4} {:>6}  {:<9} {}",
            s.name,
            s.tier.name(),
            s.emulator.name(),
            s.cpus,
            s.memory_mb,
            match (s.boot, s.guest) {
                (Boot::L0, Guest::Linux) => "L0+Linux".to_string(),
                (Boot::L0, Guest::LinuxKvm) => "L0+KVM".to_string(),
                (Boot::L0, Guest::L0Lhv) => "L0+L0".to_string(),
                (Boot::Bare, Guest::LinuxKvm) => "Linux+KVM".to_string(),
                (b, _) => format!("{b:?}"),
            },
            s.expanded_pass().join(" | ")
        );
    }
}
