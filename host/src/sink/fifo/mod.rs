//! `kind = "fifo"`: one line per message into a named pipe.
//!
//! This is the notification pipe shops feed today from MySQL triggers: a page
//! builder or a shell loop (`while read id < /run/news.fifo; do ...; done`)
//! reads lines from it.
//!
//! - The sink creates the FIFO (`mkfifo`, with missing directories) when it is
//!   absent; an existing path that is not a FIFO is a configuration error.
//! - It never waits for a reader in a way that holds up the process: the pipe
//!   is opened non-blocking, and with no reader attached the open fails at once
//!   (`ENXIO`). `write_batch` then returns [`SinkError::Unavailable`] and keeps
//!   nothing: the caller holds its (bounded) batch and retries later, and the
//!   next call tries to open again.
//! - A reader that is attached but slow makes `write_batch` wait for room in
//!   the pipe (backpressure), on the async runtime, not on a thread.
//! - A write cut short (its future dropped, e.g. by a caller's timeout) is
//!   finished up to the end of its torn line on the next call, so the reader
//!   never sees a partial message glued to the next one.
//! - A reader that goes away shows up as `EPIPE` on the next write: the sink
//!   drops its end of the pipe and reports `Unavailable`; the retried batch
//!   goes to the next reader whole. Lines that already sat unread in the pipe
//!   buffer when a reader exited are lost with it: a FIFO cannot tell which
//!   lines its reader consumed, so acknowledgement here means "in the pipe".

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use tokio::net::unix::pipe;

mod config;

pub use self::config::RawFifoSink;
use super::kind::SinkKind;
use super::{LineBuffer, Message, Sink, SinkError};
use crate::probe::{self, CheckLine};
use crate::problem::SinkContext;

/// `kind = "fifo"` in the registry.
#[derive(Debug)]
pub struct FifoKind;

impl SinkKind for FifoKind {
    const NAME: &'static str = "fifo";
    type Raw = RawFifoSink;
    type Options = FifoOptions;
    type Sink = FifoSink;

    fn resolve(raw: RawFifoSink, cx: &mut SinkContext<'_>) -> Option<FifoOptions> {
        config::resolve(raw, cx)
    }

    async fn open(name: &str, options: &FifoOptions) -> Result<FifoSink, SinkError> {
        FifoSink::open(name, options.clone()).await
    }

    fn probe(name: &str, options: &FifoOptions) -> CheckLine {
        probe::path_probe(name, Self::NAME, &options.path, |m| {
            (!m.file_type().is_fifo()).then_some("exists and is not a named pipe; remove it or change the sink's path")
        })
    }

    fn path(options: &FifoOptions) -> Option<&Path> {
        Some(&options.path)
    }

    fn one_line_per_message(_: &FifoOptions) -> bool {
        true
    }
}

/// Settings of a FIFO sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FifoOptions {
    /// The named pipe; created when absent.
    pub path: PathBuf,
    /// Permission bits of a FIFO the sink creates.
    pub mode: u32,
}

impl FifoOptions {
    /// Default permission bits: only rowhook's user may read.
    pub const DEFAULT_MODE: u32 = 0o600;
}

/// Writes one line per message into a named pipe, whenever a reader has it open.
#[derive(Debug)]
pub struct FifoSink {
    name: String,
    opts: FifoOptions,
    /// Our write end, while a reader is attached.
    sender: Option<pipe::Sender>,
    lines: LineBuffer,
}

impl FifoSink {
    /// Creates the FIFO if needed. Does not wait for (or need) a reader.
    pub async fn open(name: &str, opts: FifoOptions) -> Result<FifoSink, SinkError> {
        let sink = FifoSink {
            name: name.to_owned(),
            opts,
            sender: None,
            lines: LineBuffer::default(),
        };
        sink.ensure_fifo().await?;
        Ok(sink)
    }

    /// The pipe's path.
    pub fn path(&self) -> &Path {
        &self.opts.path
    }

