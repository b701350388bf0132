//! VMCS01: the VMCS each CPU runs the guest with. Controls are requested by
//! need and adjusted against the capability MSRs (SDM Appendix A); host
//! state is this CPU's; guest state starts as after INIT (SDM 10.1.1,
//! Table 10-1) and is then made the BIOS's boot state (BSP) or left waiting
//! for a SIPI (APs).

use shared::vmx::controls::{
    EntryControls, ExitControls, PinBased, PrimaryProcBased, SecondaryProcBased,
};
use shared::vmx::insn::{self, GuardedVmcs, VmFail};
use shared::vmx::{VmcsAccess, VmcsField as F, VmxCaps};
use shared::x86;

use crate::vcpu::CpuVmx;

// The guest-state builders are pure (host-tested with the VM-entry checks).
pub use shared::vmx::guest_init::{
    Seg, activity, cr0, cr0_real, cr4_real, set_real_mode_segment, write_init_state,
};

/// CR4 bits (SDM 2.5).
pub mod cr4 {
    pub const PAE: u64 = 1 << 5;
    pub const VMXE: u64 = 1 << 13;
    /// SMX is hidden from the guest (CPUID.1:ECX.SMX = 0): setting SMXE
    /// is #GP, as on a processor without SMX.
    pub const SMXE: u64 = 1 << 14;
    pub const OSXSAVE: u64 = 1 << 18;
    pub const PCIDE: u64 = 1 << 17;
    pub const PKE: u64 = 1 << 22;
}

/// IA32_EFER bits.
pub mod efer {
    pub const SCE: u64 = 1 << 0;
    pub const LME: u64 = 1 << 8;
    pub const LMA: u64 = 1 << 10;
    pub const NXE: u64 = 1 << 11;
}

/// The controls every VMCS01 uses, computed once from the capabilities.
#[derive(Clone, Copy, Debug)]
pub struct Controls {
    pub pin: u32,
    pub proc: u32,
    pub proc2: u32,
    pub exit: u32,
    pub entry: u32,
}

impl Controls {
    /// Requests what L0 needs; fails if the processor cannot do it.
    pub fn from_caps(caps: &VmxCaps) -> Result<Self, shared::vmx::controls::UnsupportedControls> {
        // NMIs exit, so that L0 sees its kicks and injects the guest's
        // NMIs; with virtual NMIs, NMI-window exiting says when the guest
        // can take one (see `events`).
        let pin = caps
            .pin
            .effective()
            .require((PinBased::NMI_EXITING | PinBased::VIRTUAL_NMIS).bits())?;
        let proc = caps.proc.effective().require(
            (PrimaryProcBased::USE_MSR_BITMAPS | PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS)
                .bits(),
        )?;
        // Set and cleared per entry; it must be allowed.
        caps.proc
            .effective()
            .require(proc | PrimaryProcBased::NMI_WINDOW_EXITING.bits())?;
        let required = SecondaryProcBased::ENABLE_EPT
            | SecondaryProcBased::ENABLE_VPID
            | SecondaryProcBased::UNRESTRICTED_GUEST;
        // Instructions the guest's CPUID advertises; without these controls
        // they would raise #UD (CPUID hides what cannot be enabled).
        let optional = SecondaryProcBased::ENABLE_RDTSCP
            | SecondaryProcBased::ENABLE_INVPCID
            | SecondaryProcBased::ENABLE_XSAVES_XRSTORS;
        let proc2 = caps.proc2.require(required.bits())? | caps.proc2.adjust(optional.bits()).value;
        // The guest's DR7 and IA32_DEBUGCTL survive exits only with "save
        // debug controls" and "load debug controls": every VM exit sets
        // DR7 to 400H (SDM 28.5.1), so without them the guest's
        // breakpoints would vanish at its first exit.
        let exit = caps.exit.effective().require(
            (ExitControls::HOST_ADDRESS_SPACE_SIZE
                | ExitControls::SAVE_DEBUG_CONTROLS
                | ExitControls::SAVE_IA32_PAT
                | ExitControls::LOAD_IA32_PAT
                | ExitControls::SAVE_IA32_EFER
                | ExitControls::LOAD_IA32_EFER)
                .bits(),
        )?;
        let entry = caps.entry.effective().require(
            (EntryControls::LOAD_IA32_PAT
                | EntryControls::LOAD_IA32_EFER
                | EntryControls::LOAD_DEBUG_CONTROLS)
                .bits(),
        )?;
        Ok(Self {
            pin,
            proc,
            proc2,
            exit,
            entry,
        })
    }

