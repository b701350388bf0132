//! Item 11: L0's hypercalls. Stats at CPL 0 answers when L0's command line
//! enables it (the ring-3 and virtual-8086 cases are in `legacy`).

use shared::hypercall::{self, Hypercall};
use shared::trap::vector;
use shared::vmx::insn::VmcallRegs;

use super::{Env, check};

/// L0's Stats: `None` if VMCALL raised #UD (no L0, or Stats disabled).
pub fn stats() -> Option<VmcallRegs> {
    let (mut rax, mut rbx, mut rcx, mut rdx, mut rsi) =
        (Hypercall::Stats.rax(), 0u64, 0u64, 0u64, 0u64);
    super::trap::arm();
    // SAFETY: L0's Stats only returns values in registers; without L0 (or
    // with Stats disabled) VMCALL is #UD and the trap resumes at 2:, which
    // restores RBX (reserved by the compiler) either way.
    unsafe {
        ::core::arch::asm!(
            "lea r11, [rip + 2f]",
            "mov qword ptr [rip + {resume}], r11",
            "xchg rbx, {b}",
            "vmcall",
            "2:",
            "xchg rbx, {b}",
            resume = sym super::trap::RESUME,
            b = inout(reg) rbx,
            inout("rax") rax,
            inout("rcx") rcx,
            inout("rdx") rdx,
            inout("rsi") rsi,
            out("r11") _,
        );
    }
    let t = super::trap::take();
    match t {
        Some(t) if t.is(vector::UD, None) => None,
        Some(t) => {
            check(
                "stats",
                false,
                format_args!("Stats or #UD"),
                format_args!("{t:?}"),
            );
            None
        }
        None => {
            check(
                "stats_ok",
                rax == hypercall::OK,
                format_args!("RAX = OK"),
                format_args!("{rax:#x}"),
            );
            Some(VmcallRegs {
                rax,
                rbx,
                rcx,
                rdx,
                rsi,
                ..Default::default()
            })
        }
    }
}

/// (The CPL-3 and virtual-8086 cases run outside 64-bit mode: `legacy`.)
pub fn run(_env: &Env) {}
