//! The mysql sink against the MariaDB running on this machine (a database
//! of its own per test, dropped after it): rows follow the operations, one
//! transaction per batch; values that do not fit are refused by name;
//! missing tables, keys and privileges are named by writes and by
//! `rowhook check`; the checkpoint table makes replays exactly-once; the
//! shop binlog through orders-copy-sql leaves the same table as in PostgreSQL.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rowhook::sink::{Sink, SinkError};

use crate::faults::mariadb_sh;
use crate::sink_sql::{
    Session, T_COPY, Target, checkpoint_makes_replays_exactly_once, copy_through_kills, numbered, op, open, runtime,
    sink_waits, spec, spec_waiting, write_in_background,
};
use crate::sink_support::{rt, sink_spec, write_until_delivered};
use crate::support::{Server, build_guest, golden, root, rowhook, temp_dir, test_certs, wait_for};

/// The machine's MariaDB.
const LOCAL_PORT: u16 = 3306;

/// The mariadb client as root on the MariaDB at `port`, in database `db`;
/// tab-separated output without headers.
fn client(port: u16, db: &str) -> Command {
    let mut c = Command::new("mariadb");
    c.args(["--no-defaults", "-h127.0.0.1", "-uroot", "-N", "-B"])
        .arg(format!("-P{port}"))
        .args(["-D", db]);
    c
}

