//! The postgres sink against the PostgreSQL running on this machine (a
//! database of its own per test, dropped after it) and, for restarts, a
//! private PostgreSQL the test starts and stops: rows follow the
//! operations, one transaction per batch; values that do not fit are
//! refused by name; missing tables, keys and privileges are named by writes
//! and by `rowhook check`; the checkpoint table makes replays exactly-once;
//! the shop binlog through orders-copy-sql leaves the golden table.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rowhook::sink::postgres::{PostgresKind, PostgresSink};
use rowhook::sink::{Message, Sink, SinkError, SinkKind, SinkSpec};

use crate::sink_support::{rt, sink_spec};
use crate::support::{build_guest, golden, root, rowhook, temp_dir};

/// The machine's PostgreSQL.
const LOCAL_PORT: u16 = 5432;

/// Runs `sql` with psql as `postgres` in database `db` on `port`; the
/// output unaligned, tuples only, `|` between columns.
pub fn psql(port: u16, db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-d", db])
        .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t", "-c", sql])
        .output()
        .expect("psql is installed");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A database of its own on a PostgreSQL, dropped on drop.
pub struct PgDb {
    pub name: String,
    pub port: u16,
}

impl PgDb {
    /// A fresh database on the machine's PostgreSQL.
    pub fn create(tag: &str) -> PgDb {
        PgDb::create_on(LOCAL_PORT, tag)
    }

    pub fn create_on(port: u16, tag: &str) -> PgDb {
        let name = format!("rh_{tag}_{}", std::process::id());
        psql(
            port,
            "postgres",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
        psql(port, "postgres", &format!("CREATE DATABASE {name}"));
        PgDb { name, port }
    }

    pub fn sql(&self, sql: &str) -> String {
        psql(self.port, &self.name, sql)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, self.name)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args([
                "-X",
                "-q",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .stderr(Stdio::null())
            .status();
    }
}

/// A private PostgreSQL on a free port, with its own data directory (run
/// as the `postgres` user when the test runs as root, as initdb wants).
pub struct PrivatePg {
    pub port: u16,
    dir: PathBuf,
}

fn pg_bin(name: &str) -> PathBuf {
    let base = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(base)
        .expect("PostgreSQL's server is installed under /usr/lib/postgresql")
        .map(|e| e.unwrap().path())
        .collect();
    versions.sort();
    versions.last().expect("a PostgreSQL version").join("bin").join(name)
}

fn as_postgres(bin: &str) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_bin(bin));
        c
    } else {
        Command::new(pg_bin(bin))
    }
}

