//! Bad input gets a clear error that names the problem and its fix, never a
//! panic, and never shows a password.

use crate::support::{Server, json_lines, rowhook, rowhook_ok};

const SECRET: &str = "s3cret-Pa55word";

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_clean_failure(out: &std::process::Output, must_contain: &[&str]) {
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(out));
    assert!(!out.status.success(), "expected failure, got success: {all}");
    assert!(!all.contains("panicked"), "panic: {all}");
    assert!(!all.contains(SECRET), "password leaked: {all}");
    for m in must_contain {
        assert!(all.contains(m), "output lacks `{m}`: {all}");
    }
}

#[test]
fn credentials_and_grants() {
    let server = Server::start(&[]);
    server.sql(&format!(
        "CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY '{SECRET}';
         GRANT SELECT ON *.* TO 'app'@'127.0.0.1';
         CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY '{SECRET}';
         GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'repl'@'127.0.0.1';"
    ));
    let port = server.port;

    // Wrong password.
    let url = format!("mysql://repl:wrong-{SECRET}@127.0.0.1:{port}");
    let out = rowhook(&["inspect", "--url", &url, "--limit", "1"]);
    assert_clean_failure(&out, &["cannot log in", "password"]);
    let out = rowhook(&["check", "--url", &url]);
    assert_clean_failure(&out, &["FAIL", "access denied"]);

    // Right password, no replication grants.
    let url = format!("mysql://app:{SECRET}@127.0.0.1:{port}");
    let out = rowhook(&["inspect", "--url", &url, "--limit", "1"]);
    assert_clean_failure(
        &out,
        &[
            "REPLICATION SLAVE",
            "GRANT REPLICATION SLAVE ON *.* TO 'app'@'127.0.0.1'",
        ],
    );
    let out = rowhook(&["check", "--url", &url]);
    assert_clean_failure(&out, &["FAIL", "GRANT REPLICATION CLIENT ON *.* TO 'app'@'127.0.0.1'"]);

    // A proper replication user passes every check and streams.
    let url = format!("mysql://repl:{SECRET}@127.0.0.1:{port}");
    let report = rowhook_ok(&["check", "--url", &url, "--server-id", "903"]);
    assert!(!report.contains("FAIL") && !report.contains(SECRET), "{report}");
    server.sql("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY); INSERT INTO d.t VALUES (1);");
    let out = rowhook_ok(&["inspect", "--url", &url, "--limit", "1", "--server-id", "903"]);
    assert_eq!(json_lines(&out)[0]["after"]["id"], 1);

    // The source's own server id (1) is refused.
    let out = rowhook(&["check", "--url", &url, "--server-id", "1"]);
    assert_clean_failure(&out, &["server_id 1 is the source server's own id"]);

    // Nothing listening.
    let out = rowhook(&[
        "inspect",
        "--url",
        &format!("mysql://repl:{SECRET}@127.0.0.1:1"),
        "--limit",
        "1",
    ]);
    assert_clean_failure(&out, &["cannot reach"]);
}

#[test]
fn statement_format_is_named_with_its_fix() {
    let server = Server::start(&[]);
    server.sql("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, v INT); INSERT INTO d.t VALUES (1, 1);");
    server.sql("SET GLOBAL binlog_format = 'STATEMENT';");
    // A new session picks up the global format.
    server.sql("INSERT INTO d.t VALUES (2, 2); FLUSH BINARY LOGS;");

    let out = rowhook(&["check", "--url", &server.url(), "--server-id", "904"]);
    assert_clean_failure(
        &out,
        &["binlog_format is STATEMENT", "SET GLOBAL binlog_format = 'ROW'"],
    );
    let out = rowhook(&["inspect", "--url", &server.url(), "--limit", "1", "--server-id", "904"]);
    assert_clean_failure(&out, &["SET GLOBAL binlog_format = 'ROW'"]);

    let file = server.binlog("mysql-bin.000001");
    let out = rowhook(&["inspect", "--file", file.to_str().unwrap()]);
    assert_clean_failure(&out, &["statement-based change", "binlog_format = 'ROW'"]);
    // The row before the statement was printed; the statement is only skipped on request.
    assert_eq!(json_lines(&String::from_utf8_lossy(&out.stdout)).len(), 1);
    let out = rowhook(&["inspect", "--file", file.to_str().unwrap(), "--skip-statements"]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("statement-based change skipped"));
}

