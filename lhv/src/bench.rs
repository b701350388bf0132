//! Benchmark mode (`mode=bench`, `bench_n=<n>`, default 1000): the cost of
//! an L2 exit that L1 handles, on bare hardware (or Bochs) and under L0.
//!
//! On the BSP only (the APs are not started): VMXON, one VMCS with the
//! base controls of the test loop, and the L2 of [`crate::bench_l2`],
//! which times `n` VMCALLs, then `n` CPUIDs (leaf 0), each a round trip
//! L2 -> L1 -> L2. L1's handler is as lean as a hypervisor's can be: it
//! reads the exit reason and the guest RIP, moves RIP past the instruction
//! (VMCALL 3 bytes, CPUID 2) and, for CPUID, answers with leaf 0 as L1
//! read it once at the start (so L1 itself executes no CPUID per exit).
//!
//! Under L0 (its CPUID signature), L1 asks L0 for its exit count (Stats)
//! before and after each loop; L0's exits per L2 exit are
//! `(delta - calibration) / n`, the calibration being the same hand-over
//! between L1 and L2 with no timed instruction. Output, one line per
//! operation, then `BENCH done` and the machine stops:
//! `BENCH op=vmcall n=1000 cycles_per_exit=<avg> min=<min> l0_exits_per_exit=<x.yy|n/a>`.
//! Without VMX (e.g. under an L0 that hides it): `SKIP bench: VMX is not
//! available: <reason>`.
//!
//! Then the same VMCS with "enable EPT" (an identity EPT12 of 2-MiB pages
//! but for the 2 MiB around the touch buffer, mapped with 4-KiB pages):
//! - `vmcall-ept`: the VMCALL round trip with EPT on, one EPTP;
//! - `touch-ept`: L2 reads (timed), then writes, the first byte of each of
//!   [`TOUCH_PAGES`] pages it has not touched before; under L0 L1 asks
//!   for L0's nested-EPT counters (Stats sub-function `NestedEpt`) before
//!   and after: `BENCH ept02 case=touch value=<EPT02 faults L0 resolved
//!   per page> pages=<n> resolved=<n>`;
//! - `vmcall-ept-k<K>` for K in [`ROOT_SWITCH_K`]: L1 moves VMCS12's EPTP
//!   to the next of K EPTPs (K PML4s that share the tables below) at every
//!   exit, after a warm-up of 4K round trips; under L0: `BENCH ept02
//!   case=roots-k<K> value=<root hit rate, percent> lookups=<n> hits=<n>
//!   evictions=<n> roots=<L0's roots per CPU>`.
//!
//! Bare, the `BENCH ept02` values are `n/a`. Without EPT (or 2-MiB EPT
//! pages): `SKIP bench-ept: <reason>` and no EPT lines.

use lhv::bench_figures::{self, Hundredths, RoundTrips};
use lhv::ept_layout::{self, IdentityEpt, PAGE_2M, Table, TablePhys};
use lhv::opt::LhvOpt;
use shared::boot::BootInfo;
use shared::boot::layout::phys_of;
use shared::hypercall::NestedEptStats;
use shared::vmx::controls::SecondaryProcBased;
use shared::vmx::exit::{ExitReason, ExitReasonField};
use shared::vmx::insn::VmcsRegion;
use shared::vmx::{VmcsField as F, VmxCaps};
use shared::vmx_root::{self, Needs};
use shared::{cmdline, println, x86};

use crate::assert::{fail, test_assert_eq};
use crate::bench_l2::{self, Op};
use crate::exit::{self, EntryOutcome, gpr};
use crate::l0;
use crate::l2::Stack;
use crate::test_loop::Ctx;
use crate::vmcs_setup::{Controls, RFLAGS_FIXED};

/// Round trips per operation without `bench_n=`.
const DEFAULT_N: u64 = 1000;