    /// Whether the sink holds an open write end (a reader was attached at the
    /// last write or health check).
    pub fn is_connected(&self) -> bool {
        self.sender.is_some()
    }

    fn io_error(&self, doing: &str, e: &io::Error) -> SinkError {
        SinkError::from_io(
            &self.name,
            &io::Error::new(e.kind(), format!("{doing} {}: {e}", self.opts.path.display())),
        )
    }

    /// Makes sure a FIFO exists at the path (it may have been deleted since).
    async fn ensure_fifo(&self) -> Result<(), SinkError> {
        let path = &self.opts.path;
        match tokio::fs::metadata(path).await {
            Ok(m) if m.file_type().is_fifo() => Ok(()),
            Ok(_) => Err(SinkError::permanent(
                &self.name,
                format!(
                    "{} exists and is not a named pipe; remove it or point the sink elsewhere",
                    path.display()
                ),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(dir)
                        .await
                        .map_err(|e| self.io_error("creating the directory of", &e))?;
                }
                let mode = nix::sys::stat::Mode::from_bits_truncate(self.opts.mode as _);
                match nix::unistd::mkfifo(path, mode) {
                    Ok(()) => {}
                    // Another process made it meanwhile: its mode is its own,
                    // and whether it is a FIFO is checked on the next call.
                    Err(Errno::EEXIST) => return Ok(()),
                    Err(e) => return Err(self.io_error("creating the FIFO", &io::Error::from(e))),
                }
                // mkfifo's mode is narrowed by the umask; the operator asked for this one.
                tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(self.opts.mode))
                    .await
                    .map_err(|e| self.io_error("setting the mode of", &e))
            }
            Err(e) => Err(self.io_error("checking", &e)),
        }
    }

    /// Opens the write end if a reader is attached; `Unavailable` at once if not.
    async fn connect(&mut self) -> Result<(), SinkError> {
        self.ensure_fifo().await?;
        match pipe::OpenOptions::new().open_sender(&self.opts.path) {
            Ok(sender) => {
                self.sender = Some(sender);
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(Errno::ENXIO as i32) => Err(SinkError::unavailable(
                &self.name,
                format!(
                    "no reader has {} open; messages wait until one opens it",
                    self.opts.path.display()
                ),
            )),
            Err(e) => Err(self.io_error("opening", &e)),
        }
    }

    /// Whether our write end still has a reader: the kernel flags a pipe whose
    /// readers are all gone with `POLLERR`. Never waits.
    fn reader_attached(sender: &pipe::Sender) -> bool {
        let mut fds = [PollFd::new(sender.as_fd(), PollFlags::POLLOUT)];
        match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => !fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL)),
            Err(_) => false,
        }
    }

    /// Drops our end after a failed write. With the reader gone too, the
    /// kernel frees the pipe, so a partial line cannot reach the next reader.
    fn write_failed(&mut self, e: &io::Error) -> SinkError {
        self.disconnect();
        if e.kind() == io::ErrorKind::BrokenPipe {
            self.reader_gone()
        } else {
            self.io_error("writing to", e)
        }
    }

    fn disconnect(&mut self) {
        self.sender = None;
        self.lines.clear();
    }

    fn reader_gone(&self) -> SinkError {
        SinkError::unavailable(
            &self.name,
            format!(
                "the reader of {} closed it; waiting for a new reader",
                self.opts.path.display()
            ),
        )
    }
}

