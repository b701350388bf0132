//! Valid VMCS12 fixtures for host tests (this module's and others', e.g.
//! the VMCS02 preparation): a 64-bit guest, a real-mode unrestricted guest
//! and a 32-bit PAE guest, each with a 64-bit host, over the capabilities L1
//! sees on Bochs corei7_skylake_x, and the memory they point into.

use super::arch::*;
use super::{CheckCtx, VMCS_LINK_POINTER_NONE};
use crate::ept::{Eptp, MemoryType};
use crate::mem::{PhysMemory, SparseMemory};
use crate::vmx::caps::VmxCaps;
use crate::vmx::caps::tests::BOCHS;
use crate::vmx::controls::{
    EntryControls, ExitControls, PinBased, PrimaryProcBased, SecondaryProcBased,
};
use crate::vmx::nested::caps::{L1VmxMsrs, NestedFeatures};
use crate::vmx::{MemVmcs, VmcsAccess, VmcsField as F};

/// L1's physical-address width in the fixtures.
pub const MAXPHYADDR: u8 = 40;
/// The VMCS revision identifier (Bochs's).
pub const REVISION: u32 = 0x2b;
/// I/O bitmap A.
pub const IO_BITMAP_A: u64 = 0x10000;
/// I/O bitmap B.
pub const IO_BITMAP_B: u64 = 0x11000;
/// MSR bitmaps.
pub const MSR_BITMAP: u64 = 0x12000;
/// The VM-exit MSR-store area (one entry); the exit-load and entry-load
/// areas follow it.
pub const MSR_AREA: u64 = 0x13000;
/// A VMCS region carrying [`REVISION`] (not a shadow VMCS), for the link
/// pointer.
pub const LINK_VMCS: u64 = 0x14000;
/// The PDPT of the PAE fixture (CR3).
pub const PDPT: u64 = 0x15000;
/// The EPT root of the unrestricted-guest fixture.
pub const EPT_ROOT: u64 = 0x16000;
/// End of the memory the fixtures map (from 0).
pub const MEMORY_END: u64 = 0x20000;
/// Host and guest page-table root of the 64-bit fixtures.
pub const CR3_64: u64 = 0x1000;
/// A present PDPTE of the PAE fixture.
pub const PDPTE0: u64 = 0x17001;

/// A PAT with the reset value's types (WB, WT, UC-, UC twice).
pub const PAT: u64 = 0x0007_0406_0007_0406;
/// CR0: PE, ET, NE, PG.
pub const CR0_64: u64 = 0x8000_0031;
/// CR4: PAE, VMXE.
pub const CR4_64: u64 = 0x2020;
/// EFER: SCE, LME, LMA, NXE.
pub const EFER_64: u64 = 0xd01;

/// L1's capabilities on Bochs corei7_skylake_x with `features`.
pub fn l1_caps(features: NestedFeatures) -> VmxCaps {
    let hw = |m: u32| BOCHS.iter().find(|&&(i, _)| i == m).map_or(0, |&(_, v)| v);
    L1VmxMsrs::compute(hw, features).caps()
}

/// L1's capabilities on Bochs with the core features (no EPT, VPID or
/// unrestricted guest).
pub fn core_caps() -> VmxCaps {
    l1_caps(NestedFeatures::default())
}

/// L1's capabilities on Bochs with EPT, VPID and unrestricted guest.
pub fn full_caps() -> VmxCaps {
    l1_caps(NestedFeatures {
        ept: true,
        vpid: true,
        unrestricted_guest: true,
    })
}

/// L1 memory `[0, MEMORY_END)` with the link VMCS and PDPT filled in.
pub fn memory() -> SparseMemory {
    let mut m = SparseMemory::new();
    m.map(0, MEMORY_END);
    m.write_u32(LINK_VMCS, REVISION).unwrap();
    m.write_u64(PDPT, PDPTE0).unwrap();
    m
}

/// The check context over `caps` and `mem` (L1 in IA-32e mode).
pub fn ctx<'a>(caps: &'a VmxCaps, mem: &'a SparseMemory) -> CheckCtx<'a, SparseMemory> {
    CheckCtx::new(caps, mem, MAXPHYADDR, REVISION)
}

