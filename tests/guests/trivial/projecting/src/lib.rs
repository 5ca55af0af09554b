//! The projecting handler: what a realistic handler costs.
//!
//! In: every row change of the shared benchmark workload (`cdcbench.orders`
//! and `cdcbench.user_info`). Out: one small JSON document per change to
//! the sink `out`, keyed by the row's id, built from three columns:
//! `{"change":"<change id>","op":"insert","id":7,"status":"paid","amount":"12.50"}`
//! for an order, `…,"email":…,"balance":…` for a user. `tests/bench/run.sh`
//! measures it against the trivial handler (README, "The emit path").

#![deny(unsafe_code)]

use rowhook_guest::json::Object;
use rowhook_guest::{Change, Result, Value};

fn on_change(change: &Change) -> Result<()> {
    let (a, b) = if change.table() == "orders" {
        ("status", "amount")
    } else {
        ("email", "balance")
    };
    let id = change.value("id")?;
    let mut doc = Object::new();
    doc.str("change", change.id())
        .str("op", change.op().as_str())
        .value("id", &id)
        .value(a, &change.value(a)?)
        .value(b, &change.value(b)?);
    let key = match id {
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        _ => String::new(),
    };
    rowhook_guest::emit("out", Some(&key), doc.finish())?;
    Ok(())
}

rowhook_guest::export_handler!(on_change);

#[cfg(test)]
mod tests {
    use rowhook_guest::Value;
    use rowhook_guest::testing::{self, ChangeBuilder};

    #[test]
    fn three_columns_as_json() {
        let change = ChangeBuilder::insert("cdcbench", "orders")
            .column("id", Value::UInt(7))
            .column("status", Value::String("pa\"id"))
            .column("amount", Value::Decimal("12.50"))
            .column("note", Value::Null)
            .build();
        testing::run(super::on_change, &change).unwrap();
        let sent = testing::messages();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].key.as_deref(), Some("7"));
        let text = String::from_utf8(sent[0].payload.clone()).unwrap();
        assert!(
            text.ends_with(r#","op":"insert","id":7,"status":"pa\"id","amount":"12.50"}"#),
            "{text}"
        );
    }
}
