//! Nested EPT in L0: when L1 enables EPT for L2, VMCS02 runs with an EPT02
//! that L0 builds on demand (`shared::ept::nested` decides each EPT
//! violation of L2, `shared::ept::ept02` holds the tables and the roots).
//!
//! - Frames: a fixed number of frames (`ept02_frames=<n>`, default
//!   [`DEFAULT_FRAMES`]) is carved out of L0's pool at boot into a free
//!   list shared by all CPUs; evicted and invalidated roots give theirs
//!   back, so a long run never leaks.
//! - Roots: one [`RootCache`] per CPU (`ept02_roots=<n>` roots, default
//!   [`DEFAULT_ROOTS`]), keyed by EPTP12. INVEPT is per CPU (SDM 31.3), so
//!   L1's INVEPT drops this CPU's roots only; EPT01 changes bump a global
//!   generation that drops every CPU's roots at its next nested entry or
//!   EPT02 fault.
//! - Faults L0 resolves itself (an EPT02 entry added) re-inject the event
//!   being delivered (IDT-vectoring information, SDM 28.2.4), as for EPT01.
//!   EPT12's verdicts (violation, misconfiguration) go to L1 with L2's exit
//!   information; L0's own (EPT12 leads to L0's region, to memory EPT01
//!   does not map, or writes to the trapped xAPIC page) are handled as for
//!   L1: reads see the all-ones dummy page (the one L0 page an EPT02 entry
//!   may name, read-only), writes are dropped into the sink page for one
//!   single-stepped instruction (xAPIC writes pass through the same way).

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use shared::ept::ept02::{Ept02, FramePool, Root, RootCache};
use shared::ept::nested::{self, Ept01Leaf, Ept01View, Ept02Outcome, Install, Resolve};
use shared::ept::{
    BuildError, EptConfig, EptEntry, EptPerms, EptView, Eptp, FrameAlloc, MemoryType,
};
use shared::ept::{PageSize, entry::PAGE_SIZE};
use shared::hypercall::NestedEptStats;
use shared::mem::PhysMemory;
use shared::vmx::controls::SecondaryProcBased;
use shared::vmx::insn::{self as hw, InveptDescriptor, InveptType, VmInstructionError as E};
use shared::vmx::insn_info::Operand;
use shared::vmx::nested::vmcs02::{Controls12, ExitInfo};
use shared::vmx::{ExitReason, VmcsAccess, VmcsField as F};

use super::insn::{Outcome, vmfail};
use super::operand::{self, Fault};
use crate::exits::Exit;
use crate::memory::{GuestMemory, HostMemory};
use crate::vcpu::{Resume, StepKind, Vcpu};

/// EPT02 roots per CPU unless `ept02_roots=<n>` says otherwise.
pub const DEFAULT_ROOTS: usize = 4;
/// Frames for EPT02 tables (all CPUs) unless `ept02_frames=<n>`.
pub const DEFAULT_FRAMES: u64 = 1024;
/// Frames one walk needs: a PML4 and the three tables below it.
const WALK_FRAMES: u64 = 4;
/// Fewest frames the pool gets. One instruction of L2 may need several
/// pages at once (code, data, stack, descriptor tables), each up to three
/// tables below the PML4: with too small a share a CPU's L2 evicts what it
/// needs next and makes no progress (8 frames for 2 CPUs do that).
const MIN_FRAMES: u64 = 64;

/// Running out of frames for good is logged once.
static EXHAUSTED_LOGGED: AtomicBool = AtomicBool::new(false);
/// The first fault L0 resolves for L2 on its own is logged.
static L0_FAULT_LOGGED: AtomicBool = AtomicBool::new(false);
static ROOTS: AtomicUsize = AtomicUsize::new(DEFAULT_ROOTS);
/// Bumped by every change of EPT01 that EPT02s derive from.
static EPT01_GENERATION: AtomicU64 = AtomicU64::new(0);

/// The free list: frames linked through their first quadword.
struct FreeList {
    head: u64,
    free: u64,
    total: u64,
    /// Fewest frames free so far.
    low: u64,
}

static POOL: spin::Mutex<FreeList> = spin::Mutex::new(FreeList {
    head: 0,
    free: 0,
    total: 0,
    low: 0,
});

