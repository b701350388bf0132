//! INTERCEPTS (0x8000): I/O bitmaps and unconditional I/O exiting, the
//! exception bitmap with page-fault error-code mask/match, CR0/CR4
//! guest/host masks and read shadows, CR3-target values, and event
//! injection into L2. Each iteration L2 runs all of them; L1 checks every
//! exit's reason and qualification, L2 checks what its handlers received.
//!
//! - I/O (SDM 26.1.3, 28.2.1 Table 28-5): bitmap A holds port 0x1234 and
//!   0x42, bitmap B ports 0x8000 and 0xbeef. `in eax, dx` (0x1234), `out dx,
//!   al` (0x8000), `out dx, ax` at 0x7fff (its second byte is 0x8000), `in
//!   ax, dx` at 0xffff (wraps: always exits), `rep outsb` (0xbeef), `in al,
//!   0x42` exit; `out 0x80, al` executes; with the bitmaps off and
//!   "unconditional I/O exiting" on, it exits.
//! - #PF (SDM 25.6.3): with bit 14 set, a #PF exits iff (PFEC & MASK) ==
//!   MATCH; with it clear, iff not. MASK = MATCH = 2 (write): reads and
//!   writes of an unmapped address are checked both ways; exits are
//!   reflected to L2 by injection with CR2.
//! - CR0.TS and CR4.VMXE owned by L1 (SDM 25.6.6, 26.1.3): L2 reads the
//!   shadow, writes equal to the shadow do not exit, CLTS and writes that
//!   change an owned bit exit (reason 28, exact qualification).
//! - CR3-load exiting with CR3-target values: MOV to CR3 of a target value
//!   does not exit, of another value does.
//! - Injection (SDM 27.6): external interrupt, NMI, #GP and #PF with error
//!   codes (and CR2), INT n, INT3 reflected with its instruction length,
//!   #OF as a software exception; L2's handlers record vector, error code
//!   and return RIP.

use ::core::sync::atomic::{AtomicU64, Ordering};
use lhv::opt::LhvOpt;
use shared::boot::layout;
use shared::percpu::MAX_CPUS;
use shared::trap::vector;
use shared::vmx::controls::PrimaryProcBased;
use shared::vmx::exit::{
    CrAccessQual, CrAccessType, ExitReason, InterruptionInfo, InterruptionType, IoQual,
};
use shared::vmx::{VmcsField as F, VmxCaps};

use super::{Handled, TestOption};
use crate::assert::{fail, test_assert, test_assert_eq};
use crate::events::{self, EXTINT_VECTOR, INT_N_VECTOR, NMI_COUNT, NMI_LAST_RIP, RECORDS, Record};
use crate::exit::{Exit, gpr};
use crate::l2::{self, Args, L2Env, l2_assert_eq};
use crate::test_loop::Ctx;
use crate::vmcs_setup::Controls;

/// L1: next exit with `out 0x80` comes from unconditional I/O exiting.
const IO_UNCONDITIONAL: u64 = l2::call_number(LhvOpt::INTERCEPTS, 1);
/// L1: #PF exiting mode RBX (0: bit 14 clear, 1: set, 2: back to all).
const PF_MODE: u64 = l2::call_number(LhvOpt::INTERCEPTS, 2);
/// L1: inject event RBX (see [`Inject`]).
const INJECT: u64 = l2::call_number(LhvOpt::INTERCEPTS, 3);

/// An address no page table maps (see `lhv::va_layout`).
const UNMAPPED: u64 = lhv::va_layout::UNMAPPED;
/// CR0.TS, owned by L1.
const CR0_TS: u64 = 1 << 3;
/// CR4.VMXE, owned by L1 (shadow 0: L2 sees no VMX).
const CR4_VMXE: u64 = 1 << 13;
/// PFEC bit 1 (write), the mask and match.
const PFEC_W: u64 = 1 << 1;
/// The #GP error code injected.
const GP_ERROR: u64 = 0x1230;
/// The #PF error code and CR2 injected.
const PF_ERROR: u64 = 0x3;
const PF_CR2: u64 = 0xdead_b000;
/// The instruction length given with injected software events.
const SOFT_LEN: u64 = 2;
/// I/O exits per iteration.
const IO_EXITS_PER_ITER: u64 = 7;

