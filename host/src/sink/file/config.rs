//! The keys of a `kind = "file"` sink: parsed as written, then resolved into
//! [`FileOptions`].

use std::fmt;
use std::time::Duration;

use serde::de;
use serde::{Deserialize, Deserializer};

use super::{FileOptions, FsyncPolicy, Rotation};
use crate::problem::SinkContext;

/// Default number of rotated files a file sink keeps.
pub const DEFAULT_KEEP: u32 = 5;

/// `kind = "file"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileSink {
    /// The file to append to, relative to the config file's directory unless
    /// absolute. Missing directories are created.
    pub path: String,
    /// When written lines are forced to disk before a batch counts as delivered:
    /// `"always"` (the default: every batch is fsynced before the checkpoint can
    /// move past it), `{ interval_ms = N }` (at most N ms of delivered lines can be
    /// lost on power failure) or `"never"` (left to the OS).
    pub fsync: Option<RawFsync>,
    /// Rotate when the file would grow past this many bytes (at least 1024):
    /// `PATH` becomes `PATH.1`, older ones shift up. No rotation when absent.
    pub max_bytes: Option<u64>,
    /// How many rotated files (`PATH.1` … `PATH.N`) to keep, 1 to 1000 (default 5).
    /// Needs `max_bytes`.
    pub keep: Option<u32>,
}

/// `fsync = "always" | "never" | { interval_ms = N }`.
#[derive(Debug)]
pub enum RawFsync {
    /// `"always"` or `"never"`.
    Word(String),
    /// `{ interval_ms = N }`.
    Interval(RawFsyncInterval),
}

/// The table form of `fsync`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFsyncInterval {
    /// Fsync at most this often, 1 to 60000 ms.
    pub interval_ms: u64,
}

impl<'de> Deserialize<'de> for RawFsync {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = RawFsync;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"always\", \"never\" or { interval_ms = N }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawFsync, E> {
                Ok(RawFsync::Word(v.to_owned()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawFsync, A::Error> {
                RawFsyncInterval::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawFsync::Interval)
            }
        }
        d.deserialize_any(V)
    }
}

