//! The kafka sink against a real Kafka-protocol broker: `tansu`, a broker
//! written in Rust and installed from crates.io (see `.ci/run`), which each
//! test starts on a free port with its own SQLite store, and stops, kills
//! or restarts as it needs. The topic is read back with Fetch requests.
//! Delivery with keys, partitions and `rowhook-id` headers; a broker down
//! at start and killed mid-stream; SCRAM over TLS; hostile payloads; and
//! `rowhook check`.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{FetchRequest, ListOffsetsRequest, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use rowhook::sink::kafka::KafkaOptions;
use rowhook::sink::{Message, Sink, SinkError, SinkKind, SinkSpec};

use crate::crash::{ledger_rows, ledger_setup};
use crate::sink_support::{batch, cpu_seconds, minimal_config, replay_shop, rt, sink_spec, write_until_delivered};
use crate::support::{interrupt, rowhook, spawn_run, temp_dir, test_certs};

/// A private tansu broker on a free port, storing in SQLite in its directory.
struct Broker {
    port: u16,
    dir: PathBuf,
    /// `--authentication`, when asked for.
    extra: Vec<String>,
    /// The port the broker tells clients to use (its own unless a proxy is in front).
    advertised: u16,
    child: Option<Child>,
}

impl Broker {
    fn start(tag: &str) -> Broker {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut b = Broker {
            port,
            dir: temp_dir(&format!("kafka-{tag}")),
            extra: Vec::new(),
            advertised: port,
            child: None,
        };
        b.restart();
        b
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Starts the broker (again, on the same port and store).
    fn restart(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))
            .unwrap();
        // tansu reads the SQLite path relative to its working directory.
        let child = Command::new("tansu")
            .current_dir(&self.dir)
            .args(["broker", "--listener-url", &self.url()])
            .args([
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{}", self.advertised),
            ])
            .args(["--storage-engine", "sqlite://store.db"])
            .args(&self.extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run tansu (cargo install tansu --locked --features libsql)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the broker (SIGKILL), as a crash would.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `tansu ARGS --broker URL`, which must succeed.
    fn admin(&self, args: &[&str]) {
        let out = Command::new("tansu")
            .args(args)
            .args(["--broker", &self.url()])
            .env("RUST_LOG", "warn")
            .output()
            .expect("run tansu");
        assert!(
            out.status.success(),
            "tansu {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates topic `name`; `config` is `KEY=VALUE` topic settings.
    fn create_topic(&self, name: &str, partitions: u32, config: &[&str]) {
        let partitions = partitions.to_string();
        let mut args = vec!["topic", "create", name, "--partitions", &partitions];
        for c in config {
            args.extend(["--config", c]);
        }
        self.admin(&args);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("tansu's log, last lines:");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One record as a consumer reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    /// The `rowhook-id` header.
    id: String,
}

/// Reads every record of `topic`'s `partitions` partitions from the
/// broker at `addr`, partition by partition, in offset order.
fn read_topic(addr: &str, topic: &str, partitions: i32) -> Vec<Got> {
    let mut conn = TcpStream::connect(addr).expect("connect to the broker");
    conn.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut out = Vec::new();
    for partition in 0..partitions {
        let mut offset = 0;
        loop {
            let req = FetchRequest::default()
                .with_replica_id((-1).into())
                .with_max_wait_ms(0)
                .with_min_bytes(0)
                .with_max_bytes(1 << 20)
                .with_session_epoch(-1)
                .with_topics(vec![
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                        .with_partitions(vec![
                            FetchPartition::default()
                                .with_partition(partition)
                                .with_fetch_offset(offset)
                                .with_partition_max_bytes(1 << 20),
                        ]),
                ]);
            let answer = call(&mut conn, &req, 11);
            let p = &answer.responses[0].partitions[0];
            assert_eq!(p.error_code, 0, "fetching {topic}/{partition} at {offset}");
            let mut fetched = 0;
            if let Some(records) = &p.records {
                let mut buf = records.clone();
                let mut sets = Vec::new();
                while buf.has_remaining() {
                    sets.push(
                        RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(inflate))
                            .expect("decode a record batch"),
                    );
                }
                for set in sets {
                    for r in set.records {
                        if r.offset < offset {
                            continue;
                        }
                        let id = r
                            .headers
                            .get(&StrBytes::from_static_str("rowhook-id"))
                            .cloned()
                            .flatten()
                            .map(|v| String::from_utf8(v.to_vec()).unwrap())
                            .unwrap_or_default();
                        offset = r.offset + 1;
                        fetched += 1;
                        out.push(Got {
                            partition,
                            offset: r.offset,
                            key: r.key.map(|k| k.to_vec()),
                            value: r.value.map(|v| v.to_vec()).unwrap_or_default(),
                            id,
                        });
                    }
                }
            }
            if fetched == 0 || offset >= p.high_watermark {
                break;
            }
        }
    }
    out
}

/// The records of a compressed batch, inflated (the sink writes gzip and zstd).
fn inflate(packed: &mut Bytes, codec: Compression) -> anyhow::Result<Bytes> {
    let plain = match codec {
        Compression::None => return Ok(packed.split_to(packed.len())),
        Compression::Gzip => {
            let mut v = Vec::new();
            flate2::read::GzDecoder::new(&packed[..]).read_to_end(&mut v)?;
            v
        }
        Compression::Zstd => zstd::stream::decode_all(&packed[..])?,
        other => anyhow::bail!("the sink does not write {other:?}"),
    };
    Ok(Bytes::from(plain))
}

/// How many records `topic`'s `partitions` partitions hold (the sum of
/// their end offsets, by ListOffsets).
fn record_count(addr: &str, topic: &str, partitions: i32) -> i64 {
    let mut conn = TcpStream::connect(addr).expect("connect to the broker");
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(
                    (0..partitions)
                        .map(|p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_timestamp(-1)
                        })
                        .collect(),
                ),
        ]);
    let answer = call(&mut conn, &req, 1);
    answer.topics[0]
        .partitions
        .iter()
        .map(|p| {
            assert_eq!(p.error_code, 0, "end offset of {topic}/{}", p.partition_index);
            p.offset
        })
        .sum()
}

