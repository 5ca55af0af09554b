//! `kind = "amqp"`: each message published to a RabbitMQ exchange (AMQP
//! 0.9.1) with a routing key, acknowledged by publisher confirms.
//!
//! - **Ack = the broker's confirms.** The channel is in confirm mode. A
//!   batch is published without waiting between messages, then every
//!   confirm is awaited (the broker confirms a persistent message routed to
//!   a durable queue once the queue has written it to disk); only then does
//!   `write_batch` return `Ok`. A `basic.nack` (a full queue with
//!   `overflow = reject-publish`, an internal error) fails the batch as
//!   [`SinkError::Unavailable`], and so does a message returned as
//!   unroutable (`mandatory`, on by default: no queue is bound for its
//!   routing key; the broker would otherwise drop it and confirm).
//! - **Dedupe.** Every message carries the `message-id` property
//!   `<change id>:<index>` (see [`message_id`]), the same on every
//!   re-delivery, so consumers drop the copies a retry or a replay sends.
//! - **Order.** One connection and one channel: the broker routes a
//!   channel's messages in the order published. A connection that failed
//!   or timed out is dropped, never reused; the next write opens a new one
//!   and publishes the whole batch again.
//! - **Errors.** Refused, reset or timed out connections, a broker shutting
//!   down, a nack, an unroutable message, a confirm that does not come
//!   (publishers blocked by a memory or disk alarm):
//!   [`SinkError::Unavailable`]. Refused credentials, an unknown vhost or
//!   one the user may not use, a missing exchange, no permission to write
//!   to it, a message larger than `max_message_size`, a key that cannot be
//!   a routing key: [`SinkError::Permanent`], with the fix.
//! - **Limits at emit.** AMQP does not announce the broker's largest
//!   message (RabbitMQ's `max_message_size`), so the configured value is
//!   the payload limit; the routing key's 255 bytes less the rest of the
//!   template bound the key. The negotiated `frame_max` only splits large
//!   bodies into frames.

mod config;

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use amqprs::callbacks::{ChannelCallback, ConnectionCallback};
use amqprs::channel::{
    BasicPublishArguments, Channel, ConfirmSelectArguments, ExchangeDeclareArguments, QueueDeclareArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::tls::TlsAdaptor;
use amqprs::{Ack, BasicProperties, Cancel, Close, CloseChannel, Nack, Return};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

pub use self::config::RawAmqpSink;
use super::kind::SinkKind;
use super::tls::{Secret, TlsFiles, client_config, percent_decode};
use super::{Message, Sink, SinkError, SinkLimits};
use crate::probe::CheckLine;
use crate::problem::SinkContext;

/// AMQP's short strings (exchange names, routing keys, property values)
/// hold at most this many bytes.
pub const SHORT_STR_MAX: usize = 255;
/// How long `rowhook check` waits for the broker's answers.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Heartbeat interval asked of the broker, in seconds: a silent peer is
/// taken for gone after about twice this.
const HEARTBEAT_SECS: u16 = 30;
/// While publishing a batch, the broker's events (a channel closed, a
/// nack) are looked at every this many messages, so a refused batch stops
/// early.
const CHECK_EVERY: usize = 512;
/// How often the wait for confirms looks at the connection's state.
const POLL: Duration = Duration::from_millis(50);

/// `kind = "amqp"` in the registry.
#[derive(Debug)]
pub struct AmqpKind;

impl SinkKind for AmqpKind {
    const NAME: &'static str = "amqp";
    // Boxed: the keys are many, and the registry's enums hold every kind.
    type Raw = Box<RawAmqpSink>;
    type Options = AmqpOptions;
    type Sink = AmqpSink;

    fn resolve(raw: Box<RawAmqpSink>, cx: &mut SinkContext<'_>) -> Option<AmqpOptions> {
        config::resolve(*raw, cx)
    }

    async fn open(name: &str, options: &AmqpOptions) -> Result<AmqpSink, SinkError> {
        AmqpSink::open(name, options.clone()).await
    }

    fn probe(name: &str, options: &AmqpOptions) -> CheckLine {
        probe(name, options)
    }

    fn one_line_per_message(_: &AmqpOptions) -> bool {
        false
    }
}

/// Settings of an amqp sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpOptions {
    /// The broker, credentials and vhost.
    pub url: AmqpUrl,
    /// The exchange; `""` is the default exchange.
    pub exchange: String,
    /// The routing key of each message.
    pub routing_key: RoutingKeyTemplate,
    /// `delivery_mode` 2 (persistent) rather than 1.
    pub persistent: bool,
    /// Publish with `mandatory`: unroutable messages come back.
    pub mandatory: bool,
    /// How long a batch's confirms (and connecting) may take.
    pub confirm_timeout: Duration,
    /// The `content-type` property, if set.
    pub content_type: Option<String>,
    /// The broker's largest message, in bytes.
    pub max_message_size: usize,
    /// TLS settings, for `amqps://`.
    pub tls: Option<TlsFiles>,
}

