//! Starting and stopping emulators. Each emulator runs in its own process
//! group (Ctrl-C on the terminal does not reach it) with a small watchdog
//! shell that SIGKILLs it if the harness dies, so that no Bochs is left
//! behind (Bochs ignores SIGTERM).

pub mod bochs;
pub mod qemu;

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

use crate::scenario::Emulator;

/// Most bytes kept of an emulator's stdout/stderr (the rest is read and dropped).
const DRAIN_CAP: u64 = 4 << 20;

/// What to boot and where to put the files.
#[derive(Debug)]
pub struct Launch<'a> {
    pub dir: &'a Path,
    /// The BIOS hard disks in order (0x80, 0x81, ...): one to three.
    pub disks: &'a [PathBuf],
    pub cpus: u32,
    pub memory_mb: u32,
    pub model: &'a str,
    pub serial: PathBuf,
    /// Bochs's log file (bochsout.txt).
    pub log: PathBuf,
    /// Leave the terminal to the emulator (`--keep`).
    pub interactive: bool,
    pub verbose: bool,
}

/// A running emulator.
#[derive(Debug)]
pub struct Running {
    child: Child,
    guard: Option<Child>,
    drains: Vec<JoinHandle<()>>,
    exited: Option<String>,
}

/// Starts the emulator.
pub fn spawn(emulator: Emulator, l: &Launch) -> Result<Running, String> {
    match emulator {
        Emulator::Bochs => bochs::spawn(l),
        Emulator::Qemu => qemu::spawn(l),
    }
}

/// Spawns a prepared command: stdin from /dev/null, stdout/stderr drained
/// into files in the run folder (or the terminal when interactive).
fn start(mut cmd: Command, l: &Launch) -> Result<Running, String> {
    if l.verbose {
        crate::paths::progress("exec", &format!("{cmd:?}"));
    }
    cmd.current_dir(l.dir);
    if !l.interactive {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let pid = child.id();
    if l.verbose {
        crate::paths::progress("exec", &format!("emulator pid {pid}"));
    }
    let mut drains = Vec::new();
    if let Some(out) = child.stdout.take() {
        drains.push(drain(out, l.dir.join("emulator.out")));
    }
    if let Some(err) = child.stderr.take() {
        drains.push(drain_stderr(err, l.dir.join("emulator.err")));
    }
    let guard = watchdog(pid);
    Ok(Running {
        child,
        guard,
        drains,
        exited: None,
    })
}

/// Keeps reading a pipe, saving the first [`DRAIN_CAP`] bytes.
fn drain(from: impl Read + Send + 'static, to: PathBuf) -> JoinHandle<()> {
    std::thread::spawn(move || copy_capped(from, File::create(&to).ok(), |_| {}))
}

/// Like [`drain`], for the emulator's stderr: when Bochs's term display
/// says which pseudo-terminal it draws on, that terminal is drained too.
/// Bochs (built with its debugger, as Debian's is) keeps stdin and stdout
/// for the debugger and opens a pty of its own for the screen; nobody
/// reads that pty, so once its buffer is full (after some minutes of
/// screen updates) Bochs blocks for ever in write() and the guest stops.
fn drain_stderr(from: impl Read + Send + 'static, to: PathBuf) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut screen: Option<JoinHandle<()>> = None;
        let mut line = Vec::new();
        copy_capped(from, File::create(&to).ok(), |chunk| {
            for &b in chunk {
                if b != b'\n' {
                    line.push(b);
                    continue;
                }
                if screen.is_none()
                    && let Some(path) = bochs_screen(&String::from_utf8_lossy(&line))
                {
                    screen = drain_tty(Path::new(path));
                }
                line.clear();
            }
        });
        // The emulator has closed stderr: it is gone, and so is the pty's
        // master side, which ends the screen drain.
        if let Some(s) = screen {
            let _ = s.join();
        }
    })
}

