//! The keys of a `kind = "http"` sink: parsed as written, then resolved
//! into [`HttpOptions`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{Endpoint, TlsFiles};
use super::{HttpMethod, HttpMode, HttpOptions, Secret};
use crate::problem::SinkContext;

/// Default `timeout_ms`: connecting, or one request's response.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Default `max_body_bytes`: nginx's default `client_max_body_size`.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// Default `max_batch_messages`.
pub const DEFAULT_MAX_BATCH: usize = 1000;
/// Default `retry_after_max_ms`.
pub const DEFAULT_RETRY_AFTER_MAX_MS: u64 = 60_000;
/// The shortest `hmac_secret`, in bytes.
pub const MIN_SECRET: usize = 16;

/// Headers rowhook sets itself, or that belong to one connection rather
/// than the request (hop-by-hop); `headers` may not set them.
const RESERVED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "host",
    "content-length",
    "content-type",
    "idempotency-key",
];

/// `kind = "http"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpSink {
    /// Where requests go: `http://HOST[:PORT]/PATH[?QUERY]` or
    /// `https://…`. No credentials in it: send them in `headers`. Messages
    /// and logs show only its scheme, host and port.
    pub url: String,
    /// `"POST"` (the default) or `"PUT"`.
    pub method: Option<String>,
    /// `"message"` (the default): one request per message, the payload as
    /// the body. `"batch"`: one request per batch (split by
    /// `max_batch_messages` and `max_body_bytes`), a JSON line per message.
    pub mode: Option<String>,
    /// With `mode = "message"`: the `Content-Type` of each request
    /// (default `application/json`). Batches are `application/x-ndjson`.
    pub content_type: Option<String>,
    /// Headers sent with every request, e.g. `{ Authorization = "Bearer
    /// ${WEBHOOK_TOKEN}" }`. Values are never shown. Hop-by-hop headers and
    /// those rowhook sets (`Host`, `Content-Type`, `Content-Length`,
    /// `Idempotency-Key`, `X-Rowhook-…`) are refused.
    pub headers: Option<BTreeMap<String, String>>,
    /// Signs every request: `X-Rowhook-Signature: sha256=HEX`, the
    /// HMAC-SHA256 of `<X-Rowhook-Timestamp>.<body>` with this secret (at
    /// least 16 bytes). Write it as `${ENV_VAR}`.
    pub hmac_secret: Option<String>,
    /// How long connecting, or one request's response, may take before the
    /// write counts as unavailable and is retried: 100 to 600000 ms
    /// (default 10000).
    pub timeout_ms: Option<u64>,
    /// The largest request body: 65536 to 1073741824 bytes (default
    /// 1048576). Larger payloads are refused at `emit` as `too-large`.
    pub max_body_bytes: Option<u64>,
    /// With `mode = "batch"`: messages per request at most, 1 to 100000
    /// (default 1000).
    pub max_batch_messages: Option<u64>,
    /// The longest one write waits for a server's `Retry-After` before it
    /// sends again, 0 to 3600000 ms (default 60000). A longer `Retry-After`
    /// is still honoured: the write fails as unavailable, without sending,
    /// until that time.
    pub retry_after_max_ms: Option<u64>,
    /// PEM file of the certificate authorities that sign the server's
    /// certificate (default: the system's). `https://` only.
    pub tls_ca_file: Option<String>,
    /// PEM client certificate (chain) for mutual TLS, with `tls_key_file`.
    pub tls_cert_file: Option<String>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<String>,
}

