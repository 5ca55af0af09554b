//! `kind = "redis"`: each message into Redis, in one of five shapes.
//!
//! | Key set | Each message becomes | Atomic per batch |
//! |---|---|---|
//! | `stream` | `XADD stream [MAXLEN ~ N] * payload P id ID [key K]` | `MULTI`/`EXEC` |
//! | `list` | one element of `RPUSH list P…` (or `LPUSH`) | one command |
//! | `channel` | `PUBLISH channel P` | `MULTI`/`EXEC` |
//! | `key_prefix` | `SET prefix+K P [PX ttl]` | `MULTI`/`EXEC` |
//! | `hash` | `HSET hash K P` (then `PEXPIRE hash ttl`) | `MULTI`/`EXEC` |
//!
//! - **Ack = the server's reply.** A batch is sent as one pipelined request
//!   and acknowledged once Redis has answered it: the writes are in the
//!   server's memory, as durable as its `appendonly`/`save` settings make
//!   them. Because the batch is one transaction (or one command), Redis ran
//!   all of it or none: a server out of memory refuses the whole `MULTI`
//!   while queuing it, so a retry never finds half a batch there.
//! - **Dedupe.** A stream entry carries the change id in its `id` field. List
//!   elements, published messages and values are the payload as emitted (the
//!   default row-change JSON holds its `"id"`); `SET`/`HSET` are idempotent,
//!   and a re-delivery writes the same value again. A reply lost after Redis
//!   ran the batch (the connection dropped) means the retry delivers it twice.
//! - **Unavailable or permanent.** No connection, a timeout, a dropped
//!   connection, or a server saying `OOM`, `LOADING`, `BUSY`, `READONLY`,
//!   `TRYAGAIN`, `MASTERDOWN` or `CLUSTERDOWN` is [`SinkError::Unavailable`]:
//!   the pipeline retries the batch with its backoff, and the sink connects
//!   again at the next call. Refused credentials or permissions, a key of the
//!   wrong type, and a message larger than the server takes are
//!   [`SinkError::Permanent`], with the fix.
//! - **Limits come from the server.** The sink connects when it is opened
//!   and at each reconnect reads `proto-max-bulk-len` (`CONFIG GET`;
//!   Redis's default, 512 MiB, if the command is not allowed). The value
//!   read at open is the sink's [`Sink::limits`], so a handler's larger
//!   `emit` gets `too-large`; a batch holding a larger payload or key (the
//!   server's limit lowered since) is refused before any of it is sent.
//! - **Cancel-safe, no queue.** The sink holds one connection and no buffer;
//!   a slow server makes `write_batch` slow. A call dropped while its request
//!   was in flight leaves the connection marked, and the next call drops it
//!   and connects anew: the dropped request ran whole or not at all, and the
//!   batch is sent again.

use std::fmt;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionInfo, IntoConnectionInfo, RedisError};

mod config;

pub use self::config::{DEFAULT_TIMEOUT_MS, RawRedisSink};
use super::kind::SinkKind;
use super::{Message, Sink, SinkError, SinkLimits};
use crate::probe::CheckLine;
use crate::problem::SinkContext;

/// `kind = "redis"` in the registry.
#[derive(Debug)]
pub struct RedisKind;

impl SinkKind for RedisKind {
    const NAME: &'static str = "redis";
    type Raw = RawRedisSink;
    type Options = RedisOptions;
    type Sink = RedisSink;

    fn resolve(raw: RawRedisSink, cx: &mut SinkContext<'_>) -> Option<RedisOptions> {
        config::resolve(raw, cx)
    }

    async fn open(name: &str, options: &RedisOptions) -> Result<RedisSink, SinkError> {
        let mut sink = RedisSink::open(name, options.clone())?;
        // Connect now, so that the server's limit is known when handlers
        // are granted the sink (see `Sink::limits`): a server that is down
        // is no error here, refused credentials are.
        match sink.connection().await {
            Ok(_) => {}
            Err(e @ SinkError::Permanent { .. }) => return Err(e),
            Err(e) => tracing::info!(sink = %name, "not connected yet: {e}"),
        }
        Ok(sink)
    }

    fn probe(name: &str, options: &RedisOptions) -> CheckLine {
        probe(name, options)
    }

