//! The type-coverage workload (tests/sql/types.sql): edge values of every
//! column type, DDL mid-stream, multi-table and XA transactions, MyISAM, a
//! rollback and a 100,000-row transaction.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;

use crate::support::{Server, golden, json_lines, root, rowhook_ok};

/// The workload, run once on one server, decoded from the closed file.
struct Workload {
    server: Server,
    file_output: String,
}

fn workload() -> &'static Workload {
    static W: OnceLock<Workload> = OnceLock::new();
    W.get_or_init(|| {
        let server = Server::start(&[]);
        server.sql_file(&root().join("tests/sql/types.sql"));
        let file = server.binlog("mysql-bin.000001");
        let file_output = rowhook_ok(&["inspect", "--file", file.to_str().unwrap()]);
        Workload { server, file_output }
    })
}

const BIG_ROWS: usize = 100_000;

/// Everything but the 100k-row table, which is checked by shape.
fn without_big(output: &str) -> String {
    output
        .lines()
        .filter(|l| !l.contains(r#""table":"big""#))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn file_matches_golden() {
    let w = workload();
    golden("types.jsonl", &without_big(&w.file_output));
}

#[test]
fn live_stream_equals_file() {
    let w = workload();
    let n = w.file_output.lines().count().to_string();
    let live = rowhook_ok(&["inspect", "--url", &w.server.url(), "--limit", &n, "--server-id", "901"]);
    assert!(live == w.file_output, "live and file output differ");
}

#[test]
fn hundred_thousand_row_transaction() {
    let w = workload();
    let big: Vec<serde_json::Value> = json_lines(&w.file_output)
        .into_iter()
        .filter(|c| c["table"] == "big" && c["op"] == "insert")
        .collect();
    assert_eq!(big.len(), BIG_ROWS);
    let gtid = big[0]["gtid"].clone();
    for (i, c) in big.iter().enumerate() {
        assert_eq!(c["gtid"], gtid, "one transaction");
        assert_eq!(c["after"]["id"], (i + 1) as u64);
    }
    let ids: std::collections::HashSet<&str> = big.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), BIG_ROWS, "ids are unique");
}

/// Rolled-back work never reaches the binlog; an XA rolled back after its
/// PREPARE does, since its rows are logged at the PREPARE.
#[test]
fn rolled_back_rows_are_absent() {
    let w = workload();
    assert!(w.file_output.contains("COMMITTED_BEFORE_SAVEPOINT"));
    assert!(w.file_output.contains("XA_ROLLED_BACK_AFTER_PREPARE"));
    for line in w.file_output.lines() {
        let cleaned = line.replace("XA_ROLLED_BACK_AFTER_PREPARE", "");
        assert!(!cleaned.contains("ROLLED_BACK"), "rolled back row in output: {line}");
    }
}

