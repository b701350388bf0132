//! The VMCS edited in memory behind the processor's (L0's) back. SDM
//! 25.11.1: the format of the VMCS region is implementation-specific, the
//! processor may cache an active VMCS, and software that writes the region
//! of an active VMCS gets undefined results; VMCLEAR writes the cached
//! data back (25.11.3). So the checks are those true of every
//! implementation:
//! - edited while clear (after VMCLEAR, located by a value VMWRITE put
//!   there): the next VMPTRLD and VMREAD see the edit (the data of a clear
//!   VMCS is in memory, which VMPTRLD reads);
//! - edited while current: VMREAD returns the old or the new value, the
//!   VMCS still enters L2, and after VMCLEAR and VMPTRLD again one of the
//!   two is seen;
//! - its revision identifier overwritten while current: VMLAUNCH enters
//!   L2 (cached data) or fails VMfailInvalid (the identifier re-read, as
//!   Bochs does), VMPTRLD after VMCLEAR succeeds (the cached identifier
//!   written back) or fails for the wrong revision (VMfailInvalid: there is
//!   no current VMCS after VMCLEAR, 31.2); with the identifier restored,
//!   the VMCS enters L2.
//!
//! The edited field is CR3-target value 0 (no effect with CR3-target
//! count 0).

use lhv::negative_cases::{Outcome, Skip};
use shared::mem::PhysMemory;
use shared::vmx::VmcsField as F;

use super::{Case, Group, Verdict, value};
use crate::negative::{Env, guard};
use crate::options::ept_common::IdentityMem;

const FIELD: F = F::Cr3TargetValue0;
/// Values the case writes (distinct from anything else in a VMCS).
const VMWRITTEN: u64 = 0x5643_5331_3200_1000;
const EDITED: u64 = 0x5643_5331_3200_2000;
const EDITED_CURRENT: u64 = 0x5643_5331_3200_3000;
const REGION: usize = 4096;
/// Bits 30:0 of a VMCS region's first dword: the revision identifier
/// (bit 31 is the shadow-VMCS indicator, SDM 25.2).
const REVISION_BITS: u32 = 0x7fff_ffff;

fn read_q(pa: u64, off: usize) -> u64 {
    let mut b = [0u8; 8];
    let _ = IdentityMem.read(pa + off as u64, &mut b);
    u64::from_le_bytes(b)
}

fn write_bytes(pa: u64, off: usize, bytes: &[u8]) {
    let _ = IdentityMem.write(pa + off as u64, bytes);
}

/// The offset of `v` in the region of the (clear) VMCS at `pa`.
fn find(pa: u64, v: u64) -> Option<usize> {
    (0..REGION / 8).map(|i| i * 8).find(|&o| read_q(pa, o) == v)
}

/// VMREAD of [`FIELD`] (u64::MAX if it fails).
fn vmread() -> u64 {
    match guard::vmread(FIELD.encoding().into()) {
        (Outcome::Success, v) => v,
        _ => u64::MAX,
    }
}

/// Clear VMCS with [`VMWRITTEN`] in [`FIELD`] and its offset, or the
/// outcome that stopped it.
fn prepare(e: &mut Env) -> Result<usize, Outcome> {
    e.fresh();
    e.write(FIELD, VMWRITTEN);
    let pa = e.ctx.vmcs_pa;
    match guard::vmclear(pa) {
        Outcome::Success => {}
        o => return Err(o),
    }
    find(pa, VMWRITTEN).ok_or(Outcome::WrongValue {
        expected: VMWRITTEN,
        got: 0,
    })
}

fn edited_while_clear(e: &mut Env) -> Result<Verdict, Skip> {
    let pa = e.ctx.vmcs_pa;
    let off = match prepare(e) {
        Ok(o) => o,
        Err(o) => return Ok(Verdict::is(Outcome::Success, o)),
    };
    write_bytes(pa, off, &EDITED.to_le_bytes());
    let mut got = guard::vmptrld(pa);
    if got == Outcome::Success {
        got = value(EDITED, vmread());
    }
    Ok(Verdict::is(Outcome::Success, got))
}

/// `v` is `a` or `b`: Success, else the wrong value (against `b`).
fn either(v: u64, a: u64, b: u64) -> Outcome {
    if v == a {
        Outcome::Success
    } else {
        value(b, v)
    }
}

fn edited_while_current(e: &mut Env) -> Result<Verdict, Skip> {
    let pa = e.ctx.vmcs_pa;
    let off = match prepare(e) {
        Ok(o) => o,
        Err(o) => return Ok(Verdict::is(Outcome::Success, o)),
    };
    let mut got = guard::vmptrld(pa);
    if got != Outcome::Success {
        return Ok(Verdict::is(Outcome::Success, got));
    }
    write_bytes(pa, off, &EDITED_CURRENT.to_le_bytes());
    got = either(vmread(), VMWRITTEN, EDITED_CURRENT);
    if got == Outcome::Success {
        got = e.launch();
    }
    if got == Outcome::Success {
        got = guard::vmclear(pa);
    }
    if got == Outcome::Success {
        got = guard::vmptrld(pa);
    }
    if got == Outcome::Success {
        got = either(vmread(), VMWRITTEN, EDITED_CURRENT);
    }
    Ok(Verdict::is(Outcome::Success, got))
}

fn revision_while_current(e: &mut Env) -> Result<Verdict, Skip> {
    e.fresh();
    let pa = e.ctx.vmcs_pa;
    let rev = e.caps.basic.revision_id;
    let wrong = !rev & REVISION_BITS;
    write_bytes(pa, 0, &wrong.to_le_bytes());
    // Undefined (25.11.1): the processor uses its cached copy (L2 runs, as
    // under L0) or re-reads the identifier (Bochs: VMfailInvalid).
    let launched = e.launch();
    let _ = guard::vmclear(pa);
    let loaded = guard::vmptrld(pa);
    // Restore the identifier: the VMCS works again.
    write_bytes(pa, 0, &rev.to_le_bytes());
    if !matches!(launched, Outcome::Success | Outcome::FailInvalid) {
        return Ok(Verdict::one_of(
            Outcome::Success,
            Outcome::FailInvalid,
            launched,
        ));
    }
    // VMPTRLD's error 11 (wrong revision) is VMfailInvalid here: VMCLEAR
    // of the current VMCS left no current VMCS (31.2, 31.3 VMCLEAR).
    if !matches!(loaded, Outcome::Success | Outcome::FailInvalid) {
        return Ok(Verdict::one_of(
            Outcome::Success,
            Outcome::FailInvalid,
            loaded,
        ));
    }
    e.fresh();
    Ok(Verdict::is(Outcome::Success, e.launch()))
}

pub const GROUP: Group = Group {
    what: "VMCS edited in memory (SDM 25.11.1, 25.11.3)",
    cases: &[
        Case {
            name: "vmcs-edited-while-clear",
            run: edited_while_clear,
        },
        Case {
            name: "vmcs-edited-while-current",
            run: edited_while_current,
        },
        Case {
            name: "vmcs-revision-edited-while-current",
            run: revision_while_current,
        },
    ],
};
