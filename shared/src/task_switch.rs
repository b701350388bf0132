//! Task switches (SDM Vol. 3A 7.3 "Task Switching") for a hypervisor that
//! gets them as VM exits (exit reason 9: task switches are not allowed in
//! VMX non-root operation, SDM 26.4.2). 32-bit OSes take #DF and NMIs
//! through task gates, so a hypervisor must perform the switch itself.
//!
//! [`switch`] works on the guest state in a [`VmcsAccess`] (segments, TR,
//! LDTR, RIP, RFLAGS, RSP, CR0, CR3), the guest's other general registers,
//! and guest-physical memory ([`PhysMemory`]): the TSSs and descriptor tables
//! are read and written through the guest's own paging. Pure logic: it
//! builds and is tested on the host.
//!
//! What is emulated: 32-bit TSSs (types 9/11); the four sources (CALL,
//! IRET, JMP, a task gate in the IDT); the checks on the new TSS descriptor
//! (type, present, limit, busy, privilege for CALL/JMP), done before any
//! change (faults in the old task); busy bits, EFLAGS.NT and the back link;
//! saving the old task's state; loading TR, LDTR, CR3, EFLAGS, EIP, the
//! general registers and the segment registers with their descriptor
//! checks, whose faults are delivered in the new task (SDM 7.3 step 13);
//! CR0.TS; the error code of an exception delivered through a task gate,
//! pushed on the new task's stack (SDM 7.4, 6.12.2). Not emulated: 16-bit
//! TSSs (a #TS), the TSS's debug-trap bit T, I/O and interrupt redirection
//! maps (nothing to load).

use crate::guest_paging::{self, PagingMode};
use crate::mem::PhysMemory;
use crate::vmx::{VmcsAccess, VmcsField as F};

/// What caused the switch (exit qualification bits 31:30, SDM Table 28-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Call,
    Iret,
    Jmp,
    /// A task gate in the IDT (an interrupt or exception, or INT n).
    IdtGate,
}

impl Source {
    /// Decodes the exit qualification: (new TSS selector, source).
    pub const fn from_qualification(q: u64) -> (u16, Source) {
        let source = match (q >> 30) & 3 {
            0 => Source::Call,
            1 => Source::Iret,
            2 => Source::Jmp,
            _ => Source::IdtGate,
        };
        (q as u16, source)
    }

    /// The new task nests (NT and back link): CALL and gates.
    const fn nests(self) -> bool {
        matches!(self, Source::Call | Source::IdtGate)
    }
}

/// One task switch to perform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Selector of the new task's TSS.
    pub selector: u16,
    pub source: Source,
    /// The EIP saved in the old TSS: the next instruction for CALL, JMP,
    /// IRET and INT n, the return address of the event for a gate.
    pub return_rip: u64,
    /// The error code of an exception delivered through a task gate.
    pub error_code: Option<u32>,
    /// The switch delivers an external event (an interrupt, an NMI, or an
    /// exception not caused by INT n): the EXT bit of error codes.
    pub external: bool,
}

/// An exception to deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub vector: u8,
    pub error_code: Option<u32>,
}

/// Exception vectors of task switching.
pub mod vector {
    pub const TS: u8 = 10;
    pub const NP: u8 = 11;
    pub const SS: u8 = 12;
    pub const GP: u8 = 13;
}

/// A completed switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switched {
    /// CR3 was loaded from the new TSS (the caller flushes the guest's TLB
    /// as MOV to CR3 would, and loads PDPTEs with PAE paging).
    pub cr3_loaded: bool,
    /// A fault raised while loading the new task's state, to deliver in
    /// the new task (SDM 7.3: "in the context of the new task").
    pub fault: Option<Fault>,
}

/// Offsets in a 32-bit TSS (SDM Figure 7-2).
mod tss {
    pub const BACK_LINK: u64 = 0x00;
    pub const CR3: u64 = 0x1c;
    pub const EIP: u64 = 0x20;
    pub const EFLAGS: u64 = 0x24;
    /// EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI: register numbers 0..7.
    pub const GPRS: u64 = 0x28;
    /// ES, CS, SS, DS, FS, GS.
    pub const SEGS: u64 = 0x48;
    pub const LDT: u64 = 0x60;
    /// The smallest limit of a 32-bit TSS.
    pub const MIN_LIMIT: u32 = 0x67;
}

/// System-descriptor types.
const TSS32_AVAILABLE: u8 = 0x9;
const TSS32_BUSY: u8 = 0xb;
const TSS16_AVAILABLE: u8 = 0x1;
const TSS16_BUSY: u8 = 0x3;
const LDT_TYPE: u8 = 0x2;
/// The busy bit of a TSS type.
const TYPE_BUSY: u64 = 1 << 41;
/// Segment access rights (VMCS format): the accessed bit, "unusable".
const AR_ACCESSED: u64 = 1 << 0;
const AR_UNUSABLE: u64 = 1 << 16;
const AR_DB: u64 = 1 << 14;

