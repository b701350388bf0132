//! `nmi-blocking`: the order of NMIs and VM exits around NMI blocking, as
//! a guest hypervisor sees it (XMHF's nested NMI deadlock came from getting
//! this wrong). With "NMI exiting" and "virtual NMIs":
//!
//! 1. an NMI injected with NMI-window exiting on is delivered to L2 first
//!    and sets virtual-NMI blocking (SDM 27.6.1.2); only L2's IRET ends it
//!    (SDM 26.3), then the NMI-window exit comes (reason 8): `V H W`;
//! 2. entering with "blocking by NMI" (virtual-NMI blocking, Table 25-3)
//!    and NMI-window exiting: L2 runs to its own IRET, then reason 8 at the
//!    IRET's target: `V M W`;
//! 3. a physical NMI in L2 exits (reason 0, NMI) and leaves NMIs blocked
//!    in L1 (SDM 28.5.5): a self-NMI waits for L1's IRET: `N I R` (a `P`
//!    before `I` means it got through while it should have been blocked).
//!
//! Expected log: `VHW.VMW.NIR.`

use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use shared::percpu::selector;
use shared::trap::vector;
use shared::vmx::VmcsField as F;
use shared::vmx::controls::{PinBased, PrimaryProcBased};
use shared::vmx::exit::{ExitReason, InterruptionInfo, InterruptionType};

use super::{Explanation as Text, Reproducer, Verdict};
use crate::events::{self, NMI_COUNT};
use crate::exit::gpr;
use crate::options::nmi::BLOCKING_BY_NMI;
use crate::test_loop::{Ctx, enter_once};
use crate::vmcs_setup::{Controls, RFLAGS_FIXED, RFLAGS_IF};

const EXPECTED: &str = "VHW.VMW.NIR.";

/// The reproducer, for the registry in `repro/mod.rs`.
pub const REPRO: Reproducer = Reproducer {
    name: "nmi-blocking",
    about: "order of NMIs and VM exits around (virtual-)NMI blocking and the NMI window",
    unsupported: |caps| {
        let needs = PinBased::NMI_EXITING | PinBased::VIRTUAL_NMIS;
        let window = PrimaryProcBased::NMI_WINDOW_EXITING;
        if !caps.pin.effective().can_set(needs.bits()) {
            Some("the CPU lacks NMI exiting or virtual NMIs")
        } else if !caps.proc.effective().can_set(window.bits()) {
            Some("the CPU lacks NMI-window exiting")
        } else {
            None
        }
    },
    request,
    run,
};

/// L2's stack (reproducer mode runs on the BSP only; only L2 uses it, and
/// Rust code only takes its address).
static mut L2_STACK: crate::l2::Stack = crate::l2::Stack([0; crate::l2::STACK_SIZE]);
const STEP: u64 = 0x4c48_7e01;
const BLOCK: u64 = 0x4c48_7e02;
const DONE: u64 = 0x4c48_7e03;
/// Set by L1 when the NMI exit of step 3 was seen.
static NMI_SEEN: AtomicU64 = AtomicU64::new(0);
/// Written by L2 between entry with virtual-NMI blocking and its IRET.
static MARKER: AtomicU64 = AtomicU64::new(0);

/// NMI exiting and virtual NMIs.
pub fn request(c: &mut Controls) {
    c.pin |= PinBased::NMI_EXITING | PinBased::VIRTUAL_NMIS;
}

fn vmcall(n: u64) {
    // SAFETY: exits to L1, which moves RIP past the VMCALL.
    unsafe { core::arch::asm!("vmcall", inout("rax") n => _, options(nostack)) };
}

extern "C" fn l2_main() -> ! {
    // 1. Injected NMI + NMI window.
    vmcall(STEP);
    vmcall(DONE);
    // 2. Virtual-NMI blocking until L2's IRET.
    // SAFETY: VMCALL exits (RIP moved past it); the rest builds a valid
    // IRET frame and returns right after IRETQ.
    unsafe {
        core::arch::asm!(
            "vmcall",
            "mov qword ptr [{m}], 1",
            "mov {t}, rsp",
            "push {ss}",
            "push {t}",
            "pushfq",
            "push {cs}",
            "lea {t}, [rip + 2f]",
            "push {t}",
            "iretq",
            "2:",
            t = out(reg) _,
            m = in(reg) MARKER.as_ptr(),
            ss = in(reg) u64::from(selector::KERNEL_DATA),
            cs = in(reg) u64::from(selector::KERNEL_CODE),
            inout("rax") BLOCK => _,
        );
    }
    vmcall(DONE);
    // 3. A physical NMI in L2.
    events::send_nmi(events::apic_id());
    events::wait_until(5_000_000, || NMI_SEEN.load(Ordering::Acquire) != 0);
    vmcall(DONE);
    loop {
        vmcall(DONE);
    }
}

