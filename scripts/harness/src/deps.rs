//! Host dependencies: Debian packages (list in scripts/lib/packages.txt, which
//! scripts/lib/deps.sh installs) and the tools the harness calls.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The package list shared with scripts/lib/deps.sh.
pub fn packages() -> Vec<String> {
    let path = crate::paths::root().join("scripts/lib/packages.txt");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// Packages dpkg does not report as installed (empty when dpkg is absent).
pub fn missing_packages() -> Vec<String> {
    if which("dpkg").is_none() {
        return Vec::new();
    }
    packages()
        .into_iter()
        .filter(|p| {
            let out = Command::new("dpkg")
                .args(["-s", p])
                .stderr(Stdio::null())
                .output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect()
}

/// The full path of a program found in PATH.
pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// Ok when the program exists; else a message saying how to get it.
pub fn require(prog: &str, package: &str) -> Result<PathBuf, String> {
    which(prog).ok_or_else(|| {
        format!(
            "{prog} not found (Debian package {package}; scripts/run and scripts/test install it when run as root)"
        )
    })
}

/// `harness deps`: prints what is missing; Ok when nothing is.
pub fn report() -> bool {
    let missing = missing_packages();
    let mut ok = true;
    if missing.is_empty() {
        println!("packages: all present ({})", packages().join(" "));
    } else {
        ok = false;
        println!("packages: missing {}", missing.join(" "));
        println!(
            "  install: apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {}",
            missing.join(" ")
        );
    }
    for (prog, pkg) in [
        ("bochs", "bochs"),
        ("grub-mkrescue", "grub-common"),
        ("xorriso", "xorriso"),
        ("qemu-system-x86_64", "qemu-system-x86"),
    ] {
        match require(prog, pkg) {
            Ok(p) => println!("{prog}: {}", p.display()),
            Err(e) => {
                ok = false;
                println!("{e}");
            }
        }
    }
    println!("{}", crate::emulator::qemu::accel_line());
    ok
}
