//! `breaker.while_suspended = "hold"`: a suspended handler's changes are
//! kept, in order, in the store, across a restart, and handed to it once a
//! trial succeeds (here, after a fixed version is hot-reloaded); without a
//! store, what is still held at the end goes to its `on_error`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{Server, build_guest, read, root, rowhook, rowhook_ok, spawn_run, temp_dir, wait_for};

/// The changes held for handler `name`, as the status file says.
fn held_in_status(dir: &Path, name: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(dir.join("state/status.json")) else {
        return 0;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return 0;
    };
    v["handlers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| h["name"] == name)
        .and_then(|h| h["held"].as_u64())
        .unwrap_or(0)
}

/// The `row` of each line of a file the counting handler wrote.
fn rows(path: &Path) -> Vec<u64> {
    read(path)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["row"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

fn stop(mut child: std::process::Child, log: &Path) {
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", read(log));
}

fn insert(server: &Server, rows: std::ops::RangeInclusive<u32>) {
    // One transaction per ten rows.
    let ids: Vec<u32> = rows.collect();
    let sql: Vec<String> = ids
        .chunks(10)
        .map(|c| {
            let values: Vec<String> = c.iter().map(|i| format!("({i})")).collect();
            format!("INSERT INTO noisy.news VALUES {};", values.join(","))
        })
        .collect();
    server.sql(&sql.join("\n"));
}

/// A handler that times out on every change is suspended, and its changes
/// are held, left in the binlog: none is dead-lettered, the position moves
/// on, and nothing is written for them. They survive a restart (which
/// tries the oldest first, and fails again); a fixed version, hot-reloaded,
/// gets every change exactly once, in binlog order, the held ones first,
/// read again from the server.
#[test]
fn held_changes_survive_a_restart_and_reach_the_fixed_handler_in_order() {
    held_across_a_restart(HoldIn::Binlog);
}

/// The same with `hold_in = "file"`: the held changes are copied into the
/// handler's held file, readable by rowhook's user only, and emptied once
/// handed over.
#[test]
fn held_changes_kept_in_the_held_file_survive_a_restart_and_reach_the_fixed_handler_in_order() {
    held_across_a_restart(HoldIn::File);
}

#[derive(PartialEq)]
enum HoldIn {
    Binlog,
    File,
}

fn held_across_a_restart(hold_in: HoldIn) {
    let hostile = build_guest(&root().join("tests/guests"), "hostile");
    let counting = build_guest(&root().join("tests/guests"), "counting");
    let server = Server::start(&[]);
    server.sql("CREATE DATABASE noisy; CREATE TABLE noisy.news (id INT PRIMARY KEY);");
    let dir = temp_dir(match hold_in {
        HoldIn::Binlog => "hold-restart",
        HoldIn::File => "hold-restart-file",
    });
    let hold_in_key = match hold_in {
        HoldIn::Binlog => "",
        HoldIn::File => ", hold_in = \"file\"",
    };
    // Left in the binlog, the first held change is in the first
    // transaction the stream gives: no commit before it says where it
    // starts.
    let start = match hold_in {
        HoldIn::Binlog => {
            let status = server.sql("SHOW MASTER STATUS");
            let mut fields = status.split_whitespace();
            let (file, pos) = (fields.next().unwrap(), fields.next().unwrap());
            format!("{{ file = \"{file}\", pos = {pos} }}")
        }
        HoldIn::File => "\"earliest\"".to_owned(),
    };
    let module = dir.join("flaky.wasm");
    std::fs::copy(&hostile, &module).unwrap();
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[source]
url = "{url}"
server_id = 7401
start = {start}

[state]
path = "state"
commit_interval_ms = 50

[sinks.calls]
kind = "file"
path = "calls.jsonl"

[sinks.dead]
kind = "file"
path = "dead.jsonl"

[[handlers]]
name = "flaky"
module = "flaky.wasm"
tables = ["noisy.news"]
sinks = ["calls"]
limits = {{ time_ms = 20 }}
on_error = "dead-letter"
dead_letter = "dead"
breaker = {{ failures = 1, window_ms = 60000, cooldown_ms = 300, while_suspended = "hold", hold_mb = 8{hold_in_key} }}
"#,
            url = server.url()
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let (calls, dead) = (dir.join("calls.jsonl"), dir.join("dead.jsonl"));

    // First run: 50 changes, all held.
    let log1 = dir.join("run1.log");
    let run = spawn_run(&config, &log1);
    insert(&server, 1..=50);
    wait_for("50 held changes", Duration::from_secs(60), || {
        held_in_status(&dir, "flaky") == 50
    });
    stop(run, &log1);
    let log = read(&log1);
    assert!(log.contains("handler suspended"), "{log}");
    assert!(
        read(&calls).is_empty() && read(&dead).is_empty(),
        "held, not handled: {log}"
    );
    let state = rowhook_ok(&["state", "-c", config_arg]);
    assert!(state.contains("held          default/flaky: 50 changes"), "{state}");
    // And where they wait.
    let place = match hold_in {
        HoldIn::Binlog => "              50 in the binlog from mysql-bin.000001:",
        HoldIn::File => "              50 in its held file\n",
    };
    assert!(state.contains(place), "{state}");
    assert!(!state.contains("position      none"), "the position moved on: {state}");
    let held_file = dir.join("state/held/default/flaky");
    match hold_in {
        // Nothing was copied: the binlog has them.
        HoldIn::Binlog => assert!(
            std::fs::metadata(&held_file).map_or(true, |m| m.len() == 0),
            "{held_file:?}"
        ),
        // They are in the handler's held file, readable by rowhook's user only.
        HoldIn::File => {
            let meta = std::fs::metadata(&held_file).unwrap();
            assert!(meta.len() > 50 * 100, "{}", meta.len());
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
                0o600
            );
        }
    }

    // Written while rowhook is down, then a restart with the same broken
    // handler: the oldest held change is its trial, and fails.
    insert(&server, 51..=60);
    let log2 = dir.join("run2.log");
    let run = spawn_run(&config, &log2);
    wait_for("the second run's trial", Duration::from_secs(60), || {
        read(&log2).contains("handler suspended") && held_in_status(&dir, "flaky") == 60
    });
    assert!(
        read(&log2).contains("50 changes held in an earlier run"),
        "{}",
        read(&log2)
    );
    insert(&server, 61..=70);
    wait_for("70 held changes", Duration::from_secs(60), || {
        held_in_status(&dir, "flaky") == 70
    });
    assert!(read(&calls).is_empty() && read(&dead).is_empty());

    // The fix: the next trial comes at once, succeeds, and the held
    // changes go first, then new ones.
    let tmp = dir.join("fixed.tmp");
    std::fs::copy(&counting, &tmp).unwrap();
    std::fs::rename(&tmp, &module).unwrap();
    wait_for("the held changes handed over", Duration::from_secs(60), || {
        rows(&calls).len() == 70
    });
    insert(&server, 71..=80);
    wait_for("the new changes", Duration::from_secs(60), || rows(&calls).len() == 80);
    wait_for("nothing held", Duration::from_secs(60), || {
        held_in_status(&dir, "flaky") == 0
    });
    stop(run, &log2);
    let log = read(&log2);
    assert_eq!(rows(&calls), (1..=80).collect::<Vec<_>>(), "{log}");
    assert!(read(&dead).is_empty(), "{}", read(&dead));
    assert!(log.contains("handler resumed"), "{log}");
    let state = rowhook_ok(&["state", "-c", config_arg]);
    assert!(!state.contains("held "), "{state}");
    assert_eq!(
        std::fs::metadata(&held_file).map_or(0, |m| m.len()),
        0,
        "emptied once the store recorded nothing held"
    );
    if hold_in == HoldIn::Binlog {
        assert!(!log.contains("cannot be read from the binlog"), "{log}");
    }
    // The handed-over changes' messages carry their changes' ids.
    for line in read(&calls).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["id"].as_str().unwrap().contains(':'), "{line}");
    }
}