fn set_nmi_window(ctx: &mut Ctx, on: bool) {
    let bit = u64::from(PrimaryProcBased::NMI_WINDOW_EXITING.bits());
    let proc = ctx.read(F::PrimaryProcBasedVmExecControls);
    ctx.write(
        F::PrimaryProcBasedVmExecControls,
        if on { proc | bit } else { proc & !bit },
    );
}

/// Runs the three experiments and compares the log with [`EXPECTED`].
pub fn run(ctx: &mut Ctx) -> Verdict {
    shared::apic::LocalApic::current().enable(crate::irq::SPURIOUS_VECTOR);
    ctx.write(F::GuestRip, l2_main as *const () as u64);
    let stack = &raw mut L2_STACK;
    ctx.write(F::GuestRsp, stack as u64 + crate::l2::STACK_SIZE as u64 - 8);
    ctx.write(F::GuestRflags, RFLAGS_FIXED | RFLAGS_IF);
    events::install_nmi();
    let c = ctx.cpu;
    let mut log = Text::new();
    let mut nmis = NMI_COUNT[c].load(Ordering::Acquire);
    let mut detail = Text::new();
    for _ in 0..16 {
        let exit = enter_once(ctx);
        let now = NMI_COUNT[c].load(Ordering::Acquire);
        if now != nmis {
            let _ = log.write_str("H");
            nmis = now;
        }
        let info = InterruptionInfo(exit.interruption_info);
        match exit.reason {
            ExitReason::Vmcall => {
                let rax = ctx.regs.gpr[gpr::RAX];
                ctx.skip_instruction(&exit);
                match rax {
                    STEP => {
                        let _ = log.write_str("V");
                        let nmi = InterruptionInfo::new(vector::NMI, InterruptionType::Nmi, false);
                        ctx.write(F::VmEntryInterruptionInfo, nmi.0.into());
                        set_nmi_window(ctx, true);
                    }
                    BLOCK => {
                        let _ = log.write_str("V");
                        let s = ctx.read(F::GuestInterruptibilityState);
                        ctx.write(F::GuestInterruptibilityState, s | BLOCKING_BY_NMI);
                        set_nmi_window(ctx, true);
                    }
                    DONE if log.as_str().len() >= EXPECTED.len() => break,
                    DONE => {
                        let _ = log.write_str(".");
                    }
                    _ => {
                        let _ = write!(detail, " unknown VMCALL {rax:#x};");
                    }
                }
            }
            ExitReason::NmiWindow => {
                if MARKER.swap(0, Ordering::AcqRel) != 0 {
                    let _ = log.write_str("M");
                }
                let _ = log.write_str("W");
                set_nmi_window(ctx, false);
            }
            ExitReason::ExceptionOrNmi if info.kind() == Some(InterruptionType::Nmi) => {
                let _ = log.write_str("N");
                if info.0 != 0x8000_0202 {
                    let _ = write!(detail, " NMI exit information {:#x};", info.0);
                }
                events::send_nmi(events::apic_id());
                events::settle();
                if NMI_COUNT[c].load(Ordering::Acquire) != nmis {
                    let _ = log.write_str("P");
                }
                let _ = log.write_str("I");
                events::iret_to_self();
                events::wait_until(5_000_000, || NMI_COUNT[c].load(Ordering::Acquire) != nmis);
                if NMI_COUNT[c].load(Ordering::Acquire) != nmis {
                    let _ = log.write_str("R");
                }
                nmis = NMI_COUNT[c].load(Ordering::Acquire);
                NMI_SEEN.store(1, Ordering::Release);
            }
            _ => {
                let _ = write!(
                    detail,
                    " unexpected exit {} qualification {:#x} at RIP {:#x};",
                    exit.reason_field, exit.qualification, exit.guest_rip
                );
                break;
            }
        }
    }
    if log.as_str() == EXPECTED && detail.as_str().is_empty() {
        Verdict::good(format_args!(
            "injected NMI delivered before the NMI-window exit, virtual-NMI blocking held until \
             L2's IRET, NMIs blocked in L1 after an NMI exit until IRET (log VHW.VMW.NIR.)"
        ))
    } else {
        Verdict::bad(format_args!(
            "NMI/exit order {} (expected {EXPECTED}; H = NMI handler ran, P = NMI got \
             through a blocked L1);{}",
            log.as_str(),
            detail.as_str()
        ))
    }
}
