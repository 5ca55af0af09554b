//! Kafka's record batch (message format v2), written straight from the
//! sink's messages, and the partitioner.
//!
//! A batch is one producer's run of consecutive records for one partition:
//! its header carries the producer id, epoch and the first record's
//! sequence number, which is how the broker drops a batch it already holds
//! (an idempotent producer's retry). Records carry no compression, the
//! batch's create time, the message key and payload, and one header,
//! `rowhook-id: <change id>:<index>`, for consumers that dedupe.

use std::io::Write as _;

use bytes::{BufMut, BytesMut};

use crate::sink::Message;

/// The header every record carries: the message's change id and index.
pub const ID_HEADER: &[u8] = b"rowhook-id";
/// Bytes of a batch before its first record.
pub const BATCH_OVERHEAD: usize = 61;
/// Bytes a record adds besides its key, payload and id header value, at
/// most (the varints of lengths and deltas, the header's key).
pub const RECORD_OVERHEAD: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5 + 5 + ID_HEADER.len() + 5;

/// Who is producing: the broker dedupes by (producer id, epoch, sequence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Producer {
    /// The id the cluster gave this producer (`InitProducerId`).
    pub id: i64,
    /// Its epoch.
    pub epoch: i16,
}

/// The bytes `m` takes in a batch, at most.
pub fn record_size(m: &Message) -> usize {
    RECORD_OVERHEAD + m.key.as_ref().map_or(0, Vec::len) + m.payload.len() + m.id.len() + 11
}

/// How a batch's records are compressed (the codec's number is the low
/// bits of the batch attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Not at all.
    None,
    /// gzip (1).
    Gzip,
    /// zstd (4; brokers from Kafka 2.1).
    Zstd,
}

impl Codec {
    fn attribute(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Zstd => 4,
        }
    }
}

/// Appends one batch of `messages` (all for one partition, in order) to
/// `out`: `base_sequence` is the first record's sequence, `timestamp` the
/// create time of every record, in ms since the epoch; the records are
/// compressed with `codec`.
pub fn encode_batch<'a>(
    out: &mut BytesMut,
    messages: impl ExactSizeIterator<Item = &'a Message>,
    producer: Producer,
    base_sequence: i32,
    timestamp: i64,
    codec: Codec,
) {
    let count = messages.len();
    let start = out.len();
    out.put_i64(0); // base offset: the broker assigns it
    out.put_i32(0); // batch length, patched below
    out.put_i32(-1); // partition leader epoch
    out.put_i8(2); // magic
    let crc_at = out.len();
    out.put_u32(0); // crc, patched below
    out.put_i16(codec.attribute()); // create time, not transactional
    out.put_i32(count as i32 - 1); // last offset delta
    out.put_i64(timestamp);
    out.put_i64(timestamp);
    out.put_i64(producer.id);
    out.put_i16(producer.epoch);
    out.put_i32(base_sequence);
    out.put_i32(count as i32);
    debug_assert_eq!(out.len() - start, BATCH_OVERHEAD);
    match codec {
        Codec::None => put_records(out, messages),
        Codec::Gzip | Codec::Zstd => {
            let mut plain = BytesMut::new();
            put_records(&mut plain, messages);
            let written = match codec {
                Codec::Gzip => {
                    let mut z = flate2::write::GzEncoder::new(out.writer(), flate2::Compression::default());
                    z.write_all(&plain).and_then(|()| z.finish().map(drop))
                }
                _ => zstd::stream::copy_encode(&plain[..], out.writer(), 3),
            };
            written.expect("compressing into memory cannot fail");
        }
    }
    let length = (out.len() - start - 12) as i32;
    out[start + 8..start + 12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&out[crc_at + 4..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
}

/// The records of a batch, each written once, straight into `out`.
fn put_records<'a>(out: &mut BytesMut, messages: impl Iterator<Item = &'a Message>) {
    let mut id = String::with_capacity(48);
    for (i, m) in messages.enumerate() {
        id.clear();
        id.push_str(&m.id);
        id.push(':');
        id.push_str(itoa::Buffer::new().format(m.index));
        let key = m.key.as_deref();
        let body = 1
            + varint_len(0)
            + varint_len(i as i64)
            + bytes_len(key)
            + bytes_len(Some(&m.payload))
            + varint_len(1)
            + bytes_len(Some(ID_HEADER))
            + bytes_len(Some(id.as_bytes()));
        out.reserve(body + 5);
        put_varint(out, body as i64);
        out.put_u8(0); // record attributes
        put_varint(out, 0); // timestamp delta
        put_varint(out, i as i64); // offset delta
        put_bytes(out, key);
        put_bytes(out, Some(&m.payload));
        put_varint(out, 1); // headers
        put_bytes(out, Some(ID_HEADER));
        put_bytes(out, Some(id.as_bytes()));
    }
}

/// The bytes of [`put_varint`]`(v)`.
fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - z.max(1).leading_zeros() as usize).div_ceil(7)
}