#[test]
fn table_filter_keeps_only_named_tables() {
    let w = workload();
    let file = w.server.binlog("mysql-bin.000001");
    let out = rowhook_ok(&[
        "inspect",
        "--file",
        file.to_str().unwrap(),
        "--tables",
        "rh_types.ints,rh_types.enums",
    ]);
    let changes = json_lines(&out);
    assert!(!changes.is_empty());
    assert!(changes.iter().all(|c| c["table"] == "ints" || c["table"] == "enums"));
    let expected: Vec<&str> = w
        .file_output
        .lines()
        .filter(|l| l.contains(r#""table":"ints""#) || l.contains(r#""table":"enums""#))
        .collect();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        expected,
        "filtering changes neither ids nor values"
    );
    let count = rowhook_ok(&["inspect", "--file", file.to_str().unwrap(), "--format", "count"]);
    assert_eq!(count.trim(), w.file_output.lines().count().to_string());
}

/// `mariadb-binlog -v` is an independent decoder: the same binlog must give
/// the same row changes per table and operation, in the same order, with the
/// same first-column integer values.
#[test]
fn agrees_with_mysqlbinlog() {
    let w = workload();
    let file = w.server.binlog("mysql-bin.000001");
    let out = Command::new("mariadb-binlog")
        .args(["--no-defaults", "-v", "--base64-output=DECODE-ROWS"])
        .arg(&file)
        .output()
        .expect("run mariadb-binlog");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // (table, op, first column value if an integer)
    let mut theirs: Vec<(String, &str, Option<i64>)> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let (op, rest) = if let Some(r) = line.strip_prefix("### INSERT INTO ") {
            ("insert", r)
        } else if let Some(r) = line.strip_prefix("### UPDATE ") {
            ("update", r)
        } else if let Some(r) = line.strip_prefix("### DELETE FROM ") {
            ("delete", r)
        } else {
            continue;
        };
        let table = rest.rsplit('.').next().unwrap().trim_matches('`').to_string();
        // The first column of the first image: `###   @1=…`.
        let mut first = None;
        for l in lines.by_ref() {
            if let Some(v) = l.strip_prefix("###   @1=") {
                first = v.split_whitespace().next().and_then(|v| v.parse::<i64>().ok());
                break;
            }
        }
        theirs.push((table, op, first));
    }
    let ours: Vec<(String, &str, Option<i64>)> = json_lines(&w.file_output)
        .iter()
        .map(|c| {
            let image = if c["before"].is_null() {
                &c["after"]
            } else {
                &c["before"]
            };
            let first = image
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(|v| v.as_i64());
            let op = match c["op"].as_str().unwrap() {
                "insert" => "insert",
                "update" => "update",
                _ => "delete",
            };
            (c["table"].as_str().unwrap().to_string(), op, first)
        })
        .collect();
    assert_eq!(ours.len(), theirs.len(), "row change count differs from mariadb-binlog");
    let mut mismatches = BTreeMap::new();
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!((&a.0, a.1), (&b.0, b.1), "table/op order differs from mariadb-binlog");
        // mariadb-binlog prints unsigned BIGINT as signed and YEAR 0 as 1900;
        // compare only where both see a plain integer.
        if let (Some(x), Some(y)) = (a.2, b.2)
            && x != y
        {
            *mismatches.entry(a.0.clone()).or_insert(0) += 1;
        }
    }
    assert!(
        mismatches.is_empty(),
        "first-column values differ from mariadb-binlog in {mismatches:?}"
    );
}

/// The recorded shop binlog the README's first command reads.
#[test]
fn example_binlog_matches_golden() {
    let file = root().join("examples/binlog/shop-bin.000001");
    golden(
        "shop.jsonl",
        &rowhook_ok(&["inspect", "--file", file.to_str().unwrap()]),
    );
}

/// With MariaDB's binlog compression (`log_bin_compress`), rows and query
/// events are zlib-compressed: the same workload must give the same row
/// changes, only at other offsets.
#[test]
fn compressed_binlog_gives_the_same_changes() {
    let w = workload();
    let server = Server::start(&["--log-bin-compress=ON", "--log-bin-compress-min-len=10"]);
    server.sql_file(&root().join("tests/sql/types.sql"));
    let file = server.binlog("mysql-bin.000001");
    let out = rowhook_ok(&["inspect", "--file", file.to_str().unwrap()]);
    let strip_pos = |s: &str| -> Vec<serde_json::Value> {
        json_lines(s)
            .into_iter()
            .map(|mut c| {
                c.as_object_mut().unwrap().remove("pos");
                c
            })
            .collect()
    };
    let (ours, plain) = (strip_pos(&out), strip_pos(&w.file_output));
    assert_eq!(ours.len(), plain.len());
    for (a, b) in ours.iter().zip(&plain) {
        assert_eq!(a, b);
    }
    // Compression really happened: the file is smaller.
    let plain_len = std::fs::metadata(w.server.binlog("mysql-bin.000001")).unwrap().len();
    assert!(std::fs::metadata(&file).unwrap().len() < plain_len * 3 / 4);
}
