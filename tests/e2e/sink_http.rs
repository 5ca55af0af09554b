//! The http sink against a real HTTP/1.1 receiver that each test starts on
//! a free port (a small server on std threads, below): it records every
//! request, checks its signature, and answers as the test says (a status
//! with headers, or no answer). Delivery in both modes with headers,
//! signatures and idempotency keys; a receiver down mid-run; `Retry-After`;
//! refusals and `on_error`; hostile payloads; `rowhook check`.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rowhook::sink::http::{HttpOptions, HttpSink};
use rowhook::sink::{Message, Sink, SinkSpec};

use crate::crash::{ledger_rows, ledger_setup};
use crate::sink_support::{minimal_config, rt, sink_spec};
use crate::support::{Server, interrupt, root, rowhook, spawn_run, temp_dir, test_certs};

/// The secret the receivers verify signatures with.
const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// One request as the receiver read it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    at: Instant,
    /// The signature checked out against [`SECRET`].
    signed: bool,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The JSON lines of a batch body.
    fn lines(&self) -> Vec<serde_json::Value> {
        String::from_utf8(self.body.clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }
}

/// How the receiver answers a request.
#[derive(Debug, Clone)]
enum Answer {
    /// A status, extra headers and a body.
    Status(u16, Vec<(&'static str, String)>, String),
    /// No answer: the connection stays open until the receiver stops.
    Hang,
}

fn ok() -> Answer {
    Answer::Status(200, vec![], String::new())
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    /// Answers for the next requests, in order; then `always`.
    script: Mutex<VecDeque<Answer>>,
    always: Mutex<Option<Answer>>,
    stop: AtomicBool,
}

/// A real HTTP/1.1 server on std threads: keep-alive, Content-Length
/// bodies, one thread per connection.
struct Receiver {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start() -> Receiver {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut r = Receiver {
            port,
            shared: Arc::new(Shared::default()),
            acceptor: None,
        };
        r.restart();
        r
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Listens (again) on the same port.
    fn restart(&mut self) {
        assert!(self.acceptor.is_none());
        self.shared.stop.store(false, Ordering::SeqCst);
        // The port may still be held a moment after a stop.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => panic!("the receiver cannot listen on {} again: {e}", self.port),
            }
        };
        listener.set_nonblocking(true).unwrap();
        let shared = self.shared.clone();
        self.acceptor = Some(std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !shared.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let shared = shared.clone();
                        conns.push(std::thread::spawn(move || serve(stream, &shared)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            drop(listener);
            for c in conns {
                let _ = c.join();
            }
        }));
    }

    /// Stops listening and closes every connection.
    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            t.join().unwrap();
        }
    }

    /// Answers the next requests so, in order.
    fn then(&self, answers: impl IntoIterator<Item = Answer>) {
        self.shared.script.lock().unwrap().extend(answers);
    }

    /// Answers every request (after the scripted ones) so.
    fn always(&self, answer: Answer) {
        *self.shared.always.lock().unwrap() = Some(answer);
    }

    fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    fn forget(&self) {
        self.shared.seen.lock().unwrap().clear();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves one connection until the client closes it or the receiver stops.
fn serve(stream: TcpStream, shared: &Shared) {
    stream.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut out = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        // The request line, waiting for it while the receiver runs.
        let mut line = String::new();
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) if line.ends_with('\n') => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if read_line(&mut reader, &mut h, shared).is_none() {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let Some((n, v)) = h.split_once(':') else { return };
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; len];
        let mut got = 0;
        while got < len {
            match reader.read(&mut body[got..]) {
                Ok(0) => return,
                Ok(n) => got += n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    if shared.stop.load(Ordering::SeqCst) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let signed = match (header("x-rowhook-timestamp"), header("x-rowhook-signature")) {
            (Some(ts), Some(sig)) => verify(SECRET.as_bytes(), &ts, &body, &sig),
            _ => false,
        };
        shared.seen.lock().unwrap().push(Seen {
            method,
            target,
            headers,
            body,
            at: Instant::now(),
            signed,
        });
        let answer = shared
            .script
            .lock()
            .unwrap()
            .pop_front()
            .or_else(|| shared.always.lock().unwrap().clone())
            .unwrap_or_else(ok);
        match answer {
            Answer::Status(code, extra, text) => {
                let mut head = format!("HTTP/1.1 {code} Whatever\r\nContent-Length: {}\r\n", text.len());
                for (n, v) in extra {
                    head.push_str(&format!("{n}: {v}\r\n"));
                }
                head.push_str("\r\n");
                if out.write_all(head.as_bytes()).is_err() || out.write_all(text.as_bytes()).is_err() {
                    return;
                }
            }
            Answer::Hang => {
                while !shared.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return;
            }
        }
    }
}

fn read_line(reader: &mut BufReader<TcpStream>, line: &mut String, shared: &Shared) -> Option<()> {
    loop {
        match reader.read_line(line) {
            Ok(0) => return None,
            Ok(_) if line.ends_with('\n') => return Some(()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if shared.stop.load(Ordering::SeqCst) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
}

/// What a receiver does with `X-Rowhook-Signature`: the HMAC-SHA256 of
/// `<timestamp>.<body>`, compared in constant time.
fn verify(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Some(tag) = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let mut signed = timestamp.as_bytes().to_vec();
    signed.push(b'.');
    signed.extend_from_slice(body);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, &signed, &tag).is_ok()
}

fn replay(config: &Path) -> std::process::Output {
    let binlog = root().join("examples/binlog/shop-bin.000001");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rowhook"));
    cmd.args(["replay", "-c"])
        .arg(config)
        .arg(binlog)
        .env("ROWHOOK_LOG", "warn")
        .env("NO_COLOR", "1")
        .env("WEBHOOK_TOKEN", "t0ken")
        .env("WEBHOOK_SECRET", SECRET);
    cmd.output().unwrap()
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// Message mode: each new order of the shop binlog is one signed `POST`,
/// in binlog order, with the configured headers, its key and its
/// `Idempotency-Key`; a second replay sends the same keys and bodies.
#[test]
fn message_mode_sends_each_payload_signed_in_order() {
    let receiver = Receiver::start();
    let dir = temp_dir("http-message");
    let config = minimal_config(
        &dir,
        "",
        "http",
        &format!(
            "url = \"{}\"\nheaders = {{ Authorization = \"Bearer ${{WEBHOOK_TOKEN}}\", \"X-Team\" = \"shop\" }}\nhmac_secret = \"${{WEBHOOK_SECRET}}\"",
            receiver.url("/hooks/orders?v=1")
        ),
        "on_error = \"halt\"",
    );
    let out = replay(&config);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first = receiver.seen();
    let show: Vec<String> = first
        .iter()
        .map(|s| {
            format!(
                "{} {} {} key={} ct={} auth={} team={} signed={} {}",
                s.method,
                s.target,
                s.header("idempotency-key").unwrap(),
                s.header("x-rowhook-key").unwrap(),
                s.header("content-type").unwrap(),
                s.header("authorization").unwrap(),
                s.header("x-team").unwrap(),
                s.signed,
                text(&s.body)
            )
        })
        .collect();
    assert_eq!(
        show,
        [
            "POST /hooks/orders?v=1 0-1-9:0:0:0 key=1001 ct=application/json auth=Bearer t0ken team=shop signed=true {\"order\":1001}",
            "POST /hooks/orders?v=1 0-1-10:0:0:0 key=1002 ct=application/json auth=Bearer t0ken team=shop signed=true {\"order\":1002}",
            "POST /hooks/orders?v=1 0-1-10:1:0:0 key=1003 ct=application/json auth=Bearer t0ken team=shop signed=true {\"order\":1003}",
        ]
    );
    for s in &first {
        assert!(s.header("host").unwrap().starts_with("127.0.0.1:"), "{s:?}");
        assert!(s.header("user-agent").unwrap().starts_with("rowhook/"), "{s:?}");
        let ts: u64 = s.header("x-rowhook-timestamp").unwrap().parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.abs_diff(ts) < 60, "{ts}");
    }
    // One connection, kept alive: requests in order, one at a time.
    assert!(first.windows(2).all(|w| w[0].at <= w[1].at));

    receiver.forget();
    let out = replay(&config);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again = receiver.seen();
    let keys = |v: &[Seen]| -> Vec<(String, Vec<u8>)> {
        v.iter()
            .map(|s| (s.header("idempotency-key").unwrap().to_owned(), s.body.clone()))
            .collect()
    };
    assert_eq!(keys(&again), keys(&first), "a replay sends the same keys and bodies");
}

/// Batch mode: a batch is split into requests of `max_batch_messages`
/// JSON lines, in order; each line names its message, the request's
/// `Idempotency-Key` its first and last message, the same in a replay;
/// `PUT` as configured.
#[test]
fn batch_mode_sends_json_lines() {
    let receiver = Receiver::start();
    let dir = temp_dir("http-batch");
    let config = minimal_config(
        &dir,
        "",
        "http",
        &format!(
            "url = \"{}\"\nmethod = \"PUT\"\nmode = \"batch\"\nmax_batch_messages = 1\nhmac_secret = \"${{WEBHOOK_SECRET}}\"",
            receiver.url("/batch")
        ),
        "on_error = \"halt\"",
    );
    let out = replay(&config);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen = receiver.seen();
    // The shop binlog's orders come in two transactions (1, then 2): with
    // one line per request, three requests.
    let show: Vec<String> = seen
        .iter()
        .map(|s| {
            format!(
                "{} {} {} {} signed={} {}",
                s.method,
                s.target,
                s.header("idempotency-key").unwrap(),
                s.header("content-type").unwrap(),
                s.signed,
                text(&s.body).trim_end()
            )
        })
        .collect();
    assert_eq!(
        show,
        [
            "PUT /batch 0-1-9:0:0:0 application/x-ndjson signed=true {\"id\":\"0-1-9:0:0:0\",\"key\":\"1001\",\"payload\":{\"order\":1001}}",
            "PUT /batch 0-1-10:0:0:0 application/x-ndjson signed=true {\"id\":\"0-1-10:0:0:0\",\"key\":\"1002\",\"payload\":{\"order\":1002}}",
            "PUT /batch 0-1-10:1:0:0 application/x-ndjson signed=true {\"id\":\"0-1-10:1:0:0\",\"key\":\"1003\",\"payload\":{\"order\":1003}}",
        ]
    );
    assert!(seen.iter().all(|s| s.header("x-rowhook-key").is_none()));

    // Two lines per request: the second transaction is one request.
    let config = minimal_config(
        &dir,
        "",
        "http",
        &format!("url = \"{}\"\nmode = \"batch\"", receiver.url("/batch")),
        "on_error = \"halt\"",
    );
    for _ in 0..2 {
        receiver.forget();
        let out = replay(&config);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let seen = receiver.seen();
        let keys: Vec<&str> = seen.iter().map(|s| s.header("idempotency-key").unwrap()).collect();
        assert_eq!(keys, ["0-1-9:0:0:0", "0-1-10:0:0:0..0-1-10:1:0:0"]);
        let ids: Vec<String> = seen[1]
            .lines()
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["0-1-10:0:0:0", "0-1-10:1:0:0"]);
        assert_eq!(seen[1].lines()[1]["payload"]["order"], 1003);
        assert!(
            seen.iter()
                .all(|s| !s.signed && s.header("x-rowhook-signature").is_none())
        );
    }
}

/// `rowhook run` live from MariaDB in batch mode; the receiver goes away,
/// rowhook is killed (SIGKILL) while it retries, the receiver comes back
/// and rowhook starts again: every ledger row arrives, in binlog order.
/// What was not acknowledged was not checkpointed: nothing is missing.
#[test]
fn a_receiver_down_mid_run_gets_everything_in_order() {
    let mut receiver = Receiver::start();
    let (db, dir, config) = ledger_setup(
        "http-restart",
        7471,
        "",
        &format!(
            "kind = \"http\"\nurl = \"{}\"\nmode = \"batch\"\nmax_batch_messages = 7\ntimeout_ms = 1000\nretries = \"forever\"\nretry_max_ms = 200",
            receiver.url("/ledger")
        ),
    );
    let log = dir.join("rowhook.log");
    let rows = |from: u32, to: u32| ledger_rows(&db, from, to);
    // Ledger ids in arrival order, first occurrences only (a repeat is a
    // re-delivered batch, dropped by its line's id).
    let ids = |r: &Receiver| -> Vec<u32> {
        let mut seen_ids = HashSet::new();
        let mut out = Vec::new();
        for s in r.seen() {
            assert!(s.header("idempotency-key").is_some());
            for line in s.lines() {
                let payload = base64::engine::general_purpose::STANDARD
                    .decode(line["payload_b64"].as_str().unwrap())
                    .unwrap();
                let payload = String::from_utf8(payload).unwrap();
                let f: Vec<&str> = payload.split(' ').collect();
                assert_eq!(line["id"].as_str().unwrap(), format!("{}:0", f[0]));
                if seen_ids.insert(line["id"].as_str().unwrap().to_owned()) {
                    out.push(f[1].parse().unwrap());
                }
            }
        }
        out
    };
    let wait_for = |r: &Receiver, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while ids(r).len() < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} rows; log:\n{}",
                ids(r).len(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    let mut child = spawn_run(&config, &log);
    rows(0, 10);
    wait_for(&receiver, 200);
    receiver.stop();
    rows(10, 20);
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    receiver.restart();
    let child = spawn_run(&config, &log);
    rows(20, 30);
    wait_for(&receiver, 600);
    assert!(interrupt(child).success());
    let text_log = std::fs::read_to_string(&log).unwrap();
    assert!(text_log.contains("retrying"), "the outage was seen: {text_log}");
    assert_eq!(ids(&receiver), (1..=600).collect::<Vec<_>>());
    let requests = receiver.seen();
    assert!(requests.iter().all(|s| s.lines().len() <= 7));
}

/// The options of an http sink with these keys.
fn options(keys: &str) -> HttpOptions {
    match sink_spec("http", keys) {
        SinkSpec::Http(o) => o,
        other => panic!("expected an http sink, got {other:?}"),
    }
}

fn message(id: &str, key: Option<&[u8]>, payload: &[u8]) -> Message {
    Message {
        key: key.map(<[u8]>::to_vec),
        payload: payload.to_vec(),
        id: id.to_owned(),
        index: 0,
    }
}

/// A 429 with `Retry-After: 2` through `rowhook replay`: the pipeline
/// retries after 50 ms, and the sink holds the request back until two
/// seconds have passed. A 503 with an HTTP-date: the same, until the date.
/// A receiver that does not answer: unavailable after `timeout_ms`.
#[test]
fn retry_after_is_honoured() {
    let receiver = Receiver::start();
    let dir = temp_dir("http-retry-after");
    receiver.then([Answer::Status(
        429,
        vec![("Retry-After", "2".into())],
        "slow down".into(),
    )]);
    let config = minimal_config(
        &dir,
        "",
        "http",
        &format!("url = \"{}\"", receiver.url("/")),
        "on_error = \"halt\"",
    );
    let out = replay(&config);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen = receiver.seen();
    assert_eq!(seen.len(), 4, "the refused request, then the three orders");
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}");
    assert!(gap < Duration::from_secs(4), "retried after {gap:?}");
    assert_eq!(
        seen[0].header("idempotency-key"),
        seen[1].header("idempotency-key"),
        "the same message again"
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("it asked to retry after 2 s"), "{stderr}");

    // An HTTP-date three seconds on (two to three, as dates are in whole seconds).
    let date = Command::new("date")
        .args(["-u", "-d", "+3 seconds", "+%a, %d %b %Y %H:%M:%S GMT"])
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    let date = text(&date.stdout).trim().to_owned();
    receiver.forget();
    receiver.then([Answer::Status(503, vec![("Retry-After", date)], String::new())]);
    let mut sink = HttpSink::open("w", options(&format!("url = \"{}\"", receiver.url("/")))).unwrap();
    let batch = [message("0-1-1:0:0", None, b"{}")];
    rt().block_on(async {
        let e = sink.write_batch(&batch).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(sink.health().await.is_err(), "not before the date");
        sink.write_batch(&batch).await.unwrap();
    });
    let seen = receiver.seen();
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}");

    // No answer.
    receiver.forget();
    receiver.then([Answer::Hang]);
    let mut sink = HttpSink::open(
        "w",
        options(&format!("url = \"{}\"\ntimeout_ms = 300", receiver.url("/"))),
    )
    .unwrap();
    rt().block_on(async {
        let started = Instant::now();
        let e = sink.write_batch(&batch).await.unwrap_err();
        assert!(
            e.is_retryable() && e.to_string().contains("no response within 300 ms"),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        sink.write_batch(&batch).await.unwrap();
    });
    assert_eq!(receiver.seen().len(), 2);
}

/// A 400 is permanent: not retried, and the handler's `on_error` applies:
/// `halt` stops the replay naming the status and the receiver's answer,
/// `skip` goes on. A redirect is not followed.
#[test]
fn a_refusal_is_permanent_and_on_error_applies() {
    let receiver = Receiver::start();
    let dir = temp_dir("http-refusal");
    receiver.always(Answer::Status(
        400,
        vec![],
        "{\"error\":\"order 1001 is unknown\"}".into(),
    ));
    let url = format!("url = \"{}\"", receiver.url("/"));
    let out = replay(&minimal_config(&dir, "", "http", &url, "on_error = \"halt\""));
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("answered 400 Bad Request ({\"error\":\"order 1001 is unknown\"})"),
        "{stderr}"
    );
    assert_eq!(receiver.seen().len(), 1, "not retried");

    receiver.forget();
    let out = replay(&minimal_config(&dir, "", "http", &url, "on_error = \"skip\""));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let keys: Vec<String> = receiver
        .seen()
        .iter()
        .map(|s| s.header("idempotency-key").unwrap().to_owned())
        .collect();
    // One request per transaction's batch: each refused once, then skipped.
    assert_eq!(keys, ["0-1-9:0:0:0", "0-1-10:0:0:0"]);

    receiver.forget();
    receiver.always(Answer::Status(
        308,
        vec![("Location", "https://elsewhere.example/hook".into())],
        String::new(),
    ));
    let out = replay(&minimal_config(&dir, "", "http", &url, "on_error = \"halt\""));
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("redirects to https://elsewhere.example/hook, and the sink does not follow redirects"),
        "{stderr}"
    );
    assert_eq!(receiver.seen().len(), 1);
}

