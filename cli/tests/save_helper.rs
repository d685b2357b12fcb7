//! `xenmig save-helper` replayed against every capture of the real libxl ⇄ libxl-save-helper
//! protocol in `tests/vectors/save-helper/` (Xen 4.17.7).
//!
//! Each test plays libxl from one capture: it starts the helper with the capture's argv (the
//! fd numbers remapped to fds made here), answers every callback with the reply the capture's
//! libxl gave to the same message type in the same order, and plays libxl's part of the stream
//! fd: the libxl header and LIBXC_CONTEXT before a save, CHECKPOINT_END at each Remus
//! checkpoint, the libxl records after `complete`; for a restore, libxl's records of each
//! checkpoint. Restores read the stream the paired save capture's replay wrote. Checked: the
//! callback messages (all but log and progress) with their deterministic arguments, the
//! progress labels, the helper's own log lines, the exit status, and that a restore read the
//! stream fd exactly up to the end of the libxc image.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use xenmig::libxl;
use xenmig::reader::{Item, Reader, ReaderOptions};
use xenmig::savehelper::protocol::{msgtype, read_message, write_reply, Message};
use xenmig::writer::StreamWriter;
use xenmig::Layer;

fn captures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/save-helper")
}

/// One capture: argv, the helper's messages, libxl's replies.
struct Capture {
    name: String,
    argv: Vec<String>,
    messages: Vec<Message>,
    replies: Vec<i32>,
}

impl Capture {
    fn load(name: &str) -> Capture {
        let dir = captures().join(name);
        let meta = std::fs::read_to_string(dir.join("meta.txt")).expect("meta.txt");
        let argv = meta
            .lines()
            .filter(|l| l.starts_with("argv["))
            .filter_map(|l| l.split_once(" = "))
            .map(|(_, v)| v.trim_matches('"').to_string())
            .collect();
        let out = std::fs::read(dir.join("stdout.bin")).expect("stdout.bin");
        let mut r = &out[..];
        let mut messages = Vec::new();
        while let Some(m) = read_message(&mut r).expect("the capture decodes") {
            messages.push(m);
        }
        let input = std::fs::read(dir.join("stdin.bin")).expect("stdin.bin");
        assert_eq!(input.len() % 4, 0, "{name}: replies are ints");
        let replies = input
            .chunks_exact(4)
            .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Capture {
            name: name.to_string(),
            argv,
            messages,
            replies,
        }
    }

    fn is_save(&self) -> bool {
        self.argv.get(1).map(String::as_str) == Some("--save-domain")
    }

    /// The replies libxl gave, per message type, in order.
    fn replies_by_type(&self) -> HashMap<u16, VecDeque<i32>> {
        let mut replies = self.replies.iter().copied();
        let mut by_type: HashMap<u16, VecDeque<i32>> = HashMap::new();
        for m in self.messages.iter().filter(|m| m.expects_reply()) {
            if let Some(r) = replies.next() {
                by_type.entry(m.msgtype()).or_default().push_back(r);
            }
        }
        assert!(
            replies.next().is_none(),
            "{}: more replies than calls",
            self.name
        );
        by_type
    }

    /// 254 when the helper waited for a reply that never came (libxl died), else 0.
    fn expected_exit(&self) -> i32 {
        let calls = self.messages.iter().filter(|m| m.expects_reply()).count();
        if calls > self.replies.len() {
            254
        } else {
            0
        }
    }
}

/// A message as far as the replay compares it: callbacks with their deterministic arguments.
fn callback_key(m: &Message) -> Option<String> {
    match m {
        Message::Log { .. } | Message::Progress { .. } => None,
        // The frames differ between Xen and a simulated domain; whether they are there does not.
        Message::RestoreResults {
            store_gfn,
            console_gfn,
        } => Some(format!(
            "restore_results({})",
            if *store_gfn == 0 && *console_gfn == 0 {
                "zeros"
            } else {
                "frames"
            }
        )),
        other => Some(other.to_string()),
    }
}

