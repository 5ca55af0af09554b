//! The argument template of an exec sink and the patterns its
//! placeholders must match: pure, so tests feed it strings and payloads.
//!
//! An argument is fixed text, or fixed text around one placeholder
//! `{name}` (`{{` and `}}` write a literal brace). A placeholder takes the
//! payload's top-level field `name` (a JSON string, or a number as written),
//! checked against the placeholder's pattern, and fills exactly one
//! argument: no shell ever sees it, so `;`, `$(…)`, spaces and newlines are
//! bytes of that one argument, if the pattern lets them through at all.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The longest value a placeholder takes, whatever its pattern: far more
/// than any address or id, far less than the kernel's limit on one
/// argument (128 KiB).
pub const MAX_VALUE: usize = 4096;

/// What a placeholder's value must be. The built-in patterns parse the
/// value as what they name rather than approximate it: `ipv4` is what
/// `std::net` reads as an IPv4 address, so `203.0.113.07` is refused.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// An IPv4 address, dotted decimal (`203.0.113.7`).
    Ipv4,
    /// An IPv6 address (`2001:db8::1`).
    Ipv6,
    /// Either.
    Ip,
    /// A decimal integer that fits 64 bits, with an optional leading `-`.
    Int,
    /// A decimal integer of 0 to 2^64-1, digits only.
    Uint,
    /// A UUID in its hyphenated form, either case.
    Uuid,
    /// 1 to 255 ASCII letters, digits, `_` and `-`, not starting with `-`.
    Word,
    /// A regular expression the whole value must match.
    Regex(regex::Regex),
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for Pattern {}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Ipv4 => f.write_str("ipv4"),
            Pattern::Ipv6 => f.write_str("ipv6"),
            Pattern::Ip => f.write_str("ip"),
            Pattern::Int => f.write_str("int"),
            Pattern::Uint => f.write_str("uint"),
            Pattern::Uuid => f.write_str("uuid"),
            Pattern::Word => f.write_str("word"),
            Pattern::Regex(r) => write!(f, "regex:{}", unanchored(r.as_str())),
        }
    }
}

/// The names of the built-in patterns, for messages.
pub const BUILT_IN: &str = "ipv4, ipv6, ip, int, uint, uuid, word, or regex:EXPR";

/// `\A(?:EXPR)\z` back to `EXPR`.
fn unanchored(anchored: &str) -> &str {
    anchored
        .strip_prefix(r"\A(?:")
        .and_then(|s| s.strip_suffix(r")\z"))
        .unwrap_or(anchored)
}

impl Pattern {
    /// Reads a pattern as written in the config: a built-in name, or
    /// `regex:EXPR` (matched against the whole value).
    pub fn parse(text: &str) -> Result<Pattern, String> {
        Ok(match text {
            "ipv4" => Pattern::Ipv4,
            "ipv6" => Pattern::Ipv6,
            "ip" => Pattern::Ip,
            "int" => Pattern::Int,
            "uint" => Pattern::Uint,
            "uuid" => Pattern::Uuid,
            "word" => Pattern::Word,
            other => match other.strip_prefix("regex:") {
                Some("") => return Err("`regex:` has no expression".into()),
                Some(expr) => {
                    let anchored = format!(r"\A(?:{expr})\z");
                    Pattern::Regex(
                        regex::RegexBuilder::new(&anchored)
                            .size_limit(1 << 20)
                            .build()
                            .map_err(|e| format!("`{expr}` is not a regular expression: {e}"))?,
                    )
                }
                None => return Err(format!("`{other}` is not a pattern")),
            },
        })
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Ipv4 => value.parse::<Ipv4Addr>().is_ok(),
            Pattern::Ipv6 => value.parse::<Ipv6Addr>().is_ok(),
            Pattern::Ip => value.parse::<IpAddr>().is_ok(),
            Pattern::Int => {
                let digits = value.strip_prefix('-').unwrap_or(value);
                is_digits(digits) && value.parse::<i64>().is_ok()
            }
            Pattern::Uint => is_digits(value) && value.parse::<u64>().is_ok(),
            Pattern::Uuid => is_uuid(value),
            Pattern::Word => {
                (1..=255).contains(&value.len())
                    && !value.starts_with('-')
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            }
            Pattern::Regex(r) => r.is_match(value),
        }
    }
}

/// ASCII digits only (`str::parse` also takes a leading `+`).
fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex digits.
fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// One argument of the command as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// Passed as written.
    Fixed(String),
    /// `prefix`, then the value of placeholder `name`, then `suffix`.
    Filled {
        /// Fixed text before the value.
        prefix: String,
        /// The placeholder (the payload field).
        name: String,
        /// Fixed text after the value.
        suffix: String,
    },
}

