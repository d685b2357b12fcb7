//! The JSON the commands print, for programs: each object carries `format_version`.
//!
//! The library types are printed as they serialize; [`stamp`] adds the version to the
//! printed object, here in the CLI.

use serde_json::Value;

/// The version of every JSON output's layout. It changes when a key is removed or renamed, or
/// changes its type or meaning.
pub const FORMAT_VERSION: u32 = 1;

/// `v` with `format_version` among its keys (the other keys as they are). Every JSON object
/// a command prints goes through here; a value that is not an object is left alone.
pub fn stamp(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("format_version".into(), Value::from(FORMAT_VERSION));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stamp_adds_the_version_and_keeps_the_keys() {
        let v = stamp(json!({ "name": "eof", "complete": true }));
        assert_eq!(
            v,
            json!({ "format_version": FORMAT_VERSION, "name": "eof", "complete": true })
        );
        assert_eq!(stamp(json!([1, 2])), json!([1, 2]));
    }
}
