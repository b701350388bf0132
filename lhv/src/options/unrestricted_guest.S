/*
 * L2 code of the UNRESTRICTED_GUEST option (AT&T syntax), assembled for the
 * low code page `{low}` (lhv::low_mem::CODE) and copied there at run time:
 * with paging off, linear = guest-physical = host-physical (identity EPT),
 * and real-mode code must lie below 1 MiB.
 *
 * `lhv_ug_enter64` is called from L2's 64-bit code through its identity
 * address, with EDI = this CPU's low area (lhv::low_mem::area, below
 * 64 KiB), ESI = the input and EDX = whether to ask for E820 (step 5;
 * the BSP only: the firmware serves the BSP). With interrupts disabled it
 *   1. loads its own GDT and far-returns to a 32-bit code segment
 *      (compatibility mode);
 *   2. clears CR0.PG: the processor leaves IA-32e mode (EFER.LMA = 0), the
 *      next instruction is a branch (SDM Vol. 3A 10.8.5.4 "Switching Out of
 *      IA-32e Mode Operation"); EFER.LME stays 1;
 *   3. VMCALL {call_pm32} from 32-bit protected mode, paging off;
 *   4. goes through a 16-bit code segment to real mode (clears CR0.PE and
 *      far-jumps to CS = {low_seg}, SDM Vol. 3A 10.9.2 "Switching Back to
 *      Real-Address Mode");
 *   5. VMCALL {call_real} from real mode, then calls a real-mode routine
 *      that reads a table through DS = {low_seg}, then asks the firmware
 *      for the first E820 entry by INT 15h through the real-mode IVT (the
 *      BIOS's, or the stub of a hypervisor under LHV that hooks INT 15h,
 *      as L0 does: L2 then runs that stub) and reports what it got by
 *      VMCALL {call_e820}, EBX = one bit per check (see the option);
 *   6. back to protected mode (LGDT, CR0.PE, far jump), then sets CR0.PG
 *      with EFER.LME = 1 and CR4.PAE = 1: IA-32e mode again (SDM 10.8.5
 *      "Initializing IA-32e Mode"), far jump to 64-bit code;
 *   7. restores L1's GDT and the 64-bit stack, returns EAX = the result.
 * Upper halves of the general registers are undefined after the 32-bit
 * part (SDM Vol. 1 3.4.1.1), so only 32-bit values cross it.
 *
 * Area layout (lhv::low_mem::AREA bytes): +0 the 64-bit RSP, +8 L1's GDTR
 * (10 bytes), +24 L2's IDTR (10 bytes), stack from the end down.
 */
.section .rodata.lhv_ug, "a"
.balign 16
.global lhv_ug_start
lhv_ug_start:

.code64
.global lhv_ug_enter64
lhv_ug_enter64:
    pushq %rbx
    pushq %rbp
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    pushfq
    cli
    movl %edi, %ebp
    movq %rsp, (%rbp)
    sgdt 8(%rbp)
    sidt 24(%rbp)
    leal {area}(%rbp), %esp
    ENTER_COMPAT32 ({low}+ug_gdt_ptr-lhv_ug_start), ({low}+ug_32-lhv_ug_start)

.code32
ug_32:
    FLAT_DATA_SEGMENTS
    PAGING_OFF32
    movl ${call_pm32}, %eax
    movl %esi, %ebx
.global lhv_ug_vmcall_pm32
lhv_ug_vmcall_pm32:
    vmcall
    ljmp $0x20, ${low} + ug_16 - lhv_ug_start

.code16
ug_16:
    movw $0x28, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr0, %eax
    andl $0xfffffffe, %eax
    movl %eax, %cr0
    ljmp ${low_seg}, $(ug_real - lhv_ug_start)
ug_real:
    xorw %ax, %ax
    movw %ax, %ss
    movw %cs, %ax
    movw %ax, %ds
    movw %ax, %es
    movl ${call_real}, %eax
    movl %esi, %ebx
