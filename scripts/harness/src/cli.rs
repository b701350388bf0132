//! Command-line parsing (no dependencies): `run`, `test`, `bench`, `list`,
//! `deps`, `repro-image`, `vmcs-diff`.

use crate::scenario::{Emulator, Guest};

pub const USAGE: &str = "\
usage: harness run  [options]          build, boot one scenario, judge it (scripts/run)
       harness test [options] [FILTER...]  cargo test + the Default-tier (with --full: all) scenarios
                                        whose name contains a FILTER (scripts/test)
       harness bench [--n N] [-v]       LHV mode=bench on bare Bochs and under L0: the cycles
                                        of an L2 exit handled by L1, and L0 exits per L2 exit
       harness fuzz --seed N --cases N [--dump N] [-v]
                                        LHV mode=fuzz (differential VMCS fuzzer) on bare Bochs
                                        and under L0: every case whose outcome differs, and
                                        the mutated VMCS12 of the first --dump (default 5)
       harness vmcs-diff LOG [LOG2] --cpu N --vmcs KIND [--against KIND2]
                                        VMCS dumps (KIND 01, 12 or 02) compared field by field:
                                        the last two of LOG, LOG's KIND against its KIND2, or
                                        LOG against LOG2; prints the differing fields
       harness list                     show the scenario table
       harness deps                     check host packages and tools
       harness repro-image NAME [-v]    bootable LHV image running reproducer NAME
                                        (target/harness/repro-NAME.img; boot it with
                                        qemu-system-x86_64 -enable-kvm -cpu host,+vmx -hda IMAGE)

run options:
  --emulator bochs|qemu   emulator (default bochs)
  --cpus N                number of CPUs (default 2)
  --memory MB             guest memory (default 512)
  --lhv-opt HEX           LHV test options, lhv_opt=HEX (default 0)
  --lhv-args 'WORDS'      more LHV command-line words (lhv_repro=NAME mode=probe iters=N)
  --l0-args 'WORDS'       more L0 command-line words (mem=MB)
  --guest lhv|linux|linux-kvm|l0
                          what L0 boots from the second disk (default lhv); linux
                          is Debian's cloud kernel + busybox (model broadwell_ult);
                          linux-kvm also loads KVM and runs kvmtest (guest/kvmtest);
                          l0 is a second L0, which boots LHV from the third disk
  --inner-l0-args 'WORDS' more command-line words of that second L0 (--guest l0)
  --guest-image FILE      boot your own disk image (a hybrid ISO or a raw disk) as
                          L0's guest; with --no-l0, alone. The run passes when the
                          machine powers off with nothing fatal on serial (L0 booted
                          it); use --keep to just run it, --timeout S for long ones
  --linux-args 'WORDS'    more Linux kernel command-line words (a Linux guest), e.g.
                          kvm_strict=0 (kvmtest runs without EPT/VPID/UG, SKIPping them)
  --no-l0                 boot the guest (LHV, Linux, your image) directly, without L0
  --timeout S             seconds before giving up (default 120)
  --keep                  leave the machine running interactively; no judging
  --model NAME            Bochs CPU model (default corei7_skylake_x)
  --scenario NAME         run a named scenario from the table (options above override it;
                          bench/bare and bench/l0 are the benchmark runs; an l0-lhv/...
                          scenario runs its bare twin first and compares their counts)
  --verbose, -v           more detail (commands, emulator arguments)

test options:
  --full                  every scenario (default: the Default tier; see `harness list`)
  --jobs N, -j N          scenarios run in parallel (default: number of cores)
  --no-cargo-test         skip the host unit tests
  --verbose, -v           stream every scenario's serial output, prefixed by its name
  A scenario compared with a bare twin (l0-lhv/...) brings its twin along.

bench options:
  --n N                   round trips per operation, LHV's bench_n=N (default 1000)
