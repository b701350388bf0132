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

use lhv::bench_figures::{self, RoundTrips};
use lhv::opt::LhvOpt;
use shared::boot::BootInfo;
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
                ExitReason::Vmcall if rax == bench_l2::TIMED_VMCALL => self.skip(3),
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
        let before = l0::exits();
        self.ctx.regs.gpr[gpr::RBX] = op as u64;
        self.ctx.regs.gpr[gpr::RCX] = n;
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
        let per_exit = m
            .l0_exits
            .zip(calibration)
            .and_then(|(d, c)| bench_figures::l0_exits_per_exit(d, c, n));
        match per_exit {
            Some(x) => println!(
                "BENCH op={} n={n} cycles_per_exit={} min={} l0_exits_per_exit={x}",
                op.name(),
                m.trips.average(),
                m.trips.minimum()
            ),
            None => println!(
                "BENCH op={} n={n} cycles_per_exit={} min={} l0_exits_per_exit=n/a",
                op.name(),
                m.trips.average(),
                m.trips.minimum()
            ),
        }
    }
    println!("BENCH done");
    shared::platform::shutdown(0)
}

/// `SKIP bench: VMX is not available: <reason>` and stop.
fn skip(e: vmx_root::Unavailable) -> ! {
    println!("SKIP bench: VMX is not available: {e}");
    shared::platform::shutdown(0)
}
