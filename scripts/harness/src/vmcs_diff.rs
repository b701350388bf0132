//! `vmcs-diff`: VMCS dumps in serial logs compared field by field.
//!
//! Dump lines: `CPU(<n>): VMCS<kind> <encoding> <FieldName> = <value>`,
//! kind `01`, `12` or `02`, encoding `0x%04x`, value `0x..` or
//! `unavailable`; also L0's first form `CPU(<n>): VMCS <FieldName> =
//! <value>`, taken as kind 01 with no encoding. One dump is the run of a
//! CPU's lines of one kind; a new one starts at a `VMCS<kind> dump begin`
//! line or when a field already in the current dump appears again. Pure
//! logic, unit-tested.

/// One field of a dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// `0x....`, or `-` when the dump line has none.
    pub encoding: String,
    pub name: String,
    pub value: String,
}

/// One dump: its fields in printed order.
pub type Dump = Vec<Field>;

/// A parsed line: CPU, kind, and the field (`None` for `dump begin`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Line {
    cpu: u32,
    kind: String,
    field: Option<Field>,
}

fn parse_line(line: &str) -> Option<Line> {
    let at = line.find("CPU(")?;
    let (cpu, rest) = line[at + 4..].split_once("): VMCS")?;
    let cpu = cpu.parse().ok()?;
    let (kind, rest) = match rest.get(..2) {
        Some(k) if crate::cli::VMCS_KINDS.contains(&k) => (k.to_string(), &rest[2..]),
        _ => ("01".to_string(), rest),
    };
    let rest = rest.strip_prefix(' ')?.trim();
    if rest.starts_with("dump begin") {
        return Some(Line {
            cpu,
            kind,
            field: None,
        });
    }
    let (lhs, value) = rest.split_once(" = ")?;
    let mut words = lhs.split_whitespace();
    let (encoding, name) = match (words.next()?, words.next()) {
        (e, Some(n)) if e.starts_with("0x") => (e.to_string(), n.to_string()),
        (n, None) => ("-".to_string(), n.to_string()),
        _ => return None,
    };
    if words.next().is_some() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    Some(Line {
        cpu,
        kind,
        field: Some(Field {
            encoding,
            name,
            value: value.trim().to_string(),
        }),
    })
}

/// Every dump of CPU `cpu` and kind `kind` in `log`, in order.
pub fn dumps(log: &str, cpu: u32, kind: &str) -> Vec<Dump> {
    let mut out: Vec<Dump> = Vec::new();
    let mut open = false;
    for l in log.lines().filter_map(parse_line) {
        if l.cpu != cpu || l.kind != kind {
            continue;
        }
        match l.field {
            None => open = false,
            Some(f) => {
                let repeat = out
                    .last()
                    .is_some_and(|d| d.iter().any(|g| g.name == f.name));
                if !open || repeat {
                    out.push(Dump::new());
                    open = true;
                }
                if let Some(d) = out.last_mut() {
                    d.push(f);
                }
            }
        }
    }
    out
}

/// Whether two values are the same (hexadecimal numbers compared as numbers).
fn same(a: &str, b: &str) -> bool {
    let num = |s: &str| {
        s.strip_prefix("0x")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
    };
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The differing fields, one line each: `<encoding> <name>: <a> -> <b>`
/// (`absent` for a field that only one dump has), in `a`'s order, then the
/// fields only `b` has.
pub fn diff(a: &Dump, b: &Dump) -> Vec<String> {
    let find = |d: &Dump, name: &str| d.iter().find(|f| f.name == name).cloned();
    let mut out = Vec::new();
    for f in a {
        match find(b, &f.name) {
            Some(g) if same(&f.value, &g.value) => {}
            Some(g) => out.push(format!(
                "{} {}: {} -> {}",
                enc(f, &g),
                f.name,
                f.value,
                g.value
            )),
            None => out.push(format!("{} {}: {} -> absent", f.encoding, f.name, f.value)),
        }
    }
    for g in b.iter().filter(|g| find(a, &g.name).is_none()) {
        out.push(format!("{} {}: absent -> {}", g.encoding, g.name, g.value));
    }
    out
}

/// The encoding to show: whichever dump has one.
fn enc(a: &Field, b: &Field) -> String {
    if a.encoding == "-" {
        b.encoding.clone()
    } else {
        a.encoding.clone()
    }
}

/// What to compare, as the command line says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub log: &'a str,
    pub log2: Option<&'a str>,
    pub cpu: u32,
    pub kind: &'a str,
    pub against: Option<&'a str>,
}

