//! Tenants' lanes: a tenant whose handler halts stops alone, keeps its own
//! position, and catches up from it (after a restart, while the others
//! skip what they already have; while running, on a connection of its
//! own); a tenant past its CPU share reads on a connection of its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::http::{PASSWORD, TOKEN, eventually, get, metric, request, server, spawn};
use crate::support::{Server, interrupt, temp_dir};

/// Tenant `books` runs `ledger` on `crash.ledger`, tenant `edge` runs
/// `edge` (the module `edge.wasm` beside the config) on `crash.hits`; both
/// halt on a failure, and both write to the lent sink `out`.
fn config(dir: &Path, server: &Server) -> PathBuf {
    config_with(dir, server, "", "")
}

/// [`config`], with `sinks` added and `edge` the text of edge's tenant
/// and handler, if not empty.
fn config_with(dir: &Path, server: &Server, sinks: &str, edge: &str) -> PathBuf {
    let guests = crate::reload::suite_guests();
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
{head}
[sinks.out]
kind = "file"
path = "out.log"

[tenants.books]
tables = ["crash.ledger"]
lent = ["out"]

{sinks}

[[handlers]]
name = "ledger"
tenant = "books"
module = "{ledger}"
tables = ["crash.ledger"]
sinks = ["out"]
on_error = "halt"

{edge}
"#,
            head = crate::http::live_head(server, 7613),
            ledger = guests.join("ledger.wasm").display(),
            edge = if edge.is_empty() { EDGE } else { edge },
        ),
    )
    .unwrap();
    config
}

/// Tenant `edge` and its handler, `edge.wasm` on `crash.hits` into `out`.
const EDGE: &str = r#"
[tenants.edge]
tables = ["crash.hits"]
lent = ["out"]

[[handlers]]
name = "edge"
tenant = "edge"
module = "edge.wasm"
tables = ["crash.hits"]
sinks = ["out"]
on_error = "halt"
"#;

/// [`config`] with tenant `edge` sending each new hit (the minimal
/// example's `{"order":ID}`) to the FIFO sink `orders_queue` (`queue.fifo`,
/// with `retry`), under `on_error`; `breaker` is the tenant's, if any.
fn fifo_edge(dir: &Path, server: &Server, retry: &str, breaker: &str, on_error: &str) -> PathBuf {
    let minimal = crate::support::build_guest(&crate::support::root().join("guest-sdk/examples/minimal"), "minimal");
    config_with(
        dir,
        server,
        &format!("[sinks.orders_queue]\nkind = \"fifo\"\npath = \"queue.fifo\"\n{retry}"),
        &format!(
            r#"
[tenants.edge]
tables = ["crash.hits"]
sinks = ["orders_queue"]
{breaker}

[[handlers]]
name = "edge"
tenant = "edge"
module = "{}"
tables = ["crash.hits"]
sinks = ["orders_queue"]
on_error = "{on_error}"
"#,
            minimal.display()
        ),
    )
}

/// A run of [`config`] in a fresh directory (`tag`) on a private server,
/// with edge's first version reading a column `crash.hits` does not have:
/// it fails on the first hit, and its tenant's lane halts. The server, the
/// directory, the config, the log, the run and its HTTP address.
fn start_broken_edge(tag: &str) -> (Server, PathBuf, PathBuf, PathBuf, crate::http::Daemon, String) {
    let server = server();
    let dir = temp_dir(tag);
    let guests = crate::reload::suite_guests();
    std::fs::copy(guests.join("ledger.wasm"), dir.join("edge.wasm")).unwrap();
    let config = config(&dir, &server);
    let log = dir.join("rowhook.log");
    let (daemon, addr) = spawn(&["run", "-c", config.to_str().unwrap()], &ENV, &log);
    (server, dir, config, log, daemon, addr)
}

