//! `kind = "http"`: webhooks. Each message, or each batch as JSON lines, is
//! sent to a URL in a `POST` (or `PUT`), signed with HMAC-SHA256 when the
//! sink has a secret.
//!
//! - **Ack = a 2xx.** `write_batch` returns `Ok` once the receiver has
//!   answered every request of the batch with a 2xx: the checkpoint never
//!   passes a message the receiver did not take.
//! - **One request at a time, in order.** One HTTP/1.1 connection (kept
//!   alive), one request in flight: the next request of the batch is sent
//!   only once the previous one was answered, so a receiver sees messages
//!   in binlog order. No pool and no concurrency: two requests in flight
//!   could be taken in either order, and a retry of the first would land
//!   after the second.
//! - **Bodies.** `mode = "message"`: the payload as it is. `mode =
//!   "batch"`: a JSON line per message (see [`body::push_line`]), a batch
//!   split into requests of at most `max_batch_messages` lines and
//!   `max_body_bytes` bytes, sent in order.
//! - **Dedupe.** `Idempotency-Key` is the message's id, `<change
//!   id>:<index>`; a batch request's is `<first id>..<last id>`, and each
//!   of its lines carries its message's id. The same on every re-delivery.
//! - **Signature.** With `hmac_secret`, `X-Rowhook-Timestamp` (Unix
//!   seconds) and `X-Rowhook-Signature: sha256=<hex>`, the HMAC-SHA256 of
//!   `<timestamp>.<body>`: a receiver checks the sender and refuses old
//!   timestamps (replays).
//! - **Unavailable or permanent.** No connection, a broken one, a timeout,
//!   408, 429 and 5xx are [`SinkError::Unavailable`]: the pipeline retries
//!   the batch. A redirect (not followed), 413 and the other 4xx are
//!   [`SinkError::Permanent`], with the status, the start of the answer and
//!   the fix; a certificate the roots do not trust too.
//! - **Retry-After.** A 429 or 5xx with `Retry-After` (seconds or an
//!   HTTP-date) sets a time before which nothing is sent: the next write
//!   waits until then, at most `retry_after_max_ms`; if the time is
//!   further off, it fails as unavailable without sending, and `health`
//!   says so too. The pipeline's backoff is shorter than most
//!   `Retry-After`s, so waiting in the sink is what honours it; the wait
//!   is a timer, and dropping the write ends it.
//! - **Limits at emit.** A server does not announce its largest body, so
//!   `max_body_bytes` says it: the largest payload (in batch mode less room
//!   for the envelope and base64, see [`body::max_batch_payload`]) and
//!   [`body::MAX_KEY`] are the sink's [`SinkLimits`], and a larger `emit`
//!   is refused as `too-large`.
//! - **Cancel-safe, no queue.** The sink holds the batch it is given and
//!   one connection. While a request is in flight the connection is out of
//!   the sink: a write dropped then drops it with the request, and the next
//!   write connects anew and sends the whole batch again.

mod body;
mod config;
mod conn;

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

pub use self::body::{ENVELOPE_ROOM, MAX_KEY, max_batch_payload};
pub use self::config::{DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY, DEFAULT_TIMEOUT_MS, RawHttpSink};
pub use self::conn::Endpoint;
use self::conn::{Conn, ConnectError, Reply, SendError};
use super::kind::SinkKind;
use super::{Message, Sink, SinkError, SinkLimits};
use crate::probe::CheckLine;
use crate::problem::SinkContext;
pub use crate::sink::tls::{Secret, TlsFiles};

/// The header that names a request for the receiver's deduplication.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The message's emit key, in message mode, percent-encoded.
const KEY: &str = "x-rowhook-key";
/// Unix seconds at signing.
const TIMESTAMP: &str = "x-rowhook-timestamp";
/// `sha256=<hex>`.
const SIGNATURE: &str = "x-rowhook-signature";
/// `Content-Type` of a batch.
const NDJSON: &str = "application/x-ndjson";
/// How long `health` may take to connect.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `rowhook check` waits for the receiver.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `Retry-After` taken as it is: about a year.
const LONGEST_WAIT: Duration = Duration::from_secs(366 * 24 * 3600);