/// Validates the keys; every problem is reported.
pub fn resolve(raw: RawHttpSink, cx: &mut SinkContext<'_>) -> Option<HttpOptions> {
    let mut ok = true;
    let url = match Endpoint::parse(&raw.url) {
        Ok(u) => Some(u),
        Err(what) => {
            cx.problem(
                "url",
                what,
                "write it as http://HOST[:PORT]/PATH or https://…, with credentials in headers (as ${ENV})",
            );
            None
        }
    };
    let method = match raw.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("POST") => HttpMethod::Post,
        Some("PUT") => HttpMethod::Put,
        Some(_) => {
            cx.problem(
                "method",
                format!("`{}` is not a method the sink sends", raw.method.unwrap_or_default()),
                "use \"POST\" (the default) or \"PUT\"",
            );
            ok = false;
            HttpMethod::Post
        }
    };
    let batch = match raw.mode.as_deref() {
        None | Some("message") => false,
        Some("batch") => true,
        Some(other) => {
            cx.problem(
                "mode",
                format!("`{other}` is not a mode"),
                "use \"message\" (a request per message) or \"batch\" (a request per batch, as JSON lines)",
            );
            ok = false;
            false
        }
    };
    let content_type = match raw.content_type {
        Some(_) if batch => {
            cx.problem(
                "content_type",
                "applies only to mode = \"message\"",
                "remove it: batches are sent as application/x-ndjson",
            );
            ok = false;
            String::new()
        }
        Some(ct) if ct.is_empty() || hyper::header::HeaderValue::from_str(&ct).is_err() => {
            cx.problem(
                "content_type",
                format!("`{}` is not a header value", ct.escape_debug()),
                "write a media type, e.g. \"application/json\"",
            );
            ok = false;
            String::new()
        }
        Some(ct) => ct,
        None => "application/json".into(),
    };
    let max_batch = match raw.max_batch_messages {
        Some(_) if !batch => {
            cx.problem(
                "max_batch_messages",
                "applies only to mode = \"batch\"",
                "remove it, or set mode = \"batch\"",
            );
            ok = false;
            DEFAULT_MAX_BATCH
        }
        n => match cx.ranged(
            "max_batch_messages",
            n,
            1..=100_000,
            DEFAULT_MAX_BATCH as u64,
            "use 1 to 100000 (default 1000)",
        ) {
            Some(n) => n as usize,
            None => {
                ok = false;
                DEFAULT_MAX_BATCH
            }
        },
    };
    let mode = if batch {
        HttpMode::Batch {
            max_messages: max_batch,
        }
    } else {
        HttpMode::Message { content_type }
    };

    let mut headers = Vec::new();
    for (name, value) in raw.headers.unwrap_or_default() {
        let lower = name.to_ascii_lowercase();
        if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            cx.problem(
                "headers",
                format!("`{}` is not a header name", name.escape_debug()),
                "use letters, digits and -, e.g. Authorization or X-Api-Key",
            );
            ok = false;
        } else if RESERVED.contains(&lower.as_str()) || lower.starts_with("x-rowhook-") {
            let fix = match lower.as_str() {
                "content-type" => "remove it; set content_type (mode = \"message\")",
                "idempotency-key" => "remove it: rowhook sets it to the message's id",
                "host" | "content-length" => "remove it: rowhook sets it from url and the body",
                _ if lower.starts_with("x-rowhook-") => "remove it: rowhook sets the X-Rowhook- headers",
                _ => "remove it: it belongs to one connection, not to the request",
            };
            cx.problem("headers", format!("sets `{name}`, which the sink may not set"), fix);
            ok = false;
        } else if hyper::header::HeaderValue::from_str(&value).is_err() {
            // Never echo the value: it is likely a secret.
            cx.problem(
                "headers",
                format!("the value of `{name}` holds a line break or another control character"),
                "write the value on one line; take secrets from ${ENV} without trailing newlines",
            );
            ok = false;
        } else {
            headers.push((name, Secret(value)));
        }
    }

    let hmac_secret = match raw.hmac_secret {
        None => None,
        Some(s) if s.len() < MIN_SECRET => {
            cx.problem(
                "hmac_secret",
                format!("is shorter than {MIN_SECRET} bytes"),
                "use a long random secret, e.g. `openssl rand -hex 32`, as hmac_secret = \"${WEBHOOK_SECRET}\"",
            );
            ok = false;
            None
        }
        Some(s) => Some(Secret(s)),
    };

    let mut ranged = |key: &str, value: Option<u64>, range: std::ops::RangeInclusive<u64>, default: u64, unit: &str| {
        let fix = format!("use {} to {}{unit} (default {default})", range.start(), range.end());
        cx.ranged(key, value, range, default, fix).unwrap_or_else(|| {
            ok = false;
            default
        })
    };
    let timeout_ms = ranged("timeout_ms", raw.timeout_ms, 100..=600_000, DEFAULT_TIMEOUT_MS, " ms");
    let max_body = ranged(
        "max_body_bytes",
        raw.max_body_bytes,
        65_536..=1 << 30,
        DEFAULT_MAX_BODY as u64,
        " bytes",
    );
    let retry_after_max_ms = ranged(
        "retry_after_max_ms",
        raw.retry_after_max_ms,
        0..=3_600_000,
        DEFAULT_RETRY_AFTER_MAX_MS,
        " ms",
    );

    let tls = TlsFiles::resolve(
        raw.tls_ca_file.as_deref(),
        raw.tls_cert_file.as_deref(),
        raw.tls_key_file.as_deref(),
        cx,
    );
    ok &= tls.is_some();
    if let (Some(u), Some(key)) = (&url, tls.as_ref().and_then(TlsFiles::first_key))
        && !u.tls
    {
        cx.problem(key, "is set, but url is http://", "use an https:// url, or remove it");
        ok = false;
    }

    if !ok {
        return None;
    }
    Some(HttpOptions {
        url: url?,
        method,
        mode,
        headers,
        hmac_secret,
        timeout: Duration::from_millis(timeout_ms),
        max_body_bytes: max_body as usize,
        retry_after_max: Duration::from_millis(retry_after_max_ms),
        tls: tls?,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, Plan};
    use crate::sink::SinkSpec;

    use super::*;

    fn parse(text: &str) -> Result<Plan, ConfigError> {
        crate::config::parse_with_env(
            text,
            &[
                ("WEBHOOK_TOKEN", "t0ken-value"),
                ("WEBHOOK_SECRET", "0123456789abcdef-secret"),
                ("SHORT", "x7Qz"),
                ("NEWLINE", "abc\n"),
            ],
        )
    }

    fn http(text: &str) -> HttpOptions {
        match parse(text).unwrap().sinks.into_values().next() {
            Some(SinkSpec::Http(o)) => o,
            other => panic!("expected an http sink, got {other:?}"),
        }
    }

    /// Every problem, as `key: what`; each has a fix.
    fn problems(text: &str) -> Vec<String> {
        crate::config::problem_lines(parse(text))
    }

    #[test]
    fn keys_resolve_with_defaults() {
        let o = http("[sinks.w]\nkind = \"http\"\nurl = \"http://127.0.0.1:8080/hook\"\n");
        assert_eq!(o.url.origin(), "http://127.0.0.1:8080");
        assert_eq!(o.url.target, "/hook");
        assert_eq!(o.method, HttpMethod::Post);
        assert_eq!(
            o.mode,
            HttpMode::Message {
                content_type: "application/json".into()
            }
        );
        assert_eq!(
            (o.timeout, o.max_body_bytes, o.retry_after_max),
            (
                Duration::from_millis(DEFAULT_TIMEOUT_MS),
                DEFAULT_MAX_BODY,
                Duration::from_millis(DEFAULT_RETRY_AFTER_MAX_MS)
            )
        );
        assert!(o.headers.is_empty() && o.hmac_secret.is_none());
        assert_eq!(o.tls, TlsFiles::default());

        let o = http(
            r#"
[sinks.w]
kind = "http"
url = "https://hooks.example.com/in?x=1"
method = "put"
mode = "batch"
max_batch_messages = 500
headers = { Authorization = "Bearer ${WEBHOOK_TOKEN}", "X-Team" = "shop" }
hmac_secret = "${WEBHOOK_SECRET}"
timeout_ms = 2500
max_body_bytes = 65536
retry_after_max_ms = 0
tls_ca_file = "ca.pem"
tls_cert_file = "client.pem"
tls_key_file = "/keys/client.key"
"#,
        );
        assert_eq!(o.method, HttpMethod::Put);
        assert_eq!(o.mode, HttpMode::Batch { max_messages: 500 });
        assert_eq!(o.headers.len(), 2);
        assert_eq!(o.headers[0].0, "Authorization");
        assert_eq!(o.headers[0].1.expose(), "Bearer t0ken-value");
        assert_eq!(o.hmac_secret.as_ref().unwrap().expose(), "0123456789abcdef-secret");
        assert_eq!(
            (o.timeout, o.max_body_bytes, o.retry_after_max),
            (Duration::from_millis(2500), 65536, Duration::ZERO)
        );
        assert_eq!(
            o.tls,
            TlsFiles {
                ca_file: Some("/etc/rowhook/ca.pem".into()),
                client_cert: Some(("/etc/rowhook/client.pem".into(), "/keys/client.key".into())),
            }
        );
        // Secrets and the URL's path do not show in Debug output.
        let debug = format!("{o:?}");
        for hidden in ["t0ken", "0123456789abcdef", "/in", "x=1"] {
            assert!(!debug.contains(hidden), "{hidden} in {debug}");
        }
        assert!(debug.contains("Authorization"), "{debug}");
    }

    #[test]
    fn problems_name_the_key() {
        assert_eq!(
            problems(
                r#"
[sinks.a]
kind = "http"
url = "http://user:pw@h/x"
mode = "batch"
content_type = "text/plain"
timeout_ms = 5
max_body_bytes = 100
retry_after_max_ms = 3600001
[sinks.b]
kind = "http"
url = "http://h/"
max_batch_messages = 10
headers = { "Content-Type" = "x", "X-Rowhook-Signature" = "y", Connection = "close", "Bad Name" = "v", Authorization = "${NEWLINE}", "Idempotency-Key" = "k" }
hmac_secret = "${SHORT}"
tls_ca_file = "ca.pem"
[sinks.c]
kind = "http"
url = "https://h/"
mode = "stream"
[sinks.d]
kind = "http"
url = "https://h/"
method = "GET"
[sinks.e]
kind = "http"
url = "https://h/"
tls_cert_file = "c.pem"
max_batch_messages = 0
"#
            ),
            [
                "sinks.a.url: holds credentials",
                "sinks.a.content_type: applies only to mode = \"message\"",
                "sinks.a.timeout_ms: 5 is out of range",
                "sinks.a.max_body_bytes: 100 is out of range",
                "sinks.a.retry_after_max_ms: 3600001 is out of range",
                "sinks.b.max_batch_messages: applies only to mode = \"batch\"",
                "sinks.b.headers: the value of `Authorization` holds a line break or another control character",
                "sinks.b.headers: `Bad Name` is not a header name",
                "sinks.b.headers: sets `Connection`, which the sink may not set",
                "sinks.b.headers: sets `Content-Type`, which the sink may not set",
                "sinks.b.headers: sets `Idempotency-Key`, which the sink may not set",
                "sinks.b.headers: sets `X-Rowhook-Signature`, which the sink may not set",
                "sinks.b.hmac_secret: is shorter than 16 bytes",
                "sinks.b.tls_ca_file: is set, but url is http://",
                "sinks.c.mode: `stream` is not a mode",
                "sinks.d.method: `GET` is not a method the sink sends",
                "sinks.e.max_batch_messages: applies only to mode = \"batch\"",
                "sinks.e.tls_key_file: is missing",
            ]
        );
    }

    #[test]
    fn a_bad_url_or_header_never_shows_a_secret() {
        let e = parse(
            "[sinks.a]\nkind = \"http\"\nurl = \"http://u:${WEBHOOK_TOKEN}@h/\"\nheaders = { A = \"${NEWLINE}${WEBHOOK_TOKEN}\" }\n",
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("sinks.a.url") && text.contains("sinks.a.headers"),
            "{text}"
        );
        assert!(!text.contains("t0ken"), "{text}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        match parse("[sinks.w]\nkind = \"http\"\nurl = \"http://h/\"\nheader = {}\n") {
            Err(ConfigError::Syntax { line, key, message, .. }) => {
                assert_eq!((line, key.as_deref()), (Some(4), Some("sinks.w.header")), "{message}");
                assert!(message.contains("unknown field"), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }
}
