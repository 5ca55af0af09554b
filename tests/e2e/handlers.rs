//! Handlers: WebAssembly components built from source by the test, run by
//! `rowhook replay` over the recorded shop binlog, with real sinks.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::{build_guest, root, rowhook, rowhook_ok, temp_dir};

fn guests() -> &'static (PathBuf, PathBuf) {
    static G: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    G.get_or_init(|| {
        (
            build_guest(&root().join("guest-sdk/examples/minimal"), "minimal"),
            build_guest(&root().join("tests/guests"), "hostile"),
        )
    })
}

fn replay(config: &Path) -> std::process::Output {
    let binlog = root().join("examples/binlog/shop-bin.000001");
    rowhook(&["replay", "-c", config.to_str().unwrap(), binlog.to_str().unwrap()])
}

/// The example config, exactly as the README runs it.
#[test]
fn example_config_replays_as_documented() {
    guests();
    let config = root().join("examples/minimal.toml");
    let out = replay(&config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"order\":1001}\n{\"order\":1002}\n{\"order\":1003}\n"
    );
}

#[test]
fn minimal_handler_emits_new_orders() {
    let (minimal, _) = guests();
    let dir = temp_dir("handlers-minimal");
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[sinks.orders_queue]
kind = "file"
path = "orders.jsonl"

[[handlers]]
name = "orders"
module = "{}"
tables = ["shop.orders"]
ops = ["insert"]
sinks = ["orders_queue"]
"#,
            minimal.display()
        ),
    )
    .unwrap();
    let out = replay(&config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = std::fs::read_to_string(dir.join("orders.jsonl")).unwrap();
    assert_eq!(lines, "{\"order\":1001}\n{\"order\":1002}\n{\"order\":1003}\n");
}

/// A config in `dir` running the hostile handler `module` on every shop
/// table under `limits`, dead-lettering each failing event to
/// `dead.jsonl`, beside the minimal handler writing new orders to
/// `orders.jsonl`; `secret.jsonl` is a sink the hostile one is not granted.
fn hostile_config(dir: &Path, module: &Path, minimal: &Path, limits: &str) -> PathBuf {
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[sinks.out]
kind = "file"
path = "hostile.jsonl"

[sinks.secret]
kind = "file"
path = "secret.jsonl"

[sinks.orders_queue]
kind = "file"
path = "orders.jsonl"

[sinks.dead]
kind = "file"
path = "dead.jsonl"

[[handlers]]
name = "hostile"
module = "{module}"
tables = ["shop.*"]
sinks = ["out"]
limits = {{ {limits} }}
on_error = "dead-letter"
# Each failing event's policy is what these tests check; suspending the
# handler after repeated failures is tested in limits.rs.
breaker = {{ failures = 0 }}
dead_letter = "dead"

[[handlers]]
name = "orders"
module = "{minimal}"
tables = ["shop.orders"]
ops = ["insert"]
sinks = ["orders_queue"]
"#,
            module = module.display(),
            minimal = minimal.display()
        ),
    )
    .unwrap();
    config
}

