//! Starting the application processors (APs).
//!
//! The BSP finds the CPUs (ACPI MADT, else the MP table), copies the AP
//! trampoline of `boot/entry.S` below 1 MiB, and starts the APs one at a
//! time with INIT-SIPI-SIPI (SDM vol. 3A 9.4.4.1), handing each its index,
//! its stack and the page tables the BSP uses. Each AP sets up its per-CPU
//! state and runs the kernel's AP main.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::boot::BootInfo;
use crate::mem::{IdentityMemory, PhysMemory};
use crate::{acpi, apic, delay, percpu, println, x86};

/// Physical address the trampoline is copied to (must match `entry.S`).
pub const AP_TRAMPOLINE_PHYS: u64 = 0x8000;
/// How long the BSP waits for an AP to come online.
const AP_START_TIMEOUT_MS: u32 = 1000;

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_trampoline_params: u8;
}

/// The parameter block at the end of the trampoline (see `entry.S`).
#[repr(C)]
struct TrampolineParams {
    cr3: u64,
    stack_top: u64,
    entry: u64,
    arg: u64,
}

/// The kernel's AP main, as an address (set once by `start_aps`).
static AP_MAIN: AtomicUsize = AtomicUsize::new(0);

/// What `start_aps` did.
#[derive(Clone, Copy, Debug)]
pub struct SmpReport {
    /// CPUs the firmware tables list (usable ones, BSP included).
    pub listed: usize,
    /// CPUs online now, BSP included.
    pub online: usize,
}

/// Starts every AP listed by the firmware; each runs `ap_main` on its own
/// stack once its per-CPU state is set up. Returns when every AP is online
/// or has timed out (reported on the console).
pub fn start_aps(boot: &BootInfo, ap_main: fn() -> !) -> SmpReport {
    AP_MAIN.store(ap_main as usize, Ordering::Release);
    let hint = (!boot.rsdp.is_empty()).then(|| acpi::RsdpHint::Bytes(&boot.rsdp));
    let cpus = match acpi::enumerate_cpus(&IdentityMemory, hint) {
        Ok(list) => list,
        Err(e) => {
            println!("SMP: no CPU tables ({e:?}); running on the BSP only");
            return SmpReport {
                listed: 1,
                online: 1,
            };
        }
    };
    let cr3 = x86::read_cr3();
    if cr3 >= 1 << 32 {
        println!("SMP: page tables above 4 GiB ({cr3:#x}); APs not started");
        return SmpReport {
            listed: cpus.cpus().as_slice().len(),
            online: 1,
        };
    }
    install_trampoline();
    let lapic = apic::LocalApic::current();
    let my_apic_id = lapic.id();
    let mut next_index = 1;
    for cpu in cpus.cpus().as_slice() {
        if cpu.apic_id == my_apic_id {
            continue;
        }
        if next_index >= percpu::MAX_CPUS {
            println!(
                "SMP: more than {} CPUs; APIC id {} not started",
                percpu::MAX_CPUS,
                cpu.apic_id
            );
            continue;
        }
        let Some(stack_top) = percpu::stack_top(next_index) else {
            break;
        };
        write_params(&TrampolineParams {
            cr3,
            stack_top,
            entry: ap_entry as *const () as u64,
            arg: next_index as u64,
        });
        let started = lapic
            .start_ap(cpu.apic_id, (AP_TRAMPOLINE_PHYS >> 12) as u8, &|us| {
                delay::udelay(us)
            })
            .is_ok()
            && wait_online(next_index);
        if started {
            next_index += 1;
        } else {
            println!("SMP: CPU with APIC id {} did not start", cpu.apic_id);
        }
    }
    let listed = cpus.cpus().as_slice().len();
    SmpReport {
        listed,
        online: percpu::online_count(),
    }
}

fn wait_online(index: usize) -> bool {
    let Some(cpu) = percpu::get(index) else {
        return false;
    };
    for _ in 0..AP_START_TIMEOUT_MS * 10 {
        if cpu.is_online() {
            return true;
        }
        delay::udelay(100);
    }
    cpu.is_online()
}

fn install_trampoline() {
    let start = &raw const ap_trampoline_start;
    let len = &raw const ap_trampoline_end as usize - start as usize;
    // SAFETY: the template is `len` bytes of the kernel's read-only data.
    let code = unsafe { core::slice::from_raw_parts(start, len) };
    // The page is conventional memory below 1 MiB that the kernels reserve
    // for this purpose while APs start.
    let _ = IdentityMemory.write(AP_TRAMPOLINE_PHYS, code);
}

fn write_params(p: &TrampolineParams) {
    let offset = &raw const ap_trampoline_params as u64 - &raw const ap_trampoline_start as u64;
    let base = AP_TRAMPOLINE_PHYS + offset;
    let mut mem = IdentityMemory;
    for (i, v) in [p.cr3, p.stack_top, p.entry, p.arg].into_iter().enumerate() {
        let _ = mem.write_u64(base + 8 * i as u64, v);
    }
}

/// First Rust code of an AP (called by the trampoline with its index).
extern "C" fn ap_entry(index: u64) -> ! {
    // SAFETY: first code on this AP; the BSP hands out each index once.
    unsafe { percpu::set_current(index as usize, x86::initial_apic_id()) };
    // SAFETY: once, on this CPU, after set_current.
    unsafe { percpu::init_this_cpu() };
    let main = AP_MAIN.load(Ordering::Acquire);
    // SAFETY: `start_aps` stored a `fn() -> !` before starting any AP.
    let main: fn() -> ! = unsafe { core::mem::transmute::<usize, fn() -> !>(main) };
    main()
}
