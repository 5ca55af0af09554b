//! Hot reload under load, and modules refused at load: `rowhook run` against
//! a live server while the handler's module file is replaced, by rename and
//! in place, with good versions and with files that must not serve.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::{Server, build_guest, read, root, spawn_run, temp_dir, wait_for};

/// Builds the test guests (`tests/guests`, one workspace; the reload,
/// crash and echo handlers are in `suite/`) and returns the directory
/// holding their `.wasm` files.
pub fn suite_guests() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let v1 = build_guest(&root().join("tests/guests"), "reload_v1");
        v1.parent().expect("a directory").to_owned()
    })
}

/// Kills the child on drop, so a failed assertion leaves no daemon behind.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Replaces `target` atomically: write a temp file beside it, then rename.
fn swap_by_rename(from: &Path, target: &Path) {
    let tmp = target.with_extension("wasm.tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, target).unwrap();
}

/// Rewrites `target` in place in two halves with a pause between, as a slow
/// copy would: the reloader must not compile the half-written file.
fn swap_in_place(from: &Path, target: &Path) {
    use std::io::Write;
    let bytes = std::fs::read(from).unwrap();
    let mut f = std::fs::File::create(target).unwrap();
    f.write_all(&bytes[..bytes.len() / 2]).unwrap();
    f.flush().unwrap();
    std::thread::sleep(Duration::from_millis(60));
    f.write_all(&bytes[bytes.len() / 2..]).unwrap();
}

/// Thousands of row changes flow while the handler's module is swapped
/// seven times, good and bad versions alternating. Every change is handled
/// exactly once, in order; the state counter carries across every swap; the
/// bad files are refused, each with its reason, while the previous version
/// keeps serving.
#[test]
fn hot_reload_under_load_loses_and_repeats_nothing() {
    let wasm = suite_guests();
    let server = std::sync::Arc::new(Server::start(&[]));
    server.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v INT NOT NULL);");
    let dir = temp_dir("reload-load");
    let module = dir.join("handler.wasm");
    std::fs::copy(wasm.join("reload_v1.wasm"), &module).unwrap();
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[source]
url = "{url}"
server_id = 7301
start = "earliest"

[sinks.out]
kind = "file"
path = "out.log"

[[handlers]]
name = "counter"
module = "handler.wasm"
tables = ["app.t"]
sinks = ["out"]
on_error = "halt"
"#,
            url = server.url()
        ),
    )
    .unwrap();
    let log_path = dir.join("rowhook.log");
    let daemon = Daemon(spawn_run(&config, &log_path));
    let out = dir.join("out.log");

    // The writer: transactions of 5 rows, paced, until told to stop; then 20
    // more. Returns the number of rows written.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let server = server.clone();
        std::thread::spawn(move || {
            let mut next = 1u32;
            let mut tail = 20;
            loop {
                let mut sql = String::new();
                for _ in 0..20 {
                    let rows: Vec<String> = (next..next + 5).map(|i| format!("({i},{})", i * 7)).collect();
                    sql.push_str(&format!(
                        "INSERT INTO app.t VALUES {};\nDO SLEEP(0.004);\n",
                        rows.join(",")
                    ));
                    next += 5;
                }
                server.sql(&sql);
                if stop.load(Ordering::SeqCst) {
                    tail -= 1;
                    if tail == 0 {
                        return next - 1;
                    }
                }
            }
        })
    };

    let lines = || read(&out).lines().count();
    let count = |needle: &str| read(&log_path).matches(needle).count();
    wait_for("the first changes", Duration::from_secs(60), || lines() > 50);
    let (mut reloaded, mut refused) = (0, 0);
    let truncated = dir.join("truncated.wasm");
    let v1 = std::fs::read(wasm.join("reload_v1.wasm")).unwrap();
    std::fs::write(&truncated, &v1[..v1.len() / 3]).unwrap();
    // Paths that are no module at all, renamed over the module: a FIFO
    // (reading it would block the reload thread forever), a link to an
    // endless device, a link to a file whose bytes must not reach the log.
    let fifo = dir.join("fifo.wasm");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let zero = dir.join("zero.wasm");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let passwd = dir.join("passwd.wasm");
    std::os::unix::fs::symlink("/etc/passwd", &passwd).unwrap();
    // (what, new file, written in place rather than renamed, should load);
    // after the FIFO and the links only a rename replaces the module path.
    let steps = [
        ("v2 by rename", wasm.join("reload_v2.wasm"), false, true),
        ("a truncated file", truncated.clone(), false, false),
        ("v1 in place", wasm.join("reload_v1.wasm"), true, true),
        ("a WASI command", wasm.join("wrong-world.wasm"), false, false),
        ("a foreign import", wasm.join("foreign.wasm"), false, false),
        ("v2 in place", wasm.join("reload_v2.wasm"), true, true),
        ("a named pipe", fifo.clone(), false, false),
        ("a link to /dev/zero", zero.clone(), false, false),
        ("a link to /etc/passwd", passwd.clone(), false, false),
        ("v1 by rename", wasm.join("reload_v1.wasm"), false, true),
    ];
    for (what, from, in_place, good) in &steps {
        let before = lines();
        if *in_place {
            swap_in_place(from, &module);
        } else if from.symlink_metadata().unwrap().file_type().is_file() {
            swap_by_rename(from, &module);
        } else {
            // The FIFO or link itself takes the module's name.
            let moved = dir.join("moved.tmp");
            std::fs::rename(from, &moved).unwrap();
            std::fs::rename(&moved, &module).unwrap();
        }
        if *good {
            reloaded += 1;
            wait_for(what, Duration::from_secs(60), || count("handler reloaded") >= reloaded);
        } else {
            refused += 1;
            wait_for(what, Duration::from_secs(60), || count("reload refused") >= refused);
        }
        // Changes keep flowing between swaps.
        wait_for("changes after a swap", Duration::from_secs(60), || {
            lines() > before + 100
        });
    }
    stop.store(true, Ordering::SeqCst);
    let total = writer.join().unwrap() as usize;
    wait_for("every change", Duration::from_secs(60), || lines() >= total);
    std::thread::sleep(Duration::from_millis(300));
    let mut daemon = daemon;
    Command::new("kill")
        .args(["-INT", &daemon.0.id().to_string()])
        .status()
        .unwrap();
    let status = daemon.0.wait().unwrap();
    let log = read(&log_path);
    assert!(status.success(), "{log}");

    // Exactly once, in order, with the state counter unbroken.
    let text = read(&out);
    let mut versions: Vec<&str> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 3, "{line}");
        let want = (i + 1).to_string();
        assert_eq!((f[1], f[2]), (want.as_str(), want.as_str()), "line {}: {line}", i + 1);
        if versions.last() != Some(&f[0]) {
            versions.push(f[0]);
        }
    }
    assert_eq!(text.lines().count(), total, "{total} rows written");
    assert!(total >= 2000, "only {total} rows");
    assert_eq!(versions, ["v1", "v2", "v1", "v2", "v1"], "versions in output order");
    // Each bad file was refused with its reason, and named.
    assert!(log.contains("is not a valid WebAssembly component"), "{log}");
    assert!(log.contains("does not implement the rowhook:handler world"), "{log}");
    assert!(log.contains("imports `acme:raw/net@0.1.0`"), "{log}");
    assert!(log.contains("is a named pipe, not a regular file"), "{log}");
    assert!(log.contains("is a device, not a regular file"), "{log}");
    assert!(log.contains("is not a WebAssembly file"), "{log}");
    let passwd_start = std::fs::read("/etc/passwd").unwrap();
    let shown = format!("{:?}", &passwd_start[..4]);
    assert!(
        !log.contains(&shown) && !log.contains("root:"),
        "bytes of the file in the log: {log}"
    );
    assert_eq!(count("reload refused"), 6, "{log}");
    assert_eq!(count("handler reloaded"), 4, "{log}");
}