/// The control fields: exits on external interrupts and NMIs with virtual
/// NMIs, HLT exiting, I/O and MSR bitmaps, RDTSCP, one entry in each MSR
/// area; a 64-bit host with EFER and PAT switched and debug controls
/// loaded; `entry` added to the VM-entry controls and `proc2` to the
/// secondary ones.
fn write_controls(
    v: &mut MemVmcs,
    caps: &VmxCaps,
    entry: EntryControls,
    proc2: SecondaryProcBased,
) {
    let pin = PinBased::EXTERNAL_INTERRUPT_EXITING | PinBased::NMI_EXITING | PinBased::VIRTUAL_NMIS;
    let proc = PrimaryProcBased::HLT_EXITING
        | PrimaryProcBased::USE_IO_BITMAPS
        | PrimaryProcBased::USE_MSR_BITMAPS
        | PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS;
    let exit = ExitControls::HOST_ADDRESS_SPACE_SIZE
        | ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT
        | ExitControls::SAVE_IA32_EFER
        | ExitControls::LOAD_IA32_EFER
        | ExitControls::SAVE_IA32_PAT
        | ExitControls::LOAD_IA32_PAT
        | ExitControls::SAVE_DEBUG_CONTROLS;
    let entry = entry
        | EntryControls::LOAD_IA32_EFER
        | EntryControls::LOAD_IA32_PAT
        | EntryControls::LOAD_DEBUG_CONTROLS;
    let proc2 = proc2 | SecondaryProcBased::ENABLE_RDTSCP;
    let req = |cap: crate::vmx::ControlCap, bits: u32| u64::from(cap.require(bits).unwrap());
    v.write(
        F::PinBasedVmExecControls,
        req(caps.pin.effective(), pin.bits()),
    );
    v.write(
        F::PrimaryProcBasedVmExecControls,
        req(caps.proc.effective(), proc.bits()),
    );
    v.write(
        F::SecondaryProcBasedVmExecControls,
        req(caps.proc2, proc2.bits()),
    );
    v.write(F::VmExitControls, req(caps.exit.effective(), exit.bits()));
    v.write(
        F::VmEntryControls,
        req(caps.entry.effective(), entry.bits()),
    );
    v.write(F::IoBitmapAAddress, IO_BITMAP_A);
    v.write(F::IoBitmapBAddress, IO_BITMAP_B);
    v.write(F::MsrBitmapAddress, MSR_BITMAP);
    v.write(F::VmExitMsrStoreAddress, MSR_AREA);
    v.write(F::VmExitMsrStoreCount, 1);
    v.write(F::VmExitMsrLoadAddress, MSR_AREA + 0x10);
    v.write(F::VmExitMsrLoadCount, 1);
    v.write(F::VmEntryMsrLoadAddress, MSR_AREA + 0x20);
    v.write(F::VmEntryMsrLoadCount, 1);
    v.write(F::Cr3TargetCount, 0);
    v.write(F::VmEntryInterruptionInfo, 0);
    // Fields of controls that are off: garbage must not matter.
    v.write(F::VirtualApicAddress, u64::MAX);
    v.write(F::ApicAccessAddress, u64::MAX);
    v.write(F::EptPointer, u64::MAX);
    v.write(F::PmlAddress, u64::MAX);
}

/// A 64-bit host (SDM 27.2.2-27.2.4).
fn write_host(v: &mut MemVmcs) {
    v.write(F::HostCr0, CR0_64);
    v.write(F::HostCr3, CR3_64);
    v.write(F::HostCr4, CR4_64);
    v.write(F::HostCsSelector, 0x08);
    for f in [F::HostSsSelector, F::HostDsSelector, F::HostEsSelector] {
        v.write(f, 0x10);
    }
    v.write(F::HostTrSelector, 0x18);
    v.write(F::HostGdtrBase, 0x5000);
    v.write(F::HostIdtrBase, 0x6000);
    v.write(F::HostTrBase, 0x7000);
    v.write(F::HostFsBase, 0xffff_8000_0000_0000);
    v.write(F::HostIa32Efer, EFER_64);
    v.write(F::HostIa32Pat, PAT);
    v.write(F::HostRsp, 0x30_0000);
    v.write(F::HostRip, 0xffff_ffff_8000_1000);
}

/// Writes one guest segment register.
pub fn write_segment(
    v: &mut MemVmcs,
    fields: [F; 4],
    selector: u16,
    base: u64,
    limit: u32,
    ar: u32,
) {
    let [s, b, l, a] = fields;
    v.write(s, selector.into());
    v.write(b, base);
    v.write(l, limit.into());
    v.write(a, ar.into());
}