impl PrivatePg {
    pub fn start(tag: &str) -> PrivatePg {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = temp_dir(&format!("pg-{tag}"));
        let owner = Command::new("id").args(["-u", "postgres"]).output().unwrap();
        let uid: u32 = String::from_utf8_lossy(&owner.stdout).trim().parse().unwrap_or(0);
        if uid != 0 {
            std::os::unix::fs::chown(&dir, Some(uid), None).unwrap();
        }
        let out = as_postgres("initdb")
            .args(["-D"])
            .arg(dir.join("data"))
            .args(["-U", "postgres", "--auth=trust", "--no-sync"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let pg = PrivatePg { port, dir };
        pg.start_again();
        pg
    }

    pub fn start_again(&self) {
        let out = as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port,
                self.dir.display()
            ))
            .args(["-w", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// An immediate stop: connections are cut, nothing is shut down cleanly.
    pub fn stop(&self) {
        let _ = as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn op(id: &str, payload: &str) -> Message {
    Message {
        key: None,
        payload: payload.as_bytes().to_vec(),
        id: id.to_owned(),
        index: 0,
    }
}

fn spec(url: &str, extra: &str) -> SinkSpec {
    sink_spec(
        "postgres",
        &format!("url = \"{url}\"\ntables = {{ orders_copy = {{ key = [\"id\"] }} }}\ntimeout_ms = 5000\n{extra}"),
    )
}

fn options(spec: &SinkSpec) -> &rowhook::sink::sql::config::SqlOptions {
    match spec {
        SinkSpec::Postgres(o) => o,
        other => panic!("not a postgres sink: {other:?}"),
    }
}

async fn open(spec: &SinkSpec) -> PostgresSink {
    PostgresKind::open("pg", options(spec)).await.unwrap()
}

const ORDERS: &str = "CREATE TABLE orders_copy (
    id bigint PRIMARY KEY,
    amount numeric(12,2),
    status varchar(10) NOT NULL DEFAULT 'new',
    paid boolean,
    small smallint,
    created_at timestamptz,
    doc jsonb,
    raw bytea,
    note text)";

const SELECT_ORDERS: &str = "SELECT id, amount, status, paid, small, created_at AT TIME ZONE 'UTC', doc, encode(raw, 'hex'), note FROM orders_copy ORDER BY id";

#[test]
fn rows_follow_the_operations_one_transaction_per_batch() {
    let db = PgDb::create("pg_rows");
    db.sql(ORDERS);
    let spec = spec(&db.url(), "");
    rt().block_on(async {
        let mut sink = open(&spec).await;
        sink.write_batch(&[
            op("0-1-1:0:0", r#"{"op":"upsert","table":"orders_copy","row":{"id":1,"amount":"12.50","status":"new","paid":false,"created_at":"2025-11-21T08:05:00.250Z"}}"#),
            op("0-1-1:0:1", r#"{"op":"upsert","table":"orders_copy","row":{"id":2,"amount":99.99,"small":-7,"doc":{"a":[1,"x"]},"raw":"AAH/","note":"Zoë \"q\""}}"#),
            op("0-1-1:0:2", r#"{"op":"upsert","table":"orders_copy","row":{"id":3,"status":"gone"}}"#),
            // The same row again: only its last state is written.
            op("0-1-1:0:3", r#"{"op":"upsert","table":"orders_copy","row":{"id":"1","status":"paid","paid":true}}"#),
            op("0-1-1:0:4", r#"{"op":"delete","table":"orders_copy","key":{"id":3}}"#),
        ])
        .await
        .unwrap();
        assert_eq!(
            db.sql(SELECT_ORDERS),
            "1|12.50|paid|t||2025-11-21 08:05:00.25|||\n\
             2|99.99|new||-7||{\"a\": [1, \"x\"]}|0001ff|Zoë \"q\"\n"
        );
        // A later batch: a delete then an upsert of the same row replaces it
        // (columns the upsert does not set take their defaults); an
        // upsert of a deleted row brings it back.
        sink.write_batch(&[
            op("0-1-2:0:0", r#"{"op":"delete","table":"orders_copy","key":{"id":1}}"#),
            op("0-1-2:0:1", r#"{"op":"upsert","table":"orders_copy","row":{"id":1,"amount":"1.00"}}"#),
            op("0-1-2:0:2", r#"{"op":"upsert","table":"orders_copy","row":{"id":3,"note":null}}"#),
            op("0-1-2:0:3", r#"{"op":"upsert","table":"orders_copy","row":{"id":2,"doc":"text"}}"#),
        ])
        .await
        .unwrap();
        assert_eq!(
            db.sql(SELECT_ORDERS),
            "1|1.00|new||||||\n\
             2|99.99|new||-7||\"text\"|0001ff|Zoë \"q\"\n\
             3||new||||||\n"
        );
        sink.health().await.unwrap();
        sink.close().await.unwrap();
    });
}

/// Each bad value fails its whole batch (nothing of it is written), as a
/// permanent error naming the table, the column and the JSON type, never
/// the value.
#[test]
fn values_that_do_not_fit_are_refused_by_name() {
    let db = PgDb::create("pg_types");
    db.sql(ORDERS);
    db.sql("CREATE TABLE strict (id int PRIMARY KEY, must text NOT NULL, gen int GENERATED ALWAYS AS (id * 2) STORED)");
    let spec = sink_spec(
        "postgres",
        &format!(
            "url = \"{}\"\ntables = {{ orders_copy = {{ key = [\"id\"] }}, strict = {{ key = [\"id\"] }} }}",
            db.url()
        ),
    );
    rt().block_on(async {
        let mut sink = open(&spec).await;
        for (row, table, what) in [
            (
                r#""id":1,"status":"SECRET-much-too-long""#,
                "orders_copy",
                "column `status` (character varying(10)): a string of 20 characters is longer than 10",
            ),
            (
                r#""id":1,"paid":"SECRET""#,
                "orders_copy",
                "column `paid` (boolean): a JSON string does not fit; write a boolean",
            ),
            (
                r#""id":1,"small":99999"#,
                "orders_copy",
                "column `small` (smallint): the number is out of the type's range",
            ),
            (
                r#""id":1.5"#,
                "orders_copy",
                "column `id` (bigint): a number with a fraction or exponent does not fit",
            ),
            (
                r#""id":1,"amount":"SECRET""#,
                "orders_copy",
                "column `amount` (numeric(12,2)): a JSON string that is not a decimal does not fit",
            ),
            (
                r#""id":1,"raw":"SECRET!""#,
                "orders_copy",
                "column `raw` (bytea): the string is not base64",
            ),
            (
                r#""id":1,"status":null"#,
                "orders_copy",
                "column `status` (character varying(10)) is NOT NULL, and the value is null",
            ),
            (
                r#""id":1,"nope":1"#,
                "orders_copy",
                "table `orders_copy` has no column `nope`",
            ),
            (
                r#""id":1"#,
                "strict",
                "column `must` (text) is NOT NULL without a default, and an upsert does not set it",
            ),
            (r#""id":1,"must":"x","gen":3"#, "strict", "column `gen` is generated"),
            (
                r#""id":1,"created_at":"SECRET""#,
                "orders_copy",
                "PostgreSQL refused a value (SQLSTATE 22007)",
            ),
        ] {
            let batch = [
                op("0-1-1:0:0", r#"{"op":"upsert","table":"orders_copy","row":{"id":9}}"#),
                op(
                    "0-1-1:0:1",
                    &format!(r#"{{"op":"upsert","table":"{table}","row":{{{row}}}}}"#),
                ),
            ];
            let err = sink.write_batch(&batch).await.unwrap_err();
            let text = err.to_string();
            assert!(!err.is_retryable(), "{row}: {text}");
            assert!(text.contains(what), "{row}: {text}");
            assert!(!text.contains("SECRET"), "{row}: {text}");
            assert_eq!(
                db.sql("SELECT count(*) FROM orders_copy"),
                "0\n",
                "{row}: nothing of the batch is written"
            );
        }
        // The sink is still usable.
        sink.write_batch(&[op(
            "0-1-2:0:0",
            r#"{"op":"upsert","table":"orders_copy","row":{"id":9}}"#,
        )])
        .await
        .unwrap();
        assert_eq!(db.sql("SELECT id, status FROM orders_copy"), "9|new\n");
    });
}

/// A missing table, a key that is not a unique key, missing privileges:
/// writes fail for good, naming the fix, and `rowhook check -c` says the same.
#[test]
fn missing_tables_keys_and_privileges_are_named() {
    let db = PgDb::create("pg_missing");
    db.sql("CREATE TABLE nokey (id int, v text)");
    db.sql("CREATE TABLE locked (id int PRIMARY KEY)");
    let role = format!("rh_reader_{}", std::process::id());
    psql(
        LOCAL_PORT,
        "postgres",
        &format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN"),
    );
    db.sql(&format!("GRANT SELECT ON locked TO {role}"));
    let url = db.url();
    let keys = "tables = { absent = { key = [\"id\"] }, nokey = { key = [\"id\"] } }";
    let spec = sink_spec("postgres", &format!("url = \"{url}\"\n{keys}"));
    rt().block_on(async {
        let mut sink = open(&spec).await;
        let err = sink
            .write_batch(&[op("0-1-1:0:0", r#"{"op":"upsert","table":"absent","row":{"id":1}}"#)])
            .await
            .unwrap_err();
        assert!(!err.is_retryable());
        assert!(
            err.to_string().contains("table `absent` does not exist; create it"),
            "{err}"
        );
        let err = sink
            .write_batch(&[op("0-1-1:0:0", r#"{"op":"delete","table":"nokey","key":{"id":1}}"#)])
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("table `nokey` has no primary or unique key on exactly (id)"),
            "{err}"
        );
    });
    let reader_url = format!("postgres://{role}@127.0.0.1:{LOCAL_PORT}/{}", db.name);
    let reader = sink_spec(
        "postgres",
        &format!("url = \"{reader_url}\"\ntables = {{ locked = {{ key = [\"id\"] }} }}"),
    );
    rt().block_on(async {
        let mut sink = open(&reader).await;
        let err = sink
            .write_batch(&[op("0-1-1:0:0", r#"{"op":"upsert","table":"locked","row":{"id":1}}"#)])
            .await
            .unwrap_err();
        assert!(!err.is_retryable());
        assert!(
            err.to_string().contains("it lacks INSERT, UPDATE, DELETE; GRANT"),
            "{err}"
        );
    });

    let dir = temp_dir("pg-check");
    let config = dir.join("rowhook.toml");
    let check = |sinks: &str| {
        std::fs::write(&config, format!("[state]\npath = \"state\"\n{sinks}")).unwrap();
        let out = rowhook(&["check", "-c", config.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let out = check(&format!(
        "[sinks.copy]\nkind = \"postgres\"\nurl = \"{url}\"\n{keys}\n\
         [sinks.reader]\nkind = \"postgres\"\nurl = \"{reader_url}\"\ntables = {{ locked = {{ key = [\"id\"] }} }}\ncheckpoint_table = \"rh_cp\"\n\
         [sinks.down]\nkind = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:1/x\"\ntables = {{ t = {{ key = [\"id\"] }} }}\n"
    ));
    let line = |sink: &str| {
        out.lines()
            .find(|l| l.contains(&format!("sink `{sink}` (postgres)")))
            .unwrap_or_else(|| panic!("no line for {sink}: {out}"))
            .to_owned()
    };
    let copy = line("copy");
    assert!(copy.contains("table `absent` does not exist"), "{copy}");
    assert!(
        copy.contains("table `nokey` has no primary or unique key on exactly (id)"),
        "{copy}"
    );
    let reader = line("reader");
    assert!(reader.contains("it lacks INSERT, UPDATE, DELETE"), "{reader}");
    assert!(
        reader.contains("checkpoint table `rh_cp` does not exist and"),
        "{reader}"
    );
    assert!(
        line("down").contains("cannot connect to postgres@127.0.0.1:1/x"),
        "{out}"
    );
    db.sql("CREATE TABLE absent (id int PRIMARY KEY); ALTER TABLE nokey ADD PRIMARY KEY (id)");
    let out = check(&format!("[sinks.copy]\nkind = \"postgres\"\nurl = \"{url}\"\n{keys}\n"));
    assert!(
        out.lines()
            .any(|l| l.contains("sink `copy` (postgres)") && l.contains("is reachable; 2 tables")),
        "{out}"
    );
    drop(db);
    psql(LOCAL_PORT, "postgres", &format!("DROP ROLE IF EXISTS {role}"));
}

/// With `checkpoint_table`, a batch the target has already (rowhook
/// crashed after the commit, before its own checkpoint) is skipped, also
/// when only its beginning was applied; the rest is applied.
#[test]
fn the_checkpoint_table_makes_replays_exactly_once() {
    let db = PgDb::create("pg_cp");
    db.sql("CREATE TABLE orders_copy (id int PRIMARY KEY, n int NOT NULL)");
    let spec = spec(&db.url(), "checkpoint_table = \"rowhook_checkpoint\"");
    let up = |id: &str, k: u32, n: u32| {
        op(
            id,
            &format!(r#"{{"op":"upsert","table":"orders_copy","row":{{"id":{k},"n":{n}}}}}"#),
        )
    };
    rt().block_on(async {
        let mut sink = open(&spec).await;
        let first = [up("0-1-10:0:0", 1, 1), up("0-1-10:0:1", 2, 1)];
        sink.write_batch(&first).await.unwrap();
        assert_eq!(
            db.sql("SELECT sink, change_id, message_index FROM rowhook_checkpoint"),
            "pg|0-1-10:0:1|0\n"
        );
        // Someone changes a row after the sink wrote it: a re-applied old
        // operation would undo that.
        db.sql("UPDATE orders_copy SET n = 100 WHERE id = 1");
        drop(sink);

        // rowhook restarts from an older checkpoint and sends it all again.
        let mut sink = open(&spec).await;
        sink.write_batch(&[first[0].clone(), first[1].clone(), up("0-1-11:0:0", 1, 2)])
            .await
            .unwrap();
        assert_eq!(db.sql("SELECT id, n FROM orders_copy ORDER BY id"), "1|2\n2|1\n");
        db.sql("UPDATE orders_copy SET n = 200 WHERE id = 2");
        // A later batch applies as usual; the same batch again is skipped
        // only after a reconnect tells the sink where the target is.
        sink.write_batch(&[up("0-1-12:0:0", 3, 1)]).await.unwrap();
        drop(sink);
        let mut sink = open(&spec).await;
        sink.write_batch(&[up("0-1-11:0:0", 1, 2), up("0-1-12:0:0", 3, 1), up("0-1-13:0:0", 2, 3)])
            .await
            .unwrap();
        assert_eq!(db.sql("SELECT id, n FROM orders_copy ORDER BY id"), "1|2\n2|3\n3|1\n");
        assert_eq!(db.sql("SELECT change_id FROM rowhook_checkpoint"), "0-1-13:0:0\n");
    });
}

/// The server stopped mid-stream: writes are unavailable (retried by the
/// pipeline), nothing half-written shows, and once it is back the batch is
/// written whole.
#[test]
fn a_restarted_server_gets_the_batch_whole() {
    let pg = PrivatePg::start("restart");
    let db = PgDb::create_on(pg.port, "pg_restart");
    db.sql("CREATE TABLE orders_copy (id int PRIMARY KEY, n int NOT NULL)");
    let spec = spec(&db.url(), "checkpoint_table = \"rowhook_checkpoint\"");
    let batch = |t: u32| -> Vec<Message> {
        (0..500)
            .map(|i| {
                op(
                    &format!("0-1-{t}:0:{i}"),
                    &format!(r#"{{"op":"upsert","table":"orders_copy","row":{{"id":{i},"n":{t}}}}}"#),
                )
            })
            .collect()
    };
    rt().block_on(async {
        let mut sink = open(&spec).await;
        sink.write_batch(&batch(1)).await.unwrap();
        pg.stop();
        let err = sink.write_batch(&batch(2)).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(matches!(err, SinkError::Unavailable { .. }));
        assert!(sink.health().await.unwrap_err().is_retryable());
        pg.start_again();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match sink.write_batch(&batch(2)).await {
                Ok(()) => break,
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("not delivered: {e}"),
            }
        }
        assert_eq!(db.sql("SELECT count(*), min(n), max(n) FROM orders_copy"), "500|2|2\n");
        // A dropped write (a stop during a retry) leaves nothing half done.
        let third = batch(3);
        let mut fut = Box::pin(sink.write_batch(&third));
        let _ = tokio::time::timeout(Duration::from_millis(1), &mut fut).await;
        drop(fut);
        sink.write_batch(&batch(4)).await.unwrap();
        assert_eq!(db.sql("SELECT count(*), min(n), max(n) FROM orders_copy"), "500|4|4\n");
    });
    drop(db);
}

/// `examples/orders-copy-postgres.toml` over the shop binlog (its sink
/// pointed at the test's database): the target table, as SQL reads it, is
/// the golden one, and a second replay changes nothing (the checkpoint
/// table skips it all); a handler writing a table its sink may not write
/// is refused at emit (`denied`).
#[test]
fn orders_copy_postgres_example_fills_the_target_table() {
    let db = PgDb::create("pg_shop");
    db.sql(
        "CREATE TABLE orders_copy (order_id bigint PRIMARY KEY, user_id integer NOT NULL,
           amount numeric(12,2) NOT NULL, amount_cents bigint NOT NULL, currency char(3) NOT NULL,
           status varchar(16) NOT NULL, paid boolean NOT NULL, created_at timestamptz NOT NULL,
           change_id text NOT NULL)",
    );
    build_guest(&root().join("examples/handlers"), "orders_copy_sql");
    let dir = temp_dir("pg-shop");
    std::os::unix::fs::symlink(root().join("examples/handlers"), dir.join("handlers")).unwrap();
    let example = std::fs::read_to_string(root().join("examples/orders-copy-postgres.toml")).unwrap();
    let example_url = "url = \"postgres://postgres@127.0.0.1:5432/test\"";
    assert!(example.contains(example_url));
    let write_config = |tables: &str| {
        let text = example
            .replace(example_url, &format!("url = \"{}\"", db.url()))
            .replace(
                "tables = { orders_copy = { key = [\"order_id\"] } }",
                &format!("tables = {tables}"),
            );
        let config = dir.join("orders-copy-postgres.toml");
        std::fs::write(&config, text).unwrap();
        config
    };
    let binlog = root().join("examples/binlog/shop-bin.000001");
    let replay = |config: &Path| rowhook(&["replay", "-c", config.to_str().unwrap(), binlog.to_str().unwrap()]);
    let config = write_config("{ orders_copy = { key = [\"order_id\"] } }");
    let check = rowhook(&["check", "-c", config.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        said.contains("sink `orders_db` (postgres)") && said.contains("is reachable; 1 table"),
        "{said}"
    );
    for _ in 0..2 {
        let out = replay(&config);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let table = db.sql(
            "SELECT order_id, user_id, amount, amount_cents, currency, status, paid, \
                    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), change_id \
             FROM orders_copy ORDER BY order_id",
        );
        golden("sql/orders_copy.txt", &table);
    }
    let config = write_config("{ other = { key = [\"id\"] } }");
    let out = replay(&config);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("denied"), "{err}");
}

/// The source's reshaped rows and the copy's, as one line each: count,
/// sums and an MD5 of every row in id order.
fn source_digest(server: &crate::support::Server) -> String {
    server
        .sql(
            "SET SESSION group_concat_max_len = 1073741824; \
             SELECT COUNT(*), SUM(id), SUM(amount), SUM(2 * amount), \
                    MD5(GROUP_CONCAT(CONCAT_WS(',', id, amount, note, 2 * amount) ORDER BY id SEPARATOR ';')) FROM bench.t",
        )
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("|")
}

fn copy_digest(db: &PgDb) -> String {
    db.sql(
        "SELECT count(*), sum(id), sum(amount), sum(doubled), \
                md5(string_agg(concat_ws(',', id, amount, note, doubled), ';' ORDER BY id)) FROM t_copy",
    )
    .trim()
    .to_owned()
}

fn copy_config(dir: &Path, server: &crate::support::Server, server_id: u32, db: &PgDb, wasm: &Path) -> PathBuf {
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"[source]
url = "{}"
server_id = {server_id}
start = "earliest"
heartbeat_secs = 1

[state]
path = "state"
commit_interval_ms = 200

[sinks.copy]
kind = "postgres"
url = "{}"
tables = {{ t_copy = {{ key = ["id"] }} }}
checkpoint_table = "rowhook_checkpoint"

[[handlers]]
name = "upserting"
module = "{}"
tables = ["bench.t"]
sinks = ["copy"]
# The machine may be busy: a slow call must not halt the copy.
limits = {{ time_ms = 10000 }}
"#,
            server.url(),
            db.url(),
            wasm.display()
        ),
    )
    .unwrap();
    config
}

/// Runs `rowhook run -c config` until the copy's digest is the source's
/// (or two minutes pass), then stops it with SIGINT; it must exit cleanly.
fn run_until_equal(config: &Path, log: &Path, server: &crate::support::Server, db: &PgDb) {
    let expected = source_digest(server);
    let mut child = crate::support::spawn_run(config, log);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let got = copy_digest(db);
        if got == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the copy is {got}, the source {expected}; log: {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "{}",
        std::fs::read_to_string(log).unwrap()
    );
}

/// One million rows (inserted, some updated, some deleted, in transactions
/// of up to 20,000 rows) copied by `rowhook run` through the upserting
/// handler: once with 20 SIGKILLs at random moments while the workload
/// runs, once cleanly into a second database. Both copies equal the
/// source, reshaped, as SQL reads them.
#[test]
fn a_million_rows_copied_through_twenty_kills_equal_the_source() {
    let server = std::sync::Arc::new(crate::support::Server::start(&[]));
    server.sql("CREATE DATABASE bench; CREATE TABLE bench.t (id BIGINT PRIMARY KEY, amount INT NOT NULL, note VARCHAR(32) NOT NULL)");
    let wasm = build_guest(&root().join("tests/guests"), "upserting");
    let killed_db = PgDb::create("pg_kills");
    let clean_db = PgDb::create("pg_clean");
    let ddl = "CREATE TABLE t_copy (id bigint PRIMARY KEY, amount integer NOT NULL, note varchar(32) NOT NULL, doubled bigint NOT NULL)";
    killed_db.sql(ddl);
    clean_db.sql(ddl);
    let dir = temp_dir("pg-kills");
    let config = copy_config(&dir, &server, 7601, &killed_db, &wasm);
    let log = dir.join("rowhook.log");

    // The workload: 50 transactions of 20,000 inserts; after each, an
    // update and a delete of some of the rows just written.
    let writer = {
        let server = server.clone();
        std::thread::spawn(move || {
            for t in 0..50u64 {
                let (from, to) = (t * 20_000 + 1, (t + 1) * 20_000);
                server.sql(&format!(
                    "INSERT INTO bench.t SELECT seq, seq % 1000, CONCAT('row ', seq % 7) FROM bench.seq_{from}_to_{to}; \
                     UPDATE bench.t SET amount = amount + 1, note = 'updated' WHERE id BETWEEN {from} AND {to} AND id % 5 = 0; \
                     DELETE FROM bench.t WHERE id BETWEEN {from} AND {to} AND id % 11 = 0"
                ));
            }
        })
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("sink_postgres kills seed {seed}, files in {}", dir.display());
    let mut rng = crate::crash::Rng(seed | 1);
    for _ in 0..20 {
        let mut child = crate::support::spawn_run(&config, &log);
        std::thread::sleep(Duration::from_millis(300 + rng.below(1500)));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    writer.join().unwrap();
    assert_eq!(
        server.sql("SELECT COUNT(*) FROM bench.t").trim(),
        (1_000_000 - 1_000_000 / 11).to_string()
    );
    run_until_equal(&config, &log, &server, &killed_db);

    let clean_dir = temp_dir("pg-clean");
    let clean = copy_config(&clean_dir, &server, 7602, &clean_db, &wasm);
    run_until_equal(&clean, &clean_dir.join("rowhook.log"), &server, &clean_db);
    assert_eq!(copy_digest(&clean_db), copy_digest(&killed_db));
}

/// `examples/daily-signups-postgres.toml` over the shop binlog (its sink
/// pointed at the test's database): one row per day with its count.
#[test]
fn daily_signups_postgres_example_upserts_the_counts() {
    let db = PgDb::create("pg_signups");
    db.sql("CREATE TABLE daily_signups (day date PRIMARY KEY, signups bigint NOT NULL)");
    build_guest(&root().join("examples/handlers"), "daily_signups_sql");
    let dir = temp_dir("pg-signups");
    std::os::unix::fs::symlink(root().join("examples/handlers"), dir.join("handlers")).unwrap();
    let example = std::fs::read_to_string(root().join("examples/daily-signups-postgres.toml")).unwrap();
    let example_url = "url = \"postgres://postgres@127.0.0.1:5432/test\"";
    assert!(example.contains(example_url));
    let config = dir.join("daily-signups-postgres.toml");
    std::fs::write(
        &config,
        example.replace(example_url, &format!("url = \"{}\"", db.url())),
    )
    .unwrap();
    let binlog = root().join("examples/binlog/shop-bin.000001");
    let out = rowhook(&["replay", "-c", config.to_str().unwrap(), binlog.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        db.sql("SELECT day, signups FROM daily_signups ORDER BY day"),
        "2025-11-21|2\n2025-11-22|2\n"
    );
}
