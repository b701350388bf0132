//! Exception classes (SDM Vol. 3A 6.6 "Exception Classifications",
//! Table 6-1): what a hypervisor needs to inject an exception as the
//! processor would deliver it.

/// RFLAGS.RF (resume flag).
pub const RFLAGS_RF: u64 = 1 << 16;

/// Whether exception `vector` is a fault (reported with RIP at the
/// faulting instruction, so that the processor pushes RFLAGS.RF = 1,
/// SDM 18.3.1.1). #DB is a fault or a trap depending on its cause; the
/// #DB a hypervisor injects for a single step is a trap, so it is not
/// counted here.
pub const fn is_fault(vector: u8) -> bool {
    matches!(
        vector,
        0 | 5 | 6 | 7 | 10 | 11 | 12 | 13 | 14 | 16 | 17 | 19 | 20 | 21
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_traps_and_aborts_follow_table_6_1() {
        let faults: Vec<u8> = (0..32).filter(|&v| is_fault(v)).collect();
        assert_eq!(faults, [0, 5, 6, 7, 10, 11, 12, 13, 14, 16, 17, 19, 20, 21]);
        // Traps (#DB single step, #BP, #OF), aborts (#DF, #MC), NMI.
        for v in [1, 2, 3, 4, 8, 18] {
            assert!(!is_fault(v), "{v}");
        }
    }
}
