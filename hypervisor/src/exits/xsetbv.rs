//! XSETBV (exit reason 55). XCR0 is not switched by VMX transitions; L0
//! uses no extended state, so it performs the guest's (checked) write.
//! The checks are those of the instruction (SDM Vol. 2C, XSETBV): ECX = 0,
//! CPL 0, bit 0 set, AVX state needs SSE state, the MPX, AVX-512 and AMX
//! groups all or nothing, only supported bits.

use shared::vmx::VmcsAccess;

use super::{Exit, guest_cpl, inject_gp, skip_instruction};
use crate::vcpu::{Resume, Vcpu, reg};

const XCR0_X87: u64 = 1 << 0;
const XCR0_SSE: u64 = 1 << 1;
const XCR0_AVX: u64 = 1 << 2;
const XCR0_BNDREGS_BNDCSR: u64 = 0b11 << 3;
const XCR0_AVX512: u64 = 0b111 << 5;
const XCR0_AMX: u64 = 0b11 << 17;

fn all_or_none(value: u64, bits: u64) -> bool {
    value & bits == 0 || value & bits == bits
}

pub fn handle(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    let index = vcpu.regs.gpr[reg::RCX] as u32;
    let value = (vcpu.regs.gpr[reg::RDX] << 32) | (vcpu.regs.gpr[reg::RAX] & 0xffff_ffff);
    let leaf = shared::x86::cpuid(0xd, 0);
    let supported = (u64::from(leaf.edx) << 32) | u64::from(leaf.eax);
    let valid = index == 0
        && guest_cpl(v) == 0
        && value & XCR0_X87 != 0
        && value & !supported == 0
        && (value & XCR0_AVX == 0 || value & XCR0_SSE != 0)
        && all_or_none(value, XCR0_BNDREGS_BNDCSR)
        && all_or_none(value, XCR0_AVX512)
        && (value & XCR0_AVX512 == 0 || value & XCR0_AVX != 0)
        && all_or_none(value, XCR0_AMX);
    if !valid {
        return inject_gp(v);
    }
    // SAFETY: the value passed the architectural checks, so XSETBV cannot
    // fault; host CR4.OSXSAVE is set when the processor has XSAVE.
    unsafe {
        core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags))
    };
    skip_instruction(v, exit);
    Some(Resume::Guest)
}
