//! QEMU: `qemu-system-x86_64` with the disk(s), serial to a file, no display,
//! isa-debug-exit; KVM with nested VMX when the host offers it, else TCG.

use std::process::Command;

use super::{Launch, Running};

/// Whether KVM with nested VMX is usable here (then the guest has VMX).
pub fn nested_kvm() -> bool {
    let kvm_ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let nested = std::fs::read_to_string("/sys/module/kvm_intel/parameters/nested")
        .map(|s| matches!(s.trim(), "Y" | "y" | "1"))
        .unwrap_or(false);
    kvm_ok && nested
}

/// One line saying which acceleration QEMU gets and why.
pub fn accel_line() -> String {
    if nested_kvm() {
        "qemu: KVM with nested VMX (-enable-kvm -cpu host,+vmx)".into()
    } else {
        "qemu: TCG, no VMX in the guest (/dev/kvm unusable or kvm_intel nested off)".into()
    }
}

/// The arguments after the program name.
pub fn args(l: &Launch, kvm: bool) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |s: &str| a.push(s.to_string());
    // IDE indexes 0, 1, 2: the BIOS numbers them 0x80, 0x81, 0x82.
    for (i, d) in l.disks.iter().enumerate() {
        push("-drive");
        push(&format!("file={},format=raw,if=ide,index={i}", d.display()));
    }
    push("-serial");
    push(&format!("file:{}", l.serial.display()));
    for s in ["-display", "none", "-monitor", "none", "-no-reboot"] {
        push(s);
    }
    push("-smp");
    push(&l.cpus.to_string());
    push("-m");
    push(&l.memory_mb.to_string());
    push("-device");
    push("isa-debug-exit,iobase=0xf4,iosize=0x04");
    if kvm {
        for s in ["-enable-kvm", "-cpu", "host,+vmx"] {
            push(s);
        }
    } else {
        for s in ["-accel", "tcg", "-cpu", "max"] {
            push(s);
        }
    }
    a
}

pub fn spawn(l: &Launch) -> Result<Running, String> {
    let qemu = crate::deps::require("qemu-system-x86_64", "qemu-system-x86")?;
    let kvm = nested_kvm();
    if l.verbose || !kvm {
        crate::paths::progress("boot", &accel_line());
    }
    let mut cmd = Command::new(qemu);
    cmd.args(args(l, kvm));
    super::start(cmd, l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    #[test]
    fn command_line() {
        let disks = [PathBuf::from("/i/a.img"), PathBuf::from("/i/b.img")];
        let l = Launch {
            dir: Path::new("/r"),
            disks: &disks,
            cpus: 2,
            memory_mb: 512,
            model: "",
            serial: PathBuf::from("/r/serial.log"),
            log: PathBuf::from("/r/bochsout.txt"),
            interactive: false,
            verbose: false,
        };
        let a = args(&l, false).join(" ");
        assert!(
            a.starts_with("-drive file=/i/a.img,format=raw,if=ide,index=0 -drive file=/i/b.img")
        );
        assert!(a.contains("-serial file:/r/serial.log -display none"));
        assert!(
            a.contains("-no-reboot -smp 2 -m 512 -device isa-debug-exit,iobase=0xf4,iosize=0x04")
        );
        assert!(a.ends_with("-cpu max"));
        assert!(
            args(&l, true)
                .join(" ")
                .ends_with("-enable-kvm -cpu host,+vmx")
        );
    }
}
