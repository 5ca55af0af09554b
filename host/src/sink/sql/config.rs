//! The keys of the SQL sinks (`kind = "postgres"`, `kind = "mysql"`),
//! parsed as written, then resolved into [`SqlOptions`]. Both kinds take the
//! same keys.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{TableRule, Tables};
use crate::problem::SinkContext;
use crate::sink::tls::{Secret, TlsFiles, percent_decode};

/// Default `timeout_ms`: how long connecting, or one batch's transaction, may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// `kind = "postgres"` or `kind = "mysql"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSqlSink {
    /// The target database: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`
    /// or `mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`, user and password
    /// percent-encoded. Take the password from the environment:
    /// `url = "postgres://rowhook:${PG_PASSWORD}@10.0.0.7/reports"`.
    pub url: String,
    /// The tables the sink may write, each with the columns that name a row
    /// (its primary key, or a unique key on exactly these columns):
    /// `tables = { orders_copy = { key = ["id"] } }`. A handler's operation on
    /// any other table is refused at `emit` as `denied`.
    pub tables: BTreeMap<String, RawTable>,
    /// Keep rowhook's position in this table of the target, in the same
    /// transaction as the rows, and skip what the target already has when
    /// rowhook replays after a crash (exactly-once into the database). The
    /// sink creates it when it is missing. Not kept when absent.
    pub checkpoint_table: Option<String>,
    /// Connect over TLS, checking the server's certificate against the
    /// system's roots or `tls_ca_file` (default false; implied by the other
    /// `tls_` keys).
    pub tls: Option<bool>,
    /// PEM CA certificates to check the server's certificate with.
    pub tls_ca_file: Option<String>,
    /// PEM client certificate for mutual TLS, with `tls_key_file`.
    pub tls_cert_file: Option<String>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<String>,
    /// How long connecting, or one batch's transaction, may take before the
    /// write counts as unavailable and is retried: 100 to 600000 ms (default 30000).
    pub timeout_ms: Option<u64>,
}

/// One entry of `tables`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTable {
    /// The columns that name a row.
    pub key: Vec<String>,
}

/// Where a SQL sink connects: the parsed `url`.
#[derive(Clone, PartialEq, Eq)]
pub struct SqlUrl {
    /// Host name or address (an IPv6 address without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password, if any.
    pub password: Option<Secret>,
    /// Database.
    pub database: String,
}

impl SqlUrl {
    /// Parses `SCHEME://USER[:PASSWORD]@HOST[:PORT]/DATABASE` for one of
    /// `schemes`; `default_port` when none is written. The error says
    /// what is wrong, never echoing the password.
    pub fn parse(text: &str, schemes: &[&str], default_port: u16) -> Result<SqlUrl, String> {
        let rest = match text.split_once("://") {
            Some((scheme, rest)) if schemes.contains(&scheme) => rest,
            Some((scheme, _)) => return Err(format!("`{scheme}://` is not a {}:// URL", schemes[0])),
            None => return Err(format!("is not a {}:// URL", schemes[0])),
        };
        if rest.contains(['?', '#']) {
            return Err("has query options (set TLS with the `tls` keys)".into());
        }
        let (userinfo, rest) = match rest.rfind('@') {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => return Err("has no user".into()),
        };
        let (authority, database) = rest.split_once('/').ok_or("names no database")?;
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (percent_decode(u)?, Some(Secret(percent_decode(p)?))),
            None => (percent_decode(userinfo)?, None),
        };
        if user.is_empty() {
            return Err("has no user".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("has an unclosed `[`")?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("has no host".into());
        }
        let port = match port {
            None => default_port,
            Some(p) => p.parse::<u16>().map_err(|_| format!("`{p}` is not a port"))?,
        };
        let database = percent_decode(database)?;
        if database.is_empty() {
            return Err("names no database".into());
        }
        Ok(SqlUrl {
            host: host.to_owned(),
            port,
            user,
            password,
            database,
        })
    }

    /// `HOST:PORT`, with brackets around an IPv6 address.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for SqlUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}/{}", self.user, self.address(), self.database)
    }
}

impl fmt::Debug for SqlUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SqlUrl({self})")
    }
}

/// The validated settings of a SQL sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlOptions {
    /// Where to connect.
    pub url: SqlUrl,
    /// The tables it may write.
    pub tables: Arc<Tables>,
    /// Where it keeps its position in the target, if it does.
    pub checkpoint_table: Option<String>,
    /// TLS, if the connection uses it.
    pub tls: Option<TlsFiles>,
    /// How long connecting, or one batch, may take.
    pub timeout: Duration,
}

