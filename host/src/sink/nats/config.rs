//! The keys of a `kind = "nats"` sink: parsed as written, then resolved
//! into [`NatsOptions`].

use std::time::Duration;

use serde::Deserialize;

use super::{NatsAuth, NatsMode, NatsOptions, NatsServer, Secret, SubjectTemplate, TlsFiles};
use crate::problem::SinkContext;

/// `kind = "nats"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNatsSink {
    /// The server, `nats://HOST:PORT` (`tls://HOST:PORT` to require TLS), or
    /// several separated by commas; a bare `HOST:PORT` means `nats://`.
    /// Credentials go in `user`/`password`, `token`, `nkey` or `creds_file`,
    /// not in the URL.
    pub url: String,
    /// The subject each message is published to. `{key}`, as a whole token,
    /// is replaced by the message's key (`orders.{key}`), encoded so that
    /// it stays one token: see the README.
    pub subject: String,
    /// `"jetstream"` (the default): a JetStream publish whose acknowledgement
    /// (the stream stored it) is awaited before a batch counts as delivered,
    /// deduplicated by `Nats-Msg-Id`. `"core"`: a plain NATS publish, done
    /// once the server took the bytes: at-most-once for subscribers.
    pub mode: Option<String>,
    /// How long to wait for the stream's acknowledgements of a batch, and
    /// for a publish to be taken, in ms before the batch is retried: 100 to
    /// 600000 (default 5000).
    pub ack_timeout_ms: Option<u64>,
    /// User name, with `password`.
    pub user: Option<String>,
    /// Password, with `user`. Write it as `${ENV_VAR}`.
    pub password: Option<String>,
    /// Authentication token. Write it as `${ENV_VAR}`.
    pub token: Option<String>,
    /// NKey seed (`SU…`). Write it as `${ENV_VAR}`.
    pub nkey: Option<String>,
    /// A `.creds` file (user JWT and NKey seed), relative to the config
    /// file's directory unless absolute.
    pub creds_file: Option<String>,
    /// PEM file of the certificate authorities that sign the server's
    /// certificate (default: the system's). Setting it requires TLS.
    pub tls_ca_file: Option<String>,
    /// PEM client certificate for mutual TLS, with `tls_key_file`.
    pub tls_cert_file: Option<String>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<String>,
    /// Require TLS even for `nats://` URLs (default false; implied by
    /// `tls://` URLs and by the other `tls_` keys).
    pub tls_required: Option<bool>,
}

/// Default wait for acknowledgements.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Validates the keys; every problem is reported.
pub fn resolve(raw: RawNatsSink, cx: &mut SinkContext<'_>) -> Option<NatsOptions> {
    let server = resolve_server(&raw.keys(), cx);
    let subject = match SubjectTemplate::parse(&raw.subject) {
        Ok(s) => Some(s),
        Err(what) => {
            cx.problem(
                "subject",
                what,
                "write dot-separated tokens without spaces or wildcards, e.g. \"orders.{key}\" or \"rowhook.orders\"",
            );
            None
        }
    };
    let mode = match raw.mode.as_deref() {
        None | Some("jetstream") => Some(NatsMode::JetStream),
        Some("core") => Some(NatsMode::Core),
        Some(other) => {
            cx.problem(
                "mode",
                format!("`{other}` is not a mode"),
                "use \"jetstream\" (acknowledged by the stream) or \"core\" (at-most-once)",
            );
            None
        }
    };
    let ack_timeout = cx.timeout_ms("ack_timeout_ms", raw.ack_timeout_ms, DEFAULT_ACK_TIMEOUT);
    let NatsServer { servers, auth, tls } = server?;
    Some(NatsOptions {
        servers,
        subject: subject?,
        mode: mode?,
        ack_timeout: ack_timeout?,
        auth,
        tls,
    })
}