fn callbacks(ms: &[Message]) -> Vec<String> {
    ms.iter().filter_map(callback_key).collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Progress messages as (label, done, total); the context must be libxc's.
fn progress(ms: &[Message]) -> Vec<(String, u64, u64)> {
    ms.iter()
        .filter_map(|m| match m {
            Message::Progress {
                context,
                doing_what,
                done,
                total,
            } => {
                assert_eq!(text(context), "xc");
                Some((text(doing_what), *done, *total))
            }
            _ => None,
        })
        .collect()
}

/// The labels with iteration numbers folded and runs collapsed.
fn label_shape(ms: &[Message]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for (label, _, _) in progress(ms) {
        let l = if label.starts_with("Frames iteration ") {
            "Frames iteration K".to_string()
        } else {
            label
        };
        if v.last() != Some(&l) {
            v.push(l);
        }
    }
    v
}

/// The helper's own log lines: (level, errno, text).
fn helper_logs(ms: &[Message]) -> Vec<(u32, i32, String)> {
    ms.iter()
        .filter_map(|m| match m {
            Message::Log {
                level,
                errnoval,
                context,
                text: t,
            } if context == b"libxl-save-helper" => Some((*level, *errnoval, text(t))),
            _ => None,
        })
        .collect()
}

const LABELS: [&str; 7] = [
    "Start of stream",
    "Frames",
    "Domain now suspended",
    "Checkpointed save",
    "End of stream",
    "Complete",
    "Frames iteration ",
];

fn is_reference_label(l: &str) -> bool {
    match l.strip_prefix("Frames iteration ") {
        Some(k) => k.parse::<u32>().is_ok(),
        None => LABELS.contains(&l),
    }
}

/// The backend for a capture's guest (the captures' guests: 64-bit PV with 128 MiB, HVM, PVH).
fn backend(name: &str) -> String {
    let spec = match name {
        // Debian's Xen has no shadow paging: log-dirty for PV cannot be enabled.
        "pv/04-migrate-send-FAILED" => "sim:pv,64,128M,2,seed=1,nologdirty",
        n if n.starts_with("pv/") => "sim:pv,64,128M,2,seed=1",
        n if n.starts_with("hvm/") => "sim:hvm,64,64M,2,seed=2,dirty=4000",
        n if n.starts_with("pvh/") => "sim:pvh,64,64M,2,seed=3,dirty=4000",
        _ => "sim:pvh,64,32M,2,seed=4,dirty=20000",
    };
    spec.to_string()
}

/// What one helper run did.
struct Run {
    messages: Vec<Message>,
    status: std::process::ExitStatus,
    stderr: String,
}

impl Run {
    fn exit_code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| 128 + self.status.signal().unwrap_or(0))
    }
}

/// libxl's actions on the stream fd while the helper waits for a reply.
trait LibxlSide {
    fn before_reply(&mut self, m: &Message);
}

/// Starts the helper with the capture's argv, fd numbers replaced by `fds` (capture number →
/// our fd), plays libxl on the pipes and returns what happened.
fn run_helper(
    cap: &Capture,
    fds: &[(i32, i32)],
    as_libxl_save_helper: bool,
    side: &mut dyn LibxlSide,
) -> Run {
    let argv: Vec<String> = cap
        .argv
        .iter()
        .enumerate()
        .map(|(i, a)| {
            // argv[2] and argv[3] are the fds.
            let n: i32 = a.parse().unwrap_or(i32::MIN);
            match fds.iter().find(|(from, _)| *from == n) {
                Some((_, to)) if i == 2 || i == 3 => to.to_string(),
                _ => a.clone(),
            }
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_xenmig"));
    let mut cmd = if as_libxl_save_helper {
        // libxl execs $LIBXL_SAVE_HELPER: here a link named like Xen's helper.
        let link = dir.path().join("libxl-save-helper");
        std::os::unix::fs::symlink(&exe, &link).expect("symlink");
        Command::new(link)
    } else {
        let mut c = Command::new(exe);
        c.arg("save-helper");
        c
    };
    let stderr_path = dir.path().join("stderr");
    let stderr = File::create(&stderr_path).expect("stderr file");
    cmd.args(argv.iter().skip(1))
        .env("XENMIG_SAVE_HELPER_BACKEND", backend(&cap.name))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr));
    let inherit: Vec<i32> = fds.iter().map(|(_, to)| *to).filter(|&f| f >= 0).collect();
    // libxl clears FD_CLOEXEC on the fds it passes by number.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &inherit {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start the helper");
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take().expect("stdout");
    let mut replies = cap.replies_by_type();
    let mut messages = Vec::new();
    let mut sent = Vec::new();
    loop {
        let m = match read_message(&mut stdout) {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => panic!("{}: the helper sent a bad message: {e}", cap.name),
        };
        if m.expects_reply() {
            side.before_reply(&m);
            match replies.get_mut(&m.msgtype()).and_then(VecDeque::pop_front) {
                Some(r) => {
                    if let Some(w) = stdin.as_mut() {
                        let _ = write_reply(w, r);
                        sent.push(r);
                    }
                }
                // The capture's libxl never answered: it died, closing the helper's stdin.
                None => drop(stdin.take()),
            }
        }
        messages.push(m);
    }
    drop(stdin);
    let status = child.wait().expect("wait");
    dump(cap, &messages, &sent);
    Run {
        messages,
        status,
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
    }
}

