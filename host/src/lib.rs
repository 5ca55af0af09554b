//! rowhook: react to every row change in MySQL or MariaDB.
//!
//! rowhook connects to the server as a replica, decodes the row-based binlog
//! with its own decoder ([`decode`]), and hands each row change on. This
//! crate holds the runtime; the `rowhook` binary is a thin CLI over it.
//!
//! The data path: a [`source`] frames binlog events; the [`driver`] loop
//! feeds them to the [`decode`]r and hands what it decodes to a consumer,
//! the handler [`pipeline`] or `inspect`'s printer. `docs/ARCHITECTURE.md`
//! draws it and names the seams.
//!
//! Every module:
//!
//! - [`cli`]: the commands, one module each: `run`, `replay`, `inspect`,
//!   `check`, `state`.
//! - [`config`]: `rowhook.toml`, parsed and resolved into a validated plan.
//! - [`problem`]: config problems gathered with key and fix; what a sink
//!   kind's keys report into.
//! - [`source`]: the [`source::Source`] trait; the live replica stream (with
//!   reconnects) and binlog files.
//! - [`driver`]: the one read loop of `run`, `replay` and `inspect`, and its
//!   [`driver::Consumer`] trait.
//! - [`decode`]: binlog bytes → row changes, pure and allocation-free per row.
//! - [`pipeline`]: route → call → buffer → forward → acknowledge →
//!   checkpoint, one module a step: [`pipeline::router`],
//!   [`pipeline::dispatch`] (with [`pipeline::breaker`]),
//!   [`pipeline::delivery`], [`pipeline::dead_letter`],
//!   [`pipeline::checkpoint`], [`pipeline::control`] (commands from other
//!   threads).
//! - [`handler_id`]: a handler's stable identity, tenant and name; the
//!   roster of which tenant each running handler belongs to.
//! - [`deploy`]: handlers tenants deploy while rowhook runs, from their
//!   directories and through the admin API.
//! - [`runtime`]: wasmtime: handler components, limits, capabilities, hot reload.
//! - [`guest_abi`]: a decoded row change in the row change encoding
//!   (`guest-sdk/abi/SPEC.md`), written with `rowhook-abi`.
//! - [`sink`]: where emitted messages go: one folder per kind (stdout, file,
//!   fifo, redis), listed in [`sink::registry`], each behind a cargo feature.
//! - [`store`]: the crash-safe store of the position, handler state, dead letters and
//!   the exec sinks' once-only ledger.
//! - `http` (feature `http-server`): the HTTP server for operators
//!   (`[http]`): metrics, health, readiness, live status, the admin API.
//! - [`status`]: the status report (`status.json`, `rowhook state`) and the run's counters.
//! - [`telemetry`]: one registry of counters and gauges that the pipeline,
//!   the source, the sinks and the handlers write, and `rowhook state`,
//!   `status.json`, Prometheus text and OpenMetrics read.
//! - [`probe`]: the lines of a `rowhook check` report, and the probes sinks share.
//! - [`json_text`]: hand-written JSON output for the hot path.
//! - `cluster` (feature `cluster`): `[cluster]`, and the roles that share
//!   one source over NATS JetStream: `capture` publishes every change to a
//!   stream of partitions under a lease.
//! - `backoff`: the one capped exponential backoff (reconnects, sink retries).

mod backoff;
pub mod cli;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
pub mod decode;
pub mod deploy;
pub mod driver;
pub mod guest_abi;
pub mod handler_id;
#[cfg(feature = "http-server")]
pub mod http;
pub mod json_text;
pub mod pipeline;
pub mod probe;
pub mod problem;
pub mod runtime;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod status;
pub mod store;
pub mod telemetry;
