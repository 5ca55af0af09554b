//! Why the live source stopped, typed so that a caller can tell a fault
//! worth retrying from one that retrying cannot fix.
//!
//! - [`SourceError::Lost`]: the connection broke or could not be made (the
//!   server restarting, the dump thread killed, a stalled network). A
//!   reconnect at the last commit may succeed.
//! - [`SourceError::Position`]: the server does not have the binlog from
//!   where we start or resume (purged files, unknown GTIDs). Retrying would
//!   never succeed, and starting elsewhere would silently lose changes.
//! - [`SourceError::Fatal`]: login, grants, server settings, protocol
//!   errors: an operator has to act.

use std::fmt;

/// Why a binlog stream was lost, as far as the reader can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// The server went away and came back (it was shut down, crashed, or
    /// refused connections while it was down).
    ServerRestart,
    /// The server closed the connection while staying up: `KILL` of the
    /// dump thread, another replica registering with our server id.
    Killed,
    /// Neither events nor heartbeats arrived for three heartbeat periods.
    Stalled,
    /// Any other network error (reset, timeout while connecting).
    Network,
}

impl Cause {
    /// Every cause, in the order metrics list them.
    pub const ALL: [Cause; 4] = [Cause::ServerRestart, Cause::Killed, Cause::Stalled, Cause::Network];

    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::ServerRestart => "server_restart",
            Cause::Killed => "killed",
            Cause::Stalled => "stalled",
            Cause::Network => "network",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the live source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The connection was lost or could not be made; a retry may succeed.
    #[error("{message}")]
    Lost {
        /// What the loss looked like (refined once the server answers again).
        cause: Cause,
        /// What happened, naming the server (never its password).
        message: String,
        /// Whether the server refused the TCP connection (it is down).
        refused: bool,
    },
    /// The server does not have the binlog from the start or resume position.
    #[error(transparent)]
    Position(#[from] PositionError),
    /// A problem retrying cannot fix: login, grants, server settings.
    #[error("{0:#}")]
    Fatal(anyhow::Error),
    /// Reconnecting failed `attempts` times in a row and the policy allows no more.
    #[error("{}", gave_up(*.attempts, .lost, .last))]
    GaveUp {
        /// Failed attempts.
        attempts: u32,
        /// How the stream was lost.
        lost: String,
        /// The last attempt's error, if there was an attempt.
        last: Option<String>,
    },
}

fn gave_up(attempts: u32, lost: &str, last: &Option<String>) -> String {
    match last {
        None => format!("{lost} (reconnecting is off)"),
        Some(last) => format!("{lost}; gave up reconnecting after {attempts} failed attempts, the last: {last}"),
    }
}

impl SourceError {
    /// Whether reconnecting may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, SourceError::Lost { .. })
    }

    /// A lost connection of `cause`.
    pub fn lost(cause: Cause, message: impl Into<String>) -> Self {
        SourceError::Lost {
            cause,
            message: message.into(),
            refused: false,
        }
    }

