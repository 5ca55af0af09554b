//! Copy every new or changed order into another store, reshaped.
//!
//! Who: a team that wants the shop's orders in a reporting store, a search
//! index or a queue, in their own shape, without touching the shop's code or
//! polling its database.
//!
//! In: inserts and updates of `shop.orders` (the config subscribes to those
//! two operations; a delete that reaches the handler anyway is ignored).
//!
//! Out: one compact JSON document per change to the sink `orders_copy`, keyed
//! by the order id, so a keyed store keeps the latest version of each order:
//!
//! ```json
//! {"order_id":1002,"user_id":2,"amount":"89.99","amount_cents":8999,"currency":"USD",
//!  "status":"paid","paid":true,"created_at":"2025-11-21T09:31:00.000Z","change_id":"0-1-12:0:0"}
//! ```
//!
//! `amount_cents` and `paid` are derived: the exact DECIMAL amount in cents
//! (no float on the way) and whether the order has been paid for.
//! `change_id` is the row change's stable id: delivery is at-least-once, so
//! after a restart the same change may arrive again, with the same id, and
//! the consumer can drop it.
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/handlers`
//! (or `bash examples/demo.sh`); run: `examples/orders-copy.toml`.

use rowhook_guest::{Change, Error, Op, Result};
use serde::Serialize;

/// The sink the documents go to; the config must grant it.
const SINK: &str = "orders_copy";

/// The copied order, as the consumer's store wants it.
#[derive(Debug, Serialize)]
struct OrderDoc<'a> {
    order_id: u64,
    user_id: u32,
    amount: &'a str,
    amount_cents: i64,
    currency: &'a str,
    status: &'a str,
    paid: bool,
    created_at: &'a str,
    change_id: &'a str,
}

impl<'a> OrderDoc<'a> {
    /// Reads the order as it is after `change`.
    fn from_change(change: &Change<'a>) -> Result<Self> {
        let amount: &str = change.get("amount")?;
        let status: &str = change.get("status")?;
        Ok(OrderDoc {
            order_id: change.get("id")?,
            user_id: change.get("user_id")?,
            amount,
            amount_cents: cents(amount)?,
            currency: change.get("currency")?,
            status,
            paid: matches!(status, "paid" | "shipped"),
            created_at: change.get("created_at")?,
            change_id: change.id(),
        })
    }
}

/// `"12.50"` → `1250`. A DECIMAL(12,2) column always arrives with exactly
/// two fraction digits, so dropping the point gives the cents, exactly.
fn cents(amount: &str) -> Result<i64> {
    match amount.split_once('.') {
        Some((units, fraction)) if fraction.len() == 2 && fraction.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(format!("{units}{fraction}").parse()?)
        }
        _ => Err(Error::msg(format!(
            "amount `{amount}` is not a decimal with two fraction digits"
        ))),
    }
}

fn on_change(change: &Change) -> Result<()> {
    if change.op() == Op::Delete {
        return Ok(());
    }
    let doc = OrderDoc::from_change(change)?;
    rowhook_guest::emit(SINK, Some(&doc.order_id.to_string()), serde_json::to_vec(&doc)?)
}

rowhook_guest::export_handler!(on_change);

#[cfg(test)]
mod tests {
    use rowhook_guest::Value;
    use rowhook_guest::testing::{self, ChangeBuilder};

    use super::*;

    fn order(builder: ChangeBuilder<'static>) -> ChangeBuilder<'static> {
        builder
            .gtid("0-1-12")
            .primary_key("id")
            .column("id", Value::UInt(1002))
            .column("user_id", Value::UInt(2))
            .column("amount", Value::Decimal("89.99"))
            .column("currency", Value::String("USD"))
            .column("status", Value::Enum("paid"))
            .column("created_at", Value::Timestamp("2025-11-21T09:31:00.000Z"))
    }

    #[test]
    fn an_update_becomes_a_document_keyed_by_order() {
        let change = order(ChangeBuilder::update("shop", "orders"))
            .before("status", Value::Enum("new"))
            .build();
        testing::run(on_change, &change).unwrap();
        let sent = testing::messages();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].sink, "orders_copy");
        assert_eq!(sent[0].key.as_deref(), Some("1002"));
        assert_eq!(
            String::from_utf8(sent[0].payload.clone()).unwrap(),
            r#"{"order_id":1002,"user_id":2,"amount":"89.99","amount_cents":8999,"currency":"USD","status":"paid","paid":true,"created_at":"2025-11-21T09:31:00.000Z","change_id":"0-1-12:0:0"}"#
        );
    }

    #[test]
    fn deletes_are_not_copied() {
        let change = order(ChangeBuilder::delete("shop", "orders")).build();
        testing::run(on_change, &change).unwrap();
        assert!(testing::messages().is_empty());
    }

    #[test]
    fn text_is_escaped() {
        let change = order(ChangeBuilder::insert("shop", "orders"))
            .column("currency", Value::String("\"\\\n"))
            .build();
        testing::run(on_change, &change).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&testing::messages()[0].payload).unwrap();
        assert_eq!(doc["currency"], "\"\\\n");
    }

    #[test]
    fn amounts_convert_to_cents_exactly() {
        assert_eq!(cents("12.50").unwrap(), 1250);
        assert_eq!(cents("0.07").unwrap(), 7);
        assert_eq!(cents("-0.50").unwrap(), -50);
        assert_eq!(cents("9999999999.99").unwrap(), 999_999_999_999);
        for bad in ["12", "12.5", "12.500", "1a.00", "12.-5", ""] {
            assert!(cents(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_wrong_amount_fails_the_change_and_emits_nothing() {
        let change = order(ChangeBuilder::insert("shop", "orders"))
            .column("amount", Value::Decimal("1.5"))
            .build();
        let err = testing::run(on_change, &change).unwrap_err();
        assert!(err.contains("two fraction digits"), "{err}");
        assert!(testing::messages().is_empty());
    }

    #[test]
    fn an_ungranted_sink_fails_the_change() {
        testing::grant(&["elsewhere"]);
        let change = order(ChangeBuilder::insert("shop", "orders")).build();
        let err = testing::run(on_change, &change).unwrap_err();
        assert!(err.contains("denied"), "{err}");
    }
}
