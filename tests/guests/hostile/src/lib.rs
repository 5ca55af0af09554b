//! A handler that misbehaves on purpose, one way per table of the shop
//! binlog, so tests can check each is contained:
//!
//! - `news`: loops forever (the deadline stops it);
//! - `hits`: panics (a trap);
//! - `user_info`: emits far past its quota;
//! - `sms_outbox`: emits to a sink it was not granted, and reports the denial;
//! - `orders`: grows memory past its cap;
//! - anything else: nothing.

use rowhook_guest::{Change, Result};

fn on_change(change: &Change) -> Result<()> {
    match change.table() {
        "news" => loop {
            std::hint::black_box(change.id());
        },
        "hits" => panic!("hostile handler panics on purpose"),
        "user_info" => {
            for _ in 0..100_000 {
                rowhook_guest::emit("out", None, "flood")?;
            }
            Ok(())
        }
        "sms_outbox" => match rowhook_guest::emit("secret", None, "stolen") {
            Err(e) => rowhook_guest::emit("out", None, format!("denied: {e}")),
            Ok(()) => rowhook_guest::emit("out", None, "NOT DENIED"),
        },
        "orders" => {
            let mut hog: Vec<Vec<u8>> = Vec::new();
            loop {
                hog.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hog);
            }
        }
        _ => Ok(()),
    }
}

rowhook_guest::export_handler!(on_change);
