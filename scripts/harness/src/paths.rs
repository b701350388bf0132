//! Where things live: the workspace root, the cargo target folder and the
//! harness's own folder `target/harness/`.

use std::path::{Path, PathBuf};

/// The workspace root (`HARNESS_ROOT` from the scripts, else the folder two
/// levels above this crate).
pub fn root() -> PathBuf {
    if let Some(r) = std::env::var_os("HARNESS_ROOT") {
        return PathBuf::from(r);
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.join("../..")
        .canonicalize()
        .unwrap_or_else(|_| here.join("../.."))
}

/// Cargo's target folder (honours `CARGO_TARGET_DIR`).
pub fn target() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => {
            let t = PathBuf::from(t);
            if t.is_absolute() { t } else { root().join(t) }
        }
        None => root().join("target"),
    }
}

/// `target/harness/`: images and per-scenario run folders.
pub fn harness() -> PathBuf {
    target().join("harness")
}

/// The templates folder `images/`.
pub fn templates() -> PathBuf {
    root().join("images")
}

/// The per-scenario run folder (`target/harness/<scenario>/`).
pub fn scenario_dir(name: &str) -> PathBuf {
    harness().join(name)
}

/// A path relative to the workspace root when possible (for short messages).
pub fn short(p: &Path) -> String {
    let root = root();
    p.strip_prefix(&root).unwrap_or(p).display().to_string()
}

/// 64-bit FNV-1a: a small, stable content hash for the image cache.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separate the parts so that ("ab","c") and ("a","bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Prints one progress line on stderr.
pub fn progress(what: &str, msg: &str) {
    eprintln!("{what}: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_stable_and_separates_parts() {
        assert_eq!(fnv1a(&[b"abc"]), fnv1a(&[b"abc"]));
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
    }
}
