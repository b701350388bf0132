//! LHV: a minimal test hypervisor (L1) that checks VMX behaviour against the
//! Intel SDM, on bare hardware, on emulators, or under L0.
#![no_std]
#![no_main]

use shared::boot::BootInfo;
use shared::println;

shared::kernel_entry!(main);

fn main(boot: &'static BootInfo) -> ! {
    println!("LHV {} starting", env!("CARGO_PKG_VERSION"));
    boot.print();
    shared::platform::shutdown(0)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    shared::panic::report(info)
}
