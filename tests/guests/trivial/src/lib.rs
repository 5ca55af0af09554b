//! The trivial handler: the cheapest handler that still looks at its input.
//!
//! In: every row change of the tables it subscribes to. Out: nothing. It
//! reads the `id` column (so the change is parsed and one value decoded, as
//! in any real handler) and returns. `host/benches/handlers.rs` and
//! `tests/bench/run.sh` use it to measure what rowhook itself costs per row
//! change: decode, route, encode, call.
//!
//! Build: `cargo build --release --target wasm32-wasip2 --workspace` in this
//! directory gives `target/wasm32-wasip2/release/trivial.wasm` (and
//! `counting.wasm`).

#![deny(unsafe_code)]

use rowhook_guest::{Change, Result};

fn on_change(change: &Change) -> Result<()> {
    let id: u64 = change.get("id")?;
    // Keep the read: the benchmark is about a handler that reads a column.
    core::hint::black_box(id);
    Ok(())
}

rowhook_guest::export_handler!(on_change);

#[cfg(test)]
mod tests {
    use rowhook_guest::Value;
    use rowhook_guest::testing::{self, ChangeBuilder};

    #[test]
    fn reads_id_and_emits_nothing() {
        let change = ChangeBuilder::insert("cdcbench", "orders")
            .column("id", Value::UInt(7))
            .build();
        testing::run(super::on_change, &change).unwrap();
        assert!(testing::messages().is_empty());
    }

    #[test]
    fn a_change_without_id_is_an_error() {
        let change = ChangeBuilder::insert("cdcbench", "orders")
            .column("other", Value::Int(1))
            .build();
        assert!(testing::run(super::on_change, &change).is_err());
    }
}
