//! Virtual MTRRs: each vCPU has its own copy of the MTRRs, which its RDMSR
//! and WRMSR of IA32_MTRR_DEF_TYPE, the fixed and the variable ranges
//! read and write (both intercepted). The guest's writes never reach the
//! physical MTRRs, which also set the memory types of L0's own memory;
//! EPT01's memory types follow the guest's MTRRs instead (with EPT the
//! processor ignores the MTRRs for guest accesses and uses EPT's types,
//! SDM 30.3.7.2). Each copy starts as the firmware left the hardware.
//!
//! EPT01 is shared: it takes the types of the vCPU that wrote last. The
//! MTRR update protocol (SDM 13.11.8) has every CPU write the same values,
//! so after it the copies agree. IA32_MTRRCAP passes through (read only).

use shared::mtrr::MtrrState;
use shared::percpu::MAX_CPUS;

/// Each vCPU's MTRRs; `None` inside until first used (then the hardware's;
/// still `None` without MTRRs).
static STATE: [spin::Mutex<Option<Option<MtrrState>>>; MAX_CPUS] =
    [const { spin::Mutex::new(None) }; MAX_CPUS];

fn with<R>(cpu: usize, f: impl FnOnce(&mut Option<MtrrState>) -> R) -> Option<R> {
    let mut s = STATE.get(cpu)?.lock();
    let state = s.get_or_insert_with(crate::ept01::read_mtrrs);
    Some(f(state))
}

/// RDMSR of `msr` by vCPU `cpu`: `None` if `msr` is not one of its MTRRs.
pub fn read(cpu: usize, msr: u32) -> Option<u64> {
    with(cpu, |s| {
        let s = s.as_ref()?;
        Some(s.value(s.classify(msr)?))
    })
    .flatten()
}

/// WRMSR of `value` to `msr` by vCPU `cpu`: false (#GP) if `msr` is not
/// one of its MTRRs or the hardware would refuse the value.
pub fn write(cpu: usize, msr: u32, value: u64) -> bool {
    let changed = with(cpu, |s| {
        let s = s.as_mut()?;
        let which = s.classify(msr)?;
        if !s.write_is_valid(which, value, crate::ept01::max_phys_addr()) {
            return None;
        }
        let retype = s.write_changes_types(which, value);
        s.apply(which, value);
        Some(retype.then_some(*s))
    })
    .flatten();
    match changed {
        // A write that changes no memory type (a disabled range rewritten,
        // as MSR-load areas do at every VM entry) costs no EPT01 rebuild.
        Some(Some(state)) => {
            crate::ept01::mtrrs_changed(Some(state));
            true
        }
        Some(None) => true,
        None => false,
    }
}
