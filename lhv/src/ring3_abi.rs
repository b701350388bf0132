//! Pure encodings for LHV's ring-3 tests (USER_MODE, NESTED_USER_MODE):
//! segment and gate descriptors, the access-rights form the VMCS uses,
//! IA32_STAR, page-table entries of the user subtree, the exception error
//! codes the tests expect, and the result the user program must compute.
//!
//! SDM Vol. 3A 3.4.5 (segment descriptors), 6.14.1 (64-bit IDT gates),
//! 6.13 (error code), 4.7 (page-fault error code), 5.8.8 (SYSCALL/SYSRET);
//! Vol. 3C 25.4.1 (access-rights format of the guest segment fields).

/// Page-table entry bits (SDM Vol. 3A 4.5, Table 4-19/4-20).
pub mod pte {
    /// Present.
    pub const P: u64 = 1 << 0;
    /// Writable.
    pub const W: u64 = 1 << 1;
    /// User-accessible.
    pub const U: u64 = 1 << 2;
    /// Physical-address bits 51:12.
    pub const ADDR: u64 = 0x000f_ffff_ffff_f000;
}

/// Page-fault error-code bits (SDM Vol. 3A 4.7).
pub mod pf {
    /// The fault was a protection violation (0: not-present page).
    pub const P: u64 = 1 << 0;
    /// The access was a write.
    pub const W: u64 = 1 << 1;
    /// The access was in user mode (CPL 3).
    pub const U: u64 = 1 << 2;
}

/// The error code of a #GP raised by `INT n` through a gate whose DPL is
/// below CPL (SDM Vol. 3A 6.13: index `n`, IDT flag bit 1, EXT 0).
pub const fn int_gate_gp_error(vector: u8) -> u64 {
    ((vector as u64) << 3) | 2
}

/// Where the user pages live: PML4 slot 1 (linear 512 GiB), unused by the
/// boot page tables, which map only PML4 slots 0 (identity, 4 GiB) and 511
/// (the image's high-half window), both supervisor-only.
pub const USER_PML4_INDEX: usize = 1;
/// Linear base of the user subtree.
pub const USER_BASE: u64 = (USER_PML4_INDEX as u64) << 39;
/// The user code page (read-only, user): the image's ring-3 code.
pub const USER_CODE_PT_INDEX: usize = 0;
/// A never-present page of the subtree.
pub const USER_NOT_PRESENT_PT_INDEX: usize = 2;
/// First user stack page; CPU `c` has page `FIRST + 2c` (its L1 stack)
/// and `FIRST + 2c + 1` (its L2 stack).
pub const USER_STACK_FIRST_PT_INDEX: usize = 16;

/// Linear address of page-table slot `index` of the user subtree.
pub const fn user_page_va(index: usize) -> u64 {
    USER_BASE + ((index as u64) << 12)
}

/// The page-table slot of CPU `cpu`'s user stack (`l2`: L2's).
pub const fn user_stack_pt_index(cpu: usize, l2: bool) -> usize {
    USER_STACK_FIRST_PT_INDEX + 2 * cpu + l2 as usize
}

/// A 4-KiB page-table entry (or a non-leaf entry) for `phys` with `flags`.
pub const fn table_entry(phys: u64, flags: u64) -> u64 {
    (phys & pte::ADDR) | flags
}

/// Descriptor bits.
mod bits {
    pub const ACCESSED: u64 = 1 << 40;
    pub const RW: u64 = 1 << 41;
    pub const CODE: u64 = 1 << 43;
    pub const S: u64 = 1 << 44;
    pub const DPL_SHIFT: u32 = 45;
    pub const P: u64 = 1 << 47;
    pub const L: u64 = 1 << 53;
    pub const DB: u64 = 1 << 54;
    pub const G: u64 = 1 << 55;
    /// Limit 0xfffff (bits 15:0 and 51:48).
    pub const LIMIT_MAX: u64 = 0xffff | (0xf << 48);
}

/// A 64-bit code segment descriptor with privilege `dpl` (accessed, so
/// the processor never writes it back).
pub const fn code64_descriptor(dpl: u8) -> u64 {
    bits::LIMIT_MAX
        | bits::ACCESSED
        | bits::RW
        | bits::CODE
        | bits::S
        | ((dpl as u64 & 3) << bits::DPL_SHIFT)
        | bits::P
        | bits::L
        | bits::G
}

/// A writable data segment descriptor with privilege `dpl` (accessed,
/// 4 GiB, big).
pub const fn data_descriptor(dpl: u8) -> u64 {
    bits::LIMIT_MAX
        | bits::ACCESSED
        | bits::RW
        | bits::S
        | ((dpl as u64 & 3) << bits::DPL_SHIFT)
        | bits::P
        | bits::DB
        | bits::G
}

/// System-descriptor type of an available 64-bit TSS.
pub const TSS_AVAILABLE: u64 = 0x9;
/// ... of a busy 64-bit TSS.
pub const TSS_BUSY: u64 = 0xb;

