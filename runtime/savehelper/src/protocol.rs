//! The pipe protocol between libxl and its save helper (Xen 4.17's `libxl_save_msgs_gen.pl`):
//! helper → libxl messages on the helper's stdout, libxl → helper replies on its stdin.
//!
//! A message is `u16 body_len` then the body, `u16 type` followed by the arguments packed with
//! no padding, all in host byte order. `u32`/`i32` take 4 octets, `u64` (C `unsigned long`)
//! 8, and a string is `u32 n` then `n` octets ending in NUL. A reply is one native `int`.

use std::fmt;
use std::io::{self, Read, Write};

/// Message type numbers.
pub mod msgtype {
    /// `log`: a libxc log message.
    pub const LOG: u16 = 1;
    /// `progress`: how far the save or restore is.
    pub const PROGRESS: u16 = 2;
    /// `suspend` (save): suspend the guest.
    pub const SUSPEND: u16 = 3;
    /// `postcopy` (save): the checkpoint is out; resume the guest.
    pub const POSTCOPY: u16 = 4;
    /// `checkpoint`: save: take another checkpoint? restore: a checkpoint arrived.
    pub const CHECKPOINT: u16 = 5;
    /// `wait_checkpoint` (COLO save): wait for the next checkpoint.
    pub const WAIT_CHECKPOINT: u16 = 6;
    /// `switch_qemu_logdirty` (save): the device model's log-dirty on or off.
    pub const SWITCH_QEMU_LOGDIRTY: u16 = 7;
    /// `static_data_done` (restore): the static data is complete.
    pub const STATIC_DATA_DONE: u16 = 8;
    /// `restore_results` (restore): the xenstore and console ring frames.
    pub const RESTORE_RESULTS: u16 = 9;
    /// `complete`: the helper's result, its last message.
    pub const COMPLETE: u16 = 10;
}

/// The largest body libxl accepts (see [`crate::limits::SAVE_HELPER_MAX_BODY`]).
pub use crate::limits::SAVE_HELPER_MAX_BODY as MAX_BODY;

/// The xentoollog levels a `log` message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum Level {
    /// `XTL_DEBUG`.
    Debug = 1,
    /// `XTL_VERBOSE`.
    Verbose = 2,
    /// `XTL_DETAIL`.
    Detail = 3,
    /// `XTL_PROGRESS`.
    Progress = 4,
    /// `XTL_INFO`.
    Info = 5,
    /// `XTL_NOTICE`.
    Notice = 6,
    /// `XTL_WARN`.
    Warn = 7,
    /// `XTL_ERROR`.
    Error = 8,
    /// `XTL_CRITICAL`.
    Critical = 9,
}

/// `errnoval` of libxc's own log messages: none (the errno is in the text).
pub const NO_ERRNO: i32 = -1;

/// One helper → libxl message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A log message.
    Log {
        /// Its [`Level`].
        level: u32,
        /// The errno it reports, or [`NO_ERRNO`].
        errnoval: i32,
        /// Who logs (without the NUL the wire adds).
        context: Vec<u8>,
        /// The message (without the NUL).
        text: Vec<u8>,
    },
    /// Progress of a step.
    Progress {
        /// Who reports (without the NUL).
        context: Vec<u8>,
        /// The step (without the NUL).
        doing_what: Vec<u8>,
        /// Units done.
        done: u64,
        /// Units in all.
        total: u64,
    },
    /// Asks libxl to suspend the guest.
    Suspend,
    /// The checkpoint is out: asks libxl to resume the guest.
    Postcopy,
    /// Save: asks whether to take another checkpoint; restore: a checkpoint arrived.
    Checkpoint,
    /// Asks libxl to wait for the next COLO checkpoint.
    WaitCheckpoint,
    /// Asks libxl to switch the device model's log-dirty.
    SwitchQemuLogdirty {
        /// The domain.
        domid: u32,
        /// 1 on, 0 off.
        enable: u32,
    },
    /// The restore's static data is complete.
    StaticDataDone {
        /// Policies the stream lacked: bit 0 CPUID, bit 1 MSR.
        missing: u32,
    },
    /// The restored guest's ring frames.
    RestoreResults {
        /// The xenstore ring's frame.
        store_gfn: u64,
        /// The console ring's frame.
        console_gfn: u64,
    },
    /// The save or restore is over.
    Complete {
        /// 0 on success, else non-zero.
        retval: i32,
        /// The errno of the failure, 0 on success.
        errnoval: i32,
    },
}