#[test]
fn minimal_metadata_is_refused_unless_allowed() {
    let server = Server::start(&[]);
    server.sql(
        "SET GLOBAL binlog_row_metadata = 'MINIMAL'; FLUSH BINARY LOGS;
         CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, name VARCHAR(10));",
    );
    server.sql("INSERT INTO d.t VALUES (1, 'one'); FLUSH BINARY LOGS;");

    let out = rowhook(&["check", "--url", &server.url(), "--server-id", "905"]);
    assert_clean_failure(
        &out,
        &[
            "binlog_row_metadata is MINIMAL",
            "SET GLOBAL binlog_row_metadata = 'FULL'",
        ],
    );
    let out = rowhook(&["inspect", "--url", &server.url(), "--limit", "1", "--server-id", "905"]);
    assert_clean_failure(&out, &["binlog_row_metadata", "--allow-minimal-metadata"]);

    let file = server.binlog("mysql-bin.000002");
    let out = rowhook(&["inspect", "--file", file.to_str().unwrap()]);
    assert_clean_failure(
        &out,
        &["has no column names", "SET GLOBAL binlog_row_metadata = 'FULL'"],
    );
    let out = rowhook_ok(&["inspect", "--file", file.to_str().unwrap(), "--allow-minimal-metadata"]);
    assert_eq!(json_lines(&out)[0]["after"], serde_json::json!({"@1": 1, "@2": "one"}));

    // Live, names come from information_schema, with a warning.
    let out = rowhook(&[
        "inspect",
        "--url",
        &server.url(),
        "--start",
        "mysql-bin.000002:4",
        "--limit",
        "1",
        "--allow-minimal-metadata",
        "--server-id",
        "905",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        json_lines(&String::from_utf8_lossy(&out.stdout))[0]["after"],
        serde_json::json!({"id": 1, "name": "one"})
    );
    assert!(stderr(&out).contains("information_schema"));
}

#[test]
fn truncated_and_random_files() {
    let server = Server::start(&[]);
    server.sql("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, pad VARCHAR(200));");
    let mut sql = String::new();
    for i in 0..20 {
        sql.push_str(&format!("INSERT INTO d.t VALUES ({i}, REPEAT('x', 150));\n"));
    }
    server.sql(&(sql + "FLUSH BINARY LOGS;"));
    let whole = std::fs::read(server.binlog("mysql-bin.000001")).unwrap();
    let full = rowhook_ok(&["inspect", "--file", server.binlog("mysql-bin.000001").to_str().unwrap()]);
    assert_eq!(full.lines().count(), 20);

    let dir = server.dir.join("cut");
    std::fs::create_dir_all(&dir).unwrap();
    // Cut at many points: every prefix gives the rows of whole events before
    // the cut, a warning, and success.
    let mut last = 0;
    for cut in (4..whole.len()).step_by(97) {
        let path = dir.join("mysql-bin.000001");
        std::fs::write(&path, &whole[..cut]).unwrap();
        let out = rowhook(&["inspect", "--file", path.to_str().unwrap()]);
        assert!(out.status.success(), "cut at {cut}: {}", stderr(&out));
        let n = String::from_utf8_lossy(&out.stdout).lines().count();
        assert!(n >= last && n <= 20, "cut at {cut} gave {n} rows");
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(full.starts_with(&*printed), "cut at {cut} changed the rows before it");
        last = n;
    }

    // Random bytes after a valid magic, and a file that is no binlog.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..20 {
        let mut bytes = vec![0xfe, b'b', b'i', b'n'];
        for _ in 0..(round * 500 + 100) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.push(state as u8);
        }
        let path = dir.join("random.bin");
        std::fs::write(&path, &bytes).unwrap();
        let out = rowhook(&["inspect", "--file", path.to_str().unwrap()]);
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(!all.contains("panicked"), "panic on random bytes: {all}");
    }
    let path = dir.join("not-a-binlog");
    std::fs::write(&path, b"hello").unwrap();
    assert_clean_failure(
        &rowhook(&["inspect", "--file", path.to_str().unwrap()]),
        &["not a binlog file"],
    );

    // A flipped byte inside an event is caught by its checksum, with the offset.
    let mut bad = whole.clone();
    let at = whole.len() / 2;
    bad[at] ^= 0xff;
    let path = dir.join("mysql-bin.000009");
    std::fs::write(&path, &bad).unwrap();
    assert_clean_failure(
        &rowhook(&["inspect", "--file", path.to_str().unwrap()]),
        &["checksum mismatch", "mysql-bin.000009:"],
    );
}

#[test]
fn forty_megabyte_rows_pass_the_live_stream() {
    let server = Server::start(&[]);
    server.sql("CREATE DATABASE d; CREATE TABLE d.blobs (id INT PRIMARY KEY, b LONGBLOB);");
    server.sql(
        "INSERT INTO d.blobs VALUES (1, REPEAT('ab', 20 * 1024 * 1024)); INSERT INTO d.blobs VALUES (2, 'small');",
    );
    let out = rowhook_ok(&[
        "inspect",
        "--url",
        &server.url(),
        "--limit",
        "2",
        "--tables",
        "d.blobs",
        "--server-id",
        "906",
    ]);
    let changes = json_lines(&out);
    assert_eq!(changes.len(), 2);
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD
        .decode(changes[0]["after"]["b"].as_str().unwrap())
        .unwrap();
    assert_eq!(b.len(), 40 * 1024 * 1024);
    assert!(b.chunks(2).all(|c| c == b"ab"));
    assert_eq!(changes[1]["after"]["id"], 2);
}

