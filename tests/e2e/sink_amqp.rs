//! The amqp sink against the RabbitMQ on 127.0.0.1:5672 (guest/guest).
//! RabbitMQ is too heavy to start per test, so each test declares its own
//! exchange and queue under a unique name and deletes them when done, and
//! outages are a [`Proxy`] cutting the connections: delivery in order with
//! `message-id`s, hostile payloads and keys, a full queue that nacks, an
//! unroutable message, refused credentials, vhost and exchange (from the
//! sink, `rowhook check` and `rowhook run`), and a cut mid-batch and
//! mid-run that loses nothing.

use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use amqprs::channel::{
    BasicGetArguments, Channel, ExchangeDeclareArguments, ExchangeDeleteArguments, QueueBindArguments,
    QueueDeclareArguments, QueueDeleteArguments, QueuePurgeArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{FieldTable, FieldValue};
use rowhook::sink::amqp::{AmqpKind, AmqpOptions, AmqpSink};
use rowhook::sink::{Message, Sink, SinkError, SinkKind, SinkSpec};

use crate::crash::{ROLLED_BACK, Rng, ledger_setup, load};
use crate::proxy::Proxy;
use crate::sink_support::{batch, minimal_config, rt, sink_spec, write_until_delivered};
use crate::support::{rowhook, spawn_run, temp_dir};

/// What `rowhook check` and `rowhook run` configs put before the sink: a
/// source (never reached by `check`) and a state directory.
const RUN_HEAD: &str = "[source]\nurl = \"mysql://root@127.0.0.1:1\"\nserver_id = 7471\n\n[state]\npath = \"state\"\n";
const BROKER: &str = "127.0.0.1:5672";

/// A name no other test or run uses.
fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("rowhook-test-{tag}-{}-{nanos}", std::process::id())
}

/// An administrative connection to the broker, as guest.
async fn admin() -> (Connection, Channel) {
    let args = OpenConnectionArguments::new("127.0.0.1", 5672, "guest", "guest");
    let conn = Connection::open(&args)
        .await
        .expect("RabbitMQ on 127.0.0.1:5672 as guest/guest (apt-get install rabbitmq-server)");
    let ch = conn.open_channel(None).await.unwrap();
    (conn, ch)
}

/// One message as a consumer gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    routing_key: String,
    message_id: String,
    delivery_mode: Option<u8>,
    content_type: Option<String>,
    payload: Vec<u8>,
}

/// An exchange (`""`: the default one) and a queue of one test, deleted on drop.
struct Fixture {
    exchange: String,
    queue: String,
}

impl Fixture {
    /// Declares exchange `kind` (none when `kind` is empty) and a durable
    /// queue with `args`, bound with `binding` unless it is `None`.
    fn new(tag: &str, kind: &str, binding: Option<&str>, args: FieldTable) -> Fixture {
        let f = Fixture {
            exchange: if kind.is_empty() { String::new() } else { unique(tag) },
            queue: unique(tag),
        };
        rt().block_on(async {
            let (_c, ch) = admin().await;
            if !kind.is_empty() {
                ch.exchange_declare(ExchangeDeclareArguments::new(&f.exchange, kind))
                    .await
                    .unwrap();
            }
            ch.queue_declare(
                QueueDeclareArguments::new(&f.queue)
                    .durable(true)
                    .arguments(args)
                    .finish(),
            )
            .await
            .unwrap();
            if let Some(b) = binding {
                ch.queue_bind(QueueBindArguments::new(&f.queue, &f.exchange, b))
                    .await
                    .unwrap();
            }
        });
        f
    }

    /// Takes every message off the queue, in order.
    fn drain(&self) -> Vec<Got> {
        rt().block_on(async {
            let (_c, ch) = admin().await;
            let mut out = Vec::new();
            while let Some((ok, props, body)) = ch
                .basic_get(BasicGetArguments::new(&self.queue).no_ack(true).finish())
                .await
                .unwrap()
            {
                out.push(Got {
                    routing_key: ok.routing_key().clone(),
                    message_id: props.message_id().cloned().unwrap_or_default(),
                    delivery_mode: props.delivery_mode(),
                    content_type: props.content_type().cloned(),
                    payload: body,
                });
            }
            out
        })
    }

