use super::*;
use crate::mem::SparseMemory;
use crate::vmx::MemVmcs;
use proptest::prelude::*;

type P = PrimaryProcBased;
type S = SecondaryProcBased;

const IO_A: u64 = 0x10_0000;
const IO_B: u64 = 0x10_1000;
const MSR_BITMAP: u64 = 0x10_2000;
const VMREAD_BITMAP: u64 = 0x10_3000;
const VMWRITE_BITMAP: u64 = 0x10_4000;
/// A page-aligned address nothing is mapped at.
const UNMAPPED: u64 = 0x7f00_0000;

/// A VMCS12 with the given controls (secondary ones activated when any is
/// given) and the bitmap addresses above.
fn vmcs12(pin: PinBased, primary: P, secondary: S) -> MemVmcs {
    let mut v = MemVmcs::new();
    let primary = if secondary.is_empty() {
        primary
    } else {
        primary | P::ACTIVATE_SECONDARY_CONTROLS
    };
    v.write(F::PinBasedVmExecControls, pin.bits().into());
    v.write(F::PrimaryProcBasedVmExecControls, primary.bits().into());
    v.write(F::SecondaryProcBasedVmExecControls, secondary.bits().into());
    v.write(F::IoBitmapAAddress, IO_A);
    v.write(F::IoBitmapBAddress, IO_B);
    v.write(F::MsrBitmapAddress, MSR_BITMAP);
    v.write(F::VmreadBitmapAddress, VMREAD_BITMAP);
    v.write(F::VmwriteBitmapAddress, VMWRITE_BITMAP);
    v
}

fn primary(p: P) -> MemVmcs {
    vmcs12(PinBased::empty(), p, S::empty())
}

/// Memory with every bitmap page mapped (and zero).
fn memory() -> SparseMemory {
    let mut m = SparseMemory::new();
    for page in [IO_A, IO_B, MSR_BITMAP, VMREAD_BITMAP, VMWRITE_BITMAP] {
        m.map(page, 4096);
    }
    m
}

fn set_bit(m: &mut SparseMemory, base: u64, bit: u64) {
    let addr = base + bit / 8;
    let b = m.read_u8(addr).unwrap() | (1 << (bit % 8));
    m.write(addr, &[b]).unwrap();
}

fn exit(reason: ExitReason) -> L2Exit {
    L2Exit::new(reason, 0)
}

fn wants(e: &L2Exit, v: &MemVmcs) -> bool {
    l1_wants_exit(e, v, &memory())
}

#[test]
fn unconditional_exits_reflect_with_no_controls() {
    use ExitReason as R;
    let v = MemVmcs::new();
    for r in [
        R::TripleFault,
        R::InitSignal,
        R::StartupIpi,
        R::TaskSwitch,
        R::Cpuid,
        R::Getsec,
        R::Invd,
        R::Xsetbv,
        R::Vmcall,
        R::Vmclear,
        R::Vmlaunch,
        R::Vmptrld,
        R::Vmptrst,
        R::Vmread,
        R::Vmresume,
        R::Vmwrite,
        R::Vmxoff,
        R::Vmxon,
        R::Invept,
        R::Invvpid,
    ] {
        let d = decide(&exit(r), &v, &memory());
        assert_eq!(d, Decision::reflect(Rule::Unconditional), "{r}");
    }
}

#[test]
fn entry_failures_reflect() {
    let v = MemVmcs::new();
    for raw in [0x8000_0021, 0x8000_0022, 0x8000_0029, 0x8000_000c] {
        let e = L2Exit {
            reason: ExitReasonField(raw),
            ..exit(ExitReason::Hlt)
        };
        assert_eq!(
            decide(&e, &v, &memory()),
            Decision::reflect(Rule::EntryFailure)
        );
    }
    // Without bit 31, HLT is an ordinary, conditional exit.
    assert!(!wants(&exit(ExitReason::Hlt), &v));
}

/// Which controls make an exit reason reflect.
#[derive(Clone, Copy, Debug)]
enum Ctl {
    Pin(PinBased),
    Primary(P),
    Secondary(S),
}

impl Ctl {
    fn vmcs12(self) -> MemVmcs {
        match self {
            Ctl::Pin(p) => vmcs12(p, P::empty(), S::empty()),
            Ctl::Primary(p) => primary(p),
            Ctl::Secondary(s) => vmcs12(PinBased::empty(), P::empty(), s),
        }
    }
}

