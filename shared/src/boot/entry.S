/*
 * Boot path shared by both kernels (AT&T syntax).
 *
 * 1. Multiboot2 header.
 * 2. `_start32`: GRUB enters here in 32-bit protected mode with paging off,
 *    EAX = multiboot2 magic, EBX = physical address of the boot information.
 *    We build boot page tables (identity map of the first 4 GiB with 2 MiB
 *    pages, plus the high-half kernel window KERNEL_VIRT_BASE + [0, 1 GiB) ->
 *    [0, 1 GiB)), enter long mode and call `kernel_bsp_entry(magic, mbi)`,
 *    which each kernel defines with `shared::kernel_entry!`.
 * 3. The AP trampoline template, copied by `smp` to AP_TRAMPOLINE_PHYS.
 * 4. The 256 interrupt/exception entry stubs and the common trap path, which
 *    builds a `TrapFrame` and calls `trap_dispatch`.
 */

.set KERNEL_VIRT_BASE, 0xFFFFFFFF80000000
.set MB2_MAGIC, 0xE85250D6
.set MB2_ARCH_I386, 0
.set AP_TRAMPOLINE_PHYS, 0x8000

.set CR0_PE, 1 << 0
.set CR0_WP, 1 << 16
.set CR0_PG, 1 << 31
.set CR4_PAE, 1 << 5
.set MSR_EFER, 0xC0000080
.set EFER_LME, 1 << 8

.set PTE_P, 1 << 0
.set PTE_W, 1 << 1
.set PTE_PS, 1 << 7

.set SEL_CODE64, 0x08
.set SEL_DATA, 0x10
.set SEL_CODE32, 0x18

/* From 32-bit protected mode with EAX = PML4 physical address: CR3, PAE,
 * EFER.LME, then paging: the CPU is in long mode (compatibility submode)
 * until a far jump loads a 64-bit code segment. */
.macro ENTER_LONG_MODE
    movl %eax, %cr3
    movl %cr4, %eax
    orl $CR4_PAE, %eax
    movl %eax, %cr4
    movl $MSR_EFER, %ecx
    rdmsr
    orl $EFER_LME, %eax
    wrmsr
    movl %cr0, %eax
    orl $(CR0_PG + CR0_WP + CR0_PE), %eax
    movl %eax, %cr0
.endm

/* ---------------------------------------------------------------- header */
.section .multiboot2, "a"
.balign 8
mb2_header:
    .long MB2_MAGIC
    .long MB2_ARCH_I386
    .long mb2_header_end - mb2_header
    .long -(MB2_MAGIC + MB2_ARCH_I386 + (mb2_header_end - mb2_header))
    /* information request: memory map (6), ACPI old/new RSDP (14, 15) -- optional */
    .balign 8
    .short 1, 1
    .long 20
    .long 6, 14, 15
    /* end tag */
    .balign 8
    .short 0, 0
    .long 8
mb2_header_end:

/* ------------------------------------------------------- 32-bit entry */
.section .boot.text, "ax"
.code32
.global _start32
_start32:
    cli
    cld
    movl %eax, %edi                 /* multiboot2 magic, kept for Rust */
    movl %ebx, %esi                 /* boot information (physical) */
    movl $boot_stack32_top, %esp

    /* Long mode is required; without it we can only stop. */
    movl $0x80000000, %eax
    cpuid
    cmpl $0x80000001, %eax
    jb no_long_mode
    movl $0x80000001, %eax
    cpuid
    btl $29, %edx
    jnc no_long_mode

    /* Zero .bss (physical view of the high-half section). */
    pushl %edi
    movl $(__bss_start - KERNEL_VIRT_BASE), %edi
    movl $(__bss_end - KERNEL_VIRT_BASE), %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb

    /* Zero the boot page tables: PML4, 2 PDPTs, 4 PDs. */
    movl $boot_pml4, %edi
    movl $(7 * 4096 / 4), %ecx
    rep stosl
    popl %edi

    /* PML4[0] -> identity PDPT; PML4[511] -> high PDPT. */
    movl $(boot_pdpt_low + PTE_P + PTE_W), boot_pml4
    movl $(boot_pdpt_high + PTE_P + PTE_W), boot_pml4 + 511 * 8

    /* Identity PDPT[i] -> PD i, i = 0..3 (4 GiB). */
    movl $(boot_pd + PTE_P + PTE_W), boot_pdpt_low
    movl $(boot_pd + 4096 + PTE_P + PTE_W), boot_pdpt_low + 8
    movl $(boot_pd + 8192 + PTE_P + PTE_W), boot_pdpt_low + 16
    movl $(boot_pd + 12288 + PTE_P + PTE_W), boot_pdpt_low + 24

    /* High PDPT[510] (KERNEL_VIRT_BASE) -> PD 0: VA KERNEL_VIRT_BASE+x -> x. */
    movl $(boot_pd + PTE_P + PTE_W), boot_pdpt_high + 510 * 8

    /* 2048 2 MiB pages covering [0, 4 GiB). */
    movl $boot_pd, %ebx
    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $21, %eax
    orl $(PTE_P + PTE_W + PTE_PS), %eax
    movl %eax, (%ebx, %ecx, 8)
    movl %ecx, %eax
    shrl $11, %eax                  /* bits 63:32 of the address: i >> 11 */
    movl %eax, 4(%ebx, %ecx, 8)
    incl %ecx
    cmpl $2048, %ecx
    jb 1b

    movl $boot_pml4, %eax
    ENTER_LONG_MODE

    lgdt boot_gdt_ptr
    ljmp $SEL_CODE64, $start64_low

