//! `kvmtest`: the program the harness's Linux-KVM guest image runs as its
//! check of KVM (issue 10). Linux runs it from `/init` after loading
//! irqbypass, kvm and kvm-intel; it
//!
//! 1. prints the kvm_intel parameters (`KVM param <name>=<value>`) and
//!    requires EPT, VPID and unrestricted guest (`kvm_strict=0` on the
//!    kernel command line turns a missing one into a SKIP, so that the rest
//!    still runs);
//! 2. runs a real-mode guest and a 64-bit guest (own GDT and page tables),
//!    each doing port I/O, MMIO, CPUID, a loop of hundreds of exits and HLT,
//!    checking every value that comes back and the final registers;
//! 3. runs two vCPUs of one VM on two threads pinned to two CPUs at once;
//! 4. prints `KVM check <name>: ok|FAIL <why>|SKIP <why>` per check, then
//!    `KVM TEST PASS (...)` or `KVM TEST FAIL: ...`, and powers off.
//!
//! `kvm_timeout=<s>` (default 1800) bounds the whole run: a check that
//! hangs is reported as failed and the machine powers off.
//!
//! Options are words of the kernel command line (`/proc/cmdline`) or
//! arguments (which win): `kvm_strict=0`, `kvm_timeout=<s>`,
//! `kvm_tests=<group>,...` (run only these of `realmode`, `longmode`,
//! `smp`, `linux`; `linux`, a Linux kernel booted as the guest, runs only
//! when named; `kvm_l2_kernel=` and `kvm_l2_initrd=` say where its files
//! are), and
//! `--poweroff` (what `/init` passes): power the machine off at the end
//! instead of exiting with status 0 (pass) or 1 (fail). Without it the
//! program can be run on any Linux host with /dev/kvm.

#[cfg(target_os = "linux")]
mod cmos;
#[cfg(target_os = "linux")]
mod exits;
#[cfg(target_os = "linux")]
mod guest_code;
#[cfg(target_os = "linux")]
mod guests;
#[cfg(target_os = "linux")]
mod linux_guest;
#[cfg(target_os = "linux")]
mod ram;
#[cfg(target_os = "linux")]
mod report;

/// Guest-physical layout shared by the guests.
#[cfg(target_os = "linux")]
mod layout {
    /// Where each guest's code starts (real mode: 0000:1000).
    pub const CODE: u64 = 0x1000;
    /// The real-mode guest's RAM: [0, 64K); its MMIO address is just above.
    pub const RM_RAM: usize = 0x1_0000;
    pub const RM_MMIO: u64 = 0x1_0000;
    /// The 64-bit guests' RAM: [0, 2M).
    pub const LM_RAM: usize = 0x20_0000;
    /// 64-bit guests' MMIO: a 2M page with no memory slot behind it.
    pub const LM_MMIO: u64 = 0x40_0000;
    /// What the host answers to the 64-bit guest's 8-byte MMIO read.
    pub const LM_MMIO_ANSWER: u64 = 0x0123_4567_89ab_cdef;
    pub const GDT: u64 = 0x500;
    pub const PML4: u64 = 0x2000;
    pub const PDPT: u64 = 0x3000;
    pub const PD: u64 = 0x4000;
    /// The SMP guest's rendezvous counter.
    pub const SMP_COUNTER: u64 = 0x7100;
    /// KVM's real-mode TSS (3 pages, outside guest RAM), as QEMU places it.
    pub const TSS: u64 = 0xfeff_d000;
    pub const EFER_LME: u64 = 1 << 8;
    pub const EFER_LMA: u64 = 1 << 10;
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("kvmtest runs on Linux only (it is built for x86_64-unknown-linux-musl)");
    std::process::exit(1);
}

#[cfg(target_os = "linux")]
fn main() {
    linux::main()
}

#[cfg(target_os = "linux")]
mod linux {
    use std::time::{Duration, Instant};

    use kvm_ioctls::{Cap, Kvm};

    use crate::guests;
    use crate::report::{self, Report, say};

