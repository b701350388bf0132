//! `LHV_OPT`: the test options (bit values match XMHF's LHV) and the rules
//! between them.

use bitflags::bitflags;
use core::fmt;

bitflags! {
    /// The option bits of `lhv_opt=<hex>`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct LhvOpt: u64 {
        /// VM-entry MSR-load, VM-exit MSR-store and MSR-load areas.
        const MSR_LOAD = 0x1;
        /// LHV never executes STI.
        const NO_EFLAGS_IF = 0x2;
        /// Identity EPT with one unmapped page that L2 touches.
        const EPT = 0x4;
        /// Several EPTPs cycled between entries, INVEPT (needs EPT).
        const SWITCH_EPT = 0x8;
        /// VPIDs and INVVPID.
        const VPID = 0x10;
        /// L2 toggles paging and runs real-mode code (needs EPT).
        const UNRESTRICTED_GUEST = 0x20;
        /// Ring-3 code in L1 between VM entries.
        const USER_MODE = 0x40;
        /// VMCLEAR/VMXOFF/VMXON/VMPTRLD/VMLAUNCH every few iterations.
        const VMXOFF = 0x80;
        /// Two 2-MiB EPT pages swapped (needs EPT).
        const LARGE_PAGE = 0x100;
        /// No LAPIC timer, one-shot PIT only, no HLT waits.
        const NO_INTERRUPT = 0x200;
        /// MSR-bitmap read and write intercepts.
        const MSR_BITMAP = 0x400;
        /// Ring-3 code in L2 that never exits to L1.
        const NESTED_USER_MODE = 0x800;
        /// NMI exiting, virtual NMIs, NMI window, NMI IPIs.
        const NMI = 0x2000;
        /// VMX-preemption timer.
        const PREEMPTION_TIMER = 0x4000;
        /// I/O and exception bitmaps, CR masks, CR3 targets, event injection.
        const INTERCEPTS = 0x8000;
    }
}

/// Each option's name, as printed in `SKIP <name>:` and the counts line.
pub const NAMES: &[(LhvOpt, &str)] = &[
    (LhvOpt::MSR_LOAD, "MSR_LOAD"),
    (LhvOpt::NO_EFLAGS_IF, "NO_EFLAGS_IF"),
    (LhvOpt::EPT, "EPT"),
    (LhvOpt::SWITCH_EPT, "SWITCH_EPT"),
    (LhvOpt::VPID, "VPID"),
    (LhvOpt::UNRESTRICTED_GUEST, "UNRESTRICTED_GUEST"),
    (LhvOpt::USER_MODE, "USER_MODE"),
    (LhvOpt::VMXOFF, "VMXOFF"),
    (LhvOpt::LARGE_PAGE, "LARGE_PAGE"),
    (LhvOpt::NO_INTERRUPT, "NO_INTERRUPT"),
    (LhvOpt::MSR_BITMAP, "MSR_BITMAP"),
    (LhvOpt::NESTED_USER_MODE, "NESTED_USER_MODE"),
    (LhvOpt::NMI, "NMI"),
    (LhvOpt::PREEMPTION_TIMER, "PREEMPTION_TIMER"),
    (LhvOpt::INTERCEPTS, "INTERCEPTS"),
];

/// "Option needs option" rules: the first needs every bit of the second.
pub const NEEDS: &[(LhvOpt, LhvOpt)] = &[
    (LhvOpt::SWITCH_EPT, LhvOpt::EPT),
    (LhvOpt::UNRESTRICTED_GUEST, LhvOpt::EPT),
    (LhvOpt::LARGE_PAGE, LhvOpt::EPT),
];

/// Why an `lhv_opt` value is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptError {
    /// Not a hexadecimal number.
    NotHex,
    /// Bits that name no option.
    UnknownBits(u64),
    /// `option` is set without `needs`.
    MissingDependency { option: LhvOpt, needs: LhvOpt },
}

