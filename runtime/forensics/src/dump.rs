//! Memory dumps in the formats analysis tools read: an ELF core (Volatility, gdb, crash), the
//! Xen dump-core layout (`xl dump-core`), a sparse raw image and LiME. Every header and note
//! is encoded by the code `spec/core_dump.yaml` generates.

use crate::cpu::VcpuRegs;
use crate::index::{Guest, PageIndex};
use crate::memory::GuestMemory;
use crate::ForensicsError;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use xenmig_core::core_dump as cd;
use xenmig_core::limits::{PAGE_SHIFT, PAGE_SIZE};
use xenmig_core::wire::Endian;
use xenmig_core::x86_state;

/// The dump formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpFormat {
    /// ELF64 core: notes per vCPU, one PT_LOAD per run of frames.
    Elf,
    /// The section-based ELF layout of `xl dump-core`.
    XenCore,
    /// A sparse file with each page at pfn × page size.
    Raw,
    /// LiME: a header and the octets of each run of frames.
    Lime,
}

/// What a dump holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpSummary {
    /// Pages written.
    pub pages: u64,
    /// Runs of consecutive frames.
    pub runs: u64,
    /// vCPUs whose registers were written.
    pub vcpus: u64,
    /// Octets of the output file.
    pub bytes: u64,
}

/// Pages copied per read: consecutive frames whose copies are consecutive in the stream are
/// read together, up to this many.
const COPY_PAGES: usize = 256;

fn io_err(what: &str) -> impl FnOnce(io::Error) -> ForensicsError + '_ {
    move |source| ForensicsError::Io {
        what: what.to_string(),
        source,
    }
}

fn encode_err(e: xenmig_core::wire::EncodeError) -> ForensicsError {
    ForensicsError::State {
        what: "a dump header".into(),
        detail: format!("{e:?}"),
    }
}

/// Rounds `n` up to a multiple of `align` (a power of two).
fn align_up(n: u64, align: u64) -> u64 {
    n.div_ceil(align) * align
}

/// Writes `mem`'s image to `out` (from its current length 0) in `format`.
pub fn write_dump(
    mem: &GuestMemory<'_>,
    format: DumpFormat,
    out: &mut File,
) -> Result<DumpSummary, ForensicsError> {
    let index = mem.index();
    let mut summary = match format {
        DumpFormat::Elf => elf(mem, out)?,
        DumpFormat::XenCore => xen_core(mem, out)?,
        DumpFormat::Raw => raw(mem, out)?,
        DumpFormat::Lime => lime(mem, out)?,
    };
    summary.pages = index.pages().len() as u64;
    summary.bytes = out
        .metadata()
        .map_err(io_err("reading the output's size"))?
        .len();
    Ok(summary)
}

/// Copies the frames `pfns` (consecutive in the guest) to `out`, coalescing reads.
fn copy_run(
    mem: &GuestMemory<'_>,
    first: u64,
    count: u64,
    out: &mut impl Write,
    buf: &mut Vec<u8>,
) -> Result<(), ForensicsError> {
    let mut pfn = first;
    let end = first + count;
    while pfn < end {
        let n = ((end - pfn) as usize).min(COPY_PAGES);
        buf.resize(n * PAGE_SIZE, 0);
        mem.read(pfn << PAGE_SHIFT, buf)?;
        out.write_all(buf).map_err(io_err("writing the dump"))?;
        pfn += n as u64;
    }
    Ok(())
}

/// One note: header, name and descriptor, each padded to NOTE_ALIGN.
fn note(out: &mut Vec<u8>, name: &[u8], kind: u32, desc: &[u8]) -> Result<(), ForensicsError> {
    let h = cd::Elf64Nhdr {
        n_namesz: name.len() as u32,
        n_descsz: desc.len() as u32,
        n_type: kind,
    };
    out.extend_from_slice(&h.encode(Endian::Little).map_err(encode_err)?);
    let align = cd::NOTE_ALIGN as usize;
    out.extend_from_slice(name);
    out.resize(out.len().next_multiple_of(align), 0);
    out.extend_from_slice(desc);
    out.resize(out.len().next_multiple_of(align), 0);
    Ok(())
}