    /// Empties the queue.
    fn purge(&self) {
        rt().block_on(async {
            let (_c, ch) = admin().await;
            ch.queue_purge(QueuePurgeArguments::new(&self.queue)).await.unwrap();
        });
    }

    /// Messages in the queue.
    fn count(&self) -> u32 {
        rt().block_on(async {
            let (_c, ch) = admin().await;
            let (_, n, _) = ch
                .queue_declare(QueueDeclareArguments::new(&self.queue).passive(true).finish())
                .await
                .unwrap()
                .unwrap();
            n
        })
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let (exchange, queue) = (self.exchange.clone(), self.queue.clone());
        // A thread of its own: drop may run inside a test's runtime.
        let _ = std::thread::spawn(move || {
            rt().block_on(async {
                let (_c, ch) = admin().await;
                let _ = ch.queue_delete(QueueDeleteArguments::new(&queue)).await;
                if !exchange.is_empty() {
                    let _ = ch.exchange_delete(ExchangeDeleteArguments::new(&exchange)).await;
                }
            })
        })
        .join();
    }
}

/// The options of an amqp sink with these keys.
fn options(keys: &str) -> AmqpOptions {
    match sink_spec("amqp", keys) {
        SinkSpec::Amqp(o) => o,
        other => panic!("expected an amqp sink, got {other:?}"),
    }
}

async fn open(opts: &AmqpOptions) -> Result<AmqpSink, SinkError> {
    <AmqpKind as SinkKind>::open("a", opts).await
}

fn message(id: &str, index: u32, key: Option<&[u8]>, payload: &[u8]) -> Message {
    Message {
        key: key.map(<[u8]>::to_vec),
        payload: payload.to_vec(),
        id: id.to_owned(),
        index,
    }
}

/// Two batches through a topic exchange: every message in the queue, in
/// order, persistent, with its routing key (the emit key in the template)
/// and `message-id` `<change id>:<index>`; two messages of one change
/// have two ids.
#[test]
fn batches_arrive_in_order_with_their_ids() {
    let f = Fixture::new("order", "topic", Some("o.#"), FieldTable::new());
    let opts = options(&format!(
        "url = \"amqp://guest:guest@{BROKER}\"\nexchange = \"{}\"\nrouting_key = \"o.{{key}}\"\ncontent_type = \"application/json\"",
        f.exchange
    ));
    let a = batch("a", 1000);
    let b = vec![
        message("b:0:0", 0, Some(b"7"), b"{\"first\":1}"),
        message("b:0:0", 1, Some(b"7"), b"{\"second\":1}"),
    ];
    rt().block_on(async {
        let mut sink = open(&opts).await.unwrap();
        assert!(sink.is_connected());
        assert_eq!(sink.limits().max_payload, Some(128 << 20));
        assert_eq!(sink.limits().max_key, Some(253));
        sink.write_batch(&a).await.unwrap();
        sink.write_batch(&b).await.unwrap();
        sink.health().await.unwrap();
        sink.close().await.unwrap();
    });
    let got = f.drain();
    let want: Vec<Got> = a
        .iter()
        .chain(&b)
        .map(|m| Got {
            routing_key: format!("o.{}", String::from_utf8_lossy(m.key.as_deref().unwrap())),
            message_id: format!("{}:{}", m.id, m.index),
            delivery_mode: Some(2),
            content_type: Some("application/json".into()),
            payload: m.payload.clone(),
        })
        .collect();
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
}

