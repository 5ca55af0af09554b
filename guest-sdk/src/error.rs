//! What can go wrong in a handler, as one [`Error`] type.

use core::fmt;

pub use rowhook_abi::FormatError;

use crate::change::Image;

/// The result of a handler and of the SDK's calls.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Why a handler call, or something it did, failed.
///
/// A handler returning an `Error` fails the change it was given: rowhook
/// applies the handler's `on_error` policy with the error's text. `?` turns
/// any [`std::error::Error`] into [`Error::Handler`]; [`Error::msg`] makes
/// one from a message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// The change buffer is not in the row change encoding this SDK reads
    /// (a host and SDK of different versions).
    Format(FormatError),
    /// The table has no column of this name.
    NoColumn {
        /// The name asked for.
        column: String,
    },
    /// The change has no such image: no before image for an insert or a
    /// snapshot, no after image for a delete.
    NoImage {
        /// The image asked for.
        image: Image,
    },
    /// The column is not in the image: the server logs a MINIMAL row image
    /// and the statement did not touch it. (SQL NULL is a value, not this.)
    NotInImage {
        /// The column.
        column: String,
        /// The image.
        image: Image,
    },
    /// The column's value cannot be read as the type asked for.
    WrongType {
        /// The column.
        column: String,
        /// The Rust type asked for.
        expected: &'static str,
        /// What the value is (`"null"`, `"int"`, `"string"`, ...).
        found: &'static str,
    },
    /// A sink refused a message.
    Emit {
        /// The sink.
        sink: String,
        /// Why.
        error: EmitError,
    },
    /// A state operation was refused.
    State {
        /// The key.
        key: String,
        /// Why.
        error: StateError,
    },
    /// The handler's own failure.
    Handler(String),
}

impl Error {
    /// An error with this message, for a handler to return.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error::Handler(message.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Format(e) => write!(f, "malformed row change: {e}"),
            Error::NoColumn { column } => write!(f, "no column `{column}`"),
            Error::NoImage { image } => write!(f, "the change has no {image} image"),
            Error::NotInImage { column, image } => {
                write!(f, "column `{column}` is not in the {image} image (MINIMAL row image)")
            }
            Error::WrongType {
                column,
                expected,
                found,
            } => write!(f, "column `{column}` holds {found}, not {expected}"),
            Error::Emit { sink, error } => write!(f, "emit to sink `{sink}`: {error}"),
            Error::State { key, error } => write!(f, "state key `{key}`: {error}"),
            Error::Handler(m) => f.write_str(m),
        }
    }
}

/// Lets `?` turn any error into a handler failure, keeping its message.
///
/// `Error` itself does not implement [`std::error::Error`]; that is what
/// leaves room for this conversion (as `anyhow::Error` does). A
/// [`FormatError`] (defined in `rowhook-abi`, so this blanket impl covers it)
/// becomes a handler failure too; the SDK itself reports one as
/// [`Error::Format`].
impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error::Handler(e.to_string())
    }
}

impl From<Error> for String {
    fn from(e: Error) -> Self {
        e.to_string()
    }
}

/// Why a sink did not accept a message (WIT `emit-error`). Nothing reached
/// any sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EmitError {
    /// The handler has no grant for this sink, or there is no such sink.
    Denied,
    /// The event already emitted `limits.emits_per_event` messages; rowhook
    /// applies the handler's `on_error` policy to it. Stop emitting.
    Quota,
    /// The sink cannot take messages now.
    Unavailable,
    /// The payload or key is larger than the sink or rowhook accepts.
    TooLarge,
    /// The sink cannot carry the payload as it is: a sink that writes one
    /// message per line of text (stdout, file, fifo) and a payload that is
    /// not UTF-8 or holds a control character other than tab (`\n`, `\r`,
    /// NUL, ESC, …).
    Invalid,
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EmitError::Denied => "denied (the handler has no grant for this sink)",
            EmitError::Quota => "emit quota of this event reached",
            EmitError::Unavailable => "sink unavailable",
            EmitError::TooLarge => "message too large",
            EmitError::Invalid => {
                "payload not valid for this sink: a line sink (stdout, file, fifo) takes one line of UTF-8 text with no control character but tab (no \\n, \\r, NUL or ESC)"
            }
        })
    }
}

impl std::error::Error for EmitError {}

/// Why a state operation was refused (WIT `state-error`). Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StateError {
    /// The key or value is larger than rowhook accepts.
    TooLarge,
    /// The handler's state would exceed its size limit.
    Quota,
    /// `increment` on a value that is not an 8-byte counter.
    NotACounter,
    /// `increment` would overflow an `i64`.
    Overflow,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateError::TooLarge => "key or value too large",
            StateError::Quota => "state quota reached (limits.state_mb); delete keys or store less",
            StateError::NotACounter => "value is not a counter",
            StateError::Overflow => "counter overflow",
        })
    }
}

impl std::error::Error for StateError {}
