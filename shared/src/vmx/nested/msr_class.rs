//! MSR classes for the emulation of VMCS12's MSR areas (in progress).
