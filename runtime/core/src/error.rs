//! Errors of the stream runtime: where in the stream, which record, which rule, what was seen.

use crate::wire::{DecodeError, Level};
use std::fmt;

/// Which layer of a stream an item belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// The `xl save` file header.
    Xl,
    /// libxl framing records.
    Libxl,
    /// The libxc domain image.
    Libxc,
}

impl Layer {
    /// The layer's name in lower case, as errors and reports print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Xl => "xl",
            Layer::Libxl => "libxl",
            Layer::Libxc => "libxc",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Reading the input failed.
    Io,
    /// The input ended inside an item.
    Truncated,
    /// The bytes break a rule of the format.
    Invalid,
}

/// An error found while reading, verifying or converting a stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamError {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// Byte offset in the input where the problem is.
    pub offset: u64,
    /// Index of the record (all layers counted together, from 0), if inside one.
    pub record_index: Option<u64>,
    /// Layer and name of the record or header, e.g. `libxc PAGE_DATA` or `libxc image_header`.
    pub item: Option<String>,
    /// The rule that failed, as the spec (or the runtime) names it.
    pub rule: String,
    /// Who enforces the rule.
    pub level: &'static str,
    /// The condition and the values seen.
    pub detail: String,
}

impl StreamError {
    /// An error of `kind` at `offset` breaking `rule`, outside any record, at the `required` level.
    pub fn new(
        kind: ErrorKind,
        offset: u64,
        rule: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        StreamError {
            kind,
            offset,
            record_index: None,
            item: None,
            rule: rule.into(),
            level: Level::Required.as_str(),
            detail: detail.into(),
        }
    }

    /// An I/O failure at `offset`.
    pub fn io(offset: u64, e: &std::io::Error) -> Self {
        StreamError::new(ErrorKind::Io, offset, "io", e.to_string())
    }

    /// A rule broken at `offset`.
    pub fn invalid(offset: u64, rule: impl Into<String>, detail: impl Into<String>) -> Self {
        StreamError::new(ErrorKind::Invalid, offset, rule, detail)
    }

    /// A decode error of the generated code, placed in the stream: `base` is the offset of the
    /// decoded bytes.
    pub fn from_decode(e: &DecodeError, layer: Layer, base: u64) -> Self {
        StreamError {
            kind: ErrorKind::Invalid,
            offset: base + e.offset as u64,
            record_index: None,
            item: Some(format!("{layer} {}", e.item)),
            rule: e.rule.to_string(),
            level: e.level.as_str(),
            detail: e.detail.clone(),
        }
    }

    /// Places the error in record `index` (counted over all layers), named `item`.
    pub fn with_record(mut self, index: u64, item: impl Into<String>) -> Self {
        self.record_index = Some(index);
        self.item = Some(item.into());
        self
    }

    /// Names the record or header the error is in.
    pub fn with_item(mut self, item: impl Into<String>) -> Self {
        self.item = Some(item.into());
        self
    }

    /// Sets who enforces the broken rule.
    pub fn with_level(mut self, level: Level) -> Self {
        self.level = level.as_str();
        self
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at offset {:#x}", self.offset)?;
        if let Some(i) = self.record_index {
            write!(f, ", record #{i}")?;
        }
        if let Some(item) = &self.item {
            write!(f, " ({item})")?;
        }
        write!(
            f,
            ": rule `{}` ({}): {}",
            self.rule, self.level, self.detail
        )
    }
}

impl std::error::Error for StreamError {}
