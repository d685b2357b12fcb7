//! Replays the fuzzers' regression corpus on stable Rust: every file of
//! `fuzz/regressions/TARGET/` goes through the same body the cargo-fuzz target `TARGET` runs
//! (`xenmig_tests::fuzz`), and none may panic. The corpus holds every input a fuzzer ever
//! crashed on (each fixed since) and a few ordinary inputs per target.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use xenmig_tests::fuzz::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository root")
        .join("fuzz")
}

/// The names of the entries of a folder, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| {
            e.expect("a folder entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_fuzz_target_has_a_shared_body_and_a_regression_corpus() {
    let fuzz = fuzz_dir();
    let mut bodies: Vec<String> = TARGETS.iter().map(|t| t.name.to_string()).collect();
    bodies.sort();
    let targets: Vec<String> = names(&fuzz.join("fuzz_targets"))
        .into_iter()
        .filter_map(|n| n.strip_suffix(".rs").map(str::to_string))
        .collect();
    assert_eq!(
        targets, bodies,
        "fuzz/fuzz_targets/*.rs and xenmig_tests::fuzz::TARGETS must name the same targets"
    );
    let corpora = names(&fuzz.join("regressions"));
    assert_eq!(
        corpora, bodies,
        "fuzz/regressions/ must hold one folder per target"
    );
    for t in TARGETS {
        let src = std::fs::read_to_string(fuzz.join("fuzz_targets").join(format!("{}.rs", t.name)))
            .expect("the target's source");
        assert!(
            src.contains(&format!("xenmig_tests::fuzz::{}(data)", t.name)),
            "fuzz/fuzz_targets/{}.rs must call xenmig_tests::fuzz::{}",
            t.name,
            t.name
        );
    }
}

#[test]
fn regression_corpus_replays_without_panics() {
    let fuzz = fuzz_dir();
    let mut failures = Vec::new();
    let mut replayed = 0;
    // The bodies' own panic messages are what a failure shows.
    for t in TARGETS {
        let dir = fuzz.join("regressions").join(t.name);
        let files = names(&dir);
        assert!(
            !files.is_empty(),
            "{} is empty: keep at least one input per target",
            dir.display()
        );
        for f in files {
            let path = dir.join(&f);
            let data = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            replayed += 1;
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| (t.run)(&data))) {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{}/{f}: {why}", t.name));
            }
        }
    }
    eprintln!("replayed {replayed} regression inputs");
    assert!(
        failures.is_empty(),
        "{} regression inputs panic:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
