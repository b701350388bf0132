//! The pure side of LHV's negative suite (`mode=negative`): what one case
//! can end in ([`Outcome`]), how a VM-entry attempt's raw result decodes
//! into one, and the rules that turn capabilities into the exact outcome
//! the SDM requires (Intel SDM Vol. 3C 27.2 "Checks on VMX Controls and
//! Host-State Area", 27.3 "Checking and Loading Guest State", 27.4 "Loading
//! MSRs", 27.8 "VM-Entry Failures During or After Loading Guest State",
//! chapter 31 "VMX Instruction Reference").
//!
//! The kernel side (`src/negative/`) holds the case table, which touches
//! the hardware; everything it decides without hardware lives here.

use core::fmt;

/// Basic exit reason 33: VM-entry failure due to invalid guest state.
pub const EXIT_INVALID_GUEST_STATE: u16 = 33;
/// Basic exit reason 34: VM-entry failure due to MSR loading.
pub const EXIT_MSR_LOADING: u16 = 34;
/// Basic exit reason 18: VMCALL (how the suite's L2 says it ran).
pub const EXIT_VMCALL: u16 = 18;
/// Bit 31 of the exit-reason field: VM-entry failure (SDM 25.9.1).
pub const ENTRY_FAILURE_BIT: u32 = 1 << 31;

/// Exit qualifications of an invalid-guest-state entry failure (SDM 27.8).
pub mod entry_qual {
    /// Default (no more specific reason).
    pub const DEFAULT: u64 = 0;
    /// A problem loading the PDPTRs.
    pub const PDPTE: u64 = 2;
    /// NMI injection into a guest blocking events by STI.
    pub const NMI_STI: u64 = 3;
    /// An invalid VMCS link pointer.
    pub const LINK_POINTER: u64 = 4;
}

/// VM-instruction error numbers the suite expects (SDM 31.4).
pub mod vm_error {
    pub const VMCLEAR_INVALID_ADDRESS: u32 = 2;
    pub const VMCLEAR_VMXON_POINTER: u32 = 3;
    pub const VMLAUNCH_NON_CLEAR: u32 = 4;
    pub const VMRESUME_NON_LAUNCHED: u32 = 5;
    pub const INVALID_CONTROL_FIELDS: u32 = 7;
    pub const INVALID_HOST_STATE: u32 = 8;
    pub const VMPTRLD_INVALID_ADDRESS: u32 = 9;
    pub const VMPTRLD_VMXON_POINTER: u32 = 10;
    pub const VMPTRLD_WRONG_REVISION: u32 = 11;
    pub const UNSUPPORTED_COMPONENT: u32 = 12;
    pub const VMWRITE_READ_ONLY: u32 = 13;
    pub const VMXON_IN_VMX_ROOT: u32 = 15;
    pub const INVALID_INVEPT_INVVPID_OPERAND: u32 = 28;
}

/// Exception vectors the suite expects.
pub mod vector {
    pub const UD: u8 = 6;
    pub const GP: u8 = 13;
}

/// How one case ended: the expected value of a case and what it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// VMsucceed; for a VM entry: L2 ran and its VMCALL exit came back.
    Success,
    /// VMfailInvalid (CF = 1).
    FailInvalid,
    /// VMfailValid (ZF = 1) with this VM-instruction error number.
    FailValid(u32),
    /// A VM-entry failure exit (exit-reason bit 31 set): basic reason and
    /// exit qualification.
    EntryFailure { reason: u16, qualification: u64 },
    /// A VM exit that is neither the suite's VMCALL nor an entry failure.
    Exit { reason: u32, qualification: u64 },
    /// A fault: vector and error code (0 for faults without one).
    Exception { vector: u8, error_code: u64 },
    /// The action succeeded, but a value it must have produced (e.g. an
    /// MSR the entry loaded, as the exit stored it) is wrong.
    WrongValue { expected: u64, got: u64 },
}

impl Outcome {
    /// Entry failure for invalid guest state with `qualification`.
    pub const fn guest_state(qualification: u64) -> Self {
        Self::EntryFailure {
            reason: EXIT_INVALID_GUEST_STATE,
            qualification,
        }
    }

    /// Entry failure loading the `index`-th (1-based) MSR of the VM-entry
    /// MSR-load area (SDM 27.4: the qualification is the entry's number).
    pub const fn msr_loading(index: u64) -> Self {
        Self::EntryFailure {
            reason: EXIT_MSR_LOADING,
            qualification: index,
        }
    }

