//! VMX structures that overlap each other. Nothing in SDM 27.2.1.1 forbids
//! it: each structure is read (or written) where and when the SDM says,
//! so an overlap has one defined outcome:
//! - the VM-exit MSR-store area is the VM-entry MSR-load area: the entry
//!   loads from it, L2 writes the MSR, the exit stores L2's value into the
//!   same entry (27.4, 28.4);
//! - I/O bitmaps A and B are one page: a bit set for port 0x80 (A) is the
//!   bit of port 0x8080 (B) too (25.6.4);
//! - the MSR bitmap is the page of the VM-entry MSR-load area: the entry's
//!   index bytes are bitmap bits (here those of IA32_EFER's read), so
//!   RDMSR of IA32_EFER exits (25.6.9) while the entry loads the MSR.
//!
//! (VMPTRLD and VMCLEAR of the VMXON region are the negative suite's
//! `vmptrld-vmxon-pointer` and `vmclear-vmxon-pointer`.)

use lhv::negative_cases::{Outcome, Skip};
use shared::vmx::VmcsField as F;
use shared::vmx::exit::ExitReason;
use shared::x86::msr;

use super::region::in_al_dx;
use super::{Case, Group, Stub, Verdict, exit, l2_at, value};
use crate::exit::gpr;
use crate::negative::{Env, Page};

static PAGE: Page = Page::new();

/// What the entry loads into IA32_SYSENTER_ESP (canonical).
const LOADED: u64 = 0x0000_1111_2222_3000;
/// What L2 writes there before its VMCALL.
const WRITTEN: u64 = 0x0000_4444_5555_6000;

fn store_is_load(e: &mut Env) -> Result<Verdict, Skip> {
    e.fresh();
    PAGE.clear();
    PAGE.set(0, msr::IA32_SYSENTER_ESP.into());
    PAGE.set(1, LOADED);
    for (count, addr) in [
        (F::VmEntryMsrLoadCount, F::VmEntryMsrLoadAddress),
        (F::VmExitMsrStoreCount, F::VmExitMsrStoreAddress),
    ] {
        e.write(count, 1);
        e.write(addr, PAGE.pa());
    }
    // L2 reads the loaded value first (RDMSR does not exit: the MSR
    // bitmap is all zeros), then writes its own.
    l2_at(
        e,
        Stub::Wrmsr,
        &[
            (gpr::RCX, msr::IA32_SYSENTER_ESP.into()),
            (gpr::RAX, WRITTEN & 0xffff_ffff),
            (gpr::RDX, WRITTEN >> 32),
        ],
    );
    let mut got = e.launch();
    if got == Outcome::Success {
        got = value(WRITTEN, PAGE.get(1));
    }
    Ok(Verdict::is(Outcome::Success, got))
}

/// The port of I/O bitmap B at the same bit as [`super::region::PORT`] in A.
const PORT_B: u64 = 0x8000 | super::region::PORT;

fn io_bitmaps_one_page(e: &mut Env) -> Result<Verdict, Skip> {
    super::fresh_with_io_bitmaps(e)?;
    PAGE.clear();
    let port = super::region::PORT;
    PAGE.set((port / 64) as usize, 1 << (port % 64));
    e.write(F::IoBitmapAAddress, PAGE.pa());
    e.write(F::IoBitmapBAddress, PAGE.pa());
    l2_at(e, Stub::In, &[(gpr::RDX, PORT_B)]);
    Ok(Verdict::is(
        exit(ExitReason::IoInstruction, in_al_dx(PORT_B)),
        e.launch(),
    ))
}

/// The read bitmap for high MSRs (0xC0000000-0xC0001FFF) starts at byte
/// 1024 of the MSR bitmap (25.6.9).
const READ_HIGH: usize = 1024;

fn msr_bitmap_is_load_area(e: &mut Env) -> Result<Verdict, Skip> {
    e.fresh();
    PAGE.clear();
    // The entry sits where IA32_EFER's read bit is: byte READ_HIGH +
    // (0x80 / 8), bit 0, which is bit 0 of the entry's index. An odd
    // index (IA32_SYSENTER_ESP, 0x175) sets it.
    let efer_byte = READ_HIGH + ((msr::IA32_EFER & 0x1fff) / 8) as usize;
    let slot = efer_byte / 8;
    debug_assert!(efer_byte.is_multiple_of(16) && msr::IA32_SYSENTER_ESP & 1 == 1);
    PAGE.set(slot, msr::IA32_SYSENTER_ESP.into());
    PAGE.set(slot + 1, LOADED);
    e.write(F::MsrBitmapAddress, PAGE.pa());
    e.write(F::VmEntryMsrLoadCount, 1);
    e.write(F::VmEntryMsrLoadAddress, PAGE.pa() + efer_byte as u64);
    l2_at(e, Stub::Rdmsr, &[(gpr::RCX, msr::IA32_EFER.into())]);
    Ok(Verdict::is(exit(ExitReason::Rdmsr, 0), e.launch()))
}

pub const GROUP: Group = Group {
    what: "overlapping structures (SDM 25.6, 27.4, 28.4)",
    cases: &[
        Case {
            name: "msr-store-area-is-msr-load-area",
            run: store_is_load,
        },
        Case {
            name: "io-bitmaps-a-and-b-one-page",
            run: io_bitmaps_one_page,
        },
        Case {
            name: "msr-bitmap-is-msr-load-area",
            run: msr_bitmap_is_load_area,
        },
    ],
};
