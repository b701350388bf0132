/*
 * Hostile mode's cases outside 64-bit mode (AT&T syntax), assembled for
 * the low code page {low} and copied there at run time (lhv/src/hostile/
 * legacy.rs). Called from 64-bit mode with interrupts off; returns to it.
 * Every address is absolute: (LOW+(x-lhv_hl_start)) is x's address in the code page.
 *
 * 1. Compatibility mode (IA-32e, CS.L = 0), with its own 64-bit IDT:
 *    a. MOV to CR0 of EAX (NE flipped, then put back) while the upper
 *       half of RAX is not zero: the operand is 32 bits (no fault);
 *    b. (if PCID) with CR4.PCIDE = 1, clearing CR0.PG: #GP(0).
 * 2. Leaves IA-32e mode (32-bit protected mode, paging off, 32-bit IDT):
 *    c. JMP to TSS B, whose task JMPs back to TSS A (task switches);
 *    d. CALL to TSS C, whose task IRETs back (NT, back link);
 *    i. #DE through a task gate to TSS B (available again after c), its
 *       DS selector patched to one outside the GDT: the switch raises #TS
 *       in the new task while #DE is being delivered, a contributory
 *       exception during a contributory one: #DF(0) (SDM 6.15 Table 6-5),
 *       taken in task B;
 *    e. PAE paging on with a reserved bit in PDPTE 0: #GP(0);
 *    f. CPUID at offset 0xFFFFFFFE of a code segment based at 0x10000: EIP
 *       wraps to 0 (the bytes at 0xFFFE and 0x10000 are the caller's);
 *    g. VMCALL Stats at CPL 3: #UD (no hypercall outside CPL 0);
 *    h. INT 15h E820 from virtual-8086 mode: a minimal v86 monitor
 *       reflects it to the real-mode vector (the BIOS, or L0's hook), whose
 *       answer comes back to v86 mode; then HLT (#GP) ends v86 mode.
 * Faults from CPL 3 or v86 mode end their case: the handler abandons the
 * frame and continues at the case's resume point at CPL 0.
 * 3. Back to 64-bit mode and LHV's GDT, IDT, TR, segments, FS/GS bases.
 * Each case stores the vector it raised (+1, 0: none) and error code.
 */
.section .rodata.lhv_hostile_legacy, "a"
.balign 16
.global lhv_hl_start
lhv_hl_start:

.set LOW, {low}

.set SEL_CODE64, 0x08
.set SEL_DATA, 0x10
.set SEL_CODE32, 0x18
.set SEL_TSS_A, 0x20
.set SEL_TSS_B, 0x28
.set SEL_CODE_WRAP, 0x30
.set SEL_TSS_C, 0x38
.set SEL_UCODE, 0x43
.set SEL_UDATA, 0x4b
/* Outside the GDT: loading it is #TS. */
.set SEL_BAD, 0x0ff8
/* The code page as a real-mode segment (virtual-8086 case). */
.set V86_SEG, (LOW >> 4)
.set STATS_RAX, {stats_rax}

/* Arms a case: faults resume at \resume. */
.macro ARM resume
    movl $(LOW+(\resume-lhv_hl_start)), (LOW+(h_resume-lhv_hl_start))
    movl $0, (LOW+(h_vec-lhv_hl_start))
    movl $0, (LOW+(h_err-lhv_hl_start))
.endm

/* Stores the case's outcome in result slot \slot. */
.macro RECORD slot
    movl (LOW+(h_vec-lhv_hl_start)), %ecx
    movl %ecx, (LOW+(r_base-lhv_hl_start)) + 8 * \slot
    movl (LOW+(h_err-lhv_hl_start)), %ecx
    movl %ecx, (LOW+(r_base-lhv_hl_start)) + 8 * \slot + 4
.endm

