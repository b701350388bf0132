//! Stopping the machine: on Bochs (shutdown port), on QEMU (isa-debug-exit)
//! and on real hardware (halt); resetting it.

use crate::{console, x86};

/// Bochs's shutdown port: writing the bytes of "Shutdown" makes Bochs quit.
const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;
/// QEMU's `isa-debug-exit` device as the harness configures it.
const QEMU_DEBUG_EXIT_PORT: u16 = 0xF4;

/// Flushes the console and powers the emulator off; on hardware, halts.
///
/// `code` is reported to QEMU as exit status `(code << 1) | 1`.
pub fn shutdown(code: u8) -> ! {
    console::flush();
    // SAFETY: these ports belong to emulator devices; on hardware where they
    // are absent, writes to them are ignored.
    unsafe {
        for b in b"Shutdown" {
            x86::outb(BOCHS_SHUTDOWN_PORT, *b);
        }
        x86::outl(QEMU_DEBUG_EXIT_PORT, u32::from(code));
    }
    x86::halt_forever()
}

/// The PIIX/ICH reset control register: bit 1 "system reset" (hard), bit 2
/// "reset CPU" (the transition to 1 resets).
const RESET_CONTROL_PORT: u16 = 0xCF9;
/// The keyboard controller's command port; command 0xFE pulses the reset line.
const KBC_COMMAND_PORT: u16 = 0x64;
const KBC_PULSE_RESET: u8 = 0xFE;

/// Flushes the console and resets the machine as the chipset does after a
/// shutdown cycle: through the reset control register, then the keyboard
/// controller (both exist on Bochs, QEMU and PCs); halts if neither works.
pub fn reset() -> ! {
    console::flush();
    // SAFETY: both are the platform's reset mechanisms; nothing else is
    // written. The machine restarts at the reset vector.
    unsafe {
        x86::outb(RESET_CONTROL_PORT, 0x02);
        x86::outb(RESET_CONTROL_PORT, 0x06);
        x86::outb(KBC_COMMAND_PORT, KBC_PULSE_RESET);
    }
    x86::halt_forever()
}
