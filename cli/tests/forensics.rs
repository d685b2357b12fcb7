//! `xenmig extract-memory` checked with the tools analysts use: Volatility 3 (installed from
//! PyPI into a virtual environment under the target directory on first use) and gdb.
//!
//! - Simulated HVM and 64-bit PV domains with a banner planted in guest memory: physical reads
//!   through Volatility's ELF layer equal the simulated domain's memory (pfn 0 included), and
//!   `banners.Banners` finds the banner where it was planted.
//! - The real Xen 4.17 captures: `banners.Banners` finds the guest's `Linux version 6.1`
//!   banner in the ELF of each; for the PV one, Volatility's Intel32e layer over the ELF, with
//!   the cr3 of the dump's own vCPU note, translates the kernel's virtual addresses.
//! - gdb opened on the ELF shows each vCPU's rip and rsp as `xenmig dump --json` decodes them,
//!   and reads memory at a guest-physical address.
//! - The other formats (LiME, raw, Xen dump-core) hold the same octets at the same addresses,
//!   and `--checkpoint` picks a checkpoint of the Remus capture.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use xenmig::core_dump as cd;
use xenmig::domain::GuestType;
use xenmig::limits::{PAGE_SHIFT, PAGE_SIZE};
use xenmig::sim::{SimConfig, SimDomain};
use xenmig::wire::{DecodeCtx, Element, Endian};

/// The Volatility 3 release the tests install.
const VOLATILITY: &str = "volatility3==2.28.2";

const BANNER: &str =
    "Linux version 6.1.0-xenmig-test (forensics@xenmig) (gcc 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian";

fn xenmig() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xenmig"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The virtual environment's directory, with Volatility 3 installed (made once per run).
fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("volatility3-venv");
        let python = dir.join("bin/python");
        let ready = python.exists()
            && Command::new(&python)
                .args(["-c", "import volatility3"])
                .status()
                .is_ok_and(|s| s.success());
        if !ready {
            let _ = std::fs::remove_dir_all(&dir);
            run(Command::new("python3").args(["-m", "venv"]).arg(&dir));
            run(Command::new(&python).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                VOLATILITY,
            ]));
        }
        dir
    })
}