    fn one_line_per_message(_: &RedisOptions) -> bool {
        false
    }
}

/// Settings of a redis sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// The server, with its credentials.
    pub url: RedisUrl,
    /// Where each message goes.
    pub mode: Mode,
    /// How long connecting, or one batch's reply, may take.
    pub timeout: Duration,
}

/// Where a redis sink writes each message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `XADD` to a stream, with the fields `payload`, `id` and `key`.
    Stream {
        /// The stream's key.
        stream: String,
        /// `MAXLEN ~ N` trimming.
        maxlen: Option<u64>,
    },
    /// Push the payload onto a list.
    List {
        /// The list's key.
        list: String,
        /// The end pushed onto.
        side: ListSide,
    },
    /// `PUBLISH` the payload.
    Channel {
        /// The channel.
        channel: String,
    },
    /// `SET` prefix + the message's key to the payload.
    Keys {
        /// Prepended to every message's key.
        prefix: String,
        /// Expiry of each key written.
        ttl: Option<Duration>,
    },
    /// `HSET` the field named by the message's key to the payload.
    Hash {
        /// The hash's key.
        hash: String,
        /// Expiry of the whole hash, renewed by each batch.
        ttl: Option<Duration>,
    },
}

/// The end of a list messages are pushed onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListSide {
    /// `LPUSH`: consumers pop from the right.
    Left,
    /// `RPUSH`: consumers pop from the left.
    Right,
}

impl Mode {
    /// The Redis type the destination key must hold, if the mode writes one key.
    fn key_and_type(&self) -> Option<(&str, &'static str)> {
        match self {
            Mode::Stream { stream, .. } => Some((stream, "stream")),
            Mode::List { list, .. } => Some((list, "list")),
            Mode::Hash { hash, .. } => Some((hash, "hash")),
            Mode::Channel { .. } | Mode::Keys { .. } => None,
        }
    }

    /// What the sink writes to, for messages: "stream `orders`".
    fn describe(&self) -> String {
        match self {
            Mode::Stream { stream, .. } => format!("stream `{stream}`"),
            Mode::List { list, .. } => format!("list `{list}`"),
            Mode::Channel { channel } => format!("channel `{channel}`"),
            Mode::Keys { prefix, .. } => format!("keys `{prefix}…`"),
            Mode::Hash { hash, .. } => format!("hash `{hash}`"),
        }
    }
}

/// A redis URL as configured. It may hold a password, so `Debug` shows only
/// where it points.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    text: String,
    target: String,
}

impl RedisUrl {
    /// Checks the scheme and the syntax. The error never repeats the URL.
    pub fn parse(text: &str) -> Result<RedisUrl, String> {
        let scheme = text.split_once("://").map_or("", |(s, _)| s);
        if !matches!(scheme, "redis" | "rediss" | "redis+unix" | "unix") {
            return Err(if scheme.is_empty() {
                "is not a URL".to_owned()
            } else {
                format!("`{scheme}` is not a redis URL scheme")
            });
        }
        let info = text
            .into_connection_info()
            .map_err(|_| "is not a valid redis URL (host, port or database)".to_owned())?;
        let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
        let target = format!(
            "{}/{}{}",
            info.addr(),
            info.redis_settings().db(),
            if tls { " (TLS)" } else { "" }
        );
        Ok(RedisUrl {
            text: text.to_owned(),
            target,
        })
    }

    /// Where it points, without credentials: `HOST:PORT/DB`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The connection settings, credentials included.
    pub fn connection_info(&self) -> redis::RedisResult<ConnectionInfo> {
        self.text.as_str().into_connection_info()
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.target)
    }
}

/// Redis's own default `proto-max-bulk-len`, assumed when the server does
/// not let us read it.
const DEFAULT_MAX_BULK: u64 = 512 << 20;

/// Writes each message to Redis (see the module docs).
pub struct RedisSink {
    name: String,
    opts: RedisOptions,
    /// Boxed: it is most of the sink's size, and `AnySink` holds every kind inline.
    client: Box<redis::Client>,
    /// The connection, while there is one.
    conn: Option<MultiplexedConnection>,
    /// The server's largest value (`proto-max-bulk-len`), read at connect.
    max_bulk: u64,
    /// A request was sent and its reply not read: the call was dropped.
    in_flight: bool,
}

