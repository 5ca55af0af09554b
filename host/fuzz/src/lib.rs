//! Shared pieces of rowhook's fuzz targets: binlog framing without I/O, a
//! visitor that renders every change, and the fixed events the `events`
//! target starts from.

use std::sync::OnceLock;

use rowhook::decode::event::{CHECKSUM_LEN, EventHeader, FormatDescription, HEADER_LEN, RawEvent, types};
use rowhook::decode::{ChangeVisitor, Commit, Decoder, DecoderOptions, Flow, RowChange};

/// Offset of the first event in a binlog file (after the 4 magic bytes).
pub const FIRST_EVENT: u64 = 4;
/// The file source's largest accepted event (`source::file::MAX_EVENT`).
const MAX_EVENT: u32 = (1 << 30) + 4096;

/// Splits a binlog file body (the bytes after the magic) into events the way
/// `rowhook::source::file::BinlogFile` does: the common header, the size
/// checks, the FDE's checksum trailer, and the CRC32 trailer of later events.
///
/// One difference: checksums are stripped but not verified, so that mutated
/// bytes reach the decoder instead of stopping at the CRC check.
pub struct Frames<'a> {
    rest: &'a [u8],
    pos: u64,
    checksum: bool,
}

impl<'a> Frames<'a> {
    /// Frames `body`, a binlog file without its 4 magic bytes.
    pub fn new(body: &'a [u8]) -> Self {
        Self {
            rest: body,
            pos: FIRST_EVENT,
            checksum: false,
        }
    }
}

impl<'a> Iterator for Frames<'a> {
    /// An event, or why the bytes are not one (the file source's `FileError::Corrupt`).
    type Item = Result<RawEvent<'a>, &'static str>;

    /// `None` at the end: no bytes left, or a partial event (as a file still being written ends).
    fn next(&mut self) -> Option<Self::Item> {
        let header = EventHeader::parse(self.rest)?;
        if header.event_size < HEADER_LEN as u32 || header.event_size > MAX_EVENT {
            self.rest = &[];
            return Some(Err("event size"));
        }
        let size = header.event_size as usize;
        let whole = self.rest.get(..size)?;
        let pos = self.pos;
        // Always advances by at least HEADER_LEN bytes.
        self.rest = &self.rest[size..];
        self.pos += size as u64;
        let mut body = &whole[HEADER_LEN..];
        if header.type_code == types::FORMAT_DESCRIPTION {
            match FormatDescription::split_trailer(body) {
                Ok((checksum, len)) => {
                    self.checksum = checksum;
                    body = &body[..len];
                }
                Err(e) => {
                    self.rest = &[];
                    return Some(Err(e));
                }
            }
        } else if self.checksum {
            let Some(len) = body.len().checked_sub(CHECKSUM_LEN) else {
                self.rest = &[];
                return Some(Err("event shorter than its checksum"));
            };
            body = &body[..len];
        }
        Some(Ok(RawEvent {
            header,
            body,
            pos,
            end: pos + size as u64,
        }))
    }
}

/// Renders every row change as contract JSON and checks that it is JSON.
#[derive(Default)]
pub struct RenderVisitor {
    out: Vec<u8>,
    /// Row changes seen.
    pub changes: u64,
    /// Commits seen.
    pub commits: u64,
}

impl ChangeVisitor for RenderVisitor {
    fn change(&mut self, change: &RowChange<'_>) -> Flow {
        self.changes += 1;
        self.out.clear();
        match change.write_json(&mut self.out) {
            Ok(()) => {
                // The contract: every change is one line of valid JSON.
                if let Err(e) = serde_json::from_slice::<serde_json::Value>(&self.out) {
                    panic!(
                        "write_json produced invalid JSON ({e}): {}",
                        String::from_utf8_lossy(&self.out)
                    );
                }
                std::hint::black_box(change.id());
                Flow::Continue
            }
            // A value its column cannot hold: a typed error, the first one ends the run.
            Err(e) => {
                std::hint::black_box(e);
                Flow::Stop
            }
        }
    }

    fn statement(&mut self, at: &rowhook::decode::At, sql: &[u8]) {
        std::hint::black_box((at, sql));
    }

    fn commit(&mut self, commit: &Commit<'_>) -> Flow {
        self.commits += 1;
        std::hint::black_box(commit.gtid_state.to_string());
        Flow::Continue
    }
}

/// Decoder options of the fuzz targets: no names required and statements
/// skipped, so decoding goes on as far as the bytes allow.
pub fn options() -> DecoderOptions {
    DecoderOptions {
        skip_statements: true,
        ..DecoderOptions::default()
    }
}

/// Frames `body` (a binlog file after its magic) and decodes it until the
/// end, the first framing or decode error, or a visitor stop.
pub fn decode_file(body: &[u8], v: &mut RenderVisitor) {
    let mut decoder = Decoder::new(options(), "fuzz-bin.000001");
    for ev in Frames::new(body) {
        let Ok(ev) = ev else { return };
        match decoder.feed(ev, v) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop) | Err(_) => return,
        }
        std::hint::black_box(decoder.resume_position());
    }
}

