//! `rowhook test`: replays recorded binlog files through the configured
//! handlers into in-memory sinks and compares what each sink received with
//! a golden file, so a handler author can test handlers in their own CI
//! without a server or any sink's server.
//!
//! Every sink of the config is replaced by an in-memory stand-in that takes
//! what the real one takes (a line sink's stand-in one line of text per
//! message); handlers, grants, limits and `on_error` are the config's, and
//! state is kept in memory as `rowhook replay` keeps it. What a sink
//! received is written as its golden file shows it:
//!
//! - a line sink (stdout, file, fifo): each payload on its own line, as
//!   the real sink writes it;
//! - any other sink: one JSON object per message, `{"key":…,"payload":…}`
//!   (`key` is `null` when the handler gave none; a key or payload that is
//!   not UTF-8 is `key_base64` or `payload_base64` instead).
//!
//! The golden file of sink `NAME` is `NAME.out` in the golden directory;
//! `--update` writes them.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::config::Plan;
use crate::sink::Message;
use crate::sink::capture::{CaptureOptions, Captured};
use crate::sink::registry::SinkSpec;

/// What `rowhook test` compares against, and how.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// The directory of the golden files.
    pub golden: PathBuf,
    /// Write the golden files instead of comparing.
    pub update: bool,
}

/// One sink's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkOutcome {
    /// The sink.
    pub sink: String,
    /// Its golden file.
    pub golden: PathBuf,
    /// How many messages it received.
    pub messages: usize,
    /// What went wrong, if anything: a difference, a missing golden file.
    pub problem: Option<String>,
}

/// The golden directory when none is given: `golden/` beside the config.
pub fn default_golden_dir(config: &Path) -> PathBuf {
    config.parent().unwrap_or(Path::new(".")).join("golden")
}

/// Replays `files` through the handlers of `plan` into in-memory sinks and
/// compares (or, with `update`, records) what each sink received. Call it
/// outside any async runtime. An `Err` is a replay that failed (a handler
/// that halted, a binlog that does not decode); differences are in the
/// outcomes.
pub fn test(plan: &Plan, files: &[PathBuf], opts: &TestOptions) -> anyhow::Result<Vec<SinkOutcome>> {
    let mut plan = plan.clone();
    let mut captures = Vec::new();
    for (name, spec) in plan.sinks.iter_mut() {
        let captured = Captured::default();
        *spec = SinkSpec::Capture(CaptureOptions {
            line: spec.one_line_per_message(),
            row_ops: spec.row_ops(),
            captured: captured.clone(),
        });
        captures.push((name.clone(), spec.one_line_per_message(), captured));
    }
    super::replay::replay(&plan, files)?;
    let mut outcomes = Vec::new();
    for (sink, line, captured) in captures {
        let messages = captured.messages();
        let text = render(&messages, line);
        let golden = opts.golden.join(format!("{sink}.out"));
        let problem = if opts.update {
            std::fs::create_dir_all(&opts.golden)
                .and_then(|()| std::fs::write(&golden, &text))
                .err()
                .map(|e| format!("cannot write {}: {e}", golden.display()))
        } else {
            match std::fs::read_to_string(&golden) {
                Ok(expected) => difference(&expected, &text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
                    "{} does not exist; run with --update to record what the sink received",
                    golden.display()
                )),
                Err(e) => Some(format!("cannot read {}: {e}", golden.display())),
            }
        };
        outcomes.push(SinkOutcome {
            sink,
            golden,
            messages: messages.len(),
            problem,
        });
    }
    Ok(outcomes)
}

/// What a sink received, as its golden file shows it (see the module docs).
pub fn render(messages: &[Message], line: bool) -> String {
    let mut out = String::new();
    for m in messages {
        if line {
            out.push_str(&String::from_utf8_lossy(&m.payload));
        } else {
            let mut o = serde_json::Map::new();
            field(&mut o, "key", m.key.as_deref());
            field(&mut o, "payload", Some(&m.payload));
            out.push_str(&serde_json::Value::Object(o).to_string());
        }
        out.push('\n');
    }
    out
}

fn field(o: &mut serde_json::Map<String, serde_json::Value>, name: &str, bytes: Option<&[u8]>) {
    match bytes.map(std::str::from_utf8) {
        None => {
            o.insert(name.to_owned(), serde_json::Value::Null);
        }
        Some(Ok(text)) => {
            o.insert(name.to_owned(), text.into());
        }
        Some(Err(_)) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes.unwrap_or_default());
            o.insert(format!("{name}_base64"), encoded.into());
        }
    }
}

/// Where `actual` first differs from `expected`, line by line, or `None`.
fn difference(expected: &str, actual: &str) -> Option<String> {
    if expected == actual {
        return None;
    }
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let at = e
        .iter()
        .zip(&a)
        .position(|(x, y)| x != y)
        .unwrap_or(e.len().min(a.len()));
    let show = |lines: &[&str]| lines.get(at).map_or("(nothing)".to_owned(), |l| (*l).to_owned());
    Some(format!(
        "differs at line {} ({} lines expected, {} received)\n  expected: {}\n  received: {}",
        at + 1,
        e.len(),
        a.len(),
        show(&e),
        show(&a)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(key: Option<&[u8]>, payload: &[u8]) -> Message {
        Message {
            key: key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
            id: "0-1-1:0:0".into(),
            index: 0,
        }
    }

    #[test]
    fn line_sinks_render_as_written_others_as_json() {
        let messages = [message(Some(b"7"), b"{\"order\":7}"), message(None, b"plain")];
        assert_eq!(render(&messages, true), "{\"order\":7}\nplain\n");
        assert_eq!(
            render(&messages, false),
            "{\"key\":\"7\",\"payload\":\"{\\\"order\\\":7}\"}\n{\"key\":null,\"payload\":\"plain\"}\n"
        );
        let binary = [message(Some(&[0xff]), &[0, 0xfe])];
        assert_eq!(
            render(&binary, false),
            "{\"key_base64\":\"/w==\",\"payload_base64\":\"AP4=\"}\n"
        );
    }

    #[test]
    fn the_first_difference_is_named() {
        assert_eq!(difference("a\nb\n", "a\nb\n"), None);
        let d = difference("a\nb\nc\n", "a\nx\n").unwrap();
        assert!(d.starts_with("differs at line 2 (3 lines expected, 2 received)"), "{d}");
        assert!(d.contains("expected: b") && d.contains("received: x"), "{d}");
        let d = difference("a\n", "a\nb\n").unwrap();
        assert!(d.contains("line 2") && d.contains("expected: (nothing)"), "{d}");
    }
}