    /// VMfailValid "VM entry with invalid control field(s)".
    pub const CONTROLS: Self = Self::FailValid(vm_error::INVALID_CONTROL_FIELDS);
    /// VMfailValid "VM entry with invalid host-state field(s)".
    pub const HOST_STATE: Self = Self::FailValid(vm_error::INVALID_HOST_STATE);
    /// #UD.
    pub const UD: Self = Self::Exception {
        vector: vector::UD,
        error_code: 0,
    };
    /// #GP(0).
    pub const GP0: Self = Self::Exception {
        vector: vector::GP,
        error_code: 0,
    };
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Success => f.write_str("success"),
            Self::FailInvalid => f.write_str("VMfailInvalid"),
            Self::FailValid(e) => write!(f, "VMfailValid({e})"),
            Self::EntryFailure {
                reason,
                qualification,
            } => write!(
                f,
                "entry failure exit {reason} qualification {qualification:#x}"
            ),
            Self::Exit {
                reason,
                qualification,
            } => write!(f, "VM exit {reason:#x} qualification {qualification:#x}"),
            Self::WrongValue { expected, got } => {
                write!(f, "success with value {got:#x} instead of {expected:#x}")
            }
            Self::Exception { vector, error_code } => match vector {
                vector::UD => f.write_str("#UD"),
                vector::GP => write!(f, "#GP({error_code:#x})"),
                v => write!(f, "exception {v} error code {error_code:#x}"),
            },
        }
    }
}

/// Decodes the VM exit that ended a VM-entry attempt: `reason_field` is the
/// full exit-reason field, `qualification` the exit qualification.
pub const fn decode_exit(reason_field: u32, qualification: u64) -> Outcome {
    let basic = (reason_field & 0xffff) as u16;
    if reason_field & ENTRY_FAILURE_BIT != 0 {
        Outcome::EntryFailure {
            reason: basic,
            qualification,
        }
    } else if basic == EXIT_VMCALL {
        Outcome::Success
    } else {
        Outcome::Exit {
            reason: reason_field,
            qualification,
        }
    }
}

/// Decodes the RFLAGS of a VMX instruction (SDM 31.2): `error` is read
/// only for VMfailValid.
pub fn decode_flags(cf: bool, zf: bool, error: impl FnOnce() -> u32) -> Outcome {
    if cf {
        Outcome::FailInvalid
    } else if zf {
        Outcome::FailValid(error())
    } else {
        Outcome::Success
    }
}

/// Why a case did not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The processor lacks the feature the case needs.
    Unsupported(&'static str),
    /// A known departure of Bochs from the SDM (only when on Bochs).
    Bochs(&'static str),
    /// The case needs L0 (its region) and runs on bare hardware.
    NoL0,
    /// The SDM does not fix one outcome.
    Undefined(&'static str),
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported(why) => write!(f, "unsupported: {why}"),
            Self::Bochs(why) => write!(f, "Bochs {why}"),
            Self::NoL0 => f.write_str("no L0 (bare)"),
            Self::Undefined(why) => write!(f, "SDM leaves it undefined: {why}"),
        }
    }
}

/// The running count of the suite.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Cases that ran and were judged.
    pub cases: u32,
    /// ... of which failed.
    pub failed: u32,
    /// Cases skipped (each printed with its reason).
    pub skipped: u32,
}

impl Tally {
    /// Records the judgement of one case; true if it passed.
    pub fn judge(&mut self, expected: Outcome, got: Outcome) -> bool {
        self.cases += 1;
        let ok = expected == got;
        if !ok {
            self.failed += 1;
        }
        ok
    }

    /// Whether every case that ran passed (and some ran).
    pub fn passed(&self) -> bool {
        self.failed == 0 && self.cases > 0
    }
}

impl fmt::Display for Tally {
    /// The summary line after `NEGATIVE done: `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} cases, {} failed, {} skipped",
            self.cases, self.failed, self.skipped
        )
    }
}

/// The lowest address that is not canonical for `linear_width` bits of
/// linear address (bits 63:width-1 not all equal): `1 << (width - 1)`.
pub const fn non_canonical(linear_width: u8) -> u64 {
    1 << (linear_width - 1)
}

