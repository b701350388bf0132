//! EPT01: the one EPT hierarchy every CPU runs the guest with (identity map
//! of the guest's physical memory, L0's region hidden; see `shared::ept01`).
//!
//! Unbacked accesses (L0's region): the region's pages map read/execute-
//! only to a dummy page of all ones, so reads behave like unbacked memory
//! without any exit. A write faults (EPT violation); L0 then maps that page
//! to a "sink" page with write access, single-steps the one instruction
//! (RFLAGS.TF with #DB exiting: the EPT-violation instruction length is not
//! defined, and Bochs has no monitor trap flag), and on the #DB exit maps the
//! page back to the dummy page and refills the sink with ones. The write is
//! thus dropped, and L0's memory is never reachable. See `exits::ept_violation`.
//!
//! A second hierarchy, the "APIC-off view", is EPT01 with the guest's
//! xAPIC page mapped like L0's region (the all-ones page, read and execute
//! only): the vCPUs whose guest has globally disabled its APIC
//! (`vapic_base`) run with it, so that the page reads all ones and drops
//! writes as on hardware (SDM 11.4.3), while the hardware APIC stays
//! enabled for L0 and the other vCPUs. Every change to EPT01 is made to
//! both, but for the xAPIC page.
//!
//! Memory types follow the MTRRs (with EPT the processor ignores them, SDM
//! 30.3.7.2): at boot the firmware's, then the guest's virtual MTRRs
//! (`vmtrr`: its writes never reach the hardware); after a write L0
//! re-types EPT01, then INVEPT on the writing CPU (the MTRR update protocol,
//! SDM 13.11.8, has every CPU write the same values, so each CPU flushes its
//! own TLBs when it writes them).

use shared::apic_capture;
use shared::ept::{
    EptBuilder, EptConfig, EptEntry, EptPerms, Eptp, FrameAlloc, Mapping, MemoryType, PageSize,
};
use shared::ept01::{self, Layout};
use shared::mem::PhysMemory;
use shared::mtrr::MtrrState;
use shared::percpu::MAX_CPUS;
use shared::vmx::VmxCaps;
use shared::vmx::insn::{self, InveptDescriptor, InveptType};

use crate::memory::{self, HostMemory};

struct Ept01 {
    builder: EptBuilder,
    /// The APIC-off view (see the module doc).
    apic_off: EptBuilder,
    layout: Layout,
    mtrrs: Option<MtrrState>,
    /// The guest's xAPIC page, mapped without write access so that writes
    /// exit (see `exits::apic_write`).
    apic_page: Option<u64>,
}

static EPT01: spin::Once<spin::Mutex<Ept01>> = spin::Once::new();

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// The page every hidden guest page reads as (all ones).
static mut DUMMY_PAGE: Page = Page([0xff; 4096]);
/// Where a dropped write lands for one instruction.
static mut SINK_PAGE: Page = Page([0xff; 4096]);

fn dummy_phys() -> u64 {
    shared::boot::layout::phys_of(&raw const DUMMY_PAGE)
}

fn sink_phys() -> u64 {
    shared::boot::layout::phys_of(&raw const SINK_PAGE)
}

/// The processor's physical-address width (CPUID 80000008H:EAX[7:0]).
pub fn max_phys_addr() -> u8 {
    if shared::x86::cpuid(0x8000_0000, 0).eax >= 0x8000_0008 {
        shared::x86::cpuid(0x8000_0008, 0).eax as u8
    } else {
        36
    }
}

/// The MTRRs of this CPU, if it has them.
pub fn read_mtrrs() -> Option<MtrrState> {
    let has_mtrr = shared::x86::cpuid(1, 0).edx & (1 << 12) != 0;
    // SAFETY: only MSRs that CPUID and IA32_MTRRCAP say exist are read.
    MtrrState::read(has_mtrr, |m| unsafe { shared::x86::rdmsr(m) })
}

fn types_of(mtrrs: &Option<MtrrState>) -> impl Fn(u64, u64) -> Option<MemoryType> + '_ {
    move |start, len| match mtrrs {
        Some(m) => m.uniform_type(start, len),
        None => Some(MemoryType::WriteBack),
    }
}

