//! The console: COM port and VGA text screen, behind one lock that cannot
//! deadlock.
//!
//! Why the lock is special: a CPU can be interrupted by an NMI (or fault)
//! while it holds the console, and another CPU can be waiting for the first
//! one to answer a quiesce request while it spins on the console (the XMHF64
//! NMI deadlock, see shared/notes). So the lock is
//! - re-entrant per CPU: a CPU that already holds it (it was interrupted in
//!   the middle of a print) writes without waiting;
//! - bounded: a CPU that has waited too long writes anyway and the output may
//!   interleave; garbled text is better than a hung machine.
//!
//! Code on a VM-exit path must still handle NMIs before printing anything.

pub mod serial;
pub mod vga;

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::percpu;

const NO_OWNER: u32 = u32::MAX;
/// Spins before a waiting CPU stops waiting (about a second on hardware,
/// far more than any print takes).
const MAX_SPINS: u32 = 1 << 26;

static OWNER: AtomicU32 = AtomicU32::new(NO_OWNER);
static VGA_ENABLED: AtomicBool = AtomicBool::new(false);

/// Sets up the console: `serial_port` (e.g. 0x3F8) or none, and whether the
/// VGA text screen is used.
pub fn init(serial_port: Option<u16>, use_vga: bool) {
    serial::init(serial_port);
    if use_vga {
        vga::clear();
    }
    VGA_ENABLED.store(use_vga, Ordering::Release);
}

/// Stops writing to the VGA text screen (L0 does this before the guest owns it).
pub fn disable_vga() {
    VGA_ENABLED.store(false, Ordering::Release);
}

/// Whether the VGA screen is in use.
pub fn vga_enabled() -> bool {
    VGA_ENABLED.load(Ordering::Acquire)
}

/// Runs `f` while holding the console (see the module documentation).
pub fn with_lock<R>(f: impl FnOnce() -> R) -> R {
    let me = percpu::index_or_boot() as u32;
    let mut taken = false;
    if OWNER.load(Ordering::Relaxed) != me {
        let mut spins = 0u32;
        loop {
            if OWNER
                .compare_exchange_weak(NO_OWNER, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                taken = true;
                break;
            }
            spins += 1;
            if spins >= MAX_SPINS {
                break; // give up waiting: print unlocked rather than hang
            }
            core::hint::spin_loop();
        }
    }
    let r = f();
    if taken {
        OWNER.store(NO_OWNER, Ordering::Release);
    }
    r
}

struct Sink;

impl Write for Sink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        serial::write_str(s);
        if vga_enabled() {
            vga::write_str(s);
        }
        Ok(())
    }
}

/// Prints formatted text (use the `print!`/`println!` macros).
pub fn print_fmt(args: fmt::Arguments) {
    with_lock(|| {
        let _ = Sink.write_fmt(args);
    });
}

/// Waits until the serial transmitter has sent everything.
pub fn flush() {
    serial::flush();
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print_fmt(format_args!($($arg)*)) };
}

/// Prints to the console with a newline.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::print_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Prints a line prefixed with `CPU(n): `, the form the harness parses.
#[macro_export]
macro_rules! cpu_println {
    ($($arg:tt)*) => {
        $crate::console::print_fmt(format_args!("CPU({}): {}\n", $crate::percpu::index_or_boot(), format_args!($($arg)*)))
    };
}
