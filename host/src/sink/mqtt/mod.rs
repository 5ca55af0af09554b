//! `kind = "mqtt"`: each message published to an MQTT broker (MQTT 5 or
//! 3.1.1), at QoS 1 by default.
//!
//! - **Ack = every PUBACK.** The batch is handed to one connection in
//!   order, up to `inflight` publishes ahead of their acknowledgements (and
//!   within the broker's Receive Maximum, in MQTT 5); `write_batch` returns
//!   `Ok` once the broker acknowledged every publish of the batch. At
//!   `qos = 0` a batch is done once its publishes were written to the
//!   connection: the broker acknowledges nothing, so a message in flight
//!   when the connection drops is lost (at-most-once).
//! - **Dedupe.** MQTT 5 publishes carry the user properties `rowhook-id`
//!   (the change id) and `rowhook-index` (the message's place among those
//!   of the change); the pair is the same on every re-delivery. MQTT 3.1.1
//!   has no properties: the payload is sent as emitted (the default
//!   row-change JSON holds its `"id"`).
//! - **Order.** One connection, publishes in batch order; brokers forward
//!   the messages of one topic in the order received. A connection that
//!   failed, timed out or whose `write_batch` was dropped is abandoned,
//!   never resumed: the client would retransmit what it still held after
//!   what the next batch sends. The next write connects afresh (a clean
//!   session) and sends the whole batch again, from its first message, so
//!   a topic may see a message twice but never out of order.
//! - **Errors.** A refused or dropped connection, a timeout, a broker that
//!   is busy, over quota or shutting down: [`SinkError::Unavailable`],
//!   retried by the pipeline. Refused credentials, TLS, client id or
//!   protocol version, a publish the broker refuses as not authorized or as
//!   an invalid topic, a message larger than the broker takes:
//!   [`SinkError::Permanent`], with the fix.
//! - **Limits at emit.** The broker's Maximum Packet Size (MQTT 5 CONNACK,
//!   read when the sink could connect at open), or `max_payload` where the
//!   broker does not say, less room for the topic and properties, is the
//!   sink's [`SinkLimits`]; [`MAX_KEY`] bounds the key.
//! - **Keys in topics.** `{key}` in the topic becomes one topic level: see
//!   [`push_key_level`].

mod config;

use std::collections::HashMap;
use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, DisconnectReasonCode, PubAckReason, PublishProperties};
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use tokio::time::Instant;

pub use self::config::RawMqttSink;
use super::kind::SinkKind;
use super::tls::{Secret, TlsFiles, client_config};
use super::{Message, Sink, SinkError, SinkLimits};
use crate::probe::CheckLine;
use crate::problem::SinkContext;

/// The user property holding the change id (MQTT 5).
pub const ID_PROPERTY: &str = "rowhook-id";
/// The user property holding the message's index in its change (MQTT 5).
pub const INDEX_PROPERTY: &str = "rowhook-index";
/// The largest key, in bytes: encoded into the topic (at most 3 bytes a
/// byte), it keeps the topic far below MQTT's 65535.
pub const MAX_KEY: usize = 1024;
/// The longest topic template, so that a rendered topic stays below 65535.
const MAX_TOPIC_TEMPLATE: usize = 60_000;
/// Room kept for the change id in the properties when telling handlers
/// how large a payload may be; `write_batch` checks the exact size.
const ID_ROOM: usize = 256;
/// How long `rowhook check` waits for the broker.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `health` lets the client read what the broker sent (a ping
/// answer, a DISCONNECT) and send a due ping.
const HEALTH_POLL: Duration = Duration::from_millis(5);

/// `kind = "mqtt"` in the registry.
#[derive(Debug)]
pub struct MqttKind;

impl SinkKind for MqttKind {
    const NAME: &'static str = "mqtt";
    // Boxed: the keys are many, and the registry's enums hold every kind.
    type Raw = Box<RawMqttSink>;
    type Options = MqttOptions;
    type Sink = MqttSink;

    fn resolve(raw: Box<RawMqttSink>, cx: &mut SinkContext<'_>) -> Option<MqttOptions> {
        config::resolve(*raw, cx)
    }

    async fn open(name: &str, options: &MqttOptions) -> Result<MqttSink, SinkError> {
        MqttSink::open(name, options.clone()).await
    }

    fn probe(name: &str, options: &MqttOptions) -> CheckLine {
        probe(name, options)
    }

    fn one_line_per_message(_: &MqttOptions) -> bool {
        false
    }
}

/// Settings of an MQTT sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttOptions {
    /// The broker.
    pub url: BrokerUrl,
    /// Where each message is published.
    pub topic: TopicTemplate,
    /// MQTT 5 or 3.1.1.
    pub protocol: Protocol,
    /// 1 (acknowledged) or 0 (at-most-once).
    pub qos: u8,
    /// Publish with the retain flag.
    pub retain: bool,
    /// The client id; `rowhook-<sink name>` when `None`.
    pub client_id: Option<String>,
    /// User and password.
    pub auth: Option<(String, Secret)>,
    /// TLS settings, for `mqtts://`.
    pub tls: Option<TlsFiles>,
    /// How long to wait for the broker's CONNACK and each next PUBACK.
    pub ack_timeout: Duration,
    /// The keep-alive interval.
    pub keep_alive: Duration,
    /// The most publishes awaiting their PUBACK.
    pub inflight: u16,
    /// The broker's largest payload, as configured.
    pub max_payload: Option<u32>,
}

/// The MQTT version spoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 5.
    V5,
    /// MQTT 3.1.1.
    V311,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::V5 => "MQTT 5",
            Protocol::V311 => "MQTT 3.1.1",
        })
    }
}

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether to speak TLS (`mqtts://`).
    pub tls: bool,
}

