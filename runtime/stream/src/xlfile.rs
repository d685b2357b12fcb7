//! The xl save-file container (format-reference §2): a 48-octet header in host byte order,
//! optional data (u32 config length, then the JSON domain config with its NUL), then the
//! stream — a libxl stream when STREAMv2 is set, otherwise a legacy (pre-4.6) libxc stream
//! that xl has converted before restoring.
//!
//! The JSON domain config of simulated guests (`SimDomainConfig`) is the simulator's
//! (xenmig-sim); here the config is octets.

use crate::error::{Layer, StreamError};
use crate::wire::{DecodeCtx, Endian, Strictness};
use crate::writer::{StreamWriter, WriteError};
use crate::xl;
use std::io::{self, Read, Write};

/// What an xl header and its optional data say.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct XlFileInfo {
    /// The header's mandatory flags.
    pub mandatory_flags: u32,
    /// The header's optional flags.
    pub optional_flags: u32,
    /// Length of the optional data.
    pub optional_data_len: u32,
    /// The config text without its terminating NUL; `None` when there is no optional data
    /// or the config is empty.
    #[serde(skip)]
    pub config: Option<Vec<u8>>,
    /// Whether the config is libxl JSON (the JSON flag).
    pub json: bool,
    /// 2 when STREAMv2 is set (a libxl stream follows), 1 otherwise (legacy: xl runs the
    /// conversion helper before restoring).
    pub stream_version: u32,
}

impl XlFileInfo {
    /// The config as text (lossy), for messages.
    pub fn config_text(&self) -> Option<String> {
        self.config
            .as_ref()
            .map(|c| String::from_utf8_lossy(c).into_owned())
    }
}

