//! Event framing: the common header, the format description, and the event
//! type codes of MySQL and MariaDB.

use super::cursor::Cursor;

/// Length of the v4 common event header.
pub const HEADER_LEN: usize = 19;
/// Length of a CRC32 event checksum.
pub const CHECKSUM_LEN: usize = 4;

/// Event type codes (MySQL `Log_event_type`, MariaDB additions from 160).
#[allow(missing_docs)]
pub mod types {
    pub const START_V3: u8 = 1;
    pub const QUERY: u8 = 2;
    pub const STOP: u8 = 3;
    pub const ROTATE: u8 = 4;
    pub const INTVAR: u8 = 5;
    pub const RAND: u8 = 13;
    pub const USER_VAR: u8 = 14;
    pub const FORMAT_DESCRIPTION: u8 = 15;
    pub const XID: u8 = 16;
    pub const TABLE_MAP: u8 = 19;
    pub const WRITE_ROWS_V0: u8 = 20;
    pub const UPDATE_ROWS_V0: u8 = 21;
    pub const DELETE_ROWS_V0: u8 = 22;
    pub const WRITE_ROWS_V1: u8 = 23;
    pub const UPDATE_ROWS_V1: u8 = 24;
    pub const DELETE_ROWS_V1: u8 = 25;
    pub const INCIDENT: u8 = 26;
    pub const HEARTBEAT: u8 = 27;
    pub const IGNORABLE: u8 = 28;
    pub const ROWS_QUERY: u8 = 29;
    pub const WRITE_ROWS_V2: u8 = 30;
    pub const UPDATE_ROWS_V2: u8 = 31;
    pub const DELETE_ROWS_V2: u8 = 32;
    pub const GTID: u8 = 33;
    pub const ANONYMOUS_GTID: u8 = 34;
    pub const PREVIOUS_GTIDS: u8 = 35;
    pub const TRANSACTION_CONTEXT: u8 = 36;
    pub const VIEW_CHANGE: u8 = 37;
    pub const XA_PREPARE: u8 = 38;
    pub const PARTIAL_UPDATE_ROWS: u8 = 39;
    pub const TRANSACTION_PAYLOAD: u8 = 40;
    pub const HEARTBEAT_V2: u8 = 41;
    pub const GTID_TAGGED: u8 = 42;
    pub const MARIA_ANNOTATE_ROWS: u8 = 160;
    pub const MARIA_BINLOG_CHECKPOINT: u8 = 161;
    pub const MARIA_GTID: u8 = 162;
    pub const MARIA_GTID_LIST: u8 = 163;
    pub const MARIA_START_ENCRYPTION: u8 = 164;
    pub const MARIA_QUERY_COMPRESSED: u8 = 165;
    pub const MARIA_WRITE_ROWS_COMPRESSED_V1: u8 = 166;
    pub const MARIA_UPDATE_ROWS_COMPRESSED_V1: u8 = 167;
    pub const MARIA_DELETE_ROWS_COMPRESSED_V1: u8 = 168;
    pub const MARIA_WRITE_ROWS_COMPRESSED: u8 = 169;
    pub const MARIA_UPDATE_ROWS_COMPRESSED: u8 = 170;
    pub const MARIA_DELETE_ROWS_COMPRESSED: u8 = 171;
}

/// Header flag: the event may be skipped by a reader that does not know it.
pub const FLAG_IGNORABLE: u16 = 0x80;
/// Header flag: the event was made up by the server for this stream (fake
/// ROTATE, GTID_LIST at connect); it has no place in a file.
pub const FLAG_ARTIFICIAL: u16 = 0x20;

/// The 19-byte header every v4 event starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventHeader {
    /// Seconds since the epoch when the statement began.
    pub timestamp: u32,
    /// Event type code, see [`types`].
    pub type_code: u8,
    /// Server id of the server that wrote the event first.
    pub server_id: u32,
    /// Whole event size, header and checksum included.
    pub event_size: u32,
    /// Offset of the next event in the file the event came from (0 for
    /// artificial events and events inside a transaction payload).
    pub log_pos: u32,
    /// Event flags.
    pub flags: u16,
}

impl EventHeader {
    /// Parses a header from the first 19 bytes of `b`.
    pub fn parse(b: &[u8]) -> Option<Self> {
        let mut c = Cursor::new(b.get(..HEADER_LEN)?);
        Some(Self {
            timestamp: c.u32().ok()?,
            type_code: c.u8().ok()?,
            server_id: c.u32().ok()?,
            event_size: c.u32().ok()?,
            log_pos: c.u32().ok()?,
            flags: c.u16().ok()?,
        })
    }
}

