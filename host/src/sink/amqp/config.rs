//! The keys of a `kind = "amqp"` sink: parsed as written, then resolved
//! into [`AmqpOptions`].

use std::time::Duration;

use serde::Deserialize;

use super::{AmqpOptions, AmqpUrl, RoutingKeyTemplate, SHORT_STR_MAX};
use crate::problem::SinkContext;
use crate::sink::tls::TlsFiles;

/// Default wait for a batch's publisher confirms.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// RabbitMQ's default `max_message_size` (128 MiB): the broker does not
/// announce it, so it is configured here.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 128 << 20;
/// The largest `max_message_size` RabbitMQ accepts (512 MiB).
const MAX_MESSAGE_SIZE_CAP: u64 = 512 << 20;

/// `kind = "amqp"`: AMQP 0.9.1 (RabbitMQ), publisher-confirmed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAmqpSink {
    /// `amqp://USER:PASSWORD@HOST[:PORT][/VHOST]`, `amqps://…` for TLS.
    /// The port defaults to 5672 (5671 with TLS); the vhost to `/` (write
    /// another one percent-encoded: `/orders`, or `%2F` for `/`); user and
    /// password to `guest`. Take the password from the environment:
    /// `url = "amqp://rowhook:${AMQP_PASSWORD}@10.0.0.5/shop"`.
    pub url: String,
    /// The exchange each message is published to; `""` is the default
    /// exchange, which routes by queue name.
    pub exchange: String,
    /// The routing key of each message. `{key}` is replaced by the
    /// message's key (empty when it has none), as it is (it must be UTF-8).
    /// At most 255 bytes once the key is in.
    pub routing_key: String,
    /// Publish with `delivery_mode` 2, so a durable queue keeps the message
    /// across a broker restart (default true; false: mode 1, transient).
    pub persistent: Option<bool>,
    /// Publish with the `mandatory` flag (default true): a message no queue
    /// is bound for comes back, and the batch is retried instead of the
    /// message being dropped by the broker.
    pub mandatory: Option<bool>,
    /// How long to wait for the broker's confirms of a batch (and for the
    /// connection to open) before the batch is retried: 100 to 600000 ms
    /// (default 10000).
    pub confirm_timeout_ms: Option<u64>,
    /// The `content-type` property of every message (e.g.
    /// `"application/json"`); not set when absent.
    pub content_type: Option<String>,
    /// The largest message the broker takes, in bytes: RabbitMQ's
    /// `max_message_size` (default 134217728, its own default), which it does
    /// not announce. 1 to 536870912.
    pub max_message_size: Option<u64>,
    /// PEM file of the certificate authorities that sign the broker's
    /// certificate (default: the system's). Needs an `amqps://` URL.
    pub tls_ca_file: Option<String>,
    /// PEM client certificate for mutual TLS, with `tls_key_file`.
    pub tls_cert_file: Option<String>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<String>,
}

/// Validates the keys; every problem is reported.
pub fn resolve(raw: RawAmqpSink, cx: &mut SinkContext<'_>) -> Option<AmqpOptions> {
    let mut ok = true;
    let url = match AmqpUrl::parse(&raw.url) {
        Ok(u) => Some(u),
        Err(what) => {
            cx.problem(
                "url",
                what,
                "write it as amqp://USER:PASSWORD@HOST:5672/VHOST (amqps:// for TLS), with the password as ${ENV} and no query options (the sink's keys set the rest)",
            );
            None
        }
    };
    if raw.exchange.len() > SHORT_STR_MAX {
        cx.problem(
            "exchange",
            format!("is {} bytes long", raw.exchange.len()),
            "AMQP names are at most 255 bytes: name a shorter exchange",
        );
        ok = false;
    }
    let routing_key = match RoutingKeyTemplate::parse(&raw.routing_key) {
        Ok(t) => Some(t),
        Err(what) => {
            cx.problem(
                "routing_key",
                what,
                "write at most 255 bytes with at most one {key}, e.g. \"orders.{key}\" or \"orders\"",
            );
            None
        }
    };
    let confirm_timeout = cx.timeout_ms("confirm_timeout_ms", raw.confirm_timeout_ms, DEFAULT_CONFIRM_TIMEOUT);
    let max_message_size = cx.ranged(
        "max_message_size",
        raw.max_message_size,
        1..=MAX_MESSAGE_SIZE_CAP,
        DEFAULT_MAX_MESSAGE_SIZE,
        "use the broker's max_message_size: 1 to 536870912 bytes (default 134217728)",
    );
    if let Some(ct) = &raw.content_type
        && (ct.is_empty() || ct.len() > SHORT_STR_MAX)
    {
        cx.problem(
            "content_type",
            "is empty or longer than 255 bytes",
            "write a MIME type such as \"application/json\", or remove the key",
        );
        ok = false;
    }
    let tls = resolve_tls(&raw, url.as_ref(), cx);
    if !ok {
        return None;
    }
    Some(AmqpOptions {
        url: url?,
        exchange: raw.exchange,
        routing_key: routing_key?,
        persistent: raw.persistent.unwrap_or(true),
        mandatory: raw.mandatory.unwrap_or(true),
        confirm_timeout: confirm_timeout?,
        content_type: raw.content_type,
        max_message_size: usize::try_from(max_message_size?).unwrap_or(usize::MAX),
        tls: tls?,
    })
}

