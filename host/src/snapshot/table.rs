//! A table as a snapshot reads it: its columns as `information_schema`
//! describes them, planned by the decoder itself from a TABLE_MAP body
//! written here the way the server writes one for the same table (with
//! `binlog_row_metadata = FULL`), so that a snapshot's values decode,
//! render and encode for handlers exactly as the binlog's do; the key it is
//! read in chunks by; and the statement that reads a chunk.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use crate::decode::event::Flavor;
use crate::decode::table_map::{TableMap, TableMapContext, col};

/// Table ids of snapshot tables start here, above the 48 bits a server's
/// table ids take, so that they never name a table of the binlog.
const FIRST_TABLE_ID: u64 = 1 << 56;

/// Optional metadata field types of a TABLE_MAP (the decoder's `meta`).
mod meta {
    pub const SIGNEDNESS: u8 = 1;
    pub const COLUMN_CHARSET: u8 = 3;
    pub const COLUMN_NAME: u8 = 4;
    pub const SET_STR_VALUE: u8 = 5;
    pub const ENUM_STR_VALUE: u8 = 6;
    pub const SIMPLE_PRIMARY_KEY: u8 = 8;
    pub const ENUM_AND_SET_COLUMN_CHARSET: u8 = 11;
}

/// The binary collation: BLOB, BINARY, GEOMETRY and the MariaDB types
/// stored as bytes.
const BINARY_COLLATION: u64 = 63;

/// How a column's value is selected and turned into the decoder's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// As the server sends it.
    Plain,
    /// `col + 0`: the index of an ENUM, the bits of a SET or a BIT.
    Number,
    /// `CAST(col AS BINARY(n))`: INET4, INET6 and UUID, stored as bytes.
    Binary(u16),
}

/// One column of a snapshot table.
#[derive(Debug, Clone)]
pub struct SnapColumn {
    /// Its name.
    pub name: String,
    /// How it is read.
    pub read: Read,
    /// Its collation, for a text key column: the key's bounds are compared in it.
    pub collation: Option<(String, String)>,
    /// An ENUM or SET whose labels information_schema cannot show whole
    /// (characters outside its utf8mb3 come as `?`): the rows' labels are
    /// read as well, and fill them in. The labels' collation id.
    pub labels_from_rows: Option<u32>,
}

/// A table to read a snapshot of.
#[derive(Debug, Clone)]
pub struct SnapTable {
    /// The decoder's plan of it.
    pub map: TableMap,
    /// Its columns, in table order.
    pub columns: Vec<SnapColumn>,
    /// The columns of the key it is read in order of (its primary key, or
    /// a unique key over NOT NULL columns), as indexes into `columns`.
    pub key: Vec<usize>,
}

/// A column as `information_schema.COLUMNS` describes it.
#[derive(Debug, Clone, Default)]
struct Described {
    name: String,
    data_type: String,
    column_type: String,
    nullable: bool,
    precision: u64,
    scale: u64,
    fsp: u64,
    octets: u64,
    collation: Option<String>,
    charset: Option<String>,
    collation_id: Option<u64>,
    primary: bool,
}