/// The EPT02 pool, locked for one operation of one CPU, which may hold
/// at most its share of the frames (the total divided by the CPUs online):
/// a CPU that runs out evicts its own roots, and then always finds at
/// least one walk's frames, whatever the other CPUs hold.
struct Pool<'a> {
    list: spin::MutexGuard<'a, FreeList>,
    /// Frames this CPU holds.
    held: &'a mut u64,
}

impl Pool<'_> {
    fn quota(&self) -> u64 {
        let cpus = shared::percpu::online_count().max(1) as u64;
        (self.list.total / cpus).max(WALK_FRAMES)
    }
}

impl FrameAlloc for Pool<'_> {
    fn alloc_zeroed(&mut self) -> Option<u64> {
        if *self.held >= self.quota() {
            return None;
        }
        let l = &mut *self.list;
        if l.head == 0 {
            return None;
        }
        let frame = l.head;
        l.head = HostMemory.read_u64(frame).unwrap_or(0);
        l.free -= 1;
        l.low = l.low.min(l.free);
        *self.held += 1;
        // The frame is L0's (carved from its pool); `Ept02` zeroes it.
        Some(frame)
    }
}

impl FramePool for Pool<'_> {
    fn free(&mut self, frame: u64) {
        push(&mut self.list, frame);
        *self.held = self.held.saturating_sub(1);
    }
}

fn push(l: &mut FreeList, frame: u64) {
    let _ = HostMemory.write_u64(frame, l.head);
    l.head = frame;
    l.free += 1;
}

fn pool(held: &mut u64) -> Pool<'_> {
    Pool {
        list: POOL.lock(),
        held,
    }
}

/// Carves the EPT02 frames out of L0's pool and reads the LRU size (BSP,
/// once, after relocation).
pub fn init(cmdline: &str) {
    if let Some(n) = shared::cmdline::get_num(cmdline, "ept02_roots") {
        ROOTS.store(
            (n as usize).clamp(1, shared::ept::ept02::MAX_ROOTS),
            Ordering::Relaxed,
        );
    }
    let want = shared::cmdline::get_num(cmdline, "ept02_frames")
        .unwrap_or(DEFAULT_FRAMES)
        .max(MIN_FRAMES);
    let mut p = POOL.lock();
    crate::memory::with_pool(|l0| {
        while p.total < want {
            let Some(f) = l0.alloc_zeroed() else { break };
            push(&mut p, f);
            p.total += 1;
        }
    });
    p.low = p.free;
    shared::println!(
        "L0: nested EPT: {} EPT02 frames, {} roots per CPU",
        p.total,
        ROOTS.load(Ordering::Relaxed)
    );
}

/// Frames of the EPT02 free list (no EPT02 table uses them), all CPUs.
pub fn free_frames() -> u64 {
    POOL.lock().free
}

/// An EPT01 mapping changed (the trapped xAPIC page; a change of memory
/// types alone leaves EPT02 right, `shootdown::Ept01Change`): every EPT02
/// is dropped at its CPU's next nested entry or EPT02 fault.
pub fn ept01_changed() {
    EPT01_GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// Before VM entry (`shootdown::catch_up`): if EPT01 changed while L2
/// runs on EPT02, L2 goes on on a fresh root (the old ones are dropped:
/// their leaves were copied from the old EPT01).
pub fn catch_up(vcpu: &mut Vcpu, v: &mut impl VmcsAccess) {
    if !matches!(vcpu.nested.loaded, super::Loaded::Vmcs02 { .. })
        || vcpu.nested.ept02.generation == EPT01_GENERATION.load(Ordering::Acquire)
    {
        return;
    }
    let Some(vmcs12) = vcpu.nested.current_vmcs12() else {
        return;
    };
    if !Controls12::read(vmcs12).proc2(SecondaryProcBased::ENABLE_EPT) {
        return;
    }
    let eptp12 = vmcs12.read(F::EptPointer);
    match vcpu.nested.ept02.root(eptp12) {
        Ok(r) => v.write(F::EptPointer, r.eptp().0),
        Err(e) => {
            // VMCS02's EPTP names a dropped root: L2 must not run.
            shared::cpu_println!(
                "nested EPT: no EPT02 root for EPTP12 {eptp12:#x} after an EPT01 change: {e}; L2 shuts down"
            );
            v.write(F::GuestActivityState, super::exit::ACTIVITY_SHUTDOWN);
        }
    }
}

/// Counters of one CPU (printed with L0's Stats).
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// EPT violations of L2 under EPT02.
    pub faults: u64,
    /// EPT02 entries added.
    pub installs: u64,
    /// Violations resolved by an EPT02 entry from EPT12 and EPT01 (not
    /// reflected, not L0's region): the Stats figure per page L2 touches.
    pub resolved: u64,
    /// Root lookups at nested entries, and of them the cached ones (the
    /// lookups at EPT02 faults always hit and are not counted).
    pub entry_lookups: u64,
    pub entry_hits: u64,
    /// Violations and misconfigurations reflected to L1.
    pub reflected_violations: u64,
    pub reflected_misconfigs: u64,
    /// Accesses EPT01 refuses (L0's region, unbacked, the xAPIC page).
    pub l0_faults: u64,
    /// INVEPTs of L1.
    pub invepts: u64,
    /// Times frames ran out (roots evicted or reset to make room).
    pub exhausted: u64,
}

