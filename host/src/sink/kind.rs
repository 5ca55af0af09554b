//! [`SinkKind`]: what a `sink/<kind>/` folder provides, so that the
//! registry ([`super::registry`]) can list it.

use std::fmt;
use std::future::Future;
use std::path::Path;

use serde::Deserialize;

use super::{Sink, SinkError};
use crate::probe::CheckLine;
use crate::problem::SinkContext;

/// One kind of sink: what a `sink/<kind>/` folder provides.
pub trait SinkKind {
    /// The kind's name, as written after `kind =` in the config.
    const NAME: &'static str;

    /// The kind's own keys of `[sinks.NAME]`, as written. Derive
    /// `Deserialize` with `#[serde(deny_unknown_fields)]`; each field's doc
    /// comment is that key's documentation. The shared keys (`kind`,
    /// `retries`, `retry_max_ms`) are not part of it.
    type Raw: for<'de> Deserialize<'de> + fmt::Debug;

    /// The validated settings [`SinkKind::open`] needs.
    type Options: fmt::Debug + Clone + PartialEq + Eq + Send + Sync;

    /// The open sink.
    type Sink: Sink + fmt::Debug;

    /// Validates `raw`, reporting every problem to `cx` under the key it is
    /// about (`cx.problem("fsync", ...)` names `sinks.NAME.fsync`). `None`
    /// when a problem was reported.
    fn resolve(raw: Self::Raw, cx: &mut SinkContext<'_>) -> Option<Self::Options>;

    /// Opens the sink `name`. Fails only on problems retrying cannot fix: a
    /// destination that is not there yet is fine, and shows up as
    /// [`SinkError::Unavailable`] at the first write.
    fn open(name: &str, options: &Self::Options) -> impl Future<Output = Result<Self::Sink, SinkError>> + Send;

    /// What `rowhook check` says about the sink, without opening it or
    /// changing anything: whether it could be opened as configured, and the fix if not.
    fn probe(name: &str, options: &Self::Options) -> CheckLine;

    /// The filesystem path the sink writes to, if it has one (two sinks on
    /// one path are refused).
    fn path(options: &Self::Options) -> Option<&Path> {
        let _ = options;
        None
    }

    /// Whether the sink writes one message per line, so a payload with a
    /// newline cannot go to it (the guest's `emit` is refused at once).
    fn one_line_per_message(options: &Self::Options) -> bool;

    /// The tables a SQL sink may write, if the sink takes row operations
    /// (see [`super::sql`]): each emit is then checked against them. The
    /// default: the sink takes any payload.
    fn row_ops(options: &Self::Options) -> Option<std::sync::Arc<super::sql::Tables>> {
        let _ = options;
        None
    }
}