/// `kind = "http"` in the registry.
#[derive(Debug)]
pub struct HttpKind;

impl SinkKind for HttpKind {
    const NAME: &'static str = "http";
    // Boxed: the keys are many, and the registry's enums hold every kind.
    type Raw = Box<RawHttpSink>;
    type Options = HttpOptions;
    type Sink = HttpSink;

    fn resolve(raw: Box<RawHttpSink>, cx: &mut SinkContext<'_>) -> Option<HttpOptions> {
        config::resolve(*raw, cx)
    }

    async fn open(name: &str, options: &HttpOptions) -> Result<HttpSink, SinkError> {
        HttpSink::open(name, options.clone())
    }

    fn probe(name: &str, options: &HttpOptions) -> CheckLine {
        probe(name, options)
    }

    fn one_line_per_message(_: &HttpOptions) -> bool {
        false
    }
}

/// Settings of an http sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Where requests go.
    pub url: Endpoint,
    /// `POST` or `PUT`.
    pub method: HttpMethod,
    /// A request per message, or per batch.
    pub mode: HttpMode,
    /// Headers sent with every request, in order; values are secret.
    pub headers: Vec<(String, Secret)>,
    /// The HMAC-SHA256 key that signs each request.
    pub hmac_secret: Option<Secret>,
    /// Connecting, or one request's response, at most.
    pub timeout: Duration,
    /// The largest request body.
    pub max_body_bytes: usize,
    /// The longest one write waits for a `Retry-After`.
    pub retry_after_max: Duration,
    /// The PEM files of `https://`.
    pub tls: TlsFiles,
}

/// The request method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
}

impl HttpMethod {
    fn method(self) -> Method {
        match self {
            HttpMethod::Post => Method::POST,
            HttpMethod::Put => Method::PUT,
        }
    }
}

/// What one request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpMode {
    /// One message; the body is its payload.
    Message {
        /// The `Content-Type` of every request.
        content_type: String,
    },
    /// A JSON line per message.
    Batch {
        /// Lines per request at most.
        max_messages: usize,
    },
}

/// Sends messages to a URL (see the module docs).
pub struct HttpSink {
    name: String,
    opts: Box<HttpOptions>,
    /// The configured headers, built once.
    headers: HeaderMap,
    /// `https://`: the TLS client.
    tls: Option<TlsConnector>,
    /// The signing key.
    hmac: Option<ring::hmac::Key>,
    /// The connection between requests; taken out while one is in flight.
    conn: Option<Conn>,
    /// A `Retry-After` not yet over: nothing is sent before it.
    not_before: Option<Instant>,
}

impl fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSink")
            .field("name", &self.name)
            .field("opts", &self.opts)
            .field("connected", &self.conn.is_some())
            .field("not_before", &self.not_before)
            .finish()
    }
}

