//! `kind = "mysql"`: applies the row operations handlers emit (see
//! [`crate::sink::sql`]) to tables of a MySQL or MariaDB database.
//!
//! Each batch is one InnoDB transaction: its operations are collapsed to
//! the last state of each row, the deletes run as `DELETE … WHERE (key) IN
//! (…)` and the upserts as multi-row `INSERT … ON DUPLICATE KEY UPDATE`, as
//! prepared statements of at most [`ROWS_PER_STATEMENT`] rows. The session
//! is strict (`sql_mode` with `STRICT_ALL_TABLES`, so a value that does not
//! fit is an error, never a silent truncation) and in UTC. The commit is
//! as durable as the server's `innodb_flush_log_at_trx_commit` (1, the
//! default: flushed at each commit).
//!
//! Values are checked against `information_schema` before anything is
//! sent ([`catalog`]); with `checkpoint_table`, the position of the batch's
//! last message is written in the same transaction, and replays skip what
//! the target has (see [`crate::sink::sql::position`]).

mod catalog;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn as MyConn, OptsBuilder, TxOpts, Value as My};

use self::catalog::TableInfo;
use super::kind::SinkKind;
use super::sql::config::{RawSqlSink, SqlOptions};
use super::sql::conn::{Failure, PROBE_TIMEOUT, settle_probe, settle_write};
use super::sql::{Final, Position, Quoted, Tables, already_applied, collapse, deletes, upsert_groups};
use super::{Message, Sink, SinkError};
use crate::probe::CheckLine;
use crate::problem::SinkContext;

/// The URL schemes of the kind.
const SCHEMES: &[&str] = &["mysql", "mariadb"];
/// MySQL's port.
const DEFAULT_PORT: u16 = 3306;
/// The most rows one `INSERT` or `DELETE` carries.
pub const ROWS_PER_STATEMENT: usize = 1000;

/// The session every connection starts with: strict, UTC.
const SESSION: &str = "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'";

/// `kind = "mysql"` in the registry.
#[derive(Debug)]
pub struct MysqlKind;

impl SinkKind for MysqlKind {
    const NAME: &'static str = "mysql";
    type Raw = Box<RawSqlSink>;
    type Options = SqlOptions;
    type Sink = MysqlSink;

    fn resolve(raw: Box<RawSqlSink>, cx: &mut SinkContext<'_>) -> Option<SqlOptions> {
        super::sql::config::resolve(*raw, SCHEMES, DEFAULT_PORT, cx)
    }

    async fn open(name: &str, options: &SqlOptions) -> Result<MysqlSink, SinkError> {
        Ok(MysqlSink {
            name: name.to_owned(),
            opts: options.clone(),
            conn: None,
        })
    }

    fn probe(name: &str, options: &SqlOptions) -> CheckLine {
        probe(name, options)
    }

    fn one_line_per_message(_: &SqlOptions) -> bool {
        false
    }

    fn row_ops(options: &SqlOptions) -> Option<Arc<Tables>> {
        Some(options.tables.clone())
    }
}

/// Writes row operations into MySQL or MariaDB, one transaction per batch.
pub struct MysqlSink {
    name: String,
    opts: SqlOptions,
    /// The connection, while there is one; taken out for the length of a
    /// write, so a dropped write drops it and the server rolls back.
    conn: Option<Conn>,
}

impl std::fmt::Debug for MysqlSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlSink")
            .field("name", &self.name)
            .field("opts", &self.opts)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

struct Conn {
    conn: MyConn,
    tables: HashMap<String, Arc<TableInfo>>,
    /// The position the checkpoint table held at connect, until passed.
    applied: Option<Position>,
}

/// One statement of a batch and its parameters.
type Step = (String, Vec<My>);

impl Sink for MysqlSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write_batch(&mut self, batch: &[Message]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let timeout = self.opts.timeout;
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.connect(timeout).await?,
        };
        let outcome = tokio::time::timeout(timeout, self.apply(&mut conn, batch)).await;
        settle_write(&mut self.conn, conn, outcome, &self.name, &self.opts.url, timeout)
    }

    async fn health(&mut self) -> Result<(), SinkError> {
        let Some(mut conn) = self.conn.take() else {
            self.conn = Some(self.connect(PROBE_TIMEOUT).await?);
            return Ok(());
        };
        let outcome = tokio::time::timeout(PROBE_TIMEOUT, async {
            conn.conn
                .ping()
                .await
                .map(|_| ())
                .map_err(|e| self.fail(&e, "checking the connection").error)
        })
        .await;
        settle_probe(&mut self.conn, conn, outcome, &self.name, &self.opts.url)
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        if let Some(c) = self.conn.take() {
            let _ = tokio::time::timeout(PROBE_TIMEOUT, c.conn.disconnect()).await;
        }
        Ok(())
    }
}

