//! The helper's end of the pipes to libxl, and the drivers' callbacks answered through them.

use super::backend::HelperDomain;
use super::protocol::{msgtype, read_reply, CbFlags, Level, Message, ProtocolError};
use crate::domain::{
    CheckpointAnswer, PrecopyDecision, PrecopyStats, RestoreCallbacks, SaveCallbacks,
};
use crate::save::StreamType;
use std::io::{self, Read, Write};

/// The context of the helper's own log messages.
pub const HELPER_CONTEXT: &str = "libxl-save-helper";
/// The context of what libxc would log (and of every progress message).
pub const XC_CONTEXT: &str = "xc";

/// Why the pipe to libxl is no longer usable.
#[derive(Debug)]
pub enum PipeFailure {
    /// libxl closed our stdin while we waited for a reply (it died, or was killed): exit 254.
    Eof,
    /// Reading a reply or writing a message failed: exit 255.
    Io(io::Error),
}

/// stdin (replies from libxl) and stdout (messages to libxl).
///
/// Once the pipe fails, nothing more is written and every call answers as a failure, so the
/// drivers unwind and the helper exits without `complete`, as the C helper does.
pub struct Pipe<R, W> {
    from_libxl: R,
    to_libxl: W,
    failure: Option<PipeFailure>,
    /// The last message sent, when it was a progress message (to drop exact repeats).
    last_progress: Option<Message>,
}

impl<R: Read, W: Write> Pipe<R, W> {
    /// A pipe reading replies from `from_libxl` and writing messages to `to_libxl`.
    pub fn new(from_libxl: R, to_libxl: W) -> Self {
        Pipe {
            from_libxl,
            to_libxl,
            failure: None,
            last_progress: None,
        }
    }

    /// The failure that ended the conversation, if any.
    pub fn failure(&self) -> Option<&PipeFailure> {
        self.failure.as_ref()
    }

    /// Sends one message (nothing after a failure). Long log texts are already cut.
    pub fn send(&mut self, m: &Message) {
        if self.failure.is_some() {
            return;
        }
        if matches!(m, Message::Progress { .. }) {
            if self.last_progress.as_ref() == Some(m) {
                return;
            }
            self.last_progress = Some(m.clone());
        } else {
            self.last_progress = None;
        }
        let frame = match m.encode() {
            Ok(f) => f,
            Err(e) => {
                self.failure = Some(PipeFailure::Io(io::Error::other(e.to_string())));
                return;
            }
        };
        if let Err(e) = self
            .to_libxl
            .write_all(&frame)
            .and_then(|()| self.to_libxl.flush())
        {
            self.failure = Some(PipeFailure::Io(e));
        }
    }

    /// Sends a message and waits for libxl's `int` reply; `None` once the pipe has failed.
    pub fn call(&mut self, m: &Message) -> Option<i32> {
        self.send(m);
        if self.failure.is_some() {
            return None;
        }
        match read_reply(&mut self.from_libxl) {
            Ok(v) => Some(v),
            Err(ProtocolError::Io(e)) => {
                self.failure = Some(PipeFailure::Io(e));
                None
            }
            Err(_) => {
                self.failure = Some(PipeFailure::Eof);
                None
            }
        }
    }

    /// A log message.
    pub fn log(&mut self, level: Level, errnoval: i32, context: &str, text: &str) {
        self.send(&Message::log(level, errnoval, context, text));
    }

    /// A log message as libxc writes them (no errno value; the errno is in the text).
    pub fn xc_log(&mut self, level: Level, text: &str) {
        self.log(level, super::protocol::NO_ERRNO, XC_CONTEXT, text);
    }

    /// The streams back (for tests).
    pub fn into_inner(self) -> (R, W) {
        (self.from_libxl, self.to_libxl)
    }
}

/// libxc's callbacks answered over the pipe: the messages of the callbacks libxl implements
/// (`cbflags`), with the meaning of the replies the reference gives.
pub struct HelperCallbacks<'p, R, W> {
    pipe: &'p mut Pipe<R, W>,
    cbflags: CbFlags,
    domid: u32,
    stream_type: StreamType,
}