impl fmt::Debug for RedisSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSink")
            .field("name", &self.name)
            .field("opts", &self.opts)
            .field("connected", &self.conn.is_some())
            .field("max_bulk", &self.max_bulk)
            .finish()
    }
}

impl RedisSink {
    /// Prepares the sink; connects at the first write or health check, so a
    /// server that is down now is not an error here.
    pub fn open(name: &str, opts: RedisOptions) -> Result<RedisSink, SinkError> {
        let client = opts
            .url
            .connection_info()
            .and_then(redis::Client::open)
            .map(Box::new)
            .map_err(|e| SinkError::permanent(name, format!("redis url for {}: {e}", opts.url.target())))?;
        Ok(RedisSink {
            name: name.to_owned(),
            opts,
            client,
            conn: None,
            max_bulk: DEFAULT_MAX_BULK,
            in_flight: false,
        })
    }

    /// Whether the sink holds a connection.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// The largest payload or key the server takes, as last read from it.
    pub fn max_bulk(&self) -> u64 {
        self.max_bulk
    }

    /// The open connection, connecting first if there is none.
    async fn connection(&mut self) -> Result<&mut MultiplexedConnection, SinkError> {
        if std::mem::take(&mut self.in_flight) {
            // A dropped call left a request (or its reply) on this connection.
            self.conn = None;
        }
        if self.conn.is_none() {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.opts.timeout))
                .set_response_timeout(Some(self.opts.timeout));
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| self.error("connecting to", &e))?;
            self.max_bulk = match redis::cmd("CONFIG")
                .arg("GET")
                .arg("proto-max-bulk-len")
                .query_async::<Vec<(String, u64)>>(&mut conn)
                .await
            {
                Ok(v) => v.first().map_or(DEFAULT_MAX_BULK, |&(_, n)| n),
                Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                    return Err(self.error("connecting to", &e));
                }
                Err(e) => {
                    tracing::debug!(sink = %self.name, "CONFIG GET proto-max-bulk-len refused ({e}); assuming 512 MiB");
                    DEFAULT_MAX_BULK
                }
            };
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// Classifies a failed request, naming what was being done where.
    fn error(&self, doing: &str, e: &RedisError) -> SinkError {
        let target = format!(
            "{doing} redis at {} ({})",
            self.opts.url.target(),
            self.opts.mode.describe()
        );
        classify(&self.name, &target, e, &self.opts.mode)
    }

    /// Refuses the batch, before sending anything, if a value or key is
    /// larger than the server takes or a message lacks the key its mode needs.
    fn check(&self, batch: &[Message]) -> Result<(), SinkError> {
        let needs_key = matches!(self.opts.mode, Mode::Keys { .. } | Mode::Hash { .. });
        let prefix = match &self.opts.mode {
            Mode::Keys { prefix, .. } => prefix.len(),
            _ => 0,
        };
        for m in batch {
            let too_big = |what: &str, n: usize| {
                SinkError::permanent(
                    &self.name,
                    format!(
                        "message `{}` has a {n}-byte {what}, and redis at {} takes at most {} bytes (proto-max-bulk-len); emit a smaller one, or raise proto-max-bulk-len on the server",
                        m.id,
                        self.opts.url.target(),
                        self.max_bulk
                    ),
                )
            };
            if m.payload.len() as u64 > self.max_bulk {
                return Err(too_big("payload", m.payload.len()));
            }
            let key_len = m.key.as_ref().map_or(0, Vec::len) + prefix;
            if key_len as u64 > self.max_bulk {
                return Err(too_big("key", key_len));
            }
            if needs_key && m.key.is_none() {
                return Err(SinkError::permanent(
                    &self.name,
                    format!(
                        "message `{}` has no key, and this sink writes {} by the message's key; emit it with a key",
                        m.id,
                        self.opts.mode.describe()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The request that writes `batch` (not empty): one transaction, or one command.
fn request(mode: &Mode, batch: &[Message]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    match mode {
        Mode::Stream { stream, maxlen } => {
            pipe.atomic();
            for m in batch {
                let cmd = pipe.cmd("XADD").arg(stream);
                if let Some(n) = maxlen {
                    cmd.arg("MAXLEN").arg("~").arg(n);
                }
                cmd.arg("*").arg("payload").arg(&m.payload).arg("id").arg(&m.id);
                if let Some(k) = &m.key {
                    cmd.arg("key").arg(k);
                }
            }
        }
        Mode::List { list, side } => {
            let cmd = pipe.cmd(match side {
                ListSide::Left => "LPUSH",
                ListSide::Right => "RPUSH",
            });
            cmd.arg(list);
            for m in batch {
                cmd.arg(&m.payload);
            }
        }
        Mode::Channel { channel } => {
            pipe.atomic();
            for m in batch {
                pipe.cmd("PUBLISH").arg(channel).arg(&m.payload);
            }
        }
        Mode::Keys { prefix, ttl } => {
            pipe.atomic();
            let mut key = Vec::new();
            for m in batch {
                key.clear();
                key.extend_from_slice(prefix.as_bytes());
                key.extend_from_slice(m.key.as_deref().unwrap_or_default());
                let cmd = pipe.cmd("SET").arg(&key).arg(&m.payload);
                if let Some(ttl) = ttl {
                    cmd.arg("PX").arg(ttl.as_millis() as u64);
                }
            }
        }
        Mode::Hash { hash, ttl } => {
            pipe.atomic();
            for m in batch {
                pipe.cmd("HSET")
                    .arg(hash)
                    .arg(m.key.as_deref().unwrap_or_default())
                    .arg(&m.payload);
            }
            if let Some(ttl) = ttl {
                pipe.cmd("PEXPIRE").arg(hash).arg(ttl.as_millis() as u64);
            }
        }
    }
    pipe
}

/// Server error codes that clear up by themselves: retry the batch.
const PASSING: &[&str] = &[
    "OOM",
    "LOADING",
    "BUSY",
    "READONLY",
    "TRYAGAIN",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "NOREPLICAS",
];

/// Unavailable or permanent, with the fix for what an operator must change.
fn classify(sink: &str, target: &str, e: &RedisError, mode: &Mode) -> SinkError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return SinkError::unavailable(sink, format!("{target}: {e}"));
    }
    let text = e.to_string();
    let has = |code: &str| text.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| w == code);
    if PASSING.iter().any(|c| has(c)) {
        return SinkError::unavailable(sink, format!("{target}: {text}"));
    }
    let fix = if e.kind() == redis::ErrorKind::AuthenticationFailed || has("WRONGPASS") || has("NOAUTH") {
        "check the user and password in the sink's url (take them from ${ENV})".to_owned()
    } else if has("NOPERM") {
        "grant the sink's Redis user the commands and keys it writes (ACL SETUSER)".to_owned()
    } else if has("WRONGTYPE") {
        match mode.key_and_type() {
            Some((key, ty)) => {
                format!(
                    "the key `{key}` holds another type than a {ty}; delete or rename it, or point the sink at another key"
                )
            }
            None => "a key written holds another type".to_owned(),
        }
    } else {
        "see the server's reply".to_owned()
    };
    SinkError::permanent(sink, format!("{target}: {text}; {fix}"))
}

impl Sink for RedisSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write_batch(&mut self, batch: &[Message]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.connection().await?;
        self.check(batch)?;
        let pipe = request(&self.opts.mode, batch);
        self.in_flight = true;
        let conn = self.conn.as_mut().expect("connected above");
        let reply = pipe.query_async::<redis::Value>(conn).await;
        self.in_flight = false;
        reply.map(drop).map_err(|e| {
            // Whatever went wrong, the next call starts on a fresh connection.
            self.conn = None;
            self.error("writing to", &e)
        })
    }

    async fn health(&mut self) -> Result<(), SinkError> {
        let reply = redis::cmd("PING").query_async::<String>(self.connection().await?).await;
        reply.map(drop).map_err(|e| {
            self.conn = None;
            self.error("pinging", &e)
        })
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        // Every acknowledged batch was answered by the server already.
        self.conn = None;
        Ok(())
    }

    fn limits(&self) -> SinkLimits {
        let max = usize::try_from(self.max_bulk).unwrap_or(usize::MAX);
        let prefix = match &self.opts.mode {
            Mode::Keys { prefix, .. } => prefix.len(),
            _ => 0,
        };
        SinkLimits {
            max_payload: Some(max),
            max_key: Some(max.saturating_sub(prefix)),
        }
    }
}

/// `rowhook check`: connect and authenticate, see that the server takes
/// writes (a primary) and that the destination key is of the right type.
/// Reads only.
fn probe(name: &str, opts: &RedisOptions) -> CheckLine {
    let head = format!("sink `{name}` (redis): {}, {}", opts.url.target(), opts.mode.describe());
    let fail = |what: String, fix: &str| CheckLine::fail(format!("{head}: {what}; {fix}"));
    let timeout = opts.timeout.min(Duration::from_secs(3));
    let client = match opts.url.connection_info().and_then(redis::Client::open) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string(), "fix the sink's url"),
    };
    let mut conn = match client.get_connection_with_timeout(timeout) {
        Ok(c) => c,
        Err(e) if e.kind() == redis::ErrorKind::AuthenticationFailed || e.to_string().contains("WRONGPASS") => {
            return fail(
                format!("authentication refused ({e})"),
                "check the user and password in the sink's url (take them from ${ENV})",
            );
        }
        Err(e) => {
            return fail(
                format!("cannot connect ({e})"),
                "start the server, or fix the host and port in the sink's url",
            );
        }
    };
    let _ = conn.set_read_timeout(Some(timeout));
    let _ = conn.set_write_timeout(Some(timeout));
    if let Err(e) = redis::cmd("PING").query::<String>(&mut conn) {
        let fix = if e.to_string().contains("NOAUTH") {
            "the server needs a password: put it in the sink's url, from ${ENV}"
        } else {
            "check the server and the sink's url"
        };
        return fail(format!("PING failed ({e})"), fix);
    }
    if let Ok(role) = redis::cmd("ROLE").query::<Vec<redis::Value>>(&mut conn)
        && let Some(redis::Value::BulkString(r)) = role.first()
        && r.as_slice() != b"master"
    {
        return fail(
            format!(
                "the server is a {}, which does not take writes",
                String::from_utf8_lossy(r)
            ),
            "point the sink's url at the primary",
        );
    }
    if let Some((key, want)) = opts.mode.key_and_type() {
        match redis::cmd("TYPE").arg(key).query::<String>(&mut conn) {
            Ok(ty) if ty == "none" || ty == want => {}
            Ok(ty) => {
                return fail(
                    format!("the key `{key}` holds a {ty}, not a {want}, so writes to it fail"),
                    &format!("delete or rename it (DEL / RENAME {key}), or point the sink at another key"),
                );
            }
            Err(e) => return fail(format!("TYPE {key} failed ({e})"), "grant the sink's user the key"),
        }
    }
    let max_bulk = redis::cmd("CONFIG")
        .arg("GET")
        .arg("proto-max-bulk-len")
        .query::<Vec<(String, u64)>>(&mut conn)
        .ok()
        .and_then(|v| v.first().map(|&(_, n)| n))
        .unwrap_or(DEFAULT_MAX_BULK);
    CheckLine::ok(format!("{head}, values up to {max_bulk} bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testing::msg;

    fn keyed(id: &str, key: &[u8], payload: &[u8]) -> Message {
        Message {
            key: Some(key.to_vec()),
            payload: payload.to_vec(),
            id: id.to_owned(),
            index: 0,
        }
    }

    fn packed(mode: Mode, batch: &[Message]) -> String {
        String::from_utf8_lossy(&request(&mode, batch).get_packed_pipeline()).replace("\r\n", " ")
    }

    #[test]
    fn a_stream_batch_is_one_transaction_carrying_the_id() {
        let got = packed(
            Mode::Stream {
                stream: "s".into(),
                maxlen: Some(10),
            },
            &[msg("0-1-2:0:0", "a"), keyed("0-1-2:0:1", b"k 1/x", b"b")],
        );
        assert!(got.starts_with("*1 $5 MULTI "), "{got}");
        assert!(
            got.contains("$4 XADD $1 s $6 MAXLEN $1 ~ $2 10 $1 * $7 payload $1 a $2 id $9 0-1-2:0:0 "),
            "{got}"
        );
        assert!(
            got.contains("$7 payload $1 b $2 id $9 0-1-2:0:1 $3 key $5 k 1/x "),
            "{got}"
        );
        assert!(got.ends_with("*1 $4 EXEC "), "{got}");
    }

    #[test]
    fn a_list_batch_is_one_push() {
        let got = packed(
            Mode::List {
                list: "q".into(),
                side: ListSide::Left,
            },
            &[msg("1", "a"), msg("2", "b")],
        );
        assert_eq!(got, "*4 $5 LPUSH $1 q $1 a $1 b ");
    }

    #[test]
    fn keys_and_hashes_take_the_message_key_and_ttl() {
        let got = packed(
            Mode::Keys {
                prefix: "o:".into(),
                ttl: Some(Duration::from_secs(2)),
            },
            &[keyed("1", b"7", b"x")],
        );
        assert!(got.contains("$3 SET $3 o:7 $1 x $2 PX $4 2000 "), "{got}");
        let got = packed(
            Mode::Hash {
                hash: "h".into(),
                ttl: Some(Duration::from_millis(5)),
            },
            &[keyed("1", b"", b"x")],
        );
        assert!(got.contains("$4 HSET $1 h $0  $1 x "), "{got}");
        assert!(got.contains("$7 PEXPIRE $1 h $1 5 "), "{got}");
    }

    fn sink(mode: Mode) -> RedisSink {
        RedisSink::open(
            "r",
            RedisOptions {
                url: RedisUrl::parse("redis://127.0.0.1:1").unwrap(),
                mode,
                timeout: Duration::from_millis(200),
            },
        )
        .unwrap()
    }

    #[test]
    fn a_batch_over_the_servers_limit_is_refused_whole() {
        let mut s = sink(Mode::Channel { channel: "c".into() });
        s.max_bulk = 4;
        let err = s.check(&[msg("1", "abcd"), msg("0-1-9:0:1", "abcde")]).unwrap_err();
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(
            text.contains("0-1-9:0:1") && text.contains("proto-max-bulk-len"),
            "{text}"
        );

        let s = sink(Mode::Keys {
            prefix: "p".into(),
            ttl: None,
        });
        let err = s.check(&[msg("0-1-9:0:2", "x")]).unwrap_err();
        assert!(err.to_string().contains("has no key"), "{err}");
        s.check(&[keyed("1", b"", b"x")]).unwrap();
    }

    #[tokio::test]
    async fn a_server_that_is_down_is_unavailable() {
        let mut s = sink(Mode::List {
            list: "l".into(),
            side: ListSide::Right,
        });
        let err = s.write_batch(&[msg("1", "a")]).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1/0"), "{err}");
        assert!(s.health().await.unwrap_err().is_retryable());
        s.write_batch(&[]).await.unwrap();
    }

    #[test]
    fn server_replies_are_classified() {
        let mode = Mode::Stream {
            stream: "s".into(),
            maxlen: None,
        };
        let server =
            |code: &str, detail: &str| RedisError::from((redis::ErrorKind::Extension, "x", format!("{code} {detail}")));
        let c = |e: RedisError| classify("r", "writing to redis", &e, &mode);
        assert!(
            c(redis::make_extension_error(
                "OOM".into(),
                Some("command not allowed".into())
            ))
            .is_retryable()
        );
        assert!(c(redis::make_extension_error("LOADING".into(), None)).is_retryable());
        let wrong = c(redis::make_extension_error(
            "WRONGTYPE".into(),
            Some("Operation against a key".into()),
        ));
        assert!(!wrong.is_retryable());
        assert!(
            wrong
                .to_string()
                .contains("the key `s` holds another type than a stream"),
            "{wrong}"
        );
        assert!(!c(server("ERR", "unknown command")).is_retryable());
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(c(io).is_retryable());
    }

    #[test]
    fn debug_hides_the_password() {
        let u = RedisUrl::parse("rediss://me:hunter2@cache.example:6380/3").unwrap();
        assert_eq!(format!("{u:?}"), "RedisUrl(cache.example:6380/3 (TLS))");
        assert!(RedisUrl::parse("redis://h:99999").is_err());
        assert!(RedisUrl::parse("localhost:6379").unwrap_err().contains("not a URL"));
    }
}
