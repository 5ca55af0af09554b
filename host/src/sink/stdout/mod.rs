//! `kind = "stdout"`: one line per message on standard output.
//!
//! Each message's payload is written followed by `\n` (the row-change JSON by
//! default, or what the handler emitted), and the output is flushed at the end
//! of every batch, so a delivered batch has left the process. The sink is
//! generic over the writer so tests (and embedders) can capture the output.

mod config;

use tokio::io::{AsyncWrite, AsyncWriteExt};

pub use self::config::{RawStdoutSink, StdoutOptions};
use super::kind::SinkKind;
use super::{LineBuffer, Message, Sink, SinkError};
use crate::probe::CheckLine;
use crate::problem::SinkContext;

/// `kind = "stdout"` in the registry.
#[derive(Debug)]
pub struct StdoutKind;

impl SinkKind for StdoutKind {
    const NAME: &'static str = "stdout";
    type Raw = RawStdoutSink;
    type Options = StdoutOptions;
    type Sink = StdoutSink<tokio::io::Stdout>;

    fn resolve(raw: RawStdoutSink, cx: &mut SinkContext<'_>) -> Option<StdoutOptions> {
        config::resolve(raw, cx)
    }

    async fn open(name: &str, _: &StdoutOptions) -> Result<Self::Sink, SinkError> {
        Ok(StdoutSink::stdout(name))
    }

    fn probe(name: &str, _: &StdoutOptions) -> CheckLine {
        CheckLine::ok(format!("sink `{name}` (stdout)"))
    }

    fn one_line_per_message(_: &StdoutOptions) -> bool {
        true
    }
}

/// Writes one line per message to an [`AsyncWrite`], standard output by default.
#[derive(Debug)]
pub struct StdoutSink<W> {
    name: String,
    out: W,
    lines: LineBuffer,
    /// The reader of the output is gone for good (EPIPE).
    closed: bool,
}

impl StdoutSink<tokio::io::Stdout> {
    /// A sink on the process's standard output.
    pub fn stdout(name: &str) -> Self {
        StdoutSink::new(name, tokio::io::stdout())
    }
}

impl<W: AsyncWrite + Unpin + Send> StdoutSink<W> {
    /// A sink writing to `out`.
    pub fn new(name: &str, out: W) -> Self {
        StdoutSink {
            name: name.to_owned(),
            out,
            lines: LineBuffer::default(),
            closed: false,
        }
    }

    /// The writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// The writer, consuming the sink.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn failed(&mut self, e: &std::io::Error) -> SinkError {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // Whoever read our output (`rowhook ... | consumer`) has exited;
            // nothing written from now on can reach it.
            self.closed = true;
            self.gone()
        } else {
            SinkError::from_io(
                &self.name,
                &std::io::Error::new(e.kind(), format!("writing to standard output: {e}")),
            )
        }
    }

    fn gone(&self) -> SinkError {
        SinkError::permanent(&self.name, "the reader of standard output has gone away (broken pipe)")
    }
}

