//! `cargo xtask check`, part two: no format fact or cap written as a literal outside the
//! places that own it.
//!
//! Framing, page size, alignment and caps come from the specs (generated code) and from
//! `runtime/core/src/limits.rs`; everywhere else in the runtime crates' `src` and in `cli/src`
//! they are named.
//! This scan looks for the literals those facts are usually written as and fails on any
//! that is not in [`ALLOWED`]. Test code (`tests.rs` files, and what follows `#[cfg(test)]`
//! in a file) is not scanned: known-answer tests write the figures on purpose, so that a
//! changed spec constant shows up as a failing test. Comments are not scanned either.

use std::path::{Path, PathBuf};

/// The trees scanned, relative to the workspace root.
pub const SCANNED: &[&str] = &[
    "runtime/src",
    "runtime/core/src",
    "runtime/stream/src",
    "runtime/convert/src",
    "runtime/forensics/src",
    "runtime/drivers/src",
    "runtime/savehelper/src",
    "runtime/sim/src",
    "runtime/xen/src",
    "cli/src",
];

/// The one file allowed to write caps.
const LIMITS: &str = "runtime/core/src/limits.rs";

/// What is looked for, and what it usually means.
const PATTERNS: &[(&str, &str)] = &[
    ("4096", "the page size (limits::PAGE_SIZE)"),
    ("0x1000", "the page size (limits::PAGE_SIZE)"),
    ("0xfff", "the page offset mask (limits::PAGE_OFFSET_MASK)"),
    ("<< 12", "the page shift (limits::PAGE_SHIFT)"),
    (">> 12", "the page shift (limits::PAGE_SHIFT)"),
    ("rotate_left(12)", "the page shift (limits::PAGE_SHIFT)"),
    ("rotate_right(12)", "the page shift (limits::PAGE_SHIFT)"),
    ("& 7", "the page-table level (limits::table_level)"),
    ("+ 7) & !7", "record padding (limits::padded_body_len)"),
    ("div_ceil(8)", "record padding (limits::padded_body_len)"),
    (
        "128 << 20",
        "the record length cap (limits::MAX_RECORD_LENGTH)",
    ),
    ("64 << 20", "a cap (limits)"),
    ("16 << 20", "a cap (limits)"),
    (
        "44",
        "the xl header's optional_data_len offset (xl::XlHeader)",
    ),
    (
        "65535",
        "the save-helper body cap (limits::SAVE_HELPER_MAX_BODY)",
    ),
];

/// Lines that hold one of the patterns without it being a format fact or cap: the file,
/// a piece of the line that identifies it, and why it stays.
const ALLOWED: &[(&str, &str, &str)] = &[
    (
        "runtime/sim/src/pv.rs",
        "const XEN_MFN_BASE: u64 = 0x1000;",
        "a machine frame number the simulator gives Xen's own frames, not a size",
    ),
    (
        "runtime/sim/src/lib.rs",
        "memory_pages: 4096,",
        "the default simulated guest's size in pages (16 MiB), not the page size",
    ),
    (
        "runtime/convert/src/mapped.rs",
        "pub const WINDOW: usize = 16 << 20;",
        "how much of a legacy input is mapped at once: a buffer size, not a cap",
    ),
    (
        "runtime/sim/src/config.rs",
        "memory: 64 << 20,",
        "a simulated guest's default memory in its JSON config, not a cap",
    ),
    (
        "runtime/savehelper/src/backend.rs",
        "memory: 128 << 20,",
        "a simulated guest's default memory, not a cap",
    ),
    (
        "runtime/savehelper/src/backend.rs",
        "(GuestType::X86Pv, 8, 128 << 20, 2, 1)",
        "a simulated guest's memory in a table of defaults, not a cap",
    ),
    (
        "cli/src/progress.rs",
        "pub const LONG_INPUT: u64 = 64 << 20;",
        "when a progress bar is worth showing: a display threshold, not a cap",
    ),
];

/// One literal found where it should not be.
#[derive(Debug)]
pub struct Finding {
    pub path: String,
    pub line: usize,
    pub pattern: &'static str,
    pub meaning: &'static str,
    pub text: String,
}

