//! `kind = "postgres"`: applies the row operations handlers emit (see
//! [`crate::sink::sql`]) to tables of a PostgreSQL database.
//!
//! Each batch is one database transaction: its operations are collapsed to
//! the last state of each row, the deletes run as one `DELETE … WHERE key
//! IN (…)` per table and the upserts as one multi-row `INSERT … ON CONFLICT
//! (key) DO UPDATE` per table and set of columns, with every value sent as
//! text in an array parameter (`unnest`) and cast by PostgreSQL to its
//! column's type. The commit is synchronous (the server's
//! `synchronous_commit`): `Ok` means the rows are durable.
//!
//! Values are checked against the column types read from the catalog
//! before anything is sent ([`catalog`]): a value that does not fit is a
//! permanent error naming the table, the column and the value's JSON type.
//!
//! With `checkpoint_table`, the position of the batch's last message is
//! written in the same transaction; after a crash rowhook replays from its
//! own checkpoint, and the sink skips the messages the target already has
//! (see [`crate::sink::sql::position`]).

mod catalog;
mod conn;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};

use self::catalog::TableInfo;
use super::kind::SinkKind;
use super::sql::config::{RawSqlSink, SqlOptions};
use super::sql::conn::{Failure, PROBE_TIMEOUT, settle_probe, settle_write};
use super::sql::{Final, Position, Quoted, Tables, already_applied, collapse, deletes, upsert_groups};
use super::{Message, Sink, SinkError};
use crate::probe::CheckLine;
use crate::problem::SinkContext;

/// The URL schemes of the kind.
const SCHEMES: &[&str] = &["postgres", "postgresql"];
/// PostgreSQL's port.
const DEFAULT_PORT: u16 = 5432;
/// `kind = "postgres"` in the registry.
#[derive(Debug)]
pub struct PostgresKind;

impl SinkKind for PostgresKind {
    const NAME: &'static str = "postgres";
    type Raw = Box<RawSqlSink>;
    type Options = SqlOptions;
    type Sink = PostgresSink;

    fn resolve(raw: Box<RawSqlSink>, cx: &mut SinkContext<'_>) -> Option<SqlOptions> {
        super::sql::config::resolve(*raw, SCHEMES, DEFAULT_PORT, cx)
    }

