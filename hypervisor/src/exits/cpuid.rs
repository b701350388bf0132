//! CPUID (exit reason 10): the processor's answer, with SMX hidden and VMX
//! shown (nested VMX) or hidden (`vmx=off`), the
//! hypervisor-present bit set, L0's leaves at 0x40000000, and the bits that
//! reflect the guest's CR4 recomputed (CPUID runs here in VMX root, with
//! L0's CR4).

use shared::vmx::VmcsAccess;
use shared::xss::{self, LeafD1};

use super::{Exit, skip_instruction};
use crate::vcpu::{Resume, Vcpu, reg};
use crate::vmcs01::cr4;

/// L0's vendor signature in leaf 0x40000000 (EBX, ECX, EDX).
pub const SIGNATURE: &[u8; 12] = b"L0LateLaunch";
/// First and last hypervisor leaves.
const HV_BASE: u32 = 0x4000_0000;
const HV_MAX: u32 = 0x4000_0001;
const HV_RANGE_END: u32 = 0x4000_00ff;

const LEAF1_ECX_VMX: u32 = 1 << 5;
const LEAF1_ECX_SMX: u32 = 1 << 6;
const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF7_EBX_INVPCID: u32 = 1 << 10;
const LEAF7_EBX_PT: u32 = 1 << 25;
const LEAF7_ECX_OSPKE: u32 = 1 << 4;
const LEAF7_ECX_WAITPKG: u32 = 1 << 5;
const LEAF7_ECX_RDPID: u32 = 1 << 22;
/// CPUID.1: debug store (EDX.DS) and its 64-bit and CPL-qualified forms
/// (ECX.DTES64, ECX.DS_CPL): PEBS and BTS write to the DS area.
const LEAF1_EDX_DS: u32 = 1 << 21;
const LEAF1_ECX_DTES64: u32 = 1 << 2;
const LEAF1_ECX_DS_CPL: u32 = 1 << 4;
/// Intel PT's leaf: all zero while PT is hidden.
const LEAF_PT: u32 = 0x14;
/// The XSAVE state component of Intel PT (CPUID leaf 0DH sub-leaf 8).
const XSS_PT_COMPONENT: u32 = 8;
const EXT1_EDX_RDTSCP: u32 = 1 << 27;

/// The guest's CPUID.(EAX=0DH,ECX=1) from the processor's `hw`.
fn guest_leaf_d1(hw: shared::x86::CpuidResult) -> LeafD1 {
    use shared::vmx::controls::SecondaryProcBased as S;
    let xsaves = crate::controls().has2(S::ENABLE_XSAVES_XRSTORS);
    LeafD1 {
        eax: hw.eax,
        ebx: hw.ebx,
        ecx: hw.ecx,
        edx: hw.edx,
    }
    .guest_view(xsaves, xss::XSS_PT)
}

/// What the guest's CPUID says of XSAVES and IA32_XSS.
pub fn guest_xsaves() -> LeafD1 {
    guest_leaf_d1(shared::x86::cpuid(0xd, 1))
}

/// The guest's view of CPUID leaf `leaf`, subleaf `sub`.
pub fn guest_cpuid(leaf: u32, sub: u32, guest_cr4: u64) -> shared::x86::CpuidResult {
    use shared::vmx::controls::SecondaryProcBased as S;
    if (HV_BASE..=HV_RANGE_END).contains(&leaf) {
        let word = |i: usize| {
            u32::from_le_bytes([
                SIGNATURE[i],
                SIGNATURE[i + 1],
                SIGNATURE[i + 2],
                SIGNATURE[i + 3],
            ])
        };
        return match leaf {
            HV_BASE => shared::x86::CpuidResult {
                eax: HV_MAX,
                ebx: word(0),
                ecx: word(4),
                edx: word(8),
            },
            _ => shared::x86::CpuidResult::default(),
        };
    }
    let mut r = shared::x86::cpuid(leaf, sub);
    let ctl = crate::controls();
    match leaf {
        1 => {
            r.ecx &= !(LEAF1_ECX_VMX
                | LEAF1_ECX_SMX
                | LEAF1_ECX_OSXSAVE
                | LEAF1_ECX_DTES64
                | LEAF1_ECX_DS_CPL);
            r.edx &= !LEAF1_EDX_DS;
            if crate::nested::enabled() {
                r.ecx |= LEAF1_ECX_VMX;
            }
            r.ecx |= LEAF1_ECX_HYPERVISOR;
            if guest_cr4 & cr4::OSXSAVE != 0 {
                r.ecx |= LEAF1_ECX_OSXSAVE;
            }
        }
        7 if sub == 0 => {
            // Features whose VMX enable controls L0 leaves off (they would
            // #UD in the guest) or that write to physical addresses behind
            // EPT01 (Intel PT), SDM 26.3 / 33.5.
            r.ebx &= !LEAF7_EBX_PT;
            r.ecx &= !(LEAF7_ECX_OSPKE | LEAF7_ECX_WAITPKG);
            if !ctl.has2(S::ENABLE_RDTSCP) {
                r.ecx &= !LEAF7_ECX_RDPID;
            }
            if guest_cr4 & cr4::PKE != 0 {
                r.ecx |= LEAF7_ECX_OSPKE;
            }
            if !ctl.has2(S::ENABLE_INVPCID) {
                r.ebx &= !LEAF7_EBX_INVPCID;
            }
        }
        LEAF_PT => r = shared::x86::CpuidResult::default(),
        // XSAVES only with its control; no supervisor state of a hidden
        // feature (Intel PT), consistently with IA32_XSS (`exits::msr`).
        0xd if sub == 1 => {
            let g = guest_leaf_d1(r);
            (r.eax, r.ecx, r.edx) = (g.eax, g.ecx, g.edx);
        }
        0xd if sub == XSS_PT_COMPONENT => r = shared::x86::CpuidResult::default(),
        0x8000_0001 if !ctl.has2(S::ENABLE_RDTSCP) => r.edx &= !EXT1_EDX_RDTSCP,
        _ => {}
    }
    r
}

pub fn handle(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    let leaf = vcpu.regs.gpr[reg::RAX] as u32;
    let sub = vcpu.regs.gpr[reg::RCX] as u32;
    let mut r = guest_cpuid(leaf, sub, crate::vmcs01::guest_cr4(v));
    if leaf == 1 && crate::vapic_base::disabled(vcpu.index) {
        // CPUID.1:EDX.APIC follows IA32_APIC_BASE.EN (SDM 11.4.3).
        r.edx &= !(1 << 9);
    }
    vcpu.regs.gpr[reg::RAX] = u64::from(r.eax);
    vcpu.regs.gpr[reg::RBX] = u64::from(r.ebx);
    vcpu.regs.gpr[reg::RCX] = u64::from(r.ecx);
    vcpu.regs.gpr[reg::RDX] = u64::from(r.edx);
    skip_instruction(v, exit);
    Some(Resume::Guest)
}
