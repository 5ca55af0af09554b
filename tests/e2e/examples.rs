//! The example handlers of `examples/handlers/` with their configs, as the
//! README runs them: each replayed over the recorded shop binlog, and each
//! run live against a fresh server loading `examples/shop.sql`, both compared
//! with the same golden file (so the outputs hold no binlog file names or
//! offsets, which differ between the two; ids hold GTIDs, the same on both);
//! all four at once through `examples/demo.sh`, the README's first command;
//! the sms-outbox example the same two ways over its own binlog, into a
//! private Redis that `examples/sms-consumer.sh` drains; and the handlers'
//! own unit tests.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::{Server, build_guest, golden, interrupt, root, rowhook, wait_until};

/// One example: `examples/<name>.toml`, its handler in `examples/handlers/`.
pub(crate) struct Example {
    name: &'static str,
    /// Its golden output, under `tests/golden/`.
    golden: &'static str,
    /// The FIFO its sink writes to, relative to the config; `None`: stdout.
    fifo: Option<&'static str>,
    /// The file its granted command (`examples/bin/block-ip.sh`) records
    /// its calls in, relative to the config; `None`: no command.
    record: Option<&'static str>,
}

const ORDERS_COPY: Example = Example {
    name: "orders-copy",
    golden: "examples/orders-copy.jsonl",
    fifo: None,
    record: None,
};
pub(crate) const DAILY_SIGNUPS: Example = Example {
    name: "daily-signups",
    golden: "examples/daily-signups.jsonl",
    fifo: None,
    record: None,
};
const IP_BLOCK: Example = Example {
    name: "ip-block",
    golden: "examples/ip-block.txt",
    fifo: None,
    record: Some("var/ip-block/firewall.log"),
};
/// ip-block's C twin (examples/c/ip-block), against the same golden file.
const IP_BLOCK_C: Example = Example {
    name: "ip-block-c",
    golden: "examples/ip-block.txt",
    fifo: None,
    record: Some("var/ip-block-c/firewall.log"),
};
/// orders-copy's JavaScript twin (examples/js/orders-copy), against the
/// same golden file.
const ORDERS_COPY_JS: Example = Example {
    name: "orders-copy-js",
    golden: "examples/orders-copy.jsonl",
    fifo: None,
    record: None,
};
/// daily-signups' Python twin (examples/python/daily-signups), against the
/// same golden file.
const DAILY_SIGNUPS_PY: Example = Example {
    name: "daily-signups-py",
    golden: "examples/daily-signups.jsonl",
    fifo: None,
    record: None,
};
const NEWS_FIFO: Example = Example {
    name: "news-fifo",
    golden: "examples/news-fifo.txt",
    fifo: Some("var/news.fifo"),
    record: None,
};

/// Builds the example handlers, once, where the configs point.
pub(crate) fn handlers_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = root().join("examples/handlers");
        for name in ["orders_copy", "daily_signups", "ip_block", "news_fifo", "sms_outbox"] {
            build_guest(&dir, name);
        }
        make(&root().join("examples/c/ip-block"), &["ip_block.wasm"]);
        build_js(
            &root().join("examples/js/orders-copy/handler.js"),
            &root().join("examples/js/orders-copy/orders-copy.wasm"),
        );
        build_python(
            &root().join("examples/python/daily-signups/daily_signups.py"),
            &root().join("examples/python/target/daily_signups.wasm"),
        );
    });
}

/// Runs `command`, failing the test with its output.
fn succeed(what: &str, command: &mut Command) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the JavaScript handler `source` into the component `out` with
/// the SDK's build command (QuickJS). Needs `npm ci` in guest-sdk/js.
pub fn build_js(source: &Path, out: &Path) {
    let sdk = root().join("guest-sdk/js");
    assert!(
        sdk.join("node_modules").exists(),
        "guest-sdk/js/node_modules is missing: run `npm ci` in guest-sdk/js (Node 20)"
    );
    succeed(
        "rowhook-js build",
        Command::new("node")
            .arg(sdk.join("bin/rowhook-js.js"))
            .arg("build")
            .arg(source)
            .arg("-o")
            .arg(out),
    );
}