/// The events L2 asks L1 to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
enum Inject {
    External = 0,
    Nmi = 1,
    Gp = 2,
    Pf = 3,
    IntN = 4,
    Of = 5,
}

impl Inject {
    const ALL: [Inject; 6] = [
        Inject::External,
        Inject::Nmi,
        Inject::Gp,
        Inject::Pf,
        Inject::IntN,
        Inject::Of,
    ];

    /// Interruption information, error code, instruction length.
    fn event(self) -> (InterruptionInfo, Option<u64>, u64) {
        use InterruptionType as T;
        match self {
            Inject::External => (
                InterruptionInfo::new(EXTINT_VECTOR, T::ExternalInterrupt, false),
                None,
                0,
            ),
            Inject::Nmi => (InterruptionInfo::new(vector::NMI, T::Nmi, false), None, 0),
            Inject::Gp => (
                InterruptionInfo::new(vector::GP, T::HardwareException, true),
                Some(GP_ERROR),
                0,
            ),
            Inject::Pf => (
                InterruptionInfo::new(vector::PF, T::HardwareException, true),
                Some(PF_ERROR),
                0,
            ),
            Inject::IntN => (
                InterruptionInfo::new(INT_N_VECTOR, T::SoftwareInterrupt, false),
                None,
                SOFT_LEN,
            ),
            Inject::Of => (
                InterruptionInfo::new(vector::OF, T::SoftwareException, false),
                None,
                SOFT_LEN,
            ),
        }
    }

    fn from_u64(v: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u64 == v)
    }
}

/// I/O bitmaps A and B (SDM 25.6.4): one bit per port.
#[repr(C, align(4096))]
struct IoBitmap([u8; 4096]);

const fn io_bitmap(base: u32, ports: &[u16]) -> IoBitmap {
    let mut b = [0u8; 4096];
    let mut i = 0;
    while i < ports.len() {
        let p = ports[i] as u32;
        if p >= base && p < base + 0x8000 {
            let o = p - base;
            b[(o / 8) as usize] |= 1 << (o % 8);
        }
        i += 1;
    }
    IoBitmap(b)
}

const INTERCEPTED: [u16; 4] = [0x1234, 0x42, 0x8000, 0xbeef];
static IO_BITMAP_A: IoBitmap = io_bitmap(0, &INTERCEPTED);
static IO_BITMAP_B: IoBitmap = io_bitmap(0x8000, &INTERCEPTED);

/// Exits L2 checks, per CPU.
static IO_EXITS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static PF_EXITS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static CR_EXITS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// What L2 must read from CR0 and CR4 (real bits outside the masks,
/// shadow bits inside), and the CR3 value that is not a target.
static EXPECT_CR0: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static EXPECT_CR4: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static OTHER_CR3: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// The bytes `rep outsb` writes.
static OUTS_BYTES: [u8; 3] = *b"LHV";

