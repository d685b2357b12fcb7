//! Migration faults over a real network: `xenmig sim migrate` and `xenmig sim
//! migrate-receive` in two network namespaces, their TCP connection crossing veth links and a
//! router namespace that shapes it (5 ms each way, 100 Mbit/s, 1 % loss), and then cut or
//! with one side killed. What each outcome means, and the assertions, mirror the loopback
//! tests in `migrate.rs`: one copy of the guest survives, running when its toolstack
//! survives, or xl's documented undefined state after the point of no return; Remus and
//! COLO secondaries fail over to the last complete checkpoint.
//!
//! The rate is `tc tbf` on both hosts' links. Delay and loss are the router's own (a tun
//! device the test reads and writes back after the delay, dropping packets with a seeded
//! generator): kernels built without `sch_netem` are common in VMs, and this way the test
//! needs only tbf, veth and tun.
//!
//! Needs root, `ip` and `tc` (iproute2), network namespaces, `sch_tbf` and `/dev/net/tun`;
//! without them each test says why it is skipped and passes, unless XENMIG_NETNS_REQUIRED is
//! set (CI sets it). XENMIG_NETNS_SEED picks other kill points.

mod support;

use std::process::ExitStatus;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use net::{Net, Proc, Run, Shape};

/// The test network: three namespaces, their links and the router's delay line. Everything
/// is made for one test and removed when its [`Net`] is dropped, panic or not.
mod net {
    use std::collections::{BTreeMap, HashMap, VecDeque};
    use std::fs::{File, OpenOptions};
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::{mpsc, Arc, Condvar, Mutex};
    use std::thread::{self, JoinHandle};
    use std::time::{Duration, Instant};

    /// The receiver's address. The link's addresses are loopback ones (127.231.77.0/30 and
    /// .4/30), because `xenmig sim` only talks to loopback addresses; they exist only on the
    /// veth links inside the test's namespaces (whose `lo` stays down), so nothing of this
    /// traffic can leave the machine or meet the host's loopback.
    pub const RECEIVER: &str = "127.231.77.1";
    const ROUTER_R: &str = "127.231.77.2";
    const SENDER: &str = "127.231.77.5";
    const ROUTER_S: &str = "127.231.77.6";

    /// How the router treats packets, both ways.
    #[derive(Debug, Clone, Copy)]
    pub struct Shape {
        /// Held this long in the router (each way).
        pub delay: Duration,
        /// `tc tbf` on both hosts' links.
        pub rate_mbit: u32,
        /// Dropped in the router, per million packets.
        pub loss_ppm: u32,
        pub seed: u64,
    }

