//! Where binlog events come from: a live server (as a replica) or files.
//!
//! - [`live`]: one replica connection and its binlog stream.
//! - [`reconnect`]: [`reconnect::Resilient`], a live source that survives
//!   server restarts, killed connections and stalls, resuming at the last
//!   commit.
//! - [`error`]: why a live source failed, typed: retry or tell the operator.
//! - [`file`]: binlog files on disk.
//! - [`server`]: checks and explanations outside the stream.

pub mod error;
pub mod file;
pub mod live;
pub mod reconnect;
pub mod server;

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
