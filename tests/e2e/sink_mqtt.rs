//! The mqtt sink against a real Mosquitto, which each test starts on a free
//! port with its own config and persistence directory, and stops or
//! restarts as it needs: delivery in MQTT 5 (with the `rowhook-id` and
//! `rowhook-index` user properties) and in MQTT 3.1.1, a broker restarted
//! mid-run, outages mid-batch, hostile payloads and keys, refused
//! credentials in `rowhook check` and `rowhook run`.

use std::collections::{BTreeMap, HashSet};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rowhook::sink::mqtt::{MqttKind, MqttOptions};
use rowhook::sink::{Message, Sink, SinkError, SinkKind, SinkSpec};
use rumqttc::v5;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;

use crate::crash::{ledger_rows, ledger_setup};
use crate::sink_support::{batch, minimal_config, replay_shop, rt, sink_spec, write_until_delivered};
use crate::support::{interrupt, rowhook, spawn_run, temp_dir, test_certs};

/// A private Mosquitto on a free port, with persistence in its directory.
struct Mosquitto {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts a broker whose config is the usual lines plus `extra`
    /// (`allow_anonymous true` unless `extra` says otherwise).
    fn start(tag: &str, extra: &str) -> Mosquitto {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = temp_dir(&format!("mosquitto-{tag}"));
        // Run as root, mosquitto switches to the user `mosquitto`, which
        // could not write the test's directory (persistence, log).
        let user = if std::fs::metadata("/proc/self").is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid() == 0
        }) {
            "user root\n"
        } else {
            ""
        };
        let anonymous = if extra.contains("allow_anonymous") {
            ""
        } else {
            "allow_anonymous true\n"
        };
        std::fs::write(
            dir.join("mosquitto.conf"),
            format!(
                "listener {port} 127.0.0.1\n{user}{anonymous}persistence true\npersistence_location {}/\nmax_queued_messages 0\nlog_dest file {}\nlog_type error\nlog_type warning\nlog_type notice\n{extra}\n",
                dir.display(),
                dir.join("mosquitto.log").display()
            ),
        )
        .unwrap();
        let mut m = Mosquitto { port, dir, child: None };
        m.restart();
        m
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Starts the broker (again, on the same port and persistence).
    fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run mosquitto (apt-get install mosquitto)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}: {}",
                self.port,
                std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker with SIGTERM: it saves its sessions and queued
    /// messages to its persistence file, and drops every client.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One message a subscriber received.
#[derive(Debug, Clone)]
struct Got {
    topic: String,
    payload: Vec<u8>,
    /// The `rowhook-id` and `rowhook-index` user properties, if any.
    id: Option<String>,
    index: Option<String>,
}

