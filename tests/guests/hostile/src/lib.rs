//! A handler that misbehaves on purpose, one way per table of the shop
//! binlog, so tests can check each is contained:
//!
//! - `news`: loops forever (the deadline stops it);
//! - `hits`: panics (a trap);
//! - `user_info`: emits far past its quota;
//! - `sms_outbox`: emits to a sink it was not granted, and reports the
//!   denial, then to that sink's name spelled other ways (each denied),
//!   tries a payload with a newline (refused by a line sink), then
//!   payloads with a carriage return, a NUL, a terminal escape, a C1
//!   control and bytes that are not UTF-8 (all refused) and one with a tab
//!   (taken), then reports what it can see of the filesystem, the
//!   environment and the clock (nothing, nothing, and a clock frozen at 0),
//!   and what it finds under another handler's state keys (nothing);
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
            // The same sink under other spellings: case, spaces, a Cyrillic
            // letter, full-width letters, a NUL, a path.
            let variants = [
                "Secret",
                "SECRET",
                " secret",
                "secret ",
                "s\u{0435}cret",
                "\u{ff53}\u{ff45}\u{ff43}\u{ff52}\u{ff45}\u{ff54}",
                "secret\0",
                "./secret",
            ];
            let answers: Vec<String> = variants
                .iter()
                .map(|name| match rowhook_guest::emit(name, None, "stolen") {
                    Ok(()) => "TAKEN".to_owned(),
                    Err(rowhook_guest::Error::Emit { error, .. }) => format!("{error:?}"),
                    Err(e) => format!("{e}"),
                })
                .collect();
            rowhook_guest::emit("out", None, format!("variants: {}", answers.join(" ")))?;
            // A newline would split the message in a one-line-per-message sink.
            match rowhook_guest::emit("out", None, "two\nlines") {
                Err(e) => rowhook_guest::emit("out", None, format!("newline: {e}"))?,
                Ok(()) => rowhook_guest::emit("out", None, "NEWLINE ACCEPTED")?,
            }
            // Each would break one-record-per-line or drive a terminal.
            let hostile: [&[u8]; 6] = [
                b"carriage\rreturn",
                b"nul\0byte",
                b"\x1b]0;owned\x07\x1b[2J",
                "c1 \u{9b}31m".as_bytes(),
                b"not utf-8 \xff\xfe",
                b"tab\tis fine",
            ];
            let taken: Vec<String> = hostile
                .iter()
                .map(|p| match rowhook_guest::emit("out", None, p) {
                    Ok(()) => "taken".to_owned(),
                    Err(rowhook_guest::Error::Emit { error, .. }) => format!("{error:?}"),
                    Err(e) => format!("{e}"),
                })
                .collect();
            rowhook_guest::emit("out", None, format!("controls: {}", taken.join(" ")))?;
            let file = std::fs::read_to_string("/etc/hostname").map(|s| s.len());
            let root = std::fs::read_dir("/").map(|d| d.count());
            rowhook_guest::emit("out", None, format!("fs: {file:?} {root:?}"))?;
            let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
            rowhook_guest::emit("out", None, format!("env: {env:?}"))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs());
            rowhook_guest::emit("out", None, format!("clock: {now:?}"))?;
            // Another handler's state (`orders` counts under "orders"),
            // by every key it might be kept under: a handler reads only
            // its own state, which holds nothing here.
            let guesses = [
                "orders",
                "default/orders",
                "default/orders/orders",
                "orders/orders",
                "../orders/orders",
                "orders\0orders",
                "/orders",
                "*",
            ];
            let seen: Vec<String> = guesses
                .iter()
                .map(|k| match rowhook_guest::state::get(k) {
                    Some(v) => format!("{k:?}={v:?}"),
                    None => "none".to_owned(),
                })
                .collect();
            rowhook_guest::emit("out", None, format!("state: {}", seen.join(" ")))
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