impl BrokerUrl {
    /// Parses `mqtt://HOST[:PORT]`, `mqtts://HOST[:PORT]` or `HOST[:PORT]`;
    /// the error says what is wrong.
    pub fn parse(text: &str) -> Result<BrokerUrl, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("is empty".into());
        }
        let (tls, rest) = match text.split_once("://") {
            Some(("mqtt" | "tcp", rest)) => (false, rest),
            Some(("mqtts" | "ssl", rest)) => (true, rest),
            Some((scheme, _)) => return Err(format!("`{scheme}://` is not an MQTT URL scheme")),
            None => (false, text),
        };
        if rest.contains('@') {
            return Err("holds credentials".into());
        }
        let host_port = rest.trim_end_matches('/');
        let default_port = if tls { "8883" } else { "1883" };
        let (host, port) = match host_port.strip_prefix('[') {
            // [v6 address]:port
            Some(v6) => match v6.split_once(']') {
                Some((host, "")) => (host, default_port),
                Some((host, port)) => (host, port.strip_prefix(':').unwrap_or(port)),
                None => return Err(format!("`{host_port}` is not HOST:PORT")),
            },
            None => host_port.rsplit_once(':').unwrap_or((host_port, default_port)),
        };
        if host.is_empty() || host.contains(['/', ' ', '?', '#']) {
            return Err(format!("`{host_port}` is not HOST:PORT"));
        }
        let port = port.parse::<u16>().map_err(|_| format!("`{port}` is not a port"))?;
        Ok(BrokerUrl {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// TLS settings.
/// A topic with at most one `{key}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    /// As written.
    text: String,
    /// What comes before `{key}` (all of it when there is none), and what
    /// comes after.
    parts: (String, Option<String>),
}

impl TopicTemplate {
    /// Parses `shop/orders/{key}`-style text; the error says what is wrong.
    pub fn parse(text: &str) -> Result<TopicTemplate, String> {
        if text.is_empty() {
            return Err("is empty".into());
        }
        for w in ['+', '#'] {
            if text.contains(w) {
                return Err(format!("holds the wildcard `{w}`"));
            }
        }
        if text.contains('\0') {
            return Err("holds NUL".into());
        }
        if text.starts_with('$') {
            return Err("starts with $, which brokers keep for themselves".into());
        }
        if text.len() > MAX_TOPIC_TEMPLATE {
            return Err(format!("is longer than {MAX_TOPIC_TEMPLATE} bytes"));
        }
        let parts = match text.split_once("{key}") {
            None => (text.to_owned(), None),
            Some((_, after)) if after.contains("{key}") => return Err("has {key} more than once".into()),
            Some((before, after)) => (before.to_owned(), Some(after.to_owned())),
        };
        Ok(TopicTemplate {
            text: text.to_owned(),
            parts,
        })
    }

    /// The topic of a message with `key`.
    pub fn render(&self, key: Option<&[u8]>) -> String {
        let mut s = String::with_capacity(self.parts.0.len() + 16);
        s.push_str(&self.parts.0);
        if let Some(after) = &self.parts.1 {
            push_key_level(&mut s, key);
            s.push_str(after);
        }
        s
    }

    /// Whether the topic holds `{key}`.
    pub fn keyed(&self) -> bool {
        self.parts.1.is_some()
    }

    /// The topic as a subscription filter that matches every rendered topic
    /// (`{key}` as `+` when it is a whole level, else `#` from its level on).
    pub fn filter(&self) -> String {
        match &self.parts {
            (before, None) => before.clone(),
            (before, Some(after))
                if (before.is_empty() || before.ends_with('/')) && (after.is_empty() || after.starts_with('/')) =>
            {
                format!("{before}+{after}")
            }
            (before, Some(_)) => match before.rfind('/') {
                Some(i) => format!("{}/#", &before[..i]),
                None => "#".to_owned(),
            },
        }
    }

    /// The longest topic a key of [`MAX_KEY`] bytes renders to.
    fn max_len(&self) -> usize {
        self.parts.0.len() + self.parts.1.as_ref().map_or(0, |after| 3 * MAX_KEY + after.len())
    }
}

impl fmt::Display for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Appends `key` as one topic level. `/` separates levels, `+` and `#` are
/// wildcards in subscriptions, and a key is bytes, not always UTF-8, so
/// every byte that is not printable ASCII (space included), and `/`, `+`,
/// `#` and `%`, is written as `%XX` (uppercase hex): `eu/fr 1` becomes
/// `eu%2Ffr%201`, and percent-decoding gives the key back. A missing or
/// empty key is `_`; the key `_` itself is written `%5F`.
pub fn push_key_level(out: &mut String, key: Option<&[u8]>) {
    match key {
        None | Some([]) => out.push('_'),
        Some(b"_") => out.push_str("%5F"),
        Some(key) => {
            for &b in key {
                if b.is_ascii_graphic() && !matches!(b, b'/' | b'+' | b'#' | b'%') {
                    out.push(char::from(b));
                } else {
                    let _ = write!(out, "%{b:02X}");
                }
            }
        }
    }
}

/// The bytes a variable byte integer takes for `n`.
fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// What the broker said in its CONNACK.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Broker {
    /// Maximum Packet Size (MQTT 5), if it sent one.
    max_packet: Option<u32>,
    /// Receive Maximum (MQTT 5), if it sent one.
    receive_max: Option<u16>,
    /// Maximum QoS (MQTT 5), if it sent one.
    max_qos: Option<u8>,
    /// Whether it keeps retained messages (MQTT 5: Retain Available).
    retain_available: bool,
}

