/*
 * Ring 3 for LHV's tests (Intel syntax; included by ring3/mod.rs, whose
 * global_asm! supplies the named constants).
 *
 * - lhv_ring3_enter / lhv_ring3_resume: ring 0 drops to CPL 3 by IRETQ and
 *   comes back, as if lhv_ring3_enter had returned, when a system call asks
 *   to exit (the Rust handler calls lhv_ring3_resume on the kernel stack).
 * - lhv_ring3_syscall_entry: IA32_LSTAR for L1 (SYSCALL; SWAPGS to find the
 *   kernel stack through IA32_KERNEL_GS_BASE).
 * - lhv_ring3_l2_vec*: L2's own IDT gates for #UD, #GP, #PF and INT 0x80.
 * - .text.lhv_user: the page mapped user-accessible; its two programs.
 * Frames have the layout of shared::trap::TrapFrame.
 */

.section .text.lhv_ring3, "ax"

/* u64 lhv_ring3_enter(u64 *kernel_rsp_slot, u64 rip, u64 user_rsp,
 *                     u64 arg0, u64 arg1, u64 arg2) */
.global lhv_ring3_enter
lhv_ring3_enter:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    pushfq
    mov [rdi], rsp
    push {user_ss}
    push rdx
    push {user_rflags}
    push {user_cs}
    push rsi
    mov rdi, rcx
    mov rsi, r8
    mov rdx, r9
    xor eax, eax
    xor ebx, ebx
    xor ecx, ecx
    xor ebp, ebp
    xor r8d, r8d
    xor r9d, r9d
    xor r10d, r10d
    xor r11d, r11d
    xor r12d, r12d
    xor r13d, r13d
    xor r14d, r14d
    xor r15d, r15d
    iretq

/* ! lhv_ring3_resume(u64 kernel_rsp, u64 result) */
.global lhv_ring3_resume
lhv_ring3_resume:
    mov rsp, rdi
    mov rax, rsi
    mov cx, {kernel_ds}
    mov ds, cx
    mov es, cx
    popfq
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

.macro RING3_PUSH_GPRS
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
.endm

.macro RING3_POP_GPRS
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
.endm

/* SYSCALL from L1's ring 3: RCX = user RIP, R11 = user RFLAGS, RSP = user
 * RSP (SDM Vol. 3A 5.8.8). IA32_KERNEL_GS_BASE points to the CPU's
 * (kernel_rsp, user_rsp) pair. The kernel stack is 8 mod 16 below the
 * saved registers; one pad word and the 22-word frame keep the call
 * aligned. */
.global lhv_ring3_syscall_entry
lhv_ring3_syscall_entry:
    swapgs
    mov gs:[8], rsp
    mov rsp, gs:[0]
    sub rsp, 8
    push {user_ss}
    push qword ptr gs:[8]
    swapgs
    push r11
    push {user_cs}
    push rcx
    push 0
    push {syscall_vector}
    RING3_PUSH_GPRS
    mov rdi, rsp
    cld
    call lhv_ring3_l1_syscall
    RING3_POP_GPRS
    add rsp, 16
    mov rcx, [rsp]
    mov r11, [rsp + 16]
    mov rsp, [rsp + 24]
    sysretq

/* L2's gates (L2's IDT; RSP0 of L2's TSS). */
.global lhv_ring3_l2_vec6
lhv_ring3_l2_vec6:
    push 0
    push 6
    jmp lhv_ring3_l2_common
.global lhv_ring3_l2_vec13
lhv_ring3_l2_vec13:
    push 13
    jmp lhv_ring3_l2_common
.global lhv_ring3_l2_vec14
lhv_ring3_l2_vec14:
    push 14
    jmp lhv_ring3_l2_common
.global lhv_ring3_l2_vec128
lhv_ring3_l2_vec128:
    push 0
    push 0x80
    jmp lhv_ring3_l2_common
lhv_ring3_l2_common:
    RING3_PUSH_GPRS
    mov rdi, rsp
    cld
    call lhv_ring3_l2_trap
    RING3_POP_GPRS
    add rsp, 16
    iretq

/* ------------------------------------------------------------------ */
/* The user page: only what ring 3 runs, position-independent (it runs at
 * its alias in the user subtree). */
.section .text.lhv_user, "ax"
.balign 4096
.global lhv_ring3_user_page
lhv_ring3_user_page:

/* L1's program (SYSCALL). RDI = n >= 1, RSI = a supervisor address, RDX =
 * a not-present user address. Exits with 1 + ... + n + ADD operand. */
.global lhv_ring3_l1_program
lhv_ring3_l1_program:
    mov r13, rsi
    mov r14, rdx
    xor ebx, ebx
2:  add rbx, rdi
    dec rdi
    jnz 2b
    push rbx
    mov eax, {sys_add}
    mov rdi, rbx
    mov esi, {add_operand}
    syscall
.global lhv_ring3_l1_syscall_ret
lhv_ring3_l1_syscall_ret:
    pop rdx
    add rdx, {add_operand}
    cmp rax, rdx
    jne 9f
    mov rbx, rax
