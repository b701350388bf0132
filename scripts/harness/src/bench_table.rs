//! The benchmark's figures: LHV's `BENCH op=...` lines parsed, and the
//! table comparing bare Bochs with the run under L0. Pure logic.

/// One `BENCH op=<op> n=<n> cycles_per_exit=<avg> min=<min>
/// l0_exits_per_exit=<x.yy|n/a>` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchLine {
    pub op: String,
    pub n: u64,
    pub cycles: u64,
    pub min: u64,
    /// As printed (`x.yy`), `None` for `n/a`.
    pub l0_exits: Option<String>,
}

/// Parses one line; `None` if it is not a complete BENCH line.
pub fn parse_line(line: &str) -> Option<BenchLine> {
    let rest = &line[line.find("BENCH op=")? + "BENCH ".len()..];
    let field = |key: &str| {
        rest.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    };
    let num = |key: &str| field(key)?.parse::<u64>().ok();
    Some(BenchLine {
        op: field("op")?.to_string(),
        n: num("n")?,
        cycles: num("cycles_per_exit")?,
        min: num("min")?,
        l0_exits: match field("l0_exits_per_exit")? {
            "n/a" => None,
            x => Some(x.to_string()),
        },
    })
}

/// What one side (bare, or under L0) gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Side {
    /// Its BENCH lines.
    Measured(Vec<BenchLine>),
    /// LHV said `SKIP bench: <reason>` (the reason).
    Skipped(String),
    /// The run failed (why).
    Failed(String),
}

impl Side {
    /// A finished run: its BENCH lines from the serial log.
    pub fn from_log(log: &str) -> Side {
        Side::Measured(log.lines().filter_map(parse_line).collect())
    }

    fn line(&self, op: &str) -> Option<&BenchLine> {
        match self {
            Side::Measured(v) => v.iter().find(|l| l.op == op),
            _ => None,
        }
    }

    /// A table cell for the cycles of `op`.
    fn cycles(&self, op: &str) -> String {
        match (self, self.line(op)) {
            (_, Some(l)) => l.cycles.to_string(),
            (Side::Skipped(_), _) => "SKIP".into(),
            (Side::Failed(_), _) => "FAIL".into(),
            (Side::Measured(_), None) => "missing".into(),
        }
    }

    /// A note under the table, if this side did not measure.
    fn note(&self, what: &str) -> Option<String> {
        match self {
            Side::Measured(_) => None,
            Side::Skipped(why) => Some(format!("{what}: SKIP, {why}")),
            Side::Failed(why) => Some(format!("{what}: FAIL {why}")),
        }
    }
}

/// `b / a` with two decimals, or `-`.
fn ratio(a: Option<&BenchLine>, b: Option<&BenchLine>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a.cycles > 0 => {
            let hundredths =
                (u128::from(b.cycles) * 100 + u128::from(a.cycles) / 2) / u128::from(a.cycles);
            format!("{}.{:02}", hundredths / 100, hundredths % 100)
        }
        _ => "-".into(),
    }
}

/// The operations in the order LHV measures them.
pub const OPS: &[&str] = &["vmcall", "cpuid"];