/// The client of one connection, in the version spoken.
enum Client {
    V5(v5::AsyncClient, Box<v5::EventLoop>),
    V311(rumqttc::AsyncClient, Box<rumqttc::EventLoop>),
}

/// What one turn of the client's event loop did.
enum Step {
    /// Connected; the broker said this.
    Connected(Broker),
    /// A publish was written, with this packet id (0 at QoS 0).
    Sent(u16),
    /// The publish with this packet id was acknowledged (MQTT 5: with this
    /// reason code).
    Acked(u16, Option<PubAckReason>),
    /// Anything else (a ping answered).
    Other,
}

/// Why the client's event loop stopped.
enum Failure {
    V5(v5::ConnectionError),
    V311(rumqttc::ConnectionError),
}

impl Client {
    async fn poll(&mut self) -> Result<Step, Failure> {
        match self {
            Client::V5(_, events) => {
                use v5::mqttbytes::v5::Packet;
                Ok(match events.poll().await.map_err(Failure::V5)? {
                    v5::Event::Incoming(Packet::ConnAck(c)) => Step::Connected(match c.properties {
                        Some(p) => Broker {
                            max_packet: p.max_packet_size,
                            receive_max: p.receive_max,
                            max_qos: p.max_qos,
                            retain_available: p.retain_available != Some(0),
                        },
                        None => Broker {
                            retain_available: true,
                            ..Broker::default()
                        },
                    }),
                    v5::Event::Incoming(Packet::PubAck(ack)) => Step::Acked(ack.pkid, Some(ack.reason)),
                    v5::Event::Outgoing(Outgoing::Publish(pkid)) => Step::Sent(pkid),
                    _ => Step::Other,
                })
            }
            Client::V311(_, events) => Ok(match events.poll().await.map_err(Failure::V311)? {
                rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) => Step::Connected(Broker {
                    retain_available: true,
                    ..Broker::default()
                }),
                rumqttc::Event::Incoming(rumqttc::Packet::PubAck(ack)) => Step::Acked(ack.pkid, None),
                rumqttc::Event::Outgoing(Outgoing::Publish(pkid)) => Step::Sent(pkid),
                _ => Step::Other,
            }),
        }
    }

    /// Hands one publish to the client (it never waits: the caller keeps
    /// no more in the channel than it holds).
    fn publish(&self, opts: &MqttOptions, m: &Message) -> Result<(), String> {
        let topic = opts.topic.render(m.key.as_deref());
        let payload = m.payload.clone();
        match self {
            Client::V5(client, _) => {
                let qos = if opts.qos == 0 {
                    QoS::AtMostOnce
                } else {
                    QoS::AtLeastOnce
                };
                let props = PublishProperties {
                    user_properties: vec![
                        (ID_PROPERTY.to_owned(), m.id.clone()),
                        (
                            INDEX_PROPERTY.to_owned(),
                            itoa::Buffer::new().format(m.index).to_owned(),
                        ),
                    ],
                    ..PublishProperties::default()
                };
                client
                    .try_publish_with_properties(topic, qos, opts.retain, payload, props)
                    .map_err(|e| e.to_string())
            }
            Client::V311(client, _) => {
                let qos = if opts.qos == 0 {
                    rumqttc::QoS::AtMostOnce
                } else {
                    rumqttc::QoS::AtLeastOnce
                };
                client
                    .try_publish(topic, qos, opts.retain, payload)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// An open connection.
struct Connection {
    client: Client,
    broker: Broker,
    /// When the client's event loop last ran: the broker drops a client
    /// that sent nothing for 1.5 keep-alive intervals.
    last_poll: Instant,
}

/// Publishes messages to an MQTT broker.
pub struct MqttSink {
    name: String,
    opts: Box<MqttOptions>,
    client_id: String,
    /// The connection, while there is one.
    conn: Option<Connection>,
    /// A batch was handed to the connection and not finished (an error, or
    /// the `write_batch` future dropped): the connection is not reused.
    dirty: bool,
    limits: SinkLimits,
}

impl fmt::Debug for MqttSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttSink")
            .field("name", &self.name)
            .field("opts", &self.opts)
            .field("client_id", &self.client_id)
            .field("connected", &self.conn.is_some())
            .field("limits", &self.limits)
            .finish()
    }
}

impl MqttSink {
    /// Tries to connect once, to learn the broker's limits; a broker that
    /// cannot be reached now is not an error (the first write reports it as
    /// unavailable), but refused credentials, TLS or client id are.
    pub async fn open(name: &str, opts: MqttOptions) -> Result<MqttSink, SinkError> {
        let client_id = opts.client_id.clone().unwrap_or_else(|| format!("rowhook-{name}"));
        let mut sink = MqttSink {
            name: name.to_owned(),
            limits: SinkLimits {
                max_payload: Some(max_payload(&opts, &Broker::default())),
                max_key: Some(MAX_KEY),
            },
            opts: Box::new(opts),
            client_id,
            conn: None,
            dirty: false,
        };
        match connect(name, &sink.opts, &sink.client_id).await {
            Ok(conn) => {
                sink.limits.max_payload = Some(max_payload(&sink.opts, &conn.broker));
                sink.conn = Some(conn);
            }
            Err(e @ SinkError::Permanent { .. }) => return Err(e),
            Err(e) => tracing::info!(sink = %name, "not connected yet: {e}"),
        }
        Ok(sink)
    }

    /// Whether the sink holds a connection it would use for the next batch.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some() && !self.dirty
    }

    /// The open connection, or a new one: one that may hold half a batch,
    /// or that has been idle long enough for the broker to drop it, is
    /// abandoned (see the module docs).
    async fn connection(&mut self) -> Result<&mut Connection, SinkError> {
        let stale = self
            .conn
            .as_ref()
            .is_some_and(|c| c.last_poll.elapsed() >= self.opts.keep_alive);
        if self.dirty || stale {
            self.conn = None;
            self.dirty = false;
        }
        if self.conn.is_none() {
            self.conn = Some(connect(&self.name, &self.opts, &self.client_id).await?);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// The exact size of the PUBLISH packet of `m`.
    fn packet_size(&self, m: &Message, topic_len: usize) -> usize {
        let mut remaining = 2 + topic_len + m.payload.len();
        if self.opts.qos > 0 {
            remaining += 2;
        }
        if self.opts.protocol == Protocol::V5 {
            let index = itoa::Buffer::new().format(m.index).len();
            let props = (5 + ID_PROPERTY.len() + m.id.len()) + (5 + INDEX_PROPERTY.len() + index);
            remaining += varint_len(props) + props;
        }
        1 + varint_len(remaining) + remaining
    }

    /// Refuses a batch holding a message the broker cannot take, before
    /// anything is published.
    fn check_sizes(&self, batch: &[Message], broker: &Broker) -> Result<(), SinkError> {
        for m in batch {
            if m.key.as_ref().is_some_and(|k| k.len() > MAX_KEY) {
                return Err(SinkError::permanent(
                    &self.name,
                    format!(
                        "message `{}` has a key longer than {MAX_KEY} bytes; emit a shorter key",
                        m.id
                    ),
                ));
            }
            let topic_len = self.opts.topic.render(m.key.as_deref()).len();
            let size = self.packet_size(m, topic_len);
            let remaining = size - 1 - varint_len(size);
            let too_large = |limit: String, fix: &str| {
                SinkError::permanent(
                    &self.name,
                    format!(
                        "message `{}` has a {}-byte payload, more than {limit}; emit less, or {fix}",
                        m.id,
                        m.payload.len()
                    ),
                )
            };
            if let Some(max) = broker.max_packet
                && size > max as usize
            {
                return Err(too_large(
                    format!("the broker's Maximum Packet Size ({max} bytes, with topic and properties)"),
                    "raise max_packet_size in the broker's config",
                ));
            }
            if let Some(max) = self.opts.max_payload
                && m.payload.len() > max as usize
            {
                return Err(too_large(
                    format!("max_payload ({max} bytes)"),
                    "raise max_payload with the broker's limit",
                ));
            }
            if remaining > config::PROTOCOL_MAX_REMAINING as usize {
                return Err(too_large("MQTT's largest packet (256 MiB)".into(), "split the message"));
            }
        }
        Ok(())
    }

    /// Publishes the batch on the open connection and waits for its PUBACKs.
    async fn publish_batch(&mut self, batch: &[Message]) -> Result<(), SinkError> {
        let conn = self.conn.as_mut().expect("connected");
        let opts = &self.opts;
        let window = usize::from(opts.inflight);
        let acked_qos = opts.qos > 0;
        // Batch index of each publish awaiting its PUBACK, by packet id.
        let mut awaiting: HashMap<u16, usize> = HashMap::with_capacity(window.min(batch.len()));
        let (mut handed, mut sent, mut acked) = (0, 0, 0);
        let mut deadline = Instant::now() + opts.ack_timeout;
        while if acked_qos {
            acked < batch.len()
        } else {
            sent < batch.len()
        } {
            while handed < batch.len() && handed - sent < window {
                conn.client.publish(opts, &batch[handed]).map_err(|e| {
                    SinkError::unavailable(
                        &self.name,
                        format!("handing message `{}` to the MQTT client: {e}", batch[handed].id),
                    )
                })?;
                handed += 1;
            }
            let step = tokio::time::timeout_at(deadline, conn.client.poll()).await;
            conn.last_poll = Instant::now();
            let step = match step {
                Ok(Ok(step)) => step,
                // Brokers acknowledge in order (MQTT requires it), so a
                // failure concerns the first message not acknowledged yet,
                // or one after it whose PUBACK came in the same read; a
                // refusal for size names the largest of them.
                Ok(Err(e)) => {
                    let first = if acked_qos { acked } else { sent };
                    let unacked = &batch[first.min(batch.len())..handed.max(first).min(batch.len())];
                    let m = if too_large(&e) {
                        unacked.iter().max_by_key(|m| m.payload.len())
                    } else {
                        unacked.first()
                    };
                    return Err(fail(&self.name, opts, &e, m));
                }
                Err(_) => {
                    let what = if acked_qos && sent > acked {
                        format!("no PUBACK for message `{}`", batch[acked].id)
                    } else {
                        format!("message `{}` was not written", batch[sent.min(batch.len() - 1)].id)
                    };
                    return Err(SinkError::unavailable(
                        &self.name,
                        format!(
                            "{what} within ack_timeout_ms ({} ms) from {}",
                            opts.ack_timeout.as_millis(),
                            opts.url
                        ),
                    ));
                }
            };
            match step {
                Step::Sent(pkid) => {
                    if acked_qos {
                        awaiting.insert(pkid, sent);
                    }
                    sent += 1;
                    deadline = Instant::now() + opts.ack_timeout;
                }
                Step::Acked(pkid, reason) => {
                    let Some(i) = awaiting.remove(&pkid) else {
                        return Err(SinkError::unavailable(
                            &self.name,
                            format!("{} acknowledged packet id {pkid}, which awaits no PUBACK", opts.url),
                        ));
                    };
                    if let Some(reason) = reason {
                        refused(&self.name, opts, &batch[i], reason)?;
                    }
                    acked += 1;
                    deadline = Instant::now() + opts.ack_timeout;
                }
                Step::Connected(_) | Step::Other => {}
            }
        }
        Ok(())
    }
}

/// Connects as `client_id` and waits for the broker's CONNACK. A free
/// function: the client is not `Sync`, so no `&MqttSink` may be held
/// across its awaits.
async fn connect(name: &str, opts: &MqttOptions, client_id: &str) -> Result<Connection, SinkError> {
    let transport = match &opts.tls {
        Some(tls) => Transport::Tls(TlsConfiguration::Rustls(
            client_config(tls, "broker")
                .map(Arc::new)
                .map_err(|e| SinkError::permanent(name, e))?,
        )),
        None => Transport::Tcp,
    };
    // The client's own connect timeout is in whole seconds; ours, below,
    // is the one that counts.
    let connect_secs = opts.ack_timeout.as_secs() + 1;
    let cap = usize::from(opts.inflight);
    // Publishes and acknowledgements are small packets that wait on each
    // other: Nagle's algorithm would hold each write for the previous ACK.
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(connect_secs);
    let mut client = match opts.protocol {
        Protocol::V5 => {
            let mut o = v5::MqttOptions::new(client_id, opts.url.host.clone(), opts.url.port);
            o.set_transport(transport)
                .set_keep_alive(opts.keep_alive)
                .set_clean_start(true)
                .set_connection_timeout(connect_secs)
                .set_network_options(network)
                .set_outgoing_inflight_upper_limit(opts.inflight);
            if let Some((user, password)) = &opts.auth {
                o.set_credentials(user.clone(), password.0.clone());
            }
            let (client, events) = v5::AsyncClient::new(o, cap);
            Client::V5(client, Box::new(events))
        }
        Protocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(client_id, opts.url.host.clone(), opts.url.port);
            o.set_transport(transport)
                .set_keep_alive(opts.keep_alive)
                .set_clean_session(true)
                .set_inflight(opts.inflight)
                // Outgoing: up to the protocol's limit (the sink checks
                // sizes itself); incoming: acknowledgements only.
                .set_max_packet_size(1 << 16, config::PROTOCOL_MAX_REMAINING as usize + 5);
            if let Some((user, password)) = &opts.auth {
                o.set_credentials(user.clone(), password.0.clone());
            }
            let (client, mut events) = rumqttc::AsyncClient::new(o, cap);
            events.set_network_options(network);
            Client::V311(client, Box::new(events))
        }
    };
    let connected = tokio::time::timeout(opts.ack_timeout, client.poll()).await;
    let broker = match connected {
        Ok(Ok(Step::Connected(broker))) => broker,
        Ok(Ok(_)) => {
            return Err(SinkError::unavailable(
                name,
                format!("{} answered the CONNECT with something else than a CONNACK", opts.url),
            ));
        }
        Ok(Err(e)) => return Err(fail(name, opts, &e, None)),
        Err(_) => {
            return Err(SinkError::unavailable(
                name,
                format!(
                    "no CONNACK from {} within ack_timeout_ms ({} ms)",
                    opts.url,
                    opts.ack_timeout.as_millis()
                ),
            ));
        }
    };
    if let Some(max) = broker.max_qos
        && max < opts.qos
    {
        return Err(SinkError::permanent(
            name,
            format!(
                "{} takes QoS {max} at most; set qos = {max}, or raise the broker's max_qos",
                opts.url
            ),
        ));
    }
    if opts.retain && !broker.retain_available {
        return Err(SinkError::permanent(
            name,
            format!(
                "{} keeps no retained messages; set retain = false, or enable retain_available on the broker",
                opts.url
            ),
        ));
    }
    Ok(Connection {
        client,
        broker,
        last_poll: Instant::now(),
    })
}

/// The largest payload a handler may emit to a sink with `opts`, on a
/// broker that said `broker`: its packet limit less the most the topic and
/// the properties can take.
fn max_payload(opts: &MqttOptions, broker: &Broker) -> usize {
    let mut room = 5 + 2 + opts.topic.max_len() + 2;
    if opts.protocol == Protocol::V5 {
        room += 4 + (5 + ID_PROPERTY.len() + ID_ROOM) + (5 + INDEX_PROPERTY.len() + 10);
    }
    let mut max = (config::PROTOCOL_MAX_REMAINING as usize + 5).saturating_sub(room);
    if let Some(packet) = broker.max_packet {
        max = max.min((packet as usize).saturating_sub(room));
    }
    if let Some(payload) = opts.max_payload {
        max = max.min(payload as usize);
    }
    max
}

/// Turns a refusing PUBACK (MQTT 5 reason code 0x80 or above) into the
/// batch's error.
fn refused(sink: &str, opts: &MqttOptions, m: &Message, reason: PubAckReason) -> Result<(), SinkError> {
    let topic = opts.topic.render(m.key.as_deref());
    let what = format!("{} refused message `{}` to topic {topic} ({reason:?})", opts.url, m.id);
    match reason {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(()),
        PubAckReason::NotAuthorized => Err(SinkError::permanent(
            sink,
            format!(
                "{what}; allow this user to publish to the topic (Mosquitto: `topic write {}` in its acl_file)",
                opts.topic.filter()
            ),
        )),
        PubAckReason::TopicNameInvalid => Err(SinkError::permanent(
            sink,
            format!("{what}; choose a topic the broker accepts"),
        )),
        PubAckReason::PayloadFormatInvalid => Err(SinkError::permanent(
            sink,
            format!("{what}; the broker checks payloads: emit what it accepts"),
        )),
        PubAckReason::QuotaExceeded
        | PubAckReason::UnspecifiedError
        | PubAckReason::ImplementationSpecificError
        | PubAckReason::PacketIdentifierInUse => Err(SinkError::unavailable(sink, what)),
    }
}

/// Classifies what stopped the client: refused credentials, TLS, client id
/// or protocol, and a message too large, are permanent; the rest may clear up.
fn fail(sink: &str, opts: &MqttOptions, e: &Failure, m: Option<&Message>) -> SinkError {
    let url = &opts.url;
    let credentials = || {
        SinkError::permanent(
            sink,
            format!(
                "{url} refused the credentials ({}); check user and password, and the broker's password file",
                describe(e)
            ),
        )
    };
    let permanent =
        |fix: &str| SinkError::permanent(sink, format!("{url} refused the connection ({}); {fix}", describe(e)));
    let unavailable = || {
        let during = m
            .map(|m| format!(" while publishing message `{}`", m.id))
            .unwrap_or_default();
        SinkError::unavailable(sink, format!("cannot use {url}{during}: {}", describe(e)))
    };
    let tls = |what: &dyn fmt::Display| {
        SinkError::permanent(
            sink,
            format!(
                "TLS with {url} failed ({what}); check tls_ca_file, tls_cert_file, tls_key_file and the broker's certificate"
            ),
        )
    };
    match e {
        Failure::V5(e) => {
            let code = match e {
                v5::ConnectionError::ConnectionRefused(code) => Some(*code),
                v5::ConnectionError::MqttState(v5::StateError::ConnFail { reason }) => Some(*reason),
                _ => None,
            };
            if let Some(code) = code {
                use ConnectReturnCode as C;
                return match code {
                    C::BadUserNamePassword | C::NotAuthorized | C::Banned | C::BadAuthenticationMethod => credentials(),
                    C::RefusedProtocolVersion | C::UnsupportedProtocolVersion => {
                        permanent("the broker does not speak MQTT 5: set protocol = \"3.1.1\"")
                    }
                    C::BadClientId | C::ClientIdentifierNotValid => {
                        permanent("set client_id to one the broker accepts (1 to 23 letters and digits always are)")
                    }
                    C::UseAnotherServer | C::ServerMoved => permanent("point url at the broker it names"),
                    C::RetainNotSupported => permanent("set retain = false"),
                    C::QoSNotSupported => permanent("set qos = 0, or raise the broker's max_qos"),
                    _ => unavailable(),
                };
            }
            match e {
                v5::ConnectionError::Tls(t) => tls(t),
                v5::ConnectionError::MqttState(v5::StateError::ServerDisconnect { reason_code, .. }) => {
                    use DisconnectReasonCode as D;
                    match reason_code {
                        D::NotAuthorized => SinkError::permanent(
                            sink,
                            format!(
                                "{url} closed the connection: not authorized ({}); allow this user to publish to {}",
                                describe_message(m),
                                opts.topic.filter()
                            ),
                        ),
                        D::PacketTooLarge => SinkError::permanent(
                            sink,
                            format!(
                                "{url} closed the connection: packet too large ({}); emit less, or raise the broker's max_packet_size / message_size_limit",
                                describe_message(m)
                            ),
                        ),
                        D::TopicNameInvalid => SinkError::permanent(
                            sink,
                            format!(
                                "{url} closed the connection: topic name invalid; choose a topic the broker accepts"
                            ),
                        ),
                        D::SessionTakenOver => SinkError::unavailable(
                            sink,
                            format!(
                                "{url} closed the connection: another client connected with client id `{}`; give each rowhook process its own client_id",
                                opts.client_id.as_deref().unwrap_or("rowhook-<sink name>")
                            ),
                        ),
                        _ => unavailable(),
                    }
                }
                // Mosquitto refuses a message over its message_size_limit
                // with PUBACK 0x95 (Packet Too Large), a code MQTT 5 does
                // not list for PUBACK, so the client cannot read it.
                v5::ConnectionError::MqttState(v5::StateError::Deserialization(
                    v5::mqttbytes::Error::InvalidConnectReturnCode(0x95),
                )) => SinkError::permanent(
                    sink,
                    format!(
                        "{url} refused {} as too large (PUBACK reason 0x95); emit less, or raise the broker's message_size_limit / max_packet_size",
                        describe_message(m)
                    ),
                ),
                v5::ConnectionError::MqttState(v5::StateError::OutgoingPacketTooLarge { pkt_size, max }) => {
                    SinkError::permanent(
                        sink,
                        format!(
                            "a {pkt_size}-byte packet ({}) is more than {url}'s Maximum Packet Size ({max}); emit less, or raise max_packet_size in the broker's config",
                            describe_message(m)
                        ),
                    )
                }
                _ => unavailable(),
            }
        }
        Failure::V311(e) => match e {
            rumqttc::ConnectionError::ConnectionRefused(code) => {
                use rumqttc::ConnectReturnCode as C;
                match code {
                    C::BadUserNamePassword | C::NotAuthorized => credentials(),
                    C::RefusedProtocolVersion => permanent("the broker does not speak MQTT 3.1.1"),
                    C::BadClientId => {
                        permanent("set client_id to one the broker accepts (1 to 23 letters and digits always are)")
                    }
                    C::Success | C::ServiceUnavailable => unavailable(),
                }
            }
            rumqttc::ConnectionError::Tls(t) => tls(t),
            _ => unavailable(),
        },
    }
}

/// Whether the broker refused a message as too large (see [`fail`]).
fn too_large(e: &Failure) -> bool {
    matches!(
        e,
        Failure::V5(v5::ConnectionError::MqttState(
            v5::StateError::Deserialization(v5::mqttbytes::Error::InvalidConnectReturnCode(0x95))
                | v5::StateError::OutgoingPacketTooLarge { .. }
                | v5::StateError::ServerDisconnect {
                    reason_code: DisconnectReasonCode::PacketTooLarge,
                    ..
                }
        ))
    )
}

fn describe_message(m: Option<&Message>) -> String {
    m.map_or_else(|| "no message named".to_owned(), |m| format!("message `{}`", m.id))
}

/// What the client said, in words for an operator.
fn describe(e: &Failure) -> String {
    match e {
        Failure::V5(v5::ConnectionError::ConnectionRefused(code))
        | Failure::V5(v5::ConnectionError::MqttState(v5::StateError::ConnFail { reason: code })) => {
            format!("CONNACK reason {code:?}")
        }
        Failure::V311(rumqttc::ConnectionError::ConnectionRefused(code)) => format!("CONNACK return code {code:?}"),
        Failure::V5(e) => e.to_string(),
        Failure::V311(e) => e.to_string(),
    }
}

impl Sink for MqttSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write_batch(&mut self, batch: &[Message]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let broker = self.connection().await?.broker;
        self.check_sizes(batch, &broker)?;
        self.dirty = true;
        let result = self.publish_batch(batch).await;
        if result.is_ok() {
            self.dirty = false;
        } else {
            // What this connection still holds must not reach the broker
            // after the retry's messages.
            self.conn = None;
            self.dirty = false;
        }
        result
    }

    async fn health(&mut self) -> Result<(), SinkError> {
        let conn = self.connection().await?;
        // Let the client read what came (a ping answer, a DISCONNECT) and
        // send a ping that is due; nothing of a batch is in flight here.
        match tokio::time::timeout(HEALTH_POLL, conn.client.poll()).await {
            Err(_) | Ok(Ok(_)) => {
                conn.last_poll = Instant::now();
                Ok(())
            }
            Ok(Err(e)) => {
                self.conn = None;
                Err(fail(&self.name, &self.opts, &e, None))
            }
        }
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        // Acknowledged batches are at the broker already. Say goodbye, so
        // the broker logs a disconnect rather than a lost client.
        if let Some(mut conn) = self.conn.take()
            && !self.dirty
        {
            let asked = match &conn.client {
                Client::V5(c, _) => c.try_disconnect().is_ok(),
                Client::V311(c, _) => c.try_disconnect().is_ok(),
            };
            if asked {
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Ok(step) = conn.client.poll().await {
                        if matches!(step, Step::Other) {
                            break;
                        }
                    }
                })
                .await;
            }
        }
        self.dirty = false;
        Ok(())
    }

    fn limits(&self) -> SinkLimits {
        self.limits
    }
}