/// With `XENMIG_SAVE_HELPER_DUMP=DIR`, the replay's two pipe directions go to
/// `DIR/<capture>/{stdout,stdin}.bin`, which the captures' `decode.py` reads.
fn dump(cap: &Capture, messages: &[Message], replies: &[i32]) {
    let Some(dir) = std::env::var_os("XENMIG_SAVE_HELPER_DUMP") else {
        return;
    };
    let dir = Path::new(&dir).join(&cap.name);
    std::fs::create_dir_all(&dir).expect("dump dir");
    let out: Vec<u8> = messages
        .iter()
        .flat_map(|m| m.encode().expect("encodes"))
        .collect();
    let input: Vec<u8> = replies.iter().flat_map(|r| r.to_ne_bytes()).collect();
    std::fs::write(dir.join("stdout.bin"), out).expect("dump");
    std::fs::write(dir.join("stdin.bin"), input).expect("dump");
}

fn is_hvm_with_qemu(name: &str) -> bool {
    name.starts_with("hvm/")
}

fn libxl_writer(f: &File) -> StreamWriter<&File> {
    StreamWriter::new(f)
}

/// libxl's part of a save: CHECKPOINT_END (after its emulator records) when libxc checkpoints.
struct SaveSide<'f> {
    stream: &'f File,
    qemu: bool,
}

impl LibxlSide for SaveSide<'_> {
    fn before_reply(&mut self, m: &Message) {
        if *m == Message::Checkpoint {
            let mut w = libxl_writer(self.stream);
            if self.qemu {
                emulator_context(&mut w);
            }
            w.libxl(&libxl::Record::CheckpointEnd(libxl::CheckpointEnd {}))
                .expect("write CHECKPOINT_END");
        }
    }
}

fn emulator_context(w: &mut StreamWriter<&File>) {
    w.libxl(&libxl::Record::EmulatorContext(libxl::EmulatorContext {
        emulator_id: libxl::EmulatorId(2),
        index: 0,
        context: b"QEVM fake qemu-xen device state",
    }))
    .expect("write EMULATOR_CONTEXT");
}

/// A replayed save: the stream it wrote, framed by libxl's records as libxl frames it.
struct SaveRun {
    run: Run,
    /// Unnamed, so that it goes with the test process: the replays are kept in a static,
    /// which is never dropped.
    file: File,
    /// Where the helper started writing (after LIBXC_CONTEXT).
    libxc_start: u64,
    /// Where the helper stopped.
    libxc_end: u64,
}

fn replay_save(cap: &Capture) -> SaveRun {
    assert!(cap.is_save());
    let file = tempfile::tempfile().expect("temp file");
    let f = &file;
    let mut w = libxl_writer(f);
    w.libxl_header(&libxl::LibxlHeader {
        ident: libxl::LIBXL_IDENT,
        version: libxl::VERSION_WRITTEN,
        options: libxl::LibxlOptions(0),
    })
    .expect("libxl header");
    w.libxl(&libxl::Record::LibxcContext(libxl::LibxcContext {}))
        .expect("LIBXC_CONTEXT");
    let libxc_start = w.offset();
    // recv_fd is xl's stdin for a plain save (the console), the receiver's pipe for Remus;
    // only COLO reads it.
    let recv = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let io: i32 = cap.argv[2].parse().expect("io_fd");
    let recv_n: i32 = cap.argv[3].parse().expect("recv_fd");
    let qemu = is_hvm_with_qemu(&cap.name);
    let mut side = SaveSide { stream: f, qemu };
    let run = run_helper(
        cap,
        &[(io, f.as_raw_fd()), (recv_n, recv.as_raw_fd())],
        true,
        &mut side,
    );
    let libxc_end = (&*f).stream_position().expect("position");
    // After `complete`, libxl appends its own records and END.
    if run.exit_code() == 0
        && matches!(callbacks(&run.messages).last(), Some(c) if c == "complete retval=0 errnoval=0")
    {
        let mut w = libxl_writer(f);
        if qemu {
            emulator_context(&mut w);
        }
        w.libxl(&libxl::Record::End(libxl::End {})).expect("END");
    }
    SaveRun {
        run,
        file,
        libxc_start,
        libxc_end,
    }
}

