//! `rowhook.toml`: parse, then resolve.
//!
//! Parsing is pure: [`RawConfig::parse`] takes the file's text and a way to
//! look up environment variables, and yields raw structs that mirror the TOML
//! one to one (unknown keys are rejected). [`RawConfig::resolve`] turns them
//! into a validated [`Plan`]: sinks typed per kind, handlers with their grants,
//! limits with defaults, paths made absolute against the config file's
//! directory. [`Plan::load`] does both for a file on disk.
//!
//! The doc comment of every raw field is that key's documentation.
//!
//! `${NAME}` in any string value is replaced by the environment variable
//! `NAME`, so secrets stay out of the file; `$$` is a literal `$`, and any
//! other `$` is an error. Expansion happens on parsed string values, so
//! comments are never expanded and a value holding quotes cannot break the
//! TOML around it.
//!
//! Secrets never leak: the source URL lives in [`RedactedUrl`] and then in
//! [`SourceUrl`], whose `Debug`/`Display` hide the password, and every error
//! message is scrubbed of the URL and of every expanded variable's value.
//!
//! ```
//! use rowhook::config::Plan;
//! use std::path::Path;
//!
//! let text = r#"
//! [sinks.out]
//! kind = "stdout"
//!
//! [[handlers]]
//! name = "orders"
//! module = "handlers/orders.wasm"
//! tables = ["shop.orders"]
//! sinks = ["out"]
//! "#;
//! let plan = Plan::parse(text, Path::new("/etc/rowhook/rowhook.toml"), |_| None).unwrap();
//! assert_eq!(plan.handlers[0].module, Path::new("/etc/rowhook/handlers/orders.wasm"));
//! assert!(plan.handlers[0].grants.allows("out"));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de;
use serde::{Deserialize, Deserializer};

use crate::decode::Op;
pub use crate::problem::{Problem, SinkContext};
use crate::problem::{Problems, resolve_path};
use crate::sink::{KINDS, RawSinkOptions, SinkRetry, SinkSpec};
use crate::source::StartPosition;
use crate::source::server::SourceUrl;

mod tenants;
pub use tenants::{RawTenant, RawTenantLimits, TenantPlan};

// ---------------------------------------------------------------------------
// Raw: the TOML as written.
// ---------------------------------------------------------------------------

/// The whole `rowhook.toml`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[source]`: the server to replicate from. Required by `rowhook run`;
    /// `rowhook replay` reads recorded files and ignores it.
    pub source: Option<RawSource>,
    /// `[state]`: where the checkpoint and handler state live.
    pub state: Option<RawState>,
    /// `[sinks.NAME]`: the places handlers may send messages to, by name.
    /// A sink is used only by the handlers whose `sinks` name it.
    // Read apart from the rest (see `parse_sinks`): each kind parses its own keys.
    #[serde(default, deserialize_with = "read_apart")]
    pub sinks: BTreeMap<String, RawSink>,
    /// `[[handlers]]`: the WebAssembly handlers, each run on the row changes of
    /// its `tables` and `ops`, in binlog order.
    #[serde(default)]
    pub handlers: Vec<RawHandler>,
    /// `[http]`: the HTTP server for operators (metrics, health, status,
    /// admin). Without it, no server runs.
    pub http: Option<RawHttp>,
    /// `[tenants.NAME]`: the teams sharing this rowhook, what each may read
    /// and emit to, and caps on its handlers. Without it, `tenant` is a
    /// label only.
    #[serde(default)]
    pub tenants: BTreeMap<String, RawTenant>,
    /// `[deploy]`: tenant directories of handlers deployed while running.
    pub deploy: Option<RawDeploy>,
    /// `[cluster]`: the NATS JetStream deployment of `rowhook capture`.
    #[cfg(feature = "cluster")]
    pub cluster: Option<crate::cluster::config::RawCluster>,
    /// Handlers deployed from tenant directories, each with the key its
    /// problems are reported under (see [`RawConfig::add_deployed`]).
    #[serde(skip)]
    deployed: Vec<(String, RawHandler)>,
    /// Values that came from the environment: scrubbed from every error.
    #[serde(skip)]
    secrets: Secrets,
}

/// `[source]`: the MySQL or MariaDB server rowhook reads the binlog of, as a replica.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// `mysql://USER:PASSWORD@HOST:PORT`. Put the password in the environment:
    /// `url = "mysql://repl:${ROWHOOK_DB_PASSWORD}@127.0.0.1:3306"`. The user needs
    /// REPLICATION SLAVE and REPLICATION CLIENT.
    pub url: RedactedUrl,
    /// The replica server id rowhook announces: non-zero and unique among the
    /// server's replicas (a duplicate disconnects the other replica).
    pub server_id: u32,
    /// Where to start when there is no checkpoint yet (a checkpoint always wins):
    /// `"earliest"`, `"latest"` (the default), `"FILE:POS"`, a GTID set
    /// (`"0-1-100"`), `{ gtid = "0-1-100" }` or `{ file = "mysql-bin.000003", pos = 4 }`.
    pub start: Option<RawStart>,
    /// Seconds between server heartbeats when the binlog is idle, 1 to 3600
    /// (default 30): a silent connection is noticed within about twice this.
    pub heartbeat_secs: Option<u32>,
    /// `"initial"`: on the first start (no checkpoint), read every row of
    /// the subscribed tables first, as `snapshot` changes, then the binlog
    /// from the place the snapshot is consistent with. `"never"` (the
    /// default): the binlog only.
    pub snapshot: Option<RawSnapshotMode>,
    /// Rows a snapshot reads per chunk (one transaction on the server, one
    /// checkpoint), 1 to 1,000,000 (default 10,000).
    pub snapshot_chunk_rows: Option<u32>,
    /// At most this many rows a second read by a snapshot (default: no cap).
    pub snapshot_rows_per_second: Option<u32>,
    /// The server as the user snapshots read with (SELECT on the tables;
    /// default: `url`'s user, which then needs SELECT as well).
    pub snapshot_url: Option<RedactedUrl>,
}

/// `[source] snapshot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawSnapshotMode {
    /// Read the subscribed tables on the first start.
    Initial,
    /// No snapshot but those asked for.
    Never,
}

/// `[http]`: the HTTP server for operators: `/metrics`, `/healthz`,
/// `/readyz`, `/status`, `/events` and the admin API under `/admin/`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// `IP:PORT` to listen on (default `127.0.0.1:9187`; port 0 picks a
    /// free one, logged at start). An address other than loopback needs a
    /// `token`.
    pub listen: Option<String>,
    /// The bearer token of the admin API (`Authorization: Bearer TOKEN`),
    /// at least 16 characters; put it in the environment: `token =
    /// "${ROWHOOK_HTTP_TOKEN}"`. Without it every admin call is refused.
    pub token: Option<String>,
}

/// `start = ...`: a string, or a table naming a GTID or a file position.
#[derive(Debug)]
pub enum RawStart {
    /// `start = "earliest" | "latest" | "FILE:POS" | "GTID-SET"`.
    Text(String),
    /// `start = { gtid = "..." }` or `start = { file = "...", pos = N }`.
    Table(RawStartTable),
}

/// The table form of `start`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStartTable {
    /// A GTID set: start after everything in it (MariaDB `0-1-100`, MySQL `uuid:1-100`).
    pub gtid: Option<String>,
    /// A binlog file name (`mysql-bin.000003`); needs `pos`.
    pub file: Option<String>,
    /// The byte offset of an event in `file`, at least 4 (4 is the file's first event).
    pub pos: Option<u64>,
}

/// `[state]`: the embedded, crash-safe store of the checkpoint and handler state.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// A directory, relative to the config file's directory unless absolute
    /// (default `var/rowhook`). Created when missing.
    pub path: Option<String>,
    /// How often acknowledged transactions are committed to the store, in
    /// milliseconds (default 500; 0 commits after every transaction). A
    /// crash handles again at most this much of the stream, with the same ids.
    pub commit_interval_ms: Option<u64>,
}

/// `[sinks.NAME]`: one destination. `kind` selects it, and the other keys
/// are those every sink has (below) and the kind's own (see [`crate::sink`]).
#[derive(Debug)]
pub struct RawSink {
    /// Which kind of sink this is: one of the kinds this build has
    /// ([`crate::sink::KINDS`]; the full build has `stdout`, `file` and `fifo`).
    pub kind: String,
    /// Retries of a write the sink cannot take now (no FIFO reader, a full
    /// disk): a number (default 8) or `"forever"`. Waits start at 50 ms and
    /// double up to `retry_max_ms`; then the handler's `on_error` applies.
    pub retries: Option<RawRetries>,
    /// The longest wait between two retries, 50 to 600000 ms (default 5000).
    pub retry_max_ms: Option<u64>,
    /// The kind's own keys, parsed by the kind; `None` when this build has
    /// no such kind (resolving says which kinds it has).
    pub options: Option<RawSinkOptions>,
}

/// `sinks` is taken out of the document before serde reads the rest (see
/// `parse_sinks`); the field stays so that an unknown top-level key still
/// lists it among the expected ones.
fn read_apart<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, RawSink>, D::Error> {
    de::IgnoredAny::deserialize(d).map(|_| BTreeMap::new())
}

/// `[[handlers]]`: one WebAssembly handler.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHandler {
    /// Unique name (letters, digits, `_`, `-`; at most 64): names its state,
    /// metrics and log lines.
    pub name: String,
    /// The team that owns the handler (same characters as `name`, default
    /// `"default"`). Tenants never see each other's tables, sinks or state.
    pub tenant: Option<String>,
    /// The component (`.wasm`), relative to the config file's directory unless
    /// absolute. Watched: a changed file is reloaded at a transaction boundary.
    pub module: String,
    /// The tables whose row changes the handler sees: `"db.table"` or `"db.*"`.
    /// Filtering happens in the host; the handler sees nothing else.
    pub tables: Vec<String>,
    /// Which operations it sees: any of `"insert"`, `"update"`, `"delete"`
    /// (default: all three).
    pub ops: Option<Vec<RawOp>>,
    /// The sinks it may emit to, by name: its grants. Emitting anywhere else is
    /// denied; an empty list (the default) grants nothing.
    #[serde(default)]
    pub sinks: Vec<String>,
    /// Per-handler caps; each has a default.
    pub limits: Option<RawLimits>,
    /// What a trap, timeout or quota breach does: `"halt"` (the default: stop
    /// before the checkpoint moves), `"skip"` (log and count it) or
    /// `"dead-letter"` (write the event and the error to `dead_letter`).
    pub on_error: Option<RawOnError>,
    /// With `on_error = "dead-letter"`: the sink that receives failed events.
    /// Written by rowhook, not the handler, so it needs no grant.
    pub dead_letter: Option<String>,
    /// The circuit breaker: `failures` failures within `window_ms` suspend
    /// the handler for `cooldown_ms`.
    pub breaker: Option<RawBreaker>,
    /// Deployed handlers only (see [`crate::deploy`]): where a handler
    /// added to a running rowhook starts, `"lane"` (the default: the next
    /// transaction rowhook handles) or `"latest"` (the first transaction
    /// committed after it was deployed).
    pub start: Option<RawHandlerStart>,
}

/// `start` of a deployed handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawHandlerStart {
    /// The next transaction rowhook handles.
    Lane,
    /// The first transaction the server commits after the deployment.
    Latest,
}

/// `[deploy]`: tenants deploy their own handlers while rowhook runs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeploy {
    /// The directory holding one directory per tenant (`DIR/TENANT/*.toml`
    /// and their modules), relative to the config file unless absolute.
    pub dir: String,
}

/// `breaker = { failures = 5, window_ms = 10000, cooldown_ms = 30000 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    /// Timeouts and traps (not errors the handler returns) within the
    /// window that suspend the handler, 0 to 1000000 (default 5; 0: never).
    pub failures: Option<u32>,
    /// The window, 1 to 3600000 ms (default 10000).
    pub window_ms: Option<u32>,
    /// How long the handler stays suspended before one trial change, 1 to
    /// 3600000 ms (default 30000).
    pub cooldown_ms: Option<u32>,
    /// What becomes of the handler's changes while it is suspended:
    /// `"on_error"` (the default: each fails at once under its `on_error`)
    /// or `"hold"` (kept in its held file, in order, and handed to it once a
    /// trial succeeds).
    pub while_suspended: Option<RawWhileSuspended>,
    /// With `while_suspended = "hold"`: the most the held changes of the
    /// handler may take, 1 to 65536 MiB (default 256); past it, further
    /// changes fail under its `on_error`.
    pub hold_mb: Option<u32>,
    /// With `while_suspended = "hold"`: where held changes wait. `"binlog"`
    /// (the default: they are read from the binlog again when handed
    /// over, where the source can) or `"file"` (copied into the handler's
    /// held file).
    pub hold_in: Option<RawHoldIn>,
}

/// `hold_in = ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawHoldIn {
    /// `"binlog"`.
    Binlog,
    /// `"file"`.
    File,
}

/// `while_suspended = ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawWhileSuspended {
    /// `"on_error"`.
    OnError,
    /// `"hold"`.
    Hold,
}

/// An operation name in `ops`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawOp {
    /// `"insert"`.
    Insert,
    /// `"update"`.
    Update,
    /// `"delete"`.
    Delete,
    /// `"snapshot"`: rows read by a snapshot of the table.
    Snapshot,
}

/// `limits = { memory_mb = 32, time_ms = 50, emits_per_event = 16 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Linear memory cap of one instance in MiB, 1 to 4096 (default 64).
    pub memory_mb: Option<u32>,
    /// Wall-clock deadline of one call in milliseconds, 1 to 60000 (default
    /// 100): the time from the call to its return, host calls included.
    pub time_ms: Option<u32>,
    /// Messages one row change may emit, 0 to 10000 (default 64).
    pub emits_per_event: Option<u32>,
    /// Bytes (payloads and keys) one row change may emit, 1 to 1024 MiB
    /// (default 16).
    pub emit_mb_per_event: Option<u32>,
    /// Log lines per second the handler's log may average, 0 to 100000
    /// (default 100), with bursts of ten seconds' worth; the rest are
    /// dropped and counted. Lines below the log level (`ROWHOOK_LOG`) do
    /// not count.
    pub log_lines_per_sec: Option<u32>,
    /// Largest module file rowhook reads for the handler, 1 to 1024 MiB
    /// (default 64): a larger file, at start or on reload, is refused
    /// without being read.
    pub module_mb: Option<u32>,
    /// Bytes of keys and values the handler's state may hold, in MiB, 1 to
    /// 4096 (default 64). A write that would grow the state past it gets
    /// the `quota` error; deletes, and writes that do not grow the state,
    /// are always taken. State lives in memory while rowhook runs: this
    /// bounds that memory and the handler's share of the store on disk.
    pub state_mb: Option<u32>,
    /// Keys the handler's state may hold, 1 to 1000000 (default 1000000).
    /// A write that would add a key past it gets the `quota` error.
    pub state_keys: Option<u32>,
    /// Core WebAssembly instances one instance of the handler may create,
    /// 1 to 1000 (default 100). A Rust or C handler makes a few; an
    /// interpreter-based one (Python, JavaScript) dozens. A module that
    /// needs more is refused at load, before it is compiled.
    pub instances: Option<u32>,
}

/// `on_error = ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawOnError {
    /// `"halt"`.
    Halt,
    /// `"skip"`.
    Skip,
    /// `"dead-letter"`.
    DeadLetter,
}

/// A database URL as written in the file: `Debug` and `Display` hide the password.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct RedactedUrl(String);

impl RedactedUrl {
    /// The URL with its password (handle with care: never log it).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedactedUrl({self})")
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match url_password_range(&self.0) {
            Some(r) => write!(f, "{}***{}", &self.0[..r.start], &self.0[r.end..]),
            None => f.write_str(&self.0),
        }
    }
}

/// Byte range of the password in `scheme://user:password@host...`, if any.
fn url_password_range(url: &str) -> Option<std::ops::Range<usize>> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    // The last `@` before any query separates user info from the host, so an
    // unencoded `@` in the password still counts as password.
    let rest = &rest[..rest.find('?').unwrap_or(rest.len())];
    let at = rest.rfind('@')?;
    let colon = rest[..at].find(':')?;
    Some(start + colon + 1..start + at)
}

impl<'de> Deserialize<'de> for RawStart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = RawStart;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "\"earliest\", \"latest\", \"FILE:POS\", a GTID set, { gtid = \"...\" } or { file = \"...\", pos = N }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawStart, E> {
                Ok(RawStart::Text(v.to_owned()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawStart, A::Error> {
                RawStartTable::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawStart::Table)
            }
        }
        d.deserialize_any(V)
    }
}

/// `retries = N | "forever"`.
#[derive(Debug)]
pub enum RawRetries {
    /// A number of retries.
    Count(i64),
    /// A word (only `"forever"` is valid).
    Word(String),
}

impl<'de> Deserialize<'de> for RawRetries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = RawRetries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of retries or \"forever\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawRetries, E> {
                Ok(RawRetries::Count(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawRetries, E> {
                Ok(RawRetries::Count(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawRetries, E> {
                Ok(RawRetries::Word(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Strings that must not appear in errors. `Debug` shows only how many.
#[derive(Clone, Default)]
struct Secrets(Vec<String>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({})", self.0.len())
    }
}

impl Secrets {
    fn add(&mut self, s: &str) {
        // Shorter strings would mangle ordinary words in messages.
        if s.len() >= 3 && !self.0.iter().any(|k| k == s) {
            self.0.push(s.to_owned());
            // Longest first, so a secret containing another is replaced whole.
            self.0.sort_by_key(|k| std::cmp::Reverse(k.len()));
        }
    }

    fn scrub(&self, msg: &str) -> String {
        let mut out = msg.to_owned();
        for s in &self.0 {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------

/// Why a config cannot be used. Every variant names the file; the messages say
/// where (line or key path) and how to fix it, and never hold a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {error}", file.display())]
    Read {
        /// The config file.
        file: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// `${NAME}` expansion failed (a variable is not set, or a stray `$`).
    #[error("{}:{line}: {message}", file.display())]
    Env {
        /// The config file.
        file: PathBuf,
        /// 1-based line of the offending `${...}`.
        line: usize,
        /// What is wrong and the fix.
        message: String,
    },
    /// Not valid TOML, or a key or value that does not fit the schema (unknown
    /// key, wrong type, missing key).
    #[error("{}{}: {}{message}", file.display(), at(*line, *column), key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default())]
    Syntax {
        /// The config file.
        file: PathBuf,
        /// 1-based line, where known.
        line: Option<usize>,
        /// 1-based column, where known.
        column: Option<usize>,
        /// Key path of the value (`handlers[1].limits.time_ms`), where known.
        key: Option<String>,
        /// What is wrong (the TOML parser's words, which list the expected keys or values).
        message: String,
    },
    /// Well-formed but wrong: every problem found, each with its key path and fix.
    #[error("{}", list_problems(file, problems))]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// The problems, in file order.
        problems: Vec<Problem>,
    },
}

fn at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

fn list_problems(file: &Path, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| format!("{}: {p}", file.display())).collect();
    lines.join("\n")
}

impl ConfigError {
    /// The problems of an [`ConfigError::Invalid`]; empty for the other variants.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

/// For the config tests: `text` parsed as `/etc/rowhook/rowhook.toml`,
/// with `env` (and no other variable) for `${NAME}`.
#[cfg(test)]
pub(crate) fn parse_with_env(text: &str, env: &[(&str, &str)]) -> Result<Plan, ConfigError> {
    Plan::parse(text, Path::new("/etc/rowhook/rowhook.toml"), |v| {
        env.iter().find(|(k, _)| *k == v).map(|(_, value)| (*value).to_owned())
    })
}

/// For the config tests: every problem of a config that must be refused,
/// as `key: what`, each checked to have a fix.
#[cfg(test)]
pub(crate) fn problem_lines(parsed: Result<Plan, ConfigError>) -> Vec<String> {
    let e = parsed.unwrap_err();
    assert!(e.problems().iter().all(|p| !p.fix.is_empty()), "{e}");
    e.problems().iter().map(|p| format!("{}: {}", p.key, p.what)).collect()
}

// ---------------------------------------------------------------------------
// Parse.
// ---------------------------------------------------------------------------

impl RawConfig {
    /// Parses the text of `file` (used only in messages), expanding `${NAME}`
    /// in string values with `env`.
    pub fn parse(text: &str, file: &Path, env: impl Fn(&str) -> Option<String>) -> Result<RawConfig, ConfigError> {
        let syntax_at =
            |span: Option<std::ops::Range<usize>>, key: Option<String>, message: &str, secrets: &Secrets| {
                let (line, column) = match span {
                    Some(span) => {
                        let (l, c) = line_col(text, span.start);
                        (Some(l), Some(c))
                    }
                    None => (None, None),
                };
                ConfigError::Syntax {
                    file: file.to_owned(),
                    line,
                    column,
                    key: key.filter(|k| !k.is_empty() && k != "."),
                    message: secrets.scrub(message.trim_end()),
                }
            };
        let syntax = |e: &toml::de::Error, key: Option<String>, secrets: &Secrets| {
            syntax_at(e.span(), key, e.message(), secrets)
        };
        let mut secrets = Secrets::default();
        let mut doc = toml::de::DeTable::parse(text).map_err(|e| syntax(&e, None, &secrets))?;
        if let Some(url) = doc
            .get_ref()
            .get("source")
            .and_then(|s| s.get_ref().as_table())
            .and_then(|s| s.get("url"))
            .and_then(|u| u.get_ref().as_str())
        {
            // Found before expansion too, so a literal password is scrubbed as
            // well as one that came from the environment.
            add_url_secrets(&mut secrets, url);
        }
        for (_, value) in doc.get_mut().iter_mut() {
            expand_value(value, text, &env, &mut secrets).map_err(|(line, message)| ConfigError::Env {
                file: file.to_owned(),
                line,
                message,
            })?;
        }
        if let Some(url) = doc
            .get_ref()
            .get("source")
            .and_then(|s| s.get_ref().as_table())
            .and_then(|s| s.get("url"))
            .and_then(|u| u.get_ref().as_str())
        {
            add_url_secrets(&mut secrets, url);
        }
        // Sinks are read apart: which keys a sink takes depends on its kind.
        let sinks = doc.get_mut().remove("sinks");
        let de = toml::Deserializer::from(doc);
        let mut raw: RawConfig = serde_path_to_error::deserialize(de)
            .map_err(|e| syntax(e.inner(), Some(key_of(e.path().to_string(), e.inner())), &secrets))?;
        if let Some(sinks) = sinks {
            raw.sinks = parse_sinks(sinks, &|span, key, message| {
                syntax_at(span, Some(key), message, &secrets)
            })?;
        }
        if let Some(token) = raw.http.as_ref().and_then(|h| h.token.as_deref()) {
            secrets.add(token);
        }
        for token in raw.tenants.values().filter_map(|t| t.admin_token.as_deref()) {
            secrets.add(token);
        }
        raw.secrets = secrets;
        Ok(raw)
    }
}

/// The key path of a schema error: `path`, and for an unknown key the key
/// itself (serde's path can stop at the table holding it).
fn key_of(mut key: String, e: &toml::de::Error) -> String {
    if let Some(field) = e
        .message()
        .strip_prefix("unknown field `")
        .and_then(|m| m.split_once('`'))
        .map(|(f, _)| f)
        && !key.ends_with(&format!(".{field}"))
        && key != field
    {
        key = if key.is_empty() || key == "." {
            field.to_owned()
        } else {
            format!("{key}.{field}")
        };
    }
    key
}

/// The keys every sink has; the rest of a `[sinks.NAME]` table is the kind's.
const SHARED_SINK_KEYS: &str = "`kind`, `retries` and `retry_max_ms`";

/// Makes a [`ConfigError::Syntax`] from a span of the text, a key path and a message.
type SyntaxAt<'a> = dyn Fn(Option<std::ops::Range<usize>>, String, &str) -> ConfigError + 'a;

/// Reads the `[sinks.NAME]` tables: `kind`, `retries` and `retry_max_ms`
/// here, once for every kind, and the remaining keys by the kind named
/// (unknown keys are refused with their line, as everywhere). A kind this
/// build does not have is left for resolving to report with the others.
fn parse_sinks(
    value: toml::Spanned<toml::de::DeValue<'_>>,
    fail: &SyntaxAt<'_>,
) -> Result<BTreeMap<String, RawSink>, ConfigError> {
    use toml::de::{DeValue, ValueDeserializer};
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        return Err(fail(
            Some(span),
            "sinks".into(),
            "expected tables of sinks: [sinks.NAME] with kind = \"...\"",
        ));
    };
    let mut sinks = BTreeMap::new();
    for (name, value) in table {
        let name = name.into_inner().into_owned();
        let key = format!("sinks.{name}");
        let span = value.span();
        let value = value.into_inner();
        let DeValue::Table(mut keys) = value else {
            let found = value.type_str();
            return Err(fail(
                Some(span),
                key,
                &format!("invalid type: {found}, expected a table with the sink's `kind`"),
            ));
        };
        let Some(kind) = keys.remove("kind") else {
            return Err(fail(Some(span), key, "missing field `kind`"));
        };
        let Some(kind_name) = kind.get_ref().as_str().map(str::to_owned) else {
            let found = kind.get_ref().type_str();
            return Err(fail(
                Some(kind.span()),
                format!("{key}.kind"),
                &format!("invalid type: {found}, expected a sink kind such as \"file\""),
            ));
        };
        let retries = match keys.remove("retries") {
            Some(v) => Some(
                RawRetries::deserialize(ValueDeserializer::from(v))
                    .map_err(|e| fail(e.span(), format!("{key}.retries"), e.message()))?,
            ),
            None => None,
        };
        let retry_max_ms = match keys.remove("retry_max_ms") {
            Some(v) => Some(
                u64::deserialize(ValueDeserializer::from(v))
                    .map_err(|e| fail(e.span(), format!("{key}.retry_max_ms"), e.message()))?,
            ),
            None => None,
        };
        let mut track = serde_path_to_error::Track::new();
        let own = toml::Deserializer::from(toml::Spanned::new(span, keys));
        let options = match RawSinkOptions::parse(&kind_name, serde_path_to_error::Deserializer::new(own, &mut track)) {
            None => None,
            Some(Ok(options)) => Some(options),
            Some(Err(e)) => {
                let inner = key_of(track.path().to_string(), &e);
                let path = if inner.is_empty() || inner == "." {
                    key
                } else {
                    format!("{key}.{inner}")
                };
                let mut message = e.message().trim_end().to_owned();
                // A key of the sink's own table, not of a table inside it.
                if message.starts_with("unknown field") && !inner.contains('.') {
                    message = message.replace(
                        ", there are no fields",
                        &format!(": a `{kind_name}` sink has no keys of its own"),
                    );
                    message.push_str(&format!("; every sink also takes {SHARED_SINK_KEYS}"));
                }
                return Err(fail(e.span(), path, &message));
            }
        };
        sinks.insert(
            name,
            RawSink {
                kind: kind_name,
                retries,
                retry_max_ms,
                options,
            },
        );
    }
    Ok(sinks)
}

fn add_url_secrets(secrets: &mut Secrets, url: &str) {
    secrets.add(url);
    if let Some(r) = url_password_range(url) {
        secrets.add(&url[r]);
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

/// Expands `${NAME}` in every string inside `value`. Errors carry the line.
fn expand_value(
    value: &mut toml::Spanned<toml::de::DeValue<'_>>,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Secrets,
) -> Result<(), (usize, String)> {
    let span = value.span();
    match value.get_mut() {
        toml::de::DeValue::String(s) if s.contains('$') => {
            let expanded = expand_env(s, env, secrets).map_err(|e| {
                // Point at the `${NAME}` itself when it can be found in the
                // source (a multi-line string spans several lines).
                let raw = text.get(span.clone()).unwrap_or("");
                let offset = e.needle.as_deref().and_then(|n| raw.find(n)).unwrap_or(0);
                (line_col(text, span.start + offset).0, e.message)
            })?;
            *s = expanded.into();
        }
        toml::de::DeValue::Array(items) => {
            for item in items.iter_mut() {
                expand_value(item, text, env, secrets)?;
            }
        }
        toml::de::DeValue::Table(table) => {
            for (_, item) in table.iter_mut() {
                expand_value(item, text, env, secrets)?;
            }
        }
        _ => {}
    }
    Ok(())
}

struct EnvError {
    /// Text to look for in the source to find the line.
    needle: Option<String>,
    message: String,
}

/// Expands `${NAME}` and `$$` in one string value.
fn expand_env(s: &str, env: &dyn Fn(&str) -> Option<String>, secrets: &mut Secrets) -> Result<String, EnvError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let Some(end) = tail.find('}') else {
                return Err(EnvError {
                    needle: Some("${".into()),
                    message:
                        "`${` has no closing `}`; write `${NAME}` for an environment variable or `$$` for a literal `$`"
                            .into(),
                });
            };
            let name = &tail[..end];
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(EnvError {
                    needle: Some(format!("${{{name}}}")),
                    message: format!(
                        "`${{{name}}}` is not a variable name; use letters, digits and `_` (not starting with a digit), or `$$` for a literal `$`"
                    ),
                });
            }
            match env(name) {
                Some(v) => {
                    secrets.add(&v);
                    out.push_str(&v);
                }
                None => {
                    return Err(EnvError {
                        needle: Some(format!("${{{name}}}")),
                        message: format!(
                            "environment variable `{name}` is not set; set it in rowhook's environment (or write `$${{{name}}}` for the literal text)"
                        ),
                    });
                }
            }
            rest = &tail[end + 1..];
        } else {
            return Err(EnvError {
                needle: None,
                message: "a `$` must start `${NAME}` (an environment variable) or be doubled (`$$`) for a literal `$`"
                    .into(),
            });
        }
    }
    out.push_str(rest);
    Ok(out)
}

// ---------------------------------------------------------------------------
// Plan: the validated, resolved config.
// ---------------------------------------------------------------------------

/// A validated config, ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The config file (absolute); relative paths in it were resolved against its directory.
    pub file: PathBuf,
    /// The server to replicate from, if configured.
    pub source: Option<SourcePlan>,
    /// The state store.
    pub state: StatePlan,
    /// Sinks by name.
    pub sinks: BTreeMap<String, SinkSpec>,
    /// How each sink's unavailable writes are retried, by sink name.
    pub sink_retry: BTreeMap<String, SinkRetry>,
    /// Handlers, in file order (the order they see each row change in).
    pub handlers: Vec<HandlerPlan>,
    /// The HTTP server, if configured.
    pub http: Option<HttpPlan>,
    /// The declared tenants, by name; empty if the config declares none.
    pub tenants: BTreeMap<String, TenantPlan>,
    /// `[deploy] dir` (absolute): each tenant's deployed handlers are in
    /// its directory there. `None`: nothing is deployed while running.
    pub deploy: Option<PathBuf>,
    /// `[cluster]`, if configured.
    #[cfg(feature = "cluster")]
    pub cluster: Option<crate::cluster::config::ClusterPlan>,
}

/// The default `[http] listen`.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9187";
/// The shortest `[http] token` taken.
pub const MIN_HTTP_TOKEN_LEN: usize = 16;

/// `[http]`, resolved. `Debug` does not show the token.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpPlan {
    /// Where to listen.
    pub listen: std::net::SocketAddr,
    /// The admin API's bearer token; `None` refuses every admin call but
    /// those of tenants with tokens of their own.
    pub token: Option<String>,
    /// The tenants' own admin tokens: each reaches its tenant's handlers only.
    pub tenants: Vec<TenantToken>,
}

/// A tenant's admin token: it reaches the tenant's handlers only (the
/// admin API asks the run's [`crate::handler_id::Roster`] whose a handler is).
#[derive(Clone, PartialEq, Eq)]
pub struct TenantToken {
    /// The tenant.
    pub tenant: String,
    /// Its bearer token.
    pub token: String,
}

impl fmt::Debug for HttpPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPlan")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("tenants", &self.tenants.iter().map(|t| &t.tenant).collect::<Vec<_>>())
            .finish()
    }
}

/// `[source]`, resolved.
#[derive(Debug, Clone)]
pub struct SourcePlan {
    /// The server (its `Debug`/`Display` never show the password).
    pub url: SourceUrl,
    /// Replica server id, non-zero.
    pub server_id: u32,
    /// Where to start without a checkpoint.
    pub start: StartPosition,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// How snapshots read.
    pub snapshot: SnapshotPlan,
}

/// The snapshot keys of `[source]`, resolved.
#[derive(Debug, Clone)]
pub struct SnapshotPlan {
    /// Read the subscribed tables on the first start.
    pub initial: bool,
    /// Rows per chunk.
    pub chunk_rows: u32,
    /// The cap on rows a second, if any.
    pub rows_per_second: Option<u32>,
    /// The server, as the user snapshots read with.
    pub url: SourceUrl,
}

/// The default `[source] snapshot_chunk_rows`.
pub const DEFAULT_SNAPSHOT_CHUNK_ROWS: u32 = 10_000;

/// `[state]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePlan {
    /// The state directory (absolute).
    pub path: PathBuf,
    /// How often acknowledged transactions are committed to the store.
    pub commit_interval: Duration,
}

impl StatePlan {
    /// Where compiled handler components are kept (`compiled/` in the
    /// state directory; see `runtime::cache`).
    pub fn compile_cache_dir(&self) -> PathBuf {
        self.path.join("compiled")
    }
}

/// One handler, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerPlan {
    /// Unique name.
    pub name: String,
    /// Owning tenant.
    pub tenant: String,
    /// The component file (absolute).
    pub module: PathBuf,
    /// Subscribed tables, deduplicated, in file order.
    pub tables: Vec<TablePattern>,
    /// Subscribed operations.
    pub ops: OpSet,
    /// Sinks it may emit to.
    pub grants: SinkGrants,
    /// Caps.
    pub limits: Limits,
    /// What a failure does.
    pub on_error: OnError,
    /// When repeated failures suspend it.
    pub breaker: BreakerPlan,
    /// Where it starts when it is added to a running rowhook.
    pub start: HandlerStart,
}