/// Builds EPT01 for guest-physical `[0, limit)`. Called once on the BSP.
pub fn build(caps: &VmxCaps, limit: u64) -> Result<(), shared::ept::BuildError> {
    let (rb, re) = memory::region();
    let cfg = EptConfig::from_caps(caps, max_phys_addr());
    let layout = Layout {
        limit: limit.next_multiple_of(PageSize::Size4K.bytes()),
        hidden: (rb, re),
        dummy_page: dummy_phys(),
    };
    let mtrrs = read_mtrrs();
    let build = || {
        memory::with_pool(|pool| {
            let mut b = EptBuilder::new(pool, &cfg)?;
            ept01::map_all(&mut b, &mut HostMemory, pool, &layout, &types_of(&mtrrs))?;
            Ok::<_, shared::ept::BuildError>(b)
        })
    };
    let builder = build()?;
    let apic_off = build()?;
    EPT01.call_once(|| {
        spin::Mutex::new(Ept01 {
            builder,
            apic_off,
            layout,
            mtrrs,
            apic_page: None,
        })
    });
    Ok(())
}

/// The EPTP every VMCS01 uses (WB paging-structure accesses, no A/D).
pub fn eptp() -> Option<Eptp> {
    let e = EPT01.get()?.lock();
    Some(e.builder.eptp(MemoryType::WriteBack, false))
}

/// The EPTP of the APIC-off view (see the module doc).
pub fn eptp_apic_off() -> Option<Eptp> {
    let e = EPT01.get()?.lock();
    Some(e.apic_off.eptp(MemoryType::WriteBack, false))
}

/// The all-ones page hidden guest pages read as.
pub fn dummy_page() -> u64 {
    dummy_phys()
}

/// The page dropped writes land in.
pub fn sink_page() -> u64 {
    sink_phys()
}

/// Refills the sink page with ones (after a dropped write), a word at a
/// time: a `Page` value would be built on the exit stack first (4 KiB,
/// 4-KiB aligned) and copied.
pub fn refill_sink() {
    let words = (&raw mut SINK_PAGE).cast::<u64>();
    for i in 0..4096 / 8 {
        // SAFETY: inside the sink, L0's page; a racing guest write through
        // a stale translation on another CPU can only change bytes that
        // are dropped.
        unsafe { words.add(i).write_volatile(u64::MAX) };
    }
}

/// EPT01's translation of guest-physical `gpa` for nested EPT: `None` in
/// L0's region and where EPT01 maps nothing. The page size is that of
/// EPT01's leaf, or 4 KiB if that leaf's page touches L0's region (EPT01
/// splits around the region, so this is only a guard).
pub fn lookup(gpa: u64) -> Option<shared::ept::nested::Ept01Leaf> {
    let e = EPT01.get()?.lock();
    if e.layout.is_hidden(gpa) || gpa >= e.layout.limit {
        return None;
    }
    let eptp = e.builder.eptp(MemoryType::WriteBack, false);
    let cfg = EptConfig::full(max_phys_addr());
    let t = shared::ept::walk(&HostMemory, eptp, gpa, EptPerms::empty(), &cfg).ok()?;
    drop(e);
    let size = t.page_size.bytes();
    let page_size = if memory::overlaps_region(gpa & !(size - 1), size) {
        PageSize::Size4K
    } else {
        t.page_size
    };
    Some(shared::ept::nested::Ept01Leaf {
        hpa: t.hpa,
        perms: t.perms,
        page_size,
    })
}

/// Whether `gpa` is in L0's hidden region.
pub fn is_hidden(gpa: u64) -> bool {
    EPT01.get().is_some_and(|e| e.lock().layout.is_hidden(gpa))
}

/// Whether `gpa` is unclaimed bus space: above everything EPT01 maps
/// (RAM, MMIO below 4 GiB) and below the physical-address width. On a
/// real machine nothing answers there: reads return all ones and writes
/// are dropped (e.g. 64-bit BARs nobody assigned).
pub fn is_unclaimed(gpa: u64) -> bool {
    let width = max_phys_addr().min(48);
    EPT01
        .get()
        .is_some_and(|e| gpa >= e.lock().layout.limit && gpa >> width == 0)
}