    /// Sorts a driver error. `url` names the server; `explain` is the
    /// actionable text of the error (see [`super::server::SourceUrl::explain`]).
    pub fn from_driver(e: &mysql_async::Error, explain: anyhow::Error, server: &str, at: &str) -> Self {
        use mysql_async::{DriverError, Error, IoError};
        match e {
            Error::Server(s) if s.code == ER_MASTER_FATAL_ERROR_READING_BINLOG => {
                SourceError::Position(PositionError::from_1236(server, at, &s.message))
            }
            Error::Server(s) => match s.code {
                ER_SERVER_SHUTDOWN => SourceError::lost(Cause::ServerRestart, format!("{explain:#}")),
                ER_CONNECTION_KILLED | ER_QUERY_INTERRUPTED => SourceError::lost(Cause::Killed, format!("{explain:#}")),
                ER_CON_COUNT_ERROR
                | ER_NET_READ_ERROR
                | ER_NET_READ_INTERRUPTED
                | ER_NET_ERROR_ON_WRITE
                | ER_NET_WRITE_INTERRUPTED => SourceError::lost(Cause::Network, format!("{explain:#}")),
                _ => SourceError::Fatal(explain),
            },
            Error::Io(IoError::Io(io)) => {
                use std::io::ErrorKind as K;
                let (cause, refused) = match io.kind() {
                    K::ConnectionRefused => (Cause::ServerRestart, true),
                    // The server closing our socket while it stays up: KILL.
                    // Closed inside a packet, the framing layer (tokio-util)
                    // reports the same as "bytes remaining on stream".
                    K::UnexpectedEof => (Cause::Killed, false),
                    _ if io.to_string() == "bytes remaining on stream" => (Cause::Killed, false),
                    _ => (Cause::Network, false),
                };
                SourceError::Lost {
                    cause,
                    message: format!("{explain:#}"),
                    refused,
                }
            }
            // TLS errors, where the driver is built with TLS.
            #[allow(unreachable_patterns)]
            Error::Io(_) => SourceError::lost(Cause::Network, format!("{explain:#}")),
            Error::Driver(DriverError::ConnectionClosed) => SourceError::lost(Cause::Killed, format!("{explain:#}")),
            Error::Driver(DriverError::PacketOutOfOrder | DriverError::UnexpectedPacket { .. }) => {
                SourceError::lost(Cause::Network, format!("{explain:#}"))
            }
            _ => SourceError::Fatal(explain),
        }
    }
}

/// MariaDB/MySQL error codes the source branches on.
const ER_CON_COUNT_ERROR: u16 = 1040;
const ER_SERVER_SHUTDOWN: u16 = 1053;
const ER_NET_READ_ERROR: u16 = 1158;
const ER_NET_READ_INTERRUPTED: u16 = 1159;
const ER_NET_ERROR_ON_WRITE: u16 = 1160;
const ER_NET_WRITE_INTERRUPTED: u16 = 1161;
const ER_MASTER_FATAL_ERROR_READING_BINLOG: u16 = 1236;
const ER_QUERY_INTERRUPTED: u16 = 1317;
const ER_CONNECTION_KILLED: u16 = 1927;

/// The server does not have the binlog from a position. Each message says
/// what happened and what to do; none suggests a silent restart elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    /// The binlog file was purged (it sorts before the oldest one the server has).
    #[error(
        "binlog file {file} (needed from position {pos}) was purged on {server}; {}: start from `earliest` or from the GTID state, and expect missed changes",
        match .earliest { Some(e) => format!("the earliest available is {e}"), None => "see SHOW BINARY LOGS for the earliest available".into() }
    )]
    FilePurged {
        /// The server.
        server: String,
        /// The file asked for.
        file: String,
        /// The position asked for in it.
        pos: u64,
        /// The oldest file the server has, if known.
        earliest: Option<String>,
    },
    /// The file is not among the server's binlogs and was not purged either.
    #[error(
        "{server} has no binlog file {file} (it has {first} to {last}): the position may come from another server, or the binlog was reset; start from one of its files, `earliest` or `latest`"
    )]
    NoSuchFile {
        /// The server.
        server: String,
        /// The file asked for.
        file: String,
        /// The oldest file the server has.
        first: String,
        /// The newest file the server has.
        last: String,
    },
    /// The position is past the end of the file.
    #[error(
        "{file}:{pos} is past the end of that binlog file on {server} ({size} bytes): the position may come from another server, or the binlog was reset; start from `earliest`, `latest` or a GTID"
    )]
    PastEnd {
        /// The server.
        server: String,
        /// The file asked for.
        file: String,
        /// The position asked for.
        pos: u64,
        /// The file's size.
        size: u64,
    },
    /// The binlogs holding the transactions after a GTID were purged.
    #[error(
        "the binlogs holding the transactions after GTID {gtid} were purged on {server}{}: start from `earliest` or a newer GTID state, and expect missed changes",
        match .oldest { Some(o) => format!(" (its oldest binlog starts after {o})"), None => String::new() }
    )]
    GtidPurged {
        /// The server.
        server: String,
        /// The GTID (or GTID state) asked for.
        gtid: String,
        /// The GTID state at the start of the oldest binlog, if known.
        oldest: Option<String>,
    },
    /// The server never had the GTID.
    #[error(
        "{server} does not have GTID {gtid} ({detail}): the position may come from another server, or the binlog was reset; start from `earliest`, `latest` or a GTID in its @@gtid_binlog_state"
    )]
    GtidUnknown {
        /// The server.
        server: String,
        /// The GTID asked for.
        gtid: String,
        /// What the server has instead.
        detail: String,
    },
    /// The server refused the position for another reason (error 1236).
    #[error(
        "{server} cannot send the binlog from {at}: {message}. Check the position against SHOW BINARY LOGS and @@gtid_binlog_state"
    )]
    Refused {
        /// The server.
        server: String,
        /// The position asked for.
        at: String,
        /// What the server said.
        message: String,
    },
}

