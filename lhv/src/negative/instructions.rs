//! VMX instruction operands in VMX root operation at CPL 0 (SDM 31.3):
//! VMCLEAR/VMPTRLD pointers (unaligned, beyond MAXPHYADDR, the VMXON
//! pointer, a wrong revision identifier, inside L0's region), VMREAD and
//! VMWRITE of unsupported or read-only fields, VMLAUNCH/VMRESUME against
//! the launch state, VMXON in VMX root operation, INVEPT/INVVPID types.

use lhv::negative_cases::{
    Outcome, Skip, beyond_phys_width, l0_region, vm_error, vmwrite_read_only, vmxon_in_root,
};
use shared::vmx::VmcsField as F;

use super::{Action, Case, Env, Expect, Group, Page, guard};

/// A VMCS region with a wrong revision identifier.
static WRONG_REVISION: Page = Page::new();
/// An encoding that names no field (bit 12 is reserved in every encoding,
/// SDM 25.11.2).
const NO_SUCH_FIELD: u64 = 0x1000;

const fn fresh(name: &'static str, run: fn(&mut Env) -> Outcome, expected: Outcome) -> Case {
    Case {
        name,
        action: Action::Fresh(run),
        expect: Expect::Is(expected),
    }
}

const fn fresh_if(
    name: &'static str,
    run: fn(&mut Env) -> Outcome,
    rule: fn(&Env) -> Result<Outcome, Skip>,
) -> Case {
    Case {
        name,
        action: Action::Fresh(run),
        expect: Expect::Rule(rule),
    }
}

fn vmclear_unaligned(e: &mut Env) -> Outcome {
    guard::vmclear(e.ctx.vmcs_pa + 8)
}

fn vmclear_beyond_width(e: &mut Env) -> Outcome {
    guard::vmclear(beyond_phys_width(e.max_phys))
}

fn vmclear_vmxon_pointer(e: &mut Env) -> Outcome {
    guard::vmclear(e.vmxon_pa)
}

fn vmptrld_unaligned(e: &mut Env) -> Outcome {
    guard::vmptrld(e.ctx.vmcs_pa + 8)
}

fn vmptrld_beyond_width(e: &mut Env) -> Outcome {
    guard::vmptrld(beyond_phys_width(e.max_phys))
}

fn vmptrld_vmxon_pointer(e: &mut Env) -> Outcome {
    guard::vmptrld(e.vmxon_pa)
}

fn vmptrld_wrong_revision(e: &mut Env) -> Outcome {
    WRONG_REVISION.clear();
    let wrong = !e.caps.basic.revision_id & 0x7fff_ffff;
    WRONG_REVISION.set(0, wrong.into());
    guard::vmptrld(WRONG_REVISION.pa())
}

fn vmread_unsupported(_: &mut Env) -> Outcome {
    guard::vmread(NO_SUCH_FIELD).0
}

fn vmwrite_unsupported(_: &mut Env) -> Outcome {
    guard::vmwrite(NO_SUCH_FIELD, 0)
}

fn vmwrite_exit_qualification(_: &mut Env) -> Outcome {
    guard::vmwrite(F::ExitQualification.encoding().into(), 0)
}

fn read_only_rule(e: &Env) -> Result<Outcome, Skip> {
    Ok(vmwrite_read_only(e.caps.misc.vmwrite_exit_info))
}

fn vmlaunch_launched(e: &mut Env) -> Outcome {
    match e.launch() {
        Outcome::Success => e.launch(),
        other => other,
    }
}

fn vmresume_clear(e: &mut Env) -> Outcome {
    e.enter(true)
}

fn vmread_no_current_vmcs(e: &mut Env) -> Outcome {
    match guard::vmclear(e.ctx.vmcs_pa) {
        Outcome::Success => guard::vmread(F::GuestRip.encoding().into()).0,
        other => other,
    }
}

fn vmwrite_no_current_vmcs(e: &mut Env) -> Outcome {
    match guard::vmclear(e.ctx.vmcs_pa) {
        Outcome::Success => guard::vmwrite(F::GuestRip.encoding().into(), 0),
        other => other,
    }
}

fn vmxon_with_current_vmcs(e: &mut Env) -> Outcome {
    guard::vmxon(e.vmxon_pa)
}

fn vmxon_without_current_vmcs(e: &mut Env) -> Outcome {
    match guard::vmclear(e.ctx.vmcs_pa) {
        Outcome::Success => guard::vmxon(e.vmxon_pa),
        other => other,
    }
}

fn invept_type_0(e: &mut Env) -> Outcome {
    let eptp = 6 | (3 << 3);
    let _ = e;
    guard::invept(0, eptp)
}

