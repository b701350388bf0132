//! VM-entry MSR-load areas that load MSRs L0 owns (or emulates). SDM 27.4
//! "Loading MSRs": the entry fails (exit reason 34, qualification = the
//! 1-based index of the entry) for an x2APIC MSR (bits 31:8 = 8), an MSR
//! writable only in SMM (IA32_SMM_MONITOR_CTL), reserved bits 63:32 of the
//! entry's first quadword, or a value WRMSR at CPL 0 would refuse with
//! #GP: IA32_FEATURE_CONTROL once locked (Vol. 4 Table 2-2), the read-only
//! VMX capability MSRs (Appendix A), IA32_APIC_BASE or IA32_EFER with
//! reserved bits set, an MTRR with a reserved memory type (12.11.2.1).
//! Each area loads a harmless MSR first (IA32_SYSENTER_CS, which the exit
//! restores from the host state) so that the qualification must be 2. An
//! MTRR with a valid value is loaded (the entry succeeds, and L1 reads the
//! value back after the exit: VM exits do not restore MTRRs), and so is
//! IA32_APIC_BASE with the value it holds (WRMSR of it succeeds); the
//! VM-exit MSR-store area stores IA32_APIC_BASE as RDMSR reads it.

use lhv::negative_cases::{Outcome, Skip};
use shared::mtrr;
use shared::vmx::VmcsField as F;
use shared::vmx::caps::msr as vmx_msr;
use shared::x86::{self, msr};

use super::{Case, Group, Verdict, value};
use crate::negative::{Env, Page};

/// The MSR-load area.
static AREA: Page = Page::new();

/// IA32_FEATURE_CONTROL bit 0: lock.
const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
/// IA32_EFER bit 2: reserved (SDM Vol. 3A 2.2.1, Figure 2-4).
const EFER_RESERVED_BIT: u64 = 1 << 2;
/// An x2APIC MSR: the ICR.
const X2APIC_ICR: u32 = 0x830;
/// A reserved memory type (SDM 12.11, Table 12-8: 2 and 3 are reserved).
const MTRR_TYPE_RESERVED: u64 = 2;
/// The memory-type field of IA32_MTRR_DEF_TYPE and of a PHYSBASE (7:0).
const MTRR_TYPE_MASK: u64 = 0xff;
/// IA32_MTRRCAP bits 7:0: the number of variable ranges.
const MTRRCAP_VCNT: u64 = 0xff;
/// IA32_MTRR_PHYSMASKn bit 11: the range is enabled.
const PHYSMASK_VALID: u64 = 1 << 11;
/// A write-back range at 16 MiB (left disabled: its mask is not valid).
const PHYSBASE_VALUE: u64 = (16 << 20) | 6;

/// RDMSR of an MSR every CPU with VMX and MTRRs has (the architectural
/// MSRs this group reads: FEATURE_CONTROL, the VMX capabilities, APIC base,
/// MTRRCAP, DEF_TYPE and the variable ranges MTRRCAP counts).
fn rdmsr(index: u32) -> u64 {
    // SAFETY: see above; RDMSR has no other effect.
    unsafe { x86::rdmsr(index) }
}

fn entry(i: usize, index: u32, value: u64) {
    AREA.set(2 * i, index.into());
    AREA.set(2 * i + 1, value);
}

/// Loads `index` = `value` as the second entry of the area and enters.
fn second_entry(e: &mut Env, index: u32, value: u64) -> Verdict {
    e.fresh();
    AREA.clear();
    entry(0, msr::IA32_SYSENTER_CS, 0);
    entry(1, index, value);
    e.write(F::VmEntryMsrLoadCount, 2);
    e.write(F::VmEntryMsrLoadAddress, AREA.pa());
    Verdict::is(Outcome::msr_loading(2), e.launch())
}

/// A known departure of bare Bochs (under L0, L0 gives the SDM's answer).
fn bochs_bare(e: &Env, why: &'static str) -> Result<(), Skip> {
    if e.l0.is_none() && e.bochs_skips() {
        Err(Skip::Bochs(why))
    } else {
        Ok(())
    }
}

fn feature_control(e: &mut Env) -> Result<Verdict, Skip> {
    let v = rdmsr(msr::IA32_FEATURE_CONTROL);
    if v & FEATURE_CONTROL_LOCK == 0 {
        return Err(Skip::Unsupported("IA32_FEATURE_CONTROL is not locked"));
    }
    Ok(second_entry(e, msr::IA32_FEATURE_CONTROL, v))
}

fn vmx_basic(e: &mut Env) -> Result<Verdict, Skip> {
    let v = rdmsr(vmx_msr::IA32_VMX_BASIC);
    Ok(second_entry(e, vmx_msr::IA32_VMX_BASIC, v))
}

fn vmx_misc(e: &mut Env) -> Result<Verdict, Skip> {
    let v = rdmsr(vmx_msr::IA32_VMX_MISC);
    Ok(second_entry(e, vmx_msr::IA32_VMX_MISC, v))
}

fn smm_monitor_ctl(e: &mut Env) -> Result<Verdict, Skip> {
    bochs_bare(
        e,
        "does not implement IA32_SMM_MONITOR_CTL (ignore_bad_msrs drops the load)",
    )?;
    Ok(second_entry(e, shared::msr_area::IA32_SMM_MONITOR_CTL, 0))
}