";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOpts {
    pub emulator: Option<Emulator>,
    pub cpus: Option<u32>,
    pub memory: Option<u32>,
    pub lhv_opt: Option<u64>,
    pub lhv_args: Option<String>,
    pub l0_args: Option<String>,
    /// `--inner-l0-args`: the second L0's words ([`Guest::L0Lhv`]).
    pub inner_l0_args: Option<String>,
    pub no_l0: bool,
    pub guest: Option<Guest>,
    /// `--guest-image FILE` (implies [`Guest::Image`]).
    pub guest_image: Option<String>,
    pub linux_args: Option<String>,
    pub timeout: Option<u64>,
    pub keep: bool,
    pub model: Option<String>,
    pub scenario: Option<String>,
    pub verbose: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestOpts {
    pub filters: Vec<String>,
    /// Every tier, not only Default.
    pub full: bool,
    pub jobs: Option<usize>,
    pub no_cargo_test: bool,
    pub verbose: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(RunOpts),
    Test(TestOpts),
    List,
    Deps,
    ReproImage(ReproImageOpts),
    Bench(BenchOpts),
    VmcsDiff(VmcsDiffOpts),
    Fuzz(FuzzOpts),
    Help,
}

/// `bench [--n N] [--verbose]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BenchOpts {
    /// Round trips per operation (`bench_n=`); LHV's default when `None`.
    pub n: Option<u64>,
    pub verbose: bool,
}

/// `fuzz --seed N --cases N [--dump N] [--verbose]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuzzOpts {
    pub seed: u64,
    pub cases: u64,
    /// How many divergences to re-run with `fuzz_dump=<case>`.
    pub dump: usize,
    pub verbose: bool,
}

impl Default for FuzzOpts {
    fn default() -> Self {
        Self {
            seed: 1,
            cases: 2000,
            dump: 5,
            verbose: false,
        }
    }
}

/// `vmcs-diff LOG [LOG2] --cpu N --vmcs KIND [--against KIND2]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmcsDiffOpts {
    pub log: String,
    pub log2: Option<String>,
    pub cpu: u32,
    /// `01`, `12` or `02`.
    pub kind: String,
    pub against: Option<String>,
}

/// `repro-image NAME [--verbose]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReproImageOpts {
    /// The reproducer, LHV's `lhv_repro=NAME`.
    pub name: String,
    pub verbose: bool,
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some((sub, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    match sub.as_str() {
        "run" => parse_run(rest).map(Command::Run),
        "test" => parse_test(rest).map(Command::Test),
        "list" => no_args(rest, Command::List),
        "deps" => no_args(rest, Command::Deps),
        "repro-image" => parse_repro_image(rest).map(Command::ReproImage),
        "bench" => parse_bench(rest).map(Command::Bench),
        "vmcs-diff" => parse_vmcs_diff(rest).map(Command::VmcsDiff),
        "fuzz" => parse_fuzz(rest).map(Command::Fuzz),
        "help" | "-h" | "--help" => Ok(Command::Help),
        other => Err(format!("unknown subcommand `{other}`")),
    }
}

/// Whether the arguments ask for help (`--help` or `-h` anywhere).
pub fn wants_help(args: &[String]) -> bool {
    args.iter().any(|a| a == "--help" || a == "-h")
}

/// Where to read the usage after an error in `args`: the wrapper script of
/// the subcommand (`see ./scripts/run --help`).
pub fn help_hint(args: &[String]) -> String {
    match args.first().map(String::as_str) {
        Some(sub @ ("run" | "test" | "bench")) => format!("see ./scripts/{sub} --help"),
        _ => "see `harness help`".to_string(),
    }
}

fn no_args(rest: &[String], c: Command) -> Result<Command, String> {
    match rest.first() {
        None => Ok(c),
        Some(a) => Err(format!("unexpected argument `{a}`")),
    }
}

/// Splits `--name=value` and fetches the value of `--name value`.
struct Args<'a> {
    it: std::slice::Iter<'a, String>,
}