#[test]
fn single_control_exits_follow_their_control() {
    use ExitReason as R;
    let table = [
        (
            R::ExternalInterrupt,
            Ctl::Pin(PinBased::EXTERNAL_INTERRUPT_EXITING),
        ),
        (
            R::PreemptionTimerExpired,
            Ctl::Pin(PinBased::ACTIVATE_PREEMPTION_TIMER),
        ),
        (
            R::InterruptWindow,
            Ctl::Primary(P::INTERRUPT_WINDOW_EXITING),
        ),
        (R::NmiWindow, Ctl::Primary(P::NMI_WINDOW_EXITING)),
        (R::Hlt, Ctl::Primary(P::HLT_EXITING)),
        (R::Invlpg, Ctl::Primary(P::INVLPG_EXITING)),
        (R::Rdpmc, Ctl::Primary(P::RDPMC_EXITING)),
        (R::Rdtsc, Ctl::Primary(P::RDTSC_EXITING)),
        (R::MovDr, Ctl::Primary(P::MOV_DR_EXITING)),
        (R::Mwait, Ctl::Primary(P::MWAIT_EXITING)),
        (R::MonitorTrapFlag, Ctl::Primary(P::MONITOR_TRAP_FLAG)),
        (R::Monitor, Ctl::Primary(P::MONITOR_EXITING)),
        (R::Pause, Ctl::Primary(P::PAUSE_EXITING)),
        (R::Pause, Ctl::Secondary(S::PAUSE_LOOP_EXITING)),
        (R::TprBelowThreshold, Ctl::Primary(P::USE_TPR_SHADOW)),
        (R::ApicAccess, Ctl::Secondary(S::VIRTUALIZE_APIC_ACCESSES)),
        (
            R::ApicWrite,
            Ctl::Secondary(S::APIC_REGISTER_VIRTUALIZATION),
        ),
        (R::ApicWrite, Ctl::Secondary(S::VIRTUAL_INTERRUPT_DELIVERY)),
        (
            R::GdtrIdtrAccess,
            Ctl::Secondary(S::DESCRIPTOR_TABLE_EXITING),
        ),
        (R::LdtrTrAccess, Ctl::Secondary(S::DESCRIPTOR_TABLE_EXITING)),
        (R::Wbinvd, Ctl::Secondary(S::WBINVD_EXITING)),
        (R::Rdrand, Ctl::Secondary(S::RDRAND_EXITING)),
        (R::Rdseed, Ctl::Secondary(S::RDSEED_EXITING)),
        (R::Vmfunc, Ctl::Secondary(S::ENABLE_VM_FUNCTIONS)),
        (
            R::EnqcmdPasidTranslationFailure,
            Ctl::Secondary(S::PASID_TRANSLATION),
        ),
        (
            R::EnqcmdsPasidTranslationFailure,
            Ctl::Secondary(S::PASID_TRANSLATION),
        ),
        (R::BusLock, Ctl::Secondary(S::VMM_BUS_LOCK_DETECTION)),
        (
            R::InstructionTimeout,
            Ctl::Secondary(S::INSTRUCTION_TIMEOUT),
        ),
    ];
    for (reason, ctl) in table {
        let e = exit(reason);
        assert!(!wants(&e, &MemVmcs::new()), "{reason} without {ctl:?}");
        assert!(wants(&e, &ctl.vmcs12()), "{reason} with {ctl:?}");
        // Every other control set, the ones for this reason clear: still
        // no exit.
        let (mut pin, mut pri, mut sec) = (PinBased::all(), P::all(), S::all());
        for (_, c) in table.iter().filter(|(r, _)| *r == reason) {
            match *c {
                Ctl::Pin(p) => pin -= p,
                Ctl::Primary(p) => pri -= p,
                Ctl::Secondary(s) => sec -= s,
            }
        }
        assert!(
            !wants(&e, &vmcs12(pin, pri, sec)),
            "{reason} with all but {ctl:?}"
        );
    }
}

#[test]
fn secondary_controls_count_only_when_activated() {
    let mut v = vmcs12(PinBased::empty(), P::empty(), S::WBINVD_EXITING);
    assert!(wants(&exit(ExitReason::Wbinvd), &v));
    v.write(F::PrimaryProcBasedVmExecControls, 0);
    assert!(!wants(&exit(ExitReason::Wbinvd), &v));
    assert_eq!(
        v.read32(F::SecondaryProcBasedVmExecControls),
        S::WBINVD_EXITING.bits()
    );
}

#[test]
fn two_control_exits_need_both() {
    use ExitReason as R;
    for (reason, p, s) in [
        (R::Rdtscp, P::RDTSC_EXITING, S::ENABLE_RDTSCP),
        (R::Invpcid, P::INVLPG_EXITING, S::ENABLE_INVPCID),
        (R::Umwait, P::RDTSC_EXITING, S::ENABLE_USER_WAIT_AND_PAUSE),
        (R::Tpause, P::RDTSC_EXITING, S::ENABLE_USER_WAIT_AND_PAUSE),
    ] {
        let e = exit(reason);
        assert!(wants(&e, &vmcs12(PinBased::empty(), p, s)), "{reason}");
        assert!(!wants(&e, &primary(p)), "{reason} without {s:?}");
        assert!(
            !wants(&e, &vmcs12(PinBased::empty(), P::empty(), s)),
            "{reason} without {p:?}"
        );
    }
}

#[test]
fn ept_exits_are_never_reflected_yet() {
    use ExitReason as R;
    let v = vmcs12(PinBased::all(), P::all(), S::all());
    for r in [
        R::EptViolation,
        R::EptMisconfiguration,
        R::PmlFull,
        R::SppRelatedEvent,
    ] {
        assert_eq!(
            decide(&exit(r), &v, &memory()),
            Decision::new(false, Rule::NeedsNestedEpt)
        );
    }
}