/// Where a handler deployed into a running rowhook starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HandlerStart {
    /// The next transaction rowhook handles (the tenant's position).
    #[default]
    Lane,
    /// The first transaction the server commits after the deployment.
    Latest,
}

impl HandlerPlan {
    /// Whether a row change of `db`.`table` with `op` goes to this handler.
    pub fn subscribes(&self, db: &str, table: &str, op: Op) -> bool {
        self.ops.contains(op) && self.tables.iter().any(|t| t.matches(db, table))
    }
}

/// `db.table` or `db.*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TablePattern {
    /// The database (schema).
    pub db: String,
    /// The table; `None` for every table of `db`.
    pub table: Option<String>,
}

impl TablePattern {
    /// Parses `db.table` or `db.*`; the error says what is wrong.
    pub fn parse(s: &str) -> Result<TablePattern, String> {
        let Some((db, table)) = s.split_once('.') else {
            return Err(format!("`{s}` is not `db.table` or `db.*`"));
        };
        if db.is_empty() || table.is_empty() {
            return Err(format!(
                "`{s}` needs both a database and a table (`db.table` or `db.*`)"
            ));
        }
        if db.contains('*') {
            return Err(format!(
                "`{s}`: the database cannot be a wildcard; name it (`db.*` subscribes to all its tables)"
            ));
        }
        if s.chars().any(|c| c.is_whitespace() || c == '`') {
            return Err(format!(
                "`{s}` holds spaces or backquotes; write names bare: `shop.orders`"
            ));
        }
        if table == "*" {
            return Ok(TablePattern {
                db: db.to_owned(),
                table: None,
            });
        }
        if table.contains('*') {
            return Err(format!(
                "`{s}`: `*` matches whole tables only (`{db}.*`), not parts of names"
            ));
        }
        Ok(TablePattern {
            db: db.to_owned(),
            table: Some(table.to_owned()),
        })
    }

    /// Whether `db`.`table` matches (names compare exactly, as on Linux servers).
    pub fn matches(&self, db: &str, table: &str) -> bool {
        self.db == db && self.table.as_deref().is_none_or(|t| t == table)
    }
}

impl fmt::Display for TablePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.db, self.table.as_deref().unwrap_or("*"))
    }
}

/// The operations a handler subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpSet {
    /// Inserts.
    pub insert: bool,
    /// Updates.
    pub update: bool,
    /// Deletes.
    pub delete: bool,
    /// Rows read by a snapshot.
    pub snapshot: bool,
}

impl OpSet {
    /// All four.
    pub const ALL: OpSet = OpSet {
        insert: true,
        update: true,
        delete: true,
        snapshot: true,
    };

    /// Whether `op` is in the set.
    pub fn contains(self, op: Op) -> bool {
        match op {
            Op::Insert => self.insert,
            Op::Update => self.update,
            Op::Delete => self.delete,
            Op::Snapshot => self.snapshot,
        }
    }
}

/// The sinks a handler may emit to. Plain data: an empty set grants nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkGrants(BTreeSet<String>);

impl SinkGrants {
    /// Whether emitting to `sink` is allowed.
    pub fn allows(&self, sink: &str) -> bool {
        self.0.contains(sink)
    }

    /// The granted sink names, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Per-handler caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory cap of one instance, MiB.
    pub memory_mb: u32,
    /// CPU deadline of one call.
    pub time: Duration,
    /// Messages one row change may emit.
    pub emits_per_event: u32,
    /// Bytes (payloads and keys) one row change may emit, MiB.
    pub emit_mb_per_event: u32,
    /// Log lines per second, on average.
    pub log_lines_per_sec: u32,
    /// Largest module file read, MiB.
    pub module_mb: u32,
    /// Key and value bytes the state may hold, MiB.
    pub state_mb: u32,
    /// Keys the state may hold.
    pub state_keys: u32,
    /// Core instances one instance of the handler may create.
    pub instances: u32,
}

impl Limits {
    /// Default memory cap, MiB.
    pub const DEFAULT_MEMORY_MB: u32 = 64;
    /// Default deadline, ms.
    pub const DEFAULT_TIME_MS: u32 = 100;
    /// Default emit quota.
    pub const DEFAULT_EMITS_PER_EVENT: u32 = 64;
    /// Default emit byte budget per row change, MiB: one message of the
    /// largest size a sink takes.
    pub const DEFAULT_EMIT_MB_PER_EVENT: u32 = 16;
    /// Default log rate, lines per second.
    pub const DEFAULT_LOG_LINES_PER_SEC: u32 = 100;
    /// Default module file size cap, MiB: room for an interpreter-based
    /// component (Python's is about 18 MB, JavaScript's 12 MB).
    pub const DEFAULT_MODULE_MB: u32 = 64;
    /// Default state quota, MiB.
    pub const DEFAULT_STATE_MB: u32 = 64;
    /// Default and largest number of state keys.
    pub const DEFAULT_STATE_KEYS: u32 = 1_000_000;
    /// Default cap of core instances: room for the interpreter-based
    /// components (componentize-py makes 38).
    pub const DEFAULT_INSTANCES: u32 = 100;

    /// The memory cap in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory_mb as usize * 1024 * 1024
    }

    /// The emit byte budget of one row change, in bytes.
    pub fn emit_bytes_per_event(&self) -> usize {
        self.emit_mb_per_event as usize * 1024 * 1024
    }

    /// The module file size cap in bytes.
    pub fn module_bytes(&self) -> u64 {
        u64::from(self.module_mb) * 1024 * 1024
    }

    /// The state quota in bytes.
    pub fn state_bytes(&self) -> u64 {
        u64::from(self.state_mb) * 1024 * 1024
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: Self::DEFAULT_MEMORY_MB,
            time: Duration::from_millis(Self::DEFAULT_TIME_MS.into()),
            emits_per_event: Self::DEFAULT_EMITS_PER_EVENT,
            emit_mb_per_event: Self::DEFAULT_EMIT_MB_PER_EVENT,
            log_lines_per_sec: Self::DEFAULT_LOG_LINES_PER_SEC,
            module_mb: Self::DEFAULT_MODULE_MB,
            state_mb: Self::DEFAULT_STATE_MB,
            state_keys: Self::DEFAULT_STATE_KEYS,
            instances: Self::DEFAULT_INSTANCES,
        }
    }
}

/// When a handler's circuit breaker opens, and for how long
/// (see `pipeline::breaker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPlan {
    /// Failures within `window` that open it; 0 never opens it.
    pub failures: u32,
    /// The window failures are counted in.
    pub window: Duration,
    /// How long it stays open before a trial call.
    pub cooldown: Duration,
    /// `Some(bytes)`: while open, the handler's changes are held, up to
    /// this many bytes, instead of failing under its `on_error`.
    pub hold_bytes: Option<u64>,
    /// Held changes are copied into the held file even where the binlog
    /// could give them again (`hold_in = "file"`).
    pub hold_in_file: bool,
}

