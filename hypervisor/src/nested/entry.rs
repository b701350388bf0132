//! A nested VM entry: L1's VMLAUNCH or VMRESUME (SDM Vol. 3C chapter 27).
//!
//! Phases: the instruction's own checks (current VMCS, MOV-SS blocking,
//! launch state) -> the VM-entry checks on VMCS12's controls and host state
//! (27.2: VMfailValid 7 or 8) -> from here the entry happens and failures
//! are VM exits to L1: guest state (27.3: exit reason 33) -> VM-entry MSR
//! loads (27.4: exit reason 34) -> VMCS02 prepared and made current -> the
//! exit stub enters it. All checks are L0's, in software, so that L1 gets
//! the hardware's answers and the processor never refuses VMCS02.

use shared::exit_profile::Phase;
use shared::nmi_inject::BLOCKING_BY_NMI;
use shared::vmx::controls::{PinBased, PrimaryProcBased, SecondaryProcBased};
use shared::vmx::insn::{
    self as hw, GuardedVmcs, InvvpidDescriptor, InvvpidType, VmInstructionError as E,
};
use shared::vmx::nested::entry_checks::{self, CheckCtx, EntryFailure};
use shared::vmx::nested::vmcs02::{self, ExitInfo, L0Part, L1State};
use shared::vmx::{ExitReason, FieldGroup, MemVmcs, Nested, VmcsAccess, VmcsField as F};

use super::insn::{Outcome, finish, vmfail};
use super::{OnVmcs01, OnVmcs02, msr_areas};
use crate::exits::Exit;
use crate::memory::GuestMemory;
use crate::vcpu::{Resume, Vcpu};
use crate::vmcs01;

/// Interruptibility state: blocking by MOV SS (SDM 25.4.2).
const BLOCKING_BY_MOV_SS: u64 = 1 << 1;
/// Bit 31 of the exit reason: VM-entry failure.
pub const ENTRY_FAILURE: u32 = 1 << 31;

