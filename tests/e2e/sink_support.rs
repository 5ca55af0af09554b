//! What the message-broker sink tests share: batches of numbered messages,
//! writing one as the pipeline does, and a config running the `minimal`
//! example handler into the sink under test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rowhook::config::Plan;
use rowhook::sink::{Message, Sink, SinkSpec};

use crate::support::{build_guest, root, rowhook};

/// A config in `dir` that runs the `minimal` example handler (a message
/// `{"order":ID}` keyed by the id per new order) into the sink
/// `orders_queue` of `kind` with `keys`. `head` comes first (`[source]`
/// and `[state]` for `rowhook run`, or nothing), `handler_keys` last.
pub fn minimal_config(dir: &Path, head: &str, kind: &str, keys: &str, handler_keys: &str) -> PathBuf {
    let minimal = build_guest(&root().join("guest-sdk/examples/minimal"), "minimal");
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"{head}
[sinks.orders_queue]
kind = "{kind}"
{keys}

[[handlers]]
name = "orders"
module = "{}"
tables = ["shop.orders"]
ops = ["insert"]
sinks = ["orders_queue"]
{handler_keys}
"#,
            minimal.display()
        ),
    )
    .unwrap();
    config
}

/// `rowhook replay -c config` of the shop example's binlog.
pub fn replay_shop(config: &Path) -> std::process::Output {
    let binlog = root().join("examples/binlog/shop-bin.000001");
    rowhook(&["replay", "-c", config.to_str().unwrap(), binlog.to_str().unwrap()])
}

/// `n` messages `<name><i>`, keys cycling over 10, ids `<name>:<i>:0`.
pub fn batch(name: &str, n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| Message {
            key: Some((i % 10).to_string().into_bytes()),
            payload: format!("{name}{i}").into_bytes(),
            id: format!("{name}:{i}:0"),
            index: 0,
        })
        .collect()
}

/// Writes as the pipeline does: retries while unavailable, up to `within`;
/// returns how many tries failed.
pub async fn write_until_delivered<S: Sink>(sink: &mut S, batch: &[Message], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    let mut failures = 0;
    loop {
        match sink.write_batch(batch).await {
            Ok(()) => return failures,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("not delivered: {e}"),
        }
    }
}

/// User and system CPU seconds of process `pid` ("self": this one) so far.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Clock ticks are 100 a second on Linux (USER_HZ).
    ticks as f64 / 100.0
}

/// A current-thread tokio runtime for a test that drives a sink itself.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The validated settings of one sink of `kind` with `keys` (TOML lines).
pub fn sink_spec(kind: &str, keys: &str) -> SinkSpec {
    let text = format!("[sinks.s]\nkind = \"{kind}\"\n{keys}\n");
    Plan::parse(&text, Path::new("/tmp/rowhook.toml"), |_| None)
        .unwrap()
        .sinks
        .remove("s")
        .expect("one sink")
}
