//! Item 6: the MTRRs. A guest writes a variable range (disabled: mask V
//! clear, so no memory type changes) and reads it back; a reserved memory
//! type is #GP. Under L0 these are the vCPU's virtual MTRRs (the physical
//! ones, which also type L0's memory, are never written), which must
//! behave as the hardware's.

use shared::trap::vector;
use shared::x86;

use super::trap::catch;
use super::{Env, check, skip};

const IA32_MTRRCAP: u32 = 0xfe;
const PHYSBASE0: u32 = 0x200;

fn rdmsr(m: u32) -> u64 {
    // SAFETY: the MSR exists (CPUID and IA32_MTRRCAP say so).
    unsafe { x86::rdmsr(m) }
}

pub fn run(_env: &Env) {
    if x86::cpuid(1, 0).edx & (1 << 12) == 0 {
        skip("mtrr_write_read_back", "no MTRRs (CPUID.1:EDX.MTRR = 0)");
        return;
    }
    let vcnt = (rdmsr(IA32_MTRRCAP) & 0xff) as u32;
    if vcnt == 0 {
        skip("mtrr_write_read_back", "no variable MTRRs");
        return;
    }
    let base = PHYSBASE0 + 2 * (vcnt - 1);
    let (old_base, old_mask) = (rdmsr(base), rdmsr(base + 1));
    if old_mask & (1 << 11) != 0 {
        skip("mtrr_write_read_back", "the last variable MTRR is in use");
        return;
    }
    let (new_base, new_mask) = (0x7000_0006u64, 0xf_f000_0000u64);
    // SAFETY: a disabled range (mask V = 0) has no effect on memory types;
    // both values are valid; the old ones are put back below.
    unsafe {
        x86::wrmsr(base, new_base);
        x86::wrmsr(base + 1, new_mask);
    }
    let (b, m) = (rdmsr(base), rdmsr(base + 1));
    check(
        "mtrr_write_read_back",
        (b, m) == (new_base, new_mask),
        format_args!("{new_base:#x}, {new_mask:#x}"),
        format_args!("{b:#x}, {m:#x}"),
    );
    // Memory type 2 is reserved.
    let t = catch!("wrmsr"; in("ecx") base, in("eax") 0x7000_0002u32, in("edx") 0u32,);
    check(
        "mtrr_reserved_type_gp",
        t.is_some_and(|t| t.is(vector::GP, Some(0))) && rdmsr(base) == new_base,
        format_args!("#GP(0), the range unchanged"),
        format_args!("{t:?}, {:#x}", rdmsr(base)),
    );
    // SAFETY: the values read above.
    unsafe {
        x86::wrmsr(base, old_base);
        x86::wrmsr(base + 1, old_mask);
    }
}