#[test]
fn unknown_reasons_reflect() {
    let v = MemVmcs::new();
    for n in [35, 38, 42, 71, 80, 0xffff] {
        let e = L2Exit {
            reason: ExitReasonField(n),
            ..exit(ExitReason::Hlt)
        };
        assert_eq!(
            decide(&e, &v, &memory()),
            Decision::reflect(Rule::Unknown),
            "{n}"
        );
    }
    assert!(wants(&exit(ExitReason::Rsm), &v));
}

// --- Exceptions and NMIs --------------------------------------------------

fn event(kind: InterruptionType, vector: u8, error_code: Option<u32>) -> L2Exit {
    L2Exit {
        intr_info: InterruptionInfo::new(vector, kind, error_code.is_some()),
        intr_error_code: error_code.unwrap_or(0),
        ..exit(ExitReason::ExceptionOrNmi)
    }
}

fn with_exception_bitmap(bits: u32) -> MemVmcs {
    let mut v = MemVmcs::new();
    v.write(F::ExceptionBitmap, bits.into());
    v
}

#[test]
fn nmi_follows_nmi_exiting() {
    let nmi = event(InterruptionType::Nmi, 2, None);
    assert!(!wants(&nmi, &with_exception_bitmap(1 << 2)));
    assert!(wants(
        &nmi,
        &vmcs12(PinBased::NMI_EXITING, P::empty(), S::empty())
    ));
    assert!(!wants(
        &nmi,
        &vmcs12(PinBased::VIRTUAL_NMIS, P::empty(), S::empty())
    ));
}

#[test]
fn exceptions_follow_the_exception_bitmap() {
    use InterruptionType as T;
    let ud = event(T::HardwareException, 6, None);
    assert!(wants(&ud, &with_exception_bitmap(1 << 6)));
    assert!(!wants(&ud, &with_exception_bitmap(!(1 << 6))));
    let gp = event(T::HardwareException, 13, Some(0));
    assert!(wants(&gp, &with_exception_bitmap(1 << 13)));
    assert!(!wants(&gp, &with_exception_bitmap(1 << 12)));
    // INT3 / INTO are software exceptions, INT1 a privileged one.
    let bp = event(T::SoftwareException, 3, None);
    assert!(wants(&bp, &with_exception_bitmap(1 << 3)));
    assert!(!wants(&bp, &with_exception_bitmap(0)));
    let db = event(T::PrivilegedSoftwareException, 1, None);
    assert!(wants(&db, &with_exception_bitmap(1 << 1)));
    assert!(!wants(&db, &with_exception_bitmap(1 << 3)));
    assert!(wants(
        &event(T::HardwareException, 31, None),
        &with_exception_bitmap(1 << 31)
    ));
}

#[test]
fn malformed_event_information_reflects() {
    use InterruptionType as T;
    let v = MemVmcs::new();
    let invalid = L2Exit {
        intr_info: InterruptionInfo(6),
        ..exit(ExitReason::ExceptionOrNmi)
    };
    for e in [
        invalid,
        event(T::HardwareException, 32, None),
        event(T::ExternalInterrupt, 0x30, None),
        event(T::SoftwareInterrupt, 0x80, None),
        L2Exit {
            intr_info: InterruptionInfo(InterruptionInfo::VALID | 0x100),
            ..exit(ExitReason::ExceptionOrNmi)
        },
    ] {
        assert_eq!(decide(&e, &v, &memory()), Decision::reflect(Rule::Unknown));
    }
}

#[test]
fn page_faults_use_error_code_mask_and_match() {
    let pf = |ec| {
        event(
            InterruptionType::HardwareException,
            PAGE_FAULT_VECTOR,
            Some(ec),
        )
    };
    let setup = |bit14: bool, mask: u32, matched: u32| {
        let mut v = with_exception_bitmap(if bit14 { 1 << 14 } else { 0 });
        v.write(F::PageFaultErrorCodeMask, mask.into());
        v.write(F::PageFaultErrorCodeMatch, matched.into());
        v
    };
    // Mask 0, match 0: every error code matches; bit 14 decides.
    assert!(wants(&pf(0x2), &setup(true, 0, 0)));
    assert!(!wants(&pf(0x2), &setup(false, 0, 0)));
    // Only write faults (bit 1) to L1: mask 2, match 2, bit 14 set.
    assert!(wants(&pf(0x3), &setup(true, 0x2, 0x2)));
    assert!(!wants(&pf(0x1), &setup(true, 0x2, 0x2)));
    // Bit 14 clear inverts: exits on the codes that do not match.
    assert!(wants(&pf(0x1), &setup(false, 0x2, 0x2)));
    assert!(!wants(&pf(0x3), &setup(false, 0x2, 0x2)));
    // A match value outside the mask never matches: bit 14 clear exits all.
    assert!(wants(&pf(0x4), &setup(false, 0x2, 0x4)));
    assert!(!wants(&pf(0x4), &setup(true, 0x2, 0x4)));
}

// --- Control-register accesses --------------------------------------------

fn mov_to_cr(cr: u8, gpr: u8, value: u64) -> L2Exit {
    let mut e = L2Exit::new(
        ExitReason::ControlRegisterAccess,
        CrAccessQual::mov(cr, CrAccessType::MovToCr, gpr).0,
    );
    e.gpr[usize::from(gpr)] = value;
    e
}

