//! What the SQL sinks (`postgres`, `mysql`) share: the row operations a
//! handler emits to them, the tables a sink may write with their key
//! columns, the collapsing of a batch to the last state of each row, and
//! the position a sink keeps in its target to skip what it already has.
//!
//! A row operation is one JSON object per message:
//!
//! ```json
//! {"op":"upsert","table":"orders_copy","row":{"id":7,"amount":"12.50","status":"paid"}}
//! {"op":"delete","table":"orders_copy","key":{"id":7}}
//! ```
//!
//! The row is named by its key columns, which the sink's config lists per
//! table: an upsert's `row` holds every key column (and any others to set),
//! a delete's `key` holds exactly the key columns. The message's own key
//! (the `emit` key) plays no part. The runtime checks each emit against the
//! sink's tables ([`Tables::admit`]): a table the sink may not write is
//! `denied`, a malformed operation `invalid`, so the sink only ever sees
//! operations on its tables with their keys present.

#[cfg(any(feature = "sink-postgres", feature = "sink-mysql"))]
pub mod catalog;
#[cfg(any(feature = "sink-postgres", feature = "sink-mysql"))]
pub mod config;
#[cfg(any(feature = "sink-postgres", feature = "sink-mysql"))]
pub mod conn;
pub mod position;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

pub use self::position::Position;

/// The tables a SQL sink may write, each with its key columns, as the
/// config names them (`orders_copy`, or `schema.table`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tables(BTreeMap<String, TableRule>);

/// One table a SQL sink may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRule {
    /// The columns that name a row, in the order the config lists them:
    /// the table's primary key or a unique key on exactly these columns.
    pub key: Vec<String>,
}

impl Tables {
    /// The tables from `(name, rule)` pairs.
    pub fn new(tables: impl IntoIterator<Item = (String, TableRule)>) -> Tables {
        Tables(tables.into_iter().collect())
    }

    /// The rule of `table`, if the sink may write it.
    pub fn get(&self, table: &str) -> Option<&TableRule> {
        self.0.get(table)
    }

    /// Every table with its rule, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TableRule)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Checks an emitted payload: `Ok` if it is a well-formed operation on
    /// a table the sink may write, with the table's key columns.
    pub fn admit(&self, payload: &[u8]) -> Result<(), Refusal> {
        let op = RowOp::parse(payload).map_err(Refusal::Invalid)?;
        let Some(rule) = self.get(op.table()) else {
            return Err(Refusal::Denied);
        };
        op.check_key(rule).map_err(Refusal::Invalid)
    }
}

/// Why an emitted row operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The sink may not write the table the operation names.
    Denied,
    /// The payload is not a row operation the sink can apply; why.
    Invalid(String),
}

/// One row operation, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOp {
    /// Insert the row, or update the named columns of the row with its key.
    Upsert {
        /// The table, as the config names it.
        table: String,
        /// Column → value; holds every key column.
        row: Map<String, Value>,
    },
    /// Delete the row with this key, if there is one.
    Delete {
        /// The table, as the config names it.
        table: String,
        /// Key column → value.
        key: Map<String, Value>,
    },
}

/// The operation as written; unknown fields are refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
    table: String,
    row: Option<Map<String, Value>>,
    key: Option<Map<String, Value>>,
}