impl<W: AsyncWrite + Unpin + Send> Sink for StdoutSink<W> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write_batch(&mut self, batch: &[Message]) -> Result<(), SinkError> {
        if self.closed {
            return Err(self.gone());
        }
        // A previous write was cut short: finish its partial line first, so
        // that every line on the output is a whole message.
        if let Err(e) = self.lines.finish_line(&mut self.out).await {
            return Err(self.failed(&e));
        }
        self.lines.fill(&self.name, batch)?;
        if self.lines.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.lines.write_all(&mut self.out).await {
            return Err(self.failed(&e));
        }
        self.lines.clear();
        Ok(())
    }

    async fn health(&mut self) -> Result<(), SinkError> {
        if self.closed { Err(self.gone()) } else { Ok(()) }
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        if self.closed {
            return Ok(());
        }
        let result = match self.lines.finish_line(&mut self.out).await {
            Ok(()) => self.out.flush().await,
            Err(e) => Err(e),
        };
        result.map_err(|e| self.failed(&e))
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;
    use crate::sink::testing::{msg, msgs};

    #[tokio::test]
    async fn writes_one_line_per_message_in_order() {
        let mut sink = StdoutSink::new("out", Vec::new());
        sink.write_batch(&msgs("a", 0..3)).await.unwrap();
        sink.write_batch(&[]).await.unwrap();
        sink.write_batch(&[msg("x", r#"{"id":"0-1-42:0:3","op":"insert"}"#)])
            .await
            .unwrap();
        sink.close().await.unwrap();
        assert_eq!(
            String::from_utf8(sink.into_inner()).unwrap(),
            "a0\na1\na2\n{\"id\":\"0-1-42:0:3\",\"op\":\"insert\"}\n"
        );
    }

    #[tokio::test]
    async fn a_payload_with_a_newline_writes_nothing() {
        let mut sink = StdoutSink::new("out", Vec::new());
        let err = sink
            .write_batch(&[msg("1", "ok"), msg("2", "two\nlines")])
            .await
            .unwrap_err();
        assert!(!err.is_retryable());
        assert!(sink.get_ref().is_empty());
    }

    /// A writer that accepts `budget` bytes, then fails with `kind` (or stalls when `None`).
    struct Flaky {
        out: Vec<u8>,
        budget: usize,
        kind: Option<std::io::ErrorKind>,
    }

    impl AsyncWrite for Flaky {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            if self.budget == 0 {
                return match self.kind {
                    Some(k) => Poll::Ready(Err(k.into())),
                    None => Poll::Pending,
                };
            }
            let n = buf.len().min(self.budget);
            self.budget -= n;
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_torn_line_is_finished_before_the_next_batch() {
        let flaky = Flaky {
            out: Vec::new(),
            budget: 8,
            kind: None,
        };
        let mut sink = StdoutSink::new("out", flaky);
        // The write stalls inside the second line; the caller gives up (drops
        // the future) and retries the batch later.
        let cut = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            sink.write_batch(&msgs("line", 0..2)),
        )
        .await;
        assert!(cut.is_err());
        assert_eq!(sink.get_ref().out, b"line0\nli");
        sink.out.budget = usize::MAX;
        sink.write_batch(&msgs("line", 0..2)).await.unwrap();
        // The torn line is completed with its own bytes; the retry duplicates
        // whole lines only (at-least-once).
        assert_eq!(
            String::from_utf8(sink.into_inner().out).unwrap(),
            "line0\nline1\nline0\nline1\n"
        );
    }

    #[tokio::test]
    async fn an_error_mid_line_is_finished_by_the_retry() {
        let flaky = Flaky {
            out: Vec::new(),
            budget: 3,
            kind: Some(std::io::ErrorKind::Other),
        };
        let mut sink = StdoutSink::new("out", flaky);
        assert!(sink.write_batch(&msgs("line", 0..1)).await.unwrap_err().is_retryable());
        sink.out.budget = usize::MAX;
        sink.write_batch(&msgs("next", 0..1)).await.unwrap();
        assert_eq!(String::from_utf8(sink.into_inner().out).unwrap(), "line0\nnext0\n");
    }

    #[tokio::test]
    async fn broken_pipe_is_permanent_and_reported_by_health() {
        let flaky = Flaky {
            out: Vec::new(),
            budget: 0,
            kind: Some(std::io::ErrorKind::BrokenPipe),
        };
        let mut sink = StdoutSink::new("out", flaky);
        sink.health().await.unwrap();
        let err = sink.write_batch(&msgs("a", 0..1)).await.unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(sink.health().await.is_err());
        assert!(sink.write_batch(&msgs("a", 0..1)).await.is_err());
    }

    #[tokio::test]
    async fn other_write_errors_are_retryable() {
        let flaky = Flaky {
            out: Vec::new(),
            budget: 0,
            kind: Some(std::io::ErrorKind::Other),
        };
        let mut sink = StdoutSink::new("out", flaky);
        let err = sink.write_batch(&msgs("a", 0..1)).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(err.sink(), "out");
    }
}
