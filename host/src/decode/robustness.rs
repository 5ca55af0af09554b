//! The decoder against bad bytes, on the stable toolchain and in the normal
//! `cargo test`: truncated events, mutated binlogs and random bytes must
//! give row changes or a typed error, never a panic and never a loop.
//!
//! The inputs start from the real MariaDB binlogs of the fuzz corpus
//! (`host/fuzz/corpus/decode/`, see `host/fuzz/README.md`); the mutations
//! are deterministic (xorshift), so a failure reproduces. The fuzz targets go
//! much further; this is the part CI runs on every change.
//!
//! Only public decoder API is used (`crate::decode::…`), as a source uses it.

use std::sync::mpsc;
use std::time::Duration;

use crate::decode::event::{CHECKSUM_LEN, EventHeader, FormatDescription, HEADER_LEN, RawEvent, types};
use crate::decode::rows::RowsKind;
use crate::decode::{ChangeVisitor, Commit, Decoder, DecoderOptions, Flow, RowChange};

/// Binlog files after their 4 magic bytes: MariaDB 10.11 with most column
/// types; with compressed events and COMPRESSED columns; with MINIMAL row
/// image and metadata and no checksums.
const SEEDS: [(&str, &[u8]); 3] = [
    (
        "mariadb-types.bin",
        include_bytes!("../../fuzz/corpus/decode/mariadb-types.bin"),
    ),
    (
        "mariadb-compressed.bin",
        include_bytes!("../../fuzz/corpus/decode/mariadb-compressed.bin"),
    ),
    (
        "mariadb-minimal-nochecksum.bin",
        include_bytes!("../../fuzz/corpus/decode/mariadb-minimal-nochecksum.bin"),
    ),
];

/// Offset of the first event in a file.
const FIRST: u64 = 4;

/// Splits a binlog body into events as the file source does (size checks,
/// FDE checksum trailer, CRC32 trailers), without verifying checksums so
/// that mutated bytes reach the decoder. `Err` is a framing error.
fn frame(body: &[u8]) -> impl Iterator<Item = Result<RawEvent<'_>, &'static str>> {
    let (mut rest, mut pos, mut checksum) = (body, FIRST, false);
    std::iter::from_fn(move || {
        let header = EventHeader::parse(rest)?;
        let size = header.event_size as usize;
        if size < HEADER_LEN {
            rest = &[];
            return Some(Err("event size"));
        }
        // A partial event at the end is the end.
        let whole = rest.get(..size)?;
        let at = pos;
        rest = &rest[size..];
        pos += size as u64;
        let mut body = &whole[HEADER_LEN..];
        if header.type_code == types::FORMAT_DESCRIPTION {
            let Ok((c, len)) = FormatDescription::split_trailer(body) else {
                rest = &[];
                return Some(Err("format description trailer"));
            };
            checksum = c;
            body = &body[..len];
        } else if checksum {
            let Some(len) = body.len().checked_sub(CHECKSUM_LEN) else {
                rest = &[];
                return Some(Err("event shorter than its checksum"));
            };
            body = &body[..len];
        }
        Some(Ok(RawEvent {
            header,
            body,
            pos: at,
            end: at + size as u64,
        }))
    })
}

/// Renders every change (so values are rendered too) and checks the JSON;
/// stops the decoder if it reports more changes than its input can hold.
struct Visitor {
    out: Vec<u8>,
    changes: u64,
    /// Changes after which the run is declared runaway.
    limit: u64,
    runaway: bool,
}

impl Visitor {
    /// A visitor for an input of `len` bytes. Every row change takes at
    /// least one byte of row data, which zlib (the only compression random
    /// mutations of these seeds can reach) inflates at most 1032 times.
    fn new(len: usize) -> Self {
        Self {
            out: Vec::new(),
            changes: 0,
            limit: 1100 * len as u64 + 64,
            runaway: false,
        }
    }
}

impl ChangeVisitor for Visitor {
    fn change(&mut self, change: &RowChange<'_>) -> Flow {
        self.changes += 1;
        if self.changes > self.limit {
            self.runaway = true;
            return Flow::Stop;
        }
        self.out.clear();
        match change.write_json(&mut self.out) {
            Ok(()) => {
                if let Err(e) = serde_json::from_slice::<serde_json::Value>(&self.out) {
                    panic!("invalid JSON ({e}): {}", String::from_utf8_lossy(&self.out));
                }
                Flow::Continue
            }
            // A value its column cannot hold: a typed error ends the run.
            Err(_) => Flow::Stop,
        }
    }

    fn commit(&mut self, commit: &Commit<'_>) -> Flow {
        let _ = commit.gtid_state.to_string();
        Flow::Continue
    }
}

fn options() -> DecoderOptions {
    DecoderOptions {
        skip_statements: true,
        ..DecoderOptions::default()
    }
}