/// A 10 MB payload, a binary payload, an empty key, no key, a key with `/`
/// and spaces are delivered as they are; a key that is not UTF-8 cannot be
/// a routing key, and a payload over `max_message_size` is too large: both
/// refused for good before anything is sent, and the limit is the one the
/// pipeline enforces at emit.
#[test]
fn hostile_payloads_and_keys() {
    let f = Fixture::new("hostile", "topic", Some("#"), FieldTable::new());
    let keys = |extra: &str| {
        options(&format!(
            "url = \"amqp://guest:guest@{BROKER}\"\nexchange = \"{}\"\nrouting_key = \"h.{{key}}\"\n{extra}",
            f.exchange
        ))
    };
    let big = vec![b'x'; 10 << 20];
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let hostile = vec![
        message("x:0:0", 0, Some(b"big"), &big),
        message("x:1:0", 0, Some(b"bin"), &binary),
        message("x:2:0", 0, Some(b""), b"empty key"),
        message("x:3:0", 0, None, b"no key"),
        message("x:4:0", 0, Some(b"a b/c.d"), b"spaces"),
    ];
    rt().block_on(async {
        let mut sink = open(&keys("")).await.unwrap();
        sink.write_batch(&hostile).await.unwrap();
        let e = sink
            .write_batch(&[
                message("y:0:0", 0, Some(b"fine"), b"first"),
                message("y:1:0", 0, Some(&[0xff, 0xfe]), b"second"),
            ])
            .await
            .unwrap_err();
        assert!(matches!(e, SinkError::Permanent { .. }), "{e}");
        assert!(
            e.to_string().contains("y:1:0") && e.to_string().contains("UTF-8"),
            "{e}"
        );

        let mut small = open(&keys("max_message_size = 1048576")).await.unwrap();
        assert_eq!(small.limits().max_payload, Some(1 << 20));
        let e = small
            .write_batch(&[message("z:0:0", 0, None, b"first"), hostile[0].clone()])
            .await
            .unwrap_err();
        assert!(matches!(e, SinkError::Permanent { .. }), "{e}");
        assert!(e.to_string().contains("max_message_size"), "{e}");
    });
    let got = f.drain();
    let got: Vec<(&str, &str, &[u8])> = got
        .iter()
        .map(|g| (g.routing_key.as_str(), g.message_id.as_str(), g.payload.as_slice()))
        .collect();
    assert_eq!(
        got,
        [
            ("h.big", "x:0:0:0", big.as_slice()),
            ("h.bin", "x:1:0:0", binary.as_slice()),
            ("h.", "x:2:0:0", b"empty key".as_slice()),
            ("h.", "x:3:0:0", b"no key".as_slice()),
            ("h.a b/c.d", "x:4:0:0", b"spaces".as_slice()),
        ],
        "the refused batches sent nothing"
    );
}

/// A queue full with `overflow = reject-publish` nacks: the batch is
/// unavailable, and once a consumer made room the retry is delivered
/// whole, through the default exchange (routing key = queue name).
#[test]
fn a_full_queue_nacks_and_the_retry_goes_through() {
    let mut args = FieldTable::new();
    args.insert("x-max-length".try_into().unwrap(), FieldValue::I(5));
    args.insert(
        "x-overflow".try_into().unwrap(),
        FieldValue::S("reject-publish".try_into().unwrap()),
    );
    let f = Fixture::new("full", "", None, args);
    let opts = options(&format!(
        "url = \"amqp://guest:guest@{BROKER}\"\nexchange = \"\"\nrouting_key = \"{}\"",
        f.queue
    ));
    let (a, b) = (batch("a", 3), batch("b", 5));
    rt().block_on(async {
        let mut sink = open(&opts).await.unwrap();
        sink.write_batch(&a).await.unwrap();
        let e = sink.write_batch(&b).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(
            e.to_string().contains("basic.nack") && e.to_string().contains("full"),
            "{e}"
        );
        // Still full: the retry is refused again.
        assert!(sink.write_batch(&b).await.unwrap_err().is_retryable());
    });
    let first = f.drain();
    assert_eq!(first.len(), 5, "the queue held its maximum");
    assert_eq!(
        first[..3].iter().map(|g| g.message_id.as_str()).collect::<Vec<_>>(),
        ["a:0:0:0", "a:1:0:0", "a:2:0:0"]
    );
    rt().block_on(async {
        let mut sink = open(&opts).await.unwrap();
        sink.write_batch(&b).await.unwrap();
    });
    let ids: Vec<String> = f.drain().into_iter().map(|g| g.message_id).collect();
    let want: Vec<String> = b.iter().map(|m| format!("{}:0", m.id)).collect();
    assert_eq!(ids, want);
}

