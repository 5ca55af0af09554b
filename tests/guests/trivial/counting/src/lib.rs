//! The counting handler: the trivial handler, made visible.
//!
//! In: every row change of the tables it subscribes to. Out: one message
//! per call to the sink `calls`, keyed by the change's id:
//! `{"id":"<change id>","op":"insert","db":"d","table":"t","row":<id column>}`.
//! A test counts the lines to know exactly which calls the host made
//! (`tests/e2e/filtering.rs`); handlers get no environment, so this is a
//! second crate rather than a switch in `trivial`.

#![deny(unsafe_code)]

use rowhook_guest::{Change, Result};

fn on_change(change: &Change) -> Result<()> {
    let row: u64 = change.get("id")?;
    // Database, table and id are plain ASCII in the tests that use this
    // handler; a real handler would escape them.
    let payload = format!(
        "{{\"id\":\"{}\",\"op\":\"{}\",\"db\":\"{}\",\"table\":\"{}\",\"row\":{row}}}",
        change.id(),
        change.op().as_str(),
        change.db(),
        change.table()
    );
    rowhook_guest::emit("calls", Some(change.id()), payload)?;
    Ok(())
}

rowhook_guest::export_handler!(on_change);

#[cfg(test)]
mod tests {
    use rowhook_guest::Value;
    use rowhook_guest::testing::{self, ChangeBuilder};

    #[test]
    fn one_message_per_call() {
        let change = ChangeBuilder::insert("ten", "t3").column("id", Value::Int(5)).build();
        testing::run(super::on_change, &change).unwrap();
        let sent = testing::messages();
        assert_eq!(sent.len(), 1);
        let text = String::from_utf8(sent[0].payload.clone()).unwrap();
        assert!(
            text.contains("\"op\":\"insert\",\"db\":\"ten\",\"table\":\"t3\",\"row\":5}"),
            "{text}"
        );
    }
}
