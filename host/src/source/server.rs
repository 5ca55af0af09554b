//! Talking to the source server outside the binlog stream: connecting with
//! errors that say what to do, and checking that the server can feed a
//! row-based replica.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

use crate::decode::event::version_triplet;

/// A database URL with its password kept out of every `Debug`/`Display`.
#[derive(Clone)]
pub struct SourceUrl {
    opts: Opts,
}

impl std::fmt::Debug for SourceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SourceUrl({self})")
    }
}

impl std::fmt::Display for SourceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = self.opts.user().unwrap_or("");
        write!(
            f,
            "mysql://{user}@{}:{}",
            self.opts.ip_or_hostname(),
            self.opts.tcp_port()
        )
    }
}

impl SourceUrl {
    /// Parses `mysql://user:pass@host:port`. The error never repeats the URL,
    /// which holds the password.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let opts = Opts::from_url(url).map_err(|e| {
            let kind = match e {
                mysql_async::UrlError::UnsupportedScheme { .. } => "the scheme must be mysql://".to_string(),
                mysql_async::UrlError::Parse(_) => "it is not a valid URL".to_string(),
                mysql_async::UrlError::UnknownParameter { param } => format!("unknown parameter `{param}`"),
                mysql_async::UrlError::InvalidParamValue { param, .. } => format!("invalid value for `{param}`"),
                _ => "it is not a valid mysql:// URL".to_string(),
            };
            anyhow::anyhow!("invalid source URL ({kind}); expected mysql://USER:PASSWORD@HOST:PORT")
        })?;
        // Row events can be as large as the server's max_allowed_packet
        // allows (1 GiB); a smaller client limit would kill the stream.
        let opts = OptsBuilder::from_opts(opts)
            .max_allowed_packet(Some(1 << 30))
            .wait_timeout(Some(31_536_000))
            .into();
        Ok(Self { opts })
    }

    /// The connection options (hold the password: never log them).
    pub fn opts(&self) -> &Opts {
        &self.opts
    }

    /// The password, to scrub it from messages.
    fn password(&self) -> Option<&str> {
        self.opts.pass().filter(|p| !p.is_empty())
    }

    /// Removes the password from a message, in case a driver error echoed it.
    pub fn scrub(&self, msg: &str) -> String {
        match self.password() {
            Some(p) if p.len() >= 3 => msg.replace(p, "***"),
            _ => msg.to_string(),
        }
    }

    /// Connects, turning driver errors into ones that say what to do.
    pub async fn connect(&self) -> anyhow::Result<Conn> {
        Conn::new(self.opts.clone()).await.map_err(|e| self.explain(e))
    }

    /// Turns a driver error into an actionable one.
    pub fn explain(&self, e: mysql_async::Error) -> anyhow::Error {
        self.explain_ref(&e)
    }

    /// [`SourceUrl::explain`] of a borrowed error.
    pub fn explain_ref(&self, e: &mysql_async::Error) -> anyhow::Error {
        let msg = self.scrub(&e.to_string());
        match e {
            mysql_async::Error::Server(s) if s.code == 1045 => anyhow::anyhow!(
                "cannot log in to {self}: access denied (wrong user or password). Check the user and password in the URL. Server said: {msg}"
            ),
            mysql_async::Error::Server(s) if s.code == 1236 => anyhow::anyhow!(
                "{self} cannot send the binlog from the requested position: {msg}. The binlog may have been purged \
                 (see SHOW BINARY LOGS) or the GTID is unknown to the server; start from a position it still has"
            ),
            mysql_async::Error::Server(s) if s.code == 1227 || s.code == 1045 || s.code == 1044 => anyhow::anyhow!(
                "{self}: missing privilege: {msg}. Fix: GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO <user>"
            ),
            mysql_async::Error::Io(_) => {
                anyhow::anyhow!("cannot reach {self}: {msg}. Is the server running and the host/port right?")
            }
            _ => anyhow::anyhow!("{self}: {msg}"),
        }
    }
}

/// What the server is and how its binlog is set up.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `@@version`.
    pub version: String,
    /// Whether it is MariaDB.
    pub mariadb: bool,
    /// `@@server_id` of the source.
    pub server_id: u32,
    /// `@@log_bin`.
    pub log_bin: bool,
    /// `@@binlog_format`.
    pub binlog_format: String,
    /// `@@binlog_row_image`.
    pub row_image: String,
    /// `@@binlog_row_metadata`; `None` where the server does not have it.
    pub row_metadata: Option<String>,
    /// `@@binlog_checksum`.
    pub checksum: String,
    /// How long the server keeps binlog files, in seconds
    /// (`@@binlog_expire_logs_seconds`, or `@@expire_logs_days` where it
    /// has only that): 0 for never purged by age; `None` where neither
    /// could be read.
    pub expire_secs: Option<u64>,
}

