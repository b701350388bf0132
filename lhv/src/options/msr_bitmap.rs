//! MSR_BITMAP (0x400): L2 runs under a per-CPU MSR bitmap (SDM 25.6.9)
//! whose read and write bits for a few test MSRs, in the low and the high
//! range, change every iteration. For each test MSR, L2 reads it, writes a
//! new value and reads it again:
//! - an intercepted RDMSR must exit with reason 31 and ECX = the MSR, and
//!   L2 gets L1's emulated value; one not intercepted must not exit and
//!   returns the MSR's real value;
//! - an intercepted WRMSR must exit with reason 32, ECX = the MSR and
//!   EDX:EAX = the value, and leave the MSR unchanged (L1 drops it); one not
//!   intercepted must not exit and take effect: for IA32_SYSENTER_ESP/EIP
//!   and IA32_FS_BASE/IA32_GS_BASE L1 checks the guest-state field of the
//!   VMCS (saved on exit, SDM 28.3.1/28.3.2), for IA32_TSC_AUX the MSR;
//! - RDMSR/WRMSR of MSRs outside both ranges always exit (SDM 26.1.3).
//!
//! Each exit must be one the bitmap asks for, and the number of exits per
//! test MSR is checked when L2 reports.

use ::core::sync::atomic::{AtomicU64, Ordering};
use lhv::msr_bitmap::{self, Access, BITMAP_SIZE};
use lhv::opt::LhvOpt;
use shared::boot::layout::phys_of;
use shared::cpu_println;
use shared::percpu::MAX_CPUS;
use shared::vmx::exit::ExitReason;
use shared::vmx::{VmcsField as F, VmxCaps};

use super::{Handled, TestOption, safe_msr};
use crate::assert::{fail, test_assert, test_assert_eq};
use crate::exit::{Exit, gpr};
use crate::l2::{self, L2Env, l2_assert_eq};
use crate::percpu_cell::per_cpu_static;
use crate::test_loop::Ctx;
use crate::vmcs_setup::Controls;

/// L2 reports that it finished test MSR RBX.
const CHECK: u64 = l2::call_number(LhvOpt::MSR_BITMAP, 1);

/// IA32_TSC_AUX (bits 63:32 reserved).
const IA32_TSC_AUX: u32 = 0xc000_0103;

/// The test MSRs and where L1 sees their value after L2 wrote it.
const TESTS: [(u32, Where); 5] = [
    (0x175, Where::Field(F::GuestIa32SysenterEsp)),
    (0x176, Where::Field(F::GuestIa32SysenterEip)),
    (0xc000_0100, Where::Field(F::GuestFsBase)),
    (0xc000_0101, Where::Field(F::GuestGsBase)),
    (IA32_TSC_AUX, Where::Msr),
];
const N: usize = TESTS.len();

/// MSRs outside both bitmap ranges: every access exits.
const OUTSIDE: [u32; 4] = [0x2000, 0x4000_0000, 0xbfff_ffff, 0xc000_2000];

#[derive(Clone, Copy, Debug)]
enum Where {
    /// A guest-state field of the VMCS.
    Field(F),
    /// The MSR itself (not switched by VM entries and exits).
    Msr,
}

/// The bitmap page of one CPU.
#[repr(C, align(4096))]
struct Bitmap([u8; BITMAP_SIZE]);

per_cpu_static!(
    static BITMAP: Bitmap = Bitmap([0; BITMAP_SIZE]);
);

/// Per CPU: the intercept bits of this iteration (bit 2k read, 2k+1 write).
static PLAN: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Per CPU and test MSR: its value when L2 starts with it.
static BASE: [[AtomicU64; N]; MAX_CPUS] = [const { [const { AtomicU64::new(0) }; N] }; MAX_CPUS];

/// Keeps a value canonical (and 32-bit for IA32_TSC_AUX).
const fn fit(msr: u32, v: u64) -> u64 {
    if msr == IA32_TSC_AUX {
        v & 0xffff_ffff
    } else {
        v & 0x0000_7fff_ffff_fff0
    }
}