/// One event as a source hands it to the decoder.
#[derive(Debug, Clone, Copy)]
pub struct RawEvent<'a> {
    /// The common header.
    pub header: EventHeader,
    /// The body after the header, checksum (and the FDE's checksum
    /// algorithm byte) already removed.
    pub body: &'a [u8],
    /// Offset of the event in its binlog file. Events unpacked from a
    /// transaction payload carry the payload event's offset.
    pub pos: u64,
    /// Offset just past the event (for unpacked events: past the payload).
    pub end: u64,
}

/// Which server family wrote the binlog; they differ in a few details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    /// Oracle MySQL (and Percona).
    #[default]
    MySql,
    /// MariaDB.
    MariaDb,
}

/// What the FORMAT_DESCRIPTION event tells about the events that follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatDescription {
    /// Binlog format version; only 4 is supported.
    pub binlog_version: u16,
    /// Server version string, e.g. `10.11.19-MariaDB-log`.
    pub server_version: String,
    /// Which server family wrote it.
    pub flavor: Flavor,
    /// Post-header length per event type (index = type code - 1).
    pub post_header_len: Vec<u8>,
    /// Whether events carry a CRC32 checksum.
    pub checksum: bool,
}

impl Default for FormatDescription {
    /// The description assumed before the first FDE: MySQL 5.x lengths, no checksum.
    fn default() -> Self {
        Self {
            binlog_version: 4,
            server_version: String::new(),
            flavor: Flavor::MySql,
            post_header_len: Vec::new(),
            checksum: false,
        }
    }
}

const SERVER_VERSION_LEN: usize = 50;
/// binlog version (2) + server version (50) + create timestamp (4) + header length (1).
const FDE_FIXED_LEN: usize = 2 + SERVER_VERSION_LEN + 4 + 1;

impl FormatDescription {
    /// Parses an FDE body whose checksum trailer is already removed (see
    /// [`FormatDescription::split_trailer`]).
    pub fn parse(body: &[u8], checksum: bool) -> Result<Self, &'static str> {
        if body.len() < FDE_FIXED_LEN {
            return Err("format description event is too short");
        }
        let binlog_version = u16::from_le_bytes([body[0], body[1]]);
        let raw_version = &body[2..2 + SERVER_VERSION_LEN];
        let end = raw_version.iter().position(|&b| b == 0).unwrap_or(raw_version.len());
        let server_version = String::from_utf8_lossy(&raw_version[..end]).into_owned();
        let flavor = if server_version.contains("MariaDB") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        };
        let header_len = body[FDE_FIXED_LEN - 1];
        if binlog_version != 4 || usize::from(header_len) != HEADER_LEN {
            return Err("binlog format version is not 4 (MySQL 5.0 or later is required)");
        }
        Ok(Self {
            binlog_version,
            server_version,
            flavor,
            post_header_len: body[FDE_FIXED_LEN..].to_vec(),
            checksum,
        })
    }

    /// Finds the checksum trailer of an FDE body as it stands in a file.
    ///
    /// Servers that know checksums (MySQL 5.6.1+, MariaDB 5.3+) end the FDE
    /// with the algorithm byte and a 4-byte checksum slot, used or not.
    /// Returns whether later events carry checksums and the body length
    /// without the trailer.
    pub fn split_trailer(body: &[u8]) -> Result<(bool, usize), &'static str> {
        if body.len() < FDE_FIXED_LEN {
            return Err("format description event is too short");
        }
        let raw_version = &body[2..2 + SERVER_VERSION_LEN];
        let end = raw_version.iter().position(|&b| b == 0).unwrap_or(raw_version.len());
        let version = String::from_utf8_lossy(&raw_version[..end]);
        let triplet = version_triplet(&version);
        let knows_checksums = triplet >= (5, 6, 1) || (version.contains("MariaDB") && triplet >= (5, 3, 0));
        if !knows_checksums {
            return Ok((false, body.len()));
        }
        if body.len() < FDE_FIXED_LEN + 1 + CHECKSUM_LEN {
            return Err("format description event is too short for its checksum trailer");
        }
        let without = body.len() - 1 - CHECKSUM_LEN;
        match body[without] {
            0 => Ok((false, without)),
            1 => Ok((true, without)),
            _ => Err("unknown binlog checksum algorithm"),
        }
    }

    /// Post-header length for `type_code`, or `default` when the FDE does not say.
    pub fn post_header(&self, type_code: u8, default: u8) -> u8 {
        usize::from(type_code)
            .checked_sub(1)
            .and_then(|i| self.post_header_len.get(i))
            .copied()
            .unwrap_or(default)
    }
}

/// `major.minor.patch` of a server version string.
pub fn version_triplet(v: &str) -> (u32, u32, u32) {
    let mut parts = v.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty());
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (next(), next(), next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(version_triplet("10.11.19-MariaDB-log"), (10, 11, 19));
        assert_eq!(version_triplet("8.0.40"), (8, 0, 40));
        assert_eq!(version_triplet("5.0.46-enterprise-gpl-log"), (5, 0, 46));
    }
}
