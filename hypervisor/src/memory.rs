//! L0's memory: one contiguous region at the top of usable RAM below 4 GiB
//! that holds the relocated image (code, data, stacks, VMCS and VMXON
//! regions) and a frame pool for everything allocated later (page tables,
//! EPT tables). Everything outside the region belongs to the guest.
//!
//! Relocation (BSP, before the APs start): copy the image from its load
//! area to the region, build page tables inside the region (identity map of
//! the low 4 GiB, high-half window onto the region) and switch CR3, all in
//! one small assembly block so that nothing runs on the old copy's stack in
//! between.

use core::sync::atomic::{AtomicU64, Ordering};

use shared::boot::BootInfo;
use shared::boot::layout::{self, KERNEL_LOAD_PHYS, KERNEL_VIRT_BASE};
use shared::e820::{E820Entry, E820Map};
use shared::ept::FrameAlloc;
use shared::mem::{IDENTITY_MAP_END, MemError, PhysMemory, range_end};

const MIB: u64 = 1 << 20;
const PAGE: u64 = 4096;
const LARGE_PAGE: u64 = 2 * MIB;
/// Default region size (`mem=<MB>` overrides).
const DEFAULT_REGION_MB: u64 = 64;
/// The window PD maps 511 large pages (slot 0 is below the load address).
const MAX_REGION: u64 = 511 * LARGE_PAGE;
/// Frames the pool must have at least, beyond the image.
const MIN_POOL: u64 = 4 * MIB;

/// L0's region `[base, end)`, set once by [`relocate`].
static REGION_BASE: AtomicU64 = AtomicU64::new(0);
static REGION_END: AtomicU64 = AtomicU64::new(0);

/// L0's region as `(base, end)`.
pub fn region() -> (u64, u64) {
    (
        REGION_BASE.load(Ordering::Relaxed),
        REGION_END.load(Ordering::Relaxed),
    )
}

/// Whether `[addr, addr + len)` touches L0's region.
pub fn overlaps_region(addr: u64, len: u64) -> bool {
    let (b, e) = region();
    addr < e && b < addr.saturating_add(len)
}

/// The firmware memory map as an [`E820Map`].
pub fn firmware_map(boot: &BootInfo) -> E820Map {
    let raw = boot.memory_map.iter().map(|r| E820Entry {
        base: r.base,
        len: r.len,
        kind: r.kind.e820_type(),
    });
    E820Map::from_entries(raw).unwrap_or_default()
}

/// Why L0 could not place its region.
#[derive(Debug)]
pub enum RegionError {
    TooSmall { size: u64, needed: u64 },
    NoRoom { size: u64 },
}

impl core::fmt::Display for RegionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooSmall { size, needed } => {
                write!(
                    f,
                    "mem={} MiB is too small (need {} MiB)",
                    size / MIB,
                    needed.div_ceil(MIB)
                )
            }
            Self::NoRoom { size } => write!(f, "no usable RAM below 4 GiB fits {} MiB", size / MIB),
        }
    }
}

/// The frame pool: the part of the region after the image and L0's page
/// tables.
pub struct FramePool {
    next: u64,
    end: u64,
}

static POOL: spin::Mutex<FramePool> = spin::Mutex::new(FramePool { next: 0, end: 0 });

impl FrameAlloc for FramePool {
    fn alloc_zeroed(&mut self) -> Option<u64> {
        if self.next + PAGE > self.end {
            return None;
        }
        let frame = self.next;
        self.next += PAGE;
        // The pool lies in the identity map and belongs to L0 alone.
        HostMemory.zero_page(frame);
        Some(frame)
    }
}

/// Runs `f` with the frame pool locked.
pub fn with_pool<R>(f: impl FnOnce(&mut FramePool) -> R) -> R {
    f(&mut POOL.lock())
}

/// Frames left in the pool.
pub fn pool_free() -> u64 {
    let p = POOL.lock();
    (p.end - p.next) / PAGE
}