/// A global variable; `None` where the server does not have it. A broken
/// connection is an error: settings read from a server that went away
/// mid-way would all look wrong.
async fn var(conn: &mut Conn, name: &str) -> Result<Option<String>, mysql_async::Error> {
    let q = format!("SELECT @@GLOBAL.{name}");
    match conn.query_first::<Option<String>, _>(q).await {
        Ok(v) => Ok(v.flatten()),
        Err(mysql_async::Error::Server(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

impl ServerInfo {
    /// Reads the server's version and binlog settings; what cannot be read
    /// is left empty.
    pub async fn read(conn: &mut Conn) -> anyhow::Result<ServerInfo> {
        Ok(Self::read_strict(conn).await.unwrap_or_else(|_| ServerInfo {
            version: String::new(),
            mariadb: false,
            server_id: 0,
            log_bin: false,
            binlog_format: String::new(),
            row_image: String::new(),
            row_metadata: None,
            checksum: "NONE".into(),
            expire_secs: None,
        }))
    }

    /// Reads the server's version and binlog settings, failing if the
    /// connection breaks.
    pub async fn read_strict(conn: &mut Conn) -> Result<ServerInfo, mysql_async::Error> {
        let version = var(conn, "version").await?.unwrap_or_default();
        Ok(ServerInfo {
            mariadb: version.contains("MariaDB"),
            server_id: var(conn, "server_id").await?.and_then(|s| s.parse().ok()).unwrap_or(0),
            log_bin: matches!(var(conn, "log_bin").await?.as_deref(), Some("1" | "ON")),
            binlog_format: var(conn, "binlog_format").await?.unwrap_or_default(),
            row_image: var(conn, "binlog_row_image").await?.unwrap_or_default(),
            row_metadata: var(conn, "binlog_row_metadata").await?,
            checksum: var(conn, "binlog_checksum").await?.unwrap_or_else(|| "NONE".into()),
            expire_secs: match var(conn, "binlog_expire_logs_seconds").await? {
                Some(s) => s.parse().ok(),
                // MariaDB before 10.6 and MySQL 5.7: whole (or, in
                // MariaDB, fractional) days.
                None => var(conn, "expire_logs_days")
                    .await?
                    .and_then(|d| d.parse::<f64>().ok())
                    .map(|d| (d * 86_400.0) as u64),
            },
            version,
        })
    }

    /// What the server's binlog retention means for rowhook: how long it
    /// may stay stopped, or a handler held in the binlog, before the
    /// changes it has not handled are purged. `None` where it is unknown.
    pub fn retention(&self) -> Option<String> {
        let secs = self.expire_secs?;
        if secs == 0 {
            return Some(
                "binlogs are not purged by age (binlog_expire_logs_seconds = 0): only a PURGE or a full disk removes \
                 changes rowhook has not read"
                    .into(),
            );
        }
        Some(format!(
            "binlogs are kept {} (binlog_expire_logs_seconds = {secs}): rowhook stopped, or a handler held in \
             the binlog (`hold_in = \"binlog\"`), for longer than that loses the changes it has not handled; \
             raise it or hold in a file (`hold_in = \"file\"`) if a handler may stay held longer",
            human_duration(secs)
        ))
    }

    /// Problems that stop rowhook from reading rows, each with its fix.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if !self.log_bin {
            out.push(Problem::new(
                ProblemKind::LogBin,
                "the binary log is off (log_bin=OFF)",
                "add `log_bin = mysql-bin` and a unique `server_id` under [mysqld] in my.cnf and restart the server",
            ));
        }
        if !self.binlog_format.eq_ignore_ascii_case("ROW") {
            out.push(Problem::new(
                ProblemKind::Format,
                format!("binlog_format is {}, not ROW", self.binlog_format),
                "SET GLOBAL binlog_format = 'ROW'; and `binlog_format = ROW` in my.cnf (existing sessions keep the old format until they reconnect)",
            ));
        }
        if !self.row_image.eq_ignore_ascii_case("FULL") {
            out.push(Problem::new(
                ProblemKind::RowImage,
                format!(
                    "binlog_row_image is {}, not FULL: before images would miss columns",
                    self.row_image
                ),
                "SET GLOBAL binlog_row_image = 'FULL'; and `binlog_row_image = FULL` in my.cnf",
            ));
        }
        match &self.row_metadata {
            Some(m) if m.eq_ignore_ascii_case("FULL") => {}
            Some(m) => out.push(Problem::new(
                ProblemKind::RowMetadata,
                format!("binlog_row_metadata is {m}, not FULL: column names are not in the binlog"),
                "SET GLOBAL binlog_row_metadata = 'FULL'; and `binlog_row_metadata = FULL` in my.cnf, then FLUSH BINARY LOGS \
                 (or accept names from information_schema, wrong across DDL, with --allow-minimal-metadata)",
            )),
            None => {
                let (maj, min, _) = version_triplet(&self.version);
                let need = if self.mariadb { "MariaDB 10.5" } else { "MySQL 8.0.1" };
                out.push(Problem::new(
                ProblemKind::RowMetadata,
                    format!("the server ({maj}.{min}) has no binlog_row_metadata setting, so column names are not in the binlog"),
                    format!("upgrade to {need} or later, or run with --allow-minimal-metadata to take names from information_schema (wrong across DDL)"),
                ));
            }
        }
        out
    }
}

/// Which requirement a [`Problem`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The binary log is off.
    LogBin,
    /// `binlog_format` is not ROW.
    Format,
    /// `binlog_row_image` is not FULL.
    RowImage,
    /// Column names are not in the binlog (`binlog_row_metadata`).
    RowMetadata,
    /// A replication grant is missing.
    Grant,
    /// The replica server id cannot be used.
    ServerId,
    /// Another connected replica is listed under the server id.
    ServerIdInUse,
}

/// A server setting that keeps rowhook from working, and its fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Which requirement it is about.
    pub kind: ProblemKind,
    /// What is wrong.
    pub what: String,
    /// The statement or change that fixes it.
    pub fix: String,
}

