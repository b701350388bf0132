//! UNRESTRICTED_GUEST (0x20, needs EPT): each iteration L2, with interrupts
//! disabled, leaves 64-bit mode for 32-bit protected mode with paging off,
//! then real mode, runs a real-mode routine, and comes back to 64-bit mode
//! (the code is in `unrestricted_guest.S`, copied to a low page). L2 checks
//! the routine's result; L1 checks the guest state saved at a VMCALL from
//! each mode: CR0.PE/PG, IA32_EFER.LME/LMA (saved by "save IA32_EFER", SDM
//! 28.3.1), CS, RIP, and the "IA-32e mode guest" VM-entry control, into
//! which every VM exit stores IA32_EFER.LMA (SDM 28.3; seen on Bochs too),
//! so that L1 can resume an L2 that changed mode without rewriting it.
//! With "unrestricted guest", CR0.PE and CR0.PG may be 0 in VMX non-root
//! operation (SDM 24.8, 27.3.1.1).

use lhv::low_mem::{self, CODE, CR0_PE, CR0_PG, EFER_LMA, EFER_LME, gdt};
use lhv::opt::LhvOpt;
use lhv::real_mode_calc::{self, TABLE};
use shared::vmx::controls::{EntryControls, SecondaryProcBased};
use shared::vmx::exit::ExitReason;
use shared::vmx::{VmcsField as F, VmxCaps};
use shared::x86;

use super::{Handled, TestOption};
use crate::assert::{test_assert, test_assert_eq};
use crate::exit::{Exit, gpr};
use crate::l2::{self, Args, L2Env, l2_assert_eq};
use crate::low_code;
use crate::test_loop::Ctx;
use crate::vmcs_setup::Controls;

::core::arch::global_asm!(
    include_str!("../mode_switch.S"),
    include_str!("unrestricted_guest.S"),
    low = const CODE,
    gdt_data = const gdt::DATA,
    gdt_code32 = const gdt::CODE32,
    low_seg = const CODE >> 4,
    area = const low_mem::AREA,
    call_pm32 = const CALL_PM32,
    call_real = const CALL_REAL,
    call_e820 = const CALL_E820,
    e820_stack = const E820_STACK,
    options(att_syntax)
);

unsafe extern "C" {
    static lhv_ug_start: u8;
    static lhv_ug_end: u8;
    static lhv_ug_enter64: u8;
    static lhv_ug_vmcall_pm32: u8;
    static lhv_ug_vmcall_real: u8;
    static lhv_ug_table: [u16; 8];
}

/// VMCALL from 32-bit protected mode with paging off (RBX = input).
const CALL_PM32: u64 = l2::call_number(LhvOpt::UNRESTRICTED_GUEST, 1);
/// VMCALL from real mode (RBX = input).
const CALL_REAL: u64 = l2::call_number(LhvOpt::UNRESTRICTED_GUEST, 2);
/// VMCALL from 64-bit mode after the round trip (RBX = input).
const CALL_BACK: u64 = l2::call_number(LhvOpt::UNRESTRICTED_GUEST, 3);
/// VMCALL from real mode after INT 15h E820 (RBX = the checks that held).
const CALL_E820: u64 = l2::call_number(LhvOpt::UNRESTRICTED_GUEST, 4);
/// What L2 checks of the first E820 entry the firmware gives it in real
/// mode: CF clear, EAX = 'SMAP', ECX >= 20, base 0, type 1 (usable).
const E820_ALL_CHECKS: u64 = 0x1f;
/// The top of the BSP's real-mode stack for the INT 15h call: free
/// conventional memory below LHV's low range (`low_mem::RANGE`).
const E820_STACK: u64 = low_mem::STACKS - 0x100;

/// Access-rights bits L (13) and D/B (14) (SDM 25.4.1, Table 25-2).
const AR_L: u64 = 1 << 13;
const AR_DB: u64 = 1 << 14;
/// Real-mode CS: the code page's paragraph.
const REAL_CS: u64 = CODE >> 4;

fn input(cpu: usize, iter: u64) -> u32 {
    (0x5547_1234 ^ ((cpu as u64) << 24) ^ iter.wrapping_mul(0x9e37_79b1)) as u32
}

fn blob() -> (*const u8, *const u8) {
    (&raw const lhv_ug_start, &raw const lhv_ug_end)
}

fn low(sym: *const u8) -> u64 {
    low_code::low_address(blob().0, sym)
}