/// A binary payload, an empty key, keys with `/`, spaces and line breaks:
/// delivered, the key percent-encoded in `X-Rowhook-Key` (message mode) or
/// as a JSON string or base64 (batch mode). A payload over max_body_bytes
/// is refused before anything is sent.
#[test]
fn hostile_payloads_and_keys() {
    let receiver = Receiver::start();
    let binary: Vec<u8> = (0..=255u8).collect();
    let batch = [
        message("0-1-3:0:0", Some(b"bin"), &binary),
        message("0-1-3:0:1", Some(b""), b"empty key"),
        message("0-1-3:0:2", None, b"no key"),
        message("0-1-3:0:3", Some(b"a b/c\r\n\xff"), b"spaces"),
    ];
    let mut sink = HttpSink::open(
        "w",
        options(&format!(
            "url = \"{}\"\ncontent_type = \"application/octet-stream\"",
            receiver.url("/m")
        )),
    )
    .unwrap();
    rt().block_on(sink.write_batch(&batch)).unwrap();
    let seen = receiver.seen();
    let got: Vec<(Option<&str>, &str, &[u8])> = seen
        .iter()
        .map(|s| {
            (
                s.header("x-rowhook-key"),
                s.header("idempotency-key").unwrap(),
                s.body.as_slice(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some("bin"), "0-1-3:0:0:0", binary.as_slice()),
            (Some(""), "0-1-3:0:1:0", b"empty key".as_slice()),
            (None, "0-1-3:0:2:0", b"no key".as_slice()),
            (Some("a%20b/c%0D%0A%FF"), "0-1-3:0:3:0", b"spaces".as_slice()),
        ]
    );
    assert!(
        seen.iter()
            .all(|s| s.header("content-type") == Some("application/octet-stream"))
    );

    receiver.forget();
    let mut sink = HttpSink::open(
        "w",
        options(&format!("url = \"{}\"\nmode = \"batch\"", receiver.url("/b"))),
    )
    .unwrap();
    rt().block_on(sink.write_batch(&batch)).unwrap();
    let lines = receiver.seen()[0].lines();
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    assert_eq!(b64(&lines[0]["payload_b64"]), binary);
    assert_eq!(lines[1]["key"], "");
    assert!(lines[2].get("key").is_none() && lines[2].get("key_b64").is_none());
    assert_eq!(b64(&lines[3]["key_b64"]), b"a b/c\r\n\xff");
    assert_eq!(b64(&lines[3]["payload_b64"]), b"spaces");

    // 10 MB, over max_body_bytes (1 MiB): refused whole, nothing sent.
    receiver.forget();
    let mut sink = HttpSink::open(
        "w",
        options(&format!("url = \"{}\"\nmax_body_bytes = 1048576", receiver.url("/m"))),
    )
    .unwrap();
    assert_eq!(sink.limits().max_payload, Some(1 << 20));
    let e = rt()
        .block_on(sink.write_batch(&[
            message("0-1-4:0:0", None, b"small"),
            message("0-1-4:0:1", None, &vec![b'x'; 10_000_000]),
        ]))
        .unwrap_err();
    assert!(!e.is_retryable(), "{e}");
    assert!(e.to_string().contains("`0-1-4:0:1` has a 10000000-byte payload"), "{e}");
    assert!(receiver.seen().is_empty());

    // A receiver whose own limit is lower: 413 is permanent and says so.
    receiver.then([Answer::Status(413, vec![], "too big".into())]);
    let e = rt()
        .block_on(sink.write_batch(&[message("0-1-4:0:0", None, &vec![b'x'; 500_000])]))
        .unwrap_err();
    assert!(!e.is_retryable(), "{e}");
    assert!(e.to_string().contains("set max_body_bytes (now 1048576)"), "{e}");
}

/// A batch larger than `max_body_bytes` goes as several requests, each
/// within it, in order, each with its own `Idempotency-Key`.
#[test]
fn batch_requests_stay_within_max_body_bytes() {
    let receiver = Receiver::start();
    let batch: Vec<Message> = (0..100)
        .map(|i| {
            let payload = format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(2000));
            message(
                &format!("0-1-5:0:{i}"),
                Some(i.to_string().as_bytes()),
                payload.as_bytes(),
            )
        })
        .collect();
    let mut sink = HttpSink::open(
        "w",
        options(&format!(
            "url = \"{}\"\nmode = \"batch\"\nmax_body_bytes = 65536",
            receiver.url("/b")
        )),
    )
    .unwrap();
    rt().block_on(sink.write_batch(&batch)).unwrap();
    let seen = receiver.seen();
    assert!(seen.len() >= 4, "{} requests", seen.len());
    assert!(seen.iter().all(|s| s.body.len() <= 65536));
    let mut n = 0;
    for s in &seen {
        let lines = s.lines();
        let key = format!(
            "{}..{}",
            lines[0]["id"].as_str().unwrap(),
            lines[lines.len() - 1]["id"].as_str().unwrap()
        );
        assert_eq!(s.header("idempotency-key"), Some(key.as_str()));
        for l in lines {
            assert_eq!(l["payload"]["n"], n);
            assert_eq!(l["key"], n.to_string());
            n += 1;
        }
    }
    assert_eq!(n, 100);
}

