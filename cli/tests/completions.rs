//! `xenmig completions SHELL`: the scripts complete xenmig's commands (bash's is driven here
//! the way bash drives it on TAB), and `xenmig manpages DIR` writes the pages the package
//! installs.

use std::process::{Command, Output};

fn xenmig() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xenmig"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn script(shell: &str) -> String {
    let out = xenmig().args(["completions", shell]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    text(&out.stdout)
}

/// What bash offers for `words` (the last one being completed), through the script's
/// completion function called as `complete -F` calls it.
fn bash_complete(words: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("xenmig.bash");
    std::fs::write(&file, script("bash")).unwrap();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let prev = if cword > 0 { words[cword - 1] } else { "" };
    let program = format!(
        "source '{}'\n\
         f=$(complete -p xenmig | sed -n 's/.*-F \\([^ ]*\\).*/\\1/p')\n\
         COMP_WORDS=({})\n\
         COMP_CWORD={cword}\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         COMPREPLY=()\n\
         \"$f\" xenmig '{}' '{prev}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        file.display(),
        quoted.join(" "),
        words[cword],
    );
    let out: Output = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    text(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_subcommands() {
    assert_eq!(bash_complete(&["xenmig", "ver"]), ["verify"]);
    let mut sim = bash_complete(&["xenmig", "sim", "mig"]);
    sim.sort();
    assert_eq!(sim, ["migrate", "migrate-receive"]);
    let all = bash_complete(&["xenmig", ""]);
    for c in [
        "verify",
        "info",
        "dump",
        "convert-legacy",
        "sim",
        "save-helper",
        "completions",
    ] {
        assert!(all.iter().any(|w| w == c), "{c} not offered: {all:?}");
    }
    assert!(!all.iter().any(|w| w == "manpages"), "{all:?}");
}

#[test]
fn bash_completes_option_values() {
    let mut shells = bash_complete(&["xenmig", "completions", ""]);
    shells.sort();
    for s in ["bash", "fish", "zsh"] {
        assert!(shells.iter().any(|w| w == s), "{shells:?}");
    }
    assert_eq!(bash_complete(&["xenmig", "verify", "--len"]), ["--lenient"]);
}

#[test]
fn zsh_and_fish_scripts_name_the_commands() {
    let zsh = script("zsh");
    assert!(zsh.starts_with("#compdef xenmig"), "{zsh}");
    let fish = script("fish");
    for c in ["verify", "convert-legacy", "migrate-receive"] {
        assert!(zsh.contains(c), "zsh: {c}");
        assert!(fish.contains(c), "fish: {c}");
    }
    assert!(fish.contains("complete -c xenmig"));
    assert!(!zsh.contains("manpages") && !fish.contains("manpages"));
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = xenmig().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
}

#[test]
fn manpages_writes_a_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = xenmig()
        .arg("manpages")
        .arg(dir.path().join("man1"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("man1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for page in [
        "xenmig.1",
        "xenmig-verify.1",
        "xenmig-convert-legacy.1",
        "xenmig-sim-migrate-receive.1",
        "xenmig-save-helper.1",
        "xenmig-completions.1",
    ] {
        assert!(names.iter().any(|n| n == page), "{page} missing: {names:?}");
    }
    assert_eq!(text(&out.stdout).lines().count(), names.len());
    let verify = std::fs::read_to_string(dir.path().join("man1/xenmig-verify.1")).unwrap();
    assert!(verify.contains("EXIT STATUS"));
    let out = xenmig().arg("manpages").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn help_and_page_give_the_same_exit_statuses() {
    let help = text(&xenmig().args(["verify", "--help"]).output().unwrap().stdout);
    let dir = tempfile::tempdir().unwrap();
    let out = xenmig().arg("manpages").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let page = std::fs::read_to_string(dir.path().join("xenmig-verify.1")).unwrap();
    let codes = |s: &str| -> Vec<String> {
        s.lines()
            .filter_map(|l| l.strip_prefix("\\fB"))
            .filter_map(|l| l.strip_suffix("\\fR"))
            .filter(|c| c.chars().all(|c| c.is_ascii_digit()))
            .map(str::to_string)
            .collect()
    };
    let in_page = codes(&page);
    let in_help: Vec<String> = help
        .split("Exit status:\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| c.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .collect();
    assert_eq!(in_page, ["0", "1", "2"]);
    assert_eq!(in_help, in_page);
}

/// Started under the names the package links to it, the binary's `--help` still ends with
/// the manual of the command it then is.
#[test]
fn linked_names_print_their_manual() {
    let dir = tempfile::tempdir().unwrap();
    for (name, expect) in [
        ("libxl-save-helper", "XENMIG_SAVE_HELPER_BACKEND"),
        ("convert-legacy-stream", "LIBXL_CONVERT_HELPER"),
    ] {
        let link = dir.path().join(name);
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_xenmig"), &link).unwrap();
        let out = Command::new(&link).arg("--help").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
        let help = text(&out.stdout);
        assert!(help.contains("Exit status:"), "{name}: {help}");
        assert!(help.contains(expect), "{name}: {help}");
    }
    let out = xenmig().args(["save-helper", "--help"]).output().unwrap();
    let help = text(&out.stdout);
    assert!(
        help.contains("\n  254 ") && help.contains("\n  255 "),
        "{help}"
    );
}
