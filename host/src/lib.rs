//! rowhook: react to every row change in MySQL or MariaDB.
//!
//! rowhook connects to the server as a replica, decodes the row-based binlog
//! with its own decoder ([`decode`]), and hands each row change on. This
//! crate holds the runtime; the `rowhook` binary is a thin CLI over it.
//!
//! - [`decode`]: binlog bytes → row changes, pure and allocation-free per row.
//! - [`source`]: the live replica stream and binlog files.
//! - [`inspect`]: `rowhook inspect`, row changes as JSON lines.
//! - [`check`]: `rowhook check`, is a server ready.
//! - [`config`]: `rowhook.toml`, parsed and resolved into a validated plan.
//! - [`sink`]: where emitted messages go: one folder per kind (stdout, file,
//!   fifo), listed in [`sink::registry`], each behind a cargo feature.
//! - [`telemetry`]: one registry of counters and gauges that the pipeline,
//!   the source, the sinks and the handlers write, and `rowhook state`,
//!   `status.json` and Prometheus text read.

mod backoff;
pub mod check;
pub mod config;
pub mod decode;
pub mod driver;
pub mod guest_abi;
pub mod inspect;
pub mod json_text;
pub mod ops;
pub mod pipeline;
pub mod run;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod store;
pub mod telemetry;