fn x2apic_icr(e: &mut Env) -> Result<Verdict, Skip> {
    Ok(second_entry(e, X2APIC_ICR, 0))
}

fn apic_base_reserved(e: &mut Env) -> Result<Verdict, Skip> {
    // A bit at or above MAXPHYADDR in the APIC base is reserved (SDM
    // 11.4.4, Figure 11-5).
    let v = rdmsr(msr::IA32_APIC_BASE) | (1 << e.max_phys);
    Ok(second_entry(e, msr::IA32_APIC_BASE, v))
}

/// WRMSR of IA32_APIC_BASE with the value it holds succeeds, so its load
/// does too (27.4 fails a load only where WRMSR would #GP): L2 runs.
fn apic_base_unchanged(e: &mut Env) -> Result<Verdict, Skip> {
    let v = rdmsr(msr::IA32_APIC_BASE);
    e.fresh();
    AREA.clear();
    entry(0, msr::IA32_APIC_BASE, v);
    e.write(F::VmEntryMsrLoadCount, 1);
    e.write(F::VmEntryMsrLoadAddress, AREA.pa());
    let mut got = e.launch();
    if got == Outcome::Success {
        got = value(v, rdmsr(msr::IA32_APIC_BASE));
    }
    Ok(Verdict::is(Outcome::Success, got))
}

/// The VM-exit MSR-store area stores IA32_APIC_BASE as RDMSR reads it
/// (28.4; under L0 that store made a VMX abort before the fix).
fn apic_base_stored(e: &mut Env) -> Result<Verdict, Skip> {
    let v = rdmsr(msr::IA32_APIC_BASE);
    e.fresh();
    AREA.clear();
    entry(0, msr::IA32_APIC_BASE, 0);
    e.write(F::VmExitMsrStoreCount, 1);
    e.write(F::VmExitMsrStoreAddress, AREA.pa());
    let mut got = e.launch();
    if got == Outcome::Success {
        got = value(v, AREA.get(1));
    }
    Ok(Verdict::is(Outcome::Success, got))
}

fn efer_reserved(e: &mut Env) -> Result<Verdict, Skip> {
    let v = e.read(F::GuestIa32Efer) | EFER_RESERVED_BIT;
    Ok(second_entry(e, msr::IA32_EFER, v))
}

fn mtrr_reserved_type(e: &mut Env) -> Result<Verdict, Skip> {
    let v = rdmsr(mtrr::IA32_MTRR_DEF_TYPE);
    let v = (v & !MTRR_TYPE_MASK) | MTRR_TYPE_RESERVED;
    debug_assert!(!mtrr::valid_type(MTRR_TYPE_RESERVED));
    Ok(second_entry(e, mtrr::IA32_MTRR_DEF_TYPE, v))
}

fn mtrr_loaded(e: &mut Env) -> Result<Verdict, Skip> {
    let vcnt = rdmsr(mtrr::IA32_MTRRCAP) & MTRRCAP_VCNT;
    if vcnt == 0 {
        return Err(Skip::Unsupported("no variable-range MTRRs"));
    }
    let base = mtrr::IA32_MTRR_PHYSBASE0 + 2 * (vcnt as u32 - 1);
    let mask = base + 1;
    if rdmsr(mask) & PHYSMASK_VALID != 0 {
        return Err(Skip::Unsupported("the last variable-range MTRR is in use"));
    }
    let old = rdmsr(base);
    e.fresh();
    AREA.clear();
    entry(0, base, PHYSBASE_VALUE);
    e.write(F::VmEntryMsrLoadCount, 1);
    e.write(F::VmEntryMsrLoadAddress, AREA.pa());
    let mut got = e.launch();
    if got == Outcome::Success {
        got = value(PHYSBASE_VALUE, rdmsr(base));
    }
    // SAFETY: restores the value read above, of a range that is disabled.
    unsafe { x86::wrmsr(base, old) };
    Ok(Verdict::is(Outcome::Success, got))
}

pub const GROUP: Group = Group {
    what: "MSR-load areas loading MSRs L0 owns (SDM 27.4)",
    cases: &[
        Case {
            name: "msr-load-feature-control",
            run: feature_control,
        },
        Case {
            name: "msr-load-vmx-basic",
            run: vmx_basic,
        },
        Case {
            name: "msr-load-vmx-misc",
            run: vmx_misc,
        },
        Case {
            name: "msr-load-smm-monitor-ctl",
            run: smm_monitor_ctl,
        },
        Case {
            name: "msr-load-x2apic-icr",
            run: x2apic_icr,
        },
        Case {
            name: "msr-load-apic-base-reserved",
            run: apic_base_reserved,
        },
        Case {
            name: "msr-load-apic-base-unchanged",
            run: apic_base_unchanged,
        },
        Case {
            name: "msr-store-apic-base",
            run: apic_base_stored,
        },
        Case {
            name: "msr-load-efer-reserved",
            run: efer_reserved,
        },
        Case {
            name: "msr-load-mtrr-reserved-type",
            run: mtrr_reserved_type,
        },
        Case {
            name: "msr-load-mtrr-variable",
            run: mtrr_loaded,
        },
    ],
};