/// A stalled server (SIGSTOP) sends no heartbeats: the connection is declared
/// dead after three missed periods instead of hanging forever.
#[test]
fn missed_heartbeats_end_the_stream() {
    let server = Server::start(&[]);
    server.sql("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY); INSERT INTO d.t VALUES (1);");
    let pid = std::fs::read_to_string(server.dir.join("pid"))
        .unwrap()
        .trim()
        .to_string();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rowhook"))
        .args([
            "inspect",
            "--url",
            &server.url(),
            "--heartbeat",
            "0.5",
            "--server-id",
            "907",
            "--max-reconnect-attempts",
            "0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let it connect and read the row, then freeze the server.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let stop = |sig: &str| std::process::Command::new("kill").args([sig, &pid]).status().unwrap();
    stop("-STOP");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    stop("-CONT");
    let Some(status) = status else {
        let _ = child.kill();
        panic!("rowhook did not notice the stalled server within 20 s");
    };
    let out = child.wait_with_output().unwrap();
    assert!(!status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no event or heartbeat"), "{err}");
    assert_eq!(json_lines(&String::from_utf8_lossy(&out.stdout)).len(), 1);
}

/// `--follow` waits at the end of a file that is still being written.
#[test]
fn follow_waits_for_the_rest_of_a_file() {
    let server = Server::start(&[]);
    server.sql("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY);");
    let mut sql = String::new();
    for i in 0..50 {
        sql.push_str(&format!("INSERT INTO d.t VALUES ({i});\n"));
    }
    server.sql(&(sql + "FLUSH BINARY LOGS;"));
    let whole = std::fs::read(server.binlog("mysql-bin.000001")).unwrap();
    let dir = server.dir.join("follow");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mysql-bin.000001");
    std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_rowhook"))
        .args(["inspect", "--follow", "--limit", "50", "--file", path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    std::fs::write(&path, &whole).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ids: Vec<i64> = json_lines(&String::from_utf8_lossy(&out.stdout))
        .iter()
        .map(|c| c["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (0..50).collect::<Vec<_>>());
}

/// The recorded shop binlog with the column types of the first TABLE_MAP of
/// `table` made unknown to the decoder (its checksum recomputed): the rows
/// that follow it cannot be decoded; those of every other table and of the
/// next transactions of `table` can. Returns the file and the offset of the
/// first rows event after that TABLE_MAP.
fn binlog_with_unplannable_table(dir: &std::path::Path, table: &str) -> (std::path::PathBuf, u64) {
    let mut b = std::fs::read(crate::support::root().join("examples/binlog/shop-bin.000001")).unwrap();
    let mut pos = 4;
    let mut patched = false;
    while pos + 19 <= b.len() {
        let size = u32::from_le_bytes(b[pos + 9..pos + 13].try_into().unwrap()) as usize;
        let (type_code, ev) = (b[pos + 4], pos..pos + size);
        if patched && matches!(type_code, 23 | 30) {
            let out = dir.join("shop-bin.000001");
            std::fs::write(&out, &b).unwrap();
            return (out, pos as u64);
        }
        if type_code == 19 && !patched {
            let body = &b[pos + 19..pos + size - 4];
            let dl = usize::from(body[8]);
            let tl = usize::from(body[8 + dl + 2]);
            let name = &body[8 + dl + 3..8 + dl + 3 + tl];
            if name == table.as_bytes() {
                let stored = u32::from_le_bytes(b[ev.end - 4..ev.end].try_into().unwrap());
                assert_eq!(
                    crc32fast::hash(&b[ev.start..ev.end - 4]),
                    stored,
                    "the file has CRC32 checksums"
                );
                // The column count (one byte here), then the type codes: make
                // the second column's type one no server writes.
                let types = pos + 19 + 8 + dl + 3 + tl + 1 + 1;
                b[types + 1] = 200;
                let crc = crc32fast::hash(&b[ev.start..ev.end - 4]);
                b[ev.end - 4..ev.end].copy_from_slice(&crc.to_le_bytes());
                patched = true;
            }
        }
        pos += size;
    }
    panic!("no TABLE_MAP of {table} followed by rows");
}

/// Rows the decoder cannot decode halt `inspect` with the table, column and
/// position named and the way on; with `--on-error skip` they are logged and
/// every other row still comes out, exactly.
#[test]
fn undecodable_rows_halt_or_are_skipped_in_inspect() {
    let dir = crate::support::temp_dir("undecodable-inspect");
    let (file, pos) = binlog_with_unplannable_table(&dir, "orders");
    let path = file.to_str().unwrap();
    let out = rowhook(&["inspect", "--file", path]);
    let at = format!("shop-bin.000001:{pos}");
    assert_clean_failure(
        &out,
        &[
            "`shop`.`orders`",
            &at,
            "column `@2`",
            "unsupported column type 200",
            "--on-error skip",
        ],
    );
    // What came before the bad rows was printed.
    let golden = std::fs::read_to_string(crate::support::root().join("tests/golden/shop.jsonl")).unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!printed.is_empty() && golden.starts_with(&printed), "{printed}");

    let out = rowhook(&["inspect", "--file", path, "--on-error", "skip"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let skipped: Vec<&str> = golden
        .lines()
        .filter(|l| l.contains(&format!("\"pos\":{pos},")))
        .collect();
    assert!(!skipped.is_empty());
    assert!(skipped.iter().all(|l| l.contains("\"table\":\"orders\"")));
    let expected: Vec<&str> = golden.lines().filter(|l| !skipped.contains(l)).collect();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().collect::<Vec<_>>(),
        expected
    );
    let log = stderr(&out);
    assert_eq!(log.matches("passed over (--on-error skip)").count(), 1, "{log}");
    assert!(log.contains(&at) && log.contains("column `@2`"), "{log}");
}

/// In `replay` (and `run`), undecodable rows are a failure of every handler
/// subscribed to them: each one's `on_error` applies, as for a trap.
#[test]
fn undecodable_rows_follow_each_handlers_on_error() {
    let dir = crate::support::temp_dir("undecodable-replay");
    let (file, pos) = binlog_with_unplannable_table(&dir, "orders");
    let minimal = crate::support::build_guest(&crate::support::root().join("guest-sdk/examples/minimal"), "minimal");
    let config = |on_error: &str| {
        let config = dir.join(format!("{on_error}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"
[sinks.orders_queue]
kind = "file"
path = "{on_error}.jsonl"

[sinks.dead]
kind = "file"
path = "{on_error}-dead.jsonl"

[[handlers]]
name = "orders"
module = "{}"
tables = ["shop.orders"]
ops = ["insert"]
sinks = ["orders_queue"]
on_error = "{on_error}"
{}
"#,
                minimal.display(),
                if on_error == "dead-letter" {
                    "dead_letter = \"dead\""
                } else {
                    ""
                }
            ),
        )
        .unwrap();
        config
    };
    let replay = |on_error: &str| {
        rowhook(&[
            "replay",
            "-c",
            config(on_error).to_str().unwrap(),
            file.to_str().unwrap(),
        ])
    };

    let out = replay("halt");
    assert_clean_failure(
        &out,
        &[
            "handler `orders` failed",
            "`shop`.`orders`",
            "column `@2`",
            "on_error = \"halt\"",
        ],
    );

    // The first orders insert is in the bad transaction; the next two are not.
    let out = replay("skip");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(dir.join("skip.jsonl")).unwrap(),
        "{\"order\":1002}\n{\"order\":1003}\n"
    );
    assert!(
        stderr(&out).contains("event skipped (on_error = \"skip\")"),
        "{}",
        stderr(&out)
    );

    let out = replay("dead-letter");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(dir.join("dead-letter.jsonl")).unwrap(),
        "{\"order\":1002}\n{\"order\":1003}\n"
    );
    let dead = std::fs::read_to_string(dir.join("dead-letter-dead.jsonl")).unwrap();
    let dead: Vec<serde_json::Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["handler"], "orders");
    assert_eq!(dead[0]["change"]["table"], "orders");
    assert_eq!(dead[0]["change"]["pos"], pos);
    assert_eq!(dead[0]["change"]["after"], serde_json::Value::Null);
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap()
            .contains("unsupported column type 200"),
        "{dead:?}"
    );
}

/// A report read by a reader that goes away (`rowhook check | head -1`)
/// ends quietly with status 141, as a Unix tool killed by SIGPIPE does,
/// not with a panic; a stdout that cannot be written (a full disk) is an
/// error that says so.
#[test]
fn a_report_whose_reader_went_away_ends_quietly() {
    use std::process::{Command, Stdio};
    let config = crate::support::root().join("examples/minimal.toml");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_rowhook"))
        .args(["check", "-c", config.to_str().unwrap()])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let full = std::fs::File::options().write(true).open("/dev/full").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rowhook"))
        .args(["check", "-c", config.to_str().unwrap()])
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_clean_failure(&out, &["rowhook: writing to stdout: No space left on device"]);
}