/// One request and its answer on a blocking connection.
fn call<R: Request>(conn: &mut TcpStream, req: &R, version: i16) -> R::Response {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("rowhook-test")));
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    header.encode(&mut frame, R::header_version(version)).unwrap();
    req.encode(&mut frame, version).unwrap();
    let len = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    conn.write_all(&frame).unwrap();
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    conn.read_exact(&mut body).unwrap();
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, R::Response::header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 7);
    R::Response::decode(&mut body, version).unwrap()
}

/// The options of a kafka sink with these keys.
fn options(keys: &str) -> KafkaOptions {
    match sink_spec("kafka", keys) {
        SinkSpec::Kafka(o) => o,
        other => panic!("expected a kafka sink, got {other:?}"),
    }
}

async fn open(keys: &str) -> Result<rowhook::sink::kafka::KafkaSink, SinkError> {
    rowhook::sink::kafka::KafkaKind::open("k", &options(keys)).await
}

/// Each partition's records in offset order, as `rowhook-id`s.
fn ids_by_partition(got: &[Got]) -> BTreeMap<i32, Vec<String>> {
    let mut by: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for g in got {
        by.entry(g.partition).or_default().push(g.id.clone());
    }
    by
}

/// The shop binlog's new orders land in the topic, one record each, in
/// the partition murmur2 of their key gives (as the Java client would
/// put them), with their payload and `rowhook-id`: uncompressed, and in
/// gzip and zstd batches the broker takes and a consumer inflates.
#[test]
fn replay_fills_the_topic() {
    let broker = Broker::start("replay");
    for codec in ["none", "gzip", "zstd"] {
        let topic = format!("orders-{codec}");
        broker.create_topic(&topic, 3, &[]);
        let config = minimal_config(
            &broker.dir,
            "",
            "kafka",
            &format!(
                "brokers = \"{}\"\ntopic = \"{topic}\"\ncompression = \"{codec}\"",
                broker.addr()
            ),
            "",
        );
        let out = replay_shop(&config);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let got = read_topic(&broker.addr(), &topic, 3);
        let show: Vec<String> = got
            .iter()
            .map(|g| {
                format!(
                    "p{}@{} {} {} {}",
                    g.partition,
                    g.offset,
                    String::from_utf8_lossy(g.key.as_deref().unwrap_or_default()),
                    g.id,
                    String::from_utf8_lossy(&g.value)
                )
            })
            .collect();
        // murmur2 of "1001" and "1002" modulo 3 is 0, of "1003" 1, as the
        // Java client (and kafka-python) compute it.
        assert_eq!(
            show,
            [
                "p0@0 1001 0-1-9:0:0:0 {\"order\":1001}",
                "p0@1 1002 0-1-10:0:0:0 {\"order\":1002}",
                "p1@0 1003 0-1-10:1:0:0 {\"order\":1003}",
            ],
            "{codec}"
        );
    }
}

