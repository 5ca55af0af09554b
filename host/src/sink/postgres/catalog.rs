//! What the sink knows of a target table, read from PostgreSQL's catalog
//! when a connection first writes it: each column's type, length and
//! nullability (to convert and check every value before sending it), the
//! unique keys (the configured key must be one) and the privileges.

use std::collections::HashMap;
use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::Value;
use tokio_postgres::Client;

use crate::sink::sql::catalog::CatalogColumn;
use crate::sink::sql::{Quoted, TableRule, json_type, split_table};

/// A column as the catalog describes it.
#[derive(Debug, Clone)]
pub struct Column {
    /// Its type's qualified name, without length or precision
    /// (`pg_catalog.varchar`, `pg_catalog.bpchar`, a domain's name), to
    /// cast to: the column's own length is then checked on assignment,
    /// never cut by the cast.
    pub type_sql: String,
    /// Its type with length, for messages (`character varying(20)`).
    pub type_shown: String,
    /// How a JSON value becomes its text.
    pub kind: Kind,
    /// `NOT NULL`.
    pub not_null: bool,
    /// Has a default (or is an identity column): an insert may leave it out.
    pub has_default: bool,
    /// A generated column: it cannot be written.
    pub generated: bool,
}

/// How the JSON values of a column are checked and turned into the text
/// PostgreSQL parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `boolean`: a JSON boolean.
    Bool,
    /// `smallint`, `integer`, `bigint`: an integer number (or a string of
    /// one) within the type's range.
    Int(i64, i64),
    /// `real`, `double precision`: a number.
    Float,
    /// `numeric`: a number or a string of exact decimal digits.
    Numeric,
    /// `text`, `character varying(n)`, `character(n)`: a string of at most
    /// `n` characters.
    Text(Option<usize>),
    /// `bytea`: a base64 string.
    Bytea,
    /// `json`, `jsonb`: any JSON value.
    Json,
    /// Anything else (dates, times, timestamps, uuid, enums, intervals…):
    /// a string in the type's text form, which PostgreSQL parses.
    Textual,
}

impl Kind {
    fn of(base: &str, typmod: i32) -> Kind {
        match base {
            "bool" => Kind::Bool,
            "int2" => Kind::Int(i16::MIN.into(), i16::MAX.into()),
            "int4" => Kind::Int(i32::MIN.into(), i32::MAX.into()),
            "int8" => Kind::Int(i64::MIN, i64::MAX),
            "float4" | "float8" => Kind::Float,
            "numeric" => Kind::Numeric,
            "varchar" | "bpchar" => Kind::Text(usize::try_from(typmod - 4).ok()),
            "text" | "name" | "citext" => Kind::Text(None),
            "bytea" => Kind::Bytea,
            "json" | "jsonb" => Kind::Json,
            _ => Kind::Textual,
        }
    }

    /// What a value of the column must be, for a message.
    fn wanted(self) -> &'static str {
        match self {
            Kind::Bool => "a boolean",
            Kind::Int(..) => "an integer number",
            Kind::Float => "a number",
            Kind::Numeric => "a number or a string of decimal digits",
            Kind::Text(_) => "a string",
            Kind::Bytea => "a base64 string",
            Kind::Json => "any JSON value",
            Kind::Textual => "a string in the type's text form",
        }
    }
}

/// A table the sink writes.
pub type TableInfo = crate::sink::sql::catalog::TableInfo<Column>;

impl CatalogColumn for Column {
    fn generated(&self) -> bool {
        self.generated
    }

    fn type_shown(&self) -> &str {
        &self.type_shown
    }
}

/// What is wrong with a table for the sink (missing, no such key…), as a
/// sentence with its fix.
pub type TableProblem = String;

/// `"s"."t"` or `"t"`.
pub fn sql_name(name: &str) -> String {
    match split_table(name) {
        (Some(s), t) => format!("{}.{}", Quoted(s, '"'), Quoted(t, '"')),
        (None, t) => Quoted(t, '"').to_string(),
    }
}