/// The NT_PRSTATUS descriptor of a vCPU.
fn prstatus(v: &VcpuRegs) -> Result<Vec<u8>, ForensicsError> {
    let r = cd::UserRegsX8664 {
        r15: v.r15,
        r14: v.r14,
        r13: v.r13,
        r12: v.r12,
        rbp: v.rbp,
        rbx: v.rbx,
        r11: v.r11,
        r10: v.r10,
        r9: v.r9,
        r8: v.r8,
        rax: v.rax,
        rcx: v.rcx,
        rdx: v.rdx,
        rsi: v.rsi,
        rdi: v.rdi,
        orig_rax: u64::MAX,
        rip: v.rip,
        cs: u64::from(v.cs),
        eflags: v.rflags,
        rsp: v.rsp,
        ss: u64::from(v.ss),
        fs_base: v.fs_base,
        gs_base: v.gs_base,
        ds: u64::from(v.ds),
        es: u64::from(v.es),
        fs: u64::from(v.fs),
        gs: u64::from(v.gs),
    };
    let p = cd::ElfPrstatusX8664 {
        pr_pid: v.vcpu + 1,
        pr_reg: r,
        ..Default::default()
    };
    p.encode(Endian::Little).map_err(encode_err)
}

/// The NT_XENMIG_CPU descriptor of a vCPU.
fn cpu_state(v: &VcpuRegs) -> Result<Vec<u8>, ForensicsError> {
    let s = cd::XenmigCpuState {
        version: cd::XENMIG_CPU_VERSION,
        vcpu: v.vcpu,
        flags: v.note_flags(),
        mode: v.mode,
        cr0: v.cr0,
        cr2: v.cr2,
        cr3: v.cr3,
        cr4: v.cr4,
        efer: v.efer.unwrap_or(0),
        fs_base: v.fs_base,
        gs_base: v.gs_base,
        gs_base_kernel: v.gs_base_kernel,
        gdtr_base: v.gdtr_base,
        idtr_base: v.idtr_base,
    };
    s.encode(Endian::Little).map_err(encode_err)
}

/// The ELF file header of a core with `phnum` program headers.
fn ehdr(phnum: usize, shoff: u64, shnum: u16, shstrndx: u16) -> Result<Vec<u8>, ForensicsError> {
    let (e_phnum, e_phoff, e_phentsize) = match phnum {
        0 => (0, 0, 0),
        n => (
            u16::try_from(n)
                .ok()
                .filter(|&n| n < cd::PN_XNUM)
                .unwrap_or(cd::PN_XNUM),
            cd::Elf64Ehdr::SIZE as u64,
            cd::Elf64Phdr::SIZE as u16,
        ),
    };
    let h = cd::Elf64Ehdr {
        ei_magic: cd::ELF_MAGIC,
        ei_class: cd::ELFCLASS64,
        ei_data: cd::ELFDATA2LSB,
        ei_version: cd::EV_CURRENT,
        e_type: cd::ET_CORE,
        e_machine: cd::EM_X86_64,
        e_version: u32::from(cd::EV_CURRENT),
        e_phoff,
        e_shoff: shoff,
        e_ehsize: cd::Elf64Ehdr::SIZE as u16,
        e_phentsize,
        e_phnum,
        e_shentsize: if shnum > 0 {
            cd::Elf64Shdr::SIZE as u16
        } else {
            0
        },
        e_shnum: shnum,
        e_shstrndx: shstrndx,
        ..Default::default()
    };
    h.encode(Endian::Little).map_err(encode_err)
}

