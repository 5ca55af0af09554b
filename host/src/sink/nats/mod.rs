//! `kind = "nats"`: each message published to a NATS subject, by default
//! into a JetStream stream that acknowledges it.
//!
//! - **Ack = the stream's acknowledgements.** In `mode = "jetstream"` the
//!   batch is published without waiting between messages, then every
//!   publish acknowledgement (`PubAck`: the stream stored it, on as many
//!   replicas as the stream asks for) is awaited, in order; only then does
//!   `write_batch` return `Ok`. In `mode = "core"` a batch is done once the
//!   server has taken its bytes (a flush): core NATS keeps nothing, so a
//!   subscriber that is not listening misses it (at-most-once).
//! - **Dedupe.** Every message carries `Nats-Msg-Id: <change id>:<index>`,
//!   the same on every re-delivery, so the stream drops the copies a retry
//!   or a crash-and-replay sends within its duplicate window (the stream's
//!   `duplicate_window`, 2 minutes unless set).
//! - **Order.** One connection, publishes in batch order, so the stream
//!   stores a batch in order. A connection that dropped is abandoned, never
//!   resumed: resuming it would send what it still held after the bytes it
//!   lost, out of order. Its reconnect is parked for good (the client's
//!   reconnect delay is "forever" once connected), and the next write
//!   connects afresh and sends the whole batch again: what got through is
//!   deduplicated, the rest follows in order. The price: each lost
//!   connection leaves one idle client task behind, holding what it had
//!   not sent (at most a batch), for the life of the process.
//! - **Errors.** Refused, unreachable, timed out, a dropped connection, a
//!   full stream or no stream for the subject: [`SinkError::Unavailable`],
//!   retried by the pipeline. Refused credentials or TLS, a message larger
//!   than the server's `max_payload`: [`SinkError::Permanent`].
//! - **Limits at emit.** The server's `max_payload` (from its INFO, when
//!   the sink could connect at open) less room for headers, and
//!   [`MAX_KEY`] for the key, are the sink's [`SinkLimits`]: a handler's
//!   larger `emit` is refused at once as `too-large`.
//! - **Keys in subjects.** `{key}` in the subject becomes one subject
//!   token: see [`push_key_token`].

pub mod config;

use std::fmt;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream;
use async_nats::jetstream::context::{GetStreamByNameErrorKind, PublishErrorKind};
use async_nats::{Client, ConnectErrorKind, ConnectOptions, HeaderMap};
use bytes::Bytes;

pub use self::config::RawNatsSink;
use super::kind::SinkKind;
use super::{Message, Sink, SinkError, SinkLimits};
use crate::probe::CheckLine;
use crate::problem::SinkContext;
use crate::sink::tls::{Secret, TlsFiles};
use crate::telemetry::{Counter, Registry};

/// The header JetStream deduplicates by.
const MSG_ID: &str = "Nats-Msg-Id";
/// How long one connection attempt (TCP, TLS, authentication) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `rowhook check` waits for the server's answers.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of `max_payload` kept for the headers (`Nats-Msg-Id`) when
/// telling handlers how large a payload may be.
const HEADER_ROOM: usize = 1024;
/// The largest key, in bytes: encoded into the subject (at most 3 bytes a
/// byte), it must stay well inside the server's 4 KiB protocol line.
pub const MAX_KEY: usize = 256;
/// Publishes whose acknowledgements may be outstanding: when this many
/// wait, the oldest is awaited before the next publish.
const ACK_WINDOW: usize = 4096;

/// `kind = "nats"` in the registry.
#[derive(Debug)]
pub struct NatsKind;

impl SinkKind for NatsKind {
    const NAME: &'static str = "nats";
    // Boxed: the keys are many, and the registry's enums hold every kind.
    type Raw = Box<RawNatsSink>;
    type Options = NatsOptions;
    type Sink = NatsSink;

    fn resolve(raw: Box<RawNatsSink>, cx: &mut SinkContext<'_>) -> Option<NatsOptions> {
        config::resolve(*raw, cx)
    }

    async fn open(name: &str, options: &NatsOptions) -> Result<NatsSink, SinkError> {
        NatsSink::open(name, options.clone()).await
    }

    fn probe(name: &str, options: &NatsOptions) -> CheckLine {
        probe(name, options)
    }

