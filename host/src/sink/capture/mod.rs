//! The in-memory sink `rowhook test` puts in place of every configured
//! sink: it keeps each message it is given, so the test can compare what
//! each sink would have received with golden files, without any server.
//!
//! It is not a kind a config can name. It takes on the line rule of the
//! sink it stands in for (a line sink's stand-in takes one line of text per
//! message, as the real one does) and acknowledges every batch at once.

use std::sync::{Arc, Mutex};

use super::kind::SinkKind;
use super::{Message, Sink, SinkError};
use crate::probe::CheckLine;
use crate::problem::SinkContext;

/// The messages a capture sink received, shared with whoever reads them.
#[derive(Debug, Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<Message>>>);

impl Captured {
    /// The messages received so far, in order.
    pub fn messages(&self) -> Vec<Message> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl PartialEq for Captured {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Captured {}

/// A capture sink's settings: the line rule of the sink it stands in for,
/// and where the messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureOptions {
    /// Whether the sink it stands in for writes one line per message.
    pub line: bool,
    /// The tables of the SQL sink it stands in for, whose row operations
    /// it takes (see [`SinkKind::row_ops`]).
    pub row_ops: Option<std::sync::Arc<crate::sink::sql::Tables>>,
    /// The messages.
    pub captured: Captured,
}

/// No config can name this kind: parsing its keys always fails.
#[derive(Debug)]
pub enum RawCaptureSink {}

impl<'de> serde::Deserialize<'de> for RawCaptureSink {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("the capture sink is rowhook test's own"))
    }
}

/// The capture sink in the registry.
#[derive(Debug)]
pub struct CaptureKind;

impl SinkKind for CaptureKind {
    const NAME: &'static str = "capture";
    type Raw = RawCaptureSink;
    type Options = CaptureOptions;
    type Sink = CaptureSink;

    fn resolve(raw: RawCaptureSink, _: &mut SinkContext<'_>) -> Option<CaptureOptions> {
        match raw {}
    }

    async fn open(name: &str, options: &CaptureOptions) -> Result<CaptureSink, SinkError> {
        Ok(CaptureSink {
            name: name.to_owned(),
            captured: options.captured.clone(),
        })
    }

    fn probe(name: &str, _: &CaptureOptions) -> CheckLine {
        CheckLine::ok(format!("sink `{name}` (in memory)"))
    }

    fn one_line_per_message(options: &CaptureOptions) -> bool {
        options.line
    }

    fn row_ops(options: &CaptureOptions) -> Option<std::sync::Arc<crate::sink::sql::Tables>> {
        options.row_ops.clone()
    }
}

/// Keeps every message in memory.
#[derive(Debug)]
pub struct CaptureSink {
    name: String,
    captured: Captured,
}

impl Sink for CaptureSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write_batch(&mut self, batch: &[Message]) -> Result<(), SinkError> {
        self.captured
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(batch);
        Ok(())
    }

    async fn health(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testing::msg;

    #[tokio::test]
    async fn it_keeps_every_message_in_order() {
        let options = CaptureOptions {
            line: true,
            row_ops: None,
            captured: Captured::default(),
        };
        let mut sink = CaptureKind::open("out", &options).await.unwrap();
        sink.write_batch(&[msg("1", "a"), msg("2", "b")]).await.unwrap();
        sink.write_batch(&[msg("3", "c")]).await.unwrap();
        let got: Vec<Vec<u8>> = options.captured.messages().into_iter().map(|m| m.payload).collect();
        assert_eq!(got, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert!(CaptureKind::one_line_per_message(&options));
        assert_eq!(options.clone(), options);
        let other = CaptureOptions {
            line: true,
            row_ops: None,
            captured: Captured::default(),
        };
        assert_ne!(options, other, "two captures are two sinks");
    }
}
