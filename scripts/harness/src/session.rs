//! One scenario run: fresh run folder, start the emulator, follow the serial
//! port and the Bochs log, judge, stop the emulator.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::emulator::{self, Launch};
use crate::scenario::{Emulator, Scenario};
use crate::serial::Follower;
use crate::verdict::{Judge, Outcome};

/// How serial lines reach the terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Quiet,
    /// As they are (`scripts/run`).
    Raw,
    /// `[scenario] line` (`scripts/test --verbose`).
    Prefixed,
}

/// A scenario with its disks ready.
#[derive(Debug, Clone)]
pub struct Job {
    pub scenario: Scenario,
    /// The BIOS hard disks in order (0x80 first).
    pub disks: Vec<PathBuf>,
    pub stream: Stream,
    pub verbose: bool,
}

impl Job {
    pub fn dir(&self) -> PathBuf {
        crate::paths::scenario_dir(self.scenario.name)
    }

    pub fn serial_log(&self) -> PathBuf {
        self.dir().join("serial.log")
    }

    fn echo(&self, line: &str) {
        let mut out = std::io::stdout().lock();
        let _ = match self.stream {
            Stream::Quiet => Ok(()),
            Stream::Raw => writeln!(out, "{line}"),
            Stream::Prefixed => writeln!(out, "[{}] {line}", self.scenario.name),
        };
    }

    fn launch<'a>(&'a self, disks: &'a Disks, interactive: bool) -> Launch<'a> {
        let s = &self.scenario;
        let dir = disks.dir.as_path();
        Launch {
            dir,
            disks: &disks.disks,
            cpus: s.cpus,
            memory_mb: s.memory_mb,
            model: s.model,
            serial: dir.join("serial.log"),
            log: dir.join("bochsout.txt"),
            interactive,
            verbose: self.verbose,
        }
    }
}

/// The run folder and the run's own copies of the disk images.
#[derive(Debug)]
struct Disks {
    dir: PathBuf,
    disks: Vec<PathBuf>,
}