static CAPS: spin::Once<VmxCaps> = spin::Once::new();
/// The BSP's VMCS in benchmark mode.
static mut VMCS: VmcsRegion = VmcsRegion::new();
/// L2's stack (only L2 uses it; Rust code only takes its address).
static mut L2_STACK: Stack = Stack([0; crate::l2::STACK_SIZE]);

/// Pages L2 touches in the EPT02 fault case.
const TOUCH_PAGES: u64 = 64;
/// EPTP12s cycled in the root-cache cases: below and above L0's default
/// of 4 EPT02 roots per CPU (`ept02_roots=<n>`).
const ROOT_SWITCH_K: [usize; 2] = [3, 6];
/// The most EPTPs cycled.
const MAX_K: usize = 6;
/// Round trips per EPTP before a root-cache case is measured, so that it
/// shows the steady state.
const WARM_UP_PER_EPTP: u64 = 4;

/// The 2-MiB region that EPT12 maps with 4-KiB pages.
const TOUCH_REGION: usize = 2 << 20;
const _: () = assert!(TOUCH_PAGES * bench_l2::PAGE <= TOUCH_REGION as u64);

/// The pages L2 touches (the first [`TOUCH_PAGES`]), alone in their 2-MiB
/// region (with LHV's image 2-MiB aligned): nothing else of LHV's is
/// mapped with 4-KiB pages, so the EPT02 faults per L2 exit of the
/// root-cache cases do not depend on where the linker puts L2's code,
/// stack and page tables (sharing the region with them once cost 3 more
/// EPT02 faults per round trip in `vmcall-ept-k6`).
#[repr(C, align(0x200000))]
struct TouchBuffer([u8; TOUCH_REGION]);

static mut TOUCH: TouchBuffer = TouchBuffer([0; TOUCH_REGION]);
/// EPT12: identity, one 4-KiB page table (around the touch buffer).
static mut EPT: IdentityEpt = IdentityEpt::new();
/// The PML4s of the root-cache cases (each the PML4 of [`EPT`]).
static mut PML4S: [Table; MAX_K] = [Table::new(); MAX_K];

/// One operation's figures.
struct Measured {
    trips: RoundTrips,
    /// L0's exit counter across the loop (`None` without L0).
    l0_exits: Option<u64>,
}

/// L1's side: the context and the CPUID answer it gives L2.
struct Bench {
    ctx: Ctx,
    leaf0: x86::CpuidResult,
    /// The EPTPs of [`PML4S`] (with EPT on).
    eptps: [u64; MAX_K],
    /// How many of them L1 cycles through, one per timed exit (0 or 1:
    /// the EPTP stays).
    rotate: usize,
    next: usize,
}

impl Bench {
    /// One VM entry; returns the basic exit reason. Entry failures are
    /// failed checks.
    fn enter(&mut self) -> ExitReason {
        // SAFETY: the VMCS was written by `init_vmcs` with this CPU's host
        // state, HOST_RIP = exit::host_rip() and LHV's static structures.
        let outcome = unsafe { exit::enter(&mut self.ctx.regs, self.ctx.launched) };
        match outcome {
            EntryOutcome::Exited => {}
            EntryOutcome::FailInvalid => fail(
                format_args!("bench VM entry"),
                format_args!("a VM exit"),
                format_args!("VMfailInvalid"),
            ),
            EntryOutcome::FailValid => {
                let err = shared::vmx::VmInstructionError::from_u32(
                    self.ctx.read(F::VmInstructionError) as u32,
                );
                fail(
                    format_args!("bench VM entry"),
                    format_args!("a VM exit"),
                    format_args!("VMfailValid: {err}"),
                )
            }
        }
        self.ctx.launched = true;
        let reason = ExitReasonField(self.ctx.read(F::VmExitReason) as u32);
        if reason.is_entry_failure() {
            fail(
                format_args!("bench VM entry"),
                format_args!("a VM exit"),
                format_args!("entry failure: {reason}"),
            );
        }
        reason.basic()
    }