    fn one_line_per_message(_: &NatsOptions) -> bool {
        false
    }
}

/// Settings of a NATS sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// Server URLs, tried in order.
    pub servers: Vec<String>,
    /// Where each message is published.
    pub subject: SubjectTemplate,
    /// JetStream (acknowledged) or core (at-most-once).
    pub mode: NatsMode,
    /// How long to wait for a batch's acknowledgements.
    pub ack_timeout: Duration,
    /// How to authenticate.
    pub auth: NatsAuth,
    /// TLS, when required.
    pub tls: Option<TlsFiles>,
}

/// How to reach and authenticate to a NATS server: what a `nats` sink
/// and `[cluster]` share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsServer {
    /// Server URLs, tried in order.
    pub servers: Vec<String>,
    /// How to authenticate.
    pub auth: NatsAuth,
    /// TLS, when required.
    pub tls: Option<TlsFiles>,
}

/// How messages are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsMode {
    /// A JetStream publish, acknowledged by the stream.
    JetStream,
    /// A core NATS publish: at-most-once.
    Core,
}

/// How the sink authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsAuth {
    /// Not at all.
    None,
    /// User and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: Secret,
    },
    /// A token.
    Token(Secret),
    /// An NKey seed.
    NKey(Secret),
    /// A `.creds` file.
    CredsFile(PathBuf),
}

/// A subject with at most one `{key}` token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTemplate {
    /// As written.
    text: String,
    /// What comes before `{key}` (all of it when there is none), and what
    /// comes after.
    parts: (String, Option<String>),
}

impl SubjectTemplate {
    /// Parses `orders.{key}`-style text; the error says what is wrong.
    pub fn parse(text: &str) -> Result<SubjectTemplate, String> {
        if text.is_empty() {
            return Err("is empty".into());
        }
        if text.chars().any(char::is_whitespace) {
            return Err("holds whitespace".into());
        }
        let mut keyed = 0;
        for token in text.split('.') {
            if token.is_empty() {
                return Err("has an empty token".into());
            }
            for w in ['*', '>'] {
                if token.contains(w) {
                    return Err(format!("holds the wildcard `{w}`"));
                }
            }
            if token == "{key}" {
                keyed += 1;
            } else if token.contains("{key}") {
                return Err("has {key} inside a token; make it a token of its own".into());
            }
        }
        let parts = match keyed {
            0 => (text.to_owned(), None),
            1 => {
                let (before, after) = text.split_once("{key}").expect("counted");
                (before.to_owned(), Some(after.to_owned()))
            }
            _ => return Err("has {key} more than once".into()),
        };
        Ok(SubjectTemplate {
            text: text.to_owned(),
            parts,
        })
    }

    /// The subject of a message with `key`.
    pub fn render(&self, key: Option<&[u8]>) -> String {
        let mut s = String::new();
        self.render_into(key, &mut s);
        s
    }

    fn render_into(&self, key: Option<&[u8]>, out: &mut String) {
        out.clear();
        out.push_str(&self.parts.0);
        if let Some(after) = &self.parts.1 {
            push_key_token(out, key);
            out.push_str(after);
        }
    }

    /// Whether the subject holds `{key}`.
    pub fn keyed(&self) -> bool {
        self.parts.1.is_some()
    }
}

impl fmt::Display for SubjectTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Appends `key` as one subject token. Subjects split at `.`, cannot hold
/// whitespace, and give `*` and `>` a meaning, so a key is written with
/// every byte that is not printable ASCII, and `.`, `*`, `>`, `$` and `%`,
/// as `%XX` (uppercase hex): `a b/c.d` becomes `a%20b/c%2Ed`, and
/// percent-decoding gives the key back. A missing or empty key is `_`; the
/// key `_` itself is written `%5F`.
pub fn push_key_token(out: &mut String, key: Option<&[u8]>) {
    match key {
        None | Some([]) => out.push('_'),
        Some(b"_") => out.push_str("%5F"),
        Some(key) => {
            for &b in key {
                if b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>' | b'$' | b'%') {
                    out.push(char::from(b));
                } else {
                    let _ = write!(out, "%{b:02X}");
                }
            }
        }
    }
}

/// The `Nats-Msg-Id` of `m`: its change id and its index in the change.
fn message_id(m: &Message) -> String {
    let mut id = String::with_capacity(m.id.len() + 4);
    id.push_str(&m.id);
    id.push(':');
    id.push_str(itoa::Buffer::new().format(m.index));
    id
}

