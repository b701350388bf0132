//! `mode=triple-fault`: the guest shuts its processor down (an IDT with
//! no entries, then #UD: #UD, #GP and #DF all fail to be delivered, SDM
//! 6.15), which a PC's chipset turns into a reset. The machine must boot
//! again (firmware, boot loader, L0, this guest): a marker in CMOS RAM,
//! which survives the reset, tells the second boot from the first.

use shared::{println, x86};

/// A CMOS RAM byte no BIOS of ours uses.
const CMOS_MARK: u8 = 0x6e;
const MARK: u8 = 0xa5;

fn cmos_read(index: u8) -> u8 {
    // SAFETY: the RTC/CMOS index and data ports.
    unsafe {
        x86::outb(0x70, index);
        x86::inb(0x71)
    }
}

fn cmos_write(index: u8, value: u8) {
    // SAFETY: as above; the byte is unused by the firmware.
    unsafe {
        x86::outb(0x70, index);
        x86::outb(0x71, value);
    }
}

pub fn run() -> ! {
    if cmos_read(CMOS_MARK) == MARK {
        cmos_write(CMOS_MARK, 0);
        println!("TRIPLE: the guest booted again after the reset");
        shared::platform::shutdown(0);
    }
    cmos_write(CMOS_MARK, MARK);
    println!("TRIPLE: shutting the processor down (triple-fault), expecting a reset");
    shared::console::flush();
    #[repr(C, packed)]
    struct Idtr {
        limit: u16,
        base: u64,
    }
    let idtr = Idtr { limit: 0, base: 0 };
    // SAFETY: deliberately ends this machine's current boot: with an empty
    // IDT the #UD cannot be delivered and the processor shuts down.
    unsafe {
        ::core::arch::asm!("cli", "lidt [{}]", "ud2", in(reg) &raw const idtr, options(noreturn));
    }
}
