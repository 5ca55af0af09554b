//! Sinks: where emitted messages go.
//!
//! Every sink kind implements one small trait, [`Sink`], shaped by the
//! guarantees in DESIGN.md:
//!
//! - **Ack = return.** [`Sink::write_batch`] returns `Ok` only once the whole
//!   batch is delivered as durably as the sink's policy promises. The pipeline
//!   moves the checkpoint only after every sink of a transaction said `Ok`, so
//!   a crash anywhere before that re-sends the batch: at-least-once, with each
//!   message carrying the same [`Message::id`] for consumers that dedupe.
//! - **Backpressure, bounded memory.** A sink keeps no queue of its own: it
//!   holds only the batch it is given, and a slow destination makes
//!   `write_batch` take longer (the pipeline waits) rather than buffering.
//! - **Retry or give up, never drop.** A failure is a [`SinkError`]:
//!   [`SinkError::Unavailable`] means "try the same batch again later"
//!   (a FIFO with no reader, a full disk); [`SinkError::Permanent`] means
//!   retrying cannot help, and the handler's `on_error` policy decides.
//!   After an error any prefix of the batch may have been delivered; the
//!   retry sends the whole batch again.
//! - **Cancel-safe.** If a `write_batch` future is dropped midway, the batch
//!   counts as not delivered and the next call repairs what a torn write left:
//!   the file sink truncates it away; stdout and the FIFO sink first write the
//!   rest of the torn line.
//!
//! Each kind is a folder, `sink/<kind>/`, that owns its config keys, opens
//! the sink and probes it for `rowhook check`; [`registry`] lists the kinds
//! this build has (each behind its cargo feature `sink-<kind>`) and gathers
//! them in the enums the rest of rowhook holds: [`SinkSpec`] (a validated
//! sink config) and [`AnySink`] (an open sink). This version has
//! `stdout`, `file`, `fifo`, `redis`, `nats`, `amqp`, `mqtt`, `http`, `kafka`,
//! `postgres`, `mysql` and `exec`; `docs/adding-a-sink.md` says how to add one.

#[cfg(feature = "sink-amqp")]
pub mod amqp;
pub mod capture;
#[cfg(feature = "sink-exec")]
pub mod exec;
#[cfg(feature = "sink-fifo")]
pub mod fifo;
#[cfg(feature = "sink-file")]
pub mod file;
#[cfg(feature = "sink-http")]
pub mod http;
#[cfg(feature = "sink-kafka")]
pub mod kafka;
pub mod kind;
#[cfg(feature = "sink-mqtt")]
pub mod mqtt;
#[cfg(feature = "sink-mysql")]
pub mod mysql;
#[cfg(feature = "sink-nats")]
pub mod nats;
#[cfg(feature = "sink-postgres")]
pub mod postgres;
#[cfg(feature = "sink-redis")]
pub mod redis;
pub mod registry;
pub mod sql;
#[cfg(feature = "sink-stdout")]
pub mod stdout;
#[cfg(any(
    feature = "sink-amqp",
    feature = "sink-mqtt",
    feature = "sink-http",
    feature = "sink-kafka",
    feature = "sink-nats",
    feature = "sink-postgres",
    feature = "sink-mysql"
))]
pub mod tls;

use std::future::Future;

use tokio::io::{AsyncWrite, AsyncWriteExt};

pub use self::kind::SinkKind;
pub use self::registry::{AnySink, KINDS, RawSinkOptions, SinkSpec};

/// One message for a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Partition or dedupe key for sinks that have one; line sinks ignore it.
    pub key: Option<Vec<u8>>,
    /// The bytes to deliver: the row-change JSON by default, or what the handler emitted.
    pub payload: Vec<u8>,
    /// The row change's id (`<txn>:<event>:<row>`), the same on every
    /// re-delivery, so consumers can drop duplicates.
    pub id: String,
    /// The message's place among those emitted for the same row change
    /// (0, 1, …, over every handler and sink, in call order), the same on
    /// every re-delivery: `id` and `index` together name one message, so a
    /// sink that dedupes by message (NATS `Nats-Msg-Id`) does not take two
    /// messages of one change for one.
    pub index: u32,
}

