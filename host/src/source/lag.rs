//! `rowhook_source_lag_bytes`: how many binlog bytes the server has written
//! past the last transaction rowhook handled. The replica protocol does not
//! say where the server's binlog ends while it streams, so a thread of its
//! own asks, on a connection of its own, every [`EVERY`]: `SHOW BINARY
//! LOGS` (the REPLICATION CLIENT grant `rowhook check` asks for), summed
//! from the handled file on. It only reads the handled position the
//! stream publishes in [`SourceStats`]; nothing it does can slow or stop the
//! stream.

use std::sync::{Arc, Weak};
use std::time::Duration;

use mysql_async::Conn;

use super::reconnect::SourceStats;
use super::server::SourceUrl;
use crate::telemetry::{Gauge, Registry, names};

/// How often the server is asked where its binlog ends.
pub const EVERY: Duration = Duration::from_secs(2);
/// How long one question may take before the connection is dropped.
const QUESTION_LIMIT: Duration = Duration::from_secs(10);

/// Binlog bytes from `file:pos` to the end of the last of `logs` (name and
/// size, oldest first); `None` if `file` is not among them (purged, or the
/// server's binlog was reset).
pub fn bytes_behind(logs: &[(String, u64)], file: &str, pos: u64) -> Option<u64> {
    let at = logs.iter().position(|(name, _)| name == file)?;
    let rest = logs[at..].iter().fold(0u64, |sum, (_, size)| sum.saturating_add(*size));
    Some(rest.saturating_sub(pos))
}

/// Registers `rowhook_source_lag_bytes` in `registry` and keeps it up to
/// date from a thread of its own, which ends when `stats` is dropped (the
/// run's source is gone).
pub fn watch(url: SourceUrl, stats: &Arc<SourceStats>, registry: &Registry) -> anyhow::Result<()> {
    let gauge = registry.gauge(
        names::SOURCE_LAG_BYTES,
        "Binlog bytes the server has written past the last transaction handled (asked every 2 s; NaN while it cannot be told).",
        vec![],
    );
    let stats = Arc::downgrade(stats);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the lag watcher's runtime: {e}"))?;
    std::thread::Builder::new()
        .name("rowhook-lag".into())
        .spawn(move || rt.block_on(watch_loop(url, stats, gauge)))
        .map_err(|e| anyhow::anyhow!("starting the lag watcher's thread: {e}"))?;
    Ok(())
}

async fn watch_loop(url: SourceUrl, stats: Weak<SourceStats>, gauge: Gauge) {
    let mut conn: Option<Conn> = None;
    let mut failing = false;
    loop {
        let Some(handled) = stats.upgrade().map(|s| s.handled()) else {
            return;
        };
        if let Some((file, pos)) = handled {
            match tokio::time::timeout(QUESTION_LIMIT, ask(&url, &mut conn)).await {
                Ok(Ok(logs)) => {
                    failing = false;
                    gauge.set(bytes_behind(&logs, &file, pos).map_or(f64::NAN, |n| n as f64));
                }
                outcome => {
                    conn = None;
                    gauge.set(f64::NAN);
                    let why = match outcome {
                        Ok(Err(e)) => format!("{e:#}"),
                        _ => format!("no answer within {QUESTION_LIMIT:?}"),
                    };
                    if !failing {
                        tracing::warn!(
                            "cannot ask the server where its binlog ends, for rowhook_source_lag_bytes: {why}"
                        );
                    }
                    failing = true;
                }
            }
        }
        tokio::time::sleep(EVERY).await;
    }
}

/// Where the server's binlog ends now: its last file and that file's size,
/// asked on a connection of its own.
pub async fn binlog_end(url: &SourceUrl) -> anyhow::Result<(String, u64)> {
    let ask = async {
        let mut conn = None;
        let logs = ask(url, &mut conn).await?;
        if let Some(c) = conn {
            let _ = c.disconnect().await;
        }
        logs.last()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("the server lists no binary logs (is log_bin on?)"))
    };
    tokio::time::timeout(QUESTION_LIMIT, ask)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {QUESTION_LIMIT:?}"))?
}

/// The server's binlog files and sizes, on `conn` (connected first if it
/// is not).
async fn ask(url: &SourceUrl, conn: &mut Option<Conn>) -> anyhow::Result<Vec<(String, u64)>> {
    if conn.is_none() {
        *conn = Some(url.connect().await?);
    }
    let c = conn.as_mut().expect("connected above");
    super::live::binary_logs(c).await.map_err(|e| url.explain(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_behind_sum_from_the_handled_file() {
        let logs = [
            ("b.000001".to_owned(), 1000),
            ("b.000002".to_owned(), 500),
            ("b.000003".to_owned(), 300),
        ];
        assert_eq!(bytes_behind(&logs, "b.000003", 300), Some(0));
        assert_eq!(bytes_behind(&logs, "b.000003", 120), Some(180));
        assert_eq!(bytes_behind(&logs, "b.000002", 400), Some(400));
        assert_eq!(bytes_behind(&logs, "b.000001", 4), Some(1796));
        assert_eq!(bytes_behind(&logs, "b.000000", 4), None);
    }
}
