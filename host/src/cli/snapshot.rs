//! `rowhook snapshot`: read tables as they are now and hand their rows to
//! the handlers as `snapshot` changes. With no rowhook running on the
//! config's store, it runs as `rowhook run` does, reading the snapshot
//! first (an initial snapshot of every subscribed table on a first start,
//! or the `--table` named); with one running, it asks that one through its
//! admin API to read the table while it streams.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use mysql_async::prelude::Queryable as _;

use crate::config::Plan;
use crate::snapshot::TableProgress;
use crate::status::Stats;
use crate::store::{InUse, StateStore};

/// What to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Every subscribed table, on a first start (no checkpoint).
    Initial,
    /// One table, or the rows `filter` selects.
    Table {
        /// `db.table`.
        table: String,
        /// A SQL condition.
        filter: Option<String>,
    },
}

/// How `rowhook snapshot` went.
#[derive(Debug)]
pub enum Outcome {
    /// A running rowhook took the table; its answer (JSON).
    Queued(String),
    /// This process ran (until stopped).
    Ran(Stats),
}

/// Runs `rowhook snapshot` for `ask`.
pub fn snapshot(plan: &Plan, ask: Ask) -> anyhow::Result<Outcome> {
    match StateStore::open(&plan.state.path) {
        Ok(store) => drop(store),
        Err(e) if e.is::<InUse>() => {
            let Ask::Table { table, filter } = ask else {
                anyhow::bail!(
                    "rowhook is running on {} already: an initial snapshot is for a first start. \
                     To read a table again while it runs, name it with --table DB.TABLE",
                    plan.state.path.display()
                );
            };
            return ask_running(plan, &table, filter.as_deref()).map(Outcome::Queued);
        }
        Err(e) => return Err(e),
    }
    super::run::run_with(plan, Some(ask)).map(Outcome::Ran)
}

/// Asks the rowhook running with `plan` to read `table` through its admin API.
fn ask_running(plan: &Plan, table: &str, filter: Option<&str>) -> anyhow::Result<String> {
    let http = plan.http.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "rowhook is running on {} and has no [http] admin API to ask for the snapshot: \
             add [http] with a token to its config (and restart it), or stop it and run `rowhook snapshot` again",
            plan.state.path.display()
        )
    })?;
    let token = http.token.as_deref().ok_or_else(|| {
        anyhow::anyhow!(
            "the running rowhook's admin API is off: set [http] token in its config to ask it for a snapshot"
        )
    })?;
    // The running server's address, the port it chose included.
    let mut addr = std::fs::read_to_string(plan.state.path.join(super::HTTP_ADDR_FILE))
        .ok()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or(http.listen);
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let mut query = format!("table={}", percent_encode(table));
    if let Some(f) = filter {
        query.push_str(&format!("&where={}", percent_encode(f)));
    }
    let unreachable = |e: std::io::Error| anyhow::anyhow!("asking the running rowhook at http://{addr}: {e}");
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(unreachable)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(unreachable)?;
    write!(
        conn,
        "POST /admin/snapshot?{query} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(unreachable)?;
    let mut response = String::new();
    conn.read_to_string(&mut response).map_err(unreachable)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split(' ').nth(1).unwrap_or("");
    // A chunked body: the admin API's answers are one chunk.
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body.split("\r\n").nth(1).unwrap_or("")
    } else {
        body
    };
    if status != "200" {
        let message = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| body.trim().to_owned());
        anyhow::bail!("the running rowhook refused the snapshot of `{table}` (HTTP {status}): {message}");
    }
    Ok(body.trim().to_owned())
}

/// The tables an initial snapshot reads: every base table a handler that
/// takes `snapshot` changes subscribes to (`db.*` as the server lists it
/// now), in name order.
pub async fn subscribed(conn: &mut mysql_async::Conn, plan: &Plan) -> anyhow::Result<Vec<TableProgress>> {
    let mut names = std::collections::BTreeSet::new();
    for h in plan.handlers.iter().filter(|h| h.ops.snapshot) {
        for t in &h.tables {
            match &t.table {
                Some(table) => {
                    names.insert((t.db.clone(), table.clone()));
                }
                None => {
                    let tables: Vec<String> = conn
                        .exec(
                            "SELECT TABLE_NAME FROM information_schema.TABLES \
                             WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
                            (&t.db,),
                        )
                        .await?;
                    names.extend(tables.into_iter().map(|table| (t.db.clone(), table)));
                }
            }
        }
    }
    Ok(names
        .into_iter()
        .map(|(db, table)| TableProgress::new(&db, &table, None))
        .collect())
}

/// `s` with every byte but the unreserved ones %-escaped.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_travel_escaped() {
        assert_eq!(percent_encode("shop.orders"), "shop.orders");
        assert_eq!(
            percent_encode("id > 5 AND s = 'a&b'"),
            "id%20%3E%205%20AND%20s%20%3D%20%27a%26b%27"
        );
        assert_eq!(
            crate::sink::tls::percent_decode(&percent_encode("é = 1")).unwrap(),
            "é = 1"
        );
    }
}
