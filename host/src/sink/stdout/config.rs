//! The keys of a `kind = "stdout"` sink: none of its own.

use serde::Deserialize;

use crate::problem::SinkContext;

/// `kind = "stdout"`: each message's payload is written as one line. Only
/// the keys every sink has (`retries`, `retry_max_ms`) apply.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStdoutSink {}

/// Settings of a stdout sink: there are none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StdoutOptions;

/// Nothing to validate.
pub fn resolve(_raw: RawStdoutSink, _cx: &mut SinkContext<'_>) -> Option<StdoutOptions> {
    Some(StdoutOptions)
}