/// `vol_check.py` (Volatility's own layers) on `elf` with `args`, as JSON.
fn vol_check(elf: &Path, args: &[String]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/vol_check.py");
    let out = run(Command::new(venv().join("bin/python"))
        .arg(script)
        .arg(elf)
        .args(args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `vol banners.Banners` on `elf`: (offset, banner) per line.
fn banners(elf: &Path) -> Vec<(u64, String)> {
    let out = run(Command::new(venv().join("bin/vol"))
        .args(["-q", "-r", "json", "-f"])
        .arg(elf)
        .arg("banners.Banners"));
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    rows.iter()
        .map(|r| {
            (
                r["Offset"].as_u64().expect("offset"),
                r["Banner"].as_str().expect("banner").to_string(),
            )
        })
        .collect()
}

/// A simulated domain as `xenmig sim save` builds it, with the banner planted.
fn sim_domain(guest: GuestType, plant_at: u64) -> SimDomain {
    let mut dom = SimDomain::build(SimConfig {
        guest,
        width: 8,
        memory_pages: (64 << 20) / PAGE_SIZE as u64,
        vcpus: 2,
        seed: 7,
    })
    .unwrap();
    dom.plant(plant_at, BANNER.as_bytes()).unwrap();
    dom
}

/// Saves the simulated domain with `xenmig sim save` and extracts it as an ELF.
fn sim_elf(dir: &Path, guest: &str, plant_at: u64) -> PathBuf {
    let img = dir.join(format!("{guest}.img"));
    let elf = dir.join(format!("{guest}.elf"));
    run(xenmig()
        .args([
            "sim", "save", "--guest", guest, "--memory", "64M", "--seed", "7",
        ])
        .args(["--frame", "libxl", "--plant"])
        .arg(format!("{plant_at:#x}:{BANNER}"))
        .arg("-o")
        .arg(&img));
    run(xenmig().arg("extract-memory").arg(&img).arg("-o").arg(&elf));
    elf
}

/// The simulated domain's octets at `paddr` (all frames populated).
fn truth(dom: &SimDomain, paddr: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut at = paddr;
    while out.len() < len {
        let page = dom
            .page(at >> PAGE_SHIFT)
            .unwrap_or_else(|| panic!("{at:#x} is not populated"));
        let off = (at as usize) & (PAGE_SIZE - 1);
        let n = (PAGE_SIZE - off).min(len - out.len());
        out.extend_from_slice(&page[off..off + n]);
        at += n as u64;
    }
    out
}

/// Reads at chosen addresses through Volatility's ELF layer and compares them with the
/// simulated domain's memory; then finds the planted banner with banners.Banners.
fn check_sim(guest: GuestType, name: &str, plant_at: u64) {
    let dir = tempfile::tempdir().unwrap();
    let elf = sim_elf(dir.path(), name, plant_at);
    let dom = sim_domain(guest, plant_at);
    let populated: Vec<u64> = (0..1 << 20)
        .filter(|&p| dom.page(p).is_some())
        .take_while(|_| true)
        .collect();
    let last = *populated.last().unwrap();
    let middle = populated[populated.len() / 2];
    assert_eq!(populated[0], 0, "pfn 0 is populated");
    // pfn 0, a page in the middle, the last page, the banner, and a read across two frames.
    let reads: Vec<(u64, usize)> = vec![
        (0, 64),
        (middle << PAGE_SHIFT, PAGE_SIZE),
        ((last << PAGE_SHIFT) + 4000, 96),
        (plant_at, BANNER.len()),
        ((middle << PAGE_SHIFT) + 4090, 12),
    ];
    let args: Vec<String> = reads
        .iter()
        .flat_map(|(a, n)| ["--read".to_string(), format!("{a:#x}:{n}")])
        .collect();
    let v = vol_check(&elf, &args);
    for (i, (addr, len)) in reads.iter().enumerate() {
        let got = v["reads"][i]["hex"].as_str().unwrap();
        let want: String = truth(&dom, *addr, *len)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, want, "{name}: {len} octets at {addr:#x}");
    }
    let found = banners(&elf);
    assert!(
        found
            .iter()
            .any(|(at, b)| *at == plant_at && b.starts_with(BANNER)),
        "{name}: the planted banner at {plant_at:#x} is not among {found:?}"
    );
}

#[test]
fn volatility_reads_a_simulated_hvm_domain() {
    check_sim(GuestType::X86Hvm, "hvm", 0x0123_4560);
}

#[test]
fn volatility_reads_a_simulated_pv_domain() {
    check_sim(GuestType::X86Pv, "pv", 0x0234_5670);
}

/// A real capture, decompressed into `dir`.
fn real(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/vectors/real")
        .join(format!("{name}.zst"));
    let raw = std::fs::read(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let out = dir.join(name);
    std::fs::write(&out, zstd::stream::decode_all(&raw[..]).unwrap()).unwrap();
    out
}

fn extract(input: &Path, out: &Path, extra: &[&str]) -> Value {
    let s = run(xenmig()
        .arg("extract-memory")
        .arg(input)
        .arg("-o")
        .arg(out)
        .arg("--json")
        .args(extra));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// The descriptors of an ELF core's notes of `kind`, in order, read with the spec's structs.
fn notes(elf: &[u8], kind: u32) -> Vec<Vec<u8>> {
    let ctx = DecodeCtx::new(cd::REVISION);
    let h = cd::Elf64Ehdr::decode(&elf[..cd::Elf64Ehdr::SIZE], &ctx).unwrap();
    assert_eq!(h.e_type, cd::ET_CORE);
    assert_eq!(h.e_machine, cd::EM_X86_64);
    let mut out = Vec::new();
    for i in 0..usize::from(h.e_phnum) {
        let at = h.e_phoff as usize + i * cd::Elf64Phdr::SIZE;
        let p = cd::Elf64Phdr::decode(&elf[at..at + cd::Elf64Phdr::SIZE], &ctx).unwrap();
        if p.p_type != cd::PT_NOTE {
            continue;
        }
        let seg = &elf[p.p_offset as usize..(p.p_offset + p.p_filesz) as usize];
        let mut pos = 0;
        while pos < seg.len() {
            let n = cd::Elf64Nhdr::read(&seg[pos..pos + cd::Elf64Nhdr::SIZE], Endian::Little);
            let name_at = pos + cd::Elf64Nhdr::SIZE;
            let desc_at = name_at + (n.n_namesz as usize).next_multiple_of(4);
            let end = desc_at + (n.n_descsz as usize).next_multiple_of(4);
            if n.n_type == kind {
                out.push(seg[desc_at..desc_at + n.n_descsz as usize].to_vec());
            }
            pos = end;
        }
    }
    out
}

/// The `xenmig_cpu_state` notes of an ELF core.
fn cpu_notes(elf: &Path) -> Vec<cd::XenmigCpuState> {
    let bytes = std::fs::read(elf).unwrap();
    notes(&bytes, cd::NT_XENMIG_CPU)
        .iter()
        .map(|d| cd::XenmigCpuState::decode(d, &DecodeCtx::new(cd::REVISION)).unwrap())
        .collect()
}

fn has_linux_61_banner(elf: &Path) -> bool {
    banners(elf)
        .iter()
        .any(|(_, b)| b.starts_with("Linux version 6.1."))
}

#[test]
fn volatility_finds_the_kernel_banner_in_the_real_captures() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["hvm64.xl", "hvm64.remus-stream-unterminated"] {
        let img = real(dir.path(), name);
        let elf = dir.path().join(format!("{name}.elf"));
        extract(&img, &elf, &[]);
        assert!(has_linux_61_banner(&elf), "{name}: no Linux 6.1 banner");
        let cpus = cpu_notes(&elf);
        assert_eq!(cpus.len(), 2, "{name}: a note per vCPU");
        for c in &cpus {
            assert_eq!(c.mode, cd::PagingMode::LONG, "{name}");
            assert!(c.flags.0 & cd::CpuStateFlags::EFER_KNOWN.0 != 0);
        }
    }
}

#[test]
fn volatility_translates_the_real_pv_kernel_through_the_dumps_cr3() {
    let dir = tempfile::tempdir().unwrap();
    let img = real(dir.path(), "pv64.xl");
    let elf = dir.path().join("pv64.elf");
    extract(&img, &elf, &[]);
    assert!(has_linux_61_banner(&elf), "no Linux 6.1 banner");
    let cpus = cpu_notes(&elf);
    assert_eq!(cpus.len(), 2);
    let cpu0 = &cpus[0];
    assert_eq!(cpu0.vcpu, 0);
    assert_eq!(cpu0.mode, cd::PagingMode::LONG);
    assert_eq!(cpu0.flags, cd::CpuStateFlags::PV);
    // A PV kernel runs at its link address: scan the kernel image's virtual range.
    let v = vol_check(
        &elf,
        &[
            "--scan-virtual".into(),
            format!(
                "{:#x}:0xffffffff80000000:0x4000000:Linux version 6.1.",
                cpu0.cr3
            ),
        ],
    );
    let scan = &v["scan"];
    assert!(!scan.is_null(), "no banner through the page tables: {v}");
    let vaddr = scan["vaddr"].as_u64().unwrap();
    assert!(vaddr >= 0xffff_ffff_8000_0000, "{vaddr:#x}");
    assert!(scan["text"]
        .as_str()
        .unwrap()
        .starts_with("Linux version 6.1."));
}

/// Decoded (rip, rsp) per vCPU, from `xenmig dump --json` of an HVM image.
fn dumped_hvm_registers(img: &Path) -> Vec<(u64, u64)> {
    let out = run(xenmig().args(["dump", "--json"]).arg(img));
    let mut regs = Vec::new();
    for line in out.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["name"] != "HVM_CONTEXT" {
            continue;
        }
        regs.clear();
        for r in v["fields"]["context"]["contents"]["records"]
            .as_array()
            .unwrap()
        {
            if r["record"] == "CPU" {
                let b = &r["body"];
                regs.push((b["rip"].as_u64().unwrap(), b["rsp"].as_u64().unwrap()));
            }
        }
    }
    regs
}

#[test]
fn gdb_shows_the_registers_dump_decodes_and_reads_physical_memory() {
    let dir = tempfile::tempdir().unwrap();
    let img = real(dir.path(), "hvm64.xl");
    let elf = dir.path().join("hvm64.elf");
    extract(&img, &elf, &[]);
    let want = dumped_hvm_registers(&img);
    assert_eq!(want.len(), 2);
    let banner_at = banners(&elf)
        .into_iter()
        .find(|(_, b)| b.starts_with("Linux version 6.1."))
        .expect("a banner")
        .0;
    let mut gdb = Command::new("gdb");
    gdb.args(["-nx", "-batch", "-ex", "set architecture i386:x86-64"]);
    for t in 1..=want.len() {
        gdb.args([
            "-ex",
            &format!("thread {t}"),
            "-ex",
            "info registers rip rsp",
        ]);
    }
    gdb.args(["-ex", &format!("x/s {banner_at:#x}"), "-c"])
        .arg(&elf);
    let out = run(&mut gdb);
    let values = |reg: &str| -> Vec<u64> {
        out.lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(reg))
                    .then(|| w.next())
                    .flatten()
                    .and_then(|h| u64::from_str_radix(h.trim_start_matches("0x"), 16).ok())
            })
            .collect()
    };
    let rips = values("rip");
    let rsps = values("rsp");
    let got: Vec<(u64, u64)> = rips.into_iter().zip(rsps).collect();
    assert_eq!(got, want, "gdb's registers per thread:\n{out}");
    // x/s prints the string at the guest-physical address.
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{banner_at:#x}:")))
        .unwrap_or_else(|| panic!("no x/s line:\n{out}"));
    assert!(line.contains("\"Linux version 6.1."), "gdb's read: {line}");
}