/// Removes the files of a run folder, but not its subfolders: they are other
/// scenarios' run folders (`l0-soak/quick` inside `l0-soak`), which may be
/// running.
fn empty_files(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| !t.is_dir()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Empties the run folder and copies the cached images into it: Bochs locks
/// a disk image (`<image>.lock`, left behind when it is SIGKILLed) and the
/// guest may write to it, so runs never share the cached file.
fn fresh_dir(job: &Job) -> Result<Disks, String> {
    let dir = job.dir();
    empty_files(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let copy = |from: &std::path::Path, name: &str| -> Result<std::path::PathBuf, String> {
        let to = dir.join(name);
        std::fs::copy(from, &to)
            .map_err(|e| format!("copy {} to the run folder: {e}", from.display()))?;
        // A user's image (--guest-image) may end inside a cylinder of the
        // geometry Bochs gives it: pad the copy (ours are padded already).
        crate::images::pad_to_cylinders(&to)?;
        Ok(to)
    };
    let disks = job
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| copy(d, &format!("disk{i}.img")))
        .collect::<Result<_, _>>()?;
    Ok(Disks { dir, disks })
}

fn boot_line(job: &Job) -> String {
    let s = &job.scenario;
    let model = match s.emulator {
        Emulator::Bochs => format!(", model {}", s.model),
        Emulator::Qemu => String::new(),
    };
    format!(
        "{}: {}, {} CPU(s), {} MB{model}, timeout {} s, log {}",
        s.name,
        s.emulator.name(),
        s.cpus,
        s.memory_mb,
        s.timeout_s,
        crate::paths::short(&job.serial_log())
    )
}

/// Runs and judges the job.
pub fn execute(job: &Job) -> Outcome {
    let disks = match fresh_dir(job) {
        Ok(d) => d,
        Err(e) => return Outcome::Fail(e),
    };
    let dir = disks.dir.clone();
    if job.stream != Stream::Quiet || job.verbose {
        crate::paths::progress("boot", &boot_line(job));
    }
    let launch = job.launch(&disks, false);
    let mut emu = match emulator::spawn(job.scenario.emulator, &launch) {
        Ok(e) => e,
        Err(e) => return Outcome::Fail(e),
    };
    let mut judge = Judge::new(&job.scenario);
    let mut serial = Follower::new(launch.serial.clone());
    let mut log = Follower::new(launch.log.clone());
    let timeout = Duration::from_secs(job.scenario.timeout_s);
    let start = Instant::now();
    let mut verdict: Option<Outcome> = None;
    let mut exited_by_itself = false;
    while verdict.is_none() {
        let exit = emu.try_exit();
        // After an exit, read everything the emulator left, partial last line included.
        let lines = if exit.is_some() {
            serial.finish()
        } else {
            serial.poll()
        };
        for line in lines {
            job.echo(&line);
            if verdict.is_none() {
                verdict = judge.serial_line(&line);
            }
        }
        if job.scenario.emulator == Emulator::Bochs {
            for line in log.poll() {
                if verdict.is_none() {
                    verdict = judge.bochs_log_line(&line);
                }
            }
        }
        if verdict.is_none()
            && let Some(how) = exit
        {
            exited_by_itself = true;
            verdict = Some(judge.exited(&how));
        }
        if verdict.is_none() && start.elapsed() >= timeout {
            verdict = Some(judge.timed_out(job.scenario.timeout_s));
        }
        if verdict.is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    emu.kill();
    // Lines written between the verdict and the kill, for the reader.
    for line in serial.finish() {
        job.echo(&line);
    }
    match verdict {
        Some(Outcome::Fail(r)) if exited_by_itself => Outcome::Fail(match stderr_tail(&dir) {
            Some(t) => format!("{r}; emulator said: {t}"),
            None => r,
        }),
        Some(v) => v,
        None => Outcome::Fail("no verdict".into()),
    }
}

/// The last non-empty line the emulator wrote on stderr.
fn stderr_tail(dir: &std::path::Path) -> Option<String> {
    let text = std::fs::read(dir.join("emulator.err")).ok()?;
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .map(|l| crate::serial::clean(l.as_bytes()))
        .rfind(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

/// `--keep`: boot and leave it running, no judging. Bochs gets the terminal
/// (its term display); QEMU's serial output is streamed. Returns how it ended.
pub fn keep(job: &Job) -> Result<String, String> {
    let disks = fresh_dir(job)?;
    crate::paths::progress("boot", &boot_line(job));
    let bochs = job.scenario.emulator == Emulator::Bochs;
    let launch = job.launch(&disks, bochs);
    if bochs {
        crate::paths::progress(
            "keep",
            &format!(
                "Bochs takes the terminal (term display); serial output goes to {}; quit Bochs or press Ctrl-C to stop",
                crate::paths::short(&job.serial_log())
            ),
        );
    } else {
        crate::paths::progress("keep", "serial output follows; Ctrl-C stops QEMU");
    }
    let mut emu = emulator::spawn(job.scenario.emulator, &launch)?;
    if bochs {
        return Ok(emu.wait());
    }
    let mut serial = Follower::new(launch.serial.clone());
    loop {
        let exit = emu.try_exit();
        let lines = if exit.is_some() {
            serial.finish()
        } else {
            serial.poll()
        };
        for line in lines {
            job.echo(&line);
        }
        if let Some(how) = exit {
            return Ok(how);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::empty_files;

    #[test]
    fn a_fresh_run_folder_keeps_the_folders_of_nested_scenarios() {
        let dir = std::env::temp_dir().join(format!("harness-fresh-{}", std::process::id()));
        let nested = dir.join("quick");
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::write(dir.join("serial.log"), "old run").unwrap();
        std::fs::write(nested.join("serial.log"), "a running scenario").unwrap();
        empty_files(&dir);
        assert!(!dir.join("serial.log").exists());
        assert_eq!(
            std::fs::read_to_string(nested.join("serial.log")).unwrap(),
            "a running scenario"
        );
        empty_files(&dir.join("missing"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
