//! Handlers deployed into a running rowhook (`[deploy]`): through a
//! tenant's directory and through the admin API with the tenant's token,
//! each checked as the config is, applied at a transaction boundary, and a
//! refused deployment changing nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::http::{PASSWORD, TOKEN, eventually, exchange, get, metric, request, server, spawn};
use crate::support::{Server, interrupt, temp_dir};

const BOOKS: &str = "tok-books-3e8d1c07b9a2f456";
const EDGE: &str = "tok-edge-70f2a9c4d1e8b365";

/// A `rowhook run` config with `[deploy] dir = "tenants"`: tenant `books`
/// owns sink `out` (the file `out.log`) and reads `crash.ledger`; tenant
/// `edge` reads `crash.hits` and runs the operator's handler `hits`.
fn config(dir: &Path, server: &Server) -> PathBuf {
    let guests = crate::reload::suite_guests();
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
{head}
[deploy]
dir = "tenants"

[sinks.out]
kind = "file"
path = "out.log"

[tenants.books]
tables = ["crash.ledger"]
sinks = ["out"]
max_handlers = 2
admin_token = "${{RH_BOOKS_TOKEN}}"

[tenants.edge]
tables = ["crash.hits"]
admin_token = "${{RH_EDGE_TOKEN}}"

[[handlers]]
name = "hits"
tenant = "edge"
module = "{ledger}"
tables = ["crash.hits"]
on_error = "skip"
"#,
            head = crate::http::live_head(server, 7612),
            ledger = guests.join("ledger.wasm").display(),
        ),
    )
    .unwrap();
    config
}

fn env() -> [(&'static str, &'static str); 4] {
    [
        ("RH_OBS_PASSWORD", PASSWORD),
        ("RH_OBS_TOKEN", TOKEN),
        ("RH_BOOKS_TOKEN", BOOKS),
        ("RH_EDGE_TOKEN", EDGE),
    ]
}

fn lines(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("out.log")).map_or(0, |t| t.lines().count())
}

fn insert(server: &Server, ids: std::ops::Range<u32>) {
    for id in ids {
        server.sql(&format!("INSERT INTO crash.ledger VALUES ({id}, {}, 1)", id % 3));
    }
}

fn calls(addr: &str, handler: &str) -> f64 {
    metric(
        &get(addr, "/metrics").body,
        "rowhook_handler_calls_total",
        &format!("handler=\"{handler}\""),
    )
}

fn log_has(log: &Path, text: &str) -> bool {
    std::fs::read_to_string(log).unwrap_or_default().contains(text)
}

