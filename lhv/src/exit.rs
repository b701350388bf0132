//! The VM-entry/VM-exit path: an assembly stub enters L2 with its general
//! registers and, on VM exit, saves them and returns to Rust as if the
//! entry call had returned; [`Exit`] is the decoded exit.
//!
//! HOST_RSP is written on every entry (the stack of the caller of
//! `lhv_vm_enter`), HOST_RIP once (`lhv_vm_exit`).

use shared::vmx::VmcsField;
use shared::vmx::exit::{ExitReason, ExitReasonField};

/// L2's general registers, indexed by the SDM's register numbers (Table
/// 28-3: 0 RAX, 1 RCX, 2 RDX, 3 RBX, 4 RSP (unused: RSP is in the VMCS),
/// 5 RBP, 6 RSI, 7 RDI, 8-15 R8-R15).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct GuestRegs {
    /// The registers.
    pub gpr: [u64; 16],
}

/// Register numbers.
#[allow(dead_code)]
pub mod gpr {
    pub const RAX: usize = 0;
    pub const RCX: usize = 1;
    pub const RDX: usize = 2;
    pub const RBX: usize = 3;
    pub const RBP: usize = 5;
    pub const RSI: usize = 6;
    pub const RDI: usize = 7;
    pub const R8: usize = 8;
    pub const R15: usize = 15;
}

::core::arch::global_asm!(
    ".global lhv_vm_enter",
    "lhv_vm_enter:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdi",
    "mov rax, {host_rsp}",
    "vmwrite rax, rsp",
    "jbe 3f",
    "test rsi, rsi",
    "mov rax, [rdi + 0]",
    "mov rcx, [rdi + 8]",
    "mov rdx, [rdi + 16]",
    "mov rbx, [rdi + 24]",
    "mov rbp, [rdi + 40]",
    "mov rsi, [rdi + 48]",
    "mov r8, [rdi + 64]",
    "mov r9, [rdi + 72]",
    "mov r10, [rdi + 80]",
    "mov r11, [rdi + 88]",
    "mov r12, [rdi + 96]",
    "mov r13, [rdi + 104]",
    "mov r14, [rdi + 112]",
    "mov r15, [rdi + 120]",
    "mov rdi, [rdi + 56]",
    "jnz 1f",
    "vmlaunch",
    "jmp 3f",
    "1:",
    "vmresume",
    "3:",
    "jc 4f",
    "mov eax, 2",
    "jmp 5f",
    "4:",
    "mov eax, 1",
    "5:",
    "pop rdi",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".global lhv_vm_exit",
    "lhv_vm_exit:",
    "push rdi",
    "mov rdi, [rsp + 8]",
    "mov [rdi + 0], rax",
    "mov [rdi + 8], rcx",
    "mov [rdi + 16], rdx",
    "mov [rdi + 24], rbx",
    "mov [rdi + 40], rbp",
    "mov [rdi + 48], rsi",
    "mov [rdi + 64], r8",
    "mov [rdi + 72], r9",
    "mov [rdi + 80], r10",
    "mov [rdi + 88], r11",
    "mov [rdi + 96], r12",
    "mov [rdi + 104], r13",
    "mov [rdi + 112], r14",
    "mov [rdi + 120], r15",
    "pop rax",
    "mov [rdi + 56], rax",
    "pop rdi",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "xor eax, eax",
    "ret",
    host_rsp = const 0x6c14,
);

unsafe extern "C" {
    fn lhv_vm_enter(regs: *mut GuestRegs, launched: u64) -> u32;
    fn lhv_vm_exit();
}

const _: () = assert!(VmcsField::HostRsp.encoding() == 0x6c14);

/// The address the VMCS's HOST_RIP must hold.
pub fn host_rip() -> u64 {
    lhv_vm_exit as *const () as u64
}

/// How an entry attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryOutcome {
    /// L2 ran and a VM exit (possibly an entry-failure exit) came back.
    Exited,
    /// VMLAUNCH/VMRESUME (or the HOST_RSP VMWRITE) failed with VMfailInvalid.
    FailInvalid,
    /// ... with VMfailValid (the error is in the VM-instruction error field).
    FailValid,
}

/// VMLAUNCH (`launched == false`) or VMRESUME with `regs`, which hold L2's
/// registers after the exit.
///
/// # Safety
/// The current VMCS must be fully set up for memory safety: host state of
/// this CPU with HOST_RIP = [`host_rip`], and every address the processor
/// will use (EPT, bitmaps, MSR areas) owned by LHV for as long as it runs.
pub unsafe fn enter(regs: &mut GuestRegs, launched: bool) -> EntryOutcome {
    // SAFETY: the stub preserves the callee-saved registers and returns
    // normally both on VM-instruction failure and after a VM exit (whose
    // host state the caller vouches for).
    match unsafe { lhv_vm_enter(regs, u64::from(launched)) } {
        0 => EntryOutcome::Exited,
        1 => EntryOutcome::FailInvalid,
        _ => EntryOutcome::FailValid,
    }
}

/// A decoded VM exit (SDM 28.2 "Recording VM-Exit Information").
#[derive(Clone, Copy, Debug)]
pub struct Exit {
    /// The full exit-reason field.
    pub reason_field: ExitReasonField,
    /// The basic exit reason.
    pub reason: ExitReason,
    /// The exit qualification.
    pub qualification: u64,
    /// VM-exit instruction length (meaningful for instruction exits).
    pub instruction_len: u64,
    /// Guest RIP at the exit.
    pub guest_rip: u64,
    /// VM-exit interruption information.
    pub interruption_info: u32,
}
