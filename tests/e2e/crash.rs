//! Durability under SIGKILL: a load generator writes ledger rows and
//! counters in transactions (with rollbacks, multi-row and 5,000-row
//! transactions, and an ALTER mid-run) while `rowhook run` is killed at
//! random moments and restarted, dozens of times. Nothing committed is
//! lost, nothing rolled back appears, per-key order holds, duplicates only
//! repeat what came after the last checkpoint (same ids), and handler state
//! counts every ledger row exactly once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Server, rowhook_ok, spawn_run, temp_dir};

/// Kills left at least this many times.
const KILLS: usize = 50;
/// Ledger ids of rolled-back rows start here; none may ever reach the sink.
pub(crate) const ROLLED_BACK: u64 = 1_000_000_000;

/// A small deterministic generator (xorshift), seeded per run and printed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A seed for [`Rng`] from the clock, printed by the test that takes it.
pub(crate) fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// The complete lines of the file at `path` (none if it is missing): a
/// last line without its newline is still being written (a read can meet a
/// write half done) and is left out.
pub(crate) fn lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(str::to_owned).collect()
}

/// The transaction part of a change id (`<txn>:<event>:<row>`, parsed from the right).
fn txn_of(change_id: &str) -> &str {
    let mut it = change_id.rsplitn(3, ':');
    it.next();
    it.next();
    it.next().unwrap_or("")
}

/// The load: one writer, one transaction at a time, in a pattern mixing
/// single-row, multi-row, rolled-back and 5,000-row transactions, with one
/// ALTER of the ledger half-way. Returns when told to stop.
pub(crate) fn load(server: &Server, stop: &AtomicBool, seed: u64) {
    let mut rng = Rng(seed | 1);
    let mut next_id: u64 = 1;
    let mut rolled_back = ROLLED_BACK;
    let mut round = 0u64;
    let mut altered = false;
    while !stop.load(Ordering::SeqCst) {
        let mut sql = String::new();
        for _ in 0..10 {
            round += 1;
            let k = rng.below(8);
            let kind = if round.is_multiple_of(300) { 99 } else { rng.below(20) };
            match kind {
                0 => {
                    let rows: Vec<String> = (0..3)
                        .map(|_| {
                            rolled_back += 1;
                            format!("({rolled_back},{k},-1)")
                        })
                        .collect();
                    sql.push_str(&format!(
                        "BEGIN; INSERT INTO crash.ledger (id,k,amount) VALUES {}; UPDATE crash.counters SET n = n + 3 WHERE k = {k}; ROLLBACK;\n",
                        rows.join(",")
                    ));
                }
                1..=4 => {
                    let n = 2 + rng.below(20);
                    let rows: Vec<String> = (0..n)
                        .map(|_| {
                            next_id += 1;
                            format!("({},{k},{})", next_id - 1, rng.below(100))
                        })
                        .collect();
                    sql.push_str(&format!(
                        "BEGIN; INSERT INTO crash.ledger (id,k,amount) VALUES {}; UPDATE crash.counters SET n = n + {n} WHERE k = {k}; COMMIT;\n",
                        rows.join(",")
                    ));
                }
                99 => {
                    sql.push_str(&format!(
                        "BEGIN; INSERT INTO crash.ledger (id,k,amount) SELECT {next_id} + seq, {k}, 1 FROM crash.seq_0_to_4999; UPDATE crash.counters SET n = n + 5000 WHERE k = {k}; COMMIT;\n"
                    ));
                    next_id += 5000;
                }
                _ => {
                    sql.push_str(&format!(
                        "BEGIN; INSERT INTO crash.ledger (id,k,amount) VALUES ({next_id},{k},{}); UPDATE crash.counters SET n = n + 1 WHERE k = {k}; COMMIT;\n",
                        rng.below(100)
                    ));
                    next_id += 1;
                }
            }
        }
        if !altered && round >= 600 {
            // Column names must stay those each row was written with.
            sql.push_str(
                "ALTER TABLE crash.ledger ADD COLUMN note VARCHAR(20) NOT NULL DEFAULT 'after-alter' AFTER k;\n",
            );
            altered = true;
        }
        sql.push_str("DO SLEEP(0.01);\n");
        // While the server restarts, a batch fails (its open transaction is
        // rolled back by the server); the count is taken from the table.
        if !server.sql_as("root", "", &sql).status.success() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The ledger configs' usual sink: the file `out.log`.
pub(crate) const OUT_LOG: &str = "kind = \"file\"\npath = \"out.log\"\nfsync = \"never\"";

/// A private server with the ledger schema, and in a fresh directory a
/// `rowhook run` config for it: the `ledger` handler writing to the sink
/// `out` (whose keys are `out`, e.g. [`OUT_LOG`]), its state in `state/`
/// (`state_keys` adds to `[state]`). Returns the server, the directory and
/// the config.
pub(crate) fn ledger_setup(tag: &str, server_id: u32, state_keys: &str, out: &str) -> (Arc<Server>, PathBuf, PathBuf) {
    let wasm = crate::reload::suite_guests();
    let server = Arc::new(Server::start(&[]));
    server.sql(
        "CREATE DATABASE crash;
         CREATE TABLE crash.counters (k INT PRIMARY KEY, n BIGINT NOT NULL);
         INSERT INTO crash.counters SELECT seq, 0 FROM crash.seq_0_to_7;
         CREATE TABLE crash.ledger (id BIGINT UNSIGNED PRIMARY KEY, k INT NOT NULL, amount INT NOT NULL);",
    );
    let dir = temp_dir(tag);
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[source]
url = "{url}"
server_id = {server_id}
start = "earliest"
heartbeat_secs = 1

[state]
path = "state"
{state_keys}

[sinks.out]
{out}

[[handlers]]
name = "ledger"
module = "{module}"
tables = ["crash.ledger"]
ops = ["insert"]
sinks = ["out"]
on_error = "halt"
"#,
            url = server.url(),
            module = wasm.join("ledger.wasm").display(),
        ),
    )
    .unwrap();
    (server, dir, config)
}

