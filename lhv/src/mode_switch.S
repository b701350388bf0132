/*
 * Assembler macros (AT&T syntax) shared by the low code that leaves 64-bit
 * mode: L2 of UNRESTRICTED_GUEST (options/unrestricted_guest.S) and of the
 * kvm216212 reproducer (repro/kvm216212.S). Included at the head of their
 * global_asm! templates, which pass the selectors of lhv::low_mem::gdt
 * as `gdt_data` and `gdt_code32`; defined once per assembly unit.
 */
.ifndef .Llhv_mode_switch_macros
.set .Llhv_mode_switch_macros, 1

/* The first entries of a low GDT, at lhv::low_mem::gdt's selectors
 * (accessed bits preset: loading a selector writes nothing). */
.macro LOW_GDT_64_32
    .quad 0
    .quad 0x00AF9B000000FFFF        /* 0x08: 64-bit code */
    .quad 0x00CF93000000FFFF        /* 0x10: flat data */
    .quad 0x00CF9B000000FFFF        /* 0x18: 32-bit code */
.endm

/* 64-bit code: loads the low GDT through its pointer at absolute address
 * `gdt_ptr` and far-returns to `target` (absolute) in the 32-bit code
 * segment: compatibility mode. */
.macro ENTER_COMPAT32 gdt_ptr, target
    lgdt (\gdt_ptr)
    pushq ${gdt_code32}
    pushq $\target
    lretq
.endm

/* Loads DS, ES and SS with the flat data selector (clobbers EAX). */
.macro FLAT_DATA_SEGMENTS
    movl ${gdt_data}, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
.endm

/* Compatibility mode: clears CR0.PG (lhv::low_mem::CR0_PG), which leaves
 * IA-32e mode (EFER.LMA = 0); the next instruction is a branch (SDM Vol.
 * 3A 10.8.5.4 "Switching Out of IA-32e Mode Operation"). Clobbers EAX. */
.macro PAGING_OFF32
    movl %cr0, %eax
    andl $0x7fffffff, %eax
    movl %eax, %cr0
    jmp .Lpaging_off\@
.Lpaging_off\@:
.endm

.endif