/// The bytes of the headers a message carries (`NATS/1.0`, its
/// `Nats-Msg-Id` line and the blank line), with a few to spare.
fn header_bytes(m: &Message) -> usize {
    64 + m.id.len() + 10
}

/// An open connection.
struct Connection {
    client: Client,
    js: jetstream::Context,
}

/// Publishes messages to a NATS subject.
pub struct NatsSink {
    name: String,
    opts: Box<NatsOptions>,
    /// The connection, while there is one.
    conn: Option<Box<Connection>>,
    limits: SinkLimits,
    /// Messages the stream acknowledged as duplicates of ones it held.
    duplicates: Counter,
}

impl fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSink")
            .field("name", &self.name)
            .field("opts", &self.opts)
            .field("connected", &self.conn.is_some())
            .field("limits", &self.limits)
            .field("duplicates", &self.duplicates.get())
            .finish()
    }
}

impl NatsSink {
    /// Tries to connect once, to learn the server's `max_payload`; a server
    /// that cannot be reached now is not an error (the first write reports
    /// it as unavailable), but refused credentials or TLS are.
    pub async fn open(name: &str, opts: NatsOptions) -> Result<NatsSink, SinkError> {
        let mut sink = NatsSink {
            name: name.to_owned(),
            opts: Box::new(opts),
            conn: None,
            limits: SinkLimits {
                max_payload: None,
                max_key: Some(MAX_KEY),
            },
            duplicates: Counter::detached(),
        };
        match sink.connect().await {
            Ok(conn) => {
                let max = conn.client.server_info().max_payload;
                sink.limits.max_payload = Some(max.saturating_sub(HEADER_ROOM));
                sink.conn = Some(conn);
            }
            Err(e @ SinkError::Permanent { .. }) => return Err(e),
            Err(e) => tracing::info!(sink = %name, "not connected yet: {e}"),
        }
        Ok(sink)
    }

    /// Messages the stream acknowledged as duplicates so far (what
    /// `rowhook_sink_duplicates_total` counts).
    pub fn duplicates(&self) -> u64 {
        self.duplicates.get()
    }