impl RowOp {
    /// Parses a payload; the error says what is wrong with it, never
    /// quoting a value.
    pub fn parse(payload: &[u8]) -> Result<RowOp, String> {
        let wire: Wire<'_> = serde_json::from_slice(payload).map_err(|e| {
            // serde_json's message may quote a value: only its category
            // and place are told.
            use serde_json::error::Category;
            let what = match e.classify() {
                Category::Syntax | Category::Io => "not valid JSON",
                Category::Eof => "JSON cut short",
                Category::Data => "a field is missing, unknown or of the wrong type",
            };
            format!(
                "not a row operation ({what}, at column {}): write {{\"op\":\"upsert\",\"table\":…,\"row\":{{…}}}} or {{\"op\":\"delete\",\"table\":…,\"key\":{{…}}}}",
                e.column()
            )
        })?;
        if wire.table.is_empty() {
            return Err("`table` is empty".into());
        }
        match (&*wire.op, wire.row, wire.key) {
            ("upsert", Some(row), None) => {
                if row.is_empty() {
                    return Err("an upsert's `row` has no column".into());
                }
                Ok(RowOp::Upsert { table: wire.table, row })
            }
            ("delete", None, Some(key)) => Ok(RowOp::Delete { table: wire.table, key }),
            ("upsert", _, _) => Err("an upsert takes `row` (and no `key`)".into()),
            ("delete", _, _) => Err("a delete takes `key` (and no `row`)".into()),
            _ => Err("`op` is neither \"upsert\" nor \"delete\"".into()),
        }
    }

    /// The table it names.
    pub fn table(&self) -> &str {
        match self {
            RowOp::Upsert { table, .. } | RowOp::Delete { table, .. } => table,
        }
    }

    /// Checks that the operation names a row of a table with `rule`: an
    /// upsert's row holds every key column, a delete's key exactly them,
    /// none null.
    pub fn check_key(&self, rule: &TableRule) -> Result<(), String> {
        let (cols, what) = match self {
            RowOp::Upsert { row, .. } => (row, "row"),
            RowOp::Delete { key, .. } => {
                if let Some(extra) = key.keys().find(|c| !rule.key.contains(c)) {
                    return Err(format!(
                        "the delete's `key` names `{extra}`, which is not a key column of `{}` (its key: {})",
                        self.table(),
                        rule.key.join(", ")
                    ));
                }
                (key, "key")
            }
        };
        for k in &rule.key {
            match cols.get(k) {
                None => {
                    return Err(format!(
                        "the {}'s `{what}` lacks the key column `{k}` of `{}`",
                        self.op_name(),
                        self.table()
                    ));
                }
                Some(Value::Null) => {
                    return Err(format!("the key column `{k}` of `{}` is null", self.table()));
                }
                Some(Value::Object(_) | Value::Array(_)) => {
                    return Err(format!(
                        "the key column `{k}` of `{}` is a JSON {}; a key is a number, a string or a boolean",
                        self.table(),
                        json_type(&cols[k.as_str()])
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn op_name(&self) -> &'static str {
        match self {
            RowOp::Upsert { .. } => "upsert",
            RowOp::Delete { .. } => "delete",
        }
    }
}

/// The JSON type of a value, to name in an error (never the value).
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number (with a fraction or exponent)",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A key value as text: `7` and `"7"` name the same row.
fn key_text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

/// The last state of one row after the operations of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Final {
    /// Upsert these columns (merged over the batch: a later value wins).
    Upsert(Map<String, Value>),
    /// Delete the row.
    Delete(Map<String, Value>),
    /// The row was deleted and then upserted: delete it, then insert these
    /// columns, so columns the upserts did not set take their defaults,
    /// as they would have one operation at a time.
    Replace(Map<String, Value>),
}

impl Final {
    /// The row's key values, in `rule`'s key order.
    pub fn key_values<'a>(&'a self, rule: &'a TableRule) -> impl Iterator<Item = &'a Value> + 'a {
        let cols = match self {
            Final::Upsert(c) | Final::Delete(c) | Final::Replace(c) => c,
        };
        rule.key.iter().map(move |k| &cols[k.as_str()])
    }

    fn then(self, op: RowOp) -> Final {
        match (self, op) {
            (_, RowOp::Delete { key, .. }) => Final::Delete(key),
            (Final::Upsert(mut a), RowOp::Upsert { row, .. }) => {
                a.extend(row);
                Final::Upsert(a)
            }
            (Final::Replace(mut a), RowOp::Upsert { row, .. }) => {
                a.extend(row);
                Final::Replace(a)
            }
            (Final::Delete(_), RowOp::Upsert { row, .. }) => Final::Replace(row),
        }
    }
}

/// The rows a batch leaves in one table: each key's last state, in the
/// order each key was first touched.
#[derive(Debug, Default)]
pub struct TableBatch {
    rows: Vec<Final>,
    index: HashMap<Vec<String>, usize>,
}

impl TableBatch {
    /// The final states, one per key.
    pub fn rows(&self) -> &[Final] {
        &self.rows
    }
}

/// A batch of row operations collapsed to the last state of each row, per
/// table: applying it leaves the tables as applying every operation in
/// order would (operations on different keys commute).
#[derive(Debug, Default)]
pub struct Collapsed {
    tables: BTreeMap<String, TableBatch>,
    ops: usize,
}

impl Collapsed {
    /// Adds the next operation, in binlog order. The operation has passed
    /// [`Tables::admit`] (or the caller checked its key).
    pub fn push(&mut self, op: RowOp, rule: &TableRule) {
        self.ops += 1;
        let cols = match &op {
            RowOp::Upsert { row, .. } => row,
            RowOp::Delete { key, .. } => key,
        };
        let key: Vec<String> = rule
            .key
            .iter()
            .map(|k| cols.get(k).map_or(Cow::Borrowed(""), key_text).into_owned())
            .collect();
        let t = match self.tables.get_mut(op.table()) {
            Some(t) => t,
            None => self.tables.entry(op.table().to_owned()).or_default(),
        };
        match t.index.get(&key) {
            Some(&i) => {
                let prev = std::mem::replace(&mut t.rows[i], Final::Delete(Map::new()));
                t.rows[i] = prev.then(op);
            }
            None => {
                t.index.insert(key, t.rows.len());
                t.rows.push(match op {
                    RowOp::Upsert { row, .. } => Final::Upsert(row),
                    RowOp::Delete { key, .. } => Final::Delete(key),
                });
            }
        }
    }

    /// The tables touched, each with its rows' final states.
    pub fn tables(&self) -> impl Iterator<Item = (&str, &TableBatch)> {
        self.tables.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many operations were pushed.
    pub fn ops(&self) -> usize {
        self.ops
    }

    /// How many rows the operations leave to write.
    pub fn rows(&self) -> usize {
        self.tables.values().map(|t| t.rows.len()).sum()
    }
}

/// How many messages at the start of `batch` the target has already: those
/// at or before `applied`, the position its checkpoint table holds.
pub fn already_applied(batch: &[crate::sink::Message], applied: &Position) -> usize {
    batch
        .iter()
        .position(|m| Position::of(&m.id, m.index).and_then(|p| p.at_or_before(applied)) != Some(true))
        .unwrap_or(batch.len())
}

/// Parses and collapses `batch` (see [`Collapsed`]); the error names the
/// message and what is wrong with it.
pub fn collapse(batch: &[crate::sink::Message], tables: &Tables) -> Result<Collapsed, String> {
    let mut collapsed = Collapsed::default();
    for m in batch {
        let op = RowOp::parse(&m.payload).map_err(|why| format!("message `{}`: {why}", m.id))?;
        let Some(rule) = tables.get(op.table()) else {
            return Err(format!(
                "message `{}` writes table `{}`, which is not in the sink's `tables`",
                m.id,
                op.table()
            ));
        };
        op.check_key(rule).map_err(|why| format!("message `{}`: {why}", m.id))?;
        collapsed.push(op, rule);
    }
    Ok(collapsed)
}

/// `[+-]digits[.digits][e[+-]digits]`, or with the digits after the point only.
pub fn is_decimal(s: &str) -> bool {
    let b = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mant, exp) = match b.find(['e', 'E']) {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    };
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    let digits = |p: &str| p.bytes().all(|c| c.is_ascii_digit());
    let mant_ok = (!int.is_empty() || !frac.is_empty()) && digits(int) && digits(frac);
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mant_ok && exp_ok
}

/// `schema.table` or `table`, split; `None` for the schema when there is none.
pub fn split_table(name: &str) -> (Option<&str>, &str) {
    match name.split_once('.') {
        Some((s, t)) => (Some(s), t),
        None => (None, name),
    }
}

/// Rows that set the same columns, upserted by one multi-row statement:
/// the column names, and each row's columns.
pub struct UpsertGroup<'a> {
    /// The columns every row of the group sets, in the row's order.
    pub columns: Vec<&'a str>,
    /// The rows.
    pub rows: Vec<&'a Map<String, Value>>,
}

/// The upsert groups of a table: the rows to upsert, grouped by the set of
/// columns they set, in first-seen order.
pub fn upsert_groups(rows: &[Final]) -> Vec<UpsertGroup<'_>> {
    let mut groups: Vec<UpsertGroup<'_>> = Vec::new();
    for f in rows {
        let cols = match f {
            Final::Upsert(c) | Final::Replace(c) => c,
            Final::Delete(_) => continue,
        };
        let names: Vec<&str> = cols.keys().map(String::as_str).collect();
        match groups.iter_mut().find(|g| g.columns == names) {
            Some(g) => g.rows.push(cols),
            None => groups.push(UpsertGroup {
                columns: names,
                rows: vec![cols],
            }),
        }
    }
    groups
}

