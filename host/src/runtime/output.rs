//! A handler's standard output and error: what a language runtime writes
//! there (a Rust panic message, a Python traceback, `console.log`) goes to
//! rowhook's log under the handler's name, through the same bounds and rate
//! as its `log` calls, and the end of what a trapped call wrote to stderr
//! goes into the trap's message, so `on_error` records say why.
//!
//! Writing never blocks and never fails: a call's output past
//! [`MAX_BYTES_PER_CALL`] is dropped and counted.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The most bytes of one call's output kept (stdout and stderr each).
pub const MAX_BYTES_PER_CALL: usize = 64 * 1024;

/// One of a handler instance's output streams. Clones write to the same
/// buffer.
#[derive(Clone, Default)]
pub struct GuestOutput(Arc<Mutex<Captured>>);

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    /// Bytes dropped since the last take: over [`MAX_BYTES_PER_CALL`].
    dropped: usize,
}

impl GuestOutput {
    fn append(&self, bytes: &[u8]) {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let room = MAX_BYTES_PER_CALL.saturating_sub(c.bytes.len());
        let kept = bytes.len().min(room);
        c.bytes.extend_from_slice(&bytes[..kept]);
        c.dropped += bytes.len() - kept;
    }

    /// What was written since the last take, as lines (a last line without
    /// a newline included), and how many bytes were dropped.
    pub fn take_lines(&self) -> (Vec<String>, usize) {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if c.bytes.is_empty() && c.dropped == 0 {
            return (Vec::new(), 0);
        }
        let lines = String::from_utf8_lossy(&c.bytes)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        c.bytes.clear();
        (lines, std::mem::take(&mut c.dropped))
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always ready for as much as a write may carry: what does not fit
        // the call's budget is dropped, never waited on.
        Ok(4096)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The last lines of `lines` (at most three), as one line: what a trap's
/// message quotes of stderr.
pub fn tail(lines: &[String]) -> Option<String> {
    let start = lines.len().saturating_sub(3);
    (!lines.is_empty()).then(|| lines[start..].join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_taken_as_lines_and_bounded_per_call() {
        let mut out = GuestOutput::default();
        out.write(Bytes::from_static(b"thread panicked at src/lib.rs:3:5:\nboom\n\n"))
            .unwrap();
        out.write(Bytes::from_static(b"no newline")).unwrap();
        let (lines, dropped) = out.take_lines();
        assert_eq!(lines, ["thread panicked at src/lib.rs:3:5:", "boom", "no newline"]);
        assert_eq!(dropped, 0);
        assert_eq!(out.take_lines(), (vec![], 0));

        out.write(Bytes::from(vec![b'x'; MAX_BYTES_PER_CALL + 10])).unwrap();
        let (lines, dropped) = out.take_lines();
        assert_eq!(lines[0].len(), MAX_BYTES_PER_CALL);
        assert_eq!(dropped, 10);
    }

    #[test]
    fn a_trap_quotes_the_last_three_lines() {
        let lines: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(tail(&lines).as_deref(), Some("b | c | d"));
        assert_eq!(tail(&[]), None);
    }
}