/// The keys that say how to reach and authenticate to a NATS server,
/// wherever they are written (a `nats` sink, `[cluster]`).
#[derive(Debug, Clone, Copy)]
pub struct NatsKeys<'a> {
    /// The key the server URLs are under (`url`, `nats`).
    pub url_key: &'a str,
    /// The server URLs, separated by commas.
    pub url: &'a str,
    /// `user`.
    pub user: Option<&'a str>,
    /// `password`.
    pub password: Option<&'a str>,
    /// `token`.
    pub token: Option<&'a str>,
    /// `nkey`.
    pub nkey: Option<&'a str>,
    /// `creds_file`.
    pub creds_file: Option<&'a str>,
    /// `tls_ca_file`.
    pub tls_ca_file: Option<&'a str>,
    /// `tls_cert_file`.
    pub tls_cert_file: Option<&'a str>,
    /// `tls_key_file`.
    pub tls_key_file: Option<&'a str>,
    /// `tls_required`.
    pub tls_required: Option<bool>,
}

impl RawNatsSink {
    fn keys(&self) -> NatsKeys<'_> {
        NatsKeys {
            url_key: "url",
            url: &self.url,
            user: self.user.as_deref(),
            password: self.password.as_deref(),
            token: self.token.as_deref(),
            nkey: self.nkey.as_deref(),
            creds_file: self.creds_file.as_deref(),
            tls_ca_file: self.tls_ca_file.as_deref(),
            tls_cert_file: self.tls_cert_file.as_deref(),
            tls_key_file: self.tls_key_file.as_deref(),
            tls_required: self.tls_required,
        }
    }
}

/// Resolves the servers, authentication and TLS of `keys`; every problem
/// is reported.
pub fn resolve_server(keys: &NatsKeys<'_>, cx: &mut SinkContext<'_>) -> Option<NatsServer> {
    let mut ok = true;
    let servers: Vec<String> = keys
        .url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    if servers.is_empty() {
        cx.problem(keys.url_key, "is empty", "write the server as nats://HOST:4222");
        ok = false;
    }
    for u in &servers {
        if let Err(what) = check_url(u) {
            cx.problem(
                keys.url_key,
                what,
                "write each server as nats://HOST:PORT or tls://HOST:PORT, credentials in user/password, token, nkey or creds_file",
            );
            ok = false;
        }
    }
    let auth = resolve_auth(keys, cx);
    let tls = resolve_tls(keys, &servers, cx);
    if !ok {
        return None;
    }
    Some(NatsServer {
        servers,
        auth: auth?,
        tls: tls?,
    })
}

/// What is wrong with one server URL, if anything.
fn check_url(u: &str) -> Result<(), String> {
    let rest = match u.split_once("://") {
        Some(("nats" | "tls", rest)) => rest,
        Some((scheme, _)) => return Err(format!("`{scheme}://` is not a NATS URL scheme")),
        None => u,
    };
    if rest.contains('@') {
        return Err("holds credentials".into());
    }
    let host_port = rest.trim_end_matches('/');
    let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "4222"));
    if host.is_empty() || host.contains(['/', ' ', '?', '#']) {
        return Err(format!("`{host_port}` is not HOST:PORT"));
    }
    if port.parse::<u16>().is_err() {
        return Err(format!("`{port}` is not a port"));
    }
    Ok(())
}

