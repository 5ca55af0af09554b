//! Cost of the row change encoding per change: the host's encoder (the
//! `rowhook-abi` writer, with each table's column directory laid out once),
//! then the SDK's `Change::parse` and one column read, against decoding alone.
//!
//! `cargo bench -p rowhook-guest --bench abi [BINLOG...]` (default: the
//! recorded shop binlog, decoded over and over).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use rowhook::decode::table_map::TableMap;
use rowhook::decode::{ChangeVisitor, Decoder, DecoderOptions, Flow, RawEvent, RowChange};
use rowhook::guest_abi::DirectoryCache;
use rowhook::source::file::{BinlogFile, Next};
use rowhook_guest::Change;

#[derive(Clone, Copy, PartialEq)]
enum Work {
    Decode,
    Encode,
    EncodeParseGet,
    Json,
}

struct Visit {
    work: Work,
    directories: DirectoryCache,
    buf: Vec<u8>,
    changes: u64,
    bytes: u64,
}

impl ChangeVisitor for Visit {
    fn change(&mut self, c: &RowChange<'_>) -> Flow {
        self.changes += 1;
        match self.work {
            Work::Decode => {
                black_box(c);
            }
            Work::Encode => {
                self.directories.encode(c, &mut self.buf).unwrap();
                self.bytes += self.buf.len() as u64;
            }
            Work::EncodeParseGet => {
                self.directories.encode(c, &mut self.buf).unwrap();
                let change = Change::parse(&self.buf).unwrap();
                let first = change.column(0).unwrap().name;
                black_box(change.get::<Option<rowhook_guest::Value>>(first).unwrap());
            }
            Work::Json => {
                self.buf.clear();
                c.write_json(&mut self.buf).unwrap();
                self.bytes += self.buf.len() as u64;
            }
        }
        Flow::Continue
    }

    fn table_map(&mut self, table: &TableMap) {
        self.directories.forget(table.table_id);
    }
}

fn main() {
    let mut files: Vec<PathBuf> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(PathBuf::from)
        .collect();
    if files.is_empty() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        files.push(root.join("examples/binlog/shop-bin.000001"));
    }
    // Events read once and fed from memory, so file I/O is not measured.
    let mut events = Vec::new();
    for path in &files {
        let mut file = BinlogFile::open(path).unwrap();
        let name = file.name().to_owned();
        while let Next::Event(ev) = file.next_event().unwrap() {
            events.push((name.clone(), ev.header, ev.body.to_vec(), ev.pos, ev.end));
        }
    }
    let total: usize = events.iter().map(|e| e.2.len()).sum();
    let repeat = (100_000_000 / total.max(1)).max(1);
    for (work, name) in [
        (Work::Decode, "decode only"),
        (Work::Encode, "decode + encode_change"),
        (Work::EncodeParseGet, "decode + encode + parse + get"),
        (Work::Json, "decode + write_json"),
    ] {
        let mut v = Visit {
            work,
            directories: DirectoryCache::default(),
            buf: Vec::new(),
            changes: 0,
            bytes: 0,
        };
        // One decoder for all rounds: tables are planned once, as in a stream.
        let mut decoder = Decoder::new(DecoderOptions::default(), "");
        let start = Instant::now();
        for _ in 0..repeat {
            for (file, header, body, pos, end) in &events {
                if decoder.file() != file {
                    decoder.set_file(file);
                }
                let ev = RawEvent {
                    header: *header,
                    body,
                    pos: *pos,
                    end: *end,
                };
                decoder.feed(ev, &mut v).unwrap();
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{name:32} {:>8.0} ns/change  {:>6.0} B/change  ({} changes)",
            secs * 1e9 / v.changes as f64,
            v.bytes as f64 / v.changes as f64,
            v.changes
        );
    }
}