.global lhv_ug_vmcall_real
lhv_ug_vmcall_real:
    vmcall
    movl %edx, %ecx                 /* the E820 flag (ug_compute keeps ECX) */
    movl %esi, %ebx
    call ug_compute
    testl %ecx, %ecx
    jz 16f
    pushl %edx
    /* The firmware's handler needs more stack than this CPU's area has
     * (lhv::low_mem::AREA): the BSP alone calls it, on free conventional
     * memory below LHV's low range (SS = 0). */
    movw %sp, %cx
    movw ${e820_stack}, %sp
    pushw %cx
    pushal
    /* INT n in real mode reads its vector from IDTR.base + 4n (SDM Vol. 3A
     * 21.1.4): the real-mode IVT at 0, not L2's 64-bit IDT, saved at +24. */
    lidtl (ug_ivt_ptr - lhv_ug_start)
    subw $24, %sp
    xorw %ax, %ax
    movw %ax, %es
    movw %sp, %di
    movl $0xe820, %eax
    movl $0x534d4150, %edx
    xorl %ebx, %ebx
    movl $20, %ecx
    int $0x15
    movl $0, %ebx
    jc 11f
    orl $1, %ebx                    /* CF clear */
11:
    cmpl $0x534d4150, %eax
    jne 12f
    orl $2, %ebx                    /* EAX = 'SMAP' */
12:
    cmpl $20, %ecx
    jb 13f
    orl $4, %ebx                    /* ECX >= 20 bytes */
13:
    movw %sp, %bp                   /* SS = 0 = ES: the entry */
    movl 0(%bp), %eax
    orl 4(%bp), %eax
    jnz 14f
    orl $8, %ebx                    /* base 0 */
14:
    cmpl $1, 16(%bp)
    jne 15f
    orl $16, %ebx                   /* type 1, usable */
15:
    movl ${call_e820}, %eax
.global lhv_ug_vmcall_e820
lhv_ug_vmcall_e820:
    vmcall
    addw $24, %sp
    movw %cs, %ax
    movw %ax, %es
    popal
    popw %sp
    popl %edx
16:
    lgdtl (ug_gdt_ptr - lhv_ug_start)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x18, ${low} + ug_32b - lhv_ug_start

.code32
ug_32b:
    FLAT_DATA_SEGMENTS
    movl %cr0, %eax
    orl $0x80000000, %eax
    movl %eax, %cr0
    ljmp $0x08, ${low} + ug_64b - lhv_ug_start

.code64
ug_64b:
    movl %ebp, %ebp
    lgdt 8(%rbp)
    lidt 24(%rbp)
    movq (%rbp), %rsp
    FLAT_DATA_SEGMENTS
    pushq $0x08
    leaq 2f(%rip), %rax
    pushq %rax
    lretq
2:
    movl %edx, %eax
    popfq
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbp
    popq %rbx
    retq

/* Real mode, DS = the code page's segment. In: EBX = x. Out: EDX =
 * lhv::real_mode_calc::expected(x). Clobbers EAX, EBX, EDI. */
.code16
ug_compute:
    pushw %si
    pushw %cx
    xorl %edx, %edx
    movw $(ug_table - lhv_ug_start), %si
    movw $8, %cx
3:
    roll $5, %edx
    movl %ebx, %eax
    andl $0xf, %eax
    movzwl (%si), %edi
    imull %edi, %eax
    xorl %eax, %edx
    shrl $4, %ebx
    addw $2, %si
    loop 3b
    popw %cx
    popw %si
    retw

/* Must match lhv::real_mode_calc::TABLE. */
.balign 2
.global lhv_ug_table
lhv_ug_table:
ug_table:
    .short 0x9e37, 0x79b9, 0x7f4a, 0x7c15, 0xf39c, 0xc060, 0x5ced, 0xc834

/* Accessed bits preset: loading a selector writes nothing. */
.balign 8
ug_gdt:
    LOW_GDT_64_32
    .quad 0x00009B000000FFFF        /* 0x20: 16-bit code, base 0, 64 KiB */
    .quad 0x000093000000FFFF        /* 0x28: 16-bit data, base 0, 64 KiB */
ug_gdt_end:
.balign 8
ug_gdt_ptr:
    .short ug_gdt_end - ug_gdt - 1
    .quad {low} + ug_gdt - lhv_ug_start
/* The real-mode interrupt vector table: 256 vectors of 4 bytes at 0. */
ug_ivt_ptr:
    .short 0x3ff
    .long 0
.global lhv_ug_end
lhv_ug_end:
.code64
.text