/// Validates the keys for a kind whose URL schemes are `schemes`; every
/// problem is reported.
pub fn resolve(raw: RawSqlSink, schemes: &[&str], default_port: u16, cx: &mut SinkContext<'_>) -> Option<SqlOptions> {
    let example = format!("{}://USER:${{PASSWORD}}@HOST:{default_port}/DATABASE", schemes[0]);
    let url = match SqlUrl::parse(&raw.url, schemes, default_port) {
        Ok(u) => Some(u),
        Err(what) => {
            cx.problem("url", what, format!("write it as {example}"));
            None
        }
    };
    let mut ok = true;
    if raw.tables.is_empty() {
        cx.problem(
            "tables",
            "names no table",
            "list the tables the sink may write with their key columns: tables = { orders_copy = { key = [\"id\"] } }",
        );
        ok = false;
    }
    let mut tables = Vec::new();
    for (name, t) in raw.tables {
        let key = format!("tables.{name}");
        if !valid_table_name(&name) {
            cx.problem(
                &key,
                "is not a table name",
                "write TABLE or SCHEMA.TABLE (in MySQL, DATABASE.TABLE), each part non-empty",
            );
            ok = false;
        }
        if t.key.is_empty() {
            cx.problem(
                &format!("{key}.key"),
                "names no column",
                "list the columns that name a row: the primary key, or a unique key's columns",
            );
            ok = false;
        } else if t.key.iter().any(String::is_empty) {
            cx.problem(
                &format!("{key}.key"),
                "holds an empty column name",
                "name each key column",
            );
            ok = false;
        } else if let Some(c) = t
            .key
            .iter()
            .enumerate()
            .find(|(i, c)| t.key[..*i].contains(c))
            .map(|(_, c)| c)
        {
            cx.problem(
                &format!("{key}.key"),
                format!("names `{c}` twice"),
                "name each key column once",
            );
            ok = false;
        }
        tables.push((name, TableRule { key: t.key }));
    }
    if let Some(t) = &raw.checkpoint_table
        && !valid_table_name(t)
    {
        cx.problem(
            "checkpoint_table",
            "is not a table name",
            "write TABLE or SCHEMA.TABLE, e.g. rowhook_checkpoint",
        );
        ok = false;
    }
    if let Some(t) = &raw.checkpoint_table
        && tables.iter().any(|(n, _)| n == t)
    {
        cx.problem(
            "checkpoint_table",
            "is also one of `tables`",
            "give the checkpoint a table of its own",
        );
        ok = false;
    }
    let files = TlsFiles::resolve(
        raw.tls_ca_file.as_deref(),
        raw.tls_cert_file.as_deref(),
        raw.tls_key_file.as_deref(),
        cx,
    );
    let tls = match (raw.tls, files) {
        (_, None) => {
            ok = false;
            None
        }
        (Some(false), Some(f)) if f.first_key().is_some() => {
            cx.problem(
                "tls",
                format!("is false, but {} is set", f.first_key().unwrap_or("a TLS file")),
                "set tls = true, or remove the tls_ files",
            );
            ok = false;
            None
        }
        (Some(true), Some(f)) => Some(f),
        (_, Some(f)) if f.first_key().is_some() => Some(f),
        (_, Some(_)) => None,
    };
    let timeout = cx.timeout_ms("timeout_ms", raw.timeout_ms, DEFAULT_TIMEOUT);
    if !ok {
        return None;
    }
    Some(SqlOptions {
        url: url?,
        tables: Arc::new(Tables::new(tables)),
        checkpoint_table: raw.checkpoint_table,
        tls,
        timeout: timeout?,
    })
}

/// `TABLE` or `SCHEMA.TABLE`, each part non-empty.
fn valid_table_name(name: &str) -> bool {
    let mut parts = name.split('.');
    let ok = parts.by_ref().take(2).all(|p| !p.is_empty());
    ok && parts.next().is_none() && !name.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_without_showing_the_password() {
        let u = SqlUrl::parse(
            "postgres://ro%40w:p%2Fw@db.example:6543/reports",
            &["postgres", "postgresql"],
            5432,
        )
        .unwrap();
        assert_eq!(u.user, "ro@w");
        assert_eq!(u.password.as_ref().unwrap().expose(), "p/w");
        assert_eq!(u.address(), "db.example:6543");
        assert_eq!(u.database, "reports");
        assert!(!format!("{u:?} {u}").contains("p/w"));
        let u = SqlUrl::parse("mysql://root@[::1]/d", &["mysql"], 3306).unwrap();
        assert_eq!(u.address(), "[::1]:3306");
        assert!(u.password.is_none());
        for (bad, what) in [
            ("redis://u@h/d", "is not a mysql://"),
            ("mysql://h/d", "no user"),
            ("mysql://u@h", "no database"),
            ("mysql://u@h/", "no database"),
            ("mysql://u@h:x/d", "not a port"),
            ("mysql://u:secret@h/d?ssl=1", "query options"),
        ] {
            let e = SqlUrl::parse(bad, &["mysql"], 3306).unwrap_err();
            assert!(e.contains(what), "{bad}: {e}");
            assert!(!e.contains("secret"));
        }
        assert!(valid_table_name("a.b") && valid_table_name("a"));
        assert!(
            !valid_table_name("a.") && !valid_table_name(".a") && !valid_table_name("a.b.c") && !valid_table_name("")
        );
    }
}
