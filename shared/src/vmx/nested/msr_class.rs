//! TEMPORARY stub (the exit-reflect branch replaces this file).
use crate::vmx::VmcsField;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrClass {
    VmcsField(VmcsField),
    Mtrr,
    L0Owned,
    Passthrough,
}

pub fn classify(msr: u32) -> MsrClass {
    match msr {
        0xc000_0080 => MsrClass::VmcsField(VmcsField::GuestIa32Efer),
        0x277 => MsrClass::VmcsField(VmcsField::GuestIa32Pat),
        0x174 => MsrClass::VmcsField(VmcsField::GuestIa32SysenterCs),
        0x175 => MsrClass::VmcsField(VmcsField::GuestIa32SysenterEsp),
        0x176 => MsrClass::VmcsField(VmcsField::GuestIa32SysenterEip),
        0x1d9 => MsrClass::VmcsField(VmcsField::GuestIa32Debugctl),
        0xc000_0100 => MsrClass::VmcsField(VmcsField::GuestFsBase),
        0xc000_0101 => MsrClass::VmcsField(VmcsField::GuestGsBase),
        0xfe | 0x2ff | 0x250 | 0x258 | 0x259 | 0x268..=0x26f | 0x200..=0x21f => MsrClass::Mtrr,
        0x3a | 0x480..=0x491 | 0x1b | 0x800..=0x8ff | 0x9b | 0x9e | 0x79 | 0x8b => {
            MsrClass::L0Owned
        }
        _ => MsrClass::Passthrough,
    }
}