    pub fn has2(&self, c: SecondaryProcBased) -> bool {
        self.proc2 & c.bits() == c.bits()
    }
}

/// CR0 bits L0 owns: PG (IA-32e mode follows it, SDM 26.3.1.1) and the
/// bits VMX fixes (NE); with unrestricted guest PE and PG may be 0.
pub fn cr0_mask(caps: &VmxCaps) -> u64 {
    let fixed = (caps.cr0_fixed0 | !caps.cr0_fixed1) & !(cr0::PE | cr0::PG) & 0xffff_ffff;
    fixed | cr0::PG | cr0::NE
}

/// CR4 bits L0 owns: the fixed ones (VMXE), SMXE and those that may not be 1.
pub fn cr4_mask(caps: &VmxCaps) -> u64 {
    (caps.cr4_fixed0 | !caps.cr4_fixed1 | cr4::VMXE | cr4::SMXE) & 0xffff_ffff
}

/// The guest's CR0 as it sees it: the bits it owns from the processor,
/// the bits L0 owns from the read shadow (SDM 25.6.6).
pub fn guest_cr0(v: &impl VmcsAccess) -> u64 {
    let mask = v.read(F::Cr0GuestHostMask);
    (v.read(F::GuestCr0) & !mask) | (v.read(F::Cr0ReadShadow) & mask)
}

/// The guest's CR4 as it sees it (see [`guest_cr0`]).
pub fn guest_cr4(v: &impl VmcsAccess) -> u64 {
    let mask = v.read(F::Cr4GuestHostMask);
    (v.read(F::GuestCr4) & !mask) | (v.read(F::Cr4ReadShadow) & mask)
}

/// Makes this CPU's VMCS current and writes every field L0 sets. Guest
/// state is the INIT state with activity `activity`.
pub fn setup(
    cpu: &mut CpuVmx,
    vmx: &insn::Vmxon,
    caps: &VmxCaps,
    ctl: &Controls,
    msr_bitmap: u64,
    eptp: u64,
) -> Result<(), VmFail> {
    cpu.vmcs.stamp(caps.basic.revision_id, false);
    let pa = cpu.vcpu.vmcs_phys;
    // SAFETY: `pa` is this CPU's 4-KiB VMCS region, stamped with the
    // revision identifier; only this CPU uses it.
    unsafe {
        insn::vmclear(pa)?;
        insn::vmptrld(pa)?;
    }
    let mut v = vmx.guarded_vmcs();
    write_controls(&mut v, caps, ctl, msr_bitmap, eptp, cpu.vcpu.index);
    write_host_state(&mut v, cpu.host_rsp);
    write_init_state(&mut v, caps);
    Ok(())
}

fn write_controls(
    v: &mut GuardedVmcs<'_>,
    caps: &VmxCaps,
    ctl: &Controls,
    msr_bitmap: u64,
    eptp: u64,
    index: usize,
) {
    v.write(F::PinBasedVmExecControls, u64::from(ctl.pin));
    v.write(F::PrimaryProcBasedVmExecControls, u64::from(ctl.proc));
    v.write(F::SecondaryProcBasedVmExecControls, u64::from(ctl.proc2));
    if ctl.has2(SecondaryProcBased::ENABLE_XSAVES_XRSTORS) {
        // No XSAVES/XRSTORS exits (SDM 25.6.20, 26.1.3): the guest's
        // IA32_XSS is already limited to what it may save (`exits::msr`).
        v.write(F::XssExitingBitmap, 0);
    }
    v.write(F::VmExitControls, u64::from(ctl.exit));
    v.write(F::VmEntryControls, u64::from(ctl.entry));
    v.write(F::ExceptionBitmap, 0);
    v.write(F::PageFaultErrorCodeMask, 0);
    v.write(F::PageFaultErrorCodeMatch, 0);
    v.write(F::Cr3TargetCount, 0);
    // SAFETY: no MSR areas; L0's own MSR bitmap and EPT01 (which never
    // maps L0's region); no link pointer.
    unsafe {
        v.write_sensitive(F::VmExitMsrStoreCount, 0);
        v.write_sensitive(F::VmExitMsrLoadCount, 0);
        v.write_sensitive(F::VmEntryMsrLoadCount, 0);
        v.write_sensitive(F::MsrBitmapAddress, msr_bitmap);
        v.write_sensitive(F::EptPointer, eptp);
        v.write_sensitive(F::VmcsLinkPointer, u64::MAX);
    }
    if crate::nested::shadow::enabled() {
        let (read, write) = crate::nested::shadow::bitmaps();
        // SAFETY: L0's static bitmaps, never written; VMCS shadowing stays
        // off until L1 has a current VMCS (`nested::shadow`).
        unsafe {
            v.write_sensitive(F::VmreadBitmapAddress, read);
            v.write_sensitive(F::VmwriteBitmapAddress, write);
        }
    }
    v.write(F::VmEntryInterruptionInfo, 0);
    v.write(F::VirtualProcessorId, index as u64 + 1);
    v.write(F::Cr0GuestHostMask, cr0_mask(caps));
    v.write(F::Cr4GuestHostMask, cr4_mask(caps));
}