impl<'a> Args<'a> {
    /// Next (flag, inline value) pair.
    fn next(&mut self) -> Option<(&'a str, Option<&'a str>)> {
        let a = self.it.next()?;
        match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => Some((f, Some(v))),
            _ => Some((a.as_str(), None)),
        }
    }

    fn value(&mut self, flag: &str, inline: Option<&'a str>) -> Result<&'a str, String> {
        match inline {
            Some(v) => Ok(v),
            None => self
                .it
                .next()
                .map(|s| s.as_str())
                .ok_or_else(|| format!("{flag} needs a value")),
        }
    }
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: `{v}` is not a number"))
}

/// Parses a hexadecimal number with or without `0x`.
pub fn parse_hex(v: &str) -> Result<u64, String> {
    let digits = v
        .strip_prefix("0x")
        .or_else(|| v.strip_prefix("0X"))
        .unwrap_or(v);
    u64::from_str_radix(digits, 16).map_err(|_| format!("`{v}` is not a hexadecimal number"))
}

fn parse_run(rest: &[String]) -> Result<RunOpts, String> {
    let mut o = RunOpts::default();
    let mut a = Args { it: rest.iter() };
    while let Some((flag, inline)) = a.next() {
        match flag {
            "--emulator" => {
                o.emulator = Some(match a.value(flag, inline)? {
                    "bochs" => Emulator::Bochs,
                    "qemu" => Emulator::Qemu,
                    e => return Err(format!("--emulator: `{e}` is not bochs or qemu")),
                })
            }
            "--cpus" => {
                let n: u32 = num(flag, a.value(flag, inline)?)?;
                if n == 0 || n > 64 {
                    return Err("--cpus: must be 1..64".into());
                }
                o.cpus = Some(n);
            }
            "--memory" => {
                let m: u32 = num(flag, a.value(flag, inline)?)?;
                if m < 16 {
                    return Err("--memory: at least 16 MB".into());
                }
                o.memory = Some(m);
            }
            "--lhv-opt" => o.lhv_opt = Some(parse_hex(a.value(flag, inline)?)?),
            "--lhv-args" => o.lhv_args = Some(a.value(flag, inline)?.to_string()),
            "--l0-args" => o.l0_args = Some(a.value(flag, inline)?.to_string()),
            "--inner-l0-args" => o.inner_l0_args = Some(a.value(flag, inline)?.to_string()),
            "--no-l0" => o.no_l0 = true,
            "--guest" => {
                o.guest = Some(match a.value(flag, inline)? {
                    "lhv" => Guest::Lhv,
                    "linux" => Guest::Linux,
                    "linux-kvm" => Guest::LinuxKvm,
                    "l0" => Guest::L0Lhv,
                    g => {
                        return Err(format!("--guest: `{g}` is not lhv, linux, linux-kvm or l0"));
                    }
                })
            }
            "--guest-image" => {
                let f = a.value(flag, inline)?;
                if f.is_empty() {
                    return Err("--guest-image needs a file name".into());
                }
                o.guest_image = Some(f.to_string());
            }
            "--linux-args" => o.linux_args = Some(a.value(flag, inline)?.to_string()),
            "--timeout" => o.timeout = Some(num(flag, a.value(flag, inline)?)?),
            "--keep" => o.keep = true,
            "--model" => o.model = Some(a.value(flag, inline)?.to_string()),
            "--scenario" => o.scenario = Some(a.value(flag, inline)?.to_string()),
            "--verbose" | "-v" => o.verbose = true,
            f => return Err(format!("run: unknown option `{f}`")),
        }
        if inline.is_some() && matches!(flag, "--no-l0" | "--keep" | "--verbose") {
            return Err(format!("{flag} takes no value"));
        }
    }
    if o.guest_image.is_some() && o.guest.is_some_and(|g| g != Guest::Image) {
        return Err("--guest-image and --guest name two different guests: give one".into());
    }
    if o.guest_image.is_some() {
        o.guest = Some(Guest::Image);
    }
    Ok(o)
}

