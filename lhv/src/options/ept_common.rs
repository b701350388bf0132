//! What SWITCH_EPT and LARGE_PAGE share on the kernel side: physical
//! memory through LHV's identity map, each CPU's scratch chunk of free RAM
//! (layout in [`lhv::ept_variants::scratch`]), MAXPHYADDR, and INVEPT with
//! raw operands (for the types that must fail), and the start of their
//! `setup` ([`base`]).

use ::core::arch::asm;
use lhv::ept_variants::{self, PAGE_2M, scratch};
use shared::boot::{MemoryKind, layout};
use shared::cpu_println;
use shared::ept::{EptConfig, Eptp};
use shared::mem::{MemError, PhysMemory};
use shared::vmx::{VmFail, VmInstructionError, VmcsField as F};

use crate::assert::test_assert;
use crate::test_loop::{Ctx, boot_info};

/// LHV's identity map of physical memory ends here.
const IDENTITY_LIMIT: u64 = 1 << 32;
/// Scratch RAM starts at or above this (clear of the BIOS, the AP
/// trampoline and whatever boot loaders leave low).
const SCRATCH_LOW: u64 = 16 << 20;

/// Physical memory below 4 GiB through LHV's identity map. Used only for
/// EPT paging structures and scratch chunks LHV owns.
pub struct IdentityMem;

impl IdentityMem {
    fn check(addr: u64, len: usize) -> Result<(), MemError> {
        let end = shared::mem::range_end(addr, len)?;
        if end > IDENTITY_LIMIT {
            return Err(MemError::Unmapped {
                addr: addr.max(IDENTITY_LIMIT),
            });
        }
        Ok(())
    }
}

impl PhysMemory for IdentityMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        Self::check(addr, buf.len())?;
        // SAFETY: `[addr, addr + len)` is below 4 GiB, which LHV's boot
        // paging maps identically (present, writable); the callers pass
        // addresses of RAM LHV owns (its EPT tables, its scratch chunks).
        unsafe {
            ::core::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len());
        }
        Ok(())
    }

    fn write(&mut self, addr: u64, buf: &[u8]) -> Result<(), MemError> {
        Self::check(addr, buf.len())?;
        // SAFETY: as in `read`; nothing else holds a reference to these
        // bytes (EPT tables are only read by the processor, in L2).
        unsafe {
            ::core::ptr::copy_nonoverlapping(buf.as_ptr(), addr as *mut u8, buf.len());
        }
        Ok(())
    }
}

/// Writes zeros to `[addr, addr + len)` (scratch RAM).
pub fn zero(mem: &mut IdentityMem, addr: u64, len: u64) {
    let zeros = [0u8; 512];
    let mut a = addr;
    while a < addr + len {
        let r = mem.write(a, &zeros[..(addr + len - a).min(512) as usize]);
        test_assert!(r.is_ok(), "scratch RAM write", "success", r);
        a += 512;
    }
}

/// The base of CPU `cpu`'s scratch chunk: the `cpu`-th chunk of usable RAM
/// in `[16 MiB, 4 GiB)` clear of LHV's image and the multiboot information.
pub fn chunk(cpu: usize) -> Option<u64> {
    let boot = boot_info();
    let mut usable = [(0u64, 0u64); 32];
    let mut n = 0;
    for r in boot
        .memory_map
        .iter()
        .filter(|r| r.kind == MemoryKind::Usable)
    {
        if n < usable.len() {
            usable[n] = (r.base.max(SCRATCH_LOW), r.end());
            n += 1;
        }
    }
    let excluded = [layout::image_phys_range(), boot.mbi_range];
    ept_variants::scratch_chunk(
        &usable[..n],
        &excluded,
        cpu,
        scratch::SIZE,
        PAGE_2M,
        IDENTITY_LIMIT,
    )
}

/// MAXPHYADDR (CPUID.80000008H:EAX[7:0]; 36 where the leaf is missing).
pub fn max_phys_addr() -> u8 {
    if shared::x86::cpuid(0x8000_0000, 0).eax >= 0x8000_0008 {
        shared::x86::cpuid(0x8000_0008, 0).eax as u8
    } else {
        36
    }
}

/// The EPT configuration of this CPU.
pub fn ept_config(ctx: &Ctx) -> EptConfig {
    EptConfig::from_caps(ctx.caps, max_phys_addr())
}

/// INVEPT with a raw type and EPTP (reserved descriptor bits zero).
pub fn invept_raw(ctx: &Ctx, kind: u64, eptp: u64) -> Result<(), VmFail> {
    let desc: [u64; 2] = [eptp, 0];
    let (cf, zf): (u8, u8);
    // SAFETY: VMX root operation (the test loop runs in it); INVEPT only
    // drops cached translations, and invalid operands fail without effect.
    // The descriptor is 16 readable bytes.
    unsafe {
        asm!(
            "invept {kind}, [{desc}]",
            "setc {cf}",
            "setz {zf}",
            kind = in(reg) kind,
            desc = in(reg) desc.as_ptr(),
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack, readonly),
        );
    }
    if cf != 0 {
        Err(VmFail::Invalid)
    } else if zf != 0 {
        Err(VmFail::Valid(VmInstructionError::from_u32(
            ctx.read(F::VmInstructionError) as u32,
        )))
    } else {
        Ok(())
    }
}

/// INVEPT that must succeed.
pub fn invept_ok(ctx: &Ctx, kind: u64, eptp: u64, what: &str) {
    let r = invept_raw(ctx, kind, eptp);
    test_assert!(
        r.is_ok(),
        format_args!("INVEPT {what} (EPTP {eptp:#x})"),
        "success",
        r
    );
}

/// What an option deriving from the EPT option's tables starts from: this
/// CPU's scratch chunk, the EPT configuration and the root of the EPT
/// option's (4-level) hierarchy.
pub struct EptBase {
    pub chunk: u64,
    pub cfg: EptConfig,
    pub root: u64,
}

/// The common start of SWITCH_EPT's and LARGE_PAGE's `setup`: `None`
/// (nothing to do) without the EPT option, or, after printing `SKIP
/// <name>: no free RAM for CPU n's <what>`, without a scratch chunk. The
/// EPT option (earlier in the registry) has set up its EPTP, which must
/// be a valid 4-level one.
pub fn base(ctx: &Ctx, name: &str, what: &str) -> Option<EptBase> {
    if !ctx.opt.contains(lhv::opt::LhvOpt::EPT) {
        return None;
    }
    let Some(chunk) = chunk(ctx.cpu) else {
        cpu_println!("SKIP {name}: no free RAM for CPU {}'s {what}", ctx.cpu);
        return None;
    };
    let cfg = ept_config(ctx);
    let base = Eptp(ctx.read(F::EptPointer));
    test_assert!(
        base.validate(&cfg).is_ok() && base.levels() == 4,
        format_args!("{name}: the EPT option's EPTP"),
        "a valid 4-level EPTP",
        base.0
    );
    Some(EptBase {
        chunk,
        cfg,
        root: base.root(),
    })
}
