//! Boot glue shared by both kernels: the multiboot2 entry (in `entry.S`),
//! the Rust entry macro, the image layout and a copy of the boot information.

pub mod info;
pub mod layout;

pub use info::{BootInfo, MemoryKind, MemoryRegion, Module};

core::arch::global_asm!(include_str!("entry.S"), options(att_syntax));

/// Value of EAX at the multiboot2 entry.
pub const MULTIBOOT2_BOOTLOADER_MAGIC: u32 = 0x36D7_6289;

/// Defines the kernel's Rust entry point, called by `entry.S` on the BSP in
/// long mode. The given function receives the copied boot information.
///
/// ```ignore
/// shared::kernel_entry!(main);
/// fn main(boot: &'static shared::boot::BootInfo) -> ! { ... }
/// ```
#[macro_export]
macro_rules! kernel_entry {
    ($main:path) => {
        #[unsafe(no_mangle)]
        extern "C" fn kernel_bsp_entry(magic: u32, mbi: u32) -> ! {
            let boot = $crate::boot::early_init(magic, mbi);
            $main(boot)
        }
    };
}

/// Common BSP bring-up before the kernel's main: per-CPU state, GDT/IDT,
/// console, and the boot information copied out of the loader's memory.
///
/// The serial port comes from `serial=<hex>` on the command line (default
/// COM1, `serial=0` for none).
pub fn early_init(magic: u32, mbi: u32) -> &'static BootInfo {
    // SAFETY: first code on the BSP; index 0 is the BSP's.
    unsafe { crate::percpu::set_current(0, crate::x86::initial_apic_id()) };
    // SAFETY: once, on the BSP, after set_current.
    unsafe { crate::percpu::init_this_cpu() };
    crate::console::init(Some(crate::console::serial::DEFAULT_PORT), true);
    if magic != MULTIBOOT2_BOOTLOADER_MAGIC {
        crate::println!("PANIC: not started by a multiboot2 loader (EAX = {magic:#x})");
        crate::platform::shutdown(1);
    }
    let boot = info::capture(mbi);
    let serial = match crate::cmdline::get_hex(boot.cmdline(), "serial") {
        Some(0) => None,
        Some(p) => u16::try_from(p).ok(),
        None => Some(crate::console::serial::DEFAULT_PORT),
    };
    if serial != Some(crate::console::serial::DEFAULT_PORT) {
        crate::console::init(serial, true);
    }
    boot
}
