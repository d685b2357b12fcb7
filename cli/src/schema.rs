//! The JSON the commands print, for programs: each output carries `format_version`, and
//! `xenmig schema NAME` prints the JSON Schema (draft 2020-12) that describes it.
//!
//! The schemas live in `cli/schemas/` and are compiled in. The library types are printed as
//! they serialize; [`stamp`] adds the version to the printed object, here in the CLI.
//! `cli/tests/json_schemas.rs` runs every JSON-printing command over the test vectors and
//! validates what it prints against these schemas.

use serde_json::Value;
use std::process::ExitCode;

/// The version of every JSON output's layout. It changes when a key is removed or renamed, or
/// changes its type or meaning; a key added is added to the schema in the same change.
pub const FORMAT_VERSION: u32 = 1;

/// One schema: its name for `xenmig schema NAME`, what it describes, and its text.
pub struct Schema {
    pub name: &'static str,
    pub describes: &'static str,
    pub text: &'static str,
}

/// Every JSON output's schema.
pub const SCHEMAS: &[Schema] = &[
    Schema {
        name: "verify",
        describes: "verify --json: the verifier's report",
        text: include_str!("../schemas/verify.json"),
    },
    Schema {
        name: "info",
        describes: "info --json: the report, and each vCPU's registers",
        text: include_str!("../schemas/info.json"),
    },
    Schema {
        name: "dump",
        describes: "dump --json: one line of the listing (an item, vCPU registers, the end, or \
                    the error that stopped it)",
        text: include_str!("../schemas/dump.json"),
    },
    Schema {
        name: "extract-memory",
        describes: "extract-memory --json: what was written",
        text: include_str!("../schemas/extract-memory.json"),
    },
    Schema {
        name: "extract-manifest",
        describes: "extract: the manifest.json it writes beside the files",
        text: include_str!("../schemas/extract-manifest.json"),
    },
    Schema {
        name: "diff",
        describes: "diff --json: the comparison of two images",
        text: include_str!("../schemas/diff.json"),
    },
    Schema {
        name: "sim-save",
        describes: "sim save --json: the save's figures (a line on standard error)",
        text: include_str!("../schemas/sim-save.json"),
    },
    Schema {
        name: "sim-restore",
        describes: "sim restore --json: the restore's figures (a line on standard error)",
        text: include_str!("../schemas/sim-restore.json"),
    },
];

/// `v` with `format_version` among its keys (the other keys as they are). Every JSON object
/// a command prints goes through here; a value that is not an object is left alone.
pub fn stamp(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("format_version".into(), Value::from(FORMAT_VERSION));
    }
    v
}

/// The schema named `name`.
pub fn find(name: &str) -> Option<&'static Schema> {
    SCHEMAS.iter().find(|s| s.name == name)
}

#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["name", "list"]))]
pub struct SchemaArgs {
    /// List the schemas, one per line: name, then what it describes.
    #[arg(long)]
    list: bool,
    /// The schema to print.
    #[arg(value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(SCHEMAS.iter().map(|s| s.name)))]
    name: Option<String>,
}

/// `xenmig schema NAME` or `xenmig schema --list`.
pub fn run(a: SchemaArgs) -> ExitCode {
    if a.list {
        let width = SCHEMAS.iter().map(|s| s.name.len()).max().unwrap_or(0);
        let mut text = String::new();
        for s in SCHEMAS {
            text.push_str(&format!("{:<width$}  {}\n", s.name, s.describes));
        }
        crate::out::say(&text);
        return ExitCode::SUCCESS;
    }
    // clap accepts only the names of `SCHEMAS`.
    match a.name.as_deref().and_then(find) {
        Some(s) => {
            crate::out::say(s.text);
            ExitCode::SUCCESS
        }
        None => ExitCode::from(2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The `const` of every `format_version` property a schema declares.
    fn versions(v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::Object(o) => {
                if let Some(fv) = o.get("properties").and_then(|p| p.get("format_version")) {
                    out.push(fv.get("const").cloned().unwrap_or(Value::Null));
                }
                o.values().for_each(|c| versions(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| versions(c, out)),
            _ => {}
        }
    }

    #[test]
    fn every_schema_is_draft_2020_12_and_pins_the_current_version() {
        for s in SCHEMAS {
            let v: Value = serde_json::from_str(s.text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", s.name));
            assert_eq!(
                v["$schema"], "https://json-schema.org/draft/2020-12/schema",
                "{}",
                s.name
            );
            let mut found = Vec::new();
            versions(&v, &mut found);
            assert!(!found.is_empty(), "{}: no format_version", s.name);
            for f in found {
                assert_eq!(f, json!(FORMAT_VERSION), "{}", s.name);
            }
            assert!(s.text.ends_with('\n'), "{}", s.name);
        }
    }

    #[test]
    fn stamp_adds_the_version_and_keeps_the_keys() {
        let v = stamp(json!({ "name": "eof", "complete": true }));
        assert_eq!(
            v,
            json!({ "format_version": FORMAT_VERSION, "name": "eof", "complete": true })
        );
        assert_eq!(stamp(json!([1, 2])), json!([1, 2]));
    }

    fn parsed(name: &str) -> Value {
        serde_json::from_str(find(name).unwrap().text).unwrap()
    }

    #[test]
    fn shared_parts_are_written_the_same_in_every_schema() {
        // A definition of one name means the same thing wherever it appears.
        let mut defs: std::collections::BTreeMap<String, (&str, Value)> = Default::default();
        for s in SCHEMAS {
            let v = parsed(s.name);
            let Some(d) = v.get("$defs").and_then(Value::as_object) else {
                continue;
            };
            for (k, def) in d {
                match defs.get(k) {
                    Some((first, seen)) => {
                        assert_eq!(seen, def, "$defs/{k} of {} and of {first}", s.name)
                    }
                    None => {
                        defs.insert(k.clone(), (s.name, def.clone()));
                    }
                }
            }
        }
        assert!(defs.contains_key("stream_error") && defs.contains_key("vcpu_registers"));
        // info is verify's report plus the registers.
        let (verify, info) = (parsed("verify"), parsed("info"));
        let mut props = verify["properties"].as_object().unwrap().clone();
        props.insert(
            "vcpu_registers".into(),
            info["properties"]["vcpu_registers"].clone(),
        );
        assert_eq!(&props, info["properties"].as_object().unwrap());
        let mut required = verify["required"].as_array().unwrap().clone();
        required.push(json!("vcpu_registers"));
        assert_eq!(required, *info["required"].as_array().unwrap());
    }

    #[test]
    fn names_are_unique_and_found() {
        let names: std::collections::BTreeSet<&str> = SCHEMAS.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), SCHEMAS.len());
        for s in SCHEMAS {
            assert_eq!(find(s.name).map(|f| f.text), Some(s.text), "{}", s.name);
        }
        assert!(find("no-such-output").is_none());
    }
}
