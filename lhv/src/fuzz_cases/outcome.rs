//! One fuzz case's outcome line (`FUZZ <case> <outcome>`) and the digest of
//! a run.
//!
//! The outcome names only what the SDM defines for the way the case ended,
//! so that two correct implementations print the same line:
//! - `vmfail-invalid`, `vmfail-valid <error>` (SDM 31.2, 31.4);
//! - `l2-ran`: L2 reached its VMCALL (exit reason 18);
//! - `exit <reason> q=<qualification>` for every other exit, with
//!   `ii=`/`ec=` (VM-exit interruption information and its error code, SDM
//!   28.2.2) when the information is valid, `idt=`/`idtec=` (IDT-vectoring
//!   information, SDM 28.2.4) when valid, and `len=` (VM-exit instruction
//!   length) only where SDM 28.2.5 defines it. An entry failure (reason bit
//!   31) defines the qualification alone (SDM 27.8).
//! - ` st=<hash>` after an exit: the values the VM-exit MSR-store area
//!   received (SDM 28.4), when it had entries.

use core::fmt;

/// VM-exit interruption-information / IDT-vectoring valid bit.
const VALID: u32 = 1 << 31;
/// ... "error code valid" bit.
const ERROR_CODE_VALID: u32 = 1 << 11;
/// Exit-reason bit 31: VM-entry failure.
const ENTRY_FAILURE: u32 = 1 << 31;
/// Basic exit reason VMCALL.
const VMCALL: u32 = 18;
/// Basic exit reason "exception or NMI".
const EXCEPTION_OR_NMI: u32 = 0;

/// Basic exit reasons that are due to an instruction and so record its
/// length (SDM 28.2.5): CPUID 10, GETSEC 11, HLT 12, INVD 13, INVLPG 14,
/// RDPMC 15, RDTSC 16, RSM 17, VMCALL..VMXON 18-27, CR access 28, MOV DR
/// 29, I/O 30, RDMSR 31, WRMSR 32, MWAIT 36, MONITOR 39, PAUSE 40, GDTR/IDTR
/// 46, LDTR/TR 47, INVEPT 50, RDTSCP 51, INVVPID 53, WBINVD 54, XSETBV 55,
/// RDRAND 57, INVPCID 58, VMFUNC 59, ENCLS 60, RDSEED 61, XSAVES 63,
/// XRSTORS 64. Task switch (9) and EPT violation/APIC access during event
/// delivery are covered by the IDT-vectoring rule instead.
const INSTRUCTION_EXITS: &[u32] = &[
    10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 36,
    39, 40, 46, 47, 50, 51, 53, 54, 55, 57, 58, 59, 60, 61, 63, 64,
];

/// Event types whose delivery records the instruction length: software
/// interrupt (4), privileged software exception (5), software exception (6).
const fn software_event(info: u32) -> bool {
    matches!((info >> 8) & 7, 4..=6)
}

/// The raw result of the case's VM entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Raw {
    /// VMfailInvalid.
    FailInvalid,
    /// VMfailValid with the VM-instruction error.
    FailValid(u32),
    /// A VM exit (or entry-failure exit) with the VMCS12's exit fields.
    Exit(ExitFields),
}

/// The exit-information fields of the VMCS after an exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitFields {
    pub reason: u32,
    pub qualification: u64,
    pub interruption_info: u32,
    pub interruption_error: u32,
    pub idt_info: u32,
    pub idt_error: u32,
    pub instruction_len: u32,
    /// Hash of the VM-exit MSR-store area's values, when it had entries.
    pub stored: Option<u32>,
}

/// The outcome as printed after `FUZZ <case> `.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome(pub Raw);

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = match self.0 {
            Raw::FailInvalid => return f.write_str("vmfail-invalid"),
            Raw::FailValid(err) => return write!(f, "vmfail-valid {err}"),
            Raw::Exit(e) => e,
        };
        if e.reason & ENTRY_FAILURE != 0 {
            return write!(f, "exit {:#x} q={:#x}", e.reason, e.qualification);
        }
        let basic = e.reason & 0xffff;
        if basic == VMCALL && e.idt_info & VALID == 0 {
            f.write_str("l2-ran")?;
        } else {
            write!(f, "exit {} q={:#x}", e.reason, e.qualification)?;
            let ii_valid = e.interruption_info & VALID != 0;
            if ii_valid {
                write!(f, " ii={:#x}", e.interruption_info)?;
                if e.interruption_info & ERROR_CODE_VALID != 0 {
                    write!(f, " ec={:#x}", e.interruption_error)?;
                }
            }
            let idt_valid = e.idt_info & VALID != 0;
            if idt_valid {
                write!(f, " idt={:#x}", e.idt_info)?;
                if e.idt_info & ERROR_CODE_VALID != 0 {
                    write!(f, " idtec={:#x}", e.idt_error)?;
                }
            }
            let len_defined = INSTRUCTION_EXITS.contains(&basic)
                || (basic == EXCEPTION_OR_NMI && ii_valid && software_event(e.interruption_info))
                || (idt_valid && software_event(e.idt_info));
            if len_defined {
                write!(f, " len={}", e.instruction_len)?;
            }
        }
        if let Some(h) = e.stored {
            write!(f, " st={h:08x}")?;
        }
        Ok(())
    }
}