/// Events the `events` target starts from: the FORMAT_DESCRIPTION of a
/// MariaDB 10.11 binlog and the TABLE_MAPs of the seed binlogs (table ids
/// 21 `t_types` with most column types, 22/23 `t_small`, 24 `t_comp` with
/// COMPRESSED columns, 26 `t_min` without column names), plus
/// [`T_JSON_MAP`] (id 30), bodies only.
pub struct Fixed {
    /// The FDE body, checksum trailer removed.
    pub fde: Vec<u8>,
    /// TABLE_MAP bodies, one per table id.
    pub table_maps: Vec<Vec<u8>>,
}

/// A hand-built TABLE_MAP (id 30) of `test.t_json (id INT PRIMARY KEY, j
/// JSON, v VECTOR, g GEOMETRY)` with FULL metadata: MySQL's binary JSON
/// (and its partial updates, event type 39) and VECTOR, which no MariaDB
/// binlog holds. Rows for it: `corpus/events/rows-3{0,1,9}-t_json.bin`.
pub const T_JSON_MAP: &[u8] = &[
    0x1e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x04, 0x74, 0x65, 0x73, 0x74, 0x00, 0x06, 0x74, 0x5f, 0x6a, 0x73,
    0x6f, 0x6e, 0x00, 0x04, 0x03, 0xf5, 0xf2, 0xff, 0x03, 0x04, 0x04, 0x04, 0x0e, 0x01, 0x01, 0x00, 0x04, 0x09, 0x02,
    0x69, 0x64, 0x01, 0x6a, 0x01, 0x76, 0x01, 0x67, 0x08, 0x01, 0x00,
];

static SEEDS: [&[u8]; 3] = [
    include_bytes!("../corpus/decode/mariadb-types.bin"),
    include_bytes!("../corpus/decode/mariadb-compressed.bin"),
    include_bytes!("../corpus/decode/mariadb-minimal-nochecksum.bin"),
];

/// The fixed events, extracted once from the committed seeds.
pub fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let mut fde = None;
        let mut maps: Vec<(u64, Vec<u8>)> = Vec::new();
        for seed in SEEDS {
            for ev in Frames::new(seed) {
                let ev = ev.expect("seed binlogs frame cleanly");
                match ev.header.type_code {
                    types::FORMAT_DESCRIPTION if fde.is_none() => fde = Some(ev.body.to_vec()),
                    types::TABLE_MAP => {
                        let id = rowhook::decode::cursor::le_uint(&ev.body[..6]);
                        maps.retain(|(i, _)| *i != id);
                        maps.push((id, ev.body.to_vec()));
                    }
                    _ => {}
                }
            }
        }
        maps.push((30, T_JSON_MAP.to_vec()));
        Fixed {
            fde: fde.expect("seed has a FORMAT_DESCRIPTION"),
            table_maps: maps.into_iter().map(|(_, b)| b).collect(),
        }
    })
}

/// A synthetic event of `type_code` with `body` at `pos`.
pub fn event(type_code: u8, body: &[u8], pos: u64) -> RawEvent<'_> {
    let size = (HEADER_LEN + body.len()) as u64;
    RawEvent {
        header: EventHeader {
            timestamp: 1_700_000_000,
            type_code,
            server_id: 1,
            event_size: size as u32,
            log_pos: (pos + size) as u32,
            flags: 0,
        },
        body,
        pos,
        end: pos + size,
    }
}

/// Feeds the fixed FDE and the fixed TABLE_MAP of the table id `body`
/// starts with (`t_types` when it names none of them), then `type_code`
/// with `body`, then an XID that commits whatever is open.
pub fn decode_event(type_code: u8, body: &[u8], v: &mut RenderVisitor) {
    let fixed = fixed();
    let mut decoder = Decoder::new(options(), "fuzz-bin.000001");
    let fde = event(types::FORMAT_DESCRIPTION, &fixed.fde, FIRST_EVENT);
    decoder.feed(fde, v).expect("fixed FDE decodes");
    // One map, not all: planning a table is most of the cost of a run.
    let id = body.get(..6).map(rowhook::decode::cursor::le_uint);
    let map = fixed
        .table_maps
        .iter()
        .find(|m| Some(rowhook::decode::cursor::le_uint(&m[..6])) == id)
        .unwrap_or(&fixed.table_maps[0]);
    let map = event(types::TABLE_MAP, map, fde.end);
    decoder.feed(map, v).expect("fixed TABLE_MAP decodes");
    let ev = event(type_code, body, map.end);
    match decoder.feed(ev, v) {
        Ok(Flow::Continue) => {}
        Ok(Flow::Stop) | Err(_) => return,
    }
    let _ = decoder.feed(event(types::XID, &7u64.to_le_bytes(), ev.end), v);
}