impl BreakerPlan {
    /// Default failures that open the breaker.
    pub const DEFAULT_FAILURES: u32 = 5;
    /// Default window, ms.
    pub const DEFAULT_WINDOW_MS: u32 = 10_000;
    /// Default cool-down, ms.
    pub const DEFAULT_COOLDOWN_MS: u32 = 30_000;
    /// Default room for held changes, MiB.
    pub const DEFAULT_HOLD_MB: u32 = 256;
}

impl Default for BreakerPlan {
    fn default() -> Self {
        BreakerPlan {
            failures: Self::DEFAULT_FAILURES,
            window: Duration::from_millis(Self::DEFAULT_WINDOW_MS.into()),
            cooldown: Duration::from_millis(Self::DEFAULT_COOLDOWN_MS.into()),
            hold_bytes: None,
            hold_in_file: false,
        }
    }
}

/// What a handler failure does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnError {
    /// Stop before the checkpoint moves.
    Halt,
    /// Log and count it, then go on.
    Skip,
    /// Write the event and the error to this sink, then go on.
    DeadLetter {
        /// The dead-letter sink's name.
        sink: String,
    },
}

/// Default `[state] path`, relative to the config file's directory.
pub const DEFAULT_STATE_PATH: &str = "var/rowhook";
/// How often the store commits by default, in milliseconds.
pub const DEFAULT_COMMIT_INTERVAL_MS: u64 = 500;
/// Default heartbeat period, seconds.
pub const DEFAULT_HEARTBEAT_SECS: u32 = 30;

impl Plan {
    /// What a lane of `tenant` reading on its own connection runs: its
    /// `handlers`, only the sinks they may write to (their grants and
    /// dead-letter sinks), its tenant, and no HTTP server or deploy
    /// directory (the main pipeline serves those).
    pub fn for_lane(&self, tenant: &str, handlers: &[HandlerPlan]) -> Plan {
        let used: BTreeSet<&str> = (handlers.iter())
            .flat_map(|h| {
                let dead = match &h.on_error {
                    OnError::DeadLetter { sink } => Some(sink.as_str()),
                    _ => None,
                };
                h.grants.iter().chain(dead)
            })
            .collect();
        let keep = |name: &String| used.contains(name.as_str());
        Plan {
            file: self.file.clone(),
            source: self.source.clone(),
            state: self.state.clone(),
            sinks: (self.sinks.iter())
                .filter(|(n, _)| keep(n))
                .map(|(n, s)| (n.clone(), s.clone()))
                .collect(),
            sink_retry: (self.sink_retry.iter())
                .filter(|(n, _)| keep(n))
                .map(|(n, r)| (n.clone(), *r))
                .collect(),
            handlers: handlers.to_vec(),
            http: None,
            tenants: (self.tenants.iter())
                .filter(|(t, _)| *t == tenant)
                .map(|(t, p)| (t.clone(), p.clone()))
                .collect(),
            deploy: None,
            #[cfg(feature = "cluster")]
            cluster: None,
        }
    }

    /// Reads, parses (with the process environment) and resolves a config file.
    pub fn load(path: &Path) -> Result<Plan, ConfigError> {
        let file = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let text = std::fs::read_to_string(&file).map_err(|error| ConfigError::Read {
            file: path.to_owned(),
            error,
        })?;
        Plan::parse(&text, &file, |name| std::env::var(name).ok())
    }

    /// Parses and resolves config text as if read from `file`.
    pub fn parse(text: &str, file: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Plan, ConfigError> {
        RawConfig::parse(text, file, env)?.resolve(file)
    }

    /// The source, or an error saying how to add one (`rowhook run` needs it).
    pub fn require_source(&self) -> Result<&SourcePlan, ConfigError> {
        self.source.as_ref().ok_or_else(|| ConfigError::Invalid {
            file: self.file.clone(),
            problems: vec![Problem {
                key: "source".into(),
                what: "no [source] table: there is no server to read the binlog from".into(),
                fix: "add [source] with url = \"mysql://USER:${PASSWORD_VAR}@HOST:PORT\" and server_id".into(),
            }],
        })
    }

    /// The handlers that see a row change of `db`.`table` with `op`, in order.
    pub fn subscribers<'a>(&'a self, db: &'a str, table: &'a str, op: Op) -> impl Iterator<Item = &'a HandlerPlan> {
        self.handlers.iter().filter(move |h| h.subscribes(db, table, op))
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl RawConfig {
    /// Validates and resolves into a [`Plan`]; relative paths are taken from
    /// `file`'s directory. Reports every problem found, not just the first.
    pub fn resolve(self, file: &Path) -> Result<Plan, ConfigError> {
        let file = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
        let base = file.parent().map(Path::to_owned).unwrap_or_default();
        let mut problems = Problems::default();

        let source = self.source.and_then(|s| resolve_source(s, &mut problems));
        let http = self.http.and_then(|h| resolve_http(h, &mut problems));
        #[cfg(feature = "cluster")]
        let cluster = self
            .cluster
            .and_then(|c| crate::cluster::config::resolve(c, &mut SinkContext::new("cluster", &base, &mut problems)));

        let (state_path, commit_interval_ms) = match self.state {
            Some(s) => (s.path, s.commit_interval_ms),
            None => (None, None),
        };
        let commit_interval_ms = commit_interval_ms.unwrap_or(DEFAULT_COMMIT_INTERVAL_MS);
        if commit_interval_ms > 60_000 {
            problems.push(
                "state.commit_interval_ms",
                format!("{commit_interval_ms} is out of range"),
                "use 0 (every transaction) to 60000 ms; the default is 500",
            );
        }
        let state = StatePlan {
            commit_interval: Duration::from_millis(commit_interval_ms),
            path: match state_path {
                Some(p) if p.trim().is_empty() => {
                    problems.push(
                        "state.path",
                        "is empty",
                        format!("name a directory, or remove the key for the default `{DEFAULT_STATE_PATH}`"),
                    );
                    PathBuf::new()
                }
                Some(p) => resolve_path(&base, &p),
                None => base.join(DEFAULT_STATE_PATH),
            },
        };

        let sink_names: Vec<String> = self.sinks.keys().cloned().collect();
        let defined: BTreeSet<&str> = sink_names.iter().map(String::as_str).collect();
        let mut sinks = BTreeMap::new();
        let mut sink_retry = BTreeMap::new();
        let mut paths: BTreeMap<PathBuf, String> = BTreeMap::new();
        for (name, raw) in self.sinks {
            let key = format!("sinks.{name}");
            if !valid_name(&name) {
                problems.push(
                    &key,
                    format!("`{name}` is not a sink name"),
                    "use letters, digits, `_` and `-` (at most 64): handlers emit to it by this name",
                );
            }
            let retry = resolve_retry(&raw, &key, &mut problems);
            let spec = match raw.options {
                Some(options) => options.resolve(&mut SinkContext::new(&key, &base, &mut problems)),
                None => {
                    problems.push(
                        format!("{key}.kind"),
                        format!("sink kind `{}` is not in this build", raw.kind),
                        format!("use one of {}", list_kinds()),
                    );
                    None
                }
            };
            let Some(spec) = spec else {
                continue;
            };
            if let Some(retry) = retry {
                sink_retry.insert(name.clone(), retry);
            }
            if let Some(path) = spec.path() {
                if let Some(other) = paths.get(path) {
                    problems.push(
                        format!("{key}.path"),
                        format!("`{}` is also the path of sink `{other}`", path.display()),
                        "give each file or fifo sink its own path: two sinks on one file would interleave their lines",
                    );
                } else {
                    paths.insert(path.to_owned(), name.clone());
                }
            }
            sinks.insert(name.clone(), spec);
        }

        let raw_tokens: Vec<(String, String)> = (self.tenants.iter())
            .filter_map(|(name, t)| Some((name.clone(), t.admin_token.clone()?)))
            .collect();
        let tenants = tenants::resolve(self.tenants, &defined, &mut problems);
        let deploy = self.deploy.map(|d| {
            if tenants.is_empty() {
                problems.push(
                    "deploy.dir",
                    "tenants deploy their handlers, and the config declares no [tenants]",
                    "declare each team in [tenants.NAME] (its tables and sinks), or remove [deploy]",
                );
            }
            if d.dir.trim().is_empty() {
                problems.push(
                    "deploy.dir",
                    "is empty",
                    "name the directory that holds one directory per tenant",
                );
            }
            resolve_path(&base, &d.dir)
        });
        let mut handlers = Vec::with_capacity(self.handlers.len() + self.deployed.len());
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        let operator = self
            .handlers
            .into_iter()
            .enumerate()
            .map(|(i, h)| (format!("handlers[{i}]"), h, false));
        let deployed = self.deployed.into_iter().map(|(key, h)| (key, h, true));
        for (key, raw, is_deployed) in operator.chain(deployed) {
            if let Some(first) = names.get(&raw.name) {
                problems.push(
                    format!("{key}.name"),
                    format!("handler name `{}` is already used by {first}", raw.name),
                    "give each handler its own name: state, metrics and logs are kept by name",
                );
            } else {
                // A tenant learns no more of another's handler than that the name is taken.
                let first = if is_deployed {
                    "another handler".to_owned()
                } else {
                    key.clone()
                };
                names.insert(raw.name.clone(), first);
            }
            if raw.start.is_some() && !is_deployed {
                problems.push(
                    format!("{key}.start"),
                    "applies to handlers deployed into a running rowhook only",
                    "remove it: a handler of the config starts and resumes with the run",
                );
            }
            if let Some(h) = resolve_handler(raw, &key, &base, &defined, &mut problems) {
                if !tenants.is_empty() {
                    tenants::check_handler(&tenants, &h, &key, &mut problems);
                }
                handlers.push(h);
            }
        }
        tenants::check_totals(&tenants, &handlers, &mut problems);
        let mut http = http;
        let tokens = tenants::admin_tokens(&raw_tokens, http.as_ref(), &mut problems);
        if let Some(h) = &mut http {
            h.tenants = tokens;
        }

        if !problems.0.is_empty() {
            let secrets = &self.secrets;
            let problems = problems
                .0
                .into_iter()
                .map(|p| Problem {
                    key: p.key,
                    what: secrets.scrub(&p.what),
                    fix: secrets.scrub(&p.fix),
                })
                .collect();
            return Err(ConfigError::Invalid { file, problems });
        }
        Ok(Plan {
            file,
            source,
            state,
            sinks,
            sink_retry,
            handlers,
            http,
            tenants,
            deploy,
            #[cfg(feature = "cluster")]
            cluster,
        })
    }

    /// Adds a handler deployed from a tenant directory, after the config's
    /// own: `key` names it in problems (its file and place there).
    pub fn add_deployed(&mut self, key: String, handler: RawHandler) {
        self.deployed.push((key, handler));
    }
}

fn resolve_http(raw: RawHttp, problems: &mut Problems) -> Option<HttpPlan> {
    let text = raw.listen.as_deref().unwrap_or(DEFAULT_HTTP_LISTEN);
    let listen = match text.parse::<std::net::SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(
                "http.listen",
                format!("`{text}` is not an IP address and port"),
                format!("write it as IP:PORT, e.g. \"{DEFAULT_HTTP_LISTEN}\" (loopback) or \"[::1]:9187\""),
            );
            None
        }
    };
    let token = match raw.token {
        Some(t) if t.chars().count() < MIN_HTTP_TOKEN_LEN || t.trim() != t => {
            problems.push(
                "http.token",
                format!("the token is shorter than {MIN_HTTP_TOKEN_LEN} characters or has spaces around it"),
                "use a long random string from the environment: token = \"${ROWHOOK_HTTP_TOKEN}\" (e.g. `openssl rand -hex 24`)",
            );
            None
        }
        t => t,
    };
    let listen = listen?;
    if !listen.ip().is_loopback() && token.is_none() {
        problems.push(
            "http.listen",
            format!("{listen} is reachable from other hosts, and [http] has no token"),
            "set token = \"${ROWHOOK_HTTP_TOKEN}\" (the admin API is refused without it), or listen on 127.0.0.1",
        );
        return None;
    }
    Some(HttpPlan {
        listen,
        token,
        tenants: Vec::new(),
    })
}

fn resolve_source(raw: RawSource, problems: &mut Problems) -> Option<SourcePlan> {
    let url = match SourceUrl::parse(raw.url.expose()) {
        Ok(u) => Some(u),
        Err(e) => {
            // SourceUrl::parse never repeats the URL in its error.
            problems.push(
                "source.url",
                e.to_string(),
                "write it as mysql://USER:${PASSWORD_VAR}@HOST:PORT",
            );
            None
        }
    };
    if raw.server_id == 0 {
        problems.push(
            "source.server_id",
            "0 is not a replica server id",
            "pick a non-zero id that no other replica of this server uses, e.g. 4242",
        );
    }
    let start = match raw.start {
        None => Some(StartPosition::Latest),
        Some(RawStart::Text(s)) => match s.parse::<StartPosition>() {
            Ok(p) => Some(p),
            Err(e) => {
                problems.push(
                    "source.start",
                    e,
                    "use \"earliest\", \"latest\", \"FILE:POS\", a GTID set, { gtid = \"...\" } or { file = \"...\", pos = 4 }",
                );
                None
            }
        },
        Some(RawStart::Table(t)) => resolve_start_table(t, problems),
    };
    let heartbeat_secs = raw.heartbeat_secs.unwrap_or(DEFAULT_HEARTBEAT_SECS);
    if !(1..=3600).contains(&heartbeat_secs) {
        problems.push(
            "source.heartbeat_secs",
            format!("{heartbeat_secs} is out of range"),
            "use 1 to 3600 seconds (default 30)",
        );
    }
    let chunk_rows = raw.snapshot_chunk_rows.unwrap_or(DEFAULT_SNAPSHOT_CHUNK_ROWS);
    if !(1..=1_000_000).contains(&chunk_rows) {
        problems.push(
            "source.snapshot_chunk_rows",
            format!("{chunk_rows} is out of range"),
            "use 1 to 1000000 rows (default 10000)",
        );
    }
    if raw.snapshot_rows_per_second == Some(0) {
        problems.push(
            "source.snapshot_rows_per_second",
            "0 would read nothing",
            "use a positive number of rows a second, or remove the key for no cap",
        );
    }
    let snapshot_url = match &raw.snapshot_url {
        None => url.clone(),
        Some(u) => match SourceUrl::parse(u.expose()) {
            Ok(u) => Some(u),
            Err(e) => {
                problems.push(
                    "source.snapshot_url",
                    e.to_string(),
                    "write it as mysql://USER:${PASSWORD_VAR}@HOST:PORT, a user with SELECT on the tables",
                );
                None
            }
        },
    };
    Some(SourcePlan {
        url: url?,
        server_id: raw.server_id,
        start: start?,
        heartbeat: Duration::from_secs(heartbeat_secs.into()),
        snapshot: SnapshotPlan {
            initial: raw.snapshot == Some(RawSnapshotMode::Initial),
            chunk_rows,
            rows_per_second: raw.snapshot_rows_per_second,
            url: snapshot_url?,
        },
    })
}

