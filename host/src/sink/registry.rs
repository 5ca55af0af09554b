//! The sink kinds of this build, and how the rest of rowhook reaches them.
//!
//! Each kind lives in its own folder (`sink/<kind>/`) and implements
//! [`SinkKind`]: its config keys as written and their validation, the sink it
//! opens, and its `rowhook check` probe. The `kinds!` list at the bottom of
//! this file is the only place that names them (besides their `mod` lines
//! in `sink/mod.rs`); each line sits behind the kind's cargo feature, so a
//! build without a kind has no trace of it.
//!
//! From the list come three enums with one variant per kind: [`RawSinkOptions`]
//! (the kind's own keys, parsed), [`SinkSpec`] (validated, ready to open) and
//! [`AnySink`] (an open sink). Code outside `sink/` holds only these, and the
//! keys every kind shares (`kind`, `retries`, `retry_max_ms`) are read once by
//! [`crate::config`].
//!
//! [`AnySink`] is an enum rather than `Box<dyn Sink>` because
//! [`Sink::write_batch`] runs once per sink per transaction on the event
//! path: the enum dispatches with a `match`, keeps `Sink`'s plain `async fn`s,
//! and needs no boxed future per batch. The macro writes the match arms, so
//! the closed set costs a new kind nothing.
//!
//! `docs/adding-a-sink.md` walks through adding a kind.

use std::path::Path;

use serde::Deserialize;

use super::kind::SinkKind;
use super::{Message, Sink, SinkError};
use crate::probe::CheckLine;
use crate::problem::SinkContext;

/// Writes the three enums and their dispatch from the list of kinds: the
/// kinds a config names, then those rowhook puts in place itself (which
/// have a [`SinkSpec`] and an [`AnySink`] variant, and no config keys).
macro_rules! kinds {
    (
        configurable { $( $(#[$cfg:meta])* $variant:ident => $kind:ty, )* }
        internal { $( $ivariant:ident => $ikind:ty, )* }
    ) => {
        /// The names of the kinds a config can name in this build, in
        /// registry order.
        pub const KINDS: &[&str] = &[$( $(#[$cfg])* <$kind as SinkKind>::NAME, )*];

        /// The own keys of a `[sinks.NAME]` table, parsed by its kind.
        #[derive(Debug)]
        pub enum RawSinkOptions {
            $( $(#[$cfg])* #[doc = concat!("The `", stringify!($variant), "` kind.")] $variant(<$kind as SinkKind>::Raw), )*
        }

        impl RawSinkOptions {
            /// Parses the keys of a sink of kind `kind`; `None` if this build
            /// has no such kind.
            pub fn parse<'de, D: serde::Deserializer<'de>>(kind: &str, keys: D) -> Option<Result<Self, D::Error>> {
                $( $(#[$cfg])* if kind == <$kind as SinkKind>::NAME {
                    return Some(<<$kind as SinkKind>::Raw>::deserialize(keys).map(Self::$variant));
                } )*
                let _ = keys;
                None
            }

            /// Validates the keys (see [`SinkKind::resolve`]).
            pub fn resolve(self, cx: &mut SinkContext<'_>) -> Option<SinkSpec> {
                match self {
                    $( $(#[$cfg])* Self::$variant(raw) => <$kind as SinkKind>::resolve(raw, cx).map(SinkSpec::$variant), )*
                }
            }
        }

        /// How to open a sink: the validated, kind-specific settings from the config.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum SinkSpec {
            $( $(#[$cfg])* #[doc = concat!("The `", stringify!($variant), "` kind.")] $variant(<$kind as SinkKind>::Options), )*
            $( #[doc = concat!("The `", stringify!($ivariant), "` kind.")] $ivariant(<$ikind as SinkKind>::Options), )*
        }

        impl SinkSpec {
            /// The kind's name as written in the config.
            pub fn kind(&self) -> &'static str {
                match *self {
                    $( $(#[$cfg])* Self::$variant(_) => <$kind as SinkKind>::NAME, )*
                    $( Self::$ivariant(_) => <$ikind as SinkKind>::NAME, )*
                }
            }

            /// See [`SinkKind::one_line_per_message`].
            pub fn one_line_per_message(&self) -> bool {
                match *self {
                    $( $(#[$cfg])* Self::$variant(ref o) => <$kind as SinkKind>::one_line_per_message(o), )*
                    $( Self::$ivariant(ref o) => <$ikind as SinkKind>::one_line_per_message(o), )*
                }
            }

            /// See [`SinkKind::row_ops`].
            pub fn row_ops(&self) -> Option<std::sync::Arc<super::sql::Tables>> {
                match *self {
                    $( $(#[$cfg])* Self::$variant(ref o) => <$kind as SinkKind>::row_ops(o), )*
                    $( Self::$ivariant(ref o) => <$ikind as SinkKind>::row_ops(o), )*
                }
            }

            /// What the sink takes as a payload: row operations on its
            /// tables (see [`SinkKind::row_ops`]), one line of text, or any bytes.
            pub fn payload_form(&self) -> super::PayloadForm {
                match self.row_ops() {
                    Some(tables) => super::PayloadForm::RowOps(tables),
                    None if self.one_line_per_message() => super::PayloadForm::Line,
                    None => super::PayloadForm::Bytes,
                }
            }

            /// See [`SinkKind::path`].
            pub fn path(&self) -> Option<&Path> {
                match *self {
                    $( $(#[$cfg])* Self::$variant(ref o) => <$kind as SinkKind>::path(o), )*
                    $( Self::$ivariant(ref o) => <$ikind as SinkKind>::path(o), )*
                }
            }

            /// See [`SinkKind::probe`].
            pub fn probe(&self, name: &str) -> CheckLine {
                match *self {
                    $( $(#[$cfg])* Self::$variant(ref o) => <$kind as SinkKind>::probe(name, o), )*
                    $( Self::$ivariant(ref o) => <$ikind as SinkKind>::probe(name, o), )*
                }
            }
        }

        /// A sink of any kind: how the runtime holds one (see the module docs
        /// for why an enum).
        #[derive(Debug)]
        pub enum AnySink {
            $( $(#[$cfg])* #[doc = concat!("The `", stringify!($variant), "` kind.")] $variant(<$kind as SinkKind>::Sink), )*
            $( #[doc = concat!("The `", stringify!($ivariant), "` kind.")] $ivariant(<$ikind as SinkKind>::Sink), )*
        }

        impl AnySink {
            /// Opens the sink `name` as `spec` says (see [`SinkKind::open`]).
            pub async fn open(name: &str, spec: &SinkSpec) -> Result<AnySink, SinkError> {
                Ok(match *spec {
                    $( $(#[$cfg])* SinkSpec::$variant(ref o) => AnySink::$variant(<$kind as SinkKind>::open(name, o).await?), )*
                    $( SinkSpec::$ivariant(ref o) => AnySink::$ivariant(<$ikind as SinkKind>::open(name, o).await?), )*
                })
            }
        }

        impl Sink for AnySink {
            fn name(&self) -> &str {
                match *self {
                    $( $(#[$cfg])* Self::$variant(ref s) => s.name(), )*
                    $( Self::$ivariant(ref s) => s.name(), )*
                }
            }

            async fn write_batch(&mut self, batch: &[Message]) -> Result<(), SinkError> {
                match *self {
                    $( $(#[$cfg])* Self::$variant(ref mut s) => s.write_batch(batch).await, )*
                    $( Self::$ivariant(ref mut s) => s.write_batch(batch).await, )*
                }
            }

            async fn health(&mut self) -> Result<(), SinkError> {
                match *self {
                    $( $(#[$cfg])* Self::$variant(ref mut s) => s.health().await, )*
                    $( Self::$ivariant(ref mut s) => s.health().await, )*
                }
            }

            async fn close(&mut self) -> Result<(), SinkError> {
                match *self {
                    $( $(#[$cfg])* Self::$variant(ref mut s) => s.close().await, )*
                    $( Self::$ivariant(ref mut s) => s.close().await, )*
                }
            }

            fn register_metrics(&self, registry: &crate::telemetry::Registry) {
                match *self {
                    $( $(#[$cfg])* Self::$variant(ref s) => s.register_metrics(registry), )*
                    $( Self::$ivariant(ref s) => s.register_metrics(registry), )*
                }
            }

            fn attach_ledger(&mut self, ledger: &crate::store::Ledger) {
                match *self {
                    $( $(#[$cfg])* Self::$variant(ref mut s) => s.attach_ledger(ledger), )*
                    $( Self::$ivariant(ref mut s) => s.attach_ledger(ledger), )*
                }
            }

            fn limits(&self) -> super::SinkLimits {
                match *self {
                    $( $(#[$cfg])* Self::$variant(ref s) => s.limits(), )*
                    $( Self::$ivariant(ref s) => s.limits(), )*
                }
            }

            fn defer_durability(&mut self) {
                match *self {
                    $( $(#[$cfg])* Self::$variant(ref mut s) => s.defer_durability(), )*
                    $( Self::$ivariant(ref mut s) => s.defer_durability(), )*
                }
            }

            async fn make_durable(&mut self) -> Result<(), SinkError> {
                match *self {
                    $( $(#[$cfg])* Self::$variant(ref mut s) => s.make_durable().await, )*
                    $( Self::$ivariant(ref mut s) => s.make_durable().await, )*
                }
            }
        }
    };
}

// The kinds of this build: one line each, behind the kind's cargo feature.
kinds! {
    configurable {
    #[cfg(feature = "sink-stdout")]
    Stdout => super::stdout::StdoutKind,
    #[cfg(feature = "sink-file")]
    File => super::file::FileKind,
    #[cfg(feature = "sink-fifo")]
    Fifo => super::fifo::FifoKind,
    #[cfg(feature = "sink-redis")]
    Redis => super::redis::RedisKind,
    #[cfg(feature = "sink-nats")]
    Nats => super::nats::NatsKind,
    #[cfg(feature = "sink-amqp")]
    Amqp => super::amqp::AmqpKind,
    #[cfg(feature = "sink-mqtt")]
    Mqtt => super::mqtt::MqttKind,
    #[cfg(feature = "sink-http")]
    Http => super::http::HttpKind,
    #[cfg(feature = "sink-kafka")]
    Kafka => super::kafka::KafkaKind,
    #[cfg(feature = "sink-postgres")]
    Postgres => super::postgres::PostgresKind,
    #[cfg(feature = "sink-mysql")]
    Mysql => super::mysql::MysqlKind,
    #[cfg(feature = "sink-exec")]
    Exec => super::exec::ExecKind,
    }
    // `rowhook test`'s stand-in for every sink.
    internal {
    Capture => super::capture::CaptureKind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testing::{TempDir, msg};
    use crate::sink::{fifo, file, stdout};

    #[test]
    fn every_kind_is_listed_once() {
        assert_eq!(
            KINDS,
            [
                "stdout", "file", "fifo", "redis", "nats", "amqp", "mqtt", "http", "kafka", "postgres", "mysql", "exec"
            ]
        );
    }

    #[tokio::test]
    async fn any_sink_opens_each_kind() {
        let dir = TempDir::new("any");
        let file = SinkSpec::File(file::FileOptions {
            path: dir.path().join("out.jsonl"),
            fsync: file::FsyncPolicy::Always,
            rotation: None,
        });
        let mut s = AnySink::open("f", &file).await.unwrap();
        assert_eq!(s.name(), "f");
        s.write_batch(&[msg("1", "x")]).await.unwrap();
        s.health().await.unwrap();
        s.close().await.unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap(), "x\n");

        let fifo = SinkSpec::Fifo(fifo::FifoOptions {
            path: dir.path().join("p.fifo"),
            mode: 0o600,
        });
        let mut s = AnySink::open("p", &fifo).await.unwrap();
        // No reader: unavailable, not an open failure.
        assert!(s.health().await.unwrap_err().is_retryable());

        let out = SinkSpec::Stdout(stdout::StdoutOptions);
        let mut s = AnySink::open("o", &out).await.unwrap();
        s.write_batch(&[]).await.unwrap();
        assert_eq!(out.kind(), "stdout");
        assert_eq!(out.path(), None);
        assert_eq!(fifo.path(), Some(dir.path().join("p.fifo").as_path()));
        assert!([&out, &file, &fifo].iter().all(|s| s.one_line_per_message()));
    }
}