fn elf(mem: &GuestMemory<'_>, out: &mut File) -> Result<DumpSummary, ForensicsError> {
    let index = mem.index();
    let runs = index.runs();
    let mut notes = Vec::new();
    for v in index.vcpus() {
        note(
            &mut notes,
            &cd::NOTE_NAME_CORE,
            cd::NT_PRSTATUS,
            &prstatus(v)?,
        )?;
        note(
            &mut notes,
            &cd::NOTE_NAME_XENMIG,
            cd::NT_XENMIG_CPU,
            &cpu_state(v)?,
        )?;
    }
    let phnum = 1 + runs.len();
    let phdrs_end = cd::Elf64Ehdr::SIZE as u64 + (phnum * cd::Elf64Phdr::SIZE) as u64;
    let notes_at = phdrs_end;
    // Past PN_XNUM the count goes in section header 0's sh_info.
    let xnum = phnum >= usize::from(cd::PN_XNUM);
    let sh_at = align_up(notes_at + notes.len() as u64, 8);
    let headers_end = if xnum {
        sh_at + cd::Elf64Shdr::SIZE as u64
    } else {
        notes_at + notes.len() as u64
    };
    let data_at = align_up(headers_end, PAGE_SIZE as u64);

    let mut head = ehdr(phnum, if xnum { sh_at } else { 0 }, u16::from(xnum), 0)?;
    let note_ph = cd::Elf64Phdr {
        p_type: cd::PT_NOTE,
        p_offset: notes_at,
        p_filesz: notes.len() as u64,
        p_memsz: notes.len() as u64,
        ..Default::default()
    };
    head.extend_from_slice(&note_ph.encode(Endian::Little).map_err(encode_err)?);
    let mut at = data_at;
    for &(pfn, n) in &runs {
        let size = n << PAGE_SHIFT;
        let ph = cd::Elf64Phdr {
            p_type: cd::PT_LOAD,
            p_flags: cd::PF_R | cd::PF_W | cd::PF_X,
            p_offset: at,
            p_vaddr: pfn << PAGE_SHIFT,
            p_paddr: pfn << PAGE_SHIFT,
            p_filesz: size,
            p_memsz: size,
            p_align: PAGE_SIZE as u64,
        };
        head.extend_from_slice(&ph.encode(Endian::Little).map_err(encode_err)?);
        at += size;
    }
    head.extend_from_slice(&notes);
    if xnum {
        head.resize(sh_at as usize, 0);
        let sh0 = cd::Elf64Shdr {
            sh_info: u32::try_from(phnum).map_err(|_| ForensicsError::State {
                what: "the ELF core".into(),
                detail: format!("{phnum} program headers do not fit in sh_info"),
            })?,
            ..Default::default()
        };
        head.extend_from_slice(&sh0.encode(Endian::Little).map_err(encode_err)?);
    }
    head.resize(data_at as usize, 0);
    let mut w = io::BufWriter::with_capacity(1 << 20, &mut *out);
    w.write_all(&head)
        .map_err(io_err("writing the ELF headers"))?;
    let mut buf = Vec::new();
    for &(pfn, n) in &runs {
        copy_run(mem, pfn, n, &mut w, &mut buf)?;
    }
    w.flush().map_err(io_err("writing the dump"))?;
    Ok(DumpSummary {
        runs: runs.len() as u64,
        vcpus: index.vcpus().len() as u64,
        ..Default::default()
    })
}

fn lime(mem: &GuestMemory<'_>, out: &mut File) -> Result<DumpSummary, ForensicsError> {
    let runs = mem.index().runs();
    let mut w = io::BufWriter::with_capacity(1 << 20, &mut *out);
    let mut buf = Vec::new();
    for &(pfn, n) in &runs {
        let start = pfn << PAGE_SHIFT;
        let h = cd::LimeHeader {
            magic: cd::LIME_MAGIC,
            version: cd::LIME_VERSION,
            s_addr: start,
            e_addr: start + (n << PAGE_SHIFT) - 1,
            ..Default::default()
        };
        w.write_all(&h.encode(Endian::Little).map_err(encode_err)?)
            .map_err(io_err("writing the dump"))?;
        copy_run(mem, pfn, n, &mut w, &mut buf)?;
    }
    w.flush().map_err(io_err("writing the dump"))?;
    Ok(DumpSummary {
        runs: runs.len() as u64,
        ..Default::default()
    })
}

fn raw(mem: &GuestMemory<'_>, out: &mut File) -> Result<DumpSummary, ForensicsError> {
    let index = mem.index();
    let runs = index.runs();
    let end = runs.last().map_or(0, |&(pfn, n)| (pfn + n) << PAGE_SHIFT);
    // The file's length covers the highest frame; absent frames stay holes.
    out.set_len(end).map_err(io_err("sizing the raw image"))?;
    let mut buf = Vec::new();
    for &(first, count) in &runs {
        let end = first + count;
        let mut pfn = first;
        while pfn < end {
            let n = ((end - pfn) as usize).min(COPY_PAGES);
            buf.resize(n * PAGE_SIZE, 0);
            mem.read(pfn << PAGE_SHIFT, &mut buf)?;
            out.write_all_at(&buf, pfn << PAGE_SHIFT)
                .map_err(io_err("writing the dump"))?;
            pfn += n as u64;
        }
    }
    Ok(DumpSummary {
        runs: runs.len() as u64,
        ..Default::default()
    })
}

