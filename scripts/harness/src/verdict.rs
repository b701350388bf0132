//! Judging a run from its serial lines, the Bochs log, the emulator's exit and
//! the clock. Pure logic: the session feeds it events.

use crate::check::Checker;
use crate::scenario::{DEFAULT_FAIL, Scenario};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    /// The kernel said it cannot run here (one of the scenario's skip
    /// markers): the line.
    Skip(String),
}

#[derive(Debug)]
pub struct Judge {
    pass: Vec<String>,
    pending: Vec<String>,
    fail: Vec<&'static str>,
    skip: &'static [&'static str],
    expect_exit: bool,
    lines: usize,
    kernel_lines: usize,
    last_line: Option<String>,
    resets: u32,
    /// Machine resets after power-on that are part of the scenario.
    resets_allowed: u32,
    check: Checker,
}

/// Lines GRUB itself prints on the serial terminal before the kernel runs.
fn is_grub_line(l: &str) -> bool {
    let t = l.trim();
    t.is_empty()
        || t.starts_with("GNU GRUB")
        || t.starts_with("Booting ")
        || t.starts_with("error: ")
        || t.starts_with("Press any key")
        || t.contains("Welcome to GRUB")
        || t.starts_with("Use the ")
        || t.starts_with("Press enter")
        || t.starts_with("The highlighted entry")
        || t.starts_with('*')
        || t.chars().all(|c| !c.is_ascii_alphanumeric())
}

/// The reason a skip line gives: what follows the marker (`SKIP bench:
/// VMX is not available: ...` gives `VMX is not available: ...`), or the
/// whole line when nothing does.
fn skip_reason(line: &str, marker: &str) -> String {
    let after = line.split_once(marker).map_or("", |(_, r)| r).trim();
    if after.is_empty() {
        line.trim().to_string()
    } else {
        after.to_string()
    }
}

impl Judge {
    pub fn new(s: &Scenario) -> Self {
        let pass = s.expanded_pass();
        Judge {
            pending: pass.clone(),
            pass,
            fail: DEFAULT_FAIL.iter().chain(s.fail).copied().collect(),
            skip: s.skip,
            expect_exit: s.expect_exit,
            lines: 0,
            kernel_lines: 0,
            last_line: None,
            resets: 0,
            resets_allowed: s.check.resets_allowed(),
            check: Checker::new(s.check),
        }
    }

    /// All pass markers seen (the run may still wait for the emulator's exit).
    #[cfg(test)]
    pub fn markers_done(&self) -> bool {
        self.pending.is_empty()
    }

    /// One line of serial output.
    pub fn serial_line(&mut self, line: &str) -> Option<Outcome> {
        self.lines += 1;
        if !line.trim().is_empty() {
            self.last_line = Some(line.trim().to_string());
        }
        let grub = is_grub_line(line);
        if !grub {
            self.kernel_lines += 1;
        }
        if self.kernel_lines == 0 && line.trim_start().starts_with("error: ") {
            return Some(Outcome::Fail(format!("GRUB: {}", line.trim())));
        }
        let is_pass = self.pass.iter().any(|m| line.contains(m.as_str()));
        if !is_pass && let Some(m) = self.skip.iter().find(|m| line.contains(**m)) {
            return Some(Outcome::Skip(skip_reason(line, m)));
        }
        if is_pass {
            self.pending.retain(|m| !line.contains(m.as_str()));
        } else if let Some(m) = self.fail.iter().find(|m| line.contains(**m)) {
            return Some(Outcome::Fail(format!("`{m}` on serial: {}", line.trim())));
        }
        if let Some(why) = self.check.line(line) {
            return Some(Outcome::Fail(why));
        }
        if self.pending.is_empty() && !self.expect_exit {
            return Some(self.check_done());
        }
        None
    }

