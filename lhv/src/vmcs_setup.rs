//! Writing LHV's VMCS for its L2: the controls (requested by the core and
//! the options, checked against the capability MSRs), the host state (this
//! CPU as it runs now) and the guest state (L2 runs 64-bit code in LHV's
//! address space, on its own stack). SDM Vol. 3C chapter 25 ("Organization
//! of VMCS Data") and 27.2/27.3 (the checks VM entry makes).

use shared::percpu::selector;
use shared::vmx::controls::{
    EntryControls, ExitControls, PinBased, PrimaryProcBased, SecondaryProcBased,
};
use shared::vmx::{VmcsAccess, VmcsField as F, VmxCaps};
use shared::x86::{self, msr};

use crate::hw::tables;

/// The control fields as requested; [`Controls::apply`] checks them.
#[derive(Clone, Copy, Debug)]
pub struct Controls {
    /// Pin-based VM-execution controls.
    pub pin: PinBased,
    /// Primary processor-based VM-execution controls.
    pub proc: PrimaryProcBased,
    /// Secondary processor-based VM-execution controls (the primary
    /// "activate secondary controls" bit is set when any is requested).
    pub proc2: SecondaryProcBased,
    /// VM-exit controls.
    pub exit: ExitControls,
    /// VM-entry controls.
    pub entry: EntryControls,
    /// Exception bitmap.
    pub exception_bitmap: u32,
}

impl Controls {
    /// What every LHV guest needs: 64-bit host and guest, EFER and PAT
    /// switched by the processor, external interrupts exiting with the
    /// vector acknowledged (so LHV can serve them with IF = 0), and an MSR
    /// bitmap (all zeros: no MSR exits).
    pub const fn base() -> Self {
        Self {
            pin: PinBased::EXTERNAL_INTERRUPT_EXITING,
            proc: PrimaryProcBased::USE_MSR_BITMAPS,
            proc2: SecondaryProcBased::empty(),
            exit: ExitControls::HOST_ADDRESS_SPACE_SIZE
                .union(ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT)
                .union(ExitControls::SAVE_IA32_EFER)
                .union(ExitControls::LOAD_IA32_EFER)
                .union(ExitControls::SAVE_IA32_PAT)
                .union(ExitControls::LOAD_IA32_PAT),
            entry: EntryControls::IA32E_MODE_GUEST
                .union(EntryControls::LOAD_IA32_EFER)
                .union(EntryControls::LOAD_IA32_PAT),
            exception_bitmap: 0,
        }
    }

    /// The first control bits `caps` does not allow, by field name.
    pub fn unsupported(&self, caps: &VmxCaps) -> Option<(&'static str, u32)> {
        let mut proc = self.proc;
        if !self.proc2.is_empty() {
            proc |= PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS;
        }
        [
            (
                "pin-based",
                caps.pin.effective().adjust(self.pin.bits()).dropped,
            ),
            (
                "primary processor-based",
                caps.proc.effective().adjust(proc.bits()).dropped,
            ),
            (
                "secondary processor-based",
                caps.proc2.adjust(self.proc2.bits()).dropped,
            ),
            (
                "VM-exit",
                caps.exit.effective().adjust(self.exit.bits()).dropped,
            ),
            (
                "VM-entry",
                caps.entry.effective().adjust(self.entry.bits()).dropped,
            ),
        ]
        .into_iter()
        .find(|(_, dropped)| *dropped != 0)
    }

    /// Writes the control fields, with the bits the capability MSRs force
    /// to 1 added (SDM A.3-A.5). The caller has checked
    /// [`Controls::unsupported`].
    pub fn apply(&self, caps: &VmxCaps, vmcs: &mut impl VmcsAccess) {
        let mut proc = self.proc;
        if !self.proc2.is_empty() {
            proc |= PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS;
        }
        vmcs.write(
            F::PinBasedVmExecControls,
            caps.pin.effective().adjust(self.pin.bits()).value.into(),
        );
        vmcs.write(
            F::PrimaryProcBasedVmExecControls,
            caps.proc.effective().adjust(proc.bits()).value.into(),
        );
        if proc.contains(PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS) {
            vmcs.write(
                F::SecondaryProcBasedVmExecControls,
                caps.proc2.adjust(self.proc2.bits()).value.into(),
            );
        }
        vmcs.write(
            F::VmExitControls,
            caps.exit.effective().adjust(self.exit.bits()).value.into(),
        );
        vmcs.write(
            F::VmEntryControls,
            caps.entry
                .effective()
                .adjust(self.entry.bits())
                .value
                .into(),
        );
        vmcs.write(F::ExceptionBitmap, self.exception_bitmap.into());
    }
}

