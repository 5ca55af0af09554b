//! A handler that emits as much as it can, one way per table of the `flood`
//! database, so tests can check that host memory stays bounded:
//!
//! - `payloads`: one 8 MiB message per row change, within its budget (the
//!   test inserts hundreds of rows in one statement: one rows event);
//! - `budget`: three 16 MiB messages per row change, past the default emit
//!   budget of 16 MiB: the second is refused with `quota` and the event fails;
//! - `keys`: a message with a 40 MB key, refused with `too-large`, then a
//!   report of the refusal to the sink `report`;
//! - `logs`: 50 warnings per row change, far past the default log rate;
//! - anything else: nothing.

use rowhook_guest::{Change, Result};

fn on_change(change: &Change) -> Result<()> {
    match change.table() {
        "payloads" => rowhook_guest::emit("out", None, vec![b'p'; 8 << 20]),
        "budget" => {
            for _ in 0..3 {
                rowhook_guest::emit("out", None, vec![b'b'; 16 << 20])?;
            }
            Ok(())
        }
        "keys" => {
            let key = "k".repeat(40_000_000);
            match rowhook_guest::emit("out", Some(&key), "keyed") {
                Err(e) => rowhook_guest::emit("report", None, format!("key: {e}")),
                Ok(()) => rowhook_guest::emit("report", None, "KEY ACCEPTED"),
            }
        }
        "logs" => {
            for i in 0..50 {
                rowhook_guest::log::warn("flooding the log", &[("line", &i.to_string())]);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

rowhook_guest::export_handler!(on_change);