impl Message {
    /// A log message; the text is cut so that the body fits in 65535 octets.
    pub fn log(level: Level, errnoval: i32, context: &str, text: &str) -> Message {
        let context = context.as_bytes().to_vec();
        // type, level, errnoval, two string lengths and two NULs.
        let room = MAX_BODY.saturating_sub(2 + 4 + 4 + 4 + 4 + 2 + context.len());
        Message::Log {
            level: level as u32,
            errnoval,
            context,
            text: truncate(text, room).as_bytes().to_vec(),
        }
    }

    /// A progress message.
    pub fn progress(context: &str, doing_what: &str, done: u64, total: u64) -> Message {
        let context = context.as_bytes().to_vec();
        let room = MAX_BODY.saturating_sub(2 + 4 + 4 + 2 + 8 + 8 + context.len());
        Message::Progress {
            context,
            doing_what: truncate(doing_what, room).as_bytes().to_vec(),
            done,
            total,
        }
    }

    /// The type number.
    pub fn msgtype(&self) -> u16 {
        use msgtype::*;
        match self {
            Message::Log { .. } => LOG,
            Message::Progress { .. } => PROGRESS,
            Message::Suspend => SUSPEND,
            Message::Postcopy => POSTCOPY,
            Message::Checkpoint => CHECKPOINT,
            Message::WaitCheckpoint => WAIT_CHECKPOINT,
            Message::SwitchQemuLogdirty { .. } => SWITCH_QEMU_LOGDIRTY,
            Message::StaticDataDone { .. } => STATIC_DATA_DONE,
            Message::RestoreResults { .. } => RESTORE_RESULTS,
            Message::Complete { .. } => COMPLETE,
        }
    }

    /// The name libxl's generator gives the message.
    pub fn name(&self) -> &'static str {
        type_name(self.msgtype()).unwrap_or("unknown")
    }

    /// Whether libxl answers this message with an `int`.
    pub fn expects_reply(&self) -> bool {
        !matches!(
            self,
            Message::Log { .. } | Message::Progress { .. } | Message::RestoreResults { .. }
        )
    }

    /// The body (type and arguments), without the length prefix.
    pub fn encode_body(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32);
        b.extend_from_slice(&self.msgtype().to_ne_bytes());
        match self {
            Message::Log {
                level,
                errnoval,
                context,
                text,
            } => {
                b.extend_from_slice(&level.to_ne_bytes());
                b.extend_from_slice(&errnoval.to_ne_bytes());
                put_string(&mut b, context);
                put_string(&mut b, text);
            }
            Message::Progress {
                context,
                doing_what,
                done,
                total,
            } => {
                put_string(&mut b, context);
                put_string(&mut b, doing_what);
                b.extend_from_slice(&done.to_ne_bytes());
                b.extend_from_slice(&total.to_ne_bytes());
            }
            Message::Suspend
            | Message::Postcopy
            | Message::Checkpoint
            | Message::WaitCheckpoint => {}
            Message::SwitchQemuLogdirty { domid, enable } => {
                b.extend_from_slice(&domid.to_ne_bytes());
                b.extend_from_slice(&enable.to_ne_bytes());
            }
            Message::StaticDataDone { missing } => b.extend_from_slice(&missing.to_ne_bytes()),
            Message::RestoreResults {
                store_gfn,
                console_gfn,
            } => {
                b.extend_from_slice(&store_gfn.to_ne_bytes());
                b.extend_from_slice(&console_gfn.to_ne_bytes());
            }
            Message::Complete { retval, errnoval } => {
                b.extend_from_slice(&retval.to_ne_bytes());
                b.extend_from_slice(&errnoval.to_ne_bytes());
            }
        }
        b
    }

    /// The whole frame: `u16 body_len` and the body. Errors when the body is 65536 octets or
    /// more (only possible for hand-built log or progress messages with a huge context).
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let body = self.encode_body();
        let len = u16::try_from(body.len()).map_err(|_| ProtocolError::TooLong(body.len()))?;
        let mut frame = Vec::with_capacity(2 + body.len());
        frame.extend_from_slice(&len.to_ne_bytes());
        frame.extend_from_slice(&body);
        Ok(frame)
    }

    /// Decodes one body (type and arguments), as libxl does: the body must be consumed exactly
    /// and every string must end in its NUL.
    pub fn decode_body(body: &[u8]) -> Result<Message, ProtocolError> {
        let mut c = Cursor { body, at: 0 };
        let t = c.u16()?;
        use msgtype::*;
        let m = match t {
            LOG => Message::Log {
                level: c.u32()?,
                errnoval: c.i32()?,
                context: c.string()?,
                text: c.string()?,
            },
            PROGRESS => Message::Progress {
                context: c.string()?,
                doing_what: c.string()?,
                done: c.u64()?,
                total: c.u64()?,
            },
            SUSPEND => Message::Suspend,
            POSTCOPY => Message::Postcopy,
            CHECKPOINT => Message::Checkpoint,
            WAIT_CHECKPOINT => Message::WaitCheckpoint,
            SWITCH_QEMU_LOGDIRTY => Message::SwitchQemuLogdirty {
                domid: c.u32()?,
                enable: c.u32()?,
            },
            STATIC_DATA_DONE => Message::StaticDataDone { missing: c.u32()? },
            RESTORE_RESULTS => Message::RestoreResults {
                store_gfn: c.u64()?,
                console_gfn: c.u64()?,
            },
            COMPLETE => Message::Complete {
                retval: c.i32()?,
                errnoval: c.i32()?,
            },
            other => return Err(ProtocolError::UnknownType(other)),
        };
        if c.at != body.len() {
            return Err(ProtocolError::Trailing {
                msgtype: t,
                extra: body.len() - c.at,
            });
        }
        Ok(m)
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match self {
            Message::Log {
                level,
                errnoval,
                context,
                text,
            } => write!(
                f,
                "log level={level} errno={errnoval} [{}] {}",
                s(context),
                s(text)
            ),
            Message::Progress {
                context,
                doing_what,
                done,
                total,
            } => write!(
                f,
                "progress [{}] {:?} {done}/{total}",
                s(context),
                s(doing_what)
            ),
            Message::SwitchQemuLogdirty { domid, enable } => {
                write!(f, "switch_qemu_logdirty domid={domid} enable={enable}")
            }
            Message::StaticDataDone { missing } => {
                write!(f, "static_data_done missing={missing:#x}")
            }
            Message::RestoreResults {
                store_gfn,
                console_gfn,
            } => write!(
                f,
                "restore_results store_gfn={store_gfn:#x} console_gfn={console_gfn:#x}"
            ),
            Message::Complete { retval, errnoval } => {
                write!(f, "complete retval={retval} errnoval={errnoval}")
            }
            other => f.write_str(other.name()),
        }
    }
}

/// The generator's name of a message type.
pub fn type_name(t: u16) -> Option<&'static str> {
    Some(match t {
        msgtype::LOG => "log",
        msgtype::PROGRESS => "progress",
        msgtype::SUSPEND => "suspend",
        msgtype::POSTCOPY => "postcopy",
        msgtype::CHECKPOINT => "checkpoint",
        msgtype::WAIT_CHECKPOINT => "wait_checkpoint",
        msgtype::SWITCH_QEMU_LOGDIRTY => "switch_qemu_logdirty",
        msgtype::STATIC_DATA_DONE => "static_data_done",
        msgtype::RESTORE_RESULTS => "restore_results",
        msgtype::COMPLETE => "complete",
        _ => return None,
    })
}

/// Cuts `s` to at most `max` octets, at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

fn put_string(b: &mut Vec<u8>, s: &[u8]) {
    b.extend_from_slice(&(s.len() as u32 + 1).to_ne_bytes());
    b.extend_from_slice(s);
    b.push(0);
}

struct Cursor<'a> {
    body: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ProtocolError> {
        let b = self
            .body
            .get(self.at..self.at.saturating_add(n))
            .ok_or(ProtocolError::Short {
                at: self.at,
                need: n,
                len: self.body.len(),
            })?;
        self.at += n;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u16(&mut self) -> Result<u16, ProtocolError> {
        Ok(u16::from_ne_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_ne_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, ProtocolError> {
        Ok(i32::from_ne_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_ne_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<Vec<u8>, ProtocolError> {
        let at = self.at;
        let n = self.u32()? as usize;
        let s = self.take(n)?;
        match s.split_last() {
            Some((0, text)) => Ok(text.to_vec()),
            _ => Err(ProtocolError::BadString { at }),
        }
    }
}

/// A malformed message or a failed pipe.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The type number is not one of [`msgtype`].
    #[error("message type {0} is unknown")]
    UnknownType(u16),
    /// The body ends before an argument does.
    #[error("body ends at octet {len}: {need} octets needed at {at}")]
    Short {
        /// Where the argument starts in the body.
        at: usize,
        /// Octets it needs.
        need: usize,
        /// Length of the body.
        len: usize,
    },
    /// Octets follow the last argument.
    #[error("message type {msgtype}: {extra} octets after the last argument")]
    Trailing {
        /// The message type.
        msgtype: u16,
        /// Octets left over.
        extra: usize,
    },
    /// A string is empty or lacks its NUL.
    #[error("the string at body octet {at} is empty or does not end in NUL")]
    BadString {
        /// Where the string starts in the body.
        at: usize,
    },
    /// The body is longer than [`MAX_BODY`].
    #[error("body of {0} octets; the protocol allows at most {max}", max = MAX_BODY)]
    TooLong(usize),
    /// The pipe was closed.
    #[error("end of file")]
    Eof,
    /// The pipe failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads one message frame (for the libxl side and tests). `Ok(None)` at a clean end of file.
pub fn read_message(r: &mut impl Read) -> Result<Option<Message>, ProtocolError> {
    let mut len = [0u8; 2];
    match read_full(r, &mut len)? {
        0 => return Ok(None),
        2 => {}
        _ => return Err(ProtocolError::Eof),
    }
    let mut body = vec![0u8; u16::from_ne_bytes(len) as usize];
    if read_full(r, &mut body)? != body.len() {
        return Err(ProtocolError::Eof);
    }
    Message::decode_body(&body).map(Some)
}

/// Reads one reply, a native `int`. End of file gives [`ProtocolError::Eof`].
pub fn read_reply(r: &mut impl Read) -> Result<i32, ProtocolError> {
    let mut b = [0u8; 4];
    if read_full(r, &mut b)? != 4 {
        return Err(ProtocolError::Eof);
    }
    Ok(i32::from_ne_bytes(b))
}

/// Writes one reply (the libxl side).
pub fn write_reply(w: &mut impl Write, value: i32) -> io::Result<()> {
    w.write_all(&value.to_ne_bytes())?;
    w.flush()
}

/// Reads until `buf` is full or end of file; returns the octets read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let dst = buf.get_mut(n..).unwrap_or_default();
        match r.read(dst) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Which callbacks libxl implements: bit `1 << msgtype` for each (argv's `cbflags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CbFlags(pub u32);

impl CbFlags {
    /// Bit of the `suspend` callback.
    pub const SUSPEND: u32 = 1 << msgtype::SUSPEND;
    /// Bit of the `postcopy` callback.
    pub const POSTCOPY: u32 = 1 << msgtype::POSTCOPY;
    /// Bit of the `checkpoint` callback.
    pub const CHECKPOINT: u32 = 1 << msgtype::CHECKPOINT;
    /// Bit of the `wait_checkpoint` callback.
    pub const WAIT_CHECKPOINT: u32 = 1 << msgtype::WAIT_CHECKPOINT;
    /// Bit of the `switch_qemu_logdirty` callback.
    pub const SWITCH_QEMU_LOGDIRTY: u32 = 1 << msgtype::SWITCH_QEMU_LOGDIRTY;
    /// Bit of the `static_data_done` callback.
    pub const STATIC_DATA_DONE: u32 = 1 << msgtype::STATIC_DATA_DONE;
    /// Bit of the `restore_results` callback.
    pub const RESTORE_RESULTS: u32 = 1 << msgtype::RESTORE_RESULTS;

    /// Whether libxl implements the callback of message type `t`.
    pub fn has(self, t: u16) -> bool {
        t < 32 && self.0 & (1 << t) != 0
    }

    /// The callback names, joined with `|`.
    pub fn names(self) -> String {
        let v: Vec<&str> = (1..=10u16)
            .filter(|&t| self.has(t))
            .filter_map(type_name)
            .collect();
        if v.is_empty() {
            "0".into()
        } else {
            v.join("|")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_match_the_captures() {
        // From vectors/save-helper/decoded: "starting save" is 50 octets, "Start of stream" 45.
        let m = Message::log(Level::Debug, 0, "libxl-save-helper", "starting save");
        assert_eq!(m.encode_body().len(), 50);
        let p = Message::progress("xc", "Start of stream", 0, 0);
        assert_eq!(p.encode_body().len(), 45);
        assert_eq!(Message::Suspend.encode_body().len(), 2);
        let l = Message::SwitchQemuLogdirty {
            domid: 1,
            enable: 1,
        };
        assert_eq!(l.encode_body().len(), 10);
        assert_eq!(
            Message::StaticDataDone { missing: 0 }.encode_body().len(),
            6
        );
        let r = Message::RestoreResults {
            store_gfn: 1,
            console_gfn: 2,
        };
        assert_eq!(r.encode_body().len(), 18);
        let c = Message::Complete {
            retval: -1,
            errnoval: 22,
        };
        assert_eq!(c.encode_body().len(), 10);
    }

    #[test]
    fn round_trip() {
        let msgs = [
            Message::log(Level::Error, NO_ERRNO, "xc", "Save failed"),
            Message::progress("xc", "Frames", 1024, 32768),
            Message::Suspend,
            Message::Postcopy,
            Message::Checkpoint,
            Message::WaitCheckpoint,
            Message::SwitchQemuLogdirty {
                domid: 7,
                enable: 0,
            },
            Message::StaticDataDone { missing: 3 },
            Message::RestoreResults {
                store_gfn: 0xfeffc,
                console_gfn: 0xfefff,
            },
            Message::Complete {
                retval: 0,
                errnoval: 0,
            },
        ];
        let mut stream = Vec::new();
        for m in &msgs {
            stream.extend_from_slice(&m.encode().unwrap());
        }
        let mut r = &stream[..];
        for m in &msgs {
            assert_eq!(read_message(&mut r).unwrap().as_ref(), Some(m));
        }
        assert!(read_message(&mut r).unwrap().is_none());
    }

    #[test]
    fn long_log_text_is_truncated() {
        let text = "é".repeat(40_000);
        let m = Message::log(Level::Info, 0, "xc", &text);
        let frame = m.encode().unwrap();
        assert!(frame.len() - 2 <= MAX_BODY);
        let back = Message::decode_body(&frame[2..]).unwrap();
        let Message::Log { text, .. } = back else {
            panic!("not a log")
        };
        assert!(std::str::from_utf8(&text).is_ok());
    }

    #[test]
    fn decode_rejects_what_libxl_rejects() {
        assert!(matches!(
            Message::decode_body(&[11, 0]),
            Err(ProtocolError::UnknownType(11))
        ));
        let mut b = Message::Suspend.encode_body();
        b.push(0);
        assert!(matches!(
            Message::decode_body(&b),
            Err(ProtocolError::Trailing { .. })
        ));
        // A string without its NUL.
        let mut b = msgtype::PROGRESS.to_ne_bytes().to_vec();
        b.extend_from_slice(&1u32.to_ne_bytes());
        b.push(b'x');
        assert!(matches!(
            Message::decode_body(&b),
            Err(ProtocolError::BadString { .. })
        ));
    }

    #[test]
    fn cbflags_names() {
        assert_eq!(CbFlags(136).names(), "suspend|switch_qemu_logdirty");
        assert_eq!(
            CbFlags(800).names(),
            "checkpoint|static_data_done|restore_results"
        );
        assert!(CbFlags(184).has(msgtype::POSTCOPY));
    }
}