impl HttpSink {
    /// Prepares the sink (the TLS client, read from the configured files
    /// or the system's roots); connects at the first write or health
    /// check, so a receiver that is down now is not an error here.
    pub fn open(name: &str, opts: HttpOptions) -> Result<HttpSink, SinkError> {
        let tls = if opts.url.tls {
            Some(conn::tls_connector(&opts.tls).map_err(|e| SinkError::permanent(name, e))?)
        } else {
            None
        };
        Ok(HttpSink {
            name: name.to_owned(),
            headers: request_headers(&opts),
            hmac: opts
                .hmac_secret
                .as_ref()
                .map(|s| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, s.expose().as_bytes())),
            opts: Box::new(opts),
            tls,
            conn: None,
            not_before: None,
        })
    }

    /// What a handler may emit to a sink with these options.
    pub fn limits_of(opts: &HttpOptions) -> SinkLimits {
        SinkLimits {
            max_payload: Some(match opts.mode {
                HttpMode::Message { .. } => opts.max_body_bytes,
                HttpMode::Batch { .. } => body::max_batch_payload(opts.max_body_bytes),
            }),
            max_key: Some(body::MAX_KEY),
        }
    }

    /// The live connection, or a new one.
    async fn take_connection(&mut self, timeout: Duration) -> Result<Conn, SinkError> {
        match self.conn.take() {
            Some(c) if !c.is_closed() => Ok(c),
            _ => Conn::open(&self.opts.url, self.tls.as_ref(), timeout)
                .await
                .map_err(|e| self.connect_error(e)),
        }
    }

    fn connect_error(&self, e: ConnectError) -> SinkError {
        match e {
            ConnectError::Unreachable(what) => SinkError::unavailable(&self.name, what),
            ConnectError::Tls(what) => SinkError::permanent(
                &self.name,
                format!(
                    "{what}; set tls_ca_file to the CA that signs the server's certificate, or check the host name in url"
                ),
            ),
        }
    }

    /// Refuses the batch, before sending anything, if a message is larger
    /// than the sink takes (the limits may not have been checked at emit).
    fn check(&self, batch: &[Message]) -> Result<(), SinkError> {
        let limits = Self::limits_of(&self.opts);
        let max_payload = limits.max_payload.unwrap_or(usize::MAX);
        for m in batch {
            if m.payload.len() > max_payload {
                let room = match self.opts.mode {
                    HttpMode::Message { .. } => String::new(),
                    HttpMode::Batch { .. } => {
                        format!(" ({max_payload} bytes once the JSON-lines envelope and base64 are allowed for)")
                    }
                };
                return Err(SinkError::permanent(
                    &self.name,
                    format!(
                        "message `{}` has a {}-byte payload, more than max_body_bytes ({} bytes) takes{room}; emit less, or raise max_body_bytes if the receiver takes larger bodies",
                        m.id,
                        m.payload.len(),
                        self.opts.max_body_bytes
                    ),
                ));
            }
            if m.key.as_ref().is_some_and(|k| k.len() > body::MAX_KEY) {
                return Err(SinkError::permanent(
                    &self.name,
                    format!(
                        "message `{}` has a key longer than {} bytes; emit a shorter key",
                        m.id,
                        body::MAX_KEY
                    ),
                ));
            }
            if m.id.len() > body::MAX_ID {
                return Err(SinkError::permanent(
                    &self.name,
                    format!("a message's change id is longer than {} bytes", body::MAX_ID),
                ));
            }
        }
        Ok(())
    }

    /// Waits out a `Retry-After`, at most `retry_after_max`.
    async fn wait_retry_after(&mut self) -> Result<(), SinkError> {
        let Some(at) = self.not_before else { return Ok(()) };
        let now = Instant::now();
        if at > now {
            tokio::time::sleep((at - now).min(self.opts.retry_after_max)).await;
            let now = Instant::now();
            if at > now {
                return Err(self.waiting(at - now));
            }
        }
        self.not_before = None;
        Ok(())
    }

    fn waiting(&self, left: Duration) -> SinkError {
        SinkError::unavailable(
            &self.name,
            format!(
                "{} asked to wait (Retry-After) {} s more before the next request, longer than retry_after_max_ms ({} ms)",
                self.opts.url.origin(),
                left.as_secs_f64().ceil(),
                self.opts.retry_after_max.as_millis()
            ),
        )
    }

    /// Sends one request carrying `batch` (its messages, or the one
    /// message of message mode) as `body`.
    async fn send(&mut self, body: Bytes, batch: &[Message]) -> Result<(), SinkError> {
        let mut headers = self.headers.clone();
        headers.insert(
            HeaderName::from_static(IDEMPOTENCY_KEY),
            HeaderValue::from_str(&body::idempotency_key(batch)).expect("header-safe"),
        );
        if let HttpMode::Message { .. } = self.opts.mode
            && let Some(key) = &batch[0].key
        {
            headers.insert(
                HeaderName::from_static(KEY),
                HeaderValue::from_str(&body::header_safe(key)).expect("header-safe"),
            );
        }
        if let Some(key) = &self.hmac {
            let ts = body::unix_now().to_string();
            let signature = body::sign(key, &ts, &body);
            headers.insert(
                HeaderName::from_static(TIMESTAMP),
                HeaderValue::from_str(&ts).expect("digits"),
            );
            headers.insert(
                HeaderName::from_static(SIGNATURE),
                HeaderValue::from_str(&signature).expect("hex"),
            );
        }
        let len = body.len();
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = self.opts.method.method();
        *request.uri_mut() = self.opts.url.target.parse().expect("checked by resolve");
        *request.headers_mut() = headers;

        let mut conn = self.take_connection(self.opts.timeout).await?;
        match conn.send(request, self.opts.timeout).await {
            Ok((reply, reusable)) => {
                if reusable {
                    self.conn = Some(conn);
                }
                if reply.status.is_success() {
                    Ok(())
                } else {
                    Err(self.refusal(reply, len, batch))
                }
            }
            Err(SendError::Broken(what)) => Err(SinkError::unavailable(
                &self.name,
                format!("{} to {}: {what}", self.opts.method.method(), self.opts.url.origin()),
            )),
            Err(SendError::NotHttp(what)) => Err(SinkError::permanent(
                &self.name,
                format!(
                    "the answer of {} is not HTTP/1.1 ({what}); check the scheme (http:// or https://) and the port of url",
                    self.opts.url.origin()
                ),
            )),
        }
    }

    /// The error for a reply other than 2xx (see the module docs).
    fn refusal(&mut self, reply: Reply, body_len: usize, batch: &[Message]) -> SinkError {
        let status = reply.status;
        let messages = match batch {
            [m] => format!("message `{}`", m.id),
            [first, .., last] => format!("{} messages, `{}` to `{}`", batch.len(), first.id, last.id),
            [] => "nothing".into(),
        };
        let said = body::body_start(&reply.body);
        let said = if said.is_empty() {
            String::new()
        } else {
            format!(" ({said})")
        };
        let what = format!(
            "{} of {messages} to {} answered {status}{said}",
            self.opts.method.method(),
            self.opts.url.origin()
        );
        let permanent = |fix: &str| SinkError::permanent(&self.name, format!("{what}; {fix}"));
        match status.as_u16() {
            408 | 429 | 500..=599 => {
                let wait = reply
                    .retry_after
                    .as_deref()
                    .and_then(|v| body::retry_after(v, SystemTime::now()));
                let mut reason = what;
                if let Some(wait) = wait {
                    let wait = wait.min(LONGEST_WAIT);
                    self.not_before = Some(Instant::now() + wait);
                    reason.push_str(&format!("; it asked to retry after {:.0} s", wait.as_secs_f64().ceil()));
                }
                SinkError::unavailable(&self.name, reason)
            }
            300..=399 => {
                let to = reply
                    .location
                    .map(|l| format!(" to {}", body::body_start(l.as_bytes())))
                    .unwrap_or_default();
                permanent(&format!(
                    "it redirects{to}, and the sink does not follow redirects: set url to where it points"
                ))
            }
            413 => permanent(&format!(
                "the body was {body_len} bytes: set max_body_bytes (now {}) to what the receiver takes, or raise its limit",
                self.opts.max_body_bytes
            )),
            401 | 403 => permanent(
                "check the credentials the sink sends (headers, e.g. Authorization; hmac_secret) and what the receiver expects",
            ),
            404 | 405 | 410 => permanent("check the path of url, and method"),
            _ => permanent("the receiver refuses them: see its answer, and fix the handler or the receiver"),
        }
    }
}

