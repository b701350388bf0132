//! The COM port (16550 UART) of the console.

use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use uart_16550::SerialPort;

use crate::x86;

/// COM1, the default console port.
pub const DEFAULT_PORT: u16 = 0x3F8;

/// Port of the UART in use; 0 when there is none.
static PORT: AtomicU16 = AtomicU16::new(0);

/// Line control register offset, its divisor-latch access bit (DLAB) and
/// the line format 8N1 (8 data bits, no parity, 1 stop bit).
const LCR: u16 = 3;
const LCR_DLAB: u8 = 1 << 7;
const LCR_8N1: u8 = 0x03;
/// Divisor latch for 115200 baud: the UART's 1.8432 MHz clock / 16 / 115200.
/// GRUB (`serial --speed=115200`), Linux (`console=ttyS0,115200`) and the
/// harness all use this speed.
const DIVISOR_115200: u16 = 1;
/// Line status register offset and its "transmitter empty" bit.
const LSR: u16 = 5;
const LSR_TEMT: u8 = 1 << 6;
/// LSR bit 5: the transmit holding register can take a byte.
const LSR_THRE: u8 = 1 << 5;
/// Polls of LSR before `flush` gives up (a missing UART reads 0xFF anyway).
const FLUSH_POLLS: u32 = 1 << 20;
/// Polls of LSR for one byte before it is dropped. A byte takes 87 us at
/// 115200 baud; this bound is far above that on any machine, yet finite:
/// the UART is shared with the guest (L0's console is the guest's COM1),
/// which may reprogram it (divisor, loopback, FIFO off) or stop it, and L0
/// must never wait for ever on it.
const SEND_POLLS: u32 = 1 << 18;

/// Bytes dropped because the transmitter never became ready.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Bytes the console dropped (a stuck or reprogrammed UART).
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Sends one byte after a bounded wait for the transmitter; drops it
/// (counted) if the UART never becomes ready.
fn send(port: u16, b: u8) {
    for _ in 0..SEND_POLLS {
        // SAFETY: reading the line status register has no side effect.
        if unsafe { x86::inb(port + LSR) } & LSR_THRE != 0 {
            // SAFETY: writing the transmit register only sends the byte.
            unsafe { x86::outb(port, b) };
            return;
        }
        x86::pause();
    }
    DROPPED.fetch_add(1, Ordering::Relaxed);
}

/// Sets the UART's baud-rate divisor latch, leaving the line format 8N1.
fn set_divisor(port: u16, divisor: u16) {
    let [low, high] = divisor.to_le_bytes();
    // SAFETY: the kernel owns this COM port; with DLAB set, offsets 0 and 1
    // are the divisor latch (DLL, DLM), and clearing DLAB restores them to
    // the data and interrupt-enable registers.
    unsafe {
        x86::outb(port + LCR, LCR_DLAB | LCR_8N1);
        x86::outb(port, low);
        x86::outb(port + 1, high);
        x86::outb(port + LCR, LCR_8N1);
    }
}

/// Programs the UART at `port` (115200 8N1, FIFOs on); `None` disables serial.
pub fn init(port: Option<u16>) {
    if let Some(p) = port {
        // SAFETY: the kernel owns this COM port; `init` only programs its registers.
        let mut sp = unsafe { SerialPort::new(p) };
        // The crate programs 38400 baud (divisor 3), a third of the speed
        // GRUB left the line at: a terminal would see garbage after GRUB's
        // output, and every line took three times as long to send (Bochs's
        // UART keeps the baud rate's timing: at 38400 baud, a 4-CPU soak
        // iteration took 8.5M cycles, at 115200 6.85M).
        sp.init();
        set_divisor(p, DIVISOR_115200);
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
    for b in s.bytes() {
        if b == b'\n' {
            send(p, b'\r');
        }
        send(p, b);
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
