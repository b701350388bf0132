//! SDM 27.3.1.5 "Checks on Guest Non-Register State" (activity state,
//! interruptibility state, pending debug exceptions, VMCS link pointer)
//! and 27.3.1.6 "Checks on Guest Page-Directory-Pointer-Table Entries".
//! Failures are VM-entry failures, exit reason 33, with qualification 0,
//! 4 (link pointer) or 2 (PDPTEs), SDM 27.8.

use lhv::negative_cases::{Outcome, Skip, entry_qual};
use shared::vmx::VmcsField as F;
use shared::vmx::controls::{EntryControls, PinBased};

use super::{Case, Env, Group, Page};

const FAIL: Outcome = Outcome::guest_state(entry_qual::DEFAULT);
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_IF: u64 = 1 << 9;
/// Interruptibility state (SDM 25.4.2, Table 25-3).
const BLOCKING_BY_STI: u64 = 1 << 0;
const BLOCKING_BY_MOV_SS: u64 = 1 << 1;
const BLOCKING_BY_NMI: u64 = 1 << 3;
/// Injected NMI (valid, type 2, vector 2).
const INJECT_NMI: u64 = (1 << 31) | (2 << 8) | 2;

/// A page that is no VMCS (revision identifier 0).
static NOT_A_VMCS: Page = Page::new();
/// The PDPT of the 32-bit PAE guest state.
static PDPT: Page = Page::new();

fn activity_state_4(e: &mut Env) {
    // 0-3 are defined (active, HLT, shutdown, wait-for-SIPI).
    e.write(F::GuestActivityState, 4);
}

fn sti_and_mov_ss_blocking(e: &mut Env) {
    e.set_bits(F::GuestRflags, RFLAGS_IF);
    e.write(
        F::GuestInterruptibilityState,
        BLOCKING_BY_STI | BLOCKING_BY_MOV_SS,
    );
}

fn sti_blocking_with_if_0(e: &mut Env) {
    e.clear_bits(F::GuestRflags, RFLAGS_IF);
    e.write(F::GuestInterruptibilityState, BLOCKING_BY_STI);
}

fn nmi_injection_with_mov_ss_blocking(e: &mut Env) {
    e.write(F::GuestInterruptibilityState, BLOCKING_BY_MOV_SS);
    e.write(F::VmEntryInterruptionInfo, INJECT_NMI);
}

fn nmi_injection_with_nmi_blocking_vnmi(e: &mut Env) {
    e.set_bits(
        F::PinBasedVmExecControls,
        (PinBased::NMI_EXITING | PinBased::VIRTUAL_NMIS)
            .bits()
            .into(),
    );
    e.write(F::GuestInterruptibilityState, BLOCKING_BY_NMI);
    e.write(F::VmEntryInterruptionInfo, INJECT_NMI);
}

fn nmi_injection_with_nmi_blocking_no_vnmi(e: &mut Env) {
    // Without virtual NMIs the rule of SDM 27.3.1.5 does not apply: the
    // NMI is delivered to L2 (through LHV's own IDT, whose NMI handler
    // counts it and returns to L2's VMCALL).
    e.write(F::GuestInterruptibilityState, BLOCKING_BY_NMI);
    e.write(F::VmEntryInterruptionInfo, INJECT_NMI);
}

fn vnmi_rule(e: &Env) -> Result<Outcome, Skip> {
    if !e.allows(F::PinBasedVmExecControls, PinBased::VIRTUAL_NMIS.bits()) {
        return Err(Skip::Unsupported("no virtual NMIs"));
    }
    if e.bochs_skips() {
        return Err(Skip::Bochs(
            "does not check blocking by NMI against an injected NMI with virtual NMIs",
        ));
    }
    Ok(FAIL)
}

fn nmi_sti_rule(_: &Env) -> Result<Outcome, Skip> {
    Err(Skip::Undefined(
        "NMI injection with blocking by STI may succeed or fail with qualification 3 (model-specific)",
    ))
}

fn pending_debug_bs_clear_with_tf(e: &mut Env) {
    // TF = 1, blocking by STI, IA32_DEBUGCTL.BTF = 0: BS (bit 14) must be 1.
    e.set_bits(F::GuestRflags, RFLAGS_TF | RFLAGS_IF);
    e.write(F::GuestInterruptibilityState, BLOCKING_BY_STI);
    e.write(F::GuestIa32Debugctl, 0);
    e.write(F::GuestPendingDebugExceptions, 0);
}

