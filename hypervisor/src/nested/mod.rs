//! Nested VMX: L0 emulates VMX for its guest (L1), which then runs guests
//! of its own (L2). The phases follow KVM's nested.c:
//!
//! - [`insn`]: L1's VMX instructions (VMXON ... VMWRITE), with every check
//!   of their SDM pages; their operands through [`operand`];
//! - [`vmcs12`]: L0's cache of L1's VMCSs (VMCS12) and their launch state;
//! - [`entry`]: VMLAUNCH/VMRESUME: the VM-entry checks on VMCS12, VMCS02
//!   built from it (`shared::vmx::nested::vmcs02`), the VM-entry MSR loads;
//! - [`exit`]: an exit of L2: L0's own, or reflected to L1 (VMCS02 synced
//!   into VMCS12, VM-exit MSR areas, L1's host state loaded);
//! - [`msr_areas`]: the MSR areas of VMCS12, emulated MSR by MSR.
//!
//! Which VMCS is current on the CPU is [`Loaded`]: VMCS01 while L1 runs,
//! VMCS02 while L2 runs. Only this module switches it, and code that needs
//! one of them says so in its signature: it takes the proof ([`OnVmcs01`],
//! [`OnVmcs02`]) that [`Nested::current_vmcs`] gives after checking, and
//! the switches consume the proof of the VMCS they leave and return the
//! other's ([`exit::reflect_exit`], [`entry::enter`]).

pub mod bitmaps;
pub mod dump;
pub mod entry;
pub mod ept02;
pub mod exit;
pub mod insn;
pub mod msr_areas;
pub mod operand;
pub mod shadow;
pub mod vmcs12;

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use shared::percpu::MAX_CPUS;
use shared::vmx::MemVmcs;
use shared::vmx::insn::VmcsRegion;
use shared::vmx::nested::caps::{L1VmxMsrs, NestedFeatures};

pub use vmcs12::VMCS12_SLOTS;

/// VMX is offered to the guest (L0's command line `vmx=off` hides it).
static ENABLED: AtomicBool = AtomicBool::new(false);
/// The capability MSRs L1 reads.
static L1_MSRS: spin::Once<L1VmxMsrs> = spin::Once::new();

/// Decides (once, on the BSP) whether the guest sees VMX, and what of it.
pub fn init(cmdline: &str) {
    let on = shared::cmdline::get(cmdline, "vmx") != Some("off");
    L1_MSRS.call_once(|| {
        // SAFETY: the capability MSRs exist: L0 runs in VMX operation.
        L1VmxMsrs::compute(
            |m| unsafe { shared::x86::rdmsr(m) },
            NestedFeatures {
                ept: true,
                vpid: true,
                unrestricted_guest: true,
            },
        )
    });
    ept02::init(cmdline);
    shadow::init(cmdline, crate::caps());
    ENABLED.store(on, Ordering::Release);
}

/// Whether the guest sees VMX.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

/// The VMX capability MSRs as L1 reads them (`None` before [`init`]).
pub fn l1_msrs() -> Option<&'static L1VmxMsrs> {
    L1_MSRS.get()
}

/// A 4-KiB page of L0's (bitmaps it builds for VMCS02), as 64-bit words.
#[repr(C, align(4096))]
pub struct Page(pub [u64; 512]);

/// The per-CPU memory of nested VMX, in L0's image: VMCS02 regions, the
/// VMCS12 copies, and the bitmaps VMCS02 points to.
pub struct Storage {
    pub vmcs02: [VmcsRegion; VMCS12_SLOTS],
    pub vmcs12: [MemVmcs; VMCS12_SLOTS],
    pub msr_bitmap: Page,
    pub io_bitmaps: [Page; 2],
    /// The shadow VMCS L1's VMREAD/VMWRITE reach without exits (`shadow`).
    pub shadow: VmcsRegion,
}

struct StorageSlot(UnsafeCell<Storage>);

// SAFETY: CPU i only touches slot i, through the one reference `take`
// hands out for it.
unsafe impl Sync for StorageSlot {}

static STORAGE: [StorageSlot; MAX_CPUS] = [const {
    StorageSlot(UnsafeCell::new(Storage {
        vmcs02: [const { VmcsRegion::new() }; VMCS12_SLOTS],
        vmcs12: [const { MemVmcs::new() }; VMCS12_SLOTS],
        msr_bitmap: Page([0; 512]),
        io_bitmaps: [const { Page([0; 512]) }; 2],
        shadow: VmcsRegion::new(),
    }))
}; MAX_CPUS];

/// Which VMCS is current on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loaded {
    /// L1 runs (or L0 handles one of its exits).
    Vmcs01,
    /// L2 runs with the VMCS02 of this VMCS12 cache slot.
    Vmcs02 { slot: usize },
}

/// Proof that VMCS01 (L0's own VMCS for its guest) is this CPU's current
/// VMCS (SDM 24.1: one current VMCS per logical processor). Made only by
/// [`Nested::current_vmcs`] and by the switch back from a VMCS02; not
/// `Copy`: the switch to a VMCS02 consumes it.
#[derive(Debug)]
#[must_use]
pub struct OnVmcs01 {
    _made_here: (),
}

