//! What the postgres and mysql sink tests share: row operations as
//! messages, a sink of either kind, a client session that holds locks while
//! a test drives the sink into them, the checkpoint-table replay, and a
//! live workload copied through SIGKILLs of `rowhook run`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use rowhook::sink::{AnySink, Message, Sink, SinkSpec};

use crate::sink_support::{rt, sink_spec};
use crate::support::{Server, build_guest, interrupt, root, temp_dir};

/// A message carrying `payload`, with change id `id`.
pub fn op(id: &str, payload: &str) -> Message {
    Message {
        key: None,
        payload: payload.as_bytes().to_vec(),
        id: id.to_owned(),
        index: 0,
    }
}

/// An upsert of row `key` of `orders_copy (id, n)` with `n`.
pub fn up(id: &str, key: u32, n: i64) -> Message {
    op(
        id,
        &format!(r#"{{"op":"upsert","table":"orders_copy","row":{{"id":{key},"n":{n}}}}}"#),
    )
}

/// Transaction `t`'s batch: upserts of rows 1 to `rows` of `orders_copy`,
/// in key order, each with `n = t`.
pub fn numbered(t: u32, rows: u32) -> Vec<Message> {
    (1..=rows)
        .map(|i| up(&format!("0-1-{t}:0:{i}"), i, i64::from(t)))
        .collect()
}

/// A sink of `kind` at `url` that may write `orders_copy` (key `id`), with
/// a 5 s `timeout_ms` and the `extra` keys.
pub fn spec(kind: &str, url: &str, extra: &str) -> SinkSpec {
    spec_within(kind, url, 5_000, extra)
}

/// [`spec`] with a batch limit long enough for the batch to still be
/// waiting for another session's lock when the test acts, however slow
/// the machine.
pub fn spec_waiting(kind: &str, url: &str, extra: &str) -> SinkSpec {
    spec_within(kind, url, 300_000, extra)
}

fn spec_within(kind: &str, url: &str, timeout_ms: u64, extra: &str) -> SinkSpec {
    sink_spec(
        kind,
        &format!(
            "url = \"{url}\"\ntables = {{ orders_copy = {{ key = [\"id\"] }} }}\ntimeout_ms = {timeout_ms}\n{extra}"
        ),
    )
}

/// Opens the sink `name` of `spec`.
pub async fn open(name: &str, spec: &SinkSpec) -> AnySink {
    AnySink::open(name, spec).await.unwrap()
}

/// A target database of one of the SQL sinks, as the tests read it.
pub trait Target {
    /// The sink kind that writes it.
    fn kind(&self) -> &'static str;
    /// The sink's `url`.
    fn url(&self) -> String;
    /// The rows `sql` selects, one line each, columns joined by `|`.
    fn rows(&self, sql: &str) -> String;
    /// `t_copy` of [`copy_through_kills`] as one line: count, sums and an
    /// MD5 of every row in id order, as the source's [`source_digest`].
    fn copy_digest(&self) -> String;
}

/// A client session fed one statement at a time (`psql`, `mariadb`), to
/// hold locks and open transactions while the test drives a sink.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Session {
    /// Starts `client`, reading statements from its stdin.
    pub fn start(mut client: Command) -> Session {
        let mut child = client
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the SQL client is installed");
        let stdin = child.stdin.take();
        Session { child, stdin }
    }

    /// Sends `sql`; it runs once the statements before it have.
    pub fn send(&mut self, sql: &str) {
        let stdin = self.stdin.as_mut().expect("the session is open");
        writeln!(stdin, "{sql}").unwrap();
        stdin.flush().unwrap();
    }

    /// Ends the input and waits for the client, which must succeed.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut err).unwrap();
        }
        assert!(self.child.wait().unwrap().success(), "the session failed: {err}");
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A runtime for a test that waits on the database on its own thread
/// while a sink writes: its workers run the write put in the background
/// and what the sink spawns (PostgreSQL's connection task), and it lives
/// as long as the sink.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A write running on a [`runtime`]'s workers: the sink back, with the outcome.
pub type Writing = tokio::task::JoinHandle<(AnySink, Result<(), rowhook::sink::SinkError>)>;

/// Writes `batch` with `sink` on `rt`'s workers, so the test can act while
/// the write waits on the database.
pub fn write_in_background(rt: &tokio::runtime::Runtime, mut sink: AnySink, batch: Vec<Message>) -> Writing {
    rt.spawn(async move {
        let outcome = sink.write_batch(&batch).await;
        (sink, outcome)
    })
}