/// An `amqp://` or `amqps://` URL, taken apart. `Display` and `Debug`
/// show it without the password.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpUrl {
    /// `amqps://`.
    pub tls: bool,
    /// Host name or address (an IPv6 address without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password.
    pub password: Secret,
    /// Virtual host, decoded.
    pub vhost: String,
}

impl AmqpUrl {
    /// Parses `amqp[s]://[USER[:PASSWORD]@]HOST[:PORT][/VHOST]`, user,
    /// password and vhost percent-encoded. The error says what is wrong,
    /// never echoing the password.
    pub fn parse(text: &str) -> Result<AmqpUrl, String> {
        let (tls, rest) = match text.split_once("://") {
            Some(("amqp", rest)) => (false, rest),
            Some(("amqps", rest)) => (true, rest),
            Some((scheme, _)) => return Err(format!("`{scheme}://` is not an AMQP URL scheme")),
            None => return Err("is not an amqp:// or amqps:// URL".into()),
        };
        if rest.contains(['?', '#']) {
            return Err("has query options".into());
        }
        // The last `@` ends the user info, so an unencoded `@` or `/` in the
        // password still counts as password.
        let (userinfo, rest) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let (user, password) = match userinfo {
            None => ("guest".to_owned(), "guest".to_owned()),
            Some(info) => match info.split_once(':') {
                Some((u, p)) => (percent_decode(u)?, percent_decode(p)?),
                None => return Err("has a user but no password".into()),
            },
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("has an unclosed `[`")?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("has no host".into());
        }
        let port = match port {
            None => {
                if tls {
                    5671
                } else {
                    5672
                }
            }
            Some(p) => p.parse::<u16>().map_err(|_| format!("`{p}` is not a port"))?,
        };
        let vhost = if path.is_empty() {
            "/".to_owned()
        } else {
            percent_decode(path)?
        };
        if vhost.len() > SHORT_STR_MAX || user.len() > SHORT_STR_MAX {
            return Err("has a user or vhost longer than 255 bytes".into());
        }
        Ok(AmqpUrl {
            tls,
            host: host.to_owned(),
            port,
            user,
            password: Secret(password),
            vhost,
        })
    }

    /// `HOST:PORT`, with brackets around an IPv6 address.
    fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        let mut vhost = String::new();
        for b in self.vhost.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                vhost.push(char::from(b));
            } else {
                vhost.push_str(&format!("%{b:02X}"));
            }
        }
        write!(f, "{scheme}://{}@{}/{vhost}", self.user, self.address())
    }
}

impl fmt::Debug for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AmqpUrl({self})")
    }
}

/// A routing key with at most one `{key}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingKeyTemplate {
    /// As written.
    text: String,
    /// What comes before `{key}` and after it, when it holds one.
    parts: Option<(String, String)>,
}

/// Why a message's key cannot go into its routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// The key is not UTF-8.
    NotUtf8,
    /// The routing key would be longer than 255 bytes.
    TooLong,
}

impl RoutingKeyTemplate {
    /// Parses `orders.{key}`-style text; the error says what is wrong.
    pub fn parse(text: &str) -> Result<RoutingKeyTemplate, String> {
        let parts = match text.matches("{key}").count() {
            0 => None,
            1 => {
                let (before, after) = text.split_once("{key}").expect("counted");
                Some((before.to_owned(), after.to_owned()))
            }
            _ => return Err("has {key} more than once".into()),
        };
        if text.len() - if parts.is_some() { 5 } else { 0 } > SHORT_STR_MAX {
            return Err("is longer than 255 bytes".into());
        }
        Ok(RoutingKeyTemplate {
            text: text.to_owned(),
            parts,
        })
    }

    /// The longest key that fits, when the template holds `{key}`.
    pub fn max_key(&self) -> Option<usize> {
        self.parts
            .as_ref()
            .map(|(before, after)| SHORT_STR_MAX - before.len() - after.len())
    }

    /// The routing key of a message with `key` (none: empty).
    pub fn render(&self, key: Option<&[u8]>) -> Result<Cow<'_, str>, KeyError> {
        let Some((before, after)) = &self.parts else {
            return Ok(Cow::Borrowed(&self.text));
        };
        let key = std::str::from_utf8(key.unwrap_or_default()).map_err(|_| KeyError::NotUtf8)?;
        if before.len() + key.len() + after.len() > SHORT_STR_MAX {
            return Err(KeyError::TooLong);
        }
        Ok(Cow::Owned(format!("{before}{key}{after}")))
    }
}