impl SaveRun {
    /// A path that opens the saved stream afresh (its own file offset).
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

/// Replays of the save captures, shared by the save tests and the restores that read them.
fn save_run(name: &str) -> Arc<SaveRun> {
    type Cell = Arc<OnceLock<Arc<SaveRun>>>;
    static RUNS: OnceLock<Mutex<HashMap<String, Cell>>> = OnceLock::new();
    let cell = {
        let mut map = RUNS.get_or_init(Default::default).lock().expect("lock");
        map.entry(name.to_string()).or_default().clone()
    };
    cell.get_or_init(|| Arc::new(replay_save(&Capture::load(name))))
        .clone()
}

/// libxl's part of a restore: at each checkpoint it reads its own records, up to
/// CHECKPOINT_END, from the shared stream fd.
struct RestoreSide<'f> {
    stream: &'f mut dyn Read,
    checkpoint_ends: usize,
}

/// Reads one libxl record header and body from the fd; `None` at end of file.
fn read_libxl_record(f: &mut dyn Read) -> Option<(u32, Vec<u8>)> {
    let mut h = [0u8; 8];
    f.read_exact(&mut h).ok()?;
    let t = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    let mut body = vec![0u8; len.div_ceil(8) * 8];
    f.read_exact(&mut body).ok()?;
    body.truncate(len);
    Some((t, body))
}

impl LibxlSide for RestoreSide<'_> {
    fn before_reply(&mut self, m: &Message) {
        if *m == Message::Checkpoint {
            loop {
                let (t, _) = read_libxl_record(self.stream)
                    .expect("libxl's records of the checkpoint follow the CHECKPOINT");
                if t == libxl::CheckpointEnd::TYPE {
                    self.checkpoint_ends += 1;
                    break;
                }
            }
        }
    }
}

/// Where the libxc image ends in a libxl-framed stream: after its END record, or at the end of
/// the input when it has none (a checkpointed stream whose sender died, a failed save).
fn libxc_image_end(bytes: &[u8]) -> u64 {
    let mut r = Reader::from_slice(
        bytes,
        ReaderOptions {
            framing: None,
            strictness: xenmig::wire::Strictness::Lenient,
        },
    );
    loop {
        match r.next_item() {
            Ok(Item::Record(rec))
                if rec.layer == Layer::Libxc && rec.record_type == xenmig::libxc::End::TYPE =>
            {
                return rec.offset + 8;
            }
            Ok(Item::Eof { .. }) | Err(_) => return bytes.len() as u64,
            Ok(_) => {}
        }
    }
}

struct RestoreRun {
    run: Run,
    /// The stream fd's offset after the helper exited.
    offset: u64,
    /// Where the libxc image ends.
    image_end: u64,
    /// libxl records left after the helper's part, read after it exited.
    tail: Vec<u32>,
    checkpoint_ends: usize,
}

/// Replays a restore of the stream the `sender` replay wrote. `pipe`: the stream comes through
/// a pipe (as from `xl migrate`), else from the file (as for `xl restore`).
fn replay_restore(cap: &Capture, sender: &str, pipe: bool) -> RestoreRun {
    let saved = save_run(sender);
    let bytes = std::fs::read(saved.path()).expect("read the saved stream");
    let image_end = libxc_image_end(&bytes);
    // send_back_fd: the pipe back to the sender (only COLO writes it), -1 for `xl restore`.
    let back = File::options()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let send_back: i32 = cap.argv[3].parse().expect("send_back_fd");
    let io: i32 = cap.argv[2].parse().expect("io_fd");
    let mut fds = Vec::new();
    if send_back >= 0 {
        fds.push((send_back, back.as_raw_fd()));
    }
    // libxl has read up to LIBXC_CONTEXT when it starts the helper.
    let libxc = bytes
        .get(saved.libxc_start as usize..)
        .expect("libxc image")
        .to_vec();
    let (run, checkpoint_ends, rest) = if pipe {
        let (mut rd, mut wr) = std::io::pipe().expect("pipe");
        let writer = std::thread::spawn(move || {
            // The sender's side; it ends when the receiver side is gone.
            let _ = std::io::Write::write_all(&mut wr, &libxc);
        });
        fds.push((io, rd.as_raw_fd()));
        let mut side = RestoreSide {
            stream: &mut rd,
            checkpoint_ends: 0,
        };
        let run = run_helper(cap, &fds, false, &mut side);
        let ends = side.checkpoint_ends;
        let mut rest = Vec::new();
        rd.read_to_end(&mut rest).expect("rest of the pipe");
        writer.join().expect("writer");
        (run, ends, rest)
    } else {
        let f = File::open(saved.path()).expect("open the saved stream");
        (&f).seek(SeekFrom::Start(saved.libxc_start)).expect("seek");
        fds.push((io, f.as_raw_fd()));
        let mut fr = &f;
        let mut side = RestoreSide {
            stream: &mut fr,
            checkpoint_ends: 0,
        };
        let run = run_helper(cap, &fds, false, &mut side);
        let ends = side.checkpoint_ends;
        let offset = (&f).stream_position().expect("position");
        let mut rest = Vec::new();
        (&f).read_to_end(&mut rest).expect("rest of the file");
        assert_eq!(offset + rest.len() as u64, bytes.len() as u64);
        (run, ends, rest)
    };
    // What the helper left is where libxl continues.
    let offset = (bytes.len() - rest.len()) as u64;
    let mut tail = Vec::new();
    let mut r = &rest[..];
    while let Some((t, _)) = read_libxl_record(&mut r) {
        tail.push(t);
    }
    assert!(r.is_empty(), "{}: the rest is libxl records", cap.name);
    RestoreRun {
        run,
        offset,
        image_end,
        tail,
        checkpoint_ends,
    }
}

