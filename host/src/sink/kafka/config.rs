//! The keys of a `kind = "kafka"` sink: parsed as written, then resolved
//! into [`KafkaOptions`].

use std::time::Duration;

use serde::Deserialize;

use super::{Auth, Codec, KafkaOptions, Mechanism, Secret, TlsFiles};
use crate::problem::SinkContext;

/// `kind = "kafka"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafkaSink {
    /// The bootstrap brokers, `HOST:PORT`, separated by commas (Kafka's
    /// `bootstrap.servers`); the rest of the cluster is learnt from them.
    pub brokers: String,
    /// The topic records are written to. It must exist: rowhook does not
    /// create topics.
    pub topic: String,
    /// The `client.id` the brokers log and quota by (default `rowhook`).
    pub client_id: Option<String>,
    /// How long the brokers may take to acknowledge a batch (every in-sync
    /// replica stored it), in ms before the batch is retried: 100 to
    /// 600000 (default 30000).
    pub ack_timeout_ms: Option<u64>,
    /// How record batches are compressed: `"none"` (the default), `"gzip"`
    /// or `"zstd"` (Kafka 2.1 and later).
    pub compression: Option<String>,
    /// SASL mechanism: `"PLAIN"`, `"SCRAM-SHA-256"` or `"SCRAM-SHA-512"`;
    /// needs `user` and `password`. Unset: no authentication.
    pub sasl_mechanism: Option<String>,
    /// SASL user, with `sasl_mechanism`.
    pub user: Option<String>,
    /// SASL password. Write it as `${ENV_VAR}`.
    pub password: Option<String>,
    /// Speak TLS to the brokers (default false; implied by the `tls_` keys).
    pub tls: Option<bool>,
    /// PEM file of the certificate authorities that sign the brokers'
    /// certificates (default: the system's).
    pub tls_ca_file: Option<String>,
    /// PEM client certificate for mutual TLS, with `tls_key_file`.
    pub tls_cert_file: Option<String>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<String>,
}

/// Default wait for acknowledgements.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Validates the keys; every problem is reported.
pub fn resolve(raw: RawKafkaSink, cx: &mut SinkContext<'_>) -> Option<KafkaOptions> {
    let mut ok = true;
    let mut brokers = Vec::new();
    for b in raw.brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        match parse_broker(b) {
            Ok(hp) => brokers.push(hp),
            Err(what) => {
                cx.problem(
                    "brokers",
                    what,
                    "write each broker as HOST:PORT, e.g. \"kafka1:9092,kafka2:9092\"",
                );
                ok = false;
            }
        }
    }
    if brokers.is_empty() && ok {
        cx.problem(
            "brokers",
            "is empty",
            "write the bootstrap brokers as HOST:PORT, e.g. \"127.0.0.1:9092\"",
        );
        ok = false;
    }
    if let Err(what) = check_topic(&raw.topic) {
        cx.problem("topic", what, "name the topic: up to 249 of a-z A-Z 0-9 . _ -");
        ok = false;
    }
    let client_id = raw.client_id.clone().unwrap_or_else(|| "rowhook".to_owned());
    if client_id.is_empty() {
        cx.problem(
            "client_id",
            "is empty",
            "remove it (the default is rowhook) or name the client",
        );
        ok = false;
    }
    let ack_timeout = cx.timeout_ms("ack_timeout_ms", raw.ack_timeout_ms, DEFAULT_ACK_TIMEOUT);
    let compression = match raw.compression.as_deref() {
        None | Some("none") => Some(Codec::None),
        Some("gzip") => Some(Codec::Gzip),
        Some("zstd") => Some(Codec::Zstd),
        Some(other) => {
            cx.problem(
                "compression",
                format!("`{other}` is not a codec rowhook writes"),
                "use \"none\", \"gzip\" or \"zstd\"",
            );
            None
        }
    };
    let auth = resolve_auth(&raw, cx);
    let files = TlsFiles::resolve(
        raw.tls_ca_file.as_deref(),
        raw.tls_cert_file.as_deref(),
        raw.tls_key_file.as_deref(),
        cx,
    );
    let tls = match (raw.tls, files) {
        (_, None) => None,
        (Some(false), Some(f)) if f.first_key().is_some() => {
            cx.problem(
                "tls",
                format!("is false, but {} asks for TLS", f.first_key().expect("set")),
                "remove tls = false, or the tls_ keys",
            );
            None
        }
        (tls, Some(f)) => Some((tls.unwrap_or(false) || f.first_key().is_some()).then_some(f)),
    };
    if !ok {
        return None;
    }
    Some(KafkaOptions {
        brokers,
        topic: raw.topic,
        client_id,
        ack_timeout: ack_timeout?,
        compression: compression?,
        auth: auth?,
        tls: tls?,
    })
}

