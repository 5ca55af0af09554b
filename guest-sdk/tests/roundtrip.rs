//! The row change encoding end to end: real binlogs decoded by rowhook,
//! encoded by the host's `guest_abi` (the `rowhook-abi` writer), read back by this SDK, and compared
//! column by column with the row change JSON rowhook prints for the same
//! change.
//!
//! Binlogs: the recorded shop binlog of examples/, MySQL 5.0–9.6 files from
//! ../shared/fixtures (JSON, partial JSON updates, VECTOR, BIT, ENUM/SET
//! without labels, charsets, MINIMAL metadata), and the type-coverage
//! workload tests/sql/types.sql run on a throwaway MariaDB.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use rowhook::decode::table_map::TableMap;
use rowhook::decode::{ChangeVisitor, Decoder, DecoderOptions, Flow, RowChange};
use rowhook::guest_abi::DirectoryCache;
use rowhook::source::file::{BinlogFile, Next};
use rowhook_guest::{Change, Error, Image, Op, Value};
use serde_json::Value as Json;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Checks every change it sees, counting what it checked.
#[derive(Default)]
struct RoundTrip {
    directories: DirectoryCache,
    buf: Vec<u8>,
    json: Vec<u8>,
    changes: usize,
    values: usize,
    /// Value kinds seen, to show the coverage of a binlog.
    kinds: std::collections::BTreeSet<&'static str>,
}

impl ChangeVisitor for RoundTrip {
    fn change(&mut self, c: &RowChange<'_>) -> Flow {
        self.json.clear();
        let rendered = c.write_json(&mut self.json);
        let encoded = self.directories.encode(c, &mut self.buf);
        match (rendered, encoded) {
            (Ok(()), Ok(())) => {}
            (Err(a), Err(b)) => {
                // A value the JSON path cannot render fails the encoding too.
                assert_eq!(a, b);
                return Flow::Continue;
            }
            (a, b) => panic!("{}: JSON {a:?} but encoding {b:?}", c.id()),
        }
        let expected = std::str::from_utf8(&self.json).unwrap();
        let change = Change::parse(&self.buf).unwrap_or_else(|e| panic!("{}: {e:?}", c.id()));
        assert_eq!(change.to_json().unwrap(), expected, "to_json of {}", c.id());

        let exp: Json = serde_json::from_str(expected).unwrap();
        #[cfg(feature = "json")]
        assert_eq!(change.to_json_value().unwrap(), exp);
        assert_eq!(change.id(), exp["id"]);
        assert_eq!(change.txn(), c.txn);
        assert_eq!((change.event_index(), change.row_index()), (c.event_index, c.row_index));
        assert_eq!(change.op().as_str(), exp["op"]);
        assert_eq!(
            (change.db(), change.table()),
            (c.table.db.as_str(), c.table.table.as_str())
        );
        assert_eq!((change.file(), change.pos(), change.ts()), (c.file, c.pos, c.ts));
        assert_eq!(change.gtid(), c.gtid);
        assert_eq!(change.has_column_names(), c.table.has_names);
        assert_eq!(change.column_count(), c.table.columns.len());
        for (got, col) in change.columns().zip(&c.table.columns) {
            assert_eq!(
                (got.name, got.type_code, got.primary_key, got.nullable),
                (col.name.as_str(), col.type_code, col.primary_key, col.nullable)
            );
        }
        for (image, row) in [(Image::Before, &exp["before"]), (Image::After, &exp["after"])] {
            let Json::Object(columns) = row else {
                assert!(row.is_null());
                assert!(matches!(change.image(image), Err(Error::NoImage { .. })));
                continue;
            };
            let img = change.image(image).unwrap();
            let present = img.iter().count();
            assert_eq!(present, columns.len(), "{} {image}: columns present", c.id());
            for (name, want) in columns {
                let value = img.value(name).unwrap();
                check_value(&change, image, name, &value, want);
                self.kinds.insert(value.kind());
                self.values += 1;
            }
        }
        // `get` reads the after image, or the before image of a delete.
        if let Some(first) = change.column(0) {
            let via_get = change.get::<Option<Value>>(first.name);
            let image = if change.op() == Op::Delete {
                Image::Before
            } else {
                Image::After
            };
            let direct = change.image(image).unwrap().get::<Option<Value>>(first.name);
            assert_eq!(format!("{via_get:?}"), format!("{direct:?}"));
        }
        self.changes += 1;
        Flow::Continue
    }