/// The value L2 writes to test MSR `k`.
const fn written(cpu: usize, iter: u64, k: usize) -> u64 {
    fit(
        TESTS[k].0,
        0x0000_1a2b_0000_0000 | (cpu as u64) << 28 | (iter & 0xf_ffff) << 8 | (k as u64) << 4,
    )
}

/// What L1 answers to an intercepted RDMSR of `msr`.
const fn emulated(msr: u32, iter: u64) -> u64 {
    0x5afe_0000_0000_0000 ^ ((iter & 0xffff) << 32) ^ msr as u64
}

/// The value test MSR `k` starts the iteration with (FS/GS bases: LHV's).
const fn base_value(cpu: usize, iter: u64, k: usize) -> u64 {
    fit(
        TESTS[k].0,
        0x0000_0b0b_0000_0000 | (cpu as u64) << 28 | (iter & 0xf_ffff) << 8 | (k as u64) << 4,
    )
}

fn l2_rdmsr(msr: u32) -> u64 {
    // SAFETY: RDMSR of an MSR that exists or that the bitmap sends to L1.
    unsafe { l2::rdmsr(msr) }
}

fn l2_wrmsr(msr: u32, v: u64) {
    // SAFETY: the test MSRs do not affect L2's code (it uses neither
    // SYSENTER, FS, GS nor RDTSCP); the others exit to L1.
    unsafe {
        ::core::arch::asm!("wrmsr", in("ecx") msr, in("eax") v as u32,
            in("edx") (v >> 32) as u32, options(nostack, preserves_flags));
    }
}

fn l2_action(env: &L2Env) {
    let plan = PLAN[env.cpu].load(Ordering::Relaxed);
    for (k, &(msr, _)) in TESTS.iter().enumerate() {
        let base = BASE[env.cpu][k].load(Ordering::Relaxed);
        let read_exits = plan & (1 << (2 * k)) != 0;
        let write_exits = plan & (1 << (2 * k + 1)) != 0;
        let fake = emulated(msr, env.iter);
        let v = written(env.cpu, env.iter, k);
        let before = l2_rdmsr(msr);
        l2_assert_eq!(
            before,
            if read_exits { fake } else { base },
            "RDMSR of a test MSR before WRMSR (MSR bitmap)"
        );
        l2_wrmsr(msr, v);
        let after = l2_rdmsr(msr);
        let real = if write_exits { base } else { v };
        l2_assert_eq!(
            after,
            if read_exits { fake } else { real },
            "RDMSR of a test MSR after WRMSR (MSR bitmap)"
        );
        l2::vmcall(
            CHECK,
            l2::Args {
                rbx: k as u64,
                ..l2::Args::default()
            },
        );
    }
    for (i, &msr) in OUTSIDE.iter().enumerate() {
        l2_assert_eq!(
            l2_rdmsr(msr),
            emulated(msr, env.iter),
            "RDMSR of an MSR outside the bitmap ranges"
        );
        l2_wrmsr(msr, written(env.cpu, env.iter, i));
    }
    l2::vmcall(
        CHECK,
        l2::Args {
            rbx: N as u64,
            ..l2::Args::default()
        },
    );
}

/// The MSR-bitmap checks of one CPU.
pub struct MsrBitmap {
    bitmap: Option<&'static mut Bitmap>,
    tsc_aux: bool,
    plan: u64,
    fs_gs: [u64; 2],
    /// Exits per test MSR this iteration (reads, writes), and for the
    /// MSRs outside the ranges.
    reads: [u64; N + 1],
    writes: [u64; N + 1],
    exits: u64,
    checks: u64,
}

impl MsrBitmap {
    /// Fresh state.
    pub const fn new() -> Self {
        Self {
            bitmap: None,
            tsc_aux: false,
            plan: 0,
            fs_gs: [0; 2],
            reads: [0; N + 1],
            writes: [0; N + 1],
            exits: 0,
            checks: 0,
        }
    }

    fn intercepts(&self, k: usize, a: Access) -> bool {
        let bit = 2 * k + usize::from(a == Access::Write);
        self.plan & (1 << bit) != 0
    }

