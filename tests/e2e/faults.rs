//! Connection faults and bad start positions.
//!
//! A live `rowhook inspect` under write load loses its connection (the dump
//! thread killed, the server restarted, the server frozen) and must resume
//! at the last commit: every row exactly once, in order, with the same ids
//! (whole JSON lines, in fact) as reading the binlog files afterwards, and a
//! log line naming the cause of each reconnect. A start or resume position
//! the server no longer has is a clear error, never a silent restart
//! elsewhere.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable as _;

use rowhook::decode::txn::TableFilter;
use rowhook::decode::{ChangeVisitor, Commit, Decoder, DecoderOptions, Flow, RowChange};
use rowhook::source::StartPosition;
use rowhook::source::live::LiveOptions;
use rowhook::source::reconnect::{Resilient, RetryPolicy, Step};
use rowhook::source::server::SourceUrl;

use crate::support::{Server, json_lines, root, rowhook, rowhook_ok};

/// A `rowhook inspect` child whose output is collected as it comes.
struct Inspect {
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Inspect {
    fn start(args: &[&str]) -> Inspect {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rowhook"))
            .arg("inspect")
            .args(args)
            .env("ROWHOOK_LOG", "rowhook=info,rowhook::source=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run rowhook");
        let (out, err) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let collect = |stream: Box<dyn std::io::Read + Send>, into: Arc<Mutex<Vec<String>>>| {
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    into.lock().unwrap().push(strip_ansi(&line));
                }
            })
        };
        let readers = vec![
            collect(Box::new(child.stdout.take().unwrap()), out.clone()),
            collect(Box::new(child.stderr.take().unwrap()), err.clone()),
        ];
        Inspect {
            child,
            out,
            err,
            readers,
        }
    }

    fn lines(&self) -> usize {
        self.out.lock().unwrap().len()
    }

    fn log(&self) -> String {
        self.err.lock().unwrap().join("\n")
    }

    /// Waits until `ready` holds, panicking with the log after `limit`.
    fn wait(&mut self, what: &str, limit: Duration, ready: impl Fn(&Inspect) -> bool) -> Duration {
        let started = Instant::now();
        while !ready(self) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("rowhook exited ({status}) while waiting for {what}:\n{}", self.log());
            }
            assert!(
                started.elapsed() < limit,
                "no {what} within {limit:?} ({} lines so far):\n{}",
                self.lines(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        started.elapsed()
    }

    /// Waits for the process to exit by itself.
    fn exit(mut self, limit: Duration) -> (std::process::ExitStatus, Vec<String>, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("rowhook did not exit within {limit:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        let out = self.out.lock().unwrap().clone();
        (status, out, self.log())
    }

    /// Stops the process and returns what it printed.
    fn stop(mut self) -> (Vec<String>, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        let out = self.out.lock().unwrap().clone();
        (out, self.log())
    }
}

impl Drop for Inspect {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Inserts rows 1, 2, 3… into `f.t` in transactions of one to three rows
/// until stopped, through any number of lost connections. After a failed
/// commit it goes on from what the table holds, so ids stay contiguous.
struct Writer {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Writer {
    fn start(server: &Server) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let url = server.url();
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut txn = 0u64;
                while !flag.load(Ordering::Relaxed) {
                    let Ok(mut conn) = mysql_async::Conn::from_url(&url).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let Ok(Some(max)) = conn.query_first::<u64, _>("SELECT COALESCE(MAX(id), 0) FROM f.t").await else {
                        continue;
                    };
                    let mut next = max + 1;
                    while !flag.load(Ordering::Relaxed) {
                        let rows = txn % 3 + 1;
                        let values: Vec<String> = (next..next + rows)
                            .map(|id| format!("({id}, {txn}, REPEAT('x', {}))", id % 50))
                            .collect();
                        let insert = format!("INSERT INTO f.t VALUES {}", values.join(","));
                        let done = async {
                            conn.query_drop("BEGIN").await?;
                            conn.query_drop(insert).await?;
                            conn.query_drop("COMMIT").await
                        };
                        if done.await.is_err() {
                            break;
                        }
                        next += rows;
                        txn += 1;
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                }
            });
        });
        Writer { stop, handle }
    }

    /// Stops writing and returns how many rows the table holds (checked
    /// to be exactly the ids 1..=n).
    fn finish(self, server: &Server) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap();
        let out = server.sql("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM f.t");
        let (count, max) = out.trim().split_once('\t').unwrap();
        assert_eq!(count, max, "the table's ids are not contiguous");
        count.parse().unwrap()
    }
}

