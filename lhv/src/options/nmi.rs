//! NMI (0x2000): NMI exiting, virtual NMIs, NMI-window exiting, blocking by
//! NMI across VM entry and exit, and NMIs sent between CPUs by IPI.
//!
//! Each iteration L2:
//! 1. sends itself an NMI (by APIC ID): with "NMI exiting" it must exit
//!    with reason 0 and interruption information 0x8000_0202 (SDM 26.2,
//!    28.2.2) and never reach L2's IDT. After that exit L1 has blocking by
//!    NMI (SDM 28.5.5: "VM exits caused directly by NMIs cause blocking by
//!    NMI"): a self-NMI stays pending until L1's IRET, then reaches LHV's
//!    NMI handler exactly once;
//! 2. asks L1 to NMI itself in VMX root: LHV's handler counts it, and the
//!    xAPIC ICR high half L2 wrote before the VMCALL is still there after
//!    it (L1 shares the local APIC with L2; see `events::send_nmi`);
//! 3. asks L1 to inject a virtual NMI with NMI-window exiting on: L2's NMI
//!    handler runs first (the injection sets virtual-NMI blocking, SDM
//!    27.6.1.2), and only its IRET opens the window (SDM 26.3): the NMI-window
//!    exit (reason 8) comes at the instruction after the VMCALL, with the
//!    handler already run once;
//! 4. asks L1 to enter with "blocking by NMI" (virtual-NMI blocking, SDM
//!    25.4.2 Table 25-3) and NMI-window exiting: no exit until L2's own IRET,
//!    then reason 8 at the IRET's target, with the interruptibility bit clear;
//! 5. with two or more CPUs, after a barrier, sends an NMI to the next CPU
//!    (IPI from L2) and each CPU checks it received exactly one (as an NMI
//!    exit when in L2, or in LHV's handler when in L1).

use ::core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use lhv::opt::LhvOpt;
use shared::cpu_println;
use shared::percpu::MAX_CPUS;
use shared::trap::vector;
use shared::vmx::controls::{PinBased, PrimaryProcBased};
use shared::vmx::exit::{ExitReason, InterruptionInfo, InterruptionType};
use shared::vmx::{VmcsField as F, VmxCaps};

use super::{Handled, TestOption};
use crate::assert::{fail, test_assert, test_assert_eq};
use crate::events::{self, NMI_COUNT, NMI_LAST_RIP};
use crate::exit::{Exit, gpr};
use crate::l2::{self, Args, L2Env, l2_assert_eq};
use crate::test_loop::{self, Ctx};
use crate::vmcs_setup::Controls;

/// L1: NMI yourself in VMX root.
const ROOT_NMI: u64 = l2::call_number(LhvOpt::NMI, 1);
/// L1: inject a virtual NMI, NMI-window exiting on.
const INJECT_VNMI: u64 = l2::call_number(LhvOpt::NMI, 2);
/// L1: set virtual-NMI blocking, NMI-window exiting on; RBX = where the
/// window exit must come.
const BLOCK_VNMI: u64 = l2::call_number(LhvOpt::NMI, 3);
/// L1: L2 has checked the NMIs of a step (the self-NMI, the NMI from the
/// previous CPU): count it. L2 reports it, because where an NMI from
/// another CPU lands (an NMI exit, or LHV's handler when it comes while L1
/// runs) depends on timing, which differs under L0, while the count must
/// not.
const NMI_CHECKED: u64 = l2::call_number(LhvOpt::NMI, 4);

/// Interruptibility-state bit 3: blocking by NMI (virtual-NMI blocking
/// with virtual NMIs), SDM 25.4.2 Table 25-3.
pub const BLOCKING_BY_NMI: u64 = 1 << 3;
/// A destination L2 writes to the xAPIC ICR high half (bits 31:24) that
/// differs from its own APIC ID, which L1's self-NMI writes.
const ICR_HIGH_MARK: u32 = 0xa5 << 24;
/// Polls for an NMI that must come.
const POLLS: u64 = 5_000_000;
/// Polls at the barrier (the other CPU may be starting or printing).
const BARRIER_POLLS: u64 = 200_000_000;