/// Checks common to every replay.
fn check_common(cap: &Capture, run: &Run) {
    let name = &cap.name;
    assert_eq!(
        callbacks(&run.messages),
        callbacks(&cap.messages),
        "{name}: callback messages differ\nstderr: {}",
        run.stderr
    );
    assert_eq!(
        run.exit_code(),
        cap.expected_exit(),
        "{name}: exit status\nstderr: {}",
        run.stderr
    );
    assert_eq!(
        helper_logs(&run.messages),
        helper_logs(&cap.messages),
        "{name}: the helper's own log lines"
    );
    for (label, done, total) in progress(&run.messages) {
        assert!(
            is_reference_label(&label),
            "{name}: progress label {label:?} is not one of libxc's"
        );
        assert!(
            done <= total || total == 0,
            "{name}: {label} {done}/{total}"
        );
    }
    // Progress is reported every 1024 pfns plus a final N/N (and 0/N first).
    for w in progress(&run.messages).windows(2) {
        let ((l0, d0, t0), (l1, d1, t1)) = (&w[0], &w[1]);
        if l0 == l1 && t0 == t1 {
            let step = d1.checked_sub(*d0);
            assert!(
                step == Some(1024) || (d1 == t1 && step.is_some_and(|s| s <= 1024)),
                "{name}: {l1} steps from {d0} to {d1} of {t1}"
            );
        }
    }
}

/// The label the stop-and-copy pass of a live save must carry. Xen's default policy stops
/// either after sending a pass of fewer than 50 dirty pages (the final pass keeps that pass's
/// iteration number), or, with no pages dirty or after 5 iterations, before sending the next
/// one (the final pass takes the next number).
fn final_pass_label(ms: &[Message]) -> Option<String> {
    let labels = progress(ms);
    let (last, total) = labels
        .iter()
        .take_while(|(l, _, _)| l != "Domain now suspended")
        .filter_map(|(l, _, t)| {
            let k: u32 = l.strip_prefix("Frames iteration ")?.parse().ok()?;
            Some((k, *t))
        })
        .last()?;
    let k = if (1..50).contains(&total) {
        last
    } else {
        last + 1
    };
    Some(format!("Frames iteration {k}"))
}

/// The label of the first pass after the first suspend.
fn final_label_seen(ms: &[Message]) -> Option<String> {
    progress(ms)
        .into_iter()
        .skip_while(|(l, _, _)| l != "Domain now suspended")
        .nth(1)
        .map(|(l, _, _)| l)
}

fn check_save(name: &str) -> Arc<SaveRun> {
    let cap = Capture::load(name);
    let saved = save_run(name);
    let run = &saved.run;
    check_common(&cap, run);
    assert_eq!(
        label_shape(&run.messages),
        label_shape(&cap.messages),
        "{name}: progress labels"
    );
    // A live save's final pass carries the precopy policy's iteration, by the capture's rule.
    if let Some(want) = final_pass_label(&cap.messages) {
        assert_eq!(
            Some(want),
            final_label_seen(&cap.messages),
            "{name}: the rule does not hold for the capture"
        );
    }
    if let Some(want) = final_pass_label(&run.messages) {
        assert_eq!(
            Some(want),
            final_label_seen(&run.messages),
            "{name}: the final pass's label"
        );
    }
    assert!(saved.libxc_end > saved.libxc_start || cap.expected_exit() != 0);
    saved
}

/// A plain save that completed: the file is a valid libxl stream, as `xl save` leaves it
/// (minus xl's own header).
fn check_saved_stream(name: &str, saved: &SaveRun) {
    let bytes = std::fs::read(saved.path()).expect("read");
    let report = xenmig::verify_slice(
        &bytes,
        xenmig::VerifyOptions {
            framing: None,
            strictness: xenmig::wire::Strictness::Strict,
        },
        &mut |_| {},
    );
    assert!(report.valid, "{name}: saved stream: {:?}", report.error);
    assert!(report.end, "{name}: no END");
    assert_eq!(
        libxc_image_end(&bytes),
        saved.libxc_end,
        "{name}: libxc image end"
    );
}

