//! Bootable GRUB disk images made with grub-mkrescue, cached by content under
//! `target/harness/images/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Bochs derives a CHS geometry (16 heads, 63 sectors) from a flat disk's
/// size; images are padded to a whole number of cylinders so that no sector
/// of the image falls outside it.
pub const CYLINDER_BYTES: u64 = 16 * 63 * 512;

/// Bump when the image recipe changes (invalidates the cache).
const RECIPE: &str = "grub-mkrescue v1; --locales= --themes= --fonts=; padded to 16*63*512";

/// One image to make: a GRUB config template from `images/`, the kernel file
/// to put at `/boot/<kernel_name>`, and its command line.
#[derive(Debug)]
pub struct ImageSpec<'a> {
    pub kind: &'a str,
    pub template: &'a str,
    pub kernel_name: &'a str,
    pub kernel: &'a [u8],
    pub cmdline: &'a str,
}

/// Fills the GRUB config template: `@CMDLINE@` is the kernel's command
/// line, `@GUEST_DISK@` GRUB's name of the disk whose first sector L0 boots
/// (`hd1` for `boot_drive=0x81`, `hd2` for `0x82`; GRUB numbers BIOS hard
/// disks from 0x80), so the module and L0's `boot_drive` always agree.
pub fn render_grub_cfg(template: &str, cmdline: &str) -> String {
    template
        .replace("@CMDLINE@", cmdline)
        .replace("@GUEST_DISK@", &format!("hd{}", guest_disk(cmdline)))
}

/// GRUB's disk number of the last `boot_drive=<hex>` word (L0 reads the
/// last one, `shared::cmdline::get`), the second disk when there is none
/// or it is not a hard disk.
fn guest_disk(cmdline: &str) -> u64 {
    cmdline
        .split_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix("boot_drive="))
        .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        .and_then(|d| d.checked_sub(0x80))
        .filter(|n| *n < 0x80)
        .unwrap_or(1)
}

/// The BIOS drive L0 boots its guest from: the second disk.
pub const GUEST_DRIVE: u8 = 0x81;

/// The BIOS drive the second L0 of an L0-on-L0 run (on the second disk)
/// boots its guest from: the third disk.
pub const INNER_GUEST_DRIVE: u8 = 0x82;

/// The L0 command line. The second BIOS disk (0x81) holds the guest;
/// COM1 is at 0x3f8.
pub fn l0_cmdline(extra: &str) -> String {
    l0_cmdline_booting(GUEST_DRIVE, extra)
}

/// The L0 command line of an L0 that boots BIOS drive `drive`.
pub fn l0_cmdline_booting(drive: u8, extra: &str) -> String {
    join_words(&[&format!("boot_drive={drive:#x}"), "serial=0x3f8", extra])
}

/// The LHV command line.
pub fn lhv_cmdline(opt: u64, extra: &str) -> String {
    join_words(&[&format!("lhv_opt={opt:#x}"), extra])
}

/// The LHV command line of a standalone reproducer image.
pub fn repro_cmdline(name: &str) -> String {
    lhv_cmdline(0, &format!("lhv_repro={name}"))
}

/// Where `repro-image` puts the image of reproducer `name`.
pub fn repro_image_path(name: &str) -> PathBuf {
    crate::paths::harness().join(format!("repro-{name}.img"))
}

fn join_words(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Makes (or finds in the cache) the image; returns its path.
pub fn make(spec: &ImageSpec, verbose: bool) -> Result<PathBuf, String> {
    make_with_files(spec, &[], verbose)
}

/// [`make`] with more files under `/boot/` (name, contents), e.g. a Linux
/// guest's `initrd.img`.
pub fn make_with_files(
    spec: &ImageSpec,
    extra: &[(&str, &[u8])],
    verbose: bool,
) -> Result<PathBuf, String> {
    let tpath = crate::paths::templates().join(spec.template);
    let template = std::fs::read_to_string(&tpath)
        .map_err(|e| format!("cannot read {}: {e}", tpath.display()))?;
    let cfg = render_grub_cfg(&template, spec.cmdline);
    let mut parts: Vec<&[u8]> = vec![
        RECIPE.as_bytes(),
        spec.kernel_name.as_bytes(),
        cfg.as_bytes(),
        spec.kernel,
    ];
    for (name, data) in extra {
        parts.extend([name.as_bytes(), *data]);
    }
    let key = crate::paths::fnv1a(&parts);
    let dir = crate::paths::harness().join("images");
    let img = dir.join(format!("{}-{key:016x}.img", spec.kind));
    if img.is_file() {
        if verbose {
            crate::paths::progress("image", &format!("{} (cached)", crate::paths::short(&img)));
        }
        return Ok(img);
    }
    crate::paths::progress(
        "image",
        &format!(
            "grub-mkrescue: {} image, command line `{}`",
            spec.kind, spec.cmdline
        ),
    );
    crate::deps::require("grub-mkrescue", "grub-common")?;
    crate::deps::require("xorriso", "xorriso")?;
    let tmp = dir.join(format!("tmp-{key:016x}-{}", std::process::id()));
    let result = build_in(&tmp, &cfg, spec, extra, &img);
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|()| img)
}

