//! L0: a late-launch, type-1 hypervisor for x86-64 Intel VMX. GRUB loads it
//! by multiboot2; it moves itself to a region at the top of RAM, puts every
//! CPU into VMX root, protects itself with EPT and boots the next disk's OS
//! in VMX non-root (see `launch`).
#![no_std]
#![no_main]

mod dump;
mod entry_guard;
mod ept01;
mod events;
mod exit_profile;
mod exits;
mod guest_smp;
mod init_reset;
mod lapic;
mod launch;
mod memory;
mod msr_bitmap;
mod nested;
mod shootdown;
mod vapic_base;
mod vcpu;
mod vmcs01;
mod vmtrr;

use core::sync::atomic::{AtomicUsize, Ordering};

use shared::boot::BootInfo;
use shared::mem::{IdentityMemory, PhysMemory};
use shared::vmx::{VmcsAccess, VmcsField, VmxCaps};
use shared::vmx_root::{self, Needs};
use shared::{cpu_println, println};

shared::kernel_entry!(main);

/// The BSP's VMX capabilities, shared with the APs.
static CAPS: spin::Once<VmxCaps> = spin::Once::new();
/// The VMCS01 controls, shared with the APs.
static CONTROLS: spin::Once<vmcs01::Controls> = spin::Once::new();
/// What every CPU needs to set up its VMCS01.
static SETUP: spin::Once<Setup> = spin::Once::new();
/// APs about to enter the guest (waiting for its SIPI).
static APS_READY: AtomicUsize = AtomicUsize::new(0);

struct Setup {
    cmdline: &'static str,
    msr_bitmap: u64,
    eptp: u64,
    boot_drive: u8,
}

/// The VMX capabilities (set before any guest runs).
pub fn caps() -> &'static VmxCaps {
    CAPS.get()
        .expect("set by the BSP before any CPU enters VMX")
}

/// The VMCS01 controls (set before any guest runs).
pub fn controls() -> &'static vmcs01::Controls {
    CONTROLS
        .get()
        .expect("set by the BSP before any CPU enters VMX")
}

fn fail(what: &str, e: impl core::fmt::Display) -> ! {
    println!("L0: {what}: {e}");
    shared::platform::shutdown(1)
}

fn main(boot: &'static BootInfo) -> ! {
    println!("L0 hypervisor {} starting", env!("CARGO_PKG_VERSION"));
    boot.print();
    // The #GP handler of `shared::safe_msr`: L0 performs the MSR loads of a
    // guest hypervisor's MSR areas with it, and a WRMSR the processor
    // refuses becomes that load's failure, not an L0 crash.
    shared::safe_msr::install();
    shared::trap::set_handler(shared::trap::vector::NMI, events::host_nmi);
    // An exit stack running into its guard page (`vcpu`) is named as such.
    for vec in [shared::trap::vector::PF, shared::trap::vector::DF] {
        let _ = shared::trap::add_handler(vec, vcpu::stack_overflow_claim);
    }
    vcpu::configure_selftest(boot.cmdline());
    let caps = CAPS.call_once(|| {
        vmx_root::probe_or_shutdown(Needs {
            ept: true,
            unrestricted_guest: true,
            vpid: true,
        })
    });
    let ctl = vmcs01::Controls::from_caps(caps).unwrap_or_else(|e| fail("VMX controls", e));
    CONTROLS.call_once(|| ctl);

    let region = memory::relocate(boot).unwrap_or_else(|e| fail("relocation", e));
    println!("L0: region [{:#x}, {:#x})", region.0, region.1);
    let firmware = memory::firmware_map(boot);
    let top = firmware
        .entries()
        .iter()
        .map(|e| e.end())
        .max()
        .unwrap_or(0);
    let limit = top
        .max(shared::mem::IDENTITY_MAP_END)
        .next_multiple_of(2 << 20);
    ept01::build(caps, limit).unwrap_or_else(|e| fail("EPT01", e));
    let eptp = ept01::eptp().map_or(0, |e| e.0);
    println!(
        "L0: EPT01 maps [0, {limit:#x}) without L0's region; {} pool frames left",
        memory::pool_free()
    );
    // The guest's IPIs go through its xAPIC's ICR (or the x2APIC MSR):
    // writes to the xAPIC page exit (see `exits::apic_write`).
    let apic_page = lapic::xapic_page();
    if lapic::apic_base_is_safe(apic_page) {
        ept01::set_apic_page(apic_page);
        println!("L0: guest xAPIC writes at {apic_page:#x} trapped");
    } else {
        println!("L0: xAPIC page {apic_page:#x} cannot be trapped; guest INITs reach the hardware");
    }
    let hc = exits::configure_hypercalls(boot.cmdline());
    exit_profile::configure(boot.cmdline());
    println!(
        "L0: hypercalls: Print{}{}",
        if hc.stats { ", Stats" } else { "" },
        if hc.shutdown { ", Shutdown" } else { "" }
    );
    let boot_drive = shared::cmdline::get_hex(boot.cmdline(), "boot_drive")
        .and_then(|d| u8::try_from(d).ok())
        .unwrap_or(0x80);
    let module = boot
        .modules
        .first()
        .unwrap_or_else(|| fail("guest", launch::LaunchError::NoBootSector));
    launch::place_boot_sector((module.start, module.end)).unwrap_or_else(|e| fail("guest", e));
    let gm = launch::install_int15_hook(firmware, region).unwrap_or_else(|e| fail("guest", e));
    println!(
        "L0: INT 15h hook at {:#x} (BIOS vector {:04x}:{:04x}); guest memory map:",
        gm.hook.stub, gm.hook.original.0, gm.hook.original.1
    );
    for e in gm.map.entries() {
        println!("  [{:#014x}, {:#014x}) type {}", e.base, e.end(), e.kind);
    }
    nested::init(boot.cmdline());
    let guard = entry_guard::configure(boot.cmdline());
    println!("L0: VMCS01 guest-state checks before VM entry: {guard:?} (entry_check=)");
    println!(
        "L0: VMX for the guest: {}",
        if nested::enabled() {
            "on (nested VMX)"
        } else {
            "hidden (vmx=off)"
        }
    );
    SETUP.call_once(|| Setup {
        cmdline: boot.cmdline(),
        msr_bitmap: msr_bitmap::phys(),
        eptp,
        boot_drive,
    });

    // The AP trampoline page is conventional memory the guest may expect
    // as the BIOS left it: keep a copy and put it back.
    let mut saved = [0u8; 4096];
    let _ = IdentityMemory.read(shared::smp::AP_TRAMPOLINE_PHYS, &mut saved);
    let smp = shared::smp::start_aps(boot, ap_main);
    let _ = IdentityMemory.write(shared::smp::AP_TRAMPOLINE_PHYS, &saved);
    println!(
        "SMP: {} CPUs online ({} listed by firmware)",
        smp.online, smp.listed
    );
    // A CPU the firmware lists that does not run under L0 would be outside
    // its control once the guest starts it (its STARTUP IPIs reach the
    // hardware): stop before booting the guest (`shared::smp` said which).
    if smp.online < smp.listed {
        fail(
            "SMP",
            format_args!(
                "{} of the {} CPUs the firmware lists did not start; not booting the guest",
                smp.listed - smp.online,
                smp.listed
            ),
        );
    }
    if !wait_for_aps(smp.online - 1) {
        fail(
            "SMP",
            "an AP did not reach the guest's wait-for-SIPI state; not booting the guest",
        );
    }
    // The guest owns the PIT and port 0x61 from now on.
    let tsc = shared::delay::switch_to_tsc();
    println!("L0: delays use the TSC ({tsc} ticks/ms) from now on");
    println!(
        "L0: booting the guest from drive {boot_drive:#x} at 0000:{:04x}",
        launch::BOOT_SECTOR
    );
    shared::console::disable_vga();
    cpu_main(true)
}

