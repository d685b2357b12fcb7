//! Every JSON output of `xenmig` against its JSON Schema (`xenmig schema NAME`, the files of
//! `cli/schemas/`): `verify`, `info` and `dump` of every stream vector (the refused ones'
//! error outputs included), `dump` of every legacy vector, `info`, `dump`, `extract-memory`,
//! `extract`'s manifest and `diff` of the real Xen captures, and `sim save`/`sim restore` of
//! small simulated domains. Each schema is checked against the draft 2020-12 meta-schema
//! first; then outputs tampered with (a key left out, a value of the wrong type, an unknown
//! key, another format_version) must fail.

mod support;

use jsonschema::Validator;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::{with_xl_config_length, xl_config_length_missing};

fn xenmig() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xenmig"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn vectors() -> PathBuf {
    root().join("tests/vectors")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// The files of `dir` whose names end with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

/// The schemas, as `xenmig schema NAME` prints them, compiled.
struct Schemas(BTreeMap<String, Validator>);

impl Schemas {
    fn load() -> Schemas {
        let list = output(xenmig().args(["schema", "--list"]));
        assert!(list.status.success(), "{list:?}");
        let mut m = BTreeMap::new();
        for l in text(&list.stdout).lines() {
            let name = l.split_whitespace().next().unwrap().to_string();
            let out = output(xenmig().args(["schema", &name]));
            assert!(out.status.success(), "{name}: {out:?}");
            let schema: Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("schema {name}: {e}"));
            jsonschema::meta::validate(&schema)
                .unwrap_or_else(|e| panic!("schema {name} breaks the meta-schema: {e}"));
            let v = jsonschema::draft202012::new(&schema)
                .unwrap_or_else(|e| panic!("schema {name}: {e}"));
            m.insert(name, v);
        }
        Schemas(m)
    }

    /// The reasons `instance` does not fit schema `name`; empty when it does.
    fn errors(&self, name: &str, instance: &Value) -> Vec<String> {
        let v = self
            .0
            .get(name)
            .unwrap_or_else(|| panic!("no schema {name}"));
        v.iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect()
    }

    fn check(&self, name: &str, what: &str, instance: &Value) {
        let errors = self.errors(name, instance);
        assert!(
            errors.is_empty(),
            "{what}: output does not fit schema {name}:\n  {}\n{}",
            errors.join("\n  "),
            short(instance)
        );
    }
}

/// An instance, cut short for a message.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(2000) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

fn parse(what: &str, s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{what}: not JSON: {e}: {s}"))
}

/// The objects of a `dump --json` listing, one per line.
fn lines(what: &str, out: &Output) -> Vec<Value> {
    let t = text(&out.stdout);
    assert!(!t.is_empty(), "{what}: no output");
    t.lines().map(|l| parse(what, l)).collect()
}

/// The kind of a dump line, as the schema's `oneOf` names it.
fn dump_kind(o: &Value) -> &'static str {
    if o.get("vcpu_registers").is_some() {
        "vcpu_registers"
    } else if o.get("error").is_some() {
        if o["error"].get("message").is_some() {
            "legacy error"
        } else {
            "error"
        }
    } else if o["name"] == "eof" {
        "eof"
    } else if o["layer"] == "legacy" {
        "legacy item"
    } else {
        "item"
    }
}

/// Checks each line of a `dump --json` and counts the kinds seen in `kinds`; the last line
/// is the end or the error, as the exit status says.
fn check_dump(s: &Schemas, what: &str, out: &Output, kinds: &mut BTreeMap<&'static str, usize>) {
    let objs = lines(what, out);
    for (i, o) in objs.iter().enumerate() {
        s.check("dump", &format!("{what}, line {}", i + 1), o);
        *kinds.entry(dump_kind(o)).or_default() += 1;
    }
    let last = dump_kind(objs.last().unwrap());
    match out.status.code() {
        Some(0) => assert_eq!(last, "eof", "{what}"),
        Some(1) => assert!(last.ends_with("error"), "{what}: {last}"),
        c => panic!("{what}: exit status {c:?}"),
    }
}

