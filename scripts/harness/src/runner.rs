//! Running many scenarios in parallel (a fixed number of worker threads) and
//! printing the result table and the summary line.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::session::{self, Job};
use crate::verdict::Outcome;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail(String),
    Skip(String),
}

impl Status {
    pub fn word(&self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail(_) => "FAIL",
            Status::Skip(_) => "SKIP",
        }
    }
}

/// What to do for one scenario.
#[derive(Debug, Clone)]
pub enum Task {
    Run(Job),
    /// Decided without running (SKIP, or FAIL such as a broken build).
    Decided(&'static str, Status),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub status: Status,
    pub secs: f64,
    pub log: Option<PathBuf>,
}

/// The default worker count: the machine's cores.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs the tasks with `workers` threads; rows come back in task order.
/// A line is printed as each scenario finishes.
pub fn run_all(tasks: Vec<Task>, workers: usize) -> Vec<Row> {
    let n = tasks.len();
    let queue: Arc<Mutex<VecDeque<(usize, Task)>>> =
        Arc::new(Mutex::new(tasks.into_iter().enumerate().collect()));
    let rows: Arc<Mutex<Vec<Option<Row>>>> = Arc::new(Mutex::new(vec![None; n]));
    let threads: Vec<_> = (0..workers.clamp(1, n.max(1)))
        .map(|_| {
            let queue = Arc::clone(&queue);
            let rows = Arc::clone(&rows);
            std::thread::spawn(move || {
                loop {
                    let next = queue.lock().map(|mut q| q.pop_front()).ok().flatten();
                    let Some((i, task)) = next else { break };
                    let row = run_one(task);
                    eprintln!("{}", finish_line(&row));
                    if let Ok(mut r) = rows.lock() {
                        r[i] = Some(row);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let rows = Arc::try_unwrap(rows)
        .map(|m| m.into_inner().unwrap_or_default())
        .unwrap_or_default();
    rows.into_iter().flatten().collect()
}

fn run_one(task: Task) -> Row {
    match task {
        Task::Decided(name, status) => Row {
            name: name.into(),
            status,
            secs: 0.0,
            log: None,
        },
        Task::Run(job) => {
            let start = Instant::now();
            let status = match session::execute(&job) {
                Outcome::Pass => Status::Pass,
                Outcome::Fail(r) => Status::Fail(r),
                Outcome::Skip(r) => Status::Skip(r),
            };
            Row {
                name: job.scenario.name.into(),
                status,
                secs: start.elapsed().as_secs_f64(),
                log: Some(job.serial_log()),
            }
        }
    }
}

/// `PASS name` / `FAIL name: reason` / `SKIP name: reason`.
pub fn finish_line(r: &Row) -> String {
    match &r.status {
        Status::Pass => format!("PASS {}", r.name),
        Status::Fail(why) | Status::Skip(why) => format!("{} {}: {why}", r.status.word(), r.name),
    }
}

/// The result table (scenario, result, seconds, log file).
pub fn table(rows: &[Row]) -> String {
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(8);
    let mut out = format!("{:<name_w$}  RESULT  SECONDS  LOG\n", "SCENARIO");
    for r in rows {
        let log = r.log.as_deref().map_or("-".into(), crate::paths::short);
        out.push_str(&format!(
            "{:<name_w$}  {:<6}  {:>7.1}  {log}\n",
            r.name,
            r.status.word(),
            r.secs
        ));
    }
    out
}

/// `N passed, M failed` with `, K skipped` when some were skipped.
pub fn summary_line(rows: &[Row]) -> String {
    let count = |w: &str| rows.iter().filter(|r| r.status.word() == w).count();
    let (p, f, s) = (count("PASS"), count("FAIL"), count("SKIP"));
    if s > 0 {
        format!("{p} passed, {f} failed, {s} skipped")
    } else {
        format!("{p} passed, {f} failed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, status: Status) -> Row {
        Row {
            name: name.into(),
            status,
            secs: 1.25,
            log: None,
        }
    }

    #[test]
    fn summary() {
        let rows = vec![row("a", Status::Pass), row("b", Status::Fail("x".into()))];
        assert_eq!(summary_line(&rows), "1 passed, 1 failed");
        let mut rows = rows;
        rows.push(row("c", Status::Skip("no qemu".into())));
        assert_eq!(summary_line(&rows), "1 passed, 1 failed, 1 skipped");
        assert_eq!(summary_line(&[]), "0 passed, 0 failed");
    }

    #[test]
    fn table_and_lines() {
        let rows = vec![
            row("l0-vmxon", Status::Pass),
            row("x", Status::Skip("why".into())),
        ];
        let t = table(&rows);
        assert_eq!(t.lines().next(), Some("SCENARIO  RESULT  SECONDS  LOG"));
        assert_eq!(t.lines().nth(1), Some("l0-vmxon  PASS        1.2  -"));
        assert_eq!(finish_line(&rows[1]), "SKIP x: why");
    }

    #[test]
    fn decided_tasks_keep_their_order() {
        let tasks = vec![
            Task::Decided("one", Status::Skip("a".into())),
            Task::Decided("two", Status::Fail("b".into())),
            Task::Decided("three", Status::Pass),
        ];
        let rows = run_all(tasks, 2);
        let names: Vec<_> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["one", "two", "three"]);
    }
}
