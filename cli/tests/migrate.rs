//! `xenmig sim migrate` against `xenmig sim migrate-receive`, two processes over loopback
//! TCP: live migrations with matching digests, a side killed at every protocol point (xl's
//! promise: one copy of the guest survives, running when its toolstack survives, or the
//! documented undefined state after the point of no return), Remus failover to the last
//! complete checkpoint, COLO (the secondary's copy runs between checkpoints and goes on from
//! the last one), and the captured wire (xl's exact messages; the stream verifies strictly
//! in xl and libxl framing, a COLO one only when read as COLO).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

fn xenmig() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xenmig"))
}

/// A receiver listening on a free loopback port.
struct Receiver {
    child: Child,
    addr: String,
    first: String,
}

fn receiver(args: &[&str]) -> Receiver {
    let mut child = xenmig()
        .args(["sim", "migrate-receive", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let addr = first
        .trim()
        .strip_prefix("listening: ")
        .unwrap()
        .to_string();
    child.stdout = Some(unsafe_into_stdout(out));
    Receiver { child, addr, first }
}

/// Gives the pipe back to the child handle (nothing was buffered past the first line, which
/// the receiver flushes before accepting).
fn unsafe_into_stdout(r: BufReader<std::process::ChildStdout>) -> std::process::ChildStdout {
    assert!(r.buffer().is_empty());
    r.into_inner()
}

impl Receiver {
    fn wait(self) -> Output {
        let mut o = self.child.wait_with_output().unwrap();
        o.stdout = [self.first.as_bytes(), &o.stdout].concat();
        o
    }
}

fn send(addr: &str, args: &[&str]) -> Output {
    xenmig()
        .args(["sim", "migrate"])
        .args(args)
        .arg(addr)
        .output()
        .unwrap()
}

fn lines(o: &Output, prefix: &str) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(prefix).map(str::to_string))
        .collect()
}

fn last_guest(o: &Output) -> Option<String> {
    lines(o, "guest: ").pop()
}

fn show(s: &Output, r: &Output) -> String {
    format!(
        "sender {:?}\n{}{}\nreceiver {:?}\n{}{}",
        s.status,
        String::from_utf8_lossy(&s.stdout),
        String::from_utf8_lossy(&s.stderr),
        r.status,
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    )
}

fn migrate(sender: &[&str], recv: &[&str]) -> (Output, Output) {
    let r = receiver(recv);
    let s = send(&r.addr, sender);
    let r = r.wait();
    (s, r)
}

#[test]
fn hvm_and_pv64_migrate_live_with_matching_digests() {
    for (guest, compress) in [("hvm", false), ("pv", false), ("hvm", true), ("pv", true)] {
        let mut sargs = vec![
            "--live",
            "--guest",
            guest,
            "--memory",
            "16M",
            "--dirty-rate",
            "3000",
        ];
        let mut rargs = vec![];
        if guest == "pv" {
            sargs.extend(["--width", "64"]);
        }
        if compress {
            sargs.push("--compress");
            rargs.push("--compress");
        }
        let (s, r) = migrate(&sargs, &rargs);
        let ctx = show(&s, &r);
        assert!(s.status.success() && r.status.success(), "{ctx}");
        let sd = lines(&s, "state-digest: ");
        assert_eq!(sd.len(), 1, "{ctx}");
        assert_eq!(lines(&r, "state-digest: "), sd, "{ctx}");
        assert_eq!(last_guest(&s).as_deref(), Some("destroyed"), "{ctx}");
        assert_eq!(lines(&r, "guest: "), ["paused", "running"], "{ctx}");
        let m = lines(&s, "migrated: ");
        assert!(
            m.len() == 1 && m[0].contains("octets") && m[0].contains("downtime"),
            "{ctx}"
        );
    }
}