impl fmt::Display for RoutingKeyTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The `message-id` of `m`: `<change id>:<index>`, so that two messages of
/// one row change have two ids (as the nats sink's `Nats-Msg-Id`); the
/// change id is what comes before the last `:`.
pub fn message_id(m: &Message) -> String {
    let mut id = String::with_capacity(m.id.len() + 4);
    id.push_str(&m.id);
    id.push(':');
    id.push_str(itoa::Buffer::new().format(m.index));
    id
}

/// Which messages of the batch in flight the broker has confirmed.
/// Confirms name delivery tags (1, 2, … per channel), one at a time or
/// "this one and all before" (`multiple`).
#[derive(Debug, Default)]
struct Confirms {
    /// The delivery tag of the batch's first message.
    first_tag: u64,
    /// Per message: confirmed.
    done: Vec<bool>,
    /// Every message before this index is confirmed.
    low: usize,
    /// Messages not confirmed yet.
    open: usize,
}

impl Confirms {
    fn begin(&mut self, first_tag: u64, n: usize) {
        self.first_tag = first_tag;
        self.done.clear();
        self.done.resize(n, false);
        self.low = 0;
        self.open = n;
    }

    fn confirm(&mut self, tag: u64, multiple: bool) {
        let Some(i) = tag
            .checked_sub(self.first_tag)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < self.done.len())
        else {
            return;
        };
        let from = if multiple { self.low } else { i };
        for d in &mut self.done[from..=i] {
            if !*d {
                *d = true;
                self.open -= 1;
            }
        }
        while self.low < self.done.len() && self.done[self.low] {
            self.low += 1;
        }
    }

    fn complete(&self) -> bool {
        self.open == 0
    }

    /// The batch index of delivery tag `tag`.
    fn index(&self, tag: u64) -> Option<usize> {
        let i = usize::try_from(tag.checked_sub(self.first_tag)?).ok()?;
        (i < self.done.len()).then_some(i)
    }
}

/// A message the broker returned: not routed to any queue.
#[derive(Debug, Clone)]
struct Returned {
    code: u16,
    text: String,
    routing_key: String,
    message_id: Option<String>,
}

/// What the broker said on the connection, as the callbacks saw it.
#[derive(Debug, Default)]
struct BrokerEvents {
    confirms: Confirms,
    /// The first tag the broker nacked in this batch.
    nacked: Option<u64>,
    returned: Option<Returned>,
    /// The broker closed the channel: reply code and text.
    channel_closed: Option<(u16, String)>,
    /// The broker closed the connection: reply code and text.
    connection_closed: Option<(u16, String)>,
    /// The broker blocks publishers (a resource alarm), and why.
    blocked: Option<String>,
}

/// [`BrokerEvents`] shared with the callbacks, which wake the writer.
#[derive(Debug, Default)]
struct Shared {
    events: Mutex<BrokerEvents>,
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, BrokerEvents> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut BrokerEvents)) {
        f(&mut self.lock());
        self.wake.notify_one();
    }
}

/// Feeds channel events into [`Shared`].
struct ChannelEvents(Arc<Shared>);

#[async_trait::async_trait]
impl ChannelCallback for ChannelEvents {
    async fn close(&mut self, _: &Channel, close: CloseChannel) -> Result<(), amqprs::error::Error> {
        let reason = (close.reply_code(), close.reply_text().clone());
        self.0.update(|e| e.channel_closed = Some(reason));
        Ok(())
    }

    async fn cancel(&mut self, _: &Channel, _: Cancel) -> Result<(), amqprs::error::Error> {
        Ok(())
    }

    async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }

    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        let mut e = self.0.lock();
        e.confirms.confirm(ack.delivery_tag(), ack.mutiple());
        if e.confirms.complete() {
            drop(e);
            self.0.wake.notify_one();
        }
    }

    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        self.0.update(|e| {
            e.nacked.get_or_insert(nack.delivery_tag());
        });
    }

    async fn publish_return(&mut self, _: &Channel, ret: Return, properties: BasicProperties, _: Vec<u8>) {
        let returned = Returned {
            code: ret.reply_code(),
            text: ret.reply_text().clone(),
            routing_key: ret.routing_key().clone(),
            message_id: properties.message_id().cloned(),
        };
        self.0.update(|e| {
            e.returned.get_or_insert(returned);
        });
    }
}

/// Feeds connection events into [`Shared`].
struct ConnectionEvents(Arc<Shared>);