const RFLAGS_NT: u64 = 1 << 14;
const RFLAGS_VM: u64 = 1 << 17;
const RFLAGS_FIXED1: u64 = 1 << 1;
const CR0_PG: u64 = 1 << 31;
const CR0_TS: u64 = 1 << 3;

/// A segment or system descriptor (8 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor(pub u64);

impl Descriptor {
    pub const fn base(self) -> u64 {
        ((self.0 >> 16) & 0xff_ffff) | (((self.0 >> 56) & 0xff) << 24)
    }

    /// The limit in bytes (scaled by G).
    pub const fn limit(self) -> u32 {
        let raw = ((self.0 & 0xffff) | ((self.0 >> 32) & 0xf_0000)) as u32;
        if self.0 & (1 << 55) != 0 {
            (raw << 12) | 0xfff
        } else {
            raw
        }
    }

    /// The access rights in the VMCS format (SDM Table 25-2).
    pub const fn access_rights(self) -> u64 {
        (self.0 >> 40) & 0xf0ff
    }

    pub const fn kind(self) -> u8 {
        ((self.0 >> 40) & 0xf) as u8
    }

    /// S: code or data (not a system descriptor).
    pub const fn is_code_or_data(self) -> bool {
        self.0 & (1 << 44) != 0
    }

    pub const fn dpl(self) -> u8 {
        ((self.0 >> 45) & 3) as u8
    }

    pub const fn present(self) -> bool {
        self.0 & (1 << 47) != 0
    }

    const fn is_code(self) -> bool {
        self.is_code_or_data() && self.kind() & 0x8 != 0
    }

    const fn conforming(self) -> bool {
        self.is_code() && self.kind() & 0x4 != 0
    }

    /// Data, or readable code.
    const fn readable(self) -> bool {
        self.is_code_or_data() && (!self.is_code() || self.kind() & 0x2 != 0)
    }

    const fn writable_data(self) -> bool {
        self.is_code_or_data() && !self.is_code() && self.kind() & 0x2 != 0
    }
}

/// The guest's linear memory, through its paging.
struct Linear<'a, M: PhysMemory> {
    mem: &'a mut M,
    mode: PagingMode,
    cr3: u64,
}

impl<M: PhysMemory> Linear<'_, M> {
    /// The guest-physical address of each byte of `[la, la + len)`,
    /// through `f` (one call per page piece).
    fn pieces(
        &self,
        la: u64,
        len: usize,
        mut f: impl FnMut(u64, usize, usize) -> Option<()>,
    ) -> Option<()> {
        let mut done = 0;
        while done < len {
            let a = la.wrapping_add(done as u64) & 0xffff_ffff;
            let pa = guest_paging::translate(&*self.mem, self.mode, self.cr3, a)?;
            let n = ((0x1000 - (a & 0xfff)) as usize).min(len - done);
            f(pa, done, n)?;
            done += n;
        }
        Some(())
    }

    fn read(&self, la: u64, buf: &mut [u8]) -> Option<()> {
        let mut out = [0u8; 8];
        let len = buf.len().min(8);
        self.pieces(la, len, |pa, off, n| {
            self.mem.read(pa, &mut out[off..off + n]).ok()
        })?;
        buf[..len].copy_from_slice(&out[..len]);
        Some(())
    }

    fn write(&mut self, la: u64, buf: &[u8]) -> Option<()> {
        let mut targets = [(0u64, 0usize, 0usize); 2];
        let mut count = 0;
        self.pieces(la, buf.len(), |pa, off, n| {
            *targets.get_mut(count)? = (pa, off, n);
            count += 1;
            Some(())
        })?;
        for &(pa, off, n) in &targets[..count] {
            self.mem.write(pa, &buf[off..off + n]).ok()?;
        }
        Some(())
    }

    fn read_u16(&self, la: u64) -> Option<u16> {
        let mut b = [0u8; 2];
        self.read(la, &mut b)?;
        Some(u16::from_le_bytes(b))
    }

    fn read_u32(&self, la: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(la, &mut b)?;
        Some(u32::from_le_bytes(b))
    }

    fn read_u64(&self, la: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(la, &mut b)?;
        Some(u64::from_le_bytes(b))
    }
}

/// The six segment registers in TSS order, as VMCS fields
/// (selector, base, limit, access rights).
const SEGMENTS: &[[F; 4]] = F::GUEST_SEGMENTS.split_at(6).0;
const CS: usize = 1;
const SS: usize = 2;
const RSP: usize = 4;