impl SnapTable {
    /// Reads the shape of `db.table` from the server and plans it. `n`
    /// numbers the tables of one run, for their table ids.
    pub async fn read(conn: &mut Conn, db: &str, table: &str, n: u64) -> anyhow::Result<SnapTable> {
        type Row = (
            String,
            String,
            String,
            String,
            Option<u64>,
            Option<u64>,
            Option<u64>,
            Option<u64>,
            Option<String>,
            Option<String>,
            Option<u64>,
            String,
        );
        let rows: Vec<Row> = conn
            .exec(
                "SELECT c.COLUMN_NAME, c.DATA_TYPE, c.COLUMN_TYPE, c.IS_NULLABLE, c.NUMERIC_PRECISION, \
                 c.NUMERIC_SCALE, c.DATETIME_PRECISION, c.CHARACTER_OCTET_LENGTH, c.COLLATION_NAME, \
                 c.CHARACTER_SET_NAME, co.ID, c.COLUMN_KEY \
                 FROM information_schema.COLUMNS c \
                 LEFT JOIN information_schema.COLLATIONS co ON co.COLLATION_NAME = c.COLLATION_NAME \
                 WHERE c.TABLE_SCHEMA = ? AND c.TABLE_NAME = ? ORDER BY c.ORDINAL_POSITION",
                (db, table),
            )
            .await?;
        if rows.is_empty() {
            anyhow::bail!(
                "cannot read a snapshot of `{db}.{table}`: the server has no such table, or the user may not see it. \
                 Fix: check the name, and GRANT SELECT ON `{db}`.`{table}` TO the snapshot user"
            );
        }
        let described: Vec<Described> = rows
            .into_iter()
            .map(
                |(
                    name,
                    data_type,
                    column_type,
                    nullable,
                    precision,
                    scale,
                    fsp,
                    octets,
                    collation,
                    charset,
                    id,
                    key,
                )| Described {
                    name,
                    data_type: data_type.to_ascii_lowercase(),
                    column_type: column_type.to_ascii_lowercase(),
                    nullable: nullable == "YES",
                    precision: precision.unwrap_or(0),
                    scale: scale.unwrap_or(0),
                    fsp: fsp.unwrap_or(0),
                    octets: octets.unwrap_or(0),
                    collation,
                    charset,
                    collation_id: id,
                    primary: key == "PRI",
                },
            )
            .collect();
        let key = key_columns(conn, db, table, &described).await?;
        plan(db, table, FIRST_TABLE_ID + n, &described, key)
    }

    /// The table as `` `db`.`table` ``.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote(&self.map.db), quote(&self.map.table))
    }

    /// The columns whose labels are read from the rows, in the order their
    /// labels follow the table's columns in a chunk's rows.
    pub fn label_columns(&self) -> Vec<(usize, u32)> {
        (self.columns.iter().enumerate())
            .filter_map(|(i, c)| c.labels_from_rows.map(|coll| (i, coll)))
            .collect()
    }

    /// The statement that reads the next chunk: `limit` rows in key order
    /// that `filter` selects, after the key given as parameters when
    /// `after` (each key column's value once, in key order). Each row is
    /// the table's columns, then the labels of [`SnapTable::label_columns`].
    pub fn chunk_query(&self, filter: Option<&str>, after: bool, limit: u32) -> String {
        let mut select: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let q = quote(&c.name);
                match c.read {
                    Read::Plain => q,
                    Read::Number => format!("({q} + 0)"),
                    Read::Binary(n) => format!("CAST({q} AS BINARY({n}))"),
                }
            })
            .collect();
        select.extend(self.label_columns().iter().map(|&(i, _)| quote(&self.columns[i].name)));
        let mut conditions = Vec::new();
        if let Some(f) = filter {
            conditions.push(format!("({f})"));
        }
        if after {
            // (k1, k2, …) > (?, ?, …), spelled out so that the range
            // optimizer reads only the rows after it.
            let mut any = Vec::new();
            for last in 0..self.key.len() {
                let mut all = Vec::new();
                for (i, &k) in self.key[..=last].iter().enumerate() {
                    let op = if i == last { ">" } else { "=" };
                    all.push(format!("{} {op} {}", quote(&self.columns[k].name), self.param(k)));
                }
                any.push(format!("({})", all.join(" AND ")));
            }
            conditions.push(format!("({})", any.join(" OR ")));
        }
        let order: Vec<String> = self.key.iter().map(|&k| quote(&self.columns[k].name)).collect();
        let mut sql = format!("SELECT {} FROM {}", select.join(", "), self.quoted());
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", order.join(", ")));
        sql
    }

    /// How many times the key's values are passed to [`SnapTable::chunk_query`]:
    /// key column i appears once in each of the terms from its own on.
    pub fn param_order(&self) -> Vec<usize> {
        let mut order = Vec::new();
        for last in 0..self.key.len() {
            order.extend(0..=last);
        }
        order
    }

    /// The placeholder of key column `k`: text arrives as the column's own
    /// bytes and is compared in the column's collation.
    fn param(&self, k: usize) -> String {
        match &self.columns[k].collation {
            Some((charset, collation)) => format!("CONVERT(CAST(? AS BINARY) USING {charset}) COLLATE {collation}"),
            None => "?".to_owned(),
        }
    }
}

