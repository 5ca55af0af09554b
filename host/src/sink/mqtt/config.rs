//! The keys of a `kind = "mqtt"` sink: parsed as written, then resolved
//! into [`MqttOptions`].

use std::time::Duration;

use serde::Deserialize;

use super::{BrokerUrl, MqttOptions, Protocol, TopicTemplate};
use crate::problem::SinkContext;
use crate::sink::tls::{Secret, TlsFiles};

/// `kind = "mqtt"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqttSink {
    /// The broker, `mqtt://HOST[:PORT]` (port 1883 by default) or
    /// `mqtts://HOST[:PORT]` for TLS (port 8883); a bare `HOST:PORT` means
    /// `mqtt://`. Credentials go in `user`/`password`, not in the URL.
    pub url: String,
    /// The topic each message is published to. `{key}` (at most once) is
    /// replaced by the message's key, encoded so that it stays one topic
    /// level: see the README.
    pub topic: String,
    /// `"5"` (the default): MQTT 5, with the change id in user properties and
    /// the broker's limits read from its CONNACK. `"3.1.1"`: MQTT 3.1.1.
    pub protocol: Option<String>,
    /// `1` (the default): a batch counts as delivered once the broker
    /// acknowledged every publish (PUBACK). `0`: once the publishes were
    /// written to the connection: at-most-once.
    pub qos: Option<u8>,
    /// Publish with the retain flag (default false): the broker keeps the
    /// last message of each topic for subscribers that come later.
    pub retain: Option<bool>,
    /// The MQTT client identifier (default `rowhook-<sink name>`). Brokers
    /// drop an older connection with the same id, so give each rowhook
    /// process its own.
    pub client_id: Option<String>,
    /// User name, with `password`.
    pub user: Option<String>,
    /// Password, with `user`. Write it as `${ENV_VAR}`.
    pub password: Option<String>,
    /// PEM file of the certificate authorities that sign the broker's
    /// certificate (default: the system's). Needs an `mqtts://` URL.
    pub tls_ca_file: Option<String>,
    /// PEM client certificate for mutual TLS, with `tls_key_file`.
    pub tls_cert_file: Option<String>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<String>,
    /// How long to wait for the broker (its CONNACK, the next PUBACK of a
    /// batch) in ms before the batch is retried: 100 to 600000 (default 5000).
    pub ack_timeout_ms: Option<u64>,
    /// The keep-alive interval asked of the broker, in seconds: 5 to 65535
    /// (default 30).
    pub keep_alive_s: Option<u64>,
    /// The most publishes awaiting their PUBACK at once: 1 to 65535
    /// (default 1024). MQTT 5 brokers may ask for fewer (Receive Maximum).
    pub inflight: Option<u32>,
    /// The largest payload the broker takes, in bytes, when it does not say
    /// so itself (MQTT 3.1.1 has no way to; an MQTT 5 broker says it with
    /// its Maximum Packet Size): Mosquitto's `message_size_limit`, for one.
    /// 1 to 268435455 (default: no limit below the protocol's).
    pub max_payload: Option<u32>,
}

/// Default wait for the broker.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Default keep-alive.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Default in-flight window.
pub const DEFAULT_INFLIGHT: u16 = 1024;
/// The largest remaining length of an MQTT packet (what a variable byte
/// integer holds): no payload can be larger.
pub const PROTOCOL_MAX_REMAINING: u32 = 268_435_455;