/// The bytes of [`put_bytes`]`(b)`.
fn bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        None => varint_len(-1),
        Some(b) => varint_len(b.len() as i64) + b.len(),
    }
}

/// A length-prefixed byte string: the zigzag varint length, -1 for none.
fn put_bytes(out: &mut impl BufMut, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.put_slice(b);
        }
    }
}

/// A zigzag-encoded varint, as record fields are written.
fn put_varint(out: &mut impl BufMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

/// The sequence number `n` records after `seq`: sequences wrap from
/// `i32::MAX` to 0.
pub fn advance(seq: i32, n: usize) -> i32 {
    ((i64::from(seq) + n as i64) % (i64::from(i32::MAX) + 1)) as i32
}

/// The partition of a message among `partitions`, as the Java client's
/// default partitioner picks it for a keyed record (murmur2 of the key),
/// so that rowhook and other producers put a key in the same partition.
/// A message without a key (or with an empty one) is placed by its change
/// id instead: spread evenly, and the same on every re-delivery.
pub fn partition(m: &Message, partitions: usize) -> usize {
    let hashed = match m.key.as_deref() {
        Some(k) if !k.is_empty() => murmur2(k),
        _ => murmur2(m.id.as_bytes()),
    };
    (hashed & 0x7fff_ffff) as usize % partitions.max(1)
}

/// MurmurHash2, 32 bits, with the seed Kafka uses.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, &b) in rest.iter().enumerate().rev() {
            h ^= u32::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testing::msg;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values of org.apache.kafka.common.utils.Utils.murmur2.
        for (text, want) in [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            ("abc", 479_470_107),
        ] {
            assert_eq!(murmur2(text.as_bytes()) as i32, want, "{text}");
        }
    }

    #[test]
    fn keys_pick_partitions_ids_stand_in_for_missing_keys() {
        let mut m = msg("0-1-7:2:3", "x");
        m.key = Some(b"foobar".to_vec());
        assert_eq!(partition(&m, 6), (-790_332_482i32 as u32 & 0x7fff_ffff) as usize % 6);
        let mut other = msg("0-1-7:2:4", "y");
        other.key = Some(b"foobar".to_vec());
        assert_eq!(partition(&m, 6), partition(&other, 6));
        let keyless = msg("0-1-7:2:3", "x");
        assert_eq!(
            partition(&keyless, 6),
            (murmur2(b"0-1-7:2:3") & 0x7fff_ffff) as usize % 6
        );
        let mut empty = keyless.clone();
        empty.key = Some(Vec::new());
        assert_eq!(partition(&empty, 6), partition(&keyless, 6));
    }

    #[test]
    fn varints_are_zigzag() {
        for (v, want) in [
            (0, vec![0]),
            (-1, vec![1]),
            (1, vec![2]),
            (63, vec![126]),
            (64, vec![128, 1]),
            (-65, vec![129, 1]),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out, want, "{v}");
            assert_eq!(varint_len(v), out.len(), "{v}");
        }
    }

    #[test]
    fn sequences_wrap() {
        assert_eq!(advance(5, 3), 8);
        assert_eq!(advance(i32::MAX, 1), 0);
        assert_eq!(advance(i32::MAX - 1, 3), 1);
    }

    #[test]
    fn a_batch_has_its_header_records_and_checksum() {
        let mut a = msg("0-1-7:2:3", "{\"id\":1}");
        a.key = Some(b"k".to_vec());
        let mut b = msg("0-1-7:2:3", "");
        b.index = 1;
        let batch = [a, b];
        let mut out = BytesMut::new();
        let producer = Producer { id: 42, epoch: 3 };
        encode_batch(&mut out, batch.iter(), producer, 7, 1_700_000_000_000, Codec::None);
        assert_eq!(
            i32::from_be_bytes(out[8..12].try_into().unwrap()) as usize,
            out.len() - 12
        );
        assert_eq!(out[16], 2);
        let crc = u32::from_be_bytes(out[17..21].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&out[21..]));
        assert_eq!(
            i32::from_be_bytes(out[23..27].try_into().unwrap()),
            1,
            "last offset delta"
        );
        assert_eq!(i64::from_be_bytes(out[43..51].try_into().unwrap()), 42);
        assert_eq!(i16::from_be_bytes(out[51..53].try_into().unwrap()), 3);
        assert_eq!(i32::from_be_bytes(out[53..57].try_into().unwrap()), 7);
        assert_eq!(i32::from_be_bytes(out[57..61].try_into().unwrap()), 2);
        let records = &out[BATCH_OVERHEAD..];
        let first = b"\x00\x00\x00\x02k\x10{\"id\":1}\x02\x14rowhook-id\x16";
        assert_eq!(records[0] as usize, 2 * (first.len() + 11), "the first record's length");
        assert_eq!(&records[1..1 + first.len()], first);
        assert!(records.windows(11).any(|w| w == b"0-1-7:2:3:1"));
        assert!(batch.iter().all(|m| record_size(m) < 100));
    }

    #[test]
    fn compressed_batches_hold_the_same_records() {
        use std::io::Read as _;

        let batch: Vec<Message> = (0..50)
            .map(|i| {
                let mut m = msg(&format!("0-1-7:{i}:0"), "{\"status\":\"new\",\"amount\":\"19.99\"}");
                m.key = Some(i.to_string().into_bytes());
                m
            })
            .collect();
        let producer = Producer { id: 1, epoch: 0 };
        let mut plain = BytesMut::new();
        encode_batch(&mut plain, batch.iter(), producer, 0, 0, Codec::None);
        let records = &plain[BATCH_OVERHEAD..];
        for (codec, bits) in [(Codec::Gzip, 1), (Codec::Zstd, 4)] {
            let mut out = BytesMut::new();
            encode_batch(&mut out, batch.iter(), producer, 0, 0, codec);
            assert!(
                out.len() < plain.len() / 2,
                "{codec:?}: {} of {}",
                out.len(),
                plain.len()
            );
            assert_eq!(i16::from_be_bytes(out[21..23].try_into().unwrap()), bits);
            assert_eq!(
                i32::from_be_bytes(out[8..12].try_into().unwrap()) as usize,
                out.len() - 12
            );
            assert_eq!(
                u32::from_be_bytes(out[17..21].try_into().unwrap()),
                crc32c::crc32c(&out[21..])
            );
            let packed = &out[BATCH_OVERHEAD..];
            let unpacked = match codec {
                Codec::Gzip => {
                    let mut v = Vec::new();
                    flate2::read::GzDecoder::new(packed).read_to_end(&mut v).unwrap();
                    v
                }
                _ => zstd::stream::decode_all(packed).unwrap(),
            };
            assert_eq!(unpacked, records, "{codec:?}");
        }
    }
}