/// A vCPU's context as `xl dump-core` keeps it in `.xen_prstatus`: for a PV guest the
/// context from the stream as it is, for an HVM one a 64-bit `vcpu_guest_context` filled
/// from its CPU save record (what Xen returns for an HVM vCPU).
fn xen_contexts(index: &PageIndex, pv: &[(u32, Vec<u8>)]) -> Result<Vec<u8>, ForensicsError> {
    let mut out = Vec::new();
    match index.guest() {
        Guest::Pv(_) => {
            for (_, c) in pv {
                out.extend_from_slice(c);
            }
        }
        Guest::Hvm => {
            for v in index.vcpus() {
                let u = x86_state::CpuUserRegsX8664 {
                    r15: v.r15,
                    r14: v.r14,
                    r13: v.r13,
                    r12: v.r12,
                    rbp: v.rbp,
                    rbx: v.rbx,
                    r11: v.r11,
                    r10: v.r10,
                    r9: v.r9,
                    r8: v.r8,
                    rax: v.rax,
                    rcx: v.rcx,
                    rdx: v.rdx,
                    rsi: v.rsi,
                    rdi: v.rdi,
                    rip: v.rip,
                    cs: v.cs,
                    rflags: v.rflags,
                    rsp: v.rsp,
                    ss: v.ss,
                    es: v.es,
                    ds: v.ds,
                    fs: v.fs,
                    gs: v.gs,
                    ..Default::default()
                };
                let c = x86_state::VcpuContextX8664 {
                    user_regs: u,
                    cr0: v.cr0,
                    cr2: v.cr2,
                    cr3: v.cr3,
                    cr4: v.cr4,
                    fs_base: v.fs_base,
                    gs_base_kernel: v.gs_base_kernel,
                    gs_base_user: v.gs_base,
                    ..Default::default()
                };
                out.extend_from_slice(&c.encode(Endian::Little).map_err(encode_err)?);
            }
        }
    }
    Ok(out)
}

