//! Where a SQL sink is in the binlog, told by the messages it applied: the
//! change id (`<txn>:<event>:<row>`) and index of the last one, which the
//! sink can keep in its target in the same transaction as the rows. After a
//! crash rowhook replays from its own checkpoint, which is never past the
//! target's; the sink skips the messages at or before the kept position.
//!
//! Two positions compare only when their transactions do: GTIDs of one
//! MariaDB domain (`D-S-N`, by sequence number), GTIDs of one MySQL source
//! (`UUID[:TAG]:N`, by number), or binlog file positions (`FILE/POS`, by file
//! number then offset); inside one transaction, by event, row and index.
//! Anything else (a MariaDB domain not seen before, a new MySQL source
//! after a failover) does not compare, and the sink applies it.

use std::cmp::Ordering;

/// The place of one message in the binlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    txn: Txn,
    /// The transaction as written in the id.
    txn_text: String,
    event: u64,
    row: u64,
    index: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Txn {
    /// MariaDB `D-S-N`.
    Domain { domain: u64, seq: u64 },
    /// MySQL `UUID:N` or `UUID:TAG:N`.
    Source { source: String, seq: u64 },
    /// `FILE/POS`, no GTID: the file's base name, its number and the offset.
    File { base: String, number: u64, pos: u64 },
    /// An id of no known form.
    Other,
}

impl Position {
    /// The position of the message with change id `id` and index `index`;
    /// `None` if the id is not `<txn>:<event>:<row>`.
    pub fn of(id: &str, index: u32) -> Option<Position> {
        let (rest, row) = id.rsplit_once(':')?;
        let (txn, event) = rest.rsplit_once(':')?;
        Some(Position {
            txn: Txn::parse(txn),
            txn_text: txn.to_owned(),
            event: event.parse().ok()?,
            row: row.parse().ok()?,
            index,
        })
    }

    /// The change id it was made from.
    pub fn id(&self) -> String {
        format!("{}:{}:{}", self.txn_text, self.event, self.row)
    }

    /// The message index it was made from.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Whether `self` comes at or before `other` in the binlog; `None` when
    /// the two do not compare (see the module docs).
    pub fn at_or_before(&self, other: &Position) -> Option<bool> {
        let txn = if self.txn_text == other.txn_text {
            Ordering::Equal
        } else {
            self.txn.compare(&other.txn)?
        };
        let within = (self.event, self.row, self.index).cmp(&(other.event, other.row, other.index));
        Some(txn.then(within) != Ordering::Greater)
    }
}

impl Txn {
    fn parse(txn: &str) -> Txn {
        if let Some((file, pos)) = txn.rsplit_once('/') {
            let (base, number) = match file.rsplit_once('.') {
                Some((b, n)) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => (b, n.parse().ok()),
                _ => (file, Some(0)),
            };
            if let (Some(number), Ok(pos)) = (number, pos.parse()) {
                return Txn::File {
                    base: base.to_owned(),
                    number,
                    pos,
                };
            }
            return Txn::Other;
        }
        if let Some((source, seq)) = txn.rsplit_once(':') {
            return match seq.parse() {
                Ok(seq) => Txn::Source {
                    source: source.to_owned(),
                    seq,
                },
                Err(_) => Txn::Other,
            };
        }
        let mut parts = txn.splitn(3, '-');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(d), Some(s), Some(n)) => match (d.parse(), s.parse::<u64>(), n.parse()) {
                (Ok(domain), Ok(_), Ok(seq)) => Txn::Domain { domain, seq },
                _ => Txn::Other,
            },
            _ => Txn::Other,
        }
    }

    fn compare(&self, other: &Txn) -> Option<Ordering> {
        match (self, other) {
            (Txn::Domain { domain: a, seq: x }, Txn::Domain { domain: b, seq: y }) if a == b => Some(x.cmp(y)),
            (Txn::Source { source: a, seq: x }, Txn::Source { source: b, seq: y }) if a == b => Some(x.cmp(y)),
            (
                Txn::File {
                    base: a,
                    number: n,
                    pos: p,
                },
                Txn::File {
                    base: b,
                    number: m,
                    pos: q,
                },
            ) if a == b => Some((n, p).cmp(&(m, q))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, index: u32) -> Position {
        Position::of(id, index).unwrap()
    }

    #[test]
    fn positions_of_one_stream_compare() {
        assert_eq!(p("0-1-42:0:3", 0).at_or_before(&p("0-1-42:0:3", 0)), Some(true));
        assert_eq!(p("0-1-42:0:3", 0).at_or_before(&p("0-1-42:0:3", 1)), Some(true));
        assert_eq!(p("0-1-42:0:4", 0).at_or_before(&p("0-1-42:0:3", 1)), Some(false));
        assert_eq!(p("0-1-42:1:0", 0).at_or_before(&p("0-1-42:0:9", 5)), Some(false));
        assert_eq!(p("0-1-41:9:9", 9).at_or_before(&p("0-1-42:0:0", 0)), Some(true));
        // The server id does not matter within a domain (a failover).
        assert_eq!(p("0-2-43:0:0", 0).at_or_before(&p("0-1-42:0:0", 0)), Some(false));
        assert_eq!(p("1-1-1:0:0", 0).at_or_before(&p("0-1-42:0:0", 0)), None);
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        assert_eq!(
            p(&format!("{uuid}:7:0:0"), 0).at_or_before(&p(&format!("{uuid}:8:0:0"), 0)),
            Some(true)
        );
        assert_eq!(
            p(&format!("{uuid}:tag:9:0:0"), 0).at_or_before(&p(&format!("{uuid}:8:0:0"), 0)),
            None
        );
        assert_eq!(
            p("mysql-bin.000002/4:0:0", 0).at_or_before(&p("mysql-bin.000010/4:0:0", 0)),
            Some(true)
        );
        assert_eq!(
            p("mysql-bin.000002/900:0:0", 0).at_or_before(&p("mysql-bin.000002/4:0:0", 0)),
            Some(false)
        );
        assert_eq!(p("mysql-bin.000002/4:0:0", 0).at_or_before(&p("0-1-2:0:0", 0)), None);
        assert_eq!(p("0-1-42:0:3", 2).id(), "0-1-42:0:3");
        assert!(Position::of("nonsense", 0).is_none());
    }
}
