//! Entering VMX root operation on a CPU: the checks and the VMXON sequence of
//! SDM vol. 3C 24.7 ("Enabling and Entering VMX Operation") and 24.8
//! ("Restrictions on VMX Operation"), shared by L0 and LHV.

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::percpu::{self, MAX_CPUS};
use crate::vmx::VmxCaps;
use crate::vmx::insn::{self, Vmxon, VmxonRegion};
use crate::{boot::layout, x86};

/// IA32_FEATURE_CONTROL bits (SDM vol. 3C 24.7).
const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;
/// CPUID.1:ECX.VMX.
const CPUID_1_ECX_VMX: u32 = 1 << 5;
/// CR4.VMXE.
const CR4_VMXE: u64 = 1 << 13;

/// Features a kernel needs from VMX before it can do its job.
#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    pub ept: bool,
    pub unrestricted_guest: bool,
    pub vpid: bool,
}

/// Why VMX cannot be used on this CPU. Displayed after
/// `VMX is not available: `, the line the harness looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// CPUID.1:ECX.VMX is 0 (e.g. QEMU without KVM, or VMX hidden by a hypervisor).
    NoCpuidVmx,
    /// Firmware locked IA32_FEATURE_CONTROL with VMX outside SMX disabled.
    DisabledByFirmware,
    /// A capability the kernel needs is missing.
    Missing(&'static str),
    /// VMXON failed (its VMfail is decoded).
    VmxonFailed(insn::VmFail),
    /// This CPU's CR0/CR4 cannot satisfy the VMX fixed bits.
    FixedBits,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoCpuidVmx => write!(
                f,
                "CPUID.1:ECX.VMX[bit 5] is 0 (no VMX; QEMU without KVM does not emulate it)"
            ),
            Self::DisabledByFirmware => write!(
                f,
                "IA32_FEATURE_CONTROL is locked with VMX outside SMX disabled (enable VT-x in the firmware setup)"
            ),
            Self::Missing(what) => write!(f, "the CPU lacks {what}"),
            Self::VmxonFailed(e) => write!(f, "VMXON failed: {e:?}"),
            Self::FixedBits => write!(f, "CR0/CR4 cannot meet the VMX fixed bits"),
        }
    }
}

/// Checks, without changing anything, whether VMX exists on this CPU and
/// has what `needs` asks for. Returns the capabilities.
pub fn probe(needs: Needs) -> Result<VmxCaps, Unavailable> {
    if x86::cpuid(1, 0).ecx & CPUID_1_ECX_VMX == 0 {
        return Err(Unavailable::NoCpuidVmx);
    }
    // SAFETY: IA32_FEATURE_CONTROL exists when CPUID reports VMX (SDM 24.7).
    let fc = unsafe { x86::rdmsr(x86::msr::IA32_FEATURE_CONTROL) };
    if fc & FEATURE_CONTROL_LOCK != 0 && fc & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
        return Err(Unavailable::DisabledByFirmware);
    }
    // SAFETY: the VMX capability MSRs exist when CPUID reports VMX; `read`
    // reads only those that exist for the reported controls (Appendix A).
    let caps = VmxCaps::read(|m| unsafe { x86::rdmsr(m) });
    if needs.ept && !caps.has_ept() {
        return Err(Unavailable::Missing("EPT (enable EPT secondary control)"));
    }
    if needs.unrestricted_guest && !caps.has_unrestricted_guest() {
        return Err(Unavailable::Missing(
            "the unrestricted-guest secondary control",
        ));
    }
    if needs.vpid && !caps.has_vpid() {
        return Err(Unavailable::Missing("VPID (enable VPID secondary control)"));
    }
    Ok(caps)
}

struct Regions([core::cell::UnsafeCell<VmxonRegion>; MAX_CPUS]);
// SAFETY: each CPU uses only its own region (indexed by its CPU index).
unsafe impl Sync for Regions {}

static VMXON_REGIONS: Regions =
    Regions([const { core::cell::UnsafeCell::new(VmxonRegion::new()) }; MAX_CPUS]);
static IN_VMX: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Enters VMX root operation on this CPU: locks IA32_FEATURE_CONTROL if the
/// firmware left it unlocked, sets CR0/CR4 to the fixed bits (CR4.VMXE
/// included), stamps the VMXON region with the revision id and runs VMXON.
pub fn enter(caps: &VmxCaps) -> Result<Vmxon, Unavailable> {
    let cpu = percpu::current().index();
    // SAFETY: IA32_FEATURE_CONTROL exists (checked by `probe`); setting the
    // lock with VMX outside SMX is what firmware would do.
    unsafe {
        let fc = x86::rdmsr(x86::msr::IA32_FEATURE_CONTROL);
        if fc & FEATURE_CONTROL_LOCK == 0 {
            x86::wrmsr(
                x86::msr::IA32_FEATURE_CONTROL,
                fc | FEATURE_CONTROL_LOCK | FEATURE_CONTROL_VMX_OUTSIDE_SMX,
            );
        }
    }
    let cr0 = caps.adjust_cr0(x86::read_cr0());
    let cr4 = caps.adjust_cr4(x86::read_cr4() | CR4_VMXE);
    if !caps.cr0_valid(cr0, false) || !caps.cr4_valid(cr4) {
        return Err(Unavailable::FixedBits);
    }
    // SAFETY: the adjusted values only add bits the kernels already run with
    // (PE, PG, NE in CR0; VMXE in CR4), as the fixed MSRs require.
    unsafe {
        x86::write_cr0(cr0);
        x86::write_cr4(cr4);
    }
    let region = VMXON_REGIONS.0[cpu].get();
    // SAFETY: only this CPU uses its region, and not while in VMX operation.
    unsafe { (*region).stamp(caps.basic.revision_id, false) };
    let phys = layout::phys_of(region);
    // SAFETY: the region is 4 KiB-aligned, stamped with the revision id, and
    // stays reserved for this CPU; CR0/CR4 meet the fixed bits. The token
    // stays on this CPU (it is not Send).
    let vmxon = unsafe { Vmxon::enable(phys) }.map_err(Unavailable::VmxonFailed)?;
    IN_VMX[cpu].store(true, Ordering::Release);
    Ok(vmxon)
}

/// Whether CPU `cpu` is in VMX root operation.
pub fn is_in_vmx(cpu: usize) -> bool {
    IN_VMX.get(cpu).is_some_and(|f| f.load(Ordering::Acquire))
}

/// The BSP's VMX check as both kernels report it: the capabilities and their
/// one-line summary, or `VMX is not available: <reason>` and the machine
/// stops (the line the harness's `no-vmx-*` scenarios expect).
pub fn probe_or_shutdown(needs: Needs) -> VmxCaps {
    match probe(needs) {
        Ok(caps) => {
            crate::println!("{}", caps.summary());
            caps
        }
        Err(e) => {
            crate::println!("VMX is not available: {e}");
            crate::platform::shutdown(1)
        }
    }
}

/// [`enter`] as both kernels report it on each CPU: `CPU(n): VMXON done`, or
/// `CPU(n): VMX is not available: <reason>` and this CPU stops.
pub fn enter_or_halt(caps: &VmxCaps) -> Vmxon {
    match enter(caps) {
        Ok(vmxon) => {
            crate::cpu_println!("VMXON done");
            vmxon
        }
        Err(e) => {
            crate::cpu_println!("VMX is not available: {e}");
            x86::halt_forever()
        }
    }
}