fn ap_main() -> ! {
    cpu_main(false)
}

/// Waits (bounded) until `n` APs are about to enter the guest, so that the
/// guest's INIT-SIPI-SIPI finds them waiting for a SIPI.
fn wait_for_aps(n: usize) -> bool {
    for _ in 0..10_000 {
        if APS_READY.load(Ordering::Acquire) >= n {
            return true;
        }
        shared::delay::udelay(100);
    }
    println!(
        "L0: only {} of {n} APs are ready for the guest",
        APS_READY.load(Ordering::Acquire)
    );
    false
}

fn cpu_main(bsp: bool) -> ! {
    let caps = caps();
    let vmxon = vmx_root::enter_or_halt(caps);
    enable_osxsave();
    let setup = SETUP.get().expect("set by the BSP before starting APs");
    let index = shared::percpu::current().index();
    let trace = shared::cmdline::get(setup.cmdline, "nested_trace") == Some("1");
    let Some(mut cpu) = vcpu::take(index, trace) else {
        cpu_println!("no VMX slot for this CPU");
        shared::x86::halt_forever()
    };
    // Its private EPT01 view for xAPIC writes L0 cannot decode.
    if !ept01::prepare_step_view(index) {
        cpu_println!("no pool frames for this CPU's xAPIC-write view");
        shared::x86::halt_forever()
    }
    if let Err(e) = vmcs01::setup(
        &mut cpu,
        &vmxon,
        caps,
        controls(),
        setup.msr_bitmap,
        setup.eptp,
    ) {
        cpu_println!("VMCS01 setup failed: {e}");
        shared::x86::halt_forever()
    }
    let mut v = vmxon.guarded_vmcs();
    events::vmcs_ready(index);
    guest_smp::register(index, shared::percpu::current().apic_id(), !bsp);
    if bsp {
        launch::write_boot_state(&mut v, caps, cpu.vcpu, setup.boot_drive);
    } else {
        v.write(
            VmcsField::GuestActivityState,
            vmcs01::activity::WAIT_FOR_SIPI,
        );
        APS_READY.fetch_add(1, Ordering::Release);
    }
    // SAFETY: the current VMCS is this CPU's VMCS01, fully set up by
    // `vmcs01::setup` (host state: the exit stub and this Vcpu's stack).
    unsafe { vcpu::launch(cpu.vcpu, cpu.host_rsp) }
}

/// Sets CR4.OSXSAVE when the processor has XSAVE, so that L0 can perform
/// the guest's XSETBV (host CR4 is read when the VMCS is set up).
fn enable_osxsave() {
    const CPUID_1_ECX_XSAVE: u32 = 1 << 26;
    if shared::x86::cpuid(1, 0).ecx & CPUID_1_ECX_XSAVE != 0 {
        // SAFETY: the processor supports XSAVE; OSXSAVE only enables
        // XGETBV/XSETBV and the XSAVE family.
        unsafe { shared::x86::write_cr4(shared::x86::read_cr4() | vmcs01::cr4::OSXSAVE) };
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    shared::panic::report(info)
}