#[async_trait::async_trait]
impl ConnectionCallback for ConnectionEvents {
    async fn close(&mut self, _: &Connection, close: Close) -> Result<(), amqprs::error::Error> {
        let reason = (close.reply_code(), close.reply_text().clone());
        self.0.update(|e| e.connection_closed = Some(reason));
        Ok(())
    }

    async fn blocked(&mut self, _: &Connection, reason: String) {
        self.0.update(|e| e.blocked = Some(reason));
    }

    async fn unblocked(&mut self, _: &Connection) {
        self.0.update(|e| e.blocked = None);
    }

    async fn secret_updated(&mut self, _: &Connection) {}
}

/// An open connection with its confirm-mode channel.
struct Link {
    connection: Connection,
    channel: Channel,
    shared: Arc<Shared>,
    /// Messages published on the channel so far: the last delivery tag.
    published: u64,
}

impl Link {
    fn is_open(&self) -> bool {
        self.connection.is_open() && self.channel.is_open()
    }
}

/// Publishes messages to an AMQP exchange.
pub struct AmqpSink {
    name: String,
    opts: Box<AmqpOptions>,
    link: Option<Box<Link>>,
    /// A batch was started and not finished (its future dropped): the
    /// link may hold part of it, so it is not used again.
    in_flight: bool,
    limits: SinkLimits,
}

impl fmt::Debug for AmqpSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpSink")
            .field("name", &self.name)
            .field("opts", &self.opts)
            .field("connected", &self.link.is_some())
            .field("limits", &self.limits)
            .finish()
    }
}

impl Drop for AmqpSink {
    fn drop(&mut self) {
        // amqprs closes a dropped connection and channel from a spawned
        // task, which panics outside a runtime: `rowhook run` may drop its
        // sinks after its runtime is gone.
        if self.link.is_some()
            && tokio::runtime::Handle::try_current().is_err()
            && let Ok(rt) = tokio::runtime::Builder::new_current_thread().build()
        {
            let _inside = rt.enter();
            self.link = None;
        }
    }
}

impl AmqpSink {
    /// Tries to connect once: a broker that cannot be reached now is not an
    /// error (the first write reports it as unavailable), but refused
    /// credentials, an unknown vhost or a missing exchange are.
    pub async fn open(name: &str, opts: AmqpOptions) -> Result<AmqpSink, SinkError> {
        let limits = SinkLimits {
            max_payload: Some(opts.max_message_size),
            max_key: opts.routing_key.max_key(),
        };
        let mut sink = AmqpSink {
            name: name.to_owned(),
            opts: Box::new(opts),
            link: None,
            in_flight: false,
            limits,
        };
        match connect(&sink.name, &sink.opts).await {
            Ok(link) => sink.link = Some(link),
            Err(e @ SinkError::Permanent { .. }) => return Err(e),
            Err(e) => tracing::info!(sink = %name, "not connected yet: {e}"),
        }
        Ok(sink)
    }