/// Maps the unclaimed page holding `gpa` to the all-ones page, read and
/// execute only, as L0's own region is: later reads of it exit no more,
/// and a write is dropped by the sink single step (see [`open_sink`]).
/// Returns false if the page could not be mapped (no pool frame left for
/// its EPT tables).
pub fn map_unclaimed(gpa: u64) -> bool {
    let Some(e) = EPT01.get() else { return false };
    let mut e = e.lock();
    let page = gpa & !0xfff;
    if page < e.layout.limit {
        return false;
    }
    let m = Mapping::new(ept01::HIDDEN_PERMS, MemoryType::WriteBack);
    let r = memory::with_pool(|pool| {
        e.builder
            .map_range(&mut HostMemory, pool, page, dummy_phys(), 0x1000, m)?;
        e.apic_off
            .map_range(&mut HostMemory, pool, page, dummy_phys(), 0x1000, m)
    });
    drop(e);
    match r {
        Ok(()) => {
            invept_all();
            true
        }
        Err(err) => {
            shared::cpu_println!("EPT01: mapping unclaimed {page:#x} failed: {err}");
            false
        }
    }
}

/// Whether EPT01 now allows `access` at `gpa` (an EPT violation that the
/// tables allow came from a stale translation, e.g. cached before another
/// CPU changed EPT01).
pub fn allows(gpa: u64, access: EptPerms) -> bool {
    let Some(eptp) = eptp() else { return false };
    let cfg = shared::ept::EptConfig::from_caps(crate::caps(), max_phys_addr());
    shared::ept::walk(&HostMemory, eptp, gpa, access, &cfg).is_ok_and(|t| t.perms.contains(access))
}

/// Takes `mtrrs` (a vCPU's virtual MTRRs after its write, see `vmtrr`),
/// re-types EPT01 and shoots the old types down on every CPU.
pub fn mtrrs_changed(mtrrs: Option<MtrrState>) {
    let Some(e) = EPT01.get() else { return };
    let mut e = e.lock();
    // EPT01 has the types of the last write (`e.mtrrs`): only the ranges
    // whose type changes are rewritten.
    let old = core::mem::replace(&mut e.mtrrs, mtrrs);
    let Ept01 {
        builder,
        apic_off,
        layout,
        mtrrs,
        apic_page,
    } = &mut *e;
    let r = memory::with_pool(|pool| {
        let (old, new) = (types_of(&old), types_of(mtrrs));
        ept01::retype(builder, &mut HostMemory, pool, layout, &old, &new)?;
        ept01::retype(apic_off, &mut HostMemory, pool, layout, &old, &new)
    });
    if let Some(page) = *apic_page {
        map_guest_page(&mut e, page, APIC_PROTECTED);
        map_apic_off(&mut e, page, dummy_phys(), ept01::HIDDEN_PERMS);
    }
    drop(e);
    if let Err(err) = r {
        shared::cpu_println!("EPT01: re-typing after an MTRR write failed: {err}");
    }
    crate::shootdown::ept01_changed(
        shared::percpu::current().index(),
        crate::shootdown::Ept01Change::Types,
    );
}

/// Maps the hidden (or unclaimed) page holding `gpa` to the sink page
/// (writable), for one instruction.
pub fn open_sink(gpa: u64) {
    remap_hidden(gpa, sink_phys(), EptPerms::RW);
}

/// Maps the hidden page holding `gpa` back to the dummy page and refills
/// the sink with ones.
pub fn close_sink(gpa: u64) {
    remap_hidden(gpa, dummy_phys(), ept01::HIDDEN_PERMS);
    refill_sink();
}

fn remap_hidden(gpa: u64, hpa: u64, perms: EptPerms) {
    let Some(e) = EPT01.get() else { return };
    let mut e = e.lock();
    let page = gpa & !0xfff;
    if e.apic_page == Some(page) {
        // A write to the xAPIC page of a disabled APIC (APIC-off view).
        map_apic_off(&mut e, page, hpa, perms);
        drop(e);
        invept_all();
        return;
    }
    if !e.layout.is_hidden(page) && page < e.layout.limit {
        return;
    }
    let m = Mapping::new(perms, MemoryType::WriteBack);
    let r = memory::with_pool(|pool| {
        e.builder
            .map_range(&mut HostMemory, pool, page, hpa, 0x1000, m)?;
        e.apic_off
            .map_range(&mut HostMemory, pool, page, hpa, 0x1000, m)
    });
    drop(e);
    if let Err(err) = r {
        shared::cpu_println!("EPT01: remapping {page:#x} failed: {err}");
    }
    invept_all();
}