no_long_mode:
    /* Say so on COM1 (already set up by GRUB's serial terminal), then halt. */
    movl $no_long_mode_msg, %esi
2:  lodsb
    testb %al, %al
    jz 4f
    movb %al, %bl
    movw $0x3FD, %dx
3:  inb %dx, %al
    testb $0x20, %al
    jz 3b
    movw $0x3F8, %dx
    movb %bl, %al
    outb %al, %dx
    jmp 2b
4:  cli
    hlt
    jmp 4b

.code64
start64_low:
    movw $SEL_DATA, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movl %edi, %edi                 /* upper halves are undefined after the switch */
    movl %esi, %esi
    movabsq $bsp_stack_top, %rsp
    xorl %ebp, %ebp
    movabsq $kernel_bsp_entry, %rax
    callq *%rax
5:  cli
    hlt
    jmp 5b

/* ------------------------------------------------------ boot data */
.section .boot.data, "aw"
.balign 8
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF        /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00CF92000000FFFF        /* 0x10: data, DPL 0 */
    .quad 0x00CF9A000000FFFF        /* 0x18: 32-bit code, DPL 0 */
boot_gdt_end:
boot_gdt_ptr:
    .short boot_gdt_end - boot_gdt - 1
    .long boot_gdt

no_long_mode_msg:
    .asciz "VMX is not available: this CPU has no long mode (x86-64)\r\n"

.balign 16
boot_stack32:
    .space 256
boot_stack32_top:

/* Boot page tables; must stay below 4 GiB (they are, in the image). */
.balign 4096
boot_pml4:
    .space 4096
boot_pdpt_low:
    .space 4096
boot_pdpt_high:
    .space 4096
boot_pd:
    .space 4 * 4096

/* ----------------------------------------------------- AP trampoline */
/*
 * Copied to AP_TRAMPOLINE_PHYS (a page below 1 MiB) and started by
 * INIT-SIPI-SIPI with vector AP_TRAMPOLINE_PHYS >> 12. The BSP fills the
 * parameter block at its end before each start: page-table root (below
 * 4 GiB), stack top, entry point and its argument (all 64-bit).
 */
.section .rodata.ap_trampoline, "a"
.balign 16
.global ap_trampoline_start
.global ap_trampoline_end
.global ap_trampoline_params
.code16
ap_trampoline_start:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    lgdtl (tramp_gdt_ptr - ap_trampoline_start)
    movl %cr0, %eax
    orl $CR0_PE, %eax
    movl %eax, %cr0
    ljmpl $SEL_CODE32, $(AP_TRAMPOLINE_PHYS + tramp32 - ap_trampoline_start)

.code32
tramp32:
    movw $SEL_DATA, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl (AP_TRAMPOLINE_PHYS + tramp_cr3 - ap_trampoline_start), %eax
    ENTER_LONG_MODE
    ljmpl $SEL_CODE64, $(AP_TRAMPOLINE_PHYS + tramp64 - ap_trampoline_start)

.code64
tramp64:
    movw $SEL_DATA, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movq (AP_TRAMPOLINE_PHYS + tramp_stack - ap_trampoline_start), %rsp
    movq (AP_TRAMPOLINE_PHYS + tramp_arg - ap_trampoline_start), %rdi
    movq (AP_TRAMPOLINE_PHYS + tramp_entry - ap_trampoline_start), %rax
    xorl %ebp, %ebp
    callq *%rax
6:  cli
    hlt
    jmp 6b

.balign 8
tramp_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
    .quad 0x00CF9A000000FFFF
tramp_gdt_ptr:
    .short 4 * 8 - 1
    .long AP_TRAMPOLINE_PHYS + tramp_gdt - ap_trampoline_start
.balign 8
ap_trampoline_params:
tramp_cr3:
    .quad 0
tramp_stack:
    .quad 0
tramp_entry:
    .quad 0
tramp_arg:
    .quad 0
ap_trampoline_end:

/* ------------------------------------------------- BSP stack */
.section .bss.bsp_stack, "aw", @nobits
.balign 4096
.global bsp_stack_bottom
bsp_stack_bottom:
    .space 64 * 1024
.global bsp_stack_top
bsp_stack_top:

/* ------------------------------------------------- trap entry */
/*
 * One 16-byte stub per vector: push a zero error code where the CPU pushes
 * none, push the vector, jump to trap_common. Vectors 8, 10-14, 17, 21, 29
 * and 30 push an error code (mask 0x60227D00).
 */
.section .text.trap, "ax"
.code64
.balign 16
.global trap_stubs
trap_stubs:
.set vec, 0
.rept 256
    .balign 16
    .if vec < 32
        .if ((0x60227D00 >> vec) & 1) == 0
            pushq $0
        .endif
    .else
        pushq $0
    .endif
    pushq $vec
    jmp trap_common
    .set vec, vec + 1
.endr

/* Saves the general registers in the order of `TrapFrame`, calls the
 * dispatcher with a pointer to it, restores and returns with IRETQ. The stack
 * is 16-byte aligned at the call: the CPU aligns it before pushing its 5-word
 * frame, and 2 + 15 words follow. */
trap_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi
    cld
    callq trap_dispatch
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq
