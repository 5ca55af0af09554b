//! What the sink knows of a target table, read from `information_schema`
//! when a connection first writes it: each column's type, length and
//! nullability (to convert and check every value before sending it) and
//! the unique keys (the configured key must be one).

use std::collections::HashMap;

use base64::Engine as _;
use mysql_async::Value as My;
use mysql_async::prelude::Queryable;
use serde_json::Value;

use crate::sink::sql::catalog::CatalogColumn;
use crate::sink::sql::{Quoted, TableRule, json_type, split_table};

/// A column as `information_schema.COLUMNS` describes it.
#[derive(Debug, Clone)]
pub struct Column {
    /// Its type as the server spells it (`varchar(20)`, `bigint unsigned`).
    pub type_shown: String,
    /// How a JSON value becomes its parameter.
    pub kind: Kind,
    /// `NOT NULL`.
    pub not_null: bool,
    /// Has a default (or is AUTO_INCREMENT): an insert may leave it out.
    pub has_default: bool,
    /// A generated column: it cannot be written.
    pub generated: bool,
}

/// How the JSON values of a column are checked and sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The integer types (and booleans, as 1 and 0): signed with its range.
    Int(i64, i64),
    /// The unsigned integer types, with the largest value.
    UInt(u64),
    /// FLOAT, DOUBLE.
    Float,
    /// DECIMAL: a number or a string of exact decimal digits.
    Decimal,
    /// CHAR, VARCHAR, the TEXT types: a string of at most so many characters.
    Text(Option<usize>),
    /// BINARY, VARBINARY, the BLOB types: a base64 string, of at most so many bytes.
    Binary(Option<usize>),
    /// JSON: any JSON value.
    Json,
    /// DATETIME, TIMESTAMP: the row change text (`YYYY-MM-DD HH:MM:SS[.f]`,
    /// or `YYYY-MM-DDTHH:MM:SS[.f]Z` in UTC; the session's time zone is UTC).
    DateTime,
    /// Anything else (DATE, TIME, YEAR, ENUM, SET, BIT…): a string in the
    /// type's text form (or a number), which the server parses.
    Textual,
}

impl Kind {
    fn of(data_type: &str, column_type: &str, max_chars: Option<u64>, max_bytes: Option<u64>) -> Kind {
        let unsigned = column_type.contains("unsigned");
        let int = |bits: u32| {
            if unsigned {
                Kind::UInt(if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 })
            } else if bits == 64 {
                Kind::Int(i64::MIN, i64::MAX)
            } else {
                Kind::Int(-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
            }
        };
        match data_type {
            "tinyint" => int(8),
            "smallint" => int(16),
            "mediumint" => int(24),
            "int" | "integer" => int(32),
            "bigint" => int(64),
            "float" | "double" | "real" => Kind::Float,
            "decimal" | "numeric" => Kind::Decimal,
            "char" | "varchar" => Kind::Text(max_chars.map(|n| n as usize)),
            "tinytext" | "text" | "mediumtext" | "longtext" => Kind::Text(None),
            "binary" | "varbinary" => Kind::Binary(max_bytes.map(|n| n as usize)),
            "tinyblob" | "blob" | "mediumblob" | "longblob" => Kind::Binary(None),
            "json" => Kind::Json,
            "datetime" | "timestamp" => Kind::DateTime,
            _ => Kind::Textual,
        }
    }

