//! Item 10: the guest globally disables its local APIC (IA32_APIC_BASE.EN
//! = 0): RDMSR shows EN = 0 and CPUID.1:EDX.APIC = 0 (SDM 11.4.3), and
//! its xAPIC page reads all ones and drops writes (its registers are not
//! accessible; nothing else answers there); then it enables it again
//! (xAPIC mode) and the APIC answers, the dropped write absent. Run last: on bare
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
/// xAPIC registers: ID, version, task priority.
const APIC_ID: u64 = 0x20;
const APIC_VERSION: u64 = 0x30;
const APIC_TPR: u64 = 0x80;
/// A TPR value the disabled page must drop.
const TPR_MARK: u32 = 0x50;

fn mmio_read(a: u64) -> u32 {
    // SAFETY: a register of the xAPIC page (identity-mapped, uncached).
    unsafe { ::core::ptr::read_volatile(a as *const u32) }
}

fn mmio_write(a: u64, v: u32) {
    // SAFETY: as above; the value is one the case checks for afterwards.
    unsafe { ::core::ptr::write_volatile(a as *mut u32, v) }
}

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
    let page = b & 0xf_ffff_f000;
    if b & EXTD == 0 {
        let (id, version) = (mmio_read(page + APIC_ID), mmio_read(page + APIC_VERSION));
        mmio_write(page + APIC_TPR, TPR_MARK);
        let tpr = mmio_read(page + APIC_TPR);
        check(
            "apic_disabled_page_all_ones",
            id == u32::MAX && version == u32::MAX && tpr == u32::MAX,
            format_args!("ID, version and TPR (after a write) read all ones"),
            format_args!("ID {id:#x}, version {version:#x}, TPR {tpr:#x}"),
        );
    } else {
        skip("apic_disabled_page_all_ones", "the APIC was in x2APIC mode");
    }
    // SAFETY: disabled to xAPIC is a valid transition.
    unsafe { x86::wrmsr(msr::IA32_APIC_BASE, (b & !EXTD) | EN) };
    let on = apic_base();
    let page = on & 0xf_ffff_f000;
    let version = mmio_read(page + APIC_VERSION);
    if env.l0.is_none() && env.bochs && version == u32::MAX {
        skip(
            "apic_enable_again",
            "Bochs ignores IA32_APIC_BASE writes once EN was cleared",
        );
        return;
    }
    // Disabling reset the TPR (SDM 11.4.7.2); the write made while
    // disabled went nowhere.
    let tpr = mmio_read(page + APIC_TPR);
    check(
        "apic_enable_again",
        on & EN != 0
            && version != u32::MAX
            && x86::cpuid(1, 0).edx & (1 << 9) != 0
            && tpr != TPR_MARK,
        format_args!("EN = 1, the APIC answers, CPUID.1:EDX.APIC = 1, TPR not {TPR_MARK:#x}"),
        format_args!("{on:#x}, version {version:#x}, TPR {tpr:#x}"),
    );
}
