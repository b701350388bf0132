//! The marker lines the harness judges: `KVM param <name>=<value>`,
//! `KVM check <name>: ok [(<detail>)]`, `KVM check <name>: FAIL <why>`,
//! `KVM check <name>: SKIP <why>`, and at the end `KVM TEST PASS ...` or
//! `KVM TEST FAIL: ...`.

use std::io::Write;
use std::sync::Mutex;

/// The check running now, for the watchdog's message.
static CURRENT: Mutex<String> = Mutex::new(String::new());

/// Prints one line at once (the console is the guest's serial port).
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The name of the check that is running (or `starting`).
pub fn current() -> String {
    let c = CURRENT.lock().map(|c| c.clone()).unwrap_or_default();
    if c.is_empty() { "starting".into() } else { c }
}

/// A check that failed stops the group it belongs to.
#[derive(Debug)]
pub struct Aborted;

#[derive(Debug, Default)]
pub struct Report {
    passed: usize,
    failed: Vec<String>,
    skipped: Vec<String>,
}

impl Report {
    /// Marks `name` as running (for the watchdog).
    pub fn start(&self, name: &str) {
        if let Ok(mut c) = CURRENT.lock() {
            *c = name.to_string();
        }
    }

    /// Records the outcome of check `name`: `Ok(detail)` (may be empty) or
    /// `Err(why)`, which aborts the caller's group.
    pub fn check(&mut self, name: &str, res: Result<String, String>) -> Result<(), Aborted> {
        match res {
            Ok(d) if d.is_empty() => {
                say(&format!("KVM check {name}: ok"));
                self.passed += 1;
                Ok(())
            }
            Ok(d) => {
                say(&format!("KVM check {name}: ok ({d})"));
                self.passed += 1;
                Ok(())
            }
            Err(why) => {
                say(&format!("KVM check {name}: FAIL {why}"));
                self.failed.push(format!("{name}: {why}"));
                Err(Aborted)
            }
        }
    }

    /// Runs `f` as check `name`.
    pub fn run(
        &mut self,
        name: &str,
        f: impl FnOnce() -> Result<String, String>,
    ) -> Result<(), Aborted> {
        self.start(name);
        let res = f();
        self.check(name, res)
    }

    pub fn skip(&mut self, name: &str, why: &str) {
        say(&format!("KVM check {name}: SKIP {why}"));
        self.skipped.push(name.to_string());
    }

    pub fn failed(&self) -> bool {
        !self.failed.is_empty()
    }

    /// The last line: `KVM TEST PASS (...)` or `KVM TEST FAIL: ...`.
    pub fn verdict(&self) -> String {
        if self.failed.is_empty() {
            let mut s = format!("KVM TEST PASS ({} checks ok", self.passed);
            if !self.skipped.is_empty() {
                s += &format!(
                    ", {} skipped: {}",
                    self.skipped.len(),
                    self.skipped.join(", ")
                );
            }
            s + ")"
        } else {
            format!(
                "KVM TEST FAIL: {} check(s) failed ({} ok): {}",
                self.failed.len(),
                self.passed,
                self.failed.join("; ")
            )
        }
    }
}
