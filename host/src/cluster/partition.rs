//! Which partition a row change goes to, and the subject it is published
//! on: `rowhook.SOURCE.DB.TABLE.PARTITION`.
//!
//! The partition is FNV-1a (64 bits) over the database name, a zero byte,
//! the table name, a zero byte, and then each primary-key column's value
//! as contract JSON followed by a zero byte, modulo the partition count.
//! The key is read from the before image of updates and deletes (a MINIMAL
//! after image may lack it) and from the after image of inserts and
//! snapshot rows, so every change of one row lands in one partition. A
//! table without a primary key hashes its names only: all its changes go to
//! one partition, in binlog order.

use crate::decode::value::write_json;
use crate::decode::{Op, RowChange};
use crate::sink::nats::push_key_token;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// FNV-1a (64 bits) of `bytes`.
pub(crate) fn fnv_of(bytes: &[u8]) -> u64 {
    fnv(FNV_OFFSET, bytes)
}

/// Computes partitions, reusing one buffer for the key's JSON.
#[derive(Debug, Default)]
pub struct Partitioner {
    text: Vec<u8>,
}

impl Partitioner {
    /// The partition of `change` among `partitions`.
    pub fn partition(&mut self, change: &RowChange<'_>, partitions: u32) -> u32 {
        let table = change.table;
        let mut h = fnv(FNV_OFFSET, table.db.as_bytes());
        h = fnv(h, &[0]);
        h = fnv(h, table.table.as_bytes());
        h = fnv(h, &[0]);
        let image = match change.op {
            Op::Update | Op::Delete => change.before.or(change.after),
            _ => change.after.or(change.before),
        };
        if let Some(values) = image {
            for (col, v) in table.columns.iter().zip(values) {
                if !col.primary_key {
                    continue;
                }
                self.text.clear();
                // A value that cannot be rendered fails the change's
                // encoding too; its hash only has to be stable.
                if write_json(&mut self.text, col, v, None).is_err() {
                    self.text.clear();
                }
                h = fnv(h, &self.text);
                h = fnv(h, &[0]);
            }
        }
        (h % u64::from(partitions.max(1))) as u32
    }
}

/// Writes the subject of a change of `db`.`table` in `partition` into
/// `out`: `PREFIX` (`rowhook.SOURCE.`), then the names as one token each
/// (encoded as a `{key}` token of the `nats` sink is), then the partition.
pub fn subject(out: &mut String, prefix: &str, db: &str, table: &str, partition: u32) {
    out.clear();
    out.push_str(prefix);
    push_key_token(out, Some(db.as_bytes()));
    out.push('.');
    push_key_token(out, Some(table.as_bytes()));
    out.push('.');
    out.push_str(itoa::Buffer::new().format(partition));
}

/// The subjects of `partition` of every table: what a worker's consumer
/// of that partition filters on.
pub fn partition_filter(prefix: &str, partition: u32) -> String {
    format!("{prefix}*.*.{partition}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_one_token_each() {
        let mut s = String::new();
        subject(&mut s, "rowhook.main.", "shop.eu", "order items", 7);
        assert_eq!(s, "rowhook.main.shop%2Eeu.order%20items.7");
        assert_eq!(partition_filter("rowhook.main.", 7), "rowhook.main.*.*.7");
    }

    #[test]
    fn fnv_is_the_published_function() {
        // The FNV-1a test vectors: the partition rule is a contract.
        assert_eq!(fnv(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }
}