/// `` `name` `` with backticks doubled.
pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The primary key's columns, or those of the first unique key over NOT
/// NULL columns.
async fn key_columns(conn: &mut Conn, db: &str, table: &str, columns: &[Described]) -> anyhow::Result<Vec<usize>> {
    let rows: Vec<(String, String, u64)> = conn
        .exec(
            "SELECT INDEX_NAME, COLUMN_NAME, NON_UNIQUE FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY INDEX_NAME <> 'PRIMARY', INDEX_NAME, SEQ_IN_INDEX",
            (db, table),
        )
        .await?;
    let mut indexes: Vec<(String, Vec<usize>, bool)> = Vec::new();
    for (index, column, non_unique) in rows {
        let Some(i) = columns.iter().position(|c| c.name == column) else {
            continue;
        };
        match indexes.last_mut() {
            Some((name, cols, _)) if *name == index => cols.push(i),
            _ => indexes.push((index, vec![i], non_unique == 0)),
        }
    }
    indexes
        .into_iter()
        .find(|(_, cols, unique)| *unique && cols.iter().all(|&i| !columns[i].nullable))
        .map(|(_, cols, _)| cols)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "cannot read a snapshot of `{db}.{table}`: it has no primary key and no unique key over NOT NULL columns, \
                 and a snapshot reads a table in chunks by key. Fix: add one (ALTER TABLE `{db}`.`{table}` ADD PRIMARY KEY (…)), \
                 or leave the table out of the snapshot"
            )
        })
}

