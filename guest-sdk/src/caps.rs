//! The capabilities a handler calls: emit, state, log, metrics.
//!
//! In a wasm32 build each call goes to rowhook through the WIT imports; in
//! a native build (a handler's unit tests) it goes to the in-memory
//! recorder in [`crate::testing`].

use crate::error::{Error, Result};

#[cfg(target_arch = "wasm32")]
mod imp {
    use crate::bindings::rowhook::handler as wit;
    use crate::error::{EmitError, StateError};

    pub fn emit(sink: &str, key: Option<&str>, payload: &[u8]) -> Result<(), EmitError> {
        use wit::emit::EmitError as E;
        wit::emit::emit(sink, key, payload).map_err(|e| match e {
            E::Denied => EmitError::Denied,
            E::Quota => EmitError::Quota,
            E::Unavailable => EmitError::Unavailable,
            E::TooLarge => EmitError::TooLarge,
            E::Invalid => EmitError::Invalid,
        })
    }

    fn state_error(e: wit::state::StateError) -> StateError {
        use wit::state::StateError as E;
        match e {
            E::TooLarge => StateError::TooLarge,
            E::Quota => StateError::Quota,
            E::NotACounter => StateError::NotACounter,
            E::Overflow => StateError::Overflow,
        }
    }

    pub fn state_get(key: &str) -> Option<Vec<u8>> {
        wit::state::get(key)
    }

    pub fn state_set(key: &str, value: &[u8]) -> Result<(), StateError> {
        wit::state::set(key, value).map_err(state_error)
    }

    pub fn state_delete(key: &str) {
        wit::state::delete(key)
    }

    pub fn state_increment(key: &str, delta: i64) -> Result<i64, StateError> {
        wit::state::increment(key, delta).map_err(state_error)
    }

    pub fn log(level: crate::log::Level, message: &str, fields: &[(&str, &str)]) {
        use crate::log::Level as L;
        use wit::log::Level as W;
        let level = match level {
            L::Trace => W::Trace,
            L::Debug => W::Debug,
            L::Info => W::Info,
            L::Warn => W::Warn,
            L::Error => W::Error,
        };
        wit::log::log(level, message, fields)
    }

    pub fn counter_add(name: &str, delta: u64) {
        wit::metrics::counter_add(name, delta)
    }

    pub fn gauge_set(name: &str, value: f64) {
        wit::metrics::gauge_set(name, value)
    }
}

#[cfg(not(target_arch = "wasm32"))]
use crate::testing::recorder as imp;

/// Sends `payload` to the sink named `sink` (a key of `[sinks]` in the
/// configuration), with an optional message `key`.
///
/// The message goes out when the change's transaction has been handled,
/// and only if this call to the handler succeeds. Fails with
/// [`Error::Emit`]: [`EmitError::Denied`](crate::EmitError::Denied) for a sink the handler was not
/// granted, [`EmitError::Quota`](crate::EmitError::Quota) past `limits.emits_per_event`, ...
///
/// ```
/// # fn f(change: &rowhook_guest::Change) -> rowhook_guest::Result<()> {
/// rowhook_guest::emit("audit", Some(change.id()), change.to_json()?)?;
/// # Ok(()) }
/// ```
pub fn emit(sink: &str, key: Option<&str>, payload: impl AsRef<[u8]>) -> Result<()> {
    imp::emit(sink, key, payload.as_ref()).map_err(|error| Error::Emit {
        sink: sink.into(),
        error,
    })
}

/// The handler's own key-value state, kept by rowhook across events,
/// restarts and reloads.
///
/// Writes are committed with the checkpoint at the end of the transaction
/// (never applied twice after a crash) and discarded if the call fails;
/// reads see every earlier write.
pub mod state {
    use super::*;

    /// The value stored under `key`.
    pub fn get(key: &str) -> Option<Vec<u8>> {
        imp::state_get(key)
    }

    /// The value under `key` as text, if it is UTF-8.
    pub fn get_string(key: &str) -> Option<String> {
        get(key).and_then(|v| String::from_utf8(v).ok())
    }

    /// The counter under `key` ([`increment`]), 0 if there is none or the
    /// value is not a counter.
    pub fn counter(key: &str) -> i64 {
        get(key)
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, i64::from_le_bytes)
    }

    /// Stores `value` under `key`.
    pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<()> {
        imp::state_set(key, value.as_ref()).map_err(|error| Error::State { key: key.into(), error })
    }

    /// Removes `key` (nothing happens if it is missing).
    pub fn delete(key: &str) {
        imp::state_delete(key)
    }

    /// Adds `delta` to the counter under `key` (missing counts as 0) and
    /// returns the new value, in one step. The counter is stored as 8
    /// little-endian bytes; [`counter`] reads it.
    pub fn increment(key: &str, delta: i64) -> Result<i64> {
        imp::state_increment(key, delta).map_err(|error| Error::State { key: key.into(), error })
    }
}

/// Structured log lines in rowhook's log, labelled with the handler.
///
/// ```
/// use rowhook_guest::log;
/// log::info("order paid", &[("order", "42"), ("amount", "12.50")]);
/// ```
pub mod log {
    /// How important a line is.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum Level {
        /// Step-by-step detail.
        Trace,
        /// Detail for development.
        Debug,
        /// Normal operation.
        Info,
        /// Something unexpected the handler dealt with.
        Warn,
        /// Something failed.
        Error,
    }

    /// Writes `message` with `fields` at `level`.
    pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
        super::imp::log(level, message, fields)
    }

    /// Writes at [`Level::Trace`].
    pub fn trace(message: &str, fields: &[(&str, &str)]) {
        log(Level::Trace, message, fields)
    }

    /// Writes at [`Level::Debug`].
    pub fn debug(message: &str, fields: &[(&str, &str)]) {
        log(Level::Debug, message, fields)
    }

    /// Writes at [`Level::Info`].
    pub fn info(message: &str, fields: &[(&str, &str)]) {
        log(Level::Info, message, fields)
    }

    /// Writes at [`Level::Warn`].
    pub fn warn(message: &str, fields: &[(&str, &str)]) {
        log(Level::Warn, message, fields)
    }

    /// Writes at [`Level::Error`].
    pub fn error(message: &str, fields: &[(&str, &str)]) {
        log(Level::Error, message, fields)
    }
}

/// Named counters and gauges that rowhook exposes (in `rowhook state`),
/// labelled with the handler's tenant and name. Names are ASCII letters,
/// digits and `_`, not starting with a digit; calls with other names are
/// ignored. The writes of a call that returns an error are dropped, like
/// its emits.
pub mod metrics {
    /// Adds `delta` to the counter `name`.
    pub fn counter_add(name: &str, delta: u64) {
        super::imp::counter_add(name, delta)
    }

    /// Sets the gauge `name` to `value`.
    pub fn gauge_set(name: &str, value: f64) {
        super::imp::gauge_set(name, value)
    }
}
