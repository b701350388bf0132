//! `kvm216212`: <https://bugzilla.kernel.org/show_bug.cgi?id=216212>
//! (XMHF64 notes, "Reproducing KVM bug in LHV"). L2 in 32-bit protected
//! mode with paging off sets CR0.PG with CR4.PAE = 1, so the processor
//! loads the four PDPTEs from CR3 (SDM Vol. 3A 4.4.1). L1 has not mapped
//! that guest-physical page in its EPT (EPT12). The SDM (Vol. 3C 29.3.3.2)
//! makes the PDPTE load an EPT violation: a VM exit to L1 with RIP at the
//! MOV to CR0 and the PDPT's guest-physical address (GOOD). KVM's nested
//! VMX instead fails `load_pdptrs()` in its MOV-to-CR0 emulation and
//! injects #GP into L2, which L1 sees as a #GP exit (BAD).
//!
//! After the GOOD exit L1 maps the page and resumes: the MOV completes and
//! L2 runs with PAE paging; L1 checks the PDPTEs the exit saved (SDM
//! 28.3.4) against the page's contents.

use lhv::ept_layout::{self, IdentityEpt, TablePhys};
use lhv::low_mem::{self, CODE, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME, gdt};
use shared::boot::layout::phys_of;
use shared::trap::vector;
use shared::vmx::controls::SecondaryProcBased;
use shared::vmx::exit::{EptViolationQual, ExitReason, InterruptionInfo};
use shared::vmx::insn::{InveptDescriptor, InveptType, invept};
use shared::vmx::{VmcsField as F, VmxCaps};

use super::{Reproducer, Verdict};
use crate::assert::{test_assert, test_assert_eq};
use crate::exit::{Exit, gpr};
use crate::low_code;
use crate::test_loop::{Ctx, enter_once};
use crate::vmcs_setup::Controls;

::core::arch::global_asm!(
    include_str!("../mode_switch.S"),
    include_str!("kvm216212.S"),
    low = const CODE,
    gdt_data = const gdt::DATA,
    gdt_code32 = const gdt::CODE32,
    call_ready = const CALL_READY,
    call_paging = const CALL_PAGING,
    options(att_syntax)
);

unsafe extern "C" {
    static lhv_k216212_start: u8;
    static lhv_k216212_end: u8;
    static lhv_k216212_entry64: u8;
    static lhv_k216212_vmcall_ready: u8;
    static lhv_k216212_mov_cr0: u8;
    static lhv_k216212_vmcall_paging: u8;
}

/// The reproducer.
pub const REPRO: Reproducer = Reproducer {
    name: "kvm216212",
    about: "PDPTE load of MOV to CR0 (PAE) from a CR3 page unmapped in EPT12 must exit to L1 (KVM bug 216212)",
    unsupported,
    request,
    run,
};

/// L2 is in 32-bit protected mode, paging off, CR3 = the PDPT.
const CALL_READY: u64 = 0x4c48_f001;
/// L2 runs with PAE paging.
const CALL_PAGING: u64 = 0x4c48_f002;

/// PAE PDPTE and PDE bits (SDM Vol. 3A Tables 4-8, 4-9).
const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const PS: u64 = 1 << 7;

/// A 4-KiB paging structure.
#[repr(C, align(4096))]
struct Page([u64; 512]);

static mut PDPT: Page = Page([0; 512]);
static mut PD: Page = Page([0; 512]);
static mut EPT: IdentityEpt = IdentityEpt::new();

fn unsupported(caps: &VmxCaps) -> Option<&'static str> {
    let e = &caps.ept_vpid;
    if !caps.has_ept() || !caps.has_unrestricted_guest() {
        Some("the CPU lacks EPT or unrestricted guest")
    } else if !(e.walk_length_4 && e.memory_type_wb && e.pages_2m && e.invept_single_context) {
        Some("EPT lacks a 4-level walk, WB, 2-MiB pages or single-context INVEPT")
    } else if !low_code::usable() {
        Some("the low pages it needs are not usable RAM")
    } else {
        None
    }
}

fn request(c: &mut Controls) {
    c.proc2 |= SecondaryProcBased::ENABLE_EPT | SecondaryProcBased::UNRESTRICTED_GUEST;
}

