//! A handler that hoards state on purpose, one way per table of the shop
//! binlog, so tests can check that its state quota holds:
//!
//! - `news`: deletes every value it stored, then stores one 1 MiB value
//!   again (deleting works, also over a lowered quota, and makes room);
//! - anything else: tries to store twenty new 1 MiB values.
//!
//! Values are `blob-0`, `blob-1`, … and `count` says how many there are.
//! For each change it emits one line to the sink `out` saying what it
//! stored and which errors it got, by name.

use rowhook_guest::{Change, Error, Result, StateError, state};

const VALUE: usize = 1 << 20;

/// Stores the next blob; `Err` is the state error's name.
fn store_one() -> std::result::Result<(), String> {
    let n = state::counter("count");
    let value = vec![b'x'; VALUE];
    match state::set(&format!("blob-{n}"), &value) {
        Ok(()) => {}
        Err(Error::State { error, .. }) => return Err(name(error)),
        Err(e) => return Err(e.to_string()),
    }
    match state::increment("count", 1) {
        Ok(_) => Ok(()),
        Err(Error::State { error, .. }) => Err(name(error)),
        Err(e) => Err(e.to_string()),
    }
}

fn name(e: StateError) -> String {
    match e {
        StateError::Quota => "quota".into(),
        StateError::TooLarge => "too-large".into(),
        other => format!("{other:?}"),
    }
}

fn on_change(change: &Change) -> Result<()> {
    let line = if change.table() == "news" {
        let n = state::counter("count");
        for i in 0..n {
            state::delete(&format!("blob-{i}"));
        }
        state::set("count", 0i64.to_le_bytes())?;
        let after = match store_one() {
            Ok(()) => "stored".to_owned(),
            Err(e) => e,
        };
        format!(r#"{{"id":"{}","deleted":{n},"then":"{after}"}}"#, change.id())
    } else {
        let (mut stored, mut errors) = (0, Vec::new());
        for _ in 0..20 {
            match store_one() {
                Ok(()) => stored += 1,
                Err(e) => errors.push(format!("\"{e}\"")),
            }
        }
        format!(
            r#"{{"id":"{}","stored":{stored},"errors":[{}]}}"#,
            change.id(),
            errors.join(",")
        )
    };
    rowhook_guest::emit("out", None, line)?;
    Ok(())
}

rowhook_guest::export_handler!(on_change);