/// The copies that still exist after a run: a killed toolstack leaves its domain in the last
/// state it printed; a receiver that never printed `paused` has no complete copy.
fn copies(s: &Output, r: &Output) -> (usize, usize) {
    support::copies(&[last_guest(s), last_guest(r)])
}

const GUEST: [&str; 7] = [
    "--live",
    "--guest",
    "hvm",
    "--memory",
    "32M",
    "--dirty-rate",
    "2000",
];

#[test]
fn sender_killed_before_the_point_of_no_return_never_loses_the_guest() {
    for fault in ["before-image", "mid-image:1000000", "after-received"] {
        let mut sargs = GUEST.to_vec();
        sargs.extend(["--fault", fault]);
        let (s, r) = migrate(&sargs, &[]);
        let ctx = format!("{fault}\n{}", show(&s, &r));
        assert_eq!(s.status.code(), Some(137), "{ctx}");
        assert_eq!(r.status.code(), Some(1), "{ctx}");
        // The receiver never ran its copy; the sender's domain survives its toolstack.
        assert!(
            !lines(&r, "guest: ").iter().any(|g| g == "running"),
            "{ctx}"
        );
        assert_eq!(copies(&s, &r).0, 1, "{ctx}");
        if fault == "after-received" {
            // Restored paused, then destroyed when the sender went away.
            assert_eq!(lines(&r, "guest: "), ["paused", "destroyed"], "{ctx}");
            assert_eq!(last_guest(&s).as_deref(), Some("suspended"), "{ctx}");
        } else {
            assert!(lines(&r, "guest: ").is_empty(), "{ctx}");
        }
    }
}

#[test]
fn sender_killed_after_the_point_of_no_return_leaves_the_receiver_running() {
    let mut sargs = GUEST.to_vec();
    sargs.extend(["--fault", "after-go"]);
    let (s, r) = migrate(&sargs, &[]);
    let ctx = show(&s, &r);
    assert_eq!(s.status.code(), Some(137), "{ctx}");
    assert!(r.status.success(), "{ctx}");
    assert_eq!(lines(&r, "guest: "), ["paused", "running"], "{ctx}");
    assert_eq!(lines(&r, "state-digest: "), lines(&s, "state-digest: "));
    // The sender's suspended copy is what xl leaves after the point of no return.
    assert_eq!(last_guest(&s).as_deref(), Some("suspended"), "{ctx}");
}

#[test]
fn receiver_failing_before_domain_received_makes_the_sender_resume() {
    for fault in ["before-image", "mid-image:1000000"] {
        let (s, r) = migrate(&GUEST, &["--fault", fault]);
        let ctx = format!("{fault}\n{}", show(&s, &r));
        assert_eq!(r.status.code(), Some(137), "{ctx}");
        assert_eq!(s.status.code(), Some(1), "{ctx}");
        assert_eq!(last_guest(&s).as_deref(), Some("resumed"), "{ctx}");
        assert!(lines(&r, "guest: ").is_empty(), "{ctx}");
        assert_eq!(copies(&s, &r), (1, 1), "{ctx}");
    }
}

#[test]
fn receiver_reporting_a_failed_unpause_makes_the_sender_resume() {
    let (s, r) = migrate(&GUEST, &["--fault", "unpause-fails"]);
    let ctx = show(&s, &r);
    assert_eq!(s.status.code(), Some(1), "{ctx}");
    assert_eq!(r.status.code(), Some(1), "{ctx}");
    assert_eq!(lines(&r, "guest: "), ["paused", "destroyed"], "{ctx}");
    assert_eq!(last_guest(&s).as_deref(), Some("resumed"), "{ctx}");
    assert_eq!(copies(&s, &r), (1, 1), "{ctx}");
}

