//! The keys of a `kind = "redis"` sink: parsed as written, then resolved
//! into [`RedisOptions`].

use std::time::Duration;

use serde::Deserialize;

use super::{ListSide, Mode, RedisOptions, RedisUrl};
use crate::problem::SinkContext;

/// Default `timeout_ms`: how long connecting, or one batch's reply, may take.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// `kind = "redis"`. Set exactly one of `stream`, `list`, `channel`,
/// `key_prefix` and `hash`: it says where each message goes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedisSink {
    /// `redis://[USER:PASSWORD@]HOST[:PORT][/DB]`, `rediss://…` for TLS (the
    /// server's certificate is checked against the system's roots), or
    /// `redis+unix:///PATH`. Take the password from the environment:
    /// `url = "redis://rowhook:${REDIS_PASSWORD}@10.0.0.5:6379/0"`.
    pub url: String,
    /// `XADD` each message to this stream, as the fields `payload`, `id`
    /// (the change id) and `key` (when the message has one).
    pub stream: Option<String>,
    /// With `stream`: trim it to about this many entries (`MAXLEN ~ N`), at
    /// least 1. No trimming when absent.
    pub maxlen: Option<u64>,
    /// Push each payload onto this list (a table as a job queue).
    pub list: Option<String>,
    /// With `list`: the end pushed onto, `"right"` (`RPUSH`, the default;
    /// consumers `LPOP`/`BLPOP`) or `"left"` (`LPUSH`; consumers `RPOP`/`BRPOP`).
    pub side: Option<String>,
    /// `PUBLISH` each payload to this channel. Subscribers that are not
    /// connected at that moment miss it: Redis keeps nothing.
    pub channel: Option<String>,
    /// `SET` the key `key_prefix` + the message's key to its payload (the
    /// latest row wins). May be empty: the message's key as it is.
    pub key_prefix: Option<String>,
    /// `HSET` the field named by the message's key, in this hash, to its payload.
    pub hash: Option<String>,
    /// With `key_prefix`: each key expires this long after its last write;
    /// with `hash`: the whole hash does. 1 ms to 10 years; no expiry when absent.
    pub ttl_ms: Option<u64>,
    /// How long connecting, or waiting for one batch's reply, may take
    /// before the write counts as unavailable and is retried: 100 to 600000 ms
    /// (default 10000).
    pub timeout_ms: Option<u64>,
}