/// Without a store (a replay without `--checkpoint`), held changes cannot
/// outlive the run: at its end each goes to the handler's `on_error`.
/// The change whose failure opened the breaker is held too.
#[test]
fn without_a_store_what_is_still_held_at_the_end_goes_to_on_error() {
    let hostile = build_guest(&root().join("tests/guests"), "hostile");
    let server = Server::start(&[]);
    server.sql(
        "CREATE DATABASE noisy; USE noisy; CREATE TABLE news (id INT PRIMARY KEY);
         INSERT INTO news SELECT seq FROM seq_1_to_40; FLUSH BINARY LOGS;",
    );
    let binlog = server.binlog("mysql-bin.000001");
    let dir = temp_dir("hold-replay");
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[sinks.dead]
kind = "file"
path = "dead.jsonl"

[[handlers]]
name = "flaky"
module = "{hostile}"
tables = ["noisy.news"]
limits = {{ time_ms = 20 }}
on_error = "dead-letter"
dead_letter = "dead"
breaker = {{ failures = 2, window_ms = 60000, cooldown_ms = 600000, while_suspended = "hold" }}
"#,
            hostile = hostile.display()
        ),
    )
    .unwrap();
    let out = rowhook(&["replay", "-c", config.to_str().unwrap(), binlog.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let letters: Vec<serde_json::Value> = read(&dir.join("dead.jsonl"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 40, "{stderr}");
    assert!(letters[0]["error"].as_str().unwrap().contains("time limit of 20 ms"));
    for (i, l) in letters[1..].iter().enumerate() {
        assert!(
            l["error"]
                .as_str()
                .unwrap()
                .contains("the run ended while the change was held"),
            "{l}"
        );
        assert_eq!(l["change"]["after"]["id"], i + 2, "in order, with the change: {l}");
    }
    assert!(
        stderr.contains("39 held changes went to the handler's on_error"),
        "{stderr}"
    );
}
