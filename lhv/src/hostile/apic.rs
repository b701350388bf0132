//! Item 10: the guest globally disables its local APIC (IA32_APIC_BASE.EN
//! = 0): RDMSR shows EN = 0 and CPUID.1:EDX.APIC = 0 (SDM 11.4.3), and
//! its xAPIC page reads all ones and drops writes (its registers are not
//! accessible; nothing else answers there); then it enables it again
//! (xAPIC mode) and the APIC answers, the dropped write absent. Run last: on bare
//! Bochs the APIC stays dead once EN was cleared (a Bochs departure,
//! reported as such), while L0 keeps the hardware APIC enabled for itself.

use shared::x86::{self, msr};

use super::{Env, check, skip};

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