fn xen_core(mem: &GuestMemory<'_>, out: &mut File) -> Result<DumpSummary, ForensicsError> {
    let index = mem.index();
    let pages = index.pages();
    let (magic, contexts) = match index.guest() {
        Guest::Pv(_) => (cd::XC_CORE_MAGIC, xen_contexts(index, index.pv_contexts())?),
        Guest::Hvm => (cd::XC_CORE_MAGIC_HVM, xen_contexts(index, &[])?),
    };
    let nr_vcpus = index.vcpus().len() as u64;

    // .note.Xen
    let mut notes = Vec::new();
    note(
        &mut notes,
        &cd::NOTE_NAME_XEN,
        cd::XEN_ELFNOTE_DUMPCORE_NONE,
        &[],
    )?;
    let header = cd::XenDumpcoreHeader {
        xch_magic: magic,
        xch_nr_vcpus: nr_vcpus,
        xch_nr_pages: pages.len() as u64,
        xch_page_size: PAGE_SIZE as u64,
    };
    let desc = header.encode(Endian::Little).map_err(encode_err)?;
    note(
        &mut notes,
        &cd::NOTE_NAME_XEN,
        cd::XEN_ELFNOTE_DUMPCORE_HEADER,
        &desc,
    )?;
    let version = cd::XenDumpcoreXenVersion {
        pagesize: PAGE_SIZE as u64,
        ..Default::default()
    };
    let desc = version.encode(Endian::Little).map_err(encode_err)?;
    note(
        &mut notes,
        &cd::NOTE_NAME_XEN,
        cd::XEN_ELFNOTE_DUMPCORE_XEN_VERSION,
        &desc,
    )?;
    note(
        &mut notes,
        &cd::NOTE_NAME_XEN,
        cd::XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION,
        &cd::XEN_DUMPCORE_FORMAT_VERSION.to_le_bytes(),
    )?;

    let mut pfns = Vec::with_capacity(pages.len() * 8);
    for &(pfn, _) in pages {
        pfns.extend_from_slice(&pfn.to_le_bytes());
    }

    // The sections, in file order after the headers: (name, type, contents, alignment).
    let shared = index.shared_info().unwrap_or_default();
    let mut sections: Vec<(&[u8], u32, &[u8], u64)> = vec![
        (
            &cd::SECTION_NOTE_XEN,
            cd::SHT_NOTE,
            &notes,
            u64::from(cd::NOTE_ALIGN),
        ),
        (&cd::SECTION_PRSTATUS, cd::SHT_PROGBITS, &contexts, 8),
    ];
    if !shared.is_empty() {
        sections.push((&cd::SECTION_SHARED_INFO, cd::SHT_PROGBITS, shared, 8));
    }
    sections.push((&cd::SECTION_PFN, cd::SHT_PROGBITS, &pfns, 8));

    let mut strtab = vec![0u8];
    let mut name_at = |name: &[u8]| {
        let at = strtab.len() as u32;
        strtab.extend_from_slice(name);
        strtab.push(0);
        at
    };
    let shstrtab_name = name_at(&cd::SECTION_SHSTRTAB);
    let names: Vec<u32> = sections.iter().map(|s| name_at(s.0)).collect();
    let pages_name = name_at(&cd::SECTION_PAGES);

    // Null, .shstrtab, the sections, .xen_pages.
    let shnum = 2 + sections.len() + 1;
    let shoff = cd::Elf64Ehdr::SIZE as u64;
    let mut at = shoff + (shnum * cd::Elf64Shdr::SIZE) as u64;
    let mut shdrs = Vec::new();
    let mut body = Vec::new();
    let put = |shdrs: &mut Vec<u8>,
               body: &mut Vec<u8>,
               at: &mut u64,
               name: u32,
               kind: u32,
               data: &[u8],
               align: u64|
     -> Result<(), ForensicsError> {
        let start = align_up(*at, align);
        body.resize(body.len() + (start - *at) as usize, 0);
        let sh = cd::Elf64Shdr {
            sh_name: name,
            sh_type: kind,
            sh_flags: if kind == cd::SHT_PROGBITS {
                cd::SHF_ALLOC
            } else {
                0
            },
            sh_offset: start,
            sh_size: data.len() as u64,
            sh_addralign: align,
            sh_entsize: 0,
            ..Default::default()
        };
        shdrs.extend_from_slice(&sh.encode(Endian::Little).map_err(encode_err)?);
        body.extend_from_slice(data);
        *at = start + data.len() as u64;
        Ok(())
    };
    shdrs.extend_from_slice(
        &cd::Elf64Shdr::default()
            .encode(Endian::Little)
            .map_err(encode_err)?,
    );
    put(
        &mut shdrs,
        &mut body,
        &mut at,
        shstrtab_name,
        cd::SHT_STRTAB,
        &strtab,
        1,
    )?;
    for (s, &name) in sections.iter().zip(&names) {
        put(&mut shdrs, &mut body, &mut at, name, s.1, s.2, s.3)?;
    }
    let pages_at = align_up(at, PAGE_SIZE as u64);
    body.resize(body.len() + (pages_at - at) as usize, 0);
    let sh = cd::Elf64Shdr {
        sh_name: pages_name,
        sh_type: cd::SHT_PROGBITS,
        sh_flags: cd::SHF_ALLOC,
        sh_offset: pages_at,
        sh_size: (pages.len() as u64) << PAGE_SHIFT,
        sh_addralign: PAGE_SIZE as u64,
        ..Default::default()
    };
    shdrs.extend_from_slice(&sh.encode(Endian::Little).map_err(encode_err)?);

    let shnum16 = u16::try_from(shnum).map_err(|_| ForensicsError::State {
        what: "the dump-core file".into(),
        detail: format!("{shnum} sections"),
    })?;
    let mut head = ehdr(0, shoff, shnum16, 1)?;
    head.extend_from_slice(&shdrs);
    head.extend_from_slice(&body);
    let mut w = io::BufWriter::with_capacity(1 << 20, &mut *out);
    w.write_all(&head)
        .map_err(io_err("writing the dump-core headers"))?;
    // Pages in the order of .xen_pfn, runs at a time.
    let mut buf = Vec::new();
    for (pfn, n) in index.runs() {
        copy_run(mem, pfn, n, &mut w, &mut buf)?;
    }
    w.flush().map_err(io_err("writing the dump"))?;
    drop(w);
    out.seek(SeekFrom::End(0))
        .map_err(io_err("writing the dump"))?;
    Ok(DumpSummary {
        runs: index.runs().len() as u64,
        vcpus: nr_vcpus,
        ..Default::default()
    })
}