fn check_restore(name: &str, sender: &str) {
    let cap = Capture::load(name);
    // The captures' migrations and Remus ran over pipes, `xl restore` from a file.
    let pipe = !name.ends_with("-restore");
    let r = replay_restore(&cap, sender, pipe);
    check_common(&cap, &r.run);
    assert!(
        progress(&r.run.messages).is_empty(),
        "{name}: restore sends no progress"
    );
    assert_eq!(
        r.offset, r.image_end,
        "{name}: the helper must read the stream fd exactly to the end of the libxc image"
    );
    let checkpoints = cap
        .messages
        .iter()
        .filter(|m| **m == Message::Checkpoint)
        .count();
    assert_eq!(
        r.checkpoint_ends, checkpoints,
        "{name}: checkpoints read by libxl"
    );
    let complete_ok =
        callbacks(&cap.messages).last().map(String::as_str) == Some("complete retval=0 errnoval=0");
    if complete_ok && checkpoints == 0 {
        // libxl's records after the libxc END are still there for libxl to read.
        assert_eq!(
            r.tail.last(),
            Some(&libxl::End::TYPE),
            "{name}: libxl tail {:?}",
            r.tail
        );
    } else {
        assert!(r.tail.is_empty(), "{name}: nothing after a broken stream");
    }
}

// ---- one test per capture ----

#[test]
fn pv_01_save_c() {
    let s = check_save("pv/01-save-c");
    check_saved_stream("pv/01-save-c", &s);
}

#[test]
fn pv_02_save() {
    let name = "pv/02-save";
    let s = check_save(name);
    check_saved_stream(name, &s);
    // Same guest size as the capture (128 MiB, p2m of 32768): the same progress, step by step.
    let cap = Capture::load(name);
    assert_eq!(progress(&s.run.messages), progress(&cap.messages));
}

#[test]
fn pv_03_restore() {
    check_restore("pv/03-restore", "pv/02-save");
}

#[test]
fn pv_04_migrate_send_failed() {
    let name = "pv/04-migrate-send-FAILED";
    let s = check_save(name);
    // libxc's error, word for word where it is xenmig's too.
    let logs: Vec<String> = s
        .run
        .messages
        .iter()
        .filter_map(|m| match m {
            Message::Log {
                level: 8, text: t, ..
            } => Some(text(t)),
            _ => None,
        })
        .collect();
    assert!(
        logs.iter()
            .any(|l| l.contains("Failed to enable logdirty: 95,22,0")),
        "{name}: {logs:?}"
    );
}

#[test]
fn pv_05_migrate_recv_failed() {
    check_restore("pv/05-migrate-recv-FAILED", "pv/04-migrate-send-FAILED");
}

#[test]
fn hvm_01_save_c() {
    let s = check_save("hvm/01-save-c");
    check_saved_stream("hvm/01-save-c", &s);
}

#[test]
fn hvm_02_save() {
    let s = check_save("hvm/02-save");
    check_saved_stream("hvm/02-save", &s);
}

#[test]
fn hvm_03_restore() {
    check_restore("hvm/03-restore", "hvm/02-save");
}

#[test]
fn hvm_04_migrate_send() {
    let s = check_save("hvm/04-migrate-send");
    check_saved_stream("hvm/04-migrate-send", &s);
}

#[test]
fn hvm_05_migrate_recv() {
    check_restore("hvm/05-migrate-recv", "hvm/04-migrate-send");
}

#[test]
fn pvh_06_save_c() {
    let s = check_save("pvh/06-save-c");
    check_saved_stream("pvh/06-save-c", &s);
}

#[test]
fn pvh_07_save() {
    let s = check_save("pvh/07-save");
    check_saved_stream("pvh/07-save", &s);
}

#[test]
fn pvh_08_restore() {
    check_restore("pvh/08-restore", "pvh/07-save");
}

#[test]
fn pvh_09_migrate_send() {
    let s = check_save("pvh/09-migrate-send");
    check_saved_stream("pvh/09-migrate-send", &s);
}

#[test]
fn pvh_10_migrate_recv() {
    check_restore("pvh/10-migrate-recv", "pvh/09-migrate-send");
}

