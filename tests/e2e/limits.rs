//! What a handler emits is bounded in host memory: a byte budget per event,
//! a key size cap, and flushes by bytes inside one rows event.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{Server, build_guest, root, temp_dir};

/// Rows of `flood.payloads`, inserted by one statement: one rows event,
/// each row emitting 8 MiB, 800 MiB in all.
const PAYLOAD_ROWS: usize = 100;
/// Rows of `flood.budget`, one transaction.
const BUDGET_ROWS: usize = 20;
/// Rows of `flood.keys`.
const KEY_ROWS: usize = 3;
/// Rows of `flood.logs`, each writing 50 log lines: 5,000 in all.
const LOG_ROWS: usize = 100;
/// The peak RSS `rowhook replay` must stay under, KiB: the flush threshold
/// (32 MiB), one call's emit budget (16 MiB), the two instances' memory and
/// the runtime, with room; buffering the rows event's messages would take
/// 800 MiB.
const PEAK_RSS_KIB: u64 = 400 * 1024;

fn guests() -> (PathBuf, PathBuf) {
    let dir = root().join("tests/guests");
    (build_guest(&dir, "flooder"), build_guest(&dir, "counting"))
}

/// Runs `rowhook replay` with stdout to /dev/null; returns its success,
/// stderr and peak RSS in KiB (as `/usr/bin/time` measures it).
fn replay_measured(config: &Path, binlog: &Path, dir: &Path) -> (bool, String, u64) {
    let rss_file = dir.join("rss");
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&rss_file)
        .arg(env!("CARGO_BIN_EXE_rowhook"))
        .args(["replay", "-c"])
        .arg(config)
        .arg(binlog)
        .env("ROWHOOK_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run /usr/bin/time rowhook");
    let rss = std::fs::read_to_string(&rss_file).unwrap();
    let rss: u64 = rss.lines().last().unwrap().trim().parse().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        rss,
    )
}