fn io_part(c: usize) {
    let before = IO_EXITS[c].load(Ordering::Acquire);
    let (eax, ax, al): (u32, u16, u8);
    // SAFETY: every port here but 0x80 is intercepted (L1 emulates it);
    // port 0x80 (POST codes) takes any byte.
    unsafe {
        ::core::arch::asm!("in eax, dx", in("dx") 0x1234u16, out("eax") eax, options(nomem, nostack));
        ::core::arch::asm!("out dx, al", in("dx") 0x8000u16, in("al") 0x11u8, options(nomem, nostack));
        ::core::arch::asm!("out dx, ax", in("dx") 0x7fffu16, in("ax") 0x2222u16, options(nomem, nostack));
        ::core::arch::asm!("in ax, dx", in("dx") 0xffffu16, out("ax") ax, options(nomem, nostack));
        ::core::arch::asm!("out 0x80, al", in("al") 0u8, options(nomem, nostack));
        ::core::arch::asm!("in al, 0x42", out("al") al, options(nomem, nostack));
    }
    l2_assert_eq!(eax, 0xc0de_1234u32, "IN EAX from port 0x1234 (L1's answer)");
    l2_assert_eq!(ax, 0x3333u16, "IN AX from port 0xffff (L1's answer)");
    l2_assert_eq!(al, 0x5au8, "IN AL from port 0x42 (L1's answer)");
    let (rsi, rcx): (u64, u64);
    // SAFETY: L1 emulates the intercepted REP OUTSB (reads 3 bytes).
    unsafe {
        ::core::arch::asm!(
            "rep outsb",
            in("dx") 0xbeefu16,
            inout("rsi") OUTS_BYTES.as_ptr() as u64 => rsi,
            inout("rcx") 3u64 => rcx,
            options(nostack, readonly),
        );
    }
    l2_assert_eq!(rcx, 0u64, "RCX after the emulated REP OUTSB");
    l2_assert_eq!(
        rsi,
        OUTS_BYTES.as_ptr() as u64 + 3,
        "RSI after the emulated REP OUTSB"
    );
    l2::vmcall(IO_UNCONDITIONAL, Args::default());
    // SAFETY: exits (unconditional I/O exiting); would write a POST code.
    unsafe { ::core::arch::asm!("out 0x80, al", in("al") 0u8, options(nomem, nostack)) };
    l2_assert_eq!(
        IO_EXITS[c].load(Ordering::Acquire) - before,
        IO_EXITS_PER_ITER,
        "I/O exits of one iteration"
    );
}

/// Touches [`UNMAPPED`] (`write` or read) with the recorder armed; returns
/// the RIP of the faulting instruction.
fn fault(c: usize, write: bool) -> u64 {
    let r = &RECORDS[c];
    r.armed.store(true, Ordering::Release);
    let rip: u64;
    // SAFETY: the access faults (#PF, not present); the recorder (or L1's
    // reflection) resumes at label 2. The recover address is stored first.
    unsafe {
        if write {
            ::core::arch::asm!(
                "lea {t}, [rip + 2f]",
                "mov [{rec}], {t}",
                "lea {rip}, [rip + 3f]",
                "3: mov qword ptr [{a}], 0",
                "2:",
                t = out(reg) _, rip = out(reg) rip,
                rec = in(reg) r.recover.as_ptr(), a = in(reg) UNMAPPED,
                options(nostack),
            );
        } else {
            ::core::arch::asm!(
                "lea {t}, [rip + 2f]",
                "mov [{rec}], {t}",
                "lea {rip}, [rip + 3f]",
                "3: mov {t}, qword ptr [{a}]",
                "2:",
                t = out(reg) _, rip = out(reg) rip,
                rec = in(reg) r.recover.as_ptr(), a = in(reg) UNMAPPED,
                options(nostack),
            );
        }
    }
    rip
}

/// A field of L2's event recorder.
#[derive(Clone, Copy)]
enum Field {
    Count,
    Vector,
    ErrorCode,
    Rip,
    Cr2,
}

