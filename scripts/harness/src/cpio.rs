//! A writer for the cpio "newc" format (what Linux unpacks as an initramfs),
//! so that the harness needs no `cpio` binary and makes device nodes without
//! being root.
//!
//! Each entry is a 110-byte ASCII header (`070701` and thirteen 8-digit hex
//! fields), the NUL-terminated name padded to 4 bytes, and the data padded to
//! 4 bytes; the archive ends with the entry `TRAILER!!!`. Owners are 0 and
//! times are 0, so the same input always gives the same bytes.

const MAGIC: &str = "070701";

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// An archive being built in memory.
#[derive(Debug, Default)]
pub struct Archive {
    out: Vec<u8>,
    next_ino: u32,
    finished: bool,
}

impl Archive {
    pub fn new() -> Self {
        Archive {
            out: Vec::new(),
            next_ino: 1,
            finished: false,
        }
    }

    /// A directory (give parents before children).
    pub fn dir(&mut self, name: &str, perm: u32) {
        self.entry(name, S_IFDIR | (perm & 0o7777), 2, (0, 0), &[]);
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, S_IFREG | (perm & 0o7777), 1, (0, 0), data);
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    /// A character device node.
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[]);
    }

    /// Appends the trailer and returns the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.trailer();
        self.out
    }

    fn trailer(&mut self) {
        if !self.finished {
            self.finished = true;
            self.raw_entry("TRAILER!!!", 0, 0, 1, (0, 0), &[]);
        }
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        assert!(!self.finished, "cpio: entry after the trailer");
        let name = name.trim_start_matches('/');
        assert!(!name.is_empty(), "cpio: empty name");
        let ino = self.next_ino;
        self.next_ino += 1;
        self.raw_entry(name, ino, mode, nlink, rdev, data);
    }

    fn raw_entry(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) {
        let size = u32::try_from(data.len()).expect("cpio newc: file larger than 4 GiB");
        let namesize = u32::try_from(name.len() + 1).expect("cpio newc: name too long");
        let fields = [
            ino, mode, 0, // uid
            0, // gid
            nlink, 0, // mtime
            size, 0, // devmajor
            0, // devminor
            rdev.0, rdev.1, namesize, 0, // check
        ];
        self.out.extend_from_slice(MAGIC.as_bytes());
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad4();
        self.out.extend_from_slice(data);
        self.pad4();
    }

    fn pad4(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parsed entry: (name, mode, nlink, rdevmajor, rdevminor, data).
    type Parsed = (String, u32, u32, u32, u32, Vec<u8>);

    /// A small newc reader, independent of the writer's code.
    fn parse(a: &[u8]) -> Vec<Parsed> {
        let mut out = Vec::new();
        let mut p = 0;
        loop {
            assert_eq!(&a[p..p + 6], b"070701", "magic at {p}");
            let field = |i: usize| {
                let s = std::str::from_utf8(&a[p + 6 + 8 * i..p + 14 + 8 * i]).unwrap();
                u32::from_str_radix(s, 16).unwrap()
            };
            let (mode, nlink, size, rmaj, rmin, namesize) =
                (field(1), field(4), field(6), field(9), field(10), field(11));
            let name_start = p + 110;
            let name = &a[name_start..name_start + namesize as usize];
            assert_eq!(name.last(), Some(&0), "name is NUL-terminated");
            let name = String::from_utf8(name[..name.len() - 1].to_vec()).unwrap();
            let data_start = (name_start + namesize as usize).next_multiple_of(4);
            let data = a[data_start..data_start + size as usize].to_vec();
            p = (data_start + size as usize).next_multiple_of(4);
            if name == "TRAILER!!!" {
                assert_eq!(p, a.len(), "nothing after the trailer");
                return out;
            }
            out.push((name, mode, nlink, rmaj, rmin, data));
        }
    }

    #[test]
    fn empty_archive_is_just_the_trailer() {
        let a = Archive::new().finish();
        assert_eq!(a.len() % 4, 0);
        assert!(a.starts_with(b"070701"));
        assert_eq!(&a[110..121], b"TRAILER!!!\0");
        assert!(parse(&a).is_empty());
    }

    #[test]
    fn header_layout_is_exact() {
        let mut a = Archive::new();
        a.file("/init", 0o755, b"hi\n");
        let a = a.finish();
        let hdr = std::str::from_utf8(&a[..110]).unwrap();
        assert_eq!(
            hdr,
            concat!(
                "070701", "00000001", "000081ed", "00000000", "00000000", "00000001", "00000000",
                "00000003", "00000000", "00000000", "00000000", "00000000", "00000005", "00000000"
            )
        );
        // 110 + "init\0" = 115, padded to 116; then the data.
        assert_eq!(&a[110..116], b"init\0\0");
        assert_eq!(&a[116..120], b"hi\n\0");
    }

    #[test]
    fn round_trip_of_every_kind() {
        let mut a = Archive::new();
        a.dir("dev", 0o755);
        a.char_dev("dev/console", 0o600, 5, 1);
        a.dir("bin", 0o755);
        a.file("bin/busybox", 0o755, &[0x7f, b'E', b'L', b'F', 1]);
        a.symlink("bin/sh", "busybox");
        a.file("empty", 0o644, &[]);
        let got = parse(&a.finish());
        let names: Vec<_> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "bin",
                "bin/busybox",
                "bin/sh",
                "empty"
            ]
        );
        assert_eq!(got[0].1, 0o040_755);
        assert_eq!(got[0].2, 2);
        assert_eq!((got[1].1, got[1].3, got[1].4), (0o020_600, 5, 1));
        assert_eq!(got[3].1, 0o100_755);
        assert_eq!(got[3].5, [0x7f, b'E', b'L', b'F', 1]);
        assert_eq!(got[4].1, 0o120_777);
        assert_eq!(got[4].5, b"busybox");
        assert!(got[5].5.is_empty());
    }

    #[test]
    fn padding_for_all_name_and_data_lengths() {
        for n in 1..9 {
            for d in 0..9 {
                let name = "x".repeat(n);
                let data = vec![0xa5u8; d];
                let mut a = Archive::new();
                a.file(&name, 0o644, &data);
                a.file("after", 0o644, b"z");
                let got = parse(&a.finish());
                assert_eq!(got[0].0, name);
                assert_eq!(got[0].5, data);
                assert_eq!(got[1].0, "after");
                assert_eq!(got[1].5, b"z");
            }
        }
    }

    #[test]
    fn inodes_are_distinct_and_output_is_deterministic() {
        let make = || {
            let mut a = Archive::new();
            a.file("a", 0o644, b"1");
            a.file("b", 0o644, b"2");
            a.finish()
        };
        let a = make();
        assert_eq!(a, make());
        let ino = |at: usize| &a[at + 6..at + 14];
        let second = (110 + 2usize).next_multiple_of(4) + 4;
        assert_ne!(ino(0), ino(second));
    }
}