fn create_table(server: &Server) {
    server.sql("CREATE DATABASE f; CREATE TABLE f.t (id BIGINT PRIMARY KEY, txn BIGINT, pad VARCHAR(64));");
}

/// The `f.t` changes of the server's binlog files, read from the files.
fn from_files(server: &Server) -> Vec<String> {
    let index = std::fs::read_to_string(server.binlog("mysql-bin.index")).unwrap();
    let files: Vec<String> = index
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let name = std::path::Path::new(l.trim()).file_name().unwrap().to_str().unwrap();
            server.binlog(name).to_str().unwrap().to_string()
        })
        .collect();
    let mut args = vec!["inspect", "--tables", "f.t", "--file"];
    args.extend(files.iter().map(String::as_str));
    rowhook_ok(&args).lines().map(str::to_string).collect()
}

/// Every row 1..=rows exactly once and in order, and the very lines a read
/// of the binlog files gives.
fn assert_exactly_once(server: &Server, live: &[String], rows: u64) {
    let ids: Vec<u64> = json_lines(&live.join("\n"))
        .iter()
        .map(|c| c["after"]["id"].as_u64().unwrap())
        .collect();
    if ids != (1..=rows).collect::<Vec<_>>() {
        let mut seen = std::collections::HashSet::new();
        let dup: Vec<&u64> = ids.iter().filter(|i| !seen.insert(**i)).take(5).collect();
        let missing: Vec<u64> = (1..=rows).filter(|i| !seen.contains(i)).take(5).collect();
        panic!(
            "live rows are not 1..={rows} once each in order: {} lines, duplicates {dup:?}, missing {missing:?}",
            ids.len()
        );
    }
    let files = from_files(server);
    assert_eq!(files.len(), live.len());
    for (i, (l, f)) in live.iter().zip(&files).enumerate() {
        assert_eq!(l, f, "line {i} differs between the live stream and the files");
    }
}

/// The `Binlog Dump` thread ids on the server.
pub(crate) fn dump_threads(server: &Server) -> Vec<u64> {
    server
        .sql("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump'")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Log lines saying a stream was resumed, with their cause.
pub(crate) fn resumed_causes(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("binlog stream resumed"))
        .map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("cause="))
                .unwrap_or_else(|| panic!("no cause in: {l}"))
                .to_string()
        })
        .collect()
}

fn down_ms(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("binlog stream resumed"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("down_ms=")))
        .map(|v| v.parse().unwrap())
        .collect()
}

/// Purges the binlogs before `file`. MariaDB keeps a file a moment longer
/// while InnoDB may still need it for crash recovery, so this waits for it.
fn purge_to(server: &Server, file: &str) {
    let started = Instant::now();
    loop {
        server.sql(&format!("PURGE BINARY LOGS TO '{file}'"));
        let logs = server.sql("SHOW BINARY LOGS");
        if logs.lines().next().is_some_and(|l| l.starts_with(file)) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "cannot purge up to {file}: {logs}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn mariadb_sh(action: &str, server: &Server) {
    let ok = Command::new("bash")
        .arg(root().join("tests/mariadb.sh"))
        .arg(action)
        .arg(&server.dir)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "tests/mariadb.sh {action} failed");
}