#[test]
fn receiver_killed_after_domain_received_is_the_undefined_point() {
    for fault in ["after-received", "after-go"] {
        let (s, r) = migrate(&GUEST, &["--fault", fault]);
        let ctx = format!("{fault}\n{}", show(&s, &r));
        assert_eq!(r.status.code(), Some(137), "{ctx}");
        // The sender passed (or tried to pass) the point of no return: it neither resumes
        // nor destroys its copy, and says so.
        assert_eq!(s.status.code(), Some(2), "{ctx}");
        assert_eq!(lines(&s, "migration: "), ["undefined"], "{ctx}");
        assert_eq!(last_guest(&s).as_deref(), Some("suspended"), "{ctx}");
        assert_eq!(last_guest(&r).as_deref(), Some("paused"), "{ctx}");
    }
}

#[test]
fn remus_sender_killed_after_k_checkpoints_fails_over_to_checkpoint_k() {
    for compress in [false, true] {
        let k = 3;
        let fault = format!("checkpoint:{k}");
        let mut sargs = vec![
            "--guest",
            "hvm",
            "--memory",
            "16M",
            "--dirty-rate",
            "5000",
            "--remus",
            "8",
            "--fault",
            &fault,
        ];
        let mut rargs = vec!["--remus"];
        if compress {
            sargs.push("--compress");
            rargs.push("--compress");
        }
        let (s, r) = migrate(&sargs, &rargs);
        let ctx = show(&s, &r);
        assert_eq!(s.status.code(), Some(137), "{ctx}");
        assert!(r.status.success(), "{ctx}");
        let epochs: Vec<String> = String::from_utf8_lossy(&s.stdout)
            .lines()
            .filter_map(|l| l.split(" state-digest: ").nth(1).map(str::to_string))
            .collect();
        assert_eq!(epochs.len(), k, "{ctx}");
        assert_ne!(
            epochs[0],
            epochs[k - 1],
            "the guest ran between checkpoints"
        );
        assert_eq!(
            lines(&r, "state-digest: "),
            [epochs[k - 1].clone()],
            "{ctx}"
        );
        assert_eq!(lines(&r, "guest: "), ["paused", "running"], "{ctx}");
    }
}

#[test]
fn remus_until_the_link_breaks_fails_over_to_the_last_complete_checkpoint() {
    // `--remus 0`: the sender checkpoints every 100 ms until its link breaks; here it is
    // killed (SIGKILL) once it has reported three checkpoints.
    let r = receiver(&["--remus"]);
    let mut child = xenmig()
        .args(["sim", "migrate", "--guest", "hvm", "--memory", "16M"])
        .args(["--dirty-rate", "5000", "--remus", "0"])
        .arg(&r.addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut epochs = Vec::new();
    let mut line = String::new();
    while epochs.len() < 3 {
        line.clear();
        assert_ne!(
            out.read_line(&mut line).unwrap(),
            0,
            "the sender stopped early"
        );
        if let Some(d) = line.trim().split(" state-digest: ").nth(1) {
            epochs.push(d.to_string());
        }
    }
    child.kill().unwrap();
    let _ = child.wait();
    // What it printed before it died counts too.
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    epochs.extend(
        rest.lines()
            .filter_map(|l| l.split(" state-digest: ").nth(1).map(str::to_string)),
    );
    let r = r.wait();
    let ctx = format!(
        "sender epochs {epochs:?}\nreceiver {:?}\n{}{}",
        r.status,
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(r.status.success(), "{ctx}");
    assert_eq!(lines(&r, "guest: "), ["paused", "running"], "{ctx}");
    let stderr = String::from_utf8_lossy(&r.stderr);
    let n: usize = stderr
        .split("the stream broke after checkpoint ")
        .nth(1)
        .and_then(|t| t.split(':').next())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("no failover report\n{ctx}"));
    // The sender prints epoch K's digest once the libxc CHECKPOINT is out (postcopy), before
    // libxl's CHECKPOINT_END closes the checkpoint on the wire: killed between the two, the
    // receiver rightly fails over to checkpoint K - 1.
    assert!(n >= 2, "{ctx}");
    let got = lines(&r, "state-digest: ");
    if n <= epochs.len() {
        assert_eq!(got, [epochs[n - 1].clone()], "{ctx}");
    } else {
        // Killed after checkpoint n was out but before the sender printed it.
        assert_eq!(n, epochs.len() + 1, "{ctx}");
        assert!(!epochs.contains(&got[0]), "{ctx}");
    }
}

/// What crossed the proxy: sender → receiver, receiver → sender.
type Captured = thread::JoinHandle<(Vec<u8>, Vec<u8>)>;

/// A forwarding proxy that records both directions.
fn proxy(to: String) -> (String, Captured) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = thread::spawn(move || {
        let (a, _) = l.accept().unwrap();
        let b = TcpStream::connect(&to).unwrap();
        let pump = |mut from: TcpStream, mut to: TcpStream, log: Arc<Mutex<Vec<u8>>>| {
            thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            log.lock().unwrap().extend_from_slice(&buf[..n]);
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = to.shutdown(std::net::Shutdown::Write);
            })
        };
        let fwd = Arc::new(Mutex::new(Vec::new()));
        let back = Arc::new(Mutex::new(Vec::new()));
        let t1 = pump(a.try_clone().unwrap(), b.try_clone().unwrap(), fwd.clone());
        let t2 = pump(b, a, back.clone());
        t1.join().unwrap();
        t2.join().unwrap();
        let f = std::mem::take(&mut *fwd.lock().unwrap());
        let b = std::mem::take(&mut *back.lock().unwrap());
        (f, b)
    });
    (addr, h)
}

