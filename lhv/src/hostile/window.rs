//! A 2-MiB window onto any physical address: the boot identity map only
//! reaches 4 GiB, so a case that touches unclaimed bus space above it
//! points one 2-MiB entry of the identity map (linear 3 GiB, the PCI hole
//! of every scenario's machine, which LHV does not use) at it for the
//! duration of a closure.

use shared::x86;

/// The linear address the window lives at.
const WINDOW: u64 = 0xC000_0000;
/// Bits 51:12 of a paging entry.
const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
/// Present, writable, 2-MiB page.
const PDE_P_W_PS: u64 = 0x83;

/// The physical address of the page-directory entry that maps `WINDOW`
/// (the boot tables: PML4[0] -> PDPT, PDPT[3] -> PD).
fn pde_addr() -> u64 {
    // SAFETY: the boot paging structures are identity-mapped low memory;
    // LHV never changes their structure, only this one entry.
    unsafe {
        let pml4 = x86::read_cr3() & ADDR;
        let pdpt = ::core::ptr::read_volatile(pml4 as *const u64) & ADDR;
        let pd = ::core::ptr::read_volatile((pdpt + 8 * (WINDOW >> 30)) as *const u64) & ADDR;
        pd + 8 * ((WINDOW >> 21) & 511)
    }
}

fn invlpg(va: u64) {
    // SAFETY: INVLPG only drops a translation.
    unsafe { ::core::arch::asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
}

/// Runs `f` with a pointer that reaches physical address `phys`.
pub fn with<R>(phys: u64, f: impl FnOnce(*mut u32) -> R) -> R {
    let slot = pde_addr() as *mut u64;
    // SAFETY: `slot` is the PDE of the window (see `pde_addr`); nothing of
    // LHV's lives in the window's 2 MiB, and the old entry is put back.
    let old = unsafe { ::core::ptr::read_volatile(slot) };
    // SAFETY: as above: only the window's entry changes.
    unsafe { ::core::ptr::write_volatile(slot, (phys & !0x1f_ffff & ADDR) | PDE_P_W_PS) };
    invlpg(WINDOW);
    let r = f((WINDOW + (phys & 0x1f_fffc)) as *mut u32);
    // SAFETY: puts the entry LHV had back.
    unsafe { ::core::ptr::write_volatile(slot, old) };
    invlpg(WINDOW);
    r
}

/// Reads, writes `value`, reads again at `phys`.
pub fn read_write_read(phys: u64, value: u32) -> (u32, u32) {
    with(phys, |p| {
        // SAFETY: `p` reaches `phys` through the window; the case owns it.
        unsafe {
            let a = ::core::ptr::read_volatile(p);
            ::core::ptr::write_volatile(p, value);
            (a, ::core::ptr::read_volatile(p))
        }
    })
}
