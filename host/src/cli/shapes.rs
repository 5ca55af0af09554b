//! Row changes made up from the shape of a handler's tables, for the trial
//! calls of `rowhook check` when no binlog is given: the columns, types,
//! keys and nullability `information_schema.COLUMNS` gives for each table
//! the handler subscribes to, with plausible values of each type. A
//! handler then reads its columns as it will in production (a `DECIMAL` as
//! exact text, a `TIMESTAMP` as UTC text, `NULL` where the column allows
//! it), so its memory per call is measured on the paths it will take.

use std::collections::HashMap;

use mysql_async::prelude::Queryable;
use rowhook_abi::write::{ChangeWriter, ColumnDirectory, Header};
use rowhook_abi::{Image, Value};

use super::trial::Samples;
use crate::config::{HandlerPlan, Plan};
use crate::decode::Op;
use crate::source::server::SourceUrl;

/// Tables made up per handler, at most: enough for a handler of a whole
/// schema to be called with each shape it sees most.
const MAX_TABLES: usize = 20;

/// A column as `information_schema.COLUMNS` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeColumn {
    /// `COLUMN_NAME`.
    pub name: String,
    /// `DATA_TYPE`, lower case: `int`, `varchar`, `decimal`, ...
    pub data_type: String,
    /// `COLUMN_TYPE`: `int(10) unsigned`, `enum('a','b')`, ...
    pub column_type: String,
    /// `IS_NULLABLE = 'YES'`.
    pub nullable: bool,
    /// `COLUMN_KEY = 'PRI'`.
    pub primary_key: bool,
    /// `NUMERIC_SCALE` (decimals).
    pub scale: u32,
    /// `CHARACTER_MAXIMUM_LENGTH` (characters of text, bytes of binary).
    pub max_length: Option<u64>,
    /// `DATETIME_PRECISION` (fractional digits of temporal types).
    pub fsp: u32,
}

/// One table's columns in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableShape {
    /// The schema.
    pub db: String,
    /// The table.
    pub table: String,
    /// Its columns, by `ORDINAL_POSITION`.
    pub columns: Vec<ShapeColumn>,
}

type ColumnRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<u64>,
    Option<u64>,
    Option<u64>,
);

/// The shapes of the tables each handler of `plan` subscribes to, by
/// handler name, read from the server behind `url`.
pub async fn read(url: &SourceUrl, plan: &Plan) -> anyhow::Result<HashMap<String, Vec<TableShape>>> {
    let mut schemas: Vec<&str> = plan
        .handlers
        .iter()
        .flat_map(|h| h.tables.iter().map(|t| t.db.as_str()))
        .collect();
    schemas.sort_unstable();
    schemas.dedup();
    if schemas.is_empty() {
        return Ok(HashMap::new());
    }
    let mut conn = url.connect().await?;
    let query = format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY, \
         NUMERIC_SCALE, CHARACTER_MAXIMUM_LENGTH, DATETIME_PRECISION \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN ({}) \
         ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION",
        vec!["?"; schemas.len()].join(", ")
    );
    let rows: Vec<ColumnRow> = conn
        .exec(query, schemas)
        .await
        .map_err(|e| anyhow::anyhow!(url.scrub(&format!("reading information_schema.COLUMNS: {e}"))))?;
    let _ = conn.disconnect().await;
    let tables = group(rows);
    Ok(plan
        .handlers
        .iter()
        .map(|h| {
            let mine: Vec<TableShape> = tables
                .iter()
                .filter(|t| h.tables.iter().any(|p| p.matches(&t.db, &t.table)))
                .take(MAX_TABLES)
                .cloned()
                .collect();
            (h.name.clone(), mine)
        })
        .collect())
}

fn group(rows: Vec<ColumnRow>) -> Vec<TableShape> {
    let mut tables: Vec<TableShape> = Vec::new();
    for (db, table, name, data_type, column_type, nullable, key, scale, max_length, fsp) in rows {
        let column = ShapeColumn {
            name,
            data_type: data_type.to_ascii_lowercase(),
            column_type: column_type.to_ascii_lowercase(),
            nullable: nullable.eq_ignore_ascii_case("YES"),
            primary_key: key.eq_ignore_ascii_case("PRI"),
            scale: scale.unwrap_or(0).min(38) as u32,
            max_length,
            fsp: fsp.unwrap_or(0).min(6) as u32,
        };
        match tables.last_mut() {
            Some(t) if t.db == db && t.table == table => t.columns.push(column),
            _ => tables.push(TableShape {
                db,
                table,
                columns: vec![column],
            }),
        }
    }
    tables
}

/// The binlog's type code for a column of this `DATA_TYPE`, as TABLE_MAP
/// gives it (`DATETIME2`, `TIMESTAMP2` and `TIME2` for the temporal types
/// servers write today).
fn type_code(data_type: &str) -> u8 {
    match data_type {
        "tinyint" => 1,
        "smallint" => 2,
        "int" | "integer" => 3,
        "float" => 4,
        "double" | "real" => 5,
        "bigint" => 8,
        "mediumint" => 9,
        "date" => 10,
        "year" => 13,
        "varchar" | "varbinary" => 15,
        "bit" => 16,
        "timestamp" => 17,
        "datetime" => 18,
        "time" => 19,
        "vector" => 242,
        "json" => 245,
        "decimal" | "numeric" => 246,
        "tinyblob" | "blob" | "mediumblob" | "longblob" | "tinytext" | "text" | "mediumtext" | "longtext" => 252,
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring" | "multipolygon"
        | "geometrycollection" => 255,
        // char, binary, enum, set (and anything newer: shown as text)
        _ => 254,
    }
}

/// The labels of an `enum('a','b')` or `set(...)` column type.
fn labels(column_type: &str) -> Vec<String> {
    let Some(inner) = column_type
        .split_once('(')
        .and_then(|(_, rest)| rest.rsplit_once(')'))
        .map(|(inner, _)| inner)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    label.push('\'');
                    continue;
                }
                break;
            }
            label.push(c);
        }
        out.push(label);
    }
    out
}

/// Text of up to `max` characters (at least one).
fn text_of(seed: &str, max: Option<u64>) -> String {
    let max = max.unwrap_or(64).clamp(1, 64) as usize;
    seed.chars().cycle().take(max.min(seed.len().max(1))).collect()
}

/// A made-up value, owning what a [`Value`] borrows.
enum Made {
    Plain(Value<'static>),
    Decimal(String),
    DateTime(String),
    Timestamp(String),
    Time(String),
    Enum(String),
    Set(String),
    String(String),
    Bytes(Vec<u8>),
}

impl Made {
    fn value(&self) -> Value<'_> {
        match self {
            Made::Plain(v) => *v,
            Made::Decimal(s) => Value::Decimal(s),
            Made::DateTime(s) => Value::DateTime(s),
            Made::Timestamp(s) => Value::Timestamp(s),
            Made::Time(s) => Value::Time(s),
            Made::Enum(s) => Value::Enum(s),
            Made::Set(s) => Value::Set(s),
            Made::String(s) => Value::String(s),
            Made::Bytes(b) => Value::Bytes(b),
        }
    }
}

/// The value of column `c` in made-up row `n` (0, 1, ...): odd rows are
/// `NULL` wherever the column allows it, so a handler's `NULL` paths run too.
fn value_of(c: &ShapeColumn, n: u64) -> Made {
    if n % 2 == 1 && c.nullable && !c.primary_key {
        return Made::Plain(Value::Null);
    }
    let unsigned = c.column_type.contains("unsigned");
    let int = |max: u64| {
        let v = (n + 1).min(max);
        Made::Plain(if unsigned { Value::UInt(v) } else { Value::Int(v as i64) })
    };
    let fraction = if c.fsp == 0 {
        String::new()
    } else {
        format!(".{}", "5".repeat(c.fsp as usize))
    };
    let second = n % 60;
    match c.data_type.as_str() {
        "tinyint" => int(127),
        "smallint" | "mediumint" | "int" | "integer" | "bigint" => int(u64::from(u32::MAX >> 1)),
        "float" => Made::Plain(Value::Float(1.5 + n as f32)),
        "double" | "real" => Made::Plain(Value::Double(1.25 + n as f64)),
        "decimal" | "numeric" => Made::Decimal(if c.scale == 0 {
            (n + 1).to_string()
        } else {
            format!("{}.{}", n + 1, "5".repeat(c.scale as usize))
        }),
        "date" => Made::Plain(Value::Date("2024-02-29")),
        "datetime" => Made::DateTime(format!("2024-02-29 13:45:{second:02}{fraction}")),
        "timestamp" => Made::Timestamp(format!("2024-02-29T13:45:{second:02}{fraction}Z")),
        "time" => Made::Time(format!("13:45:{second:02}{fraction}")),
        "year" => Made::Plain(Value::UInt(2024)),
        "bit" => Made::Plain(Value::Bit(1)),
        "json" => Made::Plain(Value::Json("{\"sample\":true}")),
        "enum" => Made::Enum(labels(&c.column_type).into_iter().next().unwrap_or_default()),
        "set" => Made::Set(labels(&c.column_type).into_iter().next().unwrap_or_default()),
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            let len = match c.data_type.as_str() {
                "binary" => c.max_length.unwrap_or(1).min(255) as usize,
                _ => c.max_length.unwrap_or(4).clamp(1, 4) as usize,
            };
            Made::Bytes((0..len).map(|i| (i as u8).wrapping_add(n as u8)).collect())
        }
        "vector" => Made::Plain(Value::Vector(&[0, 0, 128, 63])),
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring" | "multipolygon"
        | "geometrycollection" => {
            // SRID 0, then the WKB of POINT(1 2).
            Made::Plain(Value::Bytes(&[
                0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 240, 63, 0, 0, 0, 0, 0, 0, 0, 64,
            ]))
        }
        _ => Made::String(text_of(&format!("{} {}", c.name, n + 1), c.max_length)),
    }
}