fn parse_test(rest: &[String]) -> Result<TestOpts, String> {
    let mut o = TestOpts::default();
    let mut a = Args { it: rest.iter() };
    while let Some((flag, inline)) = a.next() {
        match flag {
            "--jobs" | "-j" => {
                let j: usize = num(flag, a.value(flag, inline)?)?;
                o.jobs = Some(j.max(1));
            }
            "--no-cargo-test" => o.no_cargo_test = true,
            "--full" if inline.is_none() => o.full = true,
            "--verbose" | "-v" => o.verbose = true,
            f if f.starts_with('-') => return Err(format!("test: unknown option `{f}`")),
            _ => o.filters.push(rest_arg(flag, inline)),
        }
    }
    Ok(o)
}

/// Whether `name` can be a reproducer name: it becomes one word of the
/// kernel command line and part of a file name.
pub fn valid_repro_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn parse_repro_image(rest: &[String]) -> Result<ReproImageOpts, String> {
    let mut o = ReproImageOpts::default();
    let mut name = None;
    let mut a = Args { it: rest.iter() };
    while let Some((flag, inline)) = a.next() {
        match flag {
            "--verbose" | "-v" if inline.is_none() => o.verbose = true,
            f if f.starts_with('-') => return Err(format!("repro-image: unknown option `{f}`")),
            n if name.is_none() => name = Some(rest_arg(n, inline)),
            n => return Err(format!("repro-image: unexpected argument `{n}`")),
        }
    }
    let name = name.ok_or("repro-image needs a reproducer name (e.g. kvm216212)")?;
    if !valid_repro_name(&name) {
        return Err(format!(
            "repro-image: `{name}` is not a reproducer name (a-z, 0-9, '-', '_')"
        ));
    }
    o.name = name;
    Ok(o)
}

fn parse_bench(rest: &[String]) -> Result<BenchOpts, String> {
    let mut o = BenchOpts::default();
    let mut a = Args { it: rest.iter() };
    while let Some((flag, inline)) = a.next() {
        match flag {
            "--n" => {
                let n: u64 = num(flag, a.value(flag, inline)?)?;
                if n == 0 {
                    return Err("--n: at least 1".into());
                }
                o.n = Some(n);
            }
            "--verbose" | "-v" if inline.is_none() => o.verbose = true,
            f => return Err(format!("bench: unknown option `{f}`")),
        }
    }
    Ok(o)
}

fn parse_fuzz(rest: &[String]) -> Result<FuzzOpts, String> {
    let mut o = FuzzOpts::default();
    let mut a = Args { it: rest.iter() };
    while let Some((flag, inline)) = a.next() {
        match flag {
            "--seed" => o.seed = num(flag, a.value(flag, inline)?)?,
            "--cases" => {
                o.cases = num(flag, a.value(flag, inline)?)?;
                if o.cases == 0 {
                    return Err("--cases: at least 1".into());
                }
            }
            "--dump" => o.dump = num(flag, a.value(flag, inline)?)?,
            "--verbose" | "-v" if inline.is_none() => o.verbose = true,
            f => return Err(format!("fuzz: unknown option `{f}`")),
        }
    }
    Ok(o)
}

/// The VMCS kinds a dump line names.
pub const VMCS_KINDS: &[&str] = &["01", "12", "02"];

fn vmcs_kind(flag: &str, v: &str) -> Result<String, String> {
    if VMCS_KINDS.contains(&v) {
        Ok(v.to_string())
    } else {
        Err(format!("{flag}: `{v}` is not 01, 12 or 02"))
    }
}

