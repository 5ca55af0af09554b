//! The smallest useful handler.
//!
//! In: every row change of the tables the handler subscribes to (say
//! `shop.orders`, ops `insert`). Out: for each new order, its id as the key
//! and `{"order":<id>}` as the payload, to the sink `orders_queue`; a
//! counter of orders seen in state and in a metric.
//!
//! Build: `cargo build --release --target wasm32-wasip2`, then point a
//! `[[handlers]]` entry's `module` at `target/wasm32-wasip2/release/minimal.wasm`.

#![deny(unsafe_code)]

use rowhook_guest::{Change, Op, Result};

fn on_change(change: &Change) -> Result<()> {
    if change.op() != Op::Insert {
        return Ok(());
    }
    let id: i64 = change.get("id")?;
    rowhook_guest::emit("orders_queue", Some(&id.to_string()), format!("{{\"order\":{id}}}"))?;
    rowhook_guest::state::increment("orders", 1)?;
    rowhook_guest::metrics::counter_add("orders", 1);
    Ok(())
}

rowhook_guest::export_handler!(on_change);

#[cfg(test)]
mod tests {
    use rowhook_guest::Value;
    use rowhook_guest::testing::{self, ChangeBuilder};

    #[test]
    fn emits_new_orders() {
        let change = ChangeBuilder::insert("shop", "orders")
            .column("id", Value::Int(42))
            .build();
        testing::run(super::on_change, &change).unwrap();
        let sent = testing::messages();
        assert_eq!(sent[0].key.as_deref(), Some("42"));
        assert_eq!(sent[0].payload, br#"{"order":42}"#);
        assert_eq!(rowhook_guest::state::counter("orders"), 1);
    }
}