fn resolve_auth(raw: &NatsKeys<'_>, cx: &mut SinkContext<'_>) -> Option<NatsAuth> {
    let given: Vec<&str> = [
        ("user", raw.user.is_some() || raw.password.is_some()),
        ("token", raw.token.is_some()),
        ("nkey", raw.nkey.is_some()),
        ("creds_file", raw.creds_file.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    if given.len() > 1 {
        cx.problem(
            given[1],
            format!("is set together with {}", given[0]),
            "use one way to authenticate: user and password, token, nkey or creds_file",
        );
        return None;
    }
    let empty_secret = |cx: &mut SinkContext<'_>, key: &str| {
        cx.problem(
            key,
            "is empty",
            format!(
                "set it, e.g. {key} = \"${{NATS_{}}}\" with the variable in rowhook's environment",
                key.to_uppercase()
            ),
        );
    };
    match (raw.user, raw.password, raw.token, raw.nkey, raw.creds_file) {
        (None, None, None, None, None) => Some(NatsAuth::None),
        (Some(user), Some(password), ..) => {
            if user.is_empty() {
                cx.problem("user", "is empty", "name the NATS user");
                return None;
            }
            if password.is_empty() {
                empty_secret(cx, "password");
                return None;
            }
            Some(NatsAuth::UserPassword {
                user: user.to_owned(),
                password: Secret(password.to_owned()),
            })
        }
        (Some(_), None, ..) => {
            cx.problem(
                "password",
                "is missing",
                "set password = \"${NATS_PASSWORD}\" beside user",
            );
            None
        }
        (None, Some(_), ..) => {
            cx.problem("user", "is missing", "set user beside password");
            None
        }
        (.., Some(token), _, _) => {
            if token.is_empty() {
                empty_secret(cx, "token");
                return None;
            }
            Some(NatsAuth::Token(Secret(token.to_owned())))
        }
        (.., Some(seed), _) => {
            if !seed.starts_with("SU") {
                // Never echo the value: it is a secret.
                cx.problem(
                    "nkey",
                    "is not a user NKey seed",
                    "give the seed that starts with SU (from `nsc` or `nk -gen user`), e.g. nkey = \"${NATS_NKEY}\"",
                );
                return None;
            }
            Some(NatsAuth::NKey(Secret(seed.to_owned())))
        }
        (.., Some(path)) => cx.path("creds_file", path).map(NatsAuth::CredsFile),
    }
}

fn resolve_tls(raw: &NatsKeys<'_>, servers: &[String], cx: &mut SinkContext<'_>) -> Option<Option<TlsFiles>> {
    let files = TlsFiles::resolve(raw.tls_ca_file, raw.tls_cert_file, raw.tls_key_file, cx)?;
    let tls_url = servers.iter().any(|u| u.starts_with("tls://"));
    let required = raw.tls_required.unwrap_or(false) || tls_url || files.first_key().is_some();
    if raw.tls_required == Some(false) && required {
        cx.problem(
            "tls_required",
            "is false, but a tls:// URL or a tls_ file asks for TLS",
            "remove tls_required, or the tls_ keys and tls:// URLs",
        );
        return None;
    }
    Some(required.then_some(files))
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, Plan};
    use crate::sink::SinkSpec;

    use super::*;

    fn parse(text: &str) -> Result<Plan, ConfigError> {
        crate::config::parse_with_env(text, &[("NATS_PASSWORD", "s3cret"), ("NATS_NKEY", "SUAEXAMPLESEED")])
    }

    fn nats(text: &str) -> NatsOptions {
        match parse(text).unwrap().sinks.into_values().next() {
            Some(SinkSpec::Nats(o)) => o,
            other => panic!("expected a nats sink, got {other:?}"),
        }
    }

    /// Every problem, as `key: what`; each has a fix.
    fn problems(text: &str) -> Vec<String> {
        crate::config::problem_lines(parse(text))
    }

    #[test]
    fn keys_resolve_with_defaults() {
        let o = nats("[sinks.n]\nkind = \"nats\"\nurl = \"127.0.0.1:4222\"\nsubject = \"orders.{key}\"\n");
        assert_eq!(o.servers, ["127.0.0.1:4222"]);
        assert_eq!(o.subject.render(Some(b"42")), "orders.42");
        assert_eq!(
            (o.mode, o.ack_timeout, &o.auth, &o.tls),
            (NatsMode::JetStream, DEFAULT_ACK_TIMEOUT, &NatsAuth::None, &None)
        );
        let o = nats(
            "[sinks.n]\nkind = \"nats\"\nurl = \"tls://a:4222, tls://b:4333\"\nsubject = \"x\"\nmode = \"core\"\nack_timeout_ms = 250\nuser = \"rowhook\"\npassword = \"${NATS_PASSWORD}\"\ntls_ca_file = \"ca.pem\"\ntls_cert_file = \"c.pem\"\ntls_key_file = \"/k.pem\"\n",
        );
        assert_eq!(o.servers, ["tls://a:4222", "tls://b:4333"]);
        assert_eq!((o.mode, o.ack_timeout), (NatsMode::Core, Duration::from_millis(250)));
        assert_eq!(
            o.auth,
            NatsAuth::UserPassword {
                user: "rowhook".into(),
                password: Secret("s3cret".into())
            }
        );
        assert_eq!(
            o.tls,
            Some(TlsFiles {
                ca_file: Some("/etc/rowhook/ca.pem".into()),
                client_cert: Some(("/etc/rowhook/c.pem".into(), "/k.pem".into())),
            })
        );
        // Secrets do not show in Debug output.
        assert!(!format!("{o:?}").contains("s3cret"));
        let o = nats("[sinks.n]\nkind = \"nats\"\nurl = \"nats://h\"\nsubject = \"x\"\nnkey = \"${NATS_NKEY}\"\n");
        assert_eq!(o.auth, NatsAuth::NKey(Secret("SUAEXAMPLESEED".into())));
        let o = nats(
            "[sinks.n]\nkind = \"nats\"\nurl = \"nats://h\"\nsubject = \"x\"\ncreds_file = \"u.creds\"\ntls_required = true\n",
        );
        assert_eq!(o.auth, NatsAuth::CredsFile("/etc/rowhook/u.creds".into()));
        assert_eq!(o.tls, Some(TlsFiles::default()));
    }

    #[test]
    fn problems_name_the_key() {
        assert_eq!(
            problems(
                "[sinks.n]\nkind = \"nats\"\nurl = \"http://h:1, nats://u:p@h, h:port\"\nsubject = \"orders. {key}\"\nmode = \"stream\"\nack_timeout_ms = 5\n"
            ),
            [
                "sinks.n.url: `http://` is not a NATS URL scheme",
                "sinks.n.url: holds credentials",
                "sinks.n.url: `port` is not a port",
                "sinks.n.subject: holds whitespace",
                "sinks.n.mode: `stream` is not a mode",
                "sinks.n.ack_timeout_ms: 5 is out of range",
            ]
        );
        assert_eq!(
            problems("[sinks.n]\nkind = \"nats\"\nurl = \"h\"\nsubject = \"a\"\nuser = \"u\"\ntoken = \"t\"\n"),
            ["sinks.n.token: is set together with user"]
        );
        assert_eq!(
            problems("[sinks.n]\nkind = \"nats\"\nurl = \"h\"\nsubject = \"a\"\nuser = \"u\"\n"),
            ["sinks.n.password: is missing"]
        );
        assert_eq!(
            problems("[sinks.n]\nkind = \"nats\"\nurl = \"h\"\nsubject = \"a\"\nnkey = \"not-a-seed\"\n"),
            ["sinks.n.nkey: is not a user NKey seed"]
        );
        assert_eq!(
            problems("[sinks.n]\nkind = \"nats\"\nurl = \"h\"\nsubject = \"a\"\ntls_cert_file = \"c\"\n"),
            ["sinks.n.tls_key_file: is missing"]
        );
        assert_eq!(
            problems("[sinks.n]\nkind = \"nats\"\nurl = \"tls://h\"\nsubject = \"a\"\ntls_required = false\n"),
            ["sinks.n.tls_required: is false, but a tls:// URL or a tls_ file asks for TLS"]
        );
        for (subject, what) in [
            ("", "is empty"),
            ("a..b", "has an empty token"),
            ("a.*", "holds the wildcard `*`"),
            ("a.>", "holds the wildcard `>`"),
            ("a.k{key}", "has {key} inside a token; make it a token of its own"),
            ("{key}.{key}", "has {key} more than once"),
        ] {
            assert_eq!(
                problems(&format!(
                    "[sinks.n]\nkind = \"nats\"\nurl = \"h\"\nsubject = \"{subject}\"\n"
                )),
                [format!("sinks.n.subject: {what}")],
                "{subject}"
            );
        }
        match parse("[sinks.n]\nkind = \"nats\"\nurl = \"h\"\nsubject = \"a\"\nstream = \"S\"\n") {
            Err(ConfigError::Syntax { line, key, message, .. }) => {
                assert_eq!((line, key.as_deref()), (Some(5), Some("sinks.n.stream")), "{message}");
                assert!(message.contains("unknown field `stream`"), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }
}