fn low(sym: *const u8) -> u64 {
    low_code::low_address(&raw const lhv_k216212_start, sym)
}

fn is_call(ctx: &Ctx, exit: &Exit, call: u64) -> bool {
    // Outside 64-bit mode only EAX is defined.
    exit.reason == ExitReason::Vmcall && ctx.regs.gpr[gpr::RAX] as u32 == call as u32
}

fn flush(eptp: u64) {
    let desc = InveptDescriptor { eptp, reserved: 0 };
    // SAFETY: VMX root operation; single-context INVEPT is supported
    // (checked in `unsupported`).
    let r = unsafe { invept(InveptType::SingleContext, &desc) };
    test_assert!(r.is_ok(), "single-context INVEPT", "success", r);
}

fn run(ctx: &mut Ctx) -> Verdict {
    // SAFETY: reproducer mode runs once, on the BSP only; nothing else
    // touches these statics.
    let (pdpt, pd, ept) = unsafe {
        (
            super::exclusive(&raw mut PDPT),
            super::exclusive(&raw mut PD),
            super::exclusive(&raw mut EPT),
        )
    };
    let pd_pa = phys_of(pd as *const Page);
    let pdpt_pa = phys_of(pdpt as *const Page);
    test_assert!(
        pdpt_pa < 1 << 32,
        "PDPT below 4 GiB (CR3 of 32-bit code)",
        "< 4 GiB",
        pdpt_pa
    );
    // PD: identity map of the first GiB with 2-MiB pages; PDPTE 0 -> PD.
    for (i, e) in pd.0.iter_mut().enumerate() {
        *e = ((i as u64) << 21) | P | RW | PS;
    }
    pdpt.0 = [0; 512];
    pdpt.0[0] = pd_pa | P;
    let want_pdptes = [pdpt.0[0], 0, 0, 0];

    let phys = TablePhys {
        pml4: phys_of(&ept.pml4),
        pdpt: phys_of(&ept.pdpt),
        pd: [0, 1, 2, 3].map(|i| phys_of(&ept.pd[i])),
        pt: phys_of(&ept.pt),
    };
    ept.build(&phys, pdpt_pa);
    test_assert_eq!(
        ept.translate(&phys, pdpt_pa),
        None,
        "EPT12 translation of the PDPT page"
    );
    test_assert_eq!(
        ept.translate(&phys, CODE),
        Some(CODE),
        "EPT12 translation of the code page"
    );
    let eptp = ept_layout::eptp(phys.pml4, false);
    ctx.write(F::EptPointer, eptp);
    flush(eptp);

    low_code::install(&raw const lhv_k216212_start, &raw const lhv_k216212_end);
    let area = low_mem::area(0).unwrap_or(low_mem::STACKS);
    ctx.write(F::GuestRip, low(&raw const lhv_k216212_entry64));
    ctx.write(F::GuestRsp, area + low_mem::AREA);
    ctx.regs.gpr[gpr::RDI] = pdpt_pa;

    // 1. Protected mode, paging off, long mode off, CR3 = the PDPT.
    let exit = enter_once(ctx);
    test_assert!(
        is_call(ctx, &exit, CALL_READY),
        "L2's first exit: VMCALL from 32-bit protected mode",
        CALL_READY,
        format_args!("{} at RIP {:#x}", exit.reason_field, exit.guest_rip)
    );
    test_assert_eq!(
        exit.guest_rip,
        low(&raw const lhv_k216212_vmcall_ready),
        "guest RIP of the VMCALL from protected mode"
    );
    let cr0 = ctx.read(F::GuestCr0);
    test_assert_eq!(
        (cr0 & CR0_PE, cr0 & CR0_PG),
        (CR0_PE, 0),
        "guest CR0 (PE, PG)"
    );
    let efer = ctx.read(F::GuestIa32Efer);
    test_assert_eq!(
        efer & (EFER_LME | EFER_LMA),
        0,
        "guest IA32_EFER (LME, LMA)"
    );
    test_assert_eq!(ctx.read(F::GuestCr3), pdpt_pa, "guest CR3 (the PDPT)");
    test_assert_eq!(ctx.read(F::GuestCr4) & CR4_PAE, CR4_PAE, "guest CR4.PAE");
    ctx.skip_instruction(&exit);

    // 2. MOV to CR0 (PG = 1): the PDPTE load must exit.
    let mov_rip = low(&raw const lhv_k216212_mov_cr0);
    let exit = enter_once(ctx);
    match exit.reason {
        ExitReason::EptViolation => {}
        ExitReason::ExceptionOrNmi => {
            let info = InterruptionInfo(exit.interruption_info);
            if info.vector() == vector::GP && exit.guest_rip == mov_rip {
                return Verdict::bad(format_args!(
                    "L2 got #GP at MOV to CR0 (RIP {mov_rip:#x}) instead of an EPT violation exit for its PDPT at {pdpt_pa:#x}"
                ));
            }
            return Verdict::bad(format_args!(
                "exception exit (interruption info {:#x}) at RIP {:#x} instead of an EPT violation at {mov_rip:#x}",
                info.0, exit.guest_rip
            ));
        }
        _ if is_call(ctx, &exit, CALL_PAGING) => {
            return Verdict::bad(format_args!(
                "paging was enabled without an EPT violation although the PDPT page {pdpt_pa:#x} is not mapped in EPT12"
            ));
        }
        _ => {
            return Verdict::bad(format_args!(
                "exit {} at RIP {:#x} instead of an EPT violation at {mov_rip:#x}",
                exit.reason_field, exit.guest_rip
            ));
        }
    }
    let gpa = ctx.read(F::GuestPhysicalAddress);
    if exit.guest_rip != mov_rip || gpa & !0x1f != pdpt_pa {
        return Verdict::bad(format_args!(
            "EPT violation at RIP {:#x} for GPA {gpa:#x}, expected RIP {mov_rip:#x} and the PDPT {pdpt_pa:#x}",
            exit.guest_rip
        ));
    }
    let qual = exit.qualification;
    let q = EptViolationQual(qual);
    // SDM Table 28-7: a read; no linear address for a PDPTE load (bit 7 is
    // 0 "for those resulting from an attempt to load the guest PDPTEs as
    // part of the execution of the MOV CR instruction"); not present.
    let got = (
        q.write(),
        q.fetch(),
        q.readable(),
        q.writable(),
        q.executable(),
        q.gla_valid(),
    );
    test_assert_eq!(
        got,
        (false, false, false, false, false, false),
        "EPT violation qualification (w,x,R,W,X,gla-valid) of the PDPTE load"
    );
    if !q.read() {
        if ctx.on_bochs {
            ctx.skip_bochs(
                "kvm216212 read bit of the qualification",
                "omits the read bit for paging-structure accesses",
            );
        } else {
            test_assert!(q.read(), "EPT violation qualification: read", true, false);
        }
    }
    test_assert_eq!(
        ctx.read(F::GuestCr0) & CR0_PG,
        0,
        "guest CR0.PG at the EPT violation"
    );

    // 3. Map the page; the MOV completes with the page's PDPTEs.
    ept.set_hole_present(pdpt_pa, true);
    flush(eptp);
    let exit = enter_once(ctx);
    test_assert!(
        is_call(ctx, &exit, CALL_PAGING),
        "L2's exit after the PDPT page is mapped: VMCALL with PAE paging",
        CALL_PAGING,
        format_args!("{} at RIP {:#x}", exit.reason_field, exit.guest_rip)
    );
    test_assert_eq!(
        exit.guest_rip,
        low(&raw const lhv_k216212_vmcall_paging),
        "guest RIP of the VMCALL with paging on"
    );
    let cr0 = ctx.read(F::GuestCr0);
    test_assert_eq!(cr0 & CR0_PG, CR0_PG, "guest CR0.PG after the MOV");
    test_assert_eq!(
        ctx.read(F::GuestIa32Efer) & EFER_LMA,
        0,
        "guest EFER.LMA with PAE paging"
    );
    let pdptes = [
        F::GuestPdpte0,
        F::GuestPdpte1,
        F::GuestPdpte2,
        F::GuestPdpte3,
    ]
    .map(|f| ctx.read(f));
    test_assert_eq!(
        pdptes,
        want_pdptes,
        "guest PDPTEs saved by the exit (SDM 28.3.4)"
    );
    Verdict::good(format_args!(
        "EPT violation exit at MOV to CR0 for the PDPT at GPA {gpa:#x} (qualification {qual:#x}); after mapping it L2 runs with PAE paging"
    ))
}
