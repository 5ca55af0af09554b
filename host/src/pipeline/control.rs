//! Commands to a running pipeline from other threads (the HTTP server's
//! admin API): sent through a channel of [`Control`], taken by the pipeline
//! at transaction boundaries and at its timer, answered through a oneshot.
//!
//! The pipeline owns the handlers and runs on its own thread; a command
//! never reaches into it from outside, so nothing on the per-change path is
//! locked. A command waits at most for the transaction in progress (or a
//! sink being retried): the sender bounds the wait (see
//! [`ControlSender::ask`]). A new command is one more variant and one more
//! arm in [`super::Pipeline::apply_control`].

use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::oneshot;

/// Most keys one state call returns.
pub const MAX_STATE_KEYS: usize = 1000;
/// Most value bytes one state call returns; past them, keys come with
/// their sizes only.
pub const MAX_STATE_VALUE_BYTES: usize = 64 << 10;

/// A command to the pipeline, with where its answer goes.
pub enum Control {
    /// Stop calling the handler: its changes are held (in its held file, in
    /// order) and the checkpoint does not pass them, until `Resume`.
    Pause {
        /// The handler's name.
        handler: String,
        /// What is held for it now.
        reply: oneshot::Sender<Result<Paused, ControlError>>,
    },
    /// Call the handler again: its held changes first, in order.
    Resume {
        /// The handler's name.
        handler: String,
        /// What is held for it now, handed over from the next transaction boundary.
        reply: oneshot::Sender<Result<Paused, ControlError>>,
    },
    /// Read the handler's module file again, compile it and swap it in, as
    /// a hot reload does.
    Reload {
        /// The handler's name.
        handler: String,
        /// The module swapped in, or why the previous version keeps serving.
        reply: oneshot::Sender<Result<Reloaded, ControlError>>,
    },
    /// The handler's state keys starting with `prefix`, in key order.
    State {
        /// The handler's name.
        handler: String,
        /// Only keys starting with this.
        prefix: String,
        /// At most this many keys (capped at [`MAX_STATE_KEYS`]).
        limit: usize,
        /// The page.
        reply: oneshot::Sender<Result<StatePage, ControlError>>,
    },
    /// Read a table (or the rows `filter` selects) as it is now and hand
    /// its rows to its handlers as `snapshot` changes, in chunks
    /// interleaved with the stream.
    Snapshot {
        /// `db.table`.
        table: String,
        /// A SQL condition selecting the rows to read.
        filter: Option<String>,
        /// Queued, or why not.
        reply: oneshot::Sender<Result<SnapshotQueued, ControlError>>,
    },
}

/// The answer to [`Control::Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotQueued {
    /// `db.table`.
    pub table: String,
    /// The condition, if any.
    pub filter: Option<String>,
    /// Tables queued before it (0: it is read now).
    pub ahead: usize,
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No handler has that name.
    #[error("no handler named `{0}`")]
    NoHandler(String),
    /// The handler runs with its tenant's lane on a connection of its own.
    #[error(
        "handler `{handler}` runs with tenant `{tenant}`'s lane, which reads on a connection of its own until it catches up; try again once it is back with the others (status lists it under `lanes_apart` until then)"
    )]
    Apart {
        /// The handler's name.
        handler: String,
        /// Its tenant.
        tenant: String,
    },
    /// The command ran and failed (a reload refused).
    #[error("{0}")]
    Failed(String),
    /// The pipeline did not take the command in time.
    #[error("the pipeline did not answer within {0:?} (a long transaction, or a sink being retried); try again")]
    Busy(Duration),
    /// The pipeline is not running (stopped, or ended).
    #[error("the pipeline is not running")]
    Gone,
}

/// The answer to [`Control::Pause`] and [`Control::Resume`].
#[derive(Debug, Clone, Serialize)]
pub struct Paused {
    /// The handler.
    pub handler: String,
    /// Whether it is paused now.
    pub paused: bool,
    /// Changes held for it, not yet handed over.
    pub held: u64,
}

/// The answer to [`Control::Reload`].
#[derive(Debug, Clone, Serialize)]
pub struct Reloaded {
    /// The handler.
    pub handler: String,
    /// The module file swapped in.
    pub module: String,
}