fn resolve_start_table(t: RawStartTable, problems: &mut Problems) -> Option<StartPosition> {
    match t {
        RawStartTable {
            gtid: Some(g),
            file: None,
            pos: None,
        } => match g.parse::<StartPosition>() {
            Ok(p @ StartPosition::Gtid(_)) => Some(p),
            Ok(_) => {
                problems.push(
                    "source.start.gtid",
                    format!("`{g}` is not a GTID set"),
                    "write a GTID set such as \"0-1-100\"; for \"earliest\" or \"latest\" use start = \"...\"",
                );
                None
            }
            Err(e) => {
                problems.push("source.start.gtid", e, "write a GTID set such as \"0-1-100\"");
                None
            }
        },
        RawStartTable {
            gtid: None,
            file: Some(file),
            pos: Some(pos),
        } => {
            let mut ok = true;
            if file.trim().is_empty() || file.contains(['/', ':']) {
                problems.push(
                    "source.start.file",
                    format!("`{file}` is not a binlog file name"),
                    "name a file from SHOW BINARY LOGS, e.g. \"mysql-bin.000003\"",
                );
                ok = false;
            }
            if pos < 4 {
                problems.push(
                    "source.start.pos",
                    format!("{pos} is before the first event"),
                    "use 4 (the start of the file) or the offset of an event boundary",
                );
                ok = false;
            }
            ok.then_some(StartPosition::File { file, pos })
        }
        RawStartTable {
            gtid: None,
            file: Some(_),
            pos: None,
        } => {
            problems.push(
                "source.start.pos",
                "a file start needs a position",
                "add pos = 4 to start at the beginning of the file",
            );
            None
        }
        RawStartTable {
            gtid: None,
            file: None,
            pos: Some(_),
        } => {
            problems.push(
                "source.start.file",
                "a position needs a file",
                "add file = \"mysql-bin.000003\" (a name from SHOW BINARY LOGS)",
            );
            None
        }
        RawStartTable { gtid: None, .. } => {
            problems.push(
                "source.start",
                "the table is empty",
                "write { gtid = \"0-1-100\" } or { file = \"mysql-bin.000003\", pos = 4 }",
            );
            None
        }
        RawStartTable { gtid: Some(_), .. } => {
            problems.push(
                "source.start",
                "gives both a GTID and a file position",
                "keep one: { gtid = \"...\" } or { file = \"...\", pos = N }",
            );
            None
        }
    }
}

/// The kinds of this build, for messages: `stdout`, `file`, `fifo`, ….
fn list_kinds() -> String {
    let kinds: Vec<String> = KINDS.iter().map(|k| format!("`{k}`")).collect();
    kinds.join(", ")
}

/// `retries` and `retry_max_ms`, which every sink has.
fn resolve_retry(raw: &RawSink, key: &str, problems: &mut Problems) -> Option<SinkRetry> {
    let (retries, max_ms) = (&raw.retries, raw.retry_max_ms);
    let attempts = match retries {
        None => Some(Some(SinkRetry::DEFAULT_ATTEMPTS)),
        Some(RawRetries::Word(w)) if w == "forever" => Some(None),
        Some(RawRetries::Count(n)) if (0..=1_000_000).contains(n) => Some(Some(*n as u32)),
        Some(RawRetries::Count(n)) => {
            problems.push(
                format!("{key}.retries"),
                format!("{n} is out of range"),
                "use 0 to 1000000 retries, or \"forever\" to wait until the sink takes the batch",
            );
            None
        }
        Some(RawRetries::Word(w)) => {
            problems.push(
                format!("{key}.retries"),
                format!("`{w}` is not a number of retries"),
                "use a number (default 8) or \"forever\"",
            );
            None
        }
    };
    let max_delay = match max_ms {
        None => Some(SinkRetry::DEFAULT_MAX_DELAY),
        Some(ms) if (50..=600_000).contains(&ms) => Some(Duration::from_millis(ms)),
        Some(ms) => {
            problems.push(
                format!("{key}.retry_max_ms"),
                format!("{ms} is out of range"),
                "use 50 to 600000 ms (default 5000)",
            );
            None
        }
    };
    Some(SinkRetry {
        attempts: attempts?,
        max_delay: max_delay?,
    })
}

fn resolve_handler(
    raw: RawHandler,
    key: &str,
    base: &Path,
    defined_sinks: &BTreeSet<&str>,
    problems: &mut Problems,
) -> Option<HandlerPlan> {
    let before = problems.0.len();
    if !valid_name(&raw.name) {
        problems.push(
            format!("{key}.name"),
            format!("`{}` is not a handler name", raw.name),
            "use letters, digits, `_` and `-` (at most 64)",
        );
    }
    let tenant = raw.tenant.unwrap_or_else(|| "default".to_owned());
    if !valid_name(&tenant) {
        problems.push(
            format!("{key}.tenant"),
            format!("`{tenant}` is not a tenant name"),
            "use letters, digits, `_` and `-` (at most 64)",
        );
    }
    if raw.module.trim().is_empty() {
        problems.push(
            format!("{key}.module"),
            "is empty",
            "name the handler's .wasm component file",
        );
    }
    let module = resolve_path(base, &raw.module);

    let mut tables = Vec::new();
    if raw.tables.is_empty() {
        problems.push(
            format!("{key}.tables"),
            "is empty: the handler would see no row change",
            "list what it reads, e.g. tables = [\"shop.orders\"] or [\"shop.*\"]",
        );
    }
    for (j, t) in raw.tables.iter().enumerate() {
        match TablePattern::parse(t) {
            Ok(p) if !tables.contains(&p) => tables.push(p),
            Ok(_) => {}
            Err(e) => problems.push(format!("{key}.tables[{j}]"), e, "write `db.table` or `db.*`"),
        }
    }

    let ops = match &raw.ops {
        None => OpSet::ALL,
        Some(ops) => {
            if ops.is_empty() {
                problems.push(
                    format!("{key}.ops"),
                    "is empty: the handler would see no row change",
                    "list any of \"insert\", \"update\", \"delete\", \"snapshot\", or remove the key for all four",
                );
            }
            OpSet {
                insert: ops.contains(&RawOp::Insert),
                update: ops.contains(&RawOp::Update),
                delete: ops.contains(&RawOp::Delete),
                snapshot: ops.contains(&RawOp::Snapshot),
            }
        }
    };

    let mut grants = BTreeSet::new();
    for s in &raw.sinks {
        if defined_sinks.contains(s.as_str()) {
            grants.insert(s.clone());
        } else {
            problems.push(
                format!("{key}.sinks"),
                format!("sink `{s}` is not defined"),
                define_or_remove(s, defined_sinks),
            );
        }
    }

    let limits = resolve_limits(raw.limits, key, problems);

    let on_error = match (raw.on_error.unwrap_or(RawOnError::Halt), raw.dead_letter) {
        (RawOnError::DeadLetter, Some(sink)) if defined_sinks.contains(sink.as_str()) => OnError::DeadLetter { sink },
        (RawOnError::DeadLetter, Some(sink)) => {
            problems.push(
                format!("{key}.dead_letter"),
                format!("sink `{sink}` is not defined"),
                define_or_remove(&sink, defined_sinks),
            );
            OnError::Halt
        }
        (RawOnError::DeadLetter, None) => {
            problems.push(
                format!("{key}.dead_letter"),
                "on_error = \"dead-letter\" needs a sink to write failed events to",
                "add dead_letter = \"<sink name>\"",
            );
            OnError::Halt
        }
        (other, Some(_)) => {
            problems.push(
                format!("{key}.dead_letter"),
                "is only used with on_error = \"dead-letter\"",
                "set on_error = \"dead-letter\", or remove dead_letter",
            );
            match other {
                RawOnError::Skip => OnError::Skip,
                _ => OnError::Halt,
            }
        }
        (RawOnError::Halt, None) => OnError::Halt,
        (RawOnError::Skip, None) => OnError::Skip,
    };

    let breaker = resolve_breaker(raw.breaker, key, problems);

    (problems.0.len() == before).then_some(HandlerPlan {
        name: raw.name,
        tenant,
        module,
        tables,
        ops,
        grants: SinkGrants(grants),
        limits,
        on_error,
        breaker,
        start: match raw.start {
            Some(RawHandlerStart::Latest) => HandlerStart::Latest,
            _ => HandlerStart::Lane,
        },
    })
}

fn define_or_remove(sink: &str, defined: &BTreeSet<&str>) -> String {
    let known = if defined.is_empty() {
        "none is defined".to_owned()
    } else {
        let names: Vec<String> = defined.iter().map(|s| format!("`{s}`")).collect();
        format!("defined: {}", names.join(", "))
    };
    format!("define it in a [sinks.{sink}] table or use a defined sink ({known})")
}

/// `value` (or `default`), with a problem at `prefix.name` if it is outside `range`.
fn in_range(
    problems: &mut Problems,
    prefix: &str,
    name: &str,
    value: Option<u32>,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
    unit: &str,
) -> u32 {
    let v = value.unwrap_or(default);
    if !range.contains(&v) {
        problems.push(
            format!("{prefix}.{name}"),
            format!("{v} is out of range"),
            format!("use {} to {}{unit} (default {default})", range.start(), range.end()),
        );
    }
    v
}

fn resolve_breaker(raw: Option<RawBreaker>, key: &str, problems: &mut Problems) -> BreakerPlan {
    let Some(raw) = raw else { return BreakerPlan::default() };
    let prefix = format!("{key}.breaker");
    let mut check = |name: &str, value: Option<u32>, default: u32, range: std::ops::RangeInclusive<u32>, unit: &str| {
        in_range(problems, &prefix, name, value, default, range, unit)
    };
    let failures = check(
        "failures",
        raw.failures,
        BreakerPlan::DEFAULT_FAILURES,
        0..=1_000_000,
        " (0: never suspend)",
    );
    let window_ms = check(
        "window_ms",
        raw.window_ms,
        BreakerPlan::DEFAULT_WINDOW_MS,
        1..=3_600_000,
        " ms",
    );
    let cooldown_ms = check(
        "cooldown_ms",
        raw.cooldown_ms,
        BreakerPlan::DEFAULT_COOLDOWN_MS,
        1..=3_600_000,
        " ms",
    );
    let hold_mb = check("hold_mb", raw.hold_mb, BreakerPlan::DEFAULT_HOLD_MB, 1..=65_536, " MiB");
    let hold = raw.while_suspended == Some(RawWhileSuspended::Hold);
    if raw.hold_mb.is_some() && !hold {
        problems.push(
            format!("{prefix}.hold_mb"),
            "is only used with while_suspended = \"hold\"",
            "set while_suspended = \"hold\", or remove hold_mb",
        );
    }
    if raw.hold_in.is_some() && !hold {
        problems.push(
            format!("{prefix}.hold_in"),
            "is only used with while_suspended = \"hold\"",
            "set while_suspended = \"hold\", or remove hold_in",
        );
    }
    BreakerPlan {
        failures,
        window: Duration::from_millis(window_ms.into()),
        cooldown: Duration::from_millis(cooldown_ms.into()),
        hold_bytes: hold.then(|| u64::from(hold_mb) << 20),
        hold_in_file: raw.hold_in == Some(RawHoldIn::File),
    }
}