/// The pty Bochs's term display draws on, from the line it prints on
/// stderr at start-up: `Bochs connected to screen "/dev/pts/N"`.
fn bochs_screen(line: &str) -> Option<&str> {
    let rest = line.trim().strip_prefix("Bochs connected to screen \"")?;
    let path = rest.strip_suffix('"')?;
    path.starts_with("/dev/").then_some(path)
}

/// Reads (and drops) what is written to the terminal `path` until its
/// other side closes. Opened without becoming the harness's controlling
/// terminal.
fn drain_tty(path: &Path) -> Option<JoinHandle<()>> {
    use std::os::unix::fs::OpenOptionsExt;
    const O_NOCTTY: i32 = 0o400;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NOCTTY)
        .open(path)
        .ok()?;
    Some(std::thread::spawn(move || copy_capped(tty, None, |_| {})))
}

/// Copies `from` to `file` (its first [`DRAIN_CAP`] bytes) until end of
/// file or an error, showing every chunk to `seen`.
fn copy_capped(mut from: impl Read, mut file: Option<File>, mut seen: impl FnMut(&[u8])) {
    let mut kept = 0u64;
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A pty whose other side has closed reads as an error (EIO).
            Ok(0) | Err(_) => break,
            Ok(n) => {
                seen(&buf[..n]);
                if let Some(f) = file.as_mut()
                    && kept < DRAIN_CAP
                {
                    let _ = f.write_all(&buf[..n]);
                    kept += n as u64;
                }
            }
        }
    }
}

/// A shell in its own process group that SIGKILLs `pid` once the harness
/// is gone (killed by Ctrl-C or anything else) and ends with the emulator.
fn watchdog(pid: u32) -> Option<Child> {
    // A zombie harness (dead, not yet reaped by its parent) counts as gone.
    let script = r#"alive() { kill -0 "$1" 2>/dev/null && ! grep -qs '^State:[[:space:]]*Z' "/proc/$1/status"; }
while alive "$2"; do
  if ! alive "$1"; then kill -9 "$2" 2>/dev/null; exit 0; fi
  sleep 1
done"#;
    Command::new("sh")
        .args(["-c", script, "harness-watchdog"])
        .arg(std::process::id().to_string())
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ok()
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

impl Running {
    /// `Some(description)` once the emulator has exited by itself.
    pub fn try_exit(&mut self) -> Option<String> {
        if self.exited.is_none()
            && let Ok(Some(st)) = self.child.try_wait()
        {
            self.exited = Some(describe(st));
        }
        self.exited.clone()
    }

    /// Waits for the emulator to exit by itself (interactive runs).
    pub fn wait(&mut self) -> String {
        match self.child.wait() {
            Ok(st) => describe(st),
            Err(e) => format!("wait failed: {e}"),
        }
    }

    /// SIGKILL (if still running), reap, stop the watchdog and the drains.
    pub fn kill(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.exited = Some("killed by the harness".into());
        }
        if let Some(mut g) = self.guard.take() {
            let _ = g.kill();
            let _ = g.wait();
        }
        for d in self.drains.drain(..) {
            let _ = d.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_pty_bochs_draws_its_screen_on() {
        assert_eq!(
            bochs_screen("Bochs connected to screen \"/dev/pts/3\""),
            Some("/dev/pts/3")
        );
        assert_eq!(
            bochs_screen("Bochs connected to screen \"/dev/pts/12\"\r"),
            Some("/dev/pts/12")
        );
        assert_eq!(
            bochs_screen("00000000000i[      ] installing term module"),
            None
        );
        assert_eq!(bochs_screen("Bochs connected to screen \"/tmp/x"), None);
        assert_eq!(bochs_screen("Bochs connected to screen \"pts/3\""), None);
    }

    #[test]
    fn a_tty_drain_ends_when_its_writer_closes() {
        // A pipe stands in for the pty: the drain must end at end of file.
        let (r, w) = std::io::pipe().unwrap();
        let t = std::thread::spawn(move || copy_capped(r, None, |_| {}));
        let mut w = w;
        w.write_all(&[b'x'; 100_000]).unwrap();
        drop(w);
        t.join().unwrap();
    }
}