    /// Where the exit's MSR is: a test MSR's index, `N` for one outside
    /// the ranges; an exit the bitmap should not have caused fails.
    fn classify(&self, msr: u32, a: Access) -> usize {
        if let Some(k) = TESTS.iter().position(|t| t.0 == msr) {
            let bitmap = &self.bitmap.as_ref().expect("set up").0;
            test_assert!(
                msr_bitmap::exits(bitmap, msr, a) && self.intercepts(k, a),
                format_args!("{a:?} exit for MSR {msr:#x}"),
                "only when its bit in the MSR bitmap is set",
                "exit"
            );
            k
        } else if OUTSIDE.contains(&msr) {
            N
        } else {
            fail(
                format_args!("{a:?} exit"),
                format_args!("for a test MSR"),
                format_args!("ECX {msr:#x}"),
            )
        }
    }

    /// Puts test MSR `k` to its start value for this iteration.
    fn reset(&self, ctx: &mut Ctx, k: usize) {
        let v = self.start_value(ctx, k);
        match TESTS[k].1 {
            Where::Field(f) => ctx.write(f, v),
            Where::Msr => {
                // SAFETY: LHV does not use IA32_TSC_AUX (no RDTSCP).
                let ok = unsafe { safe_msr::wrmsr(TESTS[k].0, v) };
                test_assert!(ok, "WRMSR IA32_TSC_AUX in L1", "success", ok);
            }
        }
        BASE[ctx.cpu][k].store(v, Ordering::Relaxed);
    }

    fn start_value(&self, ctx: &Ctx, k: usize) -> u64 {
        match TESTS[k].0 {
            0xc000_0100 => self.fs_gs[0],
            0xc000_0101 => self.fs_gs[1],
            _ => base_value(ctx.cpu, ctx.iter, k),
        }
    }

    fn real_value(&self, ctx: &Ctx, k: usize) -> u64 {
        match TESTS[k].1 {
            Where::Field(f) => ctx.read(f),
            Where::Msr => safe_msr::rdmsr(TESTS[k].0).unwrap_or(u64::MAX),
        }
    }

    fn on_check(&mut self, ctx: &mut Ctx, k: usize) {
        if k < N {
            let (r, w) = (
                self.intercepts(k, Access::Read),
                self.intercepts(k, Access::Write),
            );
            test_assert_eq!(
                (self.reads[k], self.writes[k]),
                (2 * u64::from(r), u64::from(w)),
                format_args!(
                    "RDMSR and WRMSR exits for MSR {:#x} (read bit {r}, write bit {w})",
                    TESTS[k].0
                )
            );
            if k != 4 || self.tsc_aux {
                let expected = if w {
                    BASE[ctx.cpu][k].load(Ordering::Relaxed)
                } else {
                    written(ctx.cpu, ctx.iter, k)
                };
                test_assert_eq!(
                    self.real_value(ctx, k),
                    expected,
                    format_args!("MSR {:#x} after L2's WRMSR (write bit {w})", TESTS[k].0)
                );
                self.reset(ctx, k);
            }
        } else {
            let n = OUTSIDE.len() as u64;
            test_assert_eq!(
                (self.reads[N], self.writes[N]),
                (n, n),
                "RDMSR and WRMSR exits for MSRs outside the bitmap ranges"
            );
        }
        self.reads[k.min(N)] = 0;
        self.writes[k.min(N)] = 0;
        self.checks += 1;
    }
}

impl TestOption for MsrBitmap {
    fn bit(&self) -> LhvOpt {
        LhvOpt::MSR_BITMAP
    }

