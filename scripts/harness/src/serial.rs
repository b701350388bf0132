//! Following a growing log file (the serial port file, bochsout.txt) line by
//! line while the emulator writes it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

/// Splits a byte stream into lines: `\n` ends a line, `\r` is dropped,
/// ANSI escape sequences (GRUB's terminal codes) are removed.
#[derive(Default, Debug)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                out.push(clean(&std::mem::take(&mut self.partial)));
            } else {
                self.partial.push(b);
            }
        }
        out
    }

    /// The unterminated rest, if any (at the end of a run).
    pub fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            None
        } else {
            Some(clean(&std::mem::take(&mut self.partial)))
        }
    }
}

/// Lossy UTF-8, without `\r`, ANSI CSI/ESC sequences and other control bytes.
pub fn clean(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // CSI: parameters then one final byte in @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else if let Some('(' | ')') = chars.next() {
                    // Character set designation: one more byte.
                    chars.next();
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Reads what was appended to a file since the last call.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    pos: u64,
    lines: LineSplitter,
}

impl Follower {
    pub fn new(path: PathBuf) -> Self {
        Follower {
            path,
            file: None,
            pos: 0,
            lines: LineSplitter::default(),
        }
    }

    /// New complete lines (the file may not exist yet).
    pub fn poll(&mut self) -> Vec<String> {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let Some(f) = self.file.as_mut() else {
            return Vec::new();
        };
        // A file truncated under us (emulator restarted it): start over.
        if let Ok(meta) = f.metadata()
            && meta.len() < self.pos
        {
            self.pos = 0;
        }
        if f.seek(SeekFrom::Start(self.pos)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let n = f.read_to_end(&mut buf).unwrap_or(0);
        self.pos += n as u64;
        self.lines.push(&buf[..n])
    }

    /// The last lines, including an unterminated one (call after the writer stopped).
    pub fn finish(&mut self) -> Vec<String> {
        let mut v = self.poll();
        v.extend(self.lines.finish());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_pushes() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"CPU(0): VM"), Vec::<String>::new());
        assert_eq!(
            s.push(b"XON done\r\nnext\n"),
            vec!["CPU(0): VMXON done", "next"]
        );
        assert_eq!(s.push(b"tail"), Vec::<String>::new());
        assert_eq!(s.finish().as_deref(), Some("tail"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn strips_escape_sequences() {
        assert_eq!(
            clean(b"\x1b[2J\x1b[1;1Hhello\x1b[0m world\r"),
            "hello world"
        );
        assert_eq!(clean(b"\x1b(Bok"), "ok");
    }

    #[test]
    fn follows_a_growing_file() {
        let dir = std::env::temp_dir().join(format!("harness-follow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("log");
        let mut f = Follower::new(p.clone());
        assert!(f.poll().is_empty());
        std::fs::write(&p, b"one\ntw").unwrap();
        assert_eq!(f.poll(), vec!["one"]);
        std::fs::write(&p, b"one\ntwo\nthree").unwrap();
        assert_eq!(f.poll(), vec!["two"]);
        assert_eq!(f.finish(), vec!["three"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
