//! `rowhook capture` against private `nats-server -js` instances and a
//! private MariaDB: every change of the subscribed tables lands in the
//! stream once, on the subject of its row's partition, in binlog order per
//! partition, with its headers; a killed capture's standby takes over
//! within the lease and the stream still holds each change once; a capture
//! paused past its lease publishes nothing more; a JetStream node of three
//! can stop.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use crate::crash::{Rng, clock_seed};
use crate::nats_support::{NatsServer, admin};
use crate::support::{Server, interrupt, json_lines, rowhook, temp_dir, wait_for};

const SCHEMA: &str = "CREATE DATABASE shop; \
    CREATE TABLE shop.orders (id INT PRIMARY KEY, v INT NOT NULL); \
    CREATE TABLE shop.items (o INT, n INT, q INT, PRIMARY KEY (o, n)); \
    CREATE TABLE shop.log (x INT); \
    CREATE TABLE shop.other (id INT PRIMARY KEY)";

/// A config publishing `shop.orders`, `shop.items` and `shop.log` (not
/// `shop.other`) of `server` to the JetStream servers `nats`.
fn config(server: &Server, nats: &str, cluster: &str) -> String {
    format!(
        r#"
[source]
url = "{url}"
server_id = 8801
heartbeat_secs = 1
start = "earliest"

[cluster]
nats = "{nats}"
source = "shop"
partitions = 4
lease_ttl_ms = 2000
duplicate_window_secs = 30
checkpoint_interval_ms = 50
{cluster}

[sinks.out]
kind = "stdout"

[[handlers]]
name = "echo"
module = "{module}"
tables = ["shop.orders", "shop.items", "shop.log"]
sinks = ["out"]
"#,
        url = server.url(),
        module = crate::reload::suite_guests().join("echo.wasm").display(),
    )
}

/// Random transactions of one to five statements over the three tables:
/// inserts of new keys, updates and deletes of keys inserted before (some
/// rows twice in one transaction), keyless rows, and the table not
/// subscribed to.
struct Workload {
    rng: Rng,
    next: i64,
}

impl Workload {
    fn new(seed: u64) -> Workload {
        Workload {
            rng: Rng(seed | 1),
            next: 1,
        }
    }

    fn transactions(&mut self, n: usize) -> String {
        let mut sql = String::new();
        for _ in 0..n {
            sql.push_str("BEGIN;");
            for _ in 0..=self.rng.below(4) {
                let old = 1 + self.rng.below(self.next as u64) as i64;
                match self.rng.below(10) {
                    0..=3 => {
                        let id = self.next;
                        self.next += 1;
                        sql.push_str(&format!(
                            "INSERT INTO shop.orders VALUES ({id}, 0); INSERT INTO shop.items VALUES ({id}, 1, 1), ({id}, 2, 1);"
                        ));
                    }
                    4..=6 => sql.push_str(&format!(
                        "UPDATE shop.orders SET v = v + 1 WHERE id = {old}; UPDATE shop.items SET q = q + 1 WHERE o = {old};"
                    )),
                    7 => sql.push_str(&format!("DELETE FROM shop.items WHERE o = {old} AND n = 2;")),
                    8 => sql.push_str(&format!("INSERT INTO shop.log VALUES ({old});")),
                    _ => sql.push_str(&format!("INSERT IGNORE INTO shop.other VALUES ({old});")),
                }
            }
            sql.push_str("COMMIT;");
        }
        sql
    }
}

/// One change of the stream, with the headers of the message it came in.
#[derive(Debug, Clone)]
struct Msg {
    subject: String,
    /// The change's id, read from its encoding.
    id: String,
    /// The message's `Nats-Msg-Id`.
    msg_id: String,
    /// The message's stream sequence.
    seq: u64,
    txn: String,
    position: String,
    /// The message's `Rowhook-Count`.
    count: String,
    /// Its place in the message, and how many changes the message holds.
    at: usize,
    of: usize,
    /// The last change of its transaction in its partition, by the
    /// message's marks: the last change of a message marked
    /// `Rowhook-Last`, or one the next change of its message is of another
    /// transaction.
    last: bool,
    payload: Vec<u8>,
}

/// The changes of a message's payload: each frame's bytes.
fn frames(payload: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        assert!(rest.len() >= 4, "a frame's length is cut short");
        let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        assert!(rest.len() >= 4 + n, "a frame runs past its message");
        out.push(rest[4..4 + n].to_vec());
        rest = &rest[4 + n..];
    }
    out
}

/// Every change of `stream`, in stream order, read by ordered consumers.
/// A cluster that lost a node, or a busy machine, may be slow to answer:
/// a consumer that brings nothing for 10 s is made again from the next
/// sequence, until everything up to the stream's last sequence is read
/// (within two minutes).
fn stream_of(url: &str, stream: &str) -> Vec<Msg> {
    use futures_util::StreamExt as _;
    let rt = crate::sink_support::rt();
    rt.block_on(async {
        let js = admin(url).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut out = Vec::new();
        let mut next = 1u64;
        loop {
            let got = async {
                let mut s = js.get_stream(stream).await?;
                let last = s.info().await?.state.last_sequence;
                let c = s
                    .create_consumer(jetstream::consumer::pull::OrderedConfig {
                        deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence: next },
                        ..Default::default()
                    })
                    .await?;
                let messages = c.messages().await?;
                Ok::<_, async_nats::Error>((last, messages))
            };
            let (last, mut messages) = match got.await {
                Ok(got) => got,
                Err(e) => {
                    assert!(Instant::now() < deadline, "reading stream {stream}: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            while next <= last {
                let m = match tokio::time::timeout(Duration::from_secs(10), messages.next()).await {
                    Ok(Some(Ok(m))) => m,
                    quiet => {
                        assert!(
                            Instant::now() < deadline,
                            "reading stream {stream}: at sequence {next} of {last}: {quiet:?}"
                        );
                        break;
                    }
                };
                let seq = m.info().unwrap().stream_sequence;
                next = seq + 1;
                push_changes(&m, seq, &mut out);
            }
            if next > last {
                return out;
            }
        }
    })
}

/// The changes of message `m` (stream sequence `seq`), pushed to `out`.
fn push_changes(m: &async_nats::jetstream::Message, seq: u64, out: &mut Vec<Msg>) {
    let h = m.headers.clone().unwrap_or_default();
    let get = |k: &str| h.get(k).map(|v| v.as_str().to_owned()).unwrap_or_default();
    let changes = frames(&m.payload);
    let of = changes.len();
    let txns: Vec<String> = changes
        .iter()
        .map(|c| {
            rowhook_abi::Change::parse(c)
                .expect("each frame is a row change")
                .txn()
                .to_owned()
        })
        .collect();
    for (at, payload) in changes.into_iter().enumerate() {
        let id = rowhook_abi::Change::parse(&payload)
            .expect("each frame is a row change")
            .id()
            .to_owned();
        let last = match txns.get(at + 1) {
            Some(next) => *next != txns[at],
            None => get("Rowhook-Last") == "1",
        };
        out.push(Msg {
            subject: m.subject.to_string(),
            id,
            msg_id: get("Nats-Msg-Id"),
            seq,
            txn: get("Rowhook-Txn"),
            position: get("Rowhook-Position"),
            count: get("Rowhook-Count"),
            at,
            of,
            last,
            payload,
        });
    }
}

/// How many messages `stream` holds (0 before it exists).
fn stream_count(url: &str, stream: &str) -> u64 {
    let rt = crate::sink_support::rt();
    rt.block_on(async {
        let js = admin(url).await;
        match js.get_stream(stream).await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        }
    })
}

