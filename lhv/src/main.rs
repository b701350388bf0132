//! LHV: a minimal test hypervisor (L1) that checks VMX behaviour against the
//! Intel SDM, on bare hardware, on emulators, or under L0.
//!
//! Three modes, chosen by `mode=` on the command line:
//! - `test` (default): on every CPU, VMXON, one VMCS, an L2 of LHV's own and
//!   an endless (or `iters=N`) test loop over the options of `lhv_opt=`
//!   (see [`test_loop`] and [`options`]);
//! - `probe`: no VMX at all; checks memory and asks L0 for its statistics
//!   (see [`probe`]);
//! - `bench`: the BSP times L2 exits handled by L1, and L0's exits per L2
//!   exit when L0 is there (see [`bench`]).
//! - `negative`: the negative VMX suite on the BSP: invalid VMCS contents,
//!   bad VMX operands, CPL 3, outside VMX operation, broken MSR areas, each
//!   outcome checked exactly (see [`negative`]).
//! - `hostile`: no VMX; does what a hostile OS does to the machine and
//!   checks the hardware's answers (see [`hostile`]); `triple-fault`:
//!   shuts the processor down and expects the machine to boot again.
//! - `fuzz`: the differential VMCS fuzzer on the BSP: seeded mutations of a
//!   valid VMCS, one outcome line per case (see [`fuzz`]).
//! - `hostile-l1`: LHV as a hostile guest hypervisor attacking L0 (see
//!   [`hostile_l1`]).
//! - `soak`: test mode with VMCS and EPT12 churn, MTRR writes, and L0's
//!   pool and the NMI accounting checked at the end (see [`soak`]).
#![no_std]
#![no_main]

mod assert;
mod bench;
mod bench_l2;
mod events;
mod exit;
mod fuzz;
mod hostile;
mod hostile_l1;
mod hw;
mod irq;
mod l0;
mod l2;
mod low_code;
mod negative;
mod options;
mod percpu_cell;
mod probe;
mod repro;
mod ring3;
mod soak;
mod test_loop;
mod vmcs_setup;

use shared::boot::BootInfo;
use shared::vmx::VmxCaps;
use shared::vmx_root::{self, Needs};
use shared::{cmdline, println};

shared::kernel_entry!(main);

/// The BSP's VMX capabilities, shared with the APs.
static CAPS: spin::Once<VmxCaps> = spin::Once::new();

fn main(boot: &'static BootInfo) -> ! {
    println!("LHV {} starting", env!("CARGO_PKG_VERSION"));
    boot.print();
    match cmdline::get(boot.cmdline(), "mode") {
        Some("probe") => probe::run(boot),
        Some("bench") => bench::run(boot),
        Some("hostile") => hostile::run(boot),
        Some("triple-fault") => hostile::run_triple_fault(),
        Some("bsp-init") => hostile::run_bsp_init(boot),
        _ => {}
    }
    match cmdline::get(boot.cmdline(), "mode") {
        Some("negative") => negative::run(boot, &CAPS),
        Some("fuzz") => fuzz::run(boot, &CAPS),
        Some("hostile-l1") => hostile_l1::run(boot, &CAPS),
        _ => {}
    }
    let raw_opt = cmdline::get_hex(boot.cmdline(), "lhv_opt").unwrap_or(0);
    println!("LHV_OPT = {raw_opt:#x}");
    let opt = match lhv::opt::validate(raw_opt) {
        Ok(o) => o,
        Err(e) => {
            println!("TEST_ASSERT failed: valid LHV_OPT, expected known options, got {e}");
            shared::platform::shutdown(1);
        }
    };
    let caps = CAPS.call_once(|| vmx_root::probe_or_shutdown(Needs::default()));
    low_code::check(boot);
    if let Some(name) = cmdline::get(boot.cmdline(), "lhv_repro") {
        repro::run(boot, name, caps);
    }
    test_loop::configure(boot, opt);
    let smp = shared::smp::start_aps(boot, ap_main);
    println!(
        "SMP: {} CPUs online ({} listed by firmware)",
        smp.online, smp.listed
    );
    test_loop::set_cpu_count(smp.online);
    cpu_main()
}

fn ap_main() -> ! {
    cpu_main()
}

fn cpu_main() -> ! {
    let caps = CAPS
        .get()
        .expect("the BSP reads the capabilities before starting APs");
    let vmxon = vmx_root::enter_or_halt(caps);
    test_loop::run_cpu(vmxon, caps)
}

#[panic_handler]
fn panic(info: &::core::panic::PanicInfo) -> ! {
    shared::panic::report(info)
}
