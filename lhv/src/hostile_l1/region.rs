//! VMX structures pointed into L0's region. L0 shows its region to its
//! guest as memory that is not there (reads all ones, writes dropped), so
//! a pointer into it must act as a pointer to such memory on hardware: the
//! VM-entry checks of SDM 27.2.1.1 look only at alignment and the
//! physical-address width, so the entry goes on and the processor then
//! reads all ones where it reads the structure:
//! - MSR bitmap: every bit 1, so RDMSR exits (25.6.9, 26.1.3);
//! - I/O bitmap A: every bit 1, so IN from a port below 0x8000 exits
//!   (25.6.4);
//! - VM-entry MSR-load area: entry 1 reads as index 0xFFFFFFFF with bits
//!   63:32 set, so the entry fails loading it (27.4: exit reason 34,
//!   qualification 1);
//! - VMCS link pointer: the revision identifier read there is 0x7FFFFFFF,
//!   not the processor's, so the entry fails as invalid guest state with
//!   qualification 4 (27.3.1.5, 27.8);
//! - virtual-APIC page: nothing is checked but its address (27.2.1.1), so
//!   L2 runs (only where L1 is offered "use TPR shadow").
//!
//! (VMXON, VMPTRLD and VMCLEAR of L0's region are the negative suite's
//! `vmxon-l0-region`, `vmptrld-l0-region` and `vmclear-l0-region`.)

use lhv::negative_cases::{Outcome, Skip, entry_qual};
use shared::vmx::VmcsField as F;
use shared::vmx::controls::PrimaryProcBased as P;
use shared::vmx::exit::ExitReason;
use shared::x86::msr;

use super::{Case, Group, Stub, Verdict, exit, l2_at, need_l0};
use crate::exit::gpr;
use crate::negative::{Env, Page};

/// I/O bitmap B (all zeros: ports 0x8000-0xFFFF do not exit).
static IO_B: Page = Page::new();

/// The port L2 reads (POST diagnostics: reading it has no effect).
pub const PORT: u64 = 0x80;

/// The qualification of an I/O exit of `in al, dx` from `port` (SDM
/// 28.2.1, Table 28-5: size 1 (bits 2:0 = 0), IN (bit 3), DX operand (bit
/// 6 = 0), port in bits 31:16).
pub const fn in_al_dx(port: u64) -> u64 {
    const DIRECTION_IN: u64 = 1 << 3;
    (port << 16) | DIRECTION_IN
}

fn msr_bitmap(e: &mut Env) -> Result<Verdict, Skip> {
    let l0 = need_l0(e)?;
    e.fresh();
    e.write(F::MsrBitmapAddress, l0.page(0));
    l2_at(e, Stub::Rdmsr, &[(gpr::RCX, msr::IA32_SYSENTER_CS.into())]);
    Ok(Verdict::is(exit(ExitReason::Rdmsr, 0), e.launch()))
}

fn io_bitmap(e: &mut Env) -> Result<Verdict, Skip> {
    let l0 = need_l0(e)?;
    super::fresh_with_io_bitmaps(e)?;
    IO_B.clear();
    e.write(F::IoBitmapAAddress, l0.page(l0.region_size / 2));
    e.write(F::IoBitmapBAddress, IO_B.pa());
    l2_at(e, Stub::In, &[(gpr::RDX, PORT)]);
    Ok(Verdict::is(
        exit(ExitReason::IoInstruction, in_al_dx(PORT)),
        e.launch(),
    ))
}

fn msr_load_area(e: &mut Env) -> Result<Verdict, Skip> {
    let l0 = need_l0(e)?;
    e.fresh();
    e.write(F::VmEntryMsrLoadCount, 1);
    e.write(F::VmEntryMsrLoadAddress, l0.page(u64::MAX));
    Ok(Verdict::is(Outcome::msr_loading(1), e.launch()))
}

fn link_pointer(e: &mut Env) -> Result<Verdict, Skip> {
    let l0 = need_l0(e)?;
    e.fresh();
    e.write(F::VmcsLinkPointer, l0.page(4096));
    Ok(Verdict::is(
        Outcome::guest_state(entry_qual::LINK_POINTER),
        e.launch(),
    ))
}

fn virtual_apic(e: &mut Env) -> Result<Verdict, Skip> {
    let l0 = need_l0(e)?;
    if !e.allows(F::PrimaryProcBasedVmExecControls, P::USE_TPR_SHADOW.bits()) {
        return Err(Skip::Unsupported("\"use TPR shadow\" not offered"));
    }
    e.fresh();
    e.set_bits(
        F::PrimaryProcBasedVmExecControls,
        P::USE_TPR_SHADOW.bits().into(),
    );
    e.write(F::VirtualApicAddress, l0.page(0));
    e.write(F::TprThreshold, 0);
    Ok(Verdict::is(Outcome::Success, e.launch()))
}

pub const GROUP: Group = Group {
    what: "pointers into L0's region (SDM 27.2.1.1, 27.3.1.5, 27.4)",
    cases: &[
        Case {
            name: "msr-bitmap-in-l0-region",
            run: msr_bitmap,
        },
        Case {
            name: "io-bitmap-in-l0-region",
            run: io_bitmap,
        },
        Case {
            name: "msr-load-area-in-l0-region",
            run: msr_load_area,
        },
        Case {
            name: "vmcs-link-pointer-in-l0-region",
            run: link_pointer,
        },
        Case {
            name: "virtual-apic-page-in-l0-region",
            run: virtual_apic,
        },
    ],
};