fn parse_vmcs_diff(rest: &[String]) -> Result<VmcsDiffOpts, String> {
    let mut o = VmcsDiffOpts::default();
    let (mut logs, mut cpu, mut kind) = (Vec::new(), None, None);
    let mut a = Args { it: rest.iter() };
    while let Some((flag, inline)) = a.next() {
        match flag {
            "--cpu" => cpu = Some(num::<u32>(flag, a.value(flag, inline)?)?),
            "--vmcs" => kind = Some(vmcs_kind(flag, a.value(flag, inline)?)?),
            "--against" => o.against = Some(vmcs_kind(flag, a.value(flag, inline)?)?),
            f if f.starts_with('-') => return Err(format!("vmcs-diff: unknown option `{f}`")),
            _ => logs.push(rest_arg(flag, inline)),
        }
    }
    let mut logs = logs.into_iter();
    o.log = logs.next().ok_or("vmcs-diff needs a log file")?;
    o.log2 = logs.next();
    if let Some(extra) = logs.next() {
        return Err(format!("vmcs-diff: unexpected argument `{extra}`"));
    }
    o.cpu = cpu.ok_or("vmcs-diff needs --cpu N")?;
    o.kind = kind.ok_or("vmcs-diff needs --vmcs 01|12|02")?;
    Ok(o)
}