    impl std::fmt::Display for Shape {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "{} ms each way, {} Mbit/s, {} % loss",
                self.delay.as_millis(),
                self.rate_mbit,
                self.loss_ppm as f64 / 1e4
            )
        }
    }

    /// Bounded run of a setup command; its stderr is the reason when it fails.
    fn run(args: &[&str]) -> Result<(), String> {
        let mut child = Command::new(args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", args[0]))?;
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(st)) if st.success() => return Ok(()),
                Ok(Some(st)) => {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    return Err(format!("`{}`: {st}: {}", args.join(" "), err.trim()));
                }
                Ok(None) if start.elapsed() > Duration::from_secs(10) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("`{}` hung", args.join(" ")));
                }
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Runs `f` on a thread that joined namespace `ns` (network namespaces are per thread).
    fn in_netns<T: Send + 'static>(
        ns: &str,
        f: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let path = format!("/run/netns/{ns}");
        thread::spawn(move || {
            enter(&path)?;
            f()
        })
        .join()
        .map_err(|_| "a namespace thread panicked".to_string())?
    }

    fn enter(path: &str) -> Result<(), String> {
        let f = File::open(path).map_err(|e| format!("{path}: {e}"))?;
        // SAFETY: setns only changes this thread's network namespace.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    fn sysctl(ns: &str, settings: &'static [(&'static str, &'static str)]) -> Result<(), String> {
        in_netns(ns, move || {
            for (key, value) in settings {
                let p = format!("/proc/sys/net/ipv4/{key}");
                std::fs::write(&p, value).map_err(|e| format!("{p}: {e}"))?;
            }
            Ok(())
        })
    }

    /// Removes the namespaces of test processes that died without their drops (killed).
    fn remove_stale() {
        let Ok(dir) = std::fs::read_dir("/run/netns") else {
            return;
        };
        for name in dir
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
        {
            let pid = name
                .strip_prefix("xenmig-netns-")
                .and_then(|r| r.split('-').next());
            if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
                let _ = run(&["ip", "netns", "del", &name]);
            }
        }
    }

    /// Tells apart the networks of one test process.
    static NEXT: AtomicU32 = AtomicU32::new(0);

    /// Sender namespace `s` ─ veth ─ router `m` (a delay line on a tun device) ─ veth ─
    /// receiver namespace `r`.
    pub struct Net {
        /// The namespaces made so far (removed on drop).
        made: Vec<String>,
        pub sender_ns: String,
        pub receiver_ns: String,
        /// The sender's end of its link (what a cut takes down).
        pub sender_link: String,
        pub shape: Shape,
        line: Option<DelayLine>,
    }

    /// Why a [`Net`] could not be made: namespaces are impossible here, or the link cannot
    /// be shaped.
    pub enum NoNet {
        Namespaces(String),
        Shaping(String),
    }

    impl Net {
        pub fn new(shape: Shape) -> Result<Net, NoNet> {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                return Err(NoNet::Namespaces("not root".into()));
            }
            remove_stale();
            let k = NEXT.fetch_add(1, Ordering::SeqCst);
            let pid = std::process::id();
            let ns = |role: &str| format!("xenmig-netns-{pid}-{k}-{role}");
            let dev = |role: &str| format!("v{pid}x{k}{role}");
            let mut net = Net {
                made: Vec::new(),
                sender_ns: ns("s"),
                receiver_ns: ns("r"),
                sender_link: dev("s"),
                shape,
                line: None,
            };
            let (s, m, r) = (ns("s"), ns("m"), ns("r"));
            for n in [&s, &m, &r] {
                run(&["ip", "netns", "add", n]).map_err(NoNet::Namespaces)?;
                net.made.push(n.clone());
            }
            net.wire(&s, &m, &r, &dev).map_err(NoNet::Namespaces)?;
            net.shape(&s, &m, &r, &dev, &format!("t{pid}x{k}"))
                .map_err(NoNet::Shaping)?;
            Ok(net)
        }

        fn wire(
            &self,
            s: &str,
            m: &str,
            r: &str,
            dev: &dyn Fn(&str) -> String,
        ) -> Result<(), String> {
            // Loopback addresses on a link need route_localnet; the router forwards them to
            // and from its tun device, so no reverse-path filter.
            let all: &[(&str, &str)] = &[
                ("conf/all/route_localnet", "1"),
                ("conf/default/route_localnet", "1"),
                ("conf/all/rp_filter", "0"),
                ("conf/default/rp_filter", "0"),
            ];
            for n in [s, m, r] {
                sysctl(n, all)?;
            }
            sysctl(m, &[("ip_forward", "1")])?;
            let (vs, vsm, vr, vrm) = (dev("s"), dev("sm"), dev("r"), dev("rm"));
            #[rustfmt::skip]
            let cmds: &[&[&str]] = &[
                &["ip", "link", "add", &vs, "netns", s, "type", "veth", "peer", "name", &vsm, "netns", m],
                &["ip", "link", "add", &vr, "netns", r, "type", "veth", "peer", "name", &vrm, "netns", m],
                &["ip", "-n", r, "addr", "add", &format!("{RECEIVER}/30"), "dev", &vr],
                &["ip", "-n", m, "addr", "add", &format!("{ROUTER_R}/30"), "dev", &vrm],
                &["ip", "-n", s, "addr", "add", &format!("{SENDER}/30"), "dev", &vs],
                &["ip", "-n", m, "addr", "add", &format!("{ROUTER_S}/30"), "dev", &vsm],
                &["ip", "-n", r, "link", "set", &vr, "up"],
                &["ip", "-n", m, "link", "set", &vrm, "up"],
                &["ip", "-n", m, "link", "set", &vsm, "up"],
                &["ip", "-n", s, "link", "set", &vs, "up"],
                // Loopback addresses have host scope, so the source is given.
                &["ip", "-n", r, "route", "add", "127.231.77.4/30", "via", ROUTER_R, "src", RECEIVER],
                &["ip", "-n", s, "route", "add", "127.231.77.0/30", "via", ROUTER_S, "src", SENDER],
            ];
            for c in cmds {
                run(c)?;
            }
            Ok(())
        }

        fn shape(
            &mut self,
            s: &str,
            m: &str,
            r: &str,
            dev: &dyn Fn(&str) -> String,
            tun: &str,
        ) -> Result<(), String> {
            let rate = format!("{}mbit", self.shape.rate_mbit);
            for (n, d) in [(s, dev("s")), (r, dev("r"))] {
                #[rustfmt::skip]
                run(&["tc", "-n", n, "qdisc", "add", "dev", &d, "root", "tbf", "rate", &rate, "burst", "64kb", "latency", "100ms"])?;
            }
            self.line = Some(DelayLine::start(m, tun, self.shape)?);
            // Whatever enters the router from either host goes through the delay line,
            // which hands it back to the router to be forwarded.
            #[rustfmt::skip]
            let cmds: &[&[&str]] = &[
                &["ip", "-n", m, "link", "set", tun, "txqueuelen", "10000", "up"],
                &["ip", "-n", m, "route", "add", "default", "dev", tun, "table", "100"],
                &["ip", "-n", m, "rule", "add", "iif", &dev("sm"), "table", "100"],
                &["ip", "-n", m, "rule", "add", "iif", &dev("rm"), "table", "100"],
            ];
            for c in cmds {
                run(c)?;
            }
            Ok(())
        }

        /// `xenmig ARGS` inside a namespace.
        pub fn xenmig(&self, ns: &str, args: &[&str]) -> Command {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_xenmig")]);
            c.args(args);
            c
        }

        /// Takes the sender's link down, as a pulled cable: no FIN, no reset.
        pub fn cut(&self) {
            run(&[
                "ip",
                "-n",
                &self.sender_ns,
                "link",
                "set",
                &self.sender_link,
                "down",
            ])
            .unwrap();
        }

        /// Octets of IP packets the router passed to the receiver, and packets it dropped
        /// (both ways), since the start.
        pub fn forwarded(&self) -> (u64, u64) {
            self.line.as_ref().map_or((0, 0), |l| {
                let c = l.counts.lock().unwrap_or_else(|e| e.into_inner());
                (c.octets, c.dropped)
            })
        }

        /// Octets of the TCP stream to receiver port `port` that the router passed on in
        /// order (all the receiver can read, once the delay is over).
        pub fn delivered(&self, port: u16) -> u64 {
            self.line.as_ref().map_or(0, |l| {
                let c = l.counts.lock().unwrap_or_else(|e| e.into_inner());
                c.streams.get(&port).map_or(0, |t| t.next)
            })
        }
    }

    impl Drop for Net {
        fn drop(&mut self) {
            self.line.take();
            for n in self.made.drain(..).rev() {
                if let Err(e) = run(&["ip", "netns", "del", &n]) {
                    eprintln!("cannot remove namespace {n}: {e}");
                }
            }
        }
    }

    /// The router's delay line: a tun device in the router namespace; a thread reads each
    /// packet, drops it with the loss probability or sends it back into the tun after the
    /// delay, and the router forwards it on.
    struct DelayLine {
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
        counts: Arc<Mutex<Counts>>,
    }

    #[derive(Default)]
    struct Counts {
        octets: u64,
        dropped: u64,
        /// The TCP streams to the receiver, by its port.
        streams: HashMap<u16, Stream>,
    }

    /// How much of one TCP stream has passed in order.
    #[derive(Default)]
    struct Stream {
        /// The sequence number of its first octet.
        base: u32,
        /// Octets passed in order.
        next: u64,
        /// Segments passed beyond a hole: start -> end.
        ahead: BTreeMap<u64, u64>,
    }

    impl Stream {
        fn passed(&mut self, seq: u32, len: u64) {
            let start = u64::from(seq.wrapping_sub(self.base));
            let end = start + len;
            if start > self.next {
                let e = self.ahead.entry(start).or_insert(end);
                *e = (*e).max(end);
                return;
            }
            self.next = self.next.max(end);
            while let Some((&s, &e)) = self.ahead.first_key_value() {
                if s > self.next {
                    break;
                }
                self.next = self.next.max(e);
                self.ahead.remove(&s);
            }
        }
    }

    /// Counts an IPv4 packet to the receiver: its octets and, for TCP, its stream.
    fn count(c: &mut Counts, p: &[u8]) {
        c.octets += p.len() as u64;
        let ihl = usize::from(p[0] & 0x0f) * 4;
        if p[9] != 6 || p.len() < ihl + 20 {
            return;
        }
        let t = &p[ihl..];
        let port = u16::from_be_bytes([t[2], t[3]]);
        let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
        let payload = t.len().saturating_sub(usize::from(t[12] >> 4) * 4) as u64;
        if t[13] & 0x02 != 0 {
            // SYN: a new stream begins after it.
            let s = Stream {
                base: seq.wrapping_add(1),
                ..Stream::default()
            };
            c.streams.insert(port, s);
        } else if let Some(s) = c.streams.get_mut(&port) {
            if payload > 0 {
                s.passed(seq, payload);
            }
        }
    }

    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }

    fn open_tun(name: &str) -> Result<File, String> {
        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(|e| format!("/dev/net/tun: {e}"))?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes one struct ifreq, which `req` is laid out as.
        if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF as _, &mut req) } != 0 {
            return Err(format!(
                "TUNSETIFF {name}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(tun)
    }

    impl DelayLine {
        fn start(ns: &str, tun: &str, shape: Shape) -> Result<DelayLine, String> {
            let stop = Arc::new(AtomicBool::new(false));
            let counts = Arc::new(Mutex::new(Counts::default()));
            let (ready, is_ready) = mpsc::channel();
            let (path, name) = (format!("/run/netns/{ns}"), tun.to_string());
            let (st, c) = (stop.clone(), counts.clone());
            let thread = thread::spawn(move || {
                let tun = match enter(&path).and_then(|()| open_tun(&name)) {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                pump(tun, shape, &st, &c);
            });
            match is_ready.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(())) => Ok(DelayLine {
                    stop,
                    thread: Some(thread),
                    counts,
                }),
                Ok(Err(e)) => Err(e),
                Err(_) => Err("the delay line did not start".into()),
            }
        }
    }

    impl Drop for DelayLine {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// xorshift64*: the loss pattern and the kill points follow their seeds.
    pub fn next(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pump(mut tun: File, shape: Shape, stop: &AtomicBool, counts: &Mutex<Counts>) {
        let receiver: [u8; 4] = RECEIVER
            .parse::<std::net::Ipv4Addr>()
            .map(|a| a.octets())
            .unwrap_or_default();
        let mut rng = shape.seed | 1;
        let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            let wait = queue.front().map_or(Duration::from_millis(20), |(due, _)| {
                due.saturating_duration_since(Instant::now())
            });
            let mut pfd = libc::pollfd {
                fd: tun.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = wait.as_micros().div_ceil(1000).min(20) as libc::c_int;
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, ms) };
            loop {
                match tun.read(&mut buf) {
                    Ok(n) if n >= 20 => {
                        let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
                        if next(&mut rng) % 1_000_000 < u64::from(shape.loss_ppm) {
                            c.dropped += 1;
                            continue;
                        }
                        if buf[0] >> 4 == 4 && buf[16..20] == receiver {
                            count(&mut c, &buf[..n]);
                        }
                        drop(c);
                        queue.push_back((Instant::now() + shape.delay, buf[..n].to_vec()));
                    }
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let now = Instant::now();
            while queue.front().is_some_and(|(due, _)| *due <= now) {
                if let Some((_, p)) = queue.pop_front() {
                    let _ = tun.write(&p);
                }
            }
        }
    }

    /// A process inside a namespace whose output lines are collected as they come.
    pub struct Proc {
        pub name: &'static str,
        child: Child,
        seen: Arc<(Mutex<Seen>, Condvar)>,
        readers: Vec<JoinHandle<()>>,
    }

    #[derive(Default)]
    struct Seen {
        out: Vec<String>,
        err: Vec<String>,
        /// Its standard output closed: no more lines will come.
        out_closed: bool,
        /// When its output streams closed (it ended).
        closed: Option<Instant>,
    }

    /// How a process ended.
    pub struct Run {
        pub name: &'static str,
        pub status: Option<ExitStatus>,
        pub out: Vec<String>,
        pub err: Vec<String>,
        /// It did not end within the bound and was killed.
        pub hung: bool,
        /// When it ended (its output closed).
        pub ended: Instant,
    }

    impl Proc {
        pub fn spawn(name: &'static str, mut cmd: Command) -> Proc {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe. A test process killed outright takes its
            // children with it (`ip netns exec` execs xenmig in the same process).
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
            let seen = Arc::new((Mutex::new(Seen::default()), Condvar::new()));
            let mut readers = Vec::new();
            let out = child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn Read + Send>);
            let err = child
                .stderr
                .take()
                .map(|e| Box::new(e) as Box<dyn Read + Send>);
            for (stream, is_err) in [(out, false), (err, true)] {
                let Some(stream) = stream else { continue };
                let seen = seen.clone();
                readers.push(thread::spawn(move || {
                    for line in BufReader::new(stream).lines() {
                        let Ok(line) = line else { break };
                        let (m, cv) = &*seen;
                        let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
                        if is_err {
                            s.err.push(line);
                        } else {
                            s.out.push(line);
                        }
                        cv.notify_all();
                    }
                    let (m, cv) = &*seen;
                    let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
                    s.closed = Some(Instant::now());
                    s.out_closed |= !is_err;
                    cv.notify_all();
                }));
            }
            Proc {
                name,
                child,
                seen,
                readers,
            }
        }

        /// Waits up to `limit` for a stdout line that `want` accepts (None at once if the
        /// process ended without one).
        pub fn wait_line(&self, want: impl Fn(&str) -> bool, limit: Duration) -> Option<String> {
            let (m, cv) = &*self.seen;
            let deadline = Instant::now() + limit;
            let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(l) = s.out.iter().find(|l| want(l)) {
                    return Some(l.clone());
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || s.out_closed {
                    return None;
                }
                s = cv
                    .wait_timeout(s, left.min(Duration::from_millis(50)))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }

        pub fn running(&mut self) -> bool {
            matches!(self.child.try_wait(), Ok(None))
        }

        /// SIGKILL, if it still runs; true if it did.
        pub fn kill(&mut self) -> bool {
            self.running() && self.child.kill().is_ok()
        }

        /// Waits up to `limit` for the process to end, killing it after that.
        pub fn finish(mut self, limit: Duration) -> Run {
            let deadline = Instant::now() + limit;
            let mut hung = false;
            let status = loop {
                match self.child.try_wait() {
                    Ok(Some(st)) => break Some(st),
                    Ok(None) if Instant::now() >= deadline => {
                        hung = true;
                        let _ = self.child.kill();
                        break self.child.wait().ok();
                    }
                    Ok(None) => thread::sleep(Duration::from_millis(10)),
                    Err(_) => break None,
                }
            };
            for r in self.readers.drain(..) {
                let _ = r.join();
            }
            let (m, _) = &*self.seen;
            let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
            Run {
                name: self.name,
                status,
                out: std::mem::take(&mut s.out),
                err: std::mem::take(&mut s.err),
                hung,
                ended: s.closed.unwrap_or_else(Instant::now),
            }
        }
    }

    impl Drop for Proc {
        fn drop(&mut self) {
            if self.running() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Makes the test network, or says why it cannot be made here (and whether that fails the
/// test: XENMIG_NETNS_REQUIRED).
fn network(test: &str, shape: Shape) -> Option<Net> {
    match Net::new(shape) {
        Ok(n) => Some(n),
        Err(why) => {
            let msg = match why {
                net::NoNet::Namespaces(r) => {
                    format!("skipped: cannot create network namespaces: {r}")
                }
                net::NoNet::Shaping(r) => format!("skipped: cannot shape the test link: {r}"),
            };
            if std::env::var_os("XENMIG_NETNS_REQUIRED").is_some() {
                panic!("{test}: {msg} (XENMIG_NETNS_REQUIRED is set)");
            }
            println!("{test}: {msg}");
            None
        }
    }
}

const SLOW: Shape = Shape {
    delay: Duration::from_millis(5),
    rate_mbit: 100,
    loss_ppm: 10_000,
    seed: 0x5eed_0001,
};

/// Every wait is bounded by this; a process still running then is killed.
const BOUND: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Live,
    Remus,
    Colo,
}

/// The guest and what each mode adds; the simulated link bandwidth is the real one (100
/// Mbit/s), so the downtime policy predicts for the link the stream crosses.
fn sender_args(mode: Mode, epochs: &str) -> Vec<String> {
    let mut a: Vec<String> = [
        "--guest",
        "hvm",
        "--memory",
        "16M",
        "--dirty-rate",
        "1000",
        "--bandwidth",
        "12500000",
    ]
    .map(String::from)
    .to_vec();
    match mode {
        Mode::Live => a.extend(["--live", "--policy", "downtime:50"].map(String::from)),
        Mode::Remus => a.extend(["--remus".into(), epochs.into()]),
        Mode::Colo => a.extend(["--colo".into(), epochs.into()]),
    }
    a
}

fn receiver_args(mode: Mode) -> Vec<String> {
    match mode {
        Mode::Live => vec![],
        Mode::Remus => vec!["--remus".into()],
        Mode::Colo => ["--colo", "--dirty-rate", "500"].map(String::from).to_vec(),
    }
}

static PORT: AtomicU32 = AtomicU32::new(7000);

/// One migration over `net`: the receiver listening, then the sender; `during` runs while
/// they do (cut the link, kill one) with the receiver's port. Returns how each ended.
fn migrate(
    net: &Net,
    sender: &[String],
    receiver: &[String],
    during: impl FnOnce(&Net, u16, &mut Proc, &mut Proc),
) -> (Run, Run) {
    let port = PORT.fetch_add(1, Ordering::SeqCst) as u16;
    let addr = format!("{}:{port}", net::RECEIVER);
    let mut rargs = vec!["sim", "migrate-receive", "--listen", &addr];
    rargs.extend(receiver.iter().map(String::as_str));
    let mut r = Proc::spawn("receiver", net.xenmig(&net.receiver_ns, &rargs));
    if r.wait_line(|l| l.starts_with("listening: "), BOUND)
        .is_none()
    {
        let r = r.finish(Duration::ZERO);
        panic!("the receiver never listened\n{}", show_one(&r));
    }
    let mut sargs = vec!["sim", "migrate"];
    sargs.extend(sender.iter().map(String::as_str));
    sargs.push(&addr);
    let mut s = Proc::spawn("sender", net.xenmig(&net.sender_ns, &sargs));
    during(net, port, &mut s, &mut r);
    let s = s.finish(BOUND);
    let r = r.finish(BOUND);
    let ctx = show(&s, &r);
    assert!(
        !s.hung && !r.hung,
        "a side hung (killed after {BOUND:?})\n{ctx}"
    );
    (s, r)
}

fn lines(r: &Run, prefix: &str) -> Vec<String> {
    r.out
        .iter()
        .filter_map(|l| l.strip_prefix(prefix).map(str::to_string))
        .collect()
}

fn last_guest(r: &Run) -> Option<String> {
    lines(r, "guest: ").pop()
}

/// `epoch K state-digest: HEX` lines, in order.
fn epochs(r: &Run) -> Vec<String> {
    r.out
        .iter()
        .filter_map(|l| l.split(" state-digest: ").nth(1).map(str::to_string))
        .collect()
}

/// N of the receiver's "the stream broke after checkpoint N".
fn failed_over_to(r: &Run) -> Option<usize> {
    r.err
        .iter()
        .find_map(|l| l.split("the stream broke after checkpoint ").nth(1))
        .and_then(|t| t.split(':').next())
        .and_then(|t| t.trim().parse().ok())
}

fn code(r: &Run) -> Option<i32> {
    r.status.and_then(|s| s.code())
}

fn killed(r: &Run) -> bool {
    use std::os::unix::process::ExitStatusExt;
    r.status.and_then(|s: ExitStatus| s.signal()) == Some(9)
}

fn show_one(r: &Run) -> String {
    format!(
        "{} {:?}{}\n{}\n{}",
        r.name,
        r.status,
        if r.hung { " (hung)" } else { "" },
        r.out.join("\n"),
        r.err.join("\n")
    )
}

fn show(s: &Run, r: &Run) -> String {
    format!("{}\n{}", show_one(s), show_one(r))
}

/// The sender's report on the link: the precopy passes, the downtime policy's verdict, the
/// time, octets and measured downtime.
fn report(title: &str, net: &Net, s: &Run) {
    let (fwd, dropped) = net.forwarded();
    println!("---- {title} over {}", net.shape);
    for l in s.err.iter().chain(lines(s, "migrated: ").iter()) {
        println!("  {l}");
    }
    println!("  router: {fwd} octets forwarded to the receiver, {dropped} packets dropped");
}

/// The sender's "N octets on the wire".
fn wire_octets(s: &Run) -> u64 {
    lines(s, "migrated: ")
        .first()
        .and_then(|m| m.split(" octets on the wire").next())
        .and_then(|m| m.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

// ---- A slow, lossy link: the migration completes and one guest runs ----

#[test]
fn live_migration_over_a_slow_lossy_link_completes_with_one_running_guest() {
    let Some(net) = network("live over a slow link", SLOW) else {
        return;
    };
    let started = Instant::now();
    let (s, r) = migrate(&net, &sender_args(Mode::Live, ""), &[], |_, _, _, _| {});
    let ctx = show(&s, &r);
    report("live migration", &net, &s);
    println!("  {:.1} s", started.elapsed().as_secs_f64());
    assert!(s.status.is_some_and(|s| s.success()), "{ctx}");
    assert!(r.status.is_some_and(|s| s.success()), "{ctx}");
    // The receiver runs the guest; the sender destroyed its copy and never resumed it.
    assert_eq!(lines(&r, "guest: "), ["paused", "running"], "{ctx}");
    assert_eq!(
        lines(&s, "guest: "),
        ["running", "suspended", "destroyed"],
        "{ctx}"
    );
    // The receiver's copy is the sender's state at its final suspend.
    let sd = lines(&s, "state-digest: ");
    assert_eq!(sd.len(), 1, "{ctx}");
    assert_eq!(lines(&r, "state-digest: "), sd, "{ctx}");
    // The policy decided, and the stream crossed the shaped link (and lost packets on it).
    assert!(
        s.err.iter().any(|l| l.starts_with("downtime policy: ")),
        "{ctx}"
    );
    let (fwd, dropped) = net.forwarded();
    assert!(
        fwd >= wire_octets(&s) && wire_octets(&s) > 16 << 20,
        "{ctx}"
    );
    assert!(dropped > 0, "{ctx}");
}

/// Remus or COLO over the slow link: `epochs` checkpoints, then the sender closes the
/// connection and the receiver goes on from the last one.
fn checkpoints_over_a_slow_link(mode: Mode) {
    let title = format!("{mode:?} over a slow link");
    let Some(net) = network(&title, SLOW) else {
        return;
    };
    let n = 4;
    let started = Instant::now();
    let (s, r) = migrate(
        &net,
        &sender_args(mode, &n.to_string()),
        &receiver_args(mode),
        |_, _, _, _| {},
    );
    let ctx = show(&s, &r);
    report(&format!("{mode:?}, {n} checkpoints"), &net, &s);
    println!("  {:.1} s", started.elapsed().as_secs_f64());
    assert!(s.status.is_some_and(|s| s.success()), "{ctx}");
    assert!(r.status.is_some_and(|s| s.success()), "{ctx}");
    let sent = epochs(&s);
    assert_eq!(sent.len(), n, "{ctx}");
    assert_ne!(sent[0], sent[n - 1], "the guest ran between checkpoints");
    // The sender's guest runs on as it did (Remus and COLO never stop it for good).
    assert!(
        !lines(&s, "guest: ").iter().any(|g| g == "resumed"),
        "{ctx}"
    );
    assert_eq!(lines(&r, "state-digest: "), [sent[n - 1].clone()], "{ctx}");
    if mode == Mode::Colo {
        // Each checkpoint as applied on the secondary is the primary's state at its suspend.
        assert_eq!(epochs(&r), sent, "{ctx}");
        assert_eq!(lines(&r, "guest: "), ["running"], "{ctx}");
    } else {
        assert_eq!(lines(&r, "guest: "), ["paused", "running"], "{ctx}");
    }
    assert!(net.forwarded().0 >= wire_octets(&s), "{ctx}");
}

#[test]
fn remus_over_a_slow_lossy_link_fails_over_to_the_last_checkpoint() {
    checkpoints_over_a_slow_link(Mode::Remus);
}

#[test]
fn colo_over_a_slow_lossy_link_goes_on_from_the_last_checkpoint() {
    checkpoints_over_a_slow_link(Mode::Colo);
}

// ---- The link cut mid-stream ----

/// Both sides give up on a silent link after this (`--timeout`).
const SILENCE: &str = "2";

/// How long after the cut each side ended.
fn after_cut(cut: Option<Instant>, s: &Run, r: &Run) -> String {
    let since = |x: &Run| cut.map(|c| x.ended.saturating_duration_since(c).as_secs_f64());
    format!(
        "sender ended {:.1?} s, receiver {:.1?} s after the cut",
        since(s),
        since(r)
    )
}

/// Why a side gave up (its last line on stderr).
fn gave_up(r: &Run) -> &str {
    r.err.last().map_or("-", String::as_str)
}

#[test]
fn live_migration_whose_link_is_cut_mid_stream_leaves_the_sender_running() {
    let Some(net) = network("live, link cut", SLOW) else {
        return;
    };
    let mut sargs = sender_args(Mode::Live, "");
    sargs.extend(["--timeout".into(), SILENCE.into()]);
    let mut cut = None;
    let mut passed = 0;
    let (s, r) = migrate(
        &net,
        &sargs,
        &["--timeout".into(), SILENCE.into()],
        |net, port, s, _| {
            // Half of the first pass (16 MiB) is through: cut.
            let deadline = Instant::now() + BOUND;
            while net.delivered(port) < 8 << 20 && s.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            net.cut();
            cut = Some(Instant::now());
            passed = net.delivered(port);
        },
    );
    let ctx = show(&s, &r);
    println!(
        "live, link cut after {passed} octets of the stream: {}",
        after_cut(cut, &s, &r)
    );
    // The sender was never cleared to unpause the receiver's copy: it resumed its own.
    assert_eq!(code(&s), Some(1), "{ctx}");
    assert_eq!(last_guest(&s).as_deref(), Some("resumed"), "{ctx}");
    assert!(
        !lines(&s, "guest: ").iter().any(|g| g == "destroyed"),
        "{ctx}"
    );
    assert!(lines(&s, "migrated: ").is_empty(), "{ctx}");
    println!("  sender: {}", gave_up(&s));
    println!("  receiver: {}", gave_up(&r));
    // The receiver has nothing it would run: no guest, no digest.
    assert_eq!(code(&r), Some(1), "{ctx}");
    assert!(lines(&r, "guest: ").is_empty(), "{ctx}");
    assert!(lines(&r, "state-digest: ").is_empty(), "{ctx}");
}

/// Remus or COLO until the link breaks (`0` epochs), cut once the receiver has all of the
/// third checkpoint: it fails over to the last complete checkpoint it has (the third or a
/// later one), whose digest the sender printed.
fn checkpoints_with_the_link_cut(mode: Mode) {
    let Some(net) = network(&format!("{mode:?}, link cut"), SLOW) else {
        return;
    };
    let with_timeout = |mut a: Vec<String>| {
        a.extend(["--timeout".into(), SILENCE.into()]);
        a
    };
    let rargs = with_timeout(receiver_args(mode));
    // Remus receivers say nothing per checkpoint: the octets of three checkpoints come
    // from a run of three (the simulated guest is the same on every run).
    let three = if mode == Mode::Remus {
        let (s, r) = migrate(&net, &sender_args(mode, "3"), &rargs, |_, _, _, _| {});
        assert!(s.status.is_some_and(|s| s.success()), "{}", show(&s, &r));
        wire_octets(&s)
    } else {
        0
    };
    let mut cut = None;
    let (s, r) = migrate(
        &net,
        &with_timeout(sender_args(mode, "0")),
        &rargs,
        |net, port, s, r| {
            let deadline = Instant::now() + BOUND;
            if mode == Mode::Colo {
                let _ = r.wait_line(|l| l.starts_with("epoch 3 state-digest: "), BOUND);
            } else {
                while net.delivered(port) < three && s.running() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            net.cut();
            cut = Some(Instant::now());
        },
    );
    let ctx = show(&s, &r);
    let sent = epochs(&s);
    assert!(r.status.is_some_and(|s| s.success()), "{ctx}");
    let got = lines(&r, "state-digest: ");
    assert_eq!(got.len(), 1, "{ctx}");
    if mode == Mode::Colo {
        // The secondary applied the checkpoints the primary reported (and perhaps the one
        // whose answer never got back); its copy runs on from the last.
        let applied = epochs(&r);
        let common = applied.len().min(sent.len());
        assert!(applied.len() >= 3, "{ctx}");
        assert_eq!(applied[..common], sent[..common], "{ctx}");
        assert!(applied.len() <= sent.len() + 1, "{ctx}");
        assert_eq!(got[0], applied[applied.len() - 1], "{ctx}");
        assert_eq!(lines(&r, "guest: "), ["running"], "{ctx}");
        println!(
            "COLO, link cut after checkpoint 3: the secondary runs from checkpoint {} ({} reported by the primary); {}",
            applied.len(),
            sent.len(),
            after_cut(cut, &s, &r)
        );
    } else {
        assert_eq!(lines(&r, "guest: "), ["paused", "running"], "{ctx}");
        let n = failed_over_to(&r).unwrap_or_else(|| panic!("no failover report\n{ctx}"));
        assert!(n >= 3 && n <= sent.len(), "{ctx}");
        assert_eq!(got[0], sent[n - 1], "{ctx}");
        println!(
            "Remus, link cut after checkpoint 3 ({three} octets): failed over to checkpoint {n} ({} reported by the primary); {}",
            sent.len(),
            after_cut(cut, &s, &r)
        );
    }
    // The primary noticed the dead link and runs on without its backup.
    assert_eq!(code(&s), Some(1), "{ctx}");
    assert_eq!(last_guest(&s).as_deref(), Some("resumed"), "{ctx}");
    println!("  sender: {}", gave_up(&s));
    println!("  receiver: {}", gave_up(&r));
}

#[test]
fn remus_whose_link_is_cut_fails_over_to_the_last_complete_checkpoint() {
    checkpoints_with_the_link_cut(Mode::Remus);
}

#[test]
fn colo_whose_link_is_cut_goes_on_from_the_last_complete_checkpoint() {
    checkpoints_with_the_link_cut(Mode::Colo);
}

// ---- Either side killed at seeded random points ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Sender,
    Receiver,
}

/// When to kill.
#[derive(Debug, Clone, Copy)]
enum Point {
    /// Once this many octets of the stream have passed the router.
    Octets(u64),
    /// This long after the receiver restored the guest (`guest: paused`): the exchange
    /// around xl's point of no return.
    AfterRestore(Duration),
    /// This long after the sender reported checkpoint K.
    AfterCheckpoint(u32, Duration),
}

fn seed() -> u64 {
    std::env::var("XENMIG_NETNS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_125)
}

/// For each victim, two points inside the stream (of `total` octets) and one or two near its
/// end: around xl's point of no return, or after a checkpoint.
fn points(mode: Mode, victim: Victim, total: u64, epochs: u32) -> Vec<Point> {
    let mut rng = seed() ^ (mode as u64) << 8 ^ (victim as u64) << 16;
    let mut pick = |n: u64| net::next(&mut rng) % n.max(1);
    let mut p: Vec<Point> = (0..2)
        .map(|_| Point::Octets(total / 20 + pick(total * 9 / 10)))
        .collect();
    match mode {
        Mode::Live => {
            p.extend((0..2).map(|_| Point::AfterRestore(Duration::from_micros(pick(15_000)))))
        }
        _ => p.push(Point::AfterCheckpoint(
            1 + pick(u64::from(epochs) - 2) as u32,
            Duration::from_millis(pick(20)),
        )),
    }
    p
}

/// Kills `victim` at `point`; true if it was still running.
fn kill_at(net: &Net, port: u16, s: &mut Proc, r: &mut Proc, victim: Victim, point: Point) -> bool {
    let deadline = Instant::now() + BOUND;
    match point {
        Point::Octets(n) => {
            while net.delivered(port) < n && Instant::now() < deadline {
                if !s.running() || !r.running() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Point::AfterRestore(d) => {
            let _ = r.wait_line(|l| l == "guest: paused", BOUND);
            std::thread::sleep(d);
        }
        Point::AfterCheckpoint(k, d) => {
            let want = format!("epoch {k} state-digest: ");
            let _ = s.wait_line(|l| l.starts_with(&want), BOUND);
            std::thread::sleep(d);
        }
    }
    match victim {
        Victim::Sender => s.kill(),
        Victim::Receiver => r.kill(),
    }
}

/// The copies of a live migration's guest after a run: a killed toolstack leaves its
/// domain in the last state it printed (as in `migrate.rs`).
fn copies(s: &Run, r: &Run) -> (usize, usize) {
    support::copies(&[last_guest(s), last_guest(r)])
}

/// What a live migration with one side killed may leave, by the phase it died in; returns
/// the phase.
fn check_live(victim: Victim, s: &Run, r: &Run) -> &'static str {
    let ctx = show(s, r);
    let rg = lines(r, "guest: ");
    let (alive, running) = copies(s, r);
    assert!(running <= 1, "two running copies\n{ctx}");
    let same_state = || {
        let sd = lines(s, "state-digest: ");
        if !sd.is_empty() {
            assert_eq!(lines(r, "state-digest: "), sd, "{ctx}");
        }
    };
    if code(s) == Some(0) {
        // The sender got status 0: the kill came after the whole migration.
        assert_eq!(last_guest(s).as_deref(), Some("destroyed"), "{ctx}");
        assert_eq!(rg, ["paused", "running"], "{ctx}");
        same_state();
        return "after the migration";
    }
    match victim {
        Victim::Sender => {
            assert!(killed(s), "{ctx}");
            match rg.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                // Before the image was through: the sender's domain survives its toolstack.
                [] => {
                    assert_eq!(code(r), Some(1), "{ctx}");
                    assert_eq!(alive, 1, "{ctx}");
                    "before the image was through: the sender's copy survives"
                }
                // After "domain received", before "cleared to unpause": the receiver
                // destroys its paused copy; the sender's suspended one survives.
                ["paused", "destroyed"] => {
                    assert_eq!(code(r), Some(1), "{ctx}");
                    assert_eq!(last_guest(s).as_deref(), Some("suspended"), "{ctx}");
                    assert_eq!(alive, 1, "{ctx}");
                    "before the point of no return: the sender's suspended copy survives"
                }
                // After the point of no return: the receiver runs the guest; the sender's
                // suspended copy is what xl leaves.
                ["paused", "running"] => {
                    assert_eq!(code(r), Some(0), "{ctx}");
                    assert_eq!(last_guest(s).as_deref(), Some("suspended"), "{ctx}");
                    same_state();
                    "after the point of no return: the receiver runs the guest"
                }
                _ => panic!("unexpected receiver states\n{ctx}"),
            }
        }
        Victim::Receiver => {
            assert!(killed(r), "{ctx}");
            assert!(
                !lines(s, "guest: ").iter().any(|g| g == "destroyed"),
                "{ctx}"
            );
            match code(s) {
                // Before "domain received" reached it: the sender resumes its guest; the
                // receiver never ran one (its killed toolstack may leave a paused copy).
                Some(1) => {
                    assert_eq!(last_guest(s).as_deref(), Some("resumed"), "{ctx}");
                    assert!(rg.is_empty() || rg == ["paused"], "{ctx}");
                    assert_eq!(running, 1, "{ctx}");
                    "before \"domain received\": the sender resumed its guest"
                }
                // After: the sender passed (or tried to pass) the point of no return, keeps
                // its copy suspended and says the outcome is undefined, as xl does.
                Some(2) => {
                    assert_eq!(lines(s, "migration: "), ["undefined"], "{ctx}");
                    assert_eq!(last_guest(s).as_deref(), Some("suspended"), "{ctx}");
                    assert!(rg.first().is_some_and(|g| g == "paused"), "{ctx}");
                    "after \"domain received\": undefined, as in xl"
                }
                _ => panic!("unexpected sender exit\n{ctx}"),
            }
        }
    }
}

/// What Remus or COLO with one side killed leaves: a killed primary's secondary fails over
/// to the last complete checkpoint; a killed secondary's primary runs on.
fn check_checkpointed(mode: Mode, victim: Victim, s: &Run, r: &Run) -> String {
    let ctx = show(s, r);
    let sent = epochs(s);
    let rg = lines(r, "guest: ");
    match victim {
        Victim::Sender if code(r) == Some(1) => {
            // Killed inside the first checkpoint: nothing to fail over to, nothing runs.
            assert!(killed(s), "{ctx}");
            assert!(rg.is_empty(), "{ctx}");
            assert!(sent.len() <= 1, "{ctx}");
            "inside the first checkpoint: nothing to fail over to".into()
        }
        Victim::Sender => {
            assert_eq!(code(r), Some(0), "{ctx}");
            let got = lines(r, "state-digest: ");
            assert_eq!(got.len(), 1, "{ctx}");
            if mode == Mode::Colo {
                let applied = epochs(r);
                let common = applied.len().min(sent.len());
                assert_eq!(applied[..common], sent[..common], "{ctx}");
                assert!(applied.len() <= sent.len() + 1, "{ctx}");
                assert_eq!(got[0], applied[applied.len() - 1], "{ctx}");
                assert_eq!(rg, ["running"], "{ctx}");
                format!("the secondary runs from checkpoint {}", applied.len())
            } else {
                assert_eq!(rg, ["paused", "running"], "{ctx}");
                let n = failed_over_to(r).unwrap_or(sent.len());
                assert!(n >= 1, "{ctx}");
                if n <= sent.len() {
                    assert_eq!(got[0], sent[n - 1], "{ctx}");
                } else {
                    // Killed after checkpoint n was out, before it printed its digest.
                    assert_eq!(n, sent.len() + 1, "{ctx}");
                    assert!(!sent.contains(&got[0]), "{ctx}");
                }
                format!("the receiver failed over to checkpoint {n}")
            }
        }
        Victim::Receiver => {
            assert!(!rg.iter().any(|g| g == "running") || !killed(r), "{ctx}");
            if code(s) == Some(0) {
                // The primary had sent all its checkpoints and closed the connection: its
                // guest runs on, as after any Remus or COLO run.
                return "after the primary's last checkpoint".into();
            }
            // The primary's guest runs on without its backup.
            assert!(killed(r), "{ctx}");
            assert_eq!(code(s), Some(1), "{ctx}");
            assert_eq!(last_guest(s).as_deref(), Some("resumed"), "{ctx}");
            format!(
                "after {} checkpoints: the primary resumed its guest",
                sent.len()
            )
        }
    }
}

fn killed_at_random_points(mode: Mode) {
    let Some(net) = network(&format!("{mode:?}, kills"), SLOW) else {
        return;
    };
    let n = 4;
    let mut sargs = sender_args(mode, &n.to_string());
    sargs.extend(["--timeout".into(), "10".into()]);
    let mut rargs = receiver_args(mode);
    rargs.extend(["--timeout".into(), "10".into()]);
    // A whole run, for the octets the stream takes.
    let (s, r) = migrate(&net, &sargs, &rargs, |_, _, _, _| {});
    assert!(
        s.status.is_some_and(|s| s.success()) && r.status.is_some_and(|s| s.success()),
        "{}",
        show(&s, &r)
    );
    let total = wire_octets(&s);
    println!(
        "{mode:?} kills (seed {}): a whole run is {total} octets",
        seed()
    );
    for victim in [Victim::Sender, Victim::Receiver] {
        for point in points(mode, victim, total, n) {
            let mut hit = false;
            let (s, r) = migrate(&net, &sargs, &rargs, |net, port, s, r| {
                hit = kill_at(net, port, s, r, victim, point);
            });
            let phase = match mode {
                Mode::Live => check_live(victim, &s, &r).to_string(),
                _ => check_checkpointed(mode, victim, &s, &r),
            };
            println!(
                "  {victim:?} killed at {point:?}{}: {phase}",
                if hit { "" } else { " (it had ended)" }
            );
        }
    }
}

#[test]
fn live_migration_with_either_side_killed_keeps_one_copy() {
    killed_at_random_points(Mode::Live);
}

#[test]
fn remus_with_either_side_killed_keeps_one_running_copy() {
    killed_at_random_points(Mode::Remus);
}

#[test]
fn colo_with_either_side_killed_keeps_one_running_copy() {
    killed_at_random_points(Mode::Colo);
}
