//! L0's hypercall ABI (VMCALL from its guest, in any mode, at CPL 0).
//!
//! RAX = [`MAGIC`] | number; arguments in RBX, RCX, RDX. On return RAX is
//! [`OK`] or an error below, results in RBX, RCX, RDX (and RSI, RDI), with CF, PF, AF, ZF, SF
//! and OF clear (as after a VMX instruction that succeeded). Any other VMCALL gets what
//! the hardware gives: #UD outside VMX operation (SDM Vol. 2B, VMCALL), VMfail in a guest
//! hypervisor's VMX root operation; and so does one at CPL > 0 or one of a call that L0's
//! command line does not enable: Stats and Shutdown need `hypercalls=stats,shutdown`
//! (either word alone enables that one), Print is always available.

/// "L0" in the top half of EAX marks an L0 hypercall.
pub const MAGIC: u64 = 0x4C30_0000;

/// Hypercall numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Hypercall {
    /// Prints RCX bytes at guest-physical RBX (at most [`PRINT_MAX`]) on L0's console.
    Print = 1,
    /// L0 is alive: returns RBX = VM exits handled on this CPU, RCX = CPUs
    /// L0 runs on, RDX = L0's region size in KiB, RSI = L0's region base
    /// (guest-physical; the guest sees it as unbacked memory: reads all
    /// ones, writes dropped), RDI = 4-KiB frames L0 has free: those left in
    /// its pool plus those of the EPT02 free list (EPT01 and EPT02 tables
    /// come from them; VMCS02s are static). EPT02 roots that L1 drops
    /// (INVEPT, VMXOFF) or L0 evicts give their frames back, so with every
    /// CPU's roots dropped a long run that keeps it flat leaks nothing.
    /// That is sub-function [`StatsKind::General`] (RBX = 0 on the call);
    /// RBX = [`StatsKind::NestedEpt`] asks for this CPU's nested-EPT
    /// counters instead ([`NestedEptStats`]). Another RBX is
    /// [`BAD_ARGUMENT`].
    Stats = 2,
    /// Stops the machine with exit code RBX (emulators quit; hardware halts).
    Shutdown = 3,
    /// Prints the caller's VMCS as L0 runs it (VMCS01) and, when the caller
    /// is a guest hypervisor with a current VMCS, L0's copy of it (VMCS12),
    /// as `CPU(n): VMCS<kind> <encoding> <name> = <value>` lines.
    DumpVmcs = 4,
}

/// The sub-functions of [`Hypercall::Stats`], chosen by RBX on the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum StatsKind {
    /// Exits, CPUs, L0's region and pool (what Stats always returned).
    General = 0,
    /// This CPU's nested-EPT counters: [`NestedEptStats`].
    NestedEpt = 1,
}

impl StatsKind {
    /// Decodes RBX of a Stats call.
    pub fn from_rbx(rbx: u64) -> Option<Self> {
        match rbx {
            0 => Some(Self::General),
            1 => Some(Self::NestedEpt),
            _ => None,
        }
    }
}

/// Stats sub-function [`StatsKind::NestedEpt`]: counters of this CPU since
/// L0 started, for the guest hypervisor's L2s (running totals: a caller
/// takes the difference across what it measures).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NestedEptStats {
    /// RBX: EPT violations of L2 that L0 resolved by adding an EPT02 entry
    /// (EPT12 and EPT01 both allow the access; not reflected to L1).
    pub resolved_faults: u64,
    /// RCX: EPT02 root lookups at nested VM entries (one per entry with
    /// "enable EPT" in VMCS12, keyed by its EPTP).
    pub root_lookups: u64,
    /// RDX: of them, the lookups that found the root cached.
    pub root_hits: u64,
    /// RSI: roots evicted (least recently used first) to make room.
    pub root_evictions: u64,
    /// RDI: roots cached per CPU (`ept02_roots=<n>`).
    pub root_capacity: u64,
}

impl NestedEptStats {
    /// RBX, RCX, RDX, RSI, RDI of the answer.
    pub const fn to_regs(self) -> [u64; 5] {
        [
            self.resolved_faults,
            self.root_lookups,
            self.root_hits,
            self.root_evictions,
            self.root_capacity,
        ]
    }

    /// The answer's RBX, RCX, RDX, RSI, RDI.
    pub const fn from_regs(r: [u64; 5]) -> Self {
        Self {
            resolved_faults: r[0],
            root_lookups: r[1],
            root_hits: r[2],
            root_evictions: r[3],
            root_capacity: r[4],
        }
    }

