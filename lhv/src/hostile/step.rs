//! Item 8: the guest's own debug traps on an instruction L0 single-steps
//! (a write where writes are dropped: L0's region under L0):
//! - the guest's own TF: one #DB after the write, with DR6.BS = 1;
//! - a data breakpoint (DR0, write, 4 bytes) on the written address: #DB
//!   after the write, with DR6.B0 = 1.

use shared::trap::vector;

use super::trap::catch;
use super::{Env, check, window};

const DR6_B0: u64 = 1 << 0;
const DR6_BS: u64 = 1 << 14;
/// DR7: L0, R/W0 = write (01), LEN0 = 4 bytes (11).
const DR7_WRITE4_DR0: u64 = 1 | (0b01 << 16) | (0b11 << 18);

fn dr6() -> u64 {
    let v: u64;
    // SAFETY: reading DR6 has no side effect.
    unsafe {
        ::core::arch::asm!("mov {}, dr6", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}

fn clear_dr6() {
    // SAFETY: clears DR6's sticky status bits; nothing depends on them.
    unsafe {
        ::core::arch::asm!("mov dr6, {}", in(reg) 0u64, options(nomem, nostack, preserves_flags))
    };
}

pub fn run(env: &Env) {
    window::with(env.sink(), |p| {
        clear_dr6();
        let t = catch!(
            "pushfq",
            "or qword ptr [rsp], 0x100",
            "popfq",
            "mov dword ptr [{p}], {v:e}",
            "nop";
            p = in(reg) p, v = in(reg) 0x1234_5678u32,
        );
        let d = dr6();
        check(
            "own_tf_over_dropped_write",
            t.is_some_and(|t| t.is(vector::DB, None)) && d & DR6_BS != 0,
            format_args!("#DB with DR6.BS"),
            format_args!("{t:?}, DR6 {d:#x}"),
        );
        clear_dr6();
        // SAFETY: a write breakpoint on the window address for this case
        // only; DR7 is cleared again below.
        unsafe {
            ::core::arch::asm!(
                "mov dr0, {a}",
                "mov dr7, {c}",
                a = in(reg) p as u64,
                c = in(reg) DR7_WRITE4_DR0,
                options(nomem, nostack, preserves_flags)
            );
        }
        let t =
            catch!("mov dword ptr [{p}], {v:e}", "nop"; p = in(reg) p, v = in(reg) 0x1234_5678u32,);
        // SAFETY: disables the breakpoint.
        unsafe {
            ::core::arch::asm!("mov dr7, {}", in(reg) 0u64, options(nomem, nostack, preserves_flags))
        };
        let d = dr6();
        check(
            "data_breakpoint_over_dropped_write",
            t.is_some_and(|t| t.is(vector::DB, None)) && d & DR6_B0 != 0,
            format_args!("#DB with DR6.B0"),
            format_args!("{t:?}, DR6 {d:#x}"),
        );
        clear_dr6();
    });
}
