//! `mode=hostile-l1`: LHV as a hostile guest hypervisor. On the BSP it
//! points the VMX structures L0 copies and checks (bitmaps, MSR areas, the
//! VMCS link pointer, the virtual-APIC page, EPT12) into L0's region or at
//! each other, loads MSRs L0 owns through the VM-entry MSR-load area, edits
//! its VMCS in memory behind L0's back, and, with 2+ CPUs, storms another
//! CPU with NMIs and INITs during nested entries and exits and changes
//! EPT12 under an L2 that runs on another CPU. Every case checks that the
//! attack ends as the hardware ends it (Intel SDM Vol. 3C chapters 25-31),
//! and the suite ends by asking L0 for its Stats (L0 alive).
//!
//! Markers: `HOSTILE-L1: <case> PASS (<outcome>)`, `HOSTILE-L1: <case>
//! SKIP <why>` (the harness accepts a SKIP only for the cases each scenario
//! declares), `HOSTILE-L1: <case> FAIL expected <x>, got <y>`, then
//! `HOSTILE-L1 SUMMARY passed=N failed=F skipped=K`.
//!
//! On bare hardware there is no L0 region: those cases SKIP (`no L0
//! (bare)`); the others run on both, so the bare run shows that the
//! expected outcomes are the hardware's.

use ::core::fmt;

use lhv::negative_cases::{Outcome, Skip};
use shared::boot::BootInfo;
use shared::println;
use shared::vmx::VmxCaps;

use crate::negative::{self, Env};

mod ept12;
mod msr_owned;
mod overlap;
mod region;
mod smp;
mod vmcs12;

/// What a case saw against what the SDM allows: `want[0]`, or `want[1]`
/// where the SDM allows two outcomes (equal to `want[0]` otherwise).
#[derive(Clone, Copy, Debug)]
pub struct Verdict {
    want: [Outcome; 2],
    got: Outcome,
}

impl Verdict {
    /// Exactly `want`.
    pub const fn is(want: Outcome, got: Outcome) -> Self {
        Self {
            want: [want, want],
            got,
        }
    }

    /// `a` or `b` (an outcome the SDM leaves to the implementation).
    pub const fn one_of(a: Outcome, b: Outcome, got: Outcome) -> Self {
        Self { want: [a, b], got }
    }

    fn passed(&self) -> bool {
        self.want.contains(&self.got)
    }
}

/// The expectation, as printed.
struct Want<'a>(&'a [Outcome; 2]);

impl fmt::Display for Want<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0[0] == self.0[1] {
            write!(f, "{}", self.0[0])
        } else {
            write!(f, "{} or {}", self.0[0], self.0[1])
        }
    }
}

/// One case: runs from whatever state the previous case left (each starts
/// with [`Env::fresh`] where it needs a valid VMCS) and returns its
/// verdict, or why it cannot run here.
pub type Run = fn(&mut Env) -> Result<Verdict, Skip>;

/// A named case.
pub struct Case {
    /// Its name in the markers.
    pub name: &'static str,
    /// What it does.
    pub run: Run,
}

/// A group of cases (one module).
pub struct Group {
    /// What the group attacks.
    pub what: &'static str,
    /// Its cases, in order.
    pub cases: &'static [Case],
}

/// The BSP-only groups, in order; the SMP group runs after them.
const GROUPS: &[Group] = &[
    region::GROUP,
    ept12::GROUP,
    msr_owned::GROUP,
    overlap::GROUP,
    vmcs12::GROUP,
];

/// The running count.
#[derive(Default)]
struct Tally {
    passed: u32,
    failed: u32,
    skipped: u32,
}

impl Tally {
    fn record(&mut self, name: &str, r: Result<Verdict, Skip>) {
        match r {
            Ok(v) if v.passed() => {
                self.passed += 1;
                println!("HOSTILE-L1: {name} PASS ({})", v.got);
            }
            Ok(v) => {
                self.failed += 1;
                println!(
                    "HOSTILE-L1: {name} FAIL expected {}, got {}",
                    Want(&v.want),
                    v.got
                );
            }
            Err(skip) => {
                self.skipped += 1;
                println!("HOSTILE-L1: {name} SKIP {skip}");
            }
        }
    }
}