#[test]
fn every_format_holds_the_same_pages() {
    let dir = tempfile::tempdir().unwrap();
    let plant_at = 0x0123_4560;
    let img = dir.path().join("hvm.img");
    run(xenmig()
        .args([
            "sim", "save", "--guest", "hvm", "--memory", "64M", "--seed", "7",
        ])
        .args(["--frame", "xl", "--plant"])
        .arg(format!("{plant_at:#x}:{BANNER}"))
        .arg("-o")
        .arg(&img));
    let dom = sim_domain(GuestType::X86Hvm, plant_at);
    let pfns: Vec<u64> = (0..1 << 20).filter(|&p| dom.page(p).is_some()).collect();

    // raw: each page at pfn × page size; absent frames read as zeros.
    let raw = dir.path().join("hvm.raw");
    extract(&img, &raw, &["--format", "raw"]);
    let r = std::fs::read(&raw).unwrap();
    assert_eq!(r.len() as u64, (pfns.last().unwrap() + 1) << PAGE_SHIFT);
    for &p in &pfns {
        let at = (p as usize) << PAGE_SHIFT;
        assert_eq!(
            &r[at..at + PAGE_SIZE],
            &dom.page(p).unwrap()[..],
            "raw pfn {p:#x}"
        );
    }
    let vga = (0xa0usize << PAGE_SHIFT)..(0xc0usize << PAGE_SHIFT);
    assert!(
        r[vga].iter().all(|&b| b == 0),
        "the VGA hole reads as zeros"
    );

    // LiME: a header per run, then the run's pages.
    let lime = dir.path().join("hvm.lime");
    extract(&img, &lime, &["--format", "lime"]);
    let l = std::fs::read(&lime).unwrap();
    let ctx = DecodeCtx::new(cd::REVISION);
    let (mut pos, mut seen) = (0usize, 0usize);
    while pos < l.len() {
        let h = cd::LimeHeader::decode(&l[pos..pos + cd::LimeHeader::SIZE], &ctx).unwrap();
        pos += cd::LimeHeader::SIZE;
        let n = (h.e_addr + 1 - h.s_addr) as usize;
        for (i, page) in l[pos..pos + n].chunks(PAGE_SIZE).enumerate() {
            let pfn = (h.s_addr >> PAGE_SHIFT) + i as u64;
            assert_eq!(page, &dom.page(pfn).unwrap()[..], "lime pfn {pfn:#x}");
            seen += 1;
        }
        pos += n;
    }
    assert_eq!(seen, pfns.len());

    // Xen dump-core: .xen_pfn ascending, .xen_pages in that order.
    let core = dir.path().join("hvm.core");
    extract(&img, &core, &["--format", "xen-core"]);
    let c = std::fs::read(&core).unwrap();
    let h = cd::Elf64Ehdr::decode(&c[..cd::Elf64Ehdr::SIZE], &ctx).unwrap();
    assert_eq!(h.e_phnum, 0);
    let shdr = |i: usize| {
        let at = h.e_shoff as usize + i * cd::Elf64Shdr::SIZE;
        cd::Elf64Shdr::decode(&c[at..at + cd::Elf64Shdr::SIZE], &ctx).unwrap()
    };
    let strtab = shdr(usize::from(h.e_shstrndx));
    let names = &c[strtab.sh_offset as usize..(strtab.sh_offset + strtab.sh_size) as usize];
    let name_of = |off: u32| {
        let s = &names[off as usize..];
        s[..s.iter().position(|&b| b == 0).unwrap()].to_vec()
    };
    let section = |name: &[u8]| {
        (0..usize::from(h.e_shnum))
            .map(shdr)
            .find(|s| name_of(s.sh_name) == name)
            .unwrap_or_else(|| panic!("no {}", String::from_utf8_lossy(name)))
    };
    let pfn_sec = section(&cd::SECTION_PFN);
    let pages_sec = section(&cd::SECTION_PAGES);
    let listed: Vec<u64> = c
        [pfn_sec.sh_offset as usize..(pfn_sec.sh_offset + pfn_sec.sh_size) as usize]
        .chunks(8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(listed, pfns, ".xen_pfn lists every frame, ascending");
    for (i, &p) in listed.iter().enumerate() {
        let at = pages_sec.sh_offset as usize + i * PAGE_SIZE;
        assert_eq!(
            &c[at..at + PAGE_SIZE],
            &dom.page(p).unwrap()[..],
            "core pfn {p:#x}"
        );
    }
    let notes_sec = section(&cd::SECTION_NOTE_XEN);
    let n = &c[notes_sec.sh_offset as usize..(notes_sec.sh_offset + notes_sec.sh_size) as usize];
    // The header note follows the empty NONE note: 12 + 4 (name "Xen\0") octets each.
    let desc = &n[2 * (cd::Elf64Nhdr::SIZE + cd::NOTE_NAME_XEN.len())..];
    let header = cd::XenDumpcoreHeader::decode(&desc[..cd::XenDumpcoreHeader::SIZE], &ctx).unwrap();
    assert_eq!(header.xch_magic, cd::XC_CORE_MAGIC_HVM);
    assert_eq!(header.xch_nr_pages, pfns.len() as u64);
    assert_eq!(header.xch_nr_vcpus, 2);
}

#[test]
fn a_checkpoint_can_be_chosen_and_a_missing_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = real(dir.path(), "hvm64.remus-stream-unterminated");
    let first = extract(&img, &dir.path().join("c1.elf"), &["--checkpoint", "1"]);
    let last = extract(&img, &dir.path().join("c3.elf"), &[]);
    let third = extract(&img, &dir.path().join("c3b.elf"), &["--checkpoint", "3"]);
    assert_eq!(first["checkpoint"], 1);
    assert_eq!(last["checkpoint"], 3, "the last complete checkpoint");
    assert_eq!(third["checkpoint"], 3);
    let read = |n: &str| std::fs::read(dir.path().join(n)).unwrap();
    assert_eq!(
        read("c3.elf"),
        read("c3b.elf"),
        "the default is the last checkpoint"
    );
    // The guest ran between checkpoints: later pages replaced earlier copies.
    assert_ne!(read("c1.elf"), read("c3.elf"));
    let out = xenmig()
        .arg("extract-memory")
        .arg(&img)
        .arg("-o")
        .arg(dir.path().join("c4.elf"))
        .args(["--checkpoint", "4"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 complete checkpoints"));
    assert!(!dir.path().join("c4.elf").exists(), "no output on failure");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")),
        "no temporary file left"
    );
}

#[test]
fn a_refused_stream_is_refused_with_verifys_rule() {
    let dir = tempfile::tempdir().unwrap();
    let img = real(dir.path(), "pv64.xl");
    // Cut inside a record: verify --lenient refuses it, and so must extract-memory.
    let bytes = std::fs::read(&img).unwrap();
    let cut = dir.path().join("cut.img");
    std::fs::write(&cut, &bytes[..bytes.len() / 2 + 3]).unwrap();
    let v = xenmig()
        .args(["verify", "--lenient"])
        .arg(&cut)
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(1));
    let e = xenmig()
        .arg("extract-memory")
        .arg(&cut)
        .arg("-o")
        .arg(dir.path().join("cut.elf"))
        .output()
        .unwrap();
    assert_eq!(e.status.code(), Some(1));
    let verify_says =
        String::from_utf8_lossy(&v.stdout).to_string() + &String::from_utf8_lossy(&v.stderr);
    let stderr = String::from_utf8_lossy(&e.stderr);
    assert!(stderr.contains("truncated"), "{stderr}");
    assert!(verify_says.contains("truncated"), "{verify_says}");
    assert!(!dir.path().join("cut.elf").exists());
}