#[test]
fn emitted_bytes_are_bounded_by_the_budget_and_flushed_by_size() {
    let (flooder, counting) = guests();
    let server = Server::start(&[]);
    server.sql(&format!(
        "CREATE DATABASE flood;
         USE flood;
         CREATE TABLE flood.payloads (id INT PRIMARY KEY);
         CREATE TABLE flood.budget (id INT PRIMARY KEY);
         CREATE TABLE flood.keys (id INT PRIMARY KEY);
         CREATE TABLE flood.logs (id INT PRIMARY KEY);
         INSERT INTO flood.payloads SELECT seq FROM seq_1_to_{PAYLOAD_ROWS};
         INSERT INTO flood.budget SELECT seq FROM seq_1_to_{BUDGET_ROWS};
         INSERT INTO flood.keys SELECT seq FROM seq_1_to_{KEY_ROWS};
         INSERT INTO flood.logs SELECT seq FROM seq_1_to_{LOG_ROWS};
         FLUSH BINARY LOGS;"
    ));
    let binlog = server.binlog("mysql-bin.000001");
    let dir = temp_dir("limits-flood");
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[sinks.out]
kind = "stdout"

[sinks.report]
kind = "file"
path = "report.jsonl"

[sinks.dead]
kind = "file"
path = "dead.jsonl"

[sinks.calls]
kind = "file"
path = "calls.jsonl"

[[handlers]]
name = "flooder"
module = "{flooder}"
tables = ["flood.*"]
sinks = ["out", "report"]
# Copying 16 MiB messages out of the guest is slow in a debug build: the
# time limit is not what this test is about.
limits = {{ time_ms = 10000 }}
on_error = "dead-letter"
dead_letter = "dead"

[[handlers]]
name = "neighbour"
module = "{counting}"
tables = ["flood.*"]
sinks = ["calls"]
"#,
            flooder = flooder.display(),
            counting = counting.display(),
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let (ok, stderr, rss_kib) = replay_measured(&config, &binlog, &dir);
    let took = started.elapsed().as_secs();
    assert!(ok, "{stderr}");

    // The neighbour saw every change, once, in order.
    let calls = std::fs::read_to_string(dir.join("calls.jsonl")).unwrap();
    let tables: Vec<String> = calls
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["table"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let expected: Vec<&str> = std::iter::repeat_n("payloads", PAYLOAD_ROWS)
        .chain(std::iter::repeat_n("budget", BUDGET_ROWS))
        .chain(std::iter::repeat_n("keys", KEY_ROWS))
        .chain(std::iter::repeat_n("logs", LOG_ROWS))
        .collect();
    assert_eq!(tables, expected);

    // A key past the cap is refused as too large, and the guest can say so.
    let report = std::fs::read_to_string(dir.join("report.jsonl")).unwrap();
    assert_eq!(report.lines().count(), KEY_ROWS, "{report}");
    assert!(
        report
            .lines()
            .all(|l| l.contains("too-large") || l.contains("too large")),
        "{report}"
    );

    // Every budget row failed on its budget: dead-lettered, one letter each.
    let dead = std::fs::read_to_string(dir.join("dead.jsonl")).unwrap();
    let letters: Vec<serde_json::Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(letters.len(), BUDGET_ROWS, "{dead}");
    for l in &letters {
        assert_eq!(l["change"]["table"], "budget");
        let e = l["error"].as_str().unwrap();
        assert!(e.contains("emit budget of 16 MiB per event"), "{e}");
    }

    // The log: a burst of ten seconds' worth at the default 100 lines/s,
    // then the rate; the rest dropped, which is said once (and again when
    // the rate allows lines again).
    let logged = stderr.matches("flooding the log").count();
    assert!(
        (1000..=1000 + 100 * (took as usize + 1)).contains(&logged),
        "{logged} guest log lines in {took} s"
    );
    assert!(logged < LOG_ROWS * 50);
    assert_eq!(
        stderr
            .matches("lines are dropped and counted until it slows down")
            .count(),
        1,
        "{stderr}"
    );

    assert!(
        rss_kib < PEAK_RSS_KIB,
        "peak RSS {rss_kib} KiB, over the bound of {PEAK_RSS_KIB} KiB"
    );
    eprintln!("flood replay: peak RSS {} MiB", rss_kib / 1024);
}

/// Row changes of `noisy.news`, on which the hostile handler loops until
/// its deadline.
const NOISY_ROWS: usize = 200;

/// The hostile and counting guests, and a private server whose binlog
/// holds `NOISY_ROWS` inserts into `noisy.news` (there while the server
/// lives).
fn noisy_news() -> (PathBuf, PathBuf, Server, PathBuf) {
    let hostile = build_guest(&root().join("tests/guests"), "hostile");
    let counting = build_guest(&root().join("tests/guests"), "counting");
    let server = Server::start(&[]);
    server.sql(&format!(
        "CREATE DATABASE noisy;
         USE noisy;
         CREATE TABLE news (id INT PRIMARY KEY);
         INSERT INTO news SELECT seq FROM seq_1_to_{NOISY_ROWS};
         FLUSH BINARY LOGS;"
    ));
    let binlog = server.binlog("mysql-bin.000001");
    (hostile, counting, server, binlog)
}

#[test]
fn a_handler_that_keeps_timing_out_is_suspended_and_its_neighbour_goes_on() {
    let (hostile, counting, _server, binlog) = noisy_news();
    let dir = temp_dir("limits-breaker");
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[sinks.dead]
kind = "file"
path = "dead.jsonl"

[sinks.calls]
kind = "file"
path = "calls.jsonl"

[[handlers]]
name = "hostile"
module = "{hostile}"
tables = ["noisy.news"]
limits = {{ time_ms = 20 }}
on_error = "dead-letter"
dead_letter = "dead"
breaker = {{ failures = 3, window_ms = 60000, cooldown_ms = 600000 }}

[[handlers]]
name = "neighbour"
module = "{counting}"
tables = ["noisy.news"]
sinks = ["calls"]
"#,
            hostile = hostile.display(),
            counting = counting.display(),
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = crate::support::rowhook(&["replay", "-c", config.to_str().unwrap(), binlog.to_str().unwrap()]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    // The neighbour: every change, once, in order.
    let calls = std::fs::read_to_string(dir.join("calls.jsonl")).unwrap();
    let rows: Vec<u64> = calls
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["row"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(rows, (1..=NOISY_ROWS as u64).collect::<Vec<_>>());

    // The hostile handler: three timeouts, then suspended for the rest,
    // every change dead-lettered with its reason.
    let dead = std::fs::read_to_string(dir.join("dead.jsonl")).unwrap();
    let errors: Vec<String> = dead
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["error"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(errors.len(), NOISY_ROWS);
    assert!(
        errors[..3].iter().all(|e| e.contains("time limit of 20 ms")),
        "{errors:?}"
    );
    assert!(
        errors[3..]
            .iter()
            .all(|e| e.contains("suspended by its circuit breaker")),
        "{errors:?}"
    );

    // The suspension is logged once, not per change.
    assert_eq!(stderr.matches("handler suspended for 600000 ms").count(), 1, "{stderr}");
    assert!(!stderr.contains("event skipped"), "{stderr}");
    // Three calls at its deadline, not two hundred.
    assert!(
        took < std::time::Duration::from_secs(NOISY_ROWS as u64 * 20 / 1000),
        "took {took:?}"
    );
}

/// A handler whose memory grows with every call (4 KiB kept per call, as a
/// leaking language runtime does) is replaced between transactions once it
/// has used half of its room, its state carried over: 1,200 calls that
/// would take it past `memory_mb = 2` all succeed, and the state counter
/// beside it counts every one.
#[test]
fn a_handler_whose_memory_grows_is_replaced_between_transactions() {
    let leaky = crate::reload::suite_guests().join("leaky.wasm");
    let server = Server::start(&[]);
    // Twelve transactions of 100 rows.
    let mut sql = String::from("CREATE DATABASE leak; USE leak; CREATE TABLE t (id INT PRIMARY KEY);");
    for i in 0..12 {
        sql.push_str(&format!(
            "INSERT INTO t SELECT seq FROM seq_{}_to_{};",
            i * 100 + 1,
            i * 100 + 100
        ));
    }
    sql.push_str("FLUSH BINARY LOGS;");
    server.sql(&sql);
    let binlog = server.binlog("mysql-bin.000001");
    let dir = temp_dir("limits-leaky");
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            "[[handlers]]\nname = \"leaky\"\nmodule = \"{}\"\ntables = [\"leak.t\"]\nlimits = {{ memory_mb = 2 }}\non_error = \"halt\"\n",
            leaky.display()
        ),
    )
    .unwrap();
    let out = crate::support::rowhook(&["replay", "-c", config.to_str().unwrap(), binlog.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1200 handler calls") && stderr.contains(" 0 handler errors"),
        "{stderr}"
    );
}

/// A tenant's emit rate (`emit_mb_per_s`) bounds what all its handlers
/// emit per second: past it an emit gets `quota` and the handler's
/// `on_error` takes the event. The other tenant's output is the same as
/// in a run without it.
#[test]
fn a_tenant_past_its_emit_rate_gets_quota_and_the_other_tenant_keeps_everything() {
    const ROWS: usize = 40;
    let (flooder, counting) = guests();
    let server = Server::start(&[]);
    server.sql(&format!(
        "CREATE DATABASE flood;
         USE flood;
         CREATE TABLE flood.payloads (id INT PRIMARY KEY);
         INSERT INTO flood.payloads SELECT seq FROM seq_1_to_{ROWS};
         FLUSH BINARY LOGS;"
    ));
    let binlog = server.binlog("mysql-bin.000001");
    let write = |dir: &Path, with_noisy: bool| {
        let noisy = format!(
            r#"
[[handlers]]
name = "flooder"
tenant = "noisy"
module = "{}"
tables = ["flood.payloads"]
sinks = ["out"]
limits = {{ time_ms = 10000 }}
on_error = "dead-letter"
dead_letter = "dead"
"#,
            flooder.display()
        );
        let config = dir.join("rowhook.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[sinks.out]
kind = "file"
path = "big.out"

[sinks.dead]
kind = "file"
path = "dead.jsonl"

[sinks.calls]
kind = "file"
path = "calls.jsonl"

[tenants.noisy]
tables = ["flood.*"]
sinks = ["out", "dead"]
emit_mb_per_s = 8

[tenants.quiet]
tables = ["flood.*"]
sinks = ["calls"]

[[handlers]]
name = "neighbour"
tenant = "quiet"
module = "{}"
tables = ["flood.payloads"]
sinks = ["calls"]
{}"#,
                counting.display(),
                if with_noisy { noisy.as_str() } else { "" }
            ),
        )
        .unwrap();
        config
    };

    let alone = temp_dir("limits-rate-alone");
    let (ok, stderr, _) = replay_measured(&write(&alone, false), &binlog, &alone);
    assert!(ok, "{stderr}");
    let dir = temp_dir("limits-rate");
    let started = std::time::Instant::now();
    let (ok, stderr, _) = replay_measured(&write(&dir, true), &binlog, &dir);
    let took = started.elapsed().as_secs_f64();
    assert!(ok, "{stderr}");

    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap_or_default();
    assert_eq!(
        read(&dir, "calls.jsonl"),
        read(&alone, "calls.jsonl"),
        "the quiet tenant's output is as if alone"
    );
    assert_eq!(
        read(&alone, "calls.jsonl")
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        ROWS
    );

    // What got through: 8 MiB at once, then 8 MiB a second at most.
    let big = read(&dir, "big.out");
    let accepted = big.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
    assert!(accepted >= 1, "a second's worth at the start");
    assert!(
        accepted as f64 <= 1.0 + took.ceil(),
        "{accepted} messages of 8 MiB in {took:.1} s at 8 MiB/s"
    );
    let dead = String::from_utf8(read(&dir, "dead.jsonl")).unwrap();
    let letters: Vec<serde_json::Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(letters.len(), ROWS - accepted, "every other event dead-lettered");
    for l in &letters {
        let e = l["error"].as_str().unwrap();
        assert!(e.contains("rate of 8 MiB per second ([tenants] emit_mb_per_s)"), "{e}");
    }
}

/// A tenant's breaker counts the failures of all its handlers: two
/// handlers that each time out on every change, whose own breakers never
/// open, are suspended together once they failed four times between them;
/// the other tenant's handler sees every change.
#[test]
fn a_tenant_whose_handlers_keep_failing_is_suspended_as_a_whole() {
    let (hostile, counting, _server, binlog) = noisy_news();
    let dir = temp_dir("limits-tenant-breaker");
    let config = dir.join("rowhook.toml");
    let noisy = |name: &str| {
        format!(
            "[[handlers]]\nname = \"{name}\"\ntenant = \"noisy\"\nmodule = \"{}\"\ntables = [\"noisy.news\"]\nlimits = {{ time_ms = 20 }}\non_error = \"dead-letter\"\ndead_letter = \"dead\"\nbreaker = {{ failures = 0 }}\n\n",
            hostile.display()
        )
    };
    std::fs::write(
        &config,
        format!(
            r#"
[sinks.dead]
kind = "file"
path = "dead.jsonl"

[sinks.calls]
kind = "file"
path = "calls.jsonl"

[tenants.noisy]
tables = ["noisy.*"]
sinks = ["dead"]
breaker = {{ failures = 4, window_ms = 60000, cooldown_ms = 600000 }}

[tenants.quiet]
tables = ["noisy.*"]
sinks = ["calls"]

{}{}[[handlers]]
name = "neighbour"
tenant = "quiet"
module = "{counting}"
tables = ["noisy.news"]
sinks = ["calls"]
"#,
            noisy("first"),
            noisy("second"),
            counting = counting.display(),
        ),
    )
    .unwrap();
    let out = crate::support::rowhook(&["replay", "-c", config.to_str().unwrap(), binlog.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let calls = std::fs::read_to_string(dir.join("calls.jsonl")).unwrap();
    assert_eq!(calls.lines().count(), NOISY_ROWS, "the quiet tenant saw every change");
    // Each noisy handler: every change dead-lettered; four timeouts between
    // them (first, second, first, second), then suspended.
    let dead = std::fs::read_to_string(dir.join("dead.jsonl")).unwrap();
    let letters: Vec<serde_json::Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(letters.len(), 2 * NOISY_ROWS);
    let timeouts: Vec<&str> = (letters.iter())
        .filter(|l| l["error"].as_str().unwrap().contains("time limit of 20 ms"))
        .map(|l| l["handler"].as_str().unwrap())
        .collect();
    assert_eq!(timeouts, ["first", "second", "first", "second"], "{dead}");
    assert!(
        (letters.iter().skip(4)).all(|l| l["error"]
            .as_str()
            .unwrap()
            .contains("suspended by its tenant's circuit breaker")),
        "{dead}"
    );
    assert_eq!(stderr.matches("tenant suspended for 600000 ms").count(), 1, "{stderr}");
    assert!(!stderr.contains("handler suspended"), "{stderr}");
}