fn verify(frame: &str, bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(format!("wire.{frame}"));
    std::fs::write(&p, bytes).unwrap();
    let v = xenmig()
        .args(["verify", "--strict", "-f", frame])
        .arg(&p)
        .output()
        .unwrap();
    assert!(v.status.success(), "{frame}: {v:?}");
}

#[test]
fn the_wire_is_xls_messages_around_a_strictly_valid_stream() {
    for guest in ["hvm", "pv"] {
        let r = receiver(&[]);
        let (addr, h) = proxy(r.addr.clone());
        let s = send(
            &addr,
            &[
                "--live",
                "--guest",
                guest,
                "--memory",
                "8M",
                "--dirty-rate",
                "1000",
            ],
        );
        let r = r.wait();
        let (fwd, back) = h.join().unwrap();
        let ctx = show(&s, &r);
        assert!(s.status.success() && r.status.success(), "{ctx}");
        // Receiver → sender: banner, "domain received", the report and status 0.
        let expected_back = [
            &b"xl migration receiver ready, send binary domain data.\n"[..],
            b"domain received, ready to unpause\0",
            b"my copy unpause results are as follows\0",
            &[0],
        ]
        .concat();
        assert_eq!(back, expected_back, "{ctx}");
        // Sender → receiver: the xl save file, then "cleared to unpause".
        let go = b"domain is yours, you are cleared to unpause\0";
        assert!(fwd.ends_with(go), "{ctx}");
        let xl = &fwd[..fwd.len() - go.len()];
        assert!(xl.starts_with(b"Xen saved domain, xl format\n \0 \r"));
        verify("xl", xl);
        let optdata = u32::from_ne_bytes(xl[44..48].try_into().unwrap()) as usize;
        verify("libxl", &xl[48 + optdata..]);
    }
}

/// `epoch K state-digest: HEX` lines, in order.
fn epoch_digests(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split(" state-digest: ").nth(1).map(str::to_string))
        .collect()
}

