//! Intel VMX: the VMCS field table, field access, capability MSRs, control
//! bits, instruction wrappers and VM-exit decoding (Intel SDM Vol. 3C and 3D).
//!
//! Everything except [`insn`] is pure code, tested on the host; [`insn`]
//! holds the thin `unsafe` wrappers around the VMX instructions.

/// Declares a fieldless-looking enum of numbered values (exit reasons,
/// VM-instruction errors) that keeps unknown numbers in an `Unknown`
/// variant, with `from_u32`, `number` and `description`.
macro_rules! numbered_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $unknown_ty:ty {
            $( $(#[doc = $doc:literal])+ $variant:ident = $num:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[doc = $doc])+ $variant, )+
            /// A number this table does not know (kept for reporting).
            Unknown($unknown_ty),
        }

        impl $name {
            /// Every known value, in numeric order.
            pub const KNOWN: &'static [$name] = &[$($name::$variant),+];

            /// Decodes a number; numbers not in the table (or too large for
            /// the `Unknown` payload, which then saturates) give `Unknown`.
            pub const fn from_u32(n: u32) -> Self {
                match n {
                    $( $num => Self::$variant, )+
                    _ => Self::Unknown(if n > <$unknown_ty>::MAX as u32 {
                        <$unknown_ty>::MAX
                    } else {
                        n as $unknown_ty
                    }),
                }
            }

            /// The number this value stands for.
            pub const fn number(self) -> u32 {
                match self {
                    $( Self::$variant => $num, )+
                    Self::Unknown(n) => n as u32,
                }
            }

            /// The SDM's description.
            pub const fn description(self) -> &'static str {
                match self {
                    $( Self::$variant => concat!($($doc),+).trim_ascii(), )+
                    Self::Unknown(_) => "unknown",
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self {
                    Self::Unknown(n) => write!(f, "unknown ({})", n),
                    known => write!(
                        f,
                        "{} ({})",
                        known.description().trim_end_matches('.'),
                        known.number()
                    ),
                }
            }
        }
    };
}

pub mod access;
pub mod caps;
pub mod controls;
pub mod exit;
pub mod fields;
pub mod guest_init;
pub mod insn;
pub mod insn_info;
pub mod msr_bitmap;
pub mod nested;
pub mod shadow;

pub use access::{MemVmcs, VmcsAccess};
pub use caps::VmxCaps;
pub use controls::ControlCap;
pub use exit::ExitReason;
pub use fields::{FieldGroup, FieldPart, FieldWidth, Nested, VmcsField};
pub use insn::{VmFail, VmInstructionError};