/// Inserts ledger rows `from * 20 + 1 ..= to * 20`, twenty per transaction.
pub(crate) fn ledger_rows(server: &Server, from: u32, to: u32) {
    for t in from..to {
        server.sql(&format!(
            "INSERT INTO crash.ledger SELECT {t} * 20 + seq, seq % 8, 1 FROM crash.seq_1_to_20"
        ));
    }
}

#[test]
fn sigkill_loses_nothing_and_state_counts_exactly_once() {
    let (server, dir, config) = ledger_setup("crash", 7401, "commit_interval_ms = 50", OUT_LOG);
    let out = dir.join("out.log");
    let log = dir.join("rowhook.log");
    let seed = clock_seed();
    eprintln!("crash test seed {seed}, files in {}", dir.display());

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (server, stop) = (server.clone(), stop.clone());
        std::thread::spawn(move || load(&server, &stop, seed))
    };

    // Kill at random moments; after each kill, note how much output there
    // was and where the checkpoint stood.
    let mut rng = Rng(seed.rotate_left(17) | 1);
    let mut restarts: Vec<(usize, String)> = Vec::new();
    let started = Instant::now();
    for _ in 0..KILLS {
        let mut child = spawn_run(&config, &log);
        std::thread::sleep(Duration::from_millis(150 + rng.below(900)));
        child.kill().unwrap();
        child.wait().unwrap();
        let state = rowhook_ok(&["state", "-c", config.to_str().unwrap(), "--json"]);
        let report: serde_json::Value = serde_json::from_str(&state).unwrap();
        let txn = report["position"]["txn"].as_str().unwrap_or("").to_owned();
        restarts.push((lines(&out).len(), txn));
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();

    // A last run catches up and stops cleanly.
    let expected: u64 = server.sql("SELECT COUNT(*) FROM crash.ledger").trim().parse().unwrap();
    let mut child = spawn_run(&config, &log);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen: HashSet<u64> = lines(&out)
            .iter()
            .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
            .collect();
        if seen.len() as u64 >= expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "caught up to {} of {expected} rows",
            seen.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    eprintln!(
        "{} kills in {:?}; {} ledger rows",
        restarts.len(),
        started.elapsed(),
        expected
    );

    let all = lines(&out);
    let parsed: Vec<(String, u64, u64)> = all
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 3, "{l}");
            (f[0].to_owned(), f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect();

    // Every committed ledger row reached the sink; nothing rolled back did.
    let committed: HashSet<u64> = server
        .sql("SELECT id FROM crash.ledger")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let delivered: HashSet<u64> = parsed.iter().map(|p| p.1).collect();
    assert!(
        committed.is_subset(&delivered),
        "{} rows missing",
        committed.difference(&delivered).count()
    );
    assert!(
        delivered.iter().all(|&id| id < ROLLED_BACK),
        "a rolled-back row was delivered"
    );
    assert_eq!(delivered.len(), committed.len());

    // A row always carries the same change id; per key, first deliveries
    // come in commit (id) order.
    let mut id_of: HashMap<u64, &str> = HashMap::new();
    let mut last_per_key: BTreeMap<u64, u64> = BTreeMap::new();
    for (change, id, k) in &parsed {
        match id_of.get(id) {
            Some(c) => assert_eq!(c, change, "ledger row {id} delivered under two change ids"),
            None => {
                id_of.insert(*id, change);
                let last = last_per_key.entry(*k).or_default();
                assert!(*id > *last, "key {k}: row {id} after row {last}");
                *last = *id;
            }
        }
    }

    // Duplicates: after each restart, only changes of transactions after
    // the checkpoint come again, and they come first, before anything new.
    let seq = |txn: &str| -> u64 { txn.rsplit('-').next().unwrap().parse().unwrap_or(0) };
    let mut duplicates = 0;
    let mut seen: HashSet<&str> = HashSet::new();
    let mut done = 0;
    for (i, (len, txn)) in restarts.iter().enumerate() {
        seen.extend(all[done..*len].iter().map(String::as_str));
        done = *len;
        let checkpoint = if txn.is_empty() { 0 } else { seq(txn) };
        let next_len = restarts.get(i + 1).map_or(all.len(), |r| r.0);
        let after = &all[*len..next_len];
        let repeated = after.iter().take_while(|l| seen.contains(l.as_str())).count();
        for l in &after[..repeated] {
            let t = txn_of(l.split(' ').next().unwrap());
            assert!(
                seq(t) > checkpoint,
                "restart {i}: {l} came again, but its transaction is in checkpoint {txn}"
            );
        }
        for l in &after[repeated..] {
            assert!(
                !seen.contains(l.as_str()),
                "restart {i}: {l} came again after new changes"
            );
        }
        duplicates += repeated;
    }
    eprintln!("{duplicates} duplicate deliveries over {} restarts", restarts.len());

    // State counted every row exactly once.
    let dump = rowhook_ok(&["state", "-c", config.to_str().unwrap(), "dump", "ledger"]);
    let state: HashMap<String, i64> = dump
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["key"].as_str().unwrap().to_owned(), v["counter"].as_i64().unwrap())
        })
        .collect();
    let per_key = server.sql("SELECT k, COUNT(*) FROM crash.ledger GROUP BY k");
    for line in per_key.lines() {
        let (k, n) = line.split_once('\t').unwrap();
        assert_eq!(
            state.get(&format!("k:{k}")),
            Some(&n.trim().parse().unwrap()),
            "key {k}"
        );
    }
    assert_eq!(state.get("total"), Some(&(expected as i64)));
    // Big transactions were among them.
    let mut per_txn: HashMap<&str, usize> = HashMap::new();
    for (change, _, _) in &parsed {
        *per_txn.entry(txn_of(change)).or_default() += 1;
    }
    let big = per_txn.values().filter(|&&n| n >= 5000).count();
    assert!(big >= 2, "only {big} transactions of 5,000 rows");
    eprintln!("{} transactions, {big} of 5,000 rows or more", per_txn.len());
    // The ALTER happened, and rows after it kept flowing.
    assert!(server.sql("SHOW COLUMNS FROM crash.ledger").contains("note"));
}