#[test]
fn info_shows_each_vcpus_registers_from_a_pipe_too() {
    let dir = tempfile::tempdir().unwrap();
    for (name, rip0, mode, efer) in [
        ("pv64.xl", 0xffff_ffff_81a4_42b5u64, "long", None),
        ("hvm64.xl", 0xffff_ffff_94c4_3c83, "long", Some(0xd01u64)),
    ] {
        let img = real(dir.path(), name);
        // Standard input as a pipe: one pass gives the verdict and the registers.
        let out = run(Command::new("sh").arg("-c").arg(format!(
            "cat '{}' | '{}' info --json -",
            img.display(),
            env!("CARGO_BIN_EXE_xenmig")
        )));
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["valid"], true, "{name}");
        let regs = v["vcpu_registers"].as_array().unwrap();
        assert_eq!(regs.len(), 2, "{name}");
        assert_eq!(regs[0]["vcpu"], 0);
        assert_eq!(regs[0]["rip"], rip0, "{name}");
        assert_eq!(regs[0]["mode"], mode, "{name}");
        assert_eq!(regs[0]["efer"].as_u64(), efer, "{name}");
        let text = run(xenmig().arg("info").arg(&img));
        assert!(
            text.contains(&format!("vcpu 0:         {mode} mode, rip {rip0:#x}")),
            "{name}: {text}"
        );
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn extract_writes_every_blob_of_the_real_hvm_capture() {
    let dir = tempfile::tempdir().unwrap();
    let img = real(dir.path(), "hvm64.xl");
    let out = dir.path().join("out");
    run(xenmig().arg("extract").arg(&img).arg(&out));
    let config = read_json(&out.join("xl-config.json"));
    assert!(
        config.get("c_info").is_some(),
        "libxl's JSON config: {config}"
    );
    // QEMU's saved state starts with its own magic.
    let qemu = std::fs::read(out.join("emulator-qemu-upstream-context.bin")).unwrap();
    assert_eq!(&qemu[..4], b"QEVM");
    let params = read_json(&out.join("hvm-params.json"));
    assert_eq!(params["STORE_PFN"], 0xfeffc);
    assert_eq!(params["CONSOLE_PFN"], 0xfefff);
    let ctx = std::fs::read(out.join("hvm-context.bin")).unwrap();
    assert_eq!(ctx.len(), 11976);
    let decoded = read_json(&out.join("hvm-context.json"));
    assert_eq!(decoded["records"][0]["record"], "HEADER");
    for (id, rip) in [(0, 0xffff_ffff_94c4_3c83u64), (1, 0xffff_ffff_9439_2872)] {
        let v = read_json(&out.join(format!("vcpu-{id}.json")));
        assert_eq!(v["registers"]["rip"], rip);
        assert_eq!(v["registers"]["mode"], "long");
        assert_eq!(v["cpu_save_record"]["rip"], rip);
        assert_eq!(v["cpu_save_record"]["msr_efer"], 0xd01);
    }
    for f in ["cpuid-policy.json", "msr-policy.json", "tsc-info.json"] {
        read_json(&out.join(f));
    }
    let manifest = read_json(&out.join("manifest.json"));
    let listed = manifest["files"].as_array().unwrap().len();
    // Every file but the manifest itself is listed.
    assert_eq!(listed + 1, std::fs::read_dir(&out).unwrap().count());
}

#[test]
fn extract_writes_the_pv_captures_vcpu_contexts_and_shared_info() {
    let dir = tempfile::tempdir().unwrap();
    let img = real(dir.path(), "pv64.xl");
    let out = dir.path().join("out");
    run(xenmig().arg("extract").arg(&img).arg(&out));
    assert_eq!(
        std::fs::read(out.join("shared-info.bin")).unwrap().len(),
        PAGE_SIZE
    );
    let v0 = read_json(&out.join("vcpu-0.json"));
    assert_eq!(v0["context"]["user_regs"]["rip"], 0xffff_ffff_81a4_42b5u64);
    assert_eq!(v0["registers"]["rip"], 0xffff_ffff_81a4_42b5u64);
    assert_eq!(v0["registers"]["pv"], true);
    read_json(&out.join("p2m-frames.json"));
    assert!(!out.join("hvm-context.bin").exists());
}

/// `xenmig diff --json` and its exit status.
fn diff_json(args: &[&std::ffi::OsStr]) -> (i32, Value) {
    let out = xenmig()
        .arg("diff")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), v)
}