.code64
.global lhv_hl_entry64
lhv_hl_entry64:
    pushq %rbx
    pushq %rbp
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (LOW+(h_rsp-lhv_hl_start))
    sgdt (LOW+(h_gdtr-lhv_hl_start))
    sidt (LOW+(h_idtr-lhv_hl_start))
    str (LOW+(h_tr-lhv_hl_start))
    movw %ss, (LOW+(h_ss-lhv_hl_start))
    movw %ds, (LOW+(h_ds-lhv_hl_start))
    movw %es, (LOW+(h_es-lhv_hl_start))
    movw %cs, (LOW+(h_cs-lhv_hl_start))
    movl $0xc0000100, %ecx
    rdmsr
    movl %eax, (LOW+(h_fsbase-lhv_hl_start))
    movl %edx, (LOW+(h_fsbase-lhv_hl_start)) + 4
    movl $0xc0000101, %ecx
    rdmsr
    movl %eax, (LOW+(h_gsbase-lhv_hl_start))
    movl %edx, (LOW+(h_gsbase-lhv_hl_start)) + 4
    movq %cr0, %rax
    movq %rax, (LOW+(h_cr0-lhv_hl_start))
    movq %cr3, %rax
    movq %rax, (LOW+(h_cr3-lhv_hl_start))
    movq %cr4, %rax
    movq %rax, (LOW+(h_cr4-lhv_hl_start))
    lgdt (LOW+(h_gdt_ptr-lhv_hl_start))
    lidt (LOW+(h_idt64_ptr-lhv_hl_start))
    movl $(LOW+(h_stack_a-lhv_hl_start)), %esp
    cmpl $0, (LOW+(h_pcid_ok-lhv_hl_start))
    je 1f
    movq %cr4, %rax
    orq $(1 << 17), %rax
    movq %rax, %cr4
1:
    /* RAX: CR0 with NE flipped (a bit L0 owns: the write exits),
     * garbage in the upper half. */
    movq (LOW+(h_cr0-lhv_hl_start)), %rax
    xorq $0x20, %rax
    movabsq $0xdead000000000000, %rdx
    orq %rdx, %rax
    pushq $SEL_CODE32
    pushq $(LOW+(h_compat-lhv_hl_start))
    lretq

.code32
h_compat:
    movl $SEL_DATA, %ecx
    movw %cx, %ds
    movw %cx, %es
    movw %cx, %ss
    /* a. MOV to CR0 with a 32-bit operand. */
    ARM h_a_done
    movl %eax, %cr0
    movl (LOW+(h_cr0-lhv_hl_start)), %eax
    movl %eax, %cr0
h_a_done:
    RECORD 0
    /* b. Clearing PG with PCIDE = 1. */
    cmpl $0, (LOW+(h_pcid_ok-lhv_hl_start))
    je h_b_skip
    ARM h_b_done
    movl %cr0, %eax
    andl $0x7fffffff, %eax
    movl %eax, %cr0
    jmp h_b_done
h_b_done:
    RECORD 1
    movl %cr4, %eax
    andl $~(1 << 17), %eax
    movl %eax, %cr4
h_b_skip:
    /* Leave IA-32e mode: paging off, then EFER.LME = 0. */
    movl %cr0, %eax
    andl $0x7fffffff, %eax
    movl %eax, %cr0
    jmp 1f
1:
    movl $0xc0000080, %ecx
    rdmsr
    andl $~(1 << 8), %eax
    wrmsr
    lidt (LOW+(h_idt32_ptr-lhv_hl_start))
    movl $SEL_TSS_A, %eax
    ltr %ax

    /* c. JMP to task B and back. */
    ARM h_c_done
    ljmp $SEL_TSS_B, $0
h_c_back:
    str %eax
    movzwl %ax, %eax
    movl %eax, (LOW+(r_tr_after_jmp-lhv_hl_start))
h_c_done:
    RECORD 2

    /* d. CALL to task C, which IRETs back. */
    ARM h_d_done
    lcall $SEL_TSS_C, $0
    pushfl
    popl %eax
    movl %eax, (LOW+(r_eflags_after_iret-lhv_hl_start))
    str %eax
    movzwl %ax, %eax
    movl %eax, (LOW+(r_tr_after_iret-lhv_hl_start))
h_d_done:
    RECORD 3

    /* i. #DE through the task gate of vector 0 (task B, bad DS). */
    movl $SEL_BAD, (LOW+(h_tss_b-lhv_hl_start)) + 0x54
    movl $(LOW+(h_stack_b-lhv_hl_start)), (LOW+(h_tss_b-lhv_hl_start)) + 0x38
    ARM h_i_done
    xorl %edx, %edx
    xorl %eax, %eax
    xorl %ecx, %ecx
    divl %ecx