fn pending_debug_rule(e: &Env) -> Result<Outcome, Skip> {
    if e.bochs_skips() {
        return Err(Skip::Bochs(
            "does not check the pending-debug BS bit against RFLAGS.TF",
        ));
    }
    Ok(FAIL)
}

fn pending_debug_reserved_bits(e: &mut Env) {
    // Bits 11:4, 13 and 63:17 are reserved.
    e.write(F::GuestPendingDebugExceptions, 1 << 4);
}

fn link_pointer_not_a_vmcs(e: &mut Env) {
    NOT_A_VMCS.clear();
    e.write(F::VmcsLinkPointer, NOT_A_VMCS.pa());
}

fn link_pointer_unaligned(e: &mut Env) {
    e.write(F::VmcsLinkPointer, NOT_A_VMCS.pa() + 8);
}

pub const GROUP: Group = Group {
    section: "27.3.1.5 guest non-register state",
    cases: &[
        Case::launch("activity-state-4", activity_state_4, FAIL),
        Case::launch("sti-and-mov-ss-blocking", sti_and_mov_ss_blocking, FAIL),
        Case::launch("sti-blocking-with-if-0", sti_blocking_with_if_0, FAIL),
        Case::launch(
            "nmi-injection-mov-ss-blocking",
            nmi_injection_with_mov_ss_blocking,
            FAIL,
        ),
        Case::launch_if(
            "nmi-injection-nmi-blocking-vnmi",
            nmi_injection_with_nmi_blocking_vnmi,
            vnmi_rule,
        ),
        Case::launch(
            "nmi-injection-nmi-blocking-no-vnmi",
            nmi_injection_with_nmi_blocking_no_vnmi,
            Outcome::Success,
        ),
        Case::launch_if("nmi-injection-sti-blocking", |_| {}, nmi_sti_rule),
        Case::launch_if(
            "pending-debug-bs-clear-tf-sti",
            pending_debug_bs_clear_with_tf,
            pending_debug_rule,
        ),
        Case::launch(
            "pending-debug-reserved-bit",
            pending_debug_reserved_bits,
            FAIL,
        ),
        Case::launch(
            "link-pointer-not-a-vmcs",
            link_pointer_not_a_vmcs,
            Outcome::guest_state(entry_qual::LINK_POINTER),
        ),
        Case::launch(
            "link-pointer-unaligned",
            link_pointer_unaligned,
            Outcome::guest_state(entry_qual::LINK_POINTER),
        ),
    ],
};

/// CR4.PCIDE (must be 0 outside IA-32e mode).
const CR4_PCIDE: u64 = 1 << 17;
const EFER_LME_LMA: u64 = (1 << 8) | (1 << 10);
/// 32-bit code: execute/read accessed, present, DPL 0, D = 1, G = 1.
const AR_CODE32: u64 = 0xc09b;
/// PDPTE: present with reserved bit 1 set.
const PDPTE_P_RESERVED: u64 = 1 | (1 << 1);

/// A 32-bit guest with PAE paging (no EPT, so the PDPTEs are loaded from
/// CR3 at entry), whose first PDPTE is present with a reserved bit. No
/// guest instruction runs: the entry must fail while loading the PDPTEs.
fn pae_pdpte_reserved(e: &mut Env) {
    PDPT.clear();
    PDPT.set(0, PDPTE_P_RESERVED);
    e.clear_bits(
        F::VmEntryControls,
        EntryControls::IA32E_MODE_GUEST.bits().into(),
    );
    e.clear_bits(F::GuestCr4, CR4_PCIDE);
    e.clear_bits(F::GuestIa32Efer, EFER_LME_LMA);
    e.write(F::GuestCsAccessRights, AR_CODE32);
    e.write(F::GuestRip, 0x1000);
    e.write(F::GuestRsp, 0x2000);
    e.write(F::GuestCr3, PDPT.pa());
}

pub const PDPTE_GROUP: Group = Group {
    section: "27.3.1.6 guest PDPTEs",
    cases: &[Case::launch(
        "pae-pdpte-reserved-bit",
        pae_pdpte_reserved,
        Outcome::guest_state(entry_qual::PDPTE),
    )],
};
