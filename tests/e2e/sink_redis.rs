//! The redis sink against a real `redis-server`, each test with its own on
//! a free port: every mode holds what the handler emitted, in binlog order;
//! a server killed mid-run and restarted gets everything; hostile payloads
//! are delivered or refused as the server's limits say; `rowhook check`
//! names what is wrong.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rowhook::sink::redis::{ListSide, Mode, RedisKind, RedisOptions, RedisSink, RedisUrl};
use rowhook::sink::{Message, Sink, SinkKind, SinkLimits};

use crate::crash::{ledger_rows, ledger_setup};
use crate::sink_support::{minimal_config, replay_shop};
use crate::support::{golden, interrupt, root, rowhook, spawn_run, temp_dir, test_certs};

/// A private redis-server, killed on drop. `restart` brings it back on the
/// same port and directory (with `--appendonly yes` it keeps its data).
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Redis {
    pub fn start(tag: &str, args: &[&str]) -> Redis {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = temp_dir(&format!("redis-server-{tag}"));
        let mut r = Redis {
            port,
            dir,
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        r.restart();
        r
    }

    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--protected-mode", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .args(&self.args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        self.child = Some(child);
        // Listening means ready (a password would make a PING fail).
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no goodbye to clients, nothing saved that was not on disk.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A connection for the test's own reads, if the server is up.
    pub fn try_conn(&self) -> Option<redis::Connection> {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .ok()
    }

    pub fn conn(&self) -> redis::Connection {
        self.try_conn().expect("the test's redis is up")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `XRANGE`'s reply: entry ids, each with its fields and values.
type Entries<F, V> = Vec<(String, Vec<(F, V)>)>;

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// What Redis holds after the shop binlog went into each mode, as text
/// compared with `tests/golden/redis/modes.txt`.
#[test]
fn each_mode_holds_the_new_orders_in_binlog_order() {
    let server = Redis::start("modes", &[]);
    let dir = temp_dir("redis-modes");
    let url = server.url();
    let mut report = String::new();

    // A subscriber, listening before the replay publishes.
    let subscriber = {
        let mut conn = server.conn();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let mut ps = conn.as_pubsub();
            ps.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            ps.subscribe("orders").unwrap();
            ready_tx.send(()).unwrap();
            (0..3)
                .map(|_| ps.get_message().unwrap().get_payload::<String>().unwrap())
                .collect::<Vec<_>>()
        });
        ready_rx.recv().unwrap();
        t
    };

    for (mode, keys) in [
        ("stream", "stream = \"orders\"\nmaxlen = 1000"),
        ("list right", "list = \"orders:r\""),
        ("list left", "list = \"orders:l\"\nside = \"left\""),
        ("channel", "channel = \"orders\""),
        ("key_prefix", "key_prefix = \"order:\"\nttl_ms = 600000"),
        ("hash", "hash = \"orders:h\""),
    ] {
        let config = minimal_config(&dir, "", "redis", &format!("url = \"{url}\"\n{keys}"), "");
        let out = replay_shop(&config);
        assert!(out.status.success(), "{mode}: {}", text(&out.stderr));
    }

    let mut c = server.conn();
    report.push_str("XRANGE orders - +\n");
    let entries: Entries<Vec<u8>, Vec<u8>> = redis::cmd("XRANGE")
        .arg("orders")
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    for (_, fields) in entries {
        let fields: Vec<String> = fields.iter().map(|(f, v)| format!("{}={}", text(f), text(v))).collect();
        report.push_str(&format!("  {}\n", fields.join(" ")));
    }
    for list in ["orders:r", "orders:l"] {
        let items: Vec<String> = redis::cmd("LRANGE").arg(list).arg(0).arg(-1).query(&mut c).unwrap();
        report.push_str(&format!("LRANGE {list} 0 -1\n  {}\n", items.join(" ")));
    }
    report.push_str(&format!(
        "SUBSCRIBE orders\n  {}\n",
        subscriber.join().unwrap().join(" ")
    ));
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("order:*").query(&mut c).unwrap();
    keys.sort();
    report.push_str("GET order:*\n");
    for k in keys {
        let v: String = redis::cmd("GET").arg(&k).query(&mut c).unwrap();
        let ttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut c).unwrap();
        assert!((1..=600_000).contains(&ttl), "{k} expires in {ttl} ms");
        report.push_str(&format!("  {k} = {v}\n"));
    }
    let fields: Vec<(String, String)> = redis::cmd("HGETALL").arg("orders:h").query(&mut c).unwrap();
    report.push_str("HGETALL orders:h\n");
    for (f, v) in fields {
        report.push_str(&format!("  {f} = {v}\n"));
    }
    golden("redis/modes.txt", &report);
}