/// Validates the keys; every problem is reported.
pub fn resolve(raw: RawMqttSink, cx: &mut SinkContext<'_>) -> Option<MqttOptions> {
    let mut ok = true;
    let url = match BrokerUrl::parse(&raw.url) {
        Ok(u) => Some(u),
        Err(what) => {
            cx.problem(
                "url",
                what,
                "write the broker as mqtt://HOST:1883 or mqtts://HOST:8883, credentials in user and password",
            );
            None
        }
    };
    let topic = match TopicTemplate::parse(&raw.topic) {
        Ok(t) => Some(t),
        Err(what) => {
            cx.problem(
                "topic",
                what,
                "write levels separated by /, without + # or a leading $, e.g. \"shop/orders/{key}\"",
            );
            None
        }
    };
    let protocol = match raw.protocol.as_deref() {
        None | Some("5" | "5.0") => Some(Protocol::V5),
        Some("3.1.1" | "4") => Some(Protocol::V311),
        Some(other) => {
            cx.problem(
                "protocol",
                format!("`{other}` is not an MQTT version this sink speaks"),
                "use \"5\" (the default) or \"3.1.1\"",
            );
            None
        }
    };
    let qos = match raw.qos {
        None => Some(1),
        Some(q @ (0 | 1)) => Some(q),
        Some(2) => {
            cx.problem(
                "qos",
                "2 is not supported",
                "use 1 (acknowledged; consumers drop repeats by the change id) or 0 (at-most-once)",
            );
            None
        }
        Some(q) => {
            cx.problem("qos", format!("{q} is not a QoS"), "use 1 (the default) or 0");
            None
        }
    };
    let client_id = match raw.client_id.clone() {
        Some(id) if id.is_empty() || id.contains('\0') || id.len() > 65_535 => {
            cx.problem(
                "client_id",
                "is empty, too long or holds NUL",
                "leave it out (rowhook-<sink name>) or name the client, e.g. \"rowhook-orders-1\"",
            );
            ok = false;
            None
        }
        id => id,
    };
    let ack_timeout = cx.timeout_ms("ack_timeout_ms", raw.ack_timeout_ms, DEFAULT_ACK_TIMEOUT);
    let keep_alive = cx
        .ranged(
            "keep_alive_s",
            raw.keep_alive_s,
            5..=65_535,
            DEFAULT_KEEP_ALIVE.as_secs(),
            "use 5 to 65535 s (default 30)",
        )
        .map(Duration::from_secs);
    let inflight = cx
        .ranged(
            "inflight",
            raw.inflight.map(u64::from),
            1..=65_535,
            u64::from(DEFAULT_INFLIGHT),
            "use 1 to 65535 (default 1024)",
        )
        .map(|n| n as u16);
    let max_payload = match raw.max_payload {
        None => Some(None),
        Some(n @ 1..=PROTOCOL_MAX_REMAINING) => Some(Some(n)),
        Some(n) => {
            cx.problem(
                "max_payload",
                format!("{n} is out of range"),
                "use 1 to 268435455 bytes (the broker's message size limit), or leave it out",
            );
            None
        }
    };
    let auth = resolve_auth(&raw, cx);
    let tls = resolve_tls(&raw, url.as_ref(), cx);
    if !ok {
        return None;
    }
    Some(MqttOptions {
        url: url?,
        topic: topic?,
        protocol: protocol?,
        qos: qos?,
        retain: raw.retain.unwrap_or(false),
        client_id,
        auth: auth?,
        tls: tls?,
        ack_timeout: ack_timeout?,
        keep_alive: keep_alive?,
        inflight: inflight?,
        max_payload: max_payload?,
    })
}

fn resolve_auth(raw: &RawMqttSink, cx: &mut SinkContext<'_>) -> Option<Option<(String, Secret)>> {
    match (&raw.user, &raw.password) {
        (None, None) => Some(None),
        (Some(user), Some(password)) => {
            if user.is_empty() {
                cx.problem("user", "is empty", "name the MQTT user");
                return None;
            }
            if password.is_empty() {
                // Never echo the value: it is a secret.
                cx.problem(
                    "password",
                    "is empty",
                    "set it, e.g. password = \"${MQTT_PASSWORD}\" with the variable in rowhook's environment",
                );
                return None;
            }
            Some(Some((user.clone(), Secret(password.clone()))))
        }
        (Some(_), None) => {
            cx.problem(
                "password",
                "is missing",
                "set password = \"${MQTT_PASSWORD}\" beside user",
            );
            None
        }
        (None, Some(_)) => {
            cx.problem("user", "is missing", "set user beside password");
            None
        }
    }
}