/// The connection options of `opts`.
fn conn_opts(opts: &SqlOptions) -> Result<OptsBuilder, String> {
    let url = &opts.url;
    let mut b = OptsBuilder::default()
        .ip_or_hostname(url.host.clone())
        .tcp_port(url.port)
        .user(Some(url.user.clone()))
        .pass(url.password.as_ref().map(|p| p.expose().to_owned()))
        .db_name(Some(url.database.clone()))
        .prefer_socket(false)
        .stmt_cache_size(64)
        .init(vec![SESSION]);
    if let Some(files) = &opts.tls {
        let mut ssl = mysql_async::SslOpts::default();
        if let Some(ca) = &files.ca_file {
            ssl = ssl.with_root_certs(vec![ca.clone().into()]);
        }
        if let Some((cert, key)) = &files.client_cert {
            ssl = ssl.with_client_identity(Some(mysql_async::ClientIdentity::new(
                cert.clone().into(),
                key.clone().into(),
            )));
        }
        b = b.ssl_opts(ssl);
    }
    Ok(b)
}

impl MysqlSink {
    async fn connect(&self, timeout: Duration) -> Result<Conn, SinkError> {
        let opts = conn_opts(&self.opts).map_err(|e| SinkError::permanent(&self.name, e))?;
        let mut conn = match tokio::time::timeout(timeout, MyConn::new(opts)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(self.fail(&e, "connecting").error),
            Err(_) => {
                return Err(SinkError::unavailable(
                    &self.name,
                    format!(
                        "connecting to {} took longer than {} ms",
                        self.opts.url,
                        timeout.as_millis()
                    ),
                ));
            }
        };
        let mut applied = None;
        if let Some(table) = &self.opts.checkpoint_table {
            applied = match tokio::time::timeout(timeout, self.read_checkpoint(&mut conn, table)).await {
                Ok(Ok(p)) => p,
                Ok(Err(f)) => return Err(f.error),
                Err(_) => {
                    return Err(SinkError::unavailable(
                        &self.name,
                        format!(
                            "reading the checkpoint table took longer than {} ms",
                            timeout.as_millis()
                        ),
                    ));
                }
            };
        }
        Ok(Conn {
            conn,
            tables: HashMap::new(),
            applied,
        })
    }