    fn unsupported(&self, caps: &VmxCaps) -> Option<&'static str> {
        use shared::vmx::controls::PrimaryProcBased;
        (!caps
            .proc
            .effective()
            .can_set(PrimaryProcBased::USE_MSR_BITMAPS.bits()))
        .then_some("the CPU lacks the \"use MSR bitmaps\" control")
    }

    fn request(&self, c: &mut Controls) {
        c.proc |= shared::vmx::controls::PrimaryProcBased::USE_MSR_BITMAPS;
    }

    fn setup(&mut self, ctx: &mut Ctx) {
        safe_msr::install();
        let bitmap = BITMAP.claim(ctx.cpu);
        ctx.write(F::MsrBitmapAddress, phys_of(&bitmap.0));
        self.bitmap = Some(bitmap);
        self.fs_gs = [ctx.read(F::GuestFsBase), ctx.read(F::GuestGsBase)];
        // SAFETY: LHV does not use IA32_TSC_AUX.
        self.tsc_aux = unsafe { safe_msr::writable(IA32_TSC_AUX, 0x1234_5678) };
        if !self.tsc_aux {
            cpu_println!("SKIP MSR_BITMAP IA32_TSC_AUX: not writable on this CPU");
        }
    }

    fn before_entry(&mut self, ctx: &mut Ctx) {
        let mut plan = 0;
        let bitmap = &mut self.bitmap.as_mut().expect("set up").0;
        bitmap.fill(0);
        for (k, &(msr, _)) in TESTS.iter().enumerate() {
            for (j, a) in [Access::Read, Access::Write].into_iter().enumerate() {
                // IA32_TSC_AUX stays intercepted when the CPU lacks it.
                let on = msr_bitmap::intercept_in_iter(ctx.iter, ctx.cpu, k, a)
                    || (msr == IA32_TSC_AUX && !self.tsc_aux);
                msr_bitmap::set(bitmap, msr, a, on);
                if on {
                    plan |= 1 << (2 * k + j);
                }
            }
        }
        self.plan = plan;
        PLAN[ctx.cpu].store(plan, Ordering::Relaxed);
        for k in 0..N {
            if k == 4 && !self.tsc_aux {
                continue;
            }
            self.reset(ctx, k);
        }
    }

    fn on_exit(&mut self, ctx: &mut Ctx, exit: &Exit) -> Handled {
        let (msr, a) = match exit.reason {
            ExitReason::Rdmsr => (ctx.regs.gpr[gpr::RCX] as u32, Access::Read),
            ExitReason::Wrmsr => (ctx.regs.gpr[gpr::RCX] as u32, Access::Write),
            ExitReason::Vmcall if ctx.regs.gpr[gpr::RAX] == CHECK => {
                let k = ctx.regs.gpr[gpr::RBX] as usize;
                test_assert!(k <= N, "MSR_BITMAP check number", format_args!("<= {N}"), k);
                self.on_check(ctx, k);
                ctx.skip_instruction(exit);
                return Handled::Yes;
            }
            _ => return Handled::NotMine,
        };
        test_assert_eq!(
            exit.instruction_len,
            2u64,
            "RDMSR/WRMSR exit instruction length"
        );
        test_assert_eq!(exit.qualification, 0u64, "RDMSR/WRMSR exit qualification");
        let k = self.classify(msr, a);
        match a {
            Access::Read => {
                let v = emulated(msr, ctx.iter);
                ctx.regs.gpr[gpr::RAX] = v & 0xffff_ffff;
                ctx.regs.gpr[gpr::RDX] = v >> 32;
                self.reads[k] += 1;
            }
            Access::Write => {
                let value = (ctx.regs.gpr[gpr::RDX] << 32) | (ctx.regs.gpr[gpr::RAX] & 0xffff_ffff);
                let i = if k < N {
                    k
                } else {
                    OUTSIDE.iter().position(|&m| m == msr).unwrap_or(0)
                };
                test_assert_eq!(
                    value,
                    written(ctx.cpu, ctx.iter, i),
                    format_args!("EDX:EAX of the WRMSR exit for MSR {msr:#x}")
                );
                self.writes[k] += 1;
            }
        }
        self.exits += 1;
        ctx.skip_instruction(exit);
        Handled::Yes
    }

    fn l2_action(&self) -> Option<l2::L2Action> {
        Some(l2_action)
    }

    fn count(&self) -> u64 {
        self.checks
    }
}