/// NMI exits per CPU.
static NMI_EXITS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// NMIs L1 caused itself (self-NMIs in root, injected NMIs), per CPU.
static SELF_NMIS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Marker L2 writes between entering with virtual-NMI blocking and IRET.
static MARKER: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// The barrier of the inter-CPU part.
static BARRIER_ARRIVED: AtomicUsize = AtomicUsize::new(0);
static BARRIER_GENERATION: AtomicUsize = AtomicUsize::new(0);

/// NMIs that came from outside this CPU's L1 (NMI exits plus L1 handler
/// NMIs it did not cause). Consistent whenever L1 is not inside an exit.
fn received(cpu: usize) -> u64 {
    NMI_EXITS[cpu].load(Ordering::Acquire) + NMI_COUNT[cpu].load(Ordering::Acquire)
        - SELF_NMIS[cpu].load(Ordering::Acquire)
}

/// The run-wide NMI accounting of one CPU (`mode=soak` checks it at the
/// end, with every CPU quiet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    /// NMIs other CPUs and this one sent to it ([`events::NMI_SENT`]).
    pub sent: u64,
    /// NMIs it received: NMI exits, plus LHV's handler runs that were not
    /// virtual NMIs L1 injected into L2.
    pub received: u64,
}

/// This CPU's [`Tally`] (consistent when no NMI is in flight to it).
pub fn tally(cpu: usize) -> Tally {
    let handled = NMI_COUNT[cpu].load(Ordering::Acquire);
    let injected = events::NMI_INJECTED[cpu].load(Ordering::Acquire);
    Tally {
        sent: events::NMI_SENT[cpu].load(Ordering::Acquire),
        received: NMI_EXITS[cpu].load(Ordering::Acquire) + handled.saturating_sub(injected),
    }
}

/// A sense-counting barrier for `n` CPUs; false on timeout.
fn barrier(n: usize) -> bool {
    let generation = BARRIER_GENERATION.load(Ordering::Acquire);
    if BARRIER_ARRIVED.fetch_add(1, Ordering::AcqRel) + 1 == n {
        BARRIER_ARRIVED.store(0, Ordering::Release);
        BARRIER_GENERATION.fetch_add(1, Ordering::AcqRel);
        return true;
    }
    events::wait_until(BARRIER_POLLS, || {
        BARRIER_GENERATION.load(Ordering::Acquire) != generation
    })
}

/// The marker of iteration `iter`.
fn marker_of(iter: u64) -> u64 {
    iter.wrapping_mul(0x9e37_79b9) | 1
}

