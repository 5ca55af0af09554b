//! The languages benchmark's handler in Rust: reads `id` and `status` of a
//! `cdcbench.orders` change and emits them as one JSON line
//! (tests/bench/languages.sh; its twins in tests/bench/languages/).

use rowhook_guest::json::Object;
use rowhook_guest::{Change, Result};

fn on_change(change: &Change) -> Result<()> {
    let id: u64 = change.get("id")?;
    let status: &str = change.get("status")?;
    let mut doc = Object::new();
    doc.uint("id", id).str("status", status);
    rowhook_guest::emit("out", None, doc.finish())
}

rowhook_guest::export_handler!(on_change);
