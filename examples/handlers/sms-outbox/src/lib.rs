//! A table as a job queue: every new pending row of an SMS outbox becomes a
//! job on a Redis list that the SMS sender pops.
//!
//! Who: an application that writes the text messages it wants sent into a
//! table, in the same transaction as the order or the login they belong to,
//! so a message exists exactly when its transaction committed. Today a
//! worker polls that table; rowhook hands each row over as it commits, with
//! no polling and no trigger.
//!
//! In: inserts into `notify.sms_outbox` (the config subscribes to inserts
//! only). A row is a job when its `status` is `pending`; a `draft` (or a row
//! inserted already `sent`) is not, nor is a later update or delete: the
//! delivery report that marks a row `sent` must not send it again.
//!
//! Out: one JSON job per pending row to the sink `sms_jobs`, keyed by the row
//! id, pushed onto the list `sms:outbox` in binlog order:
//!
//! ```json
//! {"job":"0-1-4:0:0","id":1,"to":"+4915112345678","body":"Your code is 1234"}
//! ```
//!
//! `job` is the row change's stable id. Delivery is at-least-once: after a
//! crash the same insert may be pushed again, with the same `job`, and the
//! consumer (`examples/sms-consumer.sh`) sends each job once by remembering
//! the ids it has sent.
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/handlers`
//! (or `bash examples/demo.sh`); run: `examples/sms-outbox.toml`.

use rowhook_guest::json::Object;
use rowhook_guest::{Change, Op, Result};

/// The sink the jobs go to; the config must grant it.
const SINK: &str = "sms_jobs";

fn on_change(change: &Change) -> Result<()> {
    if change.op() != Op::Insert {
        return Ok(());
    }
    let status: &str = change.get("status")?;
    if status != "pending" {
        return Ok(());
    }
    let id: u64 = change.get("id")?;
    let mut job = Object::new();
    // `job`, the row change's id, is the same on every delivery of this insert.
    job.str("job", change.id())
        .uint("id", id)
        .str("to", change.get("phone")?)
        .str("body", change.get("body")?);
    rowhook_guest::emit(SINK, Some(&id.to_string()), job.finish())
}

rowhook_guest::export_handler!(on_change);

#[cfg(test)]
mod tests {
    use rowhook_guest::Value;
    use rowhook_guest::testing::{self, ChangeBuilder};

    use super::*;

    fn sms(builder: ChangeBuilder<'static>, id: u64, status: &'static str) -> ChangeBuilder<'static> {
        builder
            .gtid("0-1-4")
            .primary_key("id")
            .column("id", Value::UInt(id))
            .column("phone", Value::String("+4915112345678"))
            .column("body", Value::String("Your code is 1234"))
            .column("status", Value::Enum(status))
            .column("created_at", Value::DateTime("2025-11-21 08:00:00"))
            .column("sent_at", Value::Null)
    }

    #[test]
    fn a_pending_row_becomes_a_job_keyed_by_row() {
        let change = sms(ChangeBuilder::insert("notify", "sms_outbox"), 1, "pending").build();
        testing::run(on_change, &change).unwrap();
        let sent = testing::messages();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].sink, "sms_jobs");
        assert_eq!(sent[0].key.as_deref(), Some("1"));
        assert_eq!(
            String::from_utf8(sent[0].payload.clone()).unwrap(),
            r#"{"job":"0-1-4:0:0","id":1,"to":"+4915112345678","body":"Your code is 1234"}"#
        );
    }

    #[test]
    fn rows_of_one_statement_are_separate_jobs() {
        for row in 0..2 {
            let change = sms(
                ChangeBuilder::insert("notify", "sms_outbox"),
                2 + u64::from(row),
                "pending",
            )
            .gtid("0-1-5")
            .index(0, row)
            .build();
            testing::run(on_change, &change).unwrap();
        }
        let jobs: Vec<serde_json::Value> = testing::messages()
            .iter()
            .map(|m| serde_json::from_slice(&m.payload).unwrap())
            .collect();
        assert_eq!(jobs[0]["job"], "0-1-5:0:0");
        assert_eq!(jobs[1]["job"], "0-1-5:0:1");
        assert_eq!((jobs[0]["id"].as_u64(), jobs[1]["id"].as_u64()), (Some(2), Some(3)));
    }

    #[test]
    fn only_pending_inserts_are_jobs() {
        let changes = [
            sms(ChangeBuilder::insert("notify", "sms_outbox"), 4, "draft"),
            sms(ChangeBuilder::insert("notify", "sms_outbox"), 6, "sent"),
            // The delivery report, and the purge: never a second send.
            sms(ChangeBuilder::update("notify", "sms_outbox"), 1, "sent").before("status", Value::Enum("pending")),
            sms(ChangeBuilder::delete("notify", "sms_outbox"), 1, "sent"),
            // Back to pending by an update: the config does not subscribe to
            // updates, and the handler does not send one that reaches it.
            sms(ChangeBuilder::update("notify", "sms_outbox"), 4, "pending").before("status", Value::Enum("draft")),
        ];
        for change in changes {
            testing::run(on_change, &change.build()).unwrap();
        }
        assert!(testing::messages().is_empty(), "{:?}", testing::messages());
    }

    #[test]
    fn text_is_escaped() {
        let body = "Commande 1001 expédiée, suivi \"FR-7781\"\\\n\u{7}\u{7f}\u{85}";
        let change = sms(ChangeBuilder::insert("notify", "sms_outbox"), 3, "pending")
            .column("body", Value::String(body))
            .build();
        testing::run(on_change, &change).unwrap();
        let payload = testing::messages()[0].payload.clone();
        let job: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(job["body"], body);
        // One job is one line of printable text, whatever the body holds.
        let text = String::from_utf8(payload).unwrap();
        assert!(!text.chars().any(char::is_control), "{text}");
    }

    #[test]
    fn a_row_without_a_status_fails_the_change() {
        let change = ChangeBuilder::insert("notify", "sms_outbox")
            .column("id", Value::UInt(1))
            .build();
        let err = testing::run(on_change, &change).unwrap_err();
        assert_eq!(err, "no column `status`");
        assert!(testing::messages().is_empty());
    }

    #[test]
    fn an_ungranted_sink_fails_the_change() {
        testing::grant(&["elsewhere"]);
        let change = sms(ChangeBuilder::insert("notify", "sms_outbox"), 1, "pending").build();
        let err = testing::run(on_change, &change).unwrap_err();
        assert!(err.contains("denied"), "{err}");
    }
}