impl<'p, R: Read, W: Write> HelperCallbacks<'p, R, W> {
    /// Callbacks over `pipe` for domain `domid`, sending only the messages `cbflags` allows.
    pub fn new(
        pipe: &'p mut Pipe<R, W>,
        cbflags: CbFlags,
        domid: u32,
        stream_type: StreamType,
    ) -> Self {
        HelperCallbacks {
            pipe,
            cbflags,
            domid,
            stream_type,
        }
    }

    /// Calls libxl if it implements the callback of message `m`.
    fn call_if_set(&mut self, m: Message) -> Option<i32> {
        if !self.cbflags.has(m.msgtype()) {
            return None;
        }
        self.pipe.call(&m)
    }
}

impl<D: HelperDomain, R: Read, W: Write> SaveCallbacks<D> for HelperCallbacks<'_, R, W> {
    /// Non-zero reply: libxl has suspended the domain (the driver then checks that it has).
    fn suspend(&mut self, dom: &mut D) -> bool {
        match self.call_if_set(Message::Suspend) {
            Some(r) if r != 0 => {
                dom.toolstack_suspended();
                true
            }
            _ => false,
        }
    }

    /// 1: libxl has resumed the guest after the checkpoint.
    fn postcopy(&mut self, dom: &mut D) -> i32 {
        let r = self.call_if_set(Message::Postcopy).unwrap_or(0);
        if r > 0 {
            dom.toolstack_resumed();
        }
        r
    }

    /// Remus: 1 takes another checkpoint (after libxl's interval), 0 stops. COLO: non-zero ok.
    fn checkpoint(&mut self, dom: &mut D) -> i32 {
        let r = self.call_if_set(Message::Checkpoint).unwrap_or(0);
        if r > 0 && self.stream_type == StreamType::Remus {
            dom.checkpoint_interval();
        }
        r
    }

    /// COLO: 1 continues.
    fn wait_checkpoint(&mut self, _dom: &mut D) -> i32 {
        self.call_if_set(Message::WaitCheckpoint).unwrap_or(0)
    }

    /// The C helper does not forward libxc's precopy policy: Xen's default applies.
    fn precopy_policy(&mut self, _stats: PrecopyStats) -> Option<PrecopyDecision> {
        None
    }

    /// 0 ok, -1 error. Without the callback (PV), nothing to do.
    fn switch_qemu_logdirty(&mut self, enable: bool) -> i32 {
        if !self.cbflags.has(msgtype::SWITCH_QEMU_LOGDIRTY) {
            return 0;
        }
        let m = Message::SwitchQemuLogdirty {
            domid: self.domid,
            enable: enable as u32,
        };
        self.pipe.call(&m).unwrap_or(-1)
    }

    /// Progress under libxc's prefixes. libxc reports "Complete" right after "End of stream"
    /// (with only the END record written in between), so it is sent here too.
    fn progress(&mut self, what: &str, done: u64, total: u64) {
        self.pipe
            .send(&Message::progress(XC_CONTEXT, what, done, total));
        if what == "End of stream" {
            self.pipe
                .send(&Message::progress(XC_CONTEXT, "Complete", 0, 0));
        }
    }
}

impl<D: HelperDomain, R: Read, W: Write> RestoreCallbacks<D> for HelperCallbacks<'_, R, W> {
    /// 0 ok. Without the callback, nothing to tell.
    fn static_data_done(&mut self, _dom: &mut D, missing: u32) -> i32 {
        if !self.cbflags.has(msgtype::STATIC_DATA_DONE) {
            return 0;
        }
        self.pipe
            .call(&Message::StaticDataDone { missing })
            .unwrap_or(-1)
    }

    /// 1 success, 2 failover, anything else an error (`XGR_CHECKPOINT_*`). libxl reads its own
    /// records of the checkpoint from the shared stream fd before it answers.
    fn checkpoint(&mut self, _dom: &mut D) -> CheckpointAnswer {
        match self.call_if_set(Message::Checkpoint) {
            Some(1) => CheckpointAnswer::Success,
            Some(2) => CheckpointAnswer::Failover,
            _ => CheckpointAnswer::Error,
        }
    }
}