fn write_host_state(v: &mut GuardedVmcs<'_>, host_rsp: u64) {
    use shared::percpu::selector;
    let (gdt_base, idt_base) = descriptor_tables();
    let tr = read_tr();
    // SAFETY: IA32_GS_BASE, IA32_EFER and IA32_PAT exist on every CPU with VMX.
    let (gs, efer, pat) = unsafe {
        (
            x86::rdmsr(x86::msr::IA32_GS_BASE),
            x86::rdmsr(x86::msr::IA32_EFER),
            x86::rdmsr(x86::msr::IA32_PAT),
        )
    };
    let code = u64::from(selector::KERNEL_CODE);
    let data = u64::from(selector::KERNEL_DATA);
    let state = [
        (F::HostCr0, x86::read_cr0()),
        (F::HostCr3, x86::read_cr3()),
        (F::HostCr4, x86::read_cr4()),
        (F::HostCsSelector, code),
        (F::HostSsSelector, data),
        (F::HostDsSelector, data),
        (F::HostEsSelector, data),
        (F::HostFsSelector, 0),
        (F::HostGsSelector, 0),
        (F::HostTrSelector, u64::from(tr)),
        (F::HostFsBase, 0),
        (F::HostGsBase, gs),
        (F::HostTrBase, tss_base(gdt_base, tr)),
        (F::HostGdtrBase, gdt_base),
        (F::HostIdtrBase, idt_base),
        (F::HostIa32SysenterCs, 0),
        (F::HostIa32SysenterEsp, 0),
        (F::HostIa32SysenterEip, 0),
        (F::HostIa32Efer, efer),
        (F::HostIa32Pat, pat),
        (F::HostRsp, host_rsp),
        (F::HostRip, crate::vcpu::exit_stub()),
    ];
    for (f, x) in state {
        // SAFETY: this CPU's own control registers, L0's segments, tables
        // and MSRs, its exit stack and the exit stub: a VM exit returns to
        // L0 as it runs now.
        unsafe { v.write_sensitive(f, x) };
    }
}

fn descriptor_tables() -> (u64, u64) {
    #[repr(C, packed)]
    struct Dtr {
        limit: u16,
        base: u64,
    }
    let mut gdt = Dtr { limit: 0, base: 0 };
    let mut idt = Dtr { limit: 0, base: 0 };
    // SAFETY: SGDT/SIDT store 10 bytes into the given locals.
    unsafe {
        core::arch::asm!("sgdt [{}]", in(reg) &raw mut gdt, options(nostack, preserves_flags));
        core::arch::asm!("sidt [{}]", in(reg) &raw mut idt, options(nostack, preserves_flags));
    }
    (gdt.base, idt.base)
}

fn read_tr() -> u16 {
    let tr: u16;
    // SAFETY: STR only reads the task register.
    unsafe { core::arch::asm!("str {0:x}", out(reg) tr, options(nomem, nostack, preserves_flags)) };
    tr
}

/// Base of the 64-bit TSS descriptor `tr` in the GDT at `gdt` (SDM 8.2.3).
fn tss_base(gdt: u64, tr: u16) -> u64 {
    let d = gdt + u64::from(tr & !7);
    // SAFETY: the GDT is this CPU's (in L0's image) and holds the 16-byte
    // TSS descriptor the task register selects.
    let (lo, hi) = unsafe { ((d as *const u64).read(), ((d + 8) as *const u64).read()) };
    ((lo >> 16) & 0xff_ffff) | (((lo >> 56) & 0xff) << 24) | ((hi & 0xffff_ffff) << 32)
}