fn cr_vmcs(mask: F, mask_value: u64, shadow: F, shadow_value: u64) -> MemVmcs {
    let mut v = MemVmcs::new();
    v.write(mask, mask_value);
    v.write(shadow, shadow_value);
    v
}

#[test]
fn mov_to_cr0_and_cr4_compare_masked_bits_with_the_shadow() {
    for (cr, mask, shadow) in [
        (0, F::Cr0GuestHostMask, F::Cr0ReadShadow),
        (4, F::Cr4GuestHostMask, F::Cr4ReadShadow),
    ] {
        // Mask owns bit 5; the shadow has it set.
        let v = cr_vmcs(mask, 1 << 5, shadow, 1 << 5);
        assert!(
            !wants(&mov_to_cr(cr, 3, 1 << 5), &v),
            "CR{cr}: same owned bit"
        );
        assert!(
            !wants(&mov_to_cr(cr, 3, (1 << 5) | 0xff00), &v),
            "CR{cr}: other bits free"
        );
        assert!(wants(&mov_to_cr(cr, 3, 0), &v), "CR{cr}: owned bit differs");
        // The source register named by the qualification is used (R13).
        let mut e = mov_to_cr(cr, 13, 1 << 5);
        e.gpr[3] = 0;
        assert!(!wants(&e, &v));
        e.gpr[13] = 0;
        assert!(wants(&e, &v));
        // No mask: never exits.
        assert!(!wants(&mov_to_cr(cr, 0, u64::MAX), &MemVmcs::new()));
    }
}

#[test]
fn mov_to_cr3_checks_cr3_targets() {
    let mut v = primary(P::CR3_LOAD_EXITING);
    assert!(wants(&mov_to_cr(3, 0, 0x1000), &v), "count 0: always");
    v.write(F::Cr3TargetValue0, 0x1000);
    v.write(F::Cr3TargetValue1, 0x2000);
    v.write(F::Cr3TargetValue3, 0x4000);
    assert!(
        wants(&mov_to_cr(3, 0, 0x1000), &v),
        "count 0 ignores values"
    );
    v.write(F::Cr3TargetCount, 2);
    assert!(!wants(&mov_to_cr(3, 0, 0x1000), &v));
    assert!(!wants(&mov_to_cr(3, 7, 0x2000), &v));
    assert!(wants(&mov_to_cr(3, 0, 0x4000), &v), "beyond the count");
    v.write(F::Cr3TargetCount, 4);
    assert!(!wants(&mov_to_cr(3, 0, 0x4000), &v));
    // A count no VM entry accepts is clamped, not indexed out of bounds.
    v.write(F::Cr3TargetCount, 0xffff_ffff);
    assert!(!wants(&mov_to_cr(3, 0, 0x4000), &v));
    assert!(
        !wants(&mov_to_cr(3, 0, 0x5000), &MemVmcs::new()),
        "no CR3-load exiting"
    );
}

#[test]
fn cr3_and_cr8_reads_and_writes_follow_their_controls() {
    let from = |cr| {
        L2Exit::new(
            ExitReason::ControlRegisterAccess,
            CrAccessQual::mov(cr, CrAccessType::MovFromCr, 1).0,
        )
    };
    assert!(wants(&from(3), &primary(P::CR3_STORE_EXITING)));
    assert!(!wants(&from(3), &primary(P::CR3_LOAD_EXITING)));
    assert!(wants(&from(8), &primary(P::CR8_STORE_EXITING)));
    assert!(!wants(&from(8), &primary(P::CR8_LOAD_EXITING)));
    assert!(wants(&mov_to_cr(8, 1, 0), &primary(P::CR8_LOAD_EXITING)));
    assert!(!wants(&mov_to_cr(8, 1, 0), &primary(P::CR8_STORE_EXITING)));
    // MOV from CR0 never exits on hardware: unknown input, reflected.
    assert_eq!(
        decide(&from(0), &MemVmcs::new(), &memory()).rule,
        Rule::Unknown
    );
}

#[test]
fn clts_exits_when_ts_is_owned_and_shadowed_set() {
    let clts = L2Exit::new(ExitReason::ControlRegisterAccess, 2 << 4);
    let v = |mask, shadow| cr_vmcs(F::Cr0GuestHostMask, mask, F::Cr0ReadShadow, shadow);
    assert!(wants(&clts, &v(CR0_TS, CR0_TS)));
    assert!(!wants(&clts, &v(CR0_TS, 0)));
    assert!(!wants(&clts, &v(!CR0_TS, CR0_TS)));
}