fn l2_action(env: &L2Env) {
    let x = input(env.cpu, env.iter);
    let area = low_mem::area(env.cpu).unwrap_or(0);
    let entry = low(&raw const lhv_ug_enter64);
    let r: u64;
    // SAFETY: the blob is installed at `entry`'s page (identity-mapped,
    // EPT-identity) by `setup`; it preserves the callee-saved registers,
    // RSP, RFLAGS, the GDTR and the segment registers, and returns to the
    // caller in 64-bit mode. `area` is this CPU's own low area.
    unsafe {
        ::core::arch::asm!(
            "call {f}",
            f = in(reg) entry,
            in("rdi") area,
            in("rsi") u64::from(x),
            in("rdx") u64::from(env.cpu == 0),
            lateout("rax") r,
            clobber_abi("C"),
        );
    }
    l2_assert_eq!(
        r as u32,
        real_mode_calc::expected(x),
        "result of the real-mode routine"
    );
    l2::vmcall(
        CALL_BACK,
        Args {
            rbx: u64::from(x),
            ..Args::default()
        },
    );
}

/// Where L2 is in its round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// 64-bit mode, before the trip.
    Start,
    /// Protected mode with paging off seen.
    Pm32,
    /// Real mode seen.
    Real,
    /// The firmware's E820 answer seen (BSP only, still in real mode).
    E820,
    /// Back in 64-bit mode.
    Done,
}

/// The UNRESTRICTED_GUEST checks of one CPU.
pub struct UnrestrictedGuest {
    phase: Phase,
    trips: u64,
    l1_cr3: u64,
    /// L2's GDTR base at entry (L1's, or L2's own with NESTED_USER_MODE),
    /// which L2's mode round trip must restore.
    entry_gdt: u64,
}

impl UnrestrictedGuest {
    /// Fresh state.
    pub const fn new() -> Self {
        Self {
            phase: Phase::Start,
            trips: 0,
            l1_cr3: 0,
            entry_gdt: 0,
        }
    }

    /// CR0.PE/PG, EFER.LME/LMA and the "IA-32e mode guest" entry control
    /// at an exit from L2 in the given mode.
    fn check_mode(ctx: &Ctx, mode: &str, pe: bool, pg: bool) {
        let cr0 = ctx.read(F::GuestCr0);
        test_assert_eq!(
            (cr0 & CR0_PE != 0, cr0 & CR0_PG != 0),
            (pe, pg),
            format_args!("guest CR0 (PE, PG) at the VMCALL from {mode}")
        );
        let efer = ctx.read(F::GuestIa32Efer);
        let lma = pe && pg;
        test_assert_eq!(
            (efer & EFER_LME != 0, efer & EFER_LMA != 0),
            (true, lma),
            format_args!("guest IA32_EFER (LME, LMA) at the VMCALL from {mode} (SDM 28.3.1)")
        );
        // SDM 28.2: "... the 'IA-32e mode guest' VM-entry control is
        // updated to IA32_EFER.LMA" on every VM exit (28.3.1 for EFER; an
        // L1 may resume without rewriting the control).
        let ia32e =
            ctx.read(F::VmEntryControls) & u64::from(EntryControls::IA32E_MODE_GUEST.bits());
        test_assert_eq!(
            ia32e != 0,
            lma,
            format_args!("VM-entry control 'IA-32e mode guest' after the exit from {mode}")
        );
    }

    fn check_input(ctx: &Ctx, mode: &str) {
        let want = input(ctx.cpu, ctx.iter);
        test_assert_eq!(
            ctx.regs.gpr[gpr::RBX] as u32,
            want,
            format_args!("EBX (input) at the VMCALL from {mode}")
        );
    }

    fn advance(&mut self, from: Phase, to: Phase) {
        test_assert_eq!(
            self.phase,
            from,
            "UNRESTRICTED_GUEST: order of L2's VMCALLs"
        );
        self.phase = to;
    }
}

impl TestOption for UnrestrictedGuest {
    fn bit(&self) -> LhvOpt {
        LhvOpt::UNRESTRICTED_GUEST
    }