/// Runs the suite and shuts down; `caps` is where LHV keeps the
/// capabilities.
pub fn run(boot: &'static BootInfo, caps: &'static spin::Once<VmxCaps>) -> ! {
    println!("HOSTILE-L1: mode=hostile-l1");
    let names = GROUPS
        .iter()
        .flat_map(|g| g.cases.iter().map(|c| c.name))
        .chain(smp::NAMES.iter().copied());
    if let Err(n) = lhv::negative_cases::names_well_formed(names) {
        crate::assert::fail(
            format_args!("hostile-l1: case names unique and well-formed"),
            format_args!("yes"),
            format_args!("{n:?}"),
        );
    }
    let mut env = negative::bring_up(boot, caps, "HOSTILE-L1");
    let mut tally = Tally::default();
    for g in GROUPS {
        println!("HOSTILE-L1 group {}: {} cases", g.what, g.cases.len());
        for case in g.cases {
            let r = (case.run)(&mut env);
            tally.record(case.name, r);
        }
    }
    // The SMP cases: CPU 1 in VMX operation on its own VMCS, the BSP in
    // VMX root on the suite's.
    println!("HOSTILE-L1 group SMP: {} cases", smp::NAMES.len());
    for (name, r) in smp::run(boot, env.caps, env.on_bochs, env.l0.is_some()) {
        tally.record(name, r);
    }
    // L0's Stats at the very end (L0 alive).
    negative::finish(&mut env, "HOSTILE-L1");
    println!(
        "HOSTILE-L1 SUMMARY passed={} failed={} skipped={}",
        tally.passed, tally.failed, tally.skipped
    );
    shared::console::flush();
    shared::platform::shutdown(if tally.failed == 0 { 0 } else { 1 })
}

/// Skips a case that needs L0's region on bare hardware.
/// A fresh VMCS with "use I/O bitmaps" set, or the skip where L1 is not
/// offered the control.
pub fn fresh_with_io_bitmaps(e: &mut Env) -> Result<(), Skip> {
    use shared::vmx::VmcsField as F;
    use shared::vmx::controls::PrimaryProcBased as P;
    if !e.allows(F::PrimaryProcBasedVmExecControls, P::USE_IO_BITMAPS.bits()) {
        return Err(Skip::Unsupported("\"use I/O bitmaps\" not offered"));
    }
    e.fresh();
    e.set_bits(
        F::PrimaryProcBasedVmExecControls,
        P::USE_IO_BITMAPS.bits().into(),
    );
    Ok(())
}

pub fn need_l0(e: &Env) -> Result<negative::L0, Skip> {
    e.l0.ok_or(Skip::NoL0)
}

// L2 stubs of the suite: one instruction under test, then VMCALL (the
// suite's success exit), then UD2 (every exception exits: `Env::fresh`).
::core::arch::global_asm!(
    ".section .text.lhv_hostile_l1, \"ax\"",
    // RDMSR of ECX.
    ".global lhv_hostile_l1_rdmsr",
    "lhv_hostile_l1_rdmsr:",
    "rdmsr",
    "vmcall",
    "ud2",
    // WRMSR of EDX:EAX to ECX.
    ".global lhv_hostile_l1_wrmsr",
    "lhv_hostile_l1_wrmsr:",
    "wrmsr",
    "vmcall",
    "ud2",
    // IN AL from port DX.
    ".global lhv_hostile_l1_in",
    "lhv_hostile_l1_in:",
    "in al, dx",
    "vmcall",
    "ud2",
    // Read [RDI] into RAX, write RSI there, read it again into RDX.
    ".global lhv_hostile_l1_mem",
    "lhv_hostile_l1_mem:",
    "mov rax, [rdi]",
    "mov [rdi], rsi",
    "mov rdx, [rdi]",
    "vmcall",
    "ud2",
    ".previous",
);

unsafe extern "C" {
    fn lhv_hostile_l1_rdmsr();
    fn lhv_hostile_l1_wrmsr();
    fn lhv_hostile_l1_in();
    fn lhv_hostile_l1_mem();
}

/// The L2 stubs.
#[derive(Clone, Copy)]
pub enum Stub {
    /// RDMSR of RCX.
    Rdmsr,
    /// WRMSR of RDX:RAX to RCX.
    Wrmsr,
    /// IN AL, DX.
    In,
    /// RAX = [RDI]; [RDI] = RSI; RDX = [RDI].
    Mem,
}

impl Stub {
    fn rip(self) -> u64 {
        let f: unsafe extern "C" fn() = match self {
            Self::Rdmsr => lhv_hostile_l1_rdmsr,
            Self::Wrmsr => lhv_hostile_l1_wrmsr,
            Self::In => lhv_hostile_l1_in,
            Self::Mem => lhv_hostile_l1_mem,
        };
        f as *const () as u64
    }
}

/// Makes L2 start at `stub` with the given registers (the VMCS fresh).
pub fn l2_at(e: &mut Env, stub: Stub, regs: &[(usize, u64)]) {
    e.write(shared::vmx::VmcsField::GuestRip, stub.rip());
    for &(r, v) in regs {
        e.ctx.regs.gpr[r] = v;
    }
}

/// The outcome for the VM exit with basic reason `reason` and
/// `qualification` (not an entry failure).
pub const fn exit(reason: shared::vmx::exit::ExitReason, qualification: u64) -> Outcome {
    Outcome::Exit {
        reason: reason.number(),
        qualification,
    }
}

/// The outcome for an entry that ran L2 to its VMCALL with `value` where
/// `expected` was due.
pub const fn value(expected: u64, got: u64) -> Outcome {
    if expected == got {
        Outcome::Success
    } else {
        Outcome::WrongValue { expected, got }
    }
}