/// A page-aligned physical address just beyond MAXPHYADDR.
pub const fn beyond_phys_width(max_phys_addr: u8) -> u64 {
    1 << max_phys_addr
}

/// The lowest control bit `allowed1` forbids (must be 0), if any.
pub const fn forbidden_bit(allowed1: u32) -> Option<u32> {
    if allowed1 == u32::MAX {
        None
    } else {
        Some(1 << (!allowed1).trailing_zeros())
    }
}

/// The lowest control bit `allowed0` forces (must be 1), if any.
pub const fn forced_bit(allowed0: u32) -> Option<u32> {
    if allowed0 == 0 {
        None
    } else {
        Some(1 << allowed0.trailing_zeros())
    }
}

/// VMWRITE of a read-only (VM-exit information) field: VMfailValid(13),
/// unless IA32_VMX_MISC bit 29 says software may write them (SDM 25.11.2,
/// A.6), when it succeeds.
pub const fn vmwrite_read_only(misc_vmwrite_exit_info: bool) -> Outcome {
    if misc_vmwrite_exit_info {
        Outcome::Success
    } else {
        Outcome::FailValid(vm_error::VMWRITE_READ_ONLY)
    }
}

/// Injection of a software interrupt with VM-entry instruction length 0:
/// allowed only where IA32_VMX_MISC bit 30 is 1 (SDM 27.2.1.3), then the
/// entry succeeds; otherwise the controls are invalid.
pub const fn zero_length_injection(misc_inject_zero_length: bool) -> Outcome {
    if misc_inject_zero_length {
        Outcome::Success
    } else {
        Outcome::CONTROLS
    }
}

/// VMXON in VMX root operation (SDM 31.3 VMXON): VMfailValid(15) with a
/// current VMCS, VMfailInvalid without.
pub const fn vmxon_in_root(current_vmcs: bool) -> Outcome {
    if current_vmcs {
        Outcome::FailValid(vm_error::VMXON_IN_VMX_ROOT)
    } else {
        Outcome::FailInvalid
    }
}

/// A VMX instruction at CPL 3 (in VMX root operation) raises #GP(0); one
/// the processor does not support (INVEPT/INVVPID) raises #UD first.
pub const fn at_cpl3(supported: bool) -> Outcome {
    if supported { Outcome::GP0 } else { Outcome::UD }
}

/// A VMPTRLD/VMCLEAR/VMXON pointer into L0's region: L0 treats it like a
/// pointer beyond the physical-address width (the project's rule; real
/// hardware has no "invisible memory").
pub mod l0_region {
    use super::{Outcome, vm_error};
    pub const VMPTRLD: Outcome = Outcome::FailValid(vm_error::VMPTRLD_INVALID_ADDRESS);
    pub const VMCLEAR: Outcome = Outcome::FailValid(vm_error::VMCLEAR_INVALID_ADDRESS);
    pub const VMXON: Outcome = Outcome::FailInvalid;
}

/// The page at `offset` bytes into the region `[base, base + size)`,
/// clamped to its last page (L0's region for the pointer cases).
pub const fn region_page(base: u64, size: u64, offset: u64) -> u64 {
    let last = size.saturating_sub(4096);
    let off = if offset < last { offset } else { last };
    (base + off) & !0xfff
}

/// Number of entries in a list one past the recommended maximum of
/// IA32_VMX_MISC (512 * (N + 1), SDM A.6).
pub const fn beyond_msr_list_max(max: u32) -> u32 {
    max + 1
}