/// One CPU's nested-EPT state.
pub struct State {
    cache: RootCache,
    generation: u64,
    /// Frames of the pool this CPU's roots hold.
    held: u64,
    pub counters: Counters,
}

impl State {
    pub fn new() -> Self {
        Self {
            cache: RootCache::new(ROOTS.load(Ordering::Relaxed)),
            generation: EPT01_GENERATION.load(Ordering::Acquire),
            held: 0,
            counters: Counters::default(),
        }
    }

    /// Drops every root if EPT01 changed since they were made.
    fn sync_generation(&mut self) {
        let g = EPT01_GENERATION.load(Ordering::Acquire);
        if g != self.generation {
            self.cache
                .invalidate_all(&HostMemory, &mut pool(&mut self.held));
            self.generation = g;
        }
    }

    /// The root for `eptp12`, flushed if new.
    fn root(&mut self, eptp12: u64) -> Result<Ept02, BuildError> {
        self.lookup(eptp12).map(|r| r.ept02)
    }

    /// [`State::root`], saying whether it was cached.
    fn lookup(&mut self, eptp12: u64) -> Result<Root, BuildError> {
        self.sync_generation();
        let r = self
            .cache
            .get(&mut HostMemory, &mut pool(&mut self.held), eptp12)?;
        if r.created {
            flush(r.ept02);
        }
        Ok(r)
    }

    /// The Stats sub-function's figures (`shared::hypercall`).
    pub fn stats(&self) -> NestedEptStats {
        NestedEptStats {
            resolved_faults: self.counters.resolved,
            root_lookups: self.counters.entry_lookups,
            root_hits: self.counters.entry_hits,
            root_evictions: self.cache.stats.evictions,
            root_capacity: self.cache.capacity() as u64,
        }
    }