fn resolve_tls(raw: &RawAmqpSink, url: Option<&AmqpUrl>, cx: &mut SinkContext<'_>) -> Option<Option<TlsFiles>> {
    let files = TlsFiles::resolve(
        raw.tls_ca_file.as_deref(),
        raw.tls_cert_file.as_deref(),
        raw.tls_key_file.as_deref(),
        cx,
    )?;
    let url = url?;
    if !url.tls {
        if let Some(key) = files.first_key() {
            cx.problem(
                key,
                "is set, but the url is amqp:// (no TLS)",
                "write the url as amqps://HOST:5671/…, or remove the tls_ keys",
            );
            return None;
        }
        return Some(None);
    }
    Some(Some(files))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ConfigError, Plan};
    use crate::sink::SinkSpec;

    use super::*;

    fn parse(text: &str) -> Result<Plan, ConfigError> {
        Plan::parse(text, Path::new("/etc/rowhook/rowhook.toml"), |v| {
            (v == "AMQP_PASSWORD").then(|| "s3c/r@t".to_owned())
        })
    }

    fn amqp(text: &str) -> AmqpOptions {
        match parse(text).unwrap().sinks.into_values().next() {
            Some(SinkSpec::Amqp(o)) => o,
            other => panic!("expected an amqp sink, got {other:?}"),
        }
    }

    /// Every problem, as `key: what`; each has a fix.
    fn problems(text: &str) -> Vec<String> {
        crate::config::problem_lines(parse(text))
    }

    #[test]
    fn keys_resolve_with_defaults() {
        let o =
            amqp("[sinks.a]\nkind = \"amqp\"\nurl = \"amqp://127.0.0.1\"\nexchange = \"\"\nrouting_key = \"orders\"\n");
        assert_eq!(o.url.to_string(), "amqp://guest@127.0.0.1:5672/%2F");
        assert_eq!((o.url.user.as_str(), o.url.password.0.as_str()), ("guest", "guest"));
        assert_eq!(o.exchange, "");
        assert_eq!(o.routing_key.render(Some(b"k")).unwrap(), "orders");
        assert!(o.persistent && o.mandatory);
        assert_eq!(o.confirm_timeout, DEFAULT_CONFIRM_TIMEOUT);
        assert_eq!(o.max_message_size, 128 << 20);
        assert_eq!((&o.content_type, &o.tls), (&None, &None));

        let o = amqp(
            "[sinks.a]\nkind = \"amqp\"\nurl = \"amqps://rowhook:${AMQP_PASSWORD}@mq.example:5999/shop%2Feu\"\nexchange = \"orders\"\nrouting_key = \"o.{key}.new\"\npersistent = false\nmandatory = false\nconfirm_timeout_ms = 250\ncontent_type = \"application/json\"\nmax_message_size = 1048576\ntls_ca_file = \"ca.pem\"\ntls_cert_file = \"c.pem\"\ntls_key_file = \"/k.pem\"\n",
        );
        assert_eq!(o.url.host, "mq.example");
        assert_eq!((o.url.port, o.url.tls), (5999, true));
        assert_eq!(o.url.vhost, "shop/eu");
        assert_eq!(o.url.password.0, "s3c/r@t");
        // The password is hidden everywhere but in the connection.
        assert_eq!(o.url.to_string(), "amqps://rowhook@mq.example:5999/shop%2Feu");
        assert!(!format!("{o:?}").contains("s3c"), "{o:?}");
        assert_eq!(o.routing_key.render(Some(b"a b/c")).unwrap(), "o.a b/c.new");
        assert_eq!(o.routing_key.render(None).unwrap(), "o..new");
        assert!(!o.persistent && !o.mandatory);
        assert_eq!(o.confirm_timeout, Duration::from_millis(250));
        assert_eq!(o.content_type.as_deref(), Some("application/json"));
        assert_eq!(o.max_message_size, 1 << 20);
        assert_eq!(
            o.tls,
            Some(TlsFiles {
                ca_file: Some("/etc/rowhook/ca.pem".into()),
                client_cert: Some(("/etc/rowhook/c.pem".into(), "/k.pem".into())),
            })
        );
        let o = amqp("[sinks.a]\nkind = \"amqp\"\nurl = \"amqps://u:p@[::1]\"\nexchange = \"x\"\nrouting_key = \"\"\n");
        assert_eq!((o.url.host.as_str(), o.url.port), ("::1", 5671));
        assert_eq!(o.url.to_string(), "amqps://u@[::1]:5671/%2F");
        assert_eq!(o.tls, Some(TlsFiles::default()));
    }

    #[test]
    fn problems_name_the_key() {
        let long = "x".repeat(256);
        assert_eq!(
            problems(&format!(
                "[sinks.a]\nkind = \"amqp\"\nurl = \"http://h\"\nexchange = \"{long}\"\nrouting_key = \"{{key}}.{{key}}\"\nconfirm_timeout_ms = 5\nmax_message_size = 0\ncontent_type = \"\"\n"
            )),
            [
                "sinks.a.url: `http://` is not an AMQP URL scheme",
                "sinks.a.exchange: is 256 bytes long",
                "sinks.a.routing_key: has {key} more than once",
                "sinks.a.confirm_timeout_ms: 5 is out of range",
                "sinks.a.max_message_size: 0 is out of range",
                "sinks.a.content_type: is empty or longer than 255 bytes",
            ]
        );
        for (url, what) in [
            ("amqp://", "has no host"),
            ("amqp://h:port", "`port` is not a port"),
            ("amqp://u@h", "has a user but no password"),
            ("amqp://u:p@h/v?heartbeat=5", "has query options"),
            ("amqp://u:%zz@h", "has a bad %-escape"),
            ("h:5672", "is not an amqp:// or amqps:// URL"),
        ] {
            assert_eq!(
                problems(&format!(
                    "[sinks.a]\nkind = \"amqp\"\nurl = \"{url}\"\nexchange = \"\"\nrouting_key = \"q\"\n"
                )),
                [format!("sinks.a.url: {what}")],
                "{url}"
            );
        }
        assert_eq!(
            problems(&format!(
                "[sinks.a]\nkind = \"amqp\"\nurl = \"amqp://h\"\nexchange = \"\"\nrouting_key = \"{long}\"\n"
            )),
            ["sinks.a.routing_key: is longer than 255 bytes"]
        );
        assert_eq!(
            problems(
                "[sinks.a]\nkind = \"amqp\"\nurl = \"amqp://h\"\nexchange = \"\"\nrouting_key = \"q\"\ntls_ca_file = \"ca.pem\"\n"
            ),
            ["sinks.a.tls_ca_file: is set, but the url is amqp:// (no TLS)"]
        );
        assert_eq!(
            problems(
                "[sinks.a]\nkind = \"amqp\"\nurl = \"amqps://h\"\nexchange = \"\"\nrouting_key = \"q\"\ntls_cert_file = \"c.pem\"\n"
            ),
            ["sinks.a.tls_key_file: is missing"]
        );
        match parse(
            "[sinks.a]\nkind = \"amqp\"\nurl = \"amqp://h\"\nexchange = \"\"\nrouting_key = \"q\"\nqueue = \"q\"\n",
        ) {
            Err(ConfigError::Syntax { line, key, message, .. }) => {
                assert_eq!((line, key.as_deref()), (Some(6), Some("sinks.a.queue")), "{message}");
                assert!(message.contains("unknown field `queue`"), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn a_bad_url_never_shows_its_password() {
        let e = parse(
            "[sinks.a]\nkind = \"amqp\"\nurl = \"amqp://u:${AMQP_PASSWORD}@h:notaport\"\nexchange = \"\"\nrouting_key = \"q\"\n",
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("sinks.a.url"), "{text}");
        assert!(!text.contains("s3c"), "{text}");
    }
}
