//! The nats sink against a real `nats-server -js`, which each test starts
//! on a free port with its own store directory, and stops, kills or
//! restarts as it needs: delivery into a JetStream stream with its
//! `Nats-Msg-Id`s, dedupe of a replay, a server restart mid-stream,
//! hostile payloads and keys, and `rowhook check`.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use rowhook::sink::{Message, Sink, SinkError, SinkKind, SinkSpec};

use crate::crash::{ROLLED_BACK, Rng, ledger_setup, load};
use crate::nats_support::{NatsServer, admin, stream_messages};
use crate::sink_support::{batch, cpu_seconds, minimal_config, replay_shop, rt, sink_spec, write_until_delivered};
use crate::support::{rowhook, spawn_run};

/// Creates stream `name` capturing `subjects`.
async fn add_stream(url: &str, name: &str, subjects: &[&str]) {
    admin(url)
        .await
        .create_stream(jetstream::stream::Config {
            name: name.into(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await
        .expect("create stream");
}

/// The options of a nats sink with these keys.
fn options(keys: &str) -> rowhook::sink::nats::NatsOptions {
    match sink_spec("nats", keys) {
        SinkSpec::Nats(o) => o,
        other => panic!("expected a nats sink, got {other:?}"),
    }
}

fn message(id: &str, index: u32, key: Option<&str>, payload: &[u8]) -> Message {
    Message {
        key: key.map(|k| k.as_bytes().to_vec()),
        payload: payload.to_vec(),
        id: id.to_owned(),
        index,
    }
}

fn replay(config: &Path) {
    let out = replay_shop(config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The shop binlog's new orders land in the stream, one message each, with
/// their subject, payload and `Nats-Msg-Id`; a second replay (a restart
/// from an old checkpoint) adds nothing.
#[test]
fn replay_fills_the_stream_once() {
    let server = NatsServer::start("replay", &[]);
    let rt = rt();
    rt.block_on(add_stream(&server.url(), "ORDERS", &["shop.orders.>"]));
    let config = minimal_config(
        &server.dir,
        "",
        "nats",
        &format!("url = \"{}\"\nsubject = \"shop.orders.{{key}}\"", server.url()),
        "",
    );
    replay(&config);
    let got = rt.block_on(stream_messages(&server.url(), "ORDERS"));
    let show = |v: &[(String, String, Vec<u8>)]| -> Vec<String> {
        v.iter()
            .map(|(s, id, p)| format!("{s} {id} {}", String::from_utf8_lossy(p)))
            .collect()
    };
    assert_eq!(
        show(&got),
        [
            "shop.orders.1001 0-1-9:0:0:0 {\"order\":1001}",
            "shop.orders.1002 0-1-10:0:0:0 {\"order\":1002}",
            "shop.orders.1003 0-1-10:1:0:0 {\"order\":1003}",
        ]
    );
    replay(&config);
    assert_eq!(show(&rt.block_on(stream_messages(&server.url(), "ORDERS"))), show(&got));
}

/// The server is killed between batches and mid-batch, and comes back:
/// writes fail as unavailable meanwhile, then every message is in the
/// stream once, in order; a write whose future was dropped leaves nothing
/// torn.
#[test]
fn server_restart_loses_and_repeats_nothing() {
    let mut server = NatsServer::start("restart", &[]);
    let rt = rt();
    let url = server.url();
    rt.block_on(add_stream(&url, "R", &["r.>"]));
    let opts = options(&format!(
        "url = \"{url}\"\nsubject = \"r.{{key}}\"\nack_timeout_ms = 1000"
    ));
    let (a, b, c) = (batch("a", 2000), batch("b", 2000), batch("c", 5000));
    rt.block_on(async {
        let mut sink = <rowhook::sink::nats::NatsKind as SinkKind>::open("n", &opts)
            .await
            .unwrap();
        sink.write_batch(&a).await.unwrap();
        server.kill();
        let e = sink.write_batch(&b).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(sink.health().await.unwrap_err().is_retryable());
        server.restart();
        write_until_delivered(&mut sink, &b, Duration::from_secs(30)).await;
        // A write cut short (part of it may be in the stream), the server
        // killed, then the retry.
        let _ = tokio::time::timeout(Duration::from_millis(5), sink.write_batch(&c)).await;
        server.kill();
        server.restart();
        write_until_delivered(&mut sink, &c, Duration::from_secs(30)).await;
        // A batch sent again (a restart from an older checkpoint): every
        // message acknowledged, counted as a duplicate, stored once.
        let before = sink.duplicates();
        sink.write_batch(&a).await.unwrap();
        assert_eq!(sink.duplicates() - before, a.len() as u64);
        sink.close().await.unwrap();
    });
    let got = rt.block_on(stream_messages(&url, "R"));
    let want: Vec<String> = a.iter().chain(&b).chain(&c).map(|m| format!("{}:0", m.id)).collect();
    let ids: Vec<String> = got.iter().map(|(_, id, _)| id.clone()).collect();
    assert_eq!(ids.len(), want.len(), "each message once");
    assert_eq!(ids, want, "in order");
    assert!(
        got.iter()
            .zip(a.iter().chain(&b).chain(&c))
            .all(|(g, m)| g.2 == m.payload)
    );
}

/// A binary payload, an empty key, a key with `/` and spaces are
/// delivered (the key percent-encoded into one token); a payload over the
/// server's max_payload is refused for good, before anything is sent, and
/// the emit limit says so at open.
#[test]
fn hostile_payloads_and_keys() {
    let server = NatsServer::start("hostile", &[]);
    let rt = rt();
    let url = server.url();
    rt.block_on(add_stream(&url, "H", &["h.>"]));
    let opts = options(&format!("url = \"{url}\"\nsubject = \"h.{{key}}\""));
    let binary: Vec<u8> = (0..=255u8).collect();
    rt.block_on(async {
        let mut sink = <rowhook::sink::nats::NatsKind as SinkKind>::open("n", &opts)
            .await
            .unwrap();
        // nats-server's default max_payload is 1 MiB, less room for headers.
        assert_eq!(sink.limits().max_payload, Some((1 << 20) - 1024));
        let big = message("x:1:0", 0, Some("k"), &vec![b'x'; 10 << 20]);
        let e = sink
            .write_batch(&[message("x:0:0", 0, Some("k"), b"first"), big])
            .await
            .unwrap_err();
        assert!(matches!(e, SinkError::Permanent { .. }), "{e}");
        assert!(e.to_string().contains("max_payload"), "{e}");
        sink.write_batch(&[
            message("y:0:0", 0, Some("bin"), &binary),
            message("y:0:0", 1, Some(""), b"empty key"),
            message("y:1:0", 0, None, b"no key"),
            message("y:2:0", 0, Some("a b/c.d"), b"spaces"),
        ])
        .await
        .unwrap();
    });
    let got = rt.block_on(stream_messages(&url, "H"));
    let got: Vec<(&str, &str, &[u8])> = got
        .iter()
        .map(|(s, i, p)| (s.as_str(), i.as_str(), p.as_slice()))
        .collect();
    assert_eq!(
        got,
        [
            ("h.bin", "y:0:0:0", binary.as_slice()),
            ("h._", "y:0:0:1", b"empty key".as_slice()),
            ("h._", "y:1:0:0", b"no key".as_slice()),
            ("h.a%20b/c%2Ed", "y:2:0:0", b"spaces".as_slice()),
        ]
    );
}

/// `rowhook check` names a server that is down, refused credentials and a
/// subject no stream captures, each with its fix, and passes once fixed.
#[test]
fn check_names_the_problem() {
    let mut server = NatsServer::start("check", &["--user", "rowhook", "--pass", "right"]);
    let dir = server.dir.clone();
    let url = server.url();
    let check = |password: &str| -> (bool, String) {
        let config = minimal_config(
            &dir,
            "",
            "nats",
            &format!(
                "url = \"{url}\"\nsubject = \"shop.orders.{{key}}\"\nuser = \"rowhook\"\npassword = \"{password}\""
            ),
            "",
        );
        let out = rowhook(&["check", "-c", config.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find(|l| l.contains("sink `orders_queue` (nats)"))
            .unwrap_or_else(|| panic!("no nats line in\n{stdout}"))
            .to_owned();
        (out.status.success(), line)
    };
    let (ok, line) = check("wrong");
    assert!(!ok && line.contains("refused the credentials"), "{line}");
    assert!(!line.contains("wrong"), "the password must not show: {line}");
    let (ok, line) = check("right");
    assert!(!ok, "{line}");
    assert!(
        line.contains("no stream captures subject shop.orders.*: create one with `nats stream add"),
        "{line}"
    );
    rt().block_on(async {
        let js = jetstream::new(
            async_nats::ConnectOptions::with_user_and_password("rowhook".into(), "right".into())
                .connect(&url)
                .await
                .unwrap(),
        );
        js.create_stream(jetstream::stream::Config {
            name: "ORDERS".into(),
            subjects: vec!["shop.orders.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let (ok, line) = check("right");
    assert!(ok, "{line}");
    assert!(
        line.contains("is captured by stream ORDERS, dedupe window 120 s"),
        "{line}"
    );
    server.kill();
    let (ok, line) = check("right");
    assert!(!ok && line.contains("cannot connect"), "{line}");
}

/// Acknowledged messages per second into a stream on this machine, printed
/// with the CPU time of this process and of the server
/// (`cargo test --release -p rowhook --test e2e sink_nats::throughput -- --nocapture`).
#[test]
fn throughput() {
    let server = NatsServer::start("speed", &[]);
    let rt = rt();
    let url = server.url();
    rt.block_on(add_stream(&url, "T", &["t.>"]));
    let opts = options(&format!("url = \"{url}\"\nsubject = \"t.{{key}}\""));
    let total = 200_000;
    let batches: Vec<Vec<Message>> = (0..total / 4096 + 1)
        .map(|b| {
            (0..4096)
                .map(|i| {
                    let payload = format!("{{\"order\":{i},\"status\":\"new\",\"total\":\"19.99\",\"batch\":{b}}}");
                    message(
                        &format!("0-1-{b}:{i}:0"),
                        0,
                        Some(&(i % 100).to_string()),
                        payload.as_bytes(),
                    )
                })
                .collect()
        })
        .collect();
    let (n, took) = rt.block_on(async {
        let mut sink = <rowhook::sink::nats::NatsKind as SinkKind>::open("n", &opts)
            .await
            .unwrap();
        let start = Instant::now();
        let cpu = (cpu_seconds("self"), cpu_seconds(&server.pid().to_string()));
        let mut n = 0;
        for b in &batches {
            sink.write_batch(b).await.unwrap();
            n += b.len();
        }
        let took = start.elapsed();
        let cpu = (
            cpu_seconds("self") - cpu.0,
            cpu_seconds(&server.pid().to_string()) - cpu.1,
        );
        (n, (took, cpu))
    });
    let (took, (ours, server_cpu)) = took;
    let rate = n as f64 / took.as_secs_f64();
    println!(
        "nats sink: {n} messages acknowledged in {took:?}: {rate:.0} messages/s; CPU: this process {ours:.2} s, nats-server {server_cpu:.2} s"
    );
    assert_eq!(rt.block_on(stream_messages_count(&url, "T")), n as u64);
}

async fn stream_messages_count(url: &str, name: &str) -> u64 {
    let js = admin(url).await;
    let mut s = js.get_stream(name).await.unwrap();
    s.info().await.unwrap().state.messages
}

/// The kill -9 test of `crash.rs` with the nats sink: `rowhook run` killed
/// 50 times at random moments under the ledger load; afterwards the stream
/// holds every committed ledger row exactly once (the copies that restarts
/// sent again were dropped by `Nats-Msg-Id`), nothing rolled back, and per
/// key in commit order.
#[test]
fn sigkill_leaves_each_change_once_in_the_stream() {
    const KILLS: usize = 50;
    let nats = NatsServer::start("crash", &[]);
    let url = nats.url();
    let rt = rt();
    rt.block_on(async {
        admin(&url)
            .await
            .create_stream(jetstream::stream::Config {
                name: "LEDGER".into(),
                subjects: vec!["ledger.>".into()],
                // Longer than the whole test: every re-sent copy is dropped.
                duplicate_window: Duration::from_secs(1800),
                ..Default::default()
            })
            .await
            .unwrap();
    });
    let sink = format!("kind = \"nats\"\nurl = \"{url}\"\nsubject = \"ledger.{{key}}\"");
    let (server, dir, config) = ledger_setup("crash-nats", 7411, "commit_interval_ms = 50", &sink);
    let log = dir.join("rowhook.log");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("nats crash test seed {seed}, files in {}", dir.display());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (server, stop) = (server.clone(), stop.clone());
        std::thread::spawn(move || load(&server, &stop, seed))
    };
    let mut rng = Rng(seed.rotate_left(17) | 1);
    let started = Instant::now();
    for _ in 0..KILLS {
        let mut child = spawn_run(&config, &log);
        std::thread::sleep(Duration::from_millis(150 + rng.below(900)));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();

    let committed: HashSet<u64> = server
        .sql("SELECT id FROM crash.ledger")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let count = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let mut s = admin(&url).await.get_stream("LEDGER").await.unwrap();
            s.info().await.unwrap().state.messages
        })
    };
    let mut child = spawn_run(&config, &log);
    let deadline = Instant::now() + Duration::from_secs(180);
    while count(&rt) < committed.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "the stream holds {} of {} rows",
            count(&rt),
            committed.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );

    let held = rt.block_on(stream_messages(&url, "LEDGER"));
    let mut ids = HashSet::new();
    let mut last_per_key: BTreeMap<u64, u64> = BTreeMap::new();
    for (_, msg_id, payload) in &held {
        let text = String::from_utf8_lossy(payload);
        let f: Vec<&str> = text.split(' ').collect();
        assert_eq!(f.len(), 3, "{text}");
        assert_eq!(*msg_id, format!("{}:0", f[0]), "{text}");
        let (id, k): (u64, u64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        assert!(id < ROLLED_BACK, "a rolled-back row is in the stream: {text}");
        assert!(ids.insert(id), "ledger row {id} is in the stream twice");
        let last = last_per_key.entry(k).or_default();
        assert!(id > *last, "key {k}: row {id} after row {last}");
        *last = id;
    }
    assert_eq!(ids, committed, "the stream holds exactly the committed rows");
    eprintln!(
        "{KILLS} kills in {:?}: the stream holds {} ledger rows, each once",
        started.elapsed(),
        held.len()
    );
}

/// `mode = "core"`: a plain publish, which subscribers connected at the
/// time receive with the same subject and `Nats-Msg-Id`; no stream needed.
#[test]
fn core_mode_publishes_to_subscribers() {
    use futures_util::StreamExt;

    let server = NatsServer::start("core", &[]);
    let url = server.url();
    let opts = options(&format!("url = \"{url}\"\nsubject = \"c.{{key}}\"\nmode = \"core\""));
    rt().block_on(async {
        let client = async_nats::connect(&url).await.unwrap();
        let mut sub = client.subscribe("c.>").await.unwrap();
        client.flush().await.unwrap();
        let mut sink = <rowhook::sink::nats::NatsKind as SinkKind>::open("n", &opts)
            .await
            .unwrap();
        let msgs = batch("k", 100);
        sink.write_batch(&msgs).await.unwrap();
        for m in &msgs {
            let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
                .await
                .expect("every message arrives")
                .unwrap();
            let key = String::from_utf8(m.key.clone().unwrap()).unwrap();
            assert_eq!(got.subject.as_str(), format!("c.{key}"));
            assert_eq!(got.payload.as_ref(), m.payload.as_slice());
            let id = got.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).unwrap();
            assert_eq!(id.as_str(), format!("{}:0", m.id));
        }
        sink.close().await.unwrap();
    });
}
