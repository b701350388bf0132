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
    /// Linux guest programs (musl builds).
    programs: HashMap<&'static str, Result<Vec<u8>, String>>,
    /// The Linux guest images (by guest and extra command line), each made
    /// at most once.
    linux: HashMap<(Guest, &'static str), Result<std::path::PathBuf, String>>,
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

    fn linux(&mut self, s: &Scenario) -> Result<std::path::PathBuf, String> {
        let key = (s.guest, s.linux_args);
        if let Some(made) = self.linux.get(&key) {
            return made.clone();
        }
        let made = match s.guest {
            Guest::LinuxKvm => {
                let verbose = self.verbose;
                self.program("kvmtest").and_then(|kvmtest| {
                    let variant = crate::linux::variant(&kvmtest, s.linux_args);
                    crate::linux::image(variant, s.linux_args, verbose)
                })
            }
            _ => crate::linux::image(crate::linux::Variant::Plain, s.linux_args, self.verbose),
        };
        self.linux.insert(key, made.clone());
        made
    }

    /// A static program for the Linux guest, built once.
    fn program(&mut self, package: &'static str) -> Result<Vec<u8>, String> {
        let verbose = self.verbose;
        self.programs
            .entry(package)
            .or_insert_with(|| {
                let elf = crate::build::linux_program(package, verbose)?;
                std::fs::read(&elf).map_err(|e| format!("read {}: {e}", elf.display()))
            })
            .clone()
    }

    /// The second-disk guest of `s` (or, with [`Boot::Bare`], its only disk).
    fn guest(&mut self, s: &Scenario) -> Result<std::path::PathBuf, String> {
        match s.guest {
            Guest::Lhv => lhv_image(self, s),
            Guest::Linux | Guest::LinuxKvm => self.linux(s),
            Guest::Image => user_image(s.guest_image).map(std::path::PathBuf::from),
            Guest::L0Lhv => l0_image(
                self,
                &images::l0_cmdline_booting(images::INNER_GUEST_DRIVE, s.inner_l0_args),
            ),
        }
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

/// Checks a user's disk image (`--guest-image`): it must be a readable,
/// non-empty regular file. Returns the path.
pub fn user_image(path: &str) -> Result<&str, String> {
    let bad = |why: String| {
        Err(format!(
            "--guest-image {path}: {why} (a hybrid ISO or a raw disk image is needed)"
        ))
    };
    if path.is_empty() {
        return bad("no file named".into());
    }
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return bad(format!("cannot read it: {e}")),
    };
    if !meta.is_file() {
        return bad("not a regular file".into());
    }
    if meta.len() < 512 {
        return bad(format!("{} bytes, less than one sector", meta.len()));
    }
    let mut sector = [0u8; 512];
    let read = std::fs::File::open(path).and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut sector)
    });
    if let Err(e) = read {
        return bad(format!("cannot read it: {e}"));
    }
    if sector[510..] != [0x55, 0xaa] {
        return bad(
            "its first sector has no boot signature (55 aa): not bootable as a disk".into(),
        );
    }
    Ok(path)
}

/// An L0 image with command line `cmdline` (its GRUB loads the first
/// sector of the `boot_drive` disk as L0's module).
fn l0_image(k: &mut Kernels, cmdline: &str) -> Result<std::path::PathBuf, String> {
    let kernel = k.get("hypervisor")?;
    images::make(
        &ImageSpec {
            kind: "l0",
            template: "grub-l0.cfg.template",
            kernel_name: "hypervisor",
            kernel: &kernel,
            cmdline,
        },
        k.verbose,
    )
}

/// The BIOS disks in order: the first one and those it boots (L0's guest
/// on the second; with [`Guest::L0Lhv`], the second L0's LHV on the third).
pub fn disks(k: &mut Kernels, s: &Scenario) -> Result<Vec<std::path::PathBuf>, String> {
    match s.boot {
        Boot::L0 => {
            let mut disks = vec![l0_image(k, &images::l0_cmdline(s.l0_args))?, k.guest(s)?];
            if s.guest == Guest::L0Lhv {
                disks.push(lhv_image(k, s)?);
            }
            Ok(disks)
        }
        Boot::Lhv => Ok(vec![lhv_image(k, s)?]),
        Boot::Bare => Ok(vec![k.guest(s)?]),
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
            Ok(vec![img])
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
                Ok(disks) => Task::Run(Job {
                    scenario: *s,
                    disks,
                    stream,
                    verbose,
                }),
                Err(e) => Task::Decided(s.name, Status::Fail(e)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::user_image;

    #[test]
    fn user_images_are_checked_before_booting() {
        let dir = std::env::temp_dir().join(format!("harness-user-image-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
        let missing = p("missing.img");
        assert!(user_image(&missing).unwrap_err().contains("cannot read it"));
        assert!(
            user_image(dir.to_str().unwrap())
                .unwrap_err()
                .contains("not a regular file")
        );
        std::fs::write(p("short.img"), [0u8; 100]).unwrap();
        assert!(
            user_image(&p("short.img"))
                .unwrap_err()
                .contains("less than one sector")
        );
        std::fs::write(p("blank.img"), [0u8; 1024]).unwrap();
        assert!(
            user_image(&p("blank.img"))
                .unwrap_err()
                .contains("boot signature")
        );
        let mut mbr = vec![0u8; 1024];
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        std::fs::write(p("disk.img"), &mbr).unwrap();
        assert_eq!(user_image(&p("disk.img")), Ok(p("disk.img").as_str()));
        assert!(user_image("").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
