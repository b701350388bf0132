//! L0's cache of L1's VMCSs (VMCS12), as the processor caches VMCSs it has
//! loaded (SDM 25.11.1): VMPTRLD brings a VMCS12 into one of a few slots
//! per CPU, VMREAD/VMWRITE work on the copy, VMCLEAR writes it back to L1's
//! region and frees the slot. A VMCS12 that L1 changes in memory while it is
//! cached is therefore not seen until it is loaded again, as on hardware.
//!
//! The region's format is L0's own (the hardware's is implementation
//! specific too): bytes 0-3 the revision identifier and 4-7 the VMX-abort
//! indicator (both L1's), then a signature, the launch state and one
//! 64-bit value per field of the shared field table, by its dense index.

use shared::mem::PhysMemory;
use shared::vmx::insn::{self as hw, VmFail};
use shared::vmx::{MemVmcs, VmcsAccess, VmcsField};

use super::Nested;
use crate::memory::GuestMemory;

/// VMCS12s cached per CPU.
pub const VMCS12_SLOTS: usize = 4;

/// Offset of the VMX-abort indicator (SDM 25.2).
pub const ABORT_OFFSET: u64 = 4;
const SIGNATURE_OFFSET: u64 = 8;
const LAUNCHED_OFFSET: u64 = 16;
const FIELDS_OFFSET: u64 = 24;
/// "L0VMCS12": the region holds data L0 wrote (at VMCLEAR or eviction).
const SIGNATURE: u64 = u64::from_le_bytes(*b"L0VMCS12");

const _: () = assert!(FIELDS_OFFSET + 8 * VmcsField::COUNT as u64 <= 4096);

/// What L0 knows about one cache slot.
#[derive(Clone, Copy, Debug, Default)]
pub struct Meta {
    /// Guest-physical address of the cached VMCS12 (None: free slot).
    pub addr: Option<u64>,
    /// VMCS12's launch state (SDM 25.1): VMLAUNCH succeeded since VMCLEAR.
    pub launched: bool,
    /// The slot's VMCS02 has been cleared and given L0's host state.
    pub vmcs02_ready: bool,
    /// The slot's VMCS02 is "launched" (the next entry is VMRESUME).
    pub vmcs02_launched: bool,
    last_use: u64,
}

/// The slots' bookkeeping (their VMCS12 and VMCS02 live in `Storage`).
pub struct Cache {
    meta: [Meta; VMCS12_SLOTS],
    tick: u64,
}

impl Cache {
    pub const fn new() -> Self {
        Self {
            meta: [Meta {
                addr: None,
                launched: false,
                vmcs02_ready: false,
                vmcs02_launched: false,
                last_use: 0,
            }; VMCS12_SLOTS],
            tick: 0,
        }
    }

    pub fn meta(&self, slot: usize) -> &Meta {
        &self.meta[slot % VMCS12_SLOTS]
    }

    pub fn meta_mut(&mut self, slot: usize) -> &mut Meta {
        &mut self.meta[slot % VMCS12_SLOTS]
    }

    fn find(&self, addr: u64) -> Option<usize> {
        self.meta.iter().position(|m| m.addr == Some(addr))
    }

    /// A free slot, else the least recently used one other than `keep`.
    fn victim(&self, keep: Option<usize>) -> usize {
        if let Some(free) = self.meta.iter().position(|m| m.addr.is_none()) {
            return free;
        }
        (0..VMCS12_SLOTS)
            .filter(|&s| Some(s) != keep)
            .min_by_key(|&s| self.meta[s].last_use)
            .unwrap_or(0)
    }

    fn touch(&mut self, slot: usize) {
        self.tick += 1;
        self.meta_mut(slot).last_use = self.tick;
    }
}

