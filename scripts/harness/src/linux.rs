//! The Linux guest image: Debian's cloud kernel and busybox-static, fetched
//! with `apt-get download`, an initramfs written by [`crate::cpio`] and a
//! grub-mkrescue image (`images/grub-linux.cfg.template`).
//!
//! Cache, under `target/harness/cache/linux/`:
//! - `debs/`: the downloaded `.deb` files;
//! - `extracted/`: `version`, `vmlinuz`, `busybox` and the KVM modules with
//!   their signatures removed. Once it exists, runs use it without asking apt
//!   (so they also work offline); `rm -rf target/harness/cache/linux/extracted`
//!   picks up a newer kernel, `rm -rf target/harness/cache/linux` fetches all
//!   again.
//!
//! The initramfs: `/init` (the shell script [`INIT`]), `/bin/busybox`,
//! `/dev/console`, and `/lib/modules/{irqbypass,kvm,kvm-intel}.ko` (load them
//! in that order with `insmod`). Its `/init` prints `LINUX: cpus=<n>`, one
//! `LINUX: e820 [0x<start>, 0x<end>] <type>` per firmware memory-map entry,
//! `LINUX: init reached`, runs any `/etc/harness.d/*.sh`, then powers off.
//!
//! The Linux-KVM variant ([`Variant::Kvm`]) adds `/bin/kvmtest` (the static
//! program of `guest/kvmtest`) and `/etc/harness.d/kvm.sh` ([`KVM_SH`]),
//! which loads the KVM modules and runs it; kvmtest powers the machine off.
//! The Linux-KVM-Linux variant ([`Variant::KvmLinux`]) also carries the
//! Linux guest of kvmtest's `linux` group: `/boot/l2-vmlinuz` (this image's
//! own kernel) and `/boot/l2-initrd.img` ([`l2_initramfs`]: kvmtest as
//! `/init`); [`variant`] picks it when the command line asks for that group.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cpio::Archive;
use crate::images::{self, ImageSpec};

/// The metapackage that names the current cloud kernel package.
pub const KERNEL_META: &str = "linux-image-cloud-amd64";
pub const BUSYBOX_PKG: &str = "busybox-static";

/// The KVM modules, in load order (file names inside the kernel package).
pub const MODULES: &[&str] = &["irqbypass.ko", "kvm.ko", "kvm-intel.ko"];

/// Kernel command line (docs/bochs.md: these make Linux boot fast on Bochs).
pub const CMDLINE: &str = "console=ttyS0,115200 quiet loglevel=3 nokaslr mitigations=off \
tsc=reliable no_timer_check cryptomgr.notests=1 \
initcall_blacklist=load_system_certificate_list,trace_eval_init rdinit=/init";

/// The guest's `/init`.
pub const INIT: &str = r#"#!/bin/sh
# /init of the harness's Linux guest (scripts/harness/src/linux.rs).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "LINUX: kernel $(uname -r)"
echo "LINUX: cpus=$(grep -c '^processor' /proc/cpuinfo)"
echo "LINUX: cpus online $(cat /sys/devices/system/cpu/online)"
i=0
while [ -d /sys/firmware/memmap/$i ]; do
    d=/sys/firmware/memmap/$i
    echo "LINUX: e820 [$(cat $d/start), $(cat $d/end)] $(cat $d/type)"
    i=$((i + 1))
done
if [ $i -eq 0 ]; then
    echo "LINUX: no /sys/firmware/memmap; E820 from dmesg"
    dmesg | sed -n -e 's/.*BIOS-e820: \[mem \(0x[0-9a-f]*\)-\(0x[0-9a-f]*\)\] \(.*\)/LINUX: e820 [\1, \2] \3/' \
        -e 's/\] usable$/] System RAM/' -e 's/\] reserved$/] Reserved/' -e '/^LINUX: e820/p'
