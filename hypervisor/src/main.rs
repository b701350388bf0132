//! L0: a late-launch, type-1 hypervisor for x86-64 Intel VMX.
//!
//! GRUB loads it by multiboot2; it puts every CPU into VMX root, protects
//! itself with EPT and boots the next disk's OS in VMX non-root.
#![no_std]
#![no_main]

use shared::boot::BootInfo;
use shared::println;

shared::kernel_entry!(main);

fn main(boot: &'static BootInfo) -> ! {
    println!("L0 hypervisor {} starting", env!("CARGO_PKG_VERSION"));
    boot.print();
    shared::platform::shutdown(0)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    shared::panic::report(info)
}
