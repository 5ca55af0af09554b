//! The HTTP server for operators (`[http]`), against live runs on private
//! MariaDB servers and a replay: metrics that add up, lag behind a blocked
//! sink, readiness through a halt and an outage, the admin API's token,
//! OpenMetrics, Server-Sent Events, and no endpoint or log line holding the
//! source's password or a handler's payloads.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::crash::ledger_rows;
use crate::faults::mariadb_sh;
use crate::support::{Server, interrupt, root, rowhook, temp_dir, wait_until};

pub(crate) const PASSWORD: &str = "Pw-obs-7c1e-do-not-leak";
pub(crate) const TOKEN: &str = "tok-3f9a61c0b2d84e17a5";

/// Kills the child on drop, so a failed assertion leaves no daemon behind.
pub(crate) struct Daemon(pub(crate) Option<Child>);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Daemon {
    pub(crate) fn take(&mut self) -> Child {
        self.0.take().expect("running")
    }
}

/// One HTTP/1.1 request: status, head and body.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: String,
}

pub(crate) fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    exchange(addr, method, path, headers, "").unwrap_or_else(|e| panic!("{method} {path} to {addr}: {e}"))
}

/// One HTTP/1.1 request with `body`: the answer's body is as long as its
/// `Content-Length` says (a server may keep the connection open, as
/// ChromeDriver does), or runs to the end of the connection.
pub(crate) fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let (head, body) = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).into_owned();
            let length = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|n| n.trim().parse::<usize>()));
            if let Some(Ok(length)) = length
                && raw.len() >= end + 4 + length
            {
                break (head, raw[end + 4..end + 4 + length].to_vec());
            }
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            let end = raw.windows(4).position(|w| w == b"\r\n\r\n");
            let (head, body) = end.map_or((&raw[..], &[][..]), |end| (&raw[..end], &raw[end + 4..]));
            break (String::from_utf8_lossy(head).into_owned(), body.to_vec());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    Ok(Reply {
        status: head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0),
        head,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub(crate) fn get(addr: &str, path: &str) -> Reply {
    request(addr, "GET", path, &[])
}

/// The sum of a metric's series in Prometheus text (all labels, or those
/// containing `with`).
pub(crate) fn metric(text: &str, name: &str, with: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| l.contains(with))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `what` until it holds, for up to `limit`.
pub(crate) fn eventually(limit: Duration, what: &str, mut holds: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !holds() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `rowhook ARGS` with `env`, its log in `log`, and waits for the
/// address its HTTP server listens on.
pub(crate) fn spawn(args: &[&str], env: &[(&str, &str)], log: &Path) -> (Daemon, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rowhook"));
    cmd.args(args)
        .env("ROWHOOK_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut daemon = Daemon(Some(cmd.spawn().expect("run rowhook")));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(listening_on) {
            return (daemon, addr);
        }
        if let Some(status) = daemon.0.as_mut().unwrap().try_wait().unwrap() {
            panic!("rowhook {args:?} exited ({status}) before serving HTTP:\n{text}");
        }
        assert!(Instant::now() < deadline, "no HTTP server within a minute:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The address in the "HTTP server listening" log line (text or JSON).
pub(crate) fn listening_on(line: &str) -> Option<String> {
    if !line.contains("HTTP server listening") {
        return None;
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        return v["addr"].as_str().map(str::to_owned);
    }
    let rest = &line[line.find("addr=")? + 5..];
    Some(rest.split_whitespace().next()?.to_owned())
}

/// A private server with a password-protected replication user and the
/// ledger schema of the crash tests (`crash.ledger`), with `crash.hits`.
pub(crate) fn server() -> Server {
    let server = Server::start(&[]);
    server.sql(&format!(
        "CREATE USER 'repl'@'%' IDENTIFIED BY '{PASSWORD}';
         GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO 'repl'@'%';
         CREATE DATABASE crash;
         CREATE TABLE crash.ledger (id BIGINT UNSIGNED PRIMARY KEY, k INT NOT NULL, amount INT NOT NULL);
         CREATE TABLE crash.hits (id INT PRIMARY KEY, ip VARCHAR(40));"
    ));
    server
}

/// The head of a `rowhook run` config on `server` as replica `server_id`:
/// the source through user `repl` (password from `RH_OBS_PASSWORD`), a
/// store in `state` committed after every transaction, and `[http]` on a
/// free port with the admin token from `RH_OBS_TOKEN`.
pub(crate) fn live_head(server: &Server, server_id: u32) -> String {
    format!(
        r#"
[source]
url = "mysql://repl:${{RH_OBS_PASSWORD}}@127.0.0.1:{port}"
server_id = {server_id}
start = "earliest"
heartbeat_secs = 1

[state]
path = "state"
commit_interval_ms = 0

[http]
listen = "127.0.0.1:0"
token = "${{RH_OBS_TOKEN}}"
"#,
        port = server.port
    )
}

/// A `rowhook run` config: the source through user `repl` with the
/// password from `RH_OBS_PASSWORD`, `[http]` with `http`, the `ledger`
/// handler into sink `out` (`out` is its table).
fn live_config(dir: &Path, server: &Server, http: &str, out: &str, extra_handlers: &str) -> PathBuf {
    let guests = crate::reload::suite_guests();
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[source]
url = "mysql://repl:${{RH_OBS_PASSWORD}}@127.0.0.1:{port}"
server_id = 7611
start = "earliest"
heartbeat_secs = 1

[state]
path = "state"

[http]
{http}

[sinks.out]
{out}

[[handlers]]
name = "ledger"
tenant = "books"
module = "{ledger}"
tables = ["crash.ledger"]
ops = ["insert"]
sinks = ["out"]
on_error = "halt"
{extra_handlers}
"#,
            port = server.port,
            ledger = guests.join("ledger.wasm").display(),
        ),
    )
    .unwrap();
    config
}

#[test]
fn a_live_run_serves_metrics_status_events_and_admin_without_leaking() {
    let server = server();
    let dir = temp_dir("http-live");
    let config = live_config(
        &dir,
        &server,
        "listen = \"127.0.0.1:0\"\ntoken = \"${RH_OBS_TOKEN}\"",
        "kind = \"file\"\npath = \"out.log\"",
        "",
    );
    let log = dir.join("rowhook.log");
    // Everything at debug, as JSON lines, is searched for the password below.
    let (mut daemon, addr) = spawn(
        &["--log-format", "json", "run", "-c", config.to_str().unwrap()],
        &[
            ("RH_OBS_PASSWORD", PASSWORD),
            ("RH_OBS_TOKEN", TOKEN),
            ("ROWHOOK_LOG", "debug,cranelift_codegen=info,wasmtime_cranelift=info"),
        ],
        &log,
    );
    ledger_rows(&server, 0, 3);
    let mut bodies: Vec<String> = Vec::new();

    // After 60 changes the counts add up.
    eventually(Duration::from_secs(30), "60 changes counted", || {
        metric(&get(&addr, "/metrics").body, "rowhook_changes_total", "") == 60.0
    });
    let prom = get(&addr, "/metrics");
    assert_eq!(prom.status, 200);
    assert!(prom.head.contains("text/plain; version=0.0.4"), "{}", prom.head);
    let m = &prom.body;
    assert_eq!(
        metric(m, "rowhook_changes_total", "table=\"crash.ledger\",op=\"insert\""),
        60.0
    );
    assert_eq!(metric(m, "rowhook_handler_calls_total", "handler=\"ledger\""), 60.0);
    assert_eq!(
        metric(m, "rowhook_handler_call_seconds_count", "handler=\"ledger\""),
        60.0
    );
    assert_eq!(metric(m, "rowhook_sink_messages_total", "result=\"ok\""), 60.0);
    assert_eq!(metric(m, "rowhook_source_connected", ""), 1.0);
    assert!(metric(m, "process_resident_memory_bytes", "") > 1e6);
    for name in [
        "rowhook_source_lag_seconds",
        "rowhook_reconnects_total",
        "rowhook_binlog_rotations_total",
        "rowhook_handler_errors_total",
        "rowhook_handler_reloads_total",
        "rowhook_sink_retries_total",
        "rowhook_sink_write_seconds_bucket",
        "rowhook_dead_letters_total",
        "rowhook_checkpoint_age_seconds",
        "rowhook_checkpoints_total",
        "process_cpu_seconds_total",
        "rowhook_handler_halted",
    ] {
        assert!(m.lines().any(|l| l.starts_with(name)), "no {name} in\n{m}");
    }
    // The example alert rules name only metrics that exist.
    let alerts = std::fs::read_to_string(root().join("examples/ops/rowhook-alerts.yml")).unwrap();
    let named: std::collections::BTreeSet<&str> = alerts
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("rowhook_"))
        .collect();
    assert!(named.len() >= 6, "{named:?}");
    for name in named {
        assert!(
            m.lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "examples/ops/rowhook-alerts.yml names {name}, which /metrics does not have"
        );
    }
    bodies.push(prom.body.clone());

    // OpenMetrics when asked for.
    let om = request(
        &addr,
        "GET",
        "/metrics",
        &[(
            "Accept",
            "application/openmetrics-text; version=1.0.0, text/plain;q=0.5",
        )],
    );
    assert!(om.head.contains("application/openmetrics-text"), "{}", om.head);
    assert!(om.body.ends_with("# EOF\n"));
    assert!(om.body.contains("# TYPE rowhook_changes counter\n"));
    assert!(om.body.contains("# TYPE rowhook_handler_call_seconds histogram\n"));
    assert_eq!(metric(&om.body, "rowhook_changes_total", ""), 60.0);
    bodies.push(om.body);

    let health = get(&addr, "/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let ready = get(&addr, "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    bodies.push(ready.body);
    assert_eq!(get(&addr, "/nothing-here").status, 404);

    // The status report, live.
    eventually(Duration::from_secs(5), "status counts 60 changes", || {
        let s: serde_json::Value = serde_json::from_str(&get(&addr, "/status").body).unwrap();
        s["stats"]["changes"] == 60
    });
    let status = get(&addr, "/status");
    assert!(status.head.contains("application/json"));
    bodies.push(status.body);

    // Server-Sent Events: at least two within 2.5 s.
    let mut sse = TcpStream::connect(&addr).unwrap();
    sse.write_all(format!("GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    sse.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let started = Instant::now();
    let mut events = String::new();
    while started.elapsed() < Duration::from_millis(2500) && events.matches("event: status").count() < 2 {
        let mut chunk = [0u8; 65536];
        if let Ok(n) = sse.read(&mut chunk) {
            events.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }
    assert!(events.contains("text/event-stream"), "{events}");
    assert!(
        events.matches("event: status\ndata: {").count() >= 2,
        "two events within 2.5 s: {events}"
    );
    bodies.push(events);

    // The admin API: a token, and the right one.
    let no_token = request(&addr, "POST", "/admin/handlers/ledger/reload", &[]);
    assert_eq!(no_token.status, 401, "{}", no_token.body);
    let wrong = request(
        &addr,
        "POST",
        "/admin/handlers/ledger/reload",
        &[("Authorization", "Bearer tok-3f9a61c0b2d84e17a6")],
    );
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let auth = format!("Bearer {TOKEN}");
    let state = request(
        &addr,
        "GET",
        "/admin/handlers/ledger/state?prefix=k%3A&limit=1000",
        &[("Authorization", &auth)],
    );
    assert_eq!(state.status, 200, "{}", state.body);
    let page: serde_json::Value = serde_json::from_str(&state.body).unwrap();
    assert_eq!(page["keys"].as_array().unwrap().len(), 8, "{page}");
    assert_eq!(page["keys_total"], 9, "k:0..k:7 and total");
    assert_eq!(page["max_keys"], 1000);
    assert_eq!(page["max_value_bytes"], 65536);
    assert!(page["keys"][0]["bytes"].as_u64().unwrap() > 0);
    bodies.push(state.body);
    let reload = request(
        &addr,
        "POST",
        "/admin/handlers/ledger/reload",
        &[("Authorization", &auth)],
    );
    assert_eq!(reload.status, 200, "{}", reload.body);
    assert!(reload.body.contains("ledger.wasm"), "{}", reload.body);
    bodies.push(reload.body);
    assert_eq!(
        request(
            &addr,
            "POST",
            "/admin/handlers/nobody/reload",
            &[("Authorization", &auth)]
        )
        .status,
        404
    );
    eventually(Duration::from_secs(5), "the reload counted", || {
        metric(
            &get(&addr, "/metrics").body,
            "rowhook_handler_reloads_total",
            "result=\"ok\"",
        ) == 1.0
    });
    // The reloaded handler keeps counting.
    ledger_rows(&server, 3, 4);
    eventually(Duration::from_secs(20), "80 changes counted", || {
        metric(&get(&addr, "/metrics").body, "rowhook_changes_total", "") == 80.0
    });

    // Paused, the handler is not called: its changes are held (and
    // counted); resumed, it gets them, in order, before anything newer.
    let out_lines = || std::fs::read_to_string(dir.join("out.log")).unwrap().lines().count();
    eventually(Duration::from_secs(20), "80 lines written", || out_lines() == 80);
    let pause = request(
        &addr,
        "POST",
        "/admin/handlers/ledger/pause",
        &[("Authorization", &auth)],
    );
    assert_eq!(pause.status, 200, "{}", pause.body);
    assert!(pause.body.contains("\"paused\":true"), "{}", pause.body);
    bodies.push(pause.body);
    ledger_rows(&server, 4, 5);
    eventually(Duration::from_secs(20), "20 changes held", || {
        metric(
            &get(&addr, "/metrics").body,
            "rowhook_handler_held_changes",
            "handler=\"ledger\"",
        ) == 20.0
    });
    assert_eq!(out_lines(), 80, "not called while paused");
    let resume = request(
        &addr,
        "POST",
        "/admin/handlers/ledger/resume",
        &[("Authorization", &auth)],
    );
    assert_eq!(resume.status, 200, "{}", resume.body);
    assert!(resume.body.contains("\"held\":20"), "{}", resume.body);
    bodies.push(resume.body);
    eventually(Duration::from_secs(20), "the held changes handed over", || {
        out_lines() == 100
    });

    // The dashboard's page and files, each under its policy.
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard.js", "text/javascript"),
        ("/dashboard.css", "text/css"),
    ] {
        let r = get(&addr, path);
        let head = r.head.to_ascii_lowercase();
        assert_eq!(r.status, 200, "{path}: {}", r.head);
        assert!(head.contains(&format!("content-type: {kind}")), "{path}: {}", r.head);
        assert!(
            head.contains("content-security-policy: default-src 'none'"),
            "{path}: {}",
            r.head
        );
    }

    // The source goes away: not ready, and ready again once it is back.
    mariadb_sh("down", &server);
    eventually(Duration::from_secs(20), "unready without the source", || {
        let r = get(&addr, "/readyz");
        r.status == 503 && r.body.contains("source is not connected")
    });
    let unready = get(&addr, "/readyz");
    let why: serde_json::Value = serde_json::from_str(&unready.body).unwrap();
    assert_eq!(why["ready"], false);
    bodies.push(unready.body);
    mariadb_sh("up", &server);
    eventually(Duration::from_secs(30), "ready again", || {
        get(&addr, "/readyz").status == 200
    });

    // Neither the password, the token nor a payload in any answer.
    let payloads = std::fs::read_to_string(dir.join("out.log")).unwrap();
    let rows: Vec<u64> = payloads
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(rows, (1..=100).collect::<Vec<u64>>(), "every change once, in order");
    for body in &bodies {
        assert!(!body.contains(PASSWORD), "the password leaked: {body}");
        assert!(!body.contains(TOKEN), "the token leaked: {body}");
        for line in payloads.lines() {
            assert!(!body.contains(line), "payload `{line}` in {body}");
        }
    }
    assert_eq!(interrupt(daemon.take()).code(), Some(0));

    // The log: JSON lines with the fields asked for, and no password at debug.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(PASSWORD), "the password is in the log");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["timestamp"].is_string() && l["level"].is_string())
    );
    assert!(
        lines.iter().any(|l| l["level"] == "INFO"
            && l["message"]
                .as_str()
                .unwrap()
                .starts_with("stopped after 100 row changes")),
        "the run's summary is a JSON line too"
    );
    let admin: Vec<_> = lines.iter().filter(|l| l["message"] == "admin call").collect();
    assert!(admin.len() >= 5, "each admin call is logged");
    assert!(
        admin
            .iter()
            .all(|l| l["peer"].as_str().unwrap().starts_with("127.0.0.1:"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l["handler"] == "ledger" && l["message"].as_str().unwrap().contains("reloaded")),
        "a log line with a handler field"
    );
}

#[test]
fn a_halted_handler_makes_readyz_unready_and_admin_needs_a_configured_token() {
    let server = server();
    let dir = temp_dir("http-halt");
    let hostile = crate::reload::suite_guests().join("hostile.wasm");
    let config = live_config(
        &dir,
        &server,
        "listen = \"127.0.0.1:0\"",
        "kind = \"file\"\npath = \"out.log\"",
        &format!(
            "[[handlers]]\nname = \"hostile\"\ntenant = \"edge\"\nmodule = \"{}\"\ntables = [\"crash.hits\"]\nsinks = [\"out\"]\non_error = \"halt\"\n",
            hostile.display()
        ),
    );
    let log = dir.join("rowhook.log");
    let (mut daemon, addr) = spawn(
        &["run", "-c", config.to_str().unwrap()],
        &[("RH_OBS_PASSWORD", PASSWORD)],
        &log,
    );
    eventually(Duration::from_secs(20), "ready", || get(&addr, "/readyz").status == 200);
    let off = request(&addr, "POST", "/admin/handlers/ledger/reload", &[]);
    assert_eq!(off.status, 403, "{}", off.body);
    assert!(off.body.contains("[http] token"), "{}", off.body);

    // `hits` makes the hostile handler panic: it halts the run.
    server.sql("INSERT INTO crash.hits VALUES (1, '10.0.0.1')");
    // The handler's halt shows at once; the run's stop when the pipeline
    // has published it.
    eventually(
        Duration::from_secs(20),
        "unready after the halt, the run stopped",
        || {
            let r = get(&addr, "/readyz");
            r.status == 503 && r.body.contains("the run stopped")
        },
    );
    let why: serde_json::Value = serde_json::from_str(&get(&addr, "/readyz").body).unwrap();
    let reasons = why["reasons"].to_string();
    assert!(
        reasons.contains("handler `hostile` (tenant `edge`) halted"),
        "{reasons}"
    );
    assert!(reasons.contains("the run stopped"), "{reasons}");
    // Alive, and saying so; the metrics say which handler.
    assert_eq!(get(&addr, "/healthz").status, 200);
    let m = get(&addr, "/metrics").body;
    assert_eq!(metric(&m, "rowhook_handler_halted", "handler=\"hostile\""), 1.0);
    assert_eq!(metric(&m, "rowhook_handler_halted", "handler=\"ledger\""), 0.0);
    // The status report (and the dashboard) has its last error.
    let report: serde_json::Value = serde_json::from_str(&get(&addr, "/status").body).unwrap();
    let hostile = report["handlers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "hostile")
        .unwrap_or_else(|| panic!("{report:#}"));
    let last = &hostile["last_error"];
    assert_eq!(last["kind"], "trap", "{report:#}");
    // The first row of the transaction with the hit.
    assert!(last["change"].as_str().unwrap().ends_with(":0:0"), "{report:#}");
    // Its end: what the guest's panic wrote.
    assert!(last["message"].as_str().unwrap().contains("stderr: "), "{report:#}");
    assert!(report["handlers"][0].get("last_error").is_none(), "{report:#}");
    // It stops on SIGINT, failing.
    let status = interrupt(daemon.take());
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("the HTTP server keeps answering"), "{text}");
    assert!(!text.contains(PASSWORD));
}

/// A tenant's admin token reaches that tenant's handlers and nothing else:
/// another tenant's handler under any spelling of its name gets the same
/// refusal as a name that does not exist, and none of its state.
#[test]
fn a_tenant_token_reaches_its_own_handlers_only() {
    const BOOKS: &str = "tok-books-51d0c2a97e3f48b6";
    const EDGE: &str = "tok-edge-9a04be1f6c2d7e35";
    let server = server();
    let dir = temp_dir("http-tenant-tokens");
    let ledger = crate::reload::suite_guests().join("ledger.wasm");
    let config = live_config(
        &dir,
        &server,
        "listen = \"127.0.0.1:0\"\ntoken = \"${RH_OBS_TOKEN}\"",
        "kind = \"file\"\npath = \"out.log\"",
        &format!(
            r#"
[[handlers]]
name = "hits"
tenant = "edge"
module = "{}"
tables = ["crash.hits"]
on_error = "skip"

[tenants.books]
tables = ["crash.ledger"]
sinks = ["out"]
admin_token = "${{RH_BOOKS_TOKEN}}"

[tenants.edge]
tables = ["crash.hits"]
admin_token = "${{RH_EDGE_TOKEN}}"
"#,
            ledger.display()
        ),
    );
    let log = dir.join("rowhook.log");
    let (mut daemon, addr) = spawn(
        &["run", "-c", config.to_str().unwrap()],
        &[
            ("RH_OBS_PASSWORD", PASSWORD),
            ("RH_OBS_TOKEN", TOKEN),
            ("RH_BOOKS_TOKEN", BOOKS),
            ("RH_EDGE_TOKEN", EDGE),
        ],
        &log,
    );
    // The canary: a key of books' state.
    server.sql("INSERT INTO crash.ledger VALUES (1, 987654321, 5)");
    eventually(Duration::from_secs(30), "the canary counted", || {
        metric(
            &get(&addr, "/metrics").body,
            "rowhook_handler_calls_total",
            "handler=\"ledger\"",
        ) == 1.0
    });
    let call = |method: &str, path: &str, token: &str| {
        request(&addr, method, path, &[("Authorization", &format!("Bearer {token}"))])
    };
    // Its own handler, and the operator's token: every handler.
    let own = call("GET", "/admin/handlers/ledger/state", BOOKS);
    assert_eq!(own.status, 200, "{}", own.body);
    assert!(own.body.contains("k:987654321"), "{}", own.body);
    assert_eq!(call("GET", "/admin/handlers/hits/state", EDGE).status, 200);
    assert_eq!(call("GET", "/admin/handlers/hits/state", TOKEN).status, 200);

    // Edge's token on books' handler, spelled every way, and on nothing.
    let mut refusals = Vec::new();
    for name in [
        "ledger",
        "Ledger",
        "LEDGER",
        "%6Cedger",
        "led%67er",
        "l%D0%B5dger",
        "ledger%00",
        "nobody",
    ] {
        for (method, verb) in [
            ("GET", "state"),
            ("POST", "pause"),
            ("POST", "resume"),
            ("POST", "reload"),
        ] {
            let r = call(method, &format!("/admin/handlers/{name}/{verb}"), EDGE);
            assert_eq!(r.status, 403, "{name}/{verb}: {}", r.body);
            assert!(!r.body.contains("987654321"), "{}", r.body);
            refusals.push(r.body);
        }
    }
    refusals.dedup();
    assert_eq!(
        refusals,
        ["{\"error\":\"the token of tenant `edge` reaches only its own handlers: hits\"}"],
        "one answer, whatever the name"
    );
    // Nothing changed for books: not paused, still counting.
    server.sql("INSERT INTO crash.ledger VALUES (2, 987654321, 5)");
    eventually(Duration::from_secs(30), "books goes on", || {
        metric(
            &get(&addr, "/metrics").body,
            "rowhook_handler_calls_total",
            "handler=\"ledger\"",
        ) == 2.0
    });
    let page: serde_json::Value =
        serde_json::from_str(&call("GET", "/admin/handlers/ledger/state", TOKEN).body).unwrap();
    assert_eq!(page["keys_total"], 2, "{page}");
    // A wrong token is unauthorized, as before; the log says who called.
    assert_eq!(
        call("GET", "/admin/handlers/hits/state", "tok-edge-9a04be1f6c2d7e36").status,
        401
    );
    assert_eq!(interrupt(daemon.take()).code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("caller=\"edge\"") || text.contains("caller=edge"),
        "{text}"
    );
    for secret in [BOOKS, EDGE, TOKEN, PASSWORD] {
        assert!(!text.contains(secret), "{text}");
    }
}

#[test]
fn lag_rises_behind_a_blocked_sink_and_falls_after() {
    let server = Arc::new(server());
    let dir = temp_dir("http-lag");
    let fifo = dir.join("out.fifo");
    let config = live_config(
        &dir,
        &server,
        "listen = \"127.0.0.1:0\"",
        &format!("kind = \"fifo\"\npath = \"{}\"\nretries = \"forever\"", fifo.display()),
        "",
    );
    let (mut daemon, addr) = spawn(
        &["run", "-c", config.to_str().unwrap()],
        &[("RH_OBS_PASSWORD", PASSWORD)],
        &dir.join("rowhook.log"),
    );
    let lag = |addr: &str| metric(&get(addr, "/metrics").body, "rowhook_source_lag_seconds", "");
    // A writer outruns the sink nobody reads: the lag grows.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (server, writing) = (server.clone(), writing.clone());
        std::thread::spawn(move || {
            let mut t = 0;
            while writing.load(Ordering::Relaxed) {
                ledger_rows(&server, t, t + 1);
                t += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            t
        })
    };
    let lag_bytes = |addr: &str| metric(&get(addr, "/metrics").body, "rowhook_source_lag_bytes", "");
    let mut most = 0.0f64;
    eventually(Duration::from_secs(20), "lag of 3 s behind the blocked sink", || {
        most = most.max(lag(&addr));
        most >= 3.0
    });
    // In bytes too: the server's binlog grows past the handled position.
    let mut behind = 0.0f64;
    eventually(Duration::from_secs(20), "lag of 10 KB behind the blocked sink", || {
        behind = behind.max(lag_bytes(&addr));
        behind >= 10_000.0
    });
    // The server keeps answering while the pipeline waits on the sink.
    assert_eq!(get(&addr, "/healthz").status, 200);
    writing.store(false, Ordering::Relaxed);
    let txns = writer.join().unwrap();
    // A reader comes: everything goes through and the lag falls to 0.
    let mut reader = Command::new("cat").arg(&fifo).stdout(Stdio::piped()).spawn().unwrap();
    let lines = std::thread::spawn({
        let mut out = reader.stdout.take().unwrap();
        move || {
            let mut s = String::new();
            out.read_to_string(&mut s).unwrap();
            s.lines().count()
        }
    });
    eventually(Duration::from_secs(30), "every change handled", || {
        metric(&get(&addr, "/metrics").body, "rowhook_changes_total", "") == f64::from(txns * 20)
    });
    eventually(Duration::from_secs(10), "lag back to 0", || lag(&addr) == 0.0);
    eventually(Duration::from_secs(10), "no bytes behind", || lag_bytes(&addr) == 0.0);
    assert_eq!(interrupt(daemon.take()).code(), Some(0));
    let _ = wait_until(&mut reader, Instant::now() + Duration::from_secs(10), "cat");
    assert_eq!(lines.join().unwrap(), txns as usize * 20);
}

#[test]
fn a_replay_serves_metrics_and_status_while_it_runs() {
    let dir = temp_dir("http-replay");
    let fifo = dir.join("calls.fifo");
    let counting = crate::reload::suite_guests().join("counting.wasm");
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n\n[sinks.calls]\nkind = \"fifo\"\npath = \"{}\"\nretries = \"forever\"\n\n[[handlers]]\nname = \"counting\"\nmodule = \"{}\"\ntables = [\"shop.*\"]\nsinks = [\"calls\"]\n",
            fifo.display(),
            counting.display()
        ),
    )
    .unwrap();
    let binlog = root().join("examples/binlog/shop-bin.000001");
    let (mut daemon, addr) = spawn(
        &["replay", "-c", config.to_str().unwrap(), binlog.to_str().unwrap()],
        &[],
        &dir.join("rowhook.log"),
    );
    // Blocked on the sink nobody reads after its first transaction.
    eventually(Duration::from_secs(20), "the first changes counted", || {
        metric(&get(&addr, "/metrics").body, "rowhook_changes_total", "") > 0.0
    });
    let m = get(&addr, "/metrics").body;
    assert_eq!(
        metric(&m, "rowhook_changes_total", ""),
        metric(&m, "rowhook_handler_calls_total", "")
    );
    assert!(!m.contains("rowhook_source_connected"), "a replay has no live source");
    let ready = get(&addr, "/readyz");
    assert_eq!(ready.status, 200, "a replay is ready: {}", ready.body);
    // The report of the pipeline's last tick (it is waiting on the sink).
    let status: serde_json::Value = serde_json::from_str(&get(&addr, "/status").body).unwrap();
    assert_eq!(status["handler_metrics"][0]["name"], "counting", "{status}");
    assert!(status["live_status_written_at"].as_u64().is_some(), "{status}");
    let out = Command::new("cat").arg(&fifo).output().unwrap();
    let mut child = daemon.take();
    let exit = wait_until(&mut child, Instant::now() + Duration::from_secs(30), "the replay");
    assert!(exit.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 23);
}

#[test]
fn a_public_bind_without_a_token_and_a_short_token_are_refused() {
    let dir = temp_dir("http-config");
    let config = dir.join("rowhook.toml");
    let binlog = root().join("examples/binlog/shop-bin.000001");
    let refused = |http: &str, env: &[(&str, &str)], expect: &[&str]| {
        std::fs::write(&config, format!("[http]\n{http}\n")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rowhook"));
        cmd.args(["replay", "-c"]).arg(&config).arg(&binlog);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{http} was accepted");
        for e in expect {
            assert!(err.contains(e), "`{e}` not in: {err}");
        }
        err.into_owned()
    };
    refused(
        "listen = \"0.0.0.0:9187\"",
        &[],
        &["http.listen", "0.0.0.0:9187 is reachable from other hosts", "token"],
    );
    let err = refused(
        "listen = \"0.0.0.0:9187\"\ntoken = \"${RH_SHORT}\"",
        &[("RH_SHORT", "short-secret")],
        &["http.token", "shorter than 16"],
    );
    assert!(!err.contains("short-secret"), "the token is in the error: {err}");
    refused(
        "listen = \"localhost:9187\"",
        &[],
        &["http.listen", "not an IP address and port"],
    );
    refused("listen = \"127.0.0.1:1\"\nport = 3", &[], &["port"]);
    // With a token, a public bind is taken (on a free port).
    std::fs::write(
        &config,
        format!("[http]\nlisten = \"0.0.0.0:0\"\ntoken = \"{TOKEN}\"\n"),
    )
    .unwrap();
    let out = rowhook(&["replay", "-c", config.to_str().unwrap(), binlog.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