/// What one message may hold at most, as an open sink knows it (NATS reads
/// its server's `max_payload`). The runtime refuses a handler's `emit` past
/// them (`too-large`), so a message the destination would refuse for good
/// never gets as far as a batch. `None`: no limit of the sink's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkLimits {
    /// The largest payload, in bytes.
    pub max_payload: Option<usize>,
    /// The largest key, in bytes.
    pub max_key: Option<usize>,
}

/// What a sink takes as a payload, checked when a handler emits to it, so
/// that a payload the sink could never carry is refused at once rather
/// than failing its batch later.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PayloadForm {
    /// Any bytes.
    #[default]
    Bytes,
    /// One line of text (see `runtime::line_payload`): stdout, file, fifo.
    Line,
    /// A row operation on one of these tables (see [`sql`]): the SQL sinks.
    RowOps(std::sync::Arc<sql::Tables>),
}

/// Why a batch was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The destination cannot take the batch now; the same batch may succeed later.
    #[error("sink `{sink}` is unavailable: {reason}")]
    Unavailable {
        /// The sink's name.
        sink: String,
        /// What happened and what it waits for.
        reason: String,
    },
    /// Retrying the same batch cannot succeed (a misconfiguration, a message
    /// the sink cannot carry, a destination that is gone for good).
    #[error("sink `{sink}` failed: {reason}")]
    Permanent {
        /// The sink's name.
        sink: String,
        /// What happened and the fix.
        reason: String,
    },
}

impl SinkError {
    /// Whether retrying the same batch later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SinkError::Unavailable { .. })
    }

    /// The name of the sink that failed.
    pub fn sink(&self) -> &str {
        match self {
            SinkError::Unavailable { sink, .. } | SinkError::Permanent { sink, .. } => sink,
        }
    }

    pub(crate) fn unavailable(sink: &str, reason: impl Into<String>) -> Self {
        SinkError::Unavailable {
            sink: sink.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn permanent(sink: &str, reason: impl Into<String>) -> Self {
        SinkError::Permanent {
            sink: sink.to_owned(),
            reason: reason.into(),
        }
    }

    /// Classifies an I/O error: errors an operator must fix (permissions,
    /// wrong file type, bad path) are permanent; the rest (full disk, I/O
    /// errors, a reader gone) may clear up and are retryable.
    /// The error's message should say what was being done to which path.
    #[cfg_attr(
        not(any(feature = "sink-stdout", feature = "sink-file", feature = "sink-fifo")),
        allow(dead_code)
    )]
    pub(crate) fn from_io(sink: &str, e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let reason = e.to_string();
        match e.kind() {
            K::AlreadyExists
            | K::PermissionDenied
            | K::NotADirectory
            | K::IsADirectory
            | K::InvalidInput
            | K::InvalidFilename
            | K::ReadOnlyFilesystem
            | K::Unsupported => SinkError::permanent(sink, reason),
            _ => SinkError::unavailable(sink, reason),
        }
    }
}

/// A destination for emitted messages.
///
/// The futures are `Send` so the pipeline can drive sinks from any task.
/// Implementations write `async fn`; the trait spells out `impl Future + Send`
/// because a bare `async fn` in a public trait cannot promise `Send`.
pub trait Sink: Send {
    /// The sink's configured name.
    fn name(&self) -> &str;