/// A table altered (ADD, DROP, RENAME COLUMN) while rowhook is stopped:
/// after the restart every row change still has the column names it was
/// written with.
#[test]
fn ddl_while_stopped_keeps_each_rows_own_column_names() {
    let wasm = crate::reload::suite_guests();
    let server = Server::start(&[]);
    server.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, a INT, b VARCHAR(10));");
    let dir = temp_dir("ddl");
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\nserver_id = 7402\nstart = \"earliest\"\n\n[state]\npath = \"state\"\n\n[sinks.out]\nkind = \"file\"\npath = \"out.log\"\n\n[[handlers]]\nname = \"echo\"\nmodule = \"{}\"\ntables = [\"app.*\"]\nsinks = [\"out\"]\n",
            server.url(),
            wasm.join("echo.wasm").display()
        ),
    )
    .unwrap();
    let (out, log) = (dir.join("out.log"), dir.join("rowhook.log"));
    let run_until = |rows: usize| {
        let mut child = spawn_run(&config, &log);
        let deadline = Instant::now() + Duration::from_secs(60);
        while lines(&out).len() < rows {
            assert!(Instant::now() < deadline, "{}", std::fs::read_to_string(&log).unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(child.wait().unwrap().success());
    };
    server.sql("INSERT INTO app.t VALUES (1, 10, 'one');");
    run_until(1);
    // Stopped: the table changes shape three times, with rows in between.
    server.sql(
        "INSERT INTO app.t VALUES (2, 20, 'two');
         ALTER TABLE app.t ADD COLUMN c DATE;
         INSERT INTO app.t VALUES (3, 30, 'three', '2026-11-21');
         ALTER TABLE app.t DROP COLUMN a;
         INSERT INTO app.t VALUES (4, 'four', '2026-11-22');
         ALTER TABLE app.t RENAME COLUMN b TO label;
         INSERT INTO app.t VALUES (5, 'five', NULL);
         UPDATE app.t SET label = 'FIVE' WHERE id = 5;",
    );
    run_until(6);
    let rows: Vec<serde_json::Value> = lines(&out).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let image = |i: usize, which: &str| rows[i][which].to_string();
    assert_eq!(image(0, "after"), r#"{"id":1,"a":10,"b":"one"}"#);
    assert_eq!(image(1, "after"), r#"{"id":2,"a":20,"b":"two"}"#);
    assert_eq!(image(2, "after"), r#"{"id":3,"a":30,"b":"three","c":"2026-11-21"}"#);
    assert_eq!(image(3, "after"), r#"{"id":4,"b":"four","c":"2026-11-22"}"#);
    assert_eq!(image(4, "after"), r#"{"id":5,"label":"five","c":null}"#);
    assert_eq!(image(5, "before"), r#"{"id":5,"label":"five","c":null}"#);
    assert_eq!(image(5, "after"), r#"{"id":5,"label":"FIVE","c":null}"#);
    assert_eq!(rows.len(), 6, "row 1 was handled once: the second run resumed after it");
}

/// `rowhook run` under load while its connection is killed three times and
/// the server restarts once: it resumes each time within seconds, every
/// ledger row reaches the sink, and state counts each exactly once (the
/// transaction cut by a fault is undone and handled again).
#[test]
fn run_resumes_after_killed_connections_and_a_server_restart() {
    let (server, dir, config) = ledger_setup("faults-run", 7403, "", OUT_LOG);
    let (out, log) = (dir.join("out.log"), dir.join("rowhook.log"));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (server, stop) = (server.clone(), stop.clone());
        std::thread::spawn(move || load(&server, &stop, 42))
    };
    let mut child = spawn_run(&config, &log);
    let grows = |what: &str| {
        let n = lines(&out).len();
        let deadline = Instant::now() + Duration::from_secs(30);
        while lines(&out).len() < n + 200 {
            assert!(Instant::now() < deadline, "no progress after {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    grows("the start");
    for _ in 0..3 {
        let threads = crate::faults::dump_threads(&server);
        assert_eq!(threads.len(), 1, "{threads:?}");
        server.sql(&format!("KILL {}", threads[0]));
        grows("a killed connection");
    }
    crate::faults::mariadb_sh("down", &server);
    std::thread::sleep(Duration::from_millis(500));
    crate::faults::mariadb_sh("up", &server);
    let back = Instant::now();
    grows("the server restart");
    let resumed_in = back.elapsed();
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();

    let expected: u64 = server.sql("SELECT COUNT(*) FROM crash.ledger").trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen: HashSet<String> = lines(&out)
            .iter()
            .map(|l| l.split(' ').nth(1).unwrap().to_owned())
            .collect();
        if seen.len() as u64 >= expected {
            break;
        }
        assert!(Instant::now() < deadline, "caught up to {} of {expected}", seen.len());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The running rowhook's status: each resume counted by cause, and a
    // rotation of the binlog followed.
    server.sql("FLUSH BINARY LOGS; INSERT INTO crash.ledger (id, k, amount) VALUES (1000000000, 1, 1)");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let s: serde_json::Value =
            serde_json::from_str(&rowhook_ok(&["state", "-c", config.to_str().unwrap(), "--json"])).unwrap();
        if s["source"]["rotations"].as_u64() >= Some(1) && s["stats"]["changes"].as_u64() > Some(expected) {
            break s;
        }
        assert!(Instant::now() < deadline, "the status file shows no rotation: {s}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let source = &status["source"];
    assert_eq!(source["connected"], true, "{status}");
    assert_eq!(source["reconnects"]["killed"], 3, "{status}");
    assert_eq!(source["reconnects"]["server_restart"], 1, "{status}");
    assert!(status["stats"]["checkpoints"].as_u64() > Some(0), "{status}");
    // The totals and the per-handler and per-sink counts are one registry.
    let sum = |list: &str, key: &str| -> u64 {
        status[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x[key].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        Some(sum("handler_metrics", "calls")),
        status["stats"]["calls"].as_u64(),
        "{status}"
    );
    assert_eq!(
        Some(sum("sinks", "messages")),
        status["stats"]["messages"].as_u64(),
        "{status}"
    );
    let text = rowhook_ok(&["state", "-c", config.to_str().unwrap()]);
    eprintln!("{text}");
    assert!(
        text.contains("resumed 4 times: 1 server restarts, 3 killed, 0 stalled"),
        "{text}"
    );
    let expected = expected + 1;
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(child.wait().unwrap().success(), "{text}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("the server rotated its binlog"), "{text}");
    let causes = crate::faults::resumed_causes(&crate::faults::strip_ansi(&text));
    assert_eq!(causes.iter().filter(|c| *c == "killed").count(), 3, "{causes:?}");
    assert_eq!(
        causes.iter().filter(|c| *c == "server_restart").count(),
        1,
        "{causes:?}"
    );
    eprintln!("resumed {resumed_in:?} after the server was back; causes {causes:?}");

    // Everything committed arrived, nothing else; a row repeats only as part
    // of a transaction flushed in the middle (5,000 rows) and cut by a fault.
    let parsed: Vec<(String, u64)> = lines(&out)
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].to_owned(), f[1].parse().unwrap())
        })
        .collect();
    let committed: HashSet<u64> = server
        .sql("SELECT id FROM crash.ledger")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let delivered: HashSet<u64> = parsed.iter().map(|p| p.1).collect();
    assert_eq!(delivered, committed);
    let mut by_id: HashMap<u64, &str> = HashMap::new();
    for (change, id) in &parsed {
        assert_eq!(*by_id.entry(*id).or_insert(change), change.as_str());
    }
    let dump = rowhook_ok(&["state", "-c", config.to_str().unwrap(), "dump", "ledger"]);
    let total = dump
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["key"] == "total")
        .map(|v| v["counter"].as_i64().unwrap());
    assert_eq!(total, Some(expected as i64), "state counted each row once");
}