/// Validates the keys; every problem is reported.
pub fn resolve(raw: RawFileSink, cx: &mut SinkContext<'_>) -> Option<FileOptions> {
    let path = cx.path("path", &raw.path);
    let fsync = match raw.fsync {
        None => Some(FsyncPolicy::Always),
        Some(RawFsync::Word(w)) if w == "always" => Some(FsyncPolicy::Always),
        Some(RawFsync::Word(w)) if w == "never" => Some(FsyncPolicy::Never),
        Some(RawFsync::Word(w)) => {
            cx.problem(
                "fsync",
                format!("`{w}` is not an fsync policy"),
                "use \"always\", \"never\" or { interval_ms = N }",
            );
            None
        }
        Some(RawFsync::Interval(RawFsyncInterval { interval_ms })) => {
            if (1..=60_000).contains(&interval_ms) {
                Some(FsyncPolicy::Interval(Duration::from_millis(interval_ms)))
            } else {
                cx.problem(
                    "fsync.interval_ms",
                    format!("{interval_ms} is out of range"),
                    "use 1 to 60000 ms, or fsync = \"always\" / \"never\"",
                );
                None
            }
        }
    };
    let rotation = match (raw.max_bytes, raw.keep) {
        (None, None) => Some(None),
        (None, Some(_)) => {
            cx.problem(
                "keep",
                "applies only to rotation, which is off",
                "set max_bytes to rotate by size, or remove keep",
            );
            None
        }
        (Some(max_bytes), keep) => {
            let keep = keep.unwrap_or(DEFAULT_KEEP);
            let mut ok = true;
            if max_bytes < 1024 {
                cx.problem(
                    "max_bytes",
                    format!("{max_bytes} is too small"),
                    "use at least 1024 bytes, or remove it to never rotate",
                );
                ok = false;
            }
            if !(1..=1000).contains(&keep) {
                cx.problem(
                    "keep",
                    format!("{keep} is out of range"),
                    "keep 1 to 1000 rotated files (default 5)",
                );
                ok = false;
            }
            ok.then_some(Some(Rotation { max_bytes, keep }))
        }
    };
    Some(FileOptions {
        path: path?,
        fsync: fsync?,
        rotation: rotation?,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ConfigError, Plan};
    use crate::sink::SinkSpec;

    use super::*;

    fn parse(text: &str) -> Result<Plan, ConfigError> {
        Plan::parse(text, Path::new("/etc/rowhook/rowhook.toml"), |_| None)
    }

    fn file(text: &str) -> FileOptions {
        match parse(text).unwrap().sinks.into_values().next() {
            Some(SinkSpec::File(f)) => f,
            other => panic!("expected a file sink, got {other:?}"),
        }
    }

    /// Every problem, as `key: what`; each has a fix.
    fn problems(text: &str) -> Vec<String> {
        crate::config::problem_lines(parse(text))
    }

    #[test]
    fn keys_resolve() {
        let f = file(
            "[sinks.audit]\nkind = \"file\"\npath = \"audit.jsonl\"\nfsync = { interval_ms = 250 }\nmax_bytes = 1048576\nkeep = 3\n",
        );
        assert_eq!(
            f,
            FileOptions {
                path: "/etc/rowhook/audit.jsonl".into(),
                fsync: FsyncPolicy::Interval(Duration::from_millis(250)),
                rotation: Some(Rotation {
                    max_bytes: 1 << 20,
                    keep: 3
                }),
            }
        );
        let f = file("[sinks.dead]\nkind = \"file\"\npath = \"/var/dead.jsonl\"\nfsync = \"never\"\n");
        assert_eq!(
            (f.path.as_path(), f.fsync),
            (Path::new("/var/dead.jsonl"), FsyncPolicy::Never)
        );
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        // fsync always, no rotation; keep defaults to 5.
        let f = file("[sinks.f]\nkind = \"file\"\npath = \"f\"\n");
        assert_eq!((f.fsync, f.rotation), (FsyncPolicy::Always, None));
        let g = file("[sinks.g]\nkind = \"file\"\npath = \"g\"\nmax_bytes = 4096\n");
        assert_eq!(
            g.rotation,
            Some(Rotation {
                max_bytes: 4096,
                keep: 5
            })
        );
    }

    #[test]
    fn problems_name_the_key() {
        let got = problems(
            r#"
[sinks.a]
kind = "file"
path = ""
[sinks.b]
kind = "file"
path = "x"
fsync = "sometimes"
[sinks.c]
kind = "file"
path = "y"
fsync = { interval_ms = 0 }
[sinks.d]
kind = "file"
path = "z"
keep = 3
[sinks.e]
kind = "file"
path = "w"
max_bytes = 100
keep = 0
"#,
        );
        assert_eq!(
            got,
            [
                "sinks.a.path: is empty",
                "sinks.b.fsync: `sometimes` is not an fsync policy",
                "sinks.c.fsync.interval_ms: 0 is out of range",
                "sinks.d.keep: applies only to rotation, which is off",
                "sinks.e.max_bytes: 100 is too small",
                "sinks.e.keep: 0 is out of range",
            ]
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        for (text, want_key, want_line) in [
            (
                "[sinks.f]\nkind = \"file\"\npath = \"x\"\nfsynk = \"always\"\n",
                "sinks.f.fsynk",
                4,
            ),
            (
                "[sinks.f]\nkind = \"file\"\npath = \"x\"\nfsync = { every_ms = 5 }\n",
                "sinks.f.fsync.every_ms",
                4,
            ),
        ] {
            match parse(text) {
                Err(ConfigError::Syntax { line, key, message, .. }) => {
                    assert_eq!((line, key.as_deref()), (Some(want_line), Some(want_key)), "{message}");
                    assert!(message.contains("unknown field"), "{message}");
                }
                other => panic!("expected a syntax error, got {other:?}"),
            }
        }
    }
}