/// `rowhook check`: connects and authenticates as `<client id>-check` (so a
/// running rowhook keeps its connection), reads the broker's limits from
/// its CONNACK, and publishes nothing.
fn probe(name: &str, opts: &MqttOptions) -> CheckLine {
    let head = format!("sink `{name}` (mqtt)");
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return CheckLine::fail(format!("{head}: cannot start the probe: {e}")),
    };
    let found = rt.block_on(async {
        match tokio::time::timeout(PROBE_TIMEOUT, probe_broker(name, opts)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "{} did not answer within {} s; check that the broker is up and url is right",
                opts.url,
                PROBE_TIMEOUT.as_secs()
            )),
        }
    });
    match found {
        Ok(text) => CheckLine::ok(format!("{head}: {text}")),
        Err(text) => CheckLine::fail(format!("{head}: {text}")),
    }
}

async fn probe_broker(name: &str, opts: &MqttOptions) -> Result<String, String> {
    let client_id = opts.client_id.clone().unwrap_or_else(|| format!("rowhook-{name}"));
    let check_id = format!("{client_id}-check");
    let mut conn = connect(name, opts, &check_id).await.map_err(|e| match e {
        SinkError::Unavailable { reason, .. } => format!("{reason}; start the broker or fix url"),
        SinkError::Permanent { reason, .. } => reason,
    })?;
    let qos = if opts.qos == 0 { "QoS 0 (at-most-once)" } else { "QoS 1" };
    let limit = match (opts.protocol, conn.broker.max_packet) {
        (Protocol::V5, Some(max)) => format!("the broker's maximum packet size is {max} bytes"),
        (Protocol::V5, None) => "the broker sets no maximum packet size".to_owned(),
        (Protocol::V311, _) => "MQTT 3.1.1 does not tell the broker's maximum packet size".to_owned(),
    };
    let payload = match opts.max_payload {
        Some(max) => format!("max_payload {max} bytes"),
        None if conn.broker.max_packet.is_some() => String::new(),
        None => "set max_payload if the broker has a message_size_limit".to_owned(),
    };
    let receive = conn
        .broker
        .receive_max
        .map(|r| format!(", receive maximum {r}"))
        .unwrap_or_default();
    let payload = if payload.is_empty() {
        payload
    } else {
        format!("; {payload}")
    };
    let answer = format!(
        "{} ({}), topic {}, {qos}: connected as {check_id}; {limit}{receive}{payload}; nothing published",
        opts.url, opts.protocol, opts.topic
    );
    match &conn.client {
        Client::V5(c, _) => drop(c.try_disconnect()),
        Client::V311(c, _) => drop(c.try_disconnect()),
    }
    let _ = tokio::time::timeout(Duration::from_millis(200), conn.client.poll()).await;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testing::msg;

    fn level(key: Option<&[u8]>) -> String {
        let mut s = String::new();
        push_key_level(&mut s, key);
        s
    }

    #[test]
    fn keys_become_one_level() {
        assert_eq!(level(Some(b"42")), "42");
        assert_eq!(level(Some(b"eu/fr 1")), "eu%2Ffr%201");
        assert_eq!(level(Some(b"+#%$.")), "%2B%23%25$.");
        assert_eq!(level(Some("é\0".as_bytes())), "%C3%A9%00");
        assert_eq!(level(None), "_");
        assert_eq!(level(Some(b"")), "_");
        assert_eq!(level(Some(b"_")), "%5F");
        assert_eq!(level(Some(b"a_b")), "a_b");
    }

    #[test]
    fn topics_render_keys_and_filters() {
        let t = TopicTemplate::parse("shop/{key}/orders").unwrap();
        assert!(t.keyed());
        assert_eq!(t.render(Some(b"k 1")), "shop/k%201/orders");
        assert_eq!(t.filter(), "shop/+/orders");
        let t = TopicTemplate::parse("shop/order-{key}").unwrap();
        assert_eq!(t.render(Some(b"7")), "shop/order-7");
        assert_eq!(t.filter(), "shop/#");
        let t = TopicTemplate::parse("orders").unwrap();
        assert!(!t.keyed());
        assert_eq!(
            (t.render(Some(b"k")), t.filter(), t.to_string()),
            ("orders".into(), "orders".into(), "orders".into())
        );
    }

    #[test]
    fn urls_parse() {
        let u = |s: &str| BrokerUrl::parse(s).map(|u| u.to_string());
        assert_eq!(u("mqtt://h").unwrap(), "mqtt://h:1883");
        assert_eq!(u("mqtts://h").unwrap(), "mqtts://h:8883");
        assert_eq!(u("h:1").unwrap(), "mqtt://h:1");
        assert_eq!(u("mqtt://[::1]:1884/").unwrap(), "mqtt://[::1]:1884");
        assert_eq!(u("mqtt://[::1]").unwrap(), "mqtt://[::1]:1883");
        assert_eq!(u("ws://h").unwrap_err(), "`ws://` is not an MQTT URL scheme");
        assert_eq!(u("mqtt://h:x").unwrap_err(), "`x` is not a port");
    }

    fn options(protocol: Protocol) -> MqttOptions {
        MqttOptions {
            url: BrokerUrl::parse("h").unwrap(),
            topic: TopicTemplate::parse("t/{key}").unwrap(),
            protocol,
            qos: 1,
            retain: false,
            client_id: None,
            auth: None,
            tls: None,
            ack_timeout: Duration::from_secs(1),
            keep_alive: Duration::from_secs(30),
            inflight: 10,
            max_payload: None,
        }
    }

    #[test]
    fn packet_sizes_are_exact() {
        let sink = |protocol| MqttSink {
            name: "m".into(),
            opts: Box::new(options(protocol)),
            client_id: "c".into(),
            conn: None,
            dirty: false,
            limits: SinkLimits::default(),
        };
        let m = msg("0-1-2:0:0", "{}");
        // 3.1.1: header 2, topic 2+3 (t/_), packet id 2, payload 2.
        assert_eq!(sink(Protocol::V311).packet_size(&m, 3), 2 + 5 + 2 + 2);
        // 5: plus properties: length 1, rowhook-id 5+10+9, rowhook-index 5+13+1.
        assert_eq!(sink(Protocol::V5).packet_size(&m, 3), 2 + 5 + 2 + 1 + 24 + 19 + 2);
        let big = msg("x", &"x".repeat(200));
        assert_eq!(sink(Protocol::V311).packet_size(&big, 3), 3 + 5 + 2 + 200);
    }

    #[test]
    fn payload_limits_leave_room_for_topic_and_properties() {
        let o = options(Protocol::V5);
        let broker = Broker {
            max_packet: Some(100_000),
            ..Broker::default()
        };
        let max = max_payload(&o, &broker);
        assert!(max < 100_000 - 3 * MAX_KEY && max > 90_000, "{max}");
        let mut o = options(Protocol::V311);
        assert!(max_payload(&o, &Broker::default()) > 268_000_000);
        o.max_payload = Some(1000);
        assert_eq!(max_payload(&o, &Broker::default()), 1000);
    }

    #[test]
    fn refusals_are_classified() {
        let o = options(Protocol::V5);
        let m = msg("0-1-2:0:0", "{}");
        assert!(refused("m", &o, &m, PubAckReason::NoMatchingSubscribers).is_ok());
        let e = refused("m", &o, &m, PubAckReason::NotAuthorized).unwrap_err();
        assert!(!e.is_retryable() && e.to_string().contains("topic write t/+"), "{e}");
        assert!(
            refused("m", &o, &m, PubAckReason::QuotaExceeded)
                .unwrap_err()
                .is_retryable()
        );
        assert!(
            !refused("m", &o, &m, PubAckReason::TopicNameInvalid)
                .unwrap_err()
                .is_retryable()
        );
        let refused_with = |code| {
            fail(
                "m",
                &o,
                &Failure::V5(v5::ConnectionError::ConnectionRefused(code)),
                None,
            )
        };
        let e = refused_with(ConnectReturnCode::BadUserNamePassword);
        assert!(
            !e.is_retryable() && e.to_string().contains("refused the credentials"),
            "{e}"
        );
        assert!(refused_with(ConnectReturnCode::ServerBusy).is_retryable());
        let e = refused_with(ConnectReturnCode::UnsupportedProtocolVersion);
        assert!(e.to_string().contains("set protocol = \"3.1.1\""), "{e}");
    }
}