/// Rights of the trapped xAPIC page: reads pass, writes exit.
const APIC_PROTECTED: EptPerms = EptPerms::RX;

/// Identity-maps the guest page `page` with `perms` and its MTRR type.
fn map_guest_page(e: &mut Ept01, page: u64, perms: EptPerms) {
    if e.layout.is_hidden(page) || page >= e.layout.limit {
        return;
    }
    let t = types_of(&e.mtrrs)(page, 0x1000).unwrap_or(MemoryType::Uncacheable);
    let m = Mapping::new(perms, t);
    let r = memory::with_pool(|pool| {
        e.builder
            .map_range(&mut HostMemory, pool, page, page, 0x1000, m)
    });
    if let Err(err) = r {
        shared::cpu_println!("EPT01: mapping {page:#x} failed: {err}");
    }
}

/// Maps the guest page `page` to `hpa` with `perms` in the APIC-off view
/// only (its xAPIC page: the all-ones page, or the sink for one write).
fn map_apic_off(e: &mut Ept01, page: u64, hpa: u64, perms: EptPerms) {
    if e.layout.is_hidden(page) || page >= e.layout.limit {
        return;
    }
    let t = if hpa == page {
        types_of(&e.mtrrs)(page, 0x1000).unwrap_or(MemoryType::Uncacheable)
    } else {
        MemoryType::WriteBack
    };
    let m = Mapping::new(perms, t);
    let r = memory::with_pool(|pool| {
        e.apic_off
            .map_range(&mut HostMemory, pool, page, hpa, 0x1000, m)
    });
    if let Err(err) = r {
        shared::cpu_println!("EPT01: APIC-off view: mapping {page:#x} failed: {err}");
    }
}

/// Makes `page` the trapped xAPIC page (the previous one, if any, becomes
/// ordinary memory again). In VMX operation, the caller shoots the old
/// mapping down (`shootdown::ept01_changed`); at boot there is nothing
/// to flush.
pub fn set_apic_page(page: u64) {
    let Some(e) = EPT01.get() else { return };
    let mut e = e.lock();
    if e.apic_page == Some(page) {
        return;
    }
    if let Some(old) = e.apic_page.take() {
        map_guest_page(&mut e, old, EptPerms::RWX);
        map_apic_off(&mut e, old, old, EptPerms::RWX);
    }
    map_guest_page(&mut e, page, APIC_PROTECTED);
    map_apic_off(&mut e, page, dummy_phys(), ept01::HIDDEN_PERMS);
    e.apic_page = Some(page);
    drop(e);
    crate::nested::ept02::ept01_changed();
}

/// The trapped xAPIC page.
pub fn apic_page() -> Option<u64> {
    EPT01.get().and_then(|e| e.lock().apic_page)
}

/// One CPU's private view of EPT01 for an xAPIC-write step
/// (`shared::ept01::build_private_view`): its copies of the four tables on
/// the path to the xAPIC page, and the scratch page the page names there.
/// The xAPIC page is thus never writable in the shared EPT01: only the
/// stepping CPU's own write lands, in its own scratch page.
#[derive(Clone, Copy, Debug)]
struct StepView {
    frames: [u64; ept01::VIEW_TABLES],
    scratch: u64,
}

static VIEWS: [spin::Once<StepView>; MAX_CPUS] = [const { spin::Once::new() }; MAX_CPUS];

/// Takes the frames of CPU `cpu`'s step view from the pool (once, when
/// the CPU sets up its VMCS01). False if the pool has too few.
pub fn prepare_step_view(cpu: usize) -> bool {
    let Some(slot) = VIEWS.get(cpu) else {
        return false;
    };
    let frames = memory::with_pool(|pool| {
        let mut f = [0u64; ept01::VIEW_TABLES + 1];
        for x in &mut f {
            *x = pool.alloc_zeroed()?;
        }
        Some(f)
    });
    let Some(f) = frames else { return false };
    slot.call_once(|| StepView {
        frames: [f[0], f[1], f[2], f[3]],
        scratch: f[4],
    });
    true
}