/// An MQTT 5 subscriber at QoS 1 with a persistent session, reading in a
/// thread of its own; it reconnects when the broker comes back.
struct Subscriber {
    got: Arc<Mutex<Vec<Got>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    fn start(port: u16, filter: &str) -> Subscriber {
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (got, stop, filter) = (got.clone(), stop.clone(), filter.to_owned());
            let id = format!("test-sub-{port}-{}", filter.replace(['/', '#', '+'], "_"));
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut o = v5::MqttOptions::new(id, "127.0.0.1", port);
                    o.set_clean_start(false)
                        .set_session_expiry_interval(Some(3600))
                        .set_max_packet_size(Some(64 << 20))
                        .set_keep_alive(Duration::from_secs(5));
                    let (client, mut events) = v5::AsyncClient::new(o, 100);
                    let mut ready = Some(ready_tx);
                    while !stop.load(Ordering::Relaxed) {
                        match tokio::time::timeout(Duration::from_millis(100), events.poll()).await {
                            Err(_) => {}
                            Ok(Ok(v5::Event::Incoming(Packet::ConnAck(_)))) => {
                                client.subscribe(filter.clone(), QoS::AtLeastOnce).await.unwrap();
                            }
                            Ok(Ok(v5::Event::Incoming(Packet::SubAck(_)))) => {
                                if let Some(tx) = ready.take() {
                                    tx.send(()).unwrap();
                                }
                            }
                            Ok(Ok(v5::Event::Incoming(Packet::Publish(p)))) => {
                                let prop = |name: &str| {
                                    p.properties.as_ref().and_then(|props| {
                                        props
                                            .user_properties
                                            .iter()
                                            .find(|(k, _)| k == name)
                                            .map(|(_, v)| v.clone())
                                    })
                                };
                                got.lock().unwrap().push(Got {
                                    topic: String::from_utf8(p.topic.to_vec()).unwrap(),
                                    payload: p.payload.to_vec(),
                                    id: prop("rowhook-id"),
                                    index: prop("rowhook-index"),
                                });
                            }
                            Ok(Ok(_)) => {}
                            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                });
            })
        };
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the subscriber subscribed");
        Subscriber {
            got,
            stop,
            thread: Some(thread),
        }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` messages came (or `within` passed), then for a
    /// moment more, so that extra ones would show.
    fn wait_for(&self, n: usize, within: Duration) -> Vec<Got> {
        let deadline = Instant::now() + within;
        while self.got.lock().unwrap().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        self.got()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The options of an mqtt sink with these keys.
fn options(keys: &str) -> MqttOptions {
    match sink_spec("mqtt", keys) {
        SinkSpec::Mqtt(o) => o,
        other => panic!("expected an mqtt sink, got {other:?}"),
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

fn show(got: &[Got]) -> Vec<String> {
    got.iter()
        .map(|g| {
            format!(
                "{} {} {} {}",
                g.topic,
                g.id.as_deref().unwrap_or("-"),
                g.index.as_deref().unwrap_or("-"),
                String::from_utf8_lossy(&g.payload)
            )
        })
        .collect()
}

/// The shop binlog's new orders reach a subscriber, one message each, with
/// their topic and payload: in MQTT 5 with `rowhook-id` and
/// `rowhook-index`, in MQTT 3.1.1 as the payload alone.
#[test]
fn replay_publishes_each_new_order() {
    let broker = Mosquitto::start("replay", "");
    let dir = temp_dir("mqtt-replay");
    let sub = Subscriber::start(broker.port, "shop/#");
    let config = minimal_config(
        &dir,
        "",
        "mqtt",
        &format!("url = \"{}\"\ntopic = \"shop/v5/{{key}}\"", broker.url()),
        "",
    );
    let out = replay_shop(&config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = minimal_config(
        &dir,
        "",
        "mqtt",
        &format!(
            "url = \"{}\"\ntopic = \"shop/v3/{{key}}\"\nprotocol = \"3.1.1\"",
            broker.url()
        ),
        "",
    );
    let out = replay_shop(&config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        show(&sub.wait_for(6, Duration::from_secs(10))),
        [
            "shop/v5/1001 0-1-9:0:0 0 {\"order\":1001}",
            "shop/v5/1002 0-1-10:0:0 0 {\"order\":1002}",
            "shop/v5/1003 0-1-10:1:0 0 {\"order\":1003}",
            "shop/v3/1001 - - {\"order\":1001}",
            "shop/v3/1002 - - {\"order\":1002}",
            "shop/v3/1003 - - {\"order\":1003}",
        ]
    );
}

/// The ids of `got` as the subscriber saw them first (a repeat is a batch
/// sent again after an outage: consumers drop it by its id), checking that
/// nothing arrived out of order on any topic.
fn first_seen_in_order(got: &[Got], id: impl Fn(&Got) -> String) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut firsts = Vec::new();
    for g in got {
        let id = id(g);
        if seen.insert(id.clone()) {
            firsts.push((g.topic.clone(), id));
        }
    }
    firsts.into_iter().map(|(_, id)| id).collect()
}

/// The broker stopped between batches and restarted while a batch was
/// cut short: writes are unavailable meanwhile, then every message
/// arrives, each topic in order; a repeat is a whole batch again.
#[test]
fn outages_are_unavailable_and_batches_arrive_whole() {
    for protocol in ["5", "3.1.1"] {
        let mut broker = Mosquitto::start("outage", "");
        let topic = format!("o{}", protocol.replace('.', ""));
        let sub = Subscriber::start(broker.port, &format!("{topic}/#"));
        let opts = options(&format!(
            "url = \"{}\"\ntopic = \"{topic}/{{key}}\"\nprotocol = \"{protocol}\"\nack_timeout_ms = 1000",
            broker.url()
        ));
        let (a, b, c) = (batch("a", 2000), batch("b", 2000), batch("c", 5000));
        rt().block_on(async {
            let mut sink = MqttKind::open("m", &opts).await.unwrap();
            sink.write_batch(&a).await.unwrap();
            // Every message of `a` is at the broker before it stops.
            assert_eq!(sub.wait_for(a.len(), Duration::from_secs(20)).len(), a.len());
            broker.stop();
            let e = sink.write_batch(&b).await.unwrap_err();
            assert!(e.is_retryable(), "{e}");
            assert!(sink.health().await.unwrap_err().is_retryable());
            broker.restart();
            write_until_delivered(&mut sink, &b, Duration::from_secs(30)).await;
            // A write cut short (part of it may be at the broker), the
            // broker restarted, then the retry.
            let _ = tokio::time::timeout(Duration::from_millis(5), sink.write_batch(&c)).await;
            broker.stop();
            broker.restart();
            write_until_delivered(&mut sink, &c, Duration::from_secs(30)).await;
            sink.close().await.unwrap();
        });
        let want: Vec<&Message> = a.iter().chain(&b).chain(&c).collect();
        let got = sub.wait_for(want.len(), Duration::from_secs(30));
        let by_payload = |g: &Got| String::from_utf8_lossy(&g.payload).into_owned();
        let firsts = first_seen_in_order(&got, by_payload);
        // Per topic (key), the order of first arrivals is the batch order.
        let mut per_topic: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in &want {
            let key = String::from_utf8(m.key.clone().unwrap()).unwrap();
            per_topic
                .entry(format!("{topic}/{key}"))
                .or_default()
                .push(String::from_utf8(m.payload.clone()).unwrap());
        }
        let mut got_per_topic: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut seen = HashSet::new();
        for g in &got {
            if seen.insert(by_payload(g)) {
                got_per_topic.entry(g.topic.clone()).or_default().push(by_payload(g));
            }
        }
        if firsts.len() != want.len() {
            let got: HashSet<&String> = firsts.iter().collect();
            let missing: Vec<String> = want
                .iter()
                .map(|m| String::from_utf8(m.payload.clone()).unwrap())
                .filter(|p| !got.contains(p))
                .collect();
            panic!(
                "{protocol}: {} of {} messages; missing {:?} ...",
                firsts.len(),
                want.len(),
                &missing[..missing.len().min(20)]
            );
        }
        assert!(got_per_topic == per_topic, "{protocol}: each topic in batch order");
        if protocol == "5" {
            assert!(got.iter().all(|g| g.id.is_some() && g.index.as_deref() == Some("0")));
        }
    }
}

/// `rowhook run` live from MariaDB into a broker (persistence on), which is
/// restarted mid-run: the run retries, and once the broker is back every
/// committed row arrives, in commit order, each first copy carrying its
/// change id in `rowhook-id`.
#[test]
fn broker_restart_mid_run_gets_everything_in_order() {
    let mut broker = Mosquitto::start("restart-run", "");
    let sub = Subscriber::start(broker.port, "ledger/#");
    let (db, dir, config) = ledger_setup(
        "mqtt-restart",
        7471,
        "",
        &format!(
            "kind = \"mqtt\"\nurl = \"{}\"\ntopic = \"ledger/{{key}}\"\nack_timeout_ms = 1000\nretries = \"forever\"\nretry_max_ms = 200",
            broker.url()
        ),
    );
    let log = dir.join("rowhook.log");
    let child = spawn_run(&config, &log);
    let rows = |from: u32, to: u32| ledger_rows(&db, from, to);
    // The ledger ids in the order first seen (a repeat is a batch sent again).
    let ids = |got: &[Got]| -> Vec<u32> {
        let mut seen = HashSet::new();
        got.iter()
            .filter_map(|g| {
                let text = String::from_utf8_lossy(&g.payload).into_owned();
                let mut f = text.split(' ');
                let change = f.next().unwrap().to_owned();
                assert_eq!(g.id.as_deref(), Some(change.as_str()), "rowhook-id is the change id");
                seen.insert(change).then(|| f.next().unwrap().parse().unwrap())
            })
            .collect()
    };
    rows(0, 10);
    assert_eq!(ids(&sub.wait_for(200, Duration::from_secs(60))).len(), 200);
    broker.stop();
    rows(10, 20);
    std::thread::sleep(Duration::from_millis(1500));
    broker.restart();
    rows(20, 30);
    // Copies re-sent across the restart may arrive twice: wait for 600
    // distinct changes, not 600 messages (then, in `wait_for`, a moment
    // more, so that anything out of place would show).
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids(&sub.got()).len() < 600 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = sub.wait_for(0, Duration::ZERO);
    assert!(interrupt(child).success());
    let text_log = std::fs::read_to_string(&log).unwrap();
    assert!(text_log.contains("retrying"), "the outage was seen: {text_log}");
    assert_eq!(ids(&got), (1..=600).collect::<Vec<_>>(), "log:\n{text_log}");
    assert!(got.iter().all(|g| g.topic == "ledger/_"), "no key: the level `_`");
}

/// A binary payload, an empty key, a key with `/` and spaces are delivered
/// (the key percent-encoded into one level). A 10 MB payload: where the
/// broker says its limit (MQTT 5 Maximum Packet Size) it is refused at
/// emit and in the batch, before anything of the batch is sent; where it
/// does not, Mosquitto refuses it in MQTT 5 (PUBACK 0x95: permanent), and
/// in MQTT 3.1.1 acknowledges and drops it, unless `max_payload` refuses
/// it first.
#[test]
fn hostile_payloads_and_keys() {
    let broker = Mosquitto::start("hostile", "max_packet_size 1048576");
    let sub = Subscriber::start(broker.port, "h/#");
    let binary: Vec<u8> = (0..=255u8).collect();
    let big = message("x:1:0", 0, Some("k"), &vec![b'x'; 10 << 20]);
    rt().block_on(async {
        // MQTT 5: the broker's Maximum Packet Size, less room for the
        // topic and the properties.
        let opts = options(&format!("url = \"{}\"\ntopic = \"h/{{key}}\"", broker.url()));
        let mut sink = MqttKind::open("m", &opts).await.unwrap();
        let max = sink.limits().max_payload.unwrap();
        assert!((1_040_000..1_048_576).contains(&max), "{max}");
        assert_eq!(sink.limits().max_key, Some(1024));
        let e = sink
            .write_batch(&[message("x:0:0", 0, Some("k"), b"first"), big.clone()])
            .await
            .unwrap_err();
        assert!(matches!(e, SinkError::Permanent { .. }), "{e}");
        assert!(e.to_string().contains("Maximum Packet Size (1048576 bytes"), "{e}");
        sink.write_batch(&[
            message("y:0:0", 0, Some("bin"), &binary),
            message("y:0:0", 1, Some(""), b"empty key"),
            message("y:1:0", 0, None, b"no key"),
            message("y:2:0", 0, Some("a b/c+d#"), b"spaces"),
            message("y:3:0", 0, Some("k"), &vec![b'z'; 1_000_000]),
        ])
        .await
        .unwrap();
    });
    let got = sub.wait_for(5, Duration::from_secs(10));
    /// Topic, `rowhook-id`, `rowhook-index` and payload.
    type Seen<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);
    let got: Vec<Seen> = got
        .iter()
        .map(|g| {
            (
                g.topic.as_str(),
                g.id.as_deref(),
                g.index.as_deref(),
                g.payload.as_slice(),
            )
        })
        .collect();
    let million = vec![b'z'; 1_000_000];
    assert_eq!(
        got,
        [
            ("h/bin", Some("y:0:0"), Some("0"), binary.as_slice()),
            ("h/_", Some("y:0:0"), Some("1"), b"empty key".as_slice()),
            ("h/_", Some("y:1:0"), Some("0"), b"no key".as_slice()),
            ("h/a%20b%2Fc%2Bd%23", Some("y:2:0"), Some("0"), b"spaces".as_slice()),
            ("h/k", Some("y:3:0"), Some("0"), million.as_slice()),
        ]
    );

    // A broker with only `message_size_limit`, which it does not announce.
    let broker = Mosquitto::start("hostile-limit", "message_size_limit 1000000");
    let sub = Subscriber::start(broker.port, "l/#");
    rt().block_on(async {
        let opts = options(&format!("url = \"{}\"\ntopic = \"l/v5\"", broker.url()));
        let mut sink = MqttKind::open("m1", &opts).await.unwrap();
        assert!(sink.limits().max_payload.unwrap() > 200 << 20);
        let e = sink
            .write_batch(&[message("x:0:0", 0, None, b"first"), big.clone()])
            .await
            .unwrap_err();
        assert!(matches!(e, SinkError::Permanent { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("refused message `x:1:0` as too large (PUBACK reason 0x95)"),
            "{e}"
        );
        // MQTT 3.1.1: max_payload refuses it before anything is sent ...
        let opts = options(&format!(
            "url = \"{}\"\ntopic = \"l/v3/{{key}}\"\nprotocol = \"3.1.1\"\nmax_payload = 1000000",
            broker.url()
        ));
        let mut sink = MqttKind::open("m2", &opts).await.unwrap();
        assert_eq!(sink.limits().max_payload, Some(1_000_000));
        let e = sink
            .write_batch(&[message("z:0:0", 0, Some("a b/c"), &binary), big.clone()])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("max_payload (1000000 bytes)"), "{e}");
        sink.write_batch(&[message("z:0:0", 0, Some("a b/c"), &binary)])
            .await
            .unwrap();
        // ... without it, the broker acknowledges the message and drops it,
        // or (now and then) closes the connection, which leaves the write
        // unavailable: either way no subscriber gets it.
        let opts = options(&format!(
            "url = \"{}\"\ntopic = \"l/dropped\"\nprotocol = \"3.1.1\"",
            broker.url()
        ));
        let mut sink = MqttKind::open("m3", &opts).await.unwrap();
        if let Err(e) = sink.write_batch(std::slice::from_ref(&big)).await {
            assert!(e.is_retryable() && e.to_string().contains("closed"), "{e}");
        }
    });
    let got = sub.wait_for(3, Duration::from_secs(5));
    let got: Vec<(&str, &[u8])> = got.iter().map(|g| (g.topic.as_str(), g.payload.as_slice())).collect();
    assert_eq!(
        got,
        [("l/v5", b"first".as_slice()), ("l/v3/a%20b%2Fc", binary.as_slice())]
    );
}

/// A broker with a password file: `rowhook check` names refused
/// credentials (without the password) and a broker that is down, each with
/// its fix, and with the right password says the broker's limits;
/// `rowhook run` with the wrong password stops at once with the same
/// reason.
#[test]
fn refused_credentials_in_check_and_run() {
    let dir = temp_dir("mqtt-auth");
    let passwords = dir.join("passwords");
    let made = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwords)
        .args(["rowhook", "sesame"])
        .status()
        .expect("run mosquitto_passwd (apt-get install mosquitto)");
    assert!(made.success());
    let mut broker = Mosquitto::start(
        "auth",
        &format!("allow_anonymous false\npassword_file {}", passwords.display()),
    );
    let url = broker.url();
    let check = |password: &str| -> (bool, String) {
        let config = minimal_config(
            &dir,
            "",
            "mqtt",
            &format!("url = \"{url}\"\ntopic = \"shop/{{key}}\"\nuser = \"rowhook\"\npassword = \"{password}\""),
            "",
        );
        let out = rowhook(&["check", "-c", config.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find(|l| l.contains("sink `orders_queue` (mqtt)"))
            .unwrap_or_else(|| panic!("no mqtt line in\n{stdout}"))
            .to_owned();
        (out.status.success(), line)
    };
    let (ok, line) = check("wrong-one");
    eprintln!("rowhook check, wrong password: {line}");
    assert!(!ok && line.contains("refused the credentials"), "{line}");
    assert!(line.contains("check user and password"), "{line}");
    assert!(!line.contains("wrong-one"), "the password must not show: {line}");
    let (ok, line) = check("sesame");
    eprintln!("rowhook check: {line}");
    assert!(ok, "{line}");
    assert!(
        line.contains(
            "connected as rowhook-orders_queue-check; the broker sets no maximum packet size, receive maximum 20"
        ),
        "{line}"
    );

    // `rowhook run` opens its sinks first: the wrong password stops it.
    let config = minimal_config(
        &dir,
        "",
        "mqtt",
        &format!(
            "url = \"{}\"\ntopic = \"shop/{{key}}\"\nuser = \"rowhook\"\npassword = \"wrong-one\"",
            broker.url()
        ),
        "",
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("[source]\nurl = \"mysql://root@127.0.0.1:1\"\nserver_id = 7472\n\n[state]\npath = \"state\"\n{text}"),
    )
    .unwrap();
    let out = rowhook(&["run", "-c", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("rowhook run, wrong password:\n{stderr}");
    assert!(!out.status.success());
    assert!(
        stderr.contains("opening sink `orders_queue`") && stderr.contains("refused the credentials"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-one"), "{stderr}");

    broker.stop();
    let (ok, line) = check("sesame");
    assert!(!ok && line.contains("start the broker or fix url"), "{line}");
}

/// Acknowledged messages per second into a private Mosquitto on this
/// machine, in MQTT 5 and 3.1.1, printed (`cargo test --release --test e2e
/// sink_mqtt::throughput -- --nocapture`); a subscriber receives them all.
#[test]
fn throughput() {
    let broker = Mosquitto::start("speed", "");
    let total = 100_000;
    for protocol in ["5", "3.1.1"] {
        let topic = format!("t{}", protocol.replace('.', ""));
        let sub = Subscriber::start(broker.port, &format!("{topic}/#"));
        let opts = options(&format!(
            "url = \"{}\"\ntopic = \"{topic}/{{key}}\"\nprotocol = \"{protocol}\"",
            broker.url()
        ));
        let batches: Vec<Vec<Message>> = (0..total / 4096 + 1)
            .map(|b| {
                (0..4096.min(total - b * 4096))
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
        let (n, took) = rt().block_on(async {
            let mut sink = MqttKind::open(&format!("speed{topic}"), &opts).await.unwrap();
            let start = Instant::now();
            let mut n = 0;
            for b in &batches {
                sink.write_batch(b).await.unwrap();
                n += b.len();
            }
            (n, start.elapsed())
        });
        let rate = n as f64 / took.as_secs_f64();
        println!("mqtt sink, MQTT {protocol}: {n} messages acknowledged in {took:?}: {rate:.0} messages/s");
        assert_eq!(sub.wait_for(n, Duration::from_secs(60)).len(), n);
    }
}

/// `mqtts://`: the broker's certificate is checked against `tls_ca_file`,
/// and the new orders arrive; against the system's roots it is refused
/// for good, and `rowhook check` says so with the fix.
#[test]
fn tls_is_verified() {
    let certs = test_certs("mqtt-tls-certs");
    let tls_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let pem = |f: &str| certs.join(f).display().to_string();
    let broker = Mosquitto::start(
        "tls",
        &format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}",
            pem("ca.pem"),
            pem("server.pem"),
            pem("server.key")
        ),
    );
    let sub = Subscriber::start(broker.port, "tls/#");
    let dir = temp_dir("mqtt-tls");
    let url = format!("mqtts://localhost:{tls_port}");
    let with_ca = minimal_config(
        &dir,
        "",
        "mqtt",
        &format!(
            "url = \"{url}\"\ntopic = \"tls/{{key}}\"\ntls_ca_file = \"{}\"",
            pem("ca.pem")
        ),
        "",
    );
    let out = rowhook(&["check", "-c", with_ca.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(&format!("{url} (MQTT 5)")), "{stdout}");
    let out = replay_shop(&with_ca);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        show(&sub.wait_for(3, Duration::from_secs(10))),
        [
            "tls/1001 0-1-9:0:0 0 {\"order\":1001}",
            "tls/1002 0-1-10:0:0 0 {\"order\":1002}",
            "tls/1003 0-1-10:1:0 0 {\"order\":1003}",
        ]
    );
    let system_roots = minimal_config(
        &dir,
        "",
        "mqtt",
        &format!("url = \"{url}\"\ntopic = \"tls/{{key}}\""),
        "",
    );
    let out = rowhook(&["check", "-c", system_roots.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains(&format!("TLS with {url} failed")), "{stdout}");
    assert!(stdout.contains("check tls_ca_file"), "{stdout}");
}