    /// Drops every root (VMXOFF of L1).
    pub fn clear(&mut self) {
        self.cache
            .invalidate_all(&HostMemory, &mut pool(&mut self.held));
    }
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

/// INVEPT single-context of `ept02` on this CPU.
fn flush(ept02: Ept02) {
    let d = InveptDescriptor {
        eptp: ept02.eptp().0,
        reserved: 0,
    };
    // SAFETY: L0 runs in VMX root operation; the EPTP names L0's own
    // tables. INVEPT only drops cached translations.
    unsafe {
        if hw::invept(InveptType::SingleContext, &d).is_err() {
            let _ = hw::invept(InveptType::AllContext, &d);
        }
    }
}

/// EPT01 as nested EPT sees it: L0's region and what EPT01 does not map
/// are L0's.
struct L0Ept01;

impl Ept01View for L0Ept01 {
    fn lookup(&self, gpa1: u64) -> Option<Ept01Leaf> {
        crate::ept01::lookup(gpa1)
    }
}

/// EPT as L1 sees it, and as the processor has it.
fn configs() -> (EptConfig, EptConfig) {
    let width = crate::ept01::max_phys_addr();
    let l1 = super::l1_msrs().map(|m| m.caps()).unwrap_or(*crate::caps());
    (
        EptConfig::from_caps(&l1, width),
        EptConfig::from_caps(crate::caps(), width),
    )
}

/// VMCS02's EPTP at a nested entry: the EPT02 root for VMCS12's EPTP when
/// L1 enables EPT (`None` when it does not: VMCS02 then uses EPT01).
pub fn entry_eptp(vcpu: &mut Vcpu, slot: usize) -> Option<u64> {
    let vmcs12 = &vcpu.nested.store.vmcs12[slot];
    if !Controls12::read(vmcs12).proc2(SecondaryProcBased::ENABLE_EPT) {
        return None;
    }
    let eptp12 = vmcs12.read(F::EptPointer);
    let st = &mut vcpu.nested.ept02;
    let r = st.lookup(eptp12);
    st.counters.entry_lookups += 1;
    match r {
        Ok(r) => {
            if !r.created {
                st.counters.entry_hits += 1;
            }
            Some(r.ept02.eptp().0)
        }
        Err(e) => {
            // Only a pool smaller than one root could get here.
            shared::cpu_println!("nested EPT: no EPT02 root for EPTP12 {eptp12:#x}: {e}");
            Some(0)
        }
    }
}

/// An EPT violation or misconfiguration of L2 while L1 uses EPT.
pub fn handle_exit(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    if exit.reason.basic() == ExitReason::EptMisconfiguration {
        // EPT02 is L0's: a misconfiguration is L0's bug. Start over.
        let eptp = Eptp(v.read(F::EptPointer));
        shared::cpu_println!(
            "nested EPT: EPT02 misconfiguration at {:#x} (EPTP02 {:#x}); EPT02s dropped",
            v.read(F::GuestPhysicalAddress),
            eptp.0
        );
        vcpu.nested.ept02.clear();
        return resume_with_root(vcpu, v, exit);
    }
    // An exit of L2's: VMCS02 is current.
    let on = vcpu.nested.on_vmcs02()?;
    let eptp12 = vcpu.nested.current_vmcs12()?.read(F::EptPointer);
    let gpa2 = v.read(F::GuestPhysicalAddress);
    let st = &mut vcpu.nested.ept02;
    st.counters.faults += 1;
    let ept02 = match st.root(eptp12) {
        Ok(r) => r,
        Err(e) => {
            // VMCS02's EPTP may name a dropped root: L2 must not run.
            shared::cpu_println!(
                "nested EPT: no EPT02 root for EPTP12 {eptp12:#x}: {e}; this CPU stops"
            );
            super::dump::current("02");
            return Some(Resume::Stop);
        }
    };
    if v.read(F::EptPointer) != ept02.eptp().0 {
        v.write(F::EptPointer, ept02.eptp().0);
    }
    let (cfg12, cfg02) = configs();
    let p = Resolve {
        eptp12: Eptp(eptp12),
        cfg12: &cfg12,
        cfg02: &cfg02,
    };
    match nested::resolve(&p, &GuestMemory, &L0Ept01, gpa2, exit.qualification) {
        Ept02Outcome::Install(i) => {
            // Not installed (logged): L2 faults again.
            if install(vcpu, ept02, &i) {
                vcpu.nested.ept02.counters.resolved += 1;
            }
            crate::exits::reinject_vectored_event(v, exit);
            Some(Resume::Guest)
        }
        Ept02Outcome::Violation { qualification } => {
            vcpu.nested.ept02.counters.reflected_violations += 1;
            let info = ExitInfo {
                qualification,
                ..ExitInfo::read(v)
            };
            let _ = super::exit::reflect_exit(vcpu, v, on, info);
            Some(Resume::Guest)
        }
        Ept02Outcome::Misconfig => {
            vcpu.nested.ept02.counters.reflected_misconfigs += 1;
            // SDM 28.2.1: the qualification of an EPT misconfiguration is
            // 0 (undefined); the guest-physical address is L2's.
            let info = ExitInfo {
                reason: ExitReason::EptMisconfiguration.number(),
                qualification: 0,
                guest_linear_address: 0,
                ..ExitInfo::read(v)
            };
            let _ = super::exit::reflect_exit(vcpu, v, on, info);
            Some(Resume::Guest)
        }
        Ept02Outcome::L0Fault { gpa1, perms12 } => {
            vcpu.nested.ept02.counters.l0_faults += 1;
            l0_fault(vcpu, v, exit, ept02, gpa2, gpa1, perms12)
        }
    }
}

/// After L0 dropped the roots: VMCS02 gets a fresh one.
fn resume_with_root(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    let eptp12 = vcpu.nested.current_vmcs12()?.read(F::EptPointer);
    let Ok(r) = vcpu.nested.ept02.root(eptp12) else {
        // VMCS02's EPTP names a dropped root: L2 must not run.
        shared::cpu_println!("nested EPT: no EPT02 root for EPTP12 {eptp12:#x}; this CPU stops");
        return Some(Resume::Stop);
    };
    v.write(F::EptPointer, r.eptp().0);
    crate::exits::reinject_vectored_event(v, exit);
    Some(Resume::Guest)
}

/// Adds `i` to `ept02`, making room when frames run out: other roots of
/// this CPU are evicted first (least recently used first), then this root
/// is emptied in place. False (logged once) if it still does not fit.
fn install(vcpu: &mut Vcpu, ept02: Ept02, i: &Install) -> bool {
    let st = &mut vcpu.nested.ept02;
    let mut emptied = false;
    loop {
        let r = ept02.install(
            &mut HostMemory,
            &mut pool(&mut st.held),
            i.gpa2,
            i.page_size,
            i.leaf,
        );
        match r {
            Ok(done) => {
                st.counters.installs += 1;
                if done.replaced {
                    flush(ept02);
                }
                return true;
            }
            Err(BuildError::OutOfFrames) => {
                st.counters.exhausted += 1;
                let mut p = pool(&mut st.held);
                if st.cache.evict_lru(&HostMemory, &mut p, Some(ept02)) {
                    continue;
                }
                if emptied || !st.cache.reset(&mut HostMemory, &mut p, ept02) {
                    break;
                }
                drop(p);
                flush(ept02);
                emptied = true;
            }
            Err(e) => {
                shared::cpu_println!("nested EPT: EPT02 install at {:#x} failed: {e}", i.gpa2);
                return false;
            }
        }
    }
    if !EXHAUSTED_LOGGED.swap(true, Ordering::Relaxed) {
        shared::cpu_println!(
            "nested EPT: no EPT02 frame for {:#x} even after emptying this CPU's roots (logged once)",
            i.gpa2
        );
    }
    false
}

/// EPT12 allows an access that EPT01 does not.
fn l0_fault(
    vcpu: &mut Vcpu,
    v: &mut impl VmcsAccess,
    exit: &Exit,
    ept02: Ept02,
    gpa2: u64,
    gpa1: u64,
    perms12: EptPerms,
) -> Option<Resume> {
    let page2 = gpa2 & !(PAGE_SIZE - 1);
    let page1 = gpa1 & !(PAGE_SIZE - 1);
    let write = nested::access_of(exit.qualification).contains(EptPerms::WRITE);
    let apic = crate::ept01::apic_page() == Some(page1);
    if write && apic {
        // L2's write to the xAPIC page goes through L0's emulation as
        // L1's do (its INIT is emulated, not sent to the hardware),
        // when L0 decodes it: L2's code and paging structures are read
        // through EPT12.
        let eptp12 = Eptp(vcpu.nested.current_vmcs12()?.read(F::EptPointer));
        let (cfg12, _) = configs();
        let l2_memory = EptView::new(&GuestMemory, eptp12, &cfg12);
        // (Never during event delivery: nothing to re-inject.)
        if let Some(r) = crate::exits::emulate_apic_write(vcpu, v, exit, gpa1, &l2_memory) {
            return Some(r);
        }
    }
    if !L0_FAULT_LOGGED.swap(true, Ordering::Relaxed) {
        shared::cpu_println!(
            "nested EPT: L2 {} L1-physical {gpa1:#x} (L2 {gpa2:#x}, RIP {:#x}), which EPT01 refuses: {} (logged once)",
            if write { "writes" } else { "reads" },
            exit.rip,
            match (write, apic) {
                (false, _) => "reads see all ones",
                (true, true) =>
                    "the xAPIC write L0 cannot decode is single-stepped into a scratch page, then performed",
                (true, false) => "the write is dropped, single-stepped",
            }
        );
    }
    let leaf = |hpa: u64, perms: EptPerms, mt: MemoryType| Install {
        gpa2: page2,
        page_size: PageSize::Size4K,
        leaf: EptEntry::leaf(hpa, 1, perms & perms12, mt),
        gpa1: page1,
    };
    if !write {
        // Reads and fetches of memory L1 has not: all ones, as for L1.
        let dummy = leaf(
            crate::ept01::dummy_page(),
            EptPerms::RX,
            MemoryType::WriteBack,
        );
        install(vcpu, ept02, &dummy);
        crate::exits::reinject_vectored_event(v, exit);
        return Some(Resume::Guest);
    }
    // A write L0 cannot decode lands, for one single-stepped instruction,
    // in the sink page, or for the xAPIC page in this CPU's scratch page
    // (its register's value first, for a read-modify-write), whose
    // captured writes L0 then performs (`single_step::finish`): an INIT
    // never reaches the hardware, whatever instruction L2 wrote it with.
    // EPT02 is this CPU's: no other CPU writes through the entry.
    let (target, capture) = if apic {
        let value = crate::exits::apic_scratch_value(gpa1);
        let Some(scratch) = crate::ept01::prepare_apic_scratch(vcpu.index, gpa1, value) else {
            shared::cpu_println!(
                "nested EPT: xAPIC write step at {gpa1:#x}: no scratch page; the write is retried"
            );
            return Some(Resume::Guest);
        };
        let from = crate::exits::step_from(vcpu, v);
        (
            leaf(scratch, EptPerms::RW, MemoryType::WriteBack),
            Some(from),
        )
    } else {
        let sink = leaf(
            crate::ept01::sink_page(),
            EptPerms::RW,
            MemoryType::WriteBack,
        );
        (sink, None)
    };
    crate::exits::reinject_vectored_event(v, exit);
    if !install(vcpu, ept02, &target) {
        return Some(Resume::Guest);
    }
    crate::exits::single_step_start(
        vcpu,
        v,
        StepKind::Ept02Access {
            root: ept02.root(),
            gpa2: page2,
            gpa1,
            apic: capture,
        },
    );
    Some(Resume::Guest)
}

/// The end of an [`StepKind::Ept02Access`] step: the EPT02 entry goes
/// (if its root still exists) and the sink is refilled.
pub fn end_write_step(vcpu: &mut Vcpu, root: u64, gpa2: u64) {
    let st = &mut vcpu.nested.ept02;
    if let Some(e) = st.cache.find_root(root) {
        let empty = EptEntry::EMPTY;
        let mut p = pool(&mut st.held);
        let _ = e.install(&mut HostMemory, &mut p, gpa2, PageSize::Size4K, empty);
        drop(p);
        flush(e);
    }
    crate::ept01::refill_sink();
}

/// L1's INVEPT (SDM 31.3 "INVEPT—Invalidate Translations Derived from
/// EPT"): the common #UD/#GP checks are made; the type from register
/// `reg2`, the 128-bit descriptor from memory.
pub fn invept(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Result<Outcome, Fault> {
    let Some(msrs) = super::l1_msrs() else {
        return Err(Fault::Ud);
    };
    let caps = msrs.caps();
    if !caps.has_ept() || !caps.ept_vpid.invept {
        return Err(Fault::Ud);
    }
    let m = match operand::operand(v, exit)? {
        Operand::Memory(m) => m,
        Operand::Register(_) => return Err(Fault::Ud),
    };
    let mut kind = vcpu.gpr(v, usize::from(operand::reg2(v)));
    if !operand::long_mode(v) {
        kind &= 0xffff_ffff;
    }
    let supported = match kind {
        1 => caps.ept_vpid.invept_single_context,
        2 => caps.ept_vpid.invept_all_context,
        _ => false,
    };
    if !supported {
        return Ok(vmfail(vcpu, E::InvalidInveptInvvpidOperand));
    }
    let mut d = [0u8; 16];
    operand::read_mem(vcpu, v, &m, &mut d)?;
    let eptp = u64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8]));
    let (cfg12, _) = configs();
    let st = &mut vcpu.nested.ept02;
    st.counters.invepts += 1;
    if kind == 1 {
        if Eptp(eptp).validate(&cfg12).is_err() {
            return Ok(vmfail(vcpu, E::InvalidInveptInvvpidOperand));
        }
        st.cache
            .invalidate(&HostMemory, &mut pool(&mut st.held), eptp);
    } else {
        st.cache
            .invalidate_all(&HostMemory, &mut pool(&mut st.held));
    }
    Ok(Outcome::Succeed)
}