l1f0: mov rax, [r13]
l1r0:
l1f1: mov byte ptr [rip + lhv_ring3_user_page], 0
l1r1:
l1f2: mov rax, [r14]
l1r2:
l1f3: hlt
l1r3:
l1f4: mov rax, cr0
l1r4:
l1f5: int 0x80
l1r5:
l1f6: ud2
l1r6:
    mov rdi, rbx
    jmp 8f
9:  mov rdi, -1
8:  mov eax, {sys_exit}
    syscall
    ud2

/* L2's program (INT 0x80 through L2's DPL-3 gate). RDI = n >= 1, RSI = a
 * supervisor address. */
.global lhv_ring3_l2_program
lhv_ring3_l2_program:
    mov r13, rsi
    xor ebx, ebx
2:  add rbx, rdi
    dec rdi
    jnz 2b
    push rbx
    mov eax, {sys_add}
    mov rdi, rbx
    mov esi, {add_operand}
    int 0x80
.global lhv_ring3_l2_int_ret
lhv_ring3_l2_int_ret:
    pop rdx
    add rdx, {add_operand}
    cmp rax, rdx
    jne 9f
    mov rbx, rax
l2f0: mov rax, [r13]
l2r0:
l2f1: hlt
l2r1:
l2f2: int 0x81
l2r2:
l2f3: ud2
l2r3:
    mov rdi, rbx
    jmp 8f
9:  mov rdi, -1
8:  mov eax, {sys_exit}
    int 0x80
    ud2

/* The negative suite's CPL-3 programs (lhv/src/negative/cpl3.rs): each is
 * one VMX instruction, which must fault (#GP(0) at CPL 3), then UD2, which
 * ends the section if it did not. Operands are on the user stack. */
.global lhv_ring3_vmx_vmxon
lhv_ring3_vmx_vmxon:
    vmxon qword ptr [rsp - 8]
    ud2
.global lhv_ring3_vmx_vmxoff
lhv_ring3_vmx_vmxoff:
    vmxoff
    ud2
.global lhv_ring3_vmx_vmclear
lhv_ring3_vmx_vmclear:
    vmclear qword ptr [rsp - 8]
    ud2
.global lhv_ring3_vmx_vmptrld
lhv_ring3_vmx_vmptrld:
    vmptrld qword ptr [rsp - 8]
    ud2
.global lhv_ring3_vmx_vmptrst
lhv_ring3_vmx_vmptrst:
    vmptrst qword ptr [rsp - 8]
    ud2
.global lhv_ring3_vmx_vmread
lhv_ring3_vmx_vmread:
    vmread rax, rbx
    ud2
.global lhv_ring3_vmx_vmwrite
lhv_ring3_vmx_vmwrite:
    vmwrite rbx, rax
    ud2
.global lhv_ring3_vmx_vmlaunch
lhv_ring3_vmx_vmlaunch:
    vmlaunch
    ud2
.global lhv_ring3_vmx_vmresume
lhv_ring3_vmx_vmresume:
    vmresume
    ud2
.global lhv_ring3_vmx_invept
lhv_ring3_vmx_invept:
    invept rax, xmmword ptr [rsp - 16]
    ud2
.global lhv_ring3_vmx_invvpid
lhv_ring3_vmx_invvpid:
    invvpid rax, xmmword ptr [rsp - 16]
    ud2
.global lhv_ring3_vmx_vmcall
lhv_ring3_vmx_vmcall:
    vmcall
    ud2
.global lhv_ring3_user_end
lhv_ring3_user_end:
.balign 4096

/* (fault offset, resume offset) in the user page, in program order. */
.section .rodata.lhv_ring3, "a"
.balign 8
.global lhv_ring3_l1_faults
lhv_ring3_l1_faults:
    .quad l1f0 - lhv_ring3_user_page, l1r0 - lhv_ring3_user_page
    .quad l1f1 - lhv_ring3_user_page, l1r1 - lhv_ring3_user_page
    .quad l1f2 - lhv_ring3_user_page, l1r2 - lhv_ring3_user_page
    .quad l1f3 - lhv_ring3_user_page, l1r3 - lhv_ring3_user_page
    .quad l1f4 - lhv_ring3_user_page, l1r4 - lhv_ring3_user_page
    .quad l1f5 - lhv_ring3_user_page, l1r5 - lhv_ring3_user_page
    .quad l1f6 - lhv_ring3_user_page, l1r6 - lhv_ring3_user_page
.global lhv_ring3_l2_faults
lhv_ring3_l2_faults:
    .quad l2f0 - lhv_ring3_user_page, l2r0 - lhv_ring3_user_page
    .quad l2f1 - lhv_ring3_user_page, l2r1 - lhv_ring3_user_page
    .quad l2f2 - lhv_ring3_user_page, l2r2 - lhv_ring3_user_page
    .quad l2f3 - lhv_ring3_user_page, l2r3 - lhv_ring3_user_page

.section .text.lhv_ring3, "ax"
