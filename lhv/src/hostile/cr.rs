//! Item 2: guest actions whose emulation could fail the next VM entry.
//! - MOV to CR0 clearing PG in 64-bit mode: #GP(0) (only compatibility
//!   mode may leave IA-32e mode), with RF = 1 in the pushed RFLAGS;
//! - CR4.SMXE with SMX absent (CPUID.1:ECX.SMX = 0): #GP(0);
//! - a write to memory that drops it (L0's region under L0) right after
//!   STI and right after MOV SS: L0 single-steps it under STI / MOV SS
//!   blocking, which needs the BS pending-debug bit (SDM 27.3.1.5); the
//!   write is dropped and no #DB reaches the guest.

use shared::trap::vector;
use shared::x86;

use super::trap::{RFLAGS_RF, catch};
use super::{Env, check};

const CR4_SMXE: u64 = 1 << 14;

pub fn run(env: &Env) {
    clear_pg_in_64bit_mode();
    smxe();
    blocked_write(env);
}

fn clear_pg_in_64bit_mode() {
    let cr0 = x86::read_cr0();
    let t = catch!("mov cr0, {v}"; v = in(reg) cr0 & !(1u64 << 31),);
    let after = x86::read_cr0();
    check(
        "cr0_clear_pg_64bit",
        t.is_some_and(|t| t.is(vector::GP, Some(0))) && after == cr0,
        format_args!("#GP(0), CR0 unchanged {cr0:#x}"),
        format_args!("{t:?}, CR0 {after:#x}"),
    );
    check(
        "gp_frame_rf",
        t.is_some_and(|t| t.rflags & RFLAGS_RF != 0),
        format_args!("RFLAGS.RF = 1 in the #GP frame (SDM 6.6)"),
        format_args!("{t:?}"),
    );
}

fn smxe() {
    if x86::cpuid(1, 0).ecx & (1 << 6) != 0 {
        super::skip("cr4_smxe", "the processor reports SMX");
        return;
    }
    let cr4 = x86::read_cr4();
    let t = catch!("mov cr4, {v}"; v = in(reg) cr4 | CR4_SMXE,);
    let after = x86::read_cr4();
    check(
        "cr4_smxe",
        t.is_some_and(|t| t.is(vector::GP, Some(0))) && after == cr4,
        format_args!("#GP(0), CR4 unchanged {cr4:#x}"),
        format_args!("{t:?}, CR4 {after:#x}"),
    );
}

/// The value written where writes are dropped.
const PATTERN: u32 = 0x1234_5678;

fn blocked_write(env: &Env) {
    let sink = env.sink();
    super::window::with(sink, |p| {
        let t = catch!(
            "cli",
            "sti",
            "mov dword ptr [{p}], {v:e}",
            "cli";
            p = in(reg) p, v = in(reg) PATTERN,
        );
        // SAFETY: `p` reaches the sink through the window.
        let got = unsafe { ::core::ptr::read_volatile(p) };
        check(
            "sti_then_dropped_write",
            t.is_none() && got == u32::MAX,
            format_args!("no exception, reads {:#x}", u32::MAX),
            format_args!("{t:?}, reads {got:#x}"),
        );
        let t = catch!(
            "mov {s:x}, ss",
            "mov ss, {s:x}",
            "mov dword ptr [{p}], {v:e}";
            p = in(reg) p, v = in(reg) PATTERN, s = out(reg) _,
        );
        // SAFETY: as above.
        let got = unsafe { ::core::ptr::read_volatile(p) };
        check(
            "mov_ss_then_dropped_write",
            t.is_none() && got == u32::MAX,
            format_args!("no exception, reads {:#x}", u32::MAX),
            format_args!("{t:?}, reads {got:#x}"),
        );
    });
}