/// A handler's 10 MB emit to a sink with a 1 MiB `max_body_bytes` is
/// refused at `emit` as too large: the `echo` handler emits the row change
/// JSON of a row holding 10 MB of text.
#[test]
fn a_payload_past_max_body_bytes_is_refused_at_emit() {
    let echo = crate::reload::suite_guests().join("echo.wasm");
    let server = Server::start(&[]);
    server.sql(
        "CREATE DATABASE big;
         CREATE TABLE big.docs (id INT PRIMARY KEY, doc LONGTEXT NOT NULL);
         INSERT INTO big.docs VALUES (1, REPEAT('x', 10000000)), (2, 'small');
         FLUSH BINARY LOGS;",
    );
    let receiver = Receiver::start();
    let dir = temp_dir("http-emit");
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[sinks.out]
kind = "http"
url = "{}"
max_body_bytes = 1048576

[[handlers]]
name = "echo"
module = "{}"
tables = ["big.docs"]
# Rendering 10 MB of JSON is slow in a debug build: time is not the point here.
limits = {{ time_ms = 10000 }}
on_error = "skip"
sinks = ["out"]
"#,
            receiver.url("/"),
            echo.display()
        ),
    )
    .unwrap();
    let binlog = server.binlog("mysql-bin.000001");
    let out = rowhook(&["replay", "-c", config.to_str().unwrap(), binlog.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("too-large") || stderr.contains("too large"), "{stderr}");
    let seen = receiver.seen();
    assert_eq!(seen.len(), 1, "only the small row");
    assert!(text(&seen[0].body).contains("\"doc\":\"small\""));
}

