//! Stopping `rowhook run` while a handler call runs. The handler loops with
//! a time limit of a minute, inside a transaction whose one rows event
//! holds a thousand rows: SIGTERM, and SIGINT, end the process within a
//! second, no further handler is called for the rest of the rows, no
//! `on_error` applies (the handler did not fail), and the transaction is
//! neither acknowledged nor lost: the checkpoint stays before it, and the
//! next run handles it again, whole.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Server, build_guest, interrupt, root, rowhook_ok, spawn_run, temp_dir, wait_for, wait_until};

/// How long a stop may take, from the signal to the exit: the second the
/// requirement allows, plus room for a busy machine.
const STOP_WITHIN: Duration = Duration::from_millis(1500);
/// Rows of the spinning table in the interrupted transaction.
const SPIN_ROWS: usize = 1000;

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The counting handler on every `halt` table and, if given, the sleeper
/// on `halt.<table>` with a time limit of a minute and dead letters.
fn config(dir: &Path, server: &Server, sleeper_on: Option<&str>) -> PathBuf {
    let guests = root().join("tests/guests");
    let counting = build_guest(&guests, "counting");
    let mut text = format!(
        r#"
[source]
url = "{url}"
server_id = 7460
start = "earliest"
heartbeat_secs = 1

[state]
path = "state"

[sinks.calls]
kind = "file"
path = "calls.jsonl"

[sinks.dead]
kind = "file"
path = "dead.jsonl"

[[handlers]]
name = "counting"
module = "{counting}"
tables = ["halt.*"]
sinks = ["calls"]
"#,
        url = server.url(),
        counting = counting.display()
    );
    if let Some(table) = sleeper_on {
        let sleeper = build_guest(&guests, "sleeper");
        text.push_str(&format!(
            r#"
[[handlers]]
name = "sleeper"
module = "{sleeper}"
tables = ["halt.{table}"]
sinks = ["calls"]
limits = {{ time_ms = 60000 }}
on_error = "dead-letter"
dead_letter = "dead"
"#,
            sleeper = sleeper.display()
        ));
    }
    let path = dir.join(format!("{}.toml", sleeper_on.unwrap_or("plain")));
    std::fs::write(&path, text).unwrap();
    path
}

/// Sends `signal` to `child` once the log says `ready` and the handler had
/// time to start its call; returns the time from the signal to the exit.
fn stop_mid_call(mut child: std::process::Child, log: &Path, ready: &str, signal: &str) -> Duration {
    wait_for(ready, Duration::from_secs(60), || {
        std::fs::read_to_string(log).unwrap_or_default().contains(ready)
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "rowhook run ended by itself");
    let sent = Instant::now();
    let kill = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let status = wait_until(
        &mut child,
        sent + Duration::from_secs(20),
        "rowhook run after the signal",
    );
    let took = sent.elapsed();
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(status.success(), "{status:?}\n{text}");
    took
}

/// What `rowhook state` says: the position, and each handler's calls and errors.
fn state(config: &Path) -> (serde_json::Value, Vec<(String, u64, u64)>) {
    let report: serde_json::Value =
        serde_json::from_str(&rowhook_ok(&["state", "-c", config.to_str().unwrap(), "--json"])).unwrap();
    let handlers = report["handler_metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().to_owned(),
                h["calls"].as_u64().unwrap(),
                h["errors"].as_u64().unwrap(),
            )
        })
        .collect();
    (report["position"].clone(), handlers)
}

