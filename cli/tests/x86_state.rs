//! `xenmig dump --json` shows guest state decoded from `spec/x86_state.yaml`: the save records
//! inside a real HVM image's HVM_CONTEXT (with each vCPU's registers) and a real PV image's
//! vCPU contexts. Nothing here names a register the spec does not: the walk renders them.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// `xenmig dump --json` of a real image (zstd in tests/vectors/real), one JSON value per item.
fn dump_json(name: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/vectors/real")
        .join(name);
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let bytes = zstd::stream::decode_all(&raw[..]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    std::fs::write(&image, bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xenmig"))
        .args(["dump", "--json"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn records<'v>(items: &'v [Value], name: &str) -> Vec<&'v Value> {
    items.iter().filter(|v| v["name"] == name).collect()
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("`{key}` is not a number in {v}"))
}

#[test]
fn hvm_context_shows_save_records_and_vcpu_registers() {
    let items = dump_json("hvm64.xl.zst");
    let ctx = records(&items, "HVM_CONTEXT");
    assert_eq!(ctx.len(), 1);
    let context = &ctx[0]["fields"]["context"];
    assert_eq!(context["layout"], "x86_state");
    let recs = context["contents"]["records"].as_array().expect("records");
    // Every record decoded, the sequence ends with END and nothing follows it.
    assert!(recs.iter().all(|r| r.get("error").is_none()), "{recs:?}");
    assert_eq!(recs.last().unwrap()["record"], "END");
    assert!(context["contents"].get("trailing").is_none());
    let lengths: u64 = recs.iter().map(|r| 8 + u64_of(r, "length")).sum();
    assert_eq!(
        lengths,
        u64_of(context, "length"),
        "the records fill the blob"
    );
    let header = &recs[0];
    assert_eq!(header["record"], "HEADER");
    assert_eq!(u64_of(&header["body"], "magic"), 0x5438_1286);

    let cpus: Vec<&Value> = recs.iter().filter(|r| r["record"] == "CPU").collect();
    assert_eq!(cpus.len(), 2, "one CPU record per vCPU");
    for (i, cpu) in cpus.iter().enumerate() {
        assert_eq!(u64_of(cpu, "instance"), i as u64);
        let regs = &cpu["body"];
        let (rip, rsp) = (u64_of(regs, "rip"), u64_of(regs, "rsp"));
        let (cr0, cr3, cr4) = (
            u64_of(regs, "cr0"),
            u64_of(regs, "cr3"),
            u64_of(regs, "cr4"),
        );
        let efer = u64_of(regs, "msr_efer");
        // A 64-bit Linux guest: kernel addresses, paging and long mode on.
        assert!(rip >= 0xffff_8000_0000_0000 && rsp >= 0xffff_8000_0000_0000);
        assert_eq!(cr0 & 0x8000_0001, 0x8000_0001, "PG and PE");
        assert_ne!(cr3, 0);
        assert_ne!(cr4 & 0x20, 0, "PAE");
        assert_eq!(efer & 0x500, 0x500, "LME and LMA");
    }
    // The first vCPU's registers, as Xen saved them.
    assert_eq!(u64_of(&cpus[0]["body"], "rip"), 0xffff_ffff_94c4_3c83);
    assert_eq!(u64_of(&cpus[0]["body"], "cr3"), 0x2a1_0000);
}

#[test]
fn pv_vcpu_basic_shows_registers() {
    let items = dump_json("pv64.xl.zst");
    let vcpus = records(&items, "X86_PV_VCPU_BASIC");
    assert!(!vcpus.is_empty());
    for v in &vcpus {
        let context = &v["fields"]["context"];
        assert_eq!(context["layout"], "vcpu_context_x86_64");
        let c = &context["contents"];
        let regs = &c["user_regs"];
        assert!(u64_of(regs, "rip") >= 0xffff_8000_0000_0000);
        assert!(u64_of(regs, "rsp") >= 0xffff_8000_0000_0000);
        assert_eq!(
            u64_of(regs, "cs") & 3,
            3,
            "a 64-bit PV kernel runs in ring 3"
        );
        assert_ne!(u64_of(c, "cr3"), 0);
        assert!(u64_of(c, "gdt_ents") > 0);
    }
    let vcpu0 = vcpus
        .iter()
        .find(|v| v["fields"]["vcpu_id"] == 0)
        .expect("vcpu 0");
    let c = &vcpu0["fields"]["context"]["contents"];
    assert_eq!(u64_of(&c["user_regs"], "rip"), 0xffff_ffff_81a4_42b5);
    // vCPU 0's rdx names the start_info page (a pfn in a saved image).
    assert_eq!(u64_of(&c["user_regs"], "rdx"), 0x4a00);
}

#[test]
fn text_dump_names_the_registers_and_shortens_long_octets() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/real/hvm64.xl.zst");
    let bytes = zstd::stream::decode_all(&std::fs::read(path).unwrap()[..]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    std::fs::write(&image, bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xenmig"))
        .arg("dump")
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("HVM_CONTEXT"))
        .expect("HVM_CONTEXT line");
    assert!(line.contains("layout=x86_state"), "{line}");
    assert!(line.contains("record=CPU"), "{line}");
    assert!(line.contains("rip=0xffffffff94c43c83"), "{line}");
    assert!(line.contains("fpu_regs=<512 octets: "), "{line}");
}