/// A broker that is down when the sink opens: the writes are unavailable,
/// then, once it is up, delivered whole; the broker is then killed and
/// restarted under a stream of batches, and every message is in the topic
/// once, each key's messages in order.
#[test]
fn a_broker_down_then_killed_loses_and_repeats_nothing() {
    let mut broker = Broker::start("restart");
    broker.create_topic("events", 4, &[]);
    broker.kill();
    let rt = rt();
    let mut sink = rt
        .block_on(open(&format!(
            "brokers = \"{}\"\ntopic = \"events\"\nack_timeout_ms = 3000",
            broker.addr()
        )))
        .expect("a broker that is down is not an error at open");
    let first = batch("first", 50);
    let err = rt.block_on(sink.write_batch(&first)).unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains(&broker.addr()), "{err}");
    broker.restart();
    rt.block_on(write_until_delivered(&mut sink, &first, Duration::from_secs(30)));
    let mut sent = first.clone();
    for round in 0..6 {
        let b = batch(&format!("r{round}-"), 400);
        if round % 2 == 1 {
            broker.kill();
            broker.restart();
        }
        rt.block_on(write_until_delivered(&mut sink, &b, Duration::from_secs(60)));
        sent.extend(b);
    }
    let got = read_topic(&broker.addr(), "events", 4);
    let ids: Vec<&str> = got.iter().map(|g| g.id.as_str()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "duplicates in the topic");
    assert_eq!(unique.len(), sent.len(), "messages missing");
    // Each key's messages in the order they were sent.
    let order: BTreeMap<String, usize> = sent
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("{}:0", m.id), i))
        .collect();
    for (partition, ids) in ids_by_partition(&got) {
        let places: Vec<usize> = ids.iter().map(|id| order[id]).collect();
        assert!(places.is_sorted(), "partition {partition} is out of order");
    }
}

/// A write whose future is dropped midway (a stop during a retry) is sent
/// again under the same sequence numbers: what the broker took already is
/// dropped as a duplicate, not stored twice. A batch given up on (the
/// broker down) is forgotten: the next, different batch goes through under
/// a new producer id.
#[test]
fn a_dropped_write_repeats_nothing_and_a_given_up_batch_is_forgotten() {
    let mut broker = Broker::start("dropped");
    broker.create_topic("d", 2, &[]);
    let rt = rt();
    let mut sink = rt
        .block_on(open(&format!(
            "brokers = \"{}\"\ntopic = \"d\"\nack_timeout_ms = 2000",
            broker.addr()
        )))
        .unwrap();
    let big = batch("big", 8_000);
    let mut cut_at = Duration::from_millis(1);
    rt.block_on(async {
        // Drop the write at later and later moments until one was cut
        // after some records were stored.
        loop {
            if tokio::time::timeout(cut_at, sink.write_batch(&big)).await.is_ok() {
                break;
            }
            if record_count(&broker.addr(), "d", 2) > 0 {
                break;
            }
            cut_at *= 2;
        }
    });
    rt.block_on(write_until_delivered(&mut sink, &big, Duration::from_secs(30)));
    let got = read_topic(&broker.addr(), "d", 2);
    let ids: HashSet<&str> = got.iter().map(|g| g.id.as_str()).collect();
    assert_eq!((got.len(), ids.len()), (big.len(), big.len()), "cut after {cut_at:?}");
    println!(
        "cut after {cut_at:?}; the broker dropped {} records as duplicates",
        sink.duplicates()
    );
    broker.kill();
    let lost = batch("lost", 10);
    assert!(rt.block_on(sink.write_batch(&lost)).unwrap_err().is_retryable());
    broker.restart();
    let next = batch("next", 10);
    rt.block_on(write_until_delivered(&mut sink, &next, Duration::from_secs(30)));
    let got = read_topic(&broker.addr(), "d", 2);
    assert_eq!(got.len(), big.len() + next.len());
    assert!(got.iter().all(|g| !g.id.starts_with("lost")));
}

