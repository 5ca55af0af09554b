//! Tell a static page builder which news items changed.
//!
//! Who: a site that renders its news pages to static HTML, and today gets
//! told what to rebuild by a MySQL trigger writing to a named pipe (or by
//! polling). rowhook does it from the binlog, with no trigger in the schema.
//!
//! In: every insert, update and delete of `shop.news`; the handler reads only
//! the `id` column (the row after the change, or before it for a delete).
//!
//! Out: the id, one per line, to the sink `page_builder`, a FIFO that the
//! page builder reads (`while read -r id; do rebuild "$id"; done < news.fifo`).
//! The builder looks the row up: found, it renders the page; gone, it removes
//! it. An id may come twice (several changes, or a redelivery after a
//! restart): rebuilding a page twice is harmless.
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/handlers`
//! (or `bash examples/demo.sh`); run: `examples/news-fifo.toml`.

use rowhook_guest::{Change, Result};

/// The sink the ids go to; the config must grant it.
const SINK: &str = "page_builder";

fn on_change(change: &Change) -> Result<()> {
    let id: u64 = change.get("id")?;
    let id = id.to_string();
    rowhook_guest::emit(SINK, Some(&id), &id)
}

rowhook_guest::export_handler!(on_change);

#[cfg(test)]
mod tests {
    use rowhook_guest::Value;
    use rowhook_guest::testing::{self, ChangeBuilder};

    use super::*;

    #[test]
    fn every_change_sends_its_id() {
        let changes = [
            ChangeBuilder::insert("shop", "news").column("id", Value::UInt(1)),
            ChangeBuilder::update("shop", "news")
                .column("id", Value::UInt(1))
                .before("title", Value::String("We opened"))
                .column("title", Value::String("We are open")),
            ChangeBuilder::insert("shop", "news").column("id", Value::UInt(2)),
            ChangeBuilder::delete("shop", "news").column("id", Value::UInt(2)),
        ];
        for change in changes {
            testing::run(on_change, &change.build()).unwrap();
        }
        let sent = testing::messages();
        let ids: Vec<&[u8]> = sent.iter().map(|m| m.payload.as_slice()).collect();
        assert_eq!(ids, [b"1", b"1", b"2", b"2"]);
        assert!(sent.iter().all(|m| m.sink == "page_builder"));
        assert_eq!(sent[3].key.as_deref(), Some("2"));
    }

    #[test]
    fn a_row_without_an_id_fails_the_change() {
        let change = ChangeBuilder::insert("shop", "news")
            .column("title", Value::String("?"))
            .build();
        let err = testing::run(on_change, &change).unwrap_err();
        assert_eq!(err, "no column `id`");
    }
}
