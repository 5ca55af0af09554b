//! daily-signups into a database: registrations per day from
//! `shop.user_info` inserts, counted in handler state, and upserted as the
//! row `(day, signups)` of the table `daily_signups` that a dashboard reads
//! (PostgreSQL or MySQL, through a SQL sink).
//!
//! In: inserts of `shop.user_info`. Out: after each registration, to the
//! sink `signups_db`:
//!
//! ```json
//! {"op":"upsert","table":"daily_signups","row":{"day":"2025-11-21","signups":2}}
//! ```
//!
//! The count lives in the handler's state, committed with rowhook's
//! checkpoint, so it counts each registration once; the row holds the
//! latest count of its day. The target table:
//!
//! ```sql
//! CREATE TABLE daily_signups (day date PRIMARY KEY, signups bigint NOT NULL);
//! ```
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/handlers`;
//! run: `examples/daily-signups-postgres.toml`.

use rowhook_guest::{Change, Error, Op, Result, sql, state};

/// The sink the rows go to; the config must grant it.
const SINK: &str = "signups_db";

/// `"2025-11-21 08:00:00"` → `"2025-11-21"`.
fn day_of(created_at: &str) -> Result<&str> {
    let day = created_at.get(..10).unwrap_or(created_at);
    let well_formed = day.len() == 10
        && day.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if well_formed {
        Ok(day)
    } else {
        Err(Error::msg(format!(
            "created_at `{created_at}` does not start with a date"
        )))
    }
}

fn on_change(change: &Change) -> Result<()> {
    if change.op() != Op::Insert {
        return Ok(());
    }
    let day = day_of(change.get("created_at")?)?;
    let count = state::increment(&format!("signups:{day}"), 1)?;
    let row = [("day", sql::text(day)), ("signups", count.into())];
    rowhook_guest::emit(SINK, None, sql::upsert("daily_signups", &row))
}

rowhook_guest::export_handler!(on_change);

#[cfg(test)]
mod tests {
    use rowhook_guest::Value;
    use rowhook_guest::testing::{self, ChangeBuilder};

    use super::*;

    #[test]
    fn each_registration_upserts_its_days_count() {
        for at in ["2025-11-21 08:00:00", "2025-11-21 09:30:00", "2025-11-22 10:15:00"] {
            let change = ChangeBuilder::insert("shop", "user_info")
                .column("id", Value::UInt(1))
                .column("created_at", Value::DateTime(at))
                .build();
            testing::run(on_change, &change).unwrap();
        }
        let sent: Vec<String> = testing::messages()
            .into_iter()
            .map(|m| String::from_utf8(m.payload).unwrap())
            .collect();
        assert_eq!(
            sent,
            [
                r#"{"op":"upsert","table":"daily_signups","row":{"day":"2025-11-21","signups":1}}"#,
                r#"{"op":"upsert","table":"daily_signups","row":{"day":"2025-11-21","signups":2}}"#,
                r#"{"op":"upsert","table":"daily_signups","row":{"day":"2025-11-22","signups":1}}"#,
            ]
        );
    }
}