    /// Delivers `batch`, in order. `Ok` is the acknowledgement: the messages
    /// are as durable as the sink's policy promises. See the module docs for
    /// what an error or a dropped future means.
    fn write_batch(&mut self, batch: &[Message]) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Whether the sink can take a batch now. Cheap. `rowhook run` calls it
    /// about once a second (see [`crate::pipeline::Pipeline::check_sinks`]),
    /// also while no batch comes, so a sink may use it for housekeeping that
    /// must not wait for the next write (the file sink's interval fsync).
    fn health(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Makes everything delivered durable and releases the destination. A
    /// later `write_batch` opens it again.
    fn close(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Registers the sink's own counters (a file sink's fsyncs, say) in
    /// `registry`, labelled `sink="NAME"` and named `rowhook_sink_…_total`,
    /// so that `rowhook state` and `/metrics` show them. The pipeline
    /// counts messages, retries and refusals of every sink itself.
    fn register_metrics(&self, registry: &crate::telemetry::Registry) {
        let _ = registry;
    }

    /// The state store's once-only ledger, given once the store is open
    /// (`rowhook run`, `rowhook replay --checkpoint`), to a sink that keeps
    /// one (an exec sink with `once_only`). The default ignores it.
    fn attach_ledger(&mut self, ledger: &crate::store::Ledger) {
        let _ = ledger;
    }

    /// The largest message the sink can carry, as far as it knows once open
    /// (see [`SinkLimits`]). The default: no limits of its own.
    fn limits(&self) -> SinkLimits {
        SinkLimits::default()
    }

    /// Group commit: from now on a batch is acknowledged once written, and
    /// what was acknowledged is made durable by [`Sink::make_durable`], which
    /// the caller calls before relying on it (the pipeline: before each
    /// checkpoint), so that one fsync serves many batches. A sink whose
    /// acknowledgement costs nothing extra ignores it.
    fn defer_durability(&mut self) {}

    /// Makes every batch acknowledged since [`Sink::defer_durability`] as
    /// durable as the sink's policy promises.
    fn make_durable(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }
}

/// How writes a sink cannot take now ([`SinkError::Unavailable`]) are
/// retried: after 50 ms, then doubling up to `max_delay`, `attempts` times
/// (`None`: until the sink takes the batch). Then the handler's `on_error`
/// applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkRetry {
    /// Retries before giving up; `None` retries forever.
    pub attempts: Option<u32>,
    /// The longest wait between two attempts.
    pub max_delay: std::time::Duration,
}

impl SinkRetry {
    /// The first wait.
    pub const FIRST_DELAY: std::time::Duration = std::time::Duration::from_millis(50);
    /// Default retries (about 11 s with the default `max_delay`).
    pub const DEFAULT_ATTEMPTS: u32 = 8;
    /// Default longest wait.
    pub const DEFAULT_MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(5);

    /// Whether attempt `n` (counting retries from 0) may still be made.
    pub fn allows(&self, n: u32) -> bool {
        self.attempts.is_none_or(|max| n < max)
    }
}

impl Default for SinkRetry {
    fn default() -> Self {
        SinkRetry {
            attempts: Some(Self::DEFAULT_ATTEMPTS),
            max_delay: Self::DEFAULT_MAX_DELAY,
        }
    }
}

/// Appends the batch as lines (payload + `\n` each) to `buf`.
///
/// Line sinks carry exactly one line per message, so a payload holding a
/// line break (`\n`, or `\r` where readers of CRLF text split) would read
/// as two messages downstream: the whole batch is refused (as permanent,
/// before anything is written) rather than silently reframed. Handlers'
/// payloads were checked at emit already (see `runtime::line_payload`);
/// this guards what rowhook writes itself. Row-change JSON never contains
/// a raw line break.
pub(crate) fn encode_lines(sink: &str, batch: &[Message], buf: &mut Vec<u8>) -> Result<(), SinkError> {
    if let Some(m) = batch
        .iter()
        .find(|m| m.payload.iter().any(|&b| b == b'\n' || b == b'\r'))
    {
        return Err(SinkError::permanent(
            sink,
            format!(
                "message `{}` holds a line break (\\n or \\r), and this sink writes one line per message; emit it without raw line breaks (escape them, e.g. as JSON)",
                m.id
            ),
        ));
    }
    buf.reserve(batch.iter().map(|m| m.payload.len() + 1).sum());
    for m in batch {
        buf.extend_from_slice(&m.payload);
        buf.push(b'\n');
    }
    Ok(())
}

/// The encoded lines of the batch being written to a stream, and how far the
/// writer got: if a write is cut short (an error, or its future dropped), the
/// next call first finishes the torn line with its own bytes, so the reader
/// never sees a partial message glued to the next one.
#[derive(Debug, Default)]
#[cfg_attr(not(any(feature = "sink-stdout", feature = "sink-fifo")), allow(dead_code))]
pub(crate) struct LineBuffer {
    buf: Vec<u8>,
    done: usize,
}