fn resolve_tls(raw: &RawMqttSink, url: Option<&BrokerUrl>, cx: &mut SinkContext<'_>) -> Option<Option<TlsFiles>> {
    let files = TlsFiles::resolve(
        raw.tls_ca_file.as_deref(),
        raw.tls_cert_file.as_deref(),
        raw.tls_key_file.as_deref(),
        cx,
    )?;
    let url = url?;
    if let Some(key) = files.first_key().filter(|_| !url.tls) {
        cx.problem(
            key,
            "is set, but url is mqtt:// (no TLS)",
            format!("write url = \"mqtts://{}:8883\", or remove the tls_ keys", url.host),
        );
        return None;
    }
    Some(url.tls.then_some(files))
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, Plan};
    use crate::sink::SinkSpec;

    use super::*;

    fn parse(text: &str) -> Result<Plan, ConfigError> {
        crate::config::parse_with_env(text, &[("MQTT_PASSWORD", "s3cret")])
    }

    fn mqtt(text: &str) -> MqttOptions {
        match parse(text).unwrap().sinks.into_values().next() {
            Some(SinkSpec::Mqtt(o)) => o,
            other => panic!("expected an mqtt sink, got {other:?}"),
        }
    }

    /// Every problem, as `key: what`; each has a fix.
    fn problems(text: &str) -> Vec<String> {
        crate::config::problem_lines(parse(text))
    }

    #[test]
    fn keys_resolve_with_defaults() {
        let o = mqtt("[sinks.m]\nkind = \"mqtt\"\nurl = \"127.0.0.1\"\ntopic = \"shop/orders/{key}\"\n");
        assert_eq!(
            o.url,
            BrokerUrl {
                host: "127.0.0.1".into(),
                port: 1883,
                tls: false
            }
        );
        assert_eq!(o.topic.render(Some(b"42")), "shop/orders/42");
        assert_eq!((o.protocol, o.qos, o.retain), (Protocol::V5, 1, false));
        assert_eq!((&o.client_id, &o.auth, &o.tls), (&None, &None, &None));
        assert_eq!(
            (o.ack_timeout, o.keep_alive, o.inflight, o.max_payload),
            (DEFAULT_ACK_TIMEOUT, DEFAULT_KEEP_ALIVE, DEFAULT_INFLIGHT, None)
        );
        let o = mqtt(
            "[sinks.m]\nkind = \"mqtt\"\nurl = \"mqtts://broker.example\"\ntopic = \"x\"\nprotocol = \"3.1.1\"\nqos = 0\nretain = true\nclient_id = \"rh-1\"\nuser = \"rowhook\"\npassword = \"${MQTT_PASSWORD}\"\ntls_ca_file = \"ca.pem\"\ntls_cert_file = \"c.pem\"\ntls_key_file = \"/k.pem\"\nack_timeout_ms = 250\nkeep_alive_s = 60\ninflight = 10\nmax_payload = 1048576\n",
        );
        assert_eq!((o.url.port, o.url.tls), (8883, true));
        assert_eq!((o.protocol, o.qos, o.retain), (Protocol::V311, 0, true));
        assert_eq!(o.client_id.as_deref(), Some("rh-1"));
        assert_eq!(o.auth, Some(("rowhook".into(), Secret("s3cret".into()))));
        assert_eq!(
            o.tls,
            Some(TlsFiles {
                ca_file: Some("/etc/rowhook/ca.pem".into()),
                client_cert: Some(("/etc/rowhook/c.pem".into(), "/k.pem".into())),
            })
        );
        assert_eq!(
            (o.ack_timeout, o.keep_alive, o.inflight, o.max_payload),
            (Duration::from_millis(250), Duration::from_secs(60), 10, Some(1 << 20))
        );
        // Secrets do not show in Debug output.
        assert!(!format!("{o:?}").contains("s3cret"));
        let o = mqtt("[sinks.m]\nkind = \"mqtt\"\nurl = \"mqtt://h:1884\"\ntopic = \"t\"\nprotocol = \"5\"\n");
        assert_eq!((o.url.host.as_str(), o.url.port, o.protocol), ("h", 1884, Protocol::V5));
    }

    #[test]
    fn problems_name_the_key() {
        assert_eq!(
            problems(
                "[sinks.m]\nkind = \"mqtt\"\nurl = \"http://h\"\ntopic = \"a/+/b\"\nprotocol = \"3\"\nqos = 2\nack_timeout_ms = 5\nkeep_alive_s = 1\ninflight = 0\nmax_payload = 0\nclient_id = \"\"\n"
            ),
            [
                "sinks.m.url: `http://` is not an MQTT URL scheme",
                "sinks.m.topic: holds the wildcard `+`",
                "sinks.m.protocol: `3` is not an MQTT version this sink speaks",
                "sinks.m.qos: 2 is not supported",
                "sinks.m.client_id: is empty, too long or holds NUL",
                "sinks.m.ack_timeout_ms: 5 is out of range",
                "sinks.m.keep_alive_s: 1 is out of range",
                "sinks.m.inflight: 0 is out of range",
                "sinks.m.max_payload: 0 is out of range",
            ]
        );
        assert_eq!(
            problems("[sinks.m]\nkind = \"mqtt\"\nurl = \"mqtt://u:p@h\"\ntopic = \"a\"\nuser = \"u\"\n"),
            ["sinks.m.url: holds credentials", "sinks.m.password: is missing"]
        );
        assert_eq!(
            problems("[sinks.m]\nkind = \"mqtt\"\nurl = \"h:port\"\ntopic = \"a\"\npassword = \"${MQTT_PASSWORD}\"\n"),
            ["sinks.m.url: `port` is not a port", "sinks.m.user: is missing"]
        );
        assert_eq!(
            problems("[sinks.m]\nkind = \"mqtt\"\nurl = \"mqtt://h\"\ntopic = \"a\"\ntls_ca_file = \"ca.pem\"\n"),
            ["sinks.m.tls_ca_file: is set, but url is mqtt:// (no TLS)"]
        );
        assert_eq!(
            problems("[sinks.m]\nkind = \"mqtt\"\nurl = \"mqtts://h\"\ntopic = \"a\"\ntls_cert_file = \"c\"\n"),
            ["sinks.m.tls_key_file: is missing"]
        );
        for (topic, what) in [
            ("", "is empty"),
            ("a/#", "holds the wildcard `#`"),
            ("$$SYS/x", "starts with $, which brokers keep for themselves"),
            ("{key}/{key}", "has {key} more than once"),
        ] {
            assert_eq!(
                problems(&format!(
                    "[sinks.m]\nkind = \"mqtt\"\nurl = \"h\"\ntopic = \"{topic}\"\n"
                )),
                [format!("sinks.m.topic: {what}")],
                "{topic}"
            );
        }
        match parse("[sinks.m]\nkind = \"mqtt\"\nurl = \"h\"\ntopic = \"a\"\nsubject = \"S\"\n") {
            Err(ConfigError::Syntax { line, key, message, .. }) => {
                assert_eq!((line, key.as_deref()), (Some(5), Some("sinks.m.subject")), "{message}");
                assert!(message.contains("unknown field `subject`"), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }
}
