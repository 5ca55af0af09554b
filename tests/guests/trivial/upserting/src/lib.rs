//! The upserting handler: each row of `bench.t` (`id`, `amount`, `note`),
//! reshaped, as an upsert into the table `t_copy` of the sink `copy`:
//! `{"op":"upsert","table":"t_copy","row":{"id":ID,"amount":A,"note":N,"doubled":2A}}`;
//! a delete deletes the copy. The SQL sinks' benchmark
//! (`tests/bench/sql.sh`) and crash test (`tests/e2e/sink_postgres.rs`)
//! compare the target table with the source through SQL.

#![deny(unsafe_code)]

use rowhook_guest::sql;
use rowhook_guest::{Change, Op, Result};

fn on_change(change: &Change) -> Result<()> {
    let id: i64 = change.get("id")?;
    if change.op() == Op::Delete {
        return rowhook_guest::emit("copy", None, sql::delete("t_copy", &[("id", id.into())]));
    }
    let amount: i64 = change.get("amount")?;
    let note: &str = change.get("note")?;
    let row = [
        ("id", id.into()),
        ("amount", amount.into()),
        ("note", note.into()),
        ("doubled", (amount * 2).into()),
    ];
    rowhook_guest::emit("copy", None, sql::upsert("t_copy", &row))
}

rowhook_guest::export_handler!(on_change);

#[cfg(test)]
mod tests {
    use rowhook_guest::Value;
    use rowhook_guest::testing::{self, ChangeBuilder};

    #[test]
    fn one_upsert_per_row() {
        let change = ChangeBuilder::insert("bench", "t")
            .column("id", Value::Int(5))
            .column("amount", Value::Int(7))
            .column("note", Value::String("row"))
            .build();
        testing::run(super::on_change, &change).unwrap();
        assert_eq!(
            testing::messages()[0].payload,
            br#"{"op":"upsert","table":"t_copy","row":{"id":5,"amount":7,"note":"row","doubled":14}}"#
        );
    }
}