    async fn open(name: &str, options: &SqlOptions) -> Result<PostgresSink, SinkError> {
        let tls = match &options.tls {
            Some(files) => Some(Arc::new(
                super::tls::client_config(files, "server").map_err(|e| SinkError::permanent(name, e))?,
            )),
            None => None,
        };
        Ok(PostgresSink {
            name: name.to_owned(),
            opts: options.clone(),
            tls,
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

/// Writes row operations into PostgreSQL, one transaction per batch.
pub struct PostgresSink {
    name: String,
    opts: SqlOptions,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The connection, while there is one. Taken out for the length of a
    /// write: a write whose future is dropped midway drops it too, and the
    /// server rolls back what it had begun.
    conn: Option<Conn>,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("name", &self.name)
            .field("opts", &self.opts)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

/// An open connection and what the sink learnt through it.
struct Conn {
    client: Client,
    /// The tables written so far, from the catalog.
    tables: HashMap<String, Arc<TableInfo>>,
    /// Prepared statements, by SQL text.
    statements: HashMap<String, Statement>,
    /// The position kept in the checkpoint table when the connection was
    /// opened: messages at or before it are in the target already. `None`
    /// once a message past it was applied, or without a checkpoint table.
    applied: Option<Position>,
}

impl Sink for PostgresSink {
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
        let Some(conn) = self.conn.take() else {
            self.conn = Some(self.connect(PROBE_TIMEOUT).await?);
            return Ok(());
        };
        let outcome = tokio::time::timeout(PROBE_TIMEOUT, async {
            conn.client
                .simple_query("")
                .await
                .map(|_| ())
                .map_err(|e| self.fail(&e, "checking the connection").error)
        })
        .await;
        settle_probe(&mut self.conn, conn, outcome, &self.name, &self.opts.url)
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        // Every acknowledged batch is committed already.
        self.conn = None;
        Ok(())
    }
}

impl PostgresSink {
    /// Connects, and reads the checkpoint table when there is one
    /// (creating it if it is missing).
    async fn connect(&self, timeout: Duration) -> Result<Conn, SinkError> {
        let client = match tokio::time::timeout(timeout, conn::connect(&self.opts, self.tls.clone())).await {
            Ok(Ok(c)) => c,
            Ok(Err(conn::ConnectError::Io(e))) => {
                return Err(SinkError::unavailable(
                    &self.name,
                    format!("cannot connect to {}: {e}", self.opts.url),
                ));
            }
            Ok(Err(conn::ConnectError::Pg(e))) => return Err(self.fail(&e, "connecting").error),
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
        let mut conn = Conn {
            client,
            tables: HashMap::new(),
            statements: HashMap::new(),
            applied: None,
        };
        if let Some(table) = &self.opts.checkpoint_table {
            let read = tokio::time::timeout(timeout, self.read_checkpoint(&conn.client, table)).await;
            conn.applied = match read {
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
        Ok(conn)
    }

    /// The position kept in `table` for this sink; creates the table if
    /// it does not exist.
    async fn read_checkpoint(&self, client: &Client, table: &str) -> Result<Option<Position>, Failure> {
        let sql_name = catalog::sql_name(table);
        let exists = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&sql_name])
            .await
            .map_err(|e| self.fail(&e, "looking for the checkpoint table"))?;
        if !exists.get::<_, bool>(0) {
            client.batch_execute(&checkpoint_ddl(table)).await.map_err(|e| {
                let mut f = self.fail(&e, "creating the checkpoint table");
                if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
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
        let row = client
            .query_opt(
                &format!("SELECT change_id, message_index FROM {sql_name} WHERE sink = $1"),
                &[&self.name],
            )
            .await
            .map_err(|e| self.fail(&e, "reading the checkpoint table"))?;
        Ok(row.and_then(|r| {
            let id: String = r.get(0);
            let index: i64 = r.get(1);
            Position::of(&id, u32::try_from(index).ok()?)
        }))
    }

    /// Applies `batch` in one transaction.
    async fn apply(&self, conn: &mut Conn, batch: &[Message]) -> Result<(), Failure> {
        let permanent = |reason: String| Failure {
            error: SinkError::permanent(&self.name, reason),
            keep: true,
        };
        // Skip what the target has already (a replay after a crash).
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
        // Every statement and its parameters are made before the transaction begins.
        let mut steps = Vec::new();
        for (name, rows) in collapsed.tables() {
            let info = self.table(conn, name).await?;
            let rule = self.opts.tables.get(name).expect("checked above");
            let deleted: Vec<&Final> = deletes(rows.rows()).collect();
            if !deleted.is_empty() {
                let cols: Vec<&str> = rule.key.iter().map(String::as_str).collect();
                let mut params = vec![Vec::with_capacity(deleted.len()); cols.len()];
                for f in &deleted {
                    for (i, v) in f.key_values(rule).enumerate() {
                        let c = info.column(cols[i]).map_err(permanent)?;
                        params[i].push(info.text(cols[i], c, v).map_err(permanent)?);
                    }
                }
                steps.push((delete_sql(&info, &cols), params));
            }
            for super::sql::UpsertGroup {
                columns: cols,
                rows: members,
            } in upsert_groups(rows.rows())
            {
                info.check_required(&cols).map_err(permanent)?;
                let mut params = vec![Vec::with_capacity(members.len()); cols.len()];
                for row in members {
                    for (i, col) in cols.iter().enumerate() {
                        let c = info.column(col).map_err(permanent)?;
                        params[i].push(info.text(col, c, &row[*col]).map_err(permanent)?);
                    }
                }
                steps.push((upsert_sql(&info, &cols, &rule.key), params));
            }
        }
        let last = batch.last().expect("not empty");
        let checkpoint = self
            .opts
            .checkpoint_table
            .as_ref()
            .map(|t| (checkpoint_sql(t), last.id.clone(), i64::from(last.index)));

        let tx = conn
            .client
            .transaction()
            .await
            .map_err(|e| self.fail(&e, "beginning the transaction"))?;
        for (sql, params) in &steps {
            let stmt = match conn.statements.get(sql) {
                Some(s) => s.clone(),
                None => {
                    let s = tx
                        .prepare(sql)
                        .await
                        .map_err(|e| self.fail(&e, "preparing a statement"))?;
                    conn.statements.insert(sql.clone(), s.clone());
                    s
                }
            };
            let args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                .iter()
                .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            tx.execute(&stmt, &args)
                .await
                .map_err(|e| self.fail(&e, "writing the rows"))?;
        }
        if let Some((sql, id, index)) = &checkpoint {
            tx.execute(sql.as_str(), &[&self.name, id, index])
                .await
                .map_err(|e| self.fail(&e, "writing the checkpoint table"))?;
        }
        tx.commit().await.map_err(|e| self.fail(&e, "committing"))?;
        conn.applied = None;
        Ok(())
    }

    /// The catalog's description of `name`, read once per connection.
    async fn table(&self, conn: &mut Conn, name: &str) -> Result<Arc<TableInfo>, Failure> {
        if let Some(t) = conn.tables.get(name) {
            return Ok(t.clone());
        }
        let rule = self.opts.tables.get(name).expect("a configured table");
        match catalog::load(&conn.client, name, rule).await {
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

    /// Classifies a PostgreSQL error met while `doing`: what the server
    /// may get over (a deadlock, a serialization failure, a restart, a
    /// lost connection) is unavailable, the rest permanent. A value the
    /// server refused is named by its table, column or constraint, never
    /// quoted (the server's message may hold it).
    fn fail(&self, e: &tokio_postgres::Error, doing: &str) -> Failure {
        let url = &self.opts.url;
        let Some(code) = e.code() else {
            // No SQLSTATE: the connection broke, TLS failed, or a protocol error.
            let ca_file = self.opts.tls.as_ref().is_some_and(|t| t.ca_file.is_some());
            let reason = match super::tls::certificate_refusal(e, &url.host, ca_file) {
                Some(why) => format!("{doing} on {url} over TLS: {why}"),
                None => format!("{doing} on {url}: {e}"),
            };
            return Failure {
                error: SinkError::unavailable(&self.name, reason),
                keep: false,
            };
        };
        let db = e.as_db_error();
        let class = &code.code()[..2];
        let retry = matches!(class, "08" | "53" | "57" | "40") || *code == SqlState::LOCK_NOT_AVAILABLE;
        let reason = match class {
            "22" | "23" | "21" => {
                let mut r = format!("{doing}: PostgreSQL refused a value (SQLSTATE {})", code.code());
                if let Some(db) = db {
                    for (what, v) in [
                        ("table", db.table()),
                        ("column", db.column()),
                        ("type", db.datatype()),
                        ("constraint", db.constraint()),
                    ] {
                        if let Some(v) = v {
                            let _ = write!(r, ", {what} `{v}`");
                        }
                    }
                }
                r.push_str(match class {
                    "23" => "; the row breaks a constraint of the table",
                    "21" => "; two operations of the batch name the same row in different spellings (write key values one way)",
                    _ => "; check the value's text form for its column type",
                });
                r
            }
            "40" => format!(
                "{doing}: {} (SQLSTATE {}); the batch is retried",
                if *code == SqlState::T_R_DEADLOCK_DETECTED {
                    "deadlock"
                } else {
                    "serialization failure"
                },
                code.code()
            ),
            "42" if *code == SqlState::INSUFFICIENT_PRIVILEGE => format!(
                "{doing} on {url}: {}; grant the user SELECT, INSERT, UPDATE and DELETE on the sink's tables",
                db.map_or("permission denied", |d| d.message())
            ),
            "28" if db.is_some_and(|d| d.message().contains("no encryption")) => format!(
                "{doing} on {url}: {} (SQLSTATE {}); the server takes this connection over TLS only: set tls = true (and tls_ca_file)",
                db.map_or("", |d| d.message()),
                code.code()
            ),
            "28" => format!(
                "{doing} on {url}: the server refused the user or password (SQLSTATE {}); fix the url's user and password",
                code.code()
            ),
            _ => format!(
                "{doing} on {url}: {} (SQLSTATE {})",
                db.map_or_else(|| e.to_string(), |d| d.message().to_owned()),
                code.code()
            ),
        };
        Failure {
            error: if retry {
                SinkError::unavailable(&self.name, reason)
            } else {
                SinkError::permanent(&self.name, reason)
            },
            keep: !matches!(class, "08" | "57"),
        }
    }
}

/// `u(p0, p1, …)` over the text arrays `$1, $2, …`.
fn unnest(n: usize, out: &mut String) {
    out.push_str("unnest(");
    for i in 0..n {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "${}::text[]", i + 1);
    }
    out.push_str(") AS u(");
    for i in 0..n {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "p{i}");
    }
    out.push(')');
}

fn casts(info: &TableInfo, cols: &[&str], out: &mut String) {
    for (i, c) in cols.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        TableInfo::cast(&info.columns[*c], i, out);
    }
}

fn names(cols: &[&str]) -> String {
    cols.iter()
        .map(|c| Quoted(c, '"').to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `INSERT … SELECT … FROM unnest(…) ON CONFLICT (key) DO UPDATE SET …`.
fn upsert_sql(info: &TableInfo, cols: &[&str], key: &[String]) -> String {
    let mut s = format!("INSERT INTO {} ({}) SELECT ", info.sql_name, names(cols));
    casts(info, cols, &mut s);
    s.push_str(" FROM ");
    unnest(cols.len(), &mut s);
    let keys: Vec<&str> = key.iter().map(String::as_str).collect();
    let _ = write!(s, " ON CONFLICT ({}) DO ", names(&keys));
    let set: Vec<String> = cols
        .iter()
        .filter(|c| !key.iter().any(|k| k == *c))
        .map(|c| format!("{0} = EXCLUDED.{0}", Quoted(c, '"')))
        .collect();
    if set.is_empty() {
        s.push_str("NOTHING");
    } else {
        let _ = write!(s, "UPDATE SET {}", set.join(", "));
    }
    s
}

/// `DELETE … WHERE (key) IN (SELECT … FROM unnest(…))`.
fn delete_sql(info: &TableInfo, key: &[&str]) -> String {
    let mut s = format!("DELETE FROM {} WHERE ({}) IN (SELECT ", info.sql_name, names(key));
    casts(info, key, &mut s);
    s.push_str(" FROM ");
    unnest(key.len(), &mut s);
    s.push(')');
    s
}

/// The checkpoint table, as the sink creates it.
pub fn checkpoint_ddl(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (sink text PRIMARY KEY, change_id text NOT NULL, message_index bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())",
        catalog::sql_name(table)
    )
}

fn checkpoint_sql(table: &str) -> String {
    format!(
        "INSERT INTO {} (sink, change_id, message_index, updated_at) VALUES ($1, $2, $3, now()) \
         ON CONFLICT (sink) DO UPDATE SET change_id = EXCLUDED.change_id, message_index = EXCLUDED.message_index, updated_at = now()",
        catalog::sql_name(table)
    )
}

/// `rowhook check`: connects, and checks each table (it exists, has the
/// key, the user may write it) and the checkpoint table; changes nothing.
fn probe(name: &str, opts: &SqlOptions) -> CheckLine {
    super::sql::conn::run_probe("postgres", name, &opts.url, probe_target(name, opts))
}

async fn probe_target(name: &str, opts: &SqlOptions) -> Result<String, String> {
    let tls = match &opts.tls {
        Some(files) => Some(Arc::new(super::tls::client_config(files, "server")?)),
        None => None,
    };
    let client = match conn::connect(opts, tls).await {
        Ok(c) => c,
        Err(conn::ConnectError::Io(e)) => {
            return Err(format!(
                "cannot connect to {}: {e}; check that the server is up and url is right",
                opts.url
            ));
        }
        Err(conn::ConnectError::Pg(e)) => {
            let sink = PostgresSink {
                name: name.to_owned(),
                opts: opts.clone(),
                tls: None,
                conn: None,
            };
            return Err(sink.fail(&e, "connecting").error.to_string());
        }
    };
    let mut problems = Vec::new();
    for (table, rule) in opts.tables.iter() {
        match catalog::load(&client, table, rule).await {
            Ok(Ok(_)) => {}
            Ok(Err(p)) => problems.push(p),
            Err(e) => problems.push(format!("reading table `{table}`: {e}")),
        }
    }
    if let Some(cp) = &opts.checkpoint_table {
        let sql_name = catalog::sql_name(cp);
        let row = client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL, \
                        CASE WHEN to_regclass($1) IS NULL THEN has_schema_privilege(COALESCE(NULLIF($2, ''), current_schema()), 'CREATE') \
                             ELSE has_table_privilege(to_regclass($1), 'SELECT, INSERT, UPDATE') END",
                &[&sql_name, &super::sql::split_table(cp).0.unwrap_or("")],
            )
            .await
            .map_err(|e| format!("looking for checkpoint table `{cp}`: {e}"))?;
        let (exists, allowed): (bool, bool) = (row.get(0), row.get(1));
        if !allowed {
            problems.push(if exists {
                format!(
                    "checkpoint table `{cp}` is not writable by `{}`; GRANT SELECT, INSERT, UPDATE ON {sql_name} TO it",
                    opts.url.user
                )
            } else {
                format!(
                    "checkpoint table `{cp}` does not exist and `{}` may not create it; create it: {}",
                    opts.url.user,
                    checkpoint_ddl(cp)
                )
            });
        }
    }
    if problems.is_empty() {
        let n = opts.tables.iter().count();
        Ok(format!(
            "{} is reachable; {n} table{} with {} keys and privileges",
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
    use std::path::Path;

    use crate::config::{ConfigError, Plan};
    use crate::sink::SinkSpec;

    use super::*;

    fn parse(text: &str) -> Result<Plan, ConfigError> {
        Plan::parse(text, Path::new("/etc/rowhook/rowhook.toml"), |v| {
            (v == "PG_PASSWORD").then(|| "s3cret".to_owned())
        })
    }

    #[test]
    fn keys_resolve() {
        let plan = parse(
            r#"
[sinks.db]
kind = "postgres"
url = "postgres://rowhook:${PG_PASSWORD}@db.example/reports"
tables = { orders_copy = { key = ["id"] }, "rep.lines" = { key = ["order_id", "n"] } }
checkpoint_table = "rowhook_checkpoint"
tls = true
"#,
        )
        .unwrap();
        let Some(SinkSpec::Postgres(o)) = plan.sinks.get("db") else {
            panic!("{plan:?}")
        };
        assert_eq!(o.url.address(), "db.example:5432");
        assert_eq!(o.url.password.as_ref().unwrap().expose(), "s3cret");
        assert!(!format!("{o:?}").contains("s3cret"));
        assert_eq!(o.tables.get("rep.lines").unwrap().key, ["order_id", "n"]);
        assert_eq!(o.checkpoint_table.as_deref(), Some("rowhook_checkpoint"));
        assert!(o.tls.is_some());
        assert_eq!(o.timeout, Duration::from_secs(30));
        let spec = &plan.sinks["db"];
        assert!(matches!(spec.payload_form(), crate::sink::PayloadForm::RowOps(_)));
        assert!(!spec.one_line_per_message());
    }

    #[test]
    fn problems_name_the_key() {
        let got = crate::config::problem_lines(parse(
            r#"
[sinks.a]
kind = "postgres"
url = "mysql://u@h/d"
tables = {}
[sinks.b]
kind = "postgres"
url = "postgres://u@h/d"
tables = { "a.b.c" = { key = [] }, t = { key = ["id", "id"] } }
checkpoint_table = "t"
tls = false
tls_ca_file = "ca.pem"
timeout_ms = 5
"#,
        ));
        assert_eq!(
            got,
            [
                "sinks.a.url: `mysql://` is not a postgres:// URL",
                "sinks.a.tables: names no table",
                "sinks.b.tables.a.b.c: is not a table name",
                "sinks.b.tables.a.b.c.key: names no column",
                "sinks.b.tables.t.key: names `id` twice",
                "sinks.b.checkpoint_table: is also one of `tables`",
                "sinks.b.tls: is false, but tls_ca_file is set",
                "sinks.b.timeout_ms: 5 is out of range",
            ]
        );
        let err = parse("[sinks.a]\nkind = \"postgres\"\nurl = \"postgres://u@h/d\"\ntables = {}\ntabels = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tabels"), "{err}");
    }

    #[test]
    fn statements_upsert_and_delete_by_key() {
        let info = TableInfo {
            name: "t".into(),
            sql_name: "\"t\"".into(),
            columns: [("id", "pg_catalog.int8"), ("v", "pg_catalog.text")]
                .into_iter()
                .map(|(n, t)| {
                    (
                        n.to_owned(),
                        catalog::Column {
                            type_sql: t.into(),
                            type_shown: t.into(),
                            kind: catalog::Kind::Textual,
                            not_null: false,
                            has_default: false,
                            generated: false,
                        },
                    )
                })
                .collect(),
            required: vec![],
        };
        assert_eq!(
            upsert_sql(&info, &["id", "v"], &["id".to_owned()]),
            "INSERT INTO \"t\" (\"id\", \"v\") SELECT CAST(u.p0 AS pg_catalog.int8), CAST(u.p1 AS pg_catalog.text) FROM unnest($1::text[], $2::text[]) AS u(p0, p1) ON CONFLICT (\"id\") DO UPDATE SET \"v\" = EXCLUDED.\"v\""
        );
        assert_eq!(
            upsert_sql(&info, &["id"], &["id".to_owned()]),
            "INSERT INTO \"t\" (\"id\") SELECT CAST(u.p0 AS pg_catalog.int8) FROM unnest($1::text[]) AS u(p0) ON CONFLICT (\"id\") DO NOTHING"
        );
        assert_eq!(
            delete_sql(&info, &["id"]),
            "DELETE FROM \"t\" WHERE (\"id\") IN (SELECT CAST(u.p0 AS pg_catalog.int8) FROM unnest($1::text[]) AS u(p0))"
        );
    }
}
