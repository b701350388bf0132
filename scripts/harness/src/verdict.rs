//! Judging a run from its serial lines, the Bochs log, the emulator's exit and
//! the clock. Pure logic: the session feeds it events.

use crate::scenario::{DEFAULT_FAIL, Scenario};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
}

#[derive(Debug)]
pub struct Judge {
    pass: Vec<String>,
    pending: Vec<String>,
    fail: Vec<&'static str>,
    expect_exit: bool,
    lines: usize,
    kernel_lines: usize,
    last_line: Option<String>,
    resets: u32,
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

impl Judge {
    pub fn new(s: &Scenario) -> Self {
        let pass = s.expanded_pass();
        Judge {
            pending: pass.clone(),
            pass,
            fail: DEFAULT_FAIL.iter().chain(s.fail).copied().collect(),
            expect_exit: s.expect_exit,
            lines: 0,
            kernel_lines: 0,
            last_line: None,
            resets: 0,
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
        if is_pass {
            self.pending.retain(|m| !line.contains(m.as_str()));
        } else if let Some(m) = self.fail.iter().find(|m| line.contains(**m)) {
            return Some(Outcome::Fail(format!("`{m}` on serial: {}", line.trim())));
        }
        if self.pending.is_empty() && !self.expect_exit {
            return Some(Outcome::Pass);
        }
        None
    }

    /// One line of Bochs's log (bochsout.txt).
    pub fn bochs_log_line(&mut self, line: &str) -> Option<Outcome> {
        let fatal = |what: &str| Some(Outcome::Fail(format!("Bochs {what}: {}", line.trim())));
        // Bochs logs the shutdown port (a normal way to stop) as a panic.
        if line.contains("Shutdown port") {
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
            if self.resets > 1 {
                return fatal("machine reset");
            }
        }
        None
    }

    /// The emulator exited by itself with the given description.
    pub fn exited(&self, how: &str) -> Outcome {
        if self.pending.is_empty() {
            Outcome::Pass
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
    use crate::scenario::{BOCHS_L0, BOCHS_LHV, QEMU_NO_VMX_LHV};

    fn feed(j: &mut Judge, log: &str) -> Option<Outcome> {
        log.lines()
            .find_map(|l| j.serial_line(&crate::serial::clean(l.as_bytes())))
    }

    #[test]
    fn l0_passes_when_every_cpu_reports() {
        let mut j = Judge::new(&BOCHS_L0);
        let log = "\x1b[2J\nL0 starting\nCPU(1): VMXON done\nSMP: 2 CPUs online\nCPU(0): VMXON done\nmore\n";
        assert_eq!(feed(&mut j, log), Some(Outcome::Pass));
    }

    #[test]
    fn one_cpu_missing_is_a_timeout_naming_it() {
        let mut j = Judge::new(&BOCHS_L0);
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
            let mut j = Judge::new(&BOCHS_L0);
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
        let mut j = Judge::new(&BOCHS_L0);
        assert_eq!(
            feed(&mut j, "\x1b[H\nerror: no multiboot header found.\n"),
            Some(Outcome::Fail(
                "GRUB: error: no multiboot header found.".into()
            ))
        );
        let j = Judge::new(&BOCHS_L0);
        assert!(
            matches!(j.timed_out(5), Outcome::Fail(r) if r.contains("no serial output at all"))
        );
        let mut j = Judge::new(&BOCHS_L0);
        assert_eq!(feed(&mut j, "\n  Booting `L0 hypervisor'\n\n"), None);
        assert!(
            matches!(j.timed_out(5), Outcome::Fail(r) if r.contains("no serial output after GRUB"))
        );
    }

    #[test]
    fn bochs_log_fatal_lines() {
        let mut j = Judge::new(&BOCHS_L0);
        let power_on = "00000000000i[SYS   ] bx_pc_system_c::Reset(HARDWARE) called";
        assert_eq!(j.bochs_log_line(power_on), None);
        assert_eq!(
            j.bochs_log_line("00001e[CPU0  ] interrupt(): gate descriptor is not valid sys seg"),
            None
        );
        assert!(j.bochs_log_line(power_on).is_some());
        let mut j = Judge::new(&BOCHS_L0);
        assert!(
            j.bochs_log_line("e[CPU1  ] exception(): 3rd (13) exception with no resolution")
                .is_some()
        );
        assert!(j.bochs_log_line("p[CPU0  ] >>PANIC<< something").is_some());
        assert_eq!(
            j.bochs_log_line("p[UNMAP ] >>PANIC<< Shutdown port: shutdown requested"),
            None
        );
    }
}