/// `rowhook check -c` names every problem of a config, each with its fix,
/// and passes a good one, server included; `replay` refuses a module that
/// imports what the sandbox does not give before reading anything.
#[test]
fn check_names_module_grant_limit_and_sink_problems() {
    let wasm = suite_guests();
    let dir = temp_dir("reload-check");
    let not_a_pipe = dir.join("not-a-pipe");
    std::fs::write(&not_a_pipe, "").unwrap();
    let v1 = wasm.join("reload_v1.wasm");
    let bad = format!(
        r#"
[sinks.out]
kind = "file"
path = "out/changes.log"

[sinks.pipe]
kind = "fifo"
path = "{pipe}"

[[handlers]]
name = "good"
module = "{v1}"
tables = ["app.t"]
sinks = ["out"]

[[handlers]]
name = "net"
module = "{sockets}"
tables = ["app.t"]
sinks = ["out"]

[[handlers]]
name = "command"
module = "{command}"
tables = ["app.t"]
sinks = ["pipe"]

[[handlers]]
name = "missing"
module = "nowhere/handler.wasm"
tables = ["app.t"]
sinks = ["out"]

[[handlers]]
name = "tiny"
module = "{v1}"
tables = ["app.t"]
sinks = ["out"]
limits = {{ memory_mb = 1 }}

[[handlers]]
name = "leaky"
module = "{leaky}"
tables = ["app.t"]
limits = {{ memory_mb = 16 }}
"#,
        pipe = not_a_pipe.display(),
        v1 = v1.display(),
        sockets = wasm.join("foreign.wasm").display(),
        command = wasm.join("wrong-world.wasm").display(),
        leaky = wasm.join("leaky.wasm").display(),
    );
    let config = dir.join("bad.toml");
    std::fs::write(&config, bad).unwrap();
    let out = crate::support::rowhook(&["check", "-c", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    let line = |prefix: &str| -> String {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in\n{stdout}"))
            .to_string()
    };
    assert!(line("ok   handler `good`: ").contains("compiles"), "{stdout}");
    assert!(
        line("ok   handler `good` (tenant").contains("may emit to out"),
        "{stdout}"
    );
    let net = line("FAIL handler `net`: ");
    assert!(
        net.contains("imports `acme:raw/net@0.1.0`") && net.contains("drop the dependency"),
        "{net}"
    );
    let command = line("FAIL handler `command`: ");
    assert!(
        command.contains("does not implement the rowhook:handler world") && command.contains("export_handler!"),
        "{command}"
    );
    let missing = line("FAIL handler `missing`: ");
    assert!(
        missing.contains("cannot read") && missing.contains("cargo build"),
        "{missing}"
    );
    let tiny = line("FAIL handler `tiny`: ");
    assert!(tiny.contains("would grow past limits.memory_mb = 1 MiB"), "{tiny}");
    let pipe = line("FAIL sink `pipe` (fifo): ");
    assert!(pipe.contains("is not a named pipe"), "{pipe}");
    assert!(line("ok   sink `out` (file): ").contains("changes.log"), "{stdout}");
    // The trial calls: the good handler's memory stays flat over made-up
    // changes; the leaky one's growth is found and projected to its cap.
    let trial = line("ok   handler `good`: 1000 calls with");
    assert!(trial.contains("made-up change") && trial.ends_with(": flat"), "{trial}");
    let leaky = line("FAIL handler `leaky`: 1000 calls");
    assert!(
        leaky.contains("it grows ~4") && leaky.contains("bytes per call and reaches memory_mb = 16 after about"),
        "{leaky}"
    );
    assert_eq!(stdout.lines().filter(|l| l.starts_with("FAIL")).count(), 6, "{stdout}");

    // A module with a foreign import stops `replay` before anything runs.
    let net_only = dir.join("net.toml");
    std::fs::write(
        &net_only,
        format!(
            "[sinks.out]\nkind = \"stdout\"\n\n[[handlers]]\nname = \"net\"\nmodule = \"{}\"\ntables = [\"shop.*\"]\nsinks = [\"out\"]\n",
            wasm.join("foreign.wasm").display()
        ),
    )
    .unwrap();
    let binlog = root().join("examples/binlog/shop-bin.000001");
    let out = crate::support::rowhook(&["replay", "-c", net_only.to_str().unwrap(), binlog.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("handler `net`") && stderr.contains("imports `acme:raw/net@0.1.0`"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    // A good config with a server: every line ok, the server's included.
    // The trial calls are shaped as the server describes the tables: a
    // handler that reads `id` and `status` gets them, typed, on every call
    // (without the server's description, each call would fail for want of
    // a column).
    let server = Server::start(&["--binlog-expire-logs-seconds=604800"]);
    server.sql(
        "CREATE DATABASE app;
         CREATE TABLE app.t (id BIGINT UNSIGNED PRIMARY KEY, status VARCHAR(16) NOT NULL,
           amount DECIMAL(10,2), note TEXT, at TIMESTAMP(3) NULL, kind ENUM('a','b'), raw VARBINARY(8));",
    );
    let columns = build_guest(&root().join("tests/guests"), "two_columns");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[source]\nurl = \"{}\"\nserver_id = 7302\n\n[sinks.out]\nkind = \"file\"\npath = \"out/changes.log\"\n\n[[handlers]]\nname = \"good\"\nmodule = \"{}\"\ntables = [\"app.t\"]\nsinks = [\"out\"]\n\n[[handlers]]\nname = \"columns\"\nmodule = \"{}\"\ntables = [\"app.*\"]\nsinks = [\"out\"]\n",
            server.url(),
            v1.display(),
            columns.display()
        ),
    )
    .unwrap();
    let out = crate::support::rowhook(&["check", "-c", good.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.lines().all(|l| l.starts_with("ok   ")), "{stdout}");
    for expected in [
        "handler `good`: ",
        "binlog_format=ROW",
        "server_id 7302 is free",
        "REPLICATION SLAVE",
        "binlogs are kept 7 days (binlog_expire_logs_seconds = 604800): rowhook stopped, or a handler held",
    ] {
        assert!(stdout.contains(expected), "{expected} missing from\n{stdout}");
    }
    let trial = stdout
        .lines()
        .find(|l| l.starts_with("ok   handler `columns`: 1000 calls"))
        .unwrap_or_else(|| panic!("no trial line for `columns` in\n{stdout}"));
    assert!(
        trial.contains("6 made-up change(s) shaped as information_schema describes 1 table(s)")
            && trial.contains("every call returned ok"),
        "{trial}"
    );
}

/// A module path that names no module is refused at start, at once and
/// unread: a FIFO (which would block), a link to an endless device, a file
/// over `limits.module_mb`, and any file that is not WebAssembly, whose bytes
/// are never shown.
#[test]
fn module_paths_that_are_no_module_are_refused_unread() {
    let dir = temp_dir("reload-no-module");
    let binlog = crate::support::root().join("examples/binlog/shop-bin.000001");
    nix::unistd::mkfifo(&dir.join("fifo.wasm"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.wasm")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd.wasm")).unwrap();
    std::fs::create_dir(dir.join("dir.wasm")).unwrap();
    let mut big = b"\0asm\x0d\0\x01\0".to_vec();
    big.resize(2 << 20, 0);
    std::fs::write(dir.join("big.wasm"), &big).unwrap();
    for (module, limit, expect) in [
        ("fifo.wasm", "", "is a named pipe, not a regular file"),
        ("zero.wasm", "", "is a device, not a regular file"),
        ("dir.wasm", "", "is a directory, not a regular file"),
        ("passwd.wasm", "", "is not a WebAssembly file"),
        (
            "big.wasm",
            "limits = { module_mb = 1 }",
            "is larger than 1 MiB (limits.module_mb)",
        ),
    ] {
        let config = dir.join(format!("{module}.toml"));
        std::fs::write(
            &config,
            format!("[[handlers]]\nname = \"h\"\nmodule = \"{module}\"\ntables = [\"shop.*\"]\n{limit}\n"),
        )
        .unwrap();
        let started = std::time::Instant::now();
        for args in [
            vec!["check", "-c", config.to_str().unwrap()],
            vec!["replay", "-c", config.to_str().unwrap(), binlog.to_str().unwrap()],
        ] {
            let out = crate::support::rowhook(&args);
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!out.status.success(), "{module} {args:?}: {all}");
            assert!(all.contains(expect), "{module} {args:?}: {all}");
            assert!(!all.contains("root:") && !all.contains("[114, 111, 111, 116"), "{all}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{module}: took {:?}",
            started.elapsed()
        );
    }
}