impl Arg {
    /// Reads one argument as written; `Err` says what is wrong with it.
    pub fn parse(text: &str) -> Result<Arg, String> {
        let mut parts = [String::new(), String::new(), String::new()];
        // 0: before a placeholder, 1: inside it, 2: after it.
        let mut at = 0;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, at) {
                ('{', 0 | 2) if chars.peek() == Some(&'{') => {
                    chars.next();
                    parts[at].push('{');
                }
                ('}', 0 | 2) if chars.peek() == Some(&'}') => {
                    chars.next();
                    parts[at].push('}');
                }
                ('{', 0) => at = 1,
                ('{', 2) => return Err("has a second placeholder: an argument takes at most one".into()),
                ('}', 1) => {
                    if parts[1].is_empty() {
                        return Err("has an empty placeholder `{}`".into());
                    }
                    at = 2;
                }
                ('}', _) => return Err("has a `}` that closes nothing (write `}}` for a literal one)".into()),
                (c, 1) if c.is_ascii_alphanumeric() || c == '_' => parts[1].push(c),
                (_, 1) => {
                    return Err(format!(
                        "has a placeholder `{{{}…` with a character other than ASCII letters, digits and `_`",
                        parts[1]
                    ));
                }
                (c, _) => parts[at].push(c),
            }
        }
        match at {
            0 => Ok(Arg::Fixed(std::mem::take(&mut parts[0]))),
            1 => Err(format!("has an unclosed placeholder `{{{}`", parts[1])),
            _ => {
                let [prefix, name, suffix] = parts;
                Ok(Arg::Filled { prefix, name, suffix })
            }
        }
    }

    /// The placeholder's name, if the argument has one.
    pub fn placeholder(&self) -> Option<&str> {
        match self {
            Arg::Fixed(_) => None,
            Arg::Filled { name, .. } => Some(name),
        }
    }
}