/// `rowhook run` live from MariaDB into a stream, the redis server killed
/// (SIGKILL) and restarted mid-run: once it is back every row arrives, in
/// binlog order. An entry may come twice (a batch Redis ran whose reply the
/// kill cut off), never torn and never out of order.
#[test]
fn a_server_killed_mid_run_gets_everything_in_order_once_back() {
    let mut redis = Redis::start("restart", &["--appendonly", "yes", "--appendfsync", "always"]);
    let (db, dir, config) = ledger_setup(
        "redis-restart",
        7461,
        "",
        &format!(
            "kind = \"redis\"\nurl = \"{}\"\nstream = \"ledger\"\ntimeout_ms = 1000\nretries = \"forever\"\nretry_max_ms = 200",
            redis.url()
        ),
    );
    let log = dir.join("rowhook.log");
    let child = spawn_run(&config, &log);
    let rows = |from: u32, to: u32| ledger_rows(&db, from, to);
    // The ledger ids of the entries, first occurrences only (a duplicate
    // is a re-delivered batch: consumers drop it by its `id` field).
    let ids = |r: &Redis| -> Vec<u32> {
        let Some(mut c) = r.try_conn() else { return Vec::new() };
        let entries: Entries<String, String> = match redis::cmd("XRANGE").arg("ledger").arg("-").arg("+").query(&mut c)
        {
            Ok(e) => e,
            Err(_) => return Vec::new(),
        };
        let mut seen = std::collections::HashSet::new();
        let mut ids = Vec::new();
        for (_, fields) in &entries {
            let field = |name: &str| fields.iter().find(|(f, _)| f == name).map(|(_, v)| v.clone()).unwrap();
            let payload = field("payload");
            assert_eq!(
                payload.split(' ').next().unwrap(),
                field("id"),
                "the entry carries its change id"
            );
            if seen.insert(field("id")) {
                ids.push(payload.split(' ').nth(1).unwrap().parse::<u32>().unwrap());
            }
        }
        ids
    };
    let wait_for = |r: &Redis, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while ids(r).len() < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} rows; log:\n{}\nstate:\n{}",
                ids(r).len(),
                std::fs::read_to_string(&log).unwrap_or_default(),
                String::from_utf8_lossy(&rowhook(&["state", "-c", config.to_str().unwrap()]).stdout),
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    rows(0, 10);
    wait_for(&redis, 100);
    redis.kill();
    rows(10, 20);
    std::thread::sleep(Duration::from_millis(1500));
    redis.restart();
    rows(20, 30);
    wait_for(&redis, 600);
    assert!(interrupt(child).success());
    let text_log = std::fs::read_to_string(&log).unwrap();
    assert!(text_log.contains("retrying"), "the outage was seen: {text_log}");
    assert_eq!(ids(&redis), (1..=600).collect::<Vec<_>>());
}

fn sink(url: &str, mode: Mode) -> RedisSink {
    RedisSink::open(
        "r",
        RedisOptions {
            url: RedisUrl::parse(url).unwrap(),
            mode,
            timeout: Duration::from_millis(1000),
        },
    )
    .unwrap()
}