/// The two quadwords of a 64-bit TSS descriptor (SDM Vol. 3A 8.2.3).
pub const fn tss_descriptor(base: u64, limit: u32, busy: bool) -> (u64, u64) {
    let ty = if busy { TSS_BUSY } else { TSS_AVAILABLE };
    let low = (limit as u64 & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (ty << 40)
        | bits::P
        | (((limit as u64 >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    (low, base >> 32)
}

/// The VMCS access-rights form of a descriptor (SDM Vol. 3C 25.4.1: bits
/// 7:0 = descriptor bits 47:40, bits 15:12 = descriptor bits 55:52).
pub const fn access_rights(descriptor: u64) -> u64 {
    (descriptor >> 40) & 0xf0ff
}

/// A 64-bit interrupt gate (IF cleared on entry; SDM Vol. 3A 6.14.1) to
/// `handler` in code segment `selector`, callable by `INT n` from CPL
/// `dpl` and below, on IST stack `ist` (0: the TSS's RSP for the new CPL).
pub const fn interrupt_gate(handler: u64, selector: u16, ist: u8, dpl: u8) -> (u64, u64) {
    let low = (handler & 0xffff)
        | ((selector as u64) << 16)
        | ((ist as u64 & 7) << 32)
        | (0xe << 40)
        | ((dpl as u64 & 3) << 45)
        | (1 << 47)
        | (((handler >> 16) & 0xffff) << 48);
    (low, handler >> 32)
}

/// The handler address of a 64-bit gate.
pub const fn gate_offset(low: u64, high: u64) -> u64 {
    (low & 0xffff) | (((low >> 48) & 0xffff) << 16) | ((high & 0xffff_ffff) << 32)
}

/// IA32_STAR for SYSCALL to `kernel_cs` (SS = `kernel_cs` + 8) and SYSRET
/// to the user selectors that follow `sysret_base` (SS = base + 8, CS =
/// base + 16, both RPL 3; SDM Vol. 3A 5.8.8).
pub const fn star(kernel_cs: u16, sysret_base: u16) -> u64 {
    ((sysret_base as u64) << 48) | ((kernel_cs as u64) << 32)
}

/// The selectors SYSRET to 64-bit mode loads from `star`: (CS, SS).
pub const fn sysret_selectors(star: u64) -> (u16, u16) {
    let base = (star >> 48) as u16;
    ((base + 16) | 3, (base + 8) | 3)
}

/// The increment the `ADD` system call adds.
pub const SYSCALL_ADD_OPERAND: u64 = 0x1000;

/// What the user program returns for input `n` (≥ 1): the sum 1 + ... + n
/// it computes itself, plus [`SYSCALL_ADD_OPERAND`] added by ring 0.
pub const fn expected_result(n: u64) -> u64 {
    n * (n + 1) / 2 + SYSCALL_ADD_OPERAND
}

/// The result a user program reports when its own check of the `ADD`
/// system call's answer failed.
pub const ADD_MISMATCH: u64 = u64::MAX;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desc::{descriptor_limit, system_descriptor_base};

    #[test]
    fn kernel_descriptors_match_the_vmcs_access_rights_lhv_uses() {
        // vmcs_setup's AR_CODE64 and AR_DATA.
        assert_eq!(access_rights(code64_descriptor(0)), 0xa09b);
        assert_eq!(access_rights(data_descriptor(0)), 0xc093);
        assert_eq!(access_rights(code64_descriptor(3)), 0xa0fb);
        assert_eq!(access_rights(data_descriptor(3)), 0xc0f3);
        assert_eq!(descriptor_limit(code64_descriptor(0)), 0xffff_ffff);
    }

    #[test]
    fn descriptors_match_the_x86_64_crate() {
        use x86_64::structures::gdt::{Descriptor, DescriptorFlags as D};
        let Descriptor::UserSegment(kc) = Descriptor::kernel_code_segment() else {
            panic!()
        };
        assert_eq!(code64_descriptor(0), kc);
        let Descriptor::UserSegment(ud) = Descriptor::user_data_segment() else {
            panic!()
        };
        assert_eq!(data_descriptor(3), ud);
        assert_eq!(data_descriptor(0) | D::DPL_RING_3.bits(), ud);
    }

    #[test]
    fn tss_descriptor_round_trips() {
        let base = 0xffff_ffff_8123_4560;
        let (lo, hi) = tss_descriptor(base, 0x67, true);
        assert_eq!(system_descriptor_base(lo, hi), base);
        assert_eq!(descriptor_limit(lo), 0x67);
        assert_eq!(access_rights(lo), 0x8b);
        assert_eq!(access_rights(tss_descriptor(base, 0x67, false).0), 0x89);
    }

    #[test]
    fn interrupt_gate_fields() {
        let h = 0xffff_ffff_8020_1234;
        let (lo, hi) = interrupt_gate(h, 0x08, 2, 3);
        assert_eq!(gate_offset(lo, hi), h);
        assert_eq!((lo >> 16) & 0xffff, 0x08);
        assert_eq!((lo >> 32) & 7, 2);
        // P, DPL 3, type 0xE.
        assert_eq!((lo >> 40) & 0xff, 0xee);
    }

    #[test]
    fn star_gives_lhvs_user_selectors() {
        let s = star(0x08, 0x10);
        assert_eq!(s, 0x0010_0008_0000_0000);
        assert_eq!(sysret_selectors(s), (0x23, 0x1b));
    }

    #[test]
    fn error_codes_and_layout() {
        assert_eq!(int_gate_gp_error(0x80), 0x402);
        assert_eq!(int_gate_gp_error(0x81), 0x40a);
        assert_eq!(USER_BASE, 0x80_0000_0000);
        assert_eq!(user_page_va(2), 0x80_0000_2000);
        assert_eq!(user_stack_pt_index(63, true), 16 + 127);
        assert!(user_stack_pt_index(63, true) < 512);
        assert!(crate::desc::is_canonical(user_page_va(511)));
        assert_eq!(table_entry(0x1234_5fff, pte::P | pte::U), 0x1234_5005);
    }

    #[test]
    fn expected_results() {
        assert_eq!(expected_result(1), 1 + 0x1000);
        assert_eq!(expected_result(20), 210 + 0x1000);
    }
}