/// The environment of the runs: the source's password and the admin token.
const ENV: [(&str, &str); 2] = [("RH_OBS_PASSWORD", PASSWORD), ("RH_OBS_TOKEN", TOKEN)];

/// Books takes a first row; then a hit makes edge's lane halt.
fn halt_edge(server: &Server, dir: &Path, log: &Path) {
    server.sql("INSERT INTO crash.ledger VALUES (1, 1, 1)");
    eventually(Duration::from_secs(30), "books' first row", || out(dir).0.len() == 1);
    server.sql("INSERT INTO crash.hits VALUES (1, '192.0.2.1')");
    eventually(Duration::from_secs(30), "edge's lane halts", || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("the tenant's lane halted")
    });
}

/// The lines of `out.log`: the ledger's (`<id> <ledger id> <k>`) and the
/// echoed hits (JSON).
fn out(dir: &Path) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(dir.join("out.log")).unwrap_or_default();
    let (hits, ledger): (Vec<String>, Vec<String>) = text.lines().map(str::to_owned).partition(|l| l.starts_with('{'));
    (ledger, hits)
}

#[test]
fn a_tenant_that_halts_stops_alone_and_catches_up_after_a_restart() {
    let (server, dir, config, log, mut daemon, addr) = start_broken_edge("lanes-halt");
    let guests = crate::reload::suite_guests();
    let env = ENV;
    let ledger = |from: u32, to: u32| {
        for id in from..to {
            server.sql(&format!("INSERT INTO crash.ledger VALUES ({id}, {}, 1)", id % 3));
        }
    };
    let hits = |from: u32, to: u32| {
        for id in from..to {
            server.sql(&format!("INSERT INTO crash.hits VALUES ({id}, '192.0.2.{id}')"));
        }
    };
    ledger(1, 3);
    eventually(Duration::from_secs(30), "books' first rows", || out(&dir).0.len() == 2);
    hits(1, 2);
    eventually(Duration::from_secs(30), "edge's lane halts", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("the tenant's lane halted")
    });
    // Books goes on; edge takes nothing more.
    ledger(3, 6);
    hits(2, 4);
    eventually(Duration::from_secs(30), "books' rows after the halt", || {
        out(&dir).0.len() == 5
    });
    let metrics = get(&addr, "/metrics").body;
    assert_eq!(
        metric(&metrics, "rowhook_handler_halted", "handler=\"edge\""),
        1.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "rowhook_handler_halted", "handler=\"ledger\""), 0.0);
    assert_eq!(
        metric(&metrics, "rowhook_handler_calls_total", "handler=\"edge\""),
        1.0,
        "the one failed call"
    );
    assert!(out(&dir).1.is_empty());
    let ready = get(&addr, "/readyz");
    assert_eq!(ready.status, 503, "a halted handler is a reason: {}", ready.body);
    assert_eq!(interrupt(daemon.take()).code(), Some(0));
    let state = std::process::Command::new(env!("CARGO_BIN_EXE_rowhook"))
        .args(["state", "-c", config.to_str().unwrap()])
        .envs(env)
        .output()
        .unwrap();
    let state = String::from_utf8_lossy(&state.stdout).into_owned();
    assert!(state.contains("lanes         books at mysql-bin."), "{state}");

    // Fixed: edge's new version echoes each hit. After the restart its
    // lane takes every hit from its own position; books takes nothing twice.
    std::fs::copy(guests.join("echo.wasm"), dir.join("edge.wasm")).unwrap();
    let (mut daemon, _addr) = spawn(&["run", "-c", config.to_str().unwrap()], &env, &log);
    eventually(Duration::from_secs(30), "edge catches up", || out(&dir).1.len() == 3);
    ledger(6, 7);
    hits(4, 5);
    eventually(Duration::from_secs(30), "both go on", || {
        let (l, h) = out(&dir);
        l.len() == 6 && h.len() == 4
    });
    let (ledger_lines, hit_lines) = out(&dir);
    let ids: Vec<String> = ledger_lines
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5", "6"], "each ledger row once, in order");
    for (i, line) in hit_lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["after"]["id"], i + 1, "{line}");
    }
    assert_eq!(interrupt(daemon.take()).code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("the tenant's lane is past where the stream resumes"),
        "{text}"
    );
}

