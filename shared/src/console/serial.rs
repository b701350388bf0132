//! The COM port (16550 UART) of the console.

use core::sync::atomic::{AtomicU16, Ordering};

use uart_16550::SerialPort;

use crate::x86;

/// COM1, the default console port.
pub const DEFAULT_PORT: u16 = 0x3F8;

/// Port of the UART in use; 0 when there is none.
static PORT: AtomicU16 = AtomicU16::new(0);

/// Line status register offset and its "transmitter empty" bit.
const LSR: u16 = 5;
const LSR_TEMT: u8 = 1 << 6;
/// Polls of LSR before `flush` gives up (a missing UART reads 0xFF anyway).
const FLUSH_POLLS: u32 = 1 << 20;

/// Programs the UART at `port` (115200 8N1, FIFOs on); `None` disables serial.
pub fn init(port: Option<u16>) {
    if let Some(p) = port {
        // SAFETY: the kernel owns this COM port; `init` only programs its registers.
        let mut sp = unsafe { SerialPort::new(p) };
        sp.init();
    }
    PORT.store(port.unwrap_or(0), Ordering::Release);
}

/// The port in use, if any.
pub fn port() -> Option<u16> {
    match PORT.load(Ordering::Acquire) {
        0 => None,
        p => Some(p),
    }
}

/// Writes a string, translating `\n` to `\r\n`.
pub fn write_str(s: &str) {
    let Some(p) = port() else { return };
    // SAFETY: see `init`; sending bytes has no effect beyond the UART.
    let mut sp = unsafe { SerialPort::new(p) };
    for b in s.bytes() {
        if b == b'\n' {
            sp.send(b'\r');
        }
        sp.send(b);
    }
}

/// Waits (bounded) until the transmitter has sent every byte.
pub fn flush() {
    let Some(p) = port() else { return };
    for _ in 0..FLUSH_POLLS {
        // SAFETY: reading the line status register has no side effect.
        if unsafe { x86::inb(p + LSR) } & LSR_TEMT != 0 {
            return;
        }
        x86::pause();
    }
}
