//! Turns scenarios into runnable jobs: checks what each needs (SKIP when the
//! host cannot run it), builds each kernel once and makes the disk images.

use std::collections::HashMap;

use crate::images::{self, ImageSpec};
use crate::runner::{Status, Task};
use crate::scenario::{Boot, Emulator, Guest, Needs, Scenario};
use crate::session::{Job, Stream};

/// Kernel builds, each done at most once per harness run.
#[derive(Default, Debug)]
pub struct Kernels {
    built: HashMap<&'static str, Result<Vec<u8>, String>>,
    /// The Linux guest image, made at most once.
    linux: Option<Result<std::path::PathBuf, String>>,
    pub verbose: bool,
}

impl Kernels {
    fn get(&mut self, package: &'static str) -> Result<Vec<u8>, String> {
        let verbose = self.verbose;
        self.built
            .entry(package)
            .or_insert_with(|| {
                let elf = crate::build::kernel(package, verbose)?;
                std::fs::read(&elf).map_err(|e| format!("read {}: {e}", elf.display()))
            })
            .clone()
    }

    fn linux(&mut self) -> Result<std::path::PathBuf, String> {
        let verbose = self.verbose;
        self.linux
            .get_or_insert_with(|| crate::linux::image(verbose))
            .clone()
    }
}

/// `Some(reason)` when the host cannot run this scenario.
pub fn skip_reason(s: &Scenario) -> Option<String> {
    let qemu = || crate::deps::which("qemu-system-x86_64").is_some();
    match s.needs {
        Needs::Nothing => None,
        Needs::Qemu if !qemu() => Some("qemu-system-x86_64 is not installed".into()),
        Needs::Qemu => None,
        Needs::QemuWithoutVmx if !qemu() => Some("qemu-system-x86_64 is not installed".into()),
        Needs::QemuWithoutVmx if crate::emulator::qemu::nested_kvm() => {
            Some("KVM with nested VMX is available, so QEMU's guest has VMX".into())
        }
        Needs::QemuWithoutVmx => None,
    }
}

fn lhv_image(k: &mut Kernels, s: &Scenario) -> Result<std::path::PathBuf, String> {
    let kernel = k.get("lhv")?;
    images::make(
        &ImageSpec {
            kind: "lhv",
            template: "grub-lhv.cfg.template",
            kernel_name: "lhv",
            kernel: &kernel,
            cmdline: &images::lhv_cmdline(s.lhv_opt, s.lhv_args),
        },
        k.verbose,
    )
}

/// The first disk and the optional second one.
pub fn disks(
    k: &mut Kernels,
    s: &Scenario,
) -> Result<(std::path::PathBuf, Option<std::path::PathBuf>), String> {
    match s.boot {
        Boot::L0 => {
            let kernel = k.get("hypervisor")?;
            let l0 = images::make(
                &ImageSpec {
                    kind: "l0",
                    template: "grub-l0.cfg.template",
                    kernel_name: "hypervisor",
                    kernel: &kernel,
                    cmdline: &images::l0_cmdline(s.l0_args),
                },
                k.verbose,
            )?;
            let guest = match s.guest {
                Guest::Lhv => lhv_image(k, s)?,
                Guest::Linux => k.linux()?,
            };
            Ok((l0, Some(guest)))
        }
        Boot::Lhv => Ok((lhv_image(k, s)?, None)),
        Boot::Linux => Ok((k.linux()?, None)),
        Boot::SelfTest => {
            let kernel = crate::selftest::kernel();
            let img = images::make(
                &ImageSpec {
                    kind: "selftest",
                    template: "grub-selftest.cfg.template",
                    kernel_name: "selftest",
                    kernel: &kernel,
                    cmdline: "",
                },
                k.verbose,
            )?;
            Ok((img, None))
        }
    }
}

/// One task per scenario (in order). Needs are checked first so that a
/// skipped scenario builds nothing.
pub fn tasks(scenarios: &[Scenario], stream: Stream, verbose: bool) -> Vec<Task> {
    let mut k = Kernels {
        verbose,
        ..Kernels::default()
    };
    scenarios
        .iter()
        .map(|s| {
            if let Some(why) = skip_reason(s) {
                return Task::Decided(s.name, Status::Skip(why));
            }
            if s.emulator == Emulator::Bochs
                && let Err(e) = crate::deps::require("bochs", "bochs")
            {
                return Task::Decided(s.name, Status::Fail(e));
            }
            match disks(&mut k, s) {
                Ok((disk0, disk1)) => Task::Run(Job {
                    scenario: *s,
                    disk0,
                    disk1,
                    stream,
                    verbose,
                }),
                Err(e) => Task::Decided(s.name, Status::Fail(e)),
            }
        })
        .collect()
}