/// Access rights (SDM 25.4.1, Table 25-2): 64-bit code, present, DPL 0,
/// execute/read accessed, granularity.
const AR_CODE64: u64 = 0xa09b;
/// Data, present, DPL 0, read/write accessed, big, granularity.
const AR_DATA: u64 = 0xc093;
/// Busy 64-bit TSS, present.
const AR_TSS_BUSY: u64 = 0x8b;
/// Bit 16: segment unusable.
const AR_UNUSABLE: u64 = 1 << 16;
/// RFLAGS bit 1 (always 1) and IF.
pub const RFLAGS_FIXED: u64 = 1 << 1;
/// RFLAGS.IF.
pub const RFLAGS_IF: u64 = 1 << 9;
/// DR7's value after reset.
const DR7_INIT: u64 = 0x400;

/// This CPU's control registers, descriptor tables and MSRs as it runs now, which L2 starts
/// with and VM exits return to.
struct Current {
    cr0: u64,
    cr3: u64,
    cr4: u64,
    gdt: tables::TableRegister,
    idt: tables::TableRegister,
    fs: u64,
    gs: u64,
    efer: u64,
    pat: u64,
}

impl Current {
    fn read() -> Self {
        // SAFETY: these MSRs exist on every 64-bit processor with VMX.
        let (fs, gs, efer, pat) = unsafe {
            (
                x86::rdmsr(msr::IA32_FS_BASE),
                x86::rdmsr(msr::IA32_GS_BASE),
                x86::rdmsr(msr::IA32_EFER),
                x86::rdmsr(msr::IA32_PAT),
            )
        };
        Self {
            cr0: x86::read_cr0(),
            cr3: x86::read_cr3(),
            cr4: x86::read_cr4(),
            gdt: tables::sgdt(),
            idt: tables::sidt(),
            fs,
            gs,
            efer,
            pat,
        }
    }
}

/// Writes the host-state area from this CPU's current state (SDM 25.5).
pub fn write_host_state(vmcs: &mut impl VmcsAccess, host_rip: u64) {
    let c = Current::read();
    vmcs.write(F::HostCr0, c.cr0);
    vmcs.write(F::HostCr3, c.cr3);
    vmcs.write(F::HostCr4, c.cr4);
    vmcs.write(F::HostCsSelector, selector::KERNEL_CODE.into());
    for f in [F::HostSsSelector, F::HostDsSelector, F::HostEsSelector] {
        vmcs.write(f, selector::KERNEL_DATA.into());
    }
    vmcs.write(F::HostFsSelector, 0);
    vmcs.write(F::HostGsSelector, 0);
    vmcs.write(F::HostTrSelector, selector::TSS.into());
    vmcs.write(F::HostFsBase, c.fs);
    vmcs.write(F::HostGsBase, c.gs);
    vmcs.write(F::HostTrBase, tables::tss_base());
    vmcs.write(F::HostGdtrBase, c.gdt.base);
    vmcs.write(F::HostIdtrBase, c.idt.base);
    vmcs.write(F::HostIa32SysenterCs, 0);
    vmcs.write(F::HostIa32SysenterEsp, 0);
    vmcs.write(F::HostIa32SysenterEip, 0);
    vmcs.write(F::HostIa32Efer, c.efer);
    vmcs.write(F::HostIa32Pat, c.pat);
    vmcs.write(F::HostRip, host_rip);
}