/// `rowhook state` of the stopped run, as text.
fn state(config: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rowhook"))
        .args(["state", "-c", config.to_str().unwrap()])
        .env("RH_OBS_PASSWORD", PASSWORD)
        .env("RH_OBS_TOKEN", TOKEN)
        .env("RH_BOOKS_TOKEN", BOOKS)
        .env("RH_EDGE_TOKEN", EDGE)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A live run of [`config`] on a private server.
struct Run {
    server: Server,
    dir: PathBuf,
    config: PathBuf,
    /// Tenant `books`' directory.
    books: PathBuf,
    log: PathBuf,
    daemon: crate::http::Daemon,
    addr: String,
}

fn start(tag: &str) -> Run {
    let server = server();
    let dir = temp_dir(tag);
    let config = config(&dir, &server);
    let log = dir.join("rowhook.log");
    let (daemon, addr) = spawn(&["run", "-c", config.to_str().unwrap()], &env(), &log);
    Run {
        books: dir.join("tenants/books"),
        server,
        dir,
        config,
        log,
        daemon,
        addr,
    }
}

#[test]
fn a_tenant_directory_deploys_changes_and_removes_handlers_while_running() {
    let Run {
        server,
        dir,
        config,
        books,
        log,
        mut daemon,
        addr,
    } = start("deploy-dir");
    let guests = crate::reload::suite_guests();
    // The directories are made for each tenant, private.
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&books).unwrap().permissions().mode() & 0o777, 0o700);
    insert(&server, 1..4);
    server.sql("INSERT INTO crash.hits VALUES (1, '192.0.2.1')");
    eventually(Duration::from_secs(30), "edge's handler runs", || {
        calls(&addr, "hits") == 1.0
    });
    assert_eq!(lines(&dir), 0, "nobody of books runs yet");

    // Added: it takes the transactions after it was deployed.
    std::fs::copy(guests.join("ledger.wasm"), books.join("copy.wasm")).unwrap();
    let copy =
        "[[handlers]]\nname = \"copy\"\nmodule = \"copy.wasm\"\ntables = [\"crash.ledger\"]\nsinks = [\"out\"]\n";
    std::fs::write(books.join("copy.toml"), copy).unwrap();
    eventually(Duration::from_secs(60), "copy deployed", || {
        log_has(&log, "deployed from")
    });
    insert(&server, 4..6);
    eventually(Duration::from_secs(30), "copy's lines", || lines(&dir) == 2);

    // Refused, with every problem named; nothing running changes.
    let bad = "[[handlers]]\nname = \"peek\"\nmodule = \"../../state/x.wasm\"\ntables = [\"crash.hits\"]\nsinks = [\"out\"]\n\n\
               [[handlers]]\nname = \"hits\"\nmodule = \"copy.wasm\"\ntables = [\"crash.ledger\"]\n";
    std::fs::write(books.join("bad.toml"), bad).unwrap();
    eventually(Duration::from_secs(30), "the refusal", || {
        log_has(&log, "deployment refused")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("handlers[0].module: `../../state/x.wasm` is outside"),
        "{text}"
    );
    std::fs::write(books.join("bad.toml"), bad.replace("../../state/x.wasm", "copy.wasm")).unwrap();
    eventually(Duration::from_secs(30), "the second refusal", || {
        log_has(&log, "`crash.hits` is outside the tables of tenant `books`")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("handler name `hits` is already used by handlers[0]"),
        "{text}"
    );
    assert!(
        !text.contains("handler deployed: it takes the next transaction handler=books/peek"),
        "{text}"
    );

    // A module importing what no handler is given: refused before it compiles.
    std::fs::copy(guests.join("foreign.wasm"), books.join("foreign.wasm")).unwrap();
    let foreign =
        "[[handlers]]\nname = \"dialer\"\nmodule = \"foreign.wasm\"\ntables = [\"crash.ledger\"]\nsinks = [\"out\"]\n";
    std::fs::write(books.join("bad.toml"), foreign).unwrap();
    eventually(Duration::from_secs(30), "the import refused", || {
        log_has(&log, "acme:raw/net")
    });
    // `rowhook check` names the same refusal.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_rowhook"))
        .args(["check", "-c", config.to_str().unwrap()])
        .envs(env())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout).into_owned() + &String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success(), "{report}");
    assert!(
        report.contains("handler `dialer`") && report.contains("acme:raw/net"),
        "{report}"
    );
    // A module whose memory grows on every call, as `rowhook check` finds it.
    std::fs::copy(guests.join("leaky.wasm"), books.join("leaky.wasm")).unwrap();
    let leaky = "[[handlers]]\nname = \"leaky\"\nmodule = \"leaky.wasm\"\ntables = [\"crash.ledger\"]\nlimits = { memory_mb = 8 }\n";
    std::fs::write(books.join("bad.toml"), leaky).unwrap();
    eventually(Duration::from_secs(60), "the leak refused", || {
        log_has(&log, "handlers[0].module: handler `leaky`: 1000 calls")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("reaches memory_mb = 8 after about"), "{text}");
    std::fs::remove_file(books.join("bad.toml")).unwrap();
    insert(&server, 6..7);
    eventually(Duration::from_secs(30), "copy goes on alone", || lines(&dir) == 3);
    assert_eq!(calls(&addr, "dialer") + calls(&addr, "leaky"), 0.0);

    // Changed: its state stays (3 changes counted), and so does its place.
    std::fs::write(
        books.join("copy.toml"),
        copy.replace("sinks", "ops = [\"insert\", \"update\"]\nsinks"),
    )
    .unwrap();
    eventually(Duration::from_secs(30), "copy changed", || {
        log_has(&log, "changed=[\"copy\"]")
    });
    let page = request(
        &addr,
        "GET",
        "/admin/handlers/copy/state",
        &[("Authorization", &format!("Bearer {BOOKS}"))],
    );
    assert_eq!(page.status, 200, "{}", page.body);
    let page: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(page["keys_total"], 4, "{page}");

    // Removed: it takes nothing more, and its state stays in the store.
    std::fs::remove_file(books.join("copy.toml")).unwrap();
    eventually(Duration::from_secs(30), "copy removed", || {
        log_has(&log, "removed=[\"copy\"]")
    });
    insert(&server, 7..9);
    server.sql("INSERT INTO crash.hits VALUES (2, '192.0.2.2')");
    eventually(Duration::from_secs(30), "the stream goes on", || {
        calls(&addr, "hits") == 2.0
    });
    assert_eq!(lines(&dir), 3);
    assert_eq!(interrupt(daemon.take()).code(), Some(0));
    let kept = state(&config);
    assert!(kept.contains("copy"), "{kept}");
    // Deployed again at the next start, with the state it had.
    std::fs::write(books.join("copy.toml"), copy).unwrap();
    let (mut daemon, addr) = spawn(&["run", "-c", config.to_str().unwrap()], &env(), &log);
    insert(&server, 9..10);
    eventually(Duration::from_secs(30), "copy runs again", || lines(&dir) == 4);
    let page = request(
        &addr,
        "GET",
        "/admin/handlers/copy/state",
        &[("Authorization", &format!("Bearer {BOOKS}"))],
    );
    let page: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(page["keys_total"], 4, "{page}");
    assert_eq!(interrupt(daemon.take()).code(), Some(0));
}