h_i_done:
    /* Back from the #DF handler, in task B (TR B, NT set, DS unusable):
     * flat segments, stack A, NT clear. */
    movl $SEL_DATA, %ecx
    movw %cx, %ss
    movl $(LOW+(h_stack_a-lhv_hl_start)), %esp
    movw %cx, %ds
    movw %cx, %es
    xorl %ecx, %ecx
    movw %cx, %fs
    movw %cx, %gs
    pushfl
    andl $~0x4000, (%esp)
    popfl
    movl (LOW+(h_vec-lhv_hl_start)), %ecx
    movl %ecx, (LOW+(r_df_vec-lhv_hl_start))
    movl (LOW+(h_err-lhv_hl_start)), %ecx
    movl %ecx, (LOW+(r_df_err-lhv_hl_start))
    str %eax
    movzwl %ax, %eax
    movl %eax, (LOW+(r_tr_after_df-lhv_hl_start))
    /* Task A again (busy since the nested switch; LTR needs it
     * available): later cases take CPL-0 stacks from its ESP0. */
    andb $~0x02, (LOW+(h_gdt-lhv_hl_start)) + SEL_TSS_A + 5
    movl $SEL_TSS_A, %eax
    ltr %ax

    /* e. PAE paging with a reserved bit in PDPTE 0. */
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl $(LOW+(h_pdpt-lhv_hl_start)), %eax
    movl %eax, %cr3
    ARM h_e_done
    movl %cr0, %eax
    orl $0x80000000, %eax
    movl %eax, %cr0
    jmp h_e_done
h_e_done:
    RECORD 4
    movl %cr0, %eax
    andl $0x7fffffff, %eax
    movl %eax, %cr0
    jmp 1f
1:

    /* f. EIP wraps at 4 GiB. */
    ARM h_f_done
    ljmp $SEL_CODE_WRAP, $0xfffffffe
.global lhv_hl_wrap_back
lhv_hl_wrap_back:
    movl $1, (LOW+(r_wrapped-lhv_hl_start))
h_f_done:
    RECORD 5

    /* g. VMCALL at CPL 3. */
    ARM h_g_done
    movl $1, (LOW+(h_outer-lhv_hl_start))
    pushl $SEL_UDATA
    pushl $(LOW+(h_stack_u-lhv_hl_start))
    pushl $0x2
    pushl $SEL_UCODE
    pushl $(LOW+(h_user-lhv_hl_start))
    iretl
h_g_done:
    /* DS and ES were nulled by the return to CPL 3. */
    movl $SEL_DATA, %ecx
    movw %cx, %ds
    movw %cx, %es
    movl $0, (LOW+(h_outer-lhv_hl_start))
    RECORD 6

    /* h. INT 15h E820 from virtual-8086 mode (IOPL 3). */
    ARM h_h_done
    movl $1, (LOW+(h_outer-lhv_hl_start))
    pushl $0                        /* GS */
    pushl $0                        /* FS */
    pushl $V86_SEG                  /* DS */
    pushl $V86_SEG                  /* ES */
    pushl $V86_SEG                  /* SS */
    pushl $(h_stack_v - lhv_hl_start)
    pushl $0x23002                  /* VM, IOPL 3 */
    pushl $V86_SEG                  /* CS */
    pushl $(h_v86 - lhv_hl_start)
    iretl
h_h_done:
    /* Leaving v86 mode nulled DS, ES, FS and GS. */
    movl $SEL_DATA, %ecx
    movw %cx, %ds
    movw %cx, %es
    movw %cx, %fs
    movw %cx, %gs
    movl $0, (LOW+(h_outer-lhv_hl_start))
    RECORD 7

    /* Back to IA-32e mode (compatibility mode first), then 64-bit mode. */
    movl (LOW+(h_cr4-lhv_hl_start)), %eax
    andl $~(1 << 17), %eax
    movl %eax, %cr4
    movl (LOW+(h_cr3-lhv_hl_start)), %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $(1 << 8), %eax
    wrmsr
    movl (LOW+(h_cr0-lhv_hl_start)), %eax
    movl %eax, %cr0
    ljmp $SEL_CODE64, $(LOW+(h_back64-lhv_hl_start))

/* Task B: records EAX (from its TSS), JMPs back to task A. */
h_task_b:
    movl %eax, (LOW+(r_task_b_eax-lhv_hl_start))
    ljmp $SEL_TSS_A, $0
    ud2

