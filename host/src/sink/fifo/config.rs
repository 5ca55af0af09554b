//! The keys of a `kind = "fifo"` sink: parsed as written, then resolved into
//! [`FifoOptions`].

use serde::Deserialize;

use super::FifoOptions;
use crate::problem::SinkContext;

/// `kind = "fifo"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFifoSink {
    /// The named pipe, relative to the config file's directory unless absolute.
    /// Created (with missing directories) when absent; an existing path must be a FIFO.
    pub path: String,
    /// Permission bits of a FIFO rowhook creates, e.g. `0o660` to let the reader's
    /// group open it (default `0o600`). An existing FIFO keeps its own.
    pub mode: Option<u32>,
}

/// Validates the keys; every problem is reported.
pub fn resolve(raw: RawFifoSink, cx: &mut SinkContext<'_>) -> Option<FifoOptions> {
    let path = cx.path("path", &raw.path);
    let mode = raw.mode.unwrap_or(FifoOptions::DEFAULT_MODE);
    if mode > 0o777 {
        cx.problem(
            "mode",
            format!("{mode:#o} is not a permission mode"),
            "use permission bits such as 0o600 or 0o660",
        );
        return None;
    }
    Some(FifoOptions { path: path?, mode })
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

    #[test]
    fn keys_resolve_with_defaults() {
        let plan = parse("[sinks.news]\nkind = \"fifo\"\npath = \"run/news.fifo\"\nmode = 0o660\n[sinks.p]\nkind = \"fifo\"\npath = \"./run/./p\"\n").unwrap();
        assert_eq!(
            plan.sinks["news"],
            SinkSpec::Fifo(FifoOptions {
                path: "/etc/rowhook/run/news.fifo".into(),
                mode: 0o660
            })
        );
        // Paths are kept without `.` components; the mode defaults to 0o600.
        assert_eq!(
            plan.sinks["p"],
            SinkSpec::Fifo(FifoOptions {
                path: "/etc/rowhook/run/p".into(),
                mode: 0o600
            })
        );
    }

    #[test]
    fn problems_name_the_key() {
        let e = parse(
            "[sinks.f]\nkind = \"fifo\"\npath = \"p\"\nmode = 0o1777\n[sinks.g]\nkind = \"fifo\"\npath = \" \"\n",
        )
        .unwrap_err();
        let got: Vec<String> = e.problems().iter().map(|p| format!("{}: {}", p.key, p.what)).collect();
        assert_eq!(
            got,
            [
                "sinks.f.mode: 0o1777 is not a permission mode",
                "sinks.g.path: is empty"
            ]
        );
        assert!(e.problems().iter().all(|p| !p.fix.is_empty()));
        match parse("[sinks.p]\nkind = \"fifo\"\npath = \"x\"\nowner = \"www\"\n") {
            Err(ConfigError::Syntax { line, key, message, .. }) => {
                assert_eq!((line, key.as_deref()), (Some(4), Some("sinks.p.owner")), "{message}");
                assert!(message.contains("unknown field `owner`"), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }
}
