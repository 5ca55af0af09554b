//! Count registrations per day, live, for a dashboard.
//!
//! Who: whoever watches sign-ups: a dashboard that shows today's number as
//! it grows, without a `SELECT COUNT(*) ... GROUP BY` every few seconds.
//!
//! In: inserts into `shop.user_info` (the config subscribes to inserts only;
//! anything else that reaches the handler is ignored). The day is the date
//! part of `created_at`.
//!
//! Out: the count per day is kept in the handler's state (counter
//! `signups:<day>`), which rowhook commits together with its position, so a
//! restart never counts a registration twice. After each registration:
//! - the gauge of the day, `signups_2025_11_21`, and the gauge
//!   `signups_latest_day` are set to that day's count (the dashboard draws
//!   a bar and a line per day);
//! - the line `{"day":"2025-11-21","signups":2}` goes to the sink `signups`,
//!   keyed by the day, so a keyed store (or a reader of the lines) keeps the
//!   latest count of each day.
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/handlers`
//! (or `bash examples/demo.sh`); run: `examples/daily-signups.toml`.

use rowhook_guest::{Change, Error, Op, Result, metrics, state};

/// The sink the running counts go to; the config must grant it.
const SINK: &str = "signups";

/// `YYYY-MM-DD` from a DATE, DATETIME or TIMESTAMP value.
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
    metrics::gauge_set(&format!("signups_{}", day.replace('-', "_")), count as f64);
    metrics::gauge_set("signups_latest_day", count as f64);
    rowhook_guest::emit(SINK, Some(day), format!(r#"{{"day":"{day}","signups":{count}}}"#))
}

rowhook_guest::export_handler!(on_change);

#[cfg(test)]
mod tests {
    use rowhook_guest::Value;
    use rowhook_guest::testing::{self, ChangeBuilder};

    use super::*;

    fn signup(created_at: &'static str) -> Vec<u8> {
        ChangeBuilder::insert("shop", "user_info")
            .column("id", Value::UInt(1))
            .column("created_at", Value::DateTime(created_at))
            .build()
    }

    fn lines() -> Vec<String> {
        testing::messages()
            .into_iter()
            .map(|m| String::from_utf8(m.payload).unwrap())
            .collect()
    }

    #[test]
    fn counts_per_day_in_state_and_emits_a_running_line() {
        for at in ["2025-11-21 08:00:00", "2025-11-21 09:30:00", "2025-11-22 10:15:00"] {
            testing::run(on_change, &signup(at)).unwrap();
        }
        assert_eq!(
            lines(),
            [
                r#"{"day":"2025-11-21","signups":1}"#,
                r#"{"day":"2025-11-21","signups":2}"#,
                r#"{"day":"2025-11-22","signups":1}"#,
            ]
        );
        assert_eq!(state::counter("signups:2025-11-21"), 2);
        assert_eq!(state::counter("signups:2025-11-22"), 1);
        assert_eq!(testing::messages()[2].key.as_deref(), Some("2025-11-22"));
        assert_eq!(testing::gauges()["signups_latest_day"], 1.0);
        assert_eq!(testing::gauges()["signups_2025_11_21"], 2.0);
        assert_eq!(testing::gauges()["signups_2025_11_22"], 1.0);
    }

    #[test]
    fn the_gauge_follows_the_latest_day() {
        for at in ["2025-11-21 08:00:00", "2025-11-21 23:59:59"] {
            testing::run(on_change, &signup(at)).unwrap();
        }
        assert_eq!(testing::gauges()["signups_latest_day"], 2.0);
    }

    #[test]
    fn only_inserts_count() {
        let update = ChangeBuilder::update("shop", "user_info")
            .column("created_at", Value::DateTime("2025-11-21 08:00:00"))
            .build();
        testing::run(on_change, &update).unwrap();
        assert!(testing::messages().is_empty());
        assert!(testing::state().is_empty());
    }

    #[test]
    fn a_failed_emit_counts_nothing() {
        testing::grant(&[]);
        let err = testing::run(on_change, &signup("2025-11-21 08:00:00")).unwrap_err();
        assert!(err.contains("denied"), "{err}");
        // rowhook discards the state writes of a failed call, as the recorder does.
        assert_eq!(state::counter("signups:2025-11-21"), 0);
    }

    #[test]
    fn days_come_from_dates_and_timestamps() {
        assert_eq!(day_of("2025-11-21 08:00:00").unwrap(), "2025-11-21");
        assert_eq!(day_of("2025-11-21T08:00:00.250Z").unwrap(), "2025-11-21");
        assert_eq!(day_of("2025-11-21").unwrap(), "2025-11-21");
        for bad in ["", "2025-11", "20251121 08:00", "2025/11/21 08:00:00", "2025-1-210"] {
            assert!(day_of(bad).is_err(), "{bad}");
        }
    }
}