#[test]
fn remus_pvh_11_remus_send() {
    let name = "remus-pvh/11-remus-send";
    let s = check_save(name);
    // The sender was killed while it waited for the 14th checkpoint reply: no END.
    let bytes = std::fs::read(s.path()).expect("read");
    assert_eq!(libxc_image_end(&bytes), bytes.len() as u64);
}

#[test]
fn remus_pvh_12_remus_recv() {
    check_restore("remus-pvh/12-remus-recv", "remus-pvh/11-remus-send");
}

/// Every capture directory has its test above.
#[test]
fn every_capture_is_replayed() {
    let src = include_str!("save_helper.rs");
    let mut n = 0;
    for group in ["pv", "hvm", "pvh", "remus-pvh"] {
        let mut dirs: Vec<_> = std::fs::read_dir(captures().join(group))
            .expect("capture group")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        dirs.sort();
        for d in dirs {
            let name = format!("{group}/{d}");
            assert!(
                src.contains(&format!("\"{name}\"")),
                "{name} is not replayed"
            );
            n += 1;
        }
    }
    assert_eq!(n, 17);
}

// ---- argv and process behaviour beyond the captures ----

#[test]
fn bad_argv_fails_like_the_c_helper() {
    let exe = env!("CARGO_BIN_EXE_xenmig");
    let out = Command::new(exe)
        .args(["save-helper", "--save-domain", "14", "11", "1", "0", "136"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("takes exactly 6 arguments, got 5"));
    let help = Command::new(exe)
        .args(["save-helper", "--help"])
        .output()
        .expect("run");
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--restore-domain"));
}

/// Without a Xen backend in the build, a helper started by libxl logs why and exits 255
/// (`fail()`), after its first message.
#[test]
fn no_backend_is_a_logged_failure() {
    let exe = env!("CARGO_BIN_EXE_xenmig");
    let out = Command::new(exe)
        .args([
            "save-helper",
            "--save-domain",
            "1",
            "0",
            "1",
            "0",
            "136",
            "0",
        ])
        .env("XENMIG_SAVE_HELPER_BACKEND", "kvm")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(255));
    let mut r = &out.stdout[..];
    let first = read_message(&mut r).unwrap().unwrap();
    assert!(matches!(&first, Message::Log { text, .. } if text == b"starting save"));
    let second = read_message(&mut r).unwrap().unwrap();
    assert!(matches!(&second, Message::Log { level: 8, .. }), "{second}");
}