#[test]
fn killed_connections_resume_at_the_last_commit() {
    let server = Server::start(&[]);
    create_table(&server);
    let url = server.url();
    let mut inspect = Inspect::start(&[
        "--url",
        &url,
        "--tables",
        "f.t",
        "--server-id",
        "911",
        "--heartbeat",
        "1",
    ]);
    let writer = Writer::start(&server);
    let mut threads = Vec::new();
    let mut resumes = Vec::new();
    for round in 0..6 {
        let seen = inspect.lines();
        inspect.wait("new rows", Duration::from_secs(30), |i| i.lines() > seen + 20);
        if round % 2 == 1 {
            // A rotation just before the loss: the resume point moves to
            // the new file only once the stream got there.
            server.sql("FLUSH BINARY LOGS");
        }
        // The newest dump thread is ours; a killed one may linger a moment.
        let id = dump_threads(&server)
            .into_iter()
            .filter(|id| !threads.contains(id))
            .max()
            .expect("rowhook's dump thread");
        server.sql(&format!("KILL {id}"));
        threads.push(id);
        let at_kill = inspect.lines();
        let took = inspect.wait("rows after the kill", Duration::from_secs(10), |i| {
            i.lines() > at_kill + 5
        });
        resumes.push(took);
    }
    let rows = writer.finish(&server);
    inspect.wait("every row", Duration::from_secs(30), |i| i.lines() as u64 >= rows);
    // Anything more would be a duplicate: give it a moment to show.
    std::thread::sleep(Duration::from_millis(500));
    let (out, log) = inspect.stop();
    eprintln!(
        "{rows} rows, {} kills; rows flowing again after {:?}; down_ms {:?}",
        threads.len(),
        resumes,
        down_ms(&log)
    );
    assert!(rows > 300, "too little load: {rows} rows");
    assert_exactly_once(&server, &out, rows);
    assert_eq!(resumed_causes(&log), vec!["killed"; 6], "{log}");
    assert!(
        down_ms(&log).iter().all(|&ms| ms < 3000),
        "slow resumes: {:?}",
        down_ms(&log)
    );
}

/// Cut inside a transaction larger than the socket buffers: the
/// transaction is read again from its start, and what was printed of it is
/// not printed twice.
#[test]
fn a_transaction_cut_by_a_kill_is_printed_once() {
    let server = Server::start(&[]);
    create_table(&server);
    let url = server.url();
    let mut inspect = Inspect::start(&["--url", &url, "--tables", "f.t", "--server-id", "917"]);
    let rows = 300_000u64;
    server.sql(&format!(
        "INSERT INTO f.t SELECT seq, 0, REPEAT('x', 40) FROM test.seq_1_to_{rows}; INSERT INTO f.t VALUES ({}, 1, 'after');",
        rows + 1
    ));
    inspect.wait("the first rows of the big transaction", Duration::from_secs(60), |i| {
        i.lines() > 5_000
    });
    let id = dump_threads(&server).into_iter().max().expect("rowhook's dump thread");
    server.sql(&format!("KILL {id}"));
    let at_kill = inspect.lines();
    inspect.wait("every row", Duration::from_secs(120), |i| i.lines() as u64 > rows);
    std::thread::sleep(Duration::from_millis(500));
    let (out, log) = inspect.stop();
    eprintln!(
        "killed at {at_kill} of {rows} rows printed; down_ms {:?}",
        down_ms(&log)
    );
    assert!((at_kill as u64) < rows, "the transaction was through before the kill");
    assert_exactly_once(&server, &out, rows + 1);
    assert_eq!(resumed_causes(&log), ["killed"], "{log}");
    assert!(log.contains("the stream was lost inside a transaction"), "{log}");
}

#[test]
fn a_restarted_server_is_followed() {
    let server = Server::start(&[]);
    create_table(&server);
    let url = server.url();
    let mut inspect = Inspect::start(&[
        "--url",
        &url,
        "--tables",
        "f.t",
        "--server-id",
        "912",
        "--heartbeat",
        "1",
    ]);
    let writer = Writer::start(&server);
    let mut resumes = Vec::new();
    for _ in 0..2 {
        let seen = inspect.lines();
        inspect.wait("new rows", Duration::from_secs(30), |i| i.lines() > seen + 50);
        mariadb_sh("down", &server);
        std::thread::sleep(Duration::from_secs(1));
        mariadb_sh("up", &server);
        let up = inspect.lines();
        resumes.push(inspect.wait("rows after the restart", Duration::from_secs(30), |i| {
            i.lines() > up + 5
        }));
    }
    let rows = writer.finish(&server);
    inspect.wait("every row", Duration::from_secs(30), |i| i.lines() as u64 >= rows);
    std::thread::sleep(Duration::from_millis(500));
    let (out, log) = inspect.stop();
    eprintln!(
        "{rows} rows, 2 restarts; rows flowing again {:?} after the server was up; down_ms {:?}",
        resumes,
        down_ms(&log)
    );
    assert_exactly_once(&server, &out, rows);
    assert_eq!(resumed_causes(&log), vec!["server_restart"; 2], "{log}");
    // While it was down, every attempt was refused and logged as such.
    assert!(
        log.contains("reconnecting failed") && log.contains("Connection refused"),
        "{log}"
    );
}

