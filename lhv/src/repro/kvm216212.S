/*
 * L2 of the kvm216212 reproducer (AT&T syntax), assembled for the low code
 * page `{low}` and copied there at run time. Entered in 64-bit mode with
 * EDI = the physical address of a PAE PDPT (below 4 GiB, 32-byte aligned)
 * that L1 has NOT mapped in its EPT:
 *   1. far return to a 32-bit code segment (compatibility mode), clear
 *      CR0.PG (IA-32e mode off, SDM Vol. 3A 10.8.5.4), clear EFER.LME:
 *      32-bit protected mode, paging off, CR4.PAE still 1;
 *   2. CR3 = the PDPT; VMCALL {call_ready};
 *   3. MOV to CR0 with PG = 1: PAE paging loads the four PDPTEs from CR3
 *      (SDM Vol. 3A 4.4.1); the PDPT's guest-physical address is not
 *      mapped, so the load must cause an EPT violation (SDM Vol. 3C
 *      29.3.3.2), i.e. a VM exit to L1 with RIP at the MOV;
 *   4. once L1 maps the page and resumes, the MOV completes: VMCALL
 *      {call_paging} with PAE paging on; then UD2 (L1 never resumes).
 */
.section .rodata.lhv_k216212, "a"
.balign 16
.global lhv_k216212_start
lhv_k216212_start:

.code64
.global lhv_k216212_entry64
lhv_k216212_entry64:
    ENTER_COMPAT32 ({low}+k_gdt_ptr-lhv_k216212_start), ({low}+k_32-lhv_k216212_start)

.code32
k_32:
    FLAT_DATA_SEGMENTS
    PAGING_OFF32
    movl $0xc0000080, %ecx
    rdmsr
    andl $0xfffffeff, %eax
    wrmsr
    movl %edi, %cr3
    movl ${call_ready}, %eax
.global lhv_k216212_vmcall_ready
lhv_k216212_vmcall_ready:
    vmcall
    movl %cr0, %eax
    orl $0x80000000, %eax
.global lhv_k216212_mov_cr0
lhv_k216212_mov_cr0:
    movl %eax, %cr0
    jmp 2f
2:
    movl ${call_paging}, %eax
.global lhv_k216212_vmcall_paging
lhv_k216212_vmcall_paging:
    vmcall
    ud2

.balign 8
k_gdt:
    LOW_GDT_64_32
k_gdt_end:
.balign 8
k_gdt_ptr:
    .short k_gdt_end - k_gdt - 1
    .quad {low} + k_gdt - lhv_k216212_start
.global lhv_k216212_end
lhv_k216212_end:
.code64
.text