/// Builds the Python handler `source` into the component `out` with the
/// SDK's build command. Needs componentize-py (`pip install
/// componentize-py==0.25.1`).
pub fn build_python(source: &Path, out: &Path) {
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    succeed(
        "python3 -m rowhook_guest build",
        Command::new("python3")
            .args(["-m", "rowhook_guest", "build"])
            .arg(source)
            .arg("-o")
            .arg(out)
            .env("PYTHONPATH", root().join("guest-sdk/python")),
    );
}

/// Runs `make` in `dir` with `targets`, failing the test with its output.
pub fn make(dir: &Path, targets: &[&str]) {
    succeed(
        &format!("make -C {} {targets:?}", dir.display()),
        Command::new("make").arg("-C").arg(dir).args(targets),
    );
}

/// A scratch directory holding example config `name` (after `edit`) beside
/// links to `examples/handlers`, the other languages' example folders and
/// `examples/bin`:
/// the config's relative paths find the modules as they do in `examples/`,
/// and what it writes (`var/...`) lands here, apart from other tests and
/// from the examples' own `var/`.
pub(crate) fn sandbox(tag: &str, example: &Example, edit: impl FnOnce(&str) -> String) -> (PathBuf, PathBuf) {
    // Tests run in parallel, and several replay the same example.
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rh-examples-{tag}-{}-{}-{}",
        example.name,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for folder in ["handlers", "c", "js", "python", "bin"] {
        let target = root().join("examples").join(folder);
        if target.exists() {
            std::os::unix::fs::symlink(target, dir.join(folder)).unwrap();
        }
    }
    let text = std::fs::read_to_string(root().join(format!("examples/{}.toml", example.name))).unwrap();
    let config = dir.join(format!("{}.toml", example.name));
    std::fs::write(&config, edit(&text)).unwrap();
    // Every sandbox of the run shares one compile cache: a Python or
    // JavaScript handler is compiled once, not by every test.
    let state_path = text
        .lines()
        .skip_while(|l| l.trim_end() != "[state]")
        .take_while(|l| !l.starts_with("[sinks") && !l.starts_with("[[handlers"))
        .find_map(|l| l.strip_prefix("path = \"var/"));
    if let Some(state) = state_path {
        let state = dir.join("var").join(state.split('"').next().unwrap());
        std::fs::create_dir_all(&state).unwrap();
        let shared = std::env::temp_dir().join(format!("rh-examples-compiled-{}", std::process::id()));
        std::fs::create_dir_all(&shared).unwrap();
        std::os::unix::fs::symlink(&shared, state.join("compiled")).unwrap();
    }
    (dir, config)
}

/// The config with the URL of its `[source]` replaced by `url`; everything
/// else (server id, start position, sinks, handler) as written.
pub(crate) fn with_url(config: &str, url: &str) -> String {
    with_url_of("[source]", config, url)
}