fn l2_action(env: &L2Env) {
    let c = env.cpu;
    let me = events::apic_id();

    // 1. Self-NMI in L2: one NMI exit, nothing through L2's IDT.
    let not_mine = || NMI_COUNT[c].load(Ordering::Acquire) - SELF_NMIS[c].load(Ordering::Acquire);
    let (exits, handled) = (NMI_EXITS[c].load(Ordering::Acquire), not_mine());
    // By `lock cmpxchg`: a hypervisor under LHV (L0) sees an ICR store it
    // does not decode, from L2 (the NMI to the next CPU, below, is a `mov`).
    l2_assert_eq!(
        events::send_nmi_by_cmpxchg(me),
        true,
        "NMI IPI to self sent from L2"
    );
    let came = events::wait_until(POLLS, || NMI_EXITS[c].load(Ordering::Acquire) != exits);
    l2_assert_eq!(came, true, "NMI exit after a self-NMI in L2");
    l2_assert_eq!(
        NMI_EXITS[c].load(Ordering::Acquire),
        exits + 1,
        "NMI exits after one self-NMI in L2"
    );
    l2_assert_eq!(
        not_mine(),
        handled,
        "NMIs delivered through L2's IDT with NMI exiting (SDM 26.2)"
    );
    l2::vmcall(NMI_CHECKED, Args::default());

    // 2. L1 NMIs itself in VMX root, and leaves the ICR destination L2
    //    wrote as it was (L2 may be between the two stores of an IPI when
    //    an exit comes, see `events::send_nmi`).
    let dest = ICR_HIGH_MARK ^ (me << 24);
    events::set_icr_high(dest);
    l2::vmcall(ROOT_NMI, Args::default());
    if let Some(high) = events::icr_high() {
        l2_assert_eq!(
            high,
            dest,
            "L2's ICR high half across an exit where L1 sent an IPI"
        );
    }

    // 3. Injected virtual NMI, then the NMI window.
    l2::vmcall(INJECT_VNMI, Args::default());

    // 4. Virtual-NMI blocking from the VMCS until L2's IRET.
    let marker = marker_of(env.iter);
    // SAFETY: VMCALL exits to L1 (which moves RIP past it); the rest builds
    // a valid IRET frame for the current context and returns right after
    // IRETQ, with RSP and RFLAGS as before.
    unsafe {
        ::core::arch::asm!(
            "xchg {label}, rbx",
            "lea rbx, [rip + 2f]",
            "vmcall",
            "xchg {label}, rbx",
            "mov [{m}], {val}",
            "mov {label}, rsp",
            "push {ss}",
            "push {label}",
            "pushfq",
            "push {cs}",
            "lea {label}, [rip + 2f]",
            "push {label}",
            "iretq",
            "2:",
            label = out(reg) _,
            m = in(reg) MARKER[c].as_ptr(),
            val = in(reg) marker,
            ss = in(reg) u64::from(shared::percpu::selector::KERNEL_DATA),
            cs = in(reg) u64::from(shared::percpu::selector::KERNEL_CODE),
            inout("rax") BLOCK_VNMI => _,
        );
    }
    l2_assert_eq!(
        MARKER[c].load(Ordering::Acquire),
        marker,
        "L2 ran up to its IRET under virtual-NMI blocking"
    );

    // 5. NMIs between CPUs.
    // The APs may start before the BSP has counted them.
    events::wait_until(BARRIER_POLLS, || test_loop::cpu_count().is_some());
    let Some(n) = test_loop::cpu_count() else {
        l2_assert_eq!(0, 1, "CPU count known to L2");
        return;
    };
    if n < 2 {
        return;
    }
    let target = (c + 1) % n;
    let mine = received(c);
    l2_assert_eq!(barrier(n), true, "NMI IPI barrier 1");
    let theirs = received(target);
    let target_id = shared::percpu::get(target).map_or(u32::MAX, |p| p.apic_id());
    l2_assert_eq!(
        events::send_nmi(target_id),
        true,
        "NMI IPI to the next CPU sent"
    );
    let came = events::wait_until(BARRIER_POLLS, || received(target) > theirs);
    l2_assert_eq!(came, true, "the next CPU received the NMI IPI");
    l2_assert_eq!(barrier(n), true, "NMI IPI barrier 2");
    l2_assert_eq!(received(c), mine + 1, "NMIs received from the previous CPU");
    l2::vmcall(NMI_CHECKED, Args::default());
}

/// What L1 waits for after setting up an NMI window.
#[derive(Clone, Copy, Debug)]
struct Window {
    /// Guest RIP of the window exit.
    rip: u64,
    /// LHV's NMI count the exit must find.
    nmi_count: u64,
    /// Whether the exit follows an injected NMI (its handler's RIP is
    /// then `rip` too).
    injected: bool,
    /// The marker L2 must have written (blocking-by-NMI case).
    marker: Option<u64>,
}

/// The NMI checks of one CPU.
pub struct Nmi {
    window: Option<Window>,
    checks: u64,
}

impl Nmi {
    /// Fresh state.
    pub const fn new() -> Self {
        Self {
            window: None,
            checks: 0,
        }
    }

    fn set_nmi_window(ctx: &mut Ctx, on: bool) {
        let mut proc = ctx.read(F::PrimaryProcBasedVmExecControls);
        if on {
            proc |= u64::from(PrimaryProcBased::NMI_WINDOW_EXITING.bits());
        } else {
            proc &= !u64::from(PrimaryProcBased::NMI_WINDOW_EXITING.bits());
        }
        ctx.write(F::PrimaryProcBasedVmExecControls, proc);
    }

