//! The crash test's handler: every change of `ledger` goes to the file sink
//! `out` as `<change id> <ledger id> <k>`, and is counted in state under
//! `k:<k>` (and `total`). After any number of crashes the counters must
//! equal the ledger's row counts exactly, while the file may repeat what
//! came after the last checkpoint.

use rowhook_guest::{Change, Result};

fn on_change(change: &Change) -> Result<()> {
    let id: i64 = change.get("id")?;
    let k: i64 = change.get("k")?;
    rowhook_guest::emit("out", None, format!("{} {id} {k}", change.id()))?;
    rowhook_guest::state::increment(&format!("k:{k}"), 1)?;
    rowhook_guest::state::increment("total", 1)?;
    Ok(())
}

rowhook_guest::export_handler!(on_change);