/// The config with the `url` of its table `table` (`[source]`,
/// `[sinks.NAME]`) replaced by `url`.
fn with_url_of(table: &str, config: &str, url: &str) -> String {
    let mut in_table = false;
    let mut replaced = 0;
    let mut out = String::with_capacity(config.len());
    for line in config.lines() {
        if line.starts_with('[') {
            in_table = line.trim_end() == table;
        }
        if in_table && line.starts_with("url = ") {
            out.push_str(&format!("url = \"{url}\""));
            replaced += 1;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    assert_eq!(replaced, 1, "one {table} url in the example config:\n{config}");
    out
}

/// What reaches an example's sink, line by line as it arrives, read by a thread.
struct SinkReader {
    lines: Receiver<String>,
    reader: JoinHandle<()>,
    /// For a FIFO: a write end of our own. Opening it waited until the reader
    /// had the pipe open, so rowhook finds a reader at its first write;
    /// holding it keeps the reader from seeing end-of-file before rowhook
    /// has opened the pipe.
    hold: Option<File>,
    /// For a file a command appends to: tells its reader to read it a last
    /// time and end.
    done: Option<mpsc::Sender<()>>,
}

impl SinkReader {
    /// Reads lines from `open()` (called in the thread) to their end.
    fn spawn<R: Read>(open: impl FnOnce() -> R + Send + 'static) -> (Receiver<String>, JoinHandle<()>) {
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(open()).lines() {
                if tx.send(line.unwrap()).is_err() {
                    break;
                }
            }
        });
        (lines, reader)
    }

    /// The standard output of `child`.
    fn stdout(child: &mut Child) -> SinkReader {
        let out = child.stdout.take().unwrap();
        let (lines, reader) = SinkReader::spawn(move || out);
        SinkReader {
            lines,
            reader,
            hold: None,
            done: None,
        }
    }

    /// A page builder on the FIFO at `path`, which it makes (the sink takes
    /// an existing one), as `examples/demo.sh` does.
    fn fifo(path: &Path) -> SinkReader {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let fifo = path.to_owned();
        let (lines, reader) = SinkReader::spawn(move || File::open(fifo).unwrap());
        let hold = OpenOptions::new().write(true).open(path).unwrap();
        SinkReader {
            lines,
            reader,
            hold: Some(hold),
            done: None,
        }
    }

    /// The lines of the file at `path` as they are appended (a granted
    /// command's record of its calls), until [`SinkReader::finish`].
    fn record(path: PathBuf) -> SinkReader {
        let (tx, lines) = mpsc::channel();
        let (done_tx, done) = mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let mut sent = 0;
            loop {
                let finished = done.try_recv().is_ok();
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                // Whole lines only: the command may be writing one.
                let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
                for line in complete.lines().skip(sent) {
                    if tx.send(line.to_owned()).is_err() {
                        return;
                    }
                    sent += 1;
                }
                if finished {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        SinkReader {
            lines,
            reader,
            hold: None,
            done: Some(done_tx),
        }
    }

    /// Once rowhook has exited: the lines not taken yet, up to end-of-file.
    fn finish(mut self) -> Vec<String> {
        drop(self.hold.take());
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
        self.reader.join().unwrap();
        self.lines.try_iter().collect()
    }
}

fn text(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Runs `example` over the recorded shop binlog; returns what reached its sink.
fn replay(example: &Example) -> String {
    handlers_built();
    let (dir, config) = sandbox("replay", example, str::to_owned);
    let binlog = root().join("examples/binlog/shop-bin.000001");
    let fifo = example.fifo.map(|fifo| SinkReader::fifo(&dir.join(fifo)));
    let out = rowhook(&["replay", "-c", config.to_str().unwrap(), binlog.to_str().unwrap()]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} failed: {stderr}", example.name);
    assert!(stderr.contains(" 0 handler errors"), "{stderr}");
    let output = match (fifo, example.record) {
        (Some(fifo), _) => {
            assert_eq!(stdout, "", "only the FIFO gets output");
            text(&fifo.finish())
        }
        (None, Some(record)) => {
            assert_eq!(stdout, "", "only the command gets output");
            std::fs::read_to_string(dir.join(record)).unwrap_or_default()
        }
        (None, None) => stdout,
    };
    let _ = std::fs::remove_dir_all(&dir);
    output
}

/// Runs `example` with `rowhook run` against a fresh server that loads
/// `examples/shop.sql`, until its output is as long as the replay's, then
/// stops it with SIGINT; returns the output.
fn live(example: &Example, lines_expected: usize) -> String {
    handlers_built();
    let server = Server::start(&[]);
    let (dir, config) = sandbox("live", example, |text| with_url(text, &server.url()));
    let fifo = example.fifo.map(|fifo| SinkReader::fifo(&dir.join(fifo)));
    let mut child = Command::new(env!("CARGO_BIN_EXE_rowhook"))
        .args(["run", "-c", config.to_str().unwrap()])
        .env("ROWHOOK_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rowhook");
    let stderr = read_all(child.stderr.take().unwrap());
    let (sink, stdout) = match (fifo, example.record) {
        (Some(fifo), _) => (fifo, Some(read_all(child.stdout.take().unwrap()))),
        (None, Some(record)) => (
            SinkReader::record(dir.join(record)),
            Some(read_all(child.stdout.take().unwrap())),
        ),
        (None, None) => (SinkReader::stdout(&mut child), None),
    };

    // The changes happen while rowhook is connected (or about to be: it
    // starts from the earliest binlog, so nothing is missed either way).
    server.sql_file(&root().join("examples/shop.sql"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.len() < lines_expected {
        match sink
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(line) => got.push(line),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{}: {} of {lines_expected} lines after 60 s: {got:?}\n{}",
                    example.name,
                    got.len(),
                    String::from_utf8_lossy(&stderr.join().unwrap())
                );
            }
        }
    }
    // A line that should not be there (a second block, a change counted
    // twice) gets a moment to show up before the stop.
    std::thread::sleep(Duration::from_millis(300));
    let status = interrupt(child);
    let stderr = String::from_utf8(stderr.join().unwrap()).unwrap();
    assert!(
        status.success(),
        "{}: rowhook run ended with {status}: {stderr}",
        example.name
    );
    assert!(stderr.contains("rowhook: stopped after"), "{stderr}");
    got.extend(sink.finish());
    if let Some(stdout) = stdout {
        assert_eq!(stdout.join().unwrap(), b"", "only the FIFO or the command gets output");
    }
    let _ = std::fs::remove_dir_all(&dir);
    text(&got)
}

/// Reads a pipe to its end in a thread.
fn read_all(mut from: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        from.read_to_end(&mut all).unwrap();
        all
    })
}