#[test]
fn a_signal_stops_run_within_a_second_and_loses_nothing() {
    let server = Server::start(&[]);
    server.sql(
        "CREATE DATABASE halt;
         CREATE TABLE halt.seen (id INT PRIMARY KEY);
         CREATE TABLE halt.wait (id INT PRIMARY KEY);
         CREATE TABLE halt.spin (id INT PRIMARY KEY);
         INSERT INTO halt.seen VALUES (1);",
    );
    let dir = temp_dir("stop");
    let calls = dir.join("calls.jsonl");

    // SIGTERM while the sleeper spins on the first of a thousand rows.
    let spin = config(&dir, &server, Some("spin"));
    let log = dir.join("spin.log");
    let child = spawn_run(&spin, &log);
    wait_for("the first transaction", Duration::from_secs(60), || {
        lines(&calls).len() == 1
    });
    let spin_rows: Vec<String> = (1..=SPIN_ROWS).map(|i| format!("({i})")).collect();
    server.sql(&format!(
        "BEGIN; INSERT INTO halt.seen VALUES (2); INSERT INTO halt.wait VALUES (1);
         INSERT INTO halt.spin VALUES {}; COMMIT;",
        spin_rows.join(",")
    ));
    let term = stop_mid_call(child, &log, "no checkpoint yet", "-TERM");
    let text = std::fs::read_to_string(&log).unwrap();
    eprintln!("SIGTERM with a handler call of a 60 s limit in progress: stopped in {term:?}");
    assert!(term < STOP_WITHIN, "SIGTERM took {term:?}\n{text}");
    assert!(text.contains("stopping after the acknowledged transactions"), "{text}");
    // Nothing of the interrupted transaction left: no message, no dead letter.
    assert_eq!(lines(&calls).len(), 1, "{:?}", lines(&calls));
    assert!(lines(&dir.join("dead.jsonl")).is_empty());
    assert!(!text.contains("handler failed"), "{text}");
    // One sleeper call, cut; the counting handler saw the rows up to it
    // (seen 2, wait 1, spin 1) and none of the 999 after it.
    let (position, handlers) = state(&spin);
    assert_eq!(
        handlers,
        vec![("counting".to_owned(), 1 + 3, 0), ("sleeper".to_owned(), 1, 0)],
        "{text}"
    );
    assert!(!position.is_null());

    // SIGINT while the sleeper waits for the clock to move (a loop of
    // sleeps, each a host call) on the transaction handled again.
    let wait = config(&dir, &server, Some("wait"));
    let log = dir.join("wait.log");
    let child = spawn_run(&wait, &log);
    let int = stop_mid_call(child, &log, "resuming after the checkpoint", "-INT");
    let text = std::fs::read_to_string(&log).unwrap();
    eprintln!("SIGINT with a handler call of a 60 s limit in progress: stopped in {int:?}");
    assert!(int < STOP_WITHIN, "SIGINT took {int:?}\n{text}");
    assert_eq!(lines(&calls).len(), 1, "{:?}", lines(&calls));
    assert!(lines(&dir.join("dead.jsonl")).is_empty());
    let (again, handlers) = state(&wait);
    assert_eq!(again, position, "the checkpoint did not move");
    assert_eq!(
        handlers,
        vec![("counting".to_owned(), 2, 0), ("sleeper".to_owned(), 1, 0)],
        "{text}"
    );

    // Without the sleeper the transaction goes through, whole and once.
    let plain = config(&dir, &server, None);
    let log = dir.join("plain.log");
    let child = spawn_run(&plain, &log);
    wait_for("the interrupted transaction", Duration::from_secs(60), || {
        lines(&calls).len() >= 1 + 2 + SPIN_ROWS
    });
    std::thread::sleep(Duration::from_millis(500));
    let status = interrupt(child);
    assert!(status.success(), "{}", std::fs::read_to_string(&log).unwrap());
    let rows: Vec<(String, u64)> = lines(&calls)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["table"].as_str().unwrap().to_owned(), v["row"].as_u64().unwrap())
        })
        .collect();
    let mut expected = vec![("seen".to_owned(), 1), ("seen".to_owned(), 2), ("wait".to_owned(), 1)];
    expected.extend((1..=SPIN_ROWS as u64).map(|i| ("spin".to_owned(), i)));
    assert_eq!(rows, expected);
    let (after, _) = state(&plain);
    assert_ne!(after, position, "the checkpoint moved past the transaction");
}
