//! Snapshots: the rows tables hold, handed to handlers as `snapshot`
//! changes in chunks placed in the binlog stream where each was read.
//! Values equal the binlog's after images for every type; a snapshot
//! killed at any point resumes from its last chunk with exactly-once
//! state; a table read again while writes go on is never left at an old
//! value; what cannot be read is refused with the fix.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::crash::{Rng, clock_seed, lines};
use crate::http::{PASSWORD, TOKEN, eventually, get, metric, spawn};
use crate::support::{Server, interrupt, json_lines, root, rowhook, rowhook_ok, spawn_run, temp_dir};

/// The file sink `out`, one line per message in `out.log`.
const OUT_LOG: &str = "kind = \"file\"\npath = \"out.log\"\nfsync = \"never\"";

/// A config on `server`: the source with `snapshot` keys, a store
/// committed every 50 ms, the file sink `out`, and `handlers`.
fn config(server: &Server, server_id: u32, source: &str, handlers: &str) -> String {
    config_to(server, server_id, source, OUT_LOG, handlers)
}

/// [`config`] with the sink `out` of keys `out`.
fn config_to(server: &Server, server_id: u32, source: &str, out: &str, handlers: &str) -> String {
    format!(
        r#"
[source]
url = "{url}"
server_id = {server_id}
heartbeat_secs = 1
{source}

[state]
path = "state"
commit_interval_ms = 50

[sinks.out]
{out}

{handlers}
"#,
        url = server.url(),
    )
}

/// The tables of tests/sql/types.sql that have a key to read by, and whose
/// rows all took their last change after the table's last ALTER.
const TYPE_TABLES: &[&str] = &[
    "ints",
    "decs",
    "floats",
    "dates",
    "stamps",
    "times",
    "strs",
    "strs_latin1",
    "strs_cs",
    "bins",
    "enums",
    "enums_big",
    "jsons",
    "geo",
    "net",
    "comp",
    "select",
    "orders",
    "order_items",
    "signedness",
    "signedness_mix",
    "decs_scale",
];

/// The last after image of each row in `changes` (binlog changes), by
/// `(table, primary key JSON)`; a delete removes the row.
fn fold(
    changes: &[serde_json::Value],
    key: impl Fn(&serde_json::Value) -> String,
) -> BTreeMap<(String, String), serde_json::Value> {
    let mut rows = BTreeMap::new();
    for c in changes {
        let table = c["table"].as_str().unwrap().to_owned();
        match c["op"].as_str().unwrap() {
            "delete" => {
                rows.remove(&(table, key(&c["before"])));
            }
            _ => {
                rows.insert((table, key(&c["after"])), c["after"].clone());
            }
        }
    }
    rows
}

/// Every message on the shared Redis list `key`.
#[cfg(feature = "sink-redis")]
fn list(key: &str) -> Vec<String> {
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut c = client.get_connection().unwrap();
    redis::cmd("LRANGE").arg(key).arg(0).arg(-1).query(&mut c).unwrap()
}