/// Runs `sql` as root on the MariaDB at `port`, in database `db`.
pub fn mysql(port: u16, db: &str, sql: &str) -> String {
    let out = client(port, db)
        .args(["-e", sql])
        .output()
        .expect("the mariadb client is installed");
    assert!(
        out.status.success(),
        "mysql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A database of its own on a MariaDB, dropped on drop.
pub struct MyDb {
    pub name: String,
    pub port: u16,
}

impl MyDb {
    /// A fresh database on the machine's MariaDB.
    pub fn create(tag: &str) -> MyDb {
        MyDb::create_on(LOCAL_PORT, tag)
    }

    pub fn create_on(port: u16, tag: &str) -> MyDb {
        let name = format!("rh_{tag}_{}", std::process::id());
        mysql(
            port,
            "mysql",
            &format!("DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"),
        );
        MyDb { name, port }
    }

    pub fn sql(&self, sql: &str) -> String {
        mysql(self.port, &self.name, sql)
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/{}", self.port, self.name)
    }
}

impl Target for MyDb {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn url(&self) -> String {
        MyDb::url(self)
    }

    fn rows(&self, sql: &str) -> String {
        self.sql(sql).replace('\t', "|")
    }

    fn copy_digest(&self) -> String {
        self.sql(
            "SET SESSION group_concat_max_len = 1073741824; \
             SELECT COUNT(*), SUM(id), SUM(amount), SUM(doubled), \
                    MD5(GROUP_CONCAT(CONCAT_WS(',', id, amount, note, doubled) ORDER BY id SEPARATOR ';')) FROM t_copy",
        )
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("|")
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        let _ = client(self.port, "mysql")
            .arg("-e")
            .arg(format!("DROP DATABASE IF EXISTS {}", self.name))
            .stderr(Stdio::null())
            .status();
    }
}

const ORDERS: &str = "CREATE TABLE orders_copy (
    id BIGINT PRIMARY KEY,
    amount DECIMAL(12,2),
    status VARCHAR(10) NOT NULL DEFAULT 'new',
    paid BOOLEAN,
    small SMALLINT,
    created_at TIMESTAMP(3) NULL,
    doc JSON,
    raw VARBINARY(8),
    note TEXT) ENGINE = InnoDB";

const SELECT_ORDERS: &str =
    "SELECT id, amount, status, paid, small, created_at, doc, HEX(raw), note FROM orders_copy ORDER BY id";

#[test]
fn rows_follow_the_operations_one_transaction_per_batch() {
    let db = MyDb::create("my_rows");
    db.sql(ORDERS);
    let spec = spec("mysql", &db.url(), "");
    rt().block_on(async {
        let mut sink = open("my", &spec).await;
        sink.write_batch(&[
            op("0-1-1:0:0", r#"{"op":"upsert","table":"orders_copy","row":{"id":1,"amount":"12.50","status":"new","paid":false,"created_at":"2025-11-21T08:05:00.250Z"}}"#),
            op("0-1-1:0:1", r#"{"op":"upsert","table":"orders_copy","row":{"id":2,"amount":99.99,"small":-7,"doc":{"a":[1,"x"]},"raw":"AAH/","note":"Zoë"}}"#),
            op("0-1-1:0:2", r#"{"op":"upsert","table":"orders_copy","row":{"id":3,"status":"gone"}}"#),
            op("0-1-1:0:3", r#"{"op":"upsert","table":"orders_copy","row":{"id":"1","status":"paid","paid":true}}"#),
            op("0-1-1:0:4", r#"{"op":"delete","table":"orders_copy","key":{"id":3}}"#),
        ])
        .await
        .unwrap();
        assert_eq!(
            db.sql(&format!("SET time_zone = '+00:00'; {SELECT_ORDERS}")),
            "1\t12.50\tpaid\t1\tNULL\t2025-11-21 08:05:00.250\tNULL\tNULL\tNULL\n\
             2\t99.99\tnew\tNULL\t-7\tNULL\t{\"a\":[1,\"x\"]}\t0001FF\tZoë\n"
        );
        sink.write_batch(&[
            op("0-1-2:0:0", r#"{"op":"delete","table":"orders_copy","key":{"id":1}}"#),
            op("0-1-2:0:1", r#"{"op":"upsert","table":"orders_copy","row":{"id":1,"amount":"1.00"}}"#),
            op("0-1-2:0:2", r#"{"op":"upsert","table":"orders_copy","row":{"id":3,"note":null}}"#),
        ])
        .await
        .unwrap();
        assert_eq!(
            db.sql("SELECT id, amount, status, paid FROM orders_copy ORDER BY id"),
            "1\t1.00\tnew\tNULL\n2\t99.99\tnew\tNULL\n3\tNULL\tnew\tNULL\n"
        );
        sink.health().await.unwrap();
        sink.close().await.unwrap();
    });
}

#[test]
fn values_that_do_not_fit_are_refused_by_name() {
    let db = MyDb::create("my_types");
    db.sql(ORDERS);
    db.sql("CREATE TABLE strict (id INT PRIMARY KEY, must TEXT NOT NULL, gen INT AS (id * 2) STORED)");
    let spec = sink_spec(
        "mysql",
        &format!(
            "url = \"{}\"\ntables = {{ orders_copy = {{ key = [\"id\"] }}, strict = {{ key = [\"id\"] }} }}",
            db.url()
        ),
    );
    rt().block_on(async {
        let mut sink = open("my", &spec).await;
        for (row, table, what) in [
            (
                r#""id":1,"status":"SECRET-much-too-long""#,
                "orders_copy",
                "column `status` (varchar(10)): a string of 20 characters is longer than 10",
            ),
            (
                r#""id":1,"paid":"SECRET""#,
                "orders_copy",
                "column `paid` (tinyint(1)): a JSON string that is not an integer does not fit",
            ),
            (
                r#""id":1,"small":99999"#,
                "orders_copy",
                "column `small` (smallint(6)): the number is out of the type's range",
            ),
            (
                r#""id":1.5"#,
                "orders_copy",
                "column `id` (bigint(20)): a number with a fraction or exponent does not fit",
            ),
            (
                r#""id":1,"amount":"SECRET""#,
                "orders_copy",
                "column `amount` (decimal(12,2)): a JSON string that is not a decimal does not fit",
            ),
            (
                r#""id":1,"raw":"AAAAAAAAAAAAAA==""#,
                "orders_copy",
                "column `raw` (varbinary(8)): 10 bytes are longer than 8",
            ),
            (
                r#""id":1,"status":null"#,
                "orders_copy",
                "column `status` (varchar(10)) is NOT NULL, and the value is null",
            ),
            (
                r#""id":1,"nope":1"#,
                "orders_copy",
                "table `orders_copy` has no column `nope`",
            ),
            (
                r#""id":1"#,
                "strict",
                "column `must` (text) is NOT NULL without a default",
            ),
            (r#""id":1,"must":"x","gen":3"#, "strict", "column `gen` is generated"),
            (
                r#""id":1,"created_at":"SECRET""#,
                "orders_copy",
                "the server refused a value (error 1292",
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
                db.sql("SELECT COUNT(*) FROM orders_copy"),
                "0\n",
                "{row}: nothing of the batch is written"
            );
        }
        sink.write_batch(&[op(
            "0-1-2:0:0",
            r#"{"op":"upsert","table":"orders_copy","row":{"id":9}}"#,
        )])
        .await
        .unwrap();
        assert_eq!(db.sql("SELECT id, status FROM orders_copy"), "9\tnew\n");
    });
}

#[test]
fn missing_tables_keys_and_privileges_are_named() {
    let db = MyDb::create("my_missing");
    db.sql("CREATE TABLE nokey (id INT, v TEXT); CREATE TABLE locked (id INT PRIMARY KEY)");
    let user = format!("rh_reader_{}", std::process::id());
    mysql(
        LOCAL_PORT,
        "mysql",
        &format!(
            "DROP USER IF EXISTS '{user}'@'%'; CREATE USER '{user}'@'%'; GRANT SELECT ON {}.locked TO '{user}'@'%'",
            db.name
        ),
    );
    let url = db.url();
    let keys = "tables = { absent = { key = [\"id\"] }, nokey = { key = [\"id\"] } }";
    let spec = sink_spec("mysql", &format!("url = \"{url}\"\n{keys}"));
    rt().block_on(async {
        let mut sink = open("my", &spec).await;
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
    let reader_url = format!("mysql://{user}@127.0.0.1:3306/{}", db.name);
    let reader = sink_spec(
        "mysql",
        &format!("url = \"{reader_url}\"\ntables = {{ locked = {{ key = [\"id\"] }} }}"),
    );
    rt().block_on(async {
        let mut sink = open("my", &reader).await;
        let err = sink
            .write_batch(&[op("0-1-1:0:0", r#"{"op":"upsert","table":"locked","row":{"id":1}}"#)])
            .await
            .unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(
            err.to_string()
                .contains("grant the user SELECT, INSERT, UPDATE and DELETE"),
            "{err}"
        );
    });

    let dir = temp_dir("my-check");
    let config = dir.join("rowhook.toml");
    let check = |sinks: &str| {
        std::fs::write(&config, format!("[state]\npath = \"state\"\n{sinks}")).unwrap();
        let out = rowhook(&["check", "-c", config.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let out = check(&format!(
        "[sinks.copy]\nkind = \"mysql\"\nurl = \"{url}\"\n{keys}\n\
         [sinks.reader]\nkind = \"mysql\"\nurl = \"{reader_url}\"\ntables = {{ locked = {{ key = [\"id\"] }} }}\n\
         [sinks.down]\nkind = \"mysql\"\nurl = \"mysql://root@127.0.0.1:1/x\"\ntables = {{ t = {{ key = [\"id\"] }} }}\n"
    ));
    let line = |sink: &str| {
        out.lines()
            .find(|l| l.contains(&format!("sink `{sink}` (mysql)")))
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
    assert!(line("down").contains("check that the server is up"), "{out}");
    db.sql("CREATE TABLE absent (id INT PRIMARY KEY); ALTER TABLE nokey ADD PRIMARY KEY (id)");
    let out = check(&format!("[sinks.copy]\nkind = \"mysql\"\nurl = \"{url}\"\n{keys}\n"));
    assert!(
        out.lines()
            .any(|l| l.contains("sink `copy` (mysql)") && l.contains("is reachable; 2 tables")),
        "{out}"
    );
    mysql(LOCAL_PORT, "mysql", &format!("DROP USER IF EXISTS '{user}'@'%'"));
}

/// With `checkpoint_table`, replays are exactly-once (see
/// [`checkpoint_makes_replays_exactly_once`]).
#[test]
fn the_checkpoint_table_makes_replays_exactly_once() {
    let db = MyDb::create("my_cp");
    db.sql("CREATE TABLE orders_copy (id INT PRIMARY KEY, n INT NOT NULL)");
    checkpoint_makes_replays_exactly_once(&db, "my");
}

#[test]
fn orders_copy_sql_fills_the_target_table() {
    let db = MyDb::create("my_shop");
    db.sql(
        "CREATE TABLE orders_copy (order_id BIGINT PRIMARY KEY, user_id INT NOT NULL,
           amount DECIMAL(12,2) NOT NULL, amount_cents BIGINT NOT NULL, currency CHAR(3) NOT NULL,
           status VARCHAR(16) NOT NULL, paid BOOLEAN NOT NULL, created_at TIMESTAMP(3) NOT NULL,
           change_id VARCHAR(64) NOT NULL)",
    );
    let wasm = build_guest(&root().join("examples/handlers"), "orders_copy_sql");
    let dir = temp_dir("my-shop");
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"[sinks.orders_db]
kind = "mysql"
url = "{}"
tables = {{ orders_copy = {{ key = ["order_id"] }} }}

[[handlers]]
name = "orders-copy-sql"
module = "{}"
tables = ["shop.orders"]
sinks = ["orders_db"]
"#,
            db.url(),
            wasm.display()
        ),
    )
    .unwrap();
    let binlog = root().join("examples/binlog/shop-bin.000001");
    let replay = |config: &Path| rowhook(&["replay", "-c", config.to_str().unwrap(), binlog.to_str().unwrap()]);
    let out = replay(&config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The same text as PostgreSQL's table gives.
    let table = db.sql(
        "SET time_zone = '+00:00'; SELECT CONCAT_WS('|', order_id, user_id, amount, amount_cents, currency, status, IF(paid, 't', 'f'), \
                DATE_FORMAT(created_at, '%Y-%m-%dT%H:%i:%s.%fZ'), change_id) \
         FROM orders_copy ORDER BY order_id",
    );
    let table = table.replace("000Z|", "Z|");
    golden("sql/orders_copy.txt", &table);
}

/// A mariadb client session on `db`.
fn session(db: &MyDb) -> Session {
    Session::start(client(db.port, &db.name))
}

/// Whether the sink waits for the lock another session holds on row `id`
/// of `orders_copy`: its transaction is in `LOCK WAIT`, or its statement
/// that writes the row has been running for a second or more. Both are
/// asked because neither shows on every MariaDB: `INNODB_TRX` may not list
/// the waiting transaction of a prepared statement, and the process list
/// may show such a statement without its values.
fn waits_for_row(db: &MyDb, id: u32) -> bool {
    let name = &db.name;
    db.sql(&format!(
        "SELECT (SELECT COUNT(*) FROM information_schema.INNODB_TRX t \
                 JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id \
                 WHERE t.trx_state = 'LOCK WAIT' AND p.DB = '{name}') \
              + (SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE DB = '{name}' AND COMMAND IN ('Query', 'Execute') AND TIME >= 1 \
                   AND INFO LIKE 'INSERT INTO `orders_copy`%' AND INFO LIKE '%({id}, %')"
    )) != "0\n"
}

/// Whether a session holds the user lock `name`: another session's marker
/// that it got past its statements before it.
fn holds(db: &MyDb, name: &str) -> bool {
    db.sql(&format!("SELECT IS_USED_LOCK('{name}') IS NOT NULL")) == "1\n"
}

/// A genuine deadlock: another session, heavier (it changed 5,000 rows of
/// another table first, so InnoDB rolls back the sink's transaction, the
/// lighter one), locks row 50; the sink's batch (rows 1 to 100, in order)
/// takes row 1 and waits for row 50; the other session then asks for
/// row 1. The sink's transaction fails with error 1213, reported as
/// unavailable (the pipeline retries); nothing of it is written, and the
/// batch written again lands whole.
#[test]
fn a_deadlock_is_retryable_and_the_retried_batch_lands_whole() {
    let db = MyDb::create("my_deadlock");
    db.sql(
        "CREATE TABLE orders_copy (id INT PRIMARY KEY, n INT NOT NULL); \
         CREATE TABLE ballast (id INT PRIMARY KEY, n INT NOT NULL); \
         INSERT INTO ballast SELECT seq, 0 FROM seq_1_to_5000",
    );
    let spec = spec_waiting("mysql", &db.url(), "");
    let rt = runtime();
    let sink = rt.block_on(async {
        let mut sink = open("my", &spec).await;
        sink.write_batch(&numbered(0, 100)).await.unwrap();
        sink
    });
    let marker = |step: &str| format!("{}_{step}", db.name);
    let mut other = session(&db);
    other.send(&format!(
        "BEGIN; UPDATE ballast SET n = n + 1; UPDATE orders_copy SET n = -1 WHERE id = 50; DO GET_LOCK('{}', 0);",
        marker("holds_50")
    ));
    let within = Duration::from_secs(90);
    wait_for("the other session to lock row 50", within, || {
        holds(&db, &marker("holds_50"))
    });
    let writing = write_in_background(&rt, sink, numbered(1, 100));
    let writing = sink_waits(&rt, writing, "the sink to wait for row 50", within, || {
        waits_for_row(&db, 50)
    });
    other.send(&format!(
        "UPDATE orders_copy SET n = -1 WHERE id = 1; DO GET_LOCK('{}', 0);",
        marker("holds_both")
    ));
    let (mut sink, outcome) = rt.block_on(writing).unwrap();
    let err = outcome.unwrap_err();
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("writing the rows: deadlock (error 1213); the batch is retried"),
        "{err}"
    );
    wait_for("the other session to lock row 1", within, || {
        holds(&db, &marker("holds_both"))
    });
    other.send("COMMIT;");
    other.finish();
    assert_eq!(
        db.sql("SELECT n, COUNT(*) FROM orders_copy GROUP BY n ORDER BY n"),
        "-1\t2\n0\t98\n"
    );
    rt.block_on(sink.write_batch(&numbered(1, 100))).unwrap();
    assert_eq!(
        db.sql("SELECT COUNT(*), SUM(id), MIN(n), MAX(n) FROM orders_copy"),
        "100\t5050\t1\t1\n"
    );
}

/// A private MariaDB killed (SIGKILL) while the sink's transaction of a
/// 20,000-row batch is half written (another session holds row 15,000,
/// so the transaction stops there): the write is unavailable, crash
/// recovery leaves the table as the batch before it, and once the server
/// is back the batch is written whole, its position in the checkpoint table.
#[test]
fn a_server_killed_mid_batch_gets_the_batch_whole() {
    let server = Server::start(&[]);
    let db = MyDb::create_on(server.port, "my_restart");
    db.sql("CREATE TABLE orders_copy (id INT PRIMARY KEY, n INT NOT NULL)");
    let spec = spec_waiting("mysql", &db.url(), "checkpoint_table = \"rowhook_checkpoint\"");
    let batch = |t| numbered(t, 20_000);
    let rt = runtime();
    let sink = rt.block_on(async {
        let mut sink = open("my", &spec).await;
        sink.write_batch(&batch(1)).await.unwrap();
        sink
    });
    let mut other = session(&db);
    let marker = format!("{}_holds", db.name);
    other.send(&format!(
        "BEGIN; UPDATE orders_copy SET n = -1 WHERE id = 15000; DO GET_LOCK('{marker}', 0);"
    ));
    let within = Duration::from_secs(90);
    wait_for("the other session to lock row 15,000", within, || holds(&db, &marker));
    let writing = write_in_background(&rt, sink, batch(2));
    let writing = sink_waits(&rt, writing, "the sink to wait for row 15,000", within, || {
        waits_for_row(&db, 15_000)
    });
    let pid = std::fs::read_to_string(server.dir.join("pid")).unwrap();
    assert!(
        Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .unwrap()
            .success()
    );
    let (mut sink, outcome) = rt.block_on(writing).unwrap();
    let err = outcome.unwrap_err();
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err}");
    drop(other);
    mariadb_sh("up", &server);
    // Crash recovery rolled the half-written transaction back.
    assert_eq!(
        db.sql("SELECT COUNT(*), MIN(n), MAX(n) FROM orders_copy"),
        "20000\t1\t1\n"
    );
    rt.block_on(async {
        write_until_delivered(&mut sink, &batch(2), Duration::from_secs(30)).await;
    });
    assert_eq!(
        db.sql("SELECT COUNT(*), MIN(n), MAX(n) FROM orders_copy"),
        "20000\t2\t2\n"
    );
    assert_eq!(db.sql("SELECT change_id FROM rowhook_checkpoint"), "0-1-2:0:20000\n");
}

/// TLS to a private MariaDB with a certificate signed by a test CA, as a
/// user that must connect over TLS (`REQUIRE SSL`): with that CA as
/// `tls_ca_file` the sink writes and `rowhook check` passes; without TLS
/// the server refuses the user; with another CA the sink refuses the
/// server, naming the fix, and so does `rowhook check`.
#[test]
fn tls_checks_the_servers_certificate() {
    let certs = test_certs("my-tls-certs");
    let stranger = test_certs("my-tls-stranger");
    let file = |name: &str| certs.join(name).display().to_string();
    let server = Server::start(&[
        &format!("--ssl-cert={}", file("server.pem")),
        &format!("--ssl-key={}", file("server.key")),
        &format!("--ssl-ca={}", file("ca.pem")),
    ]);
    let db = MyDb::create_on(server.port, "my_tls");
    db.sql("CREATE TABLE orders_copy (id INT PRIMARY KEY, n INT NOT NULL)");
    server.sql(&format!(
        "CREATE USER rh_tls@'%' REQUIRE SSL; GRANT ALL ON {}.* TO rh_tls@'%'",
        db.name
    ));
    let url = format!("mysql://rh_tls@127.0.0.1:{}/{}", server.port, db.name);
    let ca = |dir: &Path| format!("tls_ca_file = \"{}\"", dir.join("ca.pem").display());
    let dir = temp_dir("my-tls");
    let config = dir.join("rowhook.toml");
    let check = |keys: &str| {
        std::fs::write(
            &config,
            format!("[sinks.db]\nkind = \"mysql\"\nurl = \"{url}\"\ntables = {{ orders_copy = {{ key = [\"id\"] }} }}\n{keys}\n"),
        )
        .unwrap();
        let out = rowhook(&["check", "-c", config.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    rt().block_on(async {
        let mut sink = open("my", &spec("mysql", &url, &ca(&certs))).await;
        sink.write_batch(&numbered(1, 10)).await.unwrap();

        let mut plain = open("my", &spec("mysql", &url, "")).await;
        let err = plain.write_batch(&numbered(2, 10)).await.unwrap_err();
        assert!(
            err.to_string().contains("error 1045") && err.to_string().contains("set tls = true"),
            "{err}"
        );

        let why = "the server's certificate is not signed by a CA of tls_ca_file";
        let mut sink = open("my", &spec("mysql", &url, &ca(&stranger))).await;
        let err = sink.write_batch(&numbered(3, 10)).await.unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
        let said = check(&ca(&stranger));
        assert!(said.contains("FAIL") && said.contains(why), "{said}");
    });
    assert_eq!(db.sql("SELECT COUNT(*), MIN(n), MAX(n) FROM orders_copy"), "10\t1\t1\n");
    let said = check(&ca(&certs));
    assert!(said.contains("is reachable; 1 table"), "{said}");
}

/// 300,000 rows (15 transactions of 20,000 inserts, some updated, some
/// deleted) copied into MariaDB by `rowhook run` through the upserting
/// handler: once with 20 SIGKILLs at random moments while the workload
/// runs, once cleanly into a second database; both equal the source (see
/// [`copy_through_kills`]). Fewer rows than the PostgreSQL test's
/// million, to keep it short (README: Sinks, PostgreSQL and MySQL).
#[test]
fn rows_copied_through_twenty_kills_equal_the_source() {
    let killed = MyDb::create("my_kills");
    let clean = MyDb::create("my_clean");
    killed.sql(T_COPY);
    clean.sql(T_COPY);
    copy_through_kills(&killed, &clean, 15, 20, 7611);
}
