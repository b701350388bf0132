//! The benchmark's figures: LHV's `BENCH op=...` and `BENCH ept02 ...`
//! lines parsed, and the tables comparing bare Bochs with the run under
//! L0 (round trips; then nested EPT's figures, which only L0 has). Pure
//! logic.

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

/// One `BENCH ept02 case=<case> value=<x.yy|n/a> <key=value>...` line:
/// a nested-EPT figure of L0 (`n/a` on bare Bochs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ept02Line {
    pub case: String,
    /// As printed, `None` for `n/a`.
    pub value: Option<String>,
    /// The rest of the line (the counts behind the value).
    pub detail: String,
}

/// Parses one `BENCH ept02` line; `None` if it is not one.
pub fn parse_ept02(line: &str) -> Option<Ept02Line> {
    let rest = &line[line.find("BENCH ept02 ")? + "BENCH ept02 ".len()..];
    let mut words = rest.split_whitespace();
    let case = words.next()?.strip_prefix("case=")?;
    let value = words.next()?.strip_prefix("value=")?;
    if case.is_empty() || value.is_empty() {
        return None;
    }
    Some(Ept02Line {
        case: case.to_string(),
        value: (value != "n/a").then(|| value.to_string()),
        detail: words.collect::<Vec<_>>().join(" "),
    })
}

/// What a measured run printed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    pub ops: Vec<BenchLine>,
    pub ept02: Vec<Ept02Line>,
    /// `SKIP bench-ept: <reason>` (no EPT cases), the reason.
    pub ept_skipped: Option<String>,
}

/// What one side (bare, or under L0) gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Side {
    /// Its BENCH lines.
    Measured(Figures),
    /// LHV said `SKIP bench: <reason>` (the reason).
    Skipped(String),
    /// The run failed (why).
    Failed(String),
}

impl Side {
    /// A finished run: its BENCH lines from the serial log.
    pub fn from_log(log: &str) -> Side {
        const EPT_SKIP: &str = "SKIP bench-ept: ";
        Side::Measured(Figures {
            ops: log.lines().filter_map(parse_line).collect(),
            ept02: log.lines().filter_map(parse_ept02).collect(),
            ept_skipped: log
                .lines()
                .find_map(|l| Some(l[l.find(EPT_SKIP)? + EPT_SKIP.len()..].to_string())),
        })
    }

    fn line(&self, op: &str) -> Option<&BenchLine> {
        match self {
            Side::Measured(f) => f.ops.iter().find(|l| l.op == op),
            _ => None,
        }
    }

    fn ept02(&self, case: &str) -> Option<&Ept02Line> {
        match self {
            Side::Measured(f) => f.ept02.iter().find(|l| l.case == case),
            _ => None,
        }
    }

    /// The cell of a figure this side did not print.
    fn absent(&self, ept: bool) -> String {
        match self {
            Side::Skipped(_) => "SKIP".into(),
            Side::Failed(_) => "FAIL".into(),
            Side::Measured(f) if ept && f.ept_skipped.is_some() => "SKIP".into(),
            Side::Measured(_) => "missing".into(),
        }
    }

    /// A table cell for the cycles of `op`.
    fn cycles(&self, op: &str) -> String {
        match self.line(op) {
            Some(l) => l.cycles.to_string(),
            None => self.absent(is_ept_op(op)),
        }
    }

    /// A table cell for the EPT02 figure of `case` (`n/a` where LHV said
    /// so: bare Bochs has no L0).
    fn ept02_value(&self, case: &str) -> String {
        match self.ept02(case) {
            Some(l) => l.value.clone().unwrap_or_else(|| "n/a".into()),
            None => self.absent(true),
        }
    }

