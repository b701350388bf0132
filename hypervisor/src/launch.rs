//! Starting the guest as the BIOS would have: the boot disk's first sector
//! at 0000:7C00, DL = the BIOS drive number, real mode, with the IVT, BIOS
//! data area and EBDA as the BIOS left them, except for L0's INT 15h hook.
//!
//! The hook: L0 takes 1 KiB from the top of conventional memory (lowering
//! the BIOS data area's base-memory size at 40:13h, and reporting that KiB
//! reserved), puts a 4-byte real-mode stub there and points the INT 15h
//! vector at it. The stub is `VMCALL; IRET`: L0 recognises the VMCALL by its
//! address and either emulates the memory-size functions (E820h, E801h,
//! 88h) from its edited map, or chains to the BIOS's original vector by
//! moving the guest's CS:IP there (the interrupt frame stays for the BIOS's
//! IRET). See `exits::int15`.

use shared::e820::{self, E820Map};
use shared::mem::PhysMemory;
use shared::vmx::VmcsAccess;

use crate::memory::GuestMemory;

/// Where the BIOS loads the boot sector.
pub const BOOT_SECTOR: u64 = 0x7c00;
/// BIOS data area: base memory size in KiB (40:13h).
const BDA_BASE_MEMORY_KB: u64 = 0x413;
/// INT 15h's IVT slot.
const IVT_INT15: u64 = 0x15 * 4;
/// The stub: VMCALL (0F 01 C1); IRET (CF).
const STUB: [u8; 4] = [0x0f, 0x01, 0xc1, 0xcf];
/// Offset of the stub's IRET.
pub const STUB_IRET: u64 = 3;

/// The hook as installed.
#[derive(Clone, Copy, Debug)]
pub struct Int15Hook {
    /// Physical address of the stub (segment base, offset 0).
    pub stub: u64,
    /// The BIOS's vector: (segment, offset).
    pub original: (u16, u16),
}

/// The guest's view of memory, answered by the INT 15h emulation.
pub struct GuestMap {
    pub map: E820Map,
    pub hook: Int15Hook,
}

static GUEST_MAP: spin::Once<GuestMap> = spin::Once::new();

/// The guest's map and hook, once installed.
pub fn guest_map() -> Option<&'static GuestMap> {
    GUEST_MAP.get()
}

/// Why the guest cannot be started.
#[derive(Debug)]
pub enum LaunchError {
    NoBootSector,
    BadBootSector,
    LowMemory,
    MapFull,
}

impl core::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NoBootSector => "no boot sector module (module2 --nounzip (hd1)+1)",
            Self::BadBootSector => "the boot sector module is not 512 bytes ending in 55 AA",
            Self::LowMemory => "the BIOS data area reports no usable conventional memory",
            Self::MapFull => "the memory map has too many entries",
        })
    }
}

/// Installs the INT 15h hook and builds the guest's map: the firmware map
/// with L0's region and the stub's KiB reserved.
pub fn install_int15_hook(
    mut map: E820Map,
    region: (u64, u64),
) -> Result<&'static GuestMap, LaunchError> {
    let mut mem = GuestMemory;
    let kb = mem
        .read_u16(BDA_BASE_MEMORY_KB)
        .map_err(|_| LaunchError::LowMemory)?;
    if !(64..=640).contains(&kb) {
        return Err(LaunchError::LowMemory);
    }
    let new_kb = kb - 1;
    let stub = u64::from(new_kb) * 1024;
    let vector = mem
        .read_u32(IVT_INT15)
        .map_err(|_| LaunchError::LowMemory)?;
    let original = ((vector >> 16) as u16, vector as u16);
    let seg = (stub >> 4) as u32;
    mem.write(stub, &STUB).map_err(|_| LaunchError::LowMemory)?;
    mem.write_u32(IVT_INT15, seg << 16)
        .map_err(|_| LaunchError::LowMemory)?;
    mem.write(BDA_BASE_MEMORY_KB, &new_kb.to_le_bytes())
        .map_err(|_| LaunchError::LowMemory)?;
    map.set_range(stub, stub + 1024, e820::kind::RESERVED)
        .map_err(|_| LaunchError::MapFull)?;
    map.set_range(region.0, region.1, e820::kind::RESERVED)
        .map_err(|_| LaunchError::MapFull)?;
    Ok(GUEST_MAP.call_once(|| GuestMap {
        map,
        hook: Int15Hook { stub, original },
    }))
}

/// Copies the boot sector (the multiboot module) to 0000:7C00.
pub fn place_boot_sector(module: (u64, u64)) -> Result<(), LaunchError> {
    let (start, end) = module;
    if end.saturating_sub(start) < 512 {
        return Err(LaunchError::BadBootSector);
    }
    let mut sector = [0u8; 512];
    GuestMemory
        .read(start, &mut sector)
        .map_err(|_| LaunchError::BadBootSector)?;
    if sector[510..] != [0x55, 0xaa] {
        return Err(LaunchError::BadBootSector);
    }
    GuestMemory
        .write(BOOT_SECTOR, &sector)
        .map_err(|_| LaunchError::BadBootSector)
}

/// Makes the current VMCS's guest the BIOS's boot state: CS:IP 0000:7C00,
/// DL = boot drive, interrupts enabled, caches on.
pub fn write_boot_state(
    v: &mut impl VmcsAccess,
    caps: &shared::vmx::VmxCaps,
    vcpu: &mut crate::vcpu::Vcpu,
    drive: u8,
) {
    shared::vmx::guest_init::write_boot_sector_state(v, caps, BOOT_SECTOR);
    vcpu.regs = Default::default();
    vcpu.regs.gpr[crate::vcpu::reg::RDX] = u64::from(drive);
}
