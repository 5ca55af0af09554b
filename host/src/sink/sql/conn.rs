//! What the SQL sinks do alike with their one connection: a batch or a
//! probe runs on it within a time limit, and the connection is kept for
//! the next one unless the failure left it unusable.

use std::time::Duration;

use tokio::time::error::Elapsed;

use super::config::SqlUrl;
use crate::sink::SinkError;

/// How long a probe (`health`, `rowhook check`) waits for the server.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed write, and whether the connection can still be used.
pub struct Failure {
    /// What the sink reports.
    pub error: SinkError,
    /// The connection is still good (the transaction was rolled back).
    pub keep: bool,
}

/// Ends a batch's write on `conn` that ran within `timeout`: the connection
/// goes back into `slot` after a success or a failure that keeps it; a
/// write past its time is rolled back with the connection and retried.
pub fn settle_write<C>(
    slot: &mut Option<C>,
    conn: C,
    outcome: Result<Result<(), Failure>, Elapsed>,
    sink: &str,
    url: &SqlUrl,
    timeout: Duration,
) -> Result<(), SinkError> {
    settle(slot, conn, outcome, || {
        SinkError::unavailable(
            sink,
            format!(
                "the batch's transaction on {url} did not finish within {} ms; it is rolled back and retried",
                timeout.as_millis()
            ),
        )
    })
}

/// Ends a probe of `conn` that ran within [`PROBE_TIMEOUT`]: the
/// connection goes back into `slot` only if the server answered.
pub fn settle_probe<C>(
    slot: &mut Option<C>,
    conn: C,
    outcome: Result<Result<(), SinkError>, Elapsed>,
    sink: &str,
    url: &SqlUrl,
) -> Result<(), SinkError> {
    let outcome = outcome.map(|r| r.map_err(|error| Failure { error, keep: false }));
    settle(slot, conn, outcome, || {
        SinkError::unavailable(
            sink,
            format!("{url} did not answer within {} s", PROBE_TIMEOUT.as_secs()),
        )
    })
}

fn settle<C>(
    slot: &mut Option<C>,
    conn: C,
    outcome: Result<Result<(), Failure>, Elapsed>,
    timed_out: impl FnOnce() -> SinkError,
) -> Result<(), SinkError> {
    match outcome {
        Ok(Ok(())) => {
            *slot = Some(conn);
            Ok(())
        }
        Ok(Err(f)) => {
            if f.keep {
                *slot = Some(conn);
            }
            Err(f.error)
        }
        Err(_) => Err(timed_out()),
    }
}

/// `rowhook check` of SQL sink `name` of `kind`: runs `target` (connect,
/// check the tables, change nothing) on a runtime of its own, within
/// [`PROBE_TIMEOUT`], and words the outcome as one line.
pub fn run_probe(
    kind: &str,
    name: &str,
    url: &SqlUrl,
    target: impl std::future::Future<Output = Result<String, String>>,
) -> crate::probe::CheckLine {
    use crate::probe::CheckLine;
    let head = format!("sink `{name}` ({kind})");
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return CheckLine::fail(format!("{head}: cannot start the probe: {e}")),
    };
    let found = rt.block_on(async {
        match tokio::time::timeout(PROBE_TIMEOUT, target).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "{url} did not answer within {} s; check that the server is up and url is right",
                PROBE_TIMEOUT.as_secs()
            )),
        }
    });
    match found {
        Ok(text) => CheckLine::ok(format!("{head}: {text}")),
        Err(why) => CheckLine::fail(format!("{head}: {why}")),
    }
}