/// The headers every request of `opts` carries: the configured ones (values
/// marked sensitive), `Host`, `User-Agent` and `Content-Type`.
fn request_headers(opts: &HttpOptions) -> HeaderMap {
    let mut h = conn::header_map(&opts.headers);
    h.insert(
        HOST,
        HeaderValue::from_str(&opts.url.authority).expect("a URL's authority"),
    );
    h.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("rowhook/", env!("CARGO_PKG_VERSION"))),
    );
    let content_type = match &opts.mode {
        HttpMode::Message { content_type } => HeaderValue::from_str(content_type).expect("checked by resolve"),
        HttpMode::Batch { .. } => HeaderValue::from_static(NDJSON),
    };
    h.insert(CONTENT_TYPE, content_type);
    h
}

impl Sink for HttpSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write_batch(&mut self, batch: &[Message]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.check(batch)?;
        self.wait_retry_after().await?;
        match self.opts.mode {
            HttpMode::Message { .. } => {
                for m in batch {
                    self.send(Bytes::copy_from_slice(&m.payload), std::slice::from_ref(m))
                        .await?;
                }
            }
            HttpMode::Batch { max_messages } => {
                let max_body = self.opts.max_body_bytes;
                let mut body = Vec::new();
                let mut start = 0;
                for (i, m) in batch.iter().enumerate() {
                    let before = body.len();
                    body::push_line(&mut body, m);
                    if body.len() > max_body && i > start {
                        // The line does not fit: send the lines before it.
                        let line = body.split_off(before);
                        self.send(Bytes::from(std::mem::replace(&mut body, line)), &batch[start..i])
                            .await?;
                        start = i;
                    }
                    if i + 1 - start == max_messages {
                        self.send(Bytes::from(std::mem::take(&mut body)), &batch[start..=i])
                            .await?;
                        start = i + 1;
                    }
                }
                if start < batch.len() {
                    self.send(Bytes::from(body), &batch[start..]).await?;
                }
            }
        }
        Ok(())
    }

    async fn health(&mut self) -> Result<(), SinkError> {
        if let Some(at) = self.not_before {
            let now = Instant::now();
            if at > now {
                return Err(self.waiting(at - now));
            }
        }
        let conn = self.take_connection(self.opts.timeout.min(HEALTH_TIMEOUT)).await?;
        self.conn = Some(conn);
        Ok(())
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        // Every acknowledged request was answered already.
        self.conn = None;
        Ok(())
    }

    fn limits(&self) -> SinkLimits {
        Self::limits_of(&self.opts)
    }
}