/// Row change ids and commits, as a consumer of the library sees them.
#[derive(Default)]
struct Consumer {
    ids: Vec<String>,
    committed: usize,
    commits: u64,
}

impl ChangeVisitor for Consumer {
    fn change(&mut self, change: &RowChange<'_>) -> Flow {
        self.ids.push(change.id());
        Flow::Continue
    }
    fn commit(&mut self, _: &Commit<'_>) -> Flow {
        self.committed = self.ids.len();
        self.commits += 1;
        Flow::Continue
    }
}

/// The library API as `rowhook run` drives it: `next_event` raced against
/// a timer in `select!`, so it is dropped every few milliseconds, also in
/// the middle of reconnecting. Reconnects still happen, once per fault, and
/// every change arrives once.
#[test]
fn next_event_may_be_cancelled_during_an_outage() {
    let server = Server::start(&[]);
    create_table(&server);
    let writer = Writer::start(&server);
    let opts = LiveOptions {
        url: SourceUrl::parse(&server.url()).unwrap(),
        server_id: 918,
        start: StartPosition::Earliest,
        heartbeat: Duration::from_secs(1),
        allow_minimal_metadata: false,
        successor: false,
    };
    // The rows written, known once the faults are over and the writer
    // stopped; until then u64::MAX.
    let written = AtomicU64::new(u64::MAX);
    let (ids, reconnects, cancelled) = std::thread::scope(|scope| {
        let (server, written) = (&server, &written);
        scope.spawn(move || {
            let rows = || server.sql("SELECT COUNT(*) FROM f.t").trim().parse::<u64>().unwrap();
            std::thread::sleep(Duration::from_secs(1));
            let before = rows();
            server.sql(&format!("KILL {}", dump_threads(server)[0]));
            while rows() < before + 100 {
                std::thread::sleep(Duration::from_millis(50));
            }
            mariadb_sh("down", server);
            std::thread::sleep(Duration::from_secs(1));
            mariadb_sh("up", server);
            std::thread::sleep(Duration::from_secs(1));
            written.store(writer.finish(server), Ordering::SeqCst);
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut source = Resilient::open(opts, RetryPolicy::default()).await.unwrap();
            let stats = source.stats();
            let dopts = DecoderOptions {
                tables: TableFilter::parse("f.t").unwrap(),
                ..Default::default()
            };
            let mut decoder = Decoder::new(dopts, "");
            let mut consumer = Consumer::default();
            let mut cancelled = 0u64;
            let mut quiet_since = Instant::now();
            let started = Instant::now();
            // Until every row written has arrived (however long the
            // reconnect after the restart takes on a loaded machine), and
            // the stream has been quiet a while, so a duplicate would show.
            while !(consumer.committed as u64 >= written.load(Ordering::SeqCst)
                && quiet_since.elapsed() > Duration::from_secs(1))
            {
                assert!(started.elapsed() < Duration::from_secs(120), "the test did not end");
                let step = tokio::select! {
                    step = source.next_event() => step.unwrap(),
                    () = tokio::time::sleep(Duration::from_millis(20)) => {
                        cancelled += 1;
                        continue;
                    }
                };
                match step {
                    Step::Event(event) => {
                        let raw = source.raw(&event);
                        let commits = consumer.commits;
                        decoder.feed(raw, &mut consumer).unwrap();
                        if consumer.commits != commits {
                            source.committed(decoder.resume_position());
                            quiet_since = Instant::now();
                        }
                    }
                    Step::Resumed(_) => {
                        decoder.abandon_transaction();
                        consumer.ids.truncate(consumer.committed);
                    }
                }
            }
            (consumer.ids, stats.reconnects(), cancelled)
        })
    });
    let rows = written.load(Ordering::SeqCst);
    let files: Vec<String> = json_lines(&from_files(&server).join("\n"))
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    eprintln!("{rows} rows; {cancelled} cancelled calls; {reconnects:?}");
    assert_eq!(ids.len() as u64, rows);
    assert_eq!(ids, files);
    assert_eq!(
        (reconnects.killed, reconnects.server_restart, reconnects.total()),
        (1, 1, 2)
    );
    assert!(cancelled > 50, "only {cancelled} cancellations");
}

