//! USER_MODE (0x40): before every VM entry of an iteration, L1 drops to
//! CPL 3 and runs a program of the user page (see [`crate::ring3`]): it
//! computes 1 + ... + n on its user stack, asks ring 0 to add
//! [`SYSCALL_ADD_OPERAND`] by SYSCALL (ring 0 checks RCX, R11, the user
//! RSP; the program checks the answer), takes seven faults that ring 0
//! checks exactly (vector, error code, CR2, RIP, CS/SS with RPL 3, RSP,
//! RFLAGS) and moves past, then exits by SYSCALL; back in ring 0, L1 checks
//! the result and the counts and goes on with the VM entry.
//!
//! Faults: #PF reading LHV's data through the supervisor-only high half
//! (P|U), #PF writing the read-only user code page (P|W|U), #PF reading a
//! not-present user page (U), #GP(0) from HLT and from MOV from CR0, #GP
//! with error code 0x402 from INT 0x80 (LHV's IDT gates are DPL 0), #UD.
//!
//! [`SYSCALL_ADD_OPERAND`]: lhv::ring3_abi::SYSCALL_ADD_OPERAND

use lhv::opt::LhvOpt;
use lhv::ring3_abi::expected_result;

use super::TestOption;
use crate::assert::test_assert_eq;
use crate::ring3::l1;
use crate::test_loop::Ctx;

/// The USER_MODE checks of one CPU.
pub struct UserMode {
    sections: u64,
}

impl UserMode {
    /// Fresh state.
    pub const fn new() -> Self {
        Self { sections: 0 }
    }
}

/// The program's input in iteration `iter` (1 to 16).
pub const fn input(iter: u64, cpu: usize) -> u64 {
    (iter + cpu as u64) % 16 + 1
}

impl TestOption for UserMode {
    fn bit(&self) -> LhvOpt {
        LhvOpt::USER_MODE
    }

    fn before_entry(&mut self, ctx: &mut Ctx) {
        let n = input(ctx.iter, ctx.cpu);
        let out = l1::run(n);
        test_assert_eq!(out.result, expected_result(n), "L1 ring-3 program's result");
        test_assert_eq!(
            out.faults,
            l1::FAULTS.len(),
            "faults taken from L1's ring 3"
        );
        test_assert_eq!(
            out.syscalls,
            1u64,
            "system calls from L1's ring 3 before exit"
        );
        self.sections += 1;
    }

    fn count(&self) -> u64 {
        self.sections
    }
}