/// `rowhook run` live from MariaDB into a one-partition topic, with the
/// broker killed (SIGKILL) mid-run and restarted: the run retries, and
/// once the broker is back every committed row is in the topic exactly
/// once, in commit order, with its change id in `rowhook-id`.
#[test]
fn broker_killed_mid_run_gets_everything_once_in_order() {
    let mut broker = Broker::start("kill-run");
    broker.create_topic("ledger", 1, &[]);
    let (db, dir, config) = ledger_setup(
        "kafka-ledger-run",
        7481,
        "",
        &format!(
            "kind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"ledger\"\nack_timeout_ms = 1000\nretries = \"forever\"\nretry_max_ms = 200",
            broker.addr()
        ),
    );
    let log = dir.join("rowhook.log");
    let child = spawn_run(&config, &log);
    let rows = |from: u32, to: u32| ledger_rows(&db, from, to);
    let addr = broker.addr();
    let count = |want: i64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while record_count(&addr, "ledger", 1) < want {
            assert!(
                Instant::now() < deadline,
                "fewer than {want} records; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    rows(0, 10);
    count(200);
    broker.kill();
    rows(10, 20);
    std::thread::sleep(Duration::from_millis(1500));
    broker.restart();
    rows(20, 30);
    count(600);
    // A moment more, so that a late duplicate would show.
    std::thread::sleep(Duration::from_millis(500));
    assert!(interrupt(child).success());
    let text_log = std::fs::read_to_string(&log).unwrap();
    assert!(text_log.contains("retrying"), "the outage was seen: {text_log}");
    let got = read_topic(&broker.addr(), "ledger", 1);
    let ledger_ids: Vec<u32> = got
        .iter()
        .map(|g| {
            let text = String::from_utf8_lossy(&g.value).into_owned();
            let mut f = text.split(' ');
            let change = f.next().unwrap();
            assert_eq!(g.id, format!("{change}:0"), "rowhook-id is the change id and index");
            f.next().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(ledger_ids, (1..=600).collect::<Vec<_>>(), "log:\n{text_log}");
}

/// SCRAM-SHA-512 over TLS. tansu 0.6 cannot take a certificate and key
/// together on its command line, so `socat` terminates TLS in front of it
/// (with a certificate from a test CA), and the broker advertises
/// socat's port, as a broker behind a TLS load balancer would. The right
/// password is let in and the records land; a wrong one is a permanent
/// error that names the fix; plain TCP to the TLS port is refused.
#[test]
fn scram_over_tls() {
    let mut broker = Broker::start("scram");
    broker.create_topic("secure", 1, &[]);
    broker.admin(&["user", "create", "rowhook", "pencil", "--mechanism", "scram512"]);
    broker.kill();
    let certs = test_certs("kafka-certs");
    let tls_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut socat = Command::new("socat")
        .arg(format!(
            "OPENSSL-LISTEN:{tls_port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={},key={}",
            certs.join("server.pem").display(),
            certs.join("server.key").display()
        ))
        .arg(format!("TCP:127.0.0.1:{}", broker.port))
        .stderr(Stdio::null())
        .spawn()
        .expect("run socat (apt-get install socat)");
    broker.extra = vec!["--authentication".into()];
    broker.advertised = tls_port;
    broker.restart();
    let keys = |password: &str| {
        format!(
            "brokers = \"127.0.0.1:{tls_port}\"\ntopic = \"secure\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nuser = \"rowhook\"\npassword = \"{password}\"\ntls_ca_file = \"{}\"",
            certs.join("ca.pem").display()
        )
    };
    let rt = rt();
    let b = batch("s", 20);
    let opened = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match open(&keys("pencil")).await {
                Ok(s) => break Ok(s),
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => break Err(e),
            }
        }
    });
    let mut sink = opened.expect("open");
    rt.block_on(write_until_delivered(&mut sink, &b, Duration::from_secs(20)));
    let err = rt.block_on(open(&keys("wrong"))).unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("refused the credentials"), "{err}");
    let plain = format!(
        "brokers = \"127.0.0.1:{tls_port}\"\ntopic = \"secure\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nuser = \"rowhook\"\npassword = \"pencil\""
    );
    let mut sink = rt
        .block_on(open(&plain))
        .expect("a broker that does not answer is not an error at open");
    assert!(rt.block_on(sink.write_batch(&b)).is_err());
    let _ = socat.kill();
    let _ = socat.wait();
    // Read back without authentication.
    broker.kill();
    broker.extra.clear();
    broker.advertised = broker.port;
    broker.restart();
    let got = read_topic(&broker.addr(), "secure", 1);
    assert_eq!(
        got.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(),
        b.iter().map(|m| format!("{}:0", m.id)).collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(&certs);
}

/// A payload past the topic's max.message.bytes is refused at emit size
/// (the sink's limit) and, if it gets as far, as a permanent error before
/// anything is sent; binary payloads, empty keys and keys with `/` or
/// spaces are delivered as they are.
#[test]
fn hostile_payloads_and_keys() {
    let broker = Broker::start("hostile");
    broker.create_topic("odd", 1, &["max.message.bytes=600000"]);
    let rt = rt();
    let mut sink = rt
        .block_on(open(&format!("brokers = \"{}\"\ntopic = \"odd\"", broker.addr())))
        .unwrap();
    let limit = sink.limits().max_payload.expect("the limit is learnt at open");
    assert!(
        limit > 590_000 && limit < 600_000,
        "{limit}: from the topic's max.message.bytes"
    );
    let big = Message {
        key: None,
        payload: vec![b'x'; 10 << 20],
        id: "0-1-1:0:0".into(),
        index: 0,
    };
    let err = rt.block_on(sink.write_batch(std::slice::from_ref(&big))).unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("max.message.bytes"), "{err}");
    let odd: Vec<Message> = [
        (Some(&b""[..]), &b"\x00\xff\xfe binary"[..]),
        (Some(b"a/b c"), b"slash and space"),
        (None, b""),
        (Some(b"k"), &[b'y'; 500_000][..]),
    ]
    .iter()
    .enumerate()
    .map(|(i, (k, p))| Message {
        key: k.map(<[u8]>::to_vec),
        payload: p.to_vec(),
        id: format!("0-1-2:{i}:0"),
        index: 0,
    })
    .collect();
    rt.block_on(write_until_delivered(&mut sink, &odd, Duration::from_secs(20)));
    let got = read_topic(&broker.addr(), "odd", 1);
    assert_eq!(got.len(), 4);
    for (g, m) in got.iter().zip(&odd) {
        assert_eq!((g.key.as_deref(), &g.value), (m.key.as_deref(), &m.payload));
    }
}