/// Frames and decodes `body` to its end or first error; returns the row
/// changes seen. Fails the test on a runaway visitor.
fn decode_file(body: &[u8], what: &dyn Fn() -> String) -> u64 {
    let mut d = Decoder::new(options(), "robust-bin.000001");
    let mut v = Visitor::new(body.len());
    for ev in frame(body) {
        let Ok(ev) = ev else { break };
        match d.feed(ev, &mut v) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop) | Err(_) => break,
        }
    }
    assert!(
        !v.runaway,
        "{}: more than {} row changes from {} bytes: the decoder loops",
        what(),
        v.limit,
        body.len()
    );
    v.changes
}

/// Runs `f` on a thread and fails if it does not finish in `secs`: a
/// decoder that loops without reporting changes fails the test instead of
/// hanging CI.
fn with_watchdog(name: &str, secs: u64, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(name.into())
        .stack_size(8 << 20)
        .spawn(move || {
            f();
            let _ = tx.send(());
        })
        .expect("spawn test thread");
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => handle.join().expect("test thread"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The thread panicked: re-raise its panic.
            if let Err(p) = handle.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{name}: still running after {secs} s: the decoder loops"),
    }
}

/// xorshift64: deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

#[test]
fn seeds_decode_cleanly() {
    // The seeds themselves: whole, and with row changes, so the other tests
    // start from inputs that reach the row decoder.
    for (name, seed) in SEEDS {
        let events: Vec<_> = frame(seed).collect();
        assert!(events.iter().all(Result::is_ok), "{name} frames cleanly");
        let mut d = Decoder::new(options(), "robust-bin.000001");
        let mut v = Visitor::new(seed.len());
        for ev in events.into_iter().flatten() {
            d.feed(ev, &mut v).unwrap_or_else(|e| panic!("{name} decodes: {e}"));
        }
        assert!(v.changes > 0, "{name} has row changes");
    }
}

#[test]
fn every_truncated_event_is_ok_or_an_error() {
    with_watchdog("truncations", 120, || {
        for (name, seed) in SEEDS {
            let events: Vec<RawEvent<'_>> = frame(seed).map(|e| e.expect("seed frames")).collect();
            for (i, ev) in events.iter().enumerate() {
                // The state the event is decoded in: the FDE and the latest
                // TABLE_MAP of each table id before it.
                let mut context: Vec<&RawEvent<'_>> = Vec::new();
                for prev in &events[..i] {
                    match prev.header.type_code {
                        types::FORMAT_DESCRIPTION => context.push(prev),
                        types::TABLE_MAP => {
                            context.retain(|c| c.header.type_code != types::TABLE_MAP || c.body[..6] != prev.body[..6]);
                            context.push(prev);
                        }
                        _ => {}
                    }
                }
                for cut in 0..=ev.body.len() {
                    let mut d = Decoder::new(options(), "robust-bin.000001");
                    let mut v = Visitor::new(seed.len());
                    for c in &context {
                        d.feed(**c, &mut v).expect("context events decode");
                    }
                    let mut short = *ev;
                    short.body = &ev.body[..cut];
                    short.header.event_size = (HEADER_LEN + cut) as u32;
                    // Ok or Err; a panic fails the test.
                    let _ = d.feed(short, &mut v);
                    assert!(!v.runaway, "{name}: event {i} cut at {cut}: the decoder loops");
                }
            }
        }
    });
}

#[test]
fn mutated_binlogs_are_ok_or_an_error() {
    with_watchdog("mutations", 120, || {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut changes = 0;
        for run in 0..2000 {
            let (name, seed) = SEEDS[run % SEEDS.len()];
            let mut file = seed.to_vec();
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(file.len());
                match rng.below(6) {
                    0 => file[at] ^= 1 << rng.below(8),
                    1 => file[at] = rng.byte(),
                    2 => file[at] = [0, 0xff, 0x7f, 0x80, 1, 0xfe][rng.below(6)],
                    3 => {
                        let n = 1 + rng.below(8);
                        let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                        file.splice(at..at, bytes);
                    }
                    4 => {
                        let end = (at + 1 + rng.below(16)).min(file.len());
                        file.drain(at..end);
                    }
                    _ => {
                        // Duplicate a chunk elsewhere: repeated events and fields.
                        let end = (at + 1 + rng.below(64)).min(file.len());
                        let chunk = file[at..end].to_vec();
                        let to = rng.below(file.len());
                        file.splice(to..to, chunk);
                    }
                }
                if file.is_empty() {
                    file.push(0);
                }
            }
            changes += decode_file(&file, &|| format!("mutation {run} of {name}"));
        }
        // Most mutations leave most events intact.
        assert!(changes > 2000, "mutations reached the row decoder ({changes} changes)");
    });
}