// The row change JSON holds text as the columns do, C1 controls included,
// which a line sink refuses: the messages go to a Redis list.
#[cfg(feature = "sink-redis")]
#[test]
fn snapshot_values_equal_the_binlogs_after_images_for_every_type() {
    let server = Server::start(&[]);
    server.sql_file(&root().join("tests/sql/types.sql"));
    let dir = temp_dir("snapshot-types");
    let wasm = crate::reload::suite_guests();
    let tables: Vec<String> = TYPE_TABLES.iter().map(|t| format!("\"rh_types.{t}\"")).collect();
    // The binlog from its start, then the snapshot: each row's last binlog
    // image, and the same row read as it is now.
    let key = format!("rh-test-snapshot-types-{}", std::process::id());
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query(&mut client.get_connection().unwrap())
        .unwrap();
    std::fs::write(
        dir.join("rowhook.toml"),
        config_to(
            &server,
            7601,
            "start = \"earliest\"\nsnapshot = \"initial\"\nsnapshot_chunk_rows = 7",
            &format!("kind = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\nlist = \"{key}\""),
            &format!(
                "[[handlers]]\nname = \"echo\"\nmodule = \"{}\"\ntables = [{}]\nsinks = [\"out\"]\n",
                wasm.join("echo.wasm").display(),
                tables.join(", ")
            ),
        ),
    )
    .unwrap();
    let expected: usize = TYPE_TABLES
        .iter()
        .map(|t| {
            server
                .sql(&format!("SELECT COUNT(*) FROM rh_types.`{t}`"))
                .trim()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    let mut child = spawn_run(&dir.join("rowhook.toml"), &dir.join("rowhook.log"));
    let snapshots = |lines: &[String]| lines.iter().filter(|l| l.contains(r#""op":"snapshot""#)).count();
    let deadline = Instant::now() + Duration::from_secs(120);
    while snapshots(&list(&key)) < expected {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "{} of {expected} snapshot rows:\n{}",
            snapshots(&list(&key)),
            std::fs::read_to_string(dir.join("rowhook.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(interrupt(child).success());

    let all: Vec<serde_json::Value> = list(&key).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (snap, binlog): (Vec<_>, Vec<_>) = all.into_iter().partition(|c| c["op"] == "snapshot");
    assert_eq!(snap.len(), expected, "each row once");
    // The first column of every table is its primary key (the first two
    // of order_items).
    let key = |row: &serde_json::Value| {
        let values: Vec<String> = row.as_object().unwrap().values().map(|v| v.to_string()).collect();
        match row.get("line") {
            Some(_) => values[..2].join("/"),
            None => values[0].clone(),
        }
    };
    let want = fold(&binlog, key);
    let mut got = BTreeMap::new();
    for c in &snap {
        let id = c["id"].as_str().unwrap();
        let table = c["table"].as_str().unwrap();
        assert!(id.starts_with(&format!("snapshot:rh_types.{table}:")), "{id}");
        assert!(c["before"].is_null(), "{c}");
        got.insert((table.to_owned(), key(&c["after"])), c["after"].clone());
    }
    let want: BTreeMap<_, _> = want
        .into_iter()
        .filter(|((t, _), _)| TYPE_TABLES.contains(&t.as_str()))
        .collect();
    let differ: Vec<String> = (want.iter())
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|(k, v)| format!("row {k:?}:\n  snapshot {:?}\n  binlog   {v:?}", got.get(k)))
        .collect();
    assert!(
        differ.is_empty(),
        "{} rows differ:\n{}",
        differ.len(),
        differ.join("\n")
    );
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(extra.is_empty(), "rows the binlog does not have: {extra:?}");
}

/// Starts `rowhook snapshot -c cfg ARGS`, its log (at info) in `log`.
fn spawn_snapshot(cfg: &std::path::Path, args: &[&str], log: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_rowhook"))
        .args(["snapshot", "-c", cfg.to_str().unwrap()])
        .args(args)
        .env("ROWHOOK_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Ledger rows: the crash tests' table, with `n` rows.
fn ledger_server(n: u64) -> Arc<Server> {
    let server = Arc::new(Server::start(&[]));
    server.sql(&format!(
        "CREATE DATABASE crash;
         CREATE TABLE crash.ledger (id BIGINT UNSIGNED PRIMARY KEY, k INT NOT NULL, amount INT NOT NULL);
         INSERT INTO crash.ledger SELECT seq, seq % 8, 1 FROM crash.seq_1_to_{n};"
    ));
    server
}

fn ledger_handler(ops: &str) -> String {
    format!(
        "[[handlers]]\nname = \"ledger\"\nmodule = \"{}\"\ntables = [\"crash.ledger\"]\nops = {ops}\nsinks = [\"out\"]\n\
         on_error = \"halt\"\nlimits = {{ time_ms = 5000 }}\n",
        crate::reload::suite_guests().join("ledger.wasm").display()
    )
}

/// `(chunk, row)` of a snapshot change id `snapshot:<table>:<chunk>:<row>`.
fn chunk_of(id: &str) -> Option<u64> {
    let rest = id.strip_prefix("snapshot:")?;
    let mut it = rest.rsplitn(3, ':');
    it.next()?;
    it.next()?.parse().ok()
}

#[test]
fn a_snapshot_killed_twenty_times_resumes_from_its_last_chunk_with_exactly_once_state() {
    const ROWS: u64 = 1_000_000;
    const KILLS: usize = 20;
    let server = ledger_server(ROWS);
    let dir = temp_dir("snapshot-kills");
    let cfg = dir.join("rowhook.toml");
    std::fs::write(
        &cfg,
        config(
            &server,
            7602,
            // Capped, so that twenty runs of at most 1.6 s each cannot read
            // the whole table on a fast machine: the kills land mid-snapshot.
            "snapshot = \"initial\"\nsnapshot_rows_per_second = 50000",
            &ledger_handler("[\"insert\", \"snapshot\"]"),
        ),
    )
    .unwrap();
    let out = dir.join("out.log");
    let log = dir.join("rowhook.log");
    let seed = clock_seed();
    eprintln!("snapshot kill test seed {seed}, files in {}", dir.display());
    let mut rng = Rng(seed | 1);
    // After each kill: the output's length, and the chunks the store had
    // committed (only chunks from there on may come again).
    let mut kills: Vec<(usize, u64)> = Vec::new();
    let committed_chunks = || -> Option<u64> {
        let state = rowhook_ok(&["state", "-c", cfg.to_str().unwrap(), "--json"]);
        let report: serde_json::Value = serde_json::from_str(&state).unwrap();
        report["snapshot"]["tables"][0]["chunks"].as_u64()
    };
    while kills.len() < KILLS {
        let mut child = spawn_run(&cfg, &log);
        std::thread::sleep(Duration::from_millis(400 + rng.below(1200)));
        child.kill().unwrap();
        child.wait().unwrap();
        let Some(chunks) = committed_chunks() else {
            // The snapshot is done (or had not committed a chunk yet).
            if lines(&out).len() as u64 >= ROWS {
                break;
            }
            kills.push((lines(&out).len(), 0));
            continue;
        };
        kills.push((lines(&out).len(), chunks));
    }
    assert!(
        kills.len() >= KILLS,
        "the snapshot ended after {} kills: too fast to be killed {KILLS} times",
        kills.len()
    );
    assert!(
        kills.iter().filter(|(_, c)| *c > 0).count() >= KILLS / 2,
        "most kills came after chunks were committed: {kills:?}"
    );

    // A last run finishes the snapshot, and is stopped once its last chunk
    // is handed over (the stop commits it).
    let mut child = spawn_run(&cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(300);
    let finished = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("snapshot done")
    };
    while !finished() {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "the snapshot did not finish: see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(interrupt(child).success());
    assert_eq!(committed_chunks(), None, "the store has the snapshot done");

    // Nothing lost; a repeated line is a change of a chunk the store had
    // not committed when the run before it was killed.
    let all = lines(&out);
    let mut seen: HashSet<&str> = HashSet::new();
    let mut rows: HashSet<u64> = HashSet::new();
    let mut kill = 0;
    for (n, line) in all.iter().enumerate() {
        while kill < kills.len() && n >= kills[kill].0 {
            kill += 1;
        }
        let mut parts = line.split(' ');
        let id = parts.next().unwrap();
        rows.insert(parts.next().unwrap().parse().unwrap());
        if !seen.insert(id) {
            let floor = kills[kill - 1].1;
            let chunk = chunk_of(id).unwrap_or_else(|| panic!("a repeated change that is not a snapshot row: {line}"));
            assert!(
                chunk >= floor,
                "line {n} ({id}) repeats chunk {chunk}, but {floor} chunks were committed before that restart"
            );
        }
    }
    assert_eq!(rows.len() as u64, ROWS, "every row, none lost");
    // State counted every row exactly once.
    let dump = rowhook_ok(&["state", "-c", cfg.to_str().unwrap(), "dump", "ledger"]);
    let state: BTreeMap<String, i64> = json_lines(&dump)
        .into_iter()
        .map(|v| (v["key"].as_str().unwrap().to_owned(), v["counter"].as_i64().unwrap()))
        .collect();
    let mut want: BTreeMap<String, i64> = (0..8).map(|k| (format!("k:{k}"), (ROWS / 8) as i64)).collect();
    want.insert("total".into(), ROWS as i64);
    assert_eq!(state, want, "state counts each row once");
}

#[test]
fn a_table_read_again_while_writes_go_on_is_never_left_at_an_old_value() {
    let server = Arc::new(Server::start(&[]));
    server.sql(&format!(
        "CREATE USER 'repl'@'%' IDENTIFIED BY '{PASSWORD}';
         GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO 'repl'@'%';
         CREATE DATABASE shop;
         CREATE TABLE shop.items (a INT NOT NULL, b VARCHAR(8) NOT NULL, v INT NOT NULL, PRIMARY KEY (a, b));
         INSERT INTO shop.items SELECT seq DIV 4, CONCAT('k', seq % 4), 0 FROM shop.seq_0_to_19999;"
    ));
    let dir = temp_dir("snapshot-live");
    let cfg = dir.join("rowhook.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[source]
url = "mysql://repl:${{RH_OBS_PASSWORD}}@127.0.0.1:{port}"
server_id = 7603
heartbeat_secs = 1
snapshot_chunk_rows = 500

[state]
path = "state"
commit_interval_ms = 50

[http]
listen = "127.0.0.1:0"
token = "${{RH_OBS_TOKEN}}"

[sinks.out]
kind = "file"
path = "out.log"
fsync = "never"

[[handlers]]
name = "echo"
module = "{module}"
tables = ["shop.items"]
sinks = ["out"]
"#,
            port = server.port,
            module = crate::reload::suite_guests().join("echo.wasm").display(),
        ),
    )
    .unwrap();
    let env = [("RH_OBS_PASSWORD", PASSWORD), ("RH_OBS_TOKEN", TOKEN)];
    let (daemon, addr) = spawn(&["run", "-c", cfg.to_str().unwrap()], &env, &dir.join("rowhook.log"));

    // Writes go on all along: updates, deletes and inserts of random rows.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (server, stop) = (server.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(7);
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let mut sql = String::new();
                for _ in 0..20 {
                    n += 1;
                    let (a, b) = (rng.below(5200), rng.below(4));
                    sql.push_str(&match rng.below(10) {
                        0 => format!("DELETE FROM shop.items WHERE a = {a} AND b = 'k{b}';"),
                        1 => format!("INSERT IGNORE INTO shop.items VALUES ({a}, 'k{b}', {n});"),
                        _ => format!("UPDATE shop.items SET v = {n} WHERE a = {a} AND b = 'k{b}';"),
                    });
                }
                server.sql(&sql);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // Asked of the running rowhook through its admin API.
    let asked = std::process::Command::new(env!("CARGO_BIN_EXE_rowhook"))
        .args(["snapshot", "-c", cfg.to_str().unwrap(), "--table", "shop.items"])
        .envs(env)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&asked.stdout);
    assert!(
        asked.status.success() && said.contains(r#""table":"shop.items""#),
        "{said}{}",
        String::from_utf8_lossy(&asked.stderr)
    );
    let metrics = || get(&addr, "/metrics").body;
    eventually(Duration::from_secs(120), "the snapshot ends", || {
        let m = metrics();
        metric(&m, "rowhook_snapshot_chunks_total", "") >= 40.0 && metric(&m, "rowhook_snapshot_tables_left", "") == 0.0
    });
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    server.sql("INSERT INTO shop.items VALUES (999999, 'end', 0)");
    let out = dir.join("out.log");
    eventually(Duration::from_secs(60), "the last write arrives", || {
        std::fs::read_to_string(&out).unwrap_or_default().contains("999999")
    });
    drop(daemon);

    // Every row's last change downstream is its value now.
    let changes = json_lines(&std::fs::read_to_string(&out).unwrap());
    assert!(changes.iter().filter(|c| c["op"] == "snapshot").count() >= 19_000);
    let key = |row: &serde_json::Value| format!("{}/{}", row["a"], row["b"]);
    let downstream: BTreeMap<String, String> = fold(&changes, key)
        .into_iter()
        .map(|((_, k), row)| (k, row["v"].to_string()))
        .collect();
    let now: BTreeMap<String, String> = server
        .sql("SELECT a, b, v FROM shop.items")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (format!("{}/\"{}\"", f[0], f[1]), f[2].to_owned())
        })
        .collect();
    let stale: Vec<_> = now
        .iter()
        .filter(|(k, v)| downstream.get(*k) != Some(v))
        .take(5)
        .collect();
    assert!(stale.is_empty(), "rows left at another value downstream: {stale:?}");
    assert_eq!(downstream.len(), now.len(), "the same rows");
}

#[test]
fn a_slice_is_read_and_a_table_without_a_key_is_refused_with_the_fix() {
    let server = ledger_server(1000);
    server.sql("CREATE TABLE crash.nokey (a INT, b INT); INSERT INTO crash.nokey VALUES (1, 1);");
    let dir = temp_dir("snapshot-slice");
    let cfg = dir.join("rowhook.toml");
    let handler = ledger_handler("[\"snapshot\"]").replace("tables = [\"crash.ledger\"]", "tables = [\"crash.*\"]");
    std::fs::write(&cfg, config(&server, 7604, "", &handler)).unwrap();
    let refused = rowhook(&["snapshot", "-c", cfg.to_str().unwrap(), "--table", "crash.nokey"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        err.contains("no primary key") && err.contains("ADD PRIMARY KEY"),
        "{err}"
    );
    let refused = rowhook(&[
        "snapshot",
        "-c",
        cfg.to_str().unwrap(),
        "--table",
        "crash.ledger",
        "--where",
        "idd < 5",
    ]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        err.contains("where idd < 5") && err.contains("Fix the condition"),
        "{err}"
    );

    let refused = rowhook(&["snapshot", "-c", cfg.to_str().unwrap(), "--table", "shop.orders"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("no handler takes `snapshot` changes of `shop.orders`"),
        "{err}"
    );
    // `check` tries each table an initial snapshot would read.
    let checked = dir.join("check.toml");
    std::fs::write(
        &checked,
        config(
            &server,
            7605,
            "snapshot = \"initial\"",
            &ledger_handler("[\"snapshot\"]"),
        )
        .replace("tables = [\"crash.ledger\"]", "tables = [\"crash.*\"]"),
    )
    .unwrap();
    let report = rowhook(&["check", "-c", checked.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&report.stdout);
    assert!(!report.status.success(), "{said}");
    assert!(said.contains("ok   snapshot: 1 subscribed tables readable"), "{said}");
    assert!(
        said.contains("FAIL snapshot: cannot read a snapshot of `crash.nokey`"),
        "{said}"
    );

    let log = dir.join("rowhook.log");
    let child = spawn_snapshot(&cfg, &["--table", "crash.ledger", "--where", "id % 10 = 3"], &log);
    let out = dir.join("out.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines(&out).len() < 100 {
        assert!(Instant::now() < deadline, "{} rows", lines(&out).len());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(interrupt(child).success());
    let ids: Vec<u64> = lines(&out)
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 100, "the slice, once");
    assert!(ids.iter().all(|id| id % 10 == 3));
    // Once read, the snapshot is not read again at the next start.
    let state = rowhook_ok(&["state", "-c", cfg.to_str().unwrap(), "--json"]);
    let report: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert!(report["snapshot"].is_null(), "{report}");
}

#[test]
fn a_unique_key_reads_a_table_without_a_primary_key_within_the_rate_cap_and_select_is_needed() {
    let server = Server::start(&[]);
    server.sql(
        "CREATE DATABASE crash;
         CREATE TABLE crash.ledger (id BIGINT UNSIGNED NOT NULL, k INT NOT NULL, amount INT NOT NULL, UNIQUE KEY (k, id));
         INSERT INTO crash.ledger SELECT seq, seq % 8, 1 FROM crash.seq_1_to_1000;
         CREATE USER 'nosel'@'%' IDENTIFIED BY 'pw-nosel';
         GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'nosel'@'%';",
    );
    let dir = temp_dir("snapshot-unique");
    let cfg = dir.join("rowhook.toml");
    let source = "snapshot_chunk_rows = 100\nsnapshot_rows_per_second = 2000";
    std::fs::write(&cfg, config(&server, 7606, source, &ledger_handler("[\"snapshot\"]"))).unwrap();

    // A user that may not SELECT the table is refused with the grant.
    let nosel = dir.join("nosel.toml");
    let url = format!("snapshot_url = \"mysql://nosel:pw-nosel@127.0.0.1:{}\"", server.port);
    std::fs::write(&nosel, config(&server, 7607, &url, &ledger_handler("[\"snapshot\"]"))).unwrap();
    let refused = rowhook(&["snapshot", "-c", nosel.to_str().unwrap(), "--table", "crash.ledger"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        err.contains("GRANT SELECT") && err.contains("crash") && !err.contains("pw-nosel"),
        "{err}"
    );

    let log = dir.join("rowhook.log");
    let child = spawn_snapshot(&cfg, &["--table", "crash.ledger"], &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("snapshot done")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(interrupt(child).success());
    // Every row once, in the unique key's order: by k, then id.
    let rows: Vec<(u64, u64)> = lines(&dir.join("out.log"))
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[2].parse().unwrap(), f[1].parse().unwrap())
        })
        .collect();
    assert_eq!(rows.len(), 1000);
    assert!(rows.windows(2).all(|w| w[0] < w[1]), "in key order, each once");
    // 1,000 rows at 2,000 a second: half a second at least.
    let text = std::fs::read_to_string(&log).unwrap();
    let at = |what: &str| -> f64 {
        let line = text.lines().find(|l| l.contains(what)).unwrap();
        let time = line.split_whitespace().next().unwrap();
        let hms = time.split('T').nth(1).unwrap().trim_end_matches('Z');
        hms.split(':')
            .fold(0.0, |acc, part| acc * 60.0 + part.parse::<f64>().unwrap())
    };
    let took = at("snapshot done") - at("snapshot queued");
    assert!(took >= 0.45, "1,000 rows capped at 2,000 a second took {took:.3} s");
}