/// Whether the case names of a table are unique and well-formed (lower
/// case, digits and '-'), the form the harness and readers grep for.
pub fn names_well_formed<'a>(names: impl Iterator<Item = &'a str> + Clone) -> Result<(), &'a str> {
    for (i, n) in names.clone().enumerate() {
        let ok = !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok || names.clone().skip(i + 1).any(|m| m == n) {
            return Err(n);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_entry_failures_vmcall_and_other_exits() {
        assert_eq!(
            decode_exit(0x8000_0021, 4),
            Outcome::guest_state(entry_qual::LINK_POINTER)
        );
        assert_eq!(decode_exit(0x8000_0022, 2), Outcome::msr_loading(2));
        assert_eq!(decode_exit(18, 0), Outcome::Success);
        assert_eq!(
            decode_exit(1, 0),
            Outcome::Exit {
                reason: 1,
                qualification: 0
            }
        );
        // An entry failure is never a success, whatever its basic reason.
        assert_ne!(decode_exit(0x8000_0012, 0), Outcome::Success);
    }

    #[test]
    fn decodes_flags() {
        assert_eq!(decode_flags(true, false, || 7), Outcome::FailInvalid);
        assert_eq!(decode_flags(false, true, || 7), Outcome::CONTROLS);
        assert_eq!(
            decode_flags(false, false, || panic!("no error read on success")),
            Outcome::Success
        );
    }

    #[test]
    fn outcomes_print_as_the_sdm_names_them() {
        assert_eq!(Outcome::HOST_STATE.to_string(), "VMfailValid(8)");
        assert_eq!(Outcome::GP0.to_string(), "#GP(0x0)");
        assert_eq!(Outcome::UD.to_string(), "#UD");
        assert_eq!(
            Outcome::msr_loading(1).to_string(),
            "entry failure exit 34 qualification 0x1"
        );
        assert_eq!(
            Skip::Bochs("does not check X").to_string(),
            "Bochs does not check X"
        );
        assert_eq!(Skip::NoL0.to_string(), "no L0 (bare)");
        assert_eq!(
            Outcome::WrongValue {
                expected: 1,
                got: 2
            }
            .to_string(),
            "success with value 0x2 instead of 0x1"
        );
    }

    #[test]
    fn tally_counts_failures_exactly() {
        let mut t = Tally::default();
        assert!(!t.passed());
        assert!(t.judge(Outcome::CONTROLS, Outcome::CONTROLS));
        assert!(!t.judge(Outcome::CONTROLS, Outcome::HOST_STATE));
        assert!(!t.judge(Outcome::guest_state(0), Outcome::guest_state(4)));
        t.skipped += 1;
        assert_eq!(t.to_string(), "3 cases, 2 failed, 1 skipped");
        assert!(!t.passed());
    }

    #[test]
    fn address_helpers() {
        assert_eq!(non_canonical(48), 0x0000_8000_0000_0000);
        assert_eq!(non_canonical(57), 0x0100_0000_0000_0000);
        assert_eq!(beyond_phys_width(40), 0x100_0000_0000);
        assert_eq!(beyond_phys_width(40) & 0xfff, 0);
    }

    #[test]
    fn control_bits_from_capabilities() {
        // Bochs skylake-x: TRUE_PINBASED 0x0000007f_00000016.
        assert_eq!(forbidden_bit(0x7f), Some(1 << 7));
        assert_eq!(forced_bit(0x16), Some(1 << 1));
        assert_eq!(forbidden_bit(u32::MAX), None);
        assert_eq!(forced_bit(0), None);
    }

    #[test]
    fn capability_dependent_expectations() {
        assert_eq!(vmwrite_read_only(true), Outcome::Success);
        assert_eq!(vmwrite_read_only(false), Outcome::FailValid(13));
        assert_eq!(zero_length_injection(false), Outcome::CONTROLS);
        assert_eq!(zero_length_injection(true), Outcome::Success);
        assert_eq!(vmxon_in_root(true), Outcome::FailValid(15));
        assert_eq!(vmxon_in_root(false), Outcome::FailInvalid);
        assert_eq!(at_cpl3(true), Outcome::GP0);
        assert_eq!(at_cpl3(false), Outcome::UD);
        assert_eq!(beyond_msr_list_max(512), 513);
        assert_eq!(l0_region::VMPTRLD, Outcome::FailValid(9));
        assert_eq!(l0_region::VMCLEAR, Outcome::FailValid(2));
        assert_eq!(l0_region::VMXON, Outcome::FailInvalid);
    }

    #[test]
    fn region_pages_stay_inside() {
        let (b, s) = (0x1be0_0000, 0x400_0000);
        assert_eq!(region_page(b, s, 0), b);
        assert_eq!(region_page(b, s, s / 2 + 123), b + s / 2);
        assert_eq!(region_page(b, s, u64::MAX), b + s - 4096);
        assert_eq!(region_page(b, 0, 5000), b);
    }

    #[test]
    fn case_names() {
        assert_eq!(names_well_formed(["a-b", "c2"].into_iter()), Ok(()));
        assert_eq!(names_well_formed(["a", "b", "a"].into_iter()), Err("a"));
        assert_eq!(names_well_formed(["Bad"].into_iter()), Err("Bad"));
        assert_eq!(names_well_formed([""].into_iter()), Err(""));
    }
}
