//! VMX instructions whose #UD or #GP is an expected outcome: each wrapper
//! arms a one-shot guard with the address of its instruction and the
//! address after it; the claiming #UD/#GP handler takes a fault at exactly
//! that address (CPL 0), records vector and error code and resumes after
//! the instruction. Any other #UD/#GP stays fatal.
//!
//! The wrappers return the instruction's [`Outcome`] (exception, or the
//! VMsucceed/VMfail decoded from RFLAGS, SDM 31.2).

use ::core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lhv::negative_cases::{Outcome, decode_flags};
use shared::trap::{self, Claim, TrapFrame, vector};
use shared::vmx::VmcsField;

/// The armed instruction: its address and where to resume (written by the
/// wrappers' assembly, read by the handler).
#[repr(C)]
pub struct Armed {
    fault: AtomicU64,
    resume: AtomicU64,
}

static ARMED: Armed = Armed {
    fault: AtomicU64::new(0),
    resume: AtomicU64::new(0),
};
static HIT: AtomicBool = AtomicBool::new(false);
static VECTOR: AtomicU64 = AtomicU64::new(0);
static ERROR_CODE: AtomicU64 = AtomicU64::new(0);

fn handler(frame: &mut TrapFrame) -> Claim {
    let fault = ARMED.fault.load(Ordering::Acquire);
    if fault == 0 || frame.rip != fault || frame.cs & 3 != 0 {
        return Claim::NotMine;
    }
    VECTOR.store(frame.vector, Ordering::Relaxed);
    ERROR_CODE.store(frame.error_code, Ordering::Relaxed);
    HIT.store(true, Ordering::Release);
    ARMED.fault.store(0, Ordering::Release);
    frame.rip = ARMED.resume.load(Ordering::Acquire);
    Claim::Handled
}

/// Installs the claiming handlers (once; the negative suite runs on the
/// BSP only).
pub fn install() {
    for v in [vector::UD, vector::GP] {
        if trap::add_handler(v, handler).is_err() {
            crate::assert::fail(
                format_args!("negative: claiming handler for vector {v}"),
                format_args!("a free slot"),
                format_args!("none"),
            );
        }
    }
}

/// The guard's address for the assembly.
pub fn armed_ptr() -> *const Armed {
    &raw const ARMED
}

/// Before a guarded instruction.
pub fn begin() {
    HIT.store(false, Ordering::Release);
}

/// After a guarded instruction with its CF and ZF: the fault if one was
/// taken, else the VMX outcome (VMfailValid reads the error number with a
/// guarded VMREAD).
pub fn end(cf: bool, zf: bool) -> Outcome {
    ARMED.fault.store(0, Ordering::Release);
    if HIT.load(Ordering::Acquire) {
        return Outcome::Exception {
            vector: VECTOR.load(Ordering::Relaxed) as u8,
            error_code: ERROR_CODE.load(Ordering::Relaxed),
        };
    }
    decode_flags(cf, zf, || {
        match vmread(VmcsField::VmInstructionError.encoding().into()) {
            (Outcome::Success, v) => v as u32,
            // No readable error: a number no instruction reports.
            _ => u32::MAX,
        }
    })
}

/// Runs one VMX instruction (an assembly template naming its operands)
/// under the guard and evaluates to its [`Outcome`].
macro_rules! guarded {
    ($insn:literal $(, $($op:tt)*)?) => {{
        let (cf, zf): (u8, u8);
        $crate::negative::guard::begin();
        // SAFETY: the instruction is a VMX instruction on operands owned by
        // the caller (registers, or u64/descriptor values on its stack);
        // a #UD/#GP it raises is taken by the guard's handler, which
        // resumes at label 3 with every register as it was; the caller
        // vouches for the instruction's effect on VMX state.
        unsafe {
            ::core::arch::asm!(
                "lea rax, [rip + 2f]",
                "mov [{armed}], rax",
                "lea rax, [rip + 3f]",
                "mov [{armed} + 8], rax",
                "2:",
                $insn,
                "3:",
                "setc {cf}",
                "setz {zf}",
                armed = in(reg) $crate::negative::guard::armed_ptr(),
                cf = out(reg_byte) cf,
                zf = out(reg_byte) zf,
                out("rax") _,
                $($($op)*)?
            );
        }
        $crate::negative::guard::end(cf != 0, zf != 0)
    }};
}

/// VMXON with pointer `pa`.
pub fn vmxon(pa: u64) -> Outcome {
    guarded!("vmxon [{p}]", p = in(reg) &pa)
}

/// VMXOFF.
pub fn vmxoff() -> Outcome {
    guarded!("vmxoff")
}

/// VMCLEAR of `pa`.
pub fn vmclear(pa: u64) -> Outcome {
    guarded!("vmclear [{p}]", p = in(reg) &pa)
}

/// VMPTRLD of `pa`.
pub fn vmptrld(pa: u64) -> Outcome {
    guarded!("vmptrld [{p}]", p = in(reg) &pa)
}

/// VMREAD of `encoding`: the outcome and the value read (meaningful on
/// success only).
pub fn vmread(encoding: u64) -> (Outcome, u64) {
    let mut value: u64 = 0;
    let o = guarded!("vmread {v}, {e}", v = inout(reg) value, e = in(reg) encoding);
    (o, value)
}

/// VMWRITE of `value` to `encoding`.
pub fn vmwrite(encoding: u64, value: u64) -> Outcome {
    guarded!("vmwrite {e}, {v}", e = in(reg) encoding, v = in(reg) value)
}

/// VMLAUNCH where it cannot enter a guest (outside VMX operation: #UD).
pub fn vmlaunch_outside_vmx() -> Outcome {
    guarded!("vmlaunch")
}

/// INVEPT of raw type `kind` with a zero descriptor but `eptp`.
pub fn invept(kind: u64, eptp: u64) -> Outcome {
    let desc: [u64; 2] = [eptp, 0];
    guarded!("invept {k}, [{d}]", k = in(reg) kind, d = in(reg) &desc)
}

/// INVVPID of raw type `kind` for `vpid` (address 0).
pub fn invvpid(kind: u64, vpid: u16) -> Outcome {
    let desc: [u64; 2] = [u64::from(vpid), 0];
    guarded!("invvpid {k}, [{d}]", k = in(reg) kind, d = in(reg) &desc)
}