impl Problem {
    fn new(kind: ProblemKind, what: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            kind,
            what: what.into(),
            fix: fix.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}. Fix: {}", self.what, self.fix)
    }
}

/// Which replication grants the connected user lacks.
pub async fn missing_grants(conn: &mut Conn) -> anyhow::Result<Vec<Problem>> {
    let grants: Vec<String> = conn.query("SHOW GRANTS").await?;
    let user: Option<String> = conn.query_first("SELECT CURRENT_USER()").await?;
    let all = grants.join("\n").to_ascii_uppercase();
    let has = |p: &str| all.contains("ALL PRIVILEGES ON *.*") || all.contains(p);
    let who = user.unwrap_or_else(|| "the user".into());
    let (u, h) = who.rsplit_once('@').unwrap_or((&who, "%"));
    let mut out = Vec::new();
    if !has("REPLICATION SLAVE") {
        out.push(Problem::new(
            ProblemKind::Grant,
            format!("{who} lacks the REPLICATION SLAVE grant, needed to read the binlog"),
            format!("GRANT REPLICATION SLAVE ON *.* TO '{u}'@'{h}';"),
        ));
    }
    // MariaDB 10.5+ shows REPLICATION CLIENT as BINLOG MONITOR.
    if !has("REPLICATION CLIENT") && !has("BINLOG MONITOR") && !has("SUPER") {
        out.push(Problem::new(
            ProblemKind::Grant,
            format!("{who} lacks the REPLICATION CLIENT grant, needed for SHOW MASTER STATUS and SHOW BINARY LOGS"),
            format!("GRANT REPLICATION CLIENT ON *.* TO '{u}'@'{h}';"),
        ));
    }
    Ok(out)
}

/// Whether another replica already uses `server_id`, or it is the source's own.
pub async fn server_id_problem(conn: &mut Conn, info: &ServerInfo, server_id: u32) -> Option<Problem> {
    if server_id == 0 {
        return Some(Problem::new(
            ProblemKind::ServerId,
            "server_id 0 is not allowed for a replica",
            "set a unique non-zero server_id",
        ));
    }
    if server_id == info.server_id {
        return Some(Problem::new(
            ProblemKind::ServerId,
            format!("server_id {server_id} is the source server's own id"),
            "choose another server_id (`--server-id N` or `[source] server_id`)",
        ));
    }
    let rows: Vec<mysql_async::Row> = conn.query("SHOW SLAVE HOSTS").await.unwrap_or_default();
    for row in rows {
        let id: Option<u32> = row.get_opt(0).and_then(Result::ok);
        if id == Some(server_id) {
            return Some(Problem::new(
                ProblemKind::ServerIdInUse,
                format!(
                    "server_id {server_id} is already used by a connected replica (SHOW SLAVE HOSTS); two replicas with one id cut each other off"
                ),
                "choose a server_id no other replica uses",
            ));
        }
    }
    None
}

/// `secs` as days, hours or minutes, whichever reads best.
fn human_duration(secs: u64) -> String {
    let unit = |n: u64, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    if secs.is_multiple_of(86_400) {
        unit(secs / 86_400, "day")
    } else if secs >= 86_400 {
        format!("{:.1} days", secs as f64 / 86_400.0)
    } else if secs.is_multiple_of(3_600) {
        unit(secs / 3_600, "hour")
    } else if secs >= 3_600 {
        format!("{:.1} hours", secs as f64 / 3_600.0)
    } else if secs.is_multiple_of(60) {
        unit(secs / 60, "minute")
    } else {
        unit(secs, "second")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_reads_in_the_unit_that_fits_it() {
        assert_eq!(human_duration(30 * 86_400), "30 days");
        assert_eq!(human_duration(86_400), "1 day");
        assert_eq!(human_duration(36 * 3_600), "1.5 days");
        assert_eq!(human_duration(3_600), "1 hour");
        assert_eq!(human_duration(5_400), "1.5 hours");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(45), "45 seconds");
    }
}