/// Reads `name`'s columns and checks its key and the privileges the sink
/// needs: `Ok(Err(problem))` when the table does not suit.
pub async fn load(
    client: &Client,
    name: &str,
    rule: &TableRule,
) -> Result<Result<TableInfo, TableProblem>, tokio_postgres::Error> {
    let sql_name = sql_name(name);
    let rows = client
        .query(
            "SELECT a.attname::text, quote_ident(n.nspname) || '.' || quote_ident(t.typname), bt.typname::text, \
                    CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END, \
                    format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                    a.atthasdef OR a.attidentity <> '', a.attgenerated <> '' \
             FROM pg_attribute a \
             JOIN pg_type t ON t.oid = a.atttypid \
             JOIN pg_namespace n ON n.oid = t.typnamespace \
             JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&sql_name],
        )
        .await?;
    if rows.is_empty() {
        return Ok(Err(format!(
            "table `{name}` does not exist; create it (with a primary or unique key on ({})), or fix `tables`",
            rule.key.join(", ")
        )));
    }
    let mut columns = HashMap::new();
    let mut required = Vec::new();
    for r in rows {
        let col: String = r.get(0);
        let base: String = r.get(2);
        let column = Column {
            type_sql: r.get(1),
            type_shown: r.get(4),
            kind: Kind::of(&base, r.get(3)),
            not_null: r.get(5),
            has_default: r.get(6),
            generated: r.get(7),
        };
        if column.not_null && !column.has_default && !column.generated {
            required.push(col.clone());
        }
        columns.insert(col, column);
    }
    let mut problems = Vec::new();
    let missing: Vec<&str> = rule
        .key
        .iter()
        .filter(|k| !columns.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "has no column {} of the configured key; name the key's columns in tables.{name}.key",
            missing.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
        ));
    } else {
        let keys = client
            .query(
                "SELECT ARRAY(SELECT a.attname::text FROM pg_attribute a \
                              WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) ORDER BY a.attname) \
                 FROM pg_index i \
                 WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL",
                &[&sql_name],
            )
            .await?;
        let mut wanted = rule.key.clone();
        wanted.sort();
        if !keys.iter().any(|r| r.get::<_, Vec<String>>(0) == wanted) {
            problems.push(format!(
                "has no primary or unique key on exactly ({}); add one (ALTER TABLE {sql_name} ADD PRIMARY KEY ({})) or name an existing key's columns",
                rule.key.join(", "),
                rule.key.iter().map(|k| Quoted(k, '"').to_string()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let privileges = client
        .query_one(
            "SELECT has_table_privilege(to_regclass($1), 'SELECT'), has_table_privilege(to_regclass($1), 'INSERT'), \
                    has_table_privilege(to_regclass($1), 'UPDATE'), has_table_privilege(to_regclass($1), 'DELETE'), current_user::text",
            &[&sql_name],
        )
        .await?;
    let lacking: Vec<&str> = ["SELECT", "INSERT", "UPDATE", "DELETE"]
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !privileges.get::<_, bool>(*i))
        .map(|(_, p)| p)
        .collect();
    if !lacking.is_empty() {
        let user: String = privileges.get(4);
        problems.push(format!(
            "is not writable by `{user}`: it lacks {}; GRANT SELECT, INSERT, UPDATE, DELETE ON {sql_name} TO {}",
            lacking.join(", "),
            Quoted(&user, '"')
        ));
    }
    if !problems.is_empty() {
        return Ok(Err(format!("table `{name}` {}", problems.join("; and it "))));
    }
    Ok(Ok(TableInfo {
        name: name.to_owned(),
        sql_name,
        columns,
        required,
    }))
}

impl TableInfo {
    /// The value `v` of column `col` as the text PostgreSQL parses (`None`
    /// for SQL NULL), or the problem, naming the table, the column and the
    /// value's JSON type, never the value.
    pub fn text(&self, col: &str, c: &Column, v: &Value) -> Result<Option<String>, String> {
        let wrong = |why: &str| {
            format!(
                "table `{}`, column `{col}` ({}): {why}; write {}",
                self.name,
                c.type_shown,
                c.kind.wanted()
            )
        };
        let mismatch = || wrong(&format!("a JSON {} does not fit", json_type(v)));
        if v.is_null() {
            if c.not_null {
                return Err(format!(
                    "table `{}`, column `{col}` ({}) is NOT NULL, and the value is null; set a value or leave the column out",
                    self.name, c.type_shown
                ));
            }
            return Ok(None);
        }
        let text = match (c.kind, v) {
            (Kind::Json, v) => v.to_string(),
            (Kind::Bool, Value::Bool(b)) => b.to_string(),
            (Kind::Int(min, max), Value::Number(n)) => {
                let fits = match (n.as_i64(), n.as_u64()) {
                    (Some(i), _) => (min..=max).contains(&i),
                    (None, Some(_)) => false,
                    (None, None) => return Err(wrong("a number with a fraction or exponent does not fit")),
                };
                if !fits {
                    return Err(wrong("the number is out of the type's range"));
                }
                n.to_string()
            }
            (Kind::Int(min, max), Value::String(s)) => match s.parse::<i64>() {
                Ok(i) if (min..=max).contains(&i) => i.to_string(),
                Ok(_) => return Err(wrong("the number in the string is out of the type's range")),
                Err(_) => return Err(wrong("a JSON string that is not an integer does not fit")),
            },
            (Kind::Float | Kind::Numeric, Value::Number(n)) => n.to_string(),
            (Kind::Float, Value::String(s)) if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity") => s.clone(),
            (Kind::Numeric, Value::String(s)) if crate::sink::sql::is_decimal(s) || s == "NaN" => s.clone(),
            (Kind::Numeric, Value::String(_)) => return Err(wrong("a JSON string that is not a decimal does not fit")),
            (Kind::Text(max), Value::String(s)) => {
                if s.contains('\0') {
                    return Err(wrong("the string holds a NUL character, which PostgreSQL text cannot"));
                }
                if let Some(max) = max {
                    let n = s.chars().count();
                    if n > max {
                        return Err(wrong(&format!("a string of {n} characters is longer than {max}")));
                    }
                }
                s.clone()
            }
            (Kind::Bytea, Value::String(s)) => {
                if base64::engine::general_purpose::STANDARD.decode(s).is_err() {
                    return Err(wrong("the string is not base64"));
                }
                s.clone()
            }
            (Kind::Textual, Value::String(s)) => {
                if s.contains('\0') {
                    return Err(wrong("the string holds a NUL character"));
                }
                s.clone()
            }
            _ => return Err(mismatch()),
        };
        Ok(Some(text))
    }

    /// The expression that turns parameter column `u.pN` into column `c`'s type.
    pub fn cast(c: &Column, n: usize, out: &mut String) {
        match c.kind {
            Kind::Bytea => write!(out, "decode(u.p{n}, 'base64')"),
            _ => write!(out, "CAST(u.p{n} AS {})", c.type_sql),
        }
        .expect("writing to a String");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(kind: Kind, not_null: bool) -> Column {
        Column {
            type_sql: "t".into(),
            type_shown: "t(1)".into(),
            kind,
            not_null,
            has_default: false,
            generated: false,
        }
    }

    fn table() -> TableInfo {
        TableInfo {
            name: "orders_copy".into(),
            sql_name: "\"orders_copy\"".into(),
            columns: HashMap::new(),
            required: Vec::new(),
        }
    }

    #[test]
    fn values_are_checked_and_the_message_never_holds_them() {
        let t = table();
        let j = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        let ok = |k: Kind, v: &str| t.text("c", &col(k, false), &j(v)).unwrap();
        let err = |k: Kind, v: &str| t.text("c", &col(k, true), &j(v)).unwrap_err();
        assert_eq!(ok(Kind::Int(-32768, 32767), "7"), Some("7".into()));
        assert_eq!(ok(Kind::Int(-32768, 32767), "\"-7\""), Some("-7".into()));
        assert_eq!(ok(Kind::Numeric, "\"12.50\""), Some("12.50".into()));
        assert_eq!(ok(Kind::Numeric, "1.5e3"), Some("1500.0".into()));
        assert_eq!(ok(Kind::Json, "\"x\""), Some("\"x\"".into()));
        assert_eq!(ok(Kind::Text(Some(3)), "\"abc\""), Some("abc".into()));
        assert_eq!(ok(Kind::Bytea, "\"AAE=\""), Some("AAE=".into()));
        assert_eq!(ok(Kind::Bool, "null"), None);
        for (k, v, what) in [
            (Kind::Int(-32768, 32767), "40000", "out of the type's range"),
            (
                Kind::Int(i64::MIN, i64::MAX),
                "18446744073709551615",
                "out of the type's range",
            ),
            (Kind::Int(-32768, 32767), "1.5", "fraction"),
            (Kind::Int(-32768, 32767), "\"12x\"", "not an integer"),
            (Kind::Numeric, "\"1.2.3\"", "not a decimal"),
            (Kind::Bool, "\"secret\"", "a JSON string does not fit; write a boolean"),
            (Kind::Text(Some(3)), "\"secret\"", "6 characters is longer than 3"),
            (Kind::Text(None), "17", "a JSON number does not fit"),
            (Kind::Bytea, "\"secret!\"", "not base64"),
            (Kind::Textual, "true", "a JSON boolean does not fit"),
            (Kind::Bool, "null", "NOT NULL"),
        ] {
            let e = err(k, v);
            assert!(e.contains(what), "{v}: {e}");
            assert!(e.contains("table `orders_copy`, column `c` (t(1))"), "{e}");
            assert!(!e.contains("secret") && !e.contains("40000"), "{e}");
        }
    }

    #[test]
    fn names_are_quoted() {
        assert_eq!(sql_name("orders_copy"), "\"orders_copy\"");
        assert_eq!(sql_name("rep.Orders"), "\"rep\".\"Orders\"");
        let mut s = String::new();
        TableInfo::cast(&col(Kind::Bytea, false), 2, &mut s);
        assert_eq!(s, "decode(u.p2, 'base64')");
    }
}