fn check_replay(example: &Example) {
    golden(example.golden, &replay(example));
}

/// Live must give what the replay gives, line for line.
fn check_live(example: &Example) {
    let replayed = replay(example);
    let live = live(example, replayed.lines().count());
    assert_eq!(live, replayed, "{}: live and replayed differ", example.name);
    golden(example.golden, &live);
}

#[test]
fn orders_copy_replayed() {
    check_replay(&ORDERS_COPY);
}

#[test]
fn orders_copy_live() {
    check_live(&ORDERS_COPY);
}

#[test]
fn daily_signups_replayed() {
    check_replay(&DAILY_SIGNUPS);
}

#[test]
fn daily_signups_live() {
    check_live(&DAILY_SIGNUPS);
}

#[test]
fn ip_block_replayed() {
    check_replay(&IP_BLOCK);
}

#[test]
fn ip_block_live() {
    check_live(&IP_BLOCK);
}

#[test]
fn ip_block_in_c_replayed() {
    check_replay(&IP_BLOCK_C);
}

#[test]
fn ip_block_in_c_live() {
    check_live(&IP_BLOCK_C);
}

#[test]
fn orders_copy_in_javascript_replayed() {
    check_replay(&ORDERS_COPY_JS);
}

#[test]
fn orders_copy_in_javascript_live() {
    check_live(&ORDERS_COPY_JS);
}

#[test]
fn daily_signups_in_python_replayed() {
    check_replay(&DAILY_SIGNUPS_PY);
}

#[test]
fn daily_signups_in_python_live() {
    check_live(&DAILY_SIGNUPS_PY);
}

#[test]
fn news_fifo_replayed() {
    check_replay(&NEWS_FIFO);
}

#[test]
fn news_fifo_live() {
    check_live(&NEWS_FIFO);
}

/// Runs `bash examples/demo.sh` from `cwd`, giving it up to 20 minutes (a
/// first run builds rowhook in the dev profile).
fn demo(cwd: &Path) -> Output {
    let mut child = Command::new("bash")
        .arg(root().join("examples/demo.sh"))
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bash");
    let (stdout, stderr) = (
        read_all(child.stdout.take().unwrap()),
        read_all(child.stderr.take().unwrap()),
    );
    let status = wait_until(
        &mut child,
        Instant::now() + Duration::from_secs(20 * 60),
        "examples/demo.sh",
    );
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// The lines of `out` from the one starting with `header` to the next `== `
/// header, without either.
fn section<'a>(out: &'a str, header: &str) -> Vec<&'a str> {
    let mut lines = out.lines().skip_while(|l| !l.starts_with(header));
    assert!(lines.next().is_some(), "no section `{header}` in:\n{out}");
    let mut section: Vec<&str> = lines.take_while(|l| !l.starts_with("== ")).collect();
    while section.last() == Some(&"") {
        section.pop();
    }
    section
}