#[cfg_attr(not(any(feature = "sink-stdout", feature = "sink-fifo")), allow(dead_code))]
impl LineBuffer {
    /// Replaces the contents with `batch`, one line per message. Call
    /// [`LineBuffer::finish_line`] first: this drops what was not written.
    pub(crate) fn fill(&mut self, sink: &str, batch: &[Message]) -> Result<(), SinkError> {
        self.clear();
        encode_lines(sink, batch, &mut self.buf)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Whether the last write stopped inside a line.
    pub(crate) fn torn(&self) -> bool {
        self.done > 0 && self.done < self.buf.len() && self.buf[self.done - 1] != b'\n'
    }

    /// Completes a torn line (and only it), then empties the buffer.
    pub(crate) async fn finish_line<W: AsyncWrite + Unpin>(&mut self, out: &mut W) -> std::io::Result<()> {
        if self.torn() {
            let end = self.buf[self.done..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(self.buf.len(), |i| self.done + i + 1);
            self.write_to(out, end).await?;
        }
        self.clear();
        Ok(())
    }

    /// Writes what is left and flushes. Cancel-safe: progress is kept.
    pub(crate) async fn write_all<W: AsyncWrite + Unpin>(&mut self, out: &mut W) -> std::io::Result<()> {
        self.write_to(out, self.buf.len()).await?;
        out.flush().await
    }

    async fn write_to<W: AsyncWrite + Unpin>(&mut self, out: &mut W, end: usize) -> std::io::Result<()> {
        while self.done < end {
            // `write` is cancel-safe: it either wrote `n` bytes or none.
            let n = out.write(&self.buf[self.done..end]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.done += n;
        }
        Ok(())
    }

    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.done = 0;
        // Do not keep a buffer the size of the largest batch ever seen.
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new();
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers shared by the sink tests.

    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::Message;

    /// A fresh directory under the system temp dir, removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("rowhook-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A message whose payload is `text`.
    pub fn msg(id: &str, text: &str) -> Message {
        Message {
            key: None,
            payload: text.as_bytes().to_vec(),
            id: id.to_owned(),
            index: 0,
        }
    }

    /// `n` messages `{prefix}{i}`, ids `{prefix}:{i}`.
    pub fn msgs(prefix: &str, range: std::ops::Range<usize>) -> Vec<Message> {
        range
            .map(|i| msg(&format!("{prefix}:{i}"), &format!("{prefix}{i}")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::msg;
    use super::*;

    #[test]
    fn lines_are_payload_and_newline() {
        let mut buf = Vec::new();
        encode_lines("s", &[msg("1", "a"), msg("2", "{\"b\":1}")], &mut buf).unwrap();
        assert_eq!(buf, b"a\n{\"b\":1}\n");
    }

    #[test]
    fn a_newline_in_a_payload_refuses_the_batch() {
        let mut buf = Vec::new();
        let err = encode_lines("s", &[msg("1", "a"), msg("0-1-9:0:2", "b\nc")], &mut buf).unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("0-1-9:0:2"), "{err}");
        assert!(buf.is_empty());
        let err = encode_lines("s", &[msg("0-1-9:0:3", "b\rc")], &mut buf).unwrap_err();
        assert!(err.to_string().contains("line break"), "{err}");
        assert!(buf.is_empty());
    }

    #[test]
    fn io_errors_are_classified() {
        use std::io::{Error, ErrorKind};
        assert!(SinkError::from_io("s", &Error::from(ErrorKind::BrokenPipe)).is_retryable());
        assert!(SinkError::from_io("s", &Error::from(ErrorKind::StorageFull)).is_retryable());
        assert!(!SinkError::from_io("s", &Error::from(ErrorKind::PermissionDenied)).is_retryable());
        assert!(!SinkError::from_io("s", &Error::from(ErrorKind::IsADirectory)).is_retryable());
    }
}