/// One line of this CPU's figures (with L0's Stats).
pub fn report(vcpu: &Vcpu) {
    let st = &vcpu.nested.ept02;
    let c = &st.counters;
    let s = &st.cache.stats;
    if c.faults == 0 && s.misses == 0 {
        return;
    }
    let (free, total, low) = {
        let p = POOL.lock();
        (p.free, p.total, p.low)
    };
    shared::cpu_println!(
        "L0 nested EPT: faults={} resolved={} installs={} reflected={} misconfigs={} l0={} invept={} roots={}/{} entry lookups={} hits={} cache hits={} misses={} evictions={} invalidated={} exhausted={} pool used={} peak={} of {}",
        c.faults,
        c.resolved,
        c.installs,
        c.reflected_violations,
        c.reflected_misconfigs,
        c.l0_faults,
        c.invepts,
        st.cache.len(),
        st.cache.capacity(),
        c.entry_lookups,
        c.entry_hits,
        s.hits,
        s.misses,
        s.evictions,
        s.invalidations,
        c.exhausted,
        total - free,
        total - low,
        total
    );
}

/// L2's guest-physical memory as L0 reaches it: through EPT12 when L1
/// enables EPT (each access page by page, with the rights it needs), as
/// L1's memory otherwise; then [`GuestMemory`] (never L0's region). An
/// access EPT12 refuses fails (`MemError::Unmapped`), as a walk of L0's
/// own would never go around L1's tables.
pub struct L2Memory {
    eptp12: Option<Eptp>,
    cfg12: EptConfig,
}

