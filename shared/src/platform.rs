//! Stopping the machine: on Bochs (shutdown port), on QEMU (isa-debug-exit)
//! and on real hardware (halt).

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