    /// Whether the sink holds an open connection.
    pub fn is_connected(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.is_open())
    }

    /// The open link, or a new one.
    async fn link(&mut self) -> Result<&mut Link, SinkError> {
        if !self.is_connected() {
            self.link = None;
            self.link = Some(connect(&self.name, &self.opts).await?);
        }
        Ok(self.link.as_mut().expect("just connected"))
    }

    /// Refuses a batch holding a message the broker or AMQP cannot carry,
    /// before anything is published.
    fn check_batch(&self, batch: &[Message]) -> Result<(), SinkError> {
        let max = self.opts.max_message_size;
        for m in batch {
            if m.payload.len() > max {
                return Err(SinkError::permanent(
                    &self.name,
                    format!(
                        "message `{}` has a {}-byte payload, more than max_message_size ({max} bytes); emit less, or raise max_message_size in the broker's config (rabbitmq.conf) and in this sink",
                        m.id,
                        m.payload.len()
                    ),
                ));
            }
            match self.opts.routing_key.render(m.key.as_deref()) {
                Ok(_) => {}
                Err(KeyError::NotUtf8) => {
                    return Err(SinkError::permanent(
                        &self.name,
                        format!(
                            "message `{}` has a key that is not UTF-8, and routing key `{}` puts it in an AMQP routing key; emit a UTF-8 key",
                            m.id, self.opts.routing_key
                        ),
                    ));
                }
                Err(KeyError::TooLong) => {
                    return Err(SinkError::permanent(
                        &self.name,
                        format!(
                            "message `{}` has a key too long for routing key `{}` (255 bytes at most); emit a shorter key",
                            m.id, self.opts.routing_key
                        ),
                    ));
                }
            }
            if m.id.len() + 11 > SHORT_STR_MAX {
                return Err(SinkError::permanent(
                    &self.name,
                    format!("message `{}` has an id too long for the message-id property", m.id),
                ));
            }
        }
        Ok(())
    }

    async fn publish(&mut self, batch: &[Message]) -> Result<(), SinkError> {
        let deadline = Instant::now() + self.opts.confirm_timeout;
        let name = self.name.clone();
        let opts = self.opts.clone();
        let link = self.link().await?;
        {
            let mut e = link.shared.lock();
            if let Some(reason) = &e.blocked {
                return Err(SinkError::unavailable(
                    &name,
                    format!(
                        "{} blocks publishers ({reason}): a memory or disk alarm; it lifts once the broker has room",
                        opts.url
                    ),
                ));
            }
            e.confirms.begin(link.published + 1, batch.len());
        }
        let mut properties = BasicProperties::default();
        properties.with_delivery_mode(if opts.persistent { 2 } else { 1 });
        if let Some(ct) = &opts.content_type {
            properties.with_content_type(ct);
        }
        let sent = tokio::time::timeout_at(deadline, async {
            for (i, m) in batch.iter().enumerate() {
                if i % CHECK_EVERY == CHECK_EVERY - 1 {
                    failure(&name, &opts, &link.shared, batch)?;
                }
                let routing_key = opts.routing_key.render(m.key.as_deref()).expect("checked");
                let mut props = properties.clone();
                props.with_message_id(&message_id(m));
                let args = BasicPublishArguments::new(&opts.exchange, &routing_key)
                    .mandatory(opts.mandatory)
                    .finish();
                link.channel
                    .basic_publish(props, m.payload.clone(), args)
                    .await
                    .map_err(|e| {
                        failure(&name, &opts, &link.shared, batch).err().unwrap_or_else(|| {
                            SinkError::unavailable(&name, format!("publishing message `{}` to {}: {e}", m.id, opts.url))
                        })
                    })?;
                link.published += 1;
            }
            Ok(())
        })
        .await;
        match sent {
            Ok(r) => r?,
            Err(_) => return Err(confirm_timeout(&name, &opts, "take the batch")),
        }
        loop {
            failure(&name, &opts, &link.shared, batch)?;
            if link.shared.lock().confirms.complete() {
                return Ok(());
            }
            if !link.is_open() {
                return Err(SinkError::unavailable(
                    &name,
                    format!("the connection to {} closed before the batch was confirmed", opts.url),
                ));
            }
            if Instant::now() >= deadline {
                return Err(confirm_timeout(&name, &opts, "confirm the batch"));
            }
            let _ = tokio::time::timeout(POLL.min(deadline - Instant::now()), link.shared.wake.notified()).await;
        }
    }
}

fn confirm_timeout(name: &str, opts: &AmqpOptions, what: &str) -> SinkError {
    SinkError::unavailable(
        name,
        format!(
            "{} did not {what} within confirm_timeout_ms ({} ms): the broker is slow, or blocks publishers on a memory or disk alarm",
            opts.url,
            opts.confirm_timeout.as_millis()
        ),
    )
}

/// The error of a batch the broker refused, if it did: a closed channel or
/// connection, a nack, a returned message.
fn failure(name: &str, opts: &AmqpOptions, shared: &Shared, batch: &[Message]) -> Result<(), SinkError> {
    let e = shared.lock();
    if let Some((code, text)) = &e.channel_closed {
        return Err(closed_error(name, opts, "closed the channel", *code, text));
    }
    if let Some((code, text)) = &e.connection_closed {
        return Err(closed_error(name, opts, "closed the connection", *code, text));
    }
    if let Some(r) = &e.returned {
        let which = r.message_id.as_deref().unwrap_or("?");
        let fix = if opts.exchange.is_empty() {
            format!(
                "no queue is named `{}`: declare it (rabbitmqadmin declare queue name={} durable=true)",
                r.routing_key, r.routing_key
            )
        } else {
            format!(
                "bind a queue to exchange `{}` for it (rabbitmqadmin declare binding source={} destination=QUEUE routing_key=...)",
                opts.exchange, opts.exchange
            )
        };
        return Err(SinkError::unavailable(
            name,
            format!(
                "{} returned message `{which}` as unroutable ({} {}): no queue is bound for routing key `{}`; {fix}",
                opts.url, r.code, r.text, r.routing_key
            ),
        ));
    }
    if let Some(tag) = e.nacked {
        let which = e.confirms.index(tag).map_or("?".into(), |i| batch[i].id.clone());
        return Err(SinkError::unavailable(
            name,
            format!(
                "{} refused message `{which}` (basic.nack): a queue it routes to is full (x-max-length with overflow = reject-publish) or failed; retried once the queue has room",
                opts.url
            ),
        ));
    }
    Ok(())
}