fn resolve_limits(raw: Option<RawLimits>, key: &str, problems: &mut Problems) -> Limits {
    let raw = raw.unwrap_or(RawLimits {
        memory_mb: None,
        time_ms: None,
        emits_per_event: None,
        emit_mb_per_event: None,
        log_lines_per_sec: None,
        module_mb: None,
        state_mb: None,
        state_keys: None,
        instances: None,
    });
    let prefix = format!("{key}.limits");
    let mut check = |name: &str, value: Option<u32>, default: u32, range: std::ops::RangeInclusive<u32>, unit: &str| {
        in_range(problems, &prefix, name, value, default, range, unit)
    };
    let memory_mb = check("memory_mb", raw.memory_mb, Limits::DEFAULT_MEMORY_MB, 1..=4096, " MiB");
    let time_ms = check("time_ms", raw.time_ms, Limits::DEFAULT_TIME_MS, 1..=60_000, " ms");
    let emits_per_event = check(
        "emits_per_event",
        raw.emits_per_event,
        Limits::DEFAULT_EMITS_PER_EVENT,
        0..=10_000,
        "",
    );
    let emit_mb_per_event = check(
        "emit_mb_per_event",
        raw.emit_mb_per_event,
        Limits::DEFAULT_EMIT_MB_PER_EVENT,
        1..=1024,
        " MiB",
    );
    let log_lines_per_sec = check(
        "log_lines_per_sec",
        raw.log_lines_per_sec,
        Limits::DEFAULT_LOG_LINES_PER_SEC,
        0..=100_000,
        " lines/s",
    );
    let module_mb = check("module_mb", raw.module_mb, Limits::DEFAULT_MODULE_MB, 1..=1024, " MiB");
    let state_mb = check("state_mb", raw.state_mb, Limits::DEFAULT_STATE_MB, 1..=4096, " MiB");
    let state_keys = check(
        "state_keys",
        raw.state_keys,
        Limits::DEFAULT_STATE_KEYS,
        1..=Limits::DEFAULT_STATE_KEYS,
        " keys",
    );
    let instances = check("instances", raw.instances, Limits::DEFAULT_INSTANCES, 1..=1000, "");
    Limits {
        memory_mb,
        time: Duration::from_millis(time_ms.into()),
        emits_per_event,
        emit_mb_per_event,
        log_lines_per_sec,
        module_mb,
        state_mb,
        state_keys,
        instances,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const FILE: &str = "/etc/rowhook/rowhook.toml";
    const PASSWORD: &str = "s3cr3t-Pa55";

    fn env(name: &str) -> Option<String> {
        let vars: HashMap<&str, &str> = [
            ("ROWHOOK_DB_PASSWORD", PASSWORD),
            ("OUT_DIR", "/var/out"),
            ("QUOTED", "a \"quoted\"\nvalue"),
            ("EMPTY", ""),
        ]
        .into();
        vars.get(name).map(|v| v.to_string())
    }

    fn parse(text: &str) -> Result<Plan, ConfigError> {
        Plan::parse(text, Path::new(FILE), env)
    }

    fn problems(text: &str) -> Vec<Problem> {
        match parse(text) {
            Err(e @ ConfigError::Invalid { .. }) => e.problems().to_vec(),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    /// The one problem of `text`, as `key: what; fix`.
    fn problem(text: &str) -> String {
        let p = problems(text);
        assert_eq!(p.len(), 1, "{p:#?}");
        p[0].to_string()
    }

    fn syntax(text: &str) -> (Option<usize>, Option<String>, String) {
        match parse(text) {
            Err(ConfigError::Syntax { line, key, message, .. }) => (line, key, message),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    /// A valid handler to hang other tests on.
    const HANDLER: &str = r#"
[sinks.out]
kind = "stdout"

[[handlers]]
name = "h"
module = "h.wasm"
tables = ["shop.orders"]
sinks = ["out"]
"#;

    const FULL: &str = r#"
[source]
url = "mysql://repl:${ROWHOOK_DB_PASSWORD}@127.0.0.1:3306"
server_id = 4242
start = { file = "mysql-bin.000003", pos = 4 }
heartbeat_secs = 10

[state]
path = "/var/lib/rowhook"

[sinks.out]
kind = "stdout"

[sinks.audit]
kind = "file"
path = "${OUT_DIR}/audit.jsonl"
fsync = { interval_ms = 250 }
max_bytes = 1048576
keep = 3

[sinks.dead]
kind = "file"
path = "dead/letters.jsonl"
fsync = "never"

[sinks.news]
kind = "fifo"
path = "run/news.fifo"
mode = 0o660

[[handlers]]
name = "orders-copy"
tenant = "shop"
module = "handlers/orders.wasm"
tables = ["shop.orders", "shop.order_items", "shop.orders"]
ops = ["insert", "update"]
sinks = ["audit", "out"]
limits = { memory_mb = 32, time_ms = 50, emits_per_event = 16 }
on_error = "dead-letter"
dead_letter = "dead"

[[handlers]]
name = "news"
tenant = "web"
module = "/opt/handlers/news.wasm"
tables = ["cms.*"]
sinks = ["news"]
on_error = "skip"
"#;

    #[test]
    fn a_full_config_resolves() {
        let plan = parse(FULL).unwrap();
        assert_eq!(plan.file, Path::new(FILE));

        let source = plan.require_source().unwrap();
        assert_eq!(source.server_id, 4242);
        assert_eq!(
            source.start,
            StartPosition::File {
                file: "mysql-bin.000003".into(),
                pos: 4
            }
        );
        assert_eq!(source.heartbeat, Duration::from_secs(10));
        assert_eq!(source.url.opts().pass(), Some(PASSWORD));
        assert_eq!(source.url.to_string(), "mysql://repl@127.0.0.1:3306");

        assert_eq!(plan.state.path, Path::new("/var/lib/rowhook"));

        // Each kind's own keys are tested in its folder under sink/.
        let sinks: Vec<(&str, &str, Option<&Path>)> = plan
            .sinks
            .iter()
            .map(|(name, s)| (name.as_str(), s.kind(), s.path()))
            .collect();
        assert_eq!(
            sinks,
            [
                ("audit", "file", Some(Path::new("/var/out/audit.jsonl"))),
                ("dead", "file", Some(Path::new("/etc/rowhook/dead/letters.jsonl"))),
                ("news", "fifo", Some(Path::new("/etc/rowhook/run/news.fifo"))),
                ("out", "stdout", None),
            ]
        );

        let [orders, news] = &plan.handlers[..] else {
            panic!("two handlers")
        };
        assert_eq!(orders.name, "orders-copy");
        assert_eq!(orders.tenant, "shop");
        assert_eq!(orders.module, Path::new("/etc/rowhook/handlers/orders.wasm"));
        assert_eq!(
            orders.tables,
            [
                TablePattern::parse("shop.orders").unwrap(),
                TablePattern::parse("shop.order_items").unwrap()
            ],
            "deduplicated, in order"
        );
        assert_eq!(
            orders.ops,
            OpSet {
                insert: true,
                update: true,
                delete: false,
                snapshot: false,
            }
        );
        assert_eq!(orders.grants.iter().collect::<Vec<_>>(), ["audit", "out"]);
        assert!(!orders.grants.allows("news"));
        assert!(!orders.grants.allows("dead"), "the dead-letter sink is not a grant");
        assert_eq!(
            orders.limits,
            Limits {
                memory_mb: 32,
                time: Duration::from_millis(50),
                emits_per_event: 16,
                emit_mb_per_event: Limits::DEFAULT_EMIT_MB_PER_EVENT,
                log_lines_per_sec: Limits::DEFAULT_LOG_LINES_PER_SEC,
                module_mb: Limits::DEFAULT_MODULE_MB,
                state_mb: Limits::DEFAULT_STATE_MB,
                state_keys: Limits::DEFAULT_STATE_KEYS,
                instances: Limits::DEFAULT_INSTANCES,
            }
        );
        assert_eq!(orders.limits.memory_bytes(), 32 << 20);
        assert_eq!(orders.on_error, OnError::DeadLetter { sink: "dead".into() });

        assert_eq!(news.module, Path::new("/opt/handlers/news.wasm"));
        assert_eq!(
            news.tables,
            [TablePattern {
                db: "cms".into(),
                table: None
            }]
        );
        assert_eq!(news.ops, OpSet::ALL);
        assert_eq!(news.limits, Limits::default());
        assert_eq!(news.on_error, OnError::Skip);

        // Routing by subscription.
        let names = |db, t, op| plan.subscribers(db, t, op).map(|h| h.name.as_str()).collect::<Vec<_>>();
        assert_eq!(names("shop", "orders", Op::Insert), ["orders-copy"]);
        assert!(names("shop", "orders", Op::Delete).is_empty());
        assert!(names("shop", "users", Op::Insert).is_empty());
        assert_eq!(names("cms", "news", Op::Delete), ["news"]);
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let plan = parse("[source]\nurl = \"mysql://u:p@h:3306\"\nserver_id = 7\n").unwrap();
        let source = plan.source.as_ref().unwrap();
        assert_eq!(source.start, StartPosition::Latest);
        assert_eq!(source.heartbeat, Duration::from_secs(30));
        assert_eq!(plan.state.path, Path::new("/etc/rowhook/var/rowhook"));
        assert!(plan.sinks.is_empty() && plan.handlers.is_empty());

        let plan = parse(HANDLER).unwrap();
        assert!(plan.source.is_none());
        let err = plan.require_source().unwrap_err().to_string();
        assert!(
            err.contains("source: no [source] table") && err.contains("add [source]"),
            "{err}"
        );
        let h = &plan.handlers[0];
        assert_eq!(h.tenant, "default");
        assert_eq!(h.ops, OpSet::ALL);
        assert_eq!(
            h.limits,
            Limits {
                memory_mb: 64,
                time: Duration::from_millis(100),
                emits_per_event: 64,
                emit_mb_per_event: 16,
                log_lines_per_sec: 100,
                module_mb: 64,
                state_mb: 64,
                state_keys: Limits::DEFAULT_STATE_KEYS,
                instances: 100,
            }
        );
        assert_eq!(h.on_error, OnError::Halt);

        // No `sinks` grants nothing.
        let plan = parse("[[handlers]]\nname = \"h\"\nmodule = \"h.wasm\"\ntables = [\"a.b\"]\n").unwrap();
        assert!(plan.handlers[0].grants.is_empty());
        assert!(!plan.handlers[0].grants.allows("out"));
    }

    #[test]
    fn start_takes_every_form() {
        let start = |s: &str| {
            let text = format!("[source]\nurl = \"mysql://u:p@h:3306\"\nserver_id = 1\nstart = {s}\n");
            parse(&text).map(|p| p.source.unwrap().start)
        };
        assert_eq!(start("\"earliest\"").unwrap(), StartPosition::Earliest);
        assert_eq!(start("\"latest\"").unwrap(), StartPosition::Latest);
        assert_eq!(
            start("\"mysql-bin.000003:1234\"").unwrap(),
            StartPosition::File {
                file: "mysql-bin.000003".into(),
                pos: 1234
            }
        );
        assert_eq!(start("\"0-1-100\"").unwrap(), StartPosition::Gtid("0-1-100".into()));
        assert_eq!(
            start("{ gtid = \"0-1-100,1-2-3\" }").unwrap(),
            StartPosition::Gtid("0-1-100,1-2-3".into())
        );
        assert_eq!(
            start("{ file = \"mysql-bin.000009\", pos = 4 }").unwrap(),
            StartPosition::File {
                file: "mysql-bin.000009".into(),
                pos: 4
            }
        );
    }

    /// DESIGN.md's Config section, verbatim.
    const DESIGN_EXAMPLE: &str = r#"
[source]
url = "mysql://repl:${ROWHOOK_DB_PASSWORD}@127.0.0.1:3306"
server_id = 4242                  # unique among replicas
start = "earliest"                # | "latest" | { gtid = "0-1-100" } | { file = "mysql-bin.000003", pos = 4 }

[state]
path = "var/rowhook"              # checkpoint + handler state, embedded, crash-safe

[sinks.sms_queue]
kind = "redis"                    # stdout | file | fifo | redis | nats | http | mysql | postgres | exec | ...
url = "redis://127.0.0.1:6379"

[[handlers]]
name = "sms"
tenant = "notify"
module = "handlers/sms.wasm"
tables = ["shop.sms_outbox"]      # host-side subscription; the handler sees nothing else
ops = ["insert"]
sinks = ["sms_queue"]             # grants; anything else is denied
limits = { memory_mb = 32, time_ms = 50, emits_per_event = 16 }
on_error = "halt"                 # | "skip" | "dead-letter"
"#;

    #[test]
    #[cfg(feature = "sink-redis")]
    fn the_design_example_parses_and_its_redis_sink_needs_a_destination() {
        // It parses into raw structs as written.
        let raw = RawConfig::parse(DESIGN_EXAMPLE, Path::new(FILE), env).unwrap();
        assert_eq!(raw.sinks["sms_queue"].kind, "redis");
        assert!(raw.sinks["sms_queue"].options.is_some());
        assert_eq!(raw.handlers[0].ops, Some(vec![RawOp::Insert]));

        // Resolving asks where the redis sink writes, and nothing else.
        assert_eq!(
            problem(DESIGN_EXAMPLE),
            "sinks.sms_queue.stream: no destination is set; set one of stream, list, channel, key_prefix or hash"
        );

        // The rest, with the sink's list named.
        let text = DESIGN_EXAMPLE.replace(
            "url = \"redis://127.0.0.1:6379\"",
            "url = \"redis://127.0.0.1:6379\"\nlist = \"sms\"",
        );
        let plan = parse(&text).unwrap();
        let source = plan.source.as_ref().unwrap();
        assert_eq!((source.server_id, &source.start), (4242, &StartPosition::Earliest));
        assert_eq!(plan.state.path, Path::new("/etc/rowhook/var/rowhook"));
        let h = &plan.handlers[0];
        assert_eq!((h.name.as_str(), h.tenant.as_str()), ("sms", "notify"));
        assert_eq!(h.module, Path::new("/etc/rowhook/handlers/sms.wasm"));
        assert!(h.subscribes("shop", "sms_outbox", Op::Insert));
        assert!(!h.subscribes("shop", "sms_outbox", Op::Update));
        assert!(!h.subscribes("shop", "orders", Op::Insert));
        assert!(h.grants.allows("sms_queue") && !h.grants.allows("other"));
        assert_eq!(
            h.limits,
            Limits {
                memory_mb: 32,
                time: Duration::from_millis(50),
                emits_per_event: 16,
                emit_mb_per_event: Limits::DEFAULT_EMIT_MB_PER_EVENT,
                log_lines_per_sec: Limits::DEFAULT_LOG_LINES_PER_SEC,
                module_mb: Limits::DEFAULT_MODULE_MB,
                state_mb: Limits::DEFAULT_STATE_MB,
                state_keys: Limits::DEFAULT_STATE_KEYS,
                instances: Limits::DEFAULT_INSTANCES,
            }
        );
        assert_eq!(h.on_error, OnError::Halt);
    }

    #[test]
    fn an_unknown_kind_names_the_list_kinds() {
        // Its other keys are not checked: they belong to a kind we do not know.
        let not_built = ["redis", "nats", "kafka", "STDOUT"]
            .into_iter()
            .filter(|k| !crate::sink::KINDS.contains(k));
        for kind in not_built {
            let text = format!("[sinks.s]\nkind = \"{kind}\"\nurl = \"x://y\"\nanything = 1\nretries = 3\n");
            assert_eq!(
                problem(&text),
                format!(
                    "sinks.s.kind: sink kind `{kind}` is not in this build; use one of {}",
                    list_kinds()
                )
            );
        }
        let (line, key, message) = syntax("[sinks.s]\npath = \"x\"\n");
        assert_eq!((line, key.as_deref()), (Some(1), Some("sinks.s")));
        assert!(message.contains("missing field `kind`"), "{message}");
        let (line, key, message) = syntax("[sinks.s]\nkind = 5\n");
        assert_eq!((line, key.as_deref()), (Some(2), Some("sinks.s.kind")));
        assert!(message.contains("expected a sink kind"), "{message}");
        let (line, key, _) = syntax("[sinks]\ns = 5\n");
        assert_eq!((line, key.as_deref()), (Some(2), Some("sinks.s")));
        let (line, key, _) = syntax("sinks = 5\n");
        assert_eq!((line, key.as_deref()), (Some(1), Some("sinks")));
    }

    #[test]
    fn shared_sink_keys_are_read_once_for_every_kind() {
        let (line, key, message) = syntax("[sinks.a]\nkind = \"fifo\"\npath = \"p\"\n\nretries = true\n");
        assert_eq!((line, key.as_deref()), (Some(5), Some("sinks.a.retries")));
        assert!(message.contains("a number of retries or \"forever\""), "{message}");
        let (line, key, _) = syntax("[sinks.a]\nkind = \"stdout\"\nretry_max_ms = \"5s\"\n");
        assert_eq!((line, key.as_deref()), (Some(3), Some("sinks.a.retry_max_ms")));
        // An unknown key names the kind's keys and the shared ones.
        let (line, key, message) = syntax("[sinks.o]\nkind = \"stdout\"\nretry = 3\n");
        assert_eq!((line, key.as_deref()), (Some(3), Some("sinks.o.retry")));
        assert_eq!(
            message,
            "unknown field `retry`: a `stdout` sink has no keys of its own; every sink also takes `kind`, `retries` and `retry_max_ms`"
        );
        // Inside a table of the kind's, only that table's keys.
        let (_, key, message) = syntax("[sinks.f]\nkind = \"file\"\npath = \"x\"\nfsync = { interval = 5 }\n");
        assert_eq!(key.as_deref(), Some("sinks.f.fsync.interval"));
        assert_eq!(message, "unknown field `interval`, expected `interval_ms`");
        let (_, _, message) = syntax("[sinks.f]\nkind = \"file\"\npath = \"x\"\nretry = 3\n");
        assert!(
            message.starts_with(
                "unknown field `retry`, expected one of `path`, `fsync`, `max_bytes`, `keep`; every sink also takes"
            ),
            "{message}"
        );
    }

    #[test]
    fn env_expansion() {
        let plan = parse(
            r#"
# Comments are not expanded: ${NOT_SET}
[sinks.a]
kind = "file"
path = "${OUT_DIR}/a-$${literal}-$$-${EMPTY}.jsonl"
[sinks.b]
kind = "file"
path = '${QUOTED}'
[[handlers]]
name = "h"
module = "${OUT_DIR}/h.wasm"
tables = ["shop.${EMPTY}orders"]
"#,
        )
        .unwrap();
        assert_eq!(
            plan.sinks["a"].path().unwrap(),
            Path::new("/var/out/a-${literal}-$-.jsonl")
        );
        // A value with quotes and a newline stays one string: expansion works
        // on parsed values, not on the TOML text.
        assert_eq!(
            plan.sinks["b"].path().unwrap(),
            Path::new("/etc/rowhook/a \"quoted\"\nvalue")
        );
        assert_eq!(plan.handlers[0].module, Path::new("/var/out/h.wasm"));
        assert_eq!(plan.handlers[0].tables[0].to_string(), "shop.orders");
    }

    #[test]
    fn env_errors_name_the_variable_and_the_line() {
        let err = |text: &str| match parse(text) {
            Err(ConfigError::Env { line, message, .. }) => (line, message),
            other => panic!("expected an env error, got {other:?}"),
        };
        let (line, message) = err("[sinks.a]\nkind = \"file\"\n\npath = \"/x/${NOPE}/y\"\n");
        assert_eq!(line, 4);
        assert!(message.contains("`NOPE` is not set"), "{message}");
        // Inside a multi-line string, the line of the variable itself.
        let (line, _) = err("[sinks.a]\nkind = \"file\"\npath = \"\"\"\na\nb${NOPE}\"\"\"\n");
        assert_eq!(line, 5);
        // In an array.
        let (line, message) =
            err("[[handlers]]\nname = \"h\"\nmodule = \"m\"\ntables = [\n  \"a.b\",\n  \"${MISSING_DB}.t\",\n]\n");
        assert_eq!(line, 6);
        assert!(message.contains("MISSING_DB"), "{message}");
        let (_, message) = err("[sinks.a]\nkind = \"file\"\npath = \"cost: 5$\"\n");
        assert!(message.contains("`$$`"), "{message}");
        let (_, message) = err("[sinks.a]\nkind = \"file\"\npath = \"$HOME/x\"\n");
        assert!(message.contains("`${NAME}`"), "{message}");
        let (_, message) = err("[sinks.a]\nkind = \"file\"\npath = \"${OUT_DIR\"\n");
        assert!(message.contains("no closing `}`"), "{message}");
        let (_, message) = err("[sinks.a]\nkind = \"file\"\npath = \"${1X}\"\n");
        assert!(message.contains("not a variable name"), "{message}");
        // The message names the file.
        let e = parse("[sinks.a]\nkind = \"file\"\npath = \"${NOPE}\"\n").unwrap_err();
        assert!(e.to_string().starts_with("/etc/rowhook/rowhook.toml:3: "), "{e}");
    }

    #[test]
    fn deploy_needs_tenants_and_start_belongs_to_deployed_handlers() {
        let text = "[sinks.out]\nkind = \"stdout\"\n\n[deploy]\ndir = \"tenants\"\n\n\
                    [[handlers]]\nname = \"a\"\nmodule = \"a.wasm\"\ntables = [\"shop.x\"]\nstart = \"latest\"\n";
        assert_eq!(
            problem_lines(parse_with_env(text, &[])),
            [
                "deploy.dir: tenants deploy their handlers, and the config declares no [tenants]",
                "handlers[0].start: applies to handlers deployed into a running rowhook only",
            ]
        );
        let text = text.replace("start = \"latest\"\n", "tenant = \"shop\"\n")
            + "\n[tenants.shop]\ntables = [\"shop.*\"]\nsinks = [\"out\"]\n";
        let file = Path::new("/etc/rowhook/rowhook.toml");
        let deployed = |name: &str, start: &str| {
            let raw: RawHandler = toml::from_str(&format!(
                "name = \"{name}\"\ntenant = \"shop\"\nmodule = \"/srv/tenants/shop/b.wasm\"\ntables = [\"shop.y\"]\nsinks = [\"out\"]\n{start}"
            ))
            .unwrap();
            raw
        };
        let mut raw = RawConfig::parse(&text, file, |_| None).unwrap();
        raw.add_deployed(
            "tenants/shop/b.toml: handlers[0]".into(),
            deployed("b", "start = \"latest\""),
        );
        let plan = raw.resolve(file).unwrap();
        assert_eq!(plan.deploy.as_deref(), Some(Path::new("/etc/rowhook/tenants")));
        let b = &plan.handlers[1];
        assert_eq!((b.name.as_str(), b.start), ("b", HandlerStart::Latest));
        assert_eq!(plan.handlers[0].start, HandlerStart::Lane);
        assert_eq!(b.module, Path::new("/srv/tenants/shop/b.wasm"));
        // A deployed handler's problems are named by its file; a name
        // taken tells which handler of the config has it, and a tenant
        // learns no more of another tenant's handler than that it exists.
        let mut raw = RawConfig::parse(&text, file, |_| None).unwrap();
        raw.add_deployed("tenants/shop/b.toml: handlers[0]".into(), deployed("b", ""));
        raw.add_deployed("tenants/shop/c.toml: handlers[0]".into(), deployed("a", ""));
        raw.add_deployed("tenants/shop/c.toml: handlers[1]".into(), deployed("b", ""));
        assert_eq!(
            problem_lines(raw.resolve(file)),
            [
                "tenants/shop/c.toml: handlers[0].name: handler name `a` is already used by handlers[0]",
                "tenants/shop/c.toml: handlers[1].name: handler name `b` is already used by another handler",
            ]
        );
    }

    #[test]
    fn unknown_keys_are_rejected_everywhere() {
        let cases = [
            (
                "colour = \"red\"\n",
                "colour",
                "unknown field `colour`, expected one of `source`, `state`, `sinks`, `handlers`",
            ),
            (
                "[source]\nurl = \"mysql://u:p@h:1\"\nserver_id = 1\nserverid = 2\n",
                "source.serverid",
                "unknown field `serverid`, expected one of `url`, `server_id`, `start`, `heartbeat_secs`",
            ),
            (
                "[source]\nurl = \"mysql://u:p@h:1\"\nserver_id = 1\nstart = { gtid = \"0-1-1\", poss = 4 }\n",
                "source.start.poss",
                "unknown field `poss`",
            ),
            ("[state]\ndir = \"x\"\n", "state.dir", "unknown field `dir`"),
            (
                "[sinks.f]\nkind = \"file\"\npath = \"x\"\nfsynk = \"always\"\n",
                "sinks.f.fsynk",
                "unknown field `fsynk`",
            ),
            (
                "[sinks.f]\nkind = \"file\"\npath = \"x\"\nfsync = { every_ms = 5 }\n",
                "sinks.f.fsync.every_ms",
                "unknown field `every_ms`",
            ),
            (
                "[sinks.o]\nkind = \"stdout\"\npath = \"x\"\n",
                "sinks.o.path",
                "unknown field `path`",
            ),
            (
                "[sinks.p]\nkind = \"fifo\"\npath = \"x\"\nowner = \"www\"\n",
                "sinks.p.owner",
                "unknown field `owner`",
            ),
            (
                "[[handlers]]\nname = \"h\"\nmodule = \"m\"\ntables = [\"a.b\"]\ngrants = [\"x\"]\n",
                "handlers[0].grants",
                "unknown field `grants`",
            ),
            (
                "[[handlers]]\nname = \"h\"\nmodule = \"m\"\ntables = [\"a.b\"]\nlimits = { fuel = 5 }\n",
                "handlers[0].limits.fuel",
                "unknown field `fuel`",
            ),
        ];
        for (text, want_key, want) in cases {
            let (line, key, message) = syntax(text);
            assert!(message.contains(want), "{text}: {message}");
            assert!(line.is_some(), "{text}: a line number");
            assert_eq!(key.as_deref(), Some(want_key), "{text}");
        }
    }

    #[test]
    fn schema_errors_give_file_line_key_and_message() {
        let text = "[[handlers]]\nname = \"a\"\nmodule = \"m\"\ntables = [\"a.b\"]\n\n[[handlers]]\nname = \"b\"\nmodule = \"m\"\ntables = [\"a.b\"]\nlimits = { time_ms = \"fast\" }\n";
        let (line, key, message) = syntax(text);
        assert_eq!(line, Some(10));
        assert_eq!(key.as_deref(), Some("handlers[1].limits.time_ms"));
        assert!(
            message.contains("invalid type: string \"fast\", expected u32"),
            "{message}"
        );
        let e = parse(text).unwrap_err().to_string();
        assert!(
            e.starts_with("/etc/rowhook/rowhook.toml:10:"),
            "file and line first: {e}"
        );
        assert!(e.contains("handlers[1].limits.time_ms: invalid type"), "{e}");

        let (_, key, message) =
            syntax("[[handlers]]\nname = \"a\"\nmodule = \"m\"\ntables = [\"a.b\"]\nops = [\"upsert\"]\n");
        assert_eq!(key.as_deref(), Some("handlers[0].ops[0]"));
        assert!(
            message.contains("unknown variant `upsert`, expected one of `insert`, `update`, `delete`"),
            "{message}"
        );
        let (_, key, message) =
            syntax("[[handlers]]\nname = \"a\"\nmodule = \"m\"\ntables = [\"a.b\"]\non_error = \"retry\"\n");
        assert_eq!(key.as_deref(), Some("handlers[0].on_error"));
        assert!(message.contains("`dead-letter`"), "{message}");
        let (_, key, message) = syntax("[[handlers]]\nname = \"a\"\nmodule = \"m\"\n");
        assert_eq!(key.as_deref(), Some("handlers[0]"));
        assert!(message.contains("missing field `tables`"), "{message}");
        let (_, key, message) = syntax("[source]\nurl = \"mysql://u:p@h:1\"\nserver_id = -1\n");
        assert_eq!(key.as_deref(), Some("source.server_id"));
        assert!(!message.is_empty());
        let (_, key, message) = syntax("[source]\nurl = \"mysql://u:p@h:1\"\nserver_id = 1\nstart = 5\n");
        assert_eq!(key.as_deref(), Some("source.start"));
        assert!(message.contains("\"earliest\""), "{message}");

        // Not TOML at all.
        let (line, key, _) = syntax("[source\nurl = 1\n");
        assert_eq!((line, key), (Some(1), None));
        let (line, _, _) = syntax("a = 1\na = 2\n");
        assert_eq!(line, Some(2));
    }

    #[test]
    fn source_problems() {
        let src = |body: &str| problems(&format!("[source]\n{body}\n"));
        let p = src("url = \"postgres://u:pw-secret@h:1\"\nserver_id = 0\nstart = \"yesterday\"\nheartbeat_secs = 0");
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "source.url",
                "source.server_id",
                "source.start",
                "source.heartbeat_secs"
            ]
        );
        assert!(p[0].what.contains("the scheme must be mysql://"), "{}", p[0]);
        assert!(p[1].fix.contains("non-zero"), "{}", p[1]);
        assert!(p[2].what.contains("`yesterday` is not a start position"), "{}", p[2]);
        assert!(p[3].fix.contains("1 to 3600"), "{}", p[3]);

        let base = "url = \"mysql://u:p@h:1\"\nserver_id = 1\n";
        let one = |start: &str| {
            let p = src(&format!("{base}start = {start}"));
            assert_eq!(p.len(), 1, "{p:#?}");
            p[0].to_string()
        };
        assert!(one("{ file = \"mysql-bin.000003\" }").starts_with("source.start.pos: a file start needs a position"));
        assert!(one("{ pos = 4 }").starts_with("source.start.file: a position needs a file"));
        assert!(
            one("{ file = \"mysql-bin.000003\", pos = 2 }")
                .starts_with("source.start.pos: 2 is before the first event")
        );
        assert!(one("{ file = \"\", pos = 4 }").starts_with("source.start.file:"));
        assert!(one("{ gtid = \"0-1-1\", file = \"f.1\", pos = 4 }").starts_with("source.start: gives both"));
        assert!(one("{}").starts_with("source.start: the table is empty"));
        assert!(one("{ gtid = \"latest\" }").starts_with("source.start.gtid: `latest` is not a GTID set"));
        assert!(one("{ gtid = \"zzz\" }").starts_with("source.start.gtid:"));
        assert!(
            one("\"mysql-bin.000003:2\"")
                .starts_with("source.start: `mysql-bin.000003:2`: a binlog position is at least 4")
        );
        assert!(src(&format!("{base}heartbeat_secs = 3601"))[0].key == "source.heartbeat_secs");
    }

    #[test]
    fn sink_problems() {
        // Each kind's own problems are tested in its folder under sink/.
        let p = problems(
            r#"
[state]
path = " "
[sinks."bad name"]
kind = "stdout"
[sinks.a]
kind = "file"
path = ""
[sinks.f]
kind = "fifo"
path = "p"
mode = 0o1777
[sinks.g]
kind = "fifo"
path = "./x"
[sinks.h]
kind = "file"
path = "/etc/rowhook/x"
"#,
        );
        let got: Vec<String> = p.iter().map(|p| format!("{}: {}", p.key, p.what)).collect();
        assert_eq!(
            got,
            [
                "state.path: is empty",
                "sinks.a.path: is empty",
                "sinks.bad name: `bad name` is not a sink name",
                "sinks.f.mode: 0o1777 is not a permission mode",
                "sinks.h.path: `/etc/rowhook/x` is also the path of sink `g`",
            ]
        );
        assert!(p.iter().all(|p| !p.fix.is_empty()));
        // Paths are compared (and kept) without `.` components.
        let plan = parse("[sinks.g]\nkind = \"fifo\"\npath = \"./run/./x\"\n").unwrap();
        assert_eq!(plan.sinks["g"].path().unwrap().as_os_str(), "/etc/rowhook/run/x");
    }

    #[test]
    fn sink_retries() {
        let plan = parse(
            r#"
[sinks.a]
kind = "stdout"
[sinks.b]
kind = "fifo"
path = "p"
retries = "forever"
retry_max_ms = 60000
[sinks.c]
kind = "file"
path = "f"
retries = 0
"#,
        )
        .unwrap();
        assert_eq!(plan.sink_retry["a"], SinkRetry::default());
        assert_eq!(
            plan.sink_retry["b"],
            SinkRetry {
                attempts: None,
                max_delay: Duration::from_secs(60)
            }
        );
        assert_eq!(plan.sink_retry["c"].attempts, Some(0));
        assert!(!plan.sink_retry["c"].allows(0));
        assert!(plan.sink_retry["a"].allows(7) && !plan.sink_retry["a"].allows(8));

        let p = problems(
            r#"
[sinks.a]
kind = "stdout"
retries = -1
[sinks.b]
kind = "fifo"
path = "p"
retries = "often"
retry_max_ms = 10
"#,
        );
        let got: Vec<String> = p.iter().map(|p| format!("{}: {}", p.key, p.what)).collect();
        assert_eq!(
            got,
            [
                "sinks.a.retries: -1 is out of range",
                "sinks.b.retries: `often` is not a number of retries",
                "sinks.b.retry_max_ms: 10 is out of range",
            ]
        );
        assert!(p.iter().all(|p| !p.fix.is_empty()));
    }

    #[test]
    fn handler_problems() {
        let p = problems(
            r#"
[sinks.out]
kind = "stdout"
[sinks.log]
kind = "stdout"

[[handlers]]
name = "a"
module = "a.wasm"
tables = ["shop.orders"]

[[handlers]]
name = "a"
tenant = "team one"
module = " "
tables = []
ops = []
sinks = ["out", "nowhere"]
limits = { memory_mb = 0, time_ms = 60001, emits_per_event = 10001, emit_mb_per_event = 0, state_mb = 4097, instances = 0 }
breaker = { failures = 1000001, window_ms = 0, cooldown_ms = 3600001, hold_mb = 0 }

[[handlers]]
name = "b/c"
module = "b.wasm"
tables = ["orders", "shop.", "*.orders", "shop.ord*", "shop.`x`", "shop.*"]
on_error = "dead-letter"

[[handlers]]
name = "d"
module = "d.wasm"
tables = ["a.b"]
on_error = "dead-letter"
dead_letter = "missing"

[[handlers]]
name = "e"
module = "e.wasm"
tables = ["a.b"]
on_error = "skip"
dead_letter = "log"
"#,
        );
        let got: Vec<String> = p.iter().map(|p| format!("{}: {}", p.key, p.what)).collect();
        assert_eq!(
            got,
            [
                "handlers[1].name: handler name `a` is already used by handlers[0]",
                "handlers[1].tenant: `team one` is not a tenant name",
                "handlers[1].module: is empty",
                "handlers[1].tables: is empty: the handler would see no row change",
                "handlers[1].ops: is empty: the handler would see no row change",
                "handlers[1].sinks: sink `nowhere` is not defined",
                "handlers[1].limits.memory_mb: 0 is out of range",
                "handlers[1].limits.time_ms: 60001 is out of range",
                "handlers[1].limits.emits_per_event: 10001 is out of range",
                "handlers[1].limits.emit_mb_per_event: 0 is out of range",
                "handlers[1].limits.state_mb: 4097 is out of range",
                "handlers[1].limits.instances: 0 is out of range",
                "handlers[1].breaker.failures: 1000001 is out of range",
                "handlers[1].breaker.window_ms: 0 is out of range",
                "handlers[1].breaker.cooldown_ms: 3600001 is out of range",
                "handlers[1].breaker.hold_mb: 0 is out of range",
                "handlers[1].breaker.hold_mb: is only used with while_suspended = \"hold\"",
                "handlers[2].name: `b/c` is not a handler name",
                "handlers[2].tables[0]: `orders` is not `db.table` or `db.*`",
                "handlers[2].tables[1]: `shop.` needs both a database and a table (`db.table` or `db.*`)",
                "handlers[2].tables[2]: `*.orders`: the database cannot be a wildcard; name it (`db.*` subscribes to all its tables)",
                "handlers[2].tables[3]: `shop.ord*`: `*` matches whole tables only (`shop.*`), not parts of names",
                "handlers[2].tables[4]: `shop.`x`` holds spaces or backquotes; write names bare: `shop.orders`",
                "handlers[2].dead_letter: on_error = \"dead-letter\" needs a sink to write failed events to",
                "handlers[3].dead_letter: sink `missing` is not defined",
                "handlers[4].dead_letter: is only used with on_error = \"dead-letter\"",
            ]
        );
        // An out-of-range limit names its range, unit and default.
        assert_eq!(p[10].fix, "use 1 to 4096 MiB (default 64)");
        // The fix of an undefined sink lists the defined ones.
        assert_eq!(
            p[5].fix,
            "define it in a [sinks.nowhere] table or use a defined sink (defined: `log`, `out`)"
        );
        // The whole error names the file on every line.
        let e = parse(&format!(
            "{HANDLER}\n[[handlers]]\nname = \"h\"\nmodule = \"m\"\ntables = [\"a.b\"]\nsinks = [\"x\"]\n"
        ))
        .unwrap_err();
        let text = e.to_string();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            text.lines()
                .all(|l| l.starts_with("/etc/rowhook/rowhook.toml: handlers[1]")),
            "{text}"
        );
        assert!(
            text.contains("handlers[1].sinks: sink `x` is not defined; define it in a [sinks.x] table"),
            "{text}"
        );
    }

    #[test]
    fn secrets_never_show() {
        let text = |extra: &str| {
            format!("[source]\nurl = \"mysql://repl:${{ROWHOOK_DB_PASSWORD}}@127.0.0.1:3306\"\nserver_id = 1\n{extra}")
        };
        // Debug of the raw config and the plan.
        let raw = RawConfig::parse(&text(""), Path::new(FILE), env).unwrap();
        let debug = format!("{raw:?}");
        assert!(!debug.contains(PASSWORD), "{debug}");
        assert!(debug.contains("mysql://repl:***@127.0.0.1:3306"), "{debug}");
        let plan = parse(&text("")).unwrap();
        let debug = format!("{plan:?}");
        assert!(!debug.contains(PASSWORD), "{debug}");

        // Errors: a bad URL, a schema error echoing a value from the
        // environment, resolve problems next to the URL.
        let errors = [
            parse("[source]\nurl = \"mysqlx://repl:${ROWHOOK_DB_PASSWORD}@h:1\"\nserver_id = 1\n").unwrap_err(),
            parse(&text("heartbeat_secs = \"${ROWHOOK_DB_PASSWORD}\"\n")).unwrap_err(),
            parse(&text("start = \"${ROWHOOK_DB_PASSWORD}\"\n")).unwrap_err(),
            parse("[source]\nurl = \"mysql://repl:literal-pw@h:1\"\nserver_id = 0\nstart = \"literal-pw\"\n")
                .unwrap_err(),
            parse("[source]\nurl = \"mysql://repl:literal-pw@h:1\"\nserver_id = \"literal-pw\"\n").unwrap_err(),
        ];
        for e in &errors {
            for shown in [e.to_string(), format!("{e:?}")] {
                assert!(!shown.contains(PASSWORD), "{shown}");
                assert!(!shown.contains("literal-pw"), "{shown}");
            }
        }
        assert!(
            errors[2]
                .to_string()
                .contains("source.start: `***` is not a start position"),
            "{}",
            errors[2]
        );

        assert_eq!(
            RedactedUrl("mysql://u:p@ss@h:1/db?x=@".into()).to_string(),
            "mysql://u:***@h:1/db?x=@"
        );
        assert_eq!(RedactedUrl("mysql://u@h:1".into()).to_string(), "mysql://u@h:1");
        assert_eq!(RedactedUrl("not a url".into()).to_string(), "not a url");
    }

    #[test]
    fn load_reads_the_file_and_resolves_against_its_directory() {
        let dir = crate::sink::testing::TempDir::new("config-load");
        let file = dir.path().join("rowhook.toml");
        std::fs::write(&file, HANDLER).unwrap();
        let plan = Plan::load(&file).unwrap();
        assert_eq!(plan.file, file);
        assert_eq!(plan.handlers[0].module, dir.path().join("h.wasm"));
        assert_eq!(plan.state.path, dir.path().join("var/rowhook"));

        let missing = dir.path().join("nope.toml");
        let e = Plan::load(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(e.to_string().contains("nope.toml"), "{e}");
    }

    #[test]
    fn http_is_opt_in_loopback_by_default_and_public_only_with_a_token() {
        assert_eq!(parse("").unwrap().http, None);
        let plan = parse("[http]\n").unwrap();
        let http = plan.http.unwrap();
        assert_eq!(http.listen.to_string(), DEFAULT_HTTP_LISTEN);
        assert_eq!(http.token, None);
        let token = "0123456789abcdef-secret";
        let plan = parse_with_env("[http]\nlisten = \"0.0.0.0:9187\"\ntoken = \"${T}\"\n", &[("T", token)]).unwrap();
        let http = plan.http.unwrap();
        assert_eq!(http.token.as_deref(), Some(token));
        assert!(!format!("{http:?}").contains(token), "Debug hides the token");
        let p = problems("[http]\nlisten = \"0.0.0.0:9187\"\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "http.listen");
        assert!(p[0].what.contains("reachable from other hosts") && p[0].fix.contains("token"));
        let p = problems("[http]\nlisten = \"localhost\"\n");
        assert_eq!(
            (p[0].key.as_str(), p[0].what.contains("not an IP address")),
            ("http.listen", true)
        );
        match parse_with_env("[http]\ntoken = \"${T}\"\n", &[("T", "too-short")]) {
            Err(e @ ConfigError::Invalid { .. }) => {
                assert_eq!(e.problems()[0].key, "http.token");
                assert!(!e.to_string().contains("too-short"));
            }
            other => panic!("a short token was taken: {other:?}"),
        }
    }

    #[test]
    fn table_patterns() {
        let exact = TablePattern::parse("shop.orders").unwrap();
        assert!(exact.matches("shop", "orders"));
        assert!(!exact.matches("shop", "Orders"), "names compare exactly");
        assert!(!exact.matches("shop2", "orders"));
        let all = TablePattern::parse("shop.*").unwrap();
        assert!(all.matches("shop", "anything") && !all.matches("other", "anything"));
        assert_eq!(all.to_string(), "shop.*");
        assert_eq!(exact.to_string(), "shop.orders");
        assert!(TablePattern::parse("*.*").is_err());
        assert!(TablePattern::parse("shop.orders x").is_err());
    }
}