/// The answer to [`Control::State`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatePage {
    /// The handler.
    pub handler: String,
    /// Keys of the whole state.
    pub keys_total: u64,
    /// Bytes of the whole state (keys and values).
    pub bytes_total: u64,
    /// The keys given, in key order.
    pub keys: Vec<StateEntry>,
    /// Whether more keys matched the prefix than were given.
    pub more: bool,
    /// The most keys and value bytes one call returns.
    pub max_keys: usize,
    /// See [`MAX_STATE_VALUE_BYTES`].
    pub max_value_bytes: usize,
}

/// One key of a [`StatePage`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct StateEntry {
    /// The key.
    pub key: String,
    /// Bytes of its value.
    pub bytes: usize,
    /// The value, if it is UTF-8 and fits in what is left of the page's
    /// value bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value in base64, if it is not UTF-8 and fits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
}

impl StatePage {
    /// The page of `entries` (a handler's whole state) under `prefix`.
    pub fn of<'a>(
        handler: &str,
        entries: impl Iterator<Item = (&'a str, &'a [u8])>,
        bytes_total: u64,
        prefix: &str,
        limit: usize,
    ) -> StatePage {
        use base64::Engine as _;
        let limit = limit.min(MAX_STATE_KEYS);
        let mut keys_total = 0;
        let mut matching: Vec<(&str, &[u8])> = Vec::new();
        for (k, v) in entries {
            keys_total += 1;
            if k.starts_with(prefix) {
                matching.push((k, v));
            }
        }
        matching.sort_unstable_by_key(|(k, _)| *k);
        let more = matching.len() > limit;
        let mut budget = MAX_STATE_VALUE_BYTES;
        let keys = matching
            .into_iter()
            .take(limit)
            .map(|(key, v)| {
                let mut e = StateEntry {
                    key: key.to_owned(),
                    bytes: v.len(),
                    ..StateEntry::default()
                };
                if v.len() <= budget {
                    budget -= v.len();
                    match std::str::from_utf8(v) {
                        Ok(text) => e.value = Some(text.to_owned()),
                        Err(_) => e.value_base64 = Some(base64::engine::general_purpose::STANDARD.encode(v)),
                    }
                }
                e
            })
            .collect();
        StatePage {
            handler: handler.to_owned(),
            keys_total,
            bytes_total,
            keys,
            more,
            max_keys: MAX_STATE_KEYS,
            max_value_bytes: MAX_STATE_VALUE_BYTES,
        }
    }
}

/// Where commands are sent from; cloning gives another sender.
#[derive(Clone)]
pub struct ControlSender(mpsc::Sender<Control>);

/// A channel of commands: the sender for other threads, the receiver for
/// the pipeline ([`super::Pipeline::accept_control`]).
pub fn channel() -> (ControlSender, mpsc::Receiver<Control>) {
    let (tx, rx) = mpsc::channel();
    (ControlSender(tx), rx)
}

impl ControlSender {
    /// Sends the command `make` builds around a reply channel and waits up
    /// to `within` for the answer.
    pub async fn ask<T>(
        &self,
        within: Duration,
        make: impl FnOnce(oneshot::Sender<Result<T, ControlError>>) -> Control,
    ) -> Result<T, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.0.send(make(tx)).map_err(|_| ControlError::Gone)?;
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(ControlError::Gone),
            Err(_) => Err(ControlError::Busy(within)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_page_is_sorted_capped_and_sized() {
        let big = vec![b'x'; MAX_STATE_VALUE_BYTES - 4];
        let binary = [0xff_u8, 0, 1];
        let entries: Vec<(String, Vec<u8>)> = vec![
            ("k:2".into(), b"20".to_vec()),
            ("k:1".into(), big.clone()),
            ("k:3".into(), b"this one no longer fits".to_vec()),
            ("other".into(), b"1".to_vec()),
            ("k:0".into(), binary.to_vec()),
        ];
        let page = StatePage::of(
            "h",
            entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            99,
            "k:",
            3,
        );
        assert_eq!(page.keys_total, 5);
        assert!(page.more, "four keys matched, three were asked for");
        let keys: Vec<&str> = page.keys.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["k:0", "k:1", "k:2"]);
        assert_eq!(page.keys[0].value_base64.as_deref(), Some("/wAB"));
        assert_eq!(page.keys[1].bytes, big.len());
        assert!(page.keys[1].value.is_some());
        // The budget is spent: sizes only.
        assert_eq!((page.keys[2].bytes, page.keys[2].value.as_deref()), (2, None));
        let page = StatePage::of("h", std::iter::empty(), 0, "", usize::MAX);
        assert_eq!((page.keys.len(), page.more, page.max_keys), (0, false, MAX_STATE_KEYS));
    }
}