#[test]
fn lmsw_compares_low_bits_and_cannot_clear_pe() {
    let lmsw = |src: u16| {
        L2Exit::new(
            ExitReason::ControlRegisterAccess,
            (3 << 4) | (u64::from(src) << 16),
        )
    };
    let v = |mask, shadow| cr_vmcs(F::Cr0GuestHostMask, mask, F::Cr0ReadShadow, shadow);
    // PE owned, shadow PE clear: setting it exits, leaving it clear not.
    assert!(wants(&lmsw(1), &v(CR0_PE, 0)));
    assert!(!wants(&lmsw(0), &v(CR0_PE, 0)));
    // Shadow PE set: LMSW with PE clear does not clear it, so no exit.
    assert!(!wants(&lmsw(0), &v(CR0_PE, CR0_PE)));
    assert!(!wants(&lmsw(1), &v(CR0_PE, CR0_PE)));
    // MP, EM, TS: any difference in an owned bit exits.
    assert!(wants(&lmsw(0x8), &v(CR0_TS, 0)));
    assert!(wants(&lmsw(0x0), &v(CR0_TS, CR0_TS)));
    assert!(!wants(&lmsw(0x8), &v(CR0_TS, CR0_TS)));
    assert!(!wants(&lmsw(0x2), &v(CR0_TS, 0)), "MP is not owned");
    // Bits above 3 of the source and mask are not LMSW's.
    assert!(!wants(&lmsw(0xfff0), &v(!LMSW_BITS, 0)));
}

// --- I/O ------------------------------------------------------------------

fn io(port: u16, size: u8) -> L2Exit {
    L2Exit::new(
        ExitReason::IoInstruction,
        IoQual::new(port, size, true, false, false, false).0,
    )
}

#[test]
fn io_without_bitmaps_follows_unconditional_io_exiting() {
    assert!(wants(&io(0x60, 1), &primary(P::UNCONDITIONAL_IO_EXITING)));
    assert!(!wants(&io(0x60, 1), &primary(P::empty())));
    // With bitmaps, unconditional I/O exiting is ignored.
    let v = primary(P::UNCONDITIONAL_IO_EXITING | P::USE_IO_BITMAPS);
    assert!(!wants(&io(0x60, 1), &v));
}

#[test]
fn io_bitmaps_a_and_b_cover_every_port_touched() {
    let v = primary(P::USE_IO_BITMAPS);
    let mut m = memory();
    set_bit(&mut m, IO_A, 0x61);
    set_bit(&mut m, IO_B, 0x8cf8 - 0x8000);
    assert!(l1_wants_exit(&io(0x61, 1), &v, &m));
    assert!(!l1_wants_exit(&io(0x60, 1), &v, &m));
    assert!(
        l1_wants_exit(&io(0x60, 2), &v, &m),
        "word access touches 0x61"
    );
    assert!(
        l1_wants_exit(&io(0x5e, 4), &v, &m),
        "dword access touches 0x61"
    );
    assert!(!l1_wants_exit(&io(0x5d, 4), &v, &m));
    assert!(l1_wants_exit(&io(0x8cf8, 1), &v, &m));
    assert!(
        !l1_wants_exit(&io(0x0cf8, 1), &v, &m),
        "A and B are distinct"
    );
    // An access straddling 7FFFH/8000H reads both bitmaps.
    set_bit(&mut m, IO_B, 0);
    assert!(l1_wants_exit(&io(0x7fff, 2), &v, &m));
    assert!(!l1_wants_exit(&io(0x7ffe, 2), &v, &m));
    // Wrapping past FFFFH always exits.
    assert_eq!(
        decide(&io(0xffff, 2), &v, &memory()),
        Decision::reflect(Rule::IoBitmap)
    );
    assert!(!l1_wants_exit(&io(0xffff, 1), &v, &memory()));
}

#[test]
fn unreadable_io_bitmap_reflects_and_names_the_address() {
    let mut v = primary(P::USE_IO_BITMAPS);
    v.write(F::IoBitmapBAddress, UNMAPPED);
    assert!(!l1_wants_exit(&io(0x80, 1), &v, &memory()));
    assert_eq!(
        decide(&io(0x8010, 1), &v, &memory()),
        Decision::reflect(Rule::UnreadableBitmap { addr: UNMAPPED + 2 })
    );
    // An address at the top of the address space does not overflow.
    v.write(F::IoBitmapBAddress, u64::MAX);
    assert!(matches!(
        decide(&io(0xfff0, 1), &v, &memory()).rule,
        Rule::UnreadableBitmap { .. }
    ));
}

// --- MSRs -----------------------------------------------------------------

fn msr_exit(write: bool, msr: u32) -> L2Exit {
    let mut e = exit(if write {
        ExitReason::Wrmsr
    } else {
        ExitReason::Rdmsr
    });
    // Bits 63:32 of RCX are ignored by RDMSR/WRMSR.
    e.gpr[reg::RCX] = 0xdead_0000_0000_0000 | u64::from(msr);
    e
}

#[test]
fn msr_accesses_without_bitmaps_always_exit() {
    let v = primary(P::empty());
    assert!(wants(&msr_exit(false, 0x10), &v));
    assert!(wants(&msr_exit(true, 0xc000_0080), &v));
}