/// The guest state every fixture shares: tables, MSRs, non-register state.
fn write_guest_common(v: &mut MemVmcs) {
    write_segment(v, super::LDTR, 0, 0, 0, AR_UNUSABLE);
    v.write(F::GuestGdtrBase, 0x5000);
    v.write(F::GuestGdtrLimit, 0x1f);
    v.write(F::GuestIdtrBase, 0x6000);
    v.write(F::GuestIdtrLimit, 0xfff);
    v.write(F::GuestIa32Pat, PAT);
    v.write(F::GuestDr7, 0x400);
    v.write(F::GuestRflags, RFLAGS_FIXED1);
    v.write(F::GuestActivityState, 0);
    v.write(F::GuestInterruptibilityState, 0);
    v.write(F::GuestPendingDebugExceptions, 0);
    v.write(F::VmcsLinkPointer, VMCS_LINK_POINTER_NONE);
}

/// A valid VMCS12 for a 64-bit guest (flat segments, 64-bit code) and a
/// 64-bit host, accepted by every check under `caps` ([`core_caps`] or
/// [`full_caps`]).
pub fn valid_vmcs12(caps: &VmxCaps) -> MemVmcs {
    let mut v = MemVmcs::new();
    write_controls(
        &mut v,
        caps,
        EntryControls::IA32E_MODE_GUEST,
        SecondaryProcBased::empty(),
    );
    write_host(&mut v);
    write_guest_common(&mut v);
    v.write(F::GuestCr0, CR0_64);
    v.write(F::GuestCr3, CR3_64);
    v.write(F::GuestCr4, CR4_64);
    v.write(F::GuestIa32Efer, EFER_64);
    v.write(F::GuestRip, 0xffff_ffff_8040_0000);
    v.write(F::GuestRsp, 0x50_0000);
    write_segment(&mut v, super::CS, 0x08, 0, 0xffff_ffff, 0xa09b);
    for f in [super::SS, super::DS, super::ES, super::FS, super::GS] {
        write_segment(&mut v, f, 0x10, 0, 0xffff_ffff, 0xc093);
    }
    write_segment(&mut v, super::TR, 0x18, 0x7000, 0x67, 0x8b);
    v
}

/// A valid VMCS12 for an unrestricted guest in real mode at 0000:7C00
/// (EPT on), as a BIOS leaves a boot sector; needs [`full_caps`].
pub fn real_mode_vmcs12(caps: &VmxCaps) -> MemVmcs {
    let mut v = MemVmcs::new();
    write_controls(
        &mut v,
        caps,
        EntryControls::empty(),
        SecondaryProcBased::ENABLE_EPT
            | SecondaryProcBased::UNRESTRICTED_GUEST
            | SecondaryProcBased::ENABLE_VPID,
    );
    v.write(F::VirtualProcessorId, 1);
    v.write(
        F::EptPointer,
        Eptp::new(EPT_ROOT, MemoryType::WriteBack, 4, false).0,
    );
    write_host(&mut v);
    write_guest_common(&mut v);
    v.write(F::GuestCr0, 0x30);
    v.write(F::GuestCr3, 0);
    v.write(F::GuestCr4, 0x2000);
    v.write(F::GuestIa32Efer, 0);
    v.write(F::GuestRip, 0x7c00);
    v.write(F::GuestRsp, 0x7000);
    v.write(F::GuestGdtrBase, 0);
    v.write(F::GuestGdtrLimit, 0xffff);
    v.write(F::GuestIdtrBase, 0);
    v.write(F::GuestIdtrLimit, 0x3ff);
    write_segment(&mut v, super::CS, 0, 0, 0xffff, 0x9b);
    for f in [super::SS, super::DS, super::ES, super::FS, super::GS] {
        write_segment(&mut v, f, 0, 0, 0xffff, 0x93);
    }
    write_segment(&mut v, super::TR, 0, 0, 0xffff, 0x8b);
    v
}

/// A valid VMCS12 for a 32-bit protected-mode guest with PAE paging (CR3 =
/// [`PDPT`], one present PDPTE), no EPT, under [`core_caps`].
pub fn pae_vmcs12(caps: &VmxCaps) -> MemVmcs {
    let mut v = valid_vmcs12(caps);
    let entry = v.read(F::VmEntryControls) & !u64::from(EntryControls::IA32E_MODE_GUEST.bits());
    v.write(F::VmEntryControls, entry);
    v.write(F::GuestIa32Efer, 0);
    v.write(F::GuestCr3, PDPT);
    v.write(F::GuestRip, 0x10_0000);
    write_segment(&mut v, super::CS, 0x08, 0, 0xffff_ffff, 0xc09b);
    v
}
