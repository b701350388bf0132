//! VMX instructions at CPL 3 in VMX root operation (SDM 31.3): each raises
//! #GP(0) (INVEPT/INVVPID #UD where unsupported). Each case runs one
//! program of the user page (`ring3/entry.S`, `lhv_ring3_vmx_*`): the
//! instruction, then UD2. The fault ends the ring-3 section; a fault at the
//! instruction is its outcome, one at the UD2 means it did not fault.

use ::core::sync::atomic::{AtomicU64, Ordering};

use lhv::negative_cases::{Outcome, Skip, at_cpl3};
use shared::trap::{self, Claim, TrapFrame, vector};

use super::{Action, Case, Env, Expect, Group};
use crate::assert::fail;
use crate::hw::tables;
use crate::ring3::{self, Section, TrapStack};

unsafe extern "C" {
    static lhv_ring3_vmx_vmxon: u8;
    static lhv_ring3_vmx_vmxoff: u8;
    static lhv_ring3_vmx_vmclear: u8;
    static lhv_ring3_vmx_vmptrld: u8;
    static lhv_ring3_vmx_vmptrst: u8;
    static lhv_ring3_vmx_vmread: u8;
    static lhv_ring3_vmx_vmwrite: u8;
    static lhv_ring3_vmx_vmlaunch: u8;
    static lhv_ring3_vmx_vmresume: u8;
    static lhv_ring3_vmx_invept: u8;
    static lhv_ring3_vmx_invvpid: u8;
    static lhv_ring3_vmx_vmcall: u8;
}

static SECTION: Section = Section::new();
static TRAP_STACK: TrapStack = TrapStack::new();
static FAULT_VECTOR: AtomicU64 = AtomicU64::new(0);
static FAULT_ERROR: AtomicU64 = AtomicU64::new(0);
static FAULT_RIP: AtomicU64 = AtomicU64::new(0);
static HANDLERS: spin::Once<()> = spin::Once::new();

/// Takes the one fault of a CPL-3 program and ends its section.
fn fault_handler(frame: &mut TrapFrame) -> Claim {
    if frame.cs & 3 != 3 || !SECTION.active.load(Ordering::Acquire) {
        return Claim::NotMine;
    }
    FAULT_VECTOR.store(frame.vector, Ordering::Relaxed);
    FAULT_ERROR.store(frame.error_code, Ordering::Relaxed);
    FAULT_RIP.store(frame.rip, Ordering::Relaxed);
    SECTION.exit(0)
}

/// Runs `program` at CPL 3; the outcome of its first instruction.
fn run(program: *const u8) -> Outcome {
    ring3::map_user_pages();
    HANDLERS.call_once(|| {
        for v in [vector::UD, vector::GP] {
            if trap::add_handler(v, fault_handler).is_err() {
                fail(
                    format_args!("negative: CPL-3 fault handler for vector {v}"),
                    format_args!("a free slot"),
                    format_args!("none"),
                );
            }
        }
    });
    FAULT_RIP.store(0, Ordering::Relaxed);
    let rsp0 = (tables::tss_base() + 4) as *mut u64;
    // SAFETY: RSP0 is the BSP's own TSS field (the TSS is writable in the
    // image); it points at the suite's trap stack for the section only, so
    // that the fault from ring 3 does not land on the stack LHV runs on.
    let saved = unsafe {
        let saved = rsp0.read_unaligned();
        rsp0.write_unaligned(TRAP_STACK.top());
        saved
    };
    SECTION.run(program, ring3::user_stack_top(0, false), [0; 3]);
    // SAFETY: restores the value read above.
    unsafe { rsp0.write_unaligned(saved) };
    if FAULT_RIP.load(Ordering::Relaxed) == ring3::user_alias(program) {
        Outcome::Exception {
            vector: FAULT_VECTOR.load(Ordering::Relaxed) as u8,
            error_code: FAULT_ERROR.load(Ordering::Relaxed),
        }
    } else {
        Outcome::Success
    }
}

/// VMXON at CPL 3 (for the cases outside VMX operation).
pub fn vmxon() -> Outcome {
    run(&raw const lhv_ring3_vmx_vmxon)
}

/// VMREAD at CPL 3 (for the cases outside VMX operation).
pub fn vmread() -> Outcome {
    run(&raw const lhv_ring3_vmx_vmread)
}

fn gp0(_: &Env) -> Result<Outcome, Skip> {
    Ok(at_cpl3(true))
}

fn invept_rule(e: &Env) -> Result<Outcome, Skip> {
    Ok(at_cpl3(e.caps.ept_vpid.invept))
}

fn invvpid_rule(e: &Env) -> Result<Outcome, Skip> {
    Ok(at_cpl3(e.caps.ept_vpid.invvpid))
}

macro_rules! cpl3_case {
    ($name:literal, $sym:ident, $rule:expr) => {
        Case {
            name: $name,
            action: Action::Fresh(|_| run(&raw const $sym)),
            expect: Expect::Rule($rule),
        }
    };
}

pub const GROUP: Group = Group {
    section: "31.3 VMX instructions at CPL 3 (VMX root)",
    cases: &[
        cpl3_case!("vmxon-at-cpl3", lhv_ring3_vmx_vmxon, gp0),
        cpl3_case!("vmxoff-at-cpl3", lhv_ring3_vmx_vmxoff, gp0),
        cpl3_case!("vmclear-at-cpl3", lhv_ring3_vmx_vmclear, gp0),
        cpl3_case!("vmptrld-at-cpl3", lhv_ring3_vmx_vmptrld, gp0),
        cpl3_case!("vmptrst-at-cpl3", lhv_ring3_vmx_vmptrst, gp0),
        cpl3_case!("vmread-at-cpl3", lhv_ring3_vmx_vmread, gp0),
        cpl3_case!("vmwrite-at-cpl3", lhv_ring3_vmx_vmwrite, gp0),
        cpl3_case!("vmlaunch-at-cpl3", lhv_ring3_vmx_vmlaunch, gp0),
        cpl3_case!("vmresume-at-cpl3", lhv_ring3_vmx_vmresume, gp0),
        cpl3_case!("invept-at-cpl3", lhv_ring3_vmx_invept, invept_rule),
        cpl3_case!("invvpid-at-cpl3", lhv_ring3_vmx_invvpid, invvpid_rule),
        cpl3_case!("vmcall-at-cpl3", lhv_ring3_vmx_vmcall, gp0),
    ],
};