#[test]
fn msr_bitmaps_have_four_quarters() {
    let v = primary(P::USE_MSR_BITMAPS);
    let mut m = memory();
    // Read low: MSR 0x1b. Write low: 0x277. Read high: C0000080H. Write
    // high: C0000082H (SDM 25.6.9 layout).
    set_bit(&mut m, MSR_BITMAP, 0x1b);
    set_bit(&mut m, MSR_BITMAP + 2048, 0x277);
    set_bit(&mut m, MSR_BITMAP + 1024, 0x80);
    set_bit(&mut m, MSR_BITMAP + 3072, 0x82);
    let w = |write, msr| l1_wants_exit(&msr_exit(write, msr), &v, &m);
    assert!(w(false, 0x1b) && !w(true, 0x1b));
    assert!(w(true, 0x277) && !w(false, 0x277));
    assert!(w(false, 0xc000_0080) && !w(true, 0xc000_0080));
    assert!(w(true, 0xc000_0082) && !w(false, 0xc000_0082));
    assert!(
        !w(false, 0x80) && !w(true, 0x82),
        "low and high are distinct"
    );
    // Outside both ranges: always exits.
    for msr in [0x2000, 0x4000_0000, 0xbfff_ffff, 0xc000_2000, u32::MAX] {
        assert_eq!(
            decide(&msr_exit(false, msr), &v, &m),
            Decision::reflect(Rule::MsrBitmap),
            "{msr:#x}"
        );
    }
}

#[test]
fn unreadable_msr_bitmap_reflects() {
    let mut v = primary(P::USE_MSR_BITMAPS);
    v.write(F::MsrBitmapAddress, UNMAPPED);
    assert_eq!(
        decide(&msr_exit(true, 0x10), &v, &memory()),
        Decision::reflect(Rule::UnreadableBitmap {
            addr: UNMAPPED + 2048 + 2
        })
    );
}

// --- Other bitmaps -------------------------------------------------------

#[test]
fn vmread_vmwrite_with_shadowing_use_their_bitmaps() {
    let v = vmcs12(PinBased::empty(), P::empty(), S::VMCS_SHADOWING);
    let mut m = memory();
    set_bit(&mut m, VMREAD_BITMAP, 0x6800);
    set_bit(&mut m, VMWRITE_BITMAP, 0x681e);
    let insn = |reason, encoding: u64| {
        let mut e = exit(reason);
        e.instruction_info = 9 << VMREAD_INFO_REG2_SHIFT;
        e.gpr[9] = encoding;
        e
    };
    let w = |e: &L2Exit| l1_wants_exit(e, &v, &m);
    assert!(w(&insn(ExitReason::Vmread, 0x6800)));
    assert!(!w(&insn(ExitReason::Vmread, 0x681e)));
    assert!(w(&insn(ExitReason::Vmwrite, 0x681e)));
    assert!(!w(&insn(ExitReason::Vmwrite, 0x6800)));
    assert!(
        w(&insn(ExitReason::Vmread, 0x1_0000)),
        "encoding above 14:0"
    );
}

#[test]
fn encls_enclv_pconfig_use_leaf_bitmaps() {
    for (reason, s, field) in [
        (
            ExitReason::Encls,
            S::ENABLE_ENCLS_EXITING,
            F::EnclsExitingBitmap,
        ),
        (
            ExitReason::Enclv,
            S::ENABLE_ENCLV_EXITING,
            F::EnclvExitingBitmap,
        ),
        (
            ExitReason::Pconfig,
            S::ENABLE_PCONFIG,
            F::PconfigExitingBitmap,
        ),
    ] {
        let mut v = vmcs12(PinBased::empty(), P::empty(), s);
        v.write(field, (1 << 5) | (1 << 63));
        let leaf = |eax: u64| {
            let mut e = exit(reason);
            e.gpr[reg::RAX] = eax;
            e
        };
        assert!(wants(&leaf(5), &v));
        assert!(!wants(&leaf(4), &v));
        assert!(
            wants(&leaf(63), &v) && wants(&leaf(1000), &v),
            "bit 63 for EAX >= 63"
        );
        assert!(!wants(&leaf(1 << 32 | 4), &v), "only EAX counts");
        let mut off = v.clone();
        off.write(F::PrimaryProcBasedVmExecControls, 0);
        assert!(!wants(&leaf(5), &off), "{reason}: not enabled");
    }
}

#[test]
fn xsaves_and_xrstors_follow_the_xss_exiting_bitmap() {
    let mut v = vmcs12(PinBased::empty(), P::empty(), S::ENABLE_XSAVES_XRSTORS);
    assert!(!wants(&exit(ExitReason::Xsaves), &v));
    v.write(F::XssExitingBitmap, 1 << 8);
    assert!(wants(&exit(ExitReason::Xsaves), &v));
    assert!(wants(&exit(ExitReason::Xrstors), &v));
    v.write(F::PrimaryProcBasedVmExecControls, 0);
    assert!(!wants(&exit(ExitReason::Xrstors), &v));
}

#[test]
fn virtualized_eoi_uses_the_eoi_exit_bitmap() {
    let mut v = vmcs12(PinBased::empty(), P::empty(), S::VIRTUAL_INTERRUPT_DELIVERY);
    v.write(F::EoiExitBitmap2, 1 << 1); // vector 0x81
    let eoi = |vector| L2Exit::new(ExitReason::VirtualizedEoi, vector);
    assert!(wants(&eoi(0x81), &v));
    assert!(!wants(&eoi(0x80), &v));
    assert!(!wants(&eoi(0x41), &v));
    let mut off = v.clone();
    off.write(F::SecondaryProcBasedVmExecControls, 0);
    assert!(!wants(&eoi(0x81), &off));
}