/// The two dumps a request means: with a second log, the last dump of
/// each (of `against` in the second log if given); with `against`, the
/// last dumps of both kinds in one log; otherwise the last two dumps of
/// the kind in one log.
pub fn pick(r: &Request) -> Result<(Dump, Dump), String> {
    let last = |log: &str, kind: &str, which: &str| {
        dumps(log, r.cpu, kind)
            .pop()
            .ok_or_else(|| format!("no VMCS{kind} dump of CPU({}) in {which}", r.cpu))
    };
    match (r.log2, r.against) {
        (Some(log2), k2) => Ok((
            last(r.log, r.kind, "the first log")?,
            last(log2, k2.unwrap_or(r.kind), "the second log")?,
        )),
        (None, Some(k2)) => Ok((last(r.log, r.kind, "the log")?, last(r.log, k2, "the log")?)),
        (None, None) => {
            let mut d = dumps(r.log, r.cpu, r.kind);
            let n = d.len();
            if n < 2 {
                return Err(format!(
                    "{n} VMCS{} dump(s) of CPU({}) in the log; comparing needs two (or --against, or a second log)",
                    r.kind, r.cpu
                ));
            }
            let b = d.pop().unwrap_or_default();
            let a = d.pop().unwrap_or_default();
            Ok((a, b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: &str = "\
CPU(0): VMCS12 dump begin
CPU(0): VMCS12 0x4002 PrimaryProcBasedVmExecControls = 0x84006172
CPU(1): VMCS12 0x4002 PrimaryProcBasedVmExecControls = 0xdeadbeef
CPU(0): VMCS12 0x681e GuestRip = 0x1000
CPU(0): VMCS12 0x4402 VmExitReason = 0x12
CPU(0): VMCS02 0x4002 PrimaryProcBasedVmExecControls = 0x84006172
CPU(0): VMCS02 0x681e GuestRip = 0x1003
CPU(0): VMCS02 0x4402 VmExitReason = 0x12
CPU(0): VMCS02 0x2800 VmcsLinkPointer = unavailable
CPU(0): VMCS12 0x4002 PrimaryProcBasedVmExecControls = 0x84006172
CPU(0): VMCS12 0x681e GuestRip = 0x1003
CPU(0): VMCS12 0x4402 VmExitReason = 0x0a
";

    const OLD: &str = "\
CPU(1): VMCS dump begin
CPU(1): VMCS GuestRip = 0x7c00
CPU(1): VMCS GuestCr0 = 0x10
CPU(1): VMCS dump end
CPU(1): VMCS dump begin
CPU(1): VMCS GuestRip = 0x7c05
CPU(1): VMCS GuestCr0 = 0x10
CPU(1): VMCS dump end
";

    #[test]
    fn parses_both_forms() {
        let l = parse_line("CPU(0): VMCS12 0x681e GuestRip = 0x1000").unwrap();
        assert_eq!((l.cpu, l.kind.as_str()), (0, "12"));
        assert_eq!(
            l.field,
            Some(Field {
                encoding: "0x681e".into(),
                name: "GuestRip".into(),
                value: "0x1000".into()
            })
        );
        let l = parse_line("junk CPU(3): VMCS GuestCr0 = unavailable").unwrap();
        assert_eq!((l.cpu, l.kind.as_str()), (3, "01"));
        assert_eq!(l.field.unwrap().encoding, "-");
        assert_eq!(parse_line("CPU(1): VMCS dump begin").unwrap().field, None);
        assert_eq!(parse_line("CPU(1): VMCS12 dump begin").unwrap().kind, "12");
        assert_eq!(parse_line("CPU(1): VMCS dump end"), None);
        assert_eq!(parse_line("CPU(1): VMXON done"), None);
        // L0's remark that the shadow VMCS is live is not a field.
        assert_eq!(
            parse_line(
                "CPU(0): VMCS12 note: the shadow VMCS is live; L1 may have changed its fields"
            ),
            None
        );
        assert_eq!(parse_line("CPU(x): VMCS A = 1"), None);
        assert_eq!(parse_line("CPU(0): VMCS a b c = 1"), None);
    }

    #[test]
    fn splits_dumps_by_cpu_kind_begin_and_repeats() {
        let d = dumps(NEW, 0, "12");
        assert_eq!(d.len(), 2, "a repeated field starts a new dump");
        assert_eq!(d[0].len(), 3);
        assert_eq!(dumps(NEW, 1, "12").len(), 1);
        assert_eq!(dumps(NEW, 0, "02").len(), 1);
        assert_eq!(dumps(OLD, 1, "01").len(), 2);
        assert!(dumps(OLD, 0, "01").is_empty());
    }

    #[test]
    fn last_two_dumps_of_one_kind() {
        let r = Request {
            log: NEW,
            log2: None,
            cpu: 0,
            kind: "12",
            against: None,
        };
        let (a, b) = pick(&r).unwrap();
        assert_eq!(
            diff(&a, &b),
            vec![
                "0x681e GuestRip: 0x1000 -> 0x1003",
                "0x4402 VmExitReason: 0x12 -> 0x0a"
            ]
        );
        let r = Request { cpu: 1, ..r };
        assert!(pick(&r).unwrap_err().contains("1 VMCS12 dump(s)"));
    }

    #[test]
    fn one_kind_against_another() {
        let r = Request {
            log: NEW,
            log2: None,
            cpu: 0,
            kind: "12",
            against: Some("02"),
        };
        let (a, b) = pick(&r).unwrap();
        assert_eq!(
            diff(&a, &b),
            vec![
                "0x4402 VmExitReason: 0x0a -> 0x12",
                "0x2800 VmcsLinkPointer: absent -> unavailable"
            ]
        );
    }

    #[test]
    fn the_same_dump_in_two_logs_and_the_old_form() {
        let other = OLD.replace("GuestCr0 = 0x10", "GuestCr0 = 0x0000000000000010");
        let r = Request {
            log: OLD,
            log2: Some(&other),
            cpu: 1,
            kind: "01",
            against: None,
        };
        let (a, b) = pick(&r).unwrap();
        assert!(diff(&a, &b).is_empty(), "equal numbers in other spellings");
        let other = OLD.replace("0x7c05", "0x7c06");
        let r = Request {
            log2: Some(&other),
            ..r
        };
        let (a, b) = pick(&r).unwrap();
        assert_eq!(diff(&a, &b), vec!["- GuestRip: 0x7c05 -> 0x7c06"]);
        let r = Request {
            log2: Some(""),
            ..r
        };
        assert!(pick(&r).unwrap_err().contains("second log"));
    }

    #[test]
    fn fields_only_one_side_has() {
        let f = |n: &str, v: &str| Field {
            encoding: "0x1".into(),
            name: n.into(),
            value: v.into(),
        };
        let a = vec![f("A", "0x1"), f("B", "0x2")];
        let b = vec![f("B", "0x2"), f("C", "0x3")];
        assert_eq!(
            diff(&a, &b),
            vec!["0x1 A: 0x1 -> absent", "0x1 C: absent -> 0x3"]
        );
    }
}