fn joined(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// The README's first command, from another directory, twice: every sink of
/// `examples/demo.toml` gets what each example gets alone (the golden files),
/// and a second run starts from a clean slate (counters from zero, no
/// leftover pipe or lines).
#[test]
fn demo_script_runs_all_four_examples() {
    let elsewhere = std::env::temp_dir();
    for run in 1..=2 {
        let out = demo(&elsewhere);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "run {run}: {stdout}\n{stderr}");
        assert!(stderr.contains(" 0 handler errors"), "run {run}: {stderr}");

        let replay = section(&stdout, "== rowhook replay -c examples/demo.toml");
        let (orders, rest): (Vec<&str>, Vec<&str>) = replay.iter().partition(|l| l.starts_with("{\"order_id\":"));
        let (page_builder, rest): (Vec<&str>, Vec<&str>) = rest.iter().partition(|l| l.starts_with("page builder: "));
        assert_eq!(
            rest,
            [
                "(orders-copy writes to stdout; 'page builder:' lines come from a reader of the FIFO)",
                ""
            ],
            "run {run}: unexpected lines:\n{stdout}"
        );
        golden(ORDERS_COPY.golden, &joined(&orders));
        let ids: Vec<&str> = page_builder
            .iter()
            .map(|l| {
                l.strip_prefix("page builder: news item ")
                    .and_then(|l| l.strip_suffix(" changed"))
                    .unwrap_or_else(|| panic!("{l}"))
            })
            .collect();
        golden(NEWS_FIFO.golden, &joined(&ids));
        golden(
            DAILY_SIGNUPS.golden,
            &joined(&section(
                &stdout,
                "== daily-signups wrote examples/var/demo/signups.jsonl",
            )),
        );
        golden(
            IP_BLOCK.golden,
            &joined(&section(&stdout, "== ip-block ran examples/bin/block-ip.sh")),
        );
    }
}

