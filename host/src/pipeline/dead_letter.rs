//! A handler's `on_error` policy applied to one failure: halt, skip, or a
//! dead letter for its dead-letter sink.
//!
//! Two kinds of failure go through it: a handler failing on a change (an
//! error it returned, a trap, a timeout, a quota, rows that cannot be
//! decoded, an instance that cannot be created), and a sink refusing one of
//! the handler's messages beyond its retries. The decision is made here;
//! carrying it out (stopping, counting, buffering the letter, recording it
//! for the checkpoint) is the pipeline's.

use crate::config::OnError;
use crate::decode::{RowChange, Undecodable};
use crate::handler_id::HandlerId;
use crate::sink::{Message, SinkError};
use crate::store::{DeadLetter, HeldChange};

/// What a handler failed on: a row change, or rows that could not be decoded.
#[derive(Clone, Copy)]
pub enum Failed<'c, 'a> {
    /// A decoded change.
    Change(&'c RowChange<'a>),
    /// Rows the decoder (or the encoding) could not turn into changes.
    Rows(&'c Undecodable<'a>),
    /// A change held for the handler and handed over later.
    Held(&'c HeldChange),
}

impl Failed<'_, '_> {
    /// The change's id (`file:pos:row`).
    pub fn id(&self) -> String {
        match self {
            Failed::Change(c) => c.id(),
            Failed::Rows(r) => r.id(),
            Failed::Held(h) => h.id.clone(),
        }
    }

    /// Schema, table, binlog file and offset.
    pub fn place(&self) -> (&str, &str, &str, u64) {
        match self {
            Failed::Change(c) => (&c.table.db, &c.table.table, c.file, c.pos),
            Failed::Rows(r) => (r.db, r.table, r.file, r.pos),
            Failed::Held(h) => match rowhook_abi::Change::parse(&h.encoded) {
                Ok(c) => (c.db(), c.table(), c.file(), c.pos()),
                Err(_) => ("?", "?", "?", 0),
            },
        }
    }

    /// The row change JSON, for a dead letter.
    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Failed::Change(c) => {
                let mark = out.len();
                if c.write_json(out).is_err() {
                    out.truncate(mark);
                    out.extend_from_slice(b"null");
                }
            }
            Failed::Rows(r) => r.write_json(out),
            Failed::Held(h) if h.json.is_empty() => out.extend_from_slice(b"null"),
            Failed::Held(h) => out.extend_from_slice(&h.json),
        }
    }
}

/// What a handler's `on_error` makes of one failure.
#[derive(Debug)]
pub enum Decision {
    /// Stop before the checkpoint moves, with this error.
    Halt(anyhow::Error),
    /// Dropped; logged and counted by the caller (a refused message's
    /// skip is logged here).
    Skip,
    /// Sent to `sink` as `letter`, and recorded in the store as `record`.
    DeadLetter {
        /// The dead-letter sink.
        sink: String,
        /// The message for it.
        letter: Message,
        /// What the store keeps of it.
        record: DeadLetter,
    },
}

/// `handler`, whose policy is `on_error`, failed on `failed` with `err`.
pub fn handler_failed(
    handler: &HandlerId,
    on_error: &OnError,
    failed: Failed<'_, '_>,
    err: &dyn std::fmt::Display,
) -> Decision {
    let id = failed.id();
    let name = handler.name();
    match on_error {
        OnError::Halt => {
            let (db, table, file, pos) = failed.place();
            Decision::Halt(anyhow::anyhow!(
                "handler `{name}` failed on {id} (`{db}`.`{table}` at {file}:{pos}): {err}; halting before the checkpoint moves (on_error = \"halt\")"
            ))
        }
        OnError::Skip => Decision::Skip,
        OnError::DeadLetter { sink } => {
            let error = err.to_string();
            let payload = payload(name, &error, |out| {
                out.extend_from_slice(b",\"change\":");
                failed.write_json(out);
            });
            Decision::DeadLetter {
                record: DeadLetter::new(name, &id, &error, sink),
                sink: sink.clone(),
                // The change emitted nothing (its call failed): the letter is its only message.
                letter: Message {
                    key: None,
                    payload,
                    id,
                    index: 0,
                },
            }
        }
    }
}