/// A fault with the selector as error code (EXT in bit 0).
fn fault(vector: u8, selector: u16, external: bool) -> Fault {
    Fault {
        vector,
        error_code: Some(u32::from(selector & 0xfffc) | u32::from(external)),
    }
}

/// Where the descriptor of `selector` is (linear), if inside its table.
fn descriptor_addr(v: &impl VmcsAccess, selector: u16) -> Option<u64> {
    let (base, limit) = if selector & 4 != 0 {
        if v.read(F::GuestLdtrAccessRights) & AR_UNUSABLE != 0 {
            return None;
        }
        (v.read(F::GuestLdtrBase), v.read(F::GuestLdtrLimit))
    } else {
        (v.read(F::GuestGdtrBase), v.read(F::GuestGdtrLimit))
    };
    let offset = u64::from(selector & !7);
    (offset + 7 <= limit).then_some(base.wrapping_add(offset))
}

/// The guest's paging mode and CR3 (the processor's values).
fn paging(v: &impl VmcsAccess) -> (PagingMode, u64) {
    let mode = PagingMode::from_regs(
        v.read(F::GuestCr0),
        v.read(F::GuestCr4),
        v.read(F::GuestIa32Efer),
    );
    (mode, v.read(F::GuestCr3))
}

/// The current privilege level (SS.DPL in protected mode).
fn cpl(v: &impl VmcsAccess) -> u8 {
    if v.read(F::GuestRflags) & RFLAGS_VM != 0 {
        3
    } else {
        ((v.read(F::GuestSsAccessRights) >> 5) & 3) as u8
    }
}