/// Made-up changes of `tables` for handler `h`: for each table and each
/// operation the handler takes, two rows (the second `NULL` where the
/// column allows it), both images where the operation has them.
pub fn samples(h: &HandlerPlan, tables: &[TableShape]) -> Samples {
    let mut changes = Vec::new();
    for t in tables {
        let Ok(directory) = ColumnDirectory::new(t.columns.iter().map(|c| rowhook_abi::Column {
            name: &c.name,
            type_code: type_code(&c.data_type),
            primary_key: c.primary_key,
            nullable: c.nullable,
        })) else {
            continue;
        };
        for op in [Op::Insert, Op::Update, Op::Delete] {
            if !h.ops.contains(op) {
                continue;
            }
            for n in 0..2u64 {
                let head = Header {
                    op,
                    before: op != Op::Insert,
                    after: op != Op::Delete,
                    db: &t.db,
                    table: &t.table,
                    ..Default::default()
                };
                let mut out = Vec::new();
                let Ok(mut w) = ChangeWriter::new(&mut out, &head, &directory) else {
                    continue;
                };
                let mut ok = true;
                for (image, row) in [(Image::Before, n + 1), (Image::After, n)] {
                    if (image == Image::Before && !head.before) || (image == Image::After && !head.after) {
                        continue;
                    }
                    for (i, c) in t.columns.iter().enumerate() {
                        ok &= w.value(image, i, Some(value_of(c, row).value())).is_ok();
                    }
                }
                if ok && w.finish().is_ok() {
                    changes.push(out);
                }
            }
        }
    }
    Samples {
        from: format!(
            "{} made-up change(s) shaped as information_schema describes {} table(s) (pass --binlog FILE for real rows)",
            changes.len(),
            tables.len()
        ),
        changes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, data_type: &str, column_type: &str, nullable: bool) -> ShapeColumn {
        ShapeColumn {
            name: name.into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            nullable,
            primary_key: name == "id",
            scale: if data_type == "decimal" { 2 } else { 0 },
            max_length: (data_type == "varchar").then_some(3),
            fsp: if data_type == "timestamp" { 3 } else { 0 },
        }
    }

    #[test]
    fn enum_and_set_labels_are_read_with_their_quotes() {
        assert_eq!(labels("enum('new','it''s','a,b')"), ["new", "it's", "a,b"]);
        assert_eq!(labels("set('x')"), ["x"]);
        assert!(labels("int(11)").is_empty());
    }

    fn get<'a>(row: &rowhook_abi::Row<'a>, name: &str) -> Value<'a> {
        let i = row.change().column_index(name).unwrap();
        row.value_at(i).unwrap().unwrap()
    }

    #[test]
    fn made_up_changes_read_back_with_the_tables_types() {
        let table = TableShape {
            db: "shop".into(),
            table: "orders".into(),
            columns: vec![
                column("id", "bigint", "bigint(20) unsigned", false),
                column("amount", "decimal", "decimal(10,2)", false),
                column("note", "varchar", "varchar(3)", true),
                column("status", "enum", "enum('new','paid')", false),
                column("at", "timestamp", "timestamp(3)", true),
            ],
        };
        let plan = crate::config::Plan::parse(
            "[[handlers]]\nname = \"h\"\nmodule = \"h.wasm\"\ntables = [\"shop.orders\"]\nops = [\"insert\", \"update\"]\n",
            std::path::Path::new("rowhook.toml"),
            |_| None,
        )
        .unwrap();
        let s = samples(&plan.handlers[0], &[table]);
        assert_eq!(s.changes.len(), 4, "two rows per operation");
        let first = rowhook_abi::Change::parse(&s.changes[0]).unwrap();
        assert_eq!(first.table(), "orders");
        let after = first.after_image().unwrap();
        assert_eq!(get(&after, "id"), Value::UInt(1));
        assert_eq!(get(&after, "amount"), Value::Decimal("1.55"));
        assert_eq!(get(&after, "note"), Value::String("not"));
        assert_eq!(get(&after, "status"), Value::Enum("new"));
        assert_eq!(get(&after, "at"), Value::Timestamp("2024-02-29T13:45:00.555Z"));
        let second = rowhook_abi::Change::parse(&s.changes[1]).unwrap();
        let after = second.after_image().unwrap();
        assert_eq!(get(&after, "note"), Value::Null);
        assert_eq!(get(&after, "id"), Value::UInt(2), "a key is never NULL");
        // An update has both images.
        let update = rowhook_abi::Change::parse(&s.changes[2]).unwrap();
        assert!(update.before_image().is_some() && update.after_image().is_some());
        assert!(s.from.contains("1 table(s)"), "{}", s.from);
    }
}
