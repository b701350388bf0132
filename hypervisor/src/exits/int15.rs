//! The INT 15h hook's VMCALL (see `launch`): E820h, E801h and 88h are
//! answered from L0's edited map; every other function continues at the
//! BIOS's original vector.
//!
//! The stub is firmware as far as the guest knows, and so it stays under a
//! guest hypervisor: L1 may run the BIOS in its guest (L0 itself does, as
//! L1: its own hook chains to the vector it found, which is this stub), so
//! L2's VMCALL at the stub is L0's too ([`try_handle_l2`]), with L2's
//! memory reached through EPT12.

use shared::mem::PhysMemory;
use shared::vmx::{VmcsAccess, VmcsField as F};

use super::Exit;
use crate::launch::{self, STUB_IRET};
use crate::memory::GuestMemory;
use crate::vcpu::{Resume, Vcpu, reg};
use crate::vmcs01::{self, Seg, cr0};

const SMAP: u64 = 0x534d_4150;
/// RFLAGS.VM (virtual-8086 mode).
const RFLAGS_VM: u64 = 1 << 17;
const FLAGS_CF: u16 = 1 << 0;
const E820_RECORD: u64 = 20;
/// AH = 86h: function not supported.
const NOT_SUPPORTED: u64 = 0x86;

/// Handles the guest's (L1's) VMCALL if it is the stub's; `None` otherwise.
pub fn try_handle(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    handle_in(vcpu, v, exit, &mut GuestMemory, Some)
}

/// Handles L2's VMCALL (VMCS02 current) if it is the stub's, as L1 maps it
/// through EPT12; `None` otherwise (the exit is then L1's as usual).
pub fn try_handle_l2(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    let mut mem = crate::nested::ept02::L2Memory::current(vcpu)?;
    let to_l1 = |gpa2| mem.translate(gpa2, shared::ept::EptPerms::EXECUTE);
    let stub = to_l1(v.read(F::GuestCsBase).wrapping_add(exit.rip))?;
    handle_in(vcpu, v, exit, &mut mem, |_| Some(stub))
}

/// [`try_handle`] with the guest's memory `mem` and `to_phys`, which gives
/// the L1-physical address of the guest's instruction.
fn handle_in(
    vcpu: &mut Vcpu,
    v: &mut impl VmcsAccess,
    exit: &Exit,
    mem: &mut impl PhysMemory,
    to_phys: impl FnOnce(u64) -> Option<u64>,
) -> Option<Resume> {
    let gm = launch::guest_map()?;
    // Real mode, or virtual-8086 mode (a v86 monitor reflecting INT 15h
    // to the real-mode vector, e.g. a DOS extender or EMM386): segment
    // bases are selector * 16 in both (SDM 20.2).
    let v86 = v.read(F::GuestRflags) & RFLAGS_VM != 0;
    let real_mode = v.read(F::GuestCr0) & cr0::PE == 0;
    if !(real_mode || v86)
        || to_phys(v.read(F::GuestCsBase).wrapping_add(exit.rip)) != Some(gm.hook.stub)
    {
        return None;
    }
    let r = &mut vcpu.regs.gpr;
    let ax = r[reg::RAX] & 0xffff;
    let carry = if r[reg::RAX] & 0xffff_ffff == 0xe820 && r[reg::RDX] & 0xffff_ffff == SMAP {
        e820(r, v, &gm.map, mem)
    } else if ax == 0xe801 {
        let (a, b) = gm.map.e801();
        set16(&mut r[reg::RAX], a);
        set16(&mut r[reg::RCX], a);
        set16(&mut r[reg::RBX], b);
        set16(&mut r[reg::RDX], b);
        false
    } else if ax >> 8 == 0x88 {
        set16(&mut r[reg::RAX], gm.map.int15_88());
        false
    } else {
        // Chain: continue at the BIOS's handler with the interrupt frame
        // as the INT instruction left it.
        let (seg, off) = gm.hook.original;
        if v86 {
            // Keep the v86 access rights (DPL 3) VM entry requires.
            v.write(F::GuestCsSelector, u64::from(seg));
            v.write(F::GuestCsBase, u64::from(seg) << 4);
        } else {
            vmcs01::set_real_mode_segment(v, Seg::Cs, seg, u64::from(seg) << 4);
        }
        v.write(F::GuestRip, u64::from(off));
        return Some(Resume::Guest);
    };
    set_carry_in_frame(v, carry, mem);
    v.write(F::GuestRip, STUB_IRET);
    Some(Resume::Guest)
}

fn set16(r: &mut u64, value: u16) {
    *r = (*r & !0xffff) | u64::from(value);
}

/// INT 15h EAX = E820h: EBX is the continuation (the entry index), ES:DI
/// the buffer, ECX its size. Returns the carry flag (error).
fn e820(
    r: &mut [u64; 16],
    v: &impl VmcsAccess,
    map: &shared::e820::E820Map,
    mem: &mut impl PhysMemory,
) -> bool {
    let index = (r[reg::RBX] & 0xffff_ffff) as usize;
    let entries = map.entries();
    if r[reg::RCX] & 0xffff_ffff < E820_RECORD || index >= entries.len() {
        r[reg::RAX] = (r[reg::RAX] & !0xff00) | (NOT_SUPPORTED << 8);
        return true;
    }
    let buf = v.read(F::GuestEsBase) + (r[reg::RDI] & 0xffff);
    if mem.write(buf, &entries[index].to_bytes()).is_err() {
        return true;
    }
    r[reg::RAX] = SMAP;
    r[reg::RCX] = E820_RECORD;
    r[reg::RBX] = if index + 1 < entries.len() {
        index as u64 + 1
    } else {
        0
    };
    false
}

/// Sets or clears CF in the FLAGS image of the interrupt frame (IP, CS,
/// FLAGS at SS:SP), which the stub's IRET restores.
fn set_carry_in_frame(v: &impl VmcsAccess, carry: bool, mem: &mut impl PhysMemory) {
    let sp = v.read(F::GuestRsp) & 0xffff;
    let addr = v.read(F::GuestSsBase) + ((sp + 4) & 0xffff);
    if let Ok(flags) = mem.read_u16(addr) {
        let flags = if carry {
            flags | FLAGS_CF
        } else {
            flags & !FLAGS_CF
        };
        let _ = mem.write(addr, &flags.to_le_bytes());
    }
}
