//! VMCALL (exit reason 18): the INT 15h stub's VMCALL (recognised by its
//! guest address, real or virtual-8086 mode only) or L0's hypercall ABI
//! (`shared::hypercall`: Print, Stats, Shutdown). Every other VMCALL is
//! #UD, as for a guest outside VMX operation (SDM Vol. 2B, VMCALL): at
//! CPL > 0, with an RAX that is not a hypercall, or a hypercall that L0's
//! command line does not enable (`hypercalls=stats,shutdown`). A guest
//! hypervisor in VMX root operation gets VMfail instead
//! (`nested::insn::vmcall_in_vmx_root`).

use shared::hypercall::{self, Enabled, Hypercall, StatsKind};
use shared::mem::PhysMemory;

use shared::vmx::{VmcsAccess, VmcsField as F};

use super::{Exit, guest_cpl, inject_ud, skip_instruction};
use crate::memory::GuestMemory;
use crate::vcpu::{Resume, Vcpu, reg};

static ENABLED: spin::Once<Enabled> = spin::Once::new();

/// Reads `hypercalls=` from L0's command line (once, at boot).
pub fn configure(cmdline: &str) -> Enabled {
    *ENABLED.call_once(|| Enabled::parse(shared::cmdline::get(cmdline, "hypercalls")))
}

/// Whether RAX names a hypercall L0's command line enables.
pub fn is_enabled_hypercall(rax: u64) -> bool {
    let enabled = ENABLED.get().copied().unwrap_or_default();
    Hypercall::from_rax(rax).is_some_and(|h| enabled.allows(h))
}

pub fn handle(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    // Off the hot path: the BSP's first VMCALL is the boot loader's INT 15h.
    crate::vcpu::maybe_overflow_selftest(vcpu.index);
    if let Some(r) = super::int15::try_handle(vcpu, v, exit) {
        return Some(r);
    }
    if let Some(r) = crate::nested::insn::vmcall_in_vmx_root(vcpu, v, exit) {
        return r;
    }
    let enabled = ENABLED.get().copied().unwrap_or_default();
    let call = Hypercall::from_rax(vcpu.regs.gpr[reg::RAX]).filter(|&h| enabled.allows(h));
    let Some(call) = call.filter(|_| guest_cpl(v) == 0) else {
        return inject_ud(v);
    };
    let rax = match call {
        Hypercall::Print => print(vcpu),
        Hypercall::Stats => stats(vcpu),
        Hypercall::DumpVmcs => {
            crate::nested::dump::current("01");
            if vcpu.nested.current_vmcs12().is_some() {
                crate::nested::dump::vmcs12(vcpu);
            }
            hypercall::OK
        }
        Hypercall::Shutdown => {
            let code = vcpu.regs.gpr[reg::RBX] as u8;
            shared::cpu_println!("guest requested shutdown (code {code})");
            shared::platform::shutdown(code);
        }
    };
    vcpu.regs.gpr[reg::RAX] = rax;
    // The hypercall returns like a VMX instruction that succeeded (CF, PF,
    // AF, ZF, SF and OF clear), so that a guest hypervisor's VMCALL
    // wrapper, which decodes VMfail from them, sees success.
    const VMX_RESULT_FLAGS: u64 = 0x8d5;
    v.write(F::GuestRflags, v.read(F::GuestRflags) & !VMX_RESULT_FLAGS);
    skip_instruction(v, exit);
    Some(Resume::Guest)
}

/// Stats: the sub-function RBX names (`shared::hypercall::StatsKind`).
fn stats(vcpu: &mut Vcpu) -> u64 {
    let answer = match StatsKind::from_rbx(vcpu.regs.gpr[reg::RBX]) {
        Some(StatsKind::General) => {
            let (b, e) = crate::memory::region();
            crate::nested::ept02::report(vcpu);
            crate::vcpu::report_exit_stack(vcpu.index);
            crate::exit_profile::report(&vcpu.profile, &vcpu.phases);
            [
                vcpu.exits,
                shared::percpu::online_count() as u64,
                (e - b) / 1024,
                b,
                // Free frames for nested state: L0's pool plus the EPT02
                // free list carved from it at boot (roots give frames back
                // there), so that an EPT02 leak shows as well as a pool leak.
                crate::memory::pool_free() + crate::nested::ept02::free_frames(),
            ]
        }
        Some(StatsKind::NestedEpt) => vcpu.nested.ept02.stats().to_regs(),
        None => return hypercall::BAD_ARGUMENT,
    };
    for (r, value) in [reg::RBX, reg::RCX, reg::RDX, reg::RSI, reg::RDI]
        .into_iter()
        .zip(answer)
    {
        vcpu.regs.gpr[r] = value;
    }
    hypercall::OK
}

/// Print: RCX bytes at guest-physical RBX, on one console line per call.
fn print(vcpu: &Vcpu) -> u64 {
    let (addr, len) = (vcpu.regs.gpr[reg::RBX], vcpu.regs.gpr[reg::RCX]);
    if len > hypercall::PRINT_MAX {
        return hypercall::BAD_ARGUMENT;
    }
    let mut buf = [0u8; hypercall::PRINT_MAX as usize];
    let buf = &mut buf[..len as usize];
    if GuestMemory.read(addr, buf).is_err() {
        return hypercall::BAD_ARGUMENT;
    }
    let text = core::str::from_utf8(buf).unwrap_or("<not UTF-8>");
    shared::cpu_println!("guest: {}", text.trim_end_matches('\n'));
    hypercall::OK
}