/// Switches this CPU (`cpu`, VMCS01 current) to its private view for one
/// single-stepped write to the xAPIC page at `gpa`: its scratch page is
/// filled as `apic_capture::prepare` says (`current`: the register's value
/// now) and named by the view at the xAPIC page, with read and write
/// access. False if there is no view or no trapped page.
pub fn open_apic_step(cpu: usize, gpa: u64, current: u32) -> bool {
    let Some(view) = VIEWS.get(cpu).and_then(|v| v.get()).copied() else {
        return false;
    };
    if prepare_apic_scratch(cpu, gpa, current).is_none() {
        return false;
    }
    let Some(e) = EPT01.get() else { return false };
    let e = e.lock();
    let Some(apic) = e.apic_page else {
        return false;
    };
    let shared_eptp = e.builder.eptp(MemoryType::WriteBack, false);
    let leaf = EptEntry::leaf(view.scratch, 1, EptPerms::RW, MemoryType::WriteBack);
    let root =
        ept01::build_private_view(&mut HostMemory, e.builder.root(), view.frames, apic, leaf);
    drop(e);
    let Ok(root) = root else { return false };
    let eptp = Eptp((shared_eptp.0 & !EptEntry::ADDR_MASK) | root);
    // The view's tables were rewritten: drop what this CPU cached of the
    // last one (SDM 29.4.3.1, single-context INVEPT).
    invept(eptp);
    // SAFETY: the view maps what EPT01 maps (never L0's region) but the
    // xAPIC page, which names this CPU's scratch page: a pool frame that
    // holds nothing of L0's and that the guest may write.
    unsafe { write_vmcs01_eptp(eptp) };
    true
}

/// Ends this CPU's xAPIC-write step: VMCS01 (current) goes back to the
/// shared EPT01.
pub fn close_apic_step() {
    if let Some(eptp) = eptp() {
        // SAFETY: EPT01 is the EPTP every VMCS01 runs with.
        unsafe { write_vmcs01_eptp(eptp) };
    }
}

/// Fills CPU `cpu`'s scratch page for a single-stepped write to the xAPIC
/// page at `gpa` as `apic_capture::prepare` says (`current`: the
/// register's value now); returns its address (for an EPT02 entry of L2's,
/// see `nested::ept02`). `None` if the CPU has no view.
pub fn prepare_apic_scratch(cpu: usize, gpa: u64, current: u32) -> Option<u64> {
    let view = VIEWS.get(cpu).and_then(|v| v.get())?;
    let mut page = [0u8; apic_capture::PAGE_BYTES];
    apic_capture::prepare(&mut page, gpa & 0xfff, current);
    HostMemory.write(view.scratch, &page).ok()?;
    Some(view.scratch)
}

/// What CPU `cpu`'s last xAPIC-write step left in its scratch page. False
/// if it has no view.
pub fn read_apic_scratch(cpu: usize, scratch: &mut [u8; apic_capture::PAGE_BYTES]) -> bool {
    let Some(view) = VIEWS.get(cpu).and_then(|v| v.get()) else {
        return false;
    };
    HostMemory.read(view.scratch, scratch).is_ok()
}

/// Sets the current VMCS's EPT pointer.
///
/// # Safety
/// The current VMCS must be this CPU's VMCS01 and `eptp` must name tables
/// that map no memory of L0's but pages made for the guest.
unsafe fn write_vmcs01_eptp(eptp: Eptp) {
    // SAFETY: exit handlers run in VMX root operation; the caller vouches
    // for the value.
    unsafe {
        insn::Vmxon::assume_enabled()
            .guarded_vmcs()
            .write_sensitive(shared::vmx::VmcsField::EptPointer, eptp.0);
    }
}

/// Single-context INVEPT of `eptp` on this CPU.
fn invept(eptp: Eptp) {
    let d = InveptDescriptor {
        eptp: eptp.0,
        reserved: 0,
    };
    // SAFETY: called in VMX root operation (exit handlers); the descriptor
    // names a valid EPT hierarchy.
    let _ = unsafe { insn::invept(InveptType::SingleContext, &d) };
}

/// INVEPT of EPT01 and its APIC-off view on this CPU.
pub fn invept_all() {
    for eptp in [eptp(), eptp_apic_off()].into_iter().flatten() {
        let d = InveptDescriptor {
            eptp: eptp.0,
            reserved: 0,
        };
        // SAFETY: called in VMX root operation (exit handlers); the
        // descriptor names EPT01 or its view, which are valid.
        let _ = unsafe { insn::invept(InveptType::SingleContext, &d) };
    }
}