    /// L1 sends itself an NMI and checks LHV's handler runs exactly once,
    /// right away (`blocked == false`) or only after an IRET (`true`).
    fn self_nmi_in_root(&mut self, ctx: &Ctx, blocked: bool) {
        let c = ctx.cpu;
        let before = NMI_COUNT[c].load(Ordering::Acquire);
        SELF_NMIS[c].fetch_add(1, Ordering::AcqRel);
        test_assert!(
            events::send_nmi(events::apic_id()),
            "NMI IPI to self sent from L1",
            "ICR idle",
            "busy"
        );
        if blocked {
            events::settle();
            let now = NMI_COUNT[c].load(Ordering::Acquire);
            if now != before && ctx.on_bochs {
                ctx.skip_bochs(
                    "blocking by NMI after an NMI exit (SDM 28.5.5)",
                    "delivered the NMI in VMX root before IRET",
                );
            } else {
                test_assert_eq!(
                    now,
                    before,
                    "LHV's NMI count after an NMI exit, before IRET (blocking by NMI, SDM 28.5.5)"
                );
            }
            events::iret_to_self();
        }
        events::wait_until(POLLS, || NMI_COUNT[c].load(Ordering::Acquire) != before);
        test_assert_eq!(
            NMI_COUNT[c].load(Ordering::Acquire),
            before + 1,
            "LHV's NMI count after one self-NMI in VMX root"
        );
    }

    fn on_nmi_exit(&mut self, ctx: &mut Ctx, exit: &Exit) {
        test_assert_eq!(
            exit.interruption_info,
            InterruptionInfo::new(vector::NMI, InterruptionType::Nmi, false).0,
            "VM-exit interruption information of an NMI exit (SDM 28.2.2)"
        );
        test_assert_eq!(
            ctx.read(F::IdtVectoringInfo) & u64::from(InterruptionInfo::VALID),
            0u64,
            "IDT-vectoring information valid bit of an NMI exit in plain code"
        );
        test_assert_eq!(
            ctx.read(F::GuestInterruptibilityState) & BLOCKING_BY_NMI,
            0u64,
            "virtual-NMI blocking saved by a physical NMI exit (SDM 28.3.4)"
        );
        // Blocking by NMI holds in L1 until its IRET; then the self-NMI
        // comes through LHV's handler.
        self.self_nmi_in_root(ctx, true);
        NMI_EXITS[ctx.cpu].fetch_add(1, Ordering::AcqRel);
    }

    fn on_window_exit(&mut self, ctx: &mut Ctx, exit: &Exit) {
        let Some(w) = self.window.take() else {
            fail(
                format_args!("NMI-window exit"),
                format_args!("only while LHV waits for one"),
                format_args!("at RIP {:#x}", exit.guest_rip),
            );
        };
        Self::set_nmi_window(ctx, false);
        test_assert_eq!(exit.guest_rip, w.rip, "guest RIP of the NMI-window exit");
        test_assert_eq!(
            exit.qualification,
            0u64,
            "exit qualification of an NMI-window exit (SDM 28.2.1: cleared)"
        );
        test_assert_eq!(
            ctx.read(F::GuestInterruptibilityState) & BLOCKING_BY_NMI,
            0u64,
            "virtual-NMI blocking at the NMI-window exit"
        );
        let c = ctx.cpu;
        test_assert_eq!(
            NMI_COUNT[c].load(Ordering::Acquire),
            w.nmi_count,
            "NMIs L2's handler took before the NMI-window exit"
        );
        if w.injected {
            test_assert_eq!(
                NMI_LAST_RIP[c].load(Ordering::Acquire),
                w.rip,
                "RIP the injected NMI interrupted"
            );
        }
        if let Some(m) = w.marker {
            test_assert_eq!(
                MARKER[c].load(Ordering::Acquire),
                m,
                "L2's marker at the NMI-window exit (L2 ran until its IRET)"
            );
        }
        self.checks += 1;
    }
}

impl TestOption for Nmi {
    fn bit(&self) -> LhvOpt {
        LhvOpt::NMI
    }