/// Performs the task switch `req` on the guest state. `Err` is a fault
/// found before anything changed (delivered in the old task); `Ok` the
/// switch happened, maybe with a fault to deliver in the new task.
pub fn switch(
    mem: &mut impl PhysMemory,
    v: &mut impl VmcsAccess,
    gpr: &mut [u64; 16],
    req: &Request,
) -> Result<Switched, Fault> {
    let (mode, cr3) = paging(v);
    let mut lin = Linear { mem, mode, cr3 };
    let sel = req.selector;
    let ext = req.external;
    let ts = |s| fault(vector::TS, s, ext);

    // The new TSS descriptor: in the GDT only, a TSS, present, big enough,
    // busy for IRET and available otherwise (SDM 7.3 steps 2-4; the
    // processor makes the same checks before the exit, SDM 26.4.2).
    if sel & 4 != 0 || sel & !7 == 0 {
        return Err(if req.source == Source::Iret {
            ts(sel)
        } else {
            fault(vector::GP, sel, ext)
        });
    }
    let new_addr = descriptor_addr(v, sel).ok_or(ts(sel))?;
    let new_desc = Descriptor(lin.read_u64(new_addr).ok_or(ts(sel))?);
    let kind = new_desc.kind();
    if new_desc.is_code_or_data()
        || !matches!(
            kind,
            TSS32_AVAILABLE | TSS32_BUSY | TSS16_AVAILABLE | TSS16_BUSY
        )
    {
        return Err(fault(vector::GP, sel, ext));
    }
    let busy = kind & 0x2 != 0;
    match req.source {
        Source::Iret if !busy => return Err(ts(sel)),
        Source::Call | Source::Jmp | Source::IdtGate if busy => {
            return Err(fault(vector::GP, sel, ext));
        }
        Source::Call | Source::Jmp => {
            let rpl = (sel & 3) as u8;
            if cpl(v).max(rpl) > new_desc.dpl() {
                return Err(fault(vector::GP, sel, ext));
            }
        }
        _ => {}
    }
    if !new_desc.present() {
        return Err(fault(vector::NP, sel, ext));
    }
    if matches!(kind, TSS16_AVAILABLE | TSS16_BUSY) || new_desc.limit() < tss::MIN_LIMIT {
        return Err(ts(sel));
    }
    let old_sel = v.read16(F::GuestTrSelector);
    let old_base = v.read(F::GuestTrBase);
    if v.read(F::GuestTrAccessRights) & 0xf != u64::from(TSS32_BUSY)
        || v.read(F::GuestTrLimit) < u64::from(tss::MIN_LIMIT)
    {
        return Err(ts(old_sel));
    }
    let new_base = new_desc.base();
    // Everything the new task needs, read before the first write.
    let mut image = [0u32; 8];
    for (i, r) in image.iter_mut().enumerate() {
        *r = lin
            .read_u32(new_base + tss::GPRS + 4 * i as u64)
            .ok_or(ts(sel))?;
    }
    let mut segs = [0u16; 6];
    for (i, s) in segs.iter_mut().enumerate() {
        *s = lin
            .read_u16(new_base + tss::SEGS + 4 * i as u64)
            .ok_or(ts(sel))?;
    }
    let new_cr3 = lin.read_u32(new_base + tss::CR3).ok_or(ts(sel))?;
    let new_eip = lin.read_u32(new_base + tss::EIP).ok_or(ts(sel))?;
    let mut new_eflags = u64::from(lin.read_u32(new_base + tss::EFLAGS).ok_or(ts(sel))?);
    let ldt = lin.read_u16(new_base + tss::LDT).ok_or(ts(sel))?;

    // Old task: busy bit (JMP, IRET), NT (IRET), state saved (steps 5-7).
    let mut eflags = v.read(F::GuestRflags);
    if req.source == Source::Iret {
        eflags &= !RFLAGS_NT;
    }
    let save = |lin: &mut Linear<'_, _>, off: u64, bytes: &[u8]| {
        lin.write(old_base + off, bytes).ok_or(ts(old_sel))
    };
    save(&mut lin, tss::EIP, &(req.return_rip as u32).to_le_bytes())?;
    save(&mut lin, tss::EFLAGS, &(eflags as u32).to_le_bytes())?;
    for (i, &g) in gpr.iter().enumerate().take(8) {
        let val = if i == RSP { v.read(F::GuestRsp) } else { g };
        save(
            &mut lin,
            tss::GPRS + 4 * i as u64,
            &(val as u32).to_le_bytes(),
        )?;
    }
    for (i, s) in SEGMENTS.iter().enumerate() {
        save(
            &mut lin,
            tss::SEGS + 4 * i as u64,
            &v.read16(s[0]).to_le_bytes(),
        )?;
    }
    if matches!(req.source, Source::Jmp | Source::Iret)
        && let Some(a) = descriptor_addr(v, old_sel)
        && let Some(d) = lin.read_u64(a)
    {
        let _ = lin.write(a, &(d & !TYPE_BUSY).to_le_bytes());
    }

    // New task: back link and NT (CALL, gate), busy bit (steps 8-9).
    if req.source.nests() {
        let _ = lin.write(new_base + tss::BACK_LINK, &old_sel.to_le_bytes());
        new_eflags |= RFLAGS_NT;
    }
    let new_desc = if req.source == Source::Iret {
        new_desc
    } else {
        let d = Descriptor(new_desc.0 | TYPE_BUSY);
        let _ = lin.write(new_addr, &d.0.to_le_bytes());
        d
    };

    // TR, then the new task's state (steps 10-12).
    v.write(F::GuestTrSelector, u64::from(sel));
    v.write(F::GuestTrBase, new_base);
    v.write(F::GuestTrLimit, u64::from(new_desc.limit()));
    v.write(F::GuestTrAccessRights, new_desc.access_rights());
    v.write(F::GuestCr0, v.read(F::GuestCr0) | CR0_TS);
    let cr3_loaded = v.read(F::GuestCr0) & CR0_PG != 0;
    if cr3_loaded {
        v.write(F::GuestCr3, u64::from(new_cr3));
    }
    v.write(F::GuestRflags, new_eflags | RFLAGS_FIXED1);
    v.write(F::GuestRip, u64::from(new_eip));
    for (i, &r) in image.iter().enumerate() {
        if i == RSP {
            v.write(F::GuestRsp, u64::from(r));
        } else {
            gpr[i] = u64::from(r);
        }
    }
    // Descriptors are read through the new task's paging.
    let (mode, cr3) = paging(v);
    lin.mode = mode;
    lin.cr3 = cr3;
    let mut fault_in_new = load_ldt(&mut lin, v, ldt, ext).err();
    if fault_in_new.is_none() {
        fault_in_new = load_segments(&mut lin, v, &segs, new_eflags, ext).err();
    }
    if fault_in_new.is_none()
        && let Some(code) = req.error_code
    {
        fault_in_new = push_error_code(&mut lin, v, code).err();
    }
    Ok(Switched {
        cr3_loaded,
        fault: fault_in_new,
    })
}

/// LDTR from the new TSS: null (unusable), or an LDT descriptor in the
/// GDT that is present; otherwise #TS(selector) in the new task.
fn load_ldt<M: PhysMemory>(
    lin: &mut Linear<'_, M>,
    v: &mut impl VmcsAccess,
    sel: u16,
    ext: bool,
) -> Result<(), Fault> {
    v.write(F::GuestLdtrSelector, u64::from(sel));
    if sel & !3 == 0 {
        v.write(F::GuestLdtrAccessRights, AR_UNUSABLE);
        return Ok(());
    }
    let d = (sel & 4 == 0)
        .then(|| descriptor_addr(v, sel))
        .flatten()
        .and_then(|a| lin.read_u64(a))
        .map(Descriptor);
    match d {
        Some(d) if !d.is_code_or_data() && d.kind() == LDT_TYPE && d.present() => {
            v.write(F::GuestLdtrBase, d.base());
            v.write(F::GuestLdtrLimit, u64::from(d.limit()));
            v.write(F::GuestLdtrAccessRights, d.access_rights());
            Ok(())
        }
        _ => {
            v.write(F::GuestLdtrAccessRights, AR_UNUSABLE);
            Err(fault(vector::TS, sel, ext))
        }
    }
}