impl PositionError {
    /// Maps the server's error 1236 (`ER_MASTER_FATAL_ERROR_READING_BINLOG`),
    /// which comes as the first reply to a binlog dump from `at`.
    pub fn from_1236(server: &str, at: &str, message: &str) -> Self {
        let server = server.to_owned();
        let lower = message.to_ascii_lowercase();
        if lower.contains("could not find first log file name") {
            let (file, pos) = at.rsplit_once(':').unwrap_or((at, "4"));
            return PositionError::FilePurged {
                server,
                file: file.to_owned(),
                pos: pos.parse().unwrap_or(4),
                earliest: None,
            };
        }
        if lower.contains("could not find gtid state") || lower.contains("purged binary logs containing gtids") {
            return PositionError::GtidPurged {
                server,
                gtid: at.to_owned(),
                oldest: None,
            };
        }
        if lower.contains("not in the master's binlog") {
            // "connecting slave requested to start from GTID 0-1-999, which is not ..."
            let gtid = message
                .split("GTID ")
                .nth(1)
                .and_then(|s| s.split(',').next())
                .unwrap_or(at)
                .trim()
                .to_owned();
            let detail = if lower.contains("higher sequence numbers") {
                "its binlog has later GTIDs of that domain, but not this one: the reader's history diverged"
            } else {
                "it is newer than anything in its binlog"
            };
            return PositionError::GtidUnknown {
                server,
                gtid,
                detail: detail.into(),
            };
        }
        PositionError::Refused {
            server,
            at: at.to_owned(),
            message: message.trim_end_matches('.').to_owned(),
        }
    }
}

/// Checks a `file:pos` start against the server's binlogs (`SHOW BINARY
/// LOGS`: name and size, oldest first).
pub fn check_file_position(server: &str, logs: &[(String, u64)], file: &str, pos: u64) -> Result<(), PositionError> {
    if let Some((_, size)) = logs.iter().find(|(name, _)| name == file) {
        if pos > *size {
            return Err(PositionError::PastEnd {
                server: server.to_owned(),
                file: file.to_owned(),
                pos,
                size: *size,
            });
        }
        return Ok(());
    }
    let (Some(first), Some(last)) = (logs.first(), logs.last()) else {
        return Err(PositionError::NoSuchFile {
            server: server.to_owned(),
            file: file.to_owned(),
            first: "none".into(),
            last: "none".into(),
        });
    };
    // Binlog files are `<base>.<sequence>`; one of the same base that sorts
    // before the oldest was purged.
    let purged = match (split_binlog_name(file), split_binlog_name(&first.0)) {
        (Some((base, n)), Some((first_base, first_n))) => base == first_base && n < first_n,
        _ => false,
    };
    if purged {
        return Err(PositionError::FilePurged {
            server: server.to_owned(),
            file: file.to_owned(),
            pos,
            earliest: Some(first.0.clone()),
        });
    }
    Err(PositionError::NoSuchFile {
        server: server.to_owned(),
        file: file.to_owned(),
        first: first.0.clone(),
        last: last.0.clone(),
    })
}

fn split_binlog_name(name: &str) -> Option<(&str, u64)> {
    let (base, seq) = name.rsplit_once('.')?;
    Some((base, seq.parse().ok()?))
}

/// One `domain-server-seq` entry of a MariaDB GTID state text.
type MariaGtid = (u32, u32, u64);

