//! The row change encoding's test vectors (guest-sdk/abi/vectors, SPEC.md):
//! rowhook's writer must produce every valid vector's bytes from the change
//! it came from, so the writer and the readers checked against the same
//! vectors cannot drift apart. `ROWHOOK_BLESS=1` rewrites the vectors.
//!
//! A vector is picked when it adds something the earlier ones lack (an op,
//! a tag in an image, a header flag), from the recorded shop binlog, the
//! MySQL conformance corpus, and the MariaDB type workload.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rowhook::decode::table_map::TableMap;
use rowhook::decode::{ChangeVisitor, Decoder, DecoderOptions, Flow, RowChange};
use rowhook::guest_abi::DirectoryCache;
use rowhook::source::file::{BinlogFile, Next};
use serde_json::json;

use crate::support::{Server, root};

#[path = "../../guest-sdk/abi/tests/support/vectors.rs"]
mod vectors;

/// Vectors larger than this are not kept: they would add bytes, not cases.
const MAX_VECTOR: usize = 2048;
/// At most this many vectors from one binlog.
const MAX_PER_SOURCE: usize = 12;

/// A change picked as a vector.
struct Picked {
    id: String,
    bytes: Vec<u8>,
    json: String,
}

/// Encodes every change and keeps those that add a feature.
#[derive(Default)]
struct Picker {
    directories: DirectoryCache,
    buf: Vec<u8>,
    seen: BTreeSet<String>,
    picked: Vec<Picked>,
}

impl ChangeVisitor for Picker {
    fn change(&mut self, c: &RowChange<'_>) -> Flow {
        let mut json = Vec::new();
        if c.write_json(&mut json).is_err() {
            // Not encodable either (the round-trip tests check that).
            return Flow::Continue;
        }
        self.directories
            .encode(c, &mut self.buf)
            .expect("a change that renders encodes");
        if self.buf.len() > MAX_VECTOR || self.picked.len() >= MAX_PER_SOURCE {
            return Flow::Continue;
        }
        let change = rowhook_abi::Change::parse(&self.buf).expect("rowhook writes what it reads");
        let mut features = vec![
            format!("op {}", change.op()),
            format!("gtid {:?}", change.gtid().map(|g| g == change.txn())),
            format!("names {}", change.has_column_names()),
        ];
        for image in [rowhook_abi::Image::Before, rowhook_abi::Image::After] {
            let Some(row) = change.image(image) else { continue };
            for i in 0..change.column_count() {
                let tag = row
                    .value_at(i)
                    .expect("rowhook writes what it reads")
                    .map_or(0, |v| v.tag());
                features.push(format!("{image} tag {tag}"));
            }
        }
        let seen = self.seen.len();
        self.seen.extend(features);
        if self.seen.len() > seen {
            self.picked.push(Picked {
                id: c.id(),
                bytes: self.buf.clone(),
                json: String::from_utf8(json).expect("JSON is UTF-8"),
            });
        }
        Flow::Continue
    }

    fn table_map(&mut self, table: &TableMap) {
        self.directories.forget(table.table_id);
    }
}

/// Checks (or with ROWHOOK_BLESS=1 writes) the vectors `<name>-NN` of the
/// binlog at `path`, shown in the vectors as `shown`.
fn check_source(name: &str, path: &Path, shown: &str, opts: DecoderOptions) {
    let mut file = BinlogFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut decoder = Decoder::new(opts, file.name());
    let mut picker = Picker::default();
    while let Next::Event(ev) = file.next_event().unwrap() {
        decoder.feed(ev, &mut picker).unwrap();
    }
    assert!(!picker.picked.is_empty(), "{name}: no change picked");
    let existing: BTreeSet<String> = vectors::all()
        .into_iter()
        .map(|(n, ..)| n)
        .filter(|n| {
            n.strip_prefix(name)
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|r| r.len() == 2)
        })
        .collect();
    let wanted: BTreeSet<String> = (0..picker.picked.len()).map(|i| format!("{name}-{i:02}")).collect();
    if vectors::bless() {
        for stale in existing.difference(&wanted) {
            for ext in ["bin", "json"] {
                let _ = std::fs::remove_file(vectors::dir().join(format!("{stale}.{ext}")));
            }
        }
        for (i, p) in picker.picked.iter().enumerate() {
            let change = rowhook_abi::Change::parse(&p.bytes).unwrap();
            let expect = vectors::expect(&change).expect("rowhook writes what it reads");
            let doc = json!({
                "source": {"binlog": shown, "change": p.id},
                "json": p.json,
                "expect": expect,
            });
            vectors::write(&format!("{name}-{i:02}"), &p.bytes, &doc);
        }
        return;
    }
    assert_eq!(
        existing, wanted,
        "the vectors of {name} (ROWHOOK_BLESS=1 rewrites them)"
    );
    let all = vectors::all();
    for (i, p) in picker.picked.iter().enumerate() {
        let vname = format!("{name}-{i:02}");
        let (_, bytes, doc) = all.iter().find(|(n, ..)| *n == vname).unwrap();
        assert_eq!(doc["source"]["change"], p.id.as_str(), "{vname}: another change");
        assert!(
            *bytes == p.bytes,
            "{vname}: rowhook now writes other bytes for {} (ROWHOOK_BLESS=1 rewrites the vectors)",
            p.id
        );
        assert_eq!(doc["json"], p.json.as_str(), "{vname}: row change JSON");
    }
}

fn fixtures() -> PathBuf {
    root().join("../shared/fixtures/mysql-binlogs")
}

#[test]
fn recorded_binlogs() {
    check_source(
        "shop",
        &root().join("examples/binlog/shop-bin.000001"),
        "examples/binlog/shop-bin.000001",
        DecoderOptions::default(),
    );
    for (name, file) in [
        ("mysql-json", "json.binlog.000001"),
        ("mysql-vector", "vector.binlog"),
        ("mysql-bit", "mysql_type_bit.000001"),
        ("mysql-enum-set", "mysql-enum-string-set.000001"),
        ("mysql-minimal-metadata", "minimal_row_metadata.000001"),
        ("mysql-time", "time_issue.000001"),
    ] {
        let opts = DecoderOptions {
            skip_statements: true,
            ..DecoderOptions::default()
        };
        let shown = format!("../shared/fixtures/mysql-binlogs/{file}");
        check_source(name, &fixtures().join(file), &shown, opts);
    }
}

/// Every column type of DESIGN.md's type table, from a real MariaDB.
#[test]
fn type_workload() {
    let server = Server::start(&[]);
    server.sql_file(&root().join("tests/sql/types.sql"));
    let file = server.binlog("mysql-bin.000001");
    check_source(
        "mariadb-types",
        &file,
        "tests/sql/types.sql on MariaDB: mysql-bin.000001",
        DecoderOptions::default(),
    );
}