/// Appends `n` as a length-encoded integer.
fn packed(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=250 => out.push(n as u8),
        251..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

fn packed_bytes(out: &mut Vec<u8>, b: &[u8]) {
    packed(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// The labels of `enum('a','it''s')` or `set(…)`, unquoted.
fn labels(column_type: &str) -> Vec<Vec<u8>> {
    let Some(open) = column_type.find('(') else {
        return Vec::new();
    };
    let body = column_type[open + 1..].trim_end_matches(')').as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'\'' {
            i += 1;
            continue;
        }
        let mut label = Vec::new();
        i += 1;
        while i < body.len() {
            if body[i] == b'\'' {
                if body.get(i + 1) == Some(&b'\'') {
                    label.push(b'\'');
                    i += 2;
                    continue;
                }
                break;
            }
            label.push(body[i]);
            i += 1;
        }
        i += 1;
        out.push(label);
    }
    out
}

/// What one column puts into a TABLE_MAP: its type code, its metadata
/// bytes, and how it is read.
struct Planned {
    type_code: u8,
    meta: Vec<u8>,
    read: Read,
    numeric: bool,
    character: bool,
    enum_set: Option<u8>,
}

fn plan_column(c: &Described, db: &str, table: &str) -> anyhow::Result<Planned> {
    let unsupported = || {
        anyhow::anyhow!(
            "cannot read a snapshot of `{db}.{table}`: column `{}` has type `{}`, which a snapshot cannot read yet. \
             Fix: leave the table out of the snapshot",
            c.name,
            c.column_type
        )
    };
    let compressed = c.column_type.contains("compressed");
    let plain = |type_code: u8, meta: Vec<u8>| Planned {
        type_code,
        meta,
        read: Read::Plain,
        numeric: false,
        character: false,
        enum_set: None,
    };
    let number = |type_code: u8, meta: Vec<u8>| Planned {
        numeric: true,
        ..plain(type_code, meta)
    };
    let text = |type_code: u8, meta: Vec<u8>| Planned {
        character: true,
        ..plain(type_code, meta)
    };
    let fsp = c.fsp.min(6) as u8;
    Ok(match c.data_type.as_str() {
        "tinyint" => number(col::TINY, vec![]),
        "smallint" => number(col::SHORT, vec![]),
        "mediumint" => number(col::INT24, vec![]),
        "int" | "integer" => number(col::LONG, vec![]),
        "bigint" => number(col::LONGLONG, vec![]),
        "year" => number(col::YEAR, vec![]),
        "float" => number(col::FLOAT, vec![4]),
        "double" | "real" => number(col::DOUBLE, vec![8]),
        "decimal" | "numeric" => number(col::NEWDECIMAL, vec![c.precision as u8, c.scale as u8]),
        "date" => plain(col::DATE, vec![]),
        "datetime" => plain(col::DATETIME2, vec![fsp]),
        "timestamp" => plain(col::TIMESTAMP2, vec![fsp]),
        "time" => plain(col::TIME2, vec![fsp]),
        "bit" => {
            let bits = c.precision.clamp(1, 64);
            Planned {
                read: Read::Number,
                ..plain(col::BIT, vec![(bits % 8) as u8, (bits / 8) as u8])
            }
        }
        "char" | "binary" if !compressed => {
            let len = c.octets;
            if len > 1023 {
                return Err(unsupported());
            }
            // CHAR longer than 255 bytes keeps length bits 8-9 in the type
            // byte, inverted (MySQL bug #37426).
            let high = ((len >> 8) as u8 & 0x03) << 4;
            text(col::STRING, vec![col::STRING ^ high, len as u8])
        }
        "varchar" | "varbinary" | "char" | "binary" => {
            text(col::VARCHAR, (c.octets.min(0xffff) as u16).to_le_bytes().to_vec())
        }
        "tinytext" | "tinyblob" => text(col::BLOB, vec![1]),
        "text" | "blob" => text(col::BLOB, vec![2]),
        "mediumtext" | "mediumblob" => text(col::BLOB, vec![3]),
        "longtext" | "longblob" | "json" => text(col::BLOB, vec![4]),
        "enum" => {
            let n = labels(&c.column_type).len();
            Planned {
                read: Read::Number,
                enum_set: Some(col::ENUM),
                ..plain(col::STRING, vec![col::ENUM, if n > 255 { 2 } else { 1 }])
            }
        }
        "set" => {
            let n = labels(&c.column_type).len();
            Planned {
                read: Read::Number,
                enum_set: Some(col::SET),
                ..plain(col::STRING, vec![col::SET, n.div_ceil(8).clamp(1, 8) as u8])
            }
        }
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring" | "multipolygon"
        | "geometrycollection" => text(col::GEOMETRY, vec![4]),
        "inet4" => Planned {
            read: Read::Binary(4),
            ..text(col::STRING, vec![col::STRING, 4])
        },
        "inet6" | "uuid" => Planned {
            read: Read::Binary(16),
            ..text(col::STRING, vec![col::STRING, 16])
        },
        _ => return Err(unsupported()),
    })
}

/// Plans `db.table` from its described columns, through a TABLE_MAP body.
fn plan(db: &str, table: &str, table_id: u64, columns: &[Described], key: Vec<usize>) -> anyhow::Result<SnapTable> {
    let planned: Vec<Planned> = columns
        .iter()
        .map(|c| plan_column(c, db, table))
        .collect::<anyhow::Result<_>>()?;
    let n = columns.len();
    let mut body = Vec::new();
    body.extend_from_slice(&table_id.to_le_bytes()[..6]);
    body.extend_from_slice(&[0, 0]);
    for name in [db, table] {
        let name = name.as_bytes();
        body.push(name.len().min(255) as u8);
        body.extend_from_slice(&name[..name.len().min(255)]);
        body.push(0);
    }
    packed(&mut body, n as u64);
    body.extend(planned.iter().map(|p| p.type_code));
    let meta: Vec<u8> = planned.iter().flat_map(|p| p.meta.iter().copied()).collect();
    packed_bytes(&mut body, &meta);
    let mut nulls = vec![0u8; n.div_ceil(8)];
    for (i, c) in columns.iter().enumerate() {
        if c.nullable {
            nulls[i / 8] |= 1 << (i % 8);
        }
    }
    body.extend_from_slice(&nulls);

    let field = |out: &mut Vec<u8>, t: u8, value: Vec<u8>| {
        out.push(t);
        packed_bytes(out, &value);
    };
    // Signedness: a bit per numeric column, most significant first.
    let numeric: Vec<bool> = columns
        .iter()
        .zip(&planned)
        .filter(|(_, p)| p.numeric)
        .map(|(c, _)| c.column_type.contains("unsigned"))
        .collect();
    let mut bits = vec![0u8; numeric.len().div_ceil(8)];
    for (k, &unsigned) in numeric.iter().enumerate() {
        if unsigned {
            bits[k / 8] |= 0x80 >> (k % 8);
        }
    }
    field(&mut body, meta::SIGNEDNESS, bits);
    let collation = |c: &Described| c.collation_id.unwrap_or(BINARY_COLLATION);
    let mut charsets = Vec::new();
    for (c, _) in columns.iter().zip(&planned).filter(|(_, p)| p.character) {
        packed(&mut charsets, collation(c));
    }
    field(&mut body, meta::COLUMN_CHARSET, charsets);
    let mut names = Vec::new();
    for c in columns {
        packed_bytes(&mut names, c.name.as_bytes());
    }
    field(&mut body, meta::COLUMN_NAME, names);
    for (t, want) in [(meta::SET_STR_VALUE, col::SET), (meta::ENUM_STR_VALUE, col::ENUM)] {
        let mut values = Vec::new();
        for (c, _) in columns.iter().zip(&planned).filter(|(_, p)| p.enum_set == Some(want)) {
            let labels = labels(&c.column_type);
            packed(&mut values, labels.len() as u64);
            for l in labels {
                packed_bytes(&mut values, &l);
            }
        }
        if !values.is_empty() {
            field(&mut body, t, values);
        }
    }
    let mut enum_set_charsets = Vec::new();
    for (c, _) in columns.iter().zip(&planned).filter(|(_, p)| p.enum_set.is_some()) {
        packed(&mut enum_set_charsets, collation(c));
    }
    if !enum_set_charsets.is_empty() {
        field(&mut body, meta::ENUM_AND_SET_COLUMN_CHARSET, enum_set_charsets);
    }
    let primary: Vec<usize> = (0..n).filter(|&i| columns[i].primary).collect();
    if !primary.is_empty() {
        let mut pk = Vec::new();
        for i in primary {
            packed(&mut pk, i as u64);
        }
        field(&mut body, meta::SIMPLE_PRIMARY_KEY, pk);
    }

    let map = TableMap::parse(
        &body,
        TableMapContext {
            flavor: Flavor::MariaDb,
            table_id_len: 6,
        },
    )
    .map_err(|e| anyhow::anyhow!("cannot plan a snapshot of `{db}.{table}`: {e:?}"))?;
    let snap_columns = columns
        .iter()
        .zip(&planned)
        .map(|(c, p)| SnapColumn {
            name: c.name.clone(),
            read: p.read,
            collation: match (&c.charset, &c.collation) {
                (Some(cs), Some(coll)) if cs != "binary" => Some((cs.clone(), coll.clone())),
                _ => None,
            },
            labels_from_rows: (p.enum_set.is_some() && labels(&c.column_type).iter().any(|l| l.contains(&b'?')))
                .then(|| collation(c) as u32),
        })
        .collect();
    Ok(SnapTable {
        map,
        columns: snap_columns,
        key,
    })
}
