//! Cargo builds of the bare-metal kernels (L0 = `hypervisor`, `lhv`) and of
//! the static Linux programs of the Linux guest image (`kvmtest`).

use std::path::PathBuf;
use std::process::{Command, Stdio};

pub const TARGET: &str = "x86_64-unknown-none";

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The target of the programs that run inside the Linux guest: static, so
/// that the initramfs needs no C library.
pub const LINUX_TARGET: &str = "x86_64-unknown-linux-musl";

/// Builds one kernel package in release mode; returns its ELF path. Cargo's
/// own messages go to stderr as usual.
pub fn kernel(package: &str, verbose: bool) -> Result<PathBuf, String> {
    build(package, TARGET, verbose)
}

/// Builds a program of the Linux guest (static, [`LINUX_TARGET`]).
pub fn linux_program(package: &str, verbose: bool) -> Result<PathBuf, String> {
    build(package, LINUX_TARGET, verbose).map_err(|e| {
        format!("{e} (the rustup target {LINUX_TARGET} is needed: rustup target add {LINUX_TARGET}, as scripts/lib/deps.sh does)")
    })
}

fn build(package: &str, target: &str, verbose: bool) -> Result<PathBuf, String> {
    let args = ["build", "--release", "--target", target, "-p", package];
    crate::paths::progress("build", &format!("cargo {}", args.join(" ")));
    let mut cmd = Command::new(cargo());
    cmd.args(args)
        .current_dir(crate::paths::root())
        .stdin(Stdio::null());
    if !verbose {
        cmd.arg("-q");
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of {package} failed ({status})"));
    }
    let elf = crate::paths::target()
        .join(target)
        .join("release")
        .join(package);
    if elf.is_file() {
        Ok(elf)
    } else {
        Err(format!(
            "cargo built {package} but {} is missing",
            elf.display()
        ))
    }
}

/// Runs the host unit tests of every crate (`cargo test --workspace`: the
/// libraries `shared` and `lhv` and the harness; the kernel binaries have
/// `test = false` and are not built for the host). Returns whether they
/// passed and the summary lines to show.
pub fn host_tests() -> (bool, Vec<String>) {
    crate::paths::progress("test", "cargo test (host crates)");
    let out = Command::new(cargo())
        .args(["test", "--workspace", "--color", "never"])
        .current_dir(crate::paths::root())
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => return (false, vec![format!("cannot run cargo test: {e}")]),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut summary: Vec<String> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| {
            l.starts_with("test result:")
                || l.trim_start().starts_with("Running ")
                || l.trim_start().starts_with("Doc-tests ")
        })
        .map(|l| l.trim().to_string())
        .collect();
    if !out.status.success() {
        // Show the failures (and compile errors) in full, last part first-come.
        let all: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
        let tail = all.len().saturating_sub(80);
        summary.push(format!("cargo test failed ({}); its output:", out.status));
        summary.extend(all[tail..].iter().map(|l| format!("  {l}")));
    }
    (out.status.success(), summary)
}