#[test]
fn colo_sender_killed_after_k_checkpoints_leaves_the_secondary_running_from_checkpoint_k() {
    for compress in [false, true] {
        let k = 3;
        let fault = format!("checkpoint:{k}");
        let mut sargs = vec![
            "--guest",
            "hvm",
            "--memory",
            "16M",
            "--dirty-rate",
            "5000",
            "--colo",
            "8",
            "--fault",
            &fault,
        ];
        // The secondary's copy runs between checkpoints and dirties pages of its own.
        let mut rargs = vec!["--colo", "--dirty-rate", "3000"];
        if compress {
            sargs.push("--compress");
            rargs.push("--compress");
        }
        let (s, r) = migrate(&sargs, &rargs);
        let ctx = show(&s, &r);
        assert_eq!(s.status.code(), Some(137), "{ctx}");
        assert!(r.status.success(), "{ctx}");
        let epochs = epoch_digests(&s);
        assert_eq!(epochs.len(), k, "{ctx}");
        assert_ne!(
            epochs[0],
            epochs[k - 1],
            "the guest ran between checkpoints"
        );
        // Each checkpoint as applied on the secondary is the primary's state at its suspend.
        assert_eq!(epoch_digests(&r), epochs, "{ctx}");
        assert_eq!(
            lines(&r, "state-digest: "),
            [epochs[k - 1].clone()],
            "{ctx}"
        );
        assert_eq!(lines(&r, "guest: "), ["running"], "{ctx}");
    }
}

#[test]
fn a_colo_wire_is_a_forward_stream_that_verifies_only_as_colo() {
    let r = receiver(&["--colo", "--dirty-rate", "2000"]);
    let (addr, h) = proxy(r.addr.clone());
    let n = 4;
    let s = send(
        &addr,
        &[
            "--guest",
            "hvm",
            "--memory",
            "8M",
            "--dirty-rate",
            "3000",
            "--colo",
            "4",
        ],
    );
    let r = r.wait();
    let (fwd, back) = h.join().unwrap();
    let ctx = show(&s, &r);
    assert!(s.status.success() && r.status.success(), "{ctx}");
    let epochs = epoch_digests(&s);
    assert_eq!(epochs.len(), n, "{ctx}");
    assert_eq!(epoch_digests(&r), epochs, "{ctx}");
    assert_eq!(
        lines(&r, "state-digest: "),
        [epochs[n - 1].clone()],
        "{ctx}"
    );
    // Receiver → sender: the banner, then the secondary's records (READY first).
    let banner = b"xl migration receiver ready, send binary domain data.\n";
    assert!(back.starts_with(banner), "{ctx}");
    assert_eq!(
        back[banner.len()..banner.len() + 16],
        [5, 0, 0, 0, 8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]
    );
    // Sender → receiver: the xl save file and nothing else; strictly valid read as COLO.
    assert!(fwd.starts_with(b"Xen saved domain, xl format\n \0 \r"));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("wire.xl");
    std::fs::write(&p, &fwd).unwrap();
    let check = |colo: bool| {
        let mut c = xenmig();
        c.args(["verify", "--strict", "-f", "xl"]);
        if colo {
            c.arg("--colo");
        }
        c.arg(&p).output().unwrap()
    };
    let v = check(true);
    assert!(v.status.success(), "{v:?}");
    let v = check(false);
    assert_eq!(v.status.code(), Some(1), "{v:?}");
}

#[test]
fn colo_needs_an_hvm_guest() {
    let o = send(
        "127.0.0.1:9",
        &["--guest", "pv", "--memory", "8M", "--colo", "2"],
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("HVM"), "{o:?}");
}