#[test]
fn a_tenant_whose_sink_stays_down_halts_alone_and_catches_up_when_resumed() {
    let server = server();
    let dir = temp_dir("lanes-sink");
    // Edge sends each new hit to a FIFO nobody reads: its sink refuses
    // after one retry, and under `halt` its lane stops.
    let config = fifo_edge(&dir, &server, "retries = 1\nretry_max_ms = 50", "", "halt");
    let log = dir.join("rowhook.log");
    let env = ENV;
    let (mut daemon, addr) = spawn(&["run", "-c", config.to_str().unwrap()], &env, &log);
    halt_edge(&server, &dir, &log);
    for id in 2..5 {
        server.sql(&format!("INSERT INTO crash.ledger VALUES ({id}, 1, 1)"));
    }
    server.sql("INSERT INTO crash.hits VALUES (2, '192.0.2.2')");
    eventually(Duration::from_secs(30), "books goes on", || out(&dir).0.len() == 4);

    // The sink is back (a reader on the FIFO) and the team resumes its
    // handler: edge's lane catches up while rowhook runs.
    let reader = crate::delivery::Reader::start(dir.join("queue.fifo"));
    let resumed = request(
        &addr,
        "POST",
        "/admin/handlers/edge/resume",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    reader.wait_for(2, Duration::from_secs(30));
    server.sql("INSERT INTO crash.ledger VALUES (5, 1, 1)");
    server.sql("INSERT INTO crash.hits VALUES (3, '192.0.2.3')");
    eventually(Duration::from_secs(30), "books' new row", || out(&dir).0.len() == 5);
    reader.wait_for(3, Duration::from_secs(30));
    assert_eq!(get(&addr, "/readyz").status, 200, "no handler halted any more");
    assert_eq!(interrupt(daemon.take()).code(), Some(0));
    assert_eq!(reader.finish(), ["{\"order\":1}", "{\"order\":2}", "{\"order\":3}"]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("the tenant's lane resumes"), "{text}");
    let ids: Vec<String> = out(&dir)
        .0
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5"], "each ledger row once");
}

#[test]
fn a_halted_lane_catches_up_while_running_once_its_module_is_fixed() {
    let (server, dir, config, log, mut daemon, addr) = start_broken_edge("lanes-reload");
    let guests = crate::reload::suite_guests();
    let env = ENV;
    halt_edge(&server, &dir, &log);
    for id in 2..5 {
        server.sql(&format!("INSERT INTO crash.ledger VALUES ({id}, 1, 1)"));
        server.sql(&format!("INSERT INTO crash.hits VALUES ({id}, '192.0.2.{id}')"));
    }
    eventually(Duration::from_secs(30), "books goes on", || out(&dir).0.len() == 4);

    // A fixed version, written beside and renamed over the module: the
    // reload lets edge's lane go on from its position.
    let tmp = dir.join("edge.wasm.tmp");
    std::fs::copy(guests.join("echo.wasm"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("edge.wasm")).unwrap();
    eventually(Duration::from_secs(30), "edge catches up", || out(&dir).1.len() == 4);
    server.sql("INSERT INTO crash.ledger VALUES (5, 1, 1)");
    server.sql("INSERT INTO crash.hits VALUES (5, '192.0.2.5')");
    eventually(Duration::from_secs(30), "both go on", || {
        let (l, h) = out(&dir);
        l.len() == 5 && h.len() == 5
    });
    let metrics = get(&addr, "/metrics").body;
    assert_eq!(metric(&metrics, "rowhook_handler_halted", ""), 0.0, "{metrics}");
    assert_eq!(interrupt(daemon.take()).code(), Some(0));
    let (ledger_lines, hit_lines) = out(&dir);
    let ids: Vec<String> = ledger_lines
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5"], "each ledger row once, in order");
    for (i, line) in hit_lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["after"]["id"], i + 1, "{line}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("the tenant's lane resumes"), "{text}");
    assert!(
        text.contains("catches up from its position on a connection of its own"),
        "{text}"
    );
    assert!(text.contains("the tenant's lane caught up"), "{text}");
    // A restart finds every lane together: nothing again for anyone.
    let (mut daemon, _addr) = spawn(&["run", "-c", config.to_str().unwrap()], &env, &log);
    server.sql("INSERT INTO crash.ledger VALUES (6, 1, 1)");
    eventually(Duration::from_secs(30), "after the restart", || out(&dir).0.len() == 6);
    assert_eq!(interrupt(daemon.take()).code(), Some(0));
    assert_eq!(out(&dir).1.len(), 5);
}

#[test]
fn a_tenant_whose_sink_stays_down_is_suspended_as_a_whole_and_the_others_stop_waiting() {
    let server = server();
    let dir = temp_dir("lanes-sink-breaker");
    // Edge's FIFO has no reader; each batch is refused after three retries
    // (a third of a second), and edge skips what is refused. Its tenant's
    // breaker opens after two refusals.
    let config = fifo_edge(
        &dir,
        &server,
        "retries = 3\nretry_max_ms = 500",
        // A whole core: the breaker, not the tenant's share, takes it out.
        "breaker = { failures = 2, window_ms = 60000, cooldown_ms = 600000 }\ncpu_percent = 100",
        "skip",
    );
    let log = dir.join("rowhook.log");
    let env = ENV;
    let (mut daemon, addr) = spawn(&["run", "-c", config.to_str().unwrap()], &env, &log);
    for id in 1..11 {
        server.sql(&format!("INSERT INTO crash.hits VALUES ({id}, '192.0.2.{id}')"));
        server.sql(&format!("INSERT INTO crash.ledger VALUES ({id}, 1, 1)"));
    }
    eventually(Duration::from_secs(60), "books takes every row", || {
        out(&dir).0.len() == 10
    });
    let metrics = get(&addr, "/metrics").body;
    assert_eq!(
        metric(&metrics, "rowhook_tenant_suspended", "tenant=\"edge\""),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "rowhook_tenant_suspensions_total", "tenant=\"edge\""),
        1.0
    );
    // Two batches were refused (and retried); the other eight changes of
    // edge were not called at all, so nobody waited on the FIFO for them.
    assert_eq!(
        metric(&metrics, "rowhook_sink_messages_total", "result=\"refused\""),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "rowhook_handler_suspended_total", "handler=\"edge\""),
        8.0
    );
    assert_eq!(interrupt(daemon.take()).code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("the last sink `orders_queue` refusing its messages"),
        "{text}"
    );
}