/// Waits until `waiting` says the background write `writing` waits (for a
/// lock another session holds), polling every 20 ms; fails naming `what`
/// after `within`, or at once with the write's outcome if it ended first.
pub fn sink_waits(
    rt: &tokio::runtime::Runtime,
    writing: Writing,
    what: &str,
    within: Duration,
    mut waiting: impl FnMut() -> bool,
) -> Writing {
    let deadline = Instant::now() + within;
    while !waiting() {
        if writing.is_finished() {
            let (_, outcome) = rt.block_on(writing).unwrap();
            panic!("waiting for {what}: the write ended first: {outcome:?}");
        }
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    writing
}

/// With `checkpoint_table`, a batch the target has already (rowhook
/// crashed after the commit, before its own checkpoint) is skipped, also
/// when only its beginning was applied; the rest is applied. `db` holds
/// `orders_copy (id, n)`; the sink is named `name`.
pub fn checkpoint_makes_replays_exactly_once(db: &dyn Target, name: &str) {
    let spec = spec(db.kind(), &db.url(), "checkpoint_table = \"rowhook_checkpoint\"");
    rt().block_on(async {
        let mut sink = open(name, &spec).await;
        let first = [up("0-1-10:0:0", 1, 1), up("0-1-10:0:1", 2, 1)];
        sink.write_batch(&first).await.unwrap();
        assert_eq!(
            db.rows("SELECT sink, change_id, message_index FROM rowhook_checkpoint"),
            format!("{name}|0-1-10:0:1|0\n")
        );
        // Someone changes a row after the sink wrote it: a re-applied old
        // operation would undo that.
        db.rows("UPDATE orders_copy SET n = 100 WHERE id = 1");
        drop(sink);

        // rowhook restarts from an older checkpoint and sends it all again.
        let mut sink = open(name, &spec).await;
        sink.write_batch(&[first[0].clone(), first[1].clone(), up("0-1-11:0:0", 1, 2)])
            .await
            .unwrap();
        assert_eq!(db.rows("SELECT id, n FROM orders_copy ORDER BY id"), "1|2\n2|1\n");
        db.rows("UPDATE orders_copy SET n = 200 WHERE id = 2");
        // A later batch applies as usual; the same batch again is skipped
        // only after a reconnect tells the sink where the target is.
        sink.write_batch(&[up("0-1-12:0:0", 3, 1)]).await.unwrap();
        drop(sink);
        let mut sink = open(name, &spec).await;
        sink.write_batch(&[up("0-1-11:0:0", 1, 2), up("0-1-12:0:0", 3, 1), up("0-1-13:0:0", 2, 3)])
            .await
            .unwrap();
        assert_eq!(db.rows("SELECT id, n FROM orders_copy ORDER BY id"), "1|2\n2|3\n3|1\n");
        assert_eq!(db.rows("SELECT change_id FROM rowhook_checkpoint"), "0-1-13:0:0\n");
    });
}

/// The source's reshaped rows as one line: count, sums and an MD5 of
/// every row in id order.
pub fn source_digest(server: &Server) -> String {
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

/// `t_copy` as [`copy_through_kills`] creates it in the target.
pub const T_COPY: &str = "CREATE TABLE t_copy (id bigint PRIMARY KEY, amount integer NOT NULL, note varchar(32) NOT NULL, doubled bigint NOT NULL)";

fn copy_config(dir: &Path, server: &Server, server_id: u32, db: &dyn Target, wasm: &Path) -> PathBuf {
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
kind = "{}"
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
            db.kind(),
            db.url(),
            wasm.display()
        ),
    )
    .unwrap();
    config
}

/// Runs `rowhook run -c config` until the copy's digest is the source's
/// (or five minutes pass), then stops it with SIGINT; it must exit cleanly.
fn run_until_equal(config: &Path, log: &Path, server: &Server, db: &dyn Target) {
    let expected = source_digest(server);
    let mut child = crate::support::spawn_run(config, log);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let got = db.copy_digest();
        if got == expected {
            break;
        }
        if Instant::now() >= deadline {
            // Not left running after the test.
            let _ = child.kill();
            let _ = child.wait();
            panic!("the copy is {got}, the source {expected}; log: {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(interrupt(child).success(), "{}", std::fs::read_to_string(log).unwrap());
}

/// `transactions` transactions of 20,000 inserts into a private MariaDB,
/// each followed by an update and a delete of some of the rows just
/// written, copied by `rowhook run` through the upserting handler into
/// `t_copy` of `killed` (with `kills` SIGKILLs at random moments while the
/// workload runs), then cleanly into `clean`. Both copies equal the source,
/// reshaped, as SQL reads them. `server_id` and the one after it are the
/// two runs' replica ids.
pub fn copy_through_kills(killed: &dyn Target, clean: &dyn Target, transactions: u64, kills: u32, server_id: u32) {
    const ROWS: u64 = 20_000;
    let server = std::sync::Arc::new(Server::start(&[]));
    server.sql("CREATE DATABASE bench; CREATE TABLE bench.t (id BIGINT PRIMARY KEY, amount INT NOT NULL, note VARCHAR(32) NOT NULL)");
    let wasm = build_guest(&root().join("tests/guests"), "upserting");
    let tag = format!("{}-kills", killed.kind());
    let dir = temp_dir(&tag);
    let config = copy_config(&dir, &server, server_id, killed, &wasm);
    let log = dir.join("rowhook.log");

    let writer = {
        let server = server.clone();
        std::thread::spawn(move || {
            for t in 0..transactions {
                let (from, to) = (t * ROWS + 1, (t + 1) * ROWS);
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
    eprintln!("{tag} seed {seed}, files in {}", dir.display());
    let mut rng = crate::crash::Rng(seed | 1);
    for _ in 0..kills {
        let mut child = crate::support::spawn_run(&config, &log);
        std::thread::sleep(Duration::from_millis(300 + rng.below(1500)));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    writer.join().unwrap();
    let total = transactions * ROWS;
    assert_eq!(
        server.sql("SELECT COUNT(*) FROM bench.t").trim(),
        (total - total / 11).to_string()
    );
    run_until_equal(&config, &log, &server, killed);

    let clean_dir = temp_dir(&format!("{}-clean", clean.kind()));
    let clean_config = copy_config(&clean_dir, &server, server_id + 1, clean, &wasm);
    run_until_equal(&clean_config, &clean_dir.join("rowhook.log"), &server, clean);
    assert_eq!(clean.copy_digest(), killed.copy_digest());
}