    /// The counters moved from `before` to `self` (the capacity is
    /// `self`'s).
    pub const fn since(self, before: Self) -> Self {
        Self {
            resolved_faults: self.resolved_faults.wrapping_sub(before.resolved_faults),
            root_lookups: self.root_lookups.wrapping_sub(before.root_lookups),
            root_hits: self.root_hits.wrapping_sub(before.root_hits),
            root_evictions: self.root_evictions.wrapping_sub(before.root_evictions),
            root_capacity: self.root_capacity,
        }
    }
}

/// Most bytes one Print call prints.
pub const PRINT_MAX: u64 = 4096;
/// Success.
pub const OK: u64 = 0;
/// Unknown hypercall.
pub const UNKNOWN: u64 = u64::MAX;
/// A bad argument (e.g. a buffer outside guest memory).
pub const BAD_ARGUMENT: u64 = u64::MAX - 1;

impl Hypercall {
    /// Decodes RAX; `None` if it is not an L0 hypercall.
    pub fn from_rax(rax: u64) -> Option<Self> {
        match rax.checked_sub(MAGIC)? {
            1 => Some(Self::Print),
            2 => Some(Self::Stats),
            3 => Some(Self::Shutdown),
            4 => Some(Self::DumpVmcs),
            _ => None,
        }
    }

    /// The RAX value that requests this hypercall.
    pub fn rax(self) -> u64 {
        MAGIC | self as u64
    }
}

/// The hypercalls L0's command line enables (`hypercalls=<word>,...`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Enabled {
    pub stats: bool,
    pub shutdown: bool,
}

impl Enabled {
    /// Parses the value of `hypercalls=` (comma-separated words; unknown
    /// words are ignored).
    pub fn parse(value: Option<&str>) -> Self {
        let mut e = Self::default();
        for w in value.unwrap_or("").split(',') {
            match w.trim() {
                "stats" => e.stats = true,
                "shutdown" => e.shutdown = true,
                _ => {}
            }
        }
        e
    }

    /// Whether `h` may be called.
    pub const fn allows(self, h: Hypercall) -> bool {
        match h {
            Hypercall::Print | Hypercall::DumpVmcs => true,
            Hypercall::Stats => self.stats,
            Hypercall::Shutdown => self.shutdown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabled_words() {
        assert_eq!(Enabled::parse(None), Enabled::default());
        let both = Enabled::parse(Some("stats,shutdown"));
        assert!(both.stats && both.shutdown);
        let s = Enabled::parse(Some("stats,bogus"));
        assert!(s.allows(Hypercall::Stats) && !s.allows(Hypercall::Shutdown));
        assert!(Enabled::default().allows(Hypercall::Print));
        assert!(!Enabled::parse(Some("statsshutdown")).stats);
    }

    #[test]
    fn stats_kinds_and_nested_ept_registers() {
        assert_eq!(StatsKind::from_rbx(0), Some(StatsKind::General));
        assert_eq!(StatsKind::from_rbx(1), Some(StatsKind::NestedEpt));
        assert_eq!(StatsKind::from_rbx(2), None);
        assert_eq!(StatsKind::from_rbx(u64::MAX), None);
        let s = NestedEptStats {
            resolved_faults: 1,
            root_lookups: 2,
            root_hits: 3,
            root_evictions: 4,
            root_capacity: 5,
        };
        assert_eq!(s.to_regs(), [1, 2, 3, 4, 5]);
        assert_eq!(NestedEptStats::from_regs(s.to_regs()), s);
        let later = NestedEptStats {
            resolved_faults: 65,
            root_lookups: 1002,
            root_hits: 1003,
            root_evictions: 4,
            root_capacity: 5,
        };
        assert_eq!(
            later.since(s),
            NestedEptStats {
                resolved_faults: 64,
                root_lookups: 1000,
                root_hits: 1000,
                root_evictions: 0,
                root_capacity: 5,
            }
        );
    }

    #[test]
    fn rax_roundtrip_and_rejects_others() {
        for h in [
            Hypercall::Print,
            Hypercall::Stats,
            Hypercall::Shutdown,
            Hypercall::DumpVmcs,
        ] {
            assert_eq!(Hypercall::from_rax(h.rax()), Some(h));
        }
        assert_eq!(Hypercall::from_rax(0), None);
        assert_eq!(Hypercall::from_rax(MAGIC), None);
        assert_eq!(Hypercall::from_rax(MAGIC | 5), None);
        assert_eq!(Hypercall::from_rax(1), None);
    }
}