    /// Whether the sink holds a live connection.
    pub fn is_connected(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| c.client.connection_state() == State::Connected)
    }

    async fn connect(&self) -> Result<Box<Connection>, SinkError> {
        let client = connect(
            &self.opts.servers,
            &self.opts.auth,
            self.opts.tls.as_ref(),
            Reconnect::Never,
        )
        .await
        .map_err(|e| self.connect_error(&e))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(self.opts.ack_timeout)
            .max_ack_inflight(2 * ACK_WINDOW)
            .build(client.clone());
        Ok(Box::new(Connection { client, js }))
    }

    fn connect_error(&self, e: &ConnectFailure) -> SinkError {
        let servers = self.opts.servers.join(", ");
        match e {
            ConnectFailure::Options(why) => SinkError::permanent(&self.name, why.clone()),
            ConnectFailure::Connect(e) => match e.kind() {
                ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => SinkError::permanent(
                    &self.name,
                    format!(
                        "{servers} refused the credentials ({e}); check user/password, token, nkey or creds_file and the server's accounts"
                    ),
                ),
                ConnectErrorKind::Tls => SinkError::permanent(
                    &self.name,
                    format!("TLS with {servers} failed ({e}); check tls_ca_file, tls_cert_file and tls_key_file"),
                ),
                _ => SinkError::unavailable(&self.name, format!("cannot connect to {servers}: {e}")),
            },
        }
    }

    /// The live connection, or a new one: one that dropped is abandoned
    /// (see the module docs).
    async fn connection(&mut self) -> Result<&Connection, SinkError> {
        if !self.is_connected() {
            self.conn = None;
            self.conn = Some(self.connect().await?);
        }
        Ok(self.conn.as_ref().expect("just connected"))
    }

    /// Refuses a batch holding a message the server cannot carry, before
    /// anything is published.
    fn check_sizes(&self, batch: &[Message], max_payload: usize) -> Result<(), SinkError> {
        for m in batch {
            if m.payload.len() + header_bytes(m) > max_payload {
                return Err(SinkError::permanent(
                    &self.name,
                    format!(
                        "message `{}` has a {}-byte payload, more than the server's max_payload ({max_payload} bytes, less room for headers); emit less, or raise max_payload in the server's config",
                        m.id,
                        m.payload.len()
                    ),
                ));
            }
            if m.key.as_ref().is_some_and(|k| k.len() > MAX_KEY) {
                return Err(SinkError::permanent(
                    &self.name,
                    format!(
                        "message `{}` has a key longer than {MAX_KEY} bytes; emit a shorter key",
                        m.id
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn publish_acked(&self, js: &jetstream::Context, batch: &[Message]) -> Result<(), SinkError> {
        let mut subject = String::new();
        let mut pending = std::collections::VecDeque::with_capacity(batch.len().min(ACK_WINDOW));
        for m in batch {
            if pending.len() >= ACK_WINDOW {
                let (ack, m) = pending.pop_front().expect("window is full");
                self.await_ack(ack, m).await?;
            }
            self.opts.subject.render_into(m.key.as_deref(), &mut subject);
            let mut headers = HeaderMap::new();
            headers.insert(MSG_ID, message_id(m).as_str());
            let ack = js
                .publish_with_headers(subject.clone(), headers, Bytes::copy_from_slice(&m.payload))
                .await
                .map_err(|e| self.publish_error(m, &subject, e.kind(), &e))?;
            pending.push_back((ack, m));
        }
        for (ack, m) in pending {
            self.await_ack(ack, m).await?;
        }
        Ok(())
    }

    async fn await_ack(&self, ack: jetstream::context::PublishAckFuture, m: &Message) -> Result<(), SinkError> {
        match ack.await {
            Ok(ack) => {
                if ack.duplicate {
                    self.duplicates.inc();
                }
                Ok(())
            }
            Err(e) => {
                let subject = self.opts.subject.render(m.key.as_deref());
                Err(self.publish_error(m, &subject, e.kind(), &e))
            }
        }
    }

    fn publish_error(&self, m: &Message, subject: &str, kind: PublishErrorKind, e: &dyn fmt::Display) -> SinkError {
        let what = format!("publishing message `{}` to {subject}", m.id);
        match kind {
            PublishErrorKind::StreamNotFound => SinkError::unavailable(
                &self.name,
                format!(
                    "{what}: no stream captures the subject; create one, e.g. `nats stream add NAME --subjects '{}'`",
                    wildcard_subject(&self.opts.subject)
                ),
            ),
            PublishErrorKind::TimedOut => SinkError::unavailable(
                &self.name,
                format!(
                    "{what}: no acknowledgement within ack_timeout_ms ({} ms)",
                    self.opts.ack_timeout.as_millis()
                ),
            ),
            PublishErrorKind::MaxPayloadExceeded => SinkError::permanent(
                &self.name,
                format!("{what}: {e}; emit less, or raise max_payload in the server's config"),
            ),
            PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
                SinkError::permanent(&self.name, format!("{what}: {e}"))
            }
            _ => {
                let text = e.to_string();
                // JetStream's own refusal of a message larger than the
                // stream's max_msg_size cannot clear up; a full stream
                // (discard new) can, once consumers or limits make room.
                if text.contains("message size exceeds maximum") {
                    SinkError::permanent(
                        &self.name,
                        format!("{what}: {text}; raise the stream's max_msg_size or emit less"),
                    )
                } else {
                    SinkError::unavailable(&self.name, format!("{what}: {text}"))
                }
            }
        }
    }

    async fn publish_core(&self, client: &Client, batch: &[Message]) -> Result<(), SinkError> {
        let mut subject = String::new();
        for m in batch {
            self.opts.subject.render_into(m.key.as_deref(), &mut subject);
            let mut headers = HeaderMap::new();
            headers.insert(MSG_ID, message_id(m).as_str());
            let publish = client.publish_with_headers(subject.clone(), headers, Bytes::copy_from_slice(&m.payload));
            match tokio::time::timeout(self.opts.ack_timeout, publish).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(SinkError::unavailable(
                        &self.name,
                        format!("publishing message `{}` to {subject}: {e}", m.id),
                    ));
                }
                Err(_) => return Err(self.flush_timeout()),
            }
        }
        match tokio::time::timeout(self.opts.ack_timeout, client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SinkError::unavailable(
                &self.name,
                format!("flushing to the server: {e}"),
            )),
            Err(_) => Err(self.flush_timeout()),
        }
    }

    fn flush_timeout(&self) -> SinkError {
        SinkError::unavailable(
            &self.name,
            format!(
                "the server did not take the batch within ack_timeout_ms ({} ms)",
                self.opts.ack_timeout.as_millis()
            ),
        )
    }
}

impl Sink for NatsSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write_batch(&mut self, batch: &[Message]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let conn = self.connection().await?;
        let max_payload = conn.client.server_info().max_payload;
        let (client, js) = (conn.client.clone(), conn.js.clone());
        self.check_sizes(batch, max_payload)?;
        let result = match self.opts.mode {
            NatsMode::JetStream => self.publish_acked(&js, batch).await,
            NatsMode::Core => self.publish_core(&client, batch).await,
        };
        if result.is_err() {
            // Whatever this connection still holds must not reach the
            // stream after the retry's messages.
            self.conn = None;
        }
        result
    }

    async fn health(&mut self) -> Result<(), SinkError> {
        self.connection().await.map(|_| ())
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        // Acknowledged batches are in the stream already; core publishes
        // were flushed by their batch. Dropping the client closes it.
        self.conn = None;
        Ok(())
    }

    fn limits(&self) -> SinkLimits {
        self.limits
    }

    fn register_metrics(&self, registry: &Registry) {
        registry.attach_counter(
            "rowhook_sink_duplicates_total",
            "Messages a JetStream stream acknowledged as duplicates (by Nats-Msg-Id) and did not store again: re-deliveries after a retry or a restart.",
            vec![("sink", self.name.clone())],
            &self.duplicates,
        );
    }
}