/// One request with a binary body.
fn put_bytes(addr: &str, path: &str, token: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

#[test]
fn a_tenant_deploys_through_the_admin_api_and_reaches_only_its_own() {
    let Run {
        server,
        dir,
        config,
        books,
        log,
        mut daemon,
        addr,
    } = start("deploy-admin");
    let guests = crate::reload::suite_guests();
    let call = |method: &str, path: &str, token: &str, body: &str| {
        exchange(
            &addr,
            method,
            path,
            &[("Authorization", &format!("Bearer {token}"))],
            body,
        )
        .unwrap()
    };
    let ledger = std::fs::read(guests.join("ledger.wasm")).unwrap();

    // Books uploads its module, then its config.
    let (status, body) = put_bytes(&addr, "/admin/handlers/copy/module", BOOKS, &ledger);
    assert_eq!(status, 200, "{body}");
    assert!(books.join("copy.wasm").is_file());
    let keys = "tables = [\"crash.ledger\"]\nsinks = [\"out\"]\nstart = \"latest\"\n";
    let r = call("PUT", "/admin/handlers/copy", BOOKS, keys);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        "{\"tenant\":\"books\",\"added\":[\"copy\"],\"changed\":[],\"removed\":[]}"
    );
    assert!(
        std::fs::read_to_string(books.join("copy.toml"))
            .unwrap()
            .contains("tenant = \"books\"")
    );
    insert(&server, 1..3);
    eventually(Duration::from_secs(30), "copy's lines", || lines(&dir) == 2);

    // Edge's token reaches none of it, and learns nothing but that the name is taken.
    for (method, path) in [
        ("PUT", "/admin/handlers/copy"),
        ("DELETE", "/admin/handlers/copy"),
        ("PUT", "/admin/handlers/copy/module"),
        ("GET", "/admin/handlers/copy/state"),
    ] {
        let r = call(method, path, EDGE, keys);
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
        assert_eq!(
            r.body,
            "{\"error\":\"the token of tenant `edge` reaches only its own handlers: hits\"}"
        );
    }
    // Its own deployments are checked against its own tenant.
    let r = call("PUT", "/admin/handlers/peek", EDGE, keys);
    assert_eq!(r.status, 422, "{}", r.body);
    let answer: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let problems = answer["problems"].to_string();
    assert!(
        problems.contains("`crash.ledger` is outside the tables of tenant `edge`"),
        "{problems}"
    );
    assert!(
        problems.contains("sink `out` is neither owned by nor lent to tenant `edge`"),
        "{problems}"
    );
    assert!(
        !dir.join("tenants/edge/peek.toml").exists(),
        "a refused call writes nothing"
    );
    let foreign = std::fs::read(guests.join("foreign.wasm")).unwrap();
    let (status, body) = put_bytes(&addr, "/admin/handlers/dialer/module", EDGE, &foreign);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("acme:raw/net"), "{body}");
    assert!(!dir.join("tenants/edge/dialer.wasm").exists());
    let (status, body) = put_bytes(&addr, "/admin/handlers/junk/module", EDGE, b"not wasm at all");
    assert_eq!(status, 422, "{body}");

    // The operator names the tenant of a new handler.
    let r = call("PUT", "/admin/handlers/other", TOKEN, keys);
    assert_eq!(r.status, 400, "{}", r.body);

    // Books removes it: nothing more reaches it; its state stays.
    let r = call("DELETE", "/admin/handlers/copy", BOOKS, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"removed\":[\"copy\"]"), "{}", r.body);
    assert!(!books.join("copy.toml").exists() && !books.join("copy.wasm").exists());
    let r = call("DELETE", "/admin/handlers/copy", BOOKS, "");
    assert_eq!(r.status, 404, "deployed no more: {}", r.body);
    insert(&server, 3..5);
    server.sql("INSERT INTO crash.hits VALUES (1, '192.0.2.1')");
    eventually(Duration::from_secs(30), "the stream goes on", || {
        calls(&addr, "hits") == 1.0
    });
    assert_eq!(lines(&dir), 2);
    assert_eq!(interrupt(daemon.take()).code(), Some(0));
    let kept = state(&config);
    assert!(kept.contains("copy"), "{kept}");
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [BOOKS, EDGE, TOKEN, PASSWORD] {
        assert!(!text.contains(secret), "{text}");
    }
}