    /// Moves L2 past an instruction of `len` bytes.
    fn skip(&mut self, len: u64) {
        let rip = self.ctx.read(F::GuestRip);
        self.ctx.write(F::GuestRip, rip + len);
    }

    /// Runs L2 until its next REPORT (or READY) call, handling the timed
    /// exits on the way.
    fn run_to_report(&mut self) {
        loop {
            let reason = self.enter();
            let rax = self.ctx.regs.gpr[gpr::RAX];
            match reason {
                ExitReason::Vmcall if rax == bench_l2::TIMED_VMCALL => {
                    self.skip(3);
                    if self.rotate > 1 {
                        self.next = (self.next + 1) % self.rotate;
                        self.ctx.write(F::EptPointer, self.eptps[self.next]);
                    }
                }
                ExitReason::Vmcall if rax == bench_l2::REPORT || rax == bench_l2::READY => {
                    return;
                }
                ExitReason::Cpuid => {
                    let r = self.leaf0;
                    let g = &mut self.ctx.regs.gpr;
                    g[gpr::RAX] = r.eax.into();
                    g[gpr::RBX] = r.ebx.into();
                    g[gpr::RCX] = r.ecx.into();
                    g[gpr::RDX] = r.edx.into();
                    self.skip(2);
                }
                other => fail(
                    format_args!("bench VM exit"),
                    format_args!("VMCALL or CPUID"),
                    format_args!("{other} with RAX {rax:#x}"),
                ),
            }
        }
    }

    /// Hands L2 (waiting in READY or REPORT) the job `op` x `n` and runs it.
    fn job(&mut self, op: Op, n: u64) -> Measured {
        self.job_at(op, n, 0)
    }

    /// [`Bench::job`] with `arg` in RDX (the buffer of [`Op::Touch`]).
    fn job_at(&mut self, op: Op, n: u64, arg: u64) -> Measured {
        let before = l0::exits();
        self.ctx.regs.gpr[gpr::RBX] = op as u64;
        self.ctx.regs.gpr[gpr::RCX] = n;
        self.ctx.regs.gpr[gpr::RDX] = arg;
        self.skip(3);
        self.run_to_report();
        let after = l0::exits();
        let g = &self.ctx.regs.gpr;
        let trips = RoundTrips {
            n: g[gpr::RSI],
            sum: g[gpr::RBX],
            min: if g[gpr::RSI] == 0 {
                u64::MAX
            } else {
                g[gpr::RCX]
            },
            max: g[gpr::RDX],
        };
        test_assert_eq!(trips.n, n, "round trips L2 measured");
        Measured {
            trips,
            l0_exits: before.zip(after).map(|(b, a)| a.wrapping_sub(b)),
        }
    }

    /// Turns EPT on with EPT12 = [`EPT`]; the reason if it cannot.
    fn enable_ept(&mut self) -> Result<(), &'static str> {
        let caps = self.ctx.caps;
        let e = &caps.ept_vpid;
        if !caps.has_ept() {
            return Err("the CPU lacks EPT");
        }
        if !(e.walk_length_4 && e.memory_type_wb && e.pages_2m) {
            return Err("EPT lacks a 4-level walk, WB memory type or 2-MiB pages");
        }
        // SAFETY: benchmark mode runs once, on the BSP only; nothing else
        // touches these statics, and L2 does not run while they change.
        let (tables, pml4s) = unsafe {
            (
                crate::repro::exclusive(&raw mut EPT),
                crate::repro::exclusive(&raw mut PML4S),
            )
        };
        let phys = TablePhys {
            pml4: phys_of(&tables.pml4),
            pdpt: phys_of(&tables.pdpt),
            pd: [0, 1, 2, 3].map(|i| phys_of(&tables.pd[i])),
            pt: phys_of(&tables.pt),
        };
        let (first, last) = touch_range();
        test_assert_eq!(
            first & !(PAGE_2M - 1),
            last & !(PAGE_2M - 1),
            "the touch buffer's 2-MiB region (physical)"
        );
        // The "hole" is present: its 2-MiB region is mapped with 4-KiB pages.
        tables.build(&phys, first);
        tables.set_hole_present(first, true);
        test_assert_eq!(
            tables.translate(&phys, last),
            Some(last),
            "EPT12 translation of the touch buffer"
        );
        for (p, eptp) in pml4s.iter_mut().zip(self.eptps.iter_mut()) {
            *p = tables.pml4;
            *eptp = ept_layout::eptp(phys_of(&*p), false);
        }
        let controls = Controls {
            proc2: SecondaryProcBased::ENABLE_EPT,
            ..Controls::base()
        };
        if let Some((field, bits)) = controls.unsupported(caps) {
            fail(
                format_args!("{field} controls allowed with EPT"),
                format_args!("0 unsupported bits"),
                format_args!("{bits:#x}"),
            );
        }
        self.ctx.apply_controls(&controls);
        self.ctx
            .write(F::EptPointer, ept_layout::eptp(phys.pml4, false));
        Ok(())
    }
}

