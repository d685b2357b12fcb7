//! `xenmig sim save --frame libxc|libxl|xl` and `xenmig sim restore` (framing detected): the
//! same `state-digest:` on both sides, device model included for HVM guests in libxl and xl
//! framing; Remus in xl framing fails over to the last checkpoint; every stream verifies.

use std::process::{Command, Stdio};

fn xenmig() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xenmig"))
}

fn digests(out: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.split("state-digest: ").nth(1).map(str::to_string))
        .collect()
}

#[test]
fn every_framing_round_trips_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let mut by_frame = Vec::new();
    for guest in ["pv", "hvm"] {
        for frame in ["libxc", "libxl", "xl"] {
            let path = dir.path().join(format!("{guest}.{frame}"));
            let save = xenmig()
                .args([
                    "sim", "save", "--guest", guest, "--memory", "8M", "--frame", frame,
                ])
                .arg("-o")
                .arg(&path)
                .output()
                .unwrap();
            assert!(save.status.success(), "{guest} {frame}: {save:?}");
            let src = digests(&save.stdout);
            assert_eq!(src.len(), 1, "{guest} {frame}");
            let restore = xenmig()
                .args(["sim", "restore"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(restore.status.success(), "{guest} {frame}: {restore:?}");
            assert_eq!(digests(&restore.stdout), src, "{guest} {frame}");
            let verify = xenmig()
                .args(["verify", "--strict", "-f", frame])
                .arg(&path)
                .output()
                .unwrap();
            assert!(verify.status.success(), "{guest} {frame}: {verify:?}");
            by_frame.push((guest, frame, src[0].clone()));
        }
    }
    // PV digests do not depend on the framing; HVM ones include the device model when the
    // stream can carry it.
    let d = |g: &str, f: &str| {
        by_frame
            .iter()
            .find(|x| x.0 == g && x.1 == f)
            .unwrap()
            .2
            .clone()
    };
    assert_eq!(d("pv", "libxc"), d("pv", "libxl"));
    assert_eq!(d("pv", "libxl"), d("pv", "xl"));
    assert_ne!(d("hvm", "libxc"), d("hvm", "libxl"));
    assert_eq!(d("hvm", "libxl"), d("hvm", "xl"));
}

#[test]
fn remus_in_xl_framing_through_a_pipe() {
    let mut save = xenmig()
        .args([
            "sim",
            "save",
            "--guest",
            "hvm",
            "--memory",
            "8M",
            "--frame",
            "xl",
            "--remus",
            "3",
            "--dirty-rate",
            "2000",
            "-o",
            "-",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let restore = xenmig()
        .args(["sim", "restore", "-"])
        .stdin(save.stdout.take().unwrap())
        .output()
        .unwrap();
    let mut err = Vec::new();
    std::io::Read::read_to_end(&mut save.stderr.take().unwrap(), &mut err).unwrap();
    assert!(save.wait().unwrap().success());
    let epochs = digests(&err);
    assert_eq!(epochs.len(), 3, "{}", String::from_utf8_lossy(&err));
    assert!(restore.status.success(), "{restore:?}");
    assert_eq!(digests(&restore.stdout), [epochs[2].clone()]);
    assert!(String::from_utf8_lossy(&restore.stderr).contains("failed over"));
}

#[test]
fn remus_saves_verify_and_restore_in_every_framing() {
    // What `sim save --remus` writes, `verify` and `sim restore` agree on: a bare libxc
    // image (the default) restores each CHECKPOINT as the epoch boundary, as libxc's own
    // restore reads what libxc's save writes on its fd.
    let dir = tempfile::tempdir().unwrap();
    for guest in ["pv", "hvm"] {
        for frame in [None, Some("libxl"), Some("xl")] {
            let what = format!("{guest} {frame:?}");
            let path = dir
                .path()
                .join(format!("{guest}-{}", frame.unwrap_or("default")));
            let mut cmd = xenmig();
            cmd.args(["sim", "save", "--guest", guest, "--memory", "4M"])
                .args(["--remus", "2", "--dirty-rate", "2000", "-o"])
                .arg(&path);
            if let Some(f) = frame {
                cmd.args(["--frame", f]);
            }
            let save = cmd.output().unwrap();
            assert!(save.status.success(), "{what}: {save:?}");
            let epochs = digests(&save.stdout);
            assert_eq!(epochs.len(), 2, "{what}");
            for strictness in ["--strict", "--lenient"] {
                let verify = xenmig()
                    .args(["verify", strictness])
                    .arg(&path)
                    .output()
                    .unwrap();
                assert!(verify.status.success(), "{what}: {verify:?}");
                assert!(
                    String::from_utf8_lossy(&verify.stdout).contains("2 checkpoints"),
                    "{what}: {verify:?}"
                );
            }
            let restore = xenmig()
                .args(["sim", "restore"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(restore.status.success(), "{what}: {restore:?}");
            assert_eq!(digests(&restore.stdout), [epochs[1].clone()], "{what}");
            assert!(String::from_utf8_lossy(&restore.stderr).contains("failed over"));
        }
    }
}