/// Writes the guest-state area: L2 starts at `rip` with `rsp`, in 64-bit
/// mode with LHV's CR0/CR3/CR4, segments, tables and EFER (SDM 25.4).
pub fn write_guest_state(vmcs: &mut impl VmcsAccess, rip: u64, rsp: u64, rflags: u64) {
    let c = Current::read();
    vmcs.write(F::GuestCr0, c.cr0);
    vmcs.write(F::GuestCr3, c.cr3);
    vmcs.write(F::GuestCr4, c.cr4);
    vmcs.write(F::Cr0ReadShadow, c.cr0);
    vmcs.write(F::Cr4ReadShadow, c.cr4);
    vmcs.write(F::GuestDr7, DR7_INIT);
    vmcs.write(F::GuestRip, rip);
    vmcs.write(F::GuestRsp, rsp);
    vmcs.write(F::GuestRflags, rflags | RFLAGS_FIXED);

    let segments = [
        (
            F::GuestCsSelector,
            F::GuestCsBase,
            F::GuestCsLimit,
            F::GuestCsAccessRights,
            selector::KERNEL_CODE,
            0,
            AR_CODE64,
        ),
        (
            F::GuestSsSelector,
            F::GuestSsBase,
            F::GuestSsLimit,
            F::GuestSsAccessRights,
            selector::KERNEL_DATA,
            0,
            AR_DATA,
        ),
        (
            F::GuestDsSelector,
            F::GuestDsBase,
            F::GuestDsLimit,
            F::GuestDsAccessRights,
            selector::KERNEL_DATA,
            0,
            AR_DATA,
        ),
        (
            F::GuestEsSelector,
            F::GuestEsBase,
            F::GuestEsLimit,
            F::GuestEsAccessRights,
            selector::KERNEL_DATA,
            0,
            AR_DATA,
        ),
        (
            F::GuestFsSelector,
            F::GuestFsBase,
            F::GuestFsLimit,
            F::GuestFsAccessRights,
            selector::KERNEL_DATA,
            c.fs,
            AR_DATA,
        ),
        (
            F::GuestGsSelector,
            F::GuestGsBase,
            F::GuestGsLimit,
            F::GuestGsAccessRights,
            selector::KERNEL_DATA,
            c.gs,
            AR_DATA,
        ),
    ];
    for (sel, base, limit, ar, s, b, a) in segments {
        vmcs.write(sel, s.into());
        vmcs.write(base, b);
        vmcs.write(limit, 0xffff_ffff);
        vmcs.write(ar, a);
    }
    let (tss_lo, _) = tables::gdt_entry(selector::TSS);
    vmcs.write(F::GuestTrSelector, selector::TSS.into());
    vmcs.write(F::GuestTrBase, tables::tss_base());
    vmcs.write(F::GuestTrLimit, lhv::desc::descriptor_limit(tss_lo).into());
    vmcs.write(F::GuestTrAccessRights, AR_TSS_BUSY);
    vmcs.write(F::GuestLdtrSelector, 0);
    vmcs.write(F::GuestLdtrBase, 0);
    vmcs.write(F::GuestLdtrLimit, 0);
    vmcs.write(F::GuestLdtrAccessRights, AR_UNUSABLE);
    vmcs.write(F::GuestGdtrBase, c.gdt.base);
    vmcs.write(F::GuestGdtrLimit, c.gdt.limit.into());
    vmcs.write(F::GuestIdtrBase, c.idt.base);
    vmcs.write(F::GuestIdtrLimit, c.idt.limit.into());
    vmcs.write(F::GuestIa32Efer, c.efer);
    vmcs.write(F::GuestIa32Pat, c.pat);
    vmcs.write(F::GuestIa32SysenterCs, 0);
    vmcs.write(F::GuestIa32SysenterEsp, 0);
    vmcs.write(F::GuestIa32SysenterEip, 0);
    vmcs.write(F::GuestIa32Debugctl, 0);
    vmcs.write(F::GuestInterruptibilityState, 0);
    vmcs.write(F::GuestActivityState, 0);
    vmcs.write(F::GuestPendingDebugExceptions, 0);
    vmcs.write(F::VmcsLinkPointer, u64::MAX);
}
