//! Where binlog events come from: a live server (as a replica) or files.
//!
//! - [`live`]: one replica connection and its binlog stream.
//! - [`reconnect`]: [`reconnect::Resilient`], a live source that survives
//!   server restarts, killed connections and stalls, resuming at the last
//!   commit.
//! - [`error`]: why a live source failed, typed: retry or tell the operator.
//! - [`file`](mod@file): binlog files on disk.
//! - [`server`]: checks and explanations outside the stream.
//!
//! Both kinds are a [`Source`], the one interface the driver reads.

pub mod error;
pub mod file;
pub mod lag;
pub mod live;
pub mod reconnect;
pub mod server;

use crate::decode::RawEvent;
use crate::decode::gtid::GtidState;

/// What [`Source::next`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceStep {
    /// An event: [`Source::event`] gives it, until the next call.
    Event,
    /// The stream was lost and a new one started at the last commit the
    /// source was told of ([`Source::committed`]): the open transaction
    /// comes again from its first event, so drop it and what was buffered
    /// for it.
    Resumed,
    /// No more events. `partial`: the offset of an incomplete event at the
    /// end of the last file, if there is one.
    End {
        /// Offset of a partial trailing event.
        partial: Option<u64>,
    },
}

/// Where binlog events come from: the seam between a stream of events and
/// the one loop that decodes and hands them on ([`crate::driver`]).
///
/// A source frames events and knows how to resume; it knows nothing of
/// transactions or rows. The driver tells it what it needs to resume
/// ([`Source::committed`]) and to drop duplicates ([`Source::skip_payload_copies`]).
pub trait Source {
    /// Waits for the next step. Cancel-safe: dropping the future (a timer
    /// or a stop request won a `select!`) loses no event.
    fn next(&mut self) -> impl std::future::Future<Output = anyhow::Result<SourceStep>>;

    /// The event of the last [`SourceStep::Event`].
    fn event(&self) -> RawEvent<'_>;

    /// The binlog file the events come from, where the source knows it
    /// (files); a live stream names its file in its ROTATE events instead.
    fn file_name(&self) -> Option<&str> {
        None
    }

    /// Every transaction up to `file:pos` is handled: a lost stream resumes there.
    fn committed(&mut self, at: (&str, u64, &GtidState)) {
        let _ = at;
    }

    /// The decoder unpacked a transaction payload of `n` events; a live
    /// MySQL stream also sends them unpacked, and those copies are dropped.
    fn skip_payload_copies(&mut self, n: usize) {
        let _ = n;
    }

    /// Today's column names of `db.table`, for binlogs without them, where
    /// the source can ask a server.
    fn column_names(
        &mut self,
        db: &str,
        table: &str,
    ) -> impl std::future::Future<Output = anyhow::Result<Option<Vec<String>>>> {
        let _ = (db, table);
        async { Ok(None) }
    }
}

/// Where to start reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest binlog the server (or the first file) has.
    Earliest,
    /// The server's current end: only changes from now on.
    Latest,
    /// A file and byte offset of an event (a commit boundary from a previous run).
    File {
        /// Binlog file name.
        file: String,
        /// Offset of an event in it.
        pos: u64,
    },
    /// A GTID set: everything not in it (MariaDB `0-1-42`, MySQL `uuid:1-42`).
    Gtid(String),
}

impl std::str::FromStr for StartPosition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "earliest" => return Ok(StartPosition::Earliest),
            "latest" => return Ok(StartPosition::Latest),
            _ => {}
        }
        if let Some((file, pos)) = s.rsplit_once(':')
            && !file.contains(':')
            && file.contains('.')
            && let Ok(pos) = pos.parse::<u64>()
        {
            if pos < 4 {
                return Err(format!("`{s}`: a binlog position is at least 4"));
            }
            return Ok(StartPosition::File {
                file: file.to_owned(),
                pos,
            });
        }
        crate::decode::gtid::GtidState::parse(s).map_err(|e| {
            format!(
                "`{s}` is not a start position: use earliest, latest, FILE:POS (mysql-bin.000003:4) or a GTID set ({e})"
            )
        })?;
        Ok(StartPosition::Gtid(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::StartPosition;

    #[test]
    fn parses_start_positions() {
        assert_eq!("earliest".parse(), Ok(StartPosition::Earliest));
        assert_eq!(
            "mysql-bin.000003:1234".parse(),
            Ok(StartPosition::File {
                file: "mysql-bin.000003".into(),
                pos: 1234
            })
        );
        assert_eq!("0-1-42".parse(), Ok(StartPosition::Gtid("0-1-42".into())));
        assert_eq!(
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5".parse(),
            Ok(StartPosition::Gtid("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5".into()))
        );
        assert!("yesterday".parse::<StartPosition>().is_err());
    }
}