/// The binlog dump connections the server has open.
fn dump_connections(server: &Server) -> usize {
    (server.sql("SHOW PROCESSLIST").lines())
        .filter(|l| l.contains("Binlog Dump"))
        .count()
}

#[test]
fn a_tenant_past_its_share_reads_on_its_own_connection_and_rejoins_once_caught_up() {
    let server = server();
    let dir = temp_dir("lanes-apart");
    let guests = crate::reload::suite_guests();
    // Edge's handler spins to its 20 ms deadline on every hit (skipped,
    // with no breaker to stop it); its share is 40% of a core.
    std::fs::copy(guests.join("spinner.wasm"), dir.join("edge.wasm")).unwrap();
    let edge = r#"
[tenants.edge]
tables = ["crash.hits"]
cpu_percent = 40

[[handlers]]
name = "edge"
tenant = "edge"
module = "edge.wasm"
tables = ["crash.hits"]
on_error = "skip"
limits = { time_ms = 20 }
breaker = { failures = 0 }
"#;
    let config = config_with(&dir, &server, "[deploy]\ndir = \"tenants\"\n", edge);
    let log = dir.join("rowhook.log");
    let env = ENV;
    let (mut daemon, addr) = spawn(&["run", "-c", config.to_str().unwrap()], &env, &log);
    server.sql("INSERT INTO crash.ledger VALUES (1, 1, 1)");
    eventually(Duration::from_secs(30), "books' first row", || out(&dir).0.len() == 1);
    assert_eq!(dump_connections(&server), 1);
    // A backlog: 150 hits (3 s of edge's calls) between 150 ledger rows.
    let burst: String = (2..152)
        .map(|id| {
            format!("INSERT INTO crash.hits VALUES ({id}, '192.0.2.1'); INSERT INTO crash.ledger VALUES ({id}, 1, 1);")
        })
        .collect();
    server.sql(&burst);
    // Books does not wait for edge: it has every row while edge, on its
    // own connection, is still far from done.
    eventually(Duration::from_secs(30), "books' rows", || out(&dir).0.len() == 151);
    let calls = |addr: &str| {
        metric(
            &get(addr, "/metrics").body,
            "rowhook_handler_calls_total",
            "handler=\"edge\"",
        )
    };
    let edge_calls = calls(&addr);
    assert!(
        edge_calls < 120.0,
        "edge took {edge_calls} calls by the time books was done"
    );
    assert_eq!(dump_connections(&server), 2, "edge's lane reads on a second connection");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("its lane reads on a connection of its own"), "{text}");
    let status = std::fs::read_to_string(dir.join("state/status.json")).unwrap();
    assert!(status.contains("\"lanes_apart\""), "{status}");
    // Edge's team deploys a second handler meanwhile: the lane stops where
    // it is, takes it, and goes on on its own connection.
    let deployed = dir.join("tenants/edge");
    std::fs::copy(guests.join("trivial.wasm"), deployed.join("count.wasm")).unwrap();
    std::fs::write(
        deployed.join("count.toml"),
        "[[handlers]]\nname = \"count\"\nmodule = \"count.wasm\"\ntables = [\"crash.hits\"]\n",
    )
    .unwrap();
    eventually(Duration::from_secs(30), "the deployment", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("the tenant's lane stops on its own connection for a deployment")
    });
    let counted = |addr: &str| {
        metric(
            &get(addr, "/metrics").body,
            "rowhook_handler_calls_total",
            "handler=\"count\"",
        )
    };
    // Edge catches up and rejoins: one connection again, each hit called once.
    eventually(Duration::from_secs(60), "edge rejoins", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("the tenant's lane caught up")
    });
    // Each hit once, but for the call during which edge went past its
    // share, when that fell inside a transaction (its lane left from
    // before it, and took it again), and the one the deployment stopped.
    let after = calls(&addr);
    assert!((150.0..=152.0).contains(&after), "{after} calls for 150 hits");
    assert!(
        counted(&addr) > 0.0,
        "the deployed handler took the hits after the lane's position"
    );
    eventually(Duration::from_secs(10), "one dump connection", || {
        dump_connections(&server) == 1
    });
    // Back with the others, both take what comes next.
    server.sql("INSERT INTO crash.hits VALUES (200, '192.0.2.1'); INSERT INTO crash.ledger VALUES (200, 1, 1);");
    let count_before = counted(&addr);
    eventually(Duration::from_secs(30), "both go on", || {
        out(&dir).0.len() == 152 && calls(&addr) == after + 1.0 && counted(&addr) == count_before + 1.0
    });
    assert_eq!(interrupt(daemon.take()).code(), Some(0));
    let ids: Vec<u32> = (out(&dir).0.iter())
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    let expected: Vec<u32> = (1..152).chain([200]).collect();
    assert_eq!(ids, expected, "each ledger row once, in order");
}
