//! Item 11: L0's hypercalls. Stats at CPL 0 answers when L0's command line
//! enables it (the ring-3 and virtual-8086 cases are in `legacy`); under
//! L0 its nested-EPT sub-function answers and an unknown one is
//! BAD_ARGUMENT.

use shared::ept::ept02::MAX_ROOTS;
use shared::hypercall::{self, Hypercall, NestedEptStats, StatsKind};
use shared::trap::vector;
use shared::vmx::insn::VmcallRegs;

use super::{Env, check, skip};

/// L0's Stats (sub-function 0): `None` if VMCALL raised #UD (no L0, or
/// Stats disabled); an answer other than OK is a failed check.
pub fn stats() -> Option<VmcallRegs> {
    let r = stats_raw(StatsKind::General as u64)?;
    check(
        "stats_ok",
        r.rax == hypercall::OK,
        format_args!("RAX = OK"),
        format_args!("{:#x}", r.rax),
    );
    Some(r)
}

/// Stats with sub-function `rbx`: every answer register, or `None` if
/// VMCALL raised #UD.
fn stats_raw(rbx: u64) -> Option<VmcallRegs> {
    let (mut rax, mut rbx, mut rcx, mut rdx, mut rsi, mut rdi) =
        (Hypercall::Stats.rax(), rbx, 0u64, 0u64, 0u64, 0u64);
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
            inout("rdi") rdi,
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
        None => Some(VmcallRegs {
            rax,
            rbx,
            rcx,
            rdx,
            rsi,
            rdi,
        }),
    }
}

/// Stats sub-functions under L0: 1 (nested EPT) answers, with no EPT02
/// activity for a guest that runs no L2 and 1 to `MAX_ROOTS` roots per
/// CPU; an unknown one is BAD_ARGUMENT (and changes no counter).
fn subfunctions(env: &Env) {
    if env.l0.is_none() {
        skip("stats_subfunctions", "no L0 (bare)");
        return;
    }
    match stats_raw(StatsKind::NestedEpt as u64) {
        Some(r) => {
            let s = NestedEptStats::from_regs([r.rbx, r.rcx, r.rdx, r.rsi, r.rdi]);
            let roots = 1..=MAX_ROOTS as u64;
            check(
                "stats_nested_ept",
                r.rax == hypercall::OK
                    && s.resolved_faults == 0
                    && s.root_lookups == 0
                    && s.root_hits == 0
                    && roots.contains(&s.root_capacity),
                format_args!("OK, no EPT02 activity, 1 to {MAX_ROOTS} roots"),
                format_args!("RAX {:#x}, {s:?}", r.rax),
            );
        }
        None => check(
            "stats_nested_ept",
            false,
            format_args!("an answer"),
            format_args!("#UD"),
        ),
    }
    let r = stats_raw(u64::MAX);
    check(
        "stats_bad_subfunction",
        r.is_some_and(|r| r.rax == hypercall::BAD_ARGUMENT),
        format_args!("RAX = BAD_ARGUMENT"),
        format_args!("{:?}", r.map(|r| r.rax)),
    );
}

/// Stats sub-functions here; the CPL-3 and virtual-8086 cases run outside
/// 64-bit mode (`legacy`).
pub fn run(env: &Env) {
    subfunctions(env);
}
