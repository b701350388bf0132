//! L2, the guest LHV runs: 64-bit code of LHV's own image, in LHV's address
//! space (same CR3; identity EPT when EPT is on), on its own stack. Each
//! iteration it runs the actions of the enabled options, then tells L1 it
//! is done with a VMCALL; L1 checks each exit against the SDM.
//!
//! L2 talks to L1 only with VMCALL (RAX = call number, arguments in RBX,
//! RCX, RDX, RSI; results in the same registers). Checks made in L2 report
//! through [`l2_assert!`], which L1 turns into a `TEST_ASSERT failed` line.

use ::core::arch::asm;
use lhv::opt::LhvOpt;

/// L2's per-iteration work for one option.
pub type L2Action = fn(&L2Env);

/// What an L2 action knows.
#[derive(Clone, Copy, Debug)]
pub struct L2Env {
    /// The CPU index.
    pub cpu: usize,
    /// The iteration number.
    pub iter: u64,
}

/// Most actions one L2 runs per iteration.
pub const MAX_ACTIONS: usize = 16;

/// The actions L2 runs, fixed by L1 before the first VM entry.
#[derive(Clone, Copy, Debug)]
pub struct L2Plan {
    /// The CPU index.
    pub cpu: usize,
    /// The actions, in order.
    pub actions: [Option<L2Action>; MAX_ACTIONS],
}

impl L2Plan {
    /// No actions.
    pub const fn new() -> Self {
        Self {
            cpu: 0,
            actions: [None; MAX_ACTIONS],
        }
    }
}

/// L2's stack size.
pub const STACK_SIZE: usize = 16 * 1024;

/// L2's stack.
#[repr(C, align(16))]
pub struct Stack(pub [u8; STACK_SIZE]);

/// "LH" in RAX bits 31:16 marks an LHV call (so that L0's own hypercalls,
/// `0x4C30_xxxx`, never collide).
const MAGIC: u64 = 0x4c48_0000;

/// The VMCALL number for call `n` of the option with bit `bit` (the
/// baseline and the core use [`LhvOpt::empty`]).
pub const fn call_number(bit: LhvOpt, n: u8) -> u64 {
    let index = if bit.is_empty() {
        0
    } else {
        bit.bits().trailing_zeros() as u64 + 1
    };
    MAGIC | (index << 8) | n as u64
}

/// The core's calls.
pub mod call {
    use super::{LhvOpt, call_number};
    /// L2 finished iteration RBX; L1 answers RBX = the next iteration.
    pub const ITER_DONE: u64 = call_number(LhvOpt::empty(), 1);
    /// An L2 check failed: RBX/RCX = what (pointer, length), RDX =
    /// expected, RSI = got.
    pub const ASSERT_FAILED: u64 = call_number(LhvOpt::empty(), 2);
}

/// Registers of an L2 VMCALL.
#[derive(Clone, Copy, Debug, Default)]
pub struct Args {
    /// RBX.
    pub rbx: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RSI.
    pub rsi: u64,
}

/// VMCALL `number` from L2 with `args`; returns L1's answer registers.
pub fn vmcall(number: u64, args: Args) -> Args {
    let mut out = args;
    // SAFETY: VMCALL in VMX non-root operation exits to L1, which changes at
    // most RBX, RCX, RDX, RSI (and RIP past the VMCALL). RBX is reserved by
    // the compiler, hence the exchange.
    unsafe {
        asm!(
            "xchg {rbx}, rbx",
            "vmcall",
            "xchg {rbx}, rbx",
            rbx = inout(reg) out.rbx,
            inout("rax") number => _,
            inout("rcx") out.rcx,
            inout("rdx") out.rdx,
            inout("rsi") out.rsi,
            options(nostack),
        );
    }
    out
}

/// RDMSR from L2. Unlike `shared::x86::rdmsr` it is not `nomem`: in L2 an
/// RDMSR may exit to L1, which may change memory L2 reads next (counters,
/// plans), so the compiler must not move memory accesses across it.
///
/// # Safety
/// The MSR must exist, or the MSR bitmap must send the read to L1.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: delegated to the caller (see above); RDMSR writes no memory.
    unsafe {
        ::core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi,
            options(nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Reports a failed L2 check to L1 (which halts the CPU).
pub fn report_failure(what: &'static str, expected: u64, got: u64) {
    vmcall(
        call::ASSERT_FAILED,
        Args {
            rbx: what.as_ptr() as u64,
            rcx: what.len() as u64,
            rdx: expected,
            rsi: got,
        },
    );
}

/// `l2_assert!(got == expected, "what", expected, got)` in L2 code.
macro_rules! l2_assert_eq {
    ($got:expr, $expected:expr, $what:expr $(,)?) => {{
        let (got, expected): (u64, u64) = ($got as u64, $expected as u64);
        if got != expected {
            $crate::l2::report_failure($what, expected, got);
        }
    }};
}
pub(crate) use l2_assert_eq;

/// L2's entry point (RDI = its plan).
pub extern "C" fn l2_main(plan: &'static L2Plan) -> ! {
    let mut iter = 0;
    loop {
        let env = L2Env {
            cpu: plan.cpu,
            iter,
        };
        for action in plan.actions.iter().flatten() {
            action(&env);
        }
        iter = vmcall(
            call::ITER_DONE,
            Args {
                rbx: iter,
                ..Args::default()
            },
        )
        .rbx;
    }
}
