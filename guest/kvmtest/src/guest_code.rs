//! The guests' machine code, assembled with the program (`global_asm!`) into
//! a read-only data section and copied into guest memory at run time. Each
//! block is position independent (relative jumps only; absolute addresses
//! are the guest-physical ones of [`crate::layout`]).
//!
//! Ports and values are the protocol the checks in `realmode.rs`,
//! `longmode.rs` and `smp.rs` expect, in the same order.

use std::arch::global_asm;

global_asm!(
    ".pushsection .rodata.kvmtest_guest, \"a\"",
    // Real mode, loaded at 0000:1000 (layout::CODE), DS = ES = SS = 0.
    ".code16",
    ".globl kvmtest_rm_start",
    "kvmtest_rm_start:",
    "    mov al, 0x42",
    "    out 0x10, al", // port I/O out
    "    in al, 0x11",  // port I/O in: the host answers 0x5a ...
    "    out 0x12, al", // ... which comes back here
    "    mov ax, 0x1000",
    "    mov ds, ax",
    "    mov word ptr [0], 0xbeef", // MMIO write at 0x10000 (no memory there)
    "    mov ax, word ptr [2]",     // MMIO read at 0x10002: the host answers 0x1234 ...
    "    out 0x13, ax",             // ... which comes back here
    "    xor ax, ax",
    "    mov ds, ax",
    "    xor eax, eax",
    "    cpuid",
    "    mov eax, ebx",
    "    out 0x14, eax", // CPUID.0:EBX
    "    mov eax, 0x40000000",
    "    cpuid",
    "    mov eax, ebx",
    "    out 0x14, eax", // CPUID.40000000H:EBX ("KVMK")
    "    mov cx, 300",
    "kvmtest_rm_loop:",
    "    mov ax, cx",
    "    out 0x15, ax", // 300 exits: 300, 299, ..., 1
    "    loop kvmtest_rm_loop",
    "    mov si, 0x55aa",
    "    mov word ptr [0x7000], 0x1357", // RAM: the host reads it back
    "    hlt",
    ".globl kvmtest_rm_end",
    "kvmtest_rm_end:",
    // 64-bit mode, loaded at layout::CODE with paging (layout::PML4).
    ".code64",
    ".globl kvmtest_lm_start",
    "kvmtest_lm_start:",
    "    mov al, 0x42",
    "    out 0x10, al",
    "    in al, 0x11",
    "    out 0x12, al",
    "    mov rbx, 0x400000", // layout::LM_MMIO, mapped by a 2M page
    "    mov dword ptr [rbx], 0xdeadbeef", // MMIO write, 4 bytes
    "    mov r8, qword ptr [rbx + 8]", // MMIO read, 8 bytes: 0x0123456789abcdef
    "    mov rax, 0x100000000",
    "    shr rax, 32",
    "    out 0x16, al", // 1 only with 64-bit operands
    "    xor eax, eax",
    "    cpuid",
    "    mov r9d, ebx",
    "    mov eax, 0x40000000",
    "    cpuid",
    "    mov r10d, ebx",
    "    mov ecx, 500",
    "kvmtest_lm_loop:",
    "    mov eax, ecx",
    "    out 0x15, eax", // 500 exits: 500, ..., 1
    "    dec ecx",
    "    jnz kvmtest_lm_loop",
    "    mov qword ptr [0x7000], r8",
    "    mov rsi, 0x1122334455667788",
    "    hlt",
    ".globl kvmtest_lm_end",
    "kvmtest_lm_end:",
    // Two vCPUs of one VM, 64-bit mode, ESI = vCPU id (set by the host).
    ".globl kvmtest_smp_start",
    "kvmtest_smp_start:",
    "    lock inc dword ptr [0x7100]", // layout::SMP_COUNTER
    "    mov edx, 0x4000000",
    "kvmtest_smp_wait:", // until both vCPUs are in the guest at once
    "    pause",
    "    cmp dword ptr [0x7100], 2",
    "    je kvmtest_smp_go",
    "    dec edx",
    "    jnz kvmtest_smp_wait",
    "    mov eax, dword ptr [0x7100]",
    "    out 0x18, eax", // the other vCPU never came: the counter as seen here
    "kvmtest_smp_go:",
    "    mov ecx, 200",
    "kvmtest_smp_loop:",
    "    mov eax, esi",
    "    shl eax, 16",
    "    or eax, ecx",
    "    out 0x17, eax", // (id << 16) | 200, ..., (id << 16) | 1
    "    dec ecx",
    "    jnz kvmtest_smp_loop",
    "    hlt",
    ".globl kvmtest_smp_end",
    "kvmtest_smp_end:",
    ".popsection",
);

unsafe extern "C" {
    static kvmtest_rm_start: u8;
    static kvmtest_rm_end: u8;
    static kvmtest_lm_start: u8;
    static kvmtest_lm_end: u8;
    static kvmtest_smp_start: u8;
    static kvmtest_smp_end: u8;
}

fn between(start: *const u8, end: *const u8) -> &'static [u8] {
    let len = (end as usize).saturating_sub(start as usize);
    // SAFETY: both symbols delimit one block of the read-only section above
    // (start before end, in this order in the same section), which lives as
    // long as the program.
    unsafe { std::slice::from_raw_parts(start, len) }
}

/// The real-mode guest's code.
pub fn real_mode() -> &'static [u8] {
    between(&raw const kvmtest_rm_start, &raw const kvmtest_rm_end)
}

/// The 64-bit guest's code.
pub fn long_mode() -> &'static [u8] {
    between(&raw const kvmtest_lm_start, &raw const kvmtest_lm_end)
}

/// The two-vCPU guest's code.
pub fn smp() -> &'static [u8] {
    between(&raw const kvmtest_smp_start, &raw const kvmtest_smp_end)
}