/// Why an xl header was refused.
#[derive(Debug, thiserror::Error)]
pub enum XlError {
    /// The header is malformed.
    #[error("{0}")]
    Stream(#[from] StreamError),
    #[error(
        "the xl header's STREAMv2 flag is clear (stream_version 1): the body is a legacy \
         (Xen 4.5 or older) stream, and legacy conversion is needed before it can be restored \
         (`xenmig convert-legacy`, or Xen's convert-legacy-stream)"
    )]
    /// The body is a legacy stream (STREAMv2 clear); the header's information is kept.
    LegacyConversionNeeded(XlFileInfo),
    /// Reading the header failed.
    #[error("reading the xl header: {0}")]
    Io(#[from] io::Error),
    /// Writing the header failed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Checks a decoded xl header and its optional data as xl does: known mandatory flags only,
/// optional data long enough for the config it announces (any extra is ignored).
pub fn parse(header: &xl::XlHeader, optional_data: &[u8]) -> Result<XlFileInfo, StreamError> {
    let reserved = header.mandatory_flags.reserved_bits();
    if reserved != 0 {
        return Err(StreamError::invalid(
            36,
            "mandatory_flags.reserved_bits",
            format!(
                "mandatory flags {:#x} carry bits {reserved:#x} xl does not know (JSON = 0x1, STREAMv2 = 0x2): the file cannot be restored",
                header.mandatory_flags.0
            ),
        )
        .with_item("xl xl_header"));
    }
    let json = header.mandatory_flags.contains(xl::XlMandatoryFlags::JSON);
    let stream_version = if header
        .mandatory_flags
        .contains(xl::XlMandatoryFlags::STREAMV2)
    {
        2
    } else {
        1
    };
    let config = if optional_data.is_empty() {
        None
    } else {
        let ctx = DecodeCtx::new(0).with_strictness(Strictness::Lenient);
        let d = xl::XlOptionalData::decode(optional_data, &ctx)
            .map_err(|e| StreamError::from_decode(&e, Layer::Xl, xl::XlHeader::SIZE as u64))?;
        let c = d.config;
        let c = if json {
            c.strip_suffix(&[0]).unwrap_or(c)
        } else {
            c
        };
        (!c.is_empty()).then(|| c.to_vec())
    };
    Ok(XlFileInfo {
        mandatory_flags: header.mandatory_flags.0,
        optional_flags: header.optional_flags,
        optional_data_len: header.optional_data_len,
        config,
        json,
        stream_version,
    })
}

/// The header and optional data current xl writes: JSON (when there is a config) and
/// STREAMv2; the config gets its terminating NUL.
pub fn header_for(config_json: Option<&[u8]>) -> Result<(xl::XlHeader, Vec<u8>), WriteError> {
    let mut config = config_json.map(<[u8]>::to_vec).unwrap_or_default();
    let mut flags = xl::XlMandatoryFlags::STREAMV2;
    if !config.is_empty() {
        flags = flags.with(xl::XlMandatoryFlags::JSON);
        if config.last() != Some(&0) {
            config.push(0);
        }
    }
    let optional = xl::XlOptionalData { config: &config }.encode(Endian::HOST)?;
    let header = xl::XlHeader {
        magic: xl::XL_MAGIC,
        byteorder: xl::XL_BYTEORDER,
        mandatory_flags: flags,
        optional_flags: 0,
        optional_data_len: optional.len() as u32,
    };
    Ok((header, optional))
}

/// Writes the xl header and optional data; returns the octets written.
pub fn write_header<W: Write>(out: &mut W, config_json: Option<&[u8]>) -> Result<u64, XlError> {
    let (header, optional) = header_for(config_json)?;
    let mut w = StreamWriter::new(out);
    w.xl_header(&header, &optional)?;
    Ok(w.offset())
}

/// Reads exactly the xl header and its optional data from `r` (nothing beyond, so the
/// stream can be read from the same `r`), and checks them. A legacy body (STREAMv2 clear)
/// is reported as [`XlError::LegacyConversionNeeded`].
pub fn read_header<R: Read + ?Sized>(r: &mut R) -> Result<XlFileInfo, XlError> {
    let mut h = [0u8; xl::XlHeader::SIZE];
    r.read_exact(&mut h)?;
    let ctx = DecodeCtx::new(0).with_strictness(Strictness::Lenient);
    let header =
        xl::XlHeader::decode(&h, &ctx).map_err(|e| StreamError::from_decode(&e, Layer::Xl, 0))?;
    if header.optional_data_len > crate::limits::XL_OPTIONAL_DATA_MAX {
        return Err(StreamError::invalid(
            xl::XlHeader::OPTIONAL_DATA_LEN_OFFSET as u64,
            "optional_data_len.max",
            format!(
                "optional data of {} octets is over xenmig's limit of {}",
                header.optional_data_len,
                crate::limits::XL_OPTIONAL_DATA_MAX
            ),
        )
        .into());
    }
    let mut optional = vec![0u8; header.optional_data_len as usize];
    r.read_exact(&mut optional)?;
    let info = parse(&header, &optional)?;
    if info.stream_version == 1 {
        return Err(XlError::LegacyConversionNeeded(info));
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_rules() {
        let json = r#"{"c_info": {"type": "hvm", "name": "g"}}"#;
        let mut out = Vec::new();
        let n = write_header(&mut out, Some(json.as_bytes())).unwrap();
        assert_eq!(n as usize, out.len());
        assert_eq!(out.len(), 48 + 4 + json.len() + 1);
        assert_eq!(*out.last().unwrap(), 0);
        out.extend_from_slice(b"BODY");
        let mut r = &out[..];
        let info = read_header(&mut r).unwrap();
        assert_eq!(r, b"BODY");
        assert!(info.json);
        assert_eq!(info.stream_version, 2);
        assert_eq!(info.config.as_deref(), Some(json.as_bytes()));

        // Unknown mandatory bits, and a legacy body.
        let mut bad = out.clone();
        bad[36..40].copy_from_slice(&(0x7u32).to_ne_bytes());
        assert!(matches!(
            read_header(&mut &bad[..]),
            Err(XlError::Stream(_))
        ));
        let mut legacy = out.clone();
        legacy[36..40].copy_from_slice(&(0x1u32).to_ne_bytes());
        let e = read_header(&mut &legacy[..]).unwrap_err();
        assert!(matches!(e, XlError::LegacyConversionNeeded(_)));
        assert!(e.to_string().contains("legacy conversion is needed"));
        // Optional data too short for the config it announces.
        let mut short = out.clone();
        short[48..52].copy_from_slice(&(100_000u32).to_ne_bytes());
        assert!(read_header(&mut &short[..]).is_err());
    }

    #[test]
    fn no_config() {
        let mut out = Vec::new();
        write_header(&mut out, None).unwrap();
        let info = read_header(&mut &out[..]).unwrap();
        assert_eq!(info.config, None);
        assert!(!info.json);
    }
}