/* Task C: records its EFLAGS (NT) and back link, IRETs to task A. */
h_task_c:
    pushfl
    popl %eax
    movl %eax, (LOW+(r_task_c_eflags-lhv_hl_start))
    movzwl (LOW+(h_tss_c-lhv_hl_start)), %eax
    movl %eax, (LOW+(r_task_c_link-lhv_hl_start))
    iretl
    ud2

/* CPL 3: VMCALL Stats (must be #UD); reaching the store means it was not. */
h_user:
    movl $STATS_RAX, %eax
    vmcall
    movl $1, %ss:(LOW+(r_user_ran-lhv_hl_start))
    ud2

/* Virtual-8086 mode: INT 15h E820 (first entry) into h_e820_buf. */
.code16
h_v86:
    movl $0xe820, %eax
    movl $0x534d4150, %edx
    xorl %ebx, %ebx
    movl $20, %ecx
    movw $(h_e820_buf - lhv_hl_start), %di
    int $0x15
    movl %eax, %ss:(r_v86_eax - lhv_hl_start)
    movl %ecx, %ss:(r_v86_ecx - lhv_hl_start)
    pushfl
    popl %eax
    movl %eax, %ss:(r_v86_flags - lhv_hl_start)
    movl $1, %ss:(r_v86_done - lhv_hl_start)
    hlt
.code32

/* The v86 monitor's INT 15h: reflect to the real-mode vector (SDM 20.3):
 * push FLAGS, CS, IP on the v86 stack, continue at IVT[15h] with IF and TF
 * clear. Frame: EIP, CS, EFLAGS, ESP, SS, ES, DS, FS, GS (above 2 saves). */
h32_int15:
    pushl %eax
    pushl %ebx
    movl 20(%esp), %eax             /* v86 SP */
    subw $6, %ax
    movw %ax, 20(%esp)
    movzwl %ax, %eax
    movzwl 24(%esp), %ebx           /* v86 SS */
    shll $4, %ebx
    addl %eax, %ebx
    movw 8(%esp), %ax               /* IP */
    movw %ax, %ss:(%ebx)
    movw 12(%esp), %ax              /* CS */
    movw %ax, %ss:2(%ebx)
    movw 16(%esp), %ax              /* FLAGS */
    movw %ax, %ss:4(%ebx)
    andl $~0x300, 16(%esp)          /* IF, TF */
    movzwl %ss:0x54, %eax
    movl %eax, 8(%esp)
    movzwl %ss:0x56, %eax
    movl %eax, 12(%esp)
    popl %ebx
    popl %eax
    iretl

/* 32-bit exception handlers: record, resume at h_resume (from CPL 3 or
 * v86 mode: on the case's stack at CPL 0, the frame abandoned). DS may
 * be anything here: SS (SS0 of TSS A, or the flat data) is used. */
h32_ud:
    movl $7, %ss:(LOW+(h_vec-lhv_hl_start))
    movl $0, %ss:(LOW+(h_err-lhv_hl_start))
    jmp h32_resume
h32_df:
    movl $9, %ss:(LOW+(h_vec-lhv_hl_start))
    jmp h32_code
h32_ts:
    movl $11, %ss:(LOW+(h_vec-lhv_hl_start))
    jmp h32_code
h32_np:
    movl $12, %ss:(LOW+(h_vec-lhv_hl_start))
    jmp h32_code
h32_gp:
    movl $14, %ss:(LOW+(h_vec-lhv_hl_start))
h32_code:
    popl %ss:(LOW+(h_err-lhv_hl_start))
h32_resume:
    cmpl $0, %ss:(LOW+(h_outer-lhv_hl_start))
    je 1f
    movl $(LOW+(h_stack_a-lhv_hl_start)), %esp
    jmp *%ss:(LOW+(h_resume-lhv_hl_start))
1:
    movl %ss:(LOW+(h_resume-lhv_hl_start)), %eax
    movl %eax, (%esp)
    iretl

.code64
/* 64-bit exception handlers (compatibility mode). */
h64_ud:
    movl $7, (LOW+(h_vec-lhv_hl_start))
    movl $0, (LOW+(h_err-lhv_hl_start))
    jmp h64_resume
h64_gp:
    movl $14, (LOW+(h_vec-lhv_hl_start))
    popq %rax
    movl %eax, (LOW+(h_err-lhv_hl_start))
h64_resume:
    movl (LOW+(h_resume-lhv_hl_start)), %eax
    movq %rax, (%rsp)
    iretq