    fn unsupported(&self, caps: &VmxCaps) -> Option<&'static str> {
        if !caps.has_unrestricted_guest() {
            Some("the CPU lacks unrestricted guest")
        } else if !low_code::usable() {
            Some("the low pages it needs are not usable RAM")
        } else {
            None
        }
    }

    fn request(&self, c: &mut Controls) {
        c.proc2 |= SecondaryProcBased::UNRESTRICTED_GUEST;
    }

    fn setup(&mut self, ctx: &mut Ctx) {
        test_assert!(
            low_mem::area(ctx.cpu).is_some(),
            "a low stack area for this CPU",
            format_args!("CPU index below {}", low_mem::AREAS),
            ctx.cpu
        );
        // SAFETY: a static of the blob (read-only data of the image).
        let table = unsafe { lhv_ug_table };
        test_assert_eq!(
            table,
            TABLE,
            "real-mode table in the assembly vs real_mode_calc::TABLE"
        );
        let (start, end) = blob();
        low_code::install(start, end);
        self.l1_cr3 = x86::read_cr3();
    }

    fn before_entry(&mut self, ctx: &mut Ctx) {
        self.phase = Phase::Start;
        self.entry_gdt = ctx.read(F::GuestGdtrBase);
    }

    fn l2_action(&self) -> Option<l2::L2Action> {
        Some(l2_action)
    }

    fn on_exit(&mut self, ctx: &mut Ctx, exit: &Exit) -> Handled {
        if exit.reason != ExitReason::Vmcall {
            return Handled::NotMine;
        }
        // Outside 64-bit mode only the low 32 bits of RAX are defined.
        let call = ctx.regs.gpr[gpr::RAX];
        if call as u32 == CALL_PM32 as u32 {
            self.advance(Phase::Start, Phase::Pm32);
            Self::check_mode(ctx, "protected mode", true, false);
            Self::check_input(ctx, "protected mode");
            test_assert_eq!(
                exit.guest_rip,
                low(&raw const lhv_ug_vmcall_pm32),
                "guest RIP of the VMCALL from protected mode"
            );
            let cs = ctx.read(F::GuestCsSelector);
            let ar = ctx.read(F::GuestCsAccessRights);
            test_assert_eq!(
                (cs, ar & (AR_L | AR_DB)),
                (gdt::CODE32, AR_DB),
                "guest CS selector and L/D bits in protected mode"
            );
            test_assert_eq!(
                ctx.read(F::GuestCr3),
                self.l1_cr3,
                "guest CR3 with paging off"
            );
        } else if call as u32 == CALL_REAL as u32 {
            self.advance(Phase::Pm32, Phase::Real);
            Self::check_mode(ctx, "real mode", false, false);
            Self::check_input(ctx, "real mode");
            let want_ip = low(&raw const lhv_ug_vmcall_real) - CODE;
            test_assert_eq!(
                exit.guest_rip,
                want_ip,
                "guest RIP (IP) of the VMCALL from real mode"
            );
            test_assert_eq!(
                (ctx.read(F::GuestCsSelector), ctx.read(F::GuestCsBase)),
                (REAL_CS, REAL_CS << 4),
                "guest CS selector and base in real mode"
            );
            test_assert_eq!(
                (ctx.read(F::GuestSsSelector), ctx.read(F::GuestSsBase)),
                (0, 0),
                "guest SS selector and base in real mode"
            );
        } else if call as u32 == CALL_E820 as u32 {
            // Still in real mode, after INT 15h: the firmware's answer (or,
            // under L0, that of L0's INT 15h stub, which L2 runs as L1's
            // firmware: its VMCALL is L0's, not L1's).
            self.advance(Phase::Real, Phase::E820);
            test_assert_eq!(
                ctx.regs.gpr[gpr::RBX] & E820_ALL_CHECKS,
                E820_ALL_CHECKS,
                "INT 15h E820 from L2 in real mode: CF clear, 'SMAP', 20 bytes, base 0, usable (bit per check)"
            );
        } else if call == CALL_BACK {
            // The BSP asked the firmware on the way (see `l2_action`).
            let before = if ctx.cpu == 0 {
                Phase::E820
            } else {
                Phase::Real
            };
            self.advance(before, Phase::Done);
            Self::check_mode(ctx, "64-bit mode", true, true);
            Self::check_input(ctx, "64-bit mode");
            let ar = ctx.read(F::GuestCsAccessRights);
            test_assert_eq!(
                (ctx.read(F::GuestCsSelector), ar & (AR_L | AR_DB)),
                (gdt::CODE64, AR_L),
                "guest CS selector and L/D bits back in 64-bit mode"
            );
            test_assert_eq!(
                ctx.read(F::GuestGdtrBase),
                self.entry_gdt,
                "guest GDTR base restored"
            );
            self.trips += 1;
        } else {
            return Handled::NotMine;
        }
        test_assert_eq!(exit.instruction_len, 3u64, "VMCALL instruction length");
        ctx.skip_instruction(exit);
        Handled::Yes
    }

    fn after_iteration(&mut self, _ctx: &mut Ctx) {
        test_assert_eq!(
            self.phase,
            Phase::Done,
            "UNRESTRICTED_GUEST round trip completed"
        );
    }

    fn count(&self) -> u64 {
        self.trips
    }
}