    /// One line of Bochs's log (bochsout.txt).
    pub fn bochs_log_line(&mut self, line: &str) -> Option<Outcome> {
        let fatal = |what: &str| Some(Outcome::Fail(format!("Bochs {what}: {}", line.trim())));
        // Bochs logs the shutdown port and an ACPI power-off (normal ways
        // to stop) as panics.
        if line.contains("Shutdown port") || line.contains("ACPI control: soft power off") {
            return None;
        }
        if line.contains(">>PANIC<<") {
            return fatal("panic");
        }
        if line.contains("with no resolution") || line.contains("triple fault") {
            return fatal("triple fault");
        }
        if line.contains("shutdown state") && !line.contains("Shutdown port") {
            return fatal("CPU shutdown");
        }
        if line.contains("Reset(") && line.contains("called") {
            self.resets += 1;
            // The first reset is the power-on one.
            if self.resets > 1 + self.resets_allowed {
                return fatal("machine reset");
            }
        }
        None
    }

    /// The emulator exited by itself with the given description.
    pub fn exited(&self, how: &str) -> Outcome {
        if self.pending.is_empty() {
            self.check_done()
        } else {
            Outcome::Fail(format!("emulator exited ({how}) {}", self.missing_text()))
        }
    }

    /// Time ran out.
    pub fn timed_out(&self, secs: u64) -> Outcome {
        let what = if self.pending.is_empty() {
            "all markers seen but the emulator did not exit".to_string()
        } else if self.lines == 0 {
            format!(
                "no serial output at all (stuck in BIOS/GRUB?); {}",
                self.missing_text()
            )
        } else if self.kernel_lines == 0 {
            format!("no serial output after GRUB; {}", self.missing_text())
        } else {
            let last = self.last_line.as_deref().unwrap_or("");
            format!("{}; last serial line: `{last}`", self.missing_text())
        };
        Outcome::Fail(format!("timeout after {secs} s: {what}"))
    }

    /// Pass, unless the scenario's check still misses something.
    fn check_done(&self) -> Outcome {
        match self.check.missing() {
            None => Outcome::Pass,
            Some(why) => Outcome::Fail(format!("all markers seen, but {why}")),
        }
    }

