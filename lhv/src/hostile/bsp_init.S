/*
 * `mode=bsp-init` (AT&T syntax): what the BSP runs after its INIT, reached
 * from the firmware's reset code through the CMOS shutdown code 0AH ("JMP
 * via 40:67", SDM 9.1.1 leaves the rest to the firmware). Copied to the low
 * code page and entered in real mode with CS = the page's segment: every
 * data reference is relative to the blob (DS = CS). It checks two things
 * INIT resets that the firmware leaves alone (DR0 = 0, CR4 = 0, SDM Table
 * 9-1), prints the line LHV prepared for the outcome on the UART, and
 * powers the emulator off (Bochs's shutdown port).
 */
.section .rodata.lhv_bsp_init, "a"
.balign 16
.global lhv_bi_start
lhv_bi_start:
.code16
    cli
    movw %cs, %ax
    movw %ax, %ds
    movw %ax, %ss
    movw $0xff0, %sp
    movl %dr0, %eax
    movl %cr4, %ebx
    orl %ebx, %eax
    movw $(bi_ok - lhv_bi_start), %si
    jz 1f
    movw $(bi_fail - lhv_bi_start), %si
1:  call bi_print
    /* Let the transmitter empty (bounded) before powering off. */
    movw (bi_port - lhv_bi_start), %dx
    addw $5, %dx
    movw $0xffff, %cx
4:  inb %dx, %al
    testb $0x40, %al
    jnz 5f
    loop 4b
5:  movw $0x8900, %dx
    movw $(bi_shutdown - lhv_bi_start), %si
2:  lodsb
    testb %al, %al
    jz 3f
    outb %al, %dx
    jmp 2b
3:  hlt
    jmp 3b

/* Prints the NUL-terminated string at DS:SI; waits (bounded) for the
 * transmitter before each byte. */
bi_print:
    lodsb
    testb %al, %al
    jz 9f
    movb %al, %bl
    movw (bi_port - lhv_bi_start), %dx
    addw $5, %dx
    movw $0xffff, %cx
8:  inb %dx, %al
    testb $0x20, %al
    jnz 7f
    loop 8b
7:  movw (bi_port - lhv_bi_start), %dx
    movb %bl, %al
    outb %al, %dx
    jmp bi_print
9:  ret

.balign 2
.global lhv_bi_port
lhv_bi_port:
bi_port: .short 0x3f8
bi_shutdown: .asciz "Shutdown"
.global lhv_bi_ok
lhv_bi_ok:
bi_ok: .fill 128, 1, 0
.global lhv_bi_fail
lhv_bi_fail:
bi_fail: .fill 128, 1, 0
.global lhv_bi_end
lhv_bi_end:
.code64