/// The longest `ttl_ms`: ten years.
const MAX_TTL_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// Validates the keys; every problem is reported.
pub fn resolve(raw: RawRedisSink, cx: &mut SinkContext<'_>) -> Option<RedisOptions> {
    let url = match RedisUrl::parse(&raw.url) {
        Ok(u) => Some(u),
        Err(what) => {
            cx.problem(
                "url",
                what,
                "write it as redis://[USER:PASSWORD@]HOST[:PORT][/DB], rediss://… for TLS, with the password as ${ENV}",
            );
            None
        }
    };

    let mut ok = true;
    let mut name = |cx: &mut SinkContext<'_>, key: &str, value: Option<String>, what_for: &str| -> Option<String> {
        let v = value?;
        if v.is_empty() {
            cx.problem(key, "is empty", format!("name the {what_for}"));
            ok = false;
        }
        Some(v)
    };
    let stream = name(cx, "stream", raw.stream, "stream to XADD to");
    let list = name(cx, "list", raw.list, "list to push onto");
    let channel = name(cx, "channel", raw.channel, "channel to PUBLISH to");
    let hash = name(cx, "hash", raw.hash, "hash to HSET in");
    // An empty prefix is meaningful: the message's key as it is.
    let key_prefix = raw.key_prefix;

    let given: Vec<&str> = [
        ("stream", stream.is_some()),
        ("list", list.is_some()),
        ("channel", channel.is_some()),
        ("key_prefix", key_prefix.is_some()),
        ("hash", hash.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    match given.as_slice() {
        [] => {
            cx.problem(
                "stream",
                "no destination is set",
                "set one of stream, list, channel, key_prefix or hash",
            );
            ok = false;
        }
        [_] => {}
        [first, rest @ ..] => {
            for k in rest {
                cx.problem(
                    k,
                    format!("is set beside {first}, and a redis sink writes to one destination"),
                    format!("keep one of {first} and {k}, or configure a second sink"),
                );
            }
            ok = false;
        }
    }

    if let Some(n) = raw.maxlen {
        if stream.is_none() {
            cx.problem("maxlen", "applies only to a stream", "remove it, or set stream");
            ok = false;
        } else if n == 0 {
            cx.problem(
                "maxlen",
                "0 would trim every entry away",
                "use at least 1, or remove it to keep every entry",
            );
            ok = false;
        }
    }
    let side = match raw.side.as_deref() {
        None | Some("right") => ListSide::Right,
        Some("left") => ListSide::Left,
        Some(other) => {
            cx.problem(
                "side",
                format!("`{other}` is not a side"),
                "use \"right\" (RPUSH) or \"left\" (LPUSH)",
            );
            ok = false;
            ListSide::Right
        }
    };
    if raw.side.is_some() && list.is_none() {
        cx.problem("side", "applies only to a list", "remove it, or set list");
        ok = false;
    }
    let ttl = match raw.ttl_ms {
        None => None,
        Some(_) if key_prefix.is_none() && hash.is_none() => {
            cx.problem(
                "ttl_ms",
                "applies only to key_prefix or hash",
                "remove it, or write keys with key_prefix or hash",
            );
            ok = false;
            None
        }
        Some(ms) if (1..=MAX_TTL_MS).contains(&ms) => Some(Duration::from_millis(ms)),
        Some(ms) => {
            cx.problem(
                "ttl_ms",
                format!("{ms} is out of range"),
                "use 1 ms to 10 years (315360000000), or remove it to never expire",
            );
            ok = false;
            None
        }
    };
    let timeout_ms = cx
        .timeout_ms("timeout_ms", raw.timeout_ms, Duration::from_millis(DEFAULT_TIMEOUT_MS))
        .map(|d| d.as_millis() as u64)
        .unwrap_or_else(|| {
            ok = false;
            DEFAULT_TIMEOUT_MS
        });

    let mode = if let Some(stream) = stream {
        Mode::Stream {
            stream,
            maxlen: raw.maxlen,
        }
    } else if let Some(list) = list {
        Mode::List { list, side }
    } else if let Some(channel) = channel {
        Mode::Channel { channel }
    } else if let Some(prefix) = key_prefix {
        Mode::Keys { prefix, ttl }
    } else {
        Mode::Hash { hash: hash?, ttl }
    };
    let url = url?;
    ok.then_some(RedisOptions {
        url,
        mode,
        timeout: Duration::from_millis(timeout_ms),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ConfigError, Plan};
    use crate::sink::SinkSpec;

    use super::*;

    fn parse(text: &str) -> Result<Plan, ConfigError> {
        Plan::parse(text, Path::new("/etc/rowhook/rowhook.toml"), |v| {
            (v == "REDIS_PASSWORD").then(|| "s3cret".to_owned())
        })
    }

    fn redis(text: &str) -> RedisOptions {
        match parse(text).unwrap().sinks.into_values().next() {
            Some(SinkSpec::Redis(r)) => r,
            other => panic!("expected a redis sink, got {other:?}"),
        }
    }

    /// Every problem, as `key: what`; each has a fix.
    fn problems(text: &str) -> Vec<String> {
        crate::config::problem_lines(parse(text))
    }

    #[test]
    fn each_mode_resolves() {
        let r = redis(
            "[sinks.s]\nkind = \"redis\"\nurl = \"redis://rowhook:${REDIS_PASSWORD}@10.0.0.5:6380/2\"\nstream = \"orders\"\nmaxlen = 1000\n",
        );
        assert_eq!(
            r.mode,
            Mode::Stream {
                stream: "orders".into(),
                maxlen: Some(1000)
            }
        );
        assert_eq!(r.timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS));
        // The password is expanded for the connection, and hidden everywhere else.
        assert_eq!(r.url.target(), "10.0.0.5:6380/2");
        assert!(!format!("{r:?}").contains("s3cret"), "{r:?}");
        assert!(r.url.connection_info().unwrap().redis_settings().password() == Some("s3cret"));

        let r = redis("[sinks.q]\nkind = \"redis\"\nurl = \"redis://127.0.0.1\"\nlist = \"sms\"\nside = \"left\"\n");
        assert_eq!(
            r.mode,
            Mode::List {
                list: "sms".into(),
                side: ListSide::Left
            }
        );
        let r = redis("[sinks.q]\nkind = \"redis\"\nurl = \"redis://127.0.0.1\"\nlist = \"sms\"\n");
        assert_eq!(
            r.mode,
            Mode::List {
                list: "sms".into(),
                side: ListSide::Right
            }
        );
        let r =
            redis("[sinks.p]\nkind = \"redis\"\nurl = \"rediss://cache:6379\"\nchannel = \"news\"\ntimeout_ms = 500\n");
        assert_eq!(r.mode, Mode::Channel { channel: "news".into() });
        assert_eq!(r.timeout, Duration::from_millis(500));
        assert_eq!(r.url.target(), "cache:6379/0 (TLS)");
        let r = redis("[sinks.k]\nkind = \"redis\"\nurl = \"redis://h\"\nkey_prefix = \"\"\n");
        assert_eq!(
            r.mode,
            Mode::Keys {
                prefix: String::new(),
                ttl: None
            }
        );
        let r = redis("[sinks.h]\nkind = \"redis\"\nurl = \"redis://h\"\nhash = \"orders\"\nttl_ms = 60000\n");
        assert_eq!(
            r.mode,
            Mode::Hash {
                hash: "orders".into(),
                ttl: Some(Duration::from_secs(60))
            }
        );
    }

    #[test]
    fn problems_name_the_key() {
        let got = problems(
            r#"
[sinks.a]
kind = "redis"
url = "http://127.0.0.1"
stream = ""
[sinks.b]
kind = "redis"
url = "redis://h"
[sinks.c]
kind = "redis"
url = "redis://h"
stream = "s"
list = "l"
maxlen = 0
[sinks.d]
kind = "redis"
url = "redis://h"
channel = "c"
side = "up"
ttl_ms = 5
[sinks.e]
kind = "redis"
url = "redis://h"
hash = "h"
ttl_ms = 0
timeout_ms = 5
"#,
        );
        assert_eq!(
            got,
            [
                "sinks.a.url: `http` is not a redis URL scheme",
                "sinks.a.stream: is empty",
                "sinks.b.stream: no destination is set",
                "sinks.c.list: is set beside stream, and a redis sink writes to one destination",
                "sinks.c.maxlen: 0 would trim every entry away",
                "sinks.d.side: `up` is not a side",
                "sinks.d.side: applies only to a list",
                "sinks.d.ttl_ms: applies only to key_prefix or hash",
                "sinks.e.ttl_ms: 0 is out of range",
                "sinks.e.timeout_ms: 5 is out of range",
            ]
        );
    }

    #[test]
    fn a_bad_url_never_shows_its_password() {
        let e = parse("[sinks.a]\nkind = \"redis\"\nurl = \"redis://u:${REDIS_PASSWORD}@h:notaport\"\nlist = \"l\"\n")
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("sinks.a.url"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        match parse("[sinks.r]\nkind = \"redis\"\nurl = \"redis://h\"\nsteam = \"x\"\n") {
            Err(ConfigError::Syntax { line, key, message, .. }) => {
                assert_eq!((line, key.as_deref()), (Some(4), Some("sinks.r.steam")), "{message}");
                assert!(message.contains("unknown field"), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }
}