/// `rowhook check` finds the topic and its partitions, and names the fix
/// when the topic is missing or the broker is down.
#[test]
fn check_finds_the_topic() {
    let mut broker = Broker::start("check");
    broker.create_topic("present", 2, &[]);
    let (dir, addr) = (broker.dir.clone(), broker.addr());
    let check = |topic: &str| {
        let config = minimal_config(
            &dir,
            "",
            "kafka",
            &format!("brokers = \"{addr}\"\ntopic = \"{topic}\""),
            "",
        );
        let out = rowhook(&["check", "-c", config.to_str().unwrap()]);
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (ok, text) = check("present");
    assert!(ok, "{text}");
    assert!(
        text.contains("topic present has 2 partition(s), max.message.bytes 1048588 (Kafka's default"),
        "{text}"
    );
    let (ok, text) = check("absent");
    assert!(!ok, "{text}");
    assert!(text.contains("topic absent does not exist; create it"), "{text}");
    broker.kill();
    let (ok, text) = check("present");
    assert!(!ok, "{text}");
    assert!(text.contains("start the brokers or fix brokers"), "{text}");
}

/// 200,704 small messages in batches of 4096 (100 keys) into a 4-partition
/// topic; prints the rate and both sides' CPU time (`cargo test --release
/// -p rowhook --test e2e sink_kafka::throughput -- --nocapture`). The
/// topic's end offsets add up to the count.
#[test]
fn throughput() {
    let broker = Broker::start("speed");
    broker.create_topic("t", 4, &[]);
    let pid = broker.child.as_ref().expect("running").id().to_string();
    let rt = rt();
    let batches: Vec<Vec<Message>> = (0..49)
        .map(|b| {
            (0..4096)
                .map(|i| Message {
                    key: Some((i % 100).to_string().into_bytes()),
                    payload: format!("{{\"order\":{i},\"status\":\"new\",\"total\":\"19.99\",\"batch\":{b}}}")
                        .into_bytes(),
                    id: format!("0-1-{b}:{i}:0"),
                    index: 0,
                })
                .collect()
        })
        .collect();
    let (n, took, ours, theirs) = rt.block_on(async {
        let mut sink = open(&format!("brokers = \"{}\"\ntopic = \"t\"", broker.addr()))
            .await
            .unwrap();
        let start = Instant::now();
        let cpu = (cpu_seconds("self"), cpu_seconds(&pid));
        let mut n = 0;
        for b in &batches {
            sink.write_batch(b).await.unwrap();
            n += b.len();
        }
        let took = start.elapsed();
        (n, took, cpu_seconds("self") - cpu.0, cpu_seconds(&pid) - cpu.1)
    });
    let rate = n as f64 / took.as_secs_f64();
    println!(
        "kafka sink: {n} records acknowledged in {took:?}: {rate:.0} messages/s; CPU: this process {ours:.2} s, tansu {theirs:.2} s"
    );
    assert_eq!(record_count(&broker.addr(), "t", 4), n as i64);
}