/// Physical addresses of the touch buffer's first and last page.
fn touch_range() -> (u64, u64) {
    let base = phys_of(&raw const TOUCH);
    (base, base + (TOUCH_PAGES - 1) * bench_l2::PAGE)
}

/// One `BENCH op=...` line.
fn print_op(name: impl core::fmt::Display, n: u64, m: &Measured, calibration: Option<u64>) {
    let per_exit = m
        .l0_exits
        .zip(calibration)
        .and_then(|(d, c)| bench_figures::l0_exits_per_exit(d, c, n));
    let avg = m.trips.average();
    let min = m.trips.minimum();
    match per_exit {
        Some(x) => {
            println!("BENCH op={name} n={n} cycles_per_exit={avg} min={min} l0_exits_per_exit={x}")
        }
        None => {
            println!("BENCH op={name} n={n} cycles_per_exit={avg} min={min} l0_exits_per_exit=n/a")
        }
    }
}

/// A figure as `x.yy`, or `n/a` (bare, or nothing to divide by).
struct Figure(Option<Hundredths>);

impl core::fmt::Display for Figure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(h) => write!(f, "{h}"),
            None => f.write_str("n/a"),
        }
    }
}

/// A count, or `n/a` (bare).
struct Count(Option<u64>);

impl core::fmt::Display for Count {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(c) => write!(f, "{c}"),
            None => f.write_str("n/a"),
        }
    }
}

/// L0's nested-EPT counters across `f` (`None` without L0).
fn with_ept02_delta<R>(
    bench: &mut Bench,
    f: impl FnOnce(&mut Bench) -> R,
) -> (R, Option<NestedEptStats>) {
    let before = l0::nested_ept();
    let r = f(bench);
    let after = l0::nested_ept();
    (r, before.zip(after).map(|(b, a)| a.since(b)))
}

