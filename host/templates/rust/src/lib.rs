//! {{name}}: every new order of `shop.orders` as one JSON line to the sink
//! `out`, and a count of the orders in the handler's state.

use rowhook_guest::json::Object;
use rowhook_guest::{Change, Op, Result};

fn on_change(change: &Change) -> Result<()> {
    if change.op() != Op::Insert {
        return Ok(());
    }
    let id: i64 = change.get("id")?;
    let amount: &str = change.get("amount")?;
    let mut line = Object::new();
    line.int("order", id).str("amount", amount);
    rowhook_guest::emit("out", Some(&id.to_string()), line.finish())?;
    rowhook_guest::state::increment("orders", 1)?;
    Ok(())
}

rowhook_guest::export_handler!(on_change);
