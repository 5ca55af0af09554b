//! A handler that misbehaves on purpose, one way per table of the shop
//! binlog, so tests can check each is contained:
//!
//! - `news`: loops forever (the deadline stops it);
//! - `hits`: panics (a trap);
//! - `user_info`: emits far past its quota;
//! - `sms_outbox`: emits to a sink it was not granted, and reports the
//!   denial, tries a payload with a newline (refused by a line sink), then
//!   reports what it can see of the filesystem, the
//!   environment and the clock (nothing, nothing, and a clock frozen at 0);
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
        "sms_outbox" => {
            match rowhook_guest::emit("secret", None, "stolen") {
                Err(e) => rowhook_guest::emit("out", None, format!("denied: {e}"))?,
                Ok(()) => rowhook_guest::emit("out", None, "NOT DENIED")?,
            }
            // A newline would split the message in a one-line-per-message sink.
            match rowhook_guest::emit("out", None, "two\nlines") {
                Err(e) => rowhook_guest::emit("out", None, format!("newline: {e}"))?,
                Ok(()) => rowhook_guest::emit("out", None, "NEWLINE ACCEPTED")?,
            }
            let file = std::fs::read_to_string("/etc/hostname").map(|s| s.len());
            let root = std::fs::read_dir("/").map(|d| d.count());
            rowhook_guest::emit("out", None, format!("fs: {file:?} {root:?}"))?;
            let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
            rowhook_guest::emit("out", None, format!("env: {env:?}"))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs());
            rowhook_guest::emit("out", None, format!("clock: {now:?}"))
        }
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