/// Why a connection could not be made.
pub enum ConnectFailure {
    /// The options cannot be used (an unreadable creds file).
    Options(String),
    /// The server could not be reached or refused us.
    Connect(async_nats::ConnectError),
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFailure::Options(why) => f.write_str(why),
            ConnectFailure::Connect(e) => write!(f, "{e}"),
        }
    }
}

/// What a client does once connected, when its connection drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Nothing: the owner replaces the connection (what a sink does, so a
    /// batch is never left waiting on a client that retries on its own).
    Never,
    /// Reconnects to any of the servers, again and again, keeping its
    /// subscriptions (what `[cluster]` roles do).
    Always,
}

/// Connects to `servers` as `auth` and `tls` say.
pub async fn connect(
    servers: &[String],
    auth: &NatsAuth,
    tls: Option<&TlsFiles>,
    reconnect: Reconnect,
) -> Result<Client, ConnectFailure> {
    let connected = Arc::new(AtomicBool::new(false));
    let parked = connected.clone();
    let mut o = match auth {
        NatsAuth::CredsFile(path) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| ConnectFailure::Options(format!("reading creds_file {}: {e}", path.display())))?,
        _ => ConnectOptions::new(),
    };
    o = match auth {
        NatsAuth::None | NatsAuth::CredsFile(_) => o,
        NatsAuth::UserPassword { user, password } => o.user_and_password(user.clone(), password.0.clone()),
        NatsAuth::Token(t) => o.token(t.0.clone()),
        NatsAuth::NKey(seed) => o.nkey(seed.0.clone()),
    };
    if let Some(tls) = tls {
        o = o.require_tls(true);
        if let Some(ca) = &tls.ca_file {
            o = o.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &tls.client_cert {
            o = o.add_client_certificate(cert.clone(), key.clone());
        }
    }
    let o = o.name("rowhook").connection_timeout(CONNECT_TIMEOUT);
    let o = match reconnect {
        Reconnect::Never => o.retain_servers_order().reconnect_delay_callback(move |_| {
            if parked.load(Ordering::Relaxed) {
                Duration::MAX
            } else {
                Duration::ZERO
            }
        }),
        Reconnect::Always => o.reconnect_delay_callback(|attempts| {
            Duration::from_millis(50u64.saturating_mul(1 << attempts.min(6)).min(2_000))
        }),
    };
    let client = o.connect(servers).await.map_err(ConnectFailure::Connect)?;
    connected.store(true, Ordering::Relaxed);
    Ok(client)
}