#[test]
fn colo_sender_killed_inside_a_checkpoint_leaves_the_secondary_at_the_last_complete_one() {
    let sargs = [
        "--guest",
        "hvm",
        "--memory",
        "8M",
        "--dirty-rate",
        "4000",
        "--colo",
        "5",
    ];
    let rargs = ["--colo", "--dirty-rate", "2000"];
    // A whole run, for the number of octets that cross the wire.
    let (s, r) = migrate(&sargs, &rargs);
    assert!(s.status.success() && r.status.success(), "{}", show(&s, &r));
    let total: u64 = lines(&s, "migrated: ")[0]
        .split(" octets on the wire")
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    let mut targets = std::collections::BTreeSet::new();
    for percent in [35, 55, 75, 95] {
        let limit = format!("mid-image:{}", total * percent / 100);
        let mut killed = sargs.to_vec();
        killed.extend(["--fault", &limit]);
        let (s, r) = migrate(&killed, &rargs);
        let ctx = format!("{limit}\n{}", show(&s, &r));
        assert_eq!(s.status.code(), Some(137), "{ctx}");
        let sent = epoch_digests(&s);
        let applied = epoch_digests(&r);
        if applied.is_empty() {
            // Killed inside the first checkpoint: nothing to fail over to, nothing runs.
            assert!(sent.is_empty(), "{ctx}");
            assert_eq!(r.status.code(), Some(1), "{ctx}");
            assert!(lines(&r, "guest: ").is_empty(), "{ctx}");
            targets.insert(0);
            continue;
        }
        assert!(r.status.success(), "{ctx}");
        // The secondary applied every checkpoint the primary completed, and perhaps the one
        // whose answer the primary did not live to read; it runs on from the last.
        assert_eq!(applied[..sent.len()], sent[..], "{ctx}");
        assert!(applied.len() <= sent.len() + 1, "{ctx}");
        assert_eq!(
            lines(&r, "state-digest: "),
            [applied[applied.len() - 1].clone()],
            "{ctx}"
        );
        assert_eq!(lines(&r, "guest: "), ["running"], "{ctx}");
        targets.insert(applied.len());
    }
    // 35% of the wire is inside the first checkpoint (the whole memory); the others land in
    // different later ones.
    assert!(targets.contains(&0), "{targets:?}");
    assert!(
        targets.len() >= 3,
        "kills at different checkpoints: {targets:?}"
    );
}

#[test]
fn colo_secondary_killed_leaves_the_primary_running() {
    // The first checkpoint is about 8.5 MB of this guest; the secondary dies inside the
    // second one.
    let (s, r) = migrate(
        &[
            "--guest",
            "hvm",
            "--memory",
            "8M",
            "--dirty-rate",
            "3000",
            "--colo",
            "6",
        ],
        &[
            "--colo",
            "--dirty-rate",
            "2000",
            "--fault",
            "mid-image:10000000",
        ],
    );
    let ctx = show(&s, &r);
    assert_eq!(r.status.code(), Some(137), "{ctx}");
    assert_eq!(s.status.code(), Some(1), "{ctx}");
    assert_eq!(epoch_digests(&r), epoch_digests(&s)[..1], "{ctx}");
    // The primary's copy runs on: COLO's failover on that side.
    assert_eq!(last_guest(&s).as_deref(), Some("resumed"), "{ctx}");
}

/// A proxy that forwards the first `octets` octets from the sender, then goes silent both
/// ways: it holds both connections open and moves nothing, as a cut cable does (no FIN, no
/// reset), until `release` is sent.
fn black_hole(to: String, octets: usize) -> (String, std::sync::mpsc::Sender<()>, Captured) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let h = thread::spawn(move || {
        let (mut a, _) = l.accept().unwrap();
        let mut b = TcpStream::connect(&to).unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let back = {
            let (mut from, mut to) = (b.try_clone().unwrap(), a.try_clone().unwrap());
            let cut = cut.clone();
            thread::spawn(move || {
                from.set_read_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
                let mut buf = vec![0u8; 1 << 16];
                let mut moved = Vec::new();
                while !cut.load(Ordering::SeqCst) {
                    match from.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            moved.extend_from_slice(&buf[..n]);
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => break,
                    }
                }
                moved
            })
        };
        let mut buf = vec![0u8; 1 << 16];
        let mut moved = Vec::new();
        while moved.len() < octets {
            let want = buf.len().min(octets - moved.len());
            match a.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    moved.extend_from_slice(&buf[..n]);
                    if b.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        cut.store(true, Ordering::SeqCst);
        let back = back.join().unwrap();
        // Silent until released; then both connections close.
        let _ = released.recv();
        let _ = (a.flush(), b.flush());
        (moved, back)
    });
    (addr, release, h)
}