/// Each kind of misbehaviour is contained under `skip`, and a well-behaved
/// handler beside the hostile one keeps its output intact.
#[test]
fn hostile_handler_is_contained() {
    let (minimal, hostile) = guests();
    let dir = temp_dir("handlers-hostile");
    let config = hostile_config(
        &dir,
        hostile,
        minimal,
        "memory_mb = 16, time_ms = 50, emits_per_event = 9",
    );
    let out = replay(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The well-behaved handler is untouched.
    assert_eq!(
        std::fs::read_to_string(dir.join("orders.jsonl")).unwrap(),
        "{\"order\":1001}\n{\"order\":1002}\n{\"order\":1003}\n"
    );
    // Nothing reached the ungranted sink; the denial came back as a value.
    assert_eq!(
        std::fs::read_to_string(dir.join("secret.jsonl")).unwrap_or_default(),
        ""
    );
    // Per sms_outbox row: the denial, the same sink spelled eight other
    // ways (each denied), the refused newline, the one payload
    // with a control character a line sink takes (a tab), the refused
    // carriage return, NUL, terminal escape, C1 control and non-UTF-8
    // bytes, then what the sandbox shows of the filesystem (nothing
    // opened), the environment (empty), the clock (frozen at the epoch)
    // and another handler's state keys (nothing).
    let hostile_out = std::fs::read_to_string(dir.join("hostile.jsonl")).unwrap();
    let lines: Vec<&str> = hostile_out.lines().collect();
    assert_eq!(lines.len(), 18, "nine lines per sms_outbox row: {hostile_out}");
    for row in lines.chunks(9) {
        assert!(row[0].starts_with("denied:"), "{hostile_out}");
        assert_eq!(row[1], format!("variants:{}", " Denied".repeat(8)), "{hostile_out}");
        assert!(
            row[2].starts_with("newline: ") && row[2].contains("payload not valid"),
            "{hostile_out}"
        );
        assert_eq!(row[3], "tab\tis fine");
        assert_eq!(row[4], "controls: Invalid Invalid Invalid Invalid Invalid taken");
        assert!(
            row[5].starts_with("fs: Err(") && row[5].contains(") Err("),
            "{hostile_out}"
        );
        assert!(!row[5].contains("Ok("), "{hostile_out}");
        assert_eq!(row[6], "env: []");
        assert_eq!(row[7], "clock: Ok(0)");
        // `orders` counted 1001..1003 under "orders": none of it is seen.
        assert_eq!(row[8], format!("state:{}", " none".repeat(8)), "{hostile_out}");
    }
    // The file is UTF-8 text, one line per message, no control but tab.
    assert!(
        hostile_out
            .bytes()
            .all(|b| b == b'\n' || b == b'\t' || !(b < 0x20 || b == 0x7f)),
        "{hostile_out:?}"
    );
    // Every other event of the hostile handler went to the dead-letter sink
    // with its error: loops, traps, quota, memory.
    let dead = std::fs::read_to_string(dir.join("dead.jsonl")).unwrap();
    let dead: Vec<serde_json::Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let errors = |table: &str| -> Vec<String> {
        dead.iter()
            .filter(|d| d["change"]["table"] == table)
            .map(|d| d["error"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        !errors("news").is_empty() && errors("news").iter().all(|e| e.contains("time limit")),
        "{:?}",
        errors("news")
    );
    // A panic's message reaches the record: what the guest wrote to stderr
    // before it trapped.
    assert!(
        !errors("hits").is_empty()
            && errors("hits").iter().all(|e| e.contains("trapped")
                && e.contains("stderr: ")
                && e.contains("hostile handler panics on purpose")),
        "{:?}",
        errors("hits")
    );
    assert!(
        errors("user_info").iter().all(|e| e.contains("emit quota")),
        "{:?}",
        errors("user_info")
    );
    assert_eq!(errors("user_info").len(), 4);
    assert!(
        !errors("orders").is_empty()
            && errors("orders")
                .iter()
                .all(|e| e.contains("trapped") && e.contains("limits.memory_mb = 16 MiB")),
        "{:?}",
        errors("orders")
    );
    // The panic message went to the log too, under the handler's name.
    assert!(
        stderr.contains("hostile handler panics on purpose") && stderr.contains("(\"stream\", \"stderr\")"),
        "{stderr}"
    );
    assert!(dead.iter().all(|d| d["handler"] == "hostile"));
}

/// A handler that sleeps, waits on WASI pollables, reads stdin or spins
/// holds rowhook no longer than its deadline: a sleep of any length (5 s,
/// u64::MAX ns) returns at once on the frozen clock, a loop (of sleeps
/// waiting for the clock to move, or of plain work) ends at the deadline
/// plus a little, the handler's `on_error` applies to each such event, and
/// the well-behaved handler beside it is untouched. Replayed at two time
/// limits: the difference in wall time is what the limits differ by, per
/// looping call, give or take a slack; the sleeps cost nothing.
#[test]
fn sleeping_handlers_keep_their_deadline() {
    let (minimal, _) = guests();
    let sleeper = build_guest(&root().join("tests/guests"), "sleeper");
    let dir = temp_dir("handlers-sleeper");
    // user_info (4 rows) waits for the clock, orders (7 rows) spins.
    const LOOPING: u32 = 11;
    let run = |time_ms: u64, on_error: &str| -> (Duration, String) {
        for f in ["out.jsonl", "dead.jsonl", "orders.jsonl"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        let config = dir.join(format!("{time_ms}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"
[sinks.out]
kind = "file"
path = "out.jsonl"

[sinks.dead]
kind = "file"
path = "dead.jsonl"

[sinks.orders_queue]
kind = "file"
path = "orders.jsonl"

[[handlers]]
name = "sleeper"
module = "{sleeper}"
tables = ["shop.*"]
sinks = ["out"]
limits = {{ time_ms = {time_ms} }}
# Every looping call must reach its deadline: no suspension.
breaker = {{ failures = 0 }}
{on_error}

[[handlers]]
name = "orders"
module = "{minimal}"
tables = ["shop.orders"]
ops = ["insert"]
sinks = ["orders_queue"]
"#,
                sleeper = sleeper.display(),
                minimal = minimal.display()
            ),
        )
        .unwrap();
        let started = Instant::now();
        let out = replay(&config);
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        // The neighbour's output is complete and exact.
        assert_eq!(
            std::fs::read_to_string(dir.join("orders.jsonl")).unwrap(),
            "{\"order\":1001}\n{\"order\":1002}\n{\"order\":1003}\n"
        );
        // Every sleep returned, every blocking stdio call came back.
        let out = std::fs::read_to_string(dir.join("out.jsonl")).unwrap();
        let count = |line: &str| out.lines().filter(|l| *l == line).count();
        assert_eq!(count("news: woke"), 4, "{out}");
        assert_eq!(count("hits: woke [0]"), 6, "{out}");
        assert_eq!(count("stdio: Ok(0) Ok(())"), 2, "{out}");
        assert_eq!(out.lines().count(), 12, "the clock never moved: {out}");
        (took, stderr)
    };

    let (fast, _) = run(100, "on_error = \"dead-letter\"\ndead_letter = \"dead\"");
    let dead = std::fs::read_to_string(dir.join("dead.jsonl")).unwrap();
    let dead: Vec<serde_json::Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(dead.len(), LOOPING as usize, "{dead:?}");
    for d in &dead {
        assert_eq!(d["handler"], "sleeper");
        assert_eq!(d["error"], "handler exceeded its time limit of 100 ms", "{d}");
        assert!(
            ["user_info", "orders"].contains(&d["change"]["table"].as_str().unwrap()),
            "{d}"
        );
    }

    let (slow, log) = run(300, "on_error = \"skip\"");
    let skipped = log
        .lines()
        .filter(|l| l.contains("handler failed, event skipped") && l.contains("time limit of 300 ms"))
        .count();
    assert_eq!(skipped, LOOPING as usize, "{log}");
    assert_eq!(std::fs::read_to_string(dir.join("dead.jsonl")).unwrap_or_default(), "");

    eprintln!(
        "replay with time_ms = 100: {fast:?}; with time_ms = 300: {slow:?}; {LOOPING} calls end at their deadline"
    );
    // Each looping call lasts its limit: 200 ms more each at 300 ms…
    assert!(slow >= Duration::from_millis(300) * LOOPING, "{slow:?}");
    assert!(
        slow.saturating_sub(fast) < Duration::from_millis(200 + 200) * LOOPING,
        "{fast:?} then {slow:?}"
    );
    // …and nothing else waits: the four 5 s sleeps alone took 20 s before.
    assert!(
        fast < Duration::from_millis(100 + 200) * LOOPING + Duration::from_secs(5),
        "{fast:?}"
    );
}

#[test]
fn halt_stops_and_malformed_modules_are_refused() {
    let (_, hostile) = guests();
    let dir = temp_dir("handlers-halt");
    let write = |module: &str, on_error: &str| {
        let config = dir.join("rowhook.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[sinks.out]
kind = "file"
path = "out.jsonl"

[[handlers]]
name = "hostile"
module = "{module}"
tables = ["shop.hits"]
sinks = ["out"]
on_error = "{on_error}"
"#
            ),
        )
        .unwrap();
        config
    };
    let out = replay(&write(&hostile.display().to_string(), "halt"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("handler `hostile` failed") && stderr.contains("halting"),
        "{stderr}"
    );

    let bad = dir.join("bad.wasm");
    std::fs::write(&bad, b"\0asm\x01\0\0\0garbage").unwrap();
    let out = replay(&write(&bad.display().to_string(), "skip"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("is not a valid WebAssembly component"), "{stderr}");
}

/// A sink that refuses for good (stdout with its reader gone) applies the
/// `on_error` of the handler whose messages it refused: dead letters carry
/// the message and the error, `halt` stops with the reason.
#[test]
fn a_failing_sink_applies_the_handlers_policy() {
    let minimal = build_guest(&root().join("guest-sdk/examples/minimal"), "minimal");
    let dir = temp_dir("handlers-sink-fails");
    let write = |on_error: &str| {
        let config = dir.join(format!("{on_error}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"
[sinks.orders_queue]
kind = "stdout"

[sinks.dead]
kind = "file"
path = "dead.jsonl"

[[handlers]]
name = "orders"
module = "{}"
tables = ["shop.orders"]
ops = ["insert"]
sinks = ["orders_queue"]
on_error = "{on_error}"
dead_letter = "dead"
"#,
                minimal.display()
            )
            .replace(
                "dead_letter = \"dead\"\n",
                if on_error == "dead-letter" {
                    "dead_letter = \"dead\"\n"
                } else {
                    ""
                },
            ),
        )
        .unwrap();
        config
    };
    // rowhook's standard output is a pipe nobody reads.
    let run = |config: &Path| {
        let binlog = root().join("examples/binlog/shop-bin.000001");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rowhook"))
            .args(["replay", "-c"])
            .arg(config)
            .arg(&binlog)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        child.wait_with_output().unwrap()
    };
    let out = run(&write("dead-letter"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dead = std::fs::read_to_string(dir.join("dead.jsonl")).unwrap();
    let dead: Vec<serde_json::Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(dead.len(), 3, "{dead:?}");
    for (d, order) in dead.iter().zip([1001, 1002, 1003]) {
        assert_eq!(d["handler"], "orders");
        assert_eq!(d["sink"], "orders_queue");
        assert_eq!(d["payload"], format!("{{\"order\":{order}}}"));
        assert!(d["id"].as_str().unwrap().starts_with("0-1-"), "{d}");
        assert!(d["error"].as_str().unwrap().contains("orders_queue"), "{d}");
    }
    let out = run(&write("halt"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("sink `orders_queue` refused a message of handler `orders`") && stderr.contains("halting"),
        "{stderr}"
    );
}

/// What a handler's `metrics` calls write reaches `rowhook state` labelled
/// with its tenant and name; the writes of a failed call are dropped, calls
/// with invalid names ignored and counted, and log lines past the per-call
/// cap dropped and counted.
#[test]
fn handler_metrics_are_exposed_and_drops_counted() {
    let telemetry = build_guest(&root().join("tests/guests"), "telemetry");
    let dir = temp_dir("handlers-metrics");
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[state]
path = "state"

[sinks.out]
kind = "file"
path = "out.jsonl"

[[handlers]]
name = "counted"
tenant = "shop"
module = "{}"
tables = ["shop.orders"]
sinks = ["out"]
limits = {{ time_ms = 5000 }}
on_error = "skip"
"#,
            telemetry.display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let binlog = root().join("examples/binlog/shop-bin.000001");
    let out = crate::support::rowhook(&["replay", "--checkpoint", "-c", config, binlog.to_str().unwrap()]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    // What the guest writes stays on its own log line, escaped: no forged
    // line, no terminal escape; a guest warning shows at WARN.
    assert!(!log.lines().any(|l| l.starts_with("2099")), "forged line: {log}");
    assert!(!log.contains('\u{1b}') && !log.contains('\r'), "{log}");
    assert_eq!(
        log.matches("\\n2099-01-01T00:00:00Z ERROR rowhook: forged by a guest")
            .count(),
        3,
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("deleted\\r\\n2099")
            && l.contains("\\u{1b}[2J")
            && l.contains("handler=counted")),
        "{log}"
    );
    assert!(log.contains(r#"field\\nname"#), "{log}");

    let report: serde_json::Value = serde_json::from_str(&rowhook_ok(&["state", "-c", config, "--json"])).unwrap();
    // shop.orders: three inserts, three updates (which fail), one delete.
    assert_eq!(report["stats"]["changes"], 7, "{report:#}");
    assert_eq!(report["stats"]["calls"], 7, "{report:#}");
    assert_eq!(report["stats"]["handler_errors"], 3, "{report:#}");
    let h = &report["handler_metrics"][0];
    assert_eq!(
        (&h["tenant"], &h["name"]),
        (&"shop".into(), &"counted".into()),
        "{report:#}"
    );
    assert_eq!(h["calls"], 7, "{report:#}");
    assert_eq!(h["errors"], 3, "{report:#}");
    assert_eq!(h["log_lines_dropped"], 6, "two per insert: {report:#}");
    assert_eq!(h["metric_calls_ignored"], 2, "`bad-name` and `9lives`: {report:#}");
    assert_eq!(
        h["counters"],
        serde_json::json!({"orders_seen": 3}),
        "no `leaked`: {report:#}"
    );
    assert_eq!(h["gauges"], serde_json::json!({"last_order_id": 1003.0}), "{report:#}");
    assert!(report["metrics_written_at"].as_u64().is_some(), "{report:#}");

    let text = rowhook_ok(&["state", "-c", config]);
    assert!(
        text.contains("handler       shop/counted: 7 calls, 3 errors, 6 log lines dropped, 2 metric calls ignored"),
        "{text}"
    );
    assert!(text.contains("metrics: orders_seen=3, last_order_id=1003"), "{text}");
}

/// What a handler draws from `wasi:random` is the same on every replay and
/// differs between handlers: the generators are seeded from the handler's
/// name and the change's id, so does a fresh `HashMap`'s hasher.
#[test]
fn randomness_replays_and_differs_between_handlers() {
    let dice = crate::reload::suite_guests().join("dice.wasm");
    let dir = temp_dir("handlers-random");
    // Handler `name` over the shop binlog: the lines it emitted.
    let run = |name: &str| {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"
[sinks.out]
kind = "file"
path = "{name}.jsonl"

[[handlers]]
name = "{name}"
module = "{dice}"
tables = ["shop.*"]
sinks = ["out"]
"#,
                dice = dice.display()
            ),
        )
        .unwrap();
        let out = replay(&config);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let file = dir.join(format!("{name}.jsonl"));
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        crate::support::json_lines(&text)
    };
    let run = || (run("dice_a"), run("dice_b"));
    let (a1, b1) = run();
    let (a2, b2) = run();
    assert_eq!(a1.len(), 23, "every change of the shop binlog");
    assert_eq!((&a1, &b1), (&a2, &b2), "a replay draws the same");
    for (a, b) in a1.iter().zip(&b1) {
        assert_eq!(a["id"], b["id"]);
        for field in ["random", "u64", "insecure", "seed", "hash"] {
            assert_ne!(a[field], b[field], "{field}: {a} {b}");
        }
    }
    // Each change draws its own bytes; the hash-map seed is one per handler.
    let mut drawn: Vec<&str> = a1.iter().map(|l| l["random"].as_str().unwrap()).collect();
    drawn.sort_unstable();
    drawn.dedup();
    assert_eq!(drawn.len(), a1.len());
    assert!(a1.iter().all(|l| l["seed"] == a1[0]["seed"]));
}

/// The sockets a language runtime imports are linked, and deny everything:
/// a handler that connects to a port where a server listens loads, runs,
/// and is refused.
#[test]
fn sockets_are_linked_and_refuse_every_connection() {
    let sockets = crate::reload::suite_guests().join("sockets.wasm");
    // The guest dials 127.0.0.1:6379; make sure something listens there.
    let _listener = match std::net::TcpStream::connect("127.0.0.1:6379") {
        Ok(_) => None,
        Err(_) => Some(std::net::TcpListener::bind("127.0.0.1:6379").expect("listen on 6379")),
    };
    let dir = temp_dir("handlers-sockets");
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[sinks.out]
kind = "file"
path = "out.txt"

[[handlers]]
name = "net"
module = "{}"
tables = ["shop.orders"]
ops = ["insert"]
sinks = ["out"]
"#,
            sockets.display()
        ),
    )
    .unwrap();
    let out = replay(&config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(dir.join("out.txt")).unwrap(),
        "connected: false\n".repeat(3)
    );
}

/// The hostile handler's misbehaviours, written in JavaScript and Python
/// (tests/guests/js/hostile.js, tests/guests/python/hostile.py), are each
/// contained as the Rust one's are: the endless loop ends at its deadline,
/// the exception's message reaches the dead-letter record, the emit flood
/// breaches the quota however the handler swallows the refusals, the
/// memory bomb traps at the cap; the ungranted sink stays empty, and the
/// Rust handler beside it keeps its output intact.
#[test]
fn hostile_javascript_and_python_handlers_are_contained() {
    let (minimal, _) = guests();
    let out_dir = root().join("tests/guests/target/languages");
    let js = out_dir.join("hostile-js.wasm");
    let py = out_dir.join("hostile-py.wasm");
    std::fs::create_dir_all(&out_dir).unwrap();
    crate::examples::build_js(&root().join("tests/guests/js/hostile.js"), &js);
    crate::examples::build_python(&root().join("tests/guests/python/hostile.py"), &py);
    // Python's interpreter starts at about 20 MiB; the cap leaves it room.
    for (language, module, memory_mb, thrown) in [
        ("javascript", &js, 16, "hostile handler throws on purpose"),
        ("python", &py, 48, "ValueError: hostile handler raises on purpose"),
    ] {
        let dir = temp_dir(&format!("handlers-hostile-{language}"));
        let limits = format!("memory_mb = {memory_mb}, time_ms = 100, emits_per_event = 8");
        let config = hostile_config(&dir, module, minimal, &limits);
        let out = replay(&config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{language}: {stderr}");
        assert_eq!(
            std::fs::read_to_string(dir.join("orders.jsonl")).unwrap(),
            "{\"order\":1001}\n{\"order\":1002}\n{\"order\":1003}\n",
            "{language}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("secret.jsonl")).unwrap_or_default(),
            "",
            "{language}"
        );
        // Per sms_outbox row (two): the denial, what the sandbox shows.
        let hostile_out = std::fs::read_to_string(dir.join("hostile.jsonl")).unwrap();
        let lines: Vec<&str> = hostile_out.lines().collect();
        let per_row = if language == "python" { 3 } else { 2 };
        assert_eq!(lines.len(), 2 * per_row, "{language}: {hostile_out}");
        for row in lines.chunks(per_row) {
            assert!(
                row[0].starts_with("denied: ") && row[0].contains("secret") && row[0].contains("denied"),
                "{language}: {hostile_out}"
            );
            assert_eq!(*row.last().unwrap(), "clock: 0", "{language}: {hostile_out}");
            if language == "python" {
                assert!(!row[1].starts_with("fs: ok"), "{hostile_out}");
            }
        }

        let dead = std::fs::read_to_string(dir.join("dead.jsonl")).unwrap();
        let dead: Vec<serde_json::Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(dead.iter().all(|d| d["handler"] == "hostile"), "{language}: {dead:?}");
        let errors = |table: &str| -> Vec<String> {
            dead.iter()
                .filter(|d| d["change"]["table"] == table)
                .map(|d| d["error"].as_str().unwrap().to_string())
                .collect()
        };
        let (news, hits, floods, bombs) = (errors("news"), errors("hits"), errors("user_info"), errors("orders"));
        assert!(
            !news.is_empty() && news.iter().all(|e| e.contains("time limit of 100 ms")),
            "{language}: {news:?}"
        );
        assert!(
            !hits.is_empty() && hits.iter().all(|e| e.contains(thrown)),
            "{language}: {hits:?}"
        );
        assert_eq!(floods.len(), 4, "{language}: {floods:?}");
        assert!(
            floods.iter().all(|e| e.contains("emit quota")),
            "{language}: {floods:?}"
        );
        let cap = format!("limits.memory_mb = {memory_mb} MiB");
        assert!(
            !bombs.is_empty() && bombs.iter().all(|e| e.contains("trapped") && e.contains(&cap)),
            "{language}: {bombs:?}"
        );
        // Nothing but these reached the dead-letter sink.
        assert_eq!(
            dead.len(),
            news.len() + hits.len() + floods.len() + bombs.len(),
            "{language}: {dead:?}"
        );
    }
}