/// The JSON value of the capture's key in bucket `STREAM_SUFFIX`, if any.
fn capture_entry(url: &str, stream: &str, suffix: &str) -> Option<serde_json::Value> {
    let rt = crate::sink_support::rt();
    rt.block_on(async {
        let js = admin(url).await;
        let kv = js.get_key_value(format!("{stream}_{suffix}")).await.ok()?;
        let v = kv.get("capture").await.ok()??;
        serde_json::from_slice(&v).ok()
    })
}

/// The transaction the capture checkpoint of `stream` is after, if any.
fn checkpoint_txn(url: &str, stream: &str) -> Option<String> {
    Some(
        capture_entry(url, stream, "checkpoints")?["at"]["txn"]
            .as_str()?
            .to_owned(),
    )
}

/// Waits until the capture checkpoint of `stream` is after the last
/// transaction in the binlog of `server`: every change of it is published
/// and acknowledged. (The last transaction of any table: one of tables the
/// capture does not publish moves its checkpoint too.) A capture that does
/// not get there within `within` fails the test with the end of its log
/// (`log`) and where its checkpoint is.
fn wait_published(url: &str, stream: &str, server: &Server, within: Duration, log: &Path) {
    let all = binlog_lines(server, None);
    let end = txn_of(all.last().unwrap()["id"].as_str().unwrap()).to_owned();
    let deadline = Instant::now() + within;
    loop {
        let at = checkpoint_txn(url, stream);
        if at.as_deref() == Some(end.as_str()) {
            return;
        }
        if Instant::now() >= deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "timed out waiting for every change published: the checkpoint is after {at:?}, not {end}; \
                 {} messages in the stream; the capture's log ends:\n{}",
                stream_count(url, stream),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The transaction part of a change id (`TXN:EVENT:ROW`).
fn txn_of(id: &str) -> &str {
    id.rsplitn(3, ':').nth(2).expect("a change id has three parts")
}

/// Who holds the capture lease of `stream`, if anyone.
fn lease_holder(url: &str, stream: &str) -> Option<String> {
    Some(capture_entry(url, stream, "leases")?["holder"].as_str()?.to_owned())
}

/// The changes of the subscribed tables in the server's binlog files, in
/// binlog order, as `rowhook inspect` decodes them.
fn binlog_changes(server: &Server) -> Vec<serde_json::Value> {
    binlog_lines(server, Some("shop.orders,shop.items,shop.log"))
}

/// The changes in the binlog of `server` of `tables` (all, if none), in
/// binlog order.
fn binlog_lines(server: &Server, tables: Option<&str>) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(server.dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e.len() == 6 && e.to_str().unwrap().bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    files.sort();
    let mut args = vec!["inspect"];
    if let Some(tables) = tables {
        args.extend(["--tables", tables]);
    }
    args.push("--file");
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let out = rowhook(&args);
    assert!(
        out.status.success(),
        "inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&String::from_utf8_lossy(&out.stdout))
}

/// The row a change is of: table and key (the before image's for updates
/// and deletes), or the table alone for the keyless one.
fn row_of(c: &serde_json::Value) -> String {
    let table = c["table"].as_str().unwrap();
    let image = match c["op"].as_str().unwrap() {
        "update" | "delete" => &c["before"],
        _ => &c["after"],
    };
    match table {
        "orders" => format!("orders/{}", image["id"]),
        "items" => format!("items/{}/{}", image["o"], image["n"]),
        _ => table.to_owned(),
    }
}

/// Checks the stream against the binlog: each change exactly once (one
/// sequence per id), every change of a row on one subject, each subject's
/// changes in binlog order, headers and payloads that agree with the
/// changes of each message (one table's; its first change's transaction
/// and position in the headers), and the last mark on exactly the last
/// change of each transaction in each partition (of all its tables).
fn check_stream(expected: &[serde_json::Value], stream: &[Msg]) {
    let mut seen = HashSet::new();
    for m in stream {
        assert!(seen.insert(m.id.clone()), "change {} is in the stream twice", m.id);
    }
    let want: Vec<String> = expected.iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect();
    let want_set: HashSet<&String> = want.iter().collect();
    let missing: Vec<&String> = want.iter().filter(|id| !seen.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} changes missing, first {:?}",
        missing.len(),
        missing.first()
    );
    let extra: Vec<&Msg> = stream.iter().filter(|m| !want_set.contains(&m.id)).collect();
    assert!(
        extra.is_empty(),
        "changes not in the binlog: {:?}",
        extra.first().map(|m| &m.id)
    );
    let order: HashMap<&str, usize> = want.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    let by_id: HashMap<&str, &serde_json::Value> = expected.iter().map(|c| (c["id"].as_str().unwrap(), c)).collect();
    let mut subject_of_row: HashMap<String, &str> = HashMap::new();
    let mut last_in_subject: HashMap<&str, usize> = HashMap::new();
    let mut groups: BTreeMap<(String, String), Vec<(bool, String)>> = BTreeMap::new();
    for m in stream {
        let c = by_id[m.id.as_str()];
        let row = row_of(c);
        let subject = subject_of_row.entry(row.clone()).or_insert(&m.subject);
        assert_eq!(*subject, m.subject, "row {row} is on two subjects");
        let at = order[m.id.as_str()];
        if let Some(before) = last_in_subject.insert(&m.subject, at) {
            assert!(before < at, "{}: change {} comes after a later change", m.subject, m.id);
        }
        let parts: Vec<&str> = m.subject.split('.').collect();
        assert_eq!(parts.len(), 5, "{}", m.subject);
        assert_eq!(&parts[..4], ["rowhook", "shop", "shop", c["table"].as_str().unwrap()]);
        assert!(parts[4].parse::<u32>().unwrap() < 4);
        let change = rowhook_abi::Change::parse(&m.payload).expect("the payload is a row change");
        assert_eq!(change.op().as_str(), c["op"].as_str().unwrap());
        assert_eq!(m.count, m.of.to_string(), "{}: Rowhook-Count", m.msg_id);
        if m.at == 0 {
            assert_eq!(m.msg_id, m.id, "a message's id is its first change's");
            assert_eq!(change.txn(), m.txn, "{}: Rowhook-Txn is its first change's", m.id);
            assert_eq!(m.position, format!("{}:{}", c["file"].as_str().unwrap(), c["pos"]));
        }
        // A partition holds every table's changes of its rows.
        groups
            .entry((change.txn().to_owned(), parts[4].to_owned()))
            .or_default()
            .push((m.last, m.id.clone()));
    }
    for ((txn, partition), marks) in groups {
        let got: Vec<bool> = marks.iter().map(|(last, _)| *last).collect();
        let want: Vec<bool> = (0..marks.len()).map(|i| i + 1 == marks.len()).collect();
        assert_eq!(
            got, want,
            "the last marks of transaction {txn} in partition {partition}: {marks:?}"
        );
    }
}

fn spawn_capture(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_rowhook"))
        .args(["capture", "-c"])
        .arg(config)
        .env("ROWHOOK_LOG", "rowhook=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Waits until the stream holds `n` changes, reading them again each time
/// its message count moves.
fn wait_count(url: &str, stream: &str, n: usize, within: Duration) {
    let mut messages = 0;
    wait_for(&format!("{n} changes in {stream}"), within, || {
        let now = stream_count(url, stream);
        now != std::mem::replace(&mut messages, now) && stream_of(url, stream).len() >= n
    });
}

#[test]
fn capture_publishes_each_change_once_by_partition_in_binlog_order() {
    let server = Server::start(&[]);
    server.sql(SCHEMA);
    let mut work = Workload::new(clock_seed());
    server.sql(&work.transactions(400));
    // One transaction of 2,500 keyless rows: one partition, its changes in
    // three messages, cut at 1,024 changes inside it.
    let rows: Vec<String> = (0..2500).map(|i| format!("({i})")).collect();
    server.sql(&format!(
        "BEGIN; INSERT INTO shop.log VALUES {}; COMMIT;",
        rows.join(",")
    ));
    server.sql(&work.transactions(100));
    let nats = NatsServer::start("capture-once", &[]);
    let dir = temp_dir("capture-once");
    let cfg = dir.join("rowhook.toml");
    std::fs::write(&cfg, config(&server, &nats.url(), "")).unwrap();
    let log = dir.join("capture.log");
    let child = spawn_capture(&cfg, &log);
    let expected = binlog_changes(&server);
    wait_count(&nats.url(), "ROWHOOK_SHOP", expected.len(), Duration::from_secs(60));
    // Stopped and started again, it goes on from its checkpoint.
    assert!(interrupt(child).success(), "{}", std::fs::read_to_string(&log).unwrap());
    server.sql(&work.transactions(200));
    let child = spawn_capture(&cfg, &log);
    let expected = binlog_changes(&server);
    wait_count(&nats.url(), "ROWHOOK_SHOP", expected.len(), Duration::from_secs(60));
    assert!(interrupt(child).success());
    let stream = stream_of(&nats.url(), "ROWHOOK_SHOP");
    check_stream(&expected, &stream);
    let big_txn = (stream.iter())
        .filter(|m| m.subject.starts_with("rowhook.shop.shop.log."))
        .fold(HashMap::<&str, usize>::new(), |mut n, m| {
            *n.entry(txn_of(&m.id)).or_default() += 1;
            n
        })
        .into_iter()
        .find(|(_, n)| *n == 2500)
        .expect("the transaction of 2,500 rows")
        .0;
    let mut big: Vec<(u64, usize)> = (stream.iter())
        .filter(|m| txn_of(&m.id) == big_txn)
        .map(|m| (m.seq, m.of))
        .collect();
    big.dedup();
    assert_eq!(big.len(), 3, "its changes are in three messages: {big:?}");
    assert!(
        big[..2].iter().all(|&(_, of)| of == 1024),
        "cut at 1,024 changes: {big:?}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("publishing after the checkpoint"), "{text}");
    assert!(
        text.contains("0 of them duplicates"),
        "the restart published nothing twice: {text}"
    );

    // The partition count is fixed with the stream.
    std::fs::write(
        &cfg,
        config(&server, &nats.url(), "").replace("partitions = 4", "partitions = 8"),
    )
    .unwrap();
    let out = rowhook(&["capture", "-c", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("partitions = 8, but stream ROWHOOK_SHOP was made with 4 partitions"),
        "{err}"
    );

    // `rowhook check` says the same, and what is right.
    // (Another server_id: the server may list the stopped capture's for a while.)
    let check = |cfg_text: String| {
        std::fs::write(&cfg, cfg_text.replace("server_id = 8801", "server_id = 8802")).unwrap();
        let out = rowhook(&["check", "-c", cfg.to_str().unwrap()]);
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (ok, text) = check(config(&server, &nats.url(), ""));
    assert!(ok, "{text}");
    assert!(text.contains("ok   [cluster] connected to"), "{text}");
    assert!(
        text.contains("ok   [cluster] stream ROWHOOK_SHOP captures rowhook.shop.>, 4 partitions"),
        "{text}"
    );
    let (ok, text) = check(config(&server, &nats.url(), "").replace("partitions = 4", "partitions = 8"));
    assert!(!ok);
    assert!(
        text.contains("FAIL [cluster] partitions = 8, but stream ROWHOOK_SHOP was made with 4 partitions"),
        "{text}"
    );
    let (ok, text) = check(config(&server, &nats.url(), "").replace("source = \"shop\"", "source = \"other\""));
    assert!(ok, "{text}");
    assert!(
        text.contains("ok   [cluster] stream ROWHOOK_OTHER does not exist yet: the first `rowhook capture` makes it"),
        "{text}"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (ok, text) = check(config(&server, &format!("nats://127.0.0.1:{closed}"), ""));
    assert!(!ok);
    assert!(
        text.contains("FAIL [cluster] cannot connect to nats://127.0.0.1:")
            && text.contains("start NATS or fix `nats`"),
        "{text}"
    );
}

/// The source's connection killed inside a large transaction, with the
/// message of its partition still open with earlier changes (lingering): the
/// transaction is read again from its start, each partition's message goes
/// back to what it held then, and the stream still holds each change once;
/// and the same after a stop inside such a transaction.
#[test]
fn a_source_cut_inside_a_transaction_publishes_each_change_once() {
    // Small rows events, so that a stop (looked at every 256 events) lands
    // inside a transaction.
    let server = Server::start(&["--binlog-row-event-max-size=1024"]);
    server.sql(SCHEMA);
    let mut work = Workload::new(clock_seed());
    server.sql(&work.transactions(50));
    let nats = NatsServer::start("capture-cut", &[]);
    let dir = temp_dir("capture-cut");
    let cfg = dir.join("rowhook.toml");
    std::fs::write(&cfg, config(&server, &nats.url(), "linger_ms = 300")).unwrap();
    let log = dir.join("capture.log");
    let child = spawn_capture(&cfg, &log);
    let published = || {
        wait_published(&nats.url(), "ROWHOOK_SHOP", &server, Duration::from_secs(120), &log);
    };
    // Waits, when called, until the stream holds 20 messages more than now.
    let grown = |what: &'static str| {
        let before = stream_count(&nats.url(), "ROWHOOK_SHOP");
        let url = nats.url();
        move || {
            wait_for(what, Duration::from_secs(60), || {
                stream_count(&url, "ROWHOOK_SHOP") > before + 20
            })
        }
    };
    published();
    let first_messages = grown("the big transaction's first messages");
    let rows = 300_000;
    // Ending in a transaction of a table no handler takes, which moves the
    // checkpoint past the last published change.
    server.sql(&format!(
        "{} INSERT INTO shop.log VALUES (-1), (-2), (-3); INSERT INTO shop.log SELECT seq FROM test.seq_1_to_{rows}; {} \
         INSERT INTO shop.other VALUES (-1);",
        work.transactions(5),
        work.transactions(5)
    ));
    first_messages();
    let id = crate::faults::dump_threads(&server)
        .into_iter()
        .max()
        .expect("the capture's dump thread");
    server.sql(&format!("KILL {id}"));
    published();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("the stream was lost inside a transaction"), "{text}");
    // Stopped inside the next large one: nothing is flushed without the
    // changes already handed over, and the next capture goes on from the
    // checkpoint.
    let first_messages = grown("the next transaction's first messages");
    server.sql(&format!(
        "INSERT INTO shop.log VALUES (-4); INSERT INTO shop.log SELECT seq FROM test.seq_1_to_{rows};"
    ));
    first_messages();
    assert!(interrupt(child).success());
    let child = spawn_capture(&cfg, &log);
    published();
    assert!(interrupt(child).success());
    check_stream(&binlog_changes(&server), &stream_of(&nats.url(), "ROWHOOK_SHOP"));
}

/// A capture takes no snapshot: a config asking for one is refused at
/// start, before anything is read or published, rather than leaving out
/// the rows that exist already.
#[test]
fn a_capture_refuses_a_config_that_asks_for_a_snapshot() {
    let dir = temp_dir("capture-snapshot");
    let cfg = dir.join("rowhook.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nurl = \"mysql://root@127.0.0.1:1\"\nserver_id = 8801\nsnapshot = \"initial\"\n\n\
             [cluster]\nnats = \"nats://127.0.0.1:1\"\nsource = \"shop\"\npartitions = 4\n\n\
             [sinks.out]\nkind = \"stdout\"\n\n\
             [[handlers]]\nname = \"echo\"\nmodule = \"{}\"\ntables = [\"shop.orders\"]\nsinks = [\"out\"]\n",
            crate::reload::suite_guests().join("echo.wasm").display()
        ),
    )
    .unwrap();
    let out = rowhook(&["capture", "-c", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("[source] snapshot = \"initial\", but `rowhook capture` publishes the binlog only")
            && err.contains("Remove `snapshot` from [source]"),
        "{err}"
    );
}

#[test]
fn a_change_larger_than_the_servers_max_payload_stops_the_capture_and_names_the_fix() {
    let server = Server::start(&[]);
    server.sql(SCHEMA);
    server.sql("CREATE TABLE shop.big (id INT PRIMARY KEY, t MEDIUMTEXT)");
    server.sql("INSERT INTO shop.orders VALUES (1, 1); INSERT INTO shop.big VALUES (1, REPEAT('x', 20000));");
    let dir = temp_dir("capture-max-payload");
    let conf = dir.join("nats.conf");
    std::fs::write(&conf, "max_payload: 8192\n").unwrap();
    let nats = NatsServer::start("capture-max-payload", &["-c", conf.to_str().unwrap()]);
    let cfg = dir.join("rowhook.toml");
    let text = config(&server, &nats.url(), "").replace(r#""shop.log"]"#, r#""shop.log", "shop.big"]"#);
    std::fs::write(&cfg, text).unwrap();
    let out = rowhook(&["capture", "-c", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(" of shop.big is 20")
            && err.contains("more than the NATS server takes in a message (max_payload = 8192 bytes)")
            && err.contains("raise max_payload"),
        "{err}"
    );
    let stream = stream_of(&nats.url(), "ROWHOOK_SHOP");
    assert!(stream.iter().all(|m| !m.subject.contains(".big.")), "{stream:?}");
}

/// The stream's limits, as the server holds them: `(max_age, max_bytes,
/// first_sequence, last_sequence)`.
fn stream_limits(url: &str, stream: &str) -> (Duration, i64, u64, u64) {
    crate::sink_support::rt().block_on(async {
        let js = admin(url).await;
        let mut s = js.get_stream(stream).await.unwrap();
        let info = s.info().await.unwrap();
        (
            info.config.max_age,
            info.config.max_bytes,
            info.state.first_sequence,
            info.state.last_sequence,
        )
    })
}

#[test]
fn stream_limits_follow_the_config_and_a_worker_names_the_changes_they_removed() {
    let server = Server::start(&[]);
    server.sql(SCHEMA);
    // Five transactions of 2,500 keyless rows: at least 13 messages, about
    // 1.5 MB.
    let rows: Vec<String> = (0..2500).map(|i| format!("({i})")).collect();
    for _ in 0..5 {
        server.sql(&format!(
            "BEGIN; INSERT INTO shop.log VALUES {}; COMMIT;",
            rows.join(",")
        ));
    }
    let nats = NatsServer::start("stream-limits", &[]);
    let dir = temp_dir("stream-limits");
    let cfg = dir.join("rowhook.toml");
    let with = |limits: &str| {
        let text = config(&server, &nats.url(), limits);
        std::fs::write(&cfg, text).unwrap();
    };
    with("max_bytes_mb = 1\nmax_age_hours = 24");
    let log = dir.join("capture.log");
    let capture = spawn_capture(&cfg, &log);
    wait_published(&nats.url(), "ROWHOOK_SHOP", &server, Duration::from_secs(60), &log);
    assert!(interrupt(capture).success());
    let (age, bytes, first, _) = stream_limits(&nats.url(), "ROWHOOK_SHOP");
    assert_eq!((age, bytes), (Duration::from_secs(24 * 3600), 1 << 20));
    assert!(
        first > 1,
        "the oldest messages were removed: the stream starts at {first}"
    );
    // A worker whose partition's state is behind the stream's start says so.
    let log = dir.join("worker.log");
    let worker = Command::new(env!("CARGO_BIN_EXE_rowhook"))
        .args(["work", "-c"])
        .arg(&cfg)
        .env("ROWHOOK_LOG", "rowhook=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for("the worker names the removed messages", Duration::from_secs(30), || {
        crate::support::read(&log).contains(&format!(
            "the stream starts at sequence {first}, after the sequence this partition's state covers (0)"
        ))
    });
    assert!(interrupt(worker).success());
    // Limits taken out of the config are taken off the stream.
    with("");
    let capture = spawn_capture(&cfg, &dir.join("capture.log"));
    wait_for("the limits follow the config", Duration::from_secs(30), || {
        let (age, bytes, _, _) = stream_limits(&nats.url(), "ROWHOOK_SHOP");
        age == Duration::ZERO && bytes == -1
    });
    assert!(interrupt(capture).success());
}

/// Runs `rounds` times: a random wait while the writer writes, then kill
/// -9 the capture holding the lease; a standby takes over within
/// `max_takeover`, and a new standby is started.
fn kill_holders(
    nats_url: &str,
    cfg: &Path,
    dir: &Path,
    rounds: usize,
    rng: &mut Rng,
    captures: &mut Vec<Child>,
    max_takeover: Duration,
) {
    while captures.len() < 2 {
        let n = captures.len();
        captures.push(spawn_capture(cfg, &dir.join(format!("capture-{n}.log"))));
    }
    let holder_pid = |url: &str| -> Option<u32> {
        let h = lease_holder(url, "ROWHOOK_SHOP")?;
        h.split(':').nth(1)?.parse().ok()
    };
    for round in 0..rounds {
        wait_for("a capture holds the lease", Duration::from_secs(30), || {
            holder_pid(nats_url).is_some()
        });
        std::thread::sleep(Duration::from_millis(300 + rng.below(1200)));
        let pid = holder_pid(nats_url).unwrap();
        let at = captures
            .iter()
            .position(|c| c.id() == pid)
            .expect("the holder is one of ours");
        let mut killed = captures.remove(at);
        killed.kill().unwrap();
        killed.wait().unwrap();
        let t = Instant::now();
        wait_for("the standby takes over", Duration::from_secs(15), || {
            holder_pid(nats_url).is_some_and(|p| p != pid)
        });
        let took = t.elapsed();
        eprintln!("round {round}: capture {pid} killed, standby took over in {took:?}");
        assert!(took < max_takeover, "takeover took {took:?}, lease 2 s");
        captures.push(spawn_capture(cfg, &dir.join(format!("capture-r{round}-{pid}.log"))));
    }
}

/// Writes transactions until `stop`, a batch at a time.
fn writer(server: &Server, seed: u64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let url = server.port;
    std::thread::spawn(move || {
        let mut work = Workload::new(seed);
        while !stop.load(Ordering::Relaxed) {
            let sql = work.transactions(20);
            let out = Command::new("mariadb")
                .args([
                    "--no-defaults",
                    "-h127.0.0.1",
                    "-uroot",
                    &format!("-P{url}"),
                    "-e",
                    &sql,
                ])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    })
}

#[test]
fn a_killed_capture_is_replaced_by_its_standby_and_the_stream_holds_each_change_once() {
    let seed = clock_seed();
    eprintln!("seed {seed}");
    let mut rng = Rng(seed | 1);
    let server = Server::start(&[]);
    server.sql(SCHEMA);
    let nats = NatsServer::start("capture-kill", &[]);
    let dir = temp_dir("capture-kill");
    let cfg = dir.join("rowhook.toml");
    std::fs::write(&cfg, config(&server, &nats.url(), "")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(&server, seed, stop.clone());
    let mut captures = Vec::new();
    // The lease (2 s) and a poll of the standby (a fifth of it), with slack.
    kill_holders(
        &nats.url(),
        &cfg,
        &dir,
        5,
        &mut rng,
        &mut captures,
        Duration::from_secs(4),
    );
    stop_and_check(&server, (w, stop), captures, &nats.url(), &nats.url());
}

#[test]
fn a_capture_paused_past_its_lease_publishes_nothing_more() {
    let server = Server::start(&[]);
    server.sql(SCHEMA);
    let nats = NatsServer::start("capture-fence", &[]);
    let dir = temp_dir("capture-fence");
    let cfg = dir.join("rowhook.toml");
    std::fs::write(&cfg, config(&server, &nats.url(), "")).unwrap();
    let mut work = Workload::new(clock_seed());
    server.sql(&work.transactions(50));
    let first = spawn_capture(&cfg, &dir.join("first.log"));
    wait_for("the first capture holds the lease", Duration::from_secs(30), || {
        lease_holder(&nats.url(), "ROWHOOK_SHOP").is_some()
    });
    let second = spawn_capture(&cfg, &dir.join("second.log"));
    let expected = binlog_changes(&server);
    wait_count(&nats.url(), "ROWHOOK_SHOP", expected.len(), Duration::from_secs(60));
    // SIGSTOP: the first capture neither renews nor publishes; the
    // second takes over and publishes what comes meanwhile.
    let pid = first.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    wait_for("the standby takes over", Duration::from_secs(15), || {
        lease_holder(&nats.url(), "ROWHOOK_SHOP").is_some_and(|h| !h.contains(&format!(":{pid}:")))
    });
    server.sql(&work.transactions(50));
    let expected = binlog_changes(&server);
    wait_count(&nats.url(), "ROWHOOK_SHOP", expected.len(), Duration::from_secs(60));
    // The first's connection was still listed under the shared replica id
    // when the second connected: said as what it is, not warned about.
    let text = std::fs::read_to_string(dir.join("second.log")).unwrap();
    assert!(
        text.contains("most likely by the capture this one takes over from")
            && !text.contains("already used by a connected replica"),
        "{text}"
    );
    // Woken up, the first finds its lease gone and stands by.
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    wait_for("the first capture stands by", Duration::from_secs(15), || {
        std::fs::read_to_string(dir.join("first.log"))
            .unwrap()
            .contains("standing by")
    });
    server.sql(&work.transactions(50));
    let expected = binlog_changes(&server);
    wait_count(&nats.url(), "ROWHOOK_SHOP", expected.len(), Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    interrupt(first);
    interrupt(second);
    check_stream(&expected, &stream_of(&nats.url(), "ROWHOOK_SHOP"));
}

#[test]
fn capture_goes_on_when_one_jetstream_node_of_three_stops() {
    let seed = clock_seed();
    eprintln!("seed {seed}");
    let mut rng = Rng(seed | 1);
    let server = Server::start(&[]);
    server.sql(SCHEMA);
    let mut nodes = NatsServer::cluster("rhc", 3);
    let urls: Vec<String> = nodes.iter().map(NatsServer::url).collect();
    let dir = temp_dir("capture-cluster");
    let cfg = dir.join("rowhook.toml");
    std::fs::write(&cfg, config(&server, &urls.join(","), "replicas = 3")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(&server, seed, stop.clone());
    let mut captures = Vec::new();
    kill_holders(&urls[1], &cfg, &dir, 1, &mut rng, &mut captures, Duration::from_secs(4));
    // The node the captures connected to first stops; they go on through
    // the other two.
    nodes[0].kill();
    std::thread::sleep(Duration::from_secs(3));
    // Right after a node stopped, the lease takes as long as JetStream
    // needs to elect new leaders for the buckets besides.
    kill_holders(
        &urls[1],
        &cfg,
        &dir,
        1,
        &mut rng,
        &mut captures,
        Duration::from_secs(20),
    );
    stop_and_check(&server, (w, stop), captures, &urls[1], &urls[2]);
}

/// Stops the writer, waits until the stream (read at `wait_url`) holds
/// every change of the binlog, stops the captures, and checks the stream
/// (read at `read_url`).
fn stop_and_check(
    server: &Server,
    (writer, stop): (std::thread::JoinHandle<()>, Arc<AtomicBool>),
    captures: Vec<Child>,
    wait_url: &str,
    read_url: &str,
) {
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let expected = binlog_changes(server);
    wait_count(wait_url, "ROWHOOK_SHOP", expected.len(), Duration::from_secs(90));
    for c in captures {
        interrupt(c);
    }
    check_stream(&expected, &stream_of(read_url, "ROWHOOK_SHOP"));
}

/// What [`Ledger::start`] started.
struct Running {
    capture: Child,
    load: Option<(std::thread::JoinHandle<()>, Arc<AtomicBool>)>,
}

/// Where the ledger test's workers and capture run: the crash test's
/// ledger schema on a private server, a private JetStream, a config for
/// the capture and one directory (with a copy of the config, and its
/// `out.log`) per worker.
struct Ledger {
    server: Arc<Server>,
    /// One JetStream node, or three.
    nats: Vec<NatsServer>,
    dir: PathBuf,
    workers: Vec<Option<Child>>,
}

impl Ledger {
    fn setup(tag: &str, server_id: u32) -> Ledger {
        Ledger::on(tag, server_id, vec![NatsServer::start(tag, &[])], "")
    }

    /// On a three-node JetStream cluster, every stream and bucket with
    /// three replicas.
    fn setup_three(tag: &str, server_id: u32) -> Ledger {
        Ledger::on(tag, server_id, NatsServer::cluster(tag, 3), "replicas = 3\n")
    }

    fn on(tag: &str, server_id: u32, nats: Vec<NatsServer>, extra: &str) -> Ledger {
        let (server, dir, config) = crate::crash::ledger_setup(tag, server_id, "", crate::crash::OUT_LOG);
        let urls: Vec<String> = nats.iter().map(NatsServer::url).collect();
        // The call's limit is wall time, and these tests share two cores
        // with MariaDB, up to three JetStream nodes, a capture and four
        // workers: a call may wait for a core longer than the default 100 ms.
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "on_error = \"halt\"",
            "on_error = \"halt\"\nlimits = { time_ms = 5000 }",
        );
        let text = text.replace(
            "[sinks.out]",
            &format!(
                "[cluster]\nnats = \"{}\"\npartitions = 8\nlease_ttl_ms = 2000\nduplicate_window_secs = 30\ncheckpoint_interval_ms = 100\n{extra}\n[sinks.out]",
                urls.join(",")
            ),
        );
        std::fs::write(&config, &text).unwrap();
        for w in 0..4 {
            let d = dir.join(format!("w{w}"));
            std::fs::create_dir_all(&d).unwrap();
            // Worker 0 serves /metrics on a port of its choosing.
            let http = if w == 0 {
                "\n[http]\nlisten = \"127.0.0.1:0\"\n"
            } else {
                ""
            };
            std::fs::write(d.join("rowhook.toml"), format!("{text}{http}")).unwrap();
        }
        Ledger {
            server,
            nats,
            dir,
            workers: Vec::new(),
        }
    }

    /// A node that runs.
    fn url(&self) -> String {
        self.nats.iter().find(|n| n.running()).expect("a node runs").url()
    }

    fn spawn_worker(&mut self, w: usize) {
        let d = self.dir.join(format!("w{w}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("worker.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rowhook"))
            .args(["work", "-c"])
            .arg(d.join("rowhook.toml"))
            .env("ROWHOOK_LOG", "rowhook=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        while self.workers.len() <= w {
            self.workers.push(None);
        }
        self.workers[w] = Some(child);
    }

    /// Starts the capture and workers `0..workers`; with `seed`, the crash
    /// test's load too.
    fn start(&mut self, workers: usize, seed: Option<u64>) -> Running {
        if let Some(seed) = seed {
            eprintln!("seed {seed}, files in {}", self.dir.display());
        } else {
            eprintln!("files in {}", self.dir.display());
        }
        let capture = spawn_capture(&self.dir.join("rowhook.toml"), &self.dir.join("capture.log"));
        for w in 0..workers {
            self.spawn_worker(w);
        }
        Running {
            capture,
            load: seed.map(|seed| self.load(seed)),
        }
    }

    /// Stops the load, waits (up to `within`) until every committed row
    /// was delivered, stops the workers and the capture, and checks.
    fn finish(&mut self, running: Running, within: Duration) {
        if let Some((writer, stop)) = running.load {
            stop.store(true, Ordering::SeqCst);
            writer.join().unwrap();
        }
        self.wait_delivered(within);
        std::thread::sleep(Duration::from_millis(500));
        self.stop_workers();
        interrupt(running.capture);
        self.check();
    }

    /// The crash test's load, on a thread of its own until the flag is set.
    fn load(&self, seed: u64) -> (std::thread::JoinHandle<()>, Arc<AtomicBool>) {
        let stop = Arc::new(AtomicBool::new(false));
        let (server, flag) = (self.server.clone(), stop.clone());
        (
            std::thread::spawn(move || crate::crash::load(&server, &flag, seed)),
            stop,
        )
    }

    /// The report of `rowhook state` (its cluster part).
    fn cluster(&self) -> serde_json::Value {
        let out = rowhook(&["state", "-c", self.dir.join("rowhook.toml").to_str().unwrap(), "--json"]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        report["cluster"].clone()
    }

    /// The output lines of every worker: `(worker, change id, ledger id, k)`.
    fn outputs(&self) -> Vec<(usize, String, u64, u64)> {
        (0..4)
            .flat_map(|w| {
                crate::crash::lines(&self.dir.join(format!("w{w}/out.log")))
                    .into_iter()
                    .map(move |l| {
                        let f: Vec<&str> = l.split(' ').collect();
                        assert_eq!(f.len(), 3, "{l}");
                        (w, f[0].to_owned(), f[1].parse().unwrap(), f[2].parse().unwrap())
                    })
            })
            .collect()
    }

    /// Waits until the workers delivered every committed ledger row.
    fn wait_delivered(&self, within: Duration) -> usize {
        let expected: usize = self
            .server
            .sql("SELECT COUNT(*) FROM crash.ledger")
            .trim()
            .parse()
            .unwrap();
        wait_for(&format!("{expected} ledger rows delivered"), within, || {
            let seen: HashSet<u64> = self.outputs().iter().map(|o| o.2).collect();
            seen.len() >= expected
        });
        expected
    }

    /// The stream sequence each partition's state covers now.
    fn state_seqs(&self) -> Vec<u64> {
        crate::sink_support::rt().block_on(async {
            let js = admin(&self.url()).await;
            let kv = js.get_key_value("ROWHOOK_MAIN_state").await.unwrap();
            let mut seqs = Vec::new();
            for p in 0..8 {
                seqs.push(
                    rowhook::cluster::state::load(&kv, "workers", p)
                        .await
                        .unwrap()
                        .state
                        .seq,
                );
            }
            seqs
        })
    }

    /// Stops every worker (SIGINT), each writing its partitions' state.
    fn stop_workers(&mut self) {
        for c in self.workers.iter_mut().filter_map(Option::take) {
            assert!(interrupt(c).success());
        }
    }

    /// Checks the outputs and the state against the table: every committed
    /// row delivered, always under one change id, nothing rolled back; the
    /// state's counters, summed over the partitions, equal the rows per key.
    fn check(&self) {
        let outputs = self.outputs();
        let committed: HashSet<u64> = (self.server.sql("SELECT id FROM crash.ledger").lines())
            .map(|l| l.trim().parse().unwrap())
            .collect();
        let mut id_of: HashMap<u64, &str> = HashMap::new();
        for (_, change, id, _) in &outputs {
            assert!(*id < crate::crash::ROLLED_BACK, "a rolled-back row was delivered");
            let first = id_of.entry(*id).or_insert(change);
            assert_eq!(first, change, "ledger row {id} delivered under two change ids");
        }
        let delivered: HashSet<u64> = id_of.keys().copied().collect();
        assert_eq!(delivered, committed, "delivered rows differ from the table");
        let want: BTreeMap<String, u64> = (self
            .server
            .sql("SELECT k, COUNT(*) FROM crash.ledger GROUP BY k")
            .lines())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (format!("k:{}", f[0]), f[1].parse().unwrap())
        })
        .collect();
        let rt = crate::sink_support::rt();
        let got: BTreeMap<String, u64> = rt.block_on(async {
            let js = admin(&self.url()).await;
            let kv = js.get_key_value("ROWHOOK_MAIN_state").await.unwrap();
            let mut sum: BTreeMap<String, u64> = BTreeMap::new();
            for p in 0..8 {
                let stored = rowhook::cluster::state::load(&kv, "workers", p).await.unwrap();
                for (k, v) in stored.state.handlers.get("default/ledger").cloned().unwrap_or_default() {
                    let n = i64::from_le_bytes(v.as_slice().try_into().unwrap_or([0; 8]));
                    *sum.entry(k).or_default() += n as u64;
                }
            }
            sum
        });
        let total = got.get("total").copied().unwrap_or(0);
        assert_eq!(total, committed.len() as u64, "state total");
        let keys: BTreeMap<String, u64> = got.into_iter().filter(|(k, _)| k != "total").collect();
        assert_eq!(keys, want, "state per key");
        let duplicates = outputs.len() - delivered.len();
        eprintln!(
            "{} rows, {} outputs, {duplicates} duplicates",
            committed.len(),
            outputs.len()
        );
    }
}

/// Each worker's first deliveries of one partition come in stream order.
/// Returns how many changes the stream holds.
fn check_worker_order(l: &Ledger) -> usize {
    let order: HashMap<String, (String, usize)> = stream_of(&l.url(), "ROWHOOK_MAIN")
        .into_iter()
        .enumerate()
        .map(|(i, m)| (m.id, (m.subject.rsplit('.').next().unwrap().to_owned(), i)))
        .collect();
    let outputs = l.outputs();
    let mut last: HashMap<(usize, &str), usize> = HashMap::new();
    let mut seen = HashSet::new();
    for (w, change, _, _) in &outputs {
        if !seen.insert((w, change)) {
            continue;
        }
        let (partition, at) = &order[change];
        if let Some(before) = last.insert((*w, partition.as_str()), *at) {
            assert!(
                before < *at,
                "worker {w}, partition {partition}: {change} came after a later change"
            );
        }
    }
    order.len()
}

#[test]
fn workers_share_the_partitions_and_count_each_change_once_in_state() {
    let mut l = Ledger::setup("work-share", 8811);
    let running = l.start(3, Some(clock_seed()));
    wait_for("three workers share the partitions", Duration::from_secs(30), || {
        let c = l.cluster();
        let owners: HashSet<String> = (c["partitions_detail"].as_array().unwrap().iter())
            .filter_map(|p| p["owner"].as_str().map(str::to_owned))
            .collect();
        owners.len() == 3
            && c["partitions_detail"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["owner"].is_string())
    });
    // Worker 0 serves its metrics: what it owns, its lag, the workers.
    #[cfg(feature = "http-server")]
    {
        let log = l.dir.join("w0/worker.log");
        let text = std::fs::read_to_string(&log).unwrap();
        let addr = text
            .lines()
            .find_map(|line| line.split("serving /metrics on http://").nth(1))
            .expect("worker 0 serves /metrics")
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        wait_for("worker 0's cluster metrics", Duration::from_secs(15), || {
            let metrics = crate::http::get(&addr, "/metrics").body;
            crate::http::metric(&metrics, "rowhook_cluster_partitions_owned", "") >= 1.0
                && crate::http::metric(&metrics, "rowhook_cluster_workers", "") >= 1.0
                && crate::http::metric(&metrics, "rowhook_cluster_nats_connected", "") == 1.0
                && metrics.contains("rowhook_cluster_partition_pending{partition=")
        });
    }
    // A fourth worker joins: it takes its share from the others.
    std::thread::sleep(Duration::from_secs(2));
    l.spawn_worker(3);
    wait_for("four workers share the partitions", Duration::from_secs(30), || {
        let c = l.cluster();
        let parts = c["partitions_detail"].as_array().unwrap();
        let owners: HashSet<&str> = parts.iter().filter_map(|p| p["owner"].as_str()).collect();
        owners.len() == 4 && parts.iter().all(|p| p["owner"].is_string())
    });
    std::thread::sleep(Duration::from_secs(2));
    l.finish(running, Duration::from_secs(120));
    check_worker_order(&l);
}

#[test]
fn one_capture_and_three_workers_handle_a_million_rows_exactly_once() {
    let mut l = Ledger::setup("work-million", 8814);
    // A million ledger rows over 8 keys, a thousand per transaction.
    let rows: usize = 1_000_000;
    let sql: String = (0..rows / 1000)
        .map(|t| {
            format!(
                "INSERT INTO crash.ledger SELECT {} + seq, seq % 8, 1 FROM crash.seq_1_to_1000;\n",
                t * 1000
            )
        })
        .collect();
    l.server.sql(&sql);
    let started = Instant::now();
    let running = l.start(3, None);
    let newlines = |l: &Ledger| -> usize {
        (0..4)
            .map(|w| std::fs::read(l.dir.join(format!("w{w}/out.log"))).unwrap_or_default())
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .sum()
    };
    wait_for("a million outputs", Duration::from_secs(900), || {
        std::thread::sleep(Duration::from_millis(500));
        newlines(&l) >= rows
    });
    eprintln!("a million rows delivered in {:?}", started.elapsed());
    l.finish(running, Duration::from_secs(120));
    assert_eq!(check_worker_order(&l), rows);
}

#[test]
fn a_killed_workers_partitions_move_and_state_stays_exact() {
    let mut l = Ledger::setup("work-kill", 8812);
    let seed = clock_seed();
    let mut rng = Rng(seed.rotate_left(9) | 1);
    let running = l.start(3, Some(seed));
    // Per kill: the worker, and what each partition's state covered when
    // it died (read before anyone else can take its partitions).
    let mut kills: Vec<(usize, Vec<u64>)> = Vec::new();
    for round in 0..10 {
        std::thread::sleep(Duration::from_millis(800 + rng.below(1500)));
        let w = rng.below(3) as usize;
        let mut child = l.workers[w].take().unwrap();
        let pid = child.id();
        child.kill().unwrap();
        child.wait().unwrap();
        let killed = Instant::now();
        kills.push((w, l.state_seqs()));
        // Its partitions move within the lease (2 s), the balance period
        // (a third of it) and the time to load a partition, with slack.
        wait_for("the dead worker's partitions move", Duration::from_secs(15), || {
            let c = l.cluster();
            let parts = c["partitions_detail"].as_array().unwrap().clone();
            parts
                .iter()
                .all(|p| p["owner"].as_str().is_some_and(|o| !o.contains(&format!(":{pid}:"))))
        });
        let moved = killed.elapsed();
        eprintln!("round {round}: worker {w} ({pid}) killed; its partitions moved in {moved:?}");
        assert!(moved < Duration::from_secs(6), "partitions moved in {moved:?}");
        l.spawn_worker(w);
    }
    l.finish(running, Duration::from_secs(120));
    check_duplicates(&l, &kills);
}

/// The crash test's rule, per partition: a change reaches the sinks again
/// only if a killed worker had delivered it after the last state write of
/// its partition before it died (its new owner resumes from that write);
/// the copy has the original change id (one id per row: [`Ledger::check`]).
fn check_duplicates(l: &Ledger, kills: &[(usize, Vec<u64>)]) {
    let at: HashMap<String, (usize, u64)> = stream_of(&l.url(), "ROWHOOK_MAIN")
        .into_iter()
        .map(|m| (m.id, (m.subject.rsplit('.').next().unwrap().parse().unwrap(), m.seq)))
        .collect();
    let outputs = l.outputs();
    let mut times: HashMap<&str, usize> = HashMap::new();
    let mut by_worker: HashMap<usize, HashSet<&str>> = HashMap::new();
    for (w, change, _, _) in &outputs {
        *times.entry(change).or_default() += 1;
        by_worker.entry(*w).or_default().insert(change);
    }
    let mut duplicated = 0;
    for (change, n) in times.into_iter().filter(|(_, n)| *n > 1) {
        duplicated += 1;
        let (p, seq) = at[change];
        assert!(
            kills
                .iter()
                .any(|(w, covered)| seq > covered[p] && by_worker.get(w).is_some_and(|d| d.contains(change))),
            "change {change} (partition {p}, sequence {seq}) reached the sinks {n} times, but no killed worker \
             had delivered it after its partition's last state write"
        );
    }
    eprintln!("{duplicated} changes delivered more than once, each after a killed worker's last state write");
}

/// The address worker `w` serves `/metrics` on, once it says so.
#[cfg(feature = "http-server")]
fn metrics_addr(l: &Ledger, w: usize) -> String {
    let log = l.dir.join(format!("w{w}/worker.log"));
    let mut addr = String::new();
    wait_for("the worker serves /metrics", Duration::from_secs(30), || {
        let text = crate::support::read(&log);
        match text
            .lines()
            .find_map(|line| line.split("serving /metrics on http://").nth(1))
        {
            Some(rest) => {
                addr = rest.split_whitespace().next().unwrap().to_owned();
                true
            }
            None => false,
        }
    });
    addr
}

#[cfg(feature = "http-server")]
#[test]
fn a_worker_is_unready_while_nats_is_gone_and_ready_again_when_it_is_back() {
    let mut l = Ledger::setup("work-readyz", 8815);
    l.spawn_worker(0);
    let addr = metrics_addr(&l, 0);
    let ready = |addr: &str| crate::http::get(addr, "/readyz");
    wait_for("the worker is ready", Duration::from_secs(30), || {
        ready(&addr).status == 200
    });
    l.nats[0].kill();
    wait_for("the worker is unready", Duration::from_secs(30), || {
        let r = ready(&addr);
        r.status == 503
            && r.body
                .contains("NATS is not connected: rowhook is reconnecting to the [cluster] servers")
    });
    let metrics = crate::http::get(&addr, "/metrics").body;
    assert_eq!(crate::http::metric(&metrics, "rowhook_cluster_nats_connected", ""), 0.0);
    l.nats[0].restart();
    wait_for("the worker is ready again", Duration::from_secs(30), || {
        ready(&addr).status == 200
    });
    l.stop_workers();
}

#[test]
fn workers_go_on_when_one_jetstream_node_of_three_stops() {
    let mut l = Ledger::setup_three("work-node", 8813);
    let running = l.start(2, Some(clock_seed()));
    wait_for("the workers own every partition", Duration::from_secs(60), || {
        let c = l.cluster();
        (c["partitions_detail"].as_array()).is_some_and(|p| p.len() == 8 && p.iter().all(|p| p["owner"].is_string()))
    });
    // The cluster carries changes from the capture to the sinks before a
    // node stops.
    wait_for("the first ledger rows delivered", Duration::from_secs(60), || {
        l.outputs().len() >= 100
    });
    // The node that leads the stream stops, with messages in flight to
    // it: the capture publishes them again, the processes connected to it
    // go on through the other two, and the stream and buckets it led elect
    // new leaders.
    let leader = crate::sink_support::rt().block_on(async {
        let mut s = admin(&l.url()).await.get_stream("ROWHOOK_MAIN").await.unwrap();
        s.info()
            .await
            .unwrap()
            .cluster
            .clone()
            .and_then(|c| c.leader)
            .expect("the stream has a leader")
    });
    let at: usize = leader
        .trim_start_matches('n')
        .parse()
        .expect("nodes are named n0 to n2");
    eprintln!("stopping node {leader}, the stream's leader");
    l.nats[at].kill();
    std::thread::sleep(Duration::from_secs(4));
    l.finish(running, Duration::from_secs(180));
}

#[test]
fn the_example_jetstream_node_configs_are_valid() {
    for i in 1..=3 {
        let file = crate::support::root().join(format!("examples/ops/cluster/nats-{i}.conf"));
        let out = Command::new("nats-server")
            .args(["-t", "-c"])
            .arg(&file)
            .env("ROWHOOK_NATS_PASSWORD", "secret")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