/// With `mandatory` (the default) a message no queue is bound for comes
/// back, and the batch fails naming the binding to add; without it the
/// broker drops it and confirms.
#[test]
fn an_unroutable_message_fails_the_batch() {
    let f = Fixture::new("unroutable", "direct", Some("bound"), FieldTable::new());
    let keys = |extra: &str| {
        options(&format!(
            "url = \"amqp://guest:guest@{BROKER}\"\nexchange = \"{}\"\nrouting_key = \"{{key}}\"\n{extra}",
            f.exchange
        ))
    };
    rt().block_on(async {
        let mut sink = open(&keys("")).await.unwrap();
        let e = sink
            .write_batch(&[
                message("u:0:0", 0, Some(b"bound"), b"routed"),
                message("u:1:0", 0, Some(b"nowhere"), b"lost"),
            ])
            .await
            .unwrap_err();
        assert!(e.is_retryable(), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("returned message `u:1:0:0` as unroutable")
                && text.contains("routing key `nowhere`")
                && text.contains("declare binding"),
            "{text}"
        );
        let mut lax = open(&keys("mandatory = false")).await.unwrap();
        lax.write_batch(&[message("v:0:0", 0, Some(b"nowhere"), b"dropped")])
            .await
            .unwrap();
    });
    let ids: Vec<String> = f.drain().into_iter().map(|g| g.message_id).collect();
    assert_eq!(ids, ["u:0:0:0"]);
}

/// The connection is cut between batches and in the middle of one (the
/// write's future dropped too): writes and `health` are unavailable while
/// cut, the sink connects anew once the path is back, and the queue holds
/// every message, in order once re-sent copies are dropped by
/// `message-id`.
#[test]
fn a_cut_connection_loses_nothing() {
    let f = Fixture::new("cut", "direct", Some("k"), FieldTable::new());
    let proxy = Proxy::start(BROKER.parse().unwrap());
    let opts = options(&format!(
        "url = \"amqp://guest:guest@127.0.0.1:{}\"\nexchange = \"{}\"\nrouting_key = \"k\"\nconfirm_timeout_ms = 2000",
        proxy.port(),
        f.exchange
    ));
    let (a, b, c) = (batch("a", 2000), batch("b", 2000), batch("c", 20_000));
    rt().block_on(async {
        let mut sink = open(&opts).await.unwrap();
        sink.write_batch(&a).await.unwrap();
        proxy.cut();
        let e = sink.write_batch(&b).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(sink.health().await.unwrap_err().is_retryable());
        proxy.resume();
        write_until_delivered(&mut sink, &b, Duration::from_secs(30)).await;
        // Cut in the middle of a batch.
        let cutter = async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            proxy.cut();
        };
        let (r, ()) = tokio::join!(sink.write_batch(&c), cutter);
        assert!(r.is_err_and(|e| e.is_retryable()));
        proxy.resume();
        // A write whose future is dropped, then the retry.
        let _ = tokio::time::timeout(Duration::from_millis(5), sink.write_batch(&c)).await;
        write_until_delivered(&mut sink, &c, Duration::from_secs(30)).await;
        sink.close().await.unwrap();
    });
    assert!(proxy.forwarded() >= 3, "the sink connected anew");
    let got = f.drain();
    let mut seen = HashSet::new();
    let firsts: Vec<&str> = got
        .iter()
        .filter(|g| seen.insert(g.message_id.clone()))
        .map(|g| g.message_id.as_str())
        .collect();
    let want: Vec<String> = a.iter().chain(&b).chain(&c).map(|m| format!("{}:0", m.id)).collect();
    assert_eq!(firsts, want, "every message, in order");
    assert!(got.len() >= want.len());
}