/// The subject as a wildcard, for a `nats stream add --subjects` hint.
fn wildcard_subject(s: &SubjectTemplate) -> String {
    match &s.parts {
        (before, None) => before.clone(),
        (before, Some(after)) => format!("{before}*{after}"),
    }
}

/// `rowhook check`: connects and authenticates, and in JetStream mode
/// finds the stream that captures the subject. Changes nothing.
fn probe(name: &str, opts: &NatsOptions) -> CheckLine {
    let head = format!("sink `{name}` (nats)");
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return CheckLine::fail(format!("{head}: cannot start the probe: {e}")),
    };
    let found = rt.block_on(async {
        match tokio::time::timeout(PROBE_TIMEOUT, probe_server(name, opts)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "{} did not answer within {} s; check that the server is up and url is right",
                opts.servers.join(", "),
                PROBE_TIMEOUT.as_secs()
            )),
        }
    });
    match found {
        Ok(text) => CheckLine::ok(format!("{head}: {text}")),
        Err(text) => CheckLine::fail(format!("{head}: {text}")),
    }
}

async fn probe_server(name: &str, opts: &NatsOptions) -> Result<String, String> {
    let sink = NatsSink {
        name: name.to_owned(),
        opts: Box::new(opts.clone()),
        conn: None,
        limits: SinkLimits::default(),
        duplicates: Counter::detached(),
    };
    let conn = sink.connect().await.map_err(|e| match e {
        SinkError::Unavailable { reason, .. } => {
            format!("{reason}; start the server or fix url")
        }
        SinkError::Permanent { reason, .. } => reason,
    })?;
    let servers = opts.servers.join(", ");
    let max_payload = conn.client.server_info().max_payload;
    if opts.mode == NatsMode::Core {
        return Ok(format!(
            "{servers}, subject {} (core NATS: at-most-once), max_payload {max_payload}",
            opts.subject
        ));
    }
    let sample = opts.subject.render(None);
    let wildcard = wildcard_subject(&opts.subject);
    let stream = match conn.js.stream_by_subject(sample.as_str()).await {
        Ok(stream) => stream,
        Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => {
            return Err(format!(
                "no stream captures subject {wildcard}: create one with `nats stream add NAME --subjects '{wildcard}'` (or add the subject to an existing stream)"
            ));
        }
        Err(e) => {
            return Err(format!(
                "{servers} did not answer the JetStream API ({e}); enable JetStream (nats-server -js, or a jetstream block in its config) for this account, or set mode = \"core\""
            ));
        }
    };
    let window = match conn.js.get_stream(&stream).await {
        Ok(mut s) => match s.info().await {
            Ok(info) => format!(", dedupe window {} s", info.config.duplicate_window.as_secs()),
            Err(_) => String::new(),
        },
        Err(_) => String::new(),
    };
    Ok(format!(
        "{servers}, subject {} is captured by stream {stream}{window}, max_payload {max_payload}",
        opts.subject
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(key: Option<&[u8]>) -> String {
        let mut s = String::new();
        push_key_token(&mut s, key);
        s
    }

    #[test]
    fn keys_become_one_token() {
        assert_eq!(token(Some(b"42")), "42");
        assert_eq!(token(Some(b"a b/c.d")), "a%20b/c%2Ed");
        assert_eq!(token(Some(b"*>$%")), "%2A%3E%24%25");
        assert_eq!(token(Some("é\t".as_bytes())), "%C3%A9%09");
        assert_eq!(token(None), "_");
        assert_eq!(token(Some(b"")), "_");
        assert_eq!(token(Some(b"_")), "%5F");
        assert_eq!(token(Some(b"a_b")), "a_b");
    }

    #[test]
    fn subjects_render_keys() {
        let s = SubjectTemplate::parse("shop.{key}.orders").unwrap();
        assert!(s.keyed());
        assert_eq!(s.render(Some(b"k 1")), "shop.k%201.orders");
        assert_eq!(wildcard_subject(&s), "shop.*.orders");
        let s = SubjectTemplate::parse("orders").unwrap();
        assert!(!s.keyed());
        assert_eq!(s.render(Some(b"k")), "orders");
        assert_eq!(s.to_string(), "orders");
    }

    #[test]
    fn message_ids_hold_the_index() {
        let mut m = crate::sink::testing::msg("0-1-7:2:3", "x");
        m.index = 1;
        assert_eq!(message_id(&m), "0-1-7:2:3:1");
    }
}