    async fn read_checkpoint(&self, conn: &mut MyConn, table: &str) -> Result<Option<Position>, Failure> {
        let (schema, t) = super::sql::split_table(table);
        let exists: Option<u64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
                (schema, t),
            )
            .await
            .map_err(|e| self.fail(&e, "looking for the checkpoint table"))?;
        if exists == Some(0) {
            conn.query_drop(checkpoint_ddl(table)).await.map_err(|e| {
                let mut f = self.fail(&e, "creating the checkpoint table");
                if server_code(&e).is_some_and(|c| matches!(c, 1142 | 1044 | 1227)) {
                    f.error = SinkError::permanent(
                        &self.name,
                        format!(
                            "checkpoint table `{table}` does not exist and `{}` may not create it; create it: {}",
                            self.opts.url.user,
                            checkpoint_ddl(table)
                        ),
                    );
                }
                f
            })?;
        }
        let row: Option<(String, i64)> = conn
            .exec_first(
                format!(
                    "SELECT change_id, message_index FROM {} WHERE sink = ?",
                    catalog::sql_name(table)
                ),
                (self.name.as_str(),),
            )
            .await
            .map_err(|e| self.fail(&e, "reading the checkpoint table"))?;
        Ok(row.and_then(|(id, index)| Position::of(&id, u32::try_from(index).ok()?)))
    }

    async fn apply(&self, conn: &mut Conn, batch: &[Message]) -> Result<(), Failure> {
        let permanent = |reason: String| Failure {
            error: SinkError::permanent(&self.name, reason),
            keep: true,
        };
        let start = conn.applied.as_ref().map_or(0, |p| already_applied(batch, p));
        if start > 0 {
            tracing::info!(
                sink = %self.name,
                "skipped {start} messages the target has already (its checkpoint table says so)"
            );
        }
        if start == batch.len() {
            return Ok(());
        }
        let collapsed = collapse(&batch[start..], &self.opts.tables).map_err(permanent)?;
        let mut steps: Vec<Step> = Vec::new();
        for (name, rows) in collapsed.tables() {
            let info = self.table(conn, name).await?;
            let rule = self.opts.tables.get(name).expect("checked above");
            let key: Vec<&str> = rule.key.iter().map(String::as_str).collect();
            let deleted: Vec<&Final> = deletes(rows.rows()).collect();
            for chunk in deleted.chunks(ROWS_PER_STATEMENT) {
                let mut params = Vec::with_capacity(chunk.len() * key.len());
                for f in chunk {
                    for (i, v) in f.key_values(rule).enumerate() {
                        let c = info.column(key[i]).map_err(permanent)?;
                        params.push(info.param(key[i], c, v).map_err(permanent)?);
                    }
                }
                steps.push((delete_sql(&info, &key, chunk.len()), params));
            }
            for super::sql::UpsertGroup {
                columns: cols,
                rows: members,
            } in upsert_groups(rows.rows())
            {
                info.check_required(&cols).map_err(permanent)?;
                for chunk in members.chunks(ROWS_PER_STATEMENT) {
                    let mut params = Vec::with_capacity(chunk.len() * cols.len());
                    for row in chunk {
                        for col in &cols {
                            let c = info.column(col).map_err(permanent)?;
                            params.push(info.param(col, c, &row[*col]).map_err(permanent)?);
                        }
                    }
                    steps.push((upsert_sql(&info, &cols, &key, chunk.len()), params));
                }
            }
        }
        let last = batch.last().expect("not empty");
        let mut tx = conn
            .conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(|e| self.fail(&e, "beginning the transaction"))?;
        for (sql, params) in steps {
            tx.exec_drop(sql, params)
                .await
                .map_err(|e| self.fail(&e, "writing the rows"))?;
        }
        if let Some(t) = &self.opts.checkpoint_table {
            tx.exec_drop(
                checkpoint_sql(t),
                (self.name.as_str(), last.id.as_str(), i64::from(last.index)),
            )
            .await
            .map_err(|e| self.fail(&e, "writing the checkpoint table"))?;
        }
        tx.commit().await.map_err(|e| self.fail(&e, "committing"))?;
        conn.applied = None;
        Ok(())
    }

    async fn table(&self, conn: &mut Conn, name: &str) -> Result<Arc<TableInfo>, Failure> {
        if let Some(t) = conn.tables.get(name) {
            return Ok(t.clone());
        }
        let rule = self.opts.tables.get(name).expect("a configured table");
        match catalog::load(&mut conn.conn, name, rule).await {
            Ok(Ok(info)) => {
                let info = Arc::new(info);
                conn.tables.insert(name.to_owned(), info.clone());
                Ok(info)
            }
            Ok(Err(problem)) => Err(Failure {
                error: SinkError::permanent(&self.name, format!("{problem} (database {})", self.opts.url)),
                keep: true,
            }),
            Err(e) => Err(self.fail(&e, "reading the table's columns")),
        }
    }

    /// Classifies a MySQL error met while `doing`: a deadlock, a lock wait
    /// timeout, a server going away or read-only, a lost connection are
    /// unavailable; the rest permanent. A refused value is named by the
    /// error code (the server's message may quote the value).
    fn fail(&self, e: &mysql_async::Error, doing: &str) -> Failure {
        classify(&self.name, &self.opts, e, doing)
    }
}

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

