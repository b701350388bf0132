//! EPT12 mapping L0's region. L1's EPT maps one guest-physical page of L2
//! to a page of L0's region; L2 must see what L1 sees there (memory that
//! is not there: reads all ones, writes dropped), as on hardware an EPT
//! entry may name any host-physical address and the access goes to the
//! bus (SDM 29.3.2: EPT gives the physical address; nothing checks that
//! memory is behind it).

use ::core::sync::atomic::{AtomicBool, Ordering};

use lhv::ept_layout::{self, IdentityEpt, MEMORY_TYPE_WB, TablePhys, bits};
use lhv::negative_cases::{Outcome, Skip};
use shared::boot::layout::phys_of;
use shared::mem::PhysMemory;
use shared::vmx::controls::SecondaryProcBased;
use shared::vmx::insn::InveptType;
use shared::vmx::{VmcsField as F, VmxCaps};

use super::{Case, Group, Stub, Verdict, l2_at, need_l0, value};
use crate::exit::gpr;
use crate::negative::{Env, Page, guard};
use crate::options::ept_common::IdentityMem;

/// The identity EPT12 (BSP only).
struct Tables(::core::cell::UnsafeCell<IdentityEpt>);

// SAFETY: only the BSP touches it, between VM entries (`TAKEN`).
unsafe impl Sync for Tables {}

static TABLES: Tables = Tables(::core::cell::UnsafeCell::new(IdentityEpt::new()));
static TAKEN: AtomicBool = AtomicBool::new(false);

/// L2's page whose EPT12 entry points into L0's region.
static PROBE: Page = Page::new();

/// What L2 writes (and must not read back).
const PATTERN: u64 = 0x4c32_5752_4954_4531;

/// Whether the capabilities allow the identity EPT (4-level walks, WB,
/// 2-MiB pages) and single-context INVEPT.
pub fn usable(caps: &VmxCaps) -> Result<(), Skip> {
    let x = &caps.ept_vpid;
    if !(caps.has_ept() && x.walk_length_4 && x.memory_type_wb && x.pages_2m) {
        return Err(Skip::Unsupported(
            "EPT with 4-level walks, WB and 2-MiB pages",
        ));
    }
    if !(x.invept && x.invept_single_context) {
        return Err(Skip::Unsupported("single-context INVEPT"));
    }
    Ok(())
}

/// A 4-KiB leaf to `hpa` (read, write, execute, WB).
pub const fn leaf(hpa: u64) -> u64 {
    (hpa & bits::ADDRESS_MASK) | bits::RWX | (MEMORY_TYPE_WB << bits::MEMORY_TYPE_SHIFT)
}

/// Index of `gpa`'s entry in its page table.
pub const fn pt_index(gpa: u64) -> usize {
    ((gpa >> 12) as usize) % ept_layout::ENTRIES
}

fn map_l0_region(e: &mut Env) -> Result<Verdict, Skip> {
    let l0 = need_l0(e)?;
    usable(e.caps)?;
    if TAKEN.swap(true, Ordering::AcqRel) {
        return Err(Skip::Unsupported("the suite's EPT12 is in use"));
    }
    // SAFETY: taken once (TAKEN), by the BSP; the processor reads the
    // tables only during the VM entry below.
    let t = unsafe { &mut *TABLES.0.get() };
    let phys = TablePhys {
        pml4: phys_of(&t.pml4),
        pdpt: phys_of(&t.pdpt),
        pd: [0, 1, 2, 3].map(|i| phys_of(&t.pd[i])),
        pt: phys_of(&t.pt),
    };
    let probe = PROBE.pa();
    let target = l0.page(l0.region_size / 4);
    t.build(&phys, probe);
    t.pt.0[pt_index(probe)] = leaf(target);
    PROBE.clear();
    let eptp = ept_layout::eptp(phys.pml4, false);
    e.fresh();
    e.set_secondary(SecondaryProcBased::ENABLE_EPT.bits());
    e.write(F::EptPointer, eptp);
    // SDM 29.4.3.1: no stale translation of the EPTP may survive.
    let r = guard::invept(InveptType::SingleContext as u64, eptp);
    if r != Outcome::Success {
        return Ok(Verdict::is(Outcome::Success, r));
    }
    let va = &PROBE as *const Page as u64;
    l2_at(e, Stub::Mem, &[(gpr::RDI, va), (gpr::RSI, PATTERN)]);
    let got = e.launch();
    if got != Outcome::Success {
        return Ok(Verdict::is(Outcome::Success, got));
    }
    let (first, again) = (e.ctx.regs.gpr[gpr::RAX], e.ctx.regs.gpr[gpr::RDX]);
    let mut got = value(u64::MAX, first);
    if got == Outcome::Success {
        got = value(u64::MAX, again);
    }
    // The write went to L0's region, not to the probe page.
    if got == Outcome::Success {
        got = value(0, PROBE.get(0));
    }
    // L1 sees the same at that address (probe mode's check, from L1).
    if got == Outcome::Success {
        let mut q = [0u8; 8];
        if IdentityMem.read(target, &mut q).is_ok() {
            got = value(u64::MAX, u64::from_le_bytes(q));
        }
    }
    Ok(Verdict::is(Outcome::Success, got))
}

pub const GROUP: Group = Group {
    what: "EPT12 into L0's region (SDM 29.3.2)",
    cases: &[Case {
        name: "ept12-maps-l0-region",
        run: map_l0_region,
    }],
};