/// `sink` refused `msg` of `handler`, whose policy is `on_error`, beyond
/// its retries. A handler whose dead-letter sink is the refusing sink halts:
/// the letter would be refused too.
pub fn sink_refused(handler: &HandlerId, on_error: &OnError, sink: &str, msg: Message, err: &SinkError) -> Decision {
    let name = handler.name();
    match on_error {
        OnError::Halt => Decision::Halt(anyhow::anyhow!(
            "sink `{sink}` refused a message of handler `{name}` ({}): {err}; halting before the checkpoint moves (on_error = \"halt\")",
            msg.id
        )),
        OnError::Skip => {
            tracing::warn!(handler = %name, change = %msg.id, "sink `{sink}` refused a message, skipped (on_error = \"skip\"): {err}");
            Decision::Skip
        }
        OnError::DeadLetter { sink: dl } if dl == sink => Decision::Halt(anyhow::anyhow!(
            "sink `{sink}` refused a message of handler `{name}` ({}) and is its dead-letter sink too: {err}",
            msg.id
        )),
        OnError::DeadLetter { sink: dl } => {
            let payload = payload(name, &err.to_string(), |out| {
                out.extend_from_slice(b",\"id\":");
                crate::json_text::write_str(out, &msg.id);
                out.extend_from_slice(b",\"sink\":");
                crate::json_text::write_str(out, sink);
                out.extend_from_slice(b",\"payload\":");
                crate::json_text::write_str(out, &String::from_utf8_lossy(&msg.payload));
            });
            Decision::DeadLetter {
                record: DeadLetter::new(name, &msg.id, err, dl),
                sink: dl.clone(),
                letter: Message {
                    key: None,
                    payload,
                    id: msg.id,
                    index: msg.index,
                },
            }
        }
    }
}

/// A dead letter: `{"handler":…,"error":…` then what `rest` writes: the
/// change (`,"change":{…}`) a handler failed on, or the message (`,"id":…,
/// "sink":…,"payload":…`) a sink refused.
fn payload(handler: &str, error: &str, rest: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut payload = Vec::with_capacity(256);
    payload.extend_from_slice(b"{\"handler\":");
    crate::json_text::write_str(&mut payload, handler);
    payload.extend_from_slice(b",\"error\":");
    crate::json_text::write_str(&mut payload, error);
    rest(&mut payload);
    payload.push(b'}');
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(payload: &str) -> Message {
        Message {
            key: Some(b"k".to_vec()),
            payload: payload.as_bytes().to_vec(),
            id: "mysql-bin.000001:120:0".into(),
            index: 0,
        }
    }

    fn permanent() -> SinkError {
        SinkError::Permanent {
            sink: "out".into(),
            reason: "disk full".into(),
        }
    }

    fn refused(on_error: &OnError, sink: &str) -> Decision {
        let err = permanent();
        sink_refused(
            &HandlerId::new("t", "orders"),
            on_error,
            sink,
            msg("{\"n\":\"1\"}"),
            &err,
        )
    }

    #[test]
    fn a_refused_message_becomes_a_letter_that_quotes_it() {
        let dl = OnError::DeadLetter { sink: "dead".into() };
        let Decision::DeadLetter { sink, letter, record } = refused(&dl, "out") else {
            panic!("not a dead letter");
        };
        assert_eq!(sink, "dead");
        assert_eq!(letter.key, None, "a letter has no key of its own");
        assert_eq!(letter.id, "mysql-bin.000001:120:0", "the change's id, for dedupe");
        let v: serde_json::Value = serde_json::from_slice(&letter.payload).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "handler": "orders",
                "error": permanent().to_string(),
                "id": "mysql-bin.000001:120:0",
                "sink": "out",
                "payload": "{\"n\":\"1\"}",
            })
        );
        assert_eq!((record.handler.as_str(), record.sink.as_str()), ("orders", "dead"));
    }

    #[test]
    fn halt_and_a_refusing_dead_letter_sink_stop_with_the_reason() {
        let Decision::Halt(e) = refused(&OnError::Halt, "out") else {
            panic!()
        };
        let e = e.to_string();
        assert!(e.contains("sink `out` refused a message of handler `orders`"), "{e}");
        assert!(e.contains("on_error = \"halt\""), "{e}");
        let Decision::Halt(e) = refused(&OnError::DeadLetter { sink: "out".into() }, "out") else {
            panic!()
        };
        assert!(e.to_string().contains("is its dead-letter sink too"), "{e}");
    }

    #[test]
    fn skip_is_a_decision_of_its_own() {
        assert!(matches!(refused(&OnError::Skip, "out"), Decision::Skip));
    }
}