fn rest_arg(flag: &str, inline: Option<&str>) -> String {
    match inline {
        Some(v) => format!("{flag}={v}"),
        None => flag.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, String> {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse(&v)
    }

    #[test]
    fn run_defaults() {
        assert_eq!(p("run"), Ok(Command::Run(RunOpts::default())));
        assert_eq!(p(""), Ok(Command::Help));
    }

    #[test]
    fn run_options() {
        let Ok(Command::Run(o)) = p(
            "run --emulator qemu --cpus 4 --memory=256 --lhv-opt 0x1F --no-l0 --timeout 30 --keep --model tigerlake -v",
        ) else {
            panic!("parse failed")
        };
        assert_eq!(o.emulator, Some(Emulator::Qemu));
        assert_eq!(o.cpus, Some(4));
        assert_eq!(o.memory, Some(256));
        assert_eq!(o.lhv_opt, Some(0x1f));
        assert!(o.no_l0 && o.keep && o.verbose);
        assert_eq!(o.timeout, Some(30));
        assert_eq!(o.model.as_deref(), Some("tigerlake"));
        let Ok(Command::Run(o)) = p("run --guest=linux") else {
            panic!("parse failed")
        };
        assert_eq!(o.guest, Some(Guest::Linux));
    }

    #[test]
    fn run_errors() {
        assert!(p("run --cpus").is_err());
        assert!(p("run --cpus 0").is_err());
        assert!(p("run --emulator vbox").is_err());
        assert!(p("run --lhv-opt xyz").is_err());
        assert!(p("run --bogus").is_err());
        assert!(p("run --keep=1").is_err());
        assert!(p("run --guest windows").is_err());
        let Ok(Command::Run(o)) = p("run --guest l0 --inner-l0-args=nested_trace=1") else {
            panic!("parse failed")
        };
        assert_eq!(o.guest, Some(Guest::L0Lhv));
        assert_eq!(o.inner_l0_args.as_deref(), Some("nested_trace=1"));
        assert!(p("frobnicate").is_err());
    }

    #[test]
    fn guest_images_and_linux_args() {
        let Ok(Command::Run(o)) = p("run --guest-image my.iso --no-l0") else {
            panic!("parse failed")
        };
        assert_eq!(
            (o.guest, o.guest_image.as_deref(), o.no_l0),
            (Some(Guest::Image), Some("my.iso"), true)
        );
        let Ok(Command::Run(o)) = p("run --guest=linux-kvm --linux-args=kvm_strict=0") else {
            panic!("parse failed")
        };
        assert_eq!(o.guest, Some(Guest::LinuxKvm));
        assert_eq!(o.linux_args.as_deref(), Some("kvm_strict=0"));
        assert!(p("run --guest-image").is_err());
        assert!(p("run --guest-image=").is_err());
        assert!(p("run --guest linux --guest-image a.img").is_err());
    }

    #[test]
    fn errors_point_to_the_help_of_their_command() {
        let v = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(help_hint(&v("run --bogus")), "see ./scripts/run --help");
        assert_eq!(help_hint(&v("test --what")), "see ./scripts/test --help");
        assert_eq!(help_hint(&v("vmcs-diff")), "see `harness help`");
        assert!(wants_help(&v("run --cpus 2 --help")));
        assert!(wants_help(&v("test -h")));
        assert!(!wants_help(&v("run --cpus 2")));
    }

    #[test]
    fn hex() {
        assert_eq!(parse_hex("0x10"), Ok(16));
        assert_eq!(parse_hex("ff"), Ok(255));
        assert!(parse_hex("").is_err());
    }

    #[test]
    fn repro_image() {
        assert_eq!(
            p("repro-image kvm216212"),
            Ok(Command::ReproImage(ReproImageOpts {
                name: "kvm216212".into(),
                verbose: false
            }))
        );
        assert_eq!(
            p("repro-image -v nmi-blocking"),
            Ok(Command::ReproImage(ReproImageOpts {
                name: "nmi-blocking".into(),
                verbose: true
            }))
        );
        assert!(p("repro-image").is_err());
        assert!(p("repro-image a b").is_err());
        assert!(p("repro-image --cpus 2 x").is_err());
        assert!(p("repro-image Bad/Name").is_err());
        assert!(p("repro-image x=y").is_err());
        assert!(!valid_repro_name(""));
        assert!(valid_repro_name("kvm216212"));
    }

    #[test]
    fn test_filters() {
        let Ok(Command::Test(o)) = p("test -j 3 l0 no-vmx --no-cargo-test") else {
            panic!("parse failed")
        };
        assert_eq!(o.filters, vec!["l0", "no-vmx"]);
        assert_eq!(o.jobs, Some(3));
        assert!(o.no_cargo_test);
        assert!(p("test --what").is_err());
        assert!(!o.full);
        let Ok(Command::Test(o)) = p("test --full lhv/") else {
            panic!("parse failed")
        };
        assert!(o.full);
        assert_eq!(o.filters, vec!["lhv/"]);
        assert!(p("test --full=1").is_err());
    }

    #[test]
    fn bench_options() {
        assert_eq!(p("bench"), Ok(Command::Bench(BenchOpts::default())));
        assert_eq!(
            p("bench --n 50 -v"),
            Ok(Command::Bench(BenchOpts {
                n: Some(50),
                verbose: true
            }))
        );
        assert!(p("bench --n 0").is_err());
        assert!(p("bench --n x").is_err());
        assert!(p("bench --cpus 2").is_err());
    }

    #[test]
    fn vmcs_diff_options() {
        assert_eq!(
            p("vmcs-diff a.log --cpu 1 --vmcs 02"),
            Ok(Command::VmcsDiff(VmcsDiffOpts {
                log: "a.log".into(),
                log2: None,
                cpu: 1,
                kind: "02".into(),
                against: None
            }))
        );
        let Ok(Command::VmcsDiff(o)) = p("vmcs-diff --vmcs=12 a.log b.log --cpu=0 --against 02")
        else {
            panic!("parse failed")
        };
        assert_eq!(
            (o.log2.as_deref(), o.against.as_deref()),
            (Some("b.log"), Some("02"))
        );
        assert!(p("vmcs-diff --cpu 0 --vmcs 02").is_err());
        assert!(p("vmcs-diff a --vmcs 02").is_err());
        assert!(p("vmcs-diff a --cpu 0").is_err());
        assert!(p("vmcs-diff a --cpu 0 --vmcs 03").is_err());
        assert!(p("vmcs-diff a b c --cpu 0 --vmcs 01").is_err());
    }
}