/// The segment registers from the new TSS, with the checks of a task
/// switch (SDM 7.3 step 13 and the #TS/#NP/#SS conditions of Table 7-1).
/// In virtual-8086 mode they are real-mode style (base = selector * 16).
/// CS and SS are checked before anything is loaded, so that a fault
/// leaves a state VM entry accepts (the old CS and SS); a bad data
/// segment is left unusable.
fn load_segments<M: PhysMemory>(
    lin: &mut Linear<'_, M>,
    v: &mut impl VmcsAccess,
    segs: &[u16; 6],
    eflags: u64,
    ext: bool,
) -> Result<(), Fault> {
    if eflags & RFLAGS_VM != 0 {
        for (s, &sel) in SEGMENTS.iter().zip(segs) {
            v.write(s[0], u64::from(sel));
            v.write(s[1], u64::from(sel) << 4);
            v.write(s[2], 0xffff);
            v.write(s[3], 0xf3);
        }
        return Ok(());
    }
    let read = |lin: &Linear<'_, M>, v: &dyn Fn(u16) -> Option<u64>, sel: u16| {
        v(sel).and_then(|a| lin.read_u64(a)).map(Descriptor)
    };
    let addr_of = |sel: u16| descriptor_addr(v, sel);
    let cpl = (segs[CS] & 3) as u8;
    // CS: a code segment, present; nonconforming DPL = RPL, conforming
    // DPL <= RPL.
    let cs_sel = segs[CS];
    let cs = (cs_sel & !3 != 0)
        .then(|| read(lin, &addr_of, cs_sel))
        .flatten()
        .ok_or(fault(vector::TS, cs_sel, ext))?;
    let cs_ok = cs.is_code()
        && if cs.conforming() {
            cs.dpl() <= cpl
        } else {
            cs.dpl() == cpl
        };
    if !cs_ok {
        return Err(fault(vector::TS, cs_sel, ext));
    }
    if !cs.present() {
        return Err(fault(vector::NP, cs_sel, ext));
    }
    // SS: writable data, RPL = DPL = CPL, present.
    let ss_sel = segs[SS];
    let ss = (ss_sel & !3 != 0)
        .then(|| read(lin, &addr_of, ss_sel))
        .flatten()
        .ok_or(fault(vector::TS, ss_sel, ext))?;
    if !ss.writable_data() || (ss_sel & 3) as u8 != cpl || ss.dpl() != cpl {
        return Err(fault(vector::TS, ss_sel, ext));
    }
    if !ss.present() {
        return Err(fault(vector::SS, ss_sel, ext));
    }
    let mut result = Ok(());
    let mut loaded = [None; 6];
    loaded[CS] = Some(cs);
    loaded[SS] = Some(ss);
    for i in [0, 3, 4, 5] {
        let sel = segs[i];
        if sel & !3 == 0 {
            continue;
        }
        let d = read(lin, &addr_of, sel);
        let ok = d.is_some_and(|d| {
            d.readable() && (d.conforming() || d.dpl() >= cpl.max((sel & 3) as u8))
        });
        match d {
            Some(d) if ok && d.present() => loaded[i] = Some(d),
            Some(_) if ok => {
                if result.is_ok() {
                    result = Err(fault(vector::NP, sel, ext));
                }
            }
            _ => {
                if result.is_ok() {
                    result = Err(fault(vector::TS, sel, ext));
                }
            }
        }
    }
    for (i, s) in SEGMENTS.iter().enumerate() {
        v.write(s[0], u64::from(segs[i]));
        match loaded[i] {
            Some(d) => {
                // Loading a descriptor sets its accessed bit (SDM 3.4.5.1).
                if let Some(a) = descriptor_addr(v, segs[i])
                    && d.0 & (1 << 40) == 0
                {
                    let _ = lin.write(a, &(d.0 | (1 << 40)).to_le_bytes());
                }
                v.write(s[1], d.base());
                v.write(s[2], u64::from(d.limit()));
                v.write(s[3], d.access_rights() | AR_ACCESSED);
            }
            None => v.write(s[3], AR_UNUSABLE),
        }
    }
    result
}

