//! A copy of what the multiboot2 loader told us, in the kernel's own memory.
//!
//! The loader's information structure lives in memory that is free for the
//! OS; L0 hands that memory to its guest, so everything is copied once at
//! boot into fixed-capacity storage.

use heapless::{String, Vec};
use multiboot2::{BootInformation, BootInformationHeader};

/// Kinds of memory in the loader's map (multiboot2 / E820 types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    Usable,
    Reserved,
    AcpiReclaimable,
    AcpiNvs,
    Defective,
    Other(u32),
}

impl MemoryKind {
    /// From the multiboot2/E820 type number.
    pub fn from_type(t: u32) -> Self {
        match t {
            1 => Self::Usable,
            2 => Self::Reserved,
            3 => Self::AcpiReclaimable,
            4 => Self::AcpiNvs,
            5 => Self::Defective,
            t => Self::Other(t),
        }
    }

    /// The E820 type number.
    pub fn e820_type(self) -> u32 {
        match self {
            Self::Usable => 1,
            Self::Reserved => 2,
            Self::AcpiReclaimable => 3,
            Self::AcpiNvs => 4,
            Self::Defective => 5,
            Self::Other(t) => t,
        }
    }
}

/// One range of the memory map, `[base, base + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    pub base: u64,
    pub len: u64,
    pub kind: MemoryKind,
}

impl MemoryRegion {
    /// First address after the region (saturating).
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.len)
    }
}

/// A boot module: `[start, end)` physical and its command line.
#[derive(Clone, Debug)]
pub struct Module {
    pub start: u64,
    pub end: u64,
    pub cmdline: String<128>,
}

/// Most memory-map entries kept.
pub const MAX_REGIONS: usize = 128;
/// Most modules kept.
pub const MAX_MODULES: usize = 8;

/// What the kernels need from the boot information.
#[derive(Debug)]
pub struct BootInfo {
    cmdline: String<512>,
    pub memory_map: Vec<MemoryRegion, MAX_REGIONS>,
    pub modules: Vec<Module, MAX_MODULES>,
    /// Physical address of the copy of the ACPI RSDP inside the loader's
    /// information (valid only until that memory is reused).
    pub rsdp_copy: Option<u64>,
    /// The ACPI RSDP bytes (v1: 20 bytes, v2: 36 bytes), copied.
    pub rsdp: Vec<u8, 36>,
    /// Physical range of the loader's information structure.
    pub mbi_range: (u64, u64),
    /// Entries or characters that did not fit (reported at boot).
    pub truncated: bool,
}

impl BootInfo {
    /// The kernel command line.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }
}

static BOOT_INFO: spin::Once<BootInfo> = spin::Once::new();

/// Copies the multiboot2 information at physical `mbi` (identity-mapped).
pub(super) fn capture(mbi: u32) -> &'static BootInfo {
    BOOT_INFO.call_once(|| {
        let mut out = BootInfo {
            cmdline: String::new(),
            memory_map: Vec::new(),
            modules: Vec::new(),
            rsdp_copy: None,
            rsdp: Vec::new(),
            mbi_range: (0, 0),
            truncated: false,
        };
        // SAFETY: the loader passed this address in EBX and guarantees a valid
        // structure there; it is identity-mapped and not yet reused.
        let Ok(info) =
            (unsafe { BootInformation::load(mbi as usize as *const BootInformationHeader) })
        else {
            crate::println!("PANIC: the multiboot2 information at {mbi:#x} is invalid");
            crate::platform::shutdown(1);
        };
        out.mbi_range = (info.start_address() as u64, info.end_address() as u64);
        if let Some(Ok(c)) = info.command_line_tag().map(|t| t.cmdline()) {
            out.truncated |= push_str(&mut out.cmdline, c);
        }
        if let Some(mm) = info.memory_map_tag() {
            for a in mm.memory_areas() {
                let r = MemoryRegion {
                    base: a.start_address(),
                    len: a.size(),
                    kind: MemoryKind::from_type(a.typ().into()),
                };
                out.truncated |= out.memory_map.push(r).is_err();
            }
        }
        for m in info.module_tags() {
            let mut cmdline = String::new();
            out.truncated |= push_str(&mut cmdline, m.cmdline().unwrap_or(""));
            let module = Module {
                start: u64::from(m.start_address()),
                end: u64::from(m.end_address()),
                cmdline,
            };
            out.truncated |= out.modules.push(module).is_err();
        }
        if let Some(t) = info.rsdp_v2_tag() {
            copy_rsdp(&mut out, t as *const _ as *const u8, 36);
        } else if let Some(t) = info.rsdp_v1_tag() {
            copy_rsdp(&mut out, t as *const _ as *const u8, 20);
        }
        out
    })
}

/// The RSDP tag is an 8-byte tag header followed by the RSDP itself.
fn copy_rsdp(out: &mut BootInfo, tag: *const u8, len: usize) {
    let rsdp = tag.wrapping_add(8);
    out.rsdp_copy = Some(rsdp as u64);
    for i in 0..len {
        // SAFETY: the tag holds `len` RSDP bytes after its header (multiboot2
        // specification 3.6.15/3.6.16), inside the loader's structure.
        let b = unsafe { rsdp.add(i).read() };
        let _ = out.rsdp.push(b);
    }
}

/// Appends as much of `s` as fits; returns whether it was cut.
fn push_str<const N: usize>(dst: &mut String<N>, s: &str) -> bool {
    for ch in s.chars() {
        if dst.push(ch).is_err() {
            return true;
        }
    }
    false
}

impl BootInfo {
    /// Prints the command line and the memory map (one line per region).
    pub fn print(&self) {
        crate::println!("Command line: {}", self.cmdline());
        crate::println!("Memory map ({} regions):", self.memory_map.len());
        for r in &self.memory_map {
            crate::println!("  [{:#014x}, {:#014x}) {:?}", r.base, r.end(), r.kind);
        }
        for m in &self.modules {
            crate::println!("Module [{:#x}, {:#x}) '{}'", m.start, m.end, m.cmdline);
        }
        if self.truncated {
            crate::println!("Note: some boot information did not fit and was dropped");
        }
    }
}
