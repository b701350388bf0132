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
    Stats = 2,
    /// Stops the machine with exit code RBX (emulators quit; hardware halts).
    Shutdown = 3,
    /// Prints the caller's VMCS as L0 runs it (VMCS01) and, when the caller
    /// is a guest hypervisor with a current VMCS, L0's copy of it (VMCS12),
    /// as `CPU(n): VMCS<kind> <encoding> <name> = <value>` lines.
    DumpVmcs = 4,
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