fn classify(sink: &str, opts: &SqlOptions, e: &mysql_async::Error, doing: &str) -> Failure {
    let url = &opts.url;
    let mysql_async::Error::Server(s) = e else {
        // The connection broke, timed out, or TLS failed.
        let ca_file = opts.tls.as_ref().is_some_and(|t| t.ca_file.is_some());
        let reason = match super::tls::certificate_refusal(e, &url.host, ca_file) {
            Some(why) => format!("{doing} on {url} over TLS: {why}"),
            None => format!("{doing} on {url}: {e}"),
        };
        return Failure {
            error: if matches!(e, mysql_async::Error::Url(_)) {
                SinkError::permanent(sink, reason)
            } else {
                SinkError::unavailable(sink, reason)
            },
            keep: false,
        };
    };
    let code = s.code;
    let (retry, reason) = match code {
        1213 => (true, format!("{doing}: deadlock (error 1213); the batch is retried")),
        1205 => (
            true,
            format!("{doing}: lock wait timeout (error 1205); the batch is retried"),
        ),
        1053 | 1077 | 1078 | 1079 | 1080 | 1152 | 1153 | 1184 | 1927 | 2006 | 2013 | 1040 | 1203 | 1290 | 1836
        | 1792 | 4031 => (true, format!("{doing} on {url}: {} (error {code})", s.message)),
        1045 | 1698 => (
            false,
            format!(
                "{doing} on {url}: the server refused the user or password (error {code}); fix the url's user and password (and set tls = true if the user must connect over TLS)"
            ),
        ),
        1044 | 1142 | 1143 | 1227 => (
            false,
            format!(
                "{doing} on {url}: {} (error {code}); grant the user SELECT, INSERT, UPDATE and DELETE on the sink's tables",
                s.message
            ),
        ),
        1406 | 1264 | 1366 | 1292 | 1048 | 1364 | 1265 | 1062 | 1451 | 1452 | 3140 | 4025 | 1690 | 1367 | 3819 => (
            false,
            format!(
                "{doing}: the server refused a value (error {code}, SQLSTATE {}){}; check the values' types and lengths against the table",
                s.state,
                quoted_column(&s.message)
                    .map(|c| format!(", column `{c}`"))
                    .unwrap_or_default()
            ),
        ),
        _ => (false, format!("{doing} on {url}: {} (error {code})", s.message)),
    };
    Failure {
        error: if retry {
            SinkError::unavailable(sink, reason)
        } else {
            SinkError::permanent(sink, reason)
        },
        keep: !retry || matches!(code, 1213 | 1205),
    }
}

/// The column a value error names (`… for column 'c' at row 1`, or
/// `… for column `db`.`t`.`c` …`).
fn quoted_column(message: &str) -> Option<String> {
    let rest = &message[message.find("column ")? + 7..];
    let name = match rest.chars().next()? {
        '\'' => rest[1..].split('\'').next()?,
        '`' => rest.split(' ').next()?.rsplit('.').next()?.trim_matches('`'),
        _ => return None,
    };
    Some(name.to_owned())
}