/// Chooses the region, moves the image there and switches to page tables
/// inside it. Returns the region `(base, end)`.
pub fn relocate(boot: &BootInfo) -> Result<(u64, u64), RegionError> {
    let (vstart, vend) = layout::image_virt_range();
    // Offsets of the image inside the window (relative to the load address).
    let img_off = vstart - KERNEL_VIRT_BASE - KERNEL_LOAD_PHYS;
    let img_len = vend - vstart;
    let tables_off = (img_off + img_len).next_multiple_of(PAGE);
    let needed = tables_off + TABLE_PAGES * PAGE + MIN_POOL;
    let mb = shared::cmdline::get_num(boot.cmdline(), "mem").unwrap_or(DEFAULT_REGION_MB);
    let size = (mb.saturating_mul(MIB))
        .next_multiple_of(LARGE_PAGE)
        .min(MAX_REGION);
    if size < needed {
        return Err(RegionError::TooSmall { size, needed });
    }
    let (_, cur_end) = layout::image_phys_range();
    let floor = [cur_end, boot.mbi_range.1]
        .into_iter()
        .chain(boot.modules.iter().map(|m| m.end))
        .max()
        .unwrap_or(0)
        .max(16 * MIB)
        .next_multiple_of(LARGE_PAGE);
    let base = firmware_map(boot)
        .highest_usable_fit(size, LARGE_PAGE, floor, IDENTITY_MAP_END)
        .ok_or(RegionError::NoRoom { size })?;
    let window_base = base - KERNEL_LOAD_PHYS;
    let tables = base + tables_off;
    let cr3 = build_page_tables(tables, window_base, size);
    let src = layout::virt_to_phys(vstart);
    let dst = base + img_off;
    // SAFETY: the destination is usable RAM that nothing else uses (chosen
    // above, disjoint from the image, the boot information and the
    // modules); `cr3` maps the image's virtual range onto the copy, and
    // the identity map stays as before. Interrupts are off, so between the
    // copy and the switch nothing writes the old copy; the block uses no
    // stack.
    unsafe {
        core::arch::asm!(
            "rep movsb",
            "mov cr3, {cr3}",
            cr3 = in(reg) cr3,
            inout("rsi") src => _,
            inout("rdi") dst => _,
            inout("rcx") img_len => _,
            options(nostack),
        );
    }
    layout::set_window_phys_base(window_base);
    REGION_BASE.store(base, Ordering::Relaxed);
    REGION_END.store(base + size, Ordering::Relaxed);
    *POOL.lock() = FramePool {
        next: tables + TABLE_PAGES * PAGE,
        end: base + size,
    };
    Ok((base, base + size))
}

/// PML4, identity PDPT, 4 identity PDs, high PDPT, window PD; then the
/// page tables of the window's large pages that hold guard pages.
const TABLE_PAGES: u64 = 8 + SPLIT_PAGES;
/// Page tables for the large pages of the exit stacks' guard pages.
const SPLIT_PAGES: u64 = shared::guard_page::max_split_pages(crate::vcpu::SLOTS_BYTES);
const PTE_P: u64 = 1 << 0;
const PTE_W: u64 = 1 << 1;
const PTE_PS: u64 = 1 << 7;
const PTE_G: u64 = 1 << 8;

/// Writes L0's page tables at `tables` ([`TABLE_PAGES`] pages in the
/// region) and returns the CR3 value. The window maps the region with
/// global 2-MiB pages, except the large pages that hold the exit stacks'
/// guard pages: 4-KiB page tables map those, their guards not present.
fn build_page_tables(tables: u64, window_base: u64, size: u64) -> u64 {
    let mut m = HostMemory;
    for i in 0..TABLE_PAGES {
        m.zero_page(tables + i * PAGE);
    }
    let pml4 = tables;
    let pdpt_low = tables + PAGE;
    let pd_low = tables + 2 * PAGE;
    let pdpt_high = tables + 6 * PAGE;
    let pd_window = tables + 7 * PAGE;
    let w = |m: &mut HostMemory, a: u64, v: u64| {
        let _ = m.write_u64(a, v);
    };
    w(&mut m, pml4, pdpt_low | PTE_P | PTE_W);
    w(&mut m, pml4 + 511 * 8, pdpt_high | PTE_P | PTE_W);
    for i in 0..4 {
        w(
            &mut m,
            pdpt_low + i * 8,
            (pd_low + i * PAGE) | PTE_P | PTE_W,
        );
    }
    for i in 0..2048u64 {
        w(
            &mut m,
            pd_low + i * 8,
            (i * LARGE_PAGE) | PTE_P | PTE_W | PTE_PS,
        );
    }
    // KERNEL_VIRT_BASE is PML4 slot 511, PDPT slot 510.
    w(&mut m, pdpt_high + 510 * 8, pd_window | PTE_P | PTE_W);
    let first = KERNEL_LOAD_PHYS / LARGE_PAGE;
    for i in first..first + size / LARGE_PAGE {
        let pa = window_base + i * LARGE_PAGE;
        w(
            &mut m,
            pd_window + i * 8,
            pa | PTE_P | PTE_W | PTE_PS | PTE_G,
        );
    }
    let guards = crate::vcpu::exit_stack_guards();
    // At most SPLIT_PAGES large pages hold guards (`max_split_pages`).
    for (k, va) in (0u64..).zip(guards.large_pages().take(SPLIT_PAGES as usize)) {
        let pt = tables + (8 + k) * PAGE;
        let i = (va - KERNEL_VIRT_BASE) / LARGE_PAGE;
        let pa = window_base + i * LARGE_PAGE;
        let entries = shared::guard_page::split_large_page(va, pa, PTE_P | PTE_W | PTE_G, &guards);
        for (j, e) in entries.iter().enumerate() {
            w(&mut m, pt + j as u64 * 8, *e);
        }
        w(&mut m, pd_window + i * 8, pt | PTE_P | PTE_W);
    }
    pml4
}

