//! End-to-end tests of rowhook against a real MariaDB with the binlog on.
//!
//! Every test that needs a server starts its own (`tests/mariadb.sh`), on a
//! free port with a temporary datadir, and stops it when done. Outputs are
//! compared with golden JSONL files under `tests/golden/`; set
//! `ROWHOOK_BLESS=1` to rewrite them after a deliberate change.

/// The row change encoding's test vectors: rowhook's writer gives their bytes.
mod abi_vectors;
/// What handler authors run: `rowhook test` with golden files.
mod authoring;
/// `rowhook capture`: the stream it fills, its lease, a standby taking over, a JetStream node stopping.
#[cfg(feature = "cluster")]
mod cluster;
/// Reading MySQL's binlog formats from the conformance corpus in ../shared.
mod conformance;
/// SIGKILL at random moments under load: nothing lost, state exactly once.
mod crash;
/// The dashboard in headless Chromium during a live run of daily-signups.
#[cfg(feature = "http-server")]
mod dashboard;
/// Sinks that cannot take a write: retries, on_error, stopping, backpressure.
mod delivery;
/// Handlers deployed while running: tenant directories and the admin API.
#[cfg(feature = "http-server")]
mod deploy;
/// Wrong passwords, missing grants, wrong server settings, bad files.
mod errors;
/// The example handlers and configs of `examples/`, replayed and live, and the README's demo.
mod examples;
/// Connection faults (killed, server restart, stall) and bad start positions.
mod faults;
/// Host-side filtering: a handler is called exactly for its tables' and ops' changes.
mod filtering;
/// WebAssembly handlers run by `rowhook replay`: output, containment, policies.
mod handlers;
/// A suspended handler's changes held in the store and handed over in order.
mod hold;
/// The HTTP server for operators: metrics, readiness, status, events, the admin API, JSON logs.
#[cfg(feature = "http-server")]
mod http;
/// Tenants' lanes: a halt stops its tenant alone, which catches up after a restart.
#[cfg(feature = "http-server")]
mod lanes;
/// Host memory for what handlers emit: the byte budget, the key cap, flushes by size.
mod limits;
/// Private nats-server instances and clusters, and what their streams hold.
#[cfg(feature = "sink-nats")]
mod nats_support;
/// A TCP proxy that cuts connections, for outage tests of heavy services.
#[cfg_attr(not(feature = "sink-amqp"), allow(dead_code))]
mod proxy;
/// Hot reload under load; modules refused at load and by `rowhook check`.
mod reload;
/// Resuming from every commit position gives exactly the rest.
mod resume;
/// The amqp sink against the local RabbitMQ: confirms, refusals, cuts through a proxy.
#[cfg(feature = "sink-amqp")]
mod sink_amqp;
/// The exec sink with real scripts: hostile fields, hangs, retries, the once-only ledger across SIGKILL, `check`.
#[cfg(feature = "sink-exec")]
mod sink_exec;
/// The http sink against a real HTTP/1.1 receiver: both modes, signatures, outages, Retry-After, `check`.
#[cfg(feature = "sink-http")]
mod sink_http;
/// The kafka sink against a private tansu broker: partitions, restarts, SCRAM over TLS, limits, `check`.
#[cfg(feature = "sink-kafka")]
mod sink_kafka;
/// The mqtt sink against a private Mosquitto: MQTT 5 and 3.1.1, restarts, limits, credentials.
#[cfg(feature = "sink-mqtt")]
mod sink_mqtt;
/// The mysql sink against the local MariaDB and private ones: rows, types, deadlocks, restarts, TLS, kills, `check`.
#[cfg(feature = "sink-mysql")]
mod sink_mysql;
/// The nats sink against a real nats-server with JetStream.
#[cfg(feature = "sink-nats")]
mod sink_nats;
/// The postgres sink against the local PostgreSQL and private ones: rows, types, deadlocks, restarts, TLS, kills, `check`.
#[cfg(feature = "sink-postgres")]
mod sink_postgres;
/// The redis sink against a private redis-server: every mode, restarts, limits, `check`.
#[cfg(feature = "sink-redis")]
mod sink_redis;
/// What the postgres and mysql sink tests share: row operations, lock-holding sessions, the copy through kills.
#[cfg(any(feature = "sink-postgres", feature = "sink-mysql"))]
mod sink_sql;
/// What the message-broker sink tests share.
#[cfg(any(
    feature = "sink-nats",
    feature = "sink-mqtt",
    feature = "sink-amqp",
    feature = "sink-postgres",
    feature = "sink-mysql",
    feature = "sink-exec"
))]
mod sink_support;
/// Snapshots: every type as the binlog has it, resumed after kills, read
/// again while writes go on, slices and refusals.
#[cfg(feature = "http-server")]
mod snapshot;
/// `replay --checkpoint` and `rowhook state`: resume, report, reset, move.
mod state;
/// SIGTERM and SIGINT stop `rowhook run` within a second mid-call, losing nothing.
mod stop;
/// Shared helpers: the test server, running the CLI, golden files.
mod support;
/// The type-coverage workload: live and file against golden, and against mysqlbinlog.
mod types;