/// A frozen server (SIGSTOP) sends no heartbeats: the stream is declared
/// dead after three missed periods and resumed once the server is back.
#[test]
fn a_stalled_server_is_detected_and_resumed() {
    let server = Server::start(&[]);
    create_table(&server);
    let insert = |from: u64, to: u64| {
        let mut sql = String::new();
        for id in from..=to {
            sql.push_str(&format!("INSERT INTO f.t VALUES ({id}, {id}, 'x');\n"));
        }
        server.sql(&sql);
    };
    insert(1, 10);
    let url = server.url();
    let args = ["--url", &url, "--tables", "f.t", "--heartbeat", "0.5"];
    let mut patient = Inspect::start(&[&args[..], &["--server-id", "913"]].concat());
    let mut impatient = Inspect::start(&[&args[..], &["--server-id", "914", "--max-reconnect-attempts", "0"]].concat());
    patient.wait("the first rows", Duration::from_secs(20), |i| i.lines() == 10);
    impatient.wait("the first rows", Duration::from_secs(20), |i| i.lines() == 10);
    let pid = std::fs::read_to_string(server.dir.join("pid"))
        .unwrap()
        .trim()
        .to_string();
    let signal = |sig: &str| {
        assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    };
    signal("-STOP");
    let frozen = Instant::now();
    let noticed = patient.wait("the stall noticed", Duration::from_secs(10), |i| {
        i.log().contains("binlog stream lost")
    });
    // The impatient one gives up at once, saying why.
    let (status, out, log) = impatient.exit(Duration::from_secs(10));
    // A first connection to the frozen server gives up after the connect
    // timeout (10 s), naming the server, instead of hanging.
    let late = Inspect::start(&[&args[..], &["--server-id", "915"]].concat());
    let (late_status, late_out, late_log) = late.exit(Duration::from_secs(20));
    signal("-CONT");
    let thawed = Instant::now();
    insert(11, 20);
    patient.wait("the rows after the stall", Duration::from_secs(30), |i| i.lines() == 20);
    let flowing = thawed.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let (rows, patient_log) = patient.stop();
    eprintln!(
        "stall noticed after {noticed:?} (heartbeat 0.5 s), frozen {:?}; rows again {flowing:?} after SIGCONT",
        thawed - frozen
    );

    assert!(!status.success());
    assert!(
        log.contains("no event or heartbeat") && log.contains("reconnecting is off"),
        "{log}"
    );
    assert_eq!(out.len(), 10);
    assert!(!late_status.success() && late_out.is_empty());
    assert!(
        late_log.contains(&format!("127.0.0.1:{}", server.port)) && late_log.contains("did not answer within 10.0s"),
        "{late_log}"
    );
    assert_exactly_once(&server, &rows, 20);
    assert_eq!(resumed_causes(&patient_log), ["stalled"], "{patient_log}");
    assert!(patient_log.contains("no event or heartbeat"), "{patient_log}");
}