#[test]
fn a_link_that_goes_silent_mid_stream_rolls_back_after_the_timeout() {
    // Regression: with no deadline a dead link (no FIN, no reset) left both sides blocked
    // forever. Now each gives up after --timeout seconds of silence: the sender was not
    // cleared, so its guest runs on; the receiver unpaused nothing.
    let r = receiver(&["--timeout", "2"]);
    let (addr, release, h) = black_hole(r.addr.clone(), 4 << 20);
    let started = std::time::Instant::now();
    let s = send(
        &addr,
        &[
            "--live",
            "--guest",
            "hvm",
            "--memory",
            "16M",
            "--dirty-rate",
            "2000",
            "--timeout",
            "2",
        ],
    );
    let r = r.wait();
    let took = started.elapsed();
    release.send(()).unwrap();
    let (fwd, _) = h.join().unwrap();
    let ctx = show(&s, &r);
    assert_eq!(fwd.len(), 4 << 20, "{ctx}");
    assert_eq!(s.status.code(), Some(1), "{ctx}");
    assert_eq!(
        lines(&s, "guest: "),
        ["running", "resumed"],
        "never suspended, resumed: {ctx}"
    );
    assert!(
        String::from_utf8_lossy(&s.stderr).contains("no octet moved for 2.0 s"),
        "{ctx}"
    );
    assert_eq!(r.status.code(), Some(1), "{ctx}");
    assert!(lines(&r, "guest: ").is_empty(), "{ctx}");
    assert!(lines(&r, "state-digest: ").is_empty(), "{ctx}");
    // One timeout, not one per buffer still to flush (nor per trickle of buffer space the
    // stalled socket frees).
    println!("gave up after {took:?}");
    assert!(
        took < std::time::Duration::from_millis(4500),
        "{took:?} {ctx}"
    );
}

#[test]
fn a_remus_link_that_goes_silent_fails_over_after_the_timeout() {
    // The secondary hears nothing more after 12 MB (the first checkpoint of this 8 MiB guest
    // is about 8.5 MB): after a second of silence it fails over to the last complete
    // checkpoint, whose digest the primary printed.
    let r = receiver(&["--remus", "--timeout", "1"]);
    let (addr, release, h) = black_hole(r.addr.clone(), 12 << 20);
    let s = send(
        &addr,
        &[
            "--guest",
            "hvm",
            "--memory",
            "8M",
            "--dirty-rate",
            "5000",
            "--remus",
            "0",
            "--timeout",
            "1",
        ],
    );
    let r = r.wait();
    release.send(()).unwrap();
    let _ = h.join().unwrap();
    let ctx = show(&s, &r);
    assert!(r.status.success(), "{ctx}");
    assert_eq!(lines(&r, "guest: "), ["paused", "running"], "{ctx}");
    let epochs = epoch_digests(&s);
    let n = failed_over_to(&r).unwrap_or_else(|| panic!("no failover report\n{ctx}"));
    assert!(n >= 1 && n <= epochs.len(), "{ctx}");
    assert_eq!(
        lines(&r, "state-digest: "),
        [epochs[n - 1].clone()],
        "{ctx}"
    );
    // The primary's writes stalled: it gave up on its secondary and runs on.
    assert_eq!(s.status.code(), Some(1), "{ctx}");
    assert_eq!(last_guest(&s).as_deref(), Some("resumed"), "{ctx}");
}

/// N of the receiver's "the stream broke after checkpoint N".
fn failed_over_to(r: &Output) -> Option<usize> {
    String::from_utf8_lossy(&r.stderr)
        .split("the stream broke after checkpoint ")
        .nth(1)
        .and_then(|t| t.split(':').next())
        .and_then(|t| t.trim().parse().ok())
}
