//! orders-copy into a database: every order of `shop.orders`, reshaped,
//! kept as one row of the table `orders_copy` of another database
//! (PostgreSQL or MySQL) through a SQL sink.
//!
//! In: inserts, updates and deletes of `shop.orders`.
//!
//! Out: one row operation per change to the sink `orders_db`: an upsert of
//! the reshaped order (the columns below, keyed by `order_id`), or a delete
//! of its row. The sink applies each batch in one transaction, so the
//! target table follows the shop's, one transaction behind at most:
//!
//! ```json
//! {"op":"upsert","table":"orders_copy","row":{"order_id":1002,"user_id":2,"amount":"89.99",
//!  "amount_cents":8999,"currency":"USD","status":"paid","paid":true,
//!  "created_at":"2025-11-21T09:31:00.000Z","change_id":"0-1-12:0:0"}}
//! {"op":"delete","table":"orders_copy","key":{"order_id":1002}}
//! ```
//!
//! `amount` travels as exact decimal text; `amount_cents` and `paid` are
//! derived, as in orders-copy. The target table:
//!
//! ```sql
//! CREATE TABLE orders_copy (order_id bigint PRIMARY KEY, user_id integer NOT NULL,
//!   amount numeric(12,2) NOT NULL, amount_cents bigint NOT NULL, currency char(3) NOT NULL,
//!   status varchar(16) NOT NULL, paid boolean NOT NULL, created_at timestamptz NOT NULL,
//!   change_id text NOT NULL);
//! ```
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/handlers`;
//! run: `examples/orders-copy-postgres.toml`.

use rowhook_guest::sql::{self, SqlValue};
use rowhook_guest::{Change, Error, Op, Result};

/// The sink the row operations go to; the config must grant it.
const SINK: &str = "orders_db";
/// The target table, as the sink's `tables` names it.
const TABLE: &str = "orders_copy";

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
    let order_id: u64 = change.get("id")?;
    if change.op() == Op::Delete {
        return rowhook_guest::emit(SINK, None, sql::delete(TABLE, &[("order_id", order_id.into())]));
    }
    let amount: &str = change.get("amount")?;
    let status: &str = change.get("status")?;
    let row: [(&str, SqlValue); 9] = [
        ("order_id", order_id.into()),
        ("user_id", change.get::<u32>("user_id")?.into()),
        ("amount", sql::text(amount)),
        ("amount_cents", cents(amount)?.into()),
        ("currency", change.get::<&str>("currency")?.into()),
        ("status", status.into()),
        ("paid", matches!(status, "paid" | "shipped").into()),
        ("created_at", change.get::<&str>("created_at")?.into()),
        ("change_id", change.id().into()),
    ];
    rowhook_guest::emit(SINK, None, sql::upsert(TABLE, &row))
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
    fn an_update_upserts_the_reshaped_row() {
        testing::grant(&[SINK]);
        let change = order(ChangeBuilder::update("shop", "orders"))
            .before("status", Value::Enum("new"))
            .build();
        testing::run(on_change, &change).unwrap();
        let sent = testing::messages();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].sink, "orders_db");
        assert_eq!(
            String::from_utf8(sent[0].payload.clone()).unwrap(),
            r#"{"op":"upsert","table":"orders_copy","row":{"order_id":1002,"user_id":2,"amount":"89.99","amount_cents":8999,"currency":"USD","status":"paid","paid":true,"created_at":"2025-11-21T09:31:00.000Z","change_id":"0-1-12:0:0"}}"#
        );
    }

    #[test]
    fn a_delete_deletes_the_row() {
        testing::grant(&[SINK]);
        let change = order(ChangeBuilder::delete("shop", "orders")).build();
        testing::run(on_change, &change).unwrap();
        assert_eq!(
            testing::messages()[0].payload,
            br#"{"op":"delete","table":"orders_copy","key":{"order_id":1002}}"#
        );
    }

    #[test]
    fn a_wrong_amount_fails_the_change_and_emits_nothing() {
        testing::grant(&[SINK]);
        let change = order(ChangeBuilder::insert("shop", "orders"))
            .column("amount", Value::Decimal("1.5"))
            .build();
        let err = testing::run(on_change, &change).unwrap_err();
        assert!(err.contains("two fraction digits"), "{err}");
        assert!(testing::messages().is_empty());
    }
}
