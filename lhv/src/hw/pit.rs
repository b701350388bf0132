//! The 8254 PIT channel 0 in one-shot mode, delivered through the 8259 PIC
//! (IRQ 0) to the BSP (Intel 8254/8259A data sheets).

use shared::x86;

/// The vector IRQ 0 is remapped to.
pub const VECTOR: u8 = 0x20;
/// The vector of the master PIC's spurious IRQ 7.
pub const SPURIOUS_VECTOR: u8 = VECTOR + 7;

const PIT_CH0: u16 = 0x40;
const PIT_CMD: u16 = 0x43;
const PIC1_CMD: u16 = 0x20;
const PIC1_DATA: u16 = 0x21;
const PIC2_CMD: u16 = 0xa0;
const PIC2_DATA: u16 = 0xa1;
/// OCW2 non-specific EOI.
const PIC_EOI: u8 = 0x20;

/// Remaps the PICs to vectors 0x20-0x2f and unmasks IRQ 0 only.
pub fn init_pic() {
    // SAFETY: the standard 8259A initialisation sequence (ICW1-ICW4) on the
    // PIC ports, which nothing else in LHV uses.
    unsafe {
        x86::outb(PIC1_CMD, 0x11);
        x86::outb(PIC2_CMD, 0x11);
        x86::outb(PIC1_DATA, VECTOR);
        x86::outb(PIC2_DATA, VECTOR + 8);
        x86::outb(PIC1_DATA, 4);
        x86::outb(PIC2_DATA, 2);
        x86::outb(PIC1_DATA, 1);
        x86::outb(PIC2_DATA, 1);
        x86::outb(PIC1_DATA, 0xfe);
        x86::outb(PIC2_DATA, 0xff);
    }
}

/// Masks every IRQ of both PICs (the BIOS leaves its timer IRQ 0 unmasked).
pub fn mask_all() {
    // SAFETY: OCW1 writes to the PICs' mask registers; nothing else in LHV
    // uses the PICs at that point.
    unsafe {
        x86::outb(PIC1_DATA, 0xff);
        x86::outb(PIC2_DATA, 0xff);
    }
}

/// Arms channel 0 in mode 0 ("interrupt on terminal count"): one IRQ 0
/// after `ticks` PIT ticks.
pub fn one_shot(ticks: u16) {
    // SAFETY: channel 0 belongs to LHV (BSP only); mode 0, lobyte/hibyte.
    unsafe {
        x86::outb(PIT_CMD, 0b0011_0000);
        x86::outb(PIT_CH0, ticks as u8);
        x86::outb(PIT_CH0, (ticks >> 8) as u8);
    }
}

/// Acknowledges IRQ 0 at the master PIC.
pub fn eoi() {
    // SAFETY: a non-specific EOI to the master PIC.
    unsafe { x86::outb(PIC1_CMD, PIC_EOI) }
}
