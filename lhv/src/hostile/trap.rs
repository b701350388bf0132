//! Catching the exception one guest instruction raises: [`catch!`] arms a
//! resume address (the end of its `asm!` block); the handler records the
//! vector, error code and pushed RFLAGS and continues there. A trap that
//! arrives unarmed is fatal, as everywhere else in LHV.

use ::core::sync::atomic::{AtomicU64, Ordering};
use shared::trap::{self, TrapFrame, vector};

/// Where the armed case continues after a trap (0: not armed).
pub static RESUME: AtomicU64 = AtomicU64::new(0);
/// What the last trap of an armed case was: vector + 1 (0: none).
static VECTOR: AtomicU64 = AtomicU64::new(0);
static ERROR_CODE: AtomicU64 = AtomicU64::new(0);
static RFLAGS: AtomicU64 = AtomicU64::new(0);

/// RFLAGS.RF.
pub const RFLAGS_RF: u64 = 1 << 16;
/// RFLAGS.TF.
pub const RFLAGS_TF: u64 = 1 << 8;

/// An exception a case raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caught {
    pub vector: u8,
    pub error_code: u64,
    /// RFLAGS as the processor pushed it.
    pub rflags: u64,
}

impl Caught {
    /// Whether this is `vector` with error code `code` (`None`: no code).
    pub fn is(&self, vector: u8, code: Option<u64>) -> bool {
        self.vector == vector && code.is_none_or(|c| c == self.error_code)
    }
}

fn handler(frame: &mut TrapFrame) {
    let resume = RESUME.swap(0, Ordering::AcqRel);
    if resume == 0 {
        trap::fatal_exception(frame);
    }
    VECTOR.store(frame.vector + 1, Ordering::Release);
    // A case's own single step ends with its first trap.
    frame.rflags &= !RFLAGS_TF;
    ERROR_CODE.store(frame.error_code, Ordering::Release);
    RFLAGS.store(frame.rflags, Ordering::Release);
    frame.rip = resume;
}

/// The vectors a case may raise.
const VECTORS: [u8; 8] = [
    vector::DE,
    vector::DB,
    vector::UD,
    vector::NP,
    vector::SS,
    vector::GP,
    vector::PF,
    vector::AC,
];

/// Installs the handler on every vector a case may raise.
pub fn install() {
    for v in VECTORS {
        trap::set_handler(v, handler);
    }
}

/// Called by [`catch!`] before its instructions.
pub fn arm() {
    VECTOR.store(0, Ordering::Release);
}

/// Called by [`catch!`] after its instructions: the trap, if any.
pub fn take() -> Option<Caught> {
    RESUME.store(0, Ordering::Release);
    let v = VECTOR.swap(0, Ordering::AcqRel);
    (v != 0).then(|| Caught {
        vector: (v - 1) as u8,
        error_code: ERROR_CODE.load(Ordering::Acquire),
        rflags: RFLAGS.load(Ordering::Acquire),
    })
}

/// Runs the instructions (`asm!` template strings, then `;` and operands
/// ending with a comma) and returns the exception they raised, if any.
/// The resume point is the end of the block; R11 is clobbered.
macro_rules! catch {
    ($($tmpl:literal),+ $(; $($ops:tt)*)?) => {{
        $crate::hostile::trap::arm();
        // SAFETY: the caller's instructions are a hostile-mode case: they
        // act on the machine as a guest OS would, on memory and registers
        // the case owns; a trap resumes at the end of the block with the
        // registers as they were at the trap.
        unsafe {
            ::core::arch::asm!(
                "lea r11, [rip + 77f]",
                "mov qword ptr [rip + {resume}], r11",
                $($tmpl,)+
                "77:",
                resume = sym $crate::hostile::trap::RESUME,
                $($($ops)*)?
                out("r11") _,
            );
        }
        $crate::hostile::trap::take()
    }};
}
pub(crate) use catch;
