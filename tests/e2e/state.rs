//! The store from the outside: `rowhook replay --checkpoint` keeps state and
//! resumes after its checkpoint; `rowhook state` reports it, and changes it
//! only when told to, with `--yes`. A handler's state stays within its
//! quota, in memory and on disk.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{build_guest, root, rowhook, rowhook_ok, temp_dir, wait_until};

#[test]
fn checkpointed_replay_resumes_and_state_changes_only_on_command() {
    let minimal = build_guest(&root().join("guest-sdk/examples/minimal"), "minimal");
    let dir = temp_dir("state");
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[state]
path = "state"

[sinks.orders_queue]
kind = "file"
path = "orders.log"

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
    let config = config.to_str().unwrap();
    let binlog = root().join("examples/binlog/shop-bin.000001");
    let binlog = binlog.to_str().unwrap();
    let orders = || std::fs::read_to_string(dir.join("orders.log")).unwrap_or_default();
    let dump = || rowhook_ok(&["state", "-c", config, "dump", "orders"]);

    // Nothing stored yet.
    let report = rowhook_ok(&["state", "-c", config]);
    assert!(report.contains("position      none yet"), "{report}");
    assert!(report.contains("no handler has state"), "{report}");

    // A first replay handles the three new orders and checkpoints at the end.
    rowhook_ok(&["replay", "--checkpoint", "-c", config, binlog]);
    assert_eq!(orders().lines().count(), 3);
    assert_eq!(
        dump(),
        "{\"key\":\"orders\",\"counter\":3,\"base64\":\"AwAAAAAAAAA=\"}\n"
    );
    let report: serde_json::Value = serde_json::from_str(&rowhook_ok(&["state", "-c", config, "--json"])).unwrap();
    assert_eq!(report["position"]["file"], "shop-bin.000001");
    assert_eq!(report["handlers"][0]["name"], "orders");
    assert_eq!(report["handlers"][0]["keys"], 1);
    assert_eq!(report["dead_letters"], 0);
    // The run's metrics, from the status file it left: totals, the
    // handler's own counter (the minimal guest counts `orders`), the sink's.
    assert_eq!(report["stats"]["changes"], 3, "{report:#}");
    assert_eq!(report["stats"]["messages"], 3, "{report:#}");
    let h = &report["handler_metrics"][0];
    assert_eq!(
        (&h["tenant"], &h["name"]),
        (&"default".into(), &"orders".into()),
        "{report:#}"
    );
    assert_eq!(h["calls"], 3, "{report:#}");
    assert_eq!(h["counters"]["orders"], 3, "{report:#}");
    let sink = &report["sinks"][0];
    assert_eq!(
        (&sink["name"], &sink["messages"]),
        (&"orders_queue".into(), &3.into()),
        "{report:#}"
    );
    assert!(sink["fsyncs"].as_u64() >= Some(1), "{report:#}");
    let text = rowhook_ok(&["state", "-c", config]);
    assert!(text.contains("last run      (its status file"), "{text}");
    assert!(text.contains("handler       default/orders: 3 calls"), "{text}");
    assert!(text.contains("metrics: orders=3"), "{text}");
    assert!(text.contains("sink          orders_queue: 3 messages"), "{text}");

    // A second one resumes after the checkpoint: nothing again, state as is.
    rowhook_ok(&["replay", "--checkpoint", "-c", config, binlog]);
    assert_eq!(orders().lines().count(), 3);
    assert!(dump().contains("\"counter\":3"));
    // Metrics are per run: the last run handled nothing.
    let report: serde_json::Value = serde_json::from_str(&rowhook_ok(&["state", "-c", config, "--json"])).unwrap();
    assert_eq!(report["handler_metrics"][0]["calls"], 0, "{report:#}");

    // Without --checkpoint, replay leaves the store alone.
    rowhook_ok(&["replay", "-c", config, binlog]);
    assert_eq!(orders().lines().count(), 6);
    assert!(dump().contains("\"counter\":3"));

    // Changes need --yes.
    let out = rowhook(&["state", "-c", config, "set-start", "config"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("add --yes"));
    let out = rowhook(&["state", "-c", config, "reset", "nobody", "--yes"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no handler `nobody`"));

    // Forgetting the checkpoint replays everything, counting on from 3.
    rowhook_ok(&["state", "-c", config, "set-start", "config", "--yes"]);
    rowhook_ok(&["replay", "--checkpoint", "-c", config, binlog]);
    assert!(dump().contains("\"counter\":6"));
    // Resetting the state starts the count again.
    let out = rowhook_ok(&["state", "-c", config, "reset", "orders", "--yes"]);
    assert!(out.contains("1 keys deleted"), "{out}");
    assert_eq!(dump(), "");
    rowhook_ok(&["state", "-c", config, "set-start", "shop-bin.000001:4", "--yes"]);
    rowhook_ok(&["replay", "--checkpoint", "-c", config, binlog]);
    assert!(dump().contains("\"counter\":3"));

    // A checkpoint in a file that is not given is an error, not a silent restart.
    rowhook_ok(&["state", "-c", config, "set-start", "other-bin.000009:4", "--yes"]);
    let out = rowhook(&["replay", "--checkpoint", "-c", config, binlog]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("other-bin.000009 is not among the files given"),
        "{stderr}"
    );
}

/// State belongs to a tenant and a handler: a handler moved to another
/// tenant starts with none, the old tenant's state stays until it is reset,
/// and `rowhook state` reports it per tenant.
#[test]
fn state_is_kept_per_tenant_and_handler() {
    let minimal = build_guest(&root().join("guest-sdk/examples/minimal"), "minimal");
    let dir = temp_dir("state-tenants");
    let config = dir.join("rowhook.toml");
    let write = |tenant: &str| {
        std::fs::write(
            &config,
            format!(
                "[state]\npath = \"state\"\n\n[sinks.orders_queue]\nkind = \"file\"\npath = \"orders.log\"\n\n[[handlers]]\nname = \"orders\"\ntenant = \"{tenant}\"\nmodule = \"{}\"\ntables = [\"shop.orders\"]\nops = [\"insert\"]\nsinks = [\"orders_queue\"]\n",
                minimal.display()
            ),
        )
        .unwrap()
    };
    let config = config.to_str().unwrap();
    let binlog = root().join("examples/binlog/shop-bin.000001");
    let binlog = binlog.to_str().unwrap();
    let dump = |who: &str| rowhook_ok(&["state", "-c", config, "dump", who]);

    write("shop");
    rowhook_ok(&["replay", "--checkpoint", "-c", config, binlog]);
    let text = rowhook_ok(&["state", "-c", config]);
    assert!(
        text.contains("tenant        shop: 1 keys, 14 bytes of state\nstate         shop/orders: 1 keys, 14 bytes\n"),
        "{text}"
    );
    assert!(dump("orders").contains("\"counter\":3"));

    // Moved to another tenant, from the start again: its count starts anew.
    write("billing");
    rowhook_ok(&["state", "-c", config, "set-start", "config", "--yes"]);
    rowhook_ok(&["replay", "--checkpoint", "-c", config, binlog]);
    assert!(
        dump("orders").contains("\"counter\":3"),
        "the config's handler: billing/orders"
    );
    assert!(dump("billing/orders").contains("\"counter\":3"));
    assert!(
        dump("shop/orders").contains("\"counter\":3"),
        "kept, though no longer configured"
    );
    let report: serde_json::Value = serde_json::from_str(&rowhook_ok(&["state", "-c", config, "--json"])).unwrap();
    let owners: Vec<(&str, &str)> = (report["handlers"].as_array().unwrap().iter())
        .map(|h| (h["tenant"].as_str().unwrap(), h["name"].as_str().unwrap()))
        .collect();
    assert_eq!(owners, [("billing", "orders"), ("shop", "orders")], "{report:#}");

    // A name alone is the config's handler; the other tenant's by TENANT/NAME.
    let out = rowhook_ok(&["state", "-c", config, "reset", "shop/orders", "--yes"]);
    assert!(out.contains("handler `shop/orders`: 1 keys deleted"), "{out}");
    assert_eq!(dump("billing/orders").lines().count(), 1);
    let out = rowhook(&["state", "-c", config, "dump", "shop/orders"]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("has no handler `shop/orders`, and the store keeps no state for one"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `rowhook replay --checkpoint -c config` over the shop binlog under
/// GNU time; fails the test if it does not finish by itself within two
/// minutes. Returns its stderr and its peak resident memory in bytes.
fn replay_measured(dir: &Path, config: &Path) -> (String, u64) {
    let binlog = root().join("examples/binlog/shop-bin.000001");
    let (time_out, stderr) = (dir.join("time.out"), dir.join("stderr.log"));
    let mut child = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&time_out)
        .arg(env!("CARGO_BIN_EXE_rowhook"))
        .args(["replay", "--checkpoint", "-c"])
        .arg(config)
        .arg(&binlog)
        .env("ROWHOOK_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("run /usr/bin/time (GNU time)");
    let status = wait_until(
        &mut child,
        Instant::now() + Duration::from_secs(120),
        "rowhook replay of the hoarder",
    );
    let stderr = std::fs::read_to_string(&stderr).unwrap();
    assert!(status.success(), "{stderr}");
    let kib: u64 = std::fs::read_to_string(&time_out)
        .unwrap()
        .trim()
        .lines()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    (stderr, kib * 1024)
}

/// A handler that tries to store twenty 1 MiB values on every change gets
/// `quota` once its state reaches `limits.state_mb`; rowhook finishes by
/// itself, its memory and its store stay bounded, the well-behaved handler
/// beside it is untouched, and `rowhook state` and the status file report
/// the real sizes. With the quota lowered below what is stored, the state
/// still loads, writes that grow it get `quota`, and deletes make room.
#[test]
fn state_quota_holds_against_a_hoarder() {
    let hoarder = build_guest(&root().join("tests/guests"), "hoarder");
    let minimal = build_guest(&root().join("guest-sdk/examples/minimal"), "minimal");
    let dir = temp_dir("state-quota");
    let config = dir.join("rowhook.toml");
    let write = |state_mb: u32, tables: &str| {
        std::fs::write(
            &config,
            format!(
                r#"
[state]
path = "state"

[sinks.out]
kind = "file"
path = "hoarder.jsonl"

[sinks.orders_queue]
kind = "file"
path = "orders.jsonl"

[[handlers]]
name = "hoarder"
module = "{hoarder}"
tables = {tables}
sinks = ["out"]
limits = {{ state_mb = {state_mb}, time_ms = 5000 }}

[[handlers]]
name = "orders"
module = "{minimal}"
tables = ["shop.orders"]
ops = ["insert"]
sinks = ["orders_queue"]
"#,
                hoarder = hoarder.display(),
                minimal = minimal.display()
            ),
        )
        .unwrap();
    };
    let take = |name: &str| {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        std::fs::remove_file(dir.join(name)).unwrap();
        text
    };
    let sizes = |report: &serde_json::Value| -> Vec<(String, u64, u64)> {
        report["handlers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["name"].as_str().unwrap().to_owned(),
                    h["keys"].as_u64().unwrap(),
                    h["bytes"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let status = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("state/status.json")).unwrap()).unwrap()
    };
    let cfg = config.to_str().unwrap();
    let blob = |n: u64| (1 << 20) + format!("blob-{n}").len() as u64;
    let count = "count".len() as u64 + 8;

    // 19 changes, 380 MiB tried, under a 16 MiB quota.
    write(
        16,
        r#"["shop.user_info", "shop.orders", "shop.hits", "shop.sms_outbox"]"#,
    );
    let (log, peak) = replay_measured(&dir, &config);
    assert!(log.contains("handler state would grow past its quota"), "{log}");
    assert_eq!(
        take("orders.jsonl"),
        "{\"order\":1001}\n{\"order\":1002}\n{\"order\":1003}\n"
    );
    let lines = crate::support::json_lines(&take("hoarder.jsonl"));
    assert_eq!(lines.len(), 19);
    // Fifteen values fit (with their names and the count); the sixteenth
    // and every later one get `quota`.
    assert_eq!(lines[0]["stored"], 15, "{:?}", lines[0]);
    assert_eq!(lines[0]["errors"], serde_json::json!(vec!["quota"; 5]));
    for l in &lines[1..] {
        assert_eq!(
            (&l["stored"], &l["errors"]),
            (&0.into(), &serde_json::json!(vec!["quota"; 20]))
        );
    }
    let stored = (0..15).map(blob).sum::<u64>() + count;
    assert!(stored <= 16 << 20);
    let expected = vec![("hoarder".to_owned(), 16, stored), ("orders".to_owned(), 1, 14)];
    assert_eq!(sizes(&status()), expected, "status.json");
    let report: serde_json::Value = serde_json::from_str(&rowhook_ok(&["state", "-c", cfg, "--json"])).unwrap();
    assert_eq!(sizes(&report), expected, "rowhook state, from the store");
    let text = rowhook_ok(&["state", "-c", cfg]);
    assert!(
        text.contains(&format!("state         default/hoarder: 16 keys, {stored} bytes")),
        "{text}"
    );
    // Without the quota this run holds 380 MiB of state and peaks at
    // 1.2 GB with an 800 MB store; with it, about 90 MB and 34 MB.
    assert!(peak < 256 << 20, "peak RSS {peak} bytes");
    let store = std::fs::metadata(dir.join("state/rowhook.redb")).unwrap().len();
    assert!(store < 64 << 20, "store {store} bytes");

    // The quota lowered to 4 MiB, under the 15 MiB stored, and the whole
    // binlog again: the state loads; until a `news` change deletes, every
    // write that grows it gets `quota`.
    write(4, r#"["shop.*"]"#);
    rowhook_ok(&["state", "-c", cfg, "set-start", "config", "--yes"]);
    let (_, peak) = replay_measured(&dir, &config);
    assert_eq!(
        take("orders.jsonl"),
        "{\"order\":1001}\n{\"order\":1002}\n{\"order\":1003}\n"
    );
    let lines = crate::support::json_lines(&take("hoarder.jsonl"));
    let summary: Vec<String> = lines
        .iter()
        .map(|l| match l.get("deleted") {
            Some(d) => format!(
                "{} deleted {d}, then {}",
                l["id"].as_str().unwrap(),
                l["then"].as_str().unwrap()
            ),
            None => format!(
                "{} stored {}, {} quota",
                l["id"].as_str().unwrap(),
                l["stored"],
                l["errors"].as_array().unwrap().iter().filter(|e| *e == "quota").count()
            ),
        })
        .collect();
    let mut expected: Vec<String> = [
        "0-1-8:0:0",
        "0-1-8:0:1",
        "0-1-8:0:2",
        "0-1-8:0:3",
        "0-1-9:0:0",
        "0-1-9:1:0",
        "0-1-10:0:0",
        "0-1-10:1:0",
        "0-1-11:0:0",
        "0-1-12:0:0",
        "0-1-13:0:0",
    ]
    .iter()
    .map(|id| format!("{id} stored 0, 20 quota"))
    .collect();
    expected.push("0-1-14:0:0 deleted 15, then stored".into());
    expected.push("0-1-15:0:0 deleted 1, then stored".into());
    expected.push("0-1-16:0:0 deleted 1, then stored".into());
    // Room for two more values beside the one stored.
    expected.push("0-1-17:0:0 stored 2, 18 quota".into());
    for id in [
        "0-1-17:0:1",
        "0-1-17:0:2",
        "0-1-17:0:3",
        "0-1-17:0:4",
        "0-1-17:0:5",
        "0-1-18:0:0",
        "0-1-19:0:0",
    ] {
        expected.push(format!("{id} stored 0, 20 quota"));
    }
    expected.push("0-1-20:0:0 deleted 3, then stored".into());
    assert_eq!(summary, expected);
    let expected = vec![("hoarder".to_owned(), 2, blob(0) + count), ("orders".to_owned(), 1, 14)];
    assert_eq!(sizes(&status()), expected, "status.json");
    let report: serde_json::Value = serde_json::from_str(&rowhook_ok(&["state", "-c", cfg, "--json"])).unwrap();
    assert_eq!(sizes(&report), expected, "rowhook state, from the store");
    assert!(peak < 256 << 20, "peak RSS {peak} bytes");
}

/// `limits.state_keys` bounds the keys a handler keeps: a write that would
/// add one past it gets `quota`, writes to existing keys are taken, and the
/// store holds exactly that many keys.
#[test]
fn state_keys_hold_against_a_hoarder() {
    let hoarder = build_guest(&root().join("tests/guests"), "hoarder");
    let dir = temp_dir("state-keys");
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            "[state]\npath = \"state\"\n\n[sinks.out]\nkind = \"file\"\npath = \"hoarder.jsonl\"\n\n[[handlers]]\nname = \"hoarder\"\nmodule = \"{}\"\ntables = [\"shop.orders\"]\nsinks = [\"out\"]\nlimits = {{ state_keys = 5, time_ms = 5000 }}\n",
            hoarder.display()
        ),
    )
    .unwrap();
    let (log, _) = replay_measured(&dir, &config);
    assert!(
        log.contains("handler state holds 5 keys, its quota (limits.state_keys)"),
        "{log}"
    );
    let lines = crate::support::json_lines(&std::fs::read_to_string(dir.join("hoarder.jsonl")).unwrap());
    // `count` and blob-0..blob-3: four stored, then every new key refused.
    assert_eq!(lines[0]["stored"], 4, "{:?}", lines[0]);
    assert_eq!(lines[0]["errors"], serde_json::json!(vec!["quota"; 16]));
    for l in &lines[1..] {
        assert_eq!(
            (&l["stored"], &l["errors"]),
            (&0.into(), &serde_json::json!(vec!["quota"; 20]))
        );
    }
    let report: serde_json::Value =
        serde_json::from_str(&rowhook_ok(&["state", "-c", config.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(report["handlers"][0]["keys"], 5, "{report:#}");
}
