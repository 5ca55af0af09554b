//! The test vectors of `vectors/` (SPEC.md, "Test vectors"): where they are,
//! and the `expect` object of a valid vector, as a reader decodes it.
//!
//! Shared by the reader's test (`rowhook-abi`, tests/vectors.rs) and the
//! writer's (`rowhook`, tests/e2e/abi_vectors.rs), which includes this file:
//! both sides of the format describe a change the same way.

#![allow(dead_code)]

use std::path::PathBuf;

use rowhook_abi::{Change, FormatError, Image, Row, Value};
use serde_json::{Map, Value as Json, json};

/// `guest-sdk/abi/vectors`.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("guest-sdk/abi/vectors").is_dir())
        .expect("inside the rowhook repository")
        .join("guest-sdk/abi/vectors")
}

/// Whether this run rewrites the vectors (`ROWHOOK_BLESS=1`, as for every
/// golden file of the repository).
pub fn bless() -> bool {
    std::env::var_os("ROWHOOK_BLESS").is_some()
}

/// Every vector: its name, bytes and JSON, sorted by name.
pub fn all() -> Vec<(String, Vec<u8>, Json)> {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .expect("vectors/")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".json")?.to_owned())
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(dir().join(format!("{name}.bin"))).unwrap_or_else(|e| panic!("{name}.bin: {e}"));
            let text = std::fs::read_to_string(dir().join(format!("{name}.json"))).unwrap();
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}.json: {e}"));
            (name, bytes, json)
        })
        .collect()
}

/// Writes vector `name`.
pub fn write(name: &str, bytes: &[u8], json: &Json) {
    std::fs::write(dir().join(format!("{name}.bin")), bytes).unwrap();
    let mut text = serde_json::to_string_pretty(json).unwrap();
    text.push('\n');
    std::fs::write(dir().join(format!("{name}.json")), text).unwrap();
}

/// The name of a [`FormatError`] in the vectors.
pub fn error_name(e: &FormatError) -> &'static str {
    match e {
        FormatError::Truncated => "truncated",
        FormatError::Magic(_) => "magic",
        FormatError::Op(_) => "op",
        FormatError::Tag(_) => "tag",
        FormatError::Span => "span",
        FormatError::Utf8 => "utf8",
        _ => "other",
    }
}

/// The `expect` object of a valid vector: everything a reader decodes.
/// Fails where a value does not decode.
pub fn expect(c: &Change<'_>) -> Result<Json, (Image, usize, FormatError)> {
    let columns: Vec<Json> = c
        .columns()
        .map(|col| {
            json!({
                "name": col.name,
                "type_code": col.type_code,
                "primary_key": col.primary_key,
                "nullable": col.nullable,
            })
        })
        .collect();
    let mut e = Map::new();
    e.insert("op".into(), c.op().as_str().into());
    e.insert("flags".into(), c.as_bytes()[rowhook_abi::header::FLAGS].into());
    e.insert("id".into(), c.id().into());
    e.insert("txn".into(), c.txn().into());
    e.insert("event_index".into(), c.event_index().into());
    e.insert("row_index".into(), c.row_index().into());
    e.insert("gtid".into(), c.gtid().into());
    e.insert("file".into(), c.file().into());
    e.insert("pos".into(), c.pos().into());
    e.insert("ts".into(), c.ts().into());
    e.insert("db".into(), c.db().into());
    e.insert("table".into(), c.table().into());
    e.insert("has_column_names".into(), c.has_column_names().into());
    e.insert("columns".into(), columns.into());
    for image in [Image::Before, Image::After] {
        let values = match c.image(image) {
            None => Json::Null,
            Some(row) => image_values(&row, c.column_count())?.into(),
        };
        e.insert(image.to_string(), values);
    }
    Ok(Json::Object(e))
}

fn image_values(row: &Row<'_>, n: usize) -> Result<Vec<Json>, (Image, usize, FormatError)> {
    (0..n)
        .map(|i| {
            let v = row.value_at(i).map_err(|e| (row.image(), i, e))?;
            Ok(value(v))
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn value(v: Option<Value<'_>>) -> Json {
    let Some(v) = v else {
        return json!({"tag": rowhook_abi::tag::ABSENT});
    };
    let mut o = Map::new();
    o.insert("tag".into(), v.tag().into());
    match v {
        Value::Null => {}
        Value::Int(i) => {
            o.insert("int".into(), i.to_string().into());
        }
        Value::UInt(u) | Value::Bit(u) => {
            o.insert("uint".into(), u.to_string().into());
        }
        Value::Float(f) => {
            o.insert("f64_bits".into(), format!("{:016x}", f64::from(f).to_bits()).into());
        }
        Value::Double(d) => {
            o.insert("f64_bits".into(), format!("{:016x}", d.to_bits()).into());
        }
        Value::Bytes(b) | Value::Vector(b) => {
            o.insert("hex".into(), hex(b).into());
        }
        v => {
            o.insert("text".into(), v.as_text().expect("a text value").into());
        }
    }
    Json::Object(o)
}
