//! LHV: a minimal test hypervisor (L1) that checks VMX behaviour against the
//! Intel SDM, on bare hardware, on emulators, or under L0.
#![no_std]
#![no_main]

use shared::boot::BootInfo;
use shared::vmx::VmxCaps;
use shared::vmx_root::{self, Needs};
use shared::{cmdline, cpu_println, println};

shared::kernel_entry!(main);

/// The BSP's VMX capabilities, shared with the APs.
static CAPS: spin::Once<VmxCaps> = spin::Once::new();

fn main(boot: &'static BootInfo) -> ! {
    println!("LHV {} starting", env!("CARGO_PKG_VERSION"));
    boot.print();
    let opt = cmdline::get_hex(boot.cmdline(), "lhv_opt").unwrap_or(0);
    println!("LHV_OPT = {opt:#x}");
    let caps = match vmx_root::probe(Needs::default()) {
        Ok(c) => CAPS.call_once(|| c),
        Err(e) => {
            println!("VMX is not available: {e}");
            shared::platform::shutdown(1);
        }
    };
    println!("{}", caps.summary());
    let smp = shared::smp::start_aps(boot, ap_main);
    println!(
        "SMP: {} CPUs online ({} listed by firmware)",
        smp.online, smp.listed
    );
    cpu_main()
}

fn ap_main() -> ! {
    cpu_main()
}

fn cpu_main() -> ! {
    let caps = CAPS
        .get()
        .expect("the BSP reads the capabilities before starting APs");
    match vmx_root::enter(caps) {
        Ok(_vmxon) => cpu_println!("VMXON done"),
        Err(e) => cpu_println!("VMX is not available: {e}"),
    }
    shared::x86::halt_forever()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    shared::panic::report(info)
}
