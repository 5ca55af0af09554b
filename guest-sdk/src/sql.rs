//! Row operations for the SQL sinks (`postgres`, `mysql`): the payloads
//! that upsert a row into a table of the target database or delete one,
//! so a handler does not write their JSON by hand.
//!
//! ```
//! use rowhook_guest::sql;
//!
//! # fn main() -> rowhook_guest::Result<()> {
//! let payload = sql::upsert("orders_copy", &[("id", 7.into()), ("amount", sql::text("12.50")), ("paid", true.into())]);
//! assert_eq!(payload, br#"{"op":"upsert","table":"orders_copy","row":{"id":7,"amount":"12.50","paid":true}}"#);
//! # testing::grant(&["copy_db"]);
//! rowhook_guest::emit("copy_db", None, payload)?;
//! rowhook_guest::emit("copy_db", None, sql::delete("orders_copy", &[("id", 8.into())]))?;
//! # Ok(()) }
//! # use rowhook_guest::testing;
//! ```
//!
//! The row is named by its key columns, which the sink's config lists per
//! table (`tables = { orders_copy = { key = ["id"] } }`): an upsert's row
//! holds them and any other columns to set; a delete names exactly them.
//! The sink checks each operation when it is emitted: a table it may not
//! write is `denied`, a row without its key `invalid`.

use crate::change::Value;
use crate::json::Object;

/// One value of a row operation: how it travels in the payload's JSON.
/// Build it with `.into()` from integers, floats, `bool`, `&str` (text),
/// a column's [`Value`] (as the row change JSON shows it: decimals and
/// dates as exact text, bytes as base64), `Option` of those (`None` is
/// NULL), or with [`text`], [`bytes`] and [`json`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SqlValue<'a> {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A floating-point number (NaN and infinities travel as NULL).
    Float(f64),
    /// Text: strings, and the exact text of decimals, dates and timestamps.
    Text(&'a str),
    /// Binary, sent as base64.
    Bytes(&'a [u8]),
    /// A JSON document, as JSON text (for `json` / `jsonb` columns).
    Json(&'a str),
    /// A column's value as the row change JSON shows it.
    Column(Value<'a>),
}

/// Text: a string column, or the exact text of a decimal or timestamp.
pub fn text(s: &str) -> SqlValue<'_> {
    SqlValue::Text(s)
}

/// Binary, sent as base64.
pub fn bytes(b: &[u8]) -> SqlValue<'_> {
    SqlValue::Bytes(b)
}

/// JSON text, sent as the JSON value it holds.
pub fn json(s: &str) -> SqlValue<'_> {
    SqlValue::Json(s)
}

macro_rules! from_ints {
    ($variant:ident, $wide:ty: $($t:ty),*) => {
        $(impl From<$t> for SqlValue<'_> {
            fn from(v: $t) -> Self {
                SqlValue::$variant(<$wide>::from(v))
            }
        })*
    };
}
from_ints!(Int, i64: i8, i16, i32, i64);
from_ints!(UInt, u64: u8, u16, u32, u64);

impl From<f64> for SqlValue<'_> {
    fn from(v: f64) -> Self {
        SqlValue::Float(v)
    }
}

impl From<f32> for SqlValue<'_> {
    fn from(v: f32) -> Self {
        SqlValue::Float(f64::from(v))
    }
}

impl From<bool> for SqlValue<'_> {
    fn from(v: bool) -> Self {
        SqlValue::Bool(v)
    }
}

impl<'a> From<&'a str> for SqlValue<'a> {
    fn from(v: &'a str) -> Self {
        SqlValue::Text(v)
    }
}

impl<'a> From<&'a String> for SqlValue<'a> {
    fn from(v: &'a String) -> Self {
        SqlValue::Text(v)
    }
}

impl<'a> From<Value<'a>> for SqlValue<'a> {
    fn from(v: Value<'a>) -> Self {
        SqlValue::Column(v)
    }
}

impl<'a, T: Into<SqlValue<'a>>> From<Option<T>> for SqlValue<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(SqlValue::Null, Into::into)
    }
}

fn add(o: &mut Object, name: &str, v: &SqlValue<'_>) {
    match *v {
        SqlValue::Null => o.null(name),
        SqlValue::Bool(b) => o.bool(name, b),
        SqlValue::Int(i) => o.int(name, i),
        SqlValue::UInt(u) => o.uint(name, u),
        SqlValue::Float(f) => o.float(name, f),
        SqlValue::Text(s) => o.str(name, s),
        SqlValue::Bytes(b) => o.value(name, &Value::Bytes(b)),
        SqlValue::Json(s) => o.value(name, &Value::Json(s)),
        SqlValue::Column(ref c) => o.value(name, c),
    };
}

fn op(kind: &str, table: &str, field: &str, cols: &[(&str, SqlValue<'_>)]) -> Vec<u8> {
    let mut inner = Object::with_capacity(16 * cols.len() + 2);
    for (name, v) in cols {
        add(&mut inner, name, v);
    }
    let inner = inner.finish();
    let mut o = Object::with_capacity(inner.len() + table.len() + 40);
    o.str("op", kind).str("table", table);
    // The inner object is JSON text the builder wrote: UTF-8.
    o.raw(field, std::str::from_utf8(&inner).expect("JSON text is UTF-8"));
    o.finish()
}

/// `{"op":"upsert","table":TABLE,"row":{…}}`: insert the row, or update
/// these columns of the row with its key. `row` holds every key column.
pub fn upsert(table: &str, row: &[(&str, SqlValue<'_>)]) -> Vec<u8> {
    op("upsert", table, "row", row)
}

/// `{"op":"delete","table":TABLE,"key":{…}}`: delete the row with this
/// key, if there is one. `key` holds exactly the key columns.
pub fn delete(table: &str, key: &[(&str, SqlValue<'_>)]) -> Vec<u8> {
    op("delete", table, "key", key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_the_json_the_sinks_take() {
        let p = upsert(
            "rep.t\"x",
            &[
                ("id", 7u64.into()),
                ("n", (-3i32).into()),
                ("f", 1.5.into()),
                ("nan", f64::NAN.into()),
                ("s", "a\"b\n".into()),
                ("d", Value::Decimal("12.50").into()),
                ("ts", Value::Timestamp("2025-11-21T09:31:00Z").into()),
                ("b", bytes(&[0, 1, 255])),
                ("j", json("{\"a\":[1]}")),
                ("none", Option::<i64>::None.into()),
                ("some", Some("x").into()),
                ("ok", false.into()),
            ],
        );
        assert_eq!(
            std::str::from_utf8(&p).unwrap(),
            r#"{"op":"upsert","table":"rep.t\"x","row":{"id":7,"n":-3,"f":1.5,"nan":null,"s":"a\"b\n","d":"12.50","ts":"2025-11-21T09:31:00Z","b":"AAH/","j":{"a":[1]},"none":null,"some":"x","ok":false}}"#
        );
        assert_eq!(
            delete("t", &[("a", 1.into()), ("b", text("x"))]),
            br#"{"op":"delete","table":"t","key":{"a":1,"b":"x"}}"#
        );
    }
}