#[test]
fn random_bytes_are_ok_or_an_error() {
    with_watchdog("random", 60, || {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        // Pure noise: mostly stops at framing.
        for run in 0..300 {
            let file: Vec<u8> = (0..rng.below(4096)).map(|_| rng.byte()).collect();
            decode_file(&file, &|| format!("random file {run}"));
        }
        // A real FDE and TABLE_MAPs, then well-framed events of decoder
        // types with random bodies: noise that reaches every event parser.
        let prefix: Vec<u8> = {
            let (_, seed) = SEEDS[2]; // no checksums: frames stay valid
            let mut out = Vec::new();
            let mut rest = seed;
            while let Some(h) = EventHeader::parse(rest) {
                let whole = &rest[..h.event_size as usize];
                if matches!(h.type_code, types::FORMAT_DESCRIPTION | types::TABLE_MAP) {
                    out.extend_from_slice(whole);
                }
                rest = &rest[whole.len()..];
            }
            out
        };
        let interesting = [
            types::QUERY,
            types::ROTATE,
            types::XID,
            types::TABLE_MAP,
            types::WRITE_ROWS_V1,
            types::UPDATE_ROWS_V1,
            types::DELETE_ROWS_V1,
            types::WRITE_ROWS_V2,
            types::UPDATE_ROWS_V2,
            types::DELETE_ROWS_V2,
            types::PARTIAL_UPDATE_ROWS,
            types::GTID,
            types::GTID_TAGGED,
            types::PREVIOUS_GTIDS,
            types::TRANSACTION_PAYLOAD,
            types::MARIA_GTID,
            types::MARIA_GTID_LIST,
            types::MARIA_QUERY_COMPRESSED,
            types::MARIA_WRITE_ROWS_COMPRESSED_V1,
            types::MARIA_UPDATE_ROWS_COMPRESSED,
            types::FORMAT_DESCRIPTION,
        ];
        for run in 0..500 {
            let mut file = prefix.clone();
            for _ in 0..1 + rng.below(4) {
                let t = interesting[rng.below(interesting.len())];
                let mut body: Vec<u8> = (0..rng.below(256)).map(|_| rng.byte()).collect();
                if RowsKind::of(t).is_some() && body.len() >= 6 && rng.below(2) == 0 {
                    // Name a table the prefix mapped (id 26), so rows decode.
                    body[..6].copy_from_slice(&26u64.to_le_bytes()[..6]);
                }
                let size = (HEADER_LEN + body.len()) as u32;
                let pos = FIRST as u32 + file.len() as u32;
                file.extend_from_slice(&1_700_000_000u32.to_le_bytes());
                file.push(t);
                file.extend_from_slice(&1u32.to_le_bytes());
                file.extend_from_slice(&size.to_le_bytes());
                file.extend_from_slice(&(pos + size).to_le_bytes());
                file.extend_from_slice(&0u16.to_le_bytes());
                file.extend_from_slice(&body);
            }
            decode_file(&file, &|| format!("random events {run}"));
        }
    });
}

#[test]
fn empty_row_images_are_an_error() {
    // Found by the fuzzer: a rows event whose column bitmap is empty (or
    // whose width is 0) has rows of zero bytes; the decoder looped forever
    // reporting empty rows.
    let (_, seed) = SEEDS[2];
    let events: Vec<RawEvent<'_>> = frame(seed).map(|e| e.expect("seed frames")).collect();
    let fde = events[0];
    let map = *events
        .iter()
        .find(|e| e.header.type_code == types::TABLE_MAP)
        .expect("a TABLE_MAP");
    for (width, bitmap) in [(0u8, &[][..]), (11, &[0, 0][..])] {
        let mut body = map.body[..6].to_vec(); // table id
        body.extend_from_slice(&[0, 0, width]);
        body.extend_from_slice(bitmap);
        body.extend_from_slice(&[1, 2, 3]); // "rows"
        let mut d = Decoder::new(options(), "robust-bin.000001");
        let mut v = Visitor::new(body.len());
        d.feed(fde, &mut v).unwrap();
        d.feed(map, &mut v).unwrap();
        let mut ev = map;
        ev.header.type_code = types::WRITE_ROWS_V1;
        ev.body = &body;
        // Before the fix this call never returned.
        let r = d.feed(ev, &mut v);
        assert!(r.is_err(), "width {width}: {r:?}");
        assert_eq!(v.changes, 0);
    }
}

#[test]
fn nested_transaction_payloads_do_not_overflow_the_stack() {
    // TRANSACTION_PAYLOAD events inside each other, uncompressed: each level
    // is a header and an empty field list (20 bytes) around the next level.
    // Decoded by recursion, 100,000 levels (2 MB) overflowed the stack.
    let levels = 100_000;
    let mut whole = Vec::with_capacity(levels * (HEADER_LEN + 1));
    for level in 0..levels {
        let size = ((HEADER_LEN + 1) * (levels - level)) as u32;
        whole.extend_from_slice(&0u32.to_le_bytes());
        whole.push(types::TRANSACTION_PAYLOAD);
        whole.extend_from_slice(&1u32.to_le_bytes());
        whole.extend_from_slice(&size.to_le_bytes());
        whole.extend_from_slice(&0u32.to_le_bytes());
        whole.extend_from_slice(&0u16.to_le_bytes());
        whole.push(0); // end of the payload's field list
    }
    let ev = RawEvent {
        header: EventHeader::parse(&whole).expect("header"),
        body: &whole[HEADER_LEN..],
        pos: FIRST,
        end: FIRST + whole.len() as u64,
    };
    let mut d = Decoder::new(options(), "robust-bin.000001");
    let mut v = Visitor::new(whole.len());
    // A stack overflow aborts the test binary.
    assert!(d.feed(ev, &mut v).is_err(), "a payload inside a payload is an error");
}