/// The handlers' unit tests (`rowhook_guest::testing`, run natively): their
/// workspace is not part of this one, so `cargo test --workspace` reaches
/// them only through here.
#[test]
fn example_handlers_pass_their_unit_tests() {
    let dir = root().join("examples/handlers");
    let out = Command::new(env!("CARGO"))
        .args(["test", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(dir.join("target"))
        .output()
        .expect("run cargo test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One result per crate, each with tests that ran.
    let ran: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("test result: ok.") && !l.starts_with("test result: ok. 0 passed"))
        .collect();
    assert_eq!(ran.len(), 7, "{stdout}");
}

/// The C SDK's own tests, natively (under AddressSanitizer and UBSan): its
/// reader against every vector of the row change encoding, its JSON
/// builder, its capabilities against the SDK's recorder; and the C
/// ip-block's tests, its address parser against Rust's.
#[test]
fn c_sdk_and_example_pass_their_native_tests() {
    make(&root().join("guest-sdk/c"), &["test"]);
    make(&root().join("examples/c/ip-block"), &["test"]);
}

/// The JavaScript SDK's own tests in Node: its reader against every vector
/// of the row change encoding, its JSON lines, its capabilities against
/// the SDK's in-memory host.
#[test]
fn javascript_sdk_passes_its_tests() {
    succeed(
        "node --test (guest-sdk/js)",
        Command::new("node")
            .args(["--test", "test/"])
            .current_dir(root().join("guest-sdk/js")),
    );
}

/// The Python SDK's own tests in CPython, and the Python daily-signups'
/// unit tests against the SDK's recorder.
#[test]
fn python_sdk_and_example_pass_their_tests() {
    succeed(
        "python3 -m unittest (guest-sdk/python)",
        Command::new("python3")
            .args(["-m", "unittest", "-q"])
            .current_dir(root().join("guest-sdk/python")),
    );
    succeed(
        "python3 -m unittest (examples/python/daily-signups)",
        Command::new("python3")
            .args(["-m", "unittest", "-q"])
            .current_dir(root().join("examples/python/daily-signups"))
            .env("PYTHONPATH", root().join("guest-sdk/python")),
    );
}

/// sms-outbox, a table as a job queue: its handler pushes a JSON job per
/// new pending `notify.sms_outbox` row onto a Redis list, and
/// `examples/sms-consumer.sh` pops and "sends" them. Each test has its own
/// redis-server on a free port; what the consumer sent is compared with
/// one golden file, replayed and live.
#[cfg(feature = "sink-redis")]
mod sms_outbox {
    use super::*;
    use crate::sink_redis::Redis;

    const SMS_OUTBOX: Example = Example {
        name: "sms-outbox",
        golden: "examples/sms-outbox.txt",
        fifo: None,
        record: None,
    };

    /// The list the example config pushes onto, and the consumer pops.
    const LIST: &str = "sms:outbox";

    /// The example config with its sink pointed at `redis` (and, for a live
    /// run, its source at `server`).
    fn sandbox_for(tag: &str, redis: &Redis, server: Option<&Server>) -> (PathBuf, PathBuf) {
        sandbox(tag, &SMS_OUTBOX, |text| {
            let text = with_url_of("[sinks.sms_jobs]", text, &redis.url());
            match server {
                Some(server) => with_url(&text, &server.url()),
                None => text,
            }
        })
    }

    /// Replays the recorded `examples/sms.sql` into `redis` with the config in `config`.
    fn replay_into(config: &Path) {
        let binlog = root().join("examples/binlog/sms-bin.000001");
        let out = rowhook(&["replay", "-c", config.to_str().unwrap(), binlog.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "sms-outbox replay failed: {stderr}");
        assert!(stderr.contains(" 0 handler errors"), "{stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "", "the jobs go to Redis only");
    }

    /// Runs `examples/sms-consumer.sh --url URL ARGS`, for at most a minute;
    /// returns what it sent (standard output) and its standard error.
    fn consume(url: &str, args: &[&str]) -> (String, String) {
        let mut child = Command::new("bash")
            .arg(root().join("examples/sms-consumer.sh"))
            .args(["--url", url])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run bash");
        let (stdout, stderr) = (
            read_all(child.stdout.take().unwrap()),
            read_all(child.stderr.take().unwrap()),
        );
        let status = wait_until(
            &mut child,
            Instant::now() + Duration::from_secs(60),
            "examples/sms-consumer.sh",
        );
        let (stdout, stderr) = (
            String::from_utf8(stdout.join().unwrap()).unwrap(),
            String::from_utf8(stderr.join().unwrap()).unwrap(),
        );
        assert!(
            status.success(),
            "sms-consumer.sh ended with {status}: {stdout}\n{stderr}"
        );
        (stdout, stderr)
    }

    fn queued(redis: &Redis) -> i64 {
        redis::cmd("LLEN").arg(LIST).query(&mut redis.conn()).unwrap()
    }

    /// Replays the example into a fresh Redis and drains it with the
    /// consumer; returns what was sent.
    fn replay(tag: &str) -> String {
        handlers_built();
        let redis = Redis::start(tag, &[]);
        let (dir, config) = sandbox_for("replay", &redis, None);
        replay_into(&config);
        let (sent, stderr) = consume(&redis.url(), &["--timeout", "1"]);
        assert!(stderr.ends_with(" dropped 0 duplicates\n"), "{stderr}");
        assert_eq!(queued(&redis), 0, "the consumer took every job");
        let _ = std::fs::remove_dir_all(&dir);
        sent
    }

    #[test]
    fn sms_outbox_replayed() {
        golden(SMS_OUTBOX.golden, &replay("sms-replayed"));
    }

    /// `rowhook run` against a fresh server loading `examples/sms.sql`,
    /// with the consumer popping the jobs as they come: it sends what the
    /// replay sends, line for line.
    #[test]
    fn sms_outbox_live() {
        let replayed = replay("sms-live-replay");
        let jobs = replayed.lines().count().to_string();

        let server = Server::start(&[]);
        let redis = Redis::start("sms-live", &[]);
        let (dir, config) = sandbox_for("live", &redis, Some(&server));
        let mut child = Command::new(env!("CARGO_BIN_EXE_rowhook"))
            .args(["run", "-c", config.to_str().unwrap()])
            .env("ROWHOOK_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run rowhook");
        let stdout = read_all(child.stdout.take().unwrap());
        let stderr = read_all(child.stderr.take().unwrap());
        // Waiting on the list before a job is there, as a sender does.
        let consumer = {
            let url = redis.url();
            std::thread::spawn(move || consume(&url, &["--jobs", &jobs, "--timeout", "60"]))
        };

        server.sql_file(&root().join("examples/sms.sql"));
        let (sent, consumer_log) = consumer.join().unwrap();
        // A job that should not be there (a draft, an update) gets a moment
        // to show up before the stop.
        std::thread::sleep(Duration::from_millis(300));
        let status = interrupt(child);
        let stderr = String::from_utf8(stderr.join().unwrap()).unwrap();
        assert!(
            status.success(),
            "sms-outbox: rowhook run ended with {status}: {stderr}"
        );
        assert!(stderr.contains("rowhook: stopped after"), "{stderr}");
        assert_eq!(stdout.join().unwrap(), b"", "the jobs go to Redis only");
        assert!(consumer_log.ends_with(" dropped 0 duplicates\n"), "{consumer_log}");
        assert_eq!(queued(&redis), 0, "no job beyond the replay's");
        let _ = std::fs::remove_dir_all(&dir);

        assert_eq!(sent, replayed, "sms-outbox: live and replayed differ");
        golden(SMS_OUTBOX.golden, &sent);
    }

    /// A re-delivery, as after a crash before the checkpoint: the same binlog
    /// replayed again (`replay` keeps no checkpoint) pushes every job a
    /// second time, with the same job id. The consumer sends each job once
    /// and drops the copies, also those that come after it sent the first.
    #[test]
    fn sms_outbox_redelivered_jobs_are_sent_once() {
        handlers_built();
        let redis = Redis::start("sms-twice", &[]);
        let (dir, config) = sandbox_for("twice", &redis, None);
        let expected = std::fs::read_to_string(root().join("tests/golden").join(SMS_OUTBOX.golden)).unwrap();
        let jobs = expected.lines().count();
        let ids: Vec<&str> = expected
            .lines()
            .map(|l| l.rsplit_once("(job ").unwrap().1.trim_end_matches(')'))
            .collect();

        replay_into(&config);
        replay_into(&config);
        assert_eq!(queued(&redis), 2 * jobs as i64, "every job pushed twice");
        let (sent, stderr) = consume(&redis.url(), &["--timeout", "1"]);
        golden(SMS_OUTBOX.golden, &sent);
        let dropped: Vec<&str> = stderr
            .lines()
            .filter_map(|l| l.strip_prefix("sms-consumer: job "))
            .map(|l| l.strip_suffix(" was sent already, dropped").unwrap())
            .collect();
        assert_eq!(dropped, ids, "{stderr}");
        assert!(
            stderr.ends_with(&format!("sent {jobs}, dropped {jobs} duplicates\n")),
            "{stderr}"
        );

        // Late copies, after the first ones were sent: dropped all the same.
        replay_into(&config);
        let (sent, stderr) = consume(&redis.url(), &["--timeout", "1"]);
        assert_eq!(sent, "", "{stderr}");
        assert!(
            stderr.ends_with(&format!("sent 0, dropped {jobs} duplicates\n")),
            "{stderr}"
        );
        assert_eq!(queued(&redis), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