/// FNV-1a (64-bit) over the outcome lines: the run's digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest(u64);

impl Default for Digest {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Digest {
    /// Adds bytes.
    pub fn add(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Adds one outcome line (without its newline; one is added).
    pub fn add_line(&mut self, line: &str) {
        self.add(line.as_bytes());
        self.add(b"\n");
    }

    /// The value.
    pub fn value(&self) -> u64 {
        self.0
    }
}

impl fmt::Write for Digest {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.add(s.as_bytes());
        Ok(())
    }
}

/// A 32-bit FNV-1a over quadwords (the MSR-store area's values).
pub fn hash_values(values: impl IntoIterator<Item = u64>) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for v in values {
        for b in v.to_le_bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use std::string::ToString;

    use super::*;

    fn exit(reason: u32) -> ExitFields {
        ExitFields {
            reason,
            ..Default::default()
        }
    }

    #[test]
    fn vm_failures() {
        assert_eq!(Outcome(Raw::FailInvalid).to_string(), "vmfail-invalid");
        assert_eq!(Outcome(Raw::FailValid(7)).to_string(), "vmfail-valid 7");
    }

    #[test]
    fn vmcall_is_l2_ran() {
        let e = ExitFields {
            instruction_len: 3,
            ..exit(18)
        };
        assert_eq!(Outcome(Raw::Exit(e)).to_string(), "l2-ran");
    }

    #[test]
    fn entry_failure_shows_the_qualification_alone() {
        let e = ExitFields {
            qualification: 4,
            interruption_info: 0x8000_0b0e,
            instruction_len: 9,
            ..exit(0x8000_0021)
        };
        assert_eq!(Outcome(Raw::Exit(e)).to_string(), "exit 0x80000021 q=0x4");
    }

    #[test]
    fn exception_exit_with_vectoring_and_length_only_where_defined() {
        // #GP(0x102) while delivering an injected software interrupt 0x20.
        let e = ExitFields {
            interruption_info: 0x8000_0b0d,
            interruption_error: 0x102,
            idt_info: 0x8000_0420,
            instruction_len: 2,
            ..exit(0)
        };
        assert_eq!(
            Outcome(Raw::Exit(e)).to_string(),
            "exit 0 q=0x0 ii=0x80000b0d ec=0x102 idt=0x80000420 len=2"
        );
        // A hardware exception with no vectoring: no length.
        let e = ExitFields {
            interruption_info: 0x8000_0306,
            instruction_len: 2,
            ..exit(0)
        };
        assert_eq!(
            Outcome(Raw::Exit(e)).to_string(),
            "exit 0 q=0x0 ii=0x80000306"
        );
        // An instruction exit records its length; stale interruption info
        // without its valid bit is not shown.
        let e = ExitFields {
            interruption_info: 0x306,
            instruction_len: 1,
            qualification: 0,
            stored: Some(0xabc),
            ..exit(12)
        };
        assert_eq!(
            Outcome(Raw::Exit(e)).to_string(),
            "exit 12 q=0x0 len=1 st=00000abc"
        );
    }

    #[test]
    fn digest_is_fnv1a_and_order_sensitive() {
        let mut d = Digest::default();
        d.add(b"a");
        assert_eq!(d.value(), 0xaf63_dc4c_8601_ec8c);
        let (mut x, mut y) = (Digest::default(), Digest::default());
        x.add_line("FUZZ 0 l2-ran");
        x.add_line("FUZZ 1 vmfail-valid 7");
        y.add_line("FUZZ 1 vmfail-valid 7");
        y.add_line("FUZZ 0 l2-ran");
        assert_ne!(x.value(), y.value());
        assert_ne!(hash_values([1, 2]), hash_values([2, 1]));
    }
}