fn invept_rule(e: &Env) -> Result<Outcome, Skip> {
    if e.caps.ept_vpid.invept {
        Ok(Outcome::FailValid(vm_error::INVALID_INVEPT_INVVPID_OPERAND))
    } else {
        Err(Skip::Unsupported("no INVEPT"))
    }
}

fn invvpid_type_4(_: &mut Env) -> Outcome {
    guard::invvpid(4, 1)
}

fn invvpid_rule(e: &Env) -> Result<Outcome, Skip> {
    if e.caps.ept_vpid.invvpid {
        Ok(Outcome::FailValid(vm_error::INVALID_INVEPT_INVVPID_OPERAND))
    } else {
        Err(Skip::Unsupported("no INVVPID"))
    }
}

/// A page of L0's region: its first, its middle one, its last.
fn l0_page(e: &Env, at: u64) -> u64 {
    e.l0.map_or(0, |l0| l0.page(at))
}

fn vmptrld_l0_region(e: &mut Env) -> Outcome {
    guard::vmptrld(l0_page(e, 0))
}

fn vmclear_l0_region(e: &mut Env) -> Outcome {
    let mid = e.l0.map_or(0, |l0| l0.region_size / 2);
    guard::vmclear(l0_page(e, mid))
}

fn l0_rule(e: &Env, o: Outcome) -> Result<Outcome, Skip> {
    if e.l0.is_some() {
        Ok(o)
    } else {
        Err(Skip::NoL0)
    }
}

pub const GROUP: Group = Group {
    section: "31.3 VMX instruction operands (VMX root, CPL 0)",
    cases: &[
        fresh(
            "vmclear-unaligned",
            vmclear_unaligned,
            Outcome::FailValid(vm_error::VMCLEAR_INVALID_ADDRESS),
        ),
        fresh(
            "vmclear-beyond-width",
            vmclear_beyond_width,
            Outcome::FailValid(vm_error::VMCLEAR_INVALID_ADDRESS),
        ),
        fresh(
            "vmclear-vmxon-pointer",
            vmclear_vmxon_pointer,
            Outcome::FailValid(vm_error::VMCLEAR_VMXON_POINTER),
        ),
        fresh(
            "vmptrld-unaligned",
            vmptrld_unaligned,
            Outcome::FailValid(vm_error::VMPTRLD_INVALID_ADDRESS),
        ),
        fresh(
            "vmptrld-beyond-width",
            vmptrld_beyond_width,
            Outcome::FailValid(vm_error::VMPTRLD_INVALID_ADDRESS),
        ),
        fresh(
            "vmptrld-vmxon-pointer",
            vmptrld_vmxon_pointer,
            Outcome::FailValid(vm_error::VMPTRLD_VMXON_POINTER),
        ),
        fresh(
            "vmptrld-wrong-revision",
            vmptrld_wrong_revision,
            Outcome::FailValid(vm_error::VMPTRLD_WRONG_REVISION),
        ),
        fresh_if("vmptrld-l0-region", vmptrld_l0_region, |e| {
            l0_rule(e, l0_region::VMPTRLD)
        }),
        fresh_if("vmclear-l0-region", vmclear_l0_region, |e| {
            l0_rule(e, l0_region::VMCLEAR)
        }),
        fresh(
            "vmread-unsupported-field",
            vmread_unsupported,
            Outcome::FailValid(vm_error::UNSUPPORTED_COMPONENT),
        ),
        fresh(
            "vmwrite-unsupported-field",
            vmwrite_unsupported,
            Outcome::FailValid(vm_error::UNSUPPORTED_COMPONENT),
        ),
        fresh_if(
            "vmwrite-read-only-field",
            vmwrite_exit_qualification,
            read_only_rule,
        ),
        fresh(
            "vmlaunch-launched-vmcs",
            vmlaunch_launched,
            Outcome::FailValid(vm_error::VMLAUNCH_NON_CLEAR),
        ),
        fresh(
            "vmresume-clear-vmcs",
            vmresume_clear,
            Outcome::FailValid(vm_error::VMRESUME_NON_LAUNCHED),
        ),
        fresh(
            "vmread-no-current-vmcs",
            vmread_no_current_vmcs,
            Outcome::FailInvalid,
        ),
        fresh(
            "vmwrite-no-current-vmcs",
            vmwrite_no_current_vmcs,
            Outcome::FailInvalid,
        ),
        fresh(
            "vmxon-in-root-with-current-vmcs",
            vmxon_with_current_vmcs,
            vmxon_in_root(true),
        ),
        fresh(
            "vmxon-in-root-without-current-vmcs",
            vmxon_without_current_vmcs,
            vmxon_in_root(false),
        ),
        fresh_if("invept-type-0", invept_type_0, invept_rule),
        fresh_if("invvpid-type-4", invvpid_type_4, invvpid_rule),
    ],
};