/// The cases with EPT on (see the module comment).
fn run_ept(bench: &mut Bench, n: u64) {
    if let Err(why) = bench.enable_ept() {
        println!("SKIP bench-ept: {why}");
        return;
    }
    // The first job warms EPT02 (L2's code, stack and descriptor tables)
    // up; the second is the calibration with EPT on.
    bench.job(Op::Vmcall, 0);
    let calibration = bench.job(Op::Vmcall, 0).l0_exits;
    if let Some(c) = calibration {
        println!("BENCH calibration-ept l0_exits={c}");
    }
    let m = bench.job(Op::Vmcall, n);
    print_op("vmcall-ept", n, &m, calibration);

    let base = &raw const TOUCH as u64;
    let (m, d) = with_ept02_delta(bench, |b| b.job_at(Op::Touch, TOUCH_PAGES, base));
    print_op("touch-ept", TOUCH_PAGES, &m, calibration);
    let resolved = d.map(|d| d.resolved_faults);
    println!(
        "BENCH ept02 case=touch value={} pages={TOUCH_PAGES} resolved={}",
        Figure(resolved.and_then(|r| bench_figures::per(r, TOUCH_PAGES))),
        Count(resolved),
    );

    for k in ROOT_SWITCH_K {
        bench.rotate = k;
        bench.next = 0;
        bench.job(Op::Vmcall, WARM_UP_PER_EPTP * k as u64);
        let (m, d) = with_ept02_delta(bench, |b| b.job(Op::Vmcall, n));
        print_op(format_args!("vmcall-ept-k{k}"), n, &m, calibration);
        match d {
            Some(d) => println!(
                "BENCH ept02 case=roots-k{k} value={} lookups={} hits={} evictions={} roots={}",
                Figure(bench_figures::percent(d.root_hits, d.root_lookups)),
                d.root_lookups,
                d.root_hits,
                d.root_evictions,
                d.root_capacity
            ),
            None => println!("BENCH ept02 case=roots-k{k} value=n/a"),
        }
    }
    bench.rotate = 0;
}

/// Runs the benchmark on the BSP and stops the machine.
pub fn run(boot: &BootInfo) -> ! {
    let n = cmdline::get_num(boot.cmdline(), "bench_n").unwrap_or(DEFAULT_N);
    let under_l0 = l0::present();
    println!(
        "BENCH: n={n}, L0 {}",
        if under_l0 { "present" } else { "absent" }
    );
    let caps = match vmx_root::probe(Needs::default()) {
        Ok(c) => CAPS.call_once(|| c),
        Err(e) => skip(e),
    };
    let controls = Controls::base();
    if let Some((field, bits)) = controls.unsupported(caps) {
        fail(
            format_args!("{field} controls allowed"),
            format_args!("0 unsupported bits"),
            format_args!("{bits:#x}"),
        );
    }
    let vmx = match vmx_root::enter(caps) {
        Ok(v) => v,
        Err(e) => skip(e),
    };
    // No interrupt may disturb the timing: legacy interrupts masked, no
    // LAPIC timer (never started in this mode), APs not started.
    crate::hw::pit::mask_all();
    // SAFETY: benchmark mode runs once, on the BSP only; nothing else
    // touches these statics.
    let (region, stack_top) = unsafe {
        (
            crate::repro::exclusive(&raw mut VMCS),
            (&raw const L2_STACK)
                .cast::<u8>()
                .add(crate::l2::STACK_SIZE) as u64,
        )
    };
    let on_bochs = crate::test_loop::firmware_is_bochs(boot);
    let mut ctx = Ctx::new(0, vmx, caps, LhvOpt::empty(), on_bochs, region);
    ctx.init_vmcs(
        &controls,
        bench_l2::l2_main as *const () as u64,
        stack_top - 8,
        RFLAGS_FIXED,
    );
    let mut bench = Bench {
        ctx,
        leaf0: x86::cpuid(0, 0),
        eptps: [0; MAX_K],
        rotate: 0,
        next: 0,
    };
    bench.run_to_report();
    test_assert_eq!(
        bench.ctx.regs.gpr[gpr::RAX],
        bench_l2::READY,
        "L2's first call"
    );
    let calibration = bench.job(Op::Vmcall, 0).l0_exits;
    if let Some(c) = calibration {
        println!("BENCH calibration l0_exits={c}");
    }
    for op in [Op::Vmcall, Op::Cpuid] {
        let m = bench.job(op, n);
        print_op(op.name(), n, &m, calibration);
    }
    run_ept(&mut bench, n);
    println!("BENCH done");
    shared::platform::shutdown(0)
}

/// `SKIP bench: VMX is not available: <reason>` and stop.
fn skip(e: vmx_root::Unavailable) -> ! {
    println!("SKIP bench: VMX is not available: {e}");
    shared::platform::shutdown(0)
}