/// `HOST:PORT` (`[V6]:PORT` for IPv6).
fn parse_broker(text: &str) -> Result<(String, u16), String> {
    if text.contains("://") {
        return Err(format!("`{text}` has a scheme; brokers are written HOST:PORT"));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("`{text}` has no port"));
    };
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || host.contains(['/', ' ', '@', '?', '#']) {
        return Err(format!("`{text}` is not HOST:PORT"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_owned(), p)),
        _ => Err(format!("`{port}` is not a port")),
    }
}

/// What Kafka accepts as a topic name.
fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("is empty".into());
    }
    if topic == "." || topic == ".." {
        return Err(format!("`{topic}` is not a topic name"));
    }
    if topic.len() > 249 {
        return Err(format!("is {} characters long, more than 249", topic.len()));
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("holds `{c}`"));
    }
    Ok(())
}

fn resolve_auth(raw: &RawKafkaSink, cx: &mut SinkContext<'_>) -> Option<Auth> {
    let mechanism = match raw.sasl_mechanism.as_deref() {
        None => None,
        Some(m) => match m.to_ascii_uppercase().as_str() {
            "PLAIN" => Some(Mechanism::Plain),
            "SCRAM-SHA-256" => Some(Mechanism::ScramSha256),
            "SCRAM-SHA-512" => Some(Mechanism::ScramSha512),
            _ => {
                cx.problem(
                    "sasl_mechanism",
                    format!("`{m}` is not a SASL mechanism rowhook speaks"),
                    "use \"SCRAM-SHA-512\", \"SCRAM-SHA-256\" or \"PLAIN\"",
                );
                return None;
            }
        },
    };
    match (mechanism, &raw.user, &raw.password) {
        (None, None, None) => Some(Auth::None),
        (None, ..) => {
            cx.problem(
                "sasl_mechanism",
                "is missing",
                "set sasl_mechanism = \"SCRAM-SHA-512\" (or SCRAM-SHA-256, PLAIN) beside user and password",
            );
            None
        }
        (Some(_), None, _) => {
            cx.problem("user", "is missing", "set user beside sasl_mechanism");
            None
        }
        (Some(_), Some(_), None) => {
            cx.problem(
                "password",
                "is missing",
                "set password = \"${KAFKA_PASSWORD}\" beside user",
            );
            None
        }
        (Some(mechanism), Some(user), Some(password)) => {
            if user.is_empty() {
                cx.problem("user", "is empty", "name the SASL user");
                return None;
            }
            if password.is_empty() {
                cx.problem(
                    "password",
                    "is empty",
                    "set it, e.g. password = \"${KAFKA_PASSWORD}\" with the variable in rowhook's environment",
                );
                return None;
            }
            Some(Auth::Sasl {
                mechanism,
                user: user.clone(),
                password: Secret(password.clone()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, Plan};
    use crate::sink::SinkSpec;

    use super::*;

    fn parse(text: &str) -> Result<Plan, ConfigError> {
        crate::config::parse_with_env(text, &[("KAFKA_PASSWORD", "s3cret")])
    }

    fn kafka(text: &str) -> KafkaOptions {
        match parse(text).unwrap().sinks.into_values().next() {
            Some(SinkSpec::Kafka(o)) => o,
            other => panic!("expected a kafka sink, got {other:?}"),
        }
    }

    fn problems(text: &str) -> Vec<String> {
        crate::config::problem_lines(parse(text))
    }

    #[test]
    fn keys_resolve_with_defaults() {
        let o = kafka("[sinks.k]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\ntopic = \"orders\"\n");
        assert_eq!(o.brokers, [("127.0.0.1".to_owned(), 9092)]);
        assert_eq!(
            (
                o.topic.as_str(),
                o.client_id.as_str(),
                o.ack_timeout,
                o.compression,
                &o.auth,
                &o.tls
            ),
            (
                "orders",
                "rowhook",
                DEFAULT_ACK_TIMEOUT,
                Codec::None,
                &Auth::None,
                &None
            )
        );
        let o = kafka(
            "[sinks.k]\nkind = \"kafka\"\nbrokers = \"a:9092, [::1]:9093\"\ntopic = \"shop.orders_v-2\"\nclient_id = \"cdc\"\nack_timeout_ms = 250\ncompression = \"zstd\"\nsasl_mechanism = \"scram-sha-512\"\nuser = \"rowhook\"\npassword = \"${KAFKA_PASSWORD}\"\ntls_ca_file = \"ca.pem\"\n",
        );
        assert_eq!(o.brokers, [("a".to_owned(), 9092), ("::1".to_owned(), 9093)]);
        assert_eq!(
            (o.client_id.as_str(), o.ack_timeout, o.compression),
            ("cdc", Duration::from_millis(250), Codec::Zstd)
        );
        assert_eq!(
            o.auth,
            Auth::Sasl {
                mechanism: Mechanism::ScramSha512,
                user: "rowhook".into(),
                password: Secret("s3cret".into())
            }
        );
        assert_eq!(
            o.tls,
            Some(TlsFiles {
                ca_file: Some("/etc/rowhook/ca.pem".into()),
                client_cert: None,
            })
        );
        assert!(!format!("{o:?}").contains("s3cret"));
        let o = kafka("[sinks.k]\nkind = \"kafka\"\nbrokers = \"a:1\"\ntopic = \"t\"\ntls = true\n");
        assert_eq!(o.tls, Some(TlsFiles::default()));
    }

    #[test]
    fn problems_name_the_key() {
        assert_eq!(
            problems(
                "[sinks.k]\nkind = \"kafka\"\nbrokers = \"kafka://a:1, b, c:port\"\ntopic = \"a b\"\nack_timeout_ms = 5\ncompression = \"lz4\"\nsasl_mechanism = \"GSSAPI\"\n"
            ),
            [
                "sinks.k.brokers: `kafka://a:1` has a scheme; brokers are written HOST:PORT",
                "sinks.k.brokers: `b` has no port",
                "sinks.k.brokers: `port` is not a port",
                "sinks.k.topic: holds ` `",
                "sinks.k.ack_timeout_ms: 5 is out of range",
                "sinks.k.compression: `lz4` is not a codec rowhook writes",
                "sinks.k.sasl_mechanism: `GSSAPI` is not a SASL mechanism rowhook speaks",
            ]
        );
        assert_eq!(
            problems("[sinks.k]\nkind = \"kafka\"\nbrokers = \" \"\ntopic = \"\"\n"),
            ["sinks.k.brokers: is empty", "sinks.k.topic: is empty"]
        );
        assert_eq!(
            problems("[sinks.k]\nkind = \"kafka\"\nbrokers = \"a:1\"\ntopic = \"t\"\nuser = \"u\"\npassword = \"p\"\n"),
            ["sinks.k.sasl_mechanism: is missing"]
        );
        assert_eq!(
            problems(
                "[sinks.k]\nkind = \"kafka\"\nbrokers = \"a:1\"\ntopic = \"t\"\nsasl_mechanism = \"PLAIN\"\nuser = \"u\"\n"
            ),
            ["sinks.k.password: is missing"]
        );
        assert_eq!(
            problems(
                "[sinks.k]\nkind = \"kafka\"\nbrokers = \"a:1\"\ntopic = \"t\"\ntls = false\ntls_ca_file = \"ca\"\n"
            ),
            ["sinks.k.tls: is false, but tls_ca_file asks for TLS"]
        );
        match parse("[sinks.k]\nkind = \"kafka\"\nbrokers = \"a:1\"\ntopic = \"t\"\nacks = 1\n") {
            Err(ConfigError::Syntax { line, key, message, .. }) => {
                assert_eq!((line, key.as_deref()), (Some(5), Some("sinks.k.acks")), "{message}");
                assert!(message.contains("unknown field `acks`"), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }
}