    /// A note under the table, if this side did not measure.
    fn note(&self, what: &str) -> Option<String> {
        match self {
            Side::Measured(f) => f
                .ept_skipped
                .as_ref()
                .map(|why| format!("{what}: EPT cases SKIP, {why}")),
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

/// The operations in the order LHV measures them (`-ept`: with EPT on;
/// `touch-ept` is per page L2 touches, `-k<K>`: K EPTPs cycled).
pub const OPS: &[&str] = &[
    "vmcall",
    "cpuid",
    "vmcall-ept",
    "touch-ept",
    "vmcall-ept-k3",
    "vmcall-ept-k6",
];

/// The EPT02 figures in the order LHV prints them.
pub const EPT02_CASES: &[&str] = &["touch", "roots-k3", "roots-k6"];

fn is_ept_op(op: &str) -> bool {
    op.contains("-ept")
}

/// What an EPT02 case's value is, for the table.
pub fn ept02_label(case: &str) -> String {
    match case.strip_prefix("roots-k") {
        _ if case == "touch" => "EPT02 faults per distinct L2 page touched".into(),
        Some(k) => format!("EPT02 root hit rate, {k} EPTP12s cycled (%)"),
        None => case.into(),
    }
}

/// A Markdown table with columns padded to their widest cell.
fn markdown(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
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
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = fmt_row(&header);
    out.push_str(&fmt_row(
        &w.iter().map(|&n| "-".repeat(n)).collect::<Vec<_>>(),
    ));
    for r in rows {
        out.push_str(&fmt_row(r));
    }
    out
}

/// The nested-EPT table: one row per EPT02 figure, bare (`n/a`: no L0)
/// and under L0, with the counts L0 gave.
pub fn ept02_table(bare: &Side, l0: &Side) -> String {
    let rows: Vec<Vec<String>> = EPT02_CASES
        .iter()
        .map(|case| {
            vec![
                ept02_label(case),
                bare.ept02_value(case),
                l0.ept02_value(case),
                l0.ept02(case).map(|l| l.detail.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    markdown(&["EPT02 figure", "bare", "under L0", "L0's counts"], &rows)
}

/// The tables (Markdown, so that they can go into the README as they
/// are), and one note per side that did not measure.
pub fn table(bare: &Side, l0: &Side) -> String {
    let header = [
        "operation",
        "cycles bare",
        "cycles under L0",
        "ratio",
        "L0 exits per L2 exit",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for op in OPS {
        let exits = match l0.line(op) {
            Some(l) => l.l0_exits.clone().unwrap_or_else(|| "n/a".into()),
            None => l0.absent(is_ept_op(op)),
        };
        rows.push(vec![
            op.to_string(),
            bare.cycles(op),
            l0.cycles(op),
            ratio(bare.line(op), l0.line(op)),
            exits,
        ]);
    }
    let mut out = markdown(&header, &rows);
    let n = [bare, l0].iter().find_map(|s| match s {
        Side::Measured(f) => f.ops.first().map(|l| l.n),
        _ => None,
    });
    if let Some(n) = n {
        out.push_str(&format!(
            "({n} round trips per operation; cycles = Bochs TSC per L2 -> L1 -> L2 round trip; touch-ept: per page, its first read)\n"
        ));
    }
    out.push('\n');
    out.push_str(&ept02_table(bare, l0));
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
BENCH op=vmcall-ept n=1000 cycles_per_exit=170 min=170 l0_exits_per_exit=n/a
BENCH op=touch-ept n=64 cycles_per_exit=6 min=6 l0_exits_per_exit=n/a
BENCH ept02 case=touch value=n/a pages=64 resolved=n/a
BENCH op=vmcall-ept-k3 n=1000 cycles_per_exit=180 min=180 l0_exits_per_exit=n/a
BENCH ept02 case=roots-k3 value=n/a
BENCH op=vmcall-ept-k6 n=1000 cycles_per_exit=180 min=180 l0_exits_per_exit=n/a
BENCH ept02 case=roots-k6 value=n/a
BENCH done
";

    const L0: &str = "BENCH op=vmcall n=1000 cycles_per_exit=50400 min=50000 l0_exits_per_exit=7.00
BENCH op=cpuid n=1000 cycles_per_exit=51600 min=51000 l0_exits_per_exit=7.01
BENCH op=vmcall-ept n=1000 cycles_per_exit=51000 min=51000 l0_exits_per_exit=6.00
BENCH op=touch-ept n=64 cycles_per_exit=9000 min=8000 l0_exits_per_exit=1.00
CPU(0): guest: BENCH ept02 case=touch value=1.00 pages=64 resolved=64
BENCH op=vmcall-ept-k3 n=1000 cycles_per_exit=60000 min=59000 l0_exits_per_exit=7.00
BENCH ept02 case=roots-k3 value=100.00 lookups=1001 hits=1001 evictions=0 roots=4
BENCH op=vmcall-ept-k6 n=1000 cycles_per_exit=90000 min=89000 l0_exits_per_exit=9.00
BENCH ept02 case=roots-k6 value=0.00 lookups=1001 hits=0 evictions=1001 roots=4
BENCH done";

    /// The trimmed cells of the row of `t` whose first cell is `first`.
    fn row(t: &str, first: &str) -> Vec<String> {
        t.lines()
            .map(|l| {
                l.trim_matches('|')
                    .split(" | ")
                    .map(|c| c.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .find(|cells| cells.first().map(String::as_str) == Some(first))
            .unwrap_or_else(|| panic!("no row {first} in\n{t}"))
    }

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
        let Side::Measured(f) = Side::from_log(BARE) else {
            panic!("measured")
        };
        assert_eq!(
            f.ops,
            BARE.lines().filter_map(parse_line).collect::<Vec<_>>()
        );
        assert_eq!(f.ops.len(), 6);
        assert_eq!(f.ept02.len(), 3);
        assert_eq!(f.ept_skipped, None);
    }

    #[test]
    fn parses_ept02_lines() {
        assert_eq!(
            parse_ept02("x BENCH ept02 case=roots-k3 value=99.70 lookups=1001 hits=998"),
            Some(Ept02Line {
                case: "roots-k3".into(),
                value: Some("99.70".into()),
                detail: "lookups=1001 hits=998".into(),
            })
        );
        assert_eq!(
            parse_ept02("BENCH ept02 case=touch value=n/a"),
            Some(Ept02Line {
                case: "touch".into(),
                value: None,
                detail: String::new(),
            })
        );
        assert_eq!(parse_ept02("BENCH ept02 value=1.00 case=touch"), None);
        assert_eq!(parse_ept02("BENCH ept02 case=touch"), None);
        assert_eq!(parse_ept02("BENCH op=vmcall n=1"), None);
        let Side::Measured(f) = Side::from_log("SKIP bench-ept: the CPU lacks EPT\n") else {
            panic!("measured")
        };
        assert_eq!(f.ept_skipped.as_deref(), Some("the CPU lacks EPT"));
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
            "| operation     | cycles bare | cycles under L0 | ratio | L0 exits per L2 exit |"
        );
        assert_eq!(
            lines[2],
            "| vmcall        | 168         | SKIP            | -     | SKIP                 |"
        );
        assert_eq!(row(&t, "cpuid"), ["cpuid", "172", "SKIP", "-", "SKIP"]);
        assert_eq!(
            row(&t, "vmcall-ept-k6"),
            ["vmcall-ept-k6", "180", "SKIP", "-", "SKIP"]
        );
        assert!(lines[8].starts_with("(1000 round trips"), "{t}");
        assert_eq!(
            row(&t, "EPT02 faults per distinct L2 page touched"),
            [
                "EPT02 faults per distinct L2 page touched",
                "n/a",
                "SKIP",
                ""
            ]
        );
        assert_eq!(
            *lines.last().unwrap(),
            "under L0: SKIP, VMX is not available: CPUID.1:ECX.VMX[bit 5] is 0"
        );
    }

    #[test]
    fn table_with_both_runs() {
        let t = table(&Side::from_log(BARE), &Side::from_log(L0));
        assert!(
            t.contains(
                "| vmcall        | 168         | 50400           | 300.00  | 7.00                 |"
            ),
            "{t}"
        );
        assert_eq!(
            row(&t, "cpuid"),
            ["cpuid", "172", "51600", "300.00", "7.01"]
        );
        assert_eq!(
            row(&t, "vmcall-ept"),
            ["vmcall-ept", "170", "51000", "300.00", "6.00"]
        );
        assert_eq!(
            row(&t, "touch-ept"),
            ["touch-ept", "6", "9000", "1500.00", "1.00"]
        );
        assert_eq!(
            row(&t, "EPT02 faults per distinct L2 page touched"),
            [
                "EPT02 faults per distinct L2 page touched",
                "n/a",
                "1.00",
                "pages=64 resolved=64"
            ]
        );
        assert_eq!(
            row(&t, "EPT02 root hit rate, 3 EPTP12s cycled (%)"),
            [
                "EPT02 root hit rate, 3 EPTP12s cycled (%)",
                "n/a",
                "100.00",
                "lookups=1001 hits=1001 evictions=0 roots=4"
            ]
        );
        assert_eq!(
            row(&t, "EPT02 root hit rate, 6 EPTP12s cycled (%)")[2],
            "0.00"
        );
        // 2 + 6 rows, the note, a blank line, 2 + 3 rows.
        assert_eq!(t.lines().count(), 15, "{t}");
    }

    #[test]
    fn failures_and_missing_lines_show() {
        let t = table(
            &Side::Failed("timeout".into()),
            &Side::from_log("BENCH done\nSKIP bench-ept: the CPU lacks EPT"),
        );
        assert_eq!(
            row(&t, "vmcall"),
            ["vmcall", "FAIL", "missing", "-", "missing"]
        );
        assert_eq!(
            row(&t, "vmcall-ept"),
            ["vmcall-ept", "FAIL", "SKIP", "-", "SKIP"]
        );
        assert_eq!(
            row(&t, "EPT02 root hit rate, 6 EPTP12s cycled (%)"),
            [
                "EPT02 root hit rate, 6 EPTP12s cycled (%)",
                "FAIL",
                "SKIP",
                ""
            ]
        );
        assert!(t.contains("bare Bochs: FAIL timeout"), "{t}");
        assert!(
            t.contains("under L0: EPT cases SKIP, the CPU lacks EPT"),
            "{t}"
        );
    }
}