impl Sink for FifoSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write_batch(&mut self, batch: &[Message]) -> Result<(), SinkError> {
        if let Some(sender) = self.sender.as_mut()
            && let Err(e) = self.lines.finish_line(sender).await
        {
            // The last write was cut short (its future dropped) and the reader
            // it went to cannot take the rest of the line either.
            return Err(self.write_failed(&e));
        }
        // With no write end there is no torn line to finish: when we dropped
        // it, no reader was left, and the kernel freed the pipe and its bytes.
        self.lines.fill(&self.name, batch)?;
        if self.lines.is_empty() {
            return Ok(());
        }
        if self.sender.is_none() {
            self.connect().await?;
        }
        let Some(sender) = self.sender.as_mut() else {
            return Err(self.reader_gone());
        };
        match self.lines.write_all(sender).await {
            Ok(()) => {
                self.lines.clear();
                Ok(())
            }
            Err(e) => Err(self.write_failed(&e)),
        }
    }

    async fn health(&mut self) -> Result<(), SinkError> {
        if let Some(sender) = &self.sender {
            if Self::reader_attached(sender) {
                return Ok(());
            }
            self.disconnect();
        }
        // A new reader may already be waiting.
        self.connect().await
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        // Finish a torn line, then let the reader see end-of-file.
        let result = match self.sender.as_mut() {
            Some(sender) => self.lines.finish_line(sender).await,
            None => Ok(()),
        };
        self.disconnect();
        match result {
            // Nobody is left to read the rest: nothing to finish.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other.map_err(|e| self.io_error("writing to", &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::sink::testing::{TempDir, msg, msgs};

    /// A reader in its own thread: opens the FIFO (blocking until a writer
    /// comes), reads `n` lines, then closes it and reports them.
    fn reader(path: PathBuf, n: usize) -> mpsc::Receiver<Vec<String>> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            let lines: Vec<String> = BufReader::new(file).lines().take(n).map(Result::unwrap).collect();
            tx.send(lines).unwrap();
        });
        rx
    }

    /// Retries `write_batch` while it is unavailable (as the pipeline does), for up to 5 s.
    async fn write_until_delivered(sink: &mut FifoSink, batch: &[Message]) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match sink.write_batch(batch).await {
                Ok(()) => return,
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn opts(dir: &TempDir) -> FifoOptions {
        FifoOptions {
            path: dir.path().join("run/news.fifo"),
            mode: 0o640,
        }
    }

    #[tokio::test]
    async fn creates_the_fifo_with_its_mode() {
        let dir = TempDir::new("fifo-create");
        let o = opts(&dir);
        let sink = FifoSink::open("news", o.clone()).await.unwrap();
        let meta = std::fs::metadata(&o.path).unwrap();
        assert!(meta.file_type().is_fifo());
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert!(!sink.is_connected());
        assert_eq!(sink.path(), o.path);
        // Opening again keeps the existing FIFO.
        FifoSink::open("news", o).await.unwrap();
    }

    #[tokio::test]
    async fn a_path_that_is_not_a_fifo_is_permanent() {
        let dir = TempDir::new("fifo-file");
        let path = dir.path().join("plain");
        std::fs::write(&path, "").unwrap();
        let err = FifoSink::open("news", FifoOptions { path, mode: 0o600 })
            .await
            .unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("not a named pipe"), "{err}");
    }

    #[tokio::test]
    async fn no_reader_is_unavailable_without_blocking() {
        let dir = TempDir::new("fifo-noreader");
        let mut sink = FifoSink::open("news", opts(&dir)).await.unwrap();
        for _ in 0..3 {
            let t = Instant::now();
            let err = sink.write_batch(&msgs("n", 0..3)).await.unwrap_err();
            assert!(t.elapsed() < Duration::from_millis(100), "took {:?}", t.elapsed());
            assert!(err.is_retryable(), "{err}");
            assert!(err.to_string().contains("no reader"), "{err}");
        }
        let t = Instant::now();
        assert!(sink.health().await.unwrap_err().is_retryable());
        assert!(t.elapsed() < Duration::from_millis(100));
        // An empty batch needs no reader.
        sink.write_batch(&[]).await.unwrap();
    }

    #[tokio::test]
    async fn lines_arrive_in_order_then_a_new_reader_takes_over() {
        let dir = TempDir::new("fifo-readers");
        let o = opts(&dir);
        let mut sink = FifoSink::open("news", o.clone()).await.unwrap();

        // First reader: two batches, in order.
        let first = reader(o.path.clone(), 5);
        write_until_delivered(&mut sink, &msgs("a", 0..3)).await;
        sink.write_batch(&msgs("b", 0..2)).await.unwrap();
        let lines = first.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(lines, ["a0", "a1", "a2", "b0", "b1"]);

        // The reader has closed: health says so, and so does the next write,
        // both without blocking.
        let t = Instant::now();
        assert!(sink.health().await.unwrap_err().is_retryable());
        let err = sink.write_batch(&msgs("c", 0..2)).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(t.elapsed() < Duration::from_millis(100));

        // A new reader: the retried batch arrives whole.
        let second = reader(o.path.clone(), 4);
        write_until_delivered(&mut sink, &msgs("c", 0..2)).await;
        sink.health().await.unwrap();
        sink.write_batch(&msgs("d", 0..2)).await.unwrap();
        let lines = second.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(lines, ["c0", "c1", "d0", "d1"]);
    }

    #[tokio::test]
    async fn a_write_cut_short_is_finished_before_the_next_batch() {
        let dir = TempDir::new("fifo-torn");
        let o = opts(&dir);
        let mut sink = FifoSink::open("news", o.clone()).await.unwrap();
        // A reader that attaches, then reads only when told to.
        let (go, wait) = mpsc::channel::<()>();
        let (tx, rx) = mpsc::channel();
        let path = o.path.clone();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            wait.recv().unwrap();
            let lines: Vec<String> = BufReader::new(file).lines().take(3).map(Result::unwrap).collect();
            tx.send(lines).unwrap();
        });
        // Far more than a pipe holds: with the reader not reading, the write
        // waits for room (backpressure) until the caller gives up on it.
        let big = "a".repeat(300_000);
        let batch = [msg("1", &big), msg("2", "b")];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout(Duration::from_millis(50), sink.write_batch(&batch)).await {
                Err(_) => break,
                Ok(Err(e)) if e.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Ok(result) => panic!("expected the write to wait for the reader, got {result:?}"),
            }
        }
        go.send(()).unwrap();
        sink.write_batch(&batch).await.unwrap();
        let lines = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(lines.len(), 3);
        assert!(lines[0] == big, "the torn line is finished with its own bytes");
        assert!(lines[1] == big);
        assert_eq!(lines[2], "b");
    }

    #[tokio::test]
    async fn a_reader_gone_between_writes_is_noticed_on_write() {
        let dir = TempDir::new("fifo-epipe");
        let o = opts(&dir);
        let mut sink = FifoSink::open("news", o.clone()).await.unwrap();
        let first = reader(o.path.clone(), 1);
        write_until_delivered(&mut sink, &msgs("a", 0..1)).await;
        assert_eq!(first.recv_timeout(Duration::from_secs(5)).unwrap(), ["a0"]);
        assert!(sink.is_connected());
        // No health check in between: the write itself hits EPIPE.
        let err = sink.write_batch(&msgs("b", 0..1)).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("closed"), "{err}");
        assert!(!sink.is_connected());
    }

    #[tokio::test]
    async fn close_gives_the_reader_end_of_file() {
        let dir = TempDir::new("fifo-close");
        let o = opts(&dir);
        let mut sink = FifoSink::open("news", o.clone()).await.unwrap();
        // Reads everything up to end-of-file.
        let all = reader(o.path.clone(), usize::MAX);
        write_until_delivered(&mut sink, &msgs("a", 0..2)).await;
        sink.close().await.unwrap();
        assert_eq!(all.recv_timeout(Duration::from_secs(5)).unwrap(), ["a0", "a1"]);
    }

    #[tokio::test]
    async fn a_deleted_fifo_is_recreated() {
        let dir = TempDir::new("fifo-deleted");
        let o = opts(&dir);
        let mut sink = FifoSink::open("news", o.clone()).await.unwrap();
        std::fs::remove_file(&o.path).unwrap();
        assert!(sink.write_batch(&msgs("a", 0..1)).await.unwrap_err().is_retryable());
        assert!(std::fs::metadata(&o.path).unwrap().file_type().is_fifo());
    }
}