fn names(cols: &[&str]) -> String {
    cols.iter()
        .map(|c| Quoted(c, '`').to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `(?, ?, …)` for `n` columns, `rows` times, comma-separated.
fn placeholders(n: usize, rows: usize, out: &mut String) {
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for i in 0..n {
            if i > 0 {
                out.push_str(", ");
            }
            out.push('?');
        }
        out.push(')');
    }
}

/// `INSERT INTO t (…) VALUES (…), … ON DUPLICATE KEY UPDATE c = VALUES(c), …`.
fn upsert_sql(info: &TableInfo, cols: &[&str], key: &[&str], rows: usize) -> String {
    let mut s = format!("INSERT INTO {} ({}) VALUES ", info.sql_name, names(cols));
    placeholders(cols.len(), rows, &mut s);
    let set: Vec<String> = cols
        .iter()
        .filter(|c| !key.contains(c))
        .map(|c| format!("{0} = VALUES({0})", Quoted(c, '`')))
        .collect();
    // With nothing but the key to set, a no-op update keeps the row.
    let set = if set.is_empty() {
        format!("{0} = {0}", Quoted(key[0], '`'))
    } else {
        set.join(", ")
    };
    let _ = write!(s, " ON DUPLICATE KEY UPDATE {set}");
    s
}

/// `DELETE FROM t WHERE (k…) IN ((?…), …)`.
fn delete_sql(info: &TableInfo, key: &[&str], rows: usize) -> String {
    let mut s = format!("DELETE FROM {} WHERE ({}) IN (", info.sql_name, names(key));
    placeholders(key.len(), rows, &mut s);
    s.push(')');
    s
}

/// The checkpoint table, as the sink creates it.
pub fn checkpoint_ddl(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (sink VARCHAR(191) NOT NULL PRIMARY KEY, change_id VARCHAR(255) NOT NULL, message_index BIGINT NOT NULL, updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE = InnoDB",
        catalog::sql_name(table)
    )
}

fn checkpoint_sql(table: &str) -> String {
    format!(
        "INSERT INTO {} (sink, change_id, message_index) VALUES (?, ?, ?) \
         ON DUPLICATE KEY UPDATE change_id = VALUES(change_id), message_index = VALUES(message_index), updated_at = CURRENT_TIMESTAMP(6)",
        catalog::sql_name(table)
    )
}

/// `rowhook check`: connects, and checks each table (it exists, has the
/// key, the user may write it: `EXPLAIN` of each statement the sink runs,
/// which the server refuses without the privilege and which changes
/// nothing) and the checkpoint table.
fn probe(name: &str, opts: &SqlOptions) -> CheckLine {
    super::sql::conn::run_probe("mysql", name, &opts.url, probe_target(name, opts))
}

async fn probe_target(name: &str, opts: &SqlOptions) -> Result<String, String> {
    let my = conn_opts(opts)?;
    let mut conn = MyConn::new(my).await.map_err(|e| {
        let f = classify(name, opts, &e, "connecting");
        match f.error {
            SinkError::Unavailable { reason, .. } => {
                format!("{reason}; check that the server is up and url is right")
            }
            SinkError::Permanent { reason, .. } => reason,
        }
    })?;
    let mut problems = Vec::new();
    for (table, rule) in opts.tables.iter() {
        match catalog::load(&mut conn, table, rule).await {
            Ok(Ok(info)) => {
                let key: Vec<&str> = rule.key.iter().map(String::as_str).collect();
                let t = &info.sql_name;
                // The key and the columns an insert must set: a strict
                // session refuses even an empty insert that leaves those out.
                let mut set = key.clone();
                set.extend(info.required.iter().map(String::as_str).filter(|c| !key.contains(c)));
                let k = names(&set);
                let mut lacking = Vec::new();
                for (privilege, sql) in [
                    (
                        "INSERT",
                        format!("EXPLAIN INSERT INTO {t} ({k}) SELECT {k} FROM {t} WHERE 1 = 0"),
                    ),
                    (
                        "UPDATE",
                        format!("EXPLAIN UPDATE {t} SET {0} = {0} WHERE 1 = 0", Quoted(key[0], '`')),
                    ),
                    ("DELETE", format!("EXPLAIN DELETE FROM {t} WHERE 1 = 0")),
                ] {
                    if let Err(e) = conn.query_drop(sql).await {
                        match server_code(&e) {
                            Some(1142 | 1143 | 1044) => lacking.push(privilege),
                            _ => problems.push(format!("checking privileges on `{table}`: {e}")),
                        }
                    }
                }
                if !lacking.is_empty() {
                    problems.push(format!(
                        "table `{table}` is not writable by `{}`: it lacks {}; GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO it",
                        opts.url.user,
                        lacking.join(", ")
                    ));
                }
            }
            Ok(Err(p)) => problems.push(p),
            Err(e) => problems.push(format!("reading table `{table}`: {e}")),
        }
    }
    let mut note = String::new();
    if let Some(cp) = &opts.checkpoint_table {
        let (schema, t) = super::sql::split_table(cp);
        let exists: Option<u64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
                (schema, t),
            )
            .await
            .map_err(|e| format!("looking for checkpoint table `{cp}`: {e}"))?;
        if exists == Some(0) {
            note = format!(
                "; checkpoint table `{cp}` is created at the first write (if `{}` may not create it: {})",
                opts.url.user,
                checkpoint_ddl(cp)
            );
        }
    }
    let _ = conn.disconnect().await;
    if problems.is_empty() {
        let n = opts.tables.iter().count();
        Ok(format!(
            "{} is reachable; {n} table{} with {} keys and privileges{note}",
            opts.url,
            if n == 1 { "" } else { "s" },
            if n == 1 { "its" } else { "their" }
        ))
    } else {
        Err(format!("{}: {}", opts.url, problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_upsert_and_delete_by_key() {
        let info = TableInfo {
            name: "t".into(),
            sql_name: "`t`".into(),
            columns: HashMap::new(),
            required: vec![],
        };
        assert_eq!(
            upsert_sql(&info, &["id", "v"], &["id"], 2),
            "INSERT INTO `t` (`id`, `v`) VALUES (?, ?), (?, ?) ON DUPLICATE KEY UPDATE `v` = VALUES(`v`)"
        );
        assert_eq!(
            upsert_sql(&info, &["id"], &["id"], 1),
            "INSERT INTO `t` (`id`) VALUES (?) ON DUPLICATE KEY UPDATE `id` = `id`"
        );
        assert_eq!(
            delete_sql(&info, &["a", "b"], 2),
            "DELETE FROM `t` WHERE (`a`, `b`) IN ((?, ?), (?, ?))"
        );
        assert_eq!(
            quoted_column("Data too long for column 'status' at row 1").as_deref(),
            Some("status")
        );
        assert_eq!(
            quoted_column("Incorrect integer value: 'x' for column `db`.`t`.`n` at row 1").as_deref(),
            Some("n")
        );
    }
}
