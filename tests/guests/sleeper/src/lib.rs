//! A handler that waits, one way per table, so tests can check that no
//! wait outlasts the call's deadline and that a stop cuts any call:
//!
//! - `news`: sleeps 5 s (`std::thread::sleep`), then emits `news: woke`;
//! - `hits`: sleeps u64::MAX ns every way WASI offers: a duration pollable
//!   it blocks on, an instant pollable it polls (both through the WASI
//!   0.2.0 imports), and `std::thread::sleep`; then emits `hits: woke`;
//! - `sms_outbox`: reads stdin to its end and writes stdout and stderr,
//!   with the blocking calls, then emits what the read returned;
//! - `user_info`, `wait`: sleeps until the clock moves, which it never
//!   does: a loop of sleeps, which only the deadline (or a stop) ends;
//! - `orders`, `spin`: loops without calling the host;
//! - anything else: nothing.

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use rowhook_guest::{Change, Result};

#[allow(unsafe_code, missing_docs, clippy::all)]
mod wasi {
    wit_bindgen::generate!({ path: "wit", world: "sleeper", generate_all });
}

use wasi::wasi::clocks::monotonic_clock;
use wasi::wasi::io::poll;

fn on_change(change: &Change) -> Result<()> {
    let table = change.table();
    match table {
        "news" => {
            std::thread::sleep(Duration::from_secs(5));
            rowhook_guest::emit("out", None, "news: woke")
        }
        "hits" => {
            monotonic_clock::subscribe_duration(u64::MAX).block();
            let later = monotonic_clock::subscribe_instant(u64::MAX);
            let ready = poll::poll(&[&later]);
            std::thread::sleep(Duration::from_nanos(u64::MAX));
            rowhook_guest::emit("out", None, format!("hits: woke {ready:?}"))
        }
        "sms_outbox" => {
            let mut input = Vec::new();
            let read = std::io::stdin().read_to_end(&mut input);
            println!("to nowhere");
            eprintln!("to nowhere");
            let flushed = std::io::stdout().flush();
            rowhook_guest::emit("out", None, format!("stdio: {read:?} {flushed:?}"))
        }
        "user_info" | "wait" => {
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(1) {
                std::thread::sleep(Duration::from_millis(1));
            }
            rowhook_guest::emit("out", None, format!("{table}: the clock moved"))
        }
        "orders" | "spin" => loop {
            std::hint::black_box(change.id());
        },
        _ => Ok(()),
    }
}

rowhook_guest::export_handler!(on_change);