/// Reads a VMCS12 and its launch state from L1's region at `addr`; a
/// region L0 never wrote reads as all-zero fields, clear.
fn read_region(addr: u64, vmcs: &mut MemVmcs) -> bool {
    *vmcs = MemVmcs::new();
    if GuestMemory.read_u64(addr + SIGNATURE_OFFSET) != Ok(SIGNATURE) {
        return false;
    }
    for &f in VmcsField::ALL {
        let v = GuestMemory
            .read_u64(addr + FIELDS_OFFSET + 8 * f.index() as u64)
            .unwrap_or(0);
        vmcs.write(f, v);
    }
    GuestMemory.read_u64(addr + LAUNCHED_OFFSET) == Ok(1)
}

/// Writes a VMCS12 and its launch state into L1's region at `addr`
/// (revision identifier and abort indicator untouched).
fn write_region(addr: u64, vmcs: &MemVmcs, launched: bool) {
    let mut m = GuestMemory;
    let _ = m.write(addr + SIGNATURE_OFFSET, &SIGNATURE.to_le_bytes());
    let _ = m.write(addr + LAUNCHED_OFFSET, &u64::from(launched).to_le_bytes());
    for (f, v) in vmcs.iter() {
        let _ = m.write(
            addr + FIELDS_OFFSET + 8 * f.index() as u64,
            &v.to_le_bytes(),
        );
    }
}

/// Makes a slot's VMCS02 inactive and not launched (VMCLEAR), so that it
/// can serve another VMCS12.
fn clear_vmcs02(n: &mut Nested, slot: usize) {
    let pa = shared::boot::layout::phys_of(&raw const n.store.vmcs02[slot]);
    // SAFETY: `pa` is this CPU's own VMCS02 region, which is not current
    // (VMCS01 is, while L0 emulates L1's instructions).
    let _: Result<(), VmFail> = unsafe { hw::vmclear(pa) };
    let m = n.cache.meta_mut(slot);
    m.vmcs02_ready = false;
    m.vmcs02_launched = false;
}

impl Nested {
    /// VMPTRLD: makes the VMCS12 at `addr` current, loading it from L1's
    /// region unless it is cached.
    pub fn load_vmcs12(&mut self, addr: u64) {
        let slot = match self.cache.find(addr) {
            Some(s) => s,
            None => {
                let s = self.cache.victim(self.current);
                self.evict(s);
                let launched = read_region(addr, &mut self.store.vmcs12[s]);
                let m = self.cache.meta_mut(s);
                m.addr = Some(addr);
                m.launched = launched;
                s
            }
        };
        self.cache.touch(slot);
        self.current = Some(slot);
    }

    /// VMCLEAR: writes the VMCS12 at `addr` back (clear) and forgets it; a
    /// VMCS12 that is not cached gets L0's format in its region if it has
    /// none, and its launch state cleared.
    pub fn clear_vmcs12(&mut self, addr: u64) {
        if let Some(s) = self.cache.find(addr) {
            self.cache.meta_mut(s).launched = false;
            self.evict(s);
            if self.current == Some(s) {
                self.current = None;
            }
            return;
        }
        let mut scratch = MemVmcs::new();
        read_region(addr, &mut scratch);
        write_region(addr, &scratch, false);
    }

    /// Writes every cached VMCS12 back and empties the cache (VMXOFF).
    pub fn flush_vmcs12s(&mut self) {
        for s in 0..VMCS12_SLOTS {
            self.evict(s);
        }
        self.current = None;
    }

    /// Frees slot `s`, writing its VMCS12 back first.
    fn evict(&mut self, s: usize) {
        let m = *self.cache.meta(s);
        if let Some(addr) = m.addr {
            write_region(addr, &self.store.vmcs12[s], m.launched);
        }
        if m.vmcs02_ready {
            clear_vmcs02(self, s);
        }
        *self.cache.meta_mut(s) = Meta::default();
    }

    /// The guest-physical address of the current VMCS12 (VMPTRST).
    pub fn current_vmcs12_addr(&self) -> Option<u64> {
        self.current.and_then(|s| self.cache.meta(s).addr)
    }
}