/// SIGTERM during a save puts /dev/null (read-only) over io_fd: the next write fails, the save
/// unwinds and still reports `complete(-1, EBADF)` before exiting 0, as the C helper does.
#[test]
fn sigterm_stops_a_save() {
    let exe = env!("CARGO_BIN_EXE_xenmig");
    let (rd, wr) = std::io::pipe().expect("pipe");
    let fd = wr.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.args([
        "save-helper",
        "--save-domain",
        &fd.to_string(),
        "0",
        "1",
        "0",
    ])
    .arg((1u32 << msgtype::SUSPEND | 1 << msgtype::SWITCH_QEMU_LOGDIRTY).to_string())
    .arg("0")
    .env("XENMIG_SAVE_HELPER_BACKEND", "sim:pv,64,64M,1")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    unsafe {
        cmd.pre_exec(move || {
            libc::fcntl(fd, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn");
    drop(wr);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let pid = child.id() as i32;
    let mut msgs = Vec::new();
    let mut termed = false;
    let mut rd = Some(rd);
    while let Some(m) = read_message(&mut stdout).expect("message") {
        if m == Message::Suspend {
            write_reply(&mut stdin, 1).unwrap();
            // Let some of the stream through, then stop the save; then drain what follows so
            // a write blocked on the full pipe returns.
            let mut rd = rd.take().expect("one suspend");
            let mut buf = vec![0u8; 1 << 16];
            let mut seen = 0;
            while seen < 1 << 20 {
                seen += rd.read(&mut buf).expect("stream");
            }
            unsafe { libc::kill(pid, libc::SIGTERM) };
            termed = true;
            std::thread::spawn(move || while rd.read(&mut buf).is_ok_and(|n| n > 0) {});
        } else if let Message::Complete { .. } = m {
            write_reply(&mut stdin, 0).unwrap();
        }
        msgs.push(m);
    }
    let status = child.wait().unwrap();
    assert!(termed);
    assert_eq!(status.code(), Some(0));
    let complete = msgs
        .iter()
        .find(|m| matches!(m, Message::Complete { .. }))
        .expect("complete");
    assert_eq!(
        *complete,
        Message::Complete {
            retval: -1,
            errnoval: libc::EBADF
        }
    );
}

/// COLO (not captured; the sequence of the reference, from Xen's source): after each
/// CHECKPOINT the primary sends checkpoint, postcopy and wait_checkpoint, and at the next
/// suspend merges the secondary's dirty pfns, read from recv_fd as CHECKPOINT_DIRTY_PFN_LIST.
#[test]
fn colo_save_sequence() {
    use xenmig::libxc;
    use xenmig::wire::Array;
    let exe = env!("CARGO_BIN_EXE_xenmig");
    let (stream_rd, stream_wr) = std::io::pipe().expect("pipe");
    let (back_rd, back_wr) = std::io::pipe().expect("pipe");
    let (io, recv) = (stream_wr.as_raw_fd(), back_rd.as_raw_fd());
    let mut cmd = Command::new(exe);
    cmd.args([
        "save-helper",
        "--save-domain",
        &io.to_string(),
        &recv.to_string(),
    ])
    .args(["9", "1", "248", "2"])
    .env(
        "XENMIG_SAVE_HELPER_BACKEND",
        "sim:hvm,64,16M,1,seed=5,dirty=2000",
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    unsafe {
        cmd.pre_exec(move || {
            libc::fcntl(io, libc::F_SETFD, 0);
            libc::fcntl(recv, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn");
    drop(stream_wr);
    drop(back_rd);
    // The stream goes to the secondary; here it is only drained.
    let drain = std::thread::spawn(move || {
        let mut rd = stream_rd;
        let mut n = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(k) = rd.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        n
    });
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut back = back_wr;
    // The secondary's dirty pfns for each checkpoint.
    let secondary: Vec<u64> = (0x100..0x180).collect();
    let mut rounds = 0;
    let mut msgs = Vec::new();
    while let Some(m) = read_message(&mut stdout).expect("message") {
        let reply = match &m {
            Message::SwitchQemuLogdirty { .. } | Message::Complete { .. } => Some(0),
            Message::Suspend | Message::Checkpoint | Message::Postcopy => Some(1),
            Message::WaitCheckpoint => {
                rounds += 1;
                if rounds < 3 {
                    StreamWriter::new(&mut back)
                        .libxc(&libxc::Record::CheckpointDirtyPfnList(
                            libxc::CheckpointDirtyPfnList {
                                pfns: Array::Values(&secondary),
                            },
                        ))
                        .expect("back channel");
                    Some(1)
                } else {
                    Some(0)
                }
            }
            _ => None,
        };
        if let Some(r) = reply {
            write_reply(&mut stdin, r).unwrap();
        }
        msgs.push(m);
    }
    let status = child.wait().unwrap();
    let sent = drain.join().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(sent > 0);
    let mut want = vec![
        "switch_qemu_logdirty domid=9 enable=1".to_string(),
        "suspend".into(),
    ];
    for round in 0..3 {
        if round > 0 {
            want.push("suspend".into());
        }
        want.extend([
            "checkpoint".into(),
            "postcopy".into(),
            "wait_checkpoint".into(),
        ]);
    }
    want.push("switch_qemu_logdirty domid=9 enable=0".into());
    want.push("complete retval=0 errnoval=0".into());
    assert_eq!(callbacks(&msgs), want);
    // Each later checkpoint sends at least the secondary's dirty pages.
    let checkpointed: Vec<u64> = progress(&msgs)
        .into_iter()
        .filter(|(l, d, t)| l == "Checkpointed save" && d == t)
        .map(|(_, _, t)| t)
        .collect();
    assert_eq!(checkpointed.len(), 2, "{checkpointed:?}");
    assert!(checkpointed.iter().all(|&t| t >= secondary.len() as u64));
}

/// libxc asserts the callbacks it needs: an HVM save without switch_qemu_logdirty aborts,
/// after saying why.
#[test]
fn missing_required_callback_aborts() {
    let exe = env!("CARGO_BIN_EXE_xenmig");
    let null = File::options()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let fd = null.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.args(["save-helper", "--save-domain", &fd.to_string()])
        .args(["0", "1", "0", "8", "0"])
        .env("XENMIG_SAVE_HELPER_BACKEND", "sim:hvm,64,4M,1")
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    unsafe {
        cmd.pre_exec(move || {
            libc::fcntl(fd, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let out = cmd.output().expect("run");
    assert_eq!(out.status.signal(), Some(libc::SIGABRT));
    let mut r = &out.stdout[..];
    let mut last = None;
    while let Some(m) = read_message(&mut r).expect("message") {
        last = Some(m);
    }
    assert!(
        matches!(&last, Some(Message::Log { level: 9, text, .. })
            if text.windows(20).any(|w| w == b"switch_qemu_logdirty")),
        "{last:?}"
    );
}
