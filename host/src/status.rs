//! The status report: what the store holds (position, each handler's state
//! size, dead letters) and, from a running rowhook, its counters and its
//! connection to the server. `rowhook state` prints it
//! ([`crate::cli::state`]); `rowhook run` rewrites it as `status.json` beside
//! the store, so that the report can be read while the store is held.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::source::reconnect::SourceSnapshot;
use crate::store::Checkpoint;

/// The status file a running rowhook rewrites at each checkpoint.
pub const STATUS_FILE: &str = "status.json";

/// What `rowhook state` reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// The store's database file.
    pub store: PathBuf,
    /// Where a restart resumes, if anything was committed.
    pub position: Option<Checkpoint>,
    /// Per handler: keys and bytes of state.
    pub handlers: Vec<HandlerState>,
    /// Dead letters recorded.
    pub dead_letters: u64,
    /// Set when the report comes from a running rowhook's status file.
    pub live_status_written_at: Option<u64>,
    /// Where the server is and how far behind the position is.
    pub server: Option<ServerPosition>,
    /// A running rowhook's counters since it started (status file only).
    #[serde(default)]
    pub stats: Option<Stats>,
    /// A running rowhook's connection to the server (status file only).
    #[serde(default)]
    pub source: Option<SourceSnapshot>,
}

/// One handler's state size.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HandlerState {
    /// The handler.
    pub name: String,
    /// Keys.
    pub keys: u64,
    /// Bytes of keys and values (unknown in a status file: 0).
    pub bytes: u64,
}

/// The server's binlog end and the lag of the checkpoint behind it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerPosition {
    /// The file being written.
    pub file: String,
    /// Its current end.
    pub pos: u64,
    /// Binlog bytes between the checkpoint and the end; `None` if the
    /// checkpoint's file is no longer on the server.
    pub bytes_behind: Option<u64>,
    /// Why the server could not be asked, if it could not.
    pub error: Option<String>,
}

/// Writes the status file of a running rowhook (atomically, by rename).
pub fn write_status(dir: &Path, report: &Report) -> std::io::Result<()> {
    let tmp = dir.join(format!("{STATUS_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, dir.join(STATUS_FILE))
}

/// Counters a run reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Row changes seen (of subscribed tables).
    pub changes: u64,
    /// Handler calls made.
    pub calls: u64,
    /// Messages written to sinks.
    pub messages: u64,
    /// Handler failures handled by `skip` or `dead-letter`.
    pub handler_errors: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Module versions swapped in by hot reload.
    pub reloads: u64,
    /// Changed module files refused (the previous version kept serving).
    pub reload_failures: u64,
    /// Batches committed to the store.
    pub checkpoints: u64,
    /// Messages a sink refused beyond its retries, handled by `skip` or `dead-letter`.
    pub sink_failures: u64,
    /// Writes retried because a sink was unavailable.
    pub sink_retries: u64,
}
