//! L0's VMCS shadowing of L1 (SDM 25.10): while L1 has a current VMCS12,
//! VMCS01 has "VMCS shadowing" on and its VMCS link pointer names this
//! CPU's shadow VMCS, which holds the fields of `shared::vmx::shadow`. L1's
//! VMREAD and VMWRITE of them run without a VM exit; every other field
//! exits as before and L0 serves it from VMCS12. The two sets are disjoint,
//! so the shadow and VMCS12 never hold two versions of one field that L1
//! can see.
//!
//! The copies between them (KVM's `copy_shadow_to_vmcs12` and
//! `copy_vmcs12_to_shadow` do the same):
//! - *pull* (shadow -> VMCS12, the read-write fields) before L0 handles any
//!   other VMX instruction of L1's (VMLAUNCH, VMRESUME, VMPTRLD, VMCLEAR,
//!   VMXOFF, INVEPT...), which read or replace VMCS12;
//! - *push* (VMCS12 -> shadow, every shadowed field) before L1 runs again
//!   after a pull: L0 may have changed VMCS12 meanwhile (a reflected exit,
//!   a VM-entry failure, a VMfailValid's error number) or made another
//!   VMCS12 current.
//!
//! L0 reads the shadowed fields of VMCS12 only in those handlers and while
//! L2 runs (after the pull of its VMLAUNCH/VMRESUME), never while L1 runs
//! (`shared::vmx::shadow` lists the fields L0 consults then, none shadowed).

use core::sync::atomic::{AtomicBool, Ordering};

use shared::vmx::controls::SecondaryProcBased;
use shared::vmx::insn::{self as hw, GuardedVmcs};
use shared::vmx::shadow::{self, Bitmap, READ_ONLY, READ_WRITE};
use shared::vmx::{VmcsAccess, VmcsField as F};

use super::OnVmcs01;
use crate::vcpu::Vcpu;

/// L0 shadows L1's VMCS (decided once, by [`init`]).
static ENABLED: AtomicBool = AtomicBool::new(false);
/// The processor's VMWRITE may write exit information (IA32_VMX_MISC bit
/// 29), so the shadow can hold it for L1's VMREADs.
static WITH_EXIT_INFO: AtomicBool = AtomicBool::new(false);

static VMREAD_BITMAP: Bitmap = shadow::vmread_bitmap(true);
static VMREAD_BITMAP_RW: Bitmap = shadow::vmread_bitmap(false);
static VMWRITE_BITMAP: Bitmap = shadow::vmwrite_bitmap();

/// Decides whether L0 shadows L1's VMCS: the processor offers VMCS
/// shadowing and L0's command line does not say `vmcs_shadow=off`.
pub fn init(cmdline: &str, caps: &shared::vmx::VmxCaps) {
    let on =
        caps.has_vmcs_shadowing() && shared::cmdline::get(cmdline, "vmcs_shadow") != Some("off");
    WITH_EXIT_INFO.store(caps.misc.vmwrite_exit_info, Ordering::Relaxed);
    ENABLED.store(on, Ordering::Release);
}

/// Whether L0 shadows L1's VMCS.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

fn with_exit_info() -> bool {
    WITH_EXIT_INFO.load(Ordering::Relaxed)
}

/// The physical addresses of the VMREAD and VMWRITE bitmaps (VMCS01).
pub fn bitmaps() -> (u64, u64) {
    let read = if with_exit_info() {
        &VMREAD_BITMAP
    } else {
        &VMREAD_BITMAP_RW
    };
    (
        shared::boot::layout::phys_of(read as *const Bitmap),
        shared::boot::layout::phys_of(&raw const VMWRITE_BITMAP),
    )
}

/// One CPU's shadowing state.
#[derive(Debug, Default)]
pub struct State {
    /// The shadow VMCS region is stamped and cleared.
    ready: bool,
    /// VMCS01 has VMCS shadowing on, linked to the shadow.
    linked: bool,
    /// The shadow holds the current VMCS12's shadowed fields, and L1 may
    /// have changed them: VMCS12's copies are stale until a pull.
    live: bool,
}

impl State {
    /// L1 runs with the shadow live: VMCS12's copies of the shadowed
    /// fields may be older than the shadow's (for dumps).
    pub fn is_live(&self) -> bool {
        self.live
    }
}

/// Runs `f` with this CPU's shadow VMCS current, then makes VMCS01 current
/// again. False if either VMPTRLD failed (then VMCS01 is current: a failed
/// VMPTRLD leaves the current VMCS as it was, SDM 31.3).
fn on_shadow(vcpu: &mut Vcpu, _on: &OnVmcs01, f: impl FnOnce(&mut Vcpu)) -> bool {
    let pa = shared::boot::layout::phys_of(&raw const vcpu.nested.store.shadow);
    // SAFETY: `pa` is this CPU's shadow VMCS region, stamped and cleared
    // (`State::ready`), used by no other CPU.
    if unsafe { hw::vmptrld(pa) }.is_err() {
        return false;
    }
    f(vcpu);
    // SAFETY: VMCS01 is this CPU's, set up by `vmcs01::setup`.
    unsafe { hw::vmptrld(vcpu.vmcs_phys) }.is_ok()
}

