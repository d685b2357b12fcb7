//! Every example of the facade crate runs from the repository root and does what its doc
//! says: the embedder's guide (read, verify, write, convert, extract a page, a `Domain`
//! backend) and the generators (`gen_stream`, `gen_legacy`, `sample`). Some outputs are fed
//! to other examples, and some inputs are bad on purpose, so that an example that stopped
//! reporting a failure fails here.
//!
//! `cargo test --workspace` builds the examples before it runs any test; the test asks cargo
//! to build them again (a no-op then) so that `cargo test -p xenmig --test examples` alone
//! works too, with no stale example.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root, where the examples' default paths start.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where cargo puts this profile's examples: this test runs as
/// `<target>/<profile>/deps/examples-<hash>`, the examples are `<target>/<profile>/examples/`.
fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from <target>/<profile>/deps");
    let target_dir = profile_dir.parent().expect("a target directory");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a profile directory");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        // The whole workspace, as `cargo test --workspace` resolves its features: then the
        // build finds everything fresh (`-p xenmig` alone would resolve other features and
        // build the runtime again).
        .args(["build", "--quiet", "--workspace", "--examples"])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(root());
    if profile != "debug" {
        build.args(["--profile", profile]);
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "building the examples failed");
    profile_dir.join("examples")
}

struct Examples {
    dir: PathBuf,
}

impl Examples {
    fn run(&self, name: &str, args: &[&str]) -> Output {
        let out = Command::new(self.dir.join(name))
            .args(args)
            .current_dir(root())
            .output()
            .unwrap_or_else(|e| panic!("example {name}: {e}"));
        eprintln!(
            "== {name} {args:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `name`, which must succeed and print every one of `expect`.
    fn ok(&self, name: &str, args: &[&str], expect: &[&str]) -> String {
        let out = self.run(name, args);
        assert!(
            out.status.success(),
            "{name} {args:?} failed: {}",
            out.status
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        for e in expect {
            assert!(stdout.contains(e), "{name} {args:?} did not print `{e}`");
        }
        stdout
    }

    /// Runs `name`, which must fail with exit status `code` and say `expect` on stderr or
    /// stdout.
    fn fails(&self, name: &str, args: &[&str], code: i32, expect: &str) {
        let out = self.run(name, args);
        assert_eq!(out.status.code(), Some(code), "{name} {args:?}");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            said.contains(expect),
            "{name} {args:?} did not say `{expect}`"
        );
    }
}

#[test]
fn examples_run() {
    let ex = Examples {
        dir: examples_dir(),
    };
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let path = |name: &str| tmp.path().join(name).to_string_lossy().into_owned();

    // Reading: every item of the default sample, the last one the libxl END.
    let listing = ex.ok(
        "read_stream",
        &[],
        &[
            "libxl header",
            "libxc domain header: type=X86_HVM",
            "end of input: 12 records",
        ],
    );
    assert!(listing.contains("libxc PAGE_DATA"), "PAGE_DATA rendered");
    ex.fails("read_stream", &["no/such/stream"], 1, "no/such/stream");

    // Verifying: the default sample passes; a stream with one defect fails with status 1.
    ex.ok(
        "verify_stream",
        &[],
        &[
            "verdict: valid (strict checks)",
            "framing: xl",
            "verify_reader over the file agrees",
        ],
    );
    ex.fails(
        "verify_stream",
        &["tests/vectors/streams/bad-end-with-body-hvm-s146.bin"],
        1,
        "verdict: INVALID",
    );

    // Writing: the image verifies, and the file it leaves is read back by read_stream.
    let written = path("written.libxc");
    ex.ok(
        "write_stream",
        &[&written],
        &[
            "verified strictly: X86_HVM guest, 7 data pages",
            "CPU instance 0: rip=0xffffffff81000000",
        ],
    );
    ex.ok(
        "read_stream",
        &[&written],
        &["libxc HVM_CONTEXT", "framing libxc, complete"],
    );

    // Converting: the default vector, a generated HVM legacy stream into libxl framing, and
    // something that is not a legacy stream at all.
    ex.ok(
        "convert_legacy",
        &[],
        &[
            "Pv guest saved by a Bits64 toolstack",
            "the v2 stream verifies",
        ],
    );
    let legacy = path("generated.legacy");
    ex.ok("gen_legacy", &["--size", "64K", &legacy], &[]);
    let converted = path("converted.libxl");
    ex.ok(
        "convert_legacy",
        &["--libxl", &legacy, &converted],
        &["Hvm guest", "(Libxl framing)", "the v2 stream verifies"],
    );
    ex.ok(
        "verify_stream",
        &[&converted],
        &["verdict: valid", "framing: libxl"],
    );
    ex.fails(
        "convert_legacy",
        &["samples/pv64-demo.xl"],
        1,
        "convert_legacy:",
    );

    // Extracting: the first data page of the default sample (its pfn stamped in its first
    // octets by the sample writer), a page by pfn, and a pfn the image does not have.
    ex.ok(
        "extract_page",
        &[],
        &[
            "Pv(Some(W64)) guest, 251 frames",
            "frame 0x0: at stream offset",
        ],
    );
    let page = path("page.bin");
    ex.ok(
        "extract_page",
        &["samples/pv64-demo.xl", "0x10", &page],
        &["frame 0x10"],
    );
    let bytes = std::fs::read(&page).expect("the page was written");
    assert_eq!(bytes.len(), xenmig::limits::PAGE_SIZE);
    ex.fails(
        "extract_page",
        &["samples/pv64-demo.xl", "0x100000"],
        1,
        "not in the image",
    );

    // A Domain backend: saved live, restored, compared.
    ex.ok(
        "domain_backend",
        &[],
        &["the destination matches", "holds \"written at suspend\""],
    );

    // The generators: a synthetic v2 stream verifies; the samples are what `sample` writes.
    let synthetic = path("synthetic.libxl");
    ex.ok("gen_stream", &["--size", "64K", &synthetic], &[]);
    ex.ok("verify_stream", &[&synthetic], &["verdict: valid"]);
    let samples = tmp.path().join("samples");
    std::fs::create_dir(&samples).expect("a directory for the samples");
    ex.ok("sample", &[&samples.to_string_lossy()], &["wrote"]);
    for name in ["pv64-demo.xl", "hvm64-demo.libxl"] {
        let made = std::fs::read(samples.join(name)).expect("sample written");
        let committed = std::fs::read(root().join("samples").join(name)).expect("sample committed");
        assert!(
            made == committed,
            "samples/{name} is not what the sample example writes"
        );
    }
}