    /// The kvm_intel parameters printed; the first three are required.
    const PARAMS: &[&str] = &[
        "ept",
        "vpid",
        "unrestricted_guest",
        "nested",
        "enable_shadow_vmcs",
    ];
    const REQUIRED: &[&str] = &["ept", "vpid", "unrestricted_guest"];

    /// The value of the last `name=value` word.
    fn cmdline_word(cmdline: &str, name: &str) -> Option<String> {
        cmdline
            .split_whitespace()
            .rev()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .map(String::from)
    }

    fn param(name: &str) -> String {
        let p = format!("/sys/module/kvm_intel/parameters/{name}");
        match std::fs::read_to_string(&p) {
            Ok(v) => v.trim().to_string(),
            Err(e) => format!("<unreadable: {e}>"),
        }
    }

    /// Prints the dmesg lines about KVM and VMX (why kvm_intel said no).
    fn dmesg_kvm() {
        let Ok(out) = std::process::Command::new("/bin/dmesg").output() else {
            return;
        };
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let low = l.to_ascii_lowercase();
            if low.contains("kvm") || low.contains("vmx") {
                say(&format!("KVM dmesg: {l}"));
            }
        }
    }

    /// Ends the program: powers the machine off with `--poweroff`, else
    /// exits with `code`.
    fn finish(poweroff: bool, code: i32) -> ! {
        if !poweroff {
            std::process::exit(code);
        }
        // Let the UART drain before the machine goes away.
        std::thread::sleep(Duration::from_secs(1));
        // SAFETY: sync and reboot take no pointers; reboot(RB_POWER_OFF)
        // only returns on failure (not root, or not Linux).
        unsafe {
            libc::sync();
            libc::reboot(libc::RB_POWER_OFF);
        }
        say(&format!(
            "KVM: reboot(RB_POWER_OFF) failed: {}",
            std::io::Error::last_os_error()
        ));
        std::process::exit(code)
    }

    fn start_watchdog(secs: u64, poweroff: bool) {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(secs));
            say(&format!(
                "KVM check {}: FAIL timed out (kvm_timeout={secs} s)",
                report::current()
            ));
            say(&format!(
                "KVM TEST FAIL: {} timed out after {secs} s",
                report::current()
            ));
            finish(poweroff, 1);
        });
    }

    /// The kvm_intel parameters, and whether EPT, VPID and unrestricted
    /// guest are on. Returns false when a required one is off in strict mode.
    fn params(r: &mut Report, strict: bool) -> bool {
        let mut ok = true;
        for p in PARAMS {
            say(&format!("KVM param {p}={}", param(p)));
        }
        for p in REQUIRED {
            let v = param(p);
            let name = format!("kvm_intel {p}");
            if v == "Y" || v == "1" {
                let _ = r.check(&name, Ok(String::new()));
            } else if strict {
                let _ = r.check(&name, Err(format!("{p}={v}, required")));
                ok = false;
            } else {
                r.skip(&name, &format!("{p}={v}, required but kvm_strict=0"));
            }
        }
        ok
    }

    pub fn main() {
        // As PID 1 kvmtest is the /init of the Linux guest it boots itself.
        if std::process::id() == 1 {
            crate::linux_guest::l2_init();
        }
        let t = Instant::now();
        let args: Vec<String> = std::env::args().skip(1).collect();
        let poweroff = args.iter().any(|a| a == "--poweroff");
        // Arguments after the command line, so that they win.
        let words =
            std::fs::read_to_string("/proc/cmdline").unwrap_or_default() + " " + &args.join(" ");
        let strict = cmdline_word(&words, "kvm_strict").as_deref() != Some("0");
        let timeout = cmdline_word(&words, "kvm_timeout")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1800);
        say(&format!(
            "KVM: kvmtest starting (strict={}, timeout {timeout} s)",
            if strict { "yes" } else { "no (kvm_strict=0)" }
        ));
        start_watchdog(timeout, poweroff);
        let mut r = Report::default();
        let go_on = params(&mut r, strict);
        let groups = cmdline_word(&words, "kvm_tests").unwrap_or_else(|| "all".into());
        if go_on {
            run_guests(&mut r, &groups, &words);
        } else {
            say(
                "KVM: kvm_intel loaded without EPT, VPID or unrestricted guest (the CPU, or the hypervisor under Linux, does not offer them); the guests were not run (kvm_strict=0 runs them anyway)",
            );
        }
        if r.failed() {
            dmesg_kvm();
        }
        say(&format!("KVM: done in {} ms", t.elapsed().as_millis()));
        say(&r.verdict());
        finish(poweroff, i32::from(r.failed()));
    }

    /// Where the Linux-KVM image keeps the Linux guest's kernel and initrd.
    const L2_KERNEL: &str = "/boot/l2-vmlinuz";
    const L2_INITRD: &str = "/boot/l2-initrd.img";

    fn run_guests(r: &mut Report, groups: &str, words: &str) {
        let mut kvm = None;
        if r.run("open /dev/kvm", || {
            let k = Kvm::new().map_err(|e| format!("open /dev/kvm: {e} (did kvm_intel load?)"))?;
            let v = k.get_api_version();
            if v != 12 {
                return Err(format!("KVM_GET_API_VERSION = {v}, expected 12"));
            }
            let caps = format!(
                "API 12, {} vCPUs recommended, {} max, user memory {}",
                k.get_nr_vcpus(),
                k.get_max_vcpus(),
                k.check_extension(Cap::UserMemory)
            );
            kvm = Some(k);
            Ok(caps)
        })
        .is_err()
        {
            return;
        }
        let kvm = kvm.expect("opened");
        let mut cpuid = None;
        if r.run("supported cpuid", || {
            let c = guests::Cpuid::new(&kvm)?;
            let n = c.table.as_slice().len();
            cpuid = Some(c);
            Ok(format!("{n} leaves"))
        })
        .is_err()
        {
            return;
        }
        let cpuid = cpuid.expect("read");
        // Each group stops at its first failed check; the next one still runs.
        let wanted = |g: &str| groups == "all" || groups.split(',').any(|x| x == g);
        let mut any = false;
        type Group = fn(&Kvm, &guests::Cpuid, &mut Report) -> Result<(), report::Aborted>;
        let all: [(&str, Group); 3] = [
            ("realmode", guests::real_mode),
            ("longmode", guests::long_mode),
            ("smp", guests::two_vcpus),
        ];
        for (name, run) in all {
            if wanted(name) {
                any = true;
                let _ = run(&kvm, &cpuid, r);
            } else {
                r.skip(name, &format!("not in kvm_tests={groups}"));
            }
        }
        // The Linux guest, with `kvm_tests=...,linux` only (it is slow).
        if groups.split(',').any(|x| x == "linux") {
            any = true;
            let kernel = cmdline_word(words, "kvm_l2_kernel").unwrap_or_else(|| L2_KERNEL.into());
            let initrd = cmdline_word(words, "kvm_l2_initrd").unwrap_or_else(|| L2_INITRD.into());
            let verbose = cmdline_word(words, "kvm_l2_verbose").as_deref() == Some("1");
            let _ = crate::linux_guest::boot_linux(&kvm, &cpuid, &kernel, &initrd, verbose, r);
        }
        if !any {
            let _ = r.check("kvm_tests", Err(format!("`{groups}` names no group")));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::cmdline_word;

        #[test]
        fn command_line_words() {
            let c = "console=ttyS0 kvm_strict=0 quiet kvm_timeout=60\n";
            assert_eq!(cmdline_word(c, "kvm_strict").as_deref(), Some("0"));
            assert_eq!(cmdline_word(c, "kvm_timeout").as_deref(), Some("60"));
            assert_eq!(cmdline_word(c, "kvm"), None);
            assert_eq!(cmdline_word("xkvm_strict=0", "kvm_strict"), None);
            assert_eq!(
                cmdline_word("kvm_strict=0 kvm_strict=1", "kvm_strict").as_deref(),
                Some("1")
            );
        }
    }
}
