//! A handler whose metrics and log a test can count (tests/e2e/handlers.rs),
//! one behaviour per op of `shop.orders`:
//!
//! - insert: adds 1 to counter `orders_seen`, sets gauge `last_order_id`,
//!   and writes two log lines more than rowhook keeps per call;
//! - update: adds 1 to counter `leaked`, then fails with an error that
//!   tries to forge a line of rowhook's log: the write is dropped with the
//!   failed call, the error is escaped;
//! - delete: writes metrics with invalid names, which rowhook ignores, and
//!   a warning that tries to forge a log line and clear the terminal.

use rowhook_guest::{Change, Error, Op, Result, log, metrics};

/// rowhook's per-call cap on log lines (`MAX_LOG_LINES_PER_CALL`).
const LOG_LINES_KEPT: usize = 10_000;

fn on_change(change: &Change) -> Result<()> {
    match change.op() {
        Op::Insert => {
            let id: i64 = change.get("id")?;
            metrics::counter_add("orders_seen", 1);
            metrics::gauge_set("last_order_id", id as f64);
            for _ in 0..LOG_LINES_KEPT + 2 {
                log::debug("order seen", &[]);
            }
            Ok(())
        }
        Op::Update => {
            metrics::counter_add("leaked", 1);
            Err(Error::msg(
                "fails on purpose after writing a metric\n2099-01-01T00:00:00Z ERROR rowhook: forged by a guest",
            ))
        }
        Op::Delete => {
            metrics::counter_add("bad-name", 1);
            metrics::gauge_set("9lives", 1.0);
            log::warn(
                "deleted\r\n2099-01-01T00:00:00Z INFO rowhook: forged by a guest\u{1b}[2J",
                &[("field\nname", "value\n2099-01-01T00:00:00Z INFO forged")],
            );
            Ok(())
        }
        Op::Snapshot => Ok(()),
    }
}

rowhook_guest::export_handler!(on_change);