    fn table_map(&mut self, table: &TableMap) {
        self.directories.forget(table.table_id);
    }
}

/// Compares one value with its JSON, through the typed accessors.
fn check_value(change: &Change<'_>, image: Image, name: &str, v: &Value<'_>, want: &Json) {
    let at = || format!("{} {image} `{name}` = {v:?}, JSON {want}", change.id());
    let row = change.image(image).unwrap();
    match *v {
        Value::Null => {
            assert!(want.is_null(), "{}", at());
            assert_eq!(row.get::<Option<i64>>(name).unwrap(), None);
            assert!(matches!(
                row.get::<i64>(name),
                Err(Error::WrongType { found: "null", .. })
            ));
        }
        Value::Int(i) => {
            assert_eq!(want.as_i64(), Some(i), "{}", at());
            assert_eq!(row.get::<i64>(name).unwrap(), i);
            assert_eq!(row.get::<i32>(name).ok(), i32::try_from(i).ok());
            assert_eq!(row.get::<bool>(name).unwrap(), i != 0);
        }
        Value::UInt(u) | Value::Bit(u) => {
            assert_eq!(want.as_u64(), Some(u), "{}", at());
            assert_eq!(row.get::<u64>(name).unwrap(), u);
            assert_eq!(row.get::<i64>(name).ok(), i64::try_from(u).ok());
        }
        Value::Float(f) => {
            match want.as_f64() {
                Some(w) => assert_eq!(w as f32, f, "{}", at()),
                None => assert!(want.is_null() && !f.is_finite(), "{}", at()),
            }
            assert_eq!(row.get::<f64>(name).unwrap().to_bits(), f64::from(f).to_bits());
        }
        Value::Double(d) => {
            match want.as_f64() {
                Some(w) => assert_eq!(w, d, "{}", at()),
                None => assert!(want.is_null() && !d.is_finite(), "{}", at()),
            }
            assert_eq!(row.get::<f64>(name).unwrap().to_bits(), d.to_bits());
        }
        Value::Json(text) => {
            let parsed: Json = serde_json::from_str(text).unwrap_or_else(|e| panic!("{}: {e}", at()));
            assert_eq!(&parsed, want, "{}", at());
            assert_eq!(row.get::<&str>(name).unwrap(), text);
        }
        Value::Bytes(b) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(want.as_str().unwrap_or_else(|| panic!("{}", at())))
                .unwrap();
            assert_eq!(decoded, b, "{}", at());
            assert_eq!(row.get::<&[u8]>(name).unwrap(), b);
            assert_eq!(row.get::<&str>(name).ok(), std::str::from_utf8(b).ok());
        }
        Value::Vector(_) => {
            let got: Vec<f32> = v.vector().unwrap().collect();
            let want: Vec<f32> = want
                .as_array()
                .unwrap_or_else(|| panic!("{}", at()))
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(got, want, "{}", at());
        }
        _ => {
            let text = v.as_text().unwrap_or_else(|| panic!("{}: no text", at()));
            assert_eq!(want.as_str(), Some(text), "{}", at());
            assert_eq!(row.get::<&str>(name).unwrap(), text);
            assert_eq!(row.get::<String>(name).unwrap(), text);
            assert_eq!(row.get::<&[u8]>(name).unwrap(), text.as_bytes());
            if let Value::Decimal(d) = v {
                assert_eq!(row.get::<f64>(name).unwrap(), d.parse::<f64>().unwrap());
            }
            assert!(matches!(row.get::<i64>(name), Err(Error::WrongType { .. })));
        }
    }
}