#[test]
fn diff_names_the_frames_and_fields_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let save = |name: &str, plant: Option<&str>| {
        let img = dir.path().join(name);
        let mut c = xenmig();
        c.args([
            "sim", "save", "--guest", "hvm", "--memory", "16M", "--seed", "3",
        ])
        .args(["--frame", "libxl", "-o"])
        .arg(&img);
        if let Some(p) = plant {
            c.args(["--plant", p]);
        }
        run(&mut c);
        img
    };
    let a = save("a.img", None);
    let b = save("b.img", Some("0x100010:a change"));
    let (code, v) = diff_json(&[a.as_os_str(), a.as_os_str()]);
    assert_eq!(code, 0, "an image is the same as itself");
    assert_eq!(v["identical"], true);
    let (code, v) = diff_json(&[a.as_os_str(), b.as_os_str()]);
    assert_eq!(code, 1);
    assert_eq!(v["pages"]["changed_count"], 1);
    assert_eq!(v["pages"]["changed"], json!([[0x100, 0x100]]));
    assert_eq!(v["pages"]["added_count"], 0);
    assert!(v["records"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == "same"));

    // Two checkpoints of the real Remus capture: pages and vCPU registers moved on.
    let remus = real(dir.path(), "hvm64.remus-stream-unterminated");
    let (code, v) = diff_json(&[
        remus.as_os_str(),
        remus.as_os_str(),
        "--checkpoint-a".as_ref(),
        "1".as_ref(),
        "--checkpoint-b".as_ref(),
        "3".as_ref(),
    ]);
    assert_eq!(code, 1);
    assert!(v["pages"]["changed_count"].as_u64().unwrap() > 0);
    assert_eq!(v["pages"]["pages_a"], v["pages"]["pages_b"]);
    let ctx = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["record"] == "HVM_CONTEXT")
        .expect("HVM_CONTEXT compared");
    assert_eq!(ctx["status"], "changed");
    let paths: Vec<&str> = ctx["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.iter().any(|p| p.starts_with("records[CPU/0].body.")),
        "{paths:?}"
    );
}
