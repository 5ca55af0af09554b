//! The reader against every test vector of `vectors/` (SPEC.md, "Test
//! vectors"): valid vectors decode to their `expect`, malformed ones fail as
//! their `error` says. The malformed vectors are made here, from a small
//! change written with this crate's writer, and so is `snapshot-00`, since
//! no binlog holds a snapshot row; `ROWHOOK_BLESS=1` rewrites them. The
//! other valid ones come from rowhook (tests/e2e/abi_vectors.rs).

use std::collections::BTreeSet;

use rowhook_abi::write::{ChangeWriter, ColumnDirectory, Header};
use rowhook_abi::{Change, Column, Image, Op, Value, header};
use serde_json::{Value as Json, json};

mod support;
use support::vectors;

#[test]
fn valid_vectors_read_as_expected() {
    let mut tags = BTreeSet::new();
    let mut ops = BTreeSet::new();
    let mut count = 0;
    for (name, bytes, doc) in vectors::all() {
        if doc.get("error").is_some() {
            continue;
        }
        let change = Change::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = vectors::expect(&change).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(got, doc["expect"], "{name}");
        for image in ["before", "after"] {
            for v in doc["expect"][image].as_array().into_iter().flatten() {
                tags.insert(v["tag"].as_u64().unwrap());
            }
        }
        ops.insert(change.op().as_str());
        // Every prefix of a valid buffer fails cleanly or reads (no panic).
        for n in 0..bytes.len() {
            if let Ok(c) = Change::parse(&bytes[..n]) {
                let _ = vectors::expect(&c);
            }
        }
        count += 1;
    }
    assert!(count >= 20, "only {count} valid vectors");
    assert_eq!(ops.len(), 4, "every op");
    let all_tags: BTreeSet<u64> = (0..=17).collect();
    assert_eq!(tags, all_tags, "every tag");
}

#[test]
fn malformed_vectors_are_rejected() {
    let mut count = 0;
    for (name, bytes, doc) in vectors::all() {
        let Some(error) = doc.get("error") else { continue };
        let got = match &doc["at"] {
            Json::String(s) if s == "parse" => Change::parse(&bytes).err(),
            at => {
                let change = Change::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e} at parse"));
                let image = match at["image"].as_str() {
                    Some("before") => Image::Before,
                    Some("after") => Image::After,
                    other => panic!("{name}: image {other:?}"),
                };
                let column = at["column"].as_u64().unwrap() as usize;
                change.image(image).unwrap().value_at(column).err()
            }
        };
        let got = got.unwrap_or_else(|| panic!("{name} was read"));
        assert_eq!(vectors::error_name(&got), error, "{name}: {got}");
        count += 1;
    }
    assert_eq!(count, malformed().len());
}

/// The change the malformed vectors break: an update of three columns.
fn base() -> Vec<u8> {
    let columns = [
        ("id", 3, true, false),
        ("name", 15, false, true),
        ("data", 252, false, true),
    ]
    .map(|(name, type_code, primary_key, nullable)| Column {
        name,
        type_code,
        primary_key,
        nullable,
    });
    let directory = ColumnDirectory::new(columns).unwrap();
    let head = Header {
        op: Op::Update,
        before: true,
        after: true,
        db: "shop",
        table: "items",
        ts: 1_700_000_000,
        ..Header::default()
    };
    let mut out = Vec::new();
    let mut w = ChangeWriter::new(&mut out, &head, &directory).unwrap();
    for (image, name) in [(Image::Before, "old"), (Image::After, "new")] {
        w.value(image, 0, Some(Value::Int(1))).unwrap();
        w.value(image, 1, Some(Value::String(name))).unwrap();
        w.value(image, 2, Some(Value::Bytes(&[0, 1, 2]))).unwrap();
    }
    w.finish().unwrap();
    out
}

fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

