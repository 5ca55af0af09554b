//! Host-side filtering: a handler is called for exactly the row changes of
//! its tables and ops, and for nothing else, not even as a call.
//!
//! One small real binlog: ten tables `ten.t0`…`ten.t9`, plus `other.t3` (the
//! same table name in another database), inserts, updates and deletes in
//! single-table and mixed transactions. The `counting` guest
//! (`tests/guests/trivial/counting`) emits one line per call; the lines must
//! be the subscribed changes that `rowhook inspect` prints, in binlog order,
//! and [`Stats::calls`] must count exactly those calls.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rowhook::config::Plan;
use rowhook::status::Stats;
use serde_json::{Value, json};

use crate::support::{Server, build_guest, json_lines, root, rowhook_ok, temp_dir};

/// Rounds of the workload below.
const ROUNDS: u32 = 4;

/// `trivial.wasm` and `counting.wasm`, built once with the guest workspace.
fn guests() -> &'static (PathBuf, PathBuf) {
    static G: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    G.get_or_init(|| {
        let trivial = build_guest(&root().join("tests/guests"), "trivial");
        let counting = trivial.with_file_name("counting.wasm");
        (trivial, counting)
    })
}

/// The SQL of the workload. Per round, each `ten.tN` gets a transaction of
/// three inserts; then one mixed transaction updates one row and deletes
/// one row of every table and inserts into `other.t3`. At the end, one
/// statement updates every remaining row of `ten.t3` (one event, many rows),
/// and one every row of `other.t3`.
fn workload_sql() -> String {
    let mut sql = String::from("CREATE DATABASE ten; CREATE DATABASE other;\n");
    for t in 0..10 {
        sql += &format!("CREATE TABLE ten.t{t} (id INT PRIMARY KEY, v VARCHAR(32) NOT NULL, n INT NOT NULL);\n");
    }
    sql += "CREATE TABLE other.t3 (id INT PRIMARY KEY, v VARCHAR(32) NOT NULL, n INT NOT NULL);\n";
    for r in 0..ROUNDS {
        let base = r * 10;
        for t in 0..10 {
            sql += &format!(
                "BEGIN; INSERT INTO ten.t{t} VALUES ({a}, 'r{r}', {t}), ({b}, 'r{r}', {t}), ({c}, 'r{r}', {t}); COMMIT;\n",
                a = base + 1,
                b = base + 2,
                c = base + 3
            );
        }
        sql += "BEGIN;\n";
        for t in 0..10 {
            sql += &format!("UPDATE ten.t{t} SET n = n + 1 WHERE id = {};\n", base + 1);
        }
        sql += &format!("INSERT INTO other.t3 VALUES ({}, 'x', 0);\n", r + 1);
        for t in 0..10 {
            sql += &format!("DELETE FROM ten.t{t} WHERE id = {};\n", base + 2);
        }
        sql += "COMMIT;\n";
    }
    sql += "UPDATE ten.t3 SET v = 'last'; UPDATE other.t3 SET v = 'y';\nFLUSH BINARY LOGS;\n";
    sql
}

/// What the counting handler emits for a change `rowhook inspect` printed.
fn expected_line(change: &Value) -> Value {
    let image = if change["op"] == "delete" { "before" } else { "after" };
    json!({
        "id": change["id"],
        "op": change["op"],
        "db": change["db"],
        "table": change["table"],
        "row": change[image]["id"],
    })
}

/// Replays `binlog` in-process with the counting handler on `tables` and
/// `ops`, and the trivial handler on every table of `ten` beside it.
/// Returns the counting handler's lines and the run's counters.
fn replay_counting(dir: &Path, binlog: &Path, tables: &[&str], ops: &[&str]) -> (Vec<Value>, Stats) {
    let (trivial, counting) = guests();
    std::fs::create_dir_all(dir).unwrap();
    let _ = std::fs::remove_file(dir.join("calls.jsonl"));
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[state]
path = "state"

[sinks.calls]
kind = "file"
path = "calls.jsonl"

[[handlers]]
name = "counting"
module = "{counting}"
tables = {tables:?}
ops = {ops:?}
sinks = ["calls"]

[[handlers]]
name = "trivial"
module = "{trivial}"
tables = ["ten.*"]
"#,
            counting = counting.display(),
            trivial = trivial.display(),
        ),
    )
    .unwrap();
    let plan = Plan::load(&config).unwrap();
    let stats = rowhook::cli::replay::replay(&plan, &[binlog.to_path_buf()]).unwrap();
    let lines = std::fs::read_to_string(dir.join("calls.jsonl")).unwrap_or_default();
    (json_lines(&lines), stats)
}

#[test]
fn handler_is_called_only_for_its_tables_and_ops() {
    guests();
    let server = Server::start(&[]);
    server.sql(&workload_sql());
    let binlog = server.binlog("mysql-bin.000001");
    let all = json_lines(&rowhook_ok(&["inspect", "--file", binlog.to_str().unwrap()]));
    let in_ten = all.iter().filter(|c| c["db"] == "ten").count();
    // Per table: 3 inserts, 1 update, 1 delete a round; then 8 rows of t3
    // updated at once. `other.t3`: one insert a round, then all updated.
    let rounds = ROUNDS as usize;
    assert_eq!(
        in_ten,
        10 * 5 * rounds + (2 * rounds),
        "the workload is not what the test expects"
    );
    assert_eq!(all.len(), in_ten + 2 * rounds);

    let dir = temp_dir("filtering");
    let cases: [(&[&str], &[&str], usize); 4] = [
        // All ops of one table; `other.t3` has the same name and must not count.
        (
            &["ten.t3"],
            &["insert", "update", "delete"],
            3 * rounds + (rounds + 2 * rounds) + rounds,
        ),
        // Some ops of another.
        (&["ten.t7"], &["insert", "delete"], 3 * rounds + rounds),
        // One op of two tables.
        (&["ten.t0", "ten.t9"], &["update"], 2 * rounds),
        // A table nobody writes to: no call at all.
        (&["ten.t10"], &["insert", "update", "delete"], 0),
    ];
    for (i, (tables, ops, count)) in cases.into_iter().enumerate() {
        let (lines, stats) = replay_counting(&dir.join(i.to_string()), &binlog, tables, ops);
        let expected: Vec<Value> = all
            .iter()
            .filter(|c| {
                tables.contains(&format!("{}.{}", c["db"].as_str().unwrap(), c["table"].as_str().unwrap()).as_str())
                    && ops.contains(&c["op"].as_str().unwrap())
            })
            .map(expected_line)
            .collect();
        assert_eq!(
            expected.len(),
            count,
            "{tables:?} {ops:?}: inspect disagrees with the workload"
        );
        assert_eq!(lines, expected, "{tables:?} {ops:?}: the handler saw other changes");
        // Each handler is called once per change it subscribed to: the
        // counting handler `count` times, the trivial one once per change of
        // `ten`, and nothing for `other`.
        assert_eq!(
            stats.calls,
            (count + in_ten) as u64,
            "{tables:?} {ops:?}: calls made beyond the subscriptions"
        );
        assert_eq!(stats.changes, in_ten as u64, "{tables:?} {ops:?}");
        assert_eq!(stats.messages, count as u64, "{tables:?} {ops:?}");
        assert_eq!(stats.handler_errors, 0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
