//! What a hypervisor that single-steps a guest instruction (RFLAGS.TF with
//! #DB exiting) does with the #DB VM exit it gets: end its step, and give
//! the guest the #DB the guest itself would have taken (SDM 18.2.3, 27.1).
//! A #DB VM exit does not update DR6; its exit qualification carries the
//! bits (B0-B3, BD, BS), and the hypervisor writes them to DR6 when it
//! reflects the #DB (SDM 28.2.1, Table 28-1). Pure logic, host-tested.

/// Exit-qualification (and DR6) bits of a debug exception.
pub mod dr6 {
    /// B0-B3: a breakpoint condition of DR0-DR3 was met.
    pub const B0_B3: u64 = 0xf;
    /// BD: debug-register access detected.
    pub const BD: u64 = 1 << 13;
    /// BS: single step.
    pub const BS: u64 = 1 << 14;
}

/// The DR6 bits to set in the guest's DR6 and the #DB to inject for a #DB
/// exit with `qualification` during a hypervisor step, if the guest would
/// have taken a #DB: its own breakpoints that hit, and BS when it had TF
/// set itself (`guest_tf`). `None`: the #DB was the hypervisor's alone.
pub const fn reflect(qualification: u64, guest_tf: bool) -> Option<u64> {
    let own = qualification & (dr6::B0_B3 | dr6::BD);
    let bits = if guest_tf { own | dr6::BS } else { own };
    if bits == 0 { None } else { Some(bits) }
}

/// Interruptibility state: blocking by STI (bit 0) or by MOV SS (bit 1).
const BLOCKING_STI_MOVSS: u32 = 0b11;

/// The pending debug exceptions to enter a guest with when it retries an
/// instruction that faulted (an EPT violation the hypervisor resolved):
/// the instruction did not complete, so no single-step trap of its own can
/// be pending; BS stays only when blocking by STI or MOV SS defers one from
/// the instruction before (SDM 27.3.1.5 requires it then). Bochs saves BS
/// at such a fault when the instruction started with RFLAGS.TF = 1.
pub const fn pending_at_retry(pending: u64, interruptibility: u32) -> u64 {
    if interruptibility & BLOCKING_STI_MOVSS != 0 {
        pending
    } else {
        pending & !dr6::BS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_instruction_has_no_step_trap_of_its_own() {
        assert_eq!(pending_at_retry(dr6::BS, 0), 0);
        assert_eq!(pending_at_retry(dr6::BS | 0b0001, 0), 0b0001);
        // Deferred by STI or MOV SS: kept.
        assert_eq!(pending_at_retry(dr6::BS, 0b01), dr6::BS);
        assert_eq!(pending_at_retry(dr6::BS, 0b10), dr6::BS);
        // Blocking by NMI or SMI does not defer a trap.
        assert_eq!(pending_at_retry(dr6::BS, 0b1100), 0);
    }

    #[test]
    fn the_hypervisors_step_alone_is_swallowed() {
        assert_eq!(reflect(dr6::BS, false), None);
        assert_eq!(reflect(0, false), None);
    }

    #[test]
    fn the_guests_own_causes_are_reflected() {
        assert_eq!(reflect(dr6::BS, true), Some(dr6::BS));
        assert_eq!(reflect(dr6::BS | 0b0100, false), Some(0b0100));
        assert_eq!(reflect(0b0001, true), Some(0b0001 | dr6::BS));
        assert_eq!(reflect(dr6::BD, false), Some(dr6::BD));
        // Other qualification bits are not DR6 causes.
        assert_eq!(reflect(1 << 20, false), None);
    }
}
