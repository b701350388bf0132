//! The APs: started by the usual INIT-SIPI-SIPI (through L0's ICR
//! emulation under L0); each reports and halts. The ICR store forms of
//! item 4 (SIB addressing, `xchg`, `stosd`, `movnti`, a `mov` with a
//! segment override) are reported as skipped: L0 does not capture every
//! store form yet, and LHV has no second AP bring-up path for them.

use ::core::sync::atomic::{AtomicUsize, Ordering};
use shared::boot::BootInfo;
use shared::{cpu_println, println, x86};

use super::{Env, check, skip};

static ONLINE: AtomicUsize = AtomicUsize::new(1);

fn ap_main() -> ! {
    ONLINE.fetch_add(1, Ordering::AcqRel);
    cpu_println!("HOSTILE: AP up");
    x86::halt_forever()
}

/// Starts the APs the firmware lists.
pub fn start(boot: &BootInfo) {
    let smp = shared::smp::start_aps(boot, ap_main);
    println!(
        "SMP: {} CPUs online ({} listed by firmware)",
        smp.online, smp.listed
    );
    for _ in 0..1_000_000 {
        if ONLINE.load(Ordering::Acquire) >= smp.online {
            break;
        }
        x86::pause();
    }
    let up = ONLINE.load(Ordering::Acquire);
    check(
        "aps_started",
        up == smp.listed,
        format_args!("{} CPUs running", smp.listed),
        format_args!("{up}"),
    );
}

pub fn store_forms(_env: &Env) {
    for name in [
        "icr_store_sib",
        "icr_store_xchg",
        "icr_store_stosd",
        "icr_store_movnti",
        "icr_store_mov_fs_override",
    ] {
        skip(
            name,
            "ICR store forms need L0's store capture (issue 7 item 4, not done)",
        );
    }
}