h_back64:
    movl $SEL_DATA, %eax
    movw %ax, %ss
    lgdt (LOW+(h_gdtr-lhv_hl_start))
    lidt (LOW+(h_idtr-lhv_hl_start))
    /* LHV's TSS is marked busy; LTR needs it available. */
    movq (LOW+(h_gdtr-lhv_hl_start)) + 2, %rax
    movzwq (LOW+(h_tr-lhv_hl_start)), %rcx
    andb $~0x02, 5(%rax, %rcx)
    ltr (LOW+(h_tr-lhv_hl_start))
    movw (LOW+(h_ss-lhv_hl_start)), %ss
    movw (LOW+(h_ds-lhv_hl_start)), %ds
    movw (LOW+(h_es-lhv_hl_start)), %es
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    movl $0xc0000100, %ecx
    movl (LOW+(h_fsbase-lhv_hl_start)), %eax
    movl (LOW+(h_fsbase-lhv_hl_start)) + 4, %edx
    wrmsr
    movl $0xc0000101, %ecx
    movl (LOW+(h_gsbase-lhv_hl_start)), %eax
    movl (LOW+(h_gsbase-lhv_hl_start)) + 4, %edx
    wrmsr
    movq (LOW+(h_rsp-lhv_hl_start)), %rsp
    movzwq (LOW+(h_cs-lhv_hl_start)), %rax
    pushq %rax
    pushq $(LOW+(h_far_back-lhv_hl_start))
    lretq
h_far_back:
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbp
    popq %rbx
    ret

/* Data. */
.balign 8
h_rsp: .quad 0
h_cr0: .quad 0
h_cr3: .quad 0
h_cr4: .quad 0
h_fsbase: .quad 0
h_gsbase: .quad 0
h_gdtr: .short 0
    .quad 0
h_idtr: .short 0
    .quad 0
h_tr: .short 0
h_ss: .short 0
h_ds: .short 0
h_es: .short 0
h_cs: .short 0
.balign 4
h_resume: .long 0
h_vec: .long 0
h_err: .long 0
h_outer: .long 0
.global lhv_hl_pcid_ok
lhv_hl_pcid_ok:
h_pcid_ok: .long 0
.global lhv_hl_results
lhv_hl_results:
r_base: .fill 8, 8, 0
r_tr_after_jmp: .long 0
r_task_b_eax: .long 0
r_eflags_after_iret: .long 0
r_tr_after_iret: .long 0
r_task_c_eflags: .long 0
r_task_c_link: .long 0
r_wrapped: .long 0
r_user_ran: .long 0
r_v86_eax: .long 0
r_v86_ecx: .long 0
r_v86_flags: .long 0
r_v86_done: .long 0
r_df_vec: .long 0
r_df_err: .long 0
r_tr_after_df: .long 0
.global lhv_hl_e820_buf
lhv_hl_e820_buf:
h_e820_buf: .fill 24, 1, 0

/* Segment descriptor: base, limit (20 bits), access byte, flags nibble. */
.macro DESC base, limit, access, flags
    .long (((\limit) & 0xffff) | (((\base) & 0xffff) << 16))
    .long ((((\base) >> 16) & 0xff) | ((\access) << 8) | ((((\limit) >> 16) & 0xf) << 16) | ((\flags) << 20) | ((\base) & 0xff000000))
.endm

.balign 8
h_gdt:
    .quad 0
    .quad 0x00AF9B000000FFFF        /* 0x08: 64-bit code */
    .quad 0x00CF93000000FFFF        /* 0x10: flat data */
    .quad 0x00CF9B000000FFFF        /* 0x18: 32-bit code */
    DESC (LOW+(h_tss_a-lhv_hl_start)), (h_tss_a_end-h_tss_a-1), 0x89, 0  /* 0x20: TSS A */
    DESC (LOW+(h_tss_b-lhv_hl_start)), 0x67, 0x89, 0  /* 0x28: TSS B */
    DESC 0x10000, 0xfffff, 0x9b, 0xc /* 0x30: 32-bit code based at 64 KiB */
    DESC (LOW+(h_tss_c-lhv_hl_start)), 0x67, 0x89, 0  /* 0x38: TSS C */
    .quad 0x00CFFB000000FFFF        /* 0x40: 32-bit code, DPL 3 */
    .quad 0x00CFF3000000FFFF        /* 0x48: flat data, DPL 3 */