/// Shadow -> VMCS12 (read-write fields), if the shadow is live: before L0
/// handles a VMX instruction of L1's other than VMREAD/VMWRITE. Only with
/// VMCS01 current (L1's instructions exit to it; the shadow is never live
/// while L2 runs).
pub fn pull(vcpu: &mut Vcpu) {
    let Some(on) = vcpu.nested.on_vmcs01() else {
        return;
    };
    let Some(slot) = vcpu.nested.current else {
        return;
    };
    if !vcpu.nested.shadow.live {
        return;
    }
    vcpu.nested.shadow.live = false;
    let ok = on_shadow(vcpu, &on, |vcpu| {
        let vmcs12 = &mut vcpu.nested.store.vmcs12[slot];
        for f in READ_WRITE {
            // SAFETY: the shadow VMCS is current (`on_shadow`).
            if let Ok(value) = unsafe { hw::vmread(f.encoding()) } {
                vmcs12.write(f, value);
            }
        }
    });
    if !ok {
        shared::cpu_println!("nested: VMPTRLD of the shadow VMCS failed (pull)");
    }
}

/// Before L1 runs (VMCS01 current, L1 next; called by `exits::finish`
/// and, after a VMCS02 the processor refused, by `vcpu::entry_failed`): VMCS shadowing on exactly
/// while L1 has a current VMCS12, and the shadow filled from it after a
/// pull. With no current VMCS, L1's VMREAD and VMWRITE exit and fail as
/// VMfailInvalid (L0's handlers), and outside VMX operation they are #UD:
/// the hardware's VMfailInvalid for a link pointer of all ones (SDM 31.3)
/// would be wrong there.
pub fn before_l1(vcpu: &mut Vcpu, v: &mut GuardedVmcs<'_>) {
    if !enabled() {
        return;
    }
    let Some(on) = vcpu.nested.on_vmcs01() else {
        return;
    };
    let want = vcpu.nested.current.is_some();
    if want && !vcpu.nested.shadow.live {
        if !vcpu.nested.shadow.ready {
            let region = &mut vcpu.nested.store.shadow;
            region.stamp(crate::caps().basic.revision_id, true);
            let pa = shared::boot::layout::phys_of(&raw const *region);
            // SAFETY: this CPU's shadow region, stamped, not current; a
            // VMCLEAR of a VMCS that is not current leaves VMCS01 current.
            vcpu.nested.shadow.ready = unsafe { hw::vmclear(pa) }.is_ok();
        }
        let pushed = vcpu.nested.shadow.ready && push(vcpu, &on);
        if !pushed {
            shared::cpu_println!("nested: the shadow VMCS cannot be loaded; L1's VMREADs exit");
        }
        vcpu.nested.shadow.live = pushed;
    }
    let link = want && vcpu.nested.shadow.live;
    if link != vcpu.nested.shadow.linked {
        set_link(vcpu, v, link);
    }
}

/// VMCS12 -> shadow, every shadowed field.
fn push(vcpu: &mut Vcpu, on: &OnVmcs01) -> bool {
    let Some(slot) = vcpu.nested.current else {
        return false;
    };
    let exit_info = with_exit_info();
    on_shadow(vcpu, on, |vcpu| {
        let vmcs12 = &vcpu.nested.store.vmcs12[slot];
        let ro: &[F] = if exit_info { &READ_ONLY } else { &[] };
        for f in READ_WRITE.iter().chain(ro) {
            // SAFETY: the shadow VMCS is current (`on_shadow`), an L0
            // region no processor enters (a shadow VMCS cannot be).
            let _ = unsafe { hw::vmwrite(f.encoding(), vmcs12.read(*f)) };
        }
    })
}

/// VMCS01's "VMCS shadowing" control and link pointer.
fn set_link(vcpu: &mut Vcpu, v: &mut GuardedVmcs<'_>, on: bool) {
    let bit = u64::from(SecondaryProcBased::VMCS_SHADOWING.bits());
    let proc2 = v.read(F::SecondaryProcBasedVmExecControls);
    let shadow = shared::boot::layout::phys_of(&raw const vcpu.nested.store.shadow);
    // SAFETY: the link pointer names this CPU's shadow VMCS (L0's region,
    // stamped as a shadow VMCS, never entered) or none; the control only
    // lets L1's VMREAD/VMWRITE of the bitmaps' fields reach that shadow.
    unsafe {
        v.write_sensitive(F::VmcsLinkPointer, if on { shadow } else { u64::MAX });
        v.write_sensitive(
            F::SecondaryProcBasedVmExecControls,
            if on { proc2 | bit } else { proc2 & !bit },
        );
    }
    vcpu.nested.shadow.linked = on;
}