fi
echo "LINUX: init reached"
for f in /etc/harness.d/*.sh; do
    [ -f "$f" ] && . "$f"
done
echo "LINUX: powering off"
# Let the UART drain before the machine goes away.
sleep 1
poweroff -f
echo "LINUX: FAIL: poweroff returned"
"#;

/// `/etc/harness.d/kvm.sh` of the Linux-KVM image: loads the modules (each
/// `KVM insmod <module>: ok|FAIL`) with the parameters the kernel command
/// line gives them (`kvm-intel.ept=0`, as modprobe would), then runs
/// kvmtest, which prints its checks and powers off.
pub const KVM_SH: &str = r#"# Linux-KVM image (scripts/harness/src/linux.rs): KVM, then kvmtest.
# Module parameters come from the kernel command line as modprobe takes them:
# kvm-intel.ept=0 (or kvm_intel.ept=0) gives ept=0 to kvm-intel.
module_params() {
    for w in $(cat /proc/cmdline); do
        case "$w" in
            "$1".*|"$(echo "$1" | tr - _)".*) echo "${w#*.}" ;;
        esac
    done
}
for m in irqbypass kvm kvm-intel; do
    p=$(module_params $m)
    [ -n "$p" ] && echo "KVM insmod $m: parameters" $p
    if insmod /lib/modules/$m.ko $p; then
        echo "KVM insmod $m: ok"
    else
        echo "KVM insmod $m: FAIL (see the KVM dmesg lines below)"
    fi
done
/bin/kvmtest --poweroff
echo "LINUX: FAIL: kvmtest returned ($?)"
"#;

/// Which Linux guest image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant<'a> {
    /// The plain image: /init prints the CPUs and E820 map and powers off.
    Plain,
    /// With KVM: kvmtest (its ELF) runs after /init's report.
    Kvm(&'a [u8]),
    /// [`Variant::Kvm`] plus the kernel and initramfs of kvmtest's Linux
    /// guest (L2 when this image runs as L1).
    KvmLinux(&'a [u8]),
}

/// Where kvmtest looks for its Linux guest (its `L2_KERNEL`, `L2_INITRD`).
pub const L2_KERNEL: &str = "boot/l2-vmlinuz";
pub const L2_INITRD: &str = "boot/l2-initrd.img";

/// The Linux-KVM image for `kvmtest` and the extra command-line words:
/// with the Linux guest when `kvm_tests=` (the last one, as kvmtest reads
/// it) names the `linux` group.
pub fn variant<'a>(kvmtest: &'a [u8], extra_args: &str) -> Variant<'a> {
    let groups = extra_args
        .split_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix("kvm_tests="));
    match groups {
        Some(g) if g.split(',').any(|x| x == "linux") => Variant::KvmLinux(kvmtest),
        _ => Variant::Kvm(kvmtest),
    }
}

/// The initramfs of kvmtest's Linux guest: `/init` is kvmtest itself
/// (as PID 1 it prints its L2 marker and reboots), `/dev/console` for it.
pub fn l2_initramfs(kvmtest: &[u8]) -> Vec<u8> {
    let mut a = Archive::new();
    a.dir("dev", 0o755);
    a.char_dev("dev/console", 0o600, 5, 1);
    a.file("init", 0o755, kvmtest);
    a.finish()
}

/// What the image is made of.
#[derive(Debug)]
pub struct Parts {
    /// `uname -r`, e.g. `6.1.0-56-cloud-amd64`.
    pub version: String,
    pub vmlinuz: Vec<u8>,
    pub busybox: Vec<u8>,
    /// (file name, contents without signature), in [`MODULES`] order.
    pub modules: Vec<(String, Vec<u8>)>,
}

fn cache() -> PathBuf {
    crate::paths::harness().join("cache/linux")
}

/// The real kernel package named by `apt-cache depends linux-image-cloud-amd64`.
pub fn parse_depends(out: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-cloud-amd64"))
        .map(String::from)
}

/// The marker at the end of a signed module, after the PKCS#7 signature
/// and a 12-byte `struct module_signature`.
const SIG_MAGIC: &[u8] = b"~Module signature appended~\n";

/// The module without its appended signature (unchanged when unsigned).
pub fn strip_module_signature(ko: &[u8]) -> &[u8] {
    let Some(body) = ko.strip_suffix(SIG_MAGIC) else {
        return ko;
    };
    if body.len() < 12 {
        return ko;
    }
    let info = &body[body.len() - 12..];
    // struct module_signature: algo, hash, id_type, signer_len, key_id_len,
    // pad[3], sig_len (big-endian u32).
    let sig_len = u32::from_be_bytes([info[8], info[9], info[10], info[11]]) as usize;
    match (body.len() - 12).checked_sub(sig_len) {
        Some(end) => &ko[..end],
        None => ko,
    }
}

/// The initramfs (an uncompressed newc cpio archive).
pub fn initramfs(p: &Parts, variant: Variant) -> Vec<u8> {
    let mut a = Archive::new();
    for d in ["bin", "dev", "etc", "etc/harness.d", "lib", "lib/modules"] {
        a.dir(d, 0o755);
    }
    for d in ["proc", "sys", "root"] {
        a.dir(d, 0o555);
    }
    a.dir("tmp", 0o1777);
    // The kernel opens /dev/console for /init before devtmpfs is mounted.
    a.char_dev("dev/console", 0o600, 5, 1);
    a.file("bin/busybox", 0o755, &p.busybox);
    a.symlink("bin/sh", "busybox");
    for (name, ko) in &p.modules {
        a.file(&format!("lib/modules/{name}"), 0o644, ko);
    }
    a.file("etc/harness-kernel-version", 0o644, p.version.as_bytes());
    if let Variant::Kvm(kvmtest) | Variant::KvmLinux(kvmtest) = variant {
        a.file("bin/kvmtest", 0o755, kvmtest);
        a.file("etc/harness.d/kvm.sh", 0o644, KVM_SH.as_bytes());
    }
    if let Variant::KvmLinux(kvmtest) = variant {
        a.dir("boot", 0o755);
        a.file(L2_KERNEL, 0o644, &p.vmlinuz);
        a.file(L2_INITRD, 0o644, &l2_initramfs(kvmtest));
    }
    a.file("init", 0o755, INIT.as_bytes());
    a.finish()
}

/// The kernel command line with `extra` words (e.g. `kvm_strict=0`).
pub fn cmdline(extra: &str) -> String {
    match extra.trim() {
        "" => CMDLINE.to_string(),
        e => format!("{CMDLINE} {e}"),
    }
}

/// The bootable second-disk image (built once per content, then cached).
pub fn image(variant: Variant, extra_args: &str, verbose: bool) -> Result<PathBuf, String> {
    let parts = fetch(verbose)?;
    let initrd = initramfs(&parts, variant);
    images::make_with_files(
        &ImageSpec {
            kind: match variant {
                Variant::Plain => "linux",
                Variant::Kvm(_) => "linux-kvm",
                Variant::KvmLinux(_) => "linux-kvm-linux",
            },
            template: "grub-linux.cfg.template",
            kernel_name: "vmlinuz",
            kernel: &parts.vmlinuz,
            cmdline: &cmdline(extra_args),
        },
        &[("initrd.img", &initrd)],
        verbose,
    )
}

fn read(p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("read {}: {e}", p.display()))
}

fn load_extracted(dir: &Path) -> Result<Parts, String> {
    let version = String::from_utf8_lossy(&read(&dir.join("version"))?)
        .trim()
        .to_string();
    let mut modules = Vec::new();
    for m in MODULES {
        modules.push((m.to_string(), read(&dir.join(m))?));
    }
    Ok(Parts {
        version,
        vmlinuz: read(&dir.join("vmlinuz"))?,
        busybox: read(&dir.join("busybox"))?,
        modules,
    })
}

/// The kernel, busybox and modules: from the cache, else from the .deb files
/// (downloaded if needed).
pub fn fetch(verbose: bool) -> Result<Parts, String> {
    let extracted = cache().join("extracted");
    if extracted.join("version").is_file() {
        let parts = load_extracted(&extracted)?;
        if verbose {
            crate::paths::progress(
                "linux",
                &format!(
                    "kernel {} (cached in {})",
                    parts.version,
                    crate::paths::short(&extracted)
                ),
            );
        }
        return Ok(parts);
    }
    let debs = cache().join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| format!("mkdir {}: {e}", debs.display()))?;
    let kernel_deb = kernel_deb(&debs)?;
    let busybox_deb = deb(&debs, BUSYBOX_PKG, BUSYBOX_PKG)?;
    let tmp = cache().join(format!("tmp-{}", std::process::id()));
    let result = extract(&tmp, &kernel_deb, &busybox_deb);
    let _ = std::fs::remove_dir_all(&tmp);
    result?;
    load_extracted(&extracted)
}

/// The newest cached `.deb` whose file name starts with `prefix` and ends with `suffix`.
fn cached(debs: &Path, prefix: &str, suffix: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(debs)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
        })
        .collect();
    found.sort();
    found.pop()
}

/// The real cloud kernel package's .deb. Falls back to any cached cloud
/// kernel when apt cannot name or fetch the current one (offline).
fn kernel_deb(debs: &Path) -> Result<PathBuf, String> {
    // Package file names: linux-image-<ver>-cloud-amd64_<debver>_amd64.deb.
    let any_cached = || {
        cached(debs, "linux-image-", "_amd64.deb")
            .filter(|p| p.to_str().is_some_and(|n| n.contains("-cloud-amd64_")))
    };
    let real = match Command::new("apt-cache")
        .args(["depends", KERNEL_META])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => parse_depends(&String::from_utf8_lossy(&o.stdout)),
        _ => None,
    };
    match real {
        Some(real) => deb(debs, &real, KERNEL_META).or_else(|e| {
            any_cached().ok_or(e).inspect(|p| {
                crate::paths::progress(
                    "linux",
                    &format!("using the cached {}", crate::paths::short(p)),
                )
            })
        }),
        None => any_cached().ok_or_else(|| {
            format!(
                "cannot resolve {KERNEL_META} with `apt-cache depends` (not Debian, or no apt lists: run apt-get update) and no kernel .deb is cached in {}",
                crate::paths::short(debs)
            )
        }),
    }
}

/// The cached .deb of `pkg`, downloaded with `apt-get download` if missing.
fn deb(debs: &Path, pkg: &str, why: &str) -> Result<PathBuf, String> {
    if let Some(p) = cached(debs, &format!("{pkg}_"), ".deb") {
        return Ok(p);
    }
    crate::paths::progress("linux", &format!("apt-get download {pkg} (for {why})"));
    crate::deps::require("apt-get", "apt")?;
    let tmp = debs.join(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("mkdir {}: {e}", tmp.display()))?;
    let out = Command::new("apt-get")
        .args(["download", "-q", pkg])
        .current_dir(&tmp)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run apt-get: {e}"));
    let got = out.and_then(|o| {
        let file = cached(&tmp, &format!("{pkg}_"), ".deb");
        match file {
            Some(f) if o.status.success() => {
                let to = debs.join(f.file_name().unwrap_or_default());
                std::fs::rename(&f, &to)
                    .map(|()| to)
                    .map_err(|e| format!("rename {}: {e}", f.display()))
            }
            _ => Err(format!(
                "apt-get download {pkg} failed ({}; offline? the packages are cached in {} once fetched): {}",
                o.status,
                crate::paths::short(debs),
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .filter(|l| !l.starts_with("W: Download is performed unsandboxed"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            )),
        }
    });
    let _ = std::fs::remove_dir_all(&tmp);
    got
}

fn dpkg_extract(deb: &Path, to: &Path) -> Result<(), String> {
    crate::deps::require("dpkg-deb", "dpkg")?;
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(to)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run dpkg-deb: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "dpkg-deb -x {} failed: {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Finds a file by name below `dir`.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let ft = e.file_type().ok()?;
        if ft.is_dir() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        } else if e.file_name() == name {
            return Some(p);
        }
    }
    None
}

/// Unpacks both packages and fills `extracted/` atomically.
fn extract(tmp: &Path, kernel_deb: &Path, busybox_deb: &Path) -> Result<(), String> {
    crate::paths::progress(
        "linux",
        &format!(
            "extracting {} and {}",
            crate::paths::short(kernel_deb),
            crate::paths::short(busybox_deb)
        ),
    );
    let _ = std::fs::remove_dir_all(tmp);
    let (k, b, out) = (tmp.join("kernel"), tmp.join("busybox"), tmp.join("out"));
    for d in [&k, &b, &out] {
        std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    dpkg_extract(kernel_deb, &k)?;
    dpkg_extract(busybox_deb, &b)?;
    let vmlinuz = std::fs::read_dir(k.join("boot"))
        .map_err(|e| {
            format!(
                "{}: no /boot in the kernel package: {e}",
                kernel_deb.display()
            )
        })?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .ok_or_else(|| format!("{}: no /boot/vmlinuz-*", kernel_deb.display()))?;
    let version = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .unwrap_or_default()
        .to_string();
    let w = |name: &str, data: &[u8]| {
        let p = out.join(name);
        std::fs::write(&p, data).map_err(|e| format!("write {}: {e}", p.display()))
    };
    w("vmlinuz", &read(&vmlinuz)?)?;
    let busybox = b.join("bin/busybox");
    w("busybox", &read(&busybox)?)?;
    let mods = k.join("lib/modules").join(&version);
    for m in MODULES {
        let f = find_file(&mods, m).ok_or_else(|| {
            format!(
                "{m} not found under /lib/modules/{version} of {} (compressed modules are not handled)",
                kernel_deb.display()
            )
        })?;
        w(m, strip_module_signature(&read(&f)?))?;
    }
    // Last, so that a complete folder is recognised by its version file.
    w("version", format!("{version}\n").as_bytes())?;
    let dest = cache().join("extracted");
    match std::fs::rename(&out, &dest) {
        Ok(()) => Ok(()),
        // Another harness got there first.
        Err(_) if dest.join("version").is_file() => Ok(()),
        Err(e) => Err(format!("rename to {}: {e}", dest.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_the_metapackage() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            parse_depends(out).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        let alt = "linux-image-cloud-amd64\n |Depends: linux-image-6.1.0-9-cloud-amd64\n  Depends: linux-image-6.1.0-10-cloud-amd64\n";
        assert_eq!(
            parse_depends(alt).as_deref(),
            Some("linux-image-6.1.0-9-cloud-amd64")
        );
        assert_eq!(parse_depends("foo\n  Depends: libc6\n"), None);
        assert_eq!(parse_depends(""), None);
    }

    fn signed(body: &[u8], sig: &[u8]) -> Vec<u8> {
        let mut v = body.to_vec();
        v.extend_from_slice(sig);
        // algo, hash, id_type=2 (PKCS#7), signer_len, key_id_len, pad[3], sig_len.
        v.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0]);
        v.extend_from_slice(&(sig.len() as u32).to_be_bytes());
        v.extend_from_slice(SIG_MAGIC);
        v
    }

    #[test]
    fn module_signatures_are_removed() {
        let body = b"\x7fELF module body";
        assert_eq!(strip_module_signature(&signed(body, &[0x30; 500])), body);
        assert_eq!(strip_module_signature(&signed(body, &[])), body);
        // Unsigned modules, and nonsense lengths, stay as they are.
        assert_eq!(strip_module_signature(body), body);
        let mut bad = signed(body, &[1, 2, 3]);
        let n = bad.len() - SIG_MAGIC.len() - 4;
        bad[n..n + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(strip_module_signature(&bad), &bad[..]);
    }

    #[test]
    fn init_prints_what_the_scenarios_look_for() {
        for needed in [
            "mount -t proc proc /proc",
            "mount -t sysfs sysfs /sys",
            "mount -t devtmpfs devtmpfs /dev",
            "echo \"LINUX: cpus=$(",
            "/sys/firmware/memmap",
            "echo \"LINUX: e820 [$(cat $d/start), $(cat $d/end)] $(cat $d/type)\"",
            "echo \"LINUX: init reached\"",
            "poweroff -f",
        ] {
            assert!(INIT.contains(needed), "{needed}");
        }
        assert!(INIT.starts_with("#!/bin/sh\n"));
        // The e820 line format is the one the overlap check parses.
        let line = "LINUX: e820 [0x100000, 0x1fedffff] System RAM";
        assert!(crate::check::parse_e820(line).is_some());
    }

    #[test]
    fn kvm_script_loads_the_modules_in_order_then_runs_kvmtest() {
        let at = |s: &str| KVM_SH.find(s).unwrap_or_else(|| panic!("{s}"));
        assert!(KVM_SH.contains("for m in irqbypass kvm kvm-intel; do"));
        assert!(KVM_SH.contains("insmod /lib/modules/$m.ko $p"));
        assert!(KVM_SH.contains("module_params $m"));
        assert!(at("insmod") < at("/bin/kvmtest --poweroff"));
        // The module files the loop names are the ones in the initramfs.
        for m in MODULES {
            let stem = m.trim_end_matches(".ko");
            assert!(KVM_SH.contains(&format!(" {stem}")), "{m}");
        }
        assert_eq!(cmdline(""), CMDLINE);
        assert_eq!(cmdline(" kvm_strict=0 "), format!("{CMDLINE} kvm_strict=0"));
    }

    #[test]
    fn command_line_is_the_measured_one() {
        for w in [
            "console=ttyS0,115200",
            "quiet",
            "nokaslr",
            "mitigations=off",
            "cryptomgr.notests=1",
            "initcall_blacklist=load_system_certificate_list,trace_eval_init",
            "rdinit=/init",
        ] {
            assert!(CMDLINE.split(' ').any(|x| x == w), "{w}");
        }
        assert!(!CMDLINE.contains("  "));
    }

    #[test]
    fn initramfs_has_init_busybox_console_and_modules() {
        let p = Parts {
            version: "6.1.0-1-cloud-amd64".into(),
            vmlinuz: vec![],
            busybox: b"BB".to_vec(),
            modules: MODULES
                .iter()
                .map(|m| (m.to_string(), m.as_bytes().to_vec()))
                .collect(),
        };
        let a = initramfs(&p, Variant::Plain);
        let has = |name: &str| {
            let mut n = name.as_bytes().to_vec();
            n.push(0);
            a.windows(n.len()).any(|w| w == n.as_slice())
        };
        assert!(!has("bin/kvmtest") && !has("etc/harness.d/kvm.sh"));
        let k = initramfs(&p, Variant::Kvm(b"\x7fELF kvmtest"));
        for n in ["bin/kvmtest\0", "etc/harness.d/kvm.sh\0", "\x7fELF kvmtest"] {
            assert!(k.windows(n.len()).any(|w| w == n.as_bytes()), "{n}");
        }
        let no_l2 = b"boot/l2-vmlinuz\0";
        assert!(!k.windows(no_l2.len()).any(|w| w == no_l2));
        let l = initramfs(&p, Variant::KvmLinux(b"\x7fELF kvmtest"));
        let l2 = l2_initramfs(b"\x7fELF kvmtest");
        for n in [
            &b"bin/kvmtest\0"[..],
            b"boot/l2-vmlinuz\0",
            b"boot/l2-initrd.img\0",
            &l2,
        ] {
            assert!(l.windows(n.len()).any(|w| w == n), "{n:?}");
        }
        for n in ["init\0", "dev/console\0", "\x7fELF kvmtest", "TRAILER!!!"] {
            assert!(l2.windows(n.len()).any(|w| w == n.as_bytes()), "{n}");
        }
        for n in [
            "init",
            "bin/busybox",
            "bin/sh",
            "dev/console",
            "lib/modules/kvm.ko",
            "lib/modules/kvm-intel.ko",
            "lib/modules/irqbypass.ko",
            "TRAILER!!!",
        ] {
            assert!(has(n), "{n}");
        }
    }

    #[test]
    fn the_linux_guest_comes_with_kvm_tests_linux() {
        let k = b"kvmtest";
        assert_eq!(variant(k, ""), Variant::Kvm(k));
        assert_eq!(variant(k, "kvm_tests=smp kvm_strict=0"), Variant::Kvm(k));
        assert_eq!(variant(k, "kvm_tests=linux"), Variant::KvmLinux(k));
        assert_eq!(variant(k, "x kvm_tests=smp,linux"), Variant::KvmLinux(k));
        assert_eq!(variant(k, "kvm_tests=linux kvm_tests=smp"), Variant::Kvm(k));
        assert_eq!(variant(k, "kvm_tests=linuxish"), Variant::Kvm(k));
    }

    #[test]
    fn the_grub_template_boots_kernel_and_initrd() {
        let t = std::fs::read_to_string(crate::paths::templates().join("grub-linux.cfg.template"))
            .unwrap();
        let cfg = images::render_grub_cfg(&t, CMDLINE);
        assert!(cfg.contains(&format!("linux /boot/vmlinuz {CMDLINE}")));
        assert!(cfg.contains("initrd /boot/initrd.img"));
        for needed in [
            "serial --unit=0 --speed=115200",
            "terminal_output serial",
            "set timeout=0",
        ] {
            assert!(cfg.contains(needed), "{needed}");
        }
    }
}