/// Checks fields of L2's event recorder, in order: (field, the value it
/// must hold, the failure message).
fn check_record(r: &Record, checks: &[(Field, u64, &'static str)]) {
    for &(f, want, what) in checks {
        let got = match f {
            Field::Count => &r.count,
            Field::Vector => &r.vector,
            Field::ErrorCode => &r.error_code,
            Field::Rip => &r.rip,
            Field::Cr2 => &r.cr2,
        };
        l2_assert_eq!(got.load(Ordering::Acquire), want, what);
    }
}

fn pf_part(c: usize) {
    let r = &RECORDS[c];
    // Bit 14 set: exits iff PFEC & 2 == 2 (writes). Bit 14 clear: iff not
    // (reads).
    for (mode, exits_on_write) in [(1u64, true), (0, false)] {
        l2::vmcall(
            PF_MODE,
            Args {
                rbx: mode,
                ..Args::default()
            },
        );
        for write in [false, true] {
            let (exits, seen) = (
                PF_EXITS[c].load(Ordering::Acquire),
                r.count.load(Ordering::Acquire),
            );
            let rip = fault(c, write);
            let pfec = if write { PFEC_W } else { 0 };
            l2_assert_eq!(
                PF_EXITS[c].load(Ordering::Acquire) - exits,
                u64::from(write == exits_on_write),
                "#PF exits for one fault (SDM 25.6.3 error-code mask/match)"
            );
            check_record(
                r,
                &[
                    (Field::Count, seen + 1, "#PFs reaching L2"),
                    (
                        Field::Vector,
                        u64::from(vector::PF),
                        "vector in L2's handler",
                    ),
                    (Field::ErrorCode, pfec, "#PF error code in L2"),
                    (Field::Cr2, UNMAPPED, "CR2 in L2's #PF handler"),
                    (Field::Rip, rip, "#PF RIP in L2's handler"),
                ],
            );
        }
    }
    l2::vmcall(
        PF_MODE,
        Args {
            rbx: 2,
            ..Args::default()
        },
    );
}

fn cr_part(c: usize) {
    let before = CR_EXITS[c].load(Ordering::Acquire);
    let cr0 = shared::x86::read_cr0();
    let cr4 = shared::x86::read_cr4();
    l2_assert_eq!(
        cr0,
        EXPECT_CR0[c].load(Ordering::Acquire),
        "CR0 read by L2 (shadowed TS)"
    );
    l2_assert_eq!(
        cr4,
        EXPECT_CR4[c].load(Ordering::Acquire),
        "CR4 read by L2 (shadowed VMXE)"
    );
    let cr3 = shared::x86::read_cr3();
    let other = OTHER_CR3[c].load(Ordering::Acquire);
    // SAFETY: the writes that do not exit keep every bit L2 really
    // controls; the others exit and L1 skips them. CR3 gets its own value.
    unsafe {
        ::core::arch::asm!("mov cr0, rcx", in("rcx") cr0, options(nostack));
        ::core::arch::asm!("mov cr4, rdx", in("rdx") cr4, options(nostack));
        ::core::arch::asm!("mov cr3, rax", in("rax") cr3, options(nostack));
    }
    l2_assert_eq!(
        CR_EXITS[c].load(Ordering::Acquire),
        before,
        "CR exits for writes equal to the shadows and a CR3 target"
    );
    // SAFETY: as above: each of these exits and is skipped by L1.
    unsafe {
        ::core::arch::asm!("clts", options(nostack));
        ::core::arch::asm!("mov cr0, rcx", in("rcx") cr0 & !CR0_TS, options(nostack));
        ::core::arch::asm!("mov cr4, rdx", in("rdx") cr4 | CR4_VMXE, options(nostack));
        ::core::arch::asm!("mov cr3, rax", in("rax") other, options(nostack));
    }
    l2_assert_eq!(
        CR_EXITS[c].load(Ordering::Acquire),
        before + 4,
        "CR-access exits (CLTS, CR0, CR4, CR3)"
    );
    l2_assert_eq!(
        shared::x86::read_cr0(),
        cr0,
        "CR0 read by L2 after the skipped writes"
    );
    l2_assert_eq!(shared::x86::read_cr3(), cr3, "CR3 after the skipped MOV");
}

fn inject_part(c: usize) {
    let r = &RECORDS[c];
    for kind in Inject::ALL {
        let (info, error, len) = kind.event();
        let (seen, nmis) = (
            r.count.load(Ordering::Acquire),
            NMI_COUNT[c].load(Ordering::Acquire),
        );
        if kind != Inject::Nmi {
            r.armed.store(true, Ordering::Release);
        }
        let (after_vmcall, after_filler): (u64, u64);
        // SAFETY: VMCALL exits to L1, which moves RIP past it and injects
        // the event; L2's handler returns to label 2 (faults, interrupts)
        // or label 3 (software events, pushed RIP + 2).
        unsafe {
            ::core::arch::asm!(
                "xchg {k}, rbx",
                "vmcall",
                "2: nop",
                "nop",
                "3:",
                "xchg {k}, rbx",
                "lea {a}, [rip + 2b]",
                "lea {b}, [rip + 3b]",
                k = inout(reg) kind as u64 => _,
                a = out(reg) after_vmcall, b = out(reg) after_filler,
                inout("rax") INJECT => _,
                options(nostack),
            );
        }
        let rip = if len != 0 { after_filler } else { after_vmcall };
        if kind == Inject::Nmi {
            l2_assert_eq!(
                NMI_COUNT[c].load(Ordering::Acquire),
                nmis + 1,
                "injected NMIs taken by L2"
            );
            l2_assert_eq!(
                NMI_LAST_RIP[c].load(Ordering::Acquire),
                rip,
                "return RIP of the injected NMI"
            );
            continue;
        }
        check_record(
            r,
            &[
                (Field::Count, seen + 1, "injected events taken by L2"),
                (
                    Field::Vector,
                    u64::from(info.vector()),
                    "vector of the injected event",
                ),
                (
                    Field::ErrorCode,
                    error.unwrap_or(0),
                    "error code of the injected event",
                ),
                (
                    Field::Rip,
                    rip,
                    "return RIP of the injected event (SDM 27.6.1.1)",
                ),
            ],
        );
        if kind == Inject::Pf {
            l2_assert_eq!(
                r.cr2.load(Ordering::Acquire),
                PF_CR2,
                "CR2 of the injected #PF"
            );
        }
    }
    // INT3 exits (exception bitmap) and L1 reflects it with the exit's
    // instruction length: the handler sees the RIP after INT3.
    let seen = r.count.load(Ordering::Acquire);
    r.armed.store(true, Ordering::Release);
    let after: u64;
    // SAFETY: #BP exits; L1 reflects it; the recorder returns after INT3.
    unsafe {
        ::core::arch::asm!("int3", "2:", "lea {a}, [rip + 2b]", a = out(reg) after, options(nostack));
    }
    check_record(
        r,
        &[
            (Field::Count, seen + 1, "reflected #BP taken by L2"),
            (
                Field::Vector,
                u64::from(vector::BP),
                "vector of the reflected #BP",
            ),
            (Field::Rip, after, "return RIP of the reflected INT3"),
        ],
    );
}

fn l2_action(env: &L2Env) {
    io_part(env.cpu);
    pf_part(env.cpu);
    cr_part(env.cpu);
    inject_part(env.cpu);
}

/// The intercept checks of one CPU.
pub struct Intercepts {
    io_unconditional: bool,
    checks: u64,
}

impl Intercepts {
    /// Fresh state.
    pub const fn new() -> Self {
        Self {
            io_unconditional: false,
            checks: 0,
        }
    }

    fn on_io(&mut self, ctx: &mut Ctx, exit: &Exit) {
        let q = IoQual(exit.qualification);
        let rax = ctx.regs.gpr[gpr::RAX];
        let want = match q.port() {
            0x1234 => {
                ctx.regs.gpr[gpr::RAX] = 0xc0de_1234;
                IoQual::new(0x1234, 4, true, false, false, false)
            }
            0x8000 => {
                test_assert_eq!(rax & 0xff, 0x11u64, "AL of OUT to port 0x8000");
                IoQual::new(0x8000, 1, false, false, false, false)
            }
            0x7fff => {
                test_assert_eq!(rax & 0xffff, 0x2222u64, "AX of OUT to port 0x7fff");
                IoQual::new(0x7fff, 2, false, false, false, false)
            }
            0xffff => {
                ctx.regs.gpr[gpr::RAX] = (rax & !0xffff) | 0x3333;
                IoQual::new(0xffff, 2, true, false, false, false)
            }
            0x42 => {
                ctx.regs.gpr[gpr::RAX] = (rax & !0xff) | 0x5a;
                IoQual::new(0x42, 1, true, false, false, true)
            }
            0xbeef => {
                let (rsi, rcx) = (ctx.regs.gpr[gpr::RSI], ctx.regs.gpr[gpr::RCX]);
                test_assert_eq!(
                    rcx,
                    3u64,
                    "RCX of REP OUTSB at its exit (before any iteration)"
                );
                test_assert_eq!(
                    rsi,
                    OUTS_BYTES.as_ptr() as u64,
                    "RSI of REP OUTSB at its exit"
                );
                test_assert_eq!(
                    ctx.read(F::GuestLinearAddress),
                    rsi,
                    "guest-linear address of OUTSB (SDM 28.2.1)"
                );
                // SAFETY: L2 is LHV's own code; RSI points into LHV's image.
                let bytes = unsafe { ::core::ptr::read_unaligned(rsi as *const [u8; 3]) };
                test_assert!(bytes == OUTS_BYTES, "bytes of REP OUTSB", OUTS_BYTES, bytes);
                ctx.regs.gpr[gpr::RSI] = rsi + 3;
                ctx.regs.gpr[gpr::RCX] = 0;
                IoQual::new(0xbeef, 1, false, true, true, false)
            }
            0x80 if self.io_unconditional => {
                self.io_unconditional = false;
                set_io_mode(ctx, false);
                IoQual::new(0x80, 1, false, false, false, true)
            }
            _ => fail(
                format_args!("I/O exit"),
                format_args!("an intercepted port"),
                format_args!("qualification {:#x} at RIP {:#x}", q.0, exit.guest_rip),
            ),
        };
        test_assert_eq!(
            q.0,
            want.0,
            "I/O exit qualification (SDM 28.2.1 Table 28-5)"
        );
        IO_EXITS[ctx.cpu].fetch_add(1, Ordering::AcqRel);
        ctx.skip_instruction(exit);
    }

    fn on_cr(&mut self, ctx: &mut Ctx, exit: &Exit) {
        let q = CrAccessQual(exit.qualification);
        let c = ctx.cpu;
        let want = match q.cr() {
            0 if q.access_type() == CrAccessType::Clts => CrAccessQual(0x20),
            0 => {
                test_assert_eq!(
                    ctx.regs.gpr[gpr::RCX],
                    EXPECT_CR0[c].load(Ordering::Acquire) & !CR0_TS,
                    "value of MOV to CR0"
                );
                CrAccessQual::mov(0, CrAccessType::MovToCr, gpr::RCX as u8)
            }
            4 => {
                test_assert_eq!(
                    ctx.regs.gpr[gpr::RDX],
                    EXPECT_CR4[c].load(Ordering::Acquire) | CR4_VMXE,
                    "value of MOV to CR4"
                );
                CrAccessQual::mov(4, CrAccessType::MovToCr, gpr::RDX as u8)
            }
            3 => {
                test_assert_eq!(
                    ctx.regs.gpr[gpr::RAX],
                    OTHER_CR3[c].load(Ordering::Acquire),
                    "value of MOV to CR3 (not a target)"
                );
                CrAccessQual::mov(3, CrAccessType::MovToCr, gpr::RAX as u8)
            }
            _ => q,
        };
        test_assert_eq!(
            q.0,
            want.0,
            "control-register access qualification (SDM 28.2.1 Table 28-3)"
        );
        test_assert_eq!(
            ctx.read(F::GuestCr0) & CR0_TS,
            0u64,
            "real CR0.TS of L2 (owned bit unchanged)"
        );
        test_assert_eq!(
            ctx.read(F::GuestCr4) & CR4_VMXE,
            CR4_VMXE,
            "real CR4.VMXE of L2"
        );
        CR_EXITS[c].fetch_add(1, Ordering::AcqRel);
        ctx.skip_instruction(exit);
    }

    fn on_exception(&mut self, ctx: &mut Ctx, exit: &Exit) -> Handled {
        let info = InterruptionInfo(exit.interruption_info);
        match info.vector() {
            vector::PF => {
                let want =
                    InterruptionInfo::new(vector::PF, InterruptionType::HardwareException, true);
                test_assert_eq!(
                    info.0,
                    want.0,
                    "VM-exit interruption information of a #PF exit"
                );
                let pfec = ctx.read(F::VmExitInterruptionErrorCode);
                test_assert_eq!(
                    exit.qualification,
                    UNMAPPED,
                    "#PF exit qualification (the linear address)"
                );
                let (bitmap, mask, matched) = (
                    ctx.read(F::ExceptionBitmap),
                    ctx.read(F::PageFaultErrorCodeMask),
                    ctx.read(F::PageFaultErrorCodeMatch),
                );
                test_assert_eq!(
                    u64::from((pfec & mask) == matched),
                    (bitmap >> vector::PF) & 1,
                    "#PF exit allowed by bit 14 and error-code mask/match (SDM 25.6.3)"
                );
                // Reflect it: same event, error code, CR2 (the processor
                // does not load CR2 on VM entry; L1 does).
                write_cr2(exit.qualification);
                ctx.write(F::VmEntryInterruptionInfo, info.0.into());
                ctx.write(F::VmEntryExceptionErrorCode, pfec);
                PF_EXITS[ctx.cpu].fetch_add(1, Ordering::AcqRel);
            }
            vector::BP => {
                let want =
                    InterruptionInfo::new(vector::BP, InterruptionType::SoftwareException, false);
                test_assert_eq!(info.0, want.0, "VM-exit interruption information of INT3");
                test_assert_eq!(
                    exit.instruction_len,
                    1u64,
                    "VM-exit instruction length of INT3"
                );
                ctx.write(F::VmEntryInterruptionInfo, info.0.into());
                ctx.write(F::VmEntryInstructionLength, exit.instruction_len);
            }
            _ => return Handled::NotMine,
        }
        self.checks += 1;
        Handled::Yes
    }

    fn on_inject(&mut self, ctx: &mut Ctx, exit: &Exit) {
        let Some(kind) = Inject::from_u64(ctx.regs.gpr[gpr::RBX]) else {
            fail(
                format_args!("INJECT request"),
                format_args!("a known event"),
                format_args!("{:#x}", ctx.regs.gpr[gpr::RBX]),
            );
        };
        ctx.skip_instruction(exit);
        let (info, error, len) = kind.event();
        if kind == Inject::External {
            test_assert_eq!(
                ctx.read(F::GuestRflags) & crate::vmcs_setup::RFLAGS_IF,
                crate::vmcs_setup::RFLAGS_IF,
                "L2's RFLAGS.IF for an injected external interrupt (SDM 27.3.1.5)"
            );
        }
        if kind == Inject::Pf {
            write_cr2(PF_CR2);
        }
        if kind == Inject::Nmi {
            events::note_injected_nmi(ctx.cpu);
        }
        ctx.write(F::VmEntryInterruptionInfo, info.0.into());
        if let Some(e) = error {
            ctx.write(F::VmEntryExceptionErrorCode, e);
        }
        ctx.write(F::VmEntryInstructionLength, len);
    }
}

fn write_cr2(v: u64) {
    // SAFETY: CR2 only records page-fault addresses; L2 reads it next.
    unsafe { ::core::arch::asm!("mov cr2, {}", in(reg) v, options(nomem, nostack)) };
}

/// Unconditional I/O exiting instead of the bitmaps (`true`), or back.
fn set_io_mode(ctx: &mut Ctx, unconditional: bool) {
    let (uncond, bitmaps) = (
        u64::from(PrimaryProcBased::UNCONDITIONAL_IO_EXITING.bits()),
        u64::from(PrimaryProcBased::USE_IO_BITMAPS.bits()),
    );
    let proc = ctx.read(F::PrimaryProcBasedVmExecControls);
    let proc = if unconditional {
        (proc & !bitmaps) | uncond
    } else {
        (proc & !uncond) | bitmaps
    };
    ctx.write(F::PrimaryProcBasedVmExecControls, proc);
}

impl TestOption for Intercepts {
    fn bit(&self) -> LhvOpt {
        LhvOpt::INTERCEPTS
    }

    fn unsupported(&self, caps: &VmxCaps) -> Option<&'static str> {
        let proc = PrimaryProcBased::USE_IO_BITMAPS
            | PrimaryProcBased::UNCONDITIONAL_IO_EXITING
            | PrimaryProcBased::CR3_LOAD_EXITING;
        if !caps.proc.effective().can_set(proc.bits()) {
            Some("the CPU lacks I/O bitmaps, unconditional I/O exiting or CR3-load exiting")
        } else if caps.proc.effective().adjust(0).value & PrimaryProcBased::CR3_STORE_EXITING.bits()
            != 0
        {
            Some("the CPU cannot clear CR3-store exiting")
        } else if caps.misc.cr3_target_count < 2 {
            Some("the CPU has fewer than 2 CR3-target values")
        } else {
            None
        }
    }

    fn request(&self, c: &mut Controls) {
        c.proc |= PrimaryProcBased::USE_IO_BITMAPS | PrimaryProcBased::CR3_LOAD_EXITING;
    }

    fn setup(&mut self, ctx: &mut Ctx) {
        events::install_nmi();
        events::install_recorder();
        let c = ctx.cpu;
        ctx.write(F::IoBitmapAAddress, layout::phys_of(&IO_BITMAP_A));
        ctx.write(F::IoBitmapBAddress, layout::phys_of(&IO_BITMAP_B));
        let (cr0, cr4, cr3) = (
            ctx.read(F::GuestCr0),
            ctx.read(F::GuestCr4),
            ctx.read(F::GuestCr3),
        );
        ctx.write(F::Cr0GuestHostMask, CR0_TS);
        ctx.write(F::Cr0ReadShadow, cr0 | CR0_TS);
        ctx.write(F::Cr4GuestHostMask, CR4_VMXE);
        ctx.write(F::Cr4ReadShadow, cr4 & !CR4_VMXE);
        EXPECT_CR0[c].store(cr0 | CR0_TS, Ordering::Release);
        EXPECT_CR4[c].store(cr4 & !CR4_VMXE, Ordering::Release);
        // Two targets: an unused value and L2's CR3; PWT flipped is not one.
        ctx.write(F::Cr3TargetCount, 2);
        ctx.write(F::Cr3TargetValue0, cr3 ^ (1 << 4));
        ctx.write(F::Cr3TargetValue1, cr3);
        OTHER_CR3[c].store(cr3 ^ (1 << 3), Ordering::Release);
    }

    fn l2_action(&self) -> Option<l2::L2Action> {
        Some(l2_action)
    }

    fn on_exit(&mut self, ctx: &mut Ctx, exit: &Exit) -> Handled {
        match exit.reason {
            ExitReason::IoInstruction => self.on_io(ctx, exit),
            ExitReason::ControlRegisterAccess => self.on_cr(ctx, exit),
            ExitReason::ExceptionOrNmi => return self.on_exception(ctx, exit),
            ExitReason::Vmcall if ctx.regs.gpr[gpr::RAX] == IO_UNCONDITIONAL => {
                self.io_unconditional = true;
                set_io_mode(ctx, true);
                ctx.skip_instruction(exit);
            }
            ExitReason::Vmcall if ctx.regs.gpr[gpr::RAX] == PF_MODE => {
                let (bitmap, mask) = match ctx.regs.gpr[gpr::RBX] {
                    0 => (!(1u32 << vector::PF), PFEC_W),
                    1 => (u32::MAX, PFEC_W),
                    _ => (u32::MAX, 0),
                };
                ctx.write(F::ExceptionBitmap, bitmap.into());
                ctx.write(F::PageFaultErrorCodeMask, mask);
                ctx.write(F::PageFaultErrorCodeMatch, mask);
                ctx.skip_instruction(exit);
            }
            ExitReason::Vmcall if ctx.regs.gpr[gpr::RAX] == INJECT => self.on_inject(ctx, exit),
            _ => return Handled::NotMine,
        }
        self.checks += 1;
        Handled::Yes
    }

    fn count(&self) -> u64 {
        self.checks
    }
}