    fn wanted(self) -> &'static str {
        match self {
            Kind::Int(..) | Kind::UInt(_) => "an integer number (or a boolean)",
            Kind::Float => "a number",
            Kind::Decimal => "a number or a string of decimal digits",
            Kind::Text(_) => "a string",
            Kind::Binary(_) => "a base64 string",
            Kind::Json => "any JSON value",
            Kind::DateTime => "a string `YYYY-MM-DD HH:MM:SS[.f]` or `YYYY-MM-DDTHH:MM:SS[.f]Z`",
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

/// `` `db`.`t` `` or `` `t` ``.
pub fn sql_name(name: &str) -> String {
    match split_table(name) {
        (Some(s), t) => format!("{}.{}", Quoted(s, '`'), Quoted(t, '`')),
        (None, t) => Quoted(t, '`').to_string(),
    }
}

/// Reads `name`'s columns and checks its key: `Ok(Err(problem))` when the
/// table does not suit.
pub async fn load<Q: Queryable>(
    conn: &mut Q,
    name: &str,
    rule: &TableRule,
) -> Result<Result<TableInfo, String>, mysql_async::Error> {
    let (schema, table) = split_table(name);
    type Row = (String, String, String, Option<u64>, Option<u64>, String, bool, bool);
    let rows: Vec<Row> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_MAXIMUM_LENGTH, CHARACTER_OCTET_LENGTH, IS_NULLABLE, \
                    COLUMN_DEFAULT IS NOT NULL OR EXTRA LIKE '%auto_increment%', \
                    EXTRA LIKE '%VIRTUAL GENERATED%' OR EXTRA LIKE '%STORED GENERATED%' OR EXTRA IN ('VIRTUAL', 'PERSISTENT') \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
            (schema, table),
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
    for (col, data_type, column_type, max_chars, max_bytes, nullable, has_default, generated) in rows {
        let column = Column {
            kind: Kind::of(&data_type.to_ascii_lowercase(), &column_type, max_chars, max_bytes),
            type_shown: column_type,
            not_null: nullable == "NO",
            has_default,
            generated,
        };
        if column.not_null && !column.has_default && !column.generated {
            required.push(col.clone());
        }
        columns.insert(col, column);
    }
    let mut problems = Vec::new();
    let missing: Vec<String> = rule
        .key
        .iter()
        .filter(|k| !columns.contains_key(*k))
        .map(|c| format!("`{c}`"))
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "has no column {} of the configured key; name the key's columns in tables.{name}.key",
            missing.join(", ")
        ));
    } else {
        let keys: Vec<String> = conn
            .exec(
                "SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY COLUMN_NAME SEPARATOR '\\n') FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND NON_UNIQUE = 0 GROUP BY INDEX_NAME",
                (schema, table),
            )
            .await?;
        let mut wanted = rule.key.clone();
        wanted.sort();
        let wanted = wanted.join("\n");
        if !keys.contains(&wanted) {
            problems.push(format!(
                "has no primary or unique key on exactly ({}); add one (ALTER TABLE {} ADD PRIMARY KEY ({})) or name an existing key's columns",
                rule.key.join(", "),
                sql_name(name),
                rule.key.iter().map(|k| Quoted(k, '`').to_string()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    if !problems.is_empty() {
        return Ok(Err(format!("table `{name}` {}", problems.join("; and it "))));
    }
    Ok(Ok(TableInfo {
        name: name.to_owned(),
        sql_name: sql_name(name),
        columns,
        required,
    }))
}

impl TableInfo {
    /// The value `v` of column `col` as a parameter, or the problem, naming
    /// the table, the column and the value's JSON type, never the value.
    pub fn param(&self, col: &str, c: &Column, v: &Value) -> Result<My, String> {
        let wrong = |why: &str| {
            format!(
                "table `{}`, column `{col}` ({}): {why}; write {}",
                self.name,
                c.type_shown,
                c.kind.wanted()
            )
        };
        if v.is_null() {
            if c.not_null {
                return Err(format!(
                    "table `{}`, column `{col}` ({}) is NOT NULL, and the value is null; set a value or leave the column out",
                    self.name, c.type_shown
                ));
            }
            return Ok(My::NULL);
        }
        let text = |s: &str| My::Bytes(s.as_bytes().to_vec());
        Ok(match (c.kind, v) {
            (Kind::Json, v) => My::Bytes(v.to_string().into_bytes()),
            (Kind::Int(..) | Kind::UInt(_), Value::Bool(b)) => My::Int(i64::from(*b)),
            (Kind::Int(min, max), Value::Number(n)) => match n.as_i64() {
                Some(i) if (min..=max).contains(&i) => My::Int(i),
                Some(_) => return Err(wrong("the number is out of the type's range")),
                None if n.is_u64() => return Err(wrong("the number is out of the type's range")),
                None => return Err(wrong("a number with a fraction or exponent does not fit")),
            },
            (Kind::UInt(max), Value::Number(n)) => match n.as_u64() {
                Some(u) if u <= max => My::UInt(u),
                Some(_) => return Err(wrong("the number is out of the type's range")),
                None if n.is_i64() => return Err(wrong("the number is out of the type's range")),
                None => return Err(wrong("a number with a fraction or exponent does not fit")),
            },
            (Kind::Int(min, max), Value::String(s)) => match s.parse::<i64>() {
                Ok(i) if (min..=max).contains(&i) => My::Int(i),
                Ok(_) => return Err(wrong("the number in the string is out of the type's range")),
                Err(_) => return Err(wrong("a JSON string that is not an integer does not fit")),
            },
            (Kind::UInt(max), Value::String(s)) => match s.parse::<u64>() {
                Ok(u) if u <= max => My::UInt(u),
                Ok(_) => return Err(wrong("the number in the string is out of the type's range")),
                Err(_) => return Err(wrong("a JSON string that is not an unsigned integer does not fit")),
            },
            (Kind::Float, Value::Number(n)) => My::Double(n.as_f64().unwrap_or(f64::NAN)),
            (Kind::Decimal, Value::Number(n)) => text(&n.to_string()),
            (Kind::Decimal, Value::String(s)) if crate::sink::sql::is_decimal(s) => text(s),
            (Kind::Decimal, Value::String(_)) => return Err(wrong("a JSON string that is not a decimal does not fit")),
            (Kind::Text(max), Value::String(s)) => {
                if let Some(max) = max {
                    let n = s.chars().count();
                    if n > max {
                        return Err(wrong(&format!("a string of {n} characters is longer than {max}")));
                    }
                }
                text(s)
            }
            (Kind::Binary(max), Value::String(s)) => {
                let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(s) else {
                    return Err(wrong("the string is not base64"));
                };
                if let Some(max) = max
                    && bytes.len() > max
                {
                    return Err(wrong(&format!("{} bytes are longer than {max}", bytes.len())));
                }
                My::Bytes(bytes)
            }
            (Kind::DateTime, Value::String(s)) => {
                // The row change text of TIMESTAMP is ISO 8601 in UTC; the
                // session's time zone is UTC, so only the form changes.
                let s = s.strip_suffix('Z').unwrap_or(s);
                text(&s.replacen('T', " ", 1))
            }
            // MariaDB's JSON is LONGTEXT: documents go in as their text.
            (Kind::Text(None), Value::Object(_) | Value::Array(_)) => My::Bytes(v.to_string().into_bytes()),
            (Kind::Textual, Value::String(s)) => text(s),
            (Kind::Textual, Value::Number(n)) => text(&n.to_string()),
            _ => return Err(wrong(&format!("a JSON {} does not fit", json_type(v)))),
        })
    }
}