fn message(id: &str, key: Option<&[u8]>, payload: Vec<u8>) -> Message {
    Message {
        key: key.map(<[u8]>::to_vec),
        payload,
        id: id.to_owned(),
        index: 0,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A 10 MB payload, every byte value, an empty key and keys with `/` and
/// spaces go through as they are; a payload over the server's
/// `proto-max-bulk-len` is refused for good, before any of its batch is sent.
#[test]
fn hostile_payloads_are_delivered_or_refused_by_the_servers_limit() {
    let server = Redis::start("hostile", &[]);
    let big: Vec<u8> = (0..10_000_000u32).map(|i| (i % 251) as u8).collect();
    let binary: Vec<u8> = (0..=255u8).collect();
    runtime().block_on(async {
        let mut s = sink(
            &server.url(),
            Mode::Keys {
                prefix: "h:".into(),
                ttl: None,
            },
        );
        s.write_batch(&[
            message("1", Some(b""), big.clone()),
            message("2", Some(b"a/b c"), binary.clone()),
            message("3", Some(b"\r\n\0"), b"".to_vec()),
        ])
        .await
        .unwrap();
        assert_eq!(s.max_bulk(), 512 << 20, "read from the server");

        let mut st = sink(
            &server.url(),
            Mode::Stream {
                stream: "s".into(),
                maxlen: None,
            },
        );
        st.write_batch(&[message("0-1-1:0:0", None, binary.clone())])
            .await
            .unwrap();
    });
    let mut c = server.conn();
    let get = |c: &mut redis::Connection, k: &[u8]| redis::cmd("GET").arg(k).query::<Vec<u8>>(c).unwrap();
    assert!(get(&mut c, b"h:") == big, "the 10 MB payload under the empty key");
    assert_eq!(get(&mut c, b"h:a/b c"), binary);
    assert_eq!(get(&mut c, b"h:\r\n\0"), b"");
    let entries: Entries<String, Vec<u8>> = redis::cmd("XRANGE").arg("s").arg("-").arg("+").query(&mut c).unwrap();
    assert_eq!(
        entries[0].1,
        [("payload".into(), binary.clone()), ("id".into(), b"0-1-1:0:0".to_vec())]
    );

    // A server that takes at most 1 MiB per value: the sink says so once
    // open, so a larger emit is refused with `too-large` at once.
    let small = Redis::start("hostile-small", &["--proto-max-bulk-len", "1mb"]);
    runtime().block_on(async {
        let options = RedisOptions {
            url: RedisUrl::parse(&small.url()).unwrap(),
            mode: Mode::Keys {
                prefix: "p:".into(),
                ttl: None,
            },
            timeout: Duration::from_millis(1000),
        };
        let opened = <RedisKind as SinkKind>::open("r", &options).await.unwrap();
        assert_eq!(
            opened.limits(),
            SinkLimits {
                max_payload: Some(1 << 20),
                max_key: Some((1 << 20) - 2)
            }
        );
        let mut s = sink(
            &small.url(),
            Mode::List {
                list: "l".into(),
                side: ListSide::Right,
            },
        );
        let err = s
            .write_batch(&[
                message("0-1-5:0:0", None, b"ok".to_vec()),
                message("0-1-5:0:1", None, big.clone()),
            ])
            .await
            .unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(text.contains("0-1-5:0:1") && text.contains("1048576"), "{text}");
        assert_eq!(s.max_bulk(), 1 << 20);
    });
    let n: u64 = redis::cmd("LLEN").arg("l").query(&mut small.conn()).unwrap();
    assert_eq!(n, 0, "nothing of the refused batch was sent");
}

/// Down at the first write: unavailable, then delivered whole once up. A
/// server out of memory: unavailable, nothing of the batch written, then
/// delivered once there is room. A wrong key type: permanent, with the fix.
/// A write whose future is dropped while the server stalls: the batch is
/// there whole or not at all, and the next write goes through.
#[test]
fn outages_are_unavailable_and_retried_batches_arrive_whole() {
    let mut server = Redis::start("outage", &[]);
    let url = server.url();
    server.kill();
    let stream = Mode::Stream {
        stream: "s".into(),
        maxlen: None,
    };
    let batch: Vec<Message> = (0..50)
        .map(|i| message(&format!("0-1-7:0:{i}"), None, format!("row {i}").into_bytes()))
        .collect();
    let rt = runtime();
    let mut s = sink(&url, stream);
    let err = rt.block_on(s.write_batch(&batch)).unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(rt.block_on(s.health()).unwrap_err().is_retryable());
    server.restart();
    rt.block_on(s.health()).unwrap();
    rt.block_on(s.write_batch(&batch)).unwrap();
    let xlen = |server: &Redis, k: &str| redis::cmd("XLEN").arg(k).query::<u64>(&mut server.conn()).unwrap();
    assert_eq!(xlen(&server, "s"), 50);

    // Out of memory: the whole MULTI is refused while queuing.
    let mut c = server.conn();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .exec(&mut c)
        .unwrap();
    let err = rt.block_on(s.write_batch(&batch)).unwrap_err();
    assert!(err.is_retryable() && err.to_string().contains("OOM"), "{err}");
    assert_eq!(xlen(&server, "s"), 50, "nothing of the refused batch");
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .exec(&mut c)
        .unwrap();
    rt.block_on(s.write_batch(&batch)).unwrap();
    assert_eq!(xlen(&server, "s"), 100);

    // The wrong type.
    redis::cmd("RPUSH").arg("wrong").arg("x").exec(&mut c).unwrap();
    let mut w = sink(
        &url,
        Mode::Stream {
            stream: "wrong".into(),
            maxlen: None,
        },
    );
    let err = rt.block_on(w.write_batch(&batch)).unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("the key `wrong` holds another type than a stream"),
        "{err}"
    );

    // A stalled server and a dropped write.
    let pid = server.child.as_ref().unwrap().id().to_string();
    let signal = |sig: &str| assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    signal("-STOP");
    let dropped = rt.block_on(async { tokio::time::timeout(Duration::from_millis(200), s.write_batch(&batch)).await });
    assert!(dropped.is_err(), "the write waited on the stalled server");
    signal("-CONT");
    rt.block_on(s.write_batch(&batch[..1])).unwrap();
    let n = xlen(&server, "s");
    assert!(
        n == 151 || n == 201,
        "the dropped batch is there whole or not at all: {n}"
    );
}

/// `rowhook check` connects, authenticates and checks the key's type.
#[test]
fn check_names_the_problem_and_the_fix() {
    let server = Redis::start("check", &["--requirepass", "sesame"]);
    let dir = temp_dir("redis-check");
    let check = |keys: &str, password: &str| {
        let config = minimal_config(&dir, "", "redis", keys, "");
        let out = Command::new(env!("CARGO_BIN_EXE_rowhook"))
            .args(["check", "-c"])
            .arg(&config)
            .env("REDIS_PASSWORD", password)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let text = format!("{}{}", text(&out.stdout), text(&out.stderr));
        (out.status.success(), text)
    };
    let url = format!("redis://:${{REDIS_PASSWORD}}@127.0.0.1:{}", server.port);

    let (ok, out) = check(&format!("url = \"{url}\"\nstream = \"orders\""), "sesame");
    assert!(ok, "{out}");
    assert!(out.contains("sink `orders_queue` (redis): 127.0.0.1:"), "{out}");
    assert!(!out.contains("sesame"), "{out}");

    let (ok, out) = check(&format!("url = \"{url}\"\nstream = \"orders\""), "wrong");
    assert!(!ok);
    assert!(
        out.contains("authentication refused") && out.contains("password in the sink's url"),
        "{out}"
    );
    assert!(!out.contains("wrong\""), "{out}");

    let mut c = redis::Client::open(format!("redis://:sesame@127.0.0.1:{}", server.port))
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("LPUSH").arg("orders").arg("x").exec(&mut c).unwrap();
    let (ok, out) = check(&format!("url = \"{url}\"\nstream = \"orders\""), "sesame");
    assert!(!ok);
    assert!(
        out.contains("the key `orders` holds a list, not a stream") && out.contains("DEL / RENAME orders"),
        "{out}"
    );

    let down = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (ok, out) = check(&format!("url = \"redis://127.0.0.1:{down}\"\nlist = \"q\""), "");
    assert!(!ok);
    assert!(
        out.contains("cannot connect") && out.contains("start the server"),
        "{out}"
    );
}

/// Throughput of the sink alone: 200,000 messages of ~100 bytes into a
/// stream, 4096 per batch (the pipeline's flush size), each batch
/// acknowledged before the next. Prints the figure.
#[test]
fn stream_throughput_is_reported() {
    let server = Redis::start("throughput", &[]);
    let batches: Vec<Vec<Message>> = (0..200_000u32)
        .collect::<Vec<_>>()
        .chunks(4096)
        .map(|c| {
            c.iter()
                .map(|i| {
                    let id = format!("0-1-{i}:0:0");
                    let payload =
                        format!("{{\"id\":\"{id}\",\"op\":\"insert\",\"db\":\"bench\",\"table\":\"t\",\"row\":{i}}}");
                    message(&id, Some(i.to_string().as_bytes()), payload.into_bytes())
                })
                .collect()
        })
        .collect();
    let rt = runtime();
    let mut s = sink(
        &server.url(),
        Mode::Stream {
            stream: "bench".into(),
            maxlen: None,
        },
    );
    rt.block_on(s.health()).unwrap();
    let start = Instant::now();
    for b in &batches {
        rt.block_on(s.write_batch(b)).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let n: u64 = redis::cmd("XLEN").arg("bench").query(&mut server.conn()).unwrap();
    assert_eq!(n, 200_000);
    eprintln!(
        "redis stream sink: {:.0} messages/s acknowledged ({secs:.2} s for 200000)",
        200_000.0 / secs
    );
}

/// `rediss://`: the server's certificate is checked against the system's
/// roots (here a test CA, given as `SSL_CERT_FILE`); without the CA the
/// connection is refused and `rowhook check` says so.
#[test]
fn tls_is_verified_against_the_roots() {
    let certs = test_certs("redis-tls-certs");
    let tls_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let pem = |f: &str| certs.join(f).to_str().unwrap().to_owned();
    let server = Redis::start(
        "tls",
        &[
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &pem("server.pem"),
            "--tls-key-file",
            &pem("server.key"),
            "--tls-ca-cert-file",
            &pem("ca.pem"),
            "--tls-auth-clients",
            "no",
        ],
    );
    let dir = temp_dir("redis-tls");
    let config = minimal_config(
        &dir,
        "",
        "redis",
        &format!("url = \"rediss://localhost:{tls_port}\"\nstream = \"orders\""),
        "",
    );
    let run = |args: &[&str], ca: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rowhook"));
        cmd.args(args).env("NO_COLOR", "1").env("ROWHOOK_LOG", "warn");
        if let Some(ca) = ca {
            cmd.env("SSL_CERT_FILE", ca);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            format!("{}{}", text(&out.stdout), text(&out.stderr)),
        )
    };
    let c = config.to_str().unwrap();
    let (ok, out) = run(&["check", "-c", c], Some(&pem("ca.pem")));
    assert!(
        ok && out.contains(&format!("localhost:{tls_port}/0 (TLS), stream `orders`")),
        "{out}"
    );
    let (ok, out) = run(&["check", "-c", c], None);
    assert!(!ok && out.contains("cannot connect"), "{out}");

    let binlog = root().join("examples/binlog/shop-bin.000001");
    let (ok, out) = run(&["replay", "-c", c, binlog.to_str().unwrap()], Some(&pem("ca.pem")));
    assert!(ok, "{out}");
    let n: u64 = redis::cmd("XLEN").arg("orders").query(&mut server.conn()).unwrap();
    assert_eq!(n, 3, "the new orders, over TLS");
}
