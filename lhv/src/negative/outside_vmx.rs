//! VMX instructions outside VMX operation (SDM 31.3): after VMXOFF,
//! VMREAD, VMPTRLD, VMCLEAR and VMLAUNCH raise #UD; VMXON checks its
//! pointer (VMfailInvalid for an unaligned one, one beyond MAXPHYADDR, a
//! wrong revision identifier, one in L0's region) and raises #UD with
//! CR4.VMXE = 0; at CPL 3, VMREAD still raises #UD and VMXON #GP(0). The
//! cases run in order from one VMXOFF to the final
//! VMXON that restores VMX operation (each starts from the previous one's
//! state).

use lhv::negative_cases::{Outcome, Skip, beyond_phys_width, l0_region};
use shared::vmx::VmcsField as F;
use shared::vmx::insn::Vmxon;
use shared::x86;

use super::{Action, Case, Env, Expect, Group, Page, cpl3, guard};

const CR4_VMXE: u64 = 1 << 13;
/// A VMXON region with a wrong revision identifier.
static WRONG_REVISION: Page = Page::new();

const fn sequel(name: &'static str, run: fn(&mut Env) -> Outcome, expected: Outcome) -> Case {
    Case {
        name,
        action: Action::Sequel(run),
        expect: Expect::Is(expected),
    }
}

fn vmxoff(e: &mut Env) -> Outcome {
    // A fresh VMCS, cleared so that its data is in memory (SDM 25.11.1).
    e.fresh();
    match guard::vmclear(e.ctx.vmcs_pa) {
        Outcome::Success => {}
        other => return other,
    }
    let o = guard::vmxoff();
    if o == Outcome::Success {
        // The token is void outside VMX operation.
        e.ctx.vmx = None;
    }
    o
}

fn vmread(_: &mut Env) -> Outcome {
    guard::vmread(F::GuestRip.encoding().into()).0
}

fn vmptrld(e: &mut Env) -> Outcome {
    guard::vmptrld(e.ctx.vmcs_pa)
}

fn vmclear(e: &mut Env) -> Outcome {
    guard::vmclear(e.ctx.vmcs_pa)
}

fn vmlaunch(_: &mut Env) -> Outcome {
    guard::vmlaunch_outside_vmx()
}

fn vmxon_unaligned(e: &mut Env) -> Outcome {
    guard::vmxon(e.vmxon_pa + 8)
}

fn vmxon_beyond_width(e: &mut Env) -> Outcome {
    guard::vmxon(beyond_phys_width(e.max_phys))
}

fn vmxon_wrong_revision(e: &mut Env) -> Outcome {
    WRONG_REVISION.clear();
    let wrong = !e.caps.basic.revision_id & 0x7fff_ffff;
    WRONG_REVISION.set(0, wrong.into());
    guard::vmxon(WRONG_REVISION.pa())
}

fn vmxon_l0_region(e: &mut Env) -> Outcome {
    guard::vmxon(e.l0.map_or(0, |l0| l0.page(u64::MAX)))
}

fn vmxon_l0_rule(e: &Env) -> Result<Outcome, Skip> {
    if e.l0.is_some() {
        Ok(l0_region::VMXON)
    } else {
        Err(Skip::NoL0)
    }
}

fn vmxon_cr4_vmxe_clear(e: &mut Env) -> Outcome {
    let cr4 = x86::read_cr4();
    // SAFETY: outside VMX operation CR4.VMXE may be cleared; it is set
    // again right after the VMXON attempt.
    unsafe { x86::write_cr4(cr4 & !CR4_VMXE) };
    let o = guard::vmxon(e.vmxon_pa);
    // SAFETY: restores the value read above.
    unsafe { x86::write_cr4(cr4) };
    o
}

fn vmxon_again(e: &mut Env) -> Outcome {
    let o = guard::vmxon(e.vmxon_pa);
    if o == Outcome::Success {
        // SAFETY: VMXON just succeeded on this CPU.
        e.ctx.vmx = Some(unsafe { Vmxon::assume_enabled() });
    }
    o
}

/// A fresh VMCS enters L2 again after the round trip.
fn entry_after_vmxon(e: &mut Env) -> Outcome {
    if e.ctx.vmx.is_none() {
        return Outcome::FailInvalid;
    }
    e.fresh();
    e.launch()
}

pub const GROUP: Group = Group {
    section: "31.3 VMX instructions outside VMX operation",
    cases: &[
        sequel("vmxoff", vmxoff, Outcome::Success),
        sequel("vmread-outside-vmx", vmread, Outcome::UD),
        sequel("vmptrld-outside-vmx", vmptrld, Outcome::UD),
        sequel("vmclear-outside-vmx", vmclear, Outcome::UD),
        sequel("vmlaunch-outside-vmx", vmlaunch, Outcome::UD),
        // Outside VMX operation #UD comes before the CPL check; VMXON
        // checks CPL (CR4.VMXE is 1).
        sequel(
            "vmread-at-cpl3-outside-vmx",
            |_| cpl3::vmread(),
            Outcome::UD,
        ),
        sequel("vmxon-at-cpl3-outside-vmx", |_| cpl3::vmxon(), Outcome::GP0),
        sequel("vmxon-unaligned", vmxon_unaligned, Outcome::FailInvalid),
        sequel(
            "vmxon-beyond-width",
            vmxon_beyond_width,
            Outcome::FailInvalid,
        ),
        sequel(
            "vmxon-wrong-revision",
            vmxon_wrong_revision,
            Outcome::FailInvalid,
        ),
        Case {
            name: "vmxon-l0-region",
            action: Action::Sequel(vmxon_l0_region),
            expect: Expect::Rule(vmxon_l0_rule),
        },
        sequel("vmxon-cr4-vmxe-clear", vmxon_cr4_vmxe_clear, Outcome::UD),
        sequel("vmxon-again", vmxon_again, Outcome::Success),
        sequel("entry-after-vmxon", entry_after_vmxon, Outcome::Success),
    ],
};