/// `rowhook check`: connects (TLS included) and sends an `OPTIONS`
/// request with the configured headers, which changes nothing; reports
/// the status, or what is wrong and the fix.
fn probe(name: &str, opts: &HttpOptions) -> CheckLine {
    let head = format!("sink `{name}` (http): {}", opts.url.origin());
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return CheckLine::fail(format!("{head}: cannot start the probe: {e}")),
    };
    let found = rt.block_on(async {
        tokio::time::timeout(PROBE_TIMEOUT, probe_server(name, opts))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no answer within {} s; check that the receiver is up and url is right",
                    PROBE_TIMEOUT.as_secs()
                ))
            })
    });
    match found {
        Ok(text) => CheckLine::ok(format!("{head}: {text}")),
        Err(text) => CheckLine::fail(format!("{head}: {text}")),
    }
}

async fn probe_server(name: &str, opts: &HttpOptions) -> Result<String, String> {
    let sink = HttpSink::open(name, opts.clone()).map_err(|e| match e {
        SinkError::Unavailable { reason, .. } | SinkError::Permanent { reason, .. } => reason,
    })?;
    let timeout = opts.timeout.min(PROBE_TIMEOUT);
    let mut conn = Conn::open(&opts.url, sink.tls.as_ref(), timeout)
        .await
        .map_err(|e| match e {
            ConnectError::Unreachable(what) => {
                format!("{what}; start the receiver, or fix the host and port in url")
            }
            ConnectError::Tls(what) => format!(
                "{what}; set tls_ca_file to the CA that signs the server's certificate, or check the host name in url"
            ),
        })?;
    let mut headers = sink.headers.clone();
    headers.remove(CONTENT_TYPE);
    if let Some(key) = &sink.hmac {
        let ts = body::unix_now().to_string();
        headers.insert(
            HeaderName::from_static(SIGNATURE),
            HeaderValue::from_str(&body::sign(key, &ts, b"")).expect("hex"),
        );
        headers.insert(
            HeaderName::from_static(TIMESTAMP),
            HeaderValue::from_str(&ts).expect("digits"),
        );
    }
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.method_mut() = Method::OPTIONS;
    *request.uri_mut() = opts.url.target.parse().expect("checked by resolve");
    *request.headers_mut() = headers;
    let (reply, _) = conn.send(request, timeout).await.map_err(|e| match e {
        SendError::Broken(what) => format!("OPTIONS: {what}; check that url points at an HTTP server"),
        SendError::NotHttp(what) => {
            format!("the answer is not HTTP/1.1 ({what}); check the scheme (http:// or https://) and the port of url")
        }
    })?;
    let status = reply.status;
    let said = body::body_start(&reply.body);
    let said = if said.is_empty() {
        String::new()
    } else {
        format!(" ({said})")
    };
    let method = opts.method.method();
    match status.as_u16() {
        200..=299 | 400 | 405 | 501 => Ok(format!(
            "answers OPTIONS with {status}; messages go as {method}, {}",
            match &opts.mode {
                HttpMode::Message { .. } => "one request per message".to_owned(),
                HttpMode::Batch { max_messages } => format!("batches of up to {max_messages} JSON lines"),
            }
        )),
        401 | 403 => Err(format!(
            "answers {status}{said}: the receiver refuses the sink's credentials; check headers (e.g. Authorization = \"Bearer ${{TOKEN}}\") and hmac_secret"
        )),
        404 | 410 => Err(format!(
            "answers {status}{said}: nothing receives at url's path; fix the path in url"
        )),
        300..=399 => Err(format!(
            "answers {status}, a redirect{}; the sink does not follow redirects: set url to where it points",
            reply
                .location
                .map(|l| format!(" to {}", body::body_start(l.as_bytes())))
                .unwrap_or_default()
        )),
        500..=599 => Err(format!(
            "answers {status}{said}: the receiver fails now (writes would be retried); see its logs"
        )),
        _ => Err(format!("answers {status}{said}; see the receiver's logs")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testing::msg;

    fn options(mode: HttpMode, max_body_bytes: usize) -> HttpOptions {
        HttpOptions {
            url: Endpoint::parse("http://127.0.0.1:1/hook").unwrap(),
            method: HttpMethod::Post,
            mode,
            headers: vec![("Authorization".into(), Secret("Bearer s3cret".into()))],
            hmac_secret: None,
            timeout: Duration::from_millis(300),
            max_body_bytes,
            retry_after_max: Duration::from_millis(100),
            tls: TlsFiles::default(),
        }
    }

    #[test]
    fn limits_follow_max_body_bytes() {
        let message = options(
            HttpMode::Message {
                content_type: "application/json".into(),
            },
            1 << 20,
        );
        assert_eq!(
            HttpSink::limits_of(&message),
            SinkLimits {
                max_payload: Some(1 << 20),
                max_key: Some(MAX_KEY)
            }
        );
        let batch = options(HttpMode::Batch { max_messages: 10 }, 1 << 20);
        assert_eq!(
            HttpSink::limits_of(&batch).max_payload,
            Some(((1 << 20) - ENVELOPE_ROOM) / 4 * 3)
        );
        let s = HttpSink::open("w", batch).unwrap();
        let mut big = msg("0-1-2:0:0", "");
        big.payload = vec![b'x'; max_batch_payload(1 << 20) + 1];
        let e = s.check(&[msg("a", "1"), big]).unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("message `0-1-2:0:0`"), "{e}");
        assert!(e.to_string().contains("max_body_bytes (1048576 bytes)"), "{e}");
        let mut keyed = msg("k", "1");
        keyed.key = Some(vec![b'k'; MAX_KEY + 1]);
        assert!(s.check(&[keyed]).unwrap_err().to_string().contains("key longer"));
    }

    #[test]
    fn debug_hides_secrets_and_the_path() {
        let mut o = options(HttpMode::Batch { max_messages: 1 }, 1 << 20);
        o.hmac_secret = Some(Secret("hmac-secret-value".into()));
        let s = HttpSink::open("w", o).unwrap();
        let text = format!("{s:?}");
        assert!(
            !text.contains("s3cret") && !text.contains("hmac-secret") && !text.contains("/hook"),
            "{text}"
        );
        assert!(format!("{:?}", s.headers).contains("Sensitive"), "{:?}", s.headers);
    }

    #[tokio::test]
    async fn a_receiver_that_is_down_is_unavailable() {
        let mut s = HttpSink::open(
            "w",
            options(
                HttpMode::Message {
                    content_type: "text/plain".into(),
                },
                1 << 20,
            ),
        )
        .unwrap();
        let e = s.write_batch(&[msg("1", "a")]).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(e.to_string().contains("http://127.0.0.1:1"), "{e}");
        assert!(s.health().await.unwrap_err().is_retryable());
        s.write_batch(&[]).await.unwrap();
    }

    #[tokio::test]
    async fn a_retry_after_holds_back_the_next_write() {
        let mut s = HttpSink::open("w", options(HttpMode::Batch { max_messages: 1 }, 1 << 20)).unwrap();
        // Further off than retry_after_max: the write waits that long, then
        // fails without sending; health says so without connecting.
        s.not_before = Some(Instant::now() + Duration::from_secs(30));
        let started = Instant::now();
        let e = s.write_batch(&[msg("1", "a")]).await.unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(e.is_retryable() && e.to_string().contains("Retry-After"), "{e}");
        assert!(s.health().await.unwrap_err().to_string().contains("Retry-After"));
        // Within it: the write waits, then tries (and finds nothing listening).
        s.not_before = Some(Instant::now() + Duration::from_millis(50));
        let started = Instant::now();
        let e = s.write_batch(&[msg("1", "a")]).await.unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(e.to_string().contains("cannot connect"), "{e}");
        assert!(s.not_before.is_none());
    }

    #[test]
    fn replies_are_classified() {
        let mut s = HttpSink::open("w", options(HttpMode::Batch { max_messages: 1 }, 1 << 20)).unwrap();
        let reply = |status: u16, retry_after: Option<&str>, location: Option<&str>, body: &str| Reply {
            status: hyper::StatusCode::from_u16(status).unwrap(),
            retry_after: retry_after.map(str::to_owned),
            location: location.map(str::to_owned),
            body: body.as_bytes().to_vec(),
        };
        let batch = [msg("0-1-1:0:0", "a"), msg("0-1-1:0:1", "b")];
        for status in [408, 429, 500, 502, 503, 504] {
            let e = s.refusal(reply(status, None, None, ""), 10, &batch);
            assert!(e.is_retryable(), "{status}: {e}");
        }
        assert!(s.not_before.is_none());
        let e = s.refusal(reply(429, Some("3"), None, "slow down"), 10, &batch);
        assert!(
            e.to_string()
                .contains("answered 429 Too Many Requests (slow down); it asked to retry after 3 s"),
            "{e}"
        );
        let left = s.not_before.unwrap() - Instant::now();
        assert!(
            left > Duration::from_millis(2900) && left <= Duration::from_secs(3),
            "{left:?}"
        );

        let e = s.refusal(reply(400, None, None, "{\"error\":\"no such field\"}\n"), 10, &batch);
        assert!(!e.is_retryable());
        assert_eq!(
            e.to_string(),
            "sink `w` failed: POST of 2 messages, `0-1-1:0:0` to `0-1-1:0:1` to http://127.0.0.1:1 answered 400 Bad Request ({\"error\":\"no such field\"}); the receiver refuses them: see its answer, and fix the handler or the receiver"
        );
        let e = s.refusal(reply(301, None, Some("https://new.example/hook"), ""), 10, &batch[..1]);
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("redirects to https://new.example/hook"), "{e}");
        let e = s.refusal(reply(413, None, None, ""), 70_000, &batch);
        assert!(
            e.to_string().contains("the body was 70000 bytes: set max_body_bytes"),
            "{e}"
        );
        let e = s.refusal(reply(401, None, None, ""), 10, &batch);
        assert!(e.to_string().contains("Authorization"), "{e}");
        let e = s.refusal(reply(404, None, None, ""), 10, &batch);
        assert!(e.to_string().contains("path of url"), "{e}");
    }
}