impl L2Memory {
    /// The memory of the current VMCS12's L2 (`None` without one).
    pub fn current(vcpu: &Vcpu) -> Option<Self> {
        let vmcs12 = vcpu.nested.current_vmcs12()?;
        let eptp12 = Controls12::read(vmcs12)
            .proc2(SecondaryProcBased::ENABLE_EPT)
            .then(|| Eptp(vmcs12.read(F::EptPointer)));
        Some(Self {
            eptp12,
            cfg12: configs().0,
        })
    }

    /// L1's physical address of L2's `gpa2` for `access`.
    pub fn translate(&self, gpa2: u64, access: EptPerms) -> Option<u64> {
        match self.eptp12 {
            None => Some(gpa2),
            Some(eptp) => EptView::new(&GuestMemory, eptp, &self.cfg12)
                .translate(gpa2, access)
                .ok(),
        }
    }

    /// Runs `f` on each piece of `[addr, addr + len)` within one page, with
    /// L1's address of the piece and its offset in the range.
    fn pieces(
        &self,
        addr: u64,
        len: usize,
        access: EptPerms,
        mut f: impl FnMut(u64, usize, usize) -> Result<(), shared::mem::MemError>,
    ) -> Result<(), shared::mem::MemError> {
        match self.eptp12 {
            // Without EPT, L2's physical memory is L1's.
            None => {
                shared::mem::range_end(addr, len)?;
                f(addr, 0, len)
            }
            Some(eptp) => {
                EptView::new(&GuestMemory, eptp, &self.cfg12).for_each_piece(addr, len, access, f)
            }
        }
    }
}

impl PhysMemory for L2Memory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), shared::mem::MemError> {
        self.pieces(addr, buf.len(), EptPerms::READ, |gpa1, at, n| {
            GuestMemory.read(gpa1, &mut buf[at..at + n])
        })
    }

    fn write(&mut self, addr: u64, buf: &[u8]) -> Result<(), shared::mem::MemError> {
        self.pieces(addr, buf.len(), EptPerms::WRITE, |gpa1, at, n| {
            GuestMemory.write(gpa1, &buf[at..at + n])
        })
    }
}
