//! The descriptor-table registers and TR of this CPU, for the VMCS host and
//! guest state (SDM Vol. 3C 25.4, 25.5).

use ::core::arch::asm;

/// A GDTR or IDTR value.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, packed)]
pub struct TableRegister {
    /// Limit.
    pub limit: u16,
    /// Linear base address.
    pub base: u64,
}

/// SGDT.
pub fn sgdt() -> TableRegister {
    let mut r = TableRegister::default();
    // SAFETY: SGDT stores 10 bytes into `r`.
    unsafe { asm!("sgdt [{}]", in(reg) &mut r, options(nostack, preserves_flags)) };
    r
}

/// SIDT.
pub fn sidt() -> TableRegister {
    let mut r = TableRegister::default();
    // SAFETY: SIDT stores 10 bytes into `r`.
    unsafe { asm!("sidt [{}]", in(reg) &mut r, options(nostack, preserves_flags)) };
    r
}

/// STR: the task-register selector.
pub fn str_selector() -> u16 {
    let sel: u16;
    // SAFETY: STR reads the task register into a general register.
    unsafe { asm!("str {0:x}", out(reg) sel, options(nomem, nostack, preserves_flags)) };
    sel
}

/// The two quadwords of the descriptor of `selector` in the current GDT.
pub fn gdt_entry(selector: u16) -> (u64, u64) {
    let gdt = sgdt();
    let at = gdt.base + u64::from(selector & !7);
    assert!(
        u64::from(selector & !7) + 15 <= u64::from(gdt.limit),
        "selector {selector:#x} outside GDT"
    );
    // SAFETY: the GDT is mapped and the assert above keeps both reads
    // inside its limit.
    unsafe {
        (
            ::core::ptr::read_unaligned(at as *const u64),
            ::core::ptr::read_unaligned((at + 8) as *const u64),
        )
    }
}

/// Base of the current TSS (from its GDT descriptor).
pub fn tss_base() -> u64 {
    let (lo, hi) = gdt_entry(str_selector());
    lhv::desc::system_descriptor_base(lo, hi)
}