/// VMLAUNCH (`launch`) or VMRESUME of L1, VMCS01 current.
pub fn enter(
    vcpu: &mut Vcpu,
    v: &mut GuardedVmcs<'_>,
    exit: &Exit,
    launch: bool,
) -> Option<Resume> {
    // An NMI for L1 that it can take now comes first: it is delivered
    // before the instruction, which L1 executes again after its handler.
    if vcpu.nmis_pending > 0 && v.read32(F::GuestInterruptibilityState) & BLOCKING_BY_NMI == 0 {
        return Some(Resume::Guest);
    }
    // L1's VMLAUNCH/VMRESUME exits from VMCS01.
    crate::exit_profile::phase_start(&mut vcpu.phases);
    let on = vcpu.nested.on_vmcs01()?;
    let Some(slot) = vcpu.nested.current else {
        return finish(vcpu, v, exit, Outcome::FailInvalid);
    };
    if v.read(F::GuestInterruptibilityState) & BLOCKING_BY_MOV_SS != 0 {
        return finish(vcpu, v, exit, vmfail(vcpu, E::EntryEventsBlockedByMovSs));
    }
    let launched = vcpu.nested.cache.meta(slot).launched;
    if launch && launched {
        return finish(vcpu, v, exit, vmfail(vcpu, E::VmlaunchNonClearVmcs));
    }
    if !launch && !launched {
        return finish(vcpu, v, exit, vmfail(vcpu, E::VmresumeNonLaunchedVmcs));
    }
    let Some(msrs) = super::l1_msrs() else {
        return finish(vcpu, v, exit, Outcome::FailInvalid);
    };
    let l1_caps = msrs.caps();
    let ctx = CheckCtx {
        caps: &l1_caps,
        mem: &GuestMemory,
        maxphyaddr: crate::ept01::max_phys_addr(),
        vmcs_revision: crate::caps().basic.revision_id,
        in_ia32e_mode: v.read(F::GuestIa32Efer) & vmcs01::efer::LMA != 0,
        current_vmcs: vcpu.nested.current_vmcs12_addr(),
    };
    let vmcs12 = &vcpu.nested.store.vmcs12[slot];
    match entry_checks::check_all(vmcs12, &ctx) {
        Ok(()) => {}
        Err(EntryFailure::VmFail { error, check }) => {
            trace_failure(vcpu, check);
            return finish(vcpu, v, exit, Outcome::FailValid(error));
        }
        Err(EntryFailure::InvalidGuestState {
            qualification,
            check,
        }) => {
            trace_failure(vcpu, check);
            return fail_entry(
                vcpu,
                v,
                &on,
                ExitReason::EntryFailureGuestState,
                qualification,
            );
        }
    }
    crate::exit_profile::phase_end(&mut vcpu.phases, Phase::EntryChecks);
    // The entry happens: L1's state is what its VM exits start from.
    let nested = &mut vcpu.nested;
    nested.l1_cr0 = vmcs01::guest_cr0(v);
    nested.l1_cr4 = vmcs01::guest_cr4(v);
    let l1 = L1State {
        dr7: v.read(F::GuestDr7),
        debugctl: v.read(F::GuestIa32Debugctl),
        efer: v.read(F::GuestIa32Efer),
        pat: v.read(F::GuestIa32Pat),
    };
    let mut loads = msr_areas::FieldLoads::new();
    let vmcs12 = &nested.store.vmcs12[slot];
    let efer = msr_areas::EferState {
        paging: vmcs12.read(F::GuestCr0) & vmcs01::cr0::PG != 0,
        efer: vmcs02::l2_efer(vmcs12, &l1),
    };
    if let Err(e) = msr_areas::entry_load(vcpu.index, vmcs12, efer, &mut loads) {
        return fail_entry(
            vcpu,
            v,
            &on,
            ExitReason::EntryFailureMsrLoading,
            u64::from(e.index),
        );
    }
    crate::exit_profile::phase_end(&mut vcpu.phases, Phase::EntryMsrLoads);
    // VMCS01's host state is needed only for a VMCS02 not yet in use.
    let host = (!vcpu.nested.cache.meta(slot).vmcs02_ready).then(|| HostState::read(v));
    let l0 = l0_part(vcpu, slot);
    crate::exit_profile::phase_end(&mut vcpu.phases, Phase::EntryL0Part);
    let _on02 = match load_vmcs02(vcpu, on, slot, host.as_ref()) {
        Ok(on02) => on02,
        Err(on) => {
            shared::cpu_println!("nested: VMPTRLD of VMCS02 failed");
            return fail_entry(vcpu, v, &on, ExitReason::EntryFailureGuestState, 0);
        }
    };
    crate::exit_profile::phase_end(&mut vcpu.phases, Phase::EntryLoadVmcs02);
    let nested = &mut vcpu.nested;
    vmcs02::prepare_vmcs02(&nested.store.vmcs12[slot], &l1, &l0, crate::caps(), v);
    crate::exit_profile::phase_end(&mut vcpu.phases, Phase::EntryPrepare);
    for (f, value) in vmcs02::pointers(&l0) {
        // SAFETY: L0's own bitmap pages of this CPU and L0's EPT (EPT01,
        // which never maps L0's region); no MSR areas; no link pointer.
        unsafe { v.write_sensitive(f, value) };
    }
    for (f, value) in loads {
        v.write(f, msr_areas::as_loaded(f, value, v.read(f)));
    }
    nested.cache.meta_mut(slot).launched = true;
    nested.entries += 1;
    if nested.trace {
        shared::cpu_println!(
            "nested entry {} L2 RIP {:#x}",
            if launch { "VMLAUNCH" } else { "VMRESUME" },
            v.read(F::GuestRip)
        );
    }
    // All of L1's VPIDs share VPID02: without VPID a VM entry flushes
    // L2's linear mappings (SDM 29.4.3.1); with it, VPID02 is flushed
    // when it changes hands (KVM's `last_vpid`).
    let c = vmcs02::Controls12::read(&nested.store.vmcs12[slot]);
    let vpid12 = c
        .proc2(SecondaryProcBased::ENABLE_VPID)
        .then(|| nested.store.vmcs12[slot].read16(F::VirtualProcessorId));
    if vpid12.is_none() || vpid12 != nested.vpid12 {
        flush_vpid(vpid02(vcpu.index));
    }
    nested.vpid12 = vpid12;
    crate::exit_profile::phase_end(&mut vcpu.phases, Phase::EntryFinish);
    Some(Resume::Guest)
}