h_gdt_end:
.balign 8
h_gdt_ptr:
    .short h_gdt_end - h_gdt - 1
    .quad (LOW+(h_gdt-lhv_hl_start))

/* 32-bit interrupt gate to \target. */
.macro GATE32 target
    .long (((LOW+(\target-lhv_hl_start)) & 0xffff) | (SEL_CODE32 << 16))
    .long (((LOW+(\target-lhv_hl_start)) & 0xffff0000) | 0x8e00)
.endm
.macro GATE64 target
    .long (((LOW+(\target-lhv_hl_start)) & 0xffff) | (SEL_CODE64 << 16))
    .long (((LOW+(\target-lhv_hl_start)) & 0xffff0000) | 0x8e00)
    .long 0
    .long 0
.endm

.balign 8
h_idt32:
    /* 0: task gate to TSS B (case i). */
    .long (SEL_TSS_B << 16)
    .long 0x8500
    .fill 5, 8, 0
    GATE32 h32_ud                   /* 6 */
    .fill 1, 8, 0
    GATE32 h32_df                   /* 8 */
    .fill 1, 8, 0
    GATE32 h32_ts                   /* 10 */
    GATE32 h32_np                   /* 11 */
    .fill 1, 8, 0
    GATE32 h32_gp                   /* 13 */
    .fill 7, 8, 0
    /* 0x15: DPL 3, the gate INT n from v86 mode (CPL 3) may use. */
    .long (((LOW+(h32_int15-lhv_hl_start)) & 0xffff) | (SEL_CODE32 << 16))
    .long (((LOW+(h32_int15-lhv_hl_start)) & 0xffff0000) | 0xee00)
h_idt32_end:
.balign 8
h_idt32_ptr:
    .short h_idt32_end - h_idt32 - 1
    .long (LOW+(h_idt32-lhv_hl_start))

.balign 16
h_idt64:
    .fill 12, 8, 0
    GATE64 h64_ud                   /* 6 */
    .fill 12, 8, 0
    GATE64 h64_gp                   /* 13 */
h_idt64_end:
.balign 8
h_idt64_ptr:
    .short h_idt64_end - h_idt64 - 1
    .quad (LOW+(h_idt64-lhv_hl_start))

/* 32-bit TSSs (SDM Figure 7-2): A is the caller's task; B and C start at
 * their entry points on their own stacks, paging off, flat segments. */
.macro TSS eip, esp, eax, esp0, iomap
    .long 0                         /* back link */
    .long \esp0, SEL_DATA          /* ESP0, SS0 */
    .fill 4, 4, 0                   /* ESP1..SS2 */
    .long 0                         /* CR3 */
    .long \eip
    .long 0x2                       /* EFLAGS */
    .long \eax, 0, 0, 0             /* EAX, ECX, EDX, EBX */
    .long \esp, 0, 0, 0             /* ESP, EBP, ESI, EDI */
    .long SEL_DATA, SEL_CODE32, SEL_DATA, SEL_DATA, 0, 0
    .long 0                         /* LDT */
    .long (\iomap << 16)            /* T = 0, I/O map base */
.endm
.balign 16
/* Task A (the caller's; CPL 3 and v86 traps use its ESP0) has an I/O
 * bitmap allowing ports 0-0x3ff (v86 I/O always consults it: the BIOS). */
h_tss_a:
    TSS 0, 0, 0, (LOW+(h_stack_r0-lhv_hl_start)), 0x68
    .fill 128, 1, 0
    .byte 0xff
h_tss_a_end:
h_tss_b:
    TSS (LOW+(h_task_b-lhv_hl_start)), (LOW+(h_stack_b-lhv_hl_start)), 0x7a5b, 0, 0x68
h_tss_c:
    TSS (LOW+(h_task_c-lhv_hl_start)), (LOW+(h_stack_c-lhv_hl_start)), 0, 0, 0x68

/* PAE PDPT: PDPTE 0 present with bit 1 (reserved in a PDPTE) set. */
.balign 32
h_pdpt:
    .quad 0x1003, 0, 0, 0

.balign 16
    .fill 32, 4, 0
h_stack_a:
    .fill 32, 4, 0
h_stack_b:
    .fill 32, 4, 0
h_stack_c:
    .fill 32, 4, 0
h_stack_r0:
    .fill 32, 4, 0
h_stack_u:
    .fill 112, 4, 0
h_stack_v:
.global lhv_hl_end
lhv_hl_end:
