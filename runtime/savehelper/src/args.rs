//! The helper's argv, exactly as libxl passes it (`libxl_save_callout.c`): every number in
//! decimal, fds as `int` (-1 for none), the rest unsigned.

use super::protocol::CbFlags;
use crate::save::StreamType;

/// `--save-domain io_fd recv_fd domid xcflags cbflags stream_type` (argc 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveArgs {
    /// Where the libxc stream goes.
    pub io_fd: i32,
    /// The back channel from the receiver (only COLO reads it).
    pub recv_fd: i32,
    /// The domain to save.
    pub domid: u32,
    /// `XCFLAGS_LIVE` 1, `XCFLAGS_DEBUG` 2.
    pub xcflags: u32,
    /// The callbacks libxl implements.
    pub cbflags: CbFlags,
    /// Plain, Remus or COLO.
    pub stream_type: StreamType,
}

impl SaveArgs {
    /// `XCFLAGS_LIVE`: a live save.
    pub const XCFLAGS_LIVE: u32 = 1;
    /// `XCFLAGS_DEBUG`: resend every page after a VERIFY record.
    pub const XCFLAGS_DEBUG: u32 = 2;

    /// Whether the save is live.
    pub fn live(&self) -> bool {
        self.xcflags & Self::XCFLAGS_LIVE != 0
    }

    /// Whether the save sends its pages twice, for the restorer to verify.
    pub fn debug(&self) -> bool {
        self.xcflags & Self::XCFLAGS_DEBUG != 0
    }
}

/// `--restore-domain io_fd send_back_fd domid store_evtchn store_domid console_evtchn
/// console_domid cbflags stream_type` (argc 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreArgs {
    /// Where the libxc stream comes from (shared with libxl: read exactly).
    pub io_fd: i32,
    /// The back channel to the sender (COLO), -1 for none.
    pub send_back_fd: i32,
    /// The domain libxl created, empty.
    pub domid: u32,
    /// The xenstore ring's event channel.
    pub store_evtchn: u32,
    /// The domain that serves xenstore.
    pub store_domid: u16,
    /// The console ring's event channel.
    pub console_evtchn: u32,
    /// The domain that serves the console.
    pub console_domid: u16,
    /// The callbacks libxl implements.
    pub cbflags: CbFlags,
    /// Plain, Remus or COLO.
    pub stream_type: StreamType,
}

/// What the helper was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Args {
    /// `--save-domain`.
    Save(SaveArgs),
    /// `--restore-domain`.
    Restore(RestoreArgs),
}

/// argv that libxl would never pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// The mode is neither `--save-domain` nor `--restore-domain`.
    #[error("the first argument must be --save-domain or --restore-domain")]
    Mode,
    /// The mode takes another number of arguments.
    #[error("{mode} takes exactly {want} arguments, got {got}")]
    Count {
        /// The mode.
        mode: &'static str,
        /// argc it takes.
        want: usize,
        /// argc given.
        got: usize,
    },
    /// An argument is not a number of its type.
    #[error("argument {index} ({name}): `{value}` is not a decimal {ty}")]
    Number {
        /// Its index in argv.
        index: usize,
        /// Its name in libxl's call.
        name: &'static str,
        /// What was given.
        value: String,
        /// The type it must be.
        ty: &'static str,
    },
    /// The stream type is not one Xen defines.
    #[error("argument {index} (stream_type): {value} is not 0 (plain), 1 (Remus) or 2 (COLO)")]
    StreamType {
        /// Its index in argv.
        index: usize,
        /// What was given.
        value: u32,
    },
}

impl Args {
    /// Parses the whole argv, `argv[0]` included.
    pub fn parse<S: AsRef<str>>(argv: &[S]) -> Result<Args, ArgsError> {
        let a: Vec<&str> = argv.iter().map(|s| s.as_ref()).collect();
        match a.get(1).copied() {
            Some("--save-domain") => {
                count(&a, "--save-domain", 8)?;
                Ok(Args::Save(SaveArgs {
                    io_fd: num(&a, 2, "io_fd")?,
                    recv_fd: num(&a, 3, "recv_fd")?,
                    domid: num(&a, 4, "domid")?,
                    xcflags: num(&a, 5, "xcflags")?,
                    cbflags: CbFlags(num(&a, 6, "cbflags")?),
                    stream_type: stream_type(&a, 7)?,
                }))
            }
            Some("--restore-domain") => {
                count(&a, "--restore-domain", 11)?;
                Ok(Args::Restore(RestoreArgs {
                    io_fd: num(&a, 2, "io_fd")?,
                    send_back_fd: num(&a, 3, "send_back_fd")?,
                    domid: num(&a, 4, "domid")?,
                    store_evtchn: num(&a, 5, "store_evtchn")?,
                    store_domid: num(&a, 6, "store_domid")?,
                    console_evtchn: num(&a, 7, "console_evtchn")?,
                    console_domid: num(&a, 8, "console_domid")?,
                    cbflags: CbFlags(num(&a, 9, "cbflags")?),
                    stream_type: stream_type(&a, 10)?,
                }))
            }
            _ => Err(ArgsError::Mode),
        }
    }

    /// The callbacks libxl implements.
    pub fn cbflags(&self) -> CbFlags {
        match self {
            Args::Save(s) => s.cbflags,
            Args::Restore(r) => r.cbflags,
        }
    }

    /// The domain to save or restore into.
    pub fn domid(&self) -> u32 {
        match self {
            Args::Save(s) => s.domid,
            Args::Restore(r) => r.domid,
        }
    }

    /// The fd the libxc stream goes through.
    pub fn io_fd(&self) -> i32 {
        match self {
            Args::Save(s) => s.io_fd,
            Args::Restore(r) => r.io_fd,
        }
    }
}

fn count(a: &[&str], mode: &'static str, argc: usize) -> Result<(), ArgsError> {
    if a.len() != argc {
        return Err(ArgsError::Count {
            mode,
            want: argc - 2,
            got: a.len().saturating_sub(2),
        });
    }
    Ok(())
}

/// A decimal number of the argument's C type (fds may be negative; nothing else may).
fn num<T: std::str::FromStr>(a: &[&str], index: usize, name: &'static str) -> Result<T, ArgsError> {
    let value = a.get(index).copied().unwrap_or_default();
    let plain = value.strip_prefix('-').unwrap_or(value);
    let ok = !plain.is_empty() && plain.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| value.parse().ok())
        .flatten()
        .ok_or_else(|| ArgsError::Number {
            index,
            name,
            value: value.to_string(),
            ty: std::any::type_name::<T>(),
        })
}

fn stream_type(a: &[&str], index: usize) -> Result<StreamType, ArgsError> {
    match num::<u32>(a, index, "stream_type")? {
        0 => Ok(StreamType::Plain),
        1 => Ok(StreamType::Remus),
        2 => Ok(StreamType::Colo),
        value => Err(ArgsError::StreamType { index, value }),
    }
}

/// The number libxl uses for a stream type.
pub fn stream_type_number(t: StreamType) -> u32 {
    match t {
        StreamType::Plain => 0,
        StreamType::Remus => 1,
        StreamType::Colo => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_argv() {
        let save = [
            "libxl-save-helper",
            "--save-domain",
            "14",
            "11",
            "1",
            "0",
            "136",
            "0",
        ];
        let Args::Save(s) = Args::parse(&save).unwrap() else {
            panic!("not a save")
        };
        assert_eq!((s.io_fd, s.recv_fd, s.domid), (14, 11, 1));
        assert!(!s.live());
        assert_eq!(s.cbflags.names(), "suspend|switch_qemu_logdirty");
        let restore = [
            "h",
            "--restore-domain",
            "12",
            "-1",
            "2",
            "1",
            "0",
            "2",
            "0",
            "768",
            "0",
        ];
        let Args::Restore(r) = Args::parse(&restore).unwrap() else {
            panic!("not a restore")
        };
        assert_eq!(r.send_back_fd, -1);
        assert_eq!((r.store_evtchn, r.console_evtchn), (1, 2));
        assert_eq!(r.stream_type, StreamType::Plain);
    }

    #[test]
    fn rejects() {
        let short = ["h", "--save-domain", "14", "11", "1", "0", "136"];
        assert!(matches!(
            Args::parse(&short),
            Err(ArgsError::Count {
                want: 6,
                got: 5,
                ..
            })
        ));
        let neg = ["h", "--save-domain", "14", "11", "-1", "0", "136", "0"];
        assert!(matches!(
            Args::parse(&neg),
            Err(ArgsError::Number { index: 4, .. })
        ));
        let st = ["h", "--save-domain", "14", "11", "1", "0", "136", "3"];
        assert!(matches!(
            Args::parse(&st),
            Err(ArgsError::StreamType { value: 3, .. })
        ));
        let big = [
            "h",
            "--restore-domain",
            "12",
            "-1",
            "2",
            "1",
            "65536",
            "2",
            "0",
            "768",
            "0",
        ];
        assert!(matches!(
            Args::parse(&big),
            Err(ArgsError::Number { index: 6, .. })
        ));
        assert_eq!(Args::parse(&["h", "--help"]), Err(ArgsError::Mode));
    }
}
