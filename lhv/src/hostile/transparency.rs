//! Item 10: where the hardware's answer is known, L0 gives the same.
//! - a VMCALL that is not an L0 hypercall: #UD, as outside VMX operation
//!   (RAX = 0, and RAX = L0's magic with an unknown number);
//! - the #UD frame has RF = 1 (a fault).
//!
//! (The #GP frame's RF is checked with the CR0 case.)

use shared::hypercall::MAGIC;
use shared::trap::vector;

use super::trap::{RFLAGS_RF, catch};
use super::{Env, check};

pub fn run(_env: &Env) {
    for (name, rax) in [
        ("vmcall_rax0_ud", 0u64),
        ("vmcall_unknown_ud", MAGIC | 0x77),
    ] {
        let t = catch!("vmcall"; inout("rax") rax => _,);
        check(
            name,
            t.is_some_and(|t| t.is(vector::UD, None) && t.rflags & RFLAGS_RF != 0),
            format_args!("#UD with RF = 1"),
            format_args!("{t:?}"),
        );
    }
}