/// `rowhook check`: the receiver answering, refusing the credentials, not
/// there, down; a bad URL; TLS against a server whose CA is not trusted,
/// then trusted through `tls_ca_file`.
#[test]
fn check_names_the_problem_and_the_fix() {
    let receiver = Receiver::start();
    let dir = temp_dir("http-check");
    let check = |keys: &str| -> (bool, String) {
        let config = minimal_config(&dir, "", "http", keys, "on_error = \"halt\"");
        let out = Command::new(env!("CARGO_BIN_EXE_rowhook"))
            .args(["check", "-c"])
            .arg(&config)
            .env("NO_COLOR", "1")
            .env("WEBHOOK_TOKEN", "t0ken")
            .output()
            .unwrap();
        (
            out.status.success(),
            format!("{}{}", text(&out.stdout), text(&out.stderr)),
        )
    };
    let url = format!(
        "url = \"{}\"\nheaders = {{ Authorization = \"Bearer ${{WEBHOOK_TOKEN}}\" }}",
        receiver.url("/hook")
    );

    let (ok, out) = check(&url);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "sink `orders_queue` (http): http://127.0.0.1:{}: answers OPTIONS with 200",
            receiver.port
        )),
        "{out}"
    );
    let seen = receiver.seen();
    assert_eq!(seen[0].method, "OPTIONS");
    assert_eq!(seen[0].header("authorization"), Some("Bearer t0ken"));
    assert!(!out.contains("t0ken") && !out.contains("/hook"), "{out}");

    receiver.then([Answer::Status(401, vec![], "bad token".into())]);
    let (ok, out) = check(&url);
    assert!(!ok);
    assert!(
        out.contains(
            "answers 401 Unauthorized (bad token): the receiver refuses the sink's credentials; check headers"
        ),
        "{out}"
    );
    receiver.then([Answer::Status(404, vec![], String::new())]);
    let (ok, out) = check(&url);
    assert!(
        !ok && out.contains("nothing receives at url's path; fix the path in url"),
        "{out}"
    );
    receiver.then([Answer::Status(405, vec![], String::new())]);
    let (ok, out) = check(&url);
    assert!(ok && out.contains("answers OPTIONS with 405"), "{out}");

    let down = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (ok, out) = check(&format!("url = \"http://127.0.0.1:{down}/\""));
    assert!(!ok);
    assert!(
        out.contains("cannot connect") && out.contains("start the receiver"),
        "{out}"
    );

    let (ok, out) = check("url = \"ftp://127.0.0.1/x\"");
    assert!(
        !ok && out.contains("sinks.orders_queue.url: `ftp://` is not an HTTP URL scheme"),
        "{out}"
    );
    let (ok, out) = check("url = \"http://me:pw@127.0.0.1/x\"");
    assert!(
        !ok && out.contains("sinks.orders_queue.url: holds credentials") && !out.contains("pw@"),
        "{out}"
    );

    // An HTTPS receiver whose certificate a test CA signed.
    let certs = test_certs("http-check-certs");
    let tls_port = tls_receiver(&certs.join("server.pem"), &certs.join("server.key"));
    let https = format!("url = \"https://localhost:{tls_port}/\"");
    let (ok, out) = check(&https);
    let (ok_ca, out_ca) = check(&format!(
        "{https}\ntls_ca_file = \"{}\"",
        certs.join("ca.pem").display()
    ));
    assert!(!ok, "{out}");
    assert!(
        out.contains("TLS with https://localhost:") && out.contains("set tls_ca_file to the CA"),
        "{out}"
    );
    assert!(ok_ca, "{out_ca}");
    assert!(
        out_ca.contains(&format!("https://localhost:{tls_port}: answers OPTIONS")),
        "{out_ca}"
    );
}

/// An HTTPS receiver on a free port (rustls, on std threads) that answers
/// every request `204 No Content`; returns the port.
fn tls_receiver(cert: &Path, key: &Path) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let config = config.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = tls.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
                let _ = tls.flush();
            });
        }
    });
    port
}