/// Classifies the broker's closing of the channel or connection (AMQP
/// reply codes).
fn closed_error(name: &str, opts: &AmqpOptions, what: &str, code: u16, text: &str) -> SinkError {
    let url = &opts.url;
    let head = format!("{url} {what}: {code} {text}");
    match code {
        404 => SinkError::permanent(
            name,
            format!(
                "{head}; declare the exchange (rabbitmqadmin -V '{}' declare exchange name={} type=direct durable=true, or in the broker's definitions)",
                url.vhost, opts.exchange
            ),
        ),
        403 => SinkError::permanent(
            name,
            format!(
                "{head}; give user `{}` write permission on the exchange (rabbitmqctl set_permissions -p '{}' {} ...) or fix url",
                url.user, url.vhost, url.user
            ),
        ),
        530 => SinkError::permanent(
            name,
            format!(
                "{head}; create the vhost or let user `{}` use it (rabbitmqctl add_vhost / set_permissions -p '{}' {} ...), or fix url",
                url.user, url.vhost, url.user
            ),
        ),
        406 if text.contains("max size") => SinkError::permanent(
            name,
            format!("{head}; emit less, or raise max_message_size in the broker's config and in this sink"),
        ),
        406 => SinkError::permanent(name, format!("{head}; fix the sink's exchange and routing_key")),
        _ => SinkError::unavailable(name, head),
    }
}

impl Sink for AmqpSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write_batch(&mut self, batch: &[Message]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.in_flight {
            // The last batch's future was dropped midway.
            self.link = None;
        }
        self.check_batch(batch)?;
        self.in_flight = true;
        let result = self.publish(batch).await;
        self.in_flight = false;
        if result.is_err() {
            // Whatever this connection still holds must not reach the
            // broker after the retry's messages.
            self.link = None;
        }
        result
    }

    async fn health(&mut self) -> Result<(), SinkError> {
        let name = self.name.clone();
        let link = self.link().await?;
        if let Some(reason) = &link.shared.lock().blocked {
            return Err(SinkError::unavailable(
                &name,
                format!("the broker blocks publishers ({reason})"),
            ));
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        // Confirmed batches are in their queues already.
        if let Some(link) = self.link.take() {
            let Link {
                connection, channel, ..
            } = *link;
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let _ = channel.close().await;
                let _ = connection.close().await;
            })
            .await;
        }
        Ok(())
    }

    fn limits(&self) -> SinkLimits {
        self.limits
    }
}

/// Opens a connection and a confirm-mode channel, and checks that the
/// exchange exists.
async fn connect(name: &str, opts: &AmqpOptions) -> Result<Box<Link>, SinkError> {
    let url = &opts.url;
    // amqprs joins host and port with a `:`: an IPv6 address needs its brackets.
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    let mut args = OpenConnectionArguments::new(&host, url.port, &url.user, &url.password.0);
    args.virtual_host(&url.vhost)
        .heartbeat(HEARTBEAT_SECS)
        .connection_name(&format!("rowhook sink {name}"));
    if let Some(tls) = &opts.tls {
        let connector = client_config(tls, "broker")
            .map(|c| tokio_rustls::TlsConnector::from(Arc::new(c)))
            .map_err(|e| SinkError::permanent(name, e))?;
        args.tls_adaptor(TlsAdaptor::new(connector, url.host.clone()));
    }
    let args = args.finish();
    let connection = match tokio::time::timeout(opts.confirm_timeout, Connection::open(&args)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(open_error(name, opts, &e).await),
        Err(_) => {
            return Err(SinkError::unavailable(
                name,
                format!(
                    "cannot connect to {url}: no answer within confirm_timeout_ms ({} ms)",
                    opts.confirm_timeout.as_millis()
                ),
            ));
        }
    };
    let shared = Arc::new(Shared::default());
    let setup = async {
        connection.register_callback(ConnectionEvents(shared.clone())).await?;
        let channel = connection.open_channel(None).await?;
        channel.register_callback(ChannelEvents(shared.clone())).await?;
        channel.confirm_select(ConfirmSelectArguments::default()).await?;
        if !opts.exchange.is_empty() {
            let mut declare = ExchangeDeclareArguments::new(&opts.exchange, "direct");
            declare.passive = true;
            channel.exchange_declare(declare).await?;
        }
        Ok::<_, amqprs::error::Error>(channel)
    };
    let channel = match tokio::time::timeout(opts.confirm_timeout, setup).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Err(match failure(name, opts, &shared, &[]) {
                Err(err) => err,
                Ok(()) => SinkError::unavailable(name, format!("opening a channel on {url}: {e}")),
            });
        }
        Err(_) => return Err(confirm_timeout(name, opts, "open a channel")),
    };
    Ok(Box::new(Link {
        connection,
        channel,
        shared,
        published: 0,
    }))
}