/// The rows to delete before the upserts: deleted rows and replaced ones.
pub fn deletes(rows: &[Final]) -> impl Iterator<Item = &Final> {
    rows.iter()
        .filter(|f| matches!(f, Final::Delete(_) | Final::Replace(_)))
}

/// An identifier quoted for SQL with `quote` (`"` in PostgreSQL, `` ` `` in MySQL).
pub struct Quoted<'a>(pub &'a str, pub char);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        let q = self.1;
        f.write_char(q)?;
        for c in self.0.chars() {
            if c == q {
                f.write_char(q)?;
            }
            f.write_char(c)?;
        }
        f.write_char(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> Tables {
        Tables::new([
            ("orders_copy".to_owned(), TableRule { key: vec!["id".into()] }),
            (
                "lines".to_owned(),
                TableRule {
                    key: vec!["order_id".into(), "n".into()],
                },
            ),
        ])
    }

    fn op(text: &str) -> RowOp {
        RowOp::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn operations_parse_and_are_checked_against_the_tables() {
        let t = tables();
        assert_eq!(
            t.admit(br#"{"op":"upsert","table":"orders_copy","row":{"id":7,"a":"x"}}"#),
            Ok(())
        );
        assert_eq!(
            t.admit(br#"{"op":"delete","table":"lines","key":{"n":1,"order_id":"7"}}"#),
            Ok(())
        );
        assert_eq!(
            t.admit(br#"{"op":"upsert","table":"users","row":{"id":7}}"#),
            Err(Refusal::Denied)
        );
        assert_eq!(
            t.admit(br#"{"op":"delete","table":"users","key":{"id":7}}"#),
            Err(Refusal::Denied)
        );
        let invalid = |p: &str| match t.admit(p.as_bytes()) {
            Err(Refusal::Invalid(why)) => why,
            other => panic!("{p}: {other:?}"),
        };
        assert!(invalid("not json").contains("not a row operation"));
        assert!(invalid(r#"{"op":"upsert","table":"orders_copy"}"#).contains("takes `row`"));
        assert!(invalid(r#"{"op":"upsert","table":"orders_copy","row":{}}"#).contains("no column"));
        assert!(invalid(r#"{"op":"insert","table":"orders_copy","row":{"id":1}}"#).contains("neither"));
        assert!(invalid(r#"{"op":"delete","table":"orders_copy","row":{"id":1}}"#).contains("takes `key`"));
        assert!(invalid(r#"{"op":"upsert","table":"orders_copy","row":{"id":1},"x":1}"#).contains("not a row"));
        assert!(
            invalid(r#"{"op":"upsert","table":"orders_copy","row":{"a":1}}"#).contains("lacks the key column `id`")
        );
        assert!(invalid(r#"{"op":"upsert","table":"orders_copy","row":{"id":null}}"#).contains("is null"));
        assert!(invalid(r#"{"op":"upsert","table":"orders_copy","row":{"id":[1]}}"#).contains("JSON array"));
        assert!(
            invalid(r#"{"op":"delete","table":"lines","key":{"order_id":1}}"#).contains("lacks the key column `n`")
        );
        assert!(
            invalid(r#"{"op":"delete","table":"lines","key":{"order_id":1,"n":2,"x":3}}"#)
                .contains("`x`, which is not a key column")
        );
        // The value is never quoted in the reason.
        assert!(
            !invalid(r#"{"op":"upsert","table":"orders_copy","row":{"id":"secret-value"},"y":1}"#).contains("secret")
        );
    }

    #[test]
    fn a_batch_collapses_to_the_last_state_of_each_row() {
        let t = tables();
        let rule = t.get("orders_copy").unwrap();
        let mut c = Collapsed::default();
        for text in [
            r#"{"op":"upsert","table":"orders_copy","row":{"id":1,"a":"x","b":1}}"#,
            r#"{"op":"upsert","table":"orders_copy","row":{"id":2,"a":"y"}}"#,
            r#"{"op":"upsert","table":"orders_copy","row":{"id":"1","a":"z"}}"#,
            r#"{"op":"delete","table":"orders_copy","key":{"id":2}}"#,
            r#"{"op":"delete","table":"orders_copy","key":{"id":3}}"#,
            r#"{"op":"upsert","table":"orders_copy","row":{"id":3,"a":"w"}}"#,
            r#"{"op":"upsert","table":"orders_copy","row":{"id":3,"b":2}}"#,
        ] {
            c.push(op(text), rule);
        }
        assert_eq!(c.ops(), 7);
        assert_eq!(c.rows(), 3);
        let (name, tb) = c.tables().next().unwrap();
        assert_eq!(name, "orders_copy");
        let m = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            tb.rows(),
            [
                Final::Upsert(m(serde_json::json!({"id":"1","a":"z","b":1}))),
                Final::Delete(m(serde_json::json!({"id":2}))),
                Final::Replace(m(serde_json::json!({"id":3,"a":"w","b":2}))),
            ]
        );
        assert_eq!(deletes(tb.rows()).count(), 2);
        let groups = upsert_groups(tb.rows());
        // Rows 1 and 3 set the same columns: one statement.
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].columns, ["id", "a", "b"]);
        assert_eq!(groups[0].rows.len(), 2);
        let keys: Vec<_> = tb.rows()[2].key_values(rule).collect();
        assert_eq!(keys, [&serde_json::json!(3)]);
    }

    #[test]
    fn decimals_are_recognised() {
        for d in ["1", "-1.50", ".5", "5.", "1e10", "+2E-3"] {
            assert!(is_decimal(d), "{d}");
        }
        for d in ["", ".", "e5", "1e", "1.2.3", "--1", "1_000"] {
            assert!(!is_decimal(d), "{d}");
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(Quoted("a\"b", '"').to_string(), "\"a\"\"b\"");
        assert_eq!(Quoted("a`b", '`').to_string(), "`a``b`");
        assert_eq!(split_table("s.t"), (Some("s"), "t"));
        assert_eq!(split_table("t"), (None, "t"));
    }
}