fn parse_maria_list(text: &str) -> Vec<MariaGtid> {
    text.split(',')
        .filter_map(|g| {
            let mut it = g.trim().split('-');
            Some((
                it.next()?.parse().ok()?,
                it.next()?.parse().ok()?,
                it.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// Checks a MariaDB GTID start (`requested`, e.g. `0-1-42,1-2-7`) against
/// the server's `@@gtid_binlog_state` (every domain-server pair it ever
/// logged) and the GTID position at the start of its oldest binlog
/// (`BINLOG_GTID_POS(oldest, 4)`, when known).
///
/// Conservative: it reports only what the server would refuse or get
/// wrong; anything else is left to the server, whose error 1236 is mapped
/// by [`PositionError::from_1236`].
pub fn check_gtid_start(
    server: &str,
    requested: &str,
    binlog_state: &str,
    oldest: Option<&str>,
) -> Result<(), PositionError> {
    let have = parse_maria_list(binlog_state);
    let oldest_list = oldest.map(parse_maria_list).unwrap_or_default();
    for (d, s, n) in parse_maria_list(requested) {
        let gtid = format!("{d}-{s}-{n}");
        if n > 0 {
            let in_domain: Vec<&MariaGtid> = have.iter().filter(|g| g.0 == d).collect();
            if in_domain.is_empty() {
                return Err(PositionError::GtidUnknown {
                    server: server.to_owned(),
                    gtid,
                    detail: format!(
                        "it has no transactions in domain {d}; its binlog state is `{}`",
                        if binlog_state.is_empty() { "empty" } else { binlog_state }
                    ),
                });
            }
            if !in_domain.iter().any(|g| g.1 == s && g.2 >= n) {
                let newest = in_domain.iter().max_by_key(|g| g.2).expect("not empty");
                return Err(PositionError::GtidUnknown {
                    server: server.to_owned(),
                    gtid,
                    detail: format!("its newest in domain {d} is {}-{}-{}", newest.0, newest.1, newest.2),
                });
            }
        }
        if oldest_list.iter().any(|g| g.0 == d && g.2 > n) {
            return Err(PositionError::GtidPurged {
                server: server.to_owned(),
                gtid,
                oldest: oldest.map(str::to_owned),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs() -> Vec<(String, u64)> {
        vec![("mysql-bin.000003".into(), 900), ("mysql-bin.000004".into(), 1500)]
    }

    #[test]
    fn file_positions() {
        let s = "mysql://repl@db:3306";
        assert_eq!(check_file_position(s, &logs(), "mysql-bin.000004", 1500), Ok(()));
        assert_eq!(check_file_position(s, &logs(), "mysql-bin.000003", 4), Ok(()));
        let purged = check_file_position(s, &logs(), "mysql-bin.000001", 1234).unwrap_err();
        assert_eq!(
            purged.to_string(),
            "binlog file mysql-bin.000001 (needed from position 1234) was purged on mysql://repl@db:3306; the earliest \
             available is mysql-bin.000003: start from `earliest` or from the GTID state, and expect missed changes"
        );
        assert!(matches!(
            check_file_position(s, &logs(), "mysql-bin.000009", 4),
            Err(PositionError::NoSuchFile { .. })
        ));
        assert!(matches!(
            check_file_position(s, &logs(), "other-bin.000001", 4),
            Err(PositionError::NoSuchFile { .. })
        ));
        assert!(matches!(
            check_file_position(s, &logs(), "mysql-bin.000004", 1501),
            Err(PositionError::PastEnd { size: 1500, .. })
        ));
        assert!(matches!(
            check_file_position(s, &[], "mysql-bin.000004", 4),
            Err(PositionError::NoSuchFile { .. })
        ));
    }

    #[test]
    fn gtid_starts() {
        let s = "db";
        assert_eq!(check_gtid_start(s, "0-1-5", "0-1-10", Some("0-1-2")), Ok(()));
        // Exactly at the start of the oldest binlog.
        assert_eq!(check_gtid_start(s, "0-1-2", "0-1-10", Some("0-1-2")), Ok(()));
        let e = check_gtid_start(s, "0-1-999", "0-1-10", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "db does not have GTID 0-1-999 (its newest in domain 0 is 0-1-10): the position may come from another \
             server, or the binlog was reset; start from `earliest`, `latest` or a GTID in its @@gtid_binlog_state"
        );
        assert!(matches!(
            check_gtid_start(s, "7-1-1", "0-1-10", None),
            Err(PositionError::GtidUnknown { .. })
        ));
        assert!(matches!(
            check_gtid_start(s, "0-5-3", "0-1-10,0-2-4", None),
            Err(PositionError::GtidUnknown { .. })
        ));
        assert_eq!(check_gtid_start(s, "0-2-3", "0-1-10,0-2-4", None), Ok(()));
        let e = check_gtid_start(s, "0-1-1", "0-1-10", Some("0-1-6")).unwrap_err();
        assert!(e.to_string().starts_with("the binlogs holding the transactions after GTID 0-1-1 were purged on db (its oldest binlog starts after 0-1-6)"), "{e}");
        // Nothing of a domain seen yet: fine unless its start was purged.
        assert_eq!(check_gtid_start(s, "1-1-0", "0-1-10", Some("0-1-6")), Ok(()));
        assert!(check_gtid_start(s, "0-1-0", "0-1-10", Some("0-1-6")).is_err());
    }

    #[test]
    fn server_refusals() {
        let s = "db";
        let e = PositionError::from_1236(
            s,
            "0-1-999",
            "Error: connecting slave requested to start from GTID 0-1-999, which is not in the master's binlog",
        );
        assert!(
            matches!(&e, PositionError::GtidUnknown { gtid, .. } if gtid == "0-1-999"),
            "{e:?}"
        );
        let e = PositionError::from_1236(
            s,
            "0-1-3",
            "Could not find GTID state requested by slave in any binlog files. Probably the slave state is too old and required binlog files have been purged.",
        );
        assert!(matches!(e, PositionError::GtidPurged { .. }), "{e:?}");
        let e = PositionError::from_1236(
            s,
            "mysql-bin.000001:120",
            "Could not find first log file name in binary log index file",
        );
        assert!(
            matches!(&e, PositionError::FilePurged { file, pos: 120, .. } if file == "mysql-bin.000001"),
            "{e:?}"
        );
        let e = PositionError::from_1236(
            s,
            "mysql-bin.000001:99999",
            "Client requested master to start replication from position > file size",
        );
        assert!(e.to_string().contains("position > file size"), "{e}");
    }

    #[test]
    fn driver_errors_are_sorted() {
        let explain = |m: &str| anyhow::anyhow!("{m}");
        let io =
            |kind: std::io::ErrorKind| mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::new(kind, "x")));
        let e = io(std::io::ErrorKind::ConnectionRefused);
        let s = SourceError::from_driver(&e, explain("refused"), "db", "f:4");
        assert!(matches!(
            s,
            SourceError::Lost {
                cause: Cause::ServerRestart,
                refused: true,
                ..
            }
        ));
        let e = io(std::io::ErrorKind::UnexpectedEof);
        assert!(matches!(
            SourceError::from_driver(&e, explain("eof"), "db", "f:4"),
            SourceError::Lost {
                cause: Cause::Killed,
                ..
            }
        ));
        let e = mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::other(
            "bytes remaining on stream",
        )));
        assert!(matches!(
            SourceError::from_driver(&e, explain("cut"), "db", "f:4"),
            SourceError::Lost {
                cause: Cause::Killed,
                ..
            }
        ));
        let e = io(std::io::ErrorKind::ConnectionReset);
        assert!(matches!(
            SourceError::from_driver(&e, explain("reset"), "db", "f:4"),
            SourceError::Lost {
                cause: Cause::Network,
                ..
            }
        ));
        let server = |code: u16| {
            mysql_async::Error::Server(mysql_async::ServerError {
                code,
                message: "m".into(),
                state: "HY000".into(),
            })
        };
        assert!(!SourceError::from_driver(&server(1045), explain("denied"), "db", "f:4").is_transient());
        assert!(SourceError::from_driver(&server(1053), explain("shutdown"), "db", "f:4").is_transient());
        assert!(matches!(
            SourceError::from_driver(&server(1236), explain("x"), "db", "f:4"),
            SourceError::Position(_)
        ));
    }
}
