//! Problems with a config value, gathered so that every one is named at
//! once with its key and its fix. A leaf module: the config
//! ([`crate::config`]) and each sink kind's keys ([`crate::sink`]) report
//! into the same list.

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with a config value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `handlers[1].sinks` (handlers count from 0).
    pub key: String,
    /// What is wrong.
    pub what: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; {}", self.key, self.what, self.fix)
    }
}

/// Collects every problem instead of stopping at the first.
#[derive(Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Adds a problem with `key`: what is wrong, and how to fix it.
    pub fn push(&mut self, key: impl Into<String>, what: impl Into<String>, fix: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            what: what.into(),
            fix: fix.into(),
        });
    }
}

/// What a sink kind's resolve step gets (see
/// [`crate::sink::SinkKind::resolve`]): where its problems go, named under
/// its `[sinks.NAME]` table, and the directory relative paths start from.
pub struct SinkContext<'a> {
    /// `sinks.NAME`.
    key: &'a str,
    /// The config file's directory.
    base: &'a Path,
    problems: &'a mut Problems,
}

impl SinkContext<'_> {
    /// Reports a problem with the sink's key `key` (`"fsync.interval_ms"`
    /// is reported as `sinks.NAME.fsync.interval_ms`): what is wrong, and how to fix it.
    pub fn problem(&mut self, key: &str, what: impl Into<String>, fix: impl Into<String>) {
        self.problems.push(format!("{}.{key}", self.key), what, fix);
    }

    /// A path written under `key`, relative to the config file's directory
    /// unless absolute, without `.` components; an empty one is a problem.
    pub fn path(&mut self, key: &str, value: &str) -> Option<PathBuf> {
        if value.trim().is_empty() {
            self.problem(key, "is empty", "name the file to write to");
            None
        } else {
            Some(resolve_path(self.base, value))
        }
    }

    /// A number written under `key` that must lie in `range`: `default`
    /// when absent; out of it, a problem (`N is out of range`, and `fix`)
    /// and `None`.
    pub fn ranged(
        &mut self,
        key: &str,
        value: Option<u64>,
        range: std::ops::RangeInclusive<u64>,
        default: u64,
        fix: impl Into<String>,
    ) -> Option<u64> {
        match value {
            None => Some(default),
            Some(v) if range.contains(&v) => Some(v),
            Some(v) => {
                self.problem(key, format!("{v} is out of range"), fix);
                None
            }
        }
    }

    /// A wait written in ms under `key` (a timeout): 100 ms to 10 minutes,
    /// `default` when absent; out of range, a problem and `None`.
    pub fn timeout_ms(
        &mut self,
        key: &str,
        value: Option<u64>,
        default: std::time::Duration,
    ) -> Option<std::time::Duration> {
        let ms = default.as_millis() as u64;
        self.ranged(
            key,
            value,
            100..=600_000,
            ms,
            format!("use 100 to 600000 ms (default {ms})"),
        )
        .map(std::time::Duration::from_millis)
    }

    /// The sink's key path, `sinks.NAME`.
    pub fn key(&self) -> &str {
        self.key
    }

    /// The config file's directory, which relative paths start from.
    pub fn base(&self) -> &Path {
        self.base
    }
}

impl<'a> SinkContext<'a> {
    /// The context of the sink whose table is `key` (`sinks.NAME`), in a
    /// config file in `base`, reporting to `problems`.
    pub fn new(key: &'a str, base: &'a Path, problems: &'a mut Problems) -> Self {
        SinkContext { key, base, problems }
    }
}

/// `p` against `base` unless absolute, without `.` components (lexically:
/// symlinks and `..` are left as written).
pub fn resolve_path(base: &Path, p: &str) -> PathBuf {
    base.join(p).components().collect()
}
