//! The mysql sink against the MariaDB running on this machine (a database
//! of its own per test, dropped after it): rows follow the operations, one
//! transaction per batch; values that do not fit are refused by name;
//! missing tables, keys and privileges are named by writes and by
//! `rowhook check`; the checkpoint table makes replays exactly-once; the
//! shop binlog through orders-copy-sql leaves the same table as in PostgreSQL.

use std::path::Path;
use std::process::{Command, Stdio};

use rowhook::sink::mysql::{MysqlKind, MysqlSink};
use rowhook::sink::{Message, Sink, SinkKind, SinkSpec};

use crate::sink_support::{rt, sink_spec};
use crate::support::{build_guest, golden, root, rowhook, temp_dir};

/// Runs `sql` with the mysql client as root on the machine's MariaDB;
/// tab-separated output without headers.
pub fn mysql(db: &str, sql: &str) -> String {
    let out = Command::new("mysql")
        .args([
            "-h",
            "127.0.0.1",
            "-P",
            "3306",
            "-u",
            "root",
            "-N",
            "-B",
            "-D",
            db,
            "-e",
            sql,
        ])
        .output()
        .expect("the mysql client is installed");
    assert!(
        out.status.success(),
        "mysql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A database of its own on the machine's MariaDB, dropped on drop.
pub struct MyDb {
    pub name: String,
}

impl MyDb {
    pub fn create(tag: &str) -> MyDb {
        let name = format!("rh_{tag}_{}", std::process::id());
        mysql(
            "mysql",
            &format!("DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"),
        );
        MyDb { name }
    }

    pub fn sql(&self, sql: &str) -> String {
        mysql(&self.name, sql)
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:3306/{}", self.name)
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        let _ = Command::new("mysql")
            .args(["-h", "127.0.0.1", "-P", "3306", "-u", "root", "-e"])
            .arg(format!("DROP DATABASE IF EXISTS {}", self.name))
            .stderr(Stdio::null())
            .status();
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

fn options(spec: &SinkSpec) -> &rowhook::sink::sql::config::SqlOptions {
    match spec {
        SinkSpec::Mysql(o) => o,
        other => panic!("not a mysql sink: {other:?}"),
    }
}

async fn open(spec: &SinkSpec) -> MysqlSink {
    MysqlKind::open("my", options(spec)).await.unwrap()
}

fn spec(url: &str, extra: &str) -> SinkSpec {
    sink_spec(
        "mysql",
        &format!("url = \"{url}\"\ntables = {{ orders_copy = {{ key = [\"id\"] }} }}\ntimeout_ms = 5000\n{extra}"),
    )
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
    let spec = spec(&db.url(), "");
    rt().block_on(async {
        let mut sink = open(&spec).await;
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
        let mut sink = open(&spec).await;
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
    let reader_url = format!("mysql://{user}@127.0.0.1:3306/{}", db.name);
    let reader = sink_spec(
        "mysql",
        &format!("url = \"{reader_url}\"\ntables = {{ locked = {{ key = [\"id\"] }} }}"),
    );
    rt().block_on(async {
        let mut sink = open(&reader).await;
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
    mysql("mysql", &format!("DROP USER IF EXISTS '{user}'@'%'"));
}

#[test]
fn the_checkpoint_table_makes_replays_exactly_once() {
    let db = MyDb::create("my_cp");
    db.sql("CREATE TABLE orders_copy (id INT PRIMARY KEY, n INT NOT NULL)");
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
            "my\t0-1-10:0:1\t0\n"
        );
        db.sql("UPDATE orders_copy SET n = 100 WHERE id = 1");
        drop(sink);
        let mut sink = open(&spec).await;
        sink.write_batch(&[first[0].clone(), first[1].clone(), up("0-1-11:0:0", 1, 2)])
            .await
            .unwrap();
        assert_eq!(db.sql("SELECT id, n FROM orders_copy ORDER BY id"), "1\t2\n2\t1\n");
    });
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
