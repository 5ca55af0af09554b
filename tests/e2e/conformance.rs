//! MySQL's binlog formats, from the files MySQL 5.0–9.6 wrote in
//! ../shared/fixtures/mysql-binlogs (no MySQL server runs here). Expected
//! values come from the SQL and server versions the files were made with
//! (see that folder's README), not from rowhook's own output; the golden
//! files guard everything else against regressions.

use std::path::PathBuf;

use crate::support::{golden, json_lines, root, rowhook};

fn fixture(name: &str) -> PathBuf {
    root().join("../shared/fixtures/mysql-binlogs").join(name)
}

fn inspect(name: &str, extra: &[&str]) -> (bool, String, String) {
    let path = fixture(name);
    assert!(
        path.exists(),
        "fixture {} missing: ../shared must be beside the repository",
        path.display()
    );
    let mut args = vec!["inspect", "--file", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = rowhook(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), stderr)
}

/// Every readable fixture decodes, and its output is stable.
#[test]
fn every_fixture_decodes_as_golden() {
    let lenient = ["--allow-minimal-metadata", "--skip-statements"];
    for name in [
        "binlog-invisible-columns.000001",
        "binlog_transaction_previous_GTID_no_tag.000001",
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
        let (ok, out, err) = inspect(name, &lenient);
        assert!(ok, "{name}: {err}");
        golden(&format!("mysql/{name}.jsonl"), &out);
    }
}

#[test]
fn tagged_gtid_mysql_9_6() {
    let (ok, out, _) = inspect("binlog_transaction_with_GTID_TAG.000001", &["--allow-minimal-metadata"]);
    assert!(ok);
    let c = &json_lines(&out)[0];
    // PREVIOUS_GTIDS holds uuid:mytag:1-2, so this transaction is mytag:3.
    assert_eq!(c["gtid"], "55778904-0299-11f1-b1b8-4ef0c4956feb:mytag:3");
    assert_eq!(c["id"], "55778904-0299-11f1-b1b8-4ef0c4956feb:mytag:3:0:0");
    assert_eq!(c["after"]["@3"], "250.00");
}

#[test]
fn vector_columns_mysql_9() {
    let (ok, out, _) = inspect("vector.binlog", &[]);
    assert!(ok);
    let rows = json_lines(&out);
    let two = rows
        .iter()
        .find(|c| c["table"] == "bar" && c["op"] == "insert" && c["after"]["id"] == 2)
        .unwrap();
    assert_eq!(two["after"]["vector_column"], serde_json::json!([1.01, -1.01]));
    assert_eq!(
        two["after"]["vector_column2"],
        serde_json::json!([42.0, 43.0, 44.0, 45.0])
    );
}

#[test]
fn negative_time_and_minimal_row_image() {
    let (ok, out, _) = inspect("time_issue.000001", &["--allow-minimal-metadata"]);
    assert!(ok);
    assert_eq!(json_lines(&out)[0]["after"]["@1"], "-507:48:27");
    // MINIMAL row image: only the columns in the event appear.
    let (ok, out, _) = inspect("minimal_row_metadata.000001", &["--allow-minimal-metadata"]);
    assert!(ok);
    let keys: Vec<String> = json_lines(&out)[0]["after"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, ["@1", "@3", "@5"]);
}

#[test]
fn enum_set_and_bit_labels() {
    let (ok, out, _) = inspect("mysql-enum-string-set.000001", &[]);
    assert!(ok);
    let rows = json_lines(&out);
    let deleted = &rows.last().unwrap()["before"];
    assert_eq!(deleted["f1"], "field1");
    assert_eq!(deleted["f3"], "variant2");
    assert_eq!(deleted["f4"], "two,four");
    let (ok, out, _) = inspect("mysql_type_bit.000001", &[]);
    assert!(ok);
    assert_eq!(
        json_lines(&out)[0]["after"],
        serde_json::json!({"a": 4, "b": "foo", "c": 32})
    );
}

#[test]
fn compressed_transaction_and_partial_json() {
    let (ok, out, _) = inspect("transaction_compression.000001", &["--allow-minimal-metadata"]);
    assert!(ok);
    let c = &json_lines(&out)[0];
    assert_eq!(c["after"]["@1"], 1);
    assert_eq!(
        c["pos"], 274,
        "rows inside a TRANSACTION_PAYLOAD carry the payload's position"
    );
    let (ok, out, _) = inspect("json.binlog.000001", &["--allow-minimal-metadata"]);
    assert!(ok);
    let rows = json_lines(&out);
    let partial = rows.last().unwrap();
    assert_eq!(
        partial["after"]["@2"],
        serde_json::json!({"$json_diff": [{"op": "replace", "path": "$.age", "value": 42}]})
    );
}

#[test]
fn broken_files_are_clean_errors() {
    // Ends inside an event: the end, with a warning.
    let (ok, _, err) = inspect("binlog_truncated_event.000001", &[]);
    assert!(ok, "{err}");
    assert!(err.contains("ends inside an event"), "{err}");
    // A corrupt MySQL 5.0 relay log and a truncated PREVIOUS_GTIDS: typed errors naming the offset.
    let (ok, _, err) = inspect("corrupt-relay-bin.000624", &["--skip-statements"]);
    assert!(!ok && err.contains(':'), "{err}");
    let (ok, _, err) = inspect("binlog_truncated_prev_gtid_event.000001", &[]);
    assert!(!ok || err.contains("ends inside an event"), "{err}");
    // Statement-based files are refused by default, with the fix.
    let (ok, _, err) = inspect("binlog_transaction_with_GTID.000001", &[]);
    assert!(!ok && err.contains("binlog_format = 'ROW'"), "{err}");
}