/// L0's own view of physical memory through the identity map of the low
/// 4 GiB. Aligned 64-bit writes are single stores, so that a live EPT or
/// page-table entry is never seen half-written by another CPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostMemory;

impl HostMemory {
    fn zero_page(&mut self, pa: u64) {
        let _ = self.write(pa, &[0u8; PAGE as usize]);
    }
}

impl PhysMemory for HostMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        shared::mem::IdentityMemory.read(addr, buf)
    }

    fn read_u64(&self, addr: u64) -> Result<u64, MemError> {
        shared::mem::IdentityMemory.read_u64(addr)
    }

    fn read_words(&self, addr: u64, out: &mut [u64]) -> Result<(), MemError> {
        shared::mem::IdentityMemory.read_words(addr, out)
    }

    fn write(&mut self, addr: u64, buf: &[u8]) -> Result<(), MemError> {
        shared::mem::IdentityMemory.write(addr, buf)
    }

    fn write_u64(&mut self, addr: u64, value: u64) -> Result<(), MemError> {
        if !addr.is_multiple_of(8) {
            return self.write(addr, &value.to_le_bytes());
        }
        if range_end(addr, 8)? > IDENTITY_MAP_END {
            return Err(MemError::Unmapped { addr });
        }
        // SAFETY: the address is 8-byte aligned and inside the identity map
        // of the low 4 GiB; L0 only writes its own structures this way.
        unsafe { core::ptr::write_volatile(addr as *mut u64, value) };
        Ok(())
    }
}

/// The guest's physical memory as L0 may touch it on the guest's behalf:
/// the identity map without L0's region (accesses there fail as unmapped).
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestMemory;

impl GuestMemory {
    /// Whether the processor may read `[addr, addr + len)` for the guest by
    /// physical address (a structure VMCS02 points to): what L0 itself could
    /// read for it here.
    pub fn contains(addr: u64, len: usize) -> bool {
        Self::check(addr, len).is_ok()
    }

    fn check(addr: u64, len: usize) -> Result<(), MemError> {
        let end = range_end(addr, len)?;
        if overlaps_region(addr, end - addr) || end > IDENTITY_MAP_END {
            return Err(MemError::Unmapped { addr });
        }
        Ok(())
    }
}

impl PhysMemory for GuestMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        Self::check(addr, buf.len())?;
        shared::mem::IdentityMemory.read(addr, buf)
    }

    fn read_u64(&self, addr: u64) -> Result<u64, MemError> {
        Self::check(addr, 8)?;
        shared::mem::IdentityMemory.read_u64(addr)
    }

    fn read_words(&self, addr: u64, out: &mut [u64]) -> Result<(), MemError> {
        Self::check(addr, out.len().saturating_mul(8))?;
        shared::mem::IdentityMemory.read_words(addr, out)
    }

    fn write(&mut self, addr: u64, buf: &[u8]) -> Result<(), MemError> {
        Self::check(addr, buf.len())?;
        shared::mem::IdentityMemory.write(addr, buf)
    }
}