impl fmt::Display for OptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotHex => f.write_str("lhv_opt is not a hexadecimal number"),
            Self::UnknownBits(b) => write!(f, "unknown LHV_OPT bits {b:#x}"),
            Self::MissingDependency { option, needs } => {
                write!(f, "{} needs {}", name(option), name(needs))
            }
        }
    }
}

/// The name of a single option bit (`"?"` for anything else).
pub fn name(bit: LhvOpt) -> &'static str {
    NAMES
        .iter()
        .find(|(b, _)| *b == bit)
        .map_or("?", |(_, n)| n)
}

/// Validates a raw option value: no unknown bits, every rule of [`NEEDS`]
/// satisfied.
pub fn validate(raw: u64) -> Result<LhvOpt, OptError> {
    let opt = LhvOpt::from_bits(raw).ok_or(OptError::UnknownBits(raw & !LhvOpt::all().bits()))?;
    for &(option, needs) in NEEDS {
        if opt.contains(option) && !opt.contains(needs) {
            return Err(OptError::MissingDependency { option, needs });
        }
    }
    Ok(opt)
}

/// Parses `lhv_opt`'s text (`0x` prefix optional) and validates it.
pub fn parse(text: &str) -> Result<LhvOpt, OptError> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    let raw = u64::from_str_radix(digits, 16).map_err(|_| OptError::NotHex)?;
    validate(raw)
}

/// Removes `dropped` and every option that needs it, transitively (used when
/// an option is skipped for lack of a CPU feature).
pub fn without(opt: LhvOpt, dropped: LhvOpt) -> LhvOpt {
    let mut out = opt - dropped;
    loop {
        let before = out;
        for &(option, needs) in NEEDS {
            if out.contains(option) && !out.contains(needs) {
                out -= option;
            }
        }
        if out == before {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_with_and_without_prefix() {
        assert_eq!(parse("0x0"), Ok(LhvOpt::empty()));
        assert_eq!(parse("4"), Ok(LhvOpt::EPT));
        assert_eq!(parse("0xC"), Ok(LhvOpt::EPT | LhvOpt::SWITCH_EPT));
        assert_eq!(
            parse("0x4094"),
            Ok(LhvOpt::EPT | LhvOpt::VPID | LhvOpt::VMXOFF | LhvOpt::PREEMPTION_TIMER)
        );
        assert_eq!(parse("zz"), Err(OptError::NotHex));
        assert_eq!(parse(""), Err(OptError::NotHex));
    }

    #[test]
    fn unknown_bits_are_refused() {
        assert_eq!(validate(0x1000), Err(OptError::UnknownBits(0x1000)));
        assert_eq!(validate(0x1_0004), Err(OptError::UnknownBits(0x1_0000)));
    }

    #[test]
    fn dependencies_are_enforced() {
        for &(option, needs) in NEEDS {
            assert_eq!(
                validate(option.bits()),
                Err(OptError::MissingDependency { option, needs })
            );
            assert_eq!(validate((option | needs).bits()), Ok(option | needs));
        }
    }

    #[test]
    fn names_cover_every_bit_once() {
        let mut all = LhvOpt::empty();
        for (bit, n) in NAMES {
            assert_eq!(bit.bits().count_ones(), 1, "{n}");
            assert!(!all.intersects(*bit), "{n} twice");
            all |= *bit;
            assert_eq!(name(*bit), *n);
        }
        assert_eq!(all, LhvOpt::all());
        assert_eq!(name(LhvOpt::EPT | LhvOpt::VPID), "?");
    }

    #[test]
    fn dropping_an_option_drops_its_dependents() {
        let opt = LhvOpt::EPT | LhvOpt::SWITCH_EPT | LhvOpt::LARGE_PAGE | LhvOpt::VPID;
        assert_eq!(without(opt, LhvOpt::EPT), LhvOpt::VPID);
        assert_eq!(without(opt, LhvOpt::VPID), opt - LhvOpt::VPID);
        assert!(validate(without(LhvOpt::all(), LhvOpt::EPT).bits()).is_ok());
    }
}
