//! Item 10: the guest globally disables its local APIC (IA32_APIC_BASE.EN
//! = 0): RDMSR shows EN = 0 and CPUID.1:EDX.APIC = 0 (SDM 11.4.3); then it
//! enables it again (xAPIC mode) and the APIC answers. Run last: on bare
//! Bochs the APIC stays dead once EN was cleared (a Bochs departure,
//! reported as such), while L0 keeps the hardware APIC enabled for itself.

use ::core::sync::atomic::{AtomicU32, Ordering};
use shared::trap::{self, TrapFrame};
use shared::x86::{self, msr};

use super::{Env, check, skip};

/// The vector of the fixed self-IPIs.
const SELF_VECTOR: u8 = 0xe3;
/// Self-IPIs taken by [`self_ipi_handler`].
static SELF_IPIS: AtomicU32 = AtomicU32::new(0);
/// xAPIC registers (SDM Vol. 3A Table 11-1).
const ICR_LOW: u64 = 0x300;
/// ICR low: fixed delivery, destination shorthand "self" (bits 19:18 = 01).
const ICR_SELF_FIXED: u32 = 0x4_0000 | SELF_VECTOR as u32;

fn self_ipi_handler(_frame: &mut TrapFrame) {
    SELF_IPIS.fetch_add(1, Ordering::AcqRel);
    shared::apic::LocalApic::current().eoi();
}

/// Writes `value` to the ICR's low half at `icr` with a form
/// `shared::store_insn` does not decode (L0 captures it, issue 7 item 4).
fn store_undecoded(form: usize, icr: u64, value: u32) {
    let read = || {
        // SAFETY: the ICR of this CPU's xAPIC (identity-mapped).
        unsafe { ::core::ptr::read_volatile(icr as *const u32) }
    };
    // SAFETY: each form is one 32-bit store of `value` to the ICR low
    // half: a fixed self-IPI the caller means to send.
    unsafe {
        match form {
            0 => ::core::arch::asm!(
                "lock cmpxchg dword ptr [{p}], {v:e}",
                p = in(reg) icr, v = in(reg) value, inout("eax") read() => _,
                options(nostack)
            ),
            1 => ::core::arch::asm!(
                "or dword ptr [{p}], {v:e}",
                p = in(reg) icr, v = in(reg) value, options(nostack)
            ),
            // Right after STI (blocking by STI): L0's step must set the
            // pending-debug BS bit (SDM 27.3.1.5); the IPI is taken after
            // the store, before the CLI.
            2 => ::core::arch::asm!(
                "sti",
                "lock cmpxchg dword ptr [{p}], {v:e}",
                "nop",
                "nop",
                "cli",
                p = in(reg) icr, v = in(reg) value, inout("eax") read() => _,
                options(nostack)
            ),
            _ => ::core::arch::asm!(
                "cld",
                "rep stosd",
                inout("rdi") icr => _, inout("rcx") 1u64 => _, in("eax") value,
                options(nostack)
            ),
        }
    }
}

/// A fixed self-IPI sent by ICR writes of forms L0 does not decode arrives
/// once per write, as on bare hardware.
fn self_ipis(base: u64) {
    trap::set_handler(SELF_VECTOR, self_ipi_handler);
    let lapic = shared::apic::LocalApic::current();
    lapic.enable(0xff);
    let icr = base + ICR_LOW;
    let forms = [
        "self_ipi_lock_cmpxchg",
        "self_ipi_or",
        "self_ipi_sti_lock_cmpxchg",
        "self_ipi_rep_stosd",
    ];
    for (form, name) in forms.into_iter().enumerate() {
        let idle = lapic.wait_icr_idle().is_ok();
        // `or` sets bits: start from an ICR low whose bits are all in the
        // value (the self-IPI itself, sent once more by a plain MOV and
        // taken first).
        if form == 1 {
            // SAFETY: as in `store_undecoded` (a plain, decoded MOV).
            unsafe { ::core::ptr::write_volatile(icr as *mut u32, ICR_SELF_FIXED) };
            let _ = lapic.wait_icr_idle();
            take_interrupts();
        }
        let before = SELF_IPIS.load(Ordering::Acquire);
        store_undecoded(form, icr, ICR_SELF_FIXED);
        let idle = idle && lapic.wait_icr_idle().is_ok();
        take_interrupts();
        let got = SELF_IPIS.load(Ordering::Acquire) - before;
        check(
            name,
            idle && got == 1,
            format_args!("one fixed self-IPI (vector {SELF_VECTOR:#x}) taken"),
            format_args!("{got} taken, ICR idle {idle}"),
        );
    }
}

/// Lets pending interrupts in (STI; a few instructions; CLI).
fn take_interrupts() {
    for _ in 0..1000 {
        x86::pause();
    }
    // SAFETY: the IDT handles the self-IPI vector; interrupts are masked
    // again before anything else runs.
    unsafe { ::core::arch::asm!("sti", "nop", "nop", "nop", "cli", options(nostack)) };
}

const EN: u64 = 1 << 11;
const EXTD: u64 = 1 << 10;

fn apic_base() -> u64 {
    // SAFETY: IA32_APIC_BASE exists on every processor with an APIC.
    unsafe { x86::rdmsr(msr::IA32_APIC_BASE) }
}

pub fn run(env: &Env) {
    let b = apic_base();
    if b & EN == 0 {
        skip("apic_global_disable", "the APIC is already disabled");
        return;
    }
    if b & EXTD == 0 {
        self_ipis(b & 0xf_ffff_f000);
    } else {
        skip("self_ipi_lock_cmpxchg", "the local APIC is in x2APIC mode");
    }
    // SAFETY: a valid transition (xAPIC or x2APIC to disabled); every
    // other hostile case that needs the APIC has run.
    unsafe { x86::wrmsr(msr::IA32_APIC_BASE, b & !(EN | EXTD)) };
    let off = apic_base();
    let cpuid_apic = x86::cpuid(1, 0).edx & (1 << 9) != 0;
    check(
        "apic_global_disable",
        off & EN == 0 && !cpuid_apic,
        format_args!("IA32_APIC_BASE.EN = 0, CPUID.1:EDX.APIC = 0"),
        format_args!("{off:#x}, CPUID APIC {cpuid_apic}"),
    );
    // SAFETY: disabled to xAPIC is a valid transition.
    unsafe { x86::wrmsr(msr::IA32_APIC_BASE, (b & !EXTD) | EN) };
    let on = apic_base();
    let page = on & 0xf_ffff_f000;
    // SAFETY: the xAPIC version register (identity-mapped page).
    let version = unsafe { ::core::ptr::read_volatile((page + 0x30) as *const u32) };
    if env.l0.is_none() && env.bochs && version == u32::MAX {
        skip(
            "apic_enable_again",
            "Bochs ignores IA32_APIC_BASE writes once EN was cleared",
        );
        return;
    }
    check(
        "apic_enable_again",
        on & EN != 0 && version != u32::MAX && x86::cpuid(1, 0).edx & (1 << 9) != 0,
        format_args!("EN = 1, the APIC answers, CPUID.1:EDX.APIC = 1"),
        format_args!("{on:#x}, version {version:#x}"),
    );
}