    fn unsupported(&self, caps: &VmxCaps) -> Option<&'static str> {
        let pin = PinBased::NMI_EXITING | PinBased::VIRTUAL_NMIS;
        if !caps.pin.effective().can_set(pin.bits()) {
            Some("the CPU lacks NMI exiting or virtual NMIs")
        } else if !caps
            .proc
            .effective()
            .can_set(PrimaryProcBased::NMI_WINDOW_EXITING.bits())
        {
            Some("the CPU lacks NMI-window exiting")
        } else {
            None
        }
    }

    fn request(&self, c: &mut Controls) {
        c.pin |= PinBased::NMI_EXITING | PinBased::VIRTUAL_NMIS;
    }

    fn setup(&mut self, ctx: &mut Ctx) {
        events::install_nmi();
        if ctx.cpu == 0 && test_loop::cpu_count() == Some(1) {
            cpu_println!(
                "SKIP NMI IPI between CPUs: 1 CPU (the ICR's self shorthand is invalid with \
                 the NMI delivery mode, SDM Vol. 3A 11.6.1; self-NMIs go by APIC ID)"
            );
        }
    }

    fn before_entry(&mut self, ctx: &mut Ctx) {
        MARKER[ctx.cpu].store(0, Ordering::Release);
    }

    fn l2_action(&self) -> Option<l2::L2Action> {
        Some(l2_action)
    }

    fn on_exit(&mut self, ctx: &mut Ctx, exit: &Exit) -> Handled {
        let c = ctx.cpu;
        match exit.reason {
            ExitReason::ExceptionOrNmi
                if InterruptionInfo(exit.interruption_info).kind()
                    == Some(InterruptionType::Nmi) =>
            {
                self.on_nmi_exit(ctx, exit);
            }
            ExitReason::NmiWindow => self.on_window_exit(ctx, exit),
            ExitReason::Vmcall if ctx.regs.gpr[gpr::RAX] == ROOT_NMI => {
                self.self_nmi_in_root(ctx, false);
                self.checks += 1;
                ctx.skip_instruction(exit);
            }
            ExitReason::Vmcall if ctx.regs.gpr[gpr::RAX] == NMI_CHECKED => {
                self.checks += 1;
                ctx.skip_instruction(exit);
            }
            ExitReason::Vmcall if ctx.regs.gpr[gpr::RAX] == INJECT_VNMI => {
                let next = exit.guest_rip + exit.instruction_len;
                ctx.skip_instruction(exit);
                SELF_NMIS[c].fetch_add(1, Ordering::AcqRel);
                events::note_injected_nmi(c);
                ctx.write(
                    F::VmEntryInterruptionInfo,
                    InterruptionInfo::new(vector::NMI, InterruptionType::Nmi, false)
                        .0
                        .into(),
                );
                Self::set_nmi_window(ctx, true);
                self.window = Some(Window {
                    rip: next,
                    nmi_count: NMI_COUNT[c].load(Ordering::Acquire) + 1,
                    injected: true,
                    marker: None,
                });
            }
            ExitReason::Vmcall if ctx.regs.gpr[gpr::RAX] == BLOCK_VNMI => {
                let target = ctx.regs.gpr[gpr::RBX];
                ctx.skip_instruction(exit);
                let state = ctx.read(F::GuestInterruptibilityState);
                test_assert_eq!(
                    state & BLOCKING_BY_NMI,
                    0u64,
                    "virtual-NMI blocking at a VMCALL exit"
                );
                ctx.write(F::GuestInterruptibilityState, state | BLOCKING_BY_NMI);
                Self::set_nmi_window(ctx, true);
                self.window = Some(Window {
                    rip: target,
                    nmi_count: NMI_COUNT[c].load(Ordering::Acquire),
                    injected: false,
                    marker: Some(marker_of(ctx.iter)),
                });
            }
            _ => return Handled::NotMine,
        }
        Handled::Yes
    }

    fn after_iteration(&mut self, _ctx: &mut Ctx) {
        if let Some(w) = self.window {
            fail(
                format_args!("NMI-window exit"),
                format_args!("before the iteration ends"),
                format_args!("none (waiting at RIP {:#x})", w.rip),
            );
        }
    }

    fn count(&self) -> u64 {
        self.checks
    }
}