    fn missing_text(&self) -> String {
        match self.pending.as_slice() {
            [] => "after all markers".to_string(),
            [one] => format!("before `{one}`"),
            [first, rest @ ..] => format!("before `{first}` (and {} more)", rest.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{BOCHS_L0, BOCHS_L0_LINUX, BOCHS_LHV, QEMU_NO_VMX_LHV, Scenario};

    /// L0 judged on VMXON alone (the scenario `l0-vmxon`).
    const L0_VMXON: Scenario = Scenario {
        name: "l0-vmxon",
        pass: &["CPU({cpu}): VMXON done"],
        expect_exit: false,
        ..BOCHS_L0
    };

    fn feed(j: &mut Judge, log: &str) -> Option<Outcome> {
        log.lines()
            .find_map(|l| j.serial_line(&crate::serial::clean(l.as_bytes())))
    }

    #[test]
    fn l0_passes_when_every_cpu_reports() {
        let mut j = Judge::new(&L0_VMXON);
        let log = "\x1b[2J\nL0 starting\nCPU(1): VMXON done\nSMP: 2 CPUs online\nCPU(0): VMXON done\nmore\n";
        assert_eq!(feed(&mut j, log), Some(Outcome::Pass));
    }

    #[test]
    fn the_main_job_needs_the_guest_to_boot() {
        let l0 = "L0: region [0x1be00000, 0x1fe00000)\nCPU(1): VMXON done\nCPU(0): VMXON done\n\
                  L0: VMX for the guest: on (nested VMX)\n\
                  L0: booting the guest from drive 0x81 at 0000:7c00\n";
        let mut j = Judge::new(&BOCHS_L0);
        assert_eq!(feed(&mut j, l0), None);
        let lhv = "LHV 0.1.0 starting\nLHV_OPT = 0x0\nCPU(0): LHV done\nCPU(1): LHV done\n";
        assert_eq!(feed(&mut j, lhv), None);
        assert_eq!(feed(&mut j, "LHV: all CPUs done\n"), None);
        assert_eq!(j.exited("exit status 0"), Outcome::Pass);
    }

    #[test]
    fn one_cpu_missing_is_a_timeout_naming_it() {
        let mut j = Judge::new(&L0_VMXON);
        assert_eq!(
            feed(&mut j, "CPU(0): VMXON done\nSMP: 2 CPUs online\n"),
            None
        );
        assert_eq!(
            j.timed_out(120),
            Outcome::Fail(
                "timeout after 120 s: before `CPU(1): VMXON done`; last serial line: `SMP: 2 CPUs online`"
                    .into()
            )
        );
    }

    #[test]
    fn lhv_needs_its_options_line() {
        let s = crate::scenario::Scenario {
            lhv_opt: 0x5,
            ..BOCHS_LHV
        };
        let mut j = Judge::new(&s);
        assert_eq!(
            feed(&mut j, "CPU(0): VMXON done\nCPU(1): VMXON done\n"),
            None
        );
        assert_eq!(feed(&mut j, "LHV_OPT = 0x5\n"), Some(Outcome::Pass));
    }

    #[test]
    fn fatal_markers_fail_at_once() {
        for (log, want) in [
            (
                "CPU(0): VMXON done\nPANIC at lhv/src/main.rs:3\n",
                "`PANIC`",
            ),
            ("TEST_ASSERT failed: x == y\n", "`TEST_ASSERT failed`"),
            ("CPU(1): triple fault in guest\n", "`triple fault`"),
            (
                "VMX is not available: CPUID.1:ECX.VMX=0\n",
                "`VMX is not available`",
            ),
        ] {
            let mut j = Judge::new(&L0_VMXON);
            match feed(&mut j, log) {
                Some(Outcome::Fail(r)) => assert!(r.starts_with(want), "{r}"),
                other => panic!("{log}: {other:?}"),
            }
        }
    }

    #[test]
    fn no_vmx_passes_only_after_exit() {
        let mut j = Judge::new(&QEMU_NO_VMX_LHV);
        assert_eq!(
            feed(&mut j, "VMX is not available: CPUID.1:ECX.VMX = 0\n"),
            None
        );
        assert!(j.markers_done());
        assert_eq!(j.exited("exit status 3"), Outcome::Pass);
        let j = Judge::new(&QEMU_NO_VMX_LHV);
        assert!(
            matches!(j.exited("exit status 0"), Outcome::Fail(r) if r.contains("before `VMX is not available:`"))
        );
    }

    #[test]
    fn grub_errors_and_silence_are_explained() {
        let mut j = Judge::new(&L0_VMXON);
        assert_eq!(
            feed(&mut j, "\x1b[H\nerror: no multiboot header found.\n"),
            Some(Outcome::Fail(
                "GRUB: error: no multiboot header found.".into()
            ))
        );
        let j = Judge::new(&L0_VMXON);
        assert!(
            matches!(j.timed_out(5), Outcome::Fail(r) if r.contains("no serial output at all"))
        );
        let mut j = Judge::new(&L0_VMXON);
        assert_eq!(feed(&mut j, "\n  Booting `L0 hypervisor'\n\n"), None);
        assert!(
            matches!(j.timed_out(5), Outcome::Fail(r) if r.contains("no serial output after GRUB"))
        );
    }

    const L0_LINUX_LOG: &str = "L0: region [0x1f000000, 0x20000000)
LINUX: kernel 6.1.0-56-cloud-amd64
LINUX: cpus=2
LINUX: e820 [0x0, 0x9fbff] System RAM
LINUX: e820 [0x100000, 0x1effffff] System RAM
LINUX: e820 [0x1f000000, 0x1fffffff] Reserved
LINUX: init reached
";

    #[test]
    fn l0_linux_passes_on_exit_with_a_clean_map() {
        let mut j = Judge::new(&BOCHS_L0_LINUX);
        assert_eq!(feed(&mut j, L0_LINUX_LOG), None);
        assert!(j.markers_done());
        assert_eq!(j.exited("exit status 0"), Outcome::Pass);
    }

    #[test]
    fn l0_linux_fails_at_once_on_an_overlap() {
        let mut j = Judge::new(&BOCHS_L0_LINUX);
        let log = L0_LINUX_LOG.replace("0x1effffff] System RAM", "0x1f000fff] System RAM");
        match feed(&mut j, &log) {
            Some(Outcome::Fail(r)) => assert!(r.contains("overlaps L0's region"), "{r}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn l0_linux_without_the_region_line_cannot_pass() {
        let mut j = Judge::new(&BOCHS_L0_LINUX);
        let log = L0_LINUX_LOG.replace("L0: region", "L0: something");
        assert_eq!(feed(&mut j, &log), None);
        assert!(
            matches!(j.exited("exit status 0"), Outcome::Fail(r) if r.contains("L0 never printed"))
        );
        let mut j = Judge::new(&BOCHS_L0_LINUX);
        assert_eq!(
            feed(
                &mut j,
                "L0: region [0x1000, 0x2000)
"
            ),
            None
        );
        assert!(
            matches!(j.timed_out(180), Outcome::Fail(r) if r.contains("last serial line: `L0: region"))
        );
        let mut j = Judge::new(&BOCHS_L0_LINUX);
        assert!(
            matches!(feed(&mut j, "[    1.0] Kernel panic - not syncing: x
"), Some(Outcome::Fail(r)) if r.contains("Kernel panic"))
        );
    }

    #[test]
    fn skip_markers_end_the_run_as_skip() {
        let s = Scenario {
            pass: &["BENCH done"],
            skip: &["SKIP bench:"],
            expect_exit: true,
            ..BOCHS_LHV
        };
        let mut j = Judge::new(&s);
        assert_eq!(
            feed(
                &mut j,
                "LHV starting\nSKIP bench: VMX is not available: CPUID\n"
            ),
            Some(Outcome::Skip("VMX is not available: CPUID".into())),
            "before the fatal `VMX is not available` marker"
        );
        let mut j = Judge::new(&s);
        assert_eq!(
            feed(&mut j, "SKIP bench:\n"),
            Some(Outcome::Skip("SKIP bench:".into()))
        );
        // Without skip markers the same line is fatal.
        let mut j = Judge::new(&BOCHS_LHV);
        assert!(matches!(
            feed(&mut j, "SKIP bench: VMX is not available: x\n"),
            Some(Outcome::Fail(_))
        ));
    }

    #[test]
    fn bochs_log_fatal_lines() {
        let mut j = Judge::new(&L0_VMXON);
        let power_on = "00000000000i[SYS   ] bx_pc_system_c::Reset(HARDWARE) called";
        assert_eq!(j.bochs_log_line(power_on), None);
        assert_eq!(
            j.bochs_log_line("00001e[CPU0  ] interrupt(): gate descriptor is not valid sys seg"),
            None
        );
        assert!(j.bochs_log_line(power_on).is_some());
        let mut j = Judge::new(&L0_VMXON);
        assert!(
            j.bochs_log_line("e[CPU1  ] exception(): 3rd (13) exception with no resolution")
                .is_some()
        );
        assert!(j.bochs_log_line("p[CPU0  ] >>PANIC<< something").is_some());
        assert_eq!(
            j.bochs_log_line("p[UNMAP ] >>PANIC<< Shutdown port: shutdown requested"),
            None
        );
        assert_eq!(
            j.bochs_log_line("00988339205p[ACPI  ] >>PANIC<< ACPI control: soft power off"),
            None
        );
    }
}