/// The table (Markdown, so that it can go into the README as it is), and
/// one note per side that did not measure.
pub fn table(bare: &Side, l0: &Side) -> String {
    let header = [
        "operation",
        "cycles bare",
        "cycles under L0",
        "ratio",
        "L0 exits per L2 exit",
    ];
    let mut rows: Vec<[String; 5]> = Vec::new();
    for op in OPS {
        let exits = match (l0, l0.line(op)) {
            (_, Some(l)) => l.l0_exits.clone().unwrap_or_else(|| "n/a".into()),
            (Side::Skipped(_), None) => "SKIP".into(),
            (Side::Failed(_), None) => "FAIL".into(),
            (Side::Measured(_), None) => "missing".into(),
        };
        rows.push([
            op.to_string(),
            bare.cycles(op),
            l0.cycles(op),
            ratio(bare.line(op), l0.line(op)),
            exits,
        ]);
    }
    let mut w = header.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let fmt_row = |cells: &[String]| {
        let cells: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let mut out = fmt_row(&header.map(String::from));
    out.push_str(&fmt_row(&w.map(|n| "-".repeat(n))));
    for r in &rows {
        out.push_str(&fmt_row(r));
    }
    let n = [bare, l0].iter().find_map(|s| match s {
        Side::Measured(v) => v.first().map(|l| l.n),
        _ => None,
    });
    if let Some(n) = n {
        out.push_str(&format!(
            "({n} round trips per operation; cycles = Bochs TSC per L2 -> L1 -> L2 round trip)\n"
        ));
    }
    for note in [bare.note("bare Bochs"), l0.note("under L0")]
        .into_iter()
        .flatten()
    {
        out.push_str(&note);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARE: &str = "BENCH: n=1000, L0 absent
BENCH op=vmcall n=1000 cycles_per_exit=168 min=168 l0_exits_per_exit=n/a
BENCH op=cpuid n=1000 cycles_per_exit=172 min=172 l0_exits_per_exit=n/a
BENCH done
";

    #[test]
    fn parses_bench_lines() {
        assert_eq!(
            parse_line("BENCH op=cpuid n=10 cycles_per_exit=5000 min=4990 l0_exits_per_exit=7.25"),
            Some(BenchLine {
                op: "cpuid".into(),
                n: 10,
                cycles: 5000,
                min: 4990,
                l0_exits: Some("7.25".into())
            })
        );
        assert_eq!(parse_line("BENCH done"), None);
        assert_eq!(parse_line("BENCH: n=1000, L0 absent"), None);
        assert_eq!(
            parse_line("BENCH op=vmcall n=1000 cycles_per_exit=x min=1 l0_exits_per_exit=n/a"),
            None
        );
        assert_eq!(parse_line("BENCH op=vmcall n=1000 min=1"), None);
        assert_eq!(
            Side::from_log(BARE),
            Side::Measured(BARE.lines().filter_map(parse_line).collect())
        );
    }

    #[test]
    fn table_with_the_l0_run_skipped() {
        let t = table(
            &Side::from_log(BARE),
            &Side::Skipped("VMX is not available: CPUID.1:ECX.VMX[bit 5] is 0".into()),
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "| operation | cycles bare | cycles under L0 | ratio | L0 exits per L2 exit |"
        );
        assert_eq!(
            lines[2],
            "| vmcall    | 168         | SKIP            | -     | SKIP                 |"
        );
        assert_eq!(
            lines[3],
            "| cpuid     | 172         | SKIP            | -     | SKIP                 |"
        );
        assert!(lines[4].starts_with("(1000 round trips"));
        assert_eq!(
            lines[5],
            "under L0: SKIP, VMX is not available: CPUID.1:ECX.VMX[bit 5] is 0"
        );
    }

    #[test]
    fn table_with_both_runs() {
        let l0 = "BENCH op=vmcall n=1000 cycles_per_exit=50400 min=50000 l0_exits_per_exit=7.00
BENCH op=cpuid n=1000 cycles_per_exit=51600 min=51000 l0_exits_per_exit=7.01";
        let t = table(&Side::from_log(BARE), &Side::from_log(l0));
        assert!(
            t.contains(
                "| vmcall    | 168         | 50400           | 300.00 | 7.00                 |"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "| cpuid     | 172         | 51600           | 300.00 | 7.01                 |"
            ),
            "{t}"
        );
        assert_eq!(t.lines().count(), 5);
    }

    #[test]
    fn failures_and_missing_lines_show() {
        let t = table(
            &Side::Failed("timeout".into()),
            &Side::from_log("BENCH done"),
        );
        assert!(
            t.contains("| vmcall    | FAIL        | missing         | -     | missing"),
            "{t}"
        );
        assert!(t.contains("bare Bochs: FAIL timeout"), "{t}");
    }
}
