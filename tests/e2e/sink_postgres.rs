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
use std::time::Duration;

use rowhook::sink::{Sink, SinkError};

use crate::sink_sql::{
    Session, T_COPY, Target, checkpoint_makes_replays_exactly_once, copy_through_kills, numbered, op, open, runtime,
    sink_waits, spec, spec_waiting, write_in_background,
};
use crate::sink_support::{rt, sink_spec, write_until_delivered};
use crate::support::{build_guest, golden, root, rowhook, temp_dir, test_certs, wait_for};

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

impl Target for PgDb {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn url(&self) -> String {
        PgDb::url(self)
    }

    fn rows(&self, sql: &str) -> String {
        self.sql(sql)
    }

    fn copy_digest(&self) -> String {
        self.sql(
            "SELECT count(*), sum(id), sum(amount), sum(doubled), \
                    md5(string_agg(concat_ws(',', id, amount, note, doubled), ';' ORDER BY id)) FROM t_copy",
        )
        .trim()
        .to_owned()
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
    /// More server options (`-c name=value …`), after the built-in ones.
    options: String,
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

/// The `postgres` user's uid (0 where there is no such user).
fn postgres_uid() -> u32 {
    let owner = Command::new("id").args(["-u", "postgres"]).output().unwrap();
    String::from_utf8_lossy(&owner.stdout).trim().parse().unwrap_or(0)
}

impl PrivatePg {
    pub fn start(tag: &str) -> PrivatePg {
        let pg = PrivatePg::init(tag, "");
        pg.start_again();
        pg
    }

    /// A data directory made by initdb, the server not yet started;
    /// `options` are more server options (`-c name=value …`).
    pub fn init(tag: &str, options: &str) -> PrivatePg {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = temp_dir(&format!("pg-{tag}"));
        let uid = postgres_uid();
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
        PrivatePg {
            port,
            dir,
            options: options.to_owned(),
        }
    }

    /// Writes `contents` to `name` in the data directory, owned by the
    /// server's user and readable by it only.
    pub fn write_data_file(&self, name: &str, contents: &[u8]) {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.dir.join("data").join(name);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let uid = postgres_uid();
        if uid != 0 {
            std::os::unix::fs::chown(&path, Some(uid), None).unwrap();
        }
    }

    pub fn start_again(&self) {
        let out = as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 {}",
                self.port,
                self.dir.display(),
                self.options
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
    let spec = spec("postgres", &db.url(), "");
    rt().block_on(async {
        let mut sink = open("pg", &spec).await;
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
        let mut sink = open("pg", &spec).await;
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
        let mut sink = open("pg", &spec).await;
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
        let mut sink = open("pg", &reader).await;
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

/// With `checkpoint_table`, replays are exactly-once (see
/// [`checkpoint_makes_replays_exactly_once`]).
#[test]
fn the_checkpoint_table_makes_replays_exactly_once() {
    let db = PgDb::create("pg_cp");
    db.sql("CREATE TABLE orders_copy (id int PRIMARY KEY, n int NOT NULL)");
    checkpoint_makes_replays_exactly_once(&db, "pg");
}

/// The server stopped (`pg_ctl stop -m immediate`) while the sink's
/// transaction of a 20,000-row batch is half written (another session
/// holds row 15,000, so the transaction waits there): the write and the
/// health check are unavailable (retried by the pipeline), crash recovery
/// leaves the table as the batch before it, and once the server is back
/// the batch is written whole, its position in the checkpoint table. A
/// dropped write (a stop during a retry) leaves nothing half done either.
#[test]
fn a_server_stopped_mid_batch_gets_the_batch_whole() {
    let pg = PrivatePg::start("restart");
    let db = PgDb::create_on(pg.port, "pg_restart");
    db.sql("CREATE TABLE orders_copy (id int PRIMARY KEY, n int NOT NULL)");
    let spec = spec_waiting("postgres", &db.url(), "checkpoint_table = \"rowhook_checkpoint\"");
    let batch = |t| numbered(t, 20_000);
    let rt = runtime();
    let sink = rt.block_on(async {
        let mut sink = open("pg", &spec).await;
        sink.write_batch(&batch(1)).await.unwrap();
        sink
    });
    let mut other = psql_session(&db, "rh_other");
    other.send("BEGIN; UPDATE orders_copy SET n = -1 WHERE id = 15000; SET application_name = 'rh_other_holds';");
    let within = Duration::from_secs(90);
    wait_for("the other session to lock row 15,000", within, || {
        has_session(&db, "application_name = 'rh_other_holds'")
    });
    let writing = write_in_background(&rt, sink, batch(2));
    let writing = sink_waits(&rt, writing, "the sink to wait for row 15,000", within, || {
        sink_waits_for_a_lock(&db)
    });
    pg.stop();
    let (mut sink, outcome) = rt.block_on(writing).unwrap();
    let err = outcome.unwrap_err();
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err}");
    drop(other);
    rt.block_on(async {
        assert!(sink.health().await.unwrap_err().is_retryable());
        pg.start_again();
        assert_eq!(
            db.sql("SELECT count(*), min(n), max(n) FROM orders_copy"),
            "20000|1|1\n"
        );
        write_until_delivered(&mut sink, &batch(2), Duration::from_secs(30)).await;
        assert_eq!(
            db.sql("SELECT count(*), min(n), max(n) FROM orders_copy"),
            "20000|2|2\n"
        );
        assert_eq!(db.sql("SELECT change_id FROM rowhook_checkpoint"), "0-1-2:0:20000\n");
        let third = batch(3);
        let mut fut = Box::pin(sink.write_batch(&third));
        let _ = tokio::time::timeout(Duration::from_millis(1), &mut fut).await;
        drop(fut);
        sink.write_batch(&batch(4)).await.unwrap();
        assert_eq!(
            db.sql("SELECT count(*), min(n), max(n) FROM orders_copy"),
            "20000|4|4\n"
        );
    });
    drop(db);
}

/// A psql session on `db` whose `application_name` is `app`.
fn psql_session(db: &PgDb, app: &str) -> Session {
    let mut client = Command::new("psql");
    client
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &db.port.to_string(),
            "-U",
            "postgres",
            "-d",
            &db.name,
        ])
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .env("PGAPPNAME", app);
    Session::start(client)
}

/// Whether a session of `db`'s database matches `cond` (on `pg_stat_activity`).
fn has_session(db: &PgDb, cond: &str) -> bool {
    db.sql(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND {cond}"
    )) != "0\n"
}

/// The sink's session waits for a row lock.
fn sink_waits_for_a_lock(db: &PgDb) -> bool {
    has_session(db, "application_name = 'rowhook' AND wait_event_type = 'Lock'")
}

/// A genuine deadlock: another session locks row 50, the sink's batch
/// (rows 1 to 100, in order) takes row 1 and waits for row 50, and the
/// other session then asks for row 1. PostgreSQL aborts the sink's
/// transaction (SQLSTATE 40P01): the sink reports it as unavailable, so
/// the pipeline retries; nothing of the batch is written, and the batch
/// written again lands whole.
#[test]
fn a_deadlock_is_retryable_and_the_retried_batch_lands_whole() {
    let db = PgDb::create("pg_deadlock");
    db.sql("CREATE TABLE orders_copy (id int PRIMARY KEY, n int NOT NULL)");
    // Each waiter looks for a deadlock once, after its deadlock_timeout:
    // the sink's session after 2 s (time for the other session to close
    // the cycle), the other session after a minute, so the sink's
    // transaction is the one aborted.
    db.sql(&format!("ALTER DATABASE {} SET deadlock_timeout = '2s'", db.name));
    let spec = spec_waiting("postgres", &db.url(), "");
    let rt = runtime();
    let sink = rt.block_on(async {
        let mut sink = open("pg", &spec).await;
        sink.write_batch(&numbered(0, 100)).await.unwrap();
        sink
    });
    let mut other = psql_session(&db, "rh_other");
    other.send("SET deadlock_timeout = '60s'; BEGIN; UPDATE orders_copy SET n = -1 WHERE id = 50;");
    other.send("SET application_name = 'rh_other_holds_50';");
    let within = Duration::from_secs(90);
    wait_for("the other session to lock row 50", within, || {
        has_session(&db, "application_name = 'rh_other_holds_50'")
    });
    let writing = write_in_background(&rt, sink, numbered(1, 100));
    let writing = sink_waits(&rt, writing, "the sink to wait for row 50", within, || {
        sink_waits_for_a_lock(&db)
    });
    other.send("UPDATE orders_copy SET n = -1 WHERE id = 1; SET application_name = 'rh_other_holds_both';");
    let (mut sink, outcome) = rt.block_on(writing).unwrap();
    let err = outcome.unwrap_err();
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("writing the rows: deadlock (SQLSTATE 40P01); the batch is retried"),
        "{err}"
    );
    wait_for("the other session to lock row 1", within, || {
        has_session(&db, "application_name = 'rh_other_holds_both'")
    });
    other.send("COMMIT;");
    other.finish();
    // Nothing of the aborted batch: the other session's two rows and the
    // first batch's others.
    assert_eq!(
        db.sql("SELECT n, count(*) FROM orders_copy GROUP BY n ORDER BY n"),
        "-1|2\n0|98\n"
    );
    rt.block_on(sink.write_batch(&numbered(1, 100))).unwrap();
    assert_eq!(
        db.sql("SELECT count(*), sum(id), min(n), max(n) FROM orders_copy"),
        "100|5050|1|1\n"
    );
}

/// A genuine serialization failure under the pipeline: the database's
/// transactions are SERIALIZABLE, and another session updates order 1001
/// and commits while the sink's transaction, replaying the shop binlog,
/// waits to upsert it. The sink's transaction fails with SQLSTATE 40001;
/// `rowhook replay` logs the retry, counts it (`rowhook state`), writes
/// the batch again, and the table ends as the golden one.
#[test]
fn a_serialization_failure_is_retried_by_the_pipeline() {
    let db = PgDb::create("pg_serial");
    db.sql(SHOP_ORDERS);
    db.sql("INSERT INTO orders_copy VALUES (1001, 0, 0, 0, 'EUR', 'stale', false, now(), 'stale')");
    db.sql(&format!(
        "ALTER DATABASE {} SET default_transaction_isolation = 'serializable'",
        db.name
    ));
    let dir = temp_dir("pg-serial");
    let config = shop_config(&dir, &db, "{ orders_copy = { key = [\"order_id\"] } }");
    let mut other = psql_session(&db, "rh_other");
    other.send("BEGIN; UPDATE orders_copy SET status = 'other' WHERE order_id = 1001;");
    other.send("SET application_name = 'rh_other_holds_1001';");
    wait_for("the other session to lock order 1001", Duration::from_secs(20), || {
        has_session(&db, "application_name = 'rh_other_holds_1001'")
    });
    let replay = Command::new(env!("CARGO_BIN_EXE_rowhook"))
        .args(["replay", "--checkpoint", "-c"])
        .arg(&config)
        .arg(shop_binlog())
        .env("ROWHOOK_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the sink to wait for order 1001", Duration::from_secs(60), || {
        sink_waits_for_a_lock(&db)
    });
    other.send("COMMIT;");
    other.finish();
    let out = replay.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("sink unavailable, retrying")
            && log.contains("serialization failure (SQLSTATE 40001); the batch is retried"),
        "{log}"
    );
    golden("sql/orders_copy.txt", &shop_table(&db));
    let state = rowhook(&["state", "-c", config.to_str().unwrap()]);
    let state = String::from_utf8_lossy(&state.stdout);
    let retries: u64 = state
        .split(" sink retries,")
        .next()
        .and_then(|before| before.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no sink retries in {state}"));
    assert!(retries >= 1, "{state}");
}

/// TLS to a private PostgreSQL that takes TLS connections only
/// (`hostssl` in pg_hba.conf), its certificate signed by a test CA for
/// `localhost` and 127.0.0.1: with that CA as `tls_ca_file` the sink
/// writes over TLS and `rowhook check` passes; without TLS the server
/// refuses it; with another CA, or at an address the certificate does not
/// name (127.0.0.2), the sink refuses the server, naming the fix, and so
/// does `rowhook check`.
#[test]
fn tls_checks_the_servers_certificate_and_name() {
    let certs = test_certs("pg-tls-certs");
    let stranger = test_certs("pg-tls-stranger");
    let pg = PrivatePg::init(
        "tls",
        "-c ssl=on -c ssl_cert_file=server.pem -c ssl_key_file=server.key -c listen_addresses=127.0.0.1,127.0.0.2",
    );
    for name in ["server.pem", "server.key"] {
        pg.write_data_file(name, &std::fs::read(certs.join(name)).unwrap());
    }
    pg.write_data_file(
        "pg_hba.conf",
        b"local all all trust\nhostssl all all 127.0.0.0/8 trust\n",
    );
    pg.start_again();
    let db = PgDb::create_on(pg.port, "pg_tls");
    db.sql("CREATE TABLE orders_copy (id int PRIMARY KEY, n int NOT NULL)");
    let ca = |dir: &Path| format!("tls_ca_file = \"{}\"", dir.join("ca.pem").display());
    let other_host = db.url().replace("127.0.0.1", "127.0.0.2");
    let dir = temp_dir("pg-tls-check");
    let config = dir.join("rowhook.toml");
    let check = |url: &str, keys: &str| {
        std::fs::write(
            &config,
            format!("[sinks.db]\nkind = \"postgres\"\nurl = \"{url}\"\ntables = {{ orders_copy = {{ key = [\"id\"] }} }}\n{keys}\n"),
        )
        .unwrap();
        let out = rowhook(&["check", "-c", config.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    rt().block_on(async {
        let mut sink = open("pg", &spec("postgres", &db.url(), &ca(&certs))).await;
        sink.write_batch(&numbered(1, 10)).await.unwrap();
        assert_eq!(
            db.sql(
                "SELECT s.ssl, count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = 'rowhook' GROUP BY s.ssl"
            ),
            "t|1\n"
        );

        let mut plain = open("pg", &spec("postgres", &db.url(), "")).await;
        let err = plain.write_batch(&numbered(2, 10)).await.unwrap_err();
        assert!(
            err.to_string().contains("no pg_hba.conf entry") && err.to_string().contains("set tls = true"),
            "{err}"
        );

        for (url, keys, why) in [
            (db.url(), ca(&stranger), "is not signed by a CA of tls_ca_file"),
            (other_host.clone(), ca(&certs), "does not name the url's host 127.0.0.2"),
        ] {
            let mut sink = open("pg", &spec("postgres", &url, &keys)).await;
            let err = sink.write_batch(&numbered(3, 10)).await.unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
            let said = check(&url, &keys);
            assert!(said.contains("FAIL") && said.contains(why), "{said}");
        }
    });
    assert_eq!(db.sql("SELECT count(*), min(n), max(n) FROM orders_copy"), "10|1|1\n");
    let said = check(&db.url(), &ca(&certs));
    assert!(said.contains("is reachable; 1 table"), "{said}");
}

/// The target table of `examples/orders-copy-postgres.toml`.
const SHOP_ORDERS: &str = "CREATE TABLE orders_copy (order_id bigint PRIMARY KEY, user_id integer NOT NULL,
    amount numeric(12,2) NOT NULL, amount_cents bigint NOT NULL, currency char(3) NOT NULL,
    status varchar(16) NOT NULL, paid boolean NOT NULL, created_at timestamptz NOT NULL,
    change_id text NOT NULL)";

/// `orders_copy` of [`SHOP_ORDERS`] as the golden file holds it.
fn shop_table(db: &PgDb) -> String {
    db.sql(
        "SELECT order_id, user_id, amount, amount_cents, currency, status, paid, \
                to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), change_id \
         FROM orders_copy ORDER BY order_id",
    )
}

/// `examples/orders-copy-postgres.toml` in `dir`, its sink pointed at `db`
/// and allowed `tables` (the example's: `{ orders_copy = { key = ["order_id"] } }`).
fn shop_config(dir: &Path, db: &PgDb, tables: &str) -> PathBuf {
    build_guest(&root().join("examples/handlers"), "orders_copy_sql");
    let _ = std::os::unix::fs::symlink(root().join("examples/handlers"), dir.join("handlers"));
    let example = std::fs::read_to_string(root().join("examples/orders-copy-postgres.toml")).unwrap();
    let example_url = "url = \"postgres://postgres@127.0.0.1:5432/test\"";
    let example_tables = "tables = { orders_copy = { key = [\"order_id\"] } }";
    assert!(example.contains(example_url) && example.contains(example_tables));
    let text = example
        .replace(example_url, &format!("url = \"{}\"", db.url()))
        .replace(example_tables, &format!("tables = {tables}"));
    let config = dir.join("orders-copy-postgres.toml");
    std::fs::write(&config, text).unwrap();
    config
}

/// The shop example's binlog.
fn shop_binlog() -> PathBuf {
    root().join("examples/binlog/shop-bin.000001")
}

/// `examples/orders-copy-postgres.toml` over the shop binlog (its sink
/// pointed at the test's database): the target table, as SQL reads it, is
/// the golden one, and a second replay changes nothing (the checkpoint
/// table skips it all); a handler writing a table its sink may not write
/// is refused at emit (`denied`).
#[test]
fn orders_copy_postgres_example_fills_the_target_table() {
    let db = PgDb::create("pg_shop");
    db.sql(SHOP_ORDERS);
    let dir = temp_dir("pg-shop");
    let binlog = shop_binlog();
    let replay = |config: &Path| rowhook(&["replay", "-c", config.to_str().unwrap(), binlog.to_str().unwrap()]);
    let config = shop_config(&dir, &db, "{ orders_copy = { key = [\"order_id\"] } }");
    let check = rowhook(&["check", "-c", config.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        said.contains("sink `orders_db` (postgres)") && said.contains("is reachable; 1 table"),
        "{said}"
    );
    for _ in 0..2 {
        let out = replay(&config);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        golden("sql/orders_copy.txt", &shop_table(&db));
    }
    let config = shop_config(&dir, &db, "{ other = { key = [\"id\"] } }");
    let out = replay(&config);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("denied"), "{err}");
}

/// One million rows (50 transactions of 20,000 inserts, some updated,
/// some deleted) copied by `rowhook run` through the upserting handler:
/// once with 20 SIGKILLs at random moments while the workload runs, once
/// cleanly into a second database; both equal the source (see
/// [`copy_through_kills`]).
#[test]
fn a_million_rows_copied_through_twenty_kills_equal_the_source() {
    let killed = PgDb::create("pg_kills");
    let clean = PgDb::create("pg_clean");
    killed.sql(T_COPY);
    clean.sql(T_COPY);
    copy_through_kills(&killed, &clean, 50, 20, 7601);
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
