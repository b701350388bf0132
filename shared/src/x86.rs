//! Thin wrappers around x86 instructions that are not VMX-specific.
//!
//! Each `unsafe` block here is a single instruction whose safety argument is
//! local: reading state, or writing a port/MSR that the caller names.

use core::arch::asm;

/// Result of CPUID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidResult {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Executes CPUID with the given leaf and sub-leaf.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    CpuidResult {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// Reads a model-specific register.
///
/// # Safety
/// The MSR must exist on this CPU (RDMSR of an unknown MSR raises #GP).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; RDMSR has no other effect.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a model-specific register.
///
/// # Safety
/// The MSR must exist and the value must be valid for it; the caller is
/// responsible for the effect of the write on the machine.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: delegated to the caller (see above).
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    };
}

/// Reads an I/O port byte.
///
/// # Safety
/// Port reads can have side effects on devices; the caller owns the port.
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: delegated to the caller.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Writes an I/O port byte.
///
/// # Safety
/// The caller owns the port and the effect of the write.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: delegated to the caller.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Writes an I/O port double word.
///
/// # Safety
/// The caller owns the port and the effect of the write.
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: delegated to the caller.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads CR0.
pub fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 has no side effect (ring 0 is a precondition of this crate).
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads CR2 (the linear address of the last page fault).
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effect.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads CR3.
pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effect.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads CR4.
pub fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 has no side effect.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes CR0.
///
/// # Safety
/// The new value must keep the machine in a state the kernel can run in.
pub unsafe fn write_cr0(v: u64) {
    // SAFETY: delegated to the caller.
    unsafe { asm!("mov cr0, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Writes CR2 (the page-fault linear address).
///
/// # Safety
/// Only the next page fault's handler reads CR2; the caller must be the one
/// that decides what that handler sees (a hypervisor injecting a #PF).
pub unsafe fn write_cr2(v: u64) {
    // SAFETY: delegated to the caller; CR2 has no other effect.
    unsafe { asm!("mov cr2, {}", in(reg) v, options(nomem, nostack, preserves_flags)) };
}

/// Writes CR3.
///
/// # Safety
/// `v` must point to page tables that map the running code, stack and data.
pub unsafe fn write_cr3(v: u64) {
    // SAFETY: delegated to the caller.
    unsafe { asm!("mov cr3, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Writes CR4.
///
/// # Safety
/// The new value must keep the machine in a state the kernel can run in.
pub unsafe fn write_cr4(v: u64) {
    // SAFETY: delegated to the caller.
    unsafe { asm!("mov cr4, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Reads RFLAGS.
pub fn read_rflags() -> u64 {
    let v: u64;
    // SAFETY: PUSHFQ/POP only touch the stack slot they use.
    unsafe { asm!("pushfq", "pop {}", out(reg) v, options(nomem, preserves_flags)) };
    v
}

/// Copies `count` quadwords from `src` to `dst` with one `rep movsq`, which
/// processors (and Bochs, in bulk) execute faster than a loop of loads.
///
/// # Safety
/// `src` must be readable and `dst` writable for `count` quadwords, and the
/// two must not overlap. `src` may be memory that others write meanwhile
/// (a guest's): the instruction reads whatever is there, as volatile loads
/// would, and the caller treats the copy as untrusted data.
pub unsafe fn rep_movsq(dst: *mut u64, src: *const u64, count: usize) {
    // SAFETY: delegated to the caller; DF is clear (the ABI guarantees it),
    // so the copy runs upwards.
    unsafe {
        asm!(
            "rep movsq",
            inout("rdi") dst => _,
            inout("rsi") src => _,
            inout("rcx") count => _,
            options(nostack, preserves_flags)
        )
    };
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the TSC (CR4.TSD is never set by these kernels).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Spin-loop hint.
pub fn pause() {
    core::hint::spin_loop();
}

/// Disables maskable interrupts.
pub fn cli() {
    // SAFETY: masking interrupts cannot break memory safety.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// Enables maskable interrupts.
///
/// # Safety
/// An IDT able to handle every interrupt that may arrive must be loaded.
pub unsafe fn sti() {
    // SAFETY: delegated to the caller.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

/// Halts until the next interrupt.
pub fn hlt() {
    // SAFETY: HLT only waits; with IF=0 it waits for NMI/INIT/SMI.
    unsafe { asm!("hlt", options(nomem, nostack, preserves_flags)) };
}

/// Stops this CPU for good (interrupts off, HLT loop; NMIs return into it).
pub fn halt_forever() -> ! {
    loop {
        cli();
        hlt();
    }
}

/// Well-known MSR indexes used by both kernels (Intel SDM Vol. 4, Table 2-2
/// "IA-32 Architectural MSRs").
pub mod msr {
    pub const IA32_APIC_BASE: u32 = 0x1B;
    pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
    pub const IA32_SPEC_CTRL: u32 = 0x48;
    /// Writing the linear address of a microcode update here loads it.
    pub const IA32_BIOS_UPDT_TRIG: u32 = 0x79;
    /// The microcode update signature (bits 63:32).
    pub const IA32_BIOS_SIGN_ID: u32 = 0x8B;
    pub const IA32_SYSENTER_CS: u32 = 0x174;
    pub const IA32_SYSENTER_ESP: u32 = 0x175;
    pub const IA32_SYSENTER_EIP: u32 = 0x176;
    pub const IA32_DEBUGCTL: u32 = 0x1D9;
    /// SMRR base; accessible only in SMM.
    pub const IA32_SMRR_PHYSBASE: u32 = 0x1F2;
    /// SMRR mask; accessible only in SMM.
    pub const IA32_SMRR_PHYSMASK: u32 = 0x1F3;
    pub const IA32_PAT: u32 = 0x277;
    pub const IA32_PERF_GLOBAL_CTRL: u32 = 0x38F;
    pub const IA32_RTIT_CTL: u32 = 0x570;
    pub const IA32_S_CET: u32 = 0x6A2;
    pub const IA32_INTERRUPT_SSP_TABLE_ADDR: u32 = 0x6A8;
    pub const IA32_PKRS: u32 = 0x6E1;
    /// First x2APIC MSR (800H-8FFH).
    pub const X2APIC_FIRST: u32 = 0x800;
    /// Last x2APIC MSR.
    pub const X2APIC_LAST: u32 = 0x8FF;
    pub const IA32_BNDCFGS: u32 = 0xD90;
    pub const IA32_LBR_CTL: u32 = 0x14CE;
    pub const IA32_EFER: u32 = 0xC000_0080;
    pub const IA32_STAR: u32 = 0xC000_0081;
    pub const IA32_LSTAR: u32 = 0xC000_0082;
    pub const IA32_CSTAR: u32 = 0xC000_0083;
    pub const IA32_FMASK: u32 = 0xC000_0084;
    pub const IA32_FS_BASE: u32 = 0xC000_0100;
    pub const IA32_GS_BASE: u32 = 0xC000_0101;
    pub const IA32_KERNEL_GS_BASE: u32 = 0xC000_0102;
    pub const IA32_TSC_AUX: u32 = 0xC000_0103;
}

/// IA32_EFER bits (SDM Vol. 3A, 2.2.1 "Extended Feature Enable Register");
/// the others are reserved on Intel processors.
pub mod efer {
    /// SYSCALL enable.
    pub const SCE: u64 = 1 << 0;
    /// IA-32e mode enable.
    pub const LME: u64 = 1 << 8;
    /// IA-32e mode active (read-only, follows CR0.PG with LME).
    pub const LMA: u64 = 1 << 10;
    /// Execute-disable bit enable.
    pub const NXE: u64 = 1 << 11;
}

/// This CPU's initial APIC id from CPUID (leaf 0xB's x2APIC id when the leaf
/// exists, else CPUID.1:EBX[31:24]); no APIC access needed.
pub fn initial_apic_id() -> u32 {
    if cpuid(0, 0).eax >= 0xB {
        let r = cpuid(0xB, 0);
        if r.ebx != 0 {
            return r.edx;
        }
    }
    cpuid(1, 0).ebx >> 24
}

#[cfg(test)]
mod tests {
    use super::rep_movsq;

    #[test]
    fn rep_movsq_copies_exactly_count_words_into_any_alignment() {
        let src: [u64; 5] = [1, 2, 3, u64::MAX, 0x1122_3344_5566_7788];
        let mut dst = [0u8; 8 * 4 + 2];
        // SAFETY: `src` has 5 words, `dst[1..]` room for 4, no overlap.
        unsafe { rep_movsq(dst[1..].as_mut_ptr().cast(), src.as_ptr(), 4) };
        assert_eq!(dst[0], 0);
        for (i, w) in src[..4].iter().enumerate() {
            let b: [u8; 8] = dst[1 + 8 * i..9 + 8 * i].try_into().unwrap();
            assert_eq!(u64::from_le_bytes(b), *w);
        }
        assert_eq!(dst[33], 0, "one word more than count was copied");
        let mut none = [7u64; 1];
        // SAFETY: a count of 0 touches nothing.
        unsafe { rep_movsq(none.as_mut_ptr(), src.as_ptr(), 0) };
        assert_eq!(none, [7]);
    }
}