#[test]
fn loadiwkey_follows_the_tertiary_control_when_activated() {
    let mut v = primary(P::ACTIVATE_TERTIARY_CONTROLS);
    assert!(!wants(&exit(ExitReason::Loadiwkey), &v));
    v.write(
        F::TertiaryProcBasedVmExecControls,
        TERTIARY_LOADIWKEY_EXITING,
    );
    assert!(wants(&exit(ExitReason::Loadiwkey), &v));
    v.write(F::PrimaryProcBasedVmExecControls, 0);
    assert!(!wants(&exit(ExitReason::Loadiwkey), &v));
}

#[test]
fn bitmap_positions() {
    assert_eq!(io_bitmap_bit(0), (F::IoBitmapAAddress, 0));
    assert_eq!(io_bitmap_bit(0x7fff), (F::IoBitmapAAddress, 0x7fff));
    assert_eq!(io_bitmap_bit(0x8000), (F::IoBitmapBAddress, 0));
    assert_eq!(io_bitmap_bit(0xffff), (F::IoBitmapBAddress, 0x7fff));
    assert_eq!(msr_bitmap_bit(0, MsrAccess::Read), Some(0));
    assert_eq!(
        msr_bitmap_bit(0x1fff, MsrAccess::Write),
        Some(2048 * 8 + 0x1fff)
    );
    assert_eq!(msr_bitmap_bit(0xc000_0000, MsrAccess::Read), Some(1024 * 8));
    assert_eq!(
        msr_bitmap_bit(0xc000_1fff, MsrAccess::Write),
        Some(4096 * 8 - 1)
    );
    assert_eq!(msr_bitmap_bit(0x2000, MsrAccess::Read), None);
    assert_eq!(msr_bitmap_bit(0xc000_2000, MsrAccess::Write), None);
}

// --- Properties -----------------------------------------------------------

/// The SDM's I/O rule, written independently: bitmap A is one bit per port
/// 0-7FFFH, B per port 8000H-FFFFH.
fn io_reference(set: &[u16], port: u16, size: u8) -> bool {
    let last = u32::from(port) + u32::from(size) - 1;
    last > 0xffff || (u32::from(port)..=last).any(|p| set.contains(&(p as u16)))
}

fn io_memory(set: &[u16]) -> SparseMemory {
    let mut m = memory();
    for &p in set {
        let (base, off) = if p < 0x8000 {
            (IO_A, p)
        } else {
            (IO_B, p - 0x8000)
        };
        let addr = base + u64::from(off / 8);
        let b = m.read_u8(addr).unwrap() | 1 << (off % 8);
        m.write(addr, &[b]).unwrap();
    }
    m
}

/// The SDM's MSR rule, written independently: four 1-KiB bitmaps.
fn msr_reference(set: &[(u32, bool)], msr: u32, write: bool) -> bool {
    let in_range = msr < 0x2000 || (0xc000_0000..0xc000_2000).contains(&msr);
    !in_range || set.contains(&(msr, write))
}

fn msr_memory(set: &[(u32, bool)]) -> SparseMemory {
    let mut m = memory();
    for &(msr, write) in set {
        let (quarter, n) = match (msr >= 0xc000_0000, write) {
            (false, false) => (0, msr),
            (true, false) => (1024, msr - 0xc000_0000),
            (false, true) => (2048, msr),
            (true, true) => (3072, msr - 0xc000_0000),
        };
        let addr = MSR_BITMAP + quarter + u64::from(n / 8);
        let b = m.read_u8(addr).unwrap() | 1 << (n % 8);
        m.write(addr, &[b]).unwrap();
    }
    m
}

/// MSR indexes near the interesting places, and anywhere.
fn any_msr() -> impl Strategy<Value = u32> {
    prop_oneof![
        0u32..0x2100,
        0xc000_0000u32..0xc000_2100,
        0xbfff_ff00u32..0xc000_0100,
        any::<u32>(),
    ]
}

