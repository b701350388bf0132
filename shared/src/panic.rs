//! The kernels' panic report.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::{percpu, println, x86};

static PANICKING: AtomicBool = AtomicBool::new(false);

/// Prints the panic with the `PANIC` marker the harness looks for, and stops
/// this CPU. A second panic (on any CPU) prints a short line only.
pub fn report(info: &core::panic::PanicInfo) -> ! {
    let cpu = percpu::index_or_boot();
    if PANICKING.swap(true, Ordering::AcqRel) {
        println!("PANIC on CPU({cpu}) (another panic is being reported)");
    } else {
        println!("PANIC on CPU({cpu}): {info}");
    }
    crate::console::flush();
    x86::halt_forever()
}
