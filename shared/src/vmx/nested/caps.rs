//! TEMPORARY stub (the entry-checks branch replaces this file).
use crate::vmx::VmxCaps;
use crate::vmx::controls::{
    EntryControls, ExitControls, PinBased, PrimaryProcBased, SecondaryProcBased,
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NestedFeatures {
    pub ept: bool,
    pub vpid: bool,
    pub unrestricted_guest: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L1VmxMsrs {
    values: [u64; 18],
}

const FIRST: u32 = 0x480;

impl L1VmxMsrs {
    pub fn compute(hw: impl Fn(u32) -> u64, _features: NestedFeatures) -> Self {
        let mut values = [0u64; 18];
        for (i, v) in values.iter_mut().enumerate() {
            *v = hw(FIRST + i as u32);
        }
        let mask = |v: &mut u64, allowed1: u32| {
            let lo = *v & 0xffff_ffff;
            let hi = (*v >> 32) & u64::from(allowed1);
            *v = lo | (hi << 32);
        };
        let pin = (PinBased::EXTERNAL_INTERRUPT_EXITING
            | PinBased::NMI_EXITING
            | PinBased::VIRTUAL_NMIS
            | PinBased::ACTIVATE_PREEMPTION_TIMER)
            .bits()
            | 0x16;
        mask(&mut values[1], pin);
        mask(&mut values[0xd], pin);
        let proc = !PrimaryProcBased::USE_TPR_SHADOW.bits();
        mask(&mut values[2], proc);
        mask(&mut values[0xe], proc);
        let proc2 = (SecondaryProcBased::DESCRIPTOR_TABLE_EXITING
            | SecondaryProcBased::ENABLE_RDTSCP
            | SecondaryProcBased::WBINVD_EXITING
            | SecondaryProcBased::ENABLE_INVPCID
            | SecondaryProcBased::RDRAND_EXITING
            | SecondaryProcBased::RDSEED_EXITING
            | SecondaryProcBased::ENABLE_XSAVES_XRSTORS)
            .bits();
        mask(&mut values[0xb], proc2);
        values[0xc] = 0;
        values[0x11] = 0;
        let exit = ExitControls::DEFAULT1 & !ExitControls::LOAD_IA32_PERF_GLOBAL_CTRL.bits()
            | (ExitControls::SAVE_DEBUG_CONTROLS
                | ExitControls::HOST_ADDRESS_SPACE_SIZE
                | ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT
                | ExitControls::SAVE_IA32_PAT
                | ExitControls::LOAD_IA32_PAT
                | ExitControls::SAVE_IA32_EFER
                | ExitControls::LOAD_IA32_EFER
                | ExitControls::SAVE_PREEMPTION_TIMER_VALUE)
                .bits();
        mask(&mut values[3], exit);
        mask(&mut values[0xf], exit);
        let entry = (EntryControls::LOAD_DEBUG_CONTROLS
            | EntryControls::IA32E_MODE_GUEST
            | EntryControls::LOAD_IA32_PAT
            | EntryControls::LOAD_IA32_EFER)
            .bits()
            | 0x1fb;
        mask(&mut values[4], entry);
        mask(&mut values[0x10], entry);
        // MISC: HLT only, VMWRITE to exit information allowed.
        values[5] =
            (values[5] & !((1 << 7) | (1 << 8) | (1 << 14) | (1 << 15) | (1 << 28))) | (1 << 29);
        // BASIC: no dual-monitor.
        values[0] &= !(1 << 49);
        Self { values }
    }

    pub fn get(&self, msr: u32) -> Option<u64> {
        let i = msr.checked_sub(FIRST)? as usize;
        let v = *self.values.get(i)?;
        match i {
            0xc | 0x11 if v == 0 => None,
            _ => Some(v),
        }
    }

    pub fn caps(&self) -> VmxCaps {
        VmxCaps::read(|m| self.get(m).unwrap_or(0))
    }
}