fn build_in(
    tmp: &Path,
    cfg: &str,
    spec: &ImageSpec,
    extra: &[(&str, &[u8])],
    img: &Path,
) -> Result<(), String> {
    let tree = tmp.join("tree");
    let grub = tree.join("boot/grub");
    std::fs::create_dir_all(&grub).map_err(|e| format!("mkdir {}: {e}", grub.display()))?;
    let w = |p: PathBuf, data: &[u8]| {
        std::fs::write(&p, data).map_err(|e| format!("write {}: {e}", p.display()))
    };
    w(grub.join("grub.cfg"), cfg.as_bytes())?;
    w(tree.join("boot").join(spec.kernel_name), spec.kernel)?;
    for (name, data) in extra {
        w(tree.join("boot").join(name), data)?;
    }
    let out_tmp = tmp.join("out.img");
    let out = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&out_tmp)
        .args(["--locales=", "--themes=", "--fonts="])
        .arg(&tree)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run grub-mkrescue: {e}"))?;
    if !out.status.success() || !out_tmp.is_file() {
        return Err(format!(
            "grub-mkrescue failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    pad_to_cylinders(&out_tmp)?;
    // Atomic: parallel or repeated runs never see half an image.
    std::fs::rename(&out_tmp, img).map_err(|e| format!("rename to {}: {e}", img.display()))
}

/// The padded size for a disk image of `len` bytes.
pub fn padded_len(len: u64) -> u64 {
    len.div_ceil(CYLINDER_BYTES) * CYLINDER_BYTES
}

/// Pads the file to [`padded_len`] (no change when it is already).
pub fn pad_to_cylinders(p: &Path) -> Result<(), String> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(p)
        .map_err(|e| format!("open {}: {e}", p.display()))?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if padded_len(len) == len {
        return Ok(());
    }
    f.set_len(padded_len(len))
        .map_err(|e| format!("pad {}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        assert_eq!(l0_cmdline(""), "boot_drive=0x81 serial=0x3f8");
        assert_eq!(
            l0_cmdline(" mem=256 "),
            "boot_drive=0x81 serial=0x3f8 mem=256"
        );
        assert_eq!(
            l0_cmdline_booting(INNER_GUEST_DRIVE, "hypercalls=stats"),
            "boot_drive=0x82 serial=0x3f8 hypercalls=stats"
        );
        assert_eq!(lhv_cmdline(0, ""), "lhv_opt=0x0");
        assert_eq!(
            lhv_cmdline(0x1f, "lhv_repro=x mode=probe"),
            "lhv_opt=0x1f lhv_repro=x mode=probe"
        );
    }

    #[test]
    fn repro_images() {
        assert_eq!(
            repro_cmdline("kvm216212"),
            "lhv_opt=0x0 lhv_repro=kvm216212"
        );
        assert!(repro_image_path("kvm216212").ends_with("harness/repro-kvm216212.img"));
    }

    #[test]
    fn padding() {
        assert_eq!(padded_len(1), CYLINDER_BYTES);
        assert_eq!(padded_len(CYLINDER_BYTES), CYLINDER_BYTES);
        assert_eq!(padded_len(CYLINDER_BYTES + 1), 2 * CYLINDER_BYTES);
    }

    #[test]
    fn real_templates_have_what_grub_needs() {
        let dir = crate::paths::templates();
        for (t, kernel) in [
            ("grub-l0.cfg.template", "/boot/hypervisor"),
            ("grub-lhv.cfg.template", "/boot/lhv"),
        ] {
            let cfg = render_grub_cfg(
                &std::fs::read_to_string(dir.join(t)).unwrap(),
                "lhv_opt=0x0",
            );
            assert!(
                cfg.contains(&format!("multiboot2 {kernel} lhv_opt=0x0")),
                "{t}"
            );
            for needed in [
                "serial --unit=0 --speed=115200",
                "terminal_output serial",
                "set timeout=0",
            ] {
                assert!(cfg.contains(needed), "{t}: {needed}");
            }
        }
        let l0 = std::fs::read_to_string(dir.join("grub-l0.cfg.template")).unwrap();
        assert!(render_grub_cfg(&l0, &l0_cmdline("")).contains("module2 --nounzip (hd1)+1"));
        let inner = render_grub_cfg(&l0, &l0_cmdline_booting(INNER_GUEST_DRIVE, ""));
        assert!(inner.contains("module2 --nounzip (hd2)+1"), "{inner}");
        assert!(!inner.contains('@'));
    }

    #[test]
    fn guest_disk_follows_boot_drive() {
        assert_eq!(guest_disk("boot_drive=0x81 serial=0x3f8"), 1);
        assert_eq!(
            guest_disk("boot_drive=0x81 serial=0x3f8 boot_drive=0x82"),
            2
        );
        assert_eq!(guest_disk("boot_drive=80"), 0);
        assert_eq!(guest_disk("serial=0x3f8"), 1);
        assert_eq!(guest_disk("boot_drive=0x00"), 1);
        assert_eq!(guest_disk("boot_drive=zz"), 1);
    }
}