proptest! {
    #[test]
    fn io_bitmap_matches_reference(
        port in any::<u16>(),
        size in prop::sample::select(vec![1u8, 2, 4]),
        near in prop::collection::vec(-4i32..8, 0..6),
        far in prop::collection::vec(any::<u16>(), 0..6),
        is_in in any::<bool>(),
        string in any::<bool>(),
    ) {
        let mut set: Vec<u16> = near.iter().map(|&d| (i32::from(port) + d) as u16).collect();
        set.extend(far);
        let m = io_memory(&set);
        let v = primary(P::USE_IO_BITMAPS);
        let e = L2Exit::new(
            ExitReason::IoInstruction,
            IoQual::new(port, size, is_in, string, string, !string).0,
        );
        let d = decide(&e, &v, &m);
        prop_assert_eq!(d.reflect, io_reference(&set, port, size));
        prop_assert_eq!(d.rule, Rule::IoBitmap);
    }

    #[test]
    fn msr_bitmap_matches_reference(
        msr in any_msr(),
        write in any::<bool>(),
        rcx_high in any::<u32>(),
        near in prop::collection::vec((-3i64..4, any::<bool>()), 0..6),
        far in prop::collection::vec((any_msr(), any::<bool>()), 0..6),
    ) {
        let mut set: Vec<(u32, bool)> = near
            .iter()
            .map(|&(d, w)| ((i64::from(msr) + d) as u32, w))
            .chain(far)
            .filter(|&(m, _)| m < 0x2000 || (0xc000_0000..0xc000_2000).contains(&m))
            .collect();
        set.dedup();
        let m = msr_memory(&set);
        let v = primary(P::USE_MSR_BITMAPS);
        let mut e = msr_exit(write, msr);
        e.gpr[reg::RCX] = (u64::from(rcx_high) << 32) | u64::from(msr);
        prop_assert_eq!(l1_wants_exit(&e, &v, &m), msr_reference(&set, msr, write));
    }

    /// MOV to CR0/CR4 against the SDM's sentence, bit by bit: exits unless
    /// the source matches the read shadow at every bit set in the mask.
    #[test]
    fn mov_to_cr0_cr4_matches_reference(
        cr4 in any::<bool>(),
        mask in any::<u64>(),
        shadow in any::<u64>(),
        flip in prop::option::of(0u32..64),
        gpr in 0u8..16,
    ) {
        let (cr, mf, sf) = if cr4 {
            (4, F::Cr4GuestHostMask, F::Cr4ReadShadow)
        } else {
            (0, F::Cr0GuestHostMask, F::Cr0ReadShadow)
        };
        // Mostly values near the shadow, so both outcomes occur.
        let value = flip.map_or(shadow, |b| shadow ^ (1 << b));
        let reference = (0..64).any(|i| mask >> i & 1 == 1 && (value >> i & 1) != (shadow >> i & 1));
        let v = cr_vmcs(mf, mask, sf, shadow);
        prop_assert_eq!(wants(&mov_to_cr(cr, gpr, value), &v), reference);
    }

    /// LMSW against the SDM's two conditions (26.1.3).
    #[test]
    fn lmsw_matches_reference(mask in 0u64..16, shadow in 0u64..16, src in any::<u16>()) {
        let bit = |x: u64, i: u32| x >> i & 1 == 1;
        let s = u64::from(src);
        let pe = bit(mask, 0) && bit(s, 0) && !bit(shadow, 0);
        let others = (1..4).any(|i| bit(mask, i) && bit(s, i) != bit(shadow, i));
        let v = cr_vmcs(F::Cr0GuestHostMask, mask, F::Cr0ReadShadow, shadow);
        let e = L2Exit::new(ExitReason::ControlRegisterAccess, (3 << 4) | (s << 16));
        prop_assert_eq!(wants(&e, &v), pe || others);
    }

    /// The #PF rule as a truth table.
    #[test]
    fn page_fault_matches_reference(bit14 in any::<bool>(), mask in 0u32..32, matched in 0u32..32, ec in 0u32..32) {
        let mut v = with_exception_bitmap(if bit14 { 1 << 14 } else { 0 });
        v.write(F::PageFaultErrorCodeMask, mask.into());
        v.write(F::PageFaultErrorCodeMatch, matched.into());
        let e = event(InterruptionType::HardwareException, PAGE_FAULT_VECTOR, Some(ec));
        let reference = if ec & mask == matched { bit14 } else { !bit14 };
        prop_assert_eq!(wants(&e, &v), reference);
    }

    /// No input panics, and the two entry points agree.
    #[test]
    fn never_panics(
        reason in prop_oneof![0u32..90, any::<u32>()],
        qualification in any::<u64>(),
        intr_info in any::<u32>(),
        intr_error_code in any::<u32>(),
        instruction_info in any::<u32>(),
        gpr in prop::array::uniform16(any::<u64>()),
        controls in prop::array::uniform8(any::<u64>()),
        addrs in prop::array::uniform5(prop_oneof![
            Just(IO_A), Just(UNMAPPED), Just(u64::MAX), any::<u64>()
        ]),
    ) {
        let mut v = MemVmcs::new();
        let fields = [
            F::PinBasedVmExecControls,
            F::PrimaryProcBasedVmExecControls,
            F::SecondaryProcBasedVmExecControls,
            F::TertiaryProcBasedVmExecControls,
            F::ExceptionBitmap,
            F::Cr3TargetCount,
            F::Cr0GuestHostMask,
            F::EnclsExitingBitmap,
        ];
        for (f, x) in fields.into_iter().zip(controls) {
            v.write(f, x);
        }
        for (f, a) in [
            F::IoBitmapAAddress,
            F::IoBitmapBAddress,
            F::MsrBitmapAddress,
            F::VmreadBitmapAddress,
            F::VmwriteBitmapAddress,
        ]
        .into_iter()
        .zip(addrs)
        {
            v.write(f, a);
        }
        let e = L2Exit {
            reason: ExitReasonField(reason),
            qualification,
            intr_info: InterruptionInfo(intr_info),
            intr_error_code,
            instruction_info,
            gpr,
        };
        let m = memory();
        prop_assert_eq!(decide(&e, &v, &m).reflect, l1_wants_exit(&e, &v, &m));
    }
}