fn trace_failure(vcpu: &Vcpu, check: &str) {
    if vcpu.nested.trace {
        shared::cpu_println!("nested entry fails: {check}");
    }
}

/// VMCS02's VPID (VMCS01 uses index + 1).
pub fn vpid02(index: usize) -> u16 {
    (index + 1 + shared::percpu::MAX_CPUS) as u16
}

/// Invalidates the linear mappings of `vpid` (single context, else all).
pub fn flush_vpid(vpid: u16) {
    let d = InvvpidDescriptor::new(vpid, 0);
    // SAFETY: INVVPID only drops TLB entries; L0 runs in VMX root.
    unsafe {
        if hw::invvpid(InvvpidType::SingleContext, &d).is_err() {
            let _ = hw::invvpid(InvvpidType::AllContext, &d);
        }
    }
}

/// A VM-entry failure after the checks of 27.2 (SDM 27.8): L1 gets a VM
/// exit with the reason's bit 31 set, its host state and VM-exit MSR loads.
fn fail_entry(
    vcpu: &mut Vcpu,
    v: &mut impl VmcsAccess,
    on: &OnVmcs01,
    reason: ExitReason,
    qualification: u64,
) -> Option<Resume> {
    let Some(slot) = vcpu.nested.current else {
        return Some(Resume::Guest);
    };
    vcpu.nested.l1_cr0 = vmcs01::guest_cr0(v);
    vcpu.nested.l1_cr4 = vmcs01::guest_cr4(v);
    let info = ExitInfo::synthetic(reason.number() | ENTRY_FAILURE, qualification);
    vmcs02::write_exit_info(&mut vcpu.nested.store.vmcs12[slot], &info);
    super::exit::load_l1(vcpu, v, on, false);
    Some(Resume::Guest)
}

/// VMCS01's host-state fields, which every VMCS02 shares (VMCS02's exits
/// come to L0's exit stub on the same stack): the host group of the field
/// table, but for the fields of features L0 does not use.
fn host_fields() -> impl Iterator<Item = F> {
    F::ALL
        .iter()
        .copied()
        .filter(|f| f.group() == FieldGroup::Host && f.nested() != Nested::Unsupported)
}

/// A copy of VMCS01's host state, taken while VMCS01 is current.
struct HostState(MemVmcs);

impl HostState {
    fn read(v01: &impl VmcsAccess) -> Self {
        let mut m = MemVmcs::new();
        for f in host_fields() {
            m.write(f, v01.read(f));
        }
        Self(m)
    }
}

/// Makes the slot's VMCS02 current; a VMCS02 not yet in use (`host`:
/// VMCS01's host state, read by the caller only then) is cleared and given
/// L0's host state first.
fn load_vmcs02(
    vcpu: &mut Vcpu,
    on: OnVmcs01,
    slot: usize,
    host: Option<&HostState>,
) -> Result<OnVmcs02, OnVmcs01> {
    let n = &mut vcpu.nested;
    let region = &mut n.store.vmcs02[slot];
    let pa = shared::boot::layout::phys_of(&raw const *region);
    if host.is_some() {
        region.stamp(crate::caps().basic.revision_id, false);
        // SAFETY: `pa` is this CPU's VMCS02 region of `slot`, stamped; not
        // current.
        // A failed VMCLEAR or VMPTRLD leaves the current VMCS as it was
        // (SDM 31.3): VMCS01.
        if unsafe { hw::vmclear(pa) }.is_err() {
            return Err(on);
        }
    }
    // SAFETY: as above; VMCS01 stays valid in memory and is reloaded on
    // the way back to L1.
    if unsafe { hw::vmptrld(pa) }.is_err() {
        return Err(on);
    }
    let on02 = n.now_on_vmcs02(on, slot);
    if let Some(host) = host {
        // SAFETY: VMCS02 is current (just loaded).
        let vmx = unsafe { hw::Vmxon::assume_enabled() };
        let mut v02 = vmx.guarded_vmcs();
        for f in host_fields() {
            let value = host.0.read(f);
            // SAFETY: VMCS01's host state, which returns to L0's exit stub
            // on this CPU's exit stack, as every VMCS02 exit must.
            unsafe { v02.write_sensitive(f, value) };
        }
        let m = n.cache.meta_mut(slot);
        m.vmcs02_ready = true;
        m.vmcs02_launched = false;
    }
    Ok(on02)
}