/// The last line of standard error that is a JSON object (`sim ... --json`).
fn stderr_json(what: &str, out: &Output) -> Value {
    let t = text(&out.stderr);
    let l = t
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("{what}: no JSON on stderr: {t}"));
    parse(what, l)
}

#[test]
fn schema_lists_and_prints_each_file_of_cli_schemas() {
    let dir = root().join("cli/schemas");
    let on_disk: Vec<String> = files(&dir, ".json")
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let list = output(xenmig().args(["schema", "--list"]));
    assert!(list.status.success());
    let listed: Vec<String> = text(&list.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, on_disk, "`schema --list` and cli/schemas/");
    for name in &listed {
        let out = output(xenmig().args(["schema", name]));
        let file = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
        assert_eq!(text(&out.stdout), file, "{name}");
    }
    // A name that is not listed, and neither a name nor --list, are usage errors.
    for args in [&["schema", "no-such-output"][..], &["schema"]] {
        let out = output(xenmig().args(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn verify_info_and_dump_of_every_stream_vector_fit_their_schemas() {
    let s = Schemas::load();
    let tmp = tempfile::tempdir().unwrap();
    let mut inputs = Vec::new();
    for p in files(&vectors().join("streams"), ".bin") {
        let bytes = std::fs::read(&p).unwrap();
        // The vectors in xl framing lack xl's config length: as they are, they are refused;
        // with it, they are read through.
        if xl_config_length_missing(&bytes) {
            let fixed = tmp.path().join(p.file_name().unwrap());
            std::fs::write(&fixed, with_xl_config_length(&bytes)).unwrap();
            inputs.push(fixed);
        }
        inputs.push(p);
    }
    assert!(inputs.len() >= 31, "{} inputs", inputs.len());
    let (mut valid, mut invalid) = (0, 0);
    let mut kinds = BTreeMap::new();
    for p in &inputs {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        for strictness in ["--strict", "--lenient"] {
            let what = format!("verify --json {strictness} {name}");
            let out = output(xenmig().args(["verify", "--json", strictness]).arg(p));
            let v = parse(&what, &text(&out.stdout));
            s.check("verify", &what, &v);
            assert_eq!(out.status.code() == Some(0), v["valid"] == true, "{what}");
            if v["valid"] == true {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
        let what = format!("info --json {name}");
        let out = output(xenmig().args(["info", "--json"]).arg(p));
        s.check("info", &what, &parse(&what, &text(&out.stdout)));
        for extra in [&[][..], &["--pages"]] {
            let what = format!("dump --json {extra:?} {name}");
            let out = output(xenmig().args(["dump", "--json"]).args(extra).arg(p));
            check_dump(&s, &what, &out, &mut kinds);
        }
    }
    assert!(valid > 0 && invalid > 0, "{valid} valid, {invalid} invalid");
    for k in ["item", "eof", "error"] {
        assert!(kinds.contains_key(k), "no {k} line in {kinds:?}");
    }
}

#[test]
fn dump_of_every_legacy_vector_fits_its_schema() {
    let s = Schemas::load();
    let mut kinds = BTreeMap::new();
    let legacy = files(&vectors().join("legacy"), ".legacy");
    assert_eq!(legacy.len(), 16);
    for p in &legacy {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        for extra in [&[][..], &["--pages"]] {
            let what = format!("dump --json {extra:?} {name}");
            let out = output(xenmig().args(["dump", "--json"]).args(extra).arg(p));
            assert_eq!(out.status.code(), Some(0), "{what}");
            check_dump(&s, &what, &out, &mut kinds);
        }
    }
    // Cut short: the reader's error, with and without the reason it was read as legacy.
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&legacy[0]).unwrap();
    let cut = tmp.path().join("cut.legacy");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    for extra in [&[][..], &["--legacy"]] {
        let what = format!("dump --json {extra:?} (a legacy stream cut short)");
        let out = output(xenmig().args(["dump", "--json"]).args(extra).arg(&cut));
        check_dump(&s, &what, &out, &mut kinds);
        let last = lines(&what, &out).pop().unwrap();
        assert_eq!(
            last["error"].get("read_as_legacy_because").is_some(),
            extra.is_empty(),
            "{what}: {last}"
        );
    }
    assert_eq!(kinds.get("legacy error"), Some(&2), "{kinds:?}");
    assert!(kinds.contains_key("legacy item") && kinds.contains_key("eof"));
}

/// A real capture, decompressed into `dir`.
fn real(dir: &Path, name: &str) -> PathBuf {
    let src = vectors().join("real").join(format!("{name}.zst"));
    let raw = std::fs::read(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let out = dir.join(name);
    std::fs::write(&out, zstd::stream::decode_all(&raw[..]).unwrap()).unwrap();
    out
}

#[test]
fn outputs_about_the_real_captures_fit_their_schemas() {
    let s = Schemas::load();
    let tmp = tempfile::tempdir().unwrap();
    let names = ["pv64.xl", "hvm64.xl", "hvm64.remus-stream-unterminated"];
    let mut kinds = BTreeMap::new();
    for name in names {
        let img = real(tmp.path(), name);
        let what = format!("info --json {name}");
        let out = output(xenmig().args(["info", "--json"]).arg(&img));
        assert_eq!(out.status.code(), Some(0), "{what}");
        let info = parse(&what, &text(&out.stdout));
        s.check("info", &what, &info);
        assert!(!info["vcpu_registers"].as_array().unwrap().is_empty());

        let out = output(xenmig().args(["dump", "--json"]).arg(&img));
        check_dump(&s, &format!("dump --json {name}"), &out, &mut kinds);

        // A sparse raw image keeps the disk use small; the JSON is the same for every format.
        let what = format!("extract-memory --json {name}");
        let dumped = tmp.path().join(format!("{name}.raw"));
        let out = output(
            xenmig()
                .args(["extract-memory", "--json", "--format", "raw", "-o"])
                .arg(&dumped)
                .arg(&img),
        );
        assert_eq!(out.status.code(), Some(0), "{what}: {}", text(&out.stderr));
        s.check("extract-memory", &what, &parse(&what, &text(&out.stdout)));
        std::fs::remove_file(&dumped).unwrap();

        let what = format!("extract {name}: manifest.json");
        let dir = tmp.path().join(format!("{name}.extracted"));
        let out = output(xenmig().arg("extract").arg(&img).arg(&dir));
        assert_eq!(out.status.code(), Some(0), "{what}: {}", text(&out.stderr));
        let manifest = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
        s.check("extract-manifest", &what, &parse(&what, &manifest));
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // Each vCPU's registers come before the end of each listing.
    assert!(kinds["vcpu_registers"] >= 2 * names.len(), "{kinds:?}");

    // The same image, two checkpoints of one stream, and a PV against an HVM guest: every
    // status of a record shows up.
    let path = |n: &str| tmp.path().join(n);
    let remus = path("hvm64.remus-stream-unterminated");
    let cases: [(Vec<&str>, PathBuf, PathBuf, i32); 3] = [
        (vec![], path("hvm64.xl"), path("hvm64.xl"), 0),
        (
            vec!["--checkpoint-a", "1", "--checkpoint-b", "3"],
            remus.clone(),
            remus,
            1,
        ),
        (vec![], path("pv64.xl"), path("hvm64.xl"), 1),
    ];
    let mut statuses = BTreeMap::new();
    for (extra, a, b, want) in cases {
        let what = format!("diff --json {extra:?} {} {}", a.display(), b.display());
        let out = output(
            xenmig()
                .args(["diff", "--json"])
                .args(&extra)
                .arg(&a)
                .arg(&b),
        );
        assert_eq!(out.status.code(), Some(want), "{what}");
        let d = parse(&what, &text(&out.stdout));
        s.check("diff", &what, &d);
        assert_eq!(d["identical"], want == 0, "{what}");
        for r in d["records"].as_array().unwrap() {
            *statuses.entry(r["status"].to_string()).or_insert(0) += 1;
        }
    }
    assert_eq!(statuses.len(), 4, "{statuses:?}");
}

#[test]
fn sim_save_and_restore_figures_fit_their_schemas() {
    let s = Schemas::load();
    let tmp = tempfile::tempdir().unwrap();
    let saves: [&[&str]; 4] = [
        &["--guest", "pv", "--memory", "1M"],
        &[
            "--guest",
            "hvm",
            "--memory",
            "2M",
            "--frame",
            "xl",
            "--live",
            "--dirty-rate",
            "1000",
        ],
        &[
            "--guest",
            "pv",
            "--memory",
            "4M",
            "--live",
            "--dirty-rate",
            "100000",
            "--policy",
            "downtime:1",
            "--bandwidth",
            "10M",
        ],
        &[
            "--guest", "pv", "--memory", "1M", "--remus", "2", "--frame", "libxl",
        ],
    ];
    let mut with_policy = 0;
    for (i, args) in saves.iter().enumerate() {
        let img = tmp.path().join(format!("{i}.img"));
        let what = format!("sim save --json {args:?}");
        let out = output(
            xenmig()
                .args(["sim", "save", "--json"])
                .args(*args)
                .arg("-o")
                .arg(&img),
        );
        assert!(out.status.success(), "{what}: {}", text(&out.stderr));
        let v = stderr_json(&what, &out);
        s.check("sim-save", &what, &v);
        with_policy += usize::from(v["downtime_policy"].is_object());

        let what = format!("sim restore --json of {args:?}");
        let out = output(xenmig().args(["sim", "restore", "--json"]).arg(&img));
        assert!(out.status.success(), "{what}: {}", text(&out.stderr));
        let v = stderr_json(&what, &out);
        s.check("sim-restore", &what, &v);
        assert_eq!(
            v.get("libxl").is_some(),
            args.contains(&"--frame"),
            "{what}"
        );
    }
    assert_eq!(with_policy, 1);
}

/// `v` with `key`'s value replaced by one of another JSON type.
fn retyped(v: &Value, key: &str) -> Value {
    let mut t = v.clone();
    t[key] = match &v[key] {
        Value::String(_) => json!(7),
        _ => json!("7"),
    };
    t
}

#[test]
fn tampered_outputs_fail_their_schemas() {
    let s = Schemas::load();
    let stream = vectors().join("streams/v2-hvm-v3-libxc-s126.bin");
    let bad = vectors().join("streams/bad-truncated-mid-record-pv-s139.bin");
    let legacy = vectors().join("legacy/legacy-pv64-s105.legacy");
    let tmp = tempfile::tempdir().unwrap();

    // One real output of each schema (for dump, one line of each kind).
    let mut samples: Vec<(&str, String, Value)> = Vec::new();
    let stdout = |cmd: &mut Command| text(&output(cmd).stdout);
    for (schema, args) in [
        ("verify", vec!["verify", "--json"]),
        ("info", vec!["info", "--json"]),
    ] {
        let v = parse(schema, &stdout(xenmig().args(&args).arg(&stream)));
        samples.push((schema, schema.to_string(), v));
    }
    let sim = tmp.path().join("pv.img");
    let out = output(
        xenmig()
            .args([
                "sim", "save", "--json", "--memory", "1M", "--frame", "libxl", "-o",
            ])
            .arg(&sim),
    );
    samples.push(("sim-save", "sim-save".into(), stderr_json("sim save", &out)));
    let out = output(xenmig().args(["sim", "restore", "--json"]).arg(&sim));
    samples.push((
        "sim-restore",
        "sim-restore".into(),
        stderr_json("sim restore", &out),
    ));
    let bytes = std::fs::read(&legacy).unwrap();
    let cut = tmp.path().join("cut.legacy");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let mut dump_lines = Vec::new();
    for (p, extra) in [
        (&stream, &["--pages"][..]),
        (&sim, &[]),
        (&bad, &[]),
        (&legacy, &["--pages"]),
        (&cut, &[]),
    ] {
        let out = output(xenmig().args(["dump", "--json"]).args(extra).arg(p));
        dump_lines.extend(lines("dump", &out));
    }
    let mut seen = BTreeMap::new();
    for l in dump_lines {
        let kind = dump_kind(&l);
        if seen.insert(kind, ()).is_none() {
            samples.push(("dump", format!("dump ({kind} line)"), l));
        }
    }
    // Items of both kinds of stream, vCPU registers, the end, and both kinds of error.
    assert_eq!(seen.len(), 6, "{seen:?}");
    let mem = tmp.path().join("pv.raw");
    let v = parse(
        "extract-memory",
        &stdout(
            xenmig()
                .args(["extract-memory", "--json", "--format", "raw", "-o"])
                .arg(&mem)
                .arg(&sim),
        ),
    );
    samples.push(("extract-memory", "extract-memory".into(), v));
    let dir = tmp.path().join("extracted");
    output(xenmig().arg("extract").arg(&sim).arg(&dir));
    let v = parse(
        "manifest.json",
        &std::fs::read_to_string(dir.join("manifest.json")).unwrap(),
    );
    samples.push(("extract-manifest", "extract-manifest".into(), v));
    let v = parse(
        "diff",
        &stdout(xenmig().args(["diff", "--json"]).arg(&sim).arg(&sim)),
    );
    samples.push(("diff", "diff".into(), v));
    let names: std::collections::BTreeSet<&str> = samples.iter().map(|x| x.0).collect();
    assert_eq!(names.len(), s.0.len(), "a sample of each schema");

    let mut failures = 0;
    for (schema, what, v) in &samples {
        s.check(schema, what, v);
        let o = v.as_object().unwrap();
        for key in o.keys() {
            // A key left out: every key printed at the top level is required, but those a
            // line or figure has only sometimes.
            let mut t = v.clone();
            t.as_object_mut().unwrap().remove(key);
            let optional = match *schema {
                "dump" => match key.as_str() {
                    "layer" | "index" | "type" | "id" | "pages" => true,
                    // A legacy stream's end says where it is; a v2 stream's does not.
                    "offset" => v["name"] == "eof",
                    _ => false,
                },
                "sim-save" | "sim-restore" => key == "libxl",
                _ => false,
            };
            if !optional {
                assert!(
                    !s.errors(schema, &t).is_empty(),
                    "{what} without {key} passes"
                );
                failures += 1;
            }
            // A value of the wrong type.
            assert!(
                !s.errors(schema, &retyped(v, key)).is_empty(),
                "{what} with {key} retyped passes"
            );
            failures += 1;
        }
        // A key the schema does not know, and another version.
        let mut t = v.clone();
        t["no_such_key"] = json!(1);
        assert!(
            !s.errors(schema, &t).is_empty(),
            "{what} with an unknown key"
        );
        let mut t = v.clone();
        t["format_version"] = json!(2);
        assert!(!s.errors(schema, &t).is_empty(), "{what} as version 2");
        failures += 2;
    }
    assert!(failures > 100, "{failures} tampered outputs");

    // Deeper: a nested value of the wrong type, and a nested key left out.
    let (_, _, verify) = &samples[0];
    let mut t = verify.clone();
    t["pages"]["data_pages"] = json!(-1);
    assert!(
        !s.errors("verify", &t).is_empty(),
        "a negative count passes"
    );
    let mut t = verify.clone();
    t["pages"].as_object_mut().unwrap().remove("by_type");
    assert!(!s.errors("verify", &t).is_empty(), "pages without by_type");
    let error_line = samples
        .iter()
        .find(|x| x.1 == "dump (error line)")
        .map(|x| x.2.clone())
        .unwrap();
    let mut t = error_line.clone();
    t["error"]["kind"] = json!("exploded");
    assert!(!s.errors("dump", &t).is_empty(), "an unknown error kind");
    let mut t = error_line;
    t["error"].as_object_mut().unwrap().remove("rule");
    assert!(
        !s.errors("dump", &t).is_empty(),
        "an error without its rule"
    );
}