fn assert_refused(out: &std::process::Output, must_contain: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure: {err}");
    assert!(
        out.stdout.is_empty(),
        "printed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!err.contains("panicked"), "{err}");
    for m in must_contain {
        assert!(err.contains(m), "stderr lacks `{m}`: {err}");
    }
}

#[test]
fn purged_and_unknown_start_positions_are_refused() {
    let server = Server::start(&[]);
    create_table(&server);
    // GTIDs 0-1-1, 0-1-2 are the DDL; rows are 0-1-3 .. 0-1-8, two per file.
    for file in 0..3 {
        server.sql(&format!(
            "INSERT INTO f.t VALUES ({}, 0, 'a'); INSERT INTO f.t VALUES ({}, 0, 'b'); FLUSH BINARY LOGS;",
            file * 2 + 1,
            file * 2 + 2
        ));
    }
    purge_to(&server, "mysql-bin.000003");
    let url = server.url();
    let inspect = |start: &str| {
        rowhook(&[
            "inspect",
            "--url",
            &url,
            "--start",
            start,
            "--limit",
            "1",
            "--server-id",
            "915",
        ])
    };

    assert_refused(
        &inspect("mysql-bin.000001:4"),
        &[
            "binlog file mysql-bin.000001 (needed from position 4) was purged on mysql://root@127.0.0.1:",
            "the earliest available is mysql-bin.000003",
            "start from `earliest` or from the GTID state, and expect missed changes",
        ],
    );
    assert_refused(
        &inspect("mysql-bin.000007:4"),
        &["has no binlog file mysql-bin.000007 (it has mysql-bin.000003 to mysql-bin.000004)"],
    );
    assert_refused(
        &inspect("mysql-bin.000003:999999"),
        &["is past the end of that binlog file"],
    );
    // Inside an event: only the server can tell (error 1236, mapped).
    assert_refused(
        &inspect("mysql-bin.000003:5"),
        &["cannot send the binlog from mysql-bin.000003:5: bogus data in log event"],
    );
    assert_refused(
        &inspect("0-1-3"),
        &[
            "the binlogs holding the transactions after GTID 0-1-3 were purged",
            "its oldest binlog starts after 0-1-6",
            "expect missed changes",
        ],
    );
    assert_refused(
        &inspect("0-1-999"),
        &["does not have GTID 0-1-999 (its newest in domain 0 is 0-1-8)"],
    );
    assert_refused(
        &inspect("5-1-1"),
        &["does not have GTID 5-1-1 (it has no transactions in domain 5"],
    );
    assert_refused(&inspect("0-7-3"), &["does not have GTID 0-7-3"]);

    // What the server still has is served: from the oldest file, and from
    // the GTID at its start.
    for start in ["earliest", "mysql-bin.000003:4", "0-1-6"] {
        let out = rowhook_ok(&[
            "inspect",
            "--url",
            &url,
            "--start",
            start,
            "--limit",
            "1",
            "--server-id",
            "915",
        ]);
        assert_eq!(json_lines(&out)[0]["after"]["id"], 5, "from {start}");
    }
}

/// Binlogs purged while rowhook was cut off (frozen, its connection
/// killed): a file it had read to the end (it followed the rotation) does
/// not matter; the file of its last commit ends the run at once with the
/// same error a start there gets, instead of retrying forever or going on
/// elsewhere.
#[test]
fn binlogs_purged_while_cut_off() {
    let server = Server::start(&[]);
    create_table(&server);
    server.sql("INSERT INTO f.t VALUES (1, 0, 'a'), (2, 0, 'b');");
    let url = server.url();
    let mut inspect = Inspect::start(&["--url", &url, "--tables", "f.t", "--server-id", "916"]);
    inspect.wait("the first rows", Duration::from_secs(20), |i| i.lines() == 2);
    let pid = inspect.child.id().to_string();
    let signal = |sig: &str| {
        assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    };
    // Frozen, it cannot reconnect before the purge.
    let cut_off = |purge_to_file: &str, sql: &str| {
        signal("-STOP");
        let ids = dump_threads(&server);
        server.sql(&format!("KILL {}", ids[0]));
        let started = Instant::now();
        while !dump_threads(&server).is_empty() {
            assert!(started.elapsed() < Duration::from_secs(10), "the dump thread lingers");
            std::thread::sleep(Duration::from_millis(50));
        }
        server.sql(sql);
        purge_to(&server, purge_to_file);
        signal("-CONT");
    };

    // Read to the end of mysql-bin.000001 and into mysql-bin.000002, which
    // holds no transaction yet: 000001 is no longer needed.
    server.sql("FLUSH BINARY LOGS");
    inspect.wait("the rotation followed", Duration::from_secs(10), |i| {
        i.log().contains("the server rotated its binlog") && i.log().contains("to=mysql-bin.000002")
    });
    cut_off("mysql-bin.000002", "SELECT 1");
    inspect.wait("the resume", Duration::from_secs(10), |i| {
        i.log().contains("binlog stream resumed")
    });
    server.sql("INSERT INTO f.t VALUES (3, 0, 'c');");
    inspect.wait("the next row", Duration::from_secs(10), |i| i.lines() == 3);

    // Its last commit is in mysql-bin.000002 now: purge that.
    cut_off(
        "mysql-bin.000003",
        "INSERT INTO f.t VALUES (4, 0, 'd'); FLUSH BINARY LOGS;",
    );
    let (status, out, log) = inspect.exit(Duration::from_secs(15));
    assert!(!status.success());
    assert_eq!(out.len(), 3);
    assert!(
        log.contains("binlog file mysql-bin.000002 (needed from position ")
            && log.contains("was purged on")
            && log.contains("the earliest available is mysql-bin.000003"),
        "{log}"
    );
    assert_eq!(resumed_causes(&log), ["killed"], "{log}");
    assert!(!log.contains("reconnecting failed"), "{log}");
}