/// Whether `pattern` occurs in `code` as a token of its own: a number is not part of a
/// longer number or name, an operator is not followed by more digits.
fn occurs(code: &str, pattern: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(i) = code.get(from..).and_then(|s| s.find(pattern)) {
        let at = from + i;
        let end = at + pattern.len();
        let before = code.get(..at).and_then(|s| s.chars().next_back());
        let after = code.get(end..).and_then(|s| s.chars().next());
        let starts_word = pattern.chars().next().is_some_and(word);
        let ends_word = pattern.chars().next_back().is_some_and(word);
        let left_ok = !starts_word || !before.is_some_and(word);
        let right_ok = !ends_word || !after.is_some_and(word);
        if left_ok && right_ok {
            return true;
        }
        from = at + 1;
    }
    false
}

/// The code on a line: no comment, no string contents (messages may quote figures).
fn code_part(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_str = false;
                    out.push('"');
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push('"');
            }
            '/' if chars.peek() == Some(&'/') => break,
            _ => out.push(c),
        }
    }
    out
}

/// The findings in one file's text (`path` as shown, relative to the root).
pub fn scan_text(path: &str, text: &str) -> Vec<Finding> {
    if path == LIMITS || path.ends_with("/tests.rs") {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let code = code_part(line);
        for &(pattern, meaning) in PATTERNS {
            if !occurs(&code, pattern) {
                continue;
            }
            let allowed = ALLOWED
                .iter()
                .any(|(p, piece, _)| *p == path && line.contains(piece));
            if !allowed {
                out.push(Finding {
                    path: path.to_string(),
                    line: n + 1,
                    pattern,
                    meaning,
                    text: line.trim().to_string(),
                });
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// Scans the trees under `root`; also reports allow-list entries that no longer match a
/// line (so the list cannot keep stale exceptions).
pub fn scan(root: &Path) -> anyhow::Result<(Vec<Finding>, Vec<String>)> {
    let mut files = Vec::new();
    for dir in SCANNED {
        rust_files(&root.join(dir), &mut files)?;
    }
    let mut findings = Vec::new();
    let mut texts = Vec::new();
    for f in &files {
        let shown = f
            .strip_prefix(root)
            .unwrap_or(f)
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(f)?;
        findings.extend(scan_text(&shown, &text));
        texts.push((shown, text));
    }
    let stale = ALLOWED
        .iter()
        .filter(|(p, piece, _)| {
            !texts
                .iter()
                .any(|(shown, text)| shown == p && text.lines().any(|l| l.contains(piece)))
        })
        .map(|(p, piece, _)| format!("{p}: `{piece}`"))
        .collect();
    Ok((findings, stale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_page_size_literal() {
        let f = scan_text("runtime/stream/src/x.rs", "let n = len / 4096;\n");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].pattern, "4096");
        assert_eq!(f[0].line, 1);
    }

    #[test]
    fn finds_framing_and_caps() {
        let text = "let p = len.div_ceil(8) * 8;\nconst C: u32 = 128 << 20;\nlet l = t.0 & 7;\n";
        let f = scan_text("cli/src/y.rs", text);
        let pats: Vec<_> = f.iter().map(|f| f.pattern).collect();
        assert_eq!(pats, ["div_ceil(8)", "128 << 20", "& 7"]);
    }

    #[test]
    fn numbers_inside_longer_numbers_and_names_are_not_findings() {
        let text = "let a = 40960;\nlet b = X4096;\nlet c = 0x10000;\nlet d = x & 70;\n";
        assert!(scan_text("runtime/stream/src/x.rs", text).is_empty());
    }

    #[test]
    fn comments_strings_limits_and_test_code_are_not_scanned() {
        let text = "// 4096 octets\nlet s = \"4096\";\n#[cfg(test)]\nlet x = 4096;\n";
        assert!(scan_text("runtime/stream/src/x.rs", text).is_empty());
        assert!(scan_text(LIMITS, "pub const A: usize = 4096;\n").is_empty());
        assert!(scan_text("runtime/convert/src/tests.rs", "let x = 4096;\n").is_empty());
    }

    #[test]
    fn allowed_lines_pass_only_in_their_file() {
        let line = "const XEN_MFN_BASE: u64 = 0x1000;\n";
        assert!(scan_text("runtime/sim/src/pv.rs", line).is_empty());
        assert_eq!(scan_text("runtime/sim/src/lib.rs", line).len(), 1);
    }
}