/// What L0 adds to VMCS02 (see `vmcs02::L0Part`), with L1's MSR bitmap
/// merged into L0's page and L1's I/O bitmaps (see `bitmaps`).
fn l0_part(vcpu: &mut Vcpu, slot: usize) -> L0Part {
    let caps = crate::caps();
    // L1 uses EPT: VMCS02 runs with the EPT02 of VMCS12's EPTP.
    let eptp02 = super::ept02::entry_eptp(vcpu, slot);
    let n = &mut vcpu.nested;
    let vmcs12 = &n.store.vmcs12[slot];
    let c = vmcs02::Controls12::read(vmcs12);
    if c.proc(PrimaryProcBased::USE_MSR_BITMAPS) {
        super::bitmaps::merge_msr_bitmap(vmcs12.read(F::MsrBitmapAddress), &mut n.store.msr_bitmap);
    }
    let phys = |p: &super::Page| shared::boot::layout::phys_of(p as *const super::Page);
    let [a, b] = &mut n.store.io_bitmaps;
    let io_bitmaps = if c.proc(PrimaryProcBased::USE_IO_BITMAPS) {
        (
            super::bitmaps::io_bitmap(vmcs12.read(F::IoBitmapAAddress), a),
            super::bitmaps::io_bitmap(vmcs12.read(F::IoBitmapBAddress), b),
        )
    } else {
        (phys(a), phys(b))
    };
    let pdptes = vmcs02::l2_uses_pae_paging(vmcs12).then(|| {
        // With EPT the PDPTEs come from VMCS12's guest state (SDM 27.3.2.4).
        if eptp02.is_some() {
            return vmcs02::PDPTE_FIELDS.map(|f| vmcs12.read(f));
        }
        let base = vmcs12.read(F::GuestCr3) & 0xffff_ffe0;
        core::array::from_fn(|i| {
            use shared::mem::PhysMemory;
            GuestMemory.read_u64(base + 8 * i as u64).unwrap_or(0)
        })
    });
    L0Part {
        pin: crate::controls().pin & (PinBased::NMI_EXITING | PinBased::VIRTUAL_NMIS).bits(),
        proc2: (SecondaryProcBased::ENABLE_EPT | SecondaryProcBased::ENABLE_VPID).bits(),
        eptp: eptp02.unwrap_or_else(|| crate::ept01::eptp().map_or(0, |e| e.0)),
        vpid: vpid02(vcpu.index),
        msr_bitmap: phys(&n.store.msr_bitmap),
        io_bitmaps,
        tsc_offset: 0,
        // An unrestricted L2 owns PE and PG (SDM 26.3.1.1).
        cr0_fixed_mask: (caps.cr0_fixed0 | !caps.cr0_fixed1)
            & 0xffff_ffff
            & if c.proc2(SecondaryProcBased::UNRESTRICTED_GUEST) {
                !(vmcs01::cr0::PE | vmcs01::cr0::PG)
            } else {
                !0
            },
        cr4_fixed_mask: (caps.cr4_fixed0 | !caps.cr4_fixed1) & 0xffff_ffff,
        pdptes,
    }
}