/// Why a payload cannot fill the template. Names the placeholder and what
/// was wrong, never the value (it may be anything a row held).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfit(pub String);

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Fills `args` from `payload` (a JSON object): the argument list to run,
/// or why not. `pattern` gives each placeholder's pattern.
pub fn fill<'p>(args: &[Arg], pattern: impl Fn(&str) -> &'p Pattern, payload: &[u8]) -> Result<Vec<String>, Unfit> {
    let fields: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(payload) {
        Ok(serde_json::Value::Object(m)) => m,
        Ok(other) => {
            return Err(Unfit(format!(
                "the payload is {} in JSON, not an object with the placeholders' fields",
                kind(&other)
            )));
        }
        Err(e) => {
            return Err(Unfit(format!(
                "the payload ({} bytes) is not JSON ({e})",
                payload.len()
            )));
        }
    };
    let mut out = Vec::with_capacity(args.len());
    for arg in args {
        match arg {
            Arg::Fixed(s) => out.push(s.clone()),
            Arg::Filled { prefix, name, suffix } => {
                let value = match fields.get(name) {
                    None => {
                        return Err(Unfit(format!(
                            "placeholder `{{{name}}}`: the payload has no field `{name}`"
                        )));
                    }
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(serde_json::Value::Number(n)) => n.to_string(),
                    Some(other) => {
                        return Err(Unfit(format!(
                            "placeholder `{{{name}}}`: field `{name}` is {}, not a string or number",
                            kind(other)
                        )));
                    }
                };
                let pattern = pattern(name);
                if value.len() > MAX_VALUE {
                    return Err(Unfit(format!(
                        "placeholder `{{{name}}}`: field `{name}` has {} bytes, more than the {MAX_VALUE} a placeholder takes",
                        value.len()
                    )));
                }
                if !pattern.matches(&value) {
                    return Err(Unfit(format!(
                        "placeholder `{{{name}}}`: field `{name}` ({} bytes) does not match its pattern `{pattern}`",
                        value.len()
                    )));
                }
                out.push(format!("{prefix}{value}{suffix}"));
            }
        }
    }
    Ok(out)
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn built_in_patterns_parse_rather_than_approximate() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "ipv4",
                &["203.0.113.7", "0.0.0.0"],
                &["203.0.113.07", "203.0.113.7 ", "1.2.3", "::1", "203.0.113.7;rm"],
            ),
            (
                "ipv6",
                &["2001:db8::1", "::1", "::ffff:1.2.3.4"],
                &["203.0.113.7", "2001:db8::1%eth0", "-::1"],
            ),
            ("ip", &["203.0.113.7", "2001:db8::1"], &["", "localhost", "$(reboot)"]),
            (
                "int",
                &["0", "-5", "9223372036854775807"],
                &["+5", "9223372036854775808", "1.0", "", "-", "1e3"],
            ),
            (
                "uint",
                &["0", "18446744073709551615"],
                &["-1", "+1", "18446744073709551616", " 1"],
            ),
            (
                "uuid",
                &[
                    "123e4567-e89b-12d3-a456-426614174000",
                    "123E4567-E89B-12D3-A456-426614174000",
                ],
                &[
                    "123e4567e89b12d3a456426614174000",
                    "123e4567-e89b-12d3-a456-42661417400g",
                ],
            ),
            (
                "word",
                &["eth0", "a_b-c", "X"],
                &["-rf", "", "a b", "a\nb", "a;b", "é", &"w".repeat(256)],
            ),
            ("regex:ip6?", &["ip", "ip6"], &["ip4", "xip", "ip6 ", "ip\nip6"]),
        ];
        for (pattern, good, bad) in cases {
            let pat = p(pattern);
            assert_eq!(pat.to_string(), *pattern);
            for v in *good {
                assert!(pat.matches(v), "{pattern} refused {v:?}");
            }
            for v in *bad {
                assert!(!pat.matches(v), "{pattern} took {v:?}");
            }
        }
        assert!(Pattern::parse("ipv5").unwrap_err().contains("not a pattern"));
        assert!(
            Pattern::parse("regex:(")
                .unwrap_err()
                .contains("not a regular expression")
        );
        assert!(Pattern::parse("regex:").is_err());
    }

    #[test]
    fn arguments_hold_fixed_text_around_at_most_one_placeholder() {
        assert_eq!(Arg::parse("-A").unwrap(), Arg::Fixed("-A".into()));
        assert_eq!(Arg::parse("{{x}}").unwrap(), Arg::Fixed("{x}".into()));
        assert_eq!(
            Arg::parse("--src={ip}/32").unwrap(),
            Arg::Filled {
                prefix: "--src=".into(),
                name: "ip".into(),
                suffix: "/32".into()
            }
        );
        assert_eq!(Arg::parse("{ip}").unwrap().placeholder(), Some("ip"));
        for (bad, what) in [
            ("{a}{b}", "second placeholder"),
            ("{}", "empty placeholder"),
            ("{a", "unclosed"),
            ("a}", "closes nothing"),
            ("{a b}", "other than ASCII"),
            ("{a.b}", "other than ASCII"),
        ] {
            let e = Arg::parse(bad).unwrap_err();
            assert!(e.contains(what), "{bad}: {e}");
        }
    }

    #[test]
    fn a_placeholder_fills_one_argument_or_the_payload_is_unfit() {
        let args: Vec<Arg> = ["-s", "{ip}", "--comment=hit {n}"]
            .iter()
            .map(|a| Arg::parse(a).unwrap())
            .collect();
        let (ip, int) = (p("ip"), p("int"));
        let pattern = |name: &str| if name == "ip" { &ip } else { &int };
        assert_eq!(
            fill(&args, pattern, br#"{"ip":"203.0.113.7","n":4,"other":[1]}"#).unwrap(),
            ["-s", "203.0.113.7", "--comment=hit 4"]
        );
        let unfit = |payload: &str| fill(&args, pattern, payload.as_bytes()).unwrap_err().0;
        assert_eq!(unfit(r#"{"n":4}"#), "placeholder `{ip}`: the payload has no field `ip`");
        assert_eq!(
            unfit(r#"{"ip":"203.0.113.7; rm -rf /","n":4}"#),
            "placeholder `{ip}`: field `ip` (21 bytes) does not match its pattern `ip`"
        );
        assert_eq!(
            unfit(r#"{"ip":["203.0.113.7"],"n":4}"#),
            "placeholder `{ip}`: field `ip` is an array, not a string or number"
        );
        assert_eq!(
            unfit(r#"{"ip":"203.0.113.7","n":1.5}"#),
            "placeholder `{n}`: field `n` (3 bytes) does not match its pattern `int`"
        );
        assert!(unfit("[1]").contains("is an array in JSON, not an object"));
        assert!(unfit("iptables -A").contains("is not JSON"));
        let big = format!(r#"{{"ip":"{}","n":1}}"#, "1".repeat(1 << 20));
        assert_eq!(
            unfit(&big),
            "placeholder `{ip}`: field `ip` has 1048576 bytes, more than the 4096 a placeholder takes"
        );
    }
}