/// Refused credentials, an unknown vhost and a missing exchange are
/// permanent, named with their fix and without the password, by the sink,
/// `rowhook check` and `rowhook run`; a broker that is down is only
/// unavailable, and `check` passes once all is right.
#[test]
fn refusals_are_named_with_their_fix() {
    let f = Fixture::new("refusals", "direct", Some("orders"), FieldTable::new());
    let down = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = |password: &str, port: u16, vhost: &str| format!("amqp://guest:{password}@127.0.0.1:{port}{vhost}");
    let keys =
        |url: &str, exchange: &str| format!("url = \"{url}\"\nexchange = \"{exchange}\"\nrouting_key = \"orders\"");
    let missing = unique("missing");
    rt().block_on(async {
        let e = open(&options(&keys(&url("Wr0ng", 5672, ""), &f.exchange)))
            .await
            .unwrap_err();
        assert!(matches!(e, SinkError::Permanent { .. }), "{e}");
        assert!(
            e.to_string().contains("refused the credentials") && e.to_string().contains("ACCESS_REFUSED"),
            "{e}"
        );
        assert!(!e.to_string().contains("Wr0ng"), "{e}");
        let e = open(&options(&keys(&url("guest", 5672, "/no-such-vhost"), &f.exchange)))
            .await
            .unwrap_err();
        assert!(matches!(e, SinkError::Permanent { .. }), "{e}");
        assert!(
            e.to_string().contains("530 NOT_ALLOWED") && e.to_string().contains("add_vhost"),
            "{e}"
        );
        let e = open(&options(&keys(&url("guest", 5672, ""), &missing)))
            .await
            .unwrap_err();
        assert!(matches!(e, SinkError::Permanent { .. }), "{e}");
        assert!(
            e.to_string().contains("404 NOT_FOUND") && e.to_string().contains("declare exchange name="),
            "{e}"
        );
        let mut sink = open(&options(&keys(&url("guest", down, ""), &f.exchange)))
            .await
            .unwrap();
        let e = sink.write_batch(&batch("d", 1)).await.unwrap_err();
        assert!(e.is_retryable() && e.to_string().contains("cannot connect"), "{e}");
    });

    let dir = temp_dir("amqp-refusals");
    let check = |sink_keys: &str| {
        let config = minimal_config(&dir, RUN_HEAD, "amqp", sink_keys, "");
        let out = Command::new(env!("CARGO_BIN_EXE_rowhook"))
            .args(["check", "-c"])
            .arg(&config)
            .env("AMQP_PASSWORD", "Wr0ng")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        stdout
            .lines()
            .find(|l| l.contains("sink `orders_queue` (amqp)"))
            .unwrap_or_else(|| panic!("no amqp line in\n{stdout}"))
            .to_owned()
    };
    let line = check(&keys(&url("${AMQP_PASSWORD}", 5672, ""), &f.exchange));
    assert!(
        line.contains("refused the credentials") && !line.contains("Wr0ng"),
        "{line}"
    );
    let line = check(&keys(&url("guest", 5672, ""), &missing));
    assert!(
        line.contains(&format!(
            "rabbitmqadmin -V '/' declare exchange name={missing} type=direct"
        )),
        "{line}"
    );
    let line = check(&keys(&url("guest", down, ""), &f.exchange));
    assert!(
        line.contains("cannot connect") && line.contains("start the broker"),
        "{line}"
    );
    let line = check(&format!(
        "url = \"amqp://guest:guest@{BROKER}\"\nexchange = \"\"\nrouting_key = \"{missing}\""
    ));
    assert!(line.contains(&format!("no queue named `{missing}`")), "{line}");
    let line = check(&keys(&url("guest", 5672, ""), &f.exchange));
    assert!(
        line.contains(&format!("exchange `{}` exists", f.exchange)) && line.contains("frame_max 131072"),
        "{line}"
    );

    // `rowhook run` opens its sinks first: it stops with the same words.
    let config = minimal_config(&dir, RUN_HEAD, "amqp", &keys(&url("guest", 5672, ""), &missing), "");
    let out = rowhook(&["run", "-c", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("404 NOT_FOUND") && stderr.contains("declare exchange name="),
        "{stderr}"
    );
    // The sink opens, the source cannot be reached: rowhook stops cleanly,
    // closing the connection as it goes.
    let config = minimal_config(&dir, RUN_HEAD, "amqp", &keys(&url("guest", 5672, ""), &f.exchange), "");
    let out = rowhook(&["run", "-c", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach mysql://"), "{stderr}");
    let config = minimal_config(&dir, RUN_HEAD, "amqp", &keys(&url("Wr0ng", 5672, ""), &f.exchange), "");
    let out = rowhook(&["run", "-c", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("refused the credentials") && !stderr.contains("Wr0ng"),
        "{stderr}"
    );
}

/// `rowhook run` live from MariaDB through a proxy to RabbitMQ, under the
/// ledger load: the proxy cuts every connection twice mid-run, and once
/// rowhook is killed (SIGKILL) while cut and started again. Afterwards the
/// queue holds every committed ledger row (so the checkpoint never moved
/// past a message the broker had not confirmed), nothing rolled back, and
/// per key in commit order once re-sent copies are dropped by `message-id`.
#[test]
fn rowhook_run_through_cuts_delivers_every_row() {
    let f = Fixture::new("run", "direct", Some("ledger"), FieldTable::new());
    let proxy = Proxy::start(BROKER.parse().unwrap());
    let sink = format!(
        "kind = \"amqp\"\nurl = \"amqp://guest:guest@127.0.0.1:{}\"\nexchange = \"{}\"\nrouting_key = \"ledger\"\nconfirm_timeout_ms = 2000\nretries = \"forever\"\nretry_max_ms = 300",
        proxy.port(),
        f.exchange
    );
    let (server, dir, config) = ledger_setup("amqp-run", 7472, "commit_interval_ms = 50", &sink);
    let log = dir.join("rowhook.log");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("amqp run test seed {seed}, files in {}", dir.display());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (server, stop) = (server.clone(), stop.clone());
        std::thread::spawn(move || load(&server, &stop, seed))
    };
    let mut rng = Rng(seed.rotate_left(9) | 1);
    let pause = |rng: &mut Rng| std::thread::sleep(Duration::from_millis(300 + rng.below(700)));
    let mut child = spawn_run(&config, &log);
    pause(&mut rng);
    proxy.cut();
    pause(&mut rng);
    proxy.resume();
    pause(&mut rng);
    proxy.cut();
    pause(&mut rng);
    // Killed while its batch cannot be confirmed: the restart must send it again.
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = spawn_run(&config, &log);
    pause(&mut rng);
    proxy.resume();
    pause(&mut rng);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();

    let committed: HashSet<u64> = server
        .sql("SELECT id FROM crash.ledger")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    // Messages re-sent after the cuts are in the queue twice, so its length
    // says nothing of progress: drain it until every committed row is in.
    let mut held = Vec::new();
    let unique_rows = |held: &[Got]| -> HashSet<u64> {
        held.iter()
            .filter_map(|g| String::from_utf8_lossy(&g.payload).split(' ').nth(1)?.parse().ok())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        held.extend(f.drain());
        let rows = unique_rows(&held);
        if committed.is_subset(&rows) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the queue holds {} of {} rows; log: {}",
            rows.intersection(&committed).count(),
            committed.len(),
            std::fs::read_to_string(&log).unwrap_or_default()
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
    held.extend(f.drain());

    let mut seen = HashSet::new();
    let mut ids = HashSet::new();
    let mut last_per_key: BTreeMap<u64, u64> = BTreeMap::new();
    for g in &held {
        let text = String::from_utf8_lossy(&g.payload);
        let fields: Vec<&str> = text.split(' ').collect();
        assert_eq!(fields.len(), 3, "{text}");
        assert_eq!(g.message_id, format!("{}:0", fields[0]), "{text}");
        assert_eq!(g.delivery_mode, Some(2));
        if !seen.insert(g.message_id.clone()) {
            continue;
        }
        let (id, k): (u64, u64) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
        assert!(id < ROLLED_BACK, "a rolled-back row is in the queue: {text}");
        ids.insert(id);
        let last = last_per_key.entry(k).or_default();
        assert!(id > *last, "key {k}: row {id} after row {last}");
        *last = id;
    }
    assert_eq!(ids, committed, "the queue holds every committed row");
    eprintln!(
        "{} connections through the proxy; the queue holds {} messages for {} rows",
        proxy.forwarded(),
        held.len(),
        ids.len()
    );
}

/// Confirmed messages per second into a durable queue on this machine,
/// beside the broker's own ceiling: the same messages published without
/// confirms, timed until the queue holds them all. Prints the figures
/// (`cargo test --release -p rowhook --test e2e sink_amqp::throughput --
/// --nocapture`).
#[test]
fn throughput() {
    let total = 200_704;
    let batches: Vec<Vec<Message>> = (0..total / 4096)
        .map(|b| {
            (0..4096)
                .map(|i| {
                    let payload = format!(
                        "{{\"id\":\"0-1-{b}:{i}:0\",\"op\":\"insert\",\"db\":\"bench\",\"table\":\"t\",\"row\":{i}}}"
                    );
                    message(&format!("0-1-{b}:{i}:0"), 0, None, payload.as_bytes())
                })
                .collect()
        })
        .collect();
    let f = Fixture::new("speed", "direct", Some("bench"), FieldTable::new());
    let rate = |n: usize, took: Duration| n as f64 / took.as_secs_f64();
    for persistent in [true, false] {
        let opts = options(&format!(
            "url = \"amqp://guest:guest@{BROKER}\"\nexchange = \"{}\"\nrouting_key = \"bench\"\npersistent = {persistent}",
            f.exchange
        ));
        let took = rt().block_on(async {
            let mut sink = open(&opts).await.unwrap();
            let start = Instant::now();
            for b in &batches {
                sink.write_batch(b).await.unwrap();
            }
            start.elapsed()
        });
        assert_eq!(f.count() as usize, total);
        println!(
            "amqp sink, persistent = {persistent}: {total} messages confirmed in {took:?}: {:.0} messages/s",
            rate(total, took)
        );
        f.purge();
    }
    let (published, queued) = rt().block_on(async {
        // The connection stays open until the queue holds everything: its
        // writer task sends what is still buffered.
        let (_c, ch) = admin().await;
        let start = Instant::now();
        for b in &batches {
            for m in b {
                let mut props = amqprs::BasicProperties::default();
                props.with_delivery_mode(2).with_message_id(&m.id);
                ch.basic_publish(
                    props,
                    m.payload.clone(),
                    amqprs::channel::BasicPublishArguments::new(&f.exchange, "bench"),
                )
                .await
                .unwrap();
            }
        }
        let published = start.elapsed();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (_, n, _) = ch
                .queue_declare(QueueDeclareArguments::new(&f.queue).passive(true).finish())
                .await
                .unwrap()
                .unwrap();
            if n as usize >= total {
                break;
            }
            assert!(Instant::now() < deadline, "the queue holds {n} of {total}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (published, start.elapsed())
    });
    println!(
        "persistent publishes without confirms: {total} published in {published:?}, all queued after {queued:?}: {:.0} messages/s",
        rate(total, queued)
    );
}