/// Classifies a failed `Connection::open`.
async fn open_error(name: &str, opts: &AmqpOptions, e: &amqprs::error::Error) -> SinkError {
    let url = &opts.url;
    let text = e.to_string();
    if let amqprs::error::Error::ConnectionOpenError(_) = e
        && let Some(code) = [530u16, 403]
            .into_iter()
            .find(|c| text.contains(&format!("reply_code: {c}")))
    {
        let reply = text
            .split("reply_text: ShortStr(")
            .nth(1)
            .and_then(|t| t.split('"').nth(1))
            .unwrap_or("")
            .to_owned();
        return closed_error(name, opts, "refused the connection", code, &reply);
    }
    if text.contains("tls") || text.contains("certificate") {
        return SinkError::permanent(
            name,
            format!("TLS with {url} failed ({text}); check tls_ca_file, tls_cert_file and tls_key_file"),
        );
    }
    // RabbitMQ drops the connection without a word when authentication
    // fails, unless the client says it can take the reason: when the
    // broker dropped it, ask again the way that gets the reason.
    let dropped = text.contains("reset") || text.contains("shutdown");
    if opts.tls.is_none()
        && dropped
        && let Some((code, reply)) = handshake_refusal(opts).await
    {
        return SinkError::permanent(
            name,
            format!(
                "{url} refused the credentials ({code} {reply}); check the user and password in url (the password as ${{ENV}}) and the broker's users"
            ),
        );
    }
    SinkError::unavailable(name, format!("cannot connect to {url}: {text}"))
}

/// Runs the start of the AMQP handshake by hand, announcing
/// `authentication_failure_close`, so the broker says why it refuses the
/// credentials: the reply code and text of its `connection.close`, if it
/// sent one before tuning. `None` when the credentials pass or the broker
/// cannot be reached.
async fn handshake_refusal(opts: &AmqpOptions) -> Option<(u16, String)> {
    let talk = async {
        let mut s = tokio::net::TcpStream::connect(opts.url.address()).await.ok()?;
        s.write_all(b"AMQP\x00\x00\x09\x01").await.ok()?;
        let (class, method, _) = read_method(&mut s).await?;
        if (class, method) != (10, 10) {
            return None;
        }
        s.write_all(&start_ok_frame(&opts.url.user, &opts.url.password.0))
            .await
            .ok()?;
        let (class, method, args) = read_method(&mut s).await?;
        if (class, method) != (10, 50) || args.len() < 3 {
            return None;
        }
        let code = u16::from_be_bytes([args[0], args[1]]);
        let len = usize::from(args[2]);
        let text = String::from_utf8_lossy(args.get(3..3 + len)?).into_owned();
        Some((code, text))
    };
    tokio::time::timeout(PROBE_TIMEOUT, talk).await.ok().flatten()
}

/// Reads one method frame: its class, method and arguments.
async fn read_method(s: &mut tokio::net::TcpStream) -> Option<(u16, u16, Vec<u8>)> {
    let mut head = [0u8; 7];
    s.read_exact(&mut head).await.ok()?;
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
    if head[0] != 1 || !(4..=1 << 20).contains(&size) {
        return None;
    }
    let mut body = vec![0u8; size + 1];
    s.read_exact(&mut body).await.ok()?;
    let class = u16::from_be_bytes([body[0], body[1]]);
    let method = u16::from_be_bytes([body[2], body[3]]);
    body.truncate(size);
    Some((class, method, body.split_off(4)))
}