/// Each malformed vector: name, description, bytes, error, where.
fn malformed() -> Vec<(&'static str, &'static str, Vec<u8>, &'static str, Json)> {
    let b = base();
    let parse = || json!("parse");
    let value = |image: &str, column: usize| json!({"image": image, "column": column});
    let n = 3;
    let before = rowhook_abi::HEADER_LEN + n * rowhook_abi::COLUMN_ENTRY_LEN;
    let after = before + n * rowhook_abi::VALUE_ENTRY_LEN;
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut x = b.clone();
        f(&mut x);
        x
    };
    vec![
        (
            "header-truncated",
            "shorter than the header",
            b[..40].to_vec(),
            "truncated",
            parse(),
        ),
        (
            "index-truncated",
            "the header is whole, the value entries are not",
            b[..after + 4].to_vec(),
            "truncated",
            parse(),
        ),
        ("empty", "no bytes at all", Vec::new(), "truncated", parse()),
        ("magic", "not RHC", with(&|x| x[0] = b'X'), "magic", parse()),
        (
            "version",
            "version 2, unknown to a version 1 reader",
            with(&|x| x[3] = 2),
            "magic",
            parse(),
        ),
        ("op", "op 9", with(&|x| x[header::OP] = 9), "op", parse()),
        (
            "id-span",
            "the id's offset is past the end",
            with(&|x| set_u32(x, header::ID, u32::MAX)),
            "span",
            parse(),
        ),
        (
            "table-span-overflow",
            "offset + length of the table name overflows 32 bits",
            with(&|x| {
                set_u32(x, header::TABLE, 0xFFFF_FFF0);
                set_u32(x, header::TABLE + 4, 0x20);
            }),
            "span",
            parse(),
        ),
        (
            "txn-length",
            "the transaction part is longer than the id",
            with(&|x| set_u32(x, header::TXN_LEN, 1000)),
            "span",
            parse(),
        ),
        (
            "db-utf8",
            "the db name is not UTF-8",
            with(&|x| {
                let at = u32_at(x, header::DB);
                x[at] = 0xFF;
            }),
            "utf8",
            parse(),
        ),
        (
            "value-tag",
            "tag 18 in the first before value",
            with(&|x| x[before] = 18),
            "tag",
            value("before", 0),
        ),
        (
            "value-span",
            "the after value of `name` points past the end",
            with(&|x| set_u32(x, after + rowhook_abi::VALUE_ENTRY_LEN + 1, u32::MAX - 2)),
            "span",
            value("after", 1),
        ),
        (
            "value-utf8",
            "the after value of `name` is not UTF-8",
            with(&|x| {
                let at = u32_at(x, after + rowhook_abi::VALUE_ENTRY_LEN + 1);
                x[at] = 0xC3;
            }),
            "utf8",
            value("after", 1),
        ),
    ]
}

/// `snapshot-00`: a row of `shop.orders` as a snapshot of the table read
/// it, the first row of its first chunk, once the stream had read the shop
/// binlog to its end. Its `json` is the row change JSON every reader must
/// rebuild from it.
fn snapshot() -> (Vec<u8>, Json) {
    let columns = [
        ("id", 8, true),
        ("user_id", 3, false),
        ("amount", 246, false),
        ("currency", 254, false),
        ("status", 254, false),
        ("created_at", 17, false),
    ]
    .map(|(name, type_code, primary_key)| Column {
        name,
        type_code,
        primary_key,
        nullable: false,
    });
    let directory = ColumnDirectory::new(columns).unwrap();
    let head = Header {
        op: Op::Snapshot,
        before: false,
        after: true,
        has_names: true,
        ts: 1_763_719_200,
        event_index: 0,
        row_index: 0,
        txn: "snapshot:shop.orders",
        gtid: None,
        file: "shop-bin.000001",
        pos: 8045,
        db: "shop",
        table: "orders",
    };
    let values = [
        Value::UInt(1001),
        Value::UInt(1),
        Value::Decimal("12.50"),
        Value::String("EUR"),
        Value::Enum("paid"),
        Value::Timestamp("2025-11-21T08:05:00.250Z"),
    ];
    let mut out = Vec::new();
    let mut w = ChangeWriter::new(&mut out, &head, &directory).unwrap();
    for (i, v) in values.into_iter().enumerate() {
        w.value(Image::After, i, Some(v)).unwrap();
    }
    w.finish().unwrap();
    let id = "snapshot:shop.orders:0:0";
    let line = json!({
        "id": id,
        "op": "snapshot",
        "db": "shop",
        "table": "orders",
        "ts": 1_763_719_200,
        "gtid": null,
        "file": "shop-bin.000001",
        "pos": 8045,
        "before": null,
        "after": {
            "id": 1001,
            "user_id": 1,
            "amount": "12.50",
            "currency": "EUR",
            "status": "paid",
            "created_at": "2025-11-21T08:05:00.250Z",
        },
    });
    let change = Change::parse(&out).unwrap();
    let doc = json!({
        "source": {"snapshot": "shop.orders", "change": id},
        "json": line.to_string(),
        "expect": vectors::expect(&change).unwrap(),
    });
    (out, doc)
}

/// The vectors this file writes, with their JSON.
fn written() -> Vec<(String, Vec<u8>, Json)> {
    let mut all: Vec<_> = malformed()
        .into_iter()
        .map(|(name, description, bytes, error, at)| {
            let doc = json!({"description": description, "error": error, "at": at});
            (format!("malformed-{name}"), bytes, doc)
        })
        .collect();
    let (bytes, doc) = snapshot();
    all.push(("snapshot-00".to_owned(), bytes, doc));
    all
}

#[test]
fn written_vectors_are_up_to_date() {
    for (name, bytes, doc) in written() {
        if vectors::bless() {
            vectors::write(&name, &bytes, &doc);
            continue;
        }
        let (_, got, got_doc) = vectors::all()
            .into_iter()
            .find(|(n, ..)| *n == name)
            .unwrap_or_else(|| panic!("vector {name} missing; run with ROWHOOK_BLESS=1"));
        assert!(
            got == bytes && got_doc == doc,
            "{name} differs; run with ROWHOOK_BLESS=1"
        );
    }
}
