//! The store from the outside: `rowhook replay --checkpoint` keeps state and
//! resumes after its checkpoint; `rowhook state` reports it, and changes it
//! only when told to, with `--yes`.

use crate::support::{build_guest, root, rowhook, rowhook_ok, temp_dir};

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