/// Proof that the VMCS02 of VMCS12 cache slot `slot` is this CPU's current
/// VMCS (L2 runs next). Made only by [`Nested::current_vmcs`] and by the
/// nested entry; the switch back to VMCS01 consumes it.
#[derive(Debug)]
#[must_use]
pub struct OnVmcs02 {
    slot: usize,
}

impl OnVmcs02 {
    /// The VMCS12 cache slot whose VMCS02 is current.
    pub fn slot(&self) -> usize {
        self.slot
    }
}

/// Which VMCS is current, with its proof.
#[derive(Debug)]
pub enum OnVmcs {
    Vmcs01(OnVmcs01),
    Vmcs02(OnVmcs02),
}

/// One CPU's nested-VMX state: L1's VMX operation and what L0 keeps for it.
pub struct Nested {
    pub(crate) store: &'static mut Storage,
    pub(crate) cache: vmcs12::Cache,
    /// L1 is in VMX operation: its VMXON pointer.
    pub vmxon: Option<u64>,
    /// The VMCS current for L1 (its cache slot), if any.
    pub(crate) current: Option<usize>,
    pub(crate) loaded: Loaded,
    /// L1's CR0 and CR4 as it saw them at the last nested entry (VM exits
    /// keep some of their bits, SDM 28.5.1).
    pub(crate) l1_cr0: u64,
    pub(crate) l1_cr4: u64,
    /// The VPID12 whose L2 mappings VPID02 holds (None: none, or L1 does
    /// not use VPID and every transition flushes).
    pub(crate) vpid12: Option<u16>,
    /// Nested entries and reflected exits (for Stats and the trace).
    pub entries: u64,
    pub reflected: u64,
    /// `nested_trace=1`: one line per nested entry and exit.
    pub trace: bool,
    /// Nested EPT: this CPU's EPT02 roots and figures.
    pub ept02: ept02::State,
    /// L0's VMCS shadowing of L1 on this CPU.
    pub(crate) shadow: shadow::State,
}

impl Nested {
    /// The nested state of CPU `index` (called once per CPU, by
    /// `vcpu::take`).
    pub fn take(index: usize, trace: bool) -> Option<Self> {
        let slot = STORAGE.get(index)?;
        // SAFETY: `vcpu::take` runs once per CPU, so this is the only
        // reference to slot `index`.
        let store = unsafe { &mut *slot.0.get() };
        Some(Self {
            store,
            cache: vmcs12::Cache::new(),
            vmxon: None,
            current: None,
            loaded: Loaded::Vmcs01,
            l1_cr0: 0,
            l1_cr4: 0,
            vpid12: None,
            entries: 0,
            reflected: 0,
            trace,
            ept02: ept02::State::new(),
            shadow: shadow::State::default(),
        })
    }

    /// Which VMCS is current, as a proof for the code that needs it.
    pub fn current_vmcs(&self) -> OnVmcs {
        match self.loaded {
            Loaded::Vmcs01 => OnVmcs::Vmcs01(OnVmcs01 { _made_here: () }),
            Loaded::Vmcs02 { slot } => OnVmcs::Vmcs02(OnVmcs02 { slot }),
        }
    }

    /// The proof that VMCS01 is current, if it is.
    pub fn on_vmcs01(&self) -> Option<OnVmcs01> {
        match self.current_vmcs() {
            OnVmcs::Vmcs01(on) => Some(on),
            OnVmcs::Vmcs02(_) => None,
        }
    }

    /// The proof that a VMCS02 is current, if one is.
    pub fn on_vmcs02(&self) -> Option<OnVmcs02> {
        match self.current_vmcs() {
            OnVmcs::Vmcs02(on) => Some(on),
            OnVmcs::Vmcs01(_) => None,
        }
    }

    /// VMCS02 of `slot` has been made current (`entry`): VMCS01's proof
    /// is given up for its.
    fn now_on_vmcs02(&mut self, _left: OnVmcs01, slot: usize) -> OnVmcs02 {
        self.loaded = Loaded::Vmcs02 { slot };
        OnVmcs02 { slot }
    }

    /// VMCS01 has been made current again (`exit`).
    fn now_on_vmcs01(&mut self, _left: OnVmcs02) -> OnVmcs01 {
        self.loaded = Loaded::Vmcs01;
        OnVmcs01 { _made_here: () }
    }

    /// L2 runs (VMCS02 is current).
    pub fn in_l2(&self) -> bool {
        matches!(self.loaded, Loaded::Vmcs02 { .. })
    }

    /// The current VMCS12, if any.
    pub fn current_vmcs12(&self) -> Option<&MemVmcs> {
        self.current.map(|s| &self.store.vmcs12[s])
    }

    /// The current VMCS12, if any, for writing.
    pub fn current_vmcs12_mut(&mut self) -> Option<&mut MemVmcs> {
        self.current.map(|s| &mut self.store.vmcs12[s])
    }

    /// Whether the next VM entry must be a VMLAUNCH (VMCS02 not launched).
    pub fn needs_launch(&self) -> bool {
        match self.loaded {
            Loaded::Vmcs01 => false,
            Loaded::Vmcs02 { slot } => !self.cache.meta(slot).vmcs02_launched,
        }
    }
}