/// Pushes the error code of an exception delivered through a task gate on
/// the new task's stack (32-bit or 16-bit by SS.B).
fn push_error_code<M: PhysMemory>(
    lin: &mut Linear<'_, M>,
    v: &mut impl VmcsAccess,
    code: u32,
) -> Result<(), Fault> {
    let big = v.read(F::GuestSsAccessRights) & AR_DB != 0;
    let rsp = v.read(F::GuestRsp);
    let (new_sp, bytes): (u64, &[u8]) = if big {
        (rsp.wrapping_sub(4) & 0xffff_ffff, &code.to_le_bytes())
    } else {
        (
            (rsp & !0xffff) | (rsp.wrapping_sub(2) & 0xffff),
            &code.to_le_bytes()[..2],
        )
    };
    let la = v
        .read(F::GuestSsBase)
        .wrapping_add(new_sp & if big { 0xffff_ffff } else { 0xffff });
    lin.write(la, bytes).ok_or(Fault {
        vector: vector::SS,
        error_code: Some(0),
    })?;
    v.write(F::GuestRsp, new_sp);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::SparseMemory;
    use crate::vmx::MemVmcs;

    const GDT: u64 = 0x1000;
    const TSS_A: u64 = 0x2000;
    const TSS_B: u64 = 0x3000;
    const STACK_B: u64 = 0x5000;
    const SEL_CODE: u16 = 0x08;
    const SEL_DATA: u16 = 0x10;
    const SEL_A: u16 = 0x18;
    const SEL_B: u16 = 0x20;
    const SEL_BAD_CODE: u16 = 0x28;

    fn seg(base: u64, limit: u32, access: u64, flags: u64) -> u64 {
        (u64::from(limit) & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | (access << 40)
            | ((u64::from(limit) >> 16 & 0xf) << 48)
            | (flags << 52)
            | ((base >> 24 & 0xff) << 56)
    }

    /// GDT: null, flat code, flat data, TSS A (busy, current), TSS B
    /// (available), a not-present code segment. Task B starts at EIP
    /// 0x4000 with ESP 0x5000, EAX 0xb0b0 and EFLAGS 0x2.
    fn machine() -> (SparseMemory, MemVmcs, [u64; 16]) {
        let mut m = SparseMemory::new();
        for p in [GDT, TSS_A, TSS_B, STACK_B - 0x1000] {
            m.map(p, 0x1000);
        }
        let gdt = [
            0,
            seg(0, 0xfffff, 0x9b, 0xc),
            seg(0, 0xfffff, 0x93, 0xc),
            seg(TSS_A, 0x67, 0x8b, 0),
            seg(TSS_B, 0x67, 0x89, 0),
            seg(0, 0xfffff, 0x1b, 0xc),
        ];
        for (i, d) in gdt.iter().enumerate() {
            m.write_u64(GDT + 8 * i as u64, *d).unwrap();
        }
        m.write_u32(TSS_B + tss::EIP, 0x4000).unwrap();
        m.write_u32(TSS_B + tss::EFLAGS, 0x2).unwrap();
        m.write_u32(TSS_B + tss::GPRS, 0xb0b0).unwrap();
        m.write_u32(TSS_B + tss::GPRS + 4 * 4, STACK_B as u32)
            .unwrap();
        for (i, s) in [SEL_DATA, SEL_CODE, SEL_DATA, SEL_DATA, 0, 0]
            .iter()
            .enumerate()
        {
            m.write_u32(TSS_B + tss::SEGS + 4 * i as u64, u32::from(*s))
                .unwrap();
        }
        let mut v = MemVmcs::new();
        v.write(F::GuestGdtrBase, GDT);
        v.write(F::GuestGdtrLimit, 8 * gdt.len() as u64 - 1);
        v.write(F::GuestLdtrAccessRights, AR_UNUSABLE);
        v.write(F::GuestTrSelector, u64::from(SEL_A));
        v.write(F::GuestTrBase, TSS_A);
        v.write(F::GuestTrLimit, 0x67);
        v.write(F::GuestTrAccessRights, 0x8b);
        v.write(F::GuestCr0, 0x11);
        v.write(F::GuestRflags, 0x202);
        v.write(F::GuestRsp, 0x9000);
        for (i, s) in SEGMENTS.iter().enumerate() {
            let sel = if i == CS { SEL_CODE } else { SEL_DATA };
            v.write(s[0], u64::from(sel));
            v.write(s[3], if i == CS { 0xc09b } else { 0xc093 });
        }
        let mut gpr = [0u64; 16];
        gpr[0] = 0xffff_ffff_a0a0_a0a0;
        gpr[3] = 0x3333;
        (m, v, gpr)
    }

    fn req(selector: u16, source: Source) -> Request {
        Request {
            selector,
            source,
            return_rip: 0x1234,
            error_code: None,
            external: false,
        }
    }

    fn busy(m: &SparseMemory, sel: u16) -> bool {
        m.read_u64(GDT + u64::from(sel)).unwrap() & TYPE_BUSY != 0
    }

    #[test]
    fn qualification_decodes_selector_and_source() {
        assert_eq!(Source::from_qualification(0x20), (0x20, Source::Call));
        assert_eq!(
            Source::from_qualification((1 << 30) | 0x18),
            (0x18, Source::Iret)
        );
        assert_eq!(Source::from_qualification(2 << 30), (0, Source::Jmp));
        assert_eq!(
            Source::from_qualification(3 << 30 | 0x28),
            (0x28, Source::IdtGate)
        );
    }

    #[test]
    fn jmp_saves_the_old_task_and_loads_the_new_one() {
        let (mut m, mut v, mut gpr) = machine();
        let r = switch(&mut m, &mut v, &mut gpr, &req(SEL_B, Source::Jmp)).unwrap();
        assert_eq!(
            r,
            Switched {
                cr3_loaded: false,
                fault: None
            }
        );
        // Old task saved, no longer busy.
        assert_eq!(m.read_u32(TSS_A + tss::EIP).unwrap(), 0x1234);
        assert_eq!(m.read_u32(TSS_A + tss::EFLAGS).unwrap(), 0x202);
        assert_eq!(m.read_u32(TSS_A + tss::GPRS).unwrap(), 0xa0a0_a0a0);
        assert_eq!(m.read_u32(TSS_A + tss::GPRS + 12).unwrap(), 0x3333);
        assert_eq!(m.read_u32(TSS_A + tss::GPRS + 16).unwrap(), 0x9000);
        assert_eq!(m.read_u16(TSS_A + tss::SEGS + 4).unwrap(), SEL_CODE);
        assert!(!busy(&m, SEL_A) && busy(&m, SEL_B));
        // New task running, not nested.
        assert_eq!(v.read(F::GuestRip), 0x4000);
        assert_eq!(v.read(F::GuestRsp), STACK_B);
        assert_eq!(v.read(F::GuestRflags), 0x2);
        assert_eq!(gpr[0], 0xb0b0);
        assert_eq!(v.read(F::GuestTrSelector), u64::from(SEL_B));
        assert_eq!(v.read(F::GuestTrBase), TSS_B);
        assert_eq!(v.read(F::GuestTrAccessRights), 0x8b);
        assert_eq!(v.read(F::GuestCsAccessRights), 0xc09b);
        assert_eq!(v.read(F::GuestFsAccessRights), AR_UNUSABLE);
        assert_ne!(v.read(F::GuestCr0) & CR0_TS, 0);
        assert_eq!(m.read_u16(TSS_B + tss::BACK_LINK).unwrap(), 0);
    }

    #[test]
    fn call_nests_and_iret_returns() {
        let (mut m, mut v, mut gpr) = machine();
        switch(&mut m, &mut v, &mut gpr, &req(SEL_B, Source::Call)).unwrap();
        assert!(busy(&m, SEL_A) && busy(&m, SEL_B));
        assert_eq!(m.read_u16(TSS_B + tss::BACK_LINK).unwrap(), SEL_A);
        assert_ne!(v.read(F::GuestRflags) & RFLAGS_NT, 0);
        // The new task IRETs to its back link.
        let back = m.read_u16(TSS_B + tss::BACK_LINK).unwrap();
        let mut r = req(back, Source::Iret);
        r.return_rip = 0x4002;
        switch(&mut m, &mut v, &mut gpr, &r).unwrap();
        assert!(busy(&m, SEL_A) && !busy(&m, SEL_B));
        assert_eq!(
            m.read_u32(TSS_B + tss::EFLAGS).unwrap() & RFLAGS_NT as u32,
            0
        );
        assert_eq!(m.read_u32(TSS_B + tss::EIP).unwrap(), 0x4002);
        assert_eq!(v.read(F::GuestTrSelector), u64::from(SEL_A));
    }

    #[test]
    fn checks_before_the_switch_change_nothing() {
        let (m0, v0, g0) = machine();
        type Case = (Request, Fault, Option<(u64, u64)>);
        let cases: [Case; 5] = [
            // JMP to a busy TSS (itself): #GP(sel).
            (
                req(SEL_A, Source::Jmp),
                fault(vector::GP, SEL_A, false),
                None,
            ),
            // IRET to an available TSS: #TS(sel).
            (
                req(SEL_B, Source::Iret),
                fault(vector::TS, SEL_B, false),
                None,
            ),
            // Not a TSS: #GP(sel).
            (
                req(SEL_CODE, Source::Call),
                fault(vector::GP, SEL_CODE, false),
                None,
            ),
            // Not present: #NP(sel), EXT for an external event.
            (
                Request {
                    external: true,
                    ..req(SEL_B, Source::IdtGate)
                },
                fault(vector::NP, SEL_B, true),
                Some((GDT + u64::from(SEL_B), seg(TSS_B, 0x67, 0x09, 0))),
            ),
            // Limit below 0x67: #TS(sel).
            (
                req(SEL_B, Source::Jmp),
                fault(vector::TS, SEL_B, false),
                Some((GDT + u64::from(SEL_B), seg(TSS_B, 0x20, 0x89, 0))),
            ),
        ];
        for (r, expected, patch) in cases {
            let (mut m, mut v, mut gpr) = (m0.clone(), v0.clone(), g0);
            if let Some((a, d)) = patch {
                m.write_u64(a, d).unwrap();
            }
            let before = m.clone();
            assert_eq!(switch(&mut m, &mut v, &mut gpr, &r), Err(expected), "{r:?}");
            assert_eq!(v, v0);
            assert_eq!(gpr, g0);
            for a in [GDT, TSS_A, TSS_B] {
                let mut x = [0u8; 256];
                let mut y = [0u8; 256];
                m.read(a, &mut x).unwrap();
                before.read(a, &mut y).unwrap();
                assert_eq!(x, y);
            }
        }
    }

    #[test]
    fn privilege_of_call_and_jmp() {
        let (mut m, mut v, mut gpr) = machine();
        // DPL 0 TSS, selector RPL 3.
        let r = req(SEL_B | 3, Source::Call);
        assert_eq!(
            switch(&mut m, &mut v, &mut gpr, &r),
            Err(fault(vector::GP, SEL_B, false))
        );
        // A gate delivery does not check the TSS's DPL.
        assert!(switch(&mut m, &mut v, &mut gpr, &req(SEL_B | 3, Source::IdtGate)).is_ok());
    }

    #[test]
    fn bad_segments_fault_in_the_new_task() {
        let (mut m, mut v, mut gpr) = machine();
        m.write_u32(TSS_B + tss::SEGS + 4, u32::from(SEL_BAD_CODE))
            .unwrap();
        let r = switch(&mut m, &mut v, &mut gpr, &req(SEL_B, Source::Jmp)).unwrap();
        assert_eq!(r.fault, Some(fault(vector::NP, SEL_BAD_CODE, false)));
        assert_eq!(v.read(F::GuestTrSelector), u64::from(SEL_B));
        // CS and SS keep a state VM entry accepts.
        assert_eq!(v.read(F::GuestCsAccessRights), 0xc09b);

        let (mut m, mut v, mut gpr) = machine();
        // SS = the code segment: #TS(SS).
        m.write_u32(TSS_B + tss::SEGS + 8, u32::from(SEL_CODE))
            .unwrap();
        let r = switch(&mut m, &mut v, &mut gpr, &req(SEL_B, Source::Jmp)).unwrap();
        assert_eq!(r.fault, Some(fault(vector::TS, SEL_CODE, false)));

        let (mut m, mut v, mut gpr) = machine();
        // DS beyond the GDT: #TS(DS), DS unusable, the others loaded.
        m.write_u32(TSS_B + tss::SEGS + 12, 0x80).unwrap();
        let r = switch(&mut m, &mut v, &mut gpr, &req(SEL_B, Source::Jmp)).unwrap();
        assert_eq!(r.fault, Some(fault(vector::TS, 0x80, false)));
        assert_eq!(v.read(F::GuestDsAccessRights), AR_UNUSABLE);
        assert_eq!(v.read(F::GuestEsAccessRights), 0xc093);
    }

    #[test]
    fn gate_pushes_the_error_code_on_the_new_stack() {
        let (mut m, mut v, mut gpr) = machine();
        let r = Request {
            error_code: Some(0x1c),
            external: true,
            ..req(SEL_B, Source::IdtGate)
        };
        let s = switch(&mut m, &mut v, &mut gpr, &r).unwrap();
        assert_eq!(s.fault, None);
        assert_eq!(v.read(F::GuestRsp), STACK_B - 4);
        assert_eq!(m.read_u32(STACK_B - 4).unwrap(), 0x1c);
        assert_eq!(m.read_u16(TSS_B + tss::BACK_LINK).unwrap(), SEL_A);
    }

    #[test]
    fn descriptor_fields() {
        let d = Descriptor(seg(0x1234_5678, 0xfffff, 0x9b, 0xc));
        assert_eq!(d.base(), 0x1234_5678);
        assert_eq!(d.limit(), 0xffff_ffff);
        assert_eq!(d.access_rights(), 0xc09b);
        assert!(d.is_code() && d.readable() && !d.writable_data() && d.present());
        let t = Descriptor(seg(TSS_B, 0x67, 0x89, 0));
        assert_eq!((t.kind(), t.limit(), t.is_code_or_data()), (9, 0x67, false));
    }
}
