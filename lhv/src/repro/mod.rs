//! Reproducers of known nested-VMX bugs in other hypervisors, chosen with
//! `lhv_repro=<name>` on the command line. Each runs once on the BSP (no
//! APs, no test loop), drives its own L2 through a [`Ctx`] and prints one
//! verdict line on the serial port and the VGA screen:
//! `repro <name>: GOOD <explanation>` (the platform behaves as the SDM
//! says) or `repro <name>: BAD <explanation>` (the bug is there). A check
//! that is not the bug itself fails as usual (`TEST_ASSERT failed`).
//!
//! # Adding a reproducer
//! Write `repro/<name>.rs` with a `pub const REPRO: Reproducer` and add one
//! line to [`REGISTRY`].

use ::core::fmt::{self, Write};

use shared::boot::BootInfo;
use shared::vmx::VmxCaps;
use shared::vmx::insn::VmcsRegion;
use shared::{println, vmx_root};

use crate::test_loop::Ctx;
use crate::vmcs_setup::{Controls, RFLAGS_FIXED};

pub mod kvm216212;
pub mod nmi_blocking;

/// One reproducer.
pub struct Reproducer {
    /// Its `lhv_repro=` name.
    pub name: &'static str,
    /// One line: the bug and where it is reported.
    pub about: &'static str,
    /// Why this CPU cannot run it (`SKIP repro <name>: <reason>`), if so.
    pub unsupported: fn(&VmxCaps) -> Option<&'static str>,
    /// Adds the controls it needs to the base ones.
    pub request: fn(&mut Controls),
    /// Prepares the current VMCS (written from the base guest state) and
    /// runs L2 to a verdict.
    pub run: fn(&mut Ctx) -> Verdict,
}

/// Every reproducer, by name.
pub const REGISTRY: &[&Reproducer] = &[&kvm216212::REPRO, &nmi_blocking::REPRO];

/// The outcome, with a one-line explanation.
pub struct Verdict {
    /// Whether the platform behaved as the SDM says.
    pub good: bool,
    /// Why (what was observed).
    pub why: Explanation,
}

impl Verdict {
    /// A GOOD verdict.
    pub fn good(args: fmt::Arguments) -> Self {
        Self {
            good: true,
            why: Explanation::from(args),
        }
    }

    /// A BAD verdict.
    pub fn bad(args: fmt::Arguments) -> Self {
        Self {
            good: false,
            why: Explanation::from(args),
        }
    }
}

/// A fixed-size line of text (cut at its capacity).
pub struct Explanation {
    buf: [u8; 200],
    len: usize,
}

impl Explanation {
    /// An empty line.
    pub const fn new() -> Self {
        Self {
            buf: [0; 200],
            len: 0,
        }
    }

    fn from(args: fmt::Arguments) -> Self {
        let mut e = Self {
            buf: [0; 200],
            len: 0,
        };
        let _ = e.write_fmt(args);
        e
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        ::core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl Write for Explanation {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut n = s.len().min(self.buf.len() - self.len);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// A `&'static mut` to a static of reproducer mode.
///
/// # Safety
/// Reproducer mode runs once, on the BSP only, and takes each static once.
pub unsafe fn exclusive<T>(p: *mut T) -> &'static mut T {
    // SAFETY: the caller guarantees no other reference exists.
    unsafe { &mut *p }
}

/// Finds a reproducer by name.
pub fn find(name: &str) -> Option<&'static Reproducer> {
    REGISTRY.iter().copied().find(|r| r.name == name)
}

/// The BSP's only VMCS in reproducer mode.
static mut VMCS: VmcsRegion = VmcsRegion::new();

/// Runs reproducer `name` on this CPU (the BSP) and shuts down.
pub fn run(boot: &BootInfo, name: &str, caps: &'static VmxCaps) -> ! {
    let Some(repro) = find(name) else {
        let mut known = Explanation::from(format_args!(""));
        for r in REGISTRY {
            let _ = write!(known, " {}", r.name);
        }
        println!(
            "repro {name}: unknown reproducer (known:{})",
            known.as_str()
        );
        shared::platform::shutdown(1);
    };
    println!("repro {}: {}", repro.name, repro.about);
    if let Some(reason) = (repro.unsupported)(caps) {
        println!("SKIP repro {}: {reason}", repro.name);
        shared::platform::shutdown(0);
    }
    let vmx = match vmx_root::enter(caps) {
        Ok(v) => v,
        Err(e) => {
            println!("VMX is not available: {e}");
            shared::platform::shutdown(1);
        }
    };
    // A reproducer controls every event itself: no legacy interrupts.
    crate::hw::pit::mask_all();
    let mut controls = Controls::base();
    (repro.request)(&mut controls);
    // Every exception in L2 exits, so that an injected fault shows.
    controls.exception_bitmap = u32::MAX;
    if let Some((field, bits)) = controls.unsupported(caps) {
        println!(
            "SKIP repro {}: {field} controls {bits:#x} not allowed",
            repro.name
        );
        shared::platform::shutdown(0);
    }
    // SAFETY: reproducer mode runs on the BSP only, once; nothing else
    // touches this static.
    let region = unsafe { exclusive(&raw mut VMCS) };
    let on_bochs = crate::test_loop::firmware_is_bochs(boot);
    let empty = lhv::opt::LhvOpt::empty();
    let mut ctx = Ctx::new(0, vmx, caps, empty, on_bochs, region);
    // The reproducer sets RIP and RSP; interrupts stay off in L2.
    ctx.init_vmcs(&controls, 0, 0, RFLAGS_FIXED);
    let verdict = (repro.run)(&mut ctx);
    let word = if verdict.good { "GOOD" } else { "BAD" };
    println!("repro {}: {word} {}", repro.name, verdict.why.as_str());
    let status = Explanation::from(format_args!("repro {}: {word}", repro.name));
    shared::console::vga::write_status(0, 0, status.as_str());
    shared::console::flush();
    shared::platform::shutdown(0)
}
