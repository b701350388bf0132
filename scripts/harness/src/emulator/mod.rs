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
    pub disk0: &'a Path,
    pub disk1: Option<&'a Path>,
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
        drains.push(drain(err, l.dir.join("emulator.err")));
    }
    let guard = watchdog(pid);
    Ok(Running {
        child,
        guard,
        drains,
        exited: None,
    })
}

/// Keeps reading a pipe (Bochs blocks for ever when its term display output
/// is not read), saving the first [`DRAIN_CAP`] bytes.
fn drain(mut from: impl Read + Send + 'static, to: PathBuf) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut file = File::create(&to).ok();
        let mut kept = 0u64;
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(f) = file.as_mut()
                        && kept < DRAIN_CAP
                    {
                        let _ = f.write_all(&buf[..n]);
                        kept += n as u64;
                    }
                }
            }
        }
    })
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