/// `connection.start-ok` with PLAIN credentials and the capability that
/// makes the broker say why it refuses them.
fn start_ok_frame(user: &str, password: &str) -> Vec<u8> {
    fn short(out: &mut Vec<u8>, s: &str) {
        out.push(u8::try_from(s.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&s.as_bytes()[..s.len().min(255)]);
    }
    fn long(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(b);
    }
    let mut caps = Vec::new();
    short(&mut caps, "authentication_failure_close");
    caps.extend_from_slice(b"t\x01");
    let mut props = Vec::new();
    short(&mut props, "capabilities");
    props.push(b'F');
    long(&mut props, &caps);
    let mut args = vec![0, 10, 0, 11];
    long(&mut args, &props);
    short(&mut args, "PLAIN");
    let mut response = vec![0u8];
    response.extend_from_slice(user.as_bytes());
    response.push(0);
    response.extend_from_slice(password.as_bytes());
    long(&mut args, &response);
    short(&mut args, "en_US");
    let mut frame = vec![1, 0, 0];
    long(&mut frame, &args);
    frame.push(0xCE);
    frame
}

/// `rowhook check`: connects and authenticates, checks that the exchange
/// exists (or, on the default exchange, the queue), and reports the
/// broker's limits. Changes nothing.
fn probe(name: &str, opts: &AmqpOptions) -> CheckLine {
    let head = format!("sink `{name}` (amqp)");
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

async fn probe_broker(name: &str, opts: &AmqpOptions) -> Result<String, String> {
    let link = connect(name, opts).await.map_err(|e| match e {
        SinkError::Unavailable { reason, .. } => format!("{reason}; start the broker or fix url"),
        SinkError::Permanent { reason, .. } => reason,
    })?;
    let server = link.connection.server_properties();
    let broker = format!(
        "{} ({} {}), frame_max {}, max_message_size {} (configured: AMQP does not announce it)",
        opts.url,
        server.product(),
        server.version(),
        link.connection.frame_max(),
        opts.max_message_size
    );
    let target = if opts.exchange.is_empty() {
        match opts.routing_key.parts {
            Some(_) => format!(
                "default exchange, routing key `{}` names a queue per key (not checked)",
                opts.routing_key
            ),
            None => {
                let queue = opts.routing_key.to_string();
                let mut declare = QueueDeclareArguments::new(&queue);
                declare.passive(true);
                match link.channel.queue_declare(declare.finish()).await {
                    Ok(Some((_, messages, consumers))) => {
                        format!("default exchange into queue `{queue}` ({messages} messages, {consumers} consumers)")
                    }
                    Ok(None) => format!("default exchange into queue `{queue}`"),
                    Err(_) => {
                        return Err(format!(
                            "no queue named `{queue}` in vhost `{}`: the default exchange routes by queue name; declare it (rabbitmqadmin -V '{}' declare queue name={queue} durable=true) or fix routing_key",
                            opts.url.vhost, opts.url.vhost
                        ));
                    }
                }
            }
        }
    } else {
        format!(
            "exchange `{}` exists, routing key `{}` (bindings are not checked: AMQP cannot list them; an unroutable message is returned and its batch retried)",
            opts.exchange, opts.routing_key
        )
    };
    let mut sink = AmqpSink {
        name: name.to_owned(),
        opts: Box::new(opts.clone()),
        link: Some(link),
        in_flight: false,
        limits: SinkLimits::default(),
    };
    let _ = sink.close().await;
    Ok(format!("{broker}, {target}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_count_single_and_multiple() {
        let mut c = Confirms::default();
        c.begin(11, 5);
        assert!(!c.complete());
        c.confirm(13, false);
        assert_eq!((c.low, c.open), (0, 4));
        c.confirm(12, true);
        assert_eq!((c.low, c.open), (3, 2));
        // Stale and foreign tags change nothing.
        c.confirm(3, true);
        c.confirm(99, false);
        assert_eq!(c.open, 2);
        c.confirm(15, true);
        assert!(c.complete());
        assert_eq!(c.index(12), Some(1));
        assert_eq!(c.index(16), None);
        c.begin(16, 0);
        assert!(c.complete());
    }

    #[test]
    fn routing_keys_take_the_key() {
        let t = RoutingKeyTemplate::parse("orders.{key}").unwrap();
        assert_eq!(t.render(Some(b"a b/c")).unwrap(), "orders.a b/c");
        assert_eq!(t.render(None).unwrap(), "orders.");
        assert_eq!(t.max_key(), Some(248));
        assert_eq!(t.render(Some(&[0xff])), Err(KeyError::NotUtf8));
        assert_eq!(t.render(Some(&[b'k'; 249])), Err(KeyError::TooLong));
        let t = RoutingKeyTemplate::parse("orders").unwrap();
        assert_eq!(t.render(Some(&[0xff])).unwrap(), "orders");
        assert_eq!(t.max_key(), None);
    }

    #[test]
    fn message_ids_hold_the_index() {
        let mut m = crate::sink::testing::msg("0-1-7:2:3", "x");
        m.index = 1;
        assert_eq!(message_id(&m), "0-1-7:2:3:1");
    }

    #[test]
    fn start_ok_is_one_method_frame() {
        let f = start_ok_frame("u", "p");
        assert_eq!(&f[..3], [1, 0, 0]);
        let size = u32::from_be_bytes([f[3], f[4], f[5], f[6]]) as usize;
        assert_eq!(f.len(), 7 + size + 1);
        assert_eq!(f[f.len() - 1], 0xCE);
        assert_eq!(&f[7..11], [0, 10, 0, 11]);
    }
}
