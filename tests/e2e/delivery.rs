//! Sinks that cannot take a write: retried with backoff until they can,
//! `on_error` once retries run out, a stop that does not wait for them, and
//! a slow reader that holds rowhook back instead of growing its memory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::crash::ledger_setup;
use crate::sink_support::{minimal_config, replay_shop};
use crate::support::{Server, interrupt, rowhook_ok, spawn_run, temp_dir};

/// A config in `dir` running the `minimal` example handler, whose
/// `orders_queue` sink is the FIFO `orders.fifo` with the extra `keys`,
/// beside a file sink `dead` for dead letters.
fn fifo_config(dir: &Path, keys: &str, handler_keys: &str) -> PathBuf {
    minimal_config(
        dir,
        "[sinks.dead]\nkind = \"file\"\npath = \"dead.jsonl\"\n",
        "fifo",
        &format!("path = \"orders.fifo\"\n{keys}"),
        handler_keys,
    )
}

/// A FIFO reader in its own thread: it opens `path` (waiting for it to be
/// created, then for a writer),
/// then appends each line to the shared list until end-of-file, reading
/// nothing while `paused` is set.
pub(crate) struct Reader {
    lines: Arc<Mutex<Vec<String>>>,
    paused: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Reader {
    pub(crate) fn start(path: PathBuf) -> Reader {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let paused = Arc::new(AtomicBool::new(false));
        let thread = {
            let (lines, paused) = (lines.clone(), paused.clone());
            std::thread::spawn(move || {
                // rowhook creates the FIFO when it opens its sinks.
                let deadline = Instant::now() + Duration::from_secs(60);
                while !path.exists() {
                    assert!(Instant::now() < deadline, "{} was never created", path.display());
                    std::thread::sleep(Duration::from_millis(10));
                }
                let mut r = BufReader::new(std::fs::File::open(&path).unwrap());
                let mut line = String::new();
                loop {
                    while paused.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    line.clear();
                    if r.read_line(&mut line).unwrap() == 0 {
                        return;
                    }
                    lines.lock().unwrap().push(line.trim_end().to_owned());
                }
            })
        };
        Reader { lines, paused, thread }
    }

    pub(crate) fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Waits until `n` lines arrived.
    pub(crate) fn wait_for(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.count() < n {
            assert!(Instant::now() < deadline, "{} of {n} lines arrived", self.count());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every line, once the writer closed the pipe.
    pub(crate) fn finish(self) -> Vec<String> {
        self.thread.join().unwrap();
        Arc::try_unwrap(self.lines).unwrap().into_inner().unwrap()
    }
}

#[test]
fn an_unavailable_sink_is_retried_until_it_takes_the_batch() {
    let dir = temp_dir("delivery-retry");
    let config = fifo_config(&dir, "", "");
    // Nobody reads the FIFO for the first 700 ms: the first attempts find no
    // reader, and a later one delivers every message, once.
    let late = {
        let fifo = dir.join("orders.fifo");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            Reader::start(fifo).finish()
        })
    };
    let out = replay_shop(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        late.join().unwrap(),
        ["{\"order\":1001}", "{\"order\":1002}", "{\"order\":1003}"]
    );
    assert!(stderr.contains("sink unavailable, retrying"), "{stderr}");
}

#[test]
fn when_retries_run_out_the_handlers_policy_applies() {
    let dir = temp_dir("delivery-gives-up");
    // No reader ever: three retries, at most 50 ms apart, then on_error.
    let retries = "retries = 3\nretry_max_ms = 50";
    let config = fifo_config(&dir, retries, "on_error = \"dead-letter\"\ndead_letter = \"dead\"");
    let started = Instant::now();
    let out = replay_shop(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    // Each transaction's batch is retried three times.
    assert!(
        stderr.contains("attempt=3") && !stderr.contains("attempt=4"),
        "{stderr}"
    );
    let dead: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("dead.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 3, "{dead:?}");
    for (d, order) in dead.iter().zip([1001, 1002, 1003]) {
        assert_eq!(d["sink"], "orders_queue");
        assert_eq!(d["payload"], format!("{{\"order\":{order}}}"));
        assert!(d["error"].as_str().unwrap().contains("unavailable"), "{d}");
    }

    let config = fifo_config(&dir, retries, "on_error = \"halt\"");
    let out = replay_shop(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("sink `orders_queue` refused a message of handler `orders`") && stderr.contains("no reader"),
        "{stderr}"
    );
}

/// Waits until `log` contains `what`.
fn wait_for_log(log: &Path, what: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(what) {
            return;
        }
        assert!(Instant::now() < deadline, "no `{what}` in the log:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `retries = "forever"`: rowhook waits for the reader, a stop does not,
/// and what it did not deliver is neither checkpointed nor counted in state.
#[test]
fn a_stop_while_a_sink_is_retried_keeps_the_transaction_for_the_next_start() {
    let (server, dir, config) = ledger_setup(
        "delivery-stop",
        7411,
        "",
        "kind = \"fifo\"\npath = \"out.fifo\"\nretries = \"forever\"\nretry_max_ms = 200",
    );
    server.sql("INSERT INTO crash.ledger SELECT seq, seq % 8, 1 FROM crash.seq_1_to_10");
    let log = dir.join("rowhook.log");
    let child = spawn_run(&config, &log);
    wait_for_log(&log, "sink unavailable, retrying", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    let status = interrupt(child);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "stopped after {:?}",
        asked.elapsed()
    );
    let dump = |config: &Path| rowhook_ok(&["state", "-c", config.to_str().unwrap(), "dump", "ledger"]);
    assert_eq!(dump(&config), "", "nothing was delivered, so nothing is counted");

    // With a reader, the next start delivers the ten rows and counts them.
    let reader = Reader::start(dir.join("out.fifo"));
    let child = spawn_run(&config, &log);
    reader.wait_for(10, Duration::from_secs(30));
    assert!(interrupt(child).success());
    let lines = reader.finish();
    let ids: Vec<u64> = lines
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, (1..=10).collect::<Vec<_>>(), "{lines:?}");
    assert!(
        dump(&config).contains("{\"key\":\"total\",\"counter\":10,"),
        "{}",
        dump(&config)
    );
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// A FIFO reader that stops reading holds rowhook back: the backlog stays
/// in the server's binlog (the lag grows), not in rowhook's memory, and
/// everything follows in order once the reader reads again.
#[test]
fn a_slow_sink_holds_the_reader_back_without_growing_memory() {
    let echo = crate::reload::suite_guests().join("echo.wasm");
    let server = Server::start(&[]);
    server.sql("CREATE DATABASE bp; CREATE TABLE bp.t (id INT PRIMARY KEY, pad VARCHAR(4000) NOT NULL)");
    let dir = temp_dir("delivery-backpressure");
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[source]
url = "{}"
server_id = 7412
start = "earliest"

[state]
path = "state"

[sinks.out]
kind = "fifo"
path = "out.fifo"

[[handlers]]
name = "echo"
module = "{}"
tables = ["bp.t"]
sinks = ["out"]
"#,
            server.url(),
            echo.display()
        ),
    )
    .unwrap();
    // 100-row transactions of 2,000-byte rows.
    let insert = |from: u32, txns: u32| {
        let sql: String = (0..txns)
            .map(|t| {
                let first = from + t * 100;
                format!(
                    "INSERT INTO bp.t SELECT seq, REPEAT('x', 2000) FROM bp.seq_{first}_to_{};\n",
                    first + 99
                )
            })
            .collect();
        server.sql(&sql);
    };
    let reader = Reader::start(dir.join("out.fifo"));
    let log = dir.join("rowhook.log");
    let child = spawn_run(&config, &log);
    insert(1, 10);
    reader.wait_for(1_000, Duration::from_secs(60));

    reader.paused.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1_000));
    let (held, before) = (reader.count(), rss(child.id()));
    insert(1_001, 200);
    std::thread::sleep(Duration::from_millis(2_000));
    let after = rss(child.id());
    let state: serde_json::Value =
        serde_json::from_str(&rowhook_ok(&["state", "-c", config.to_str().unwrap(), "--json"])).unwrap();
    let behind = state["server"]["bytes_behind"].as_u64().unwrap_or(0);
    eprintln!(
        "reader paused: rowhook RSS {} -> {} KiB while the server wrote {} KiB it has not read",
        before / 1024,
        after / 1024,
        behind / 1024
    );
    // A read already waiting when the pause began may take one more line.
    assert!(
        reader.count() <= held + 1,
        "the reader was paused: {held} then {}",
        reader.count()
    );
    assert!(behind > 30 << 20, "the backlog is in the binlog: {state}");
    assert!(
        after < before + (16 << 20),
        "memory grew from {before} to {after} bytes while the sink was stuck"
    );

    reader.paused.store(false, Ordering::SeqCst);
    reader.wait_for(21_000, Duration::from_secs(120));
    assert!(interrupt(child).success());
    let lines = reader.finish();
    let ids: Vec<u64> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["after"]["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, (1..=21_000).collect::<Vec<_>>());
}