/// Decodes `files` in order and checks every change; returns the checker.
fn round_trip(files: &[PathBuf], opts: DecoderOptions) -> RoundTrip {
    let mut decoder = Decoder::new(opts, "");
    let mut check = RoundTrip::default();
    for path in files {
        let mut file = BinlogFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        decoder.set_file(file.name());
        while let Next::Event(ev) = file.next_event().unwrap() {
            decoder
                .feed(ev, &mut check)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
    check
}

#[test]
fn shop_binlog() {
    let check = round_trip(
        &[root().join("examples/binlog/shop-bin.000001")],
        DecoderOptions::default(),
    );
    assert!(check.changes > 10, "{} changes", check.changes);
    eprintln!(
        "shop: {} changes, {} values, kinds {:?}",
        check.changes, check.values, check.kinds
    );
}

#[test]
fn mysql_fixtures() {
    let dir = root().join("../shared/fixtures/mysql-binlogs");
    assert!(
        dir.exists(),
        "{} missing: ../shared must be beside the repository",
        dir.display()
    );
    let mut changes = 0;
    let mut kinds = std::collections::BTreeSet::new();
    for name in [
        "binlog-invisible-columns.000001",
        "binlog_transaction_with_GTID.000001",
        "binlog_transaction_with_GTID_TAG.000001",
        "binlog_transaction_with_anonymous_GTID.000001",
        "bug27213339-bin.000001",
        "json-opaque.binlog",
        "json.binlog.000001",
        "mariadb-bin.000001",
        "minimal_row_metadata.000001",
        "mysql-enum-string-set.000001",
        "mysql_type_bit.000001",
        "rpl_cross_version_default_utf8mb4_collation.000001",
        "rpl_unfiltered_hidden_gcol.000001",
        "time_issue.000001",
        "transaction_compression.000001",
        "vector.binlog",
        "ver_trunk_row_v2.001",
    ] {
        let opts = DecoderOptions {
            skip_statements: true,
            ..DecoderOptions::default()
        };
        let check = round_trip(&[dir.join(name)], opts);
        changes += check.changes;
        kinds.extend(check.kinds);
    }
    eprintln!("fixtures: {changes} changes, kinds {kinds:?}");
    for kind in [
        "json",
        "vector",
        "bit",
        "enum",
        "set",
        "decimal",
        "timestamp",
        "time",
        "bytes",
    ] {
        assert!(kinds.contains(kind), "no {kind} value in the fixtures");
    }
}

/// Every column type of DESIGN.md's type table, from a real MariaDB.
#[test]
fn mariadb_type_workload() {
    let dir = std::env::temp_dir().join(format!("rh-gsdk-{}", std::process::id()));
    let script = root().join("tests/mariadb.sh");
    let _ = Command::new("bash").arg(&script).arg("stop").arg(&dir).status();
    let out = Command::new("bash")
        .arg(&script)
        .arg("start")
        .arg(&dir)
        .env("MARIADB_OWNER_PID", std::process::id().to_string())
        .output()
        .expect("run tests/mariadb.sh");
    assert!(
        out.status.success(),
        "MariaDB did not start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    struct Stop<'a>(&'a Path, &'a Path);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = Command::new("bash").arg(self.0).arg("stop").arg(self.1).status();
        }
    }
    let _stop = Stop(&script, &dir);
    let port = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let sql = std::fs::File::open(root().join("tests/sql/types.sql")).unwrap();
    let status = Command::new("mariadb")
        .args(["--no-defaults", "-h127.0.0.1", "-uroot", "--max-allowed-packet=1G"])
        .arg(format!("-P{port}"))
        .stdin(sql)
        .status()
        .expect("run the mariadb client");
    assert!(status.success(), "types.sql failed");
    let check = round_trip(&[dir.join("log/mysql-bin.000001")], DecoderOptions::default());
    eprintln!(
        "types.sql: {} changes, {} values, kinds {:?}",
        check.changes, check.values, check.kinds
    );
    for kind in [
        "null",
        "int",
        "uint",
        "float",
        "double",
        "decimal",
        "string",
        "bytes",
        "date",
        "datetime",
        "timestamp",
        "time",
        "enum",
        "set",
        "bit",
    ] {
        assert!(check.kinds.contains(kind), "no {kind} value in types.sql");
    }
}

#[path = "../abi/tests/support/vectors.rs"]
mod vectors;

/// The SDK against the test vectors of `rowhook-abi`: each valid vector's
/// `Change::to_json` is the row change JSON rowhook printed for it, and each
/// malformed one fails as `Error::Format`.
#[test]
fn abi_vectors() {
    let mut valid = 0;
    for (name, bytes, doc) in vectors::all() {
        let parsed = Change::parse(&bytes);
        if doc.get("error").is_some() {
            let failed = match parsed {
                Err(_) => true,
                Ok(c) => matches!(c.to_json(), Err(Error::Format(_))),
            };
            assert!(failed, "{name} was read");
            continue;
        }
        let change = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(change.to_json().unwrap(), doc["json"].as_str().unwrap(), "{name}");
        valid += 1;
    }
    assert!(valid > 0, "no vectors in {}", vectors::dir().display());
}
