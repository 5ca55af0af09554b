//! The exec sink with real scripts as the command, fed by the `payload`
//! test guest (each inserted row's `payload` column is the message):
//! hostile field values reach the command as one argument or not at all;
//! a hanging command is killed with its process group; a retryable exit
//! is retried until it succeeds; the once-only ledger across SIGKILLs of
//! `rowhook run`; `rowhook check` on bad configs.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Server, rowhook, spawn_run, temp_dir};

/// The `payload` guest, built once.
fn payload_guest() -> PathBuf {
    crate::reload::suite_guests().join("payload.wasm")
}

/// An executable bash script `body` at `dir/name`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Records each call's arguments, NUL-separated, in `calls/<n>` (cwd).
const RECORD: &str = r#"mkdir -p calls; n=$(ls calls | wc -l); printf '%s\0' "$@" >"calls/$(printf %04d "$n")""#;

/// The calls `RECORD` made in `dir`, in order, each its arguments.
fn calls(dir: &Path) -> Vec<Vec<String>> {
    let Ok(entries) = std::fs::read_dir(dir.join("calls")) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).unwrap();
            let text = String::from_utf8(bytes).unwrap();
            let mut args: Vec<String> = text.split('\0').map(str::to_owned).collect();
            assert_eq!(args.pop().as_deref(), Some(""), "{text:?}");
            args
        })
        .collect()
}

/// A config in `dir`: the `payload` handler on `x.calls` inserts, writing
/// to the exec sink `out` (`keys`), failures dead-lettered to `dead.jsonl`.
fn config(dir: &Path, source: &str, keys: &str) -> PathBuf {
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"{source}
[state]
path = "state"

[sinks.out]
kind = "exec"
{keys}

[sinks.dead]
kind = "file"
path = "dead.jsonl"

[[handlers]]
name = "payload"
module = "{module}"
tables = ["x.calls"]
ops = ["insert"]
sinks = ["out"]
on_error = "dead-letter"
dead_letter = "dead"
"#,
            module = payload_guest().display()
        ),
    )
    .unwrap();
    config
}

/// A private server with table `x.calls`, and `payloads` inserted (SQL
/// expressions), one transaction each; returns it and its binlog.
fn server_with(payloads: &[&str]) -> (Server, PathBuf) {
    let server = Server::start(&[]);
    let mut sql = String::from(
        "CREATE DATABASE x; CREATE TABLE x.calls (id INT AUTO_INCREMENT PRIMARY KEY, payload LONGTEXT NOT NULL);\n",
    );
    for p in payloads {
        sql.push_str(&format!("INSERT INTO x.calls (payload) VALUES ({p});\n"));
    }
    server.sql(&sql);
    let binlog = server.binlog("mysql-bin.000001");
    (server, binlog)
}

/// `rowhook replay` of `binlog` with `config`: its output, which must be a success.
fn replay(config: &Path, binlog: &Path) -> String {
    let out = rowhook(&["replay", "-c", config.to_str().unwrap(), binlog.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// The dead letters' errors, in order.
fn dead_errors(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("dead.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["error"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// The hostile values of the issue, as SQL building each payload.
const HOSTILE: &[&str] = &[
    "JSON_OBJECT('ip', '203.0.113.7')",
    "JSON_OBJECT('ip', '203.0.113.7; rm -rf sentinel')",
    "JSON_OBJECT('ip', '$(touch pwned)')",
    "JSON_OBJECT('ip', '`touch pwned`')",
    "JSON_OBJECT('ip', '203.0.113.7 203.0.113.8')",
    "JSON_OBJECT('ip', CONCAT('203.0.113.7', CHAR(10), 'touch pwned'))",
    "JSON_OBJECT('ip', REPEAT('1', 1048576))",
    "JSON_OBJECT('other', '203.0.113.7')",
    "JSON_OBJECT('ip', JSON_ARRAY('203.0.113.7'))",
    "'\"203.0.113.7\"'",
    "JSON_OBJECT('ip', '2001:db8::1')",
];

/// With an exact pattern (`ip`), only addresses reach the command; every
/// other payload is refused before anything runs, named by placeholder
/// and reason, never by its value.
#[test]
fn hostile_fields_never_reach_a_strict_command() {
    let dir = temp_dir("exec-strict");
    std::fs::create_dir(dir.join("sentinel")).unwrap();
    let prog = script(&dir, "record.sh", RECORD);
    let config = config(
        &dir,
        "",
        &format!(
            "command = [\"{}\", \"-s\", \"{{ip}}\", \"-j\", \"DROP\"]\nplaceholders = {{ ip = \"ip\" }}\ncwd = \".\"",
            prog.display()
        ),
    );
    let (_server, binlog) = server_with(HOSTILE);
    let log = replay(&config, &binlog);
    assert_eq!(
        calls(&dir),
        [["-s", "203.0.113.7", "-j", "DROP"], ["-s", "2001:db8::1", "-j", "DROP"]]
    );
    assert!(dir.join("sentinel").exists() && !dir.join("pwned").exists());
    let errors = dead_errors(&dir);
    let reasons: Vec<&str> = errors
        .iter()
        .map(|e| e.split(": ").skip(2).collect::<Vec<_>>().join(": ").leak() as &str)
        .map(|e| e.split("; nothing of the batch").next().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "placeholder `{ip}`: field `ip` (28 bytes) does not match its pattern `ip`",
            "placeholder `{ip}`: field `ip` (14 bytes) does not match its pattern `ip`",
            "placeholder `{ip}`: field `ip` (13 bytes) does not match its pattern `ip`",
            "placeholder `{ip}`: field `ip` (23 bytes) does not match its pattern `ip`",
            "placeholder `{ip}`: field `ip` (23 bytes) does not match its pattern `ip`",
            "placeholder `{ip}`: field `ip` has 1048576 bytes, more than the 4096 a placeholder takes",
            "placeholder `{ip}`: the payload has no field `ip`",
            "placeholder `{ip}`: field `ip` is an array, not a string or number",
            "the payload is a string in JSON, not an object with the placeholders' fields",
        ],
        "{errors:#?}"
    );
    for text in errors.iter().map(String::as_str).chain([log.as_str()]) {
        for value in ["rm -rf", "touch pwned", "203.0.113.8", "1111111111"] {
            assert!(!text.contains(value), "{value} in {text}");
        }
    }
}

/// With a pattern that lets anything through, a hostile value is still
/// one argument, byte for byte: no shell ever reads it.
#[test]
fn a_loose_pattern_still_passes_each_value_as_one_argument() {
    let dir = temp_dir("exec-loose");
    std::fs::create_dir(dir.join("sentinel")).unwrap();
    let prog = script(&dir, "record.sh", RECORD);
    let config = config(
        &dir,
        "",
        &format!(
            "command = [\"{}\", \"--src={{ip}}\", \"{{{{literal}}}}\"]\nplaceholders = {{ ip = \"regex:(?s).*\" }}\ncwd = \".\"",
            prog.display()
        ),
    );
    let (_server, binlog) = server_with(&HOSTILE[..7]);
    replay(&config, &binlog);
    let got: Vec<Vec<String>> = calls(&dir);
    let firsts: Vec<&str> = got.iter().map(|c| c[0].as_str()).collect();
    assert_eq!(
        firsts,
        [
            "--src=203.0.113.7",
            "--src=203.0.113.7; rm -rf sentinel",
            "--src=$(touch pwned)",
            "--src=`touch pwned`",
            "--src=203.0.113.7 203.0.113.8",
            "--src=203.0.113.7\ntouch pwned",
        ]
    );
    assert!(got.iter().all(|c| c.len() == 2 && c[1] == "{literal}"), "{got:?}");
    assert!(dir.join("sentinel").exists() && !dir.join("pwned").exists());
    // The 1 MB value is over the 4096 bytes a placeholder takes.
    assert_eq!(dead_errors(&dir).len(), 1);
}

/// A command that exits with a retryable code is retried until it
/// succeeds; one that hangs is killed with what it started, at its
/// timeout, and (on_timeout = "fail") dead-lettered; the stream goes on.
#[test]
fn a_hanging_command_is_killed_and_a_retryable_failure_is_retried() {
    let dir = temp_dir("exec-hang");
    let prog = script(
        &dir,
        "flaky.sh",
        &format!(
            r#"case "$1" in
  flaky) n=$(cat tries 2>/dev/null || echo 0); echo $((n + 1)) >tries
         if [ "$n" -lt 2 ]; then echo "busy, try $n" >&2; exit 75; fi ;;
  hang) sleep 60 & echo $! >hung.pid; wait; exit 0 ;;
  broken) echo "cannot do that" >&2; exit 2 ;;
esac
{RECORD}"#
        ),
    );
    let config = config(
        &dir,
        "",
        &format!(
            "command = [\"{}\", \"{{mode}}\", \"{{ip}}\"]\nplaceholders = {{ mode = \"word\", ip = \"ip\" }}\ncwd = \".\"\ntimeout_ms = 300\non_timeout = \"fail\"\nretry_exit_codes = [75]\nretries = 5",
            prog.display()
        ),
    );
    let (_server, binlog) = server_with(&[
        "JSON_OBJECT('mode', 'flaky', 'ip', '203.0.113.1')",
        "JSON_OBJECT('mode', 'hang', 'ip', '203.0.113.2')",
        "JSON_OBJECT('mode', 'broken', 'ip', '203.0.113.3')",
        "JSON_OBJECT('mode', 'fine', 'ip', '203.0.113.4')",
    ]);
    let started = Instant::now();
    let log = replay(&config, &binlog);
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    assert_eq!(std::fs::read_to_string(dir.join("tries")).unwrap().trim(), "3");
    assert_eq!(calls(&dir), [["flaky", "203.0.113.1"], ["fine", "203.0.113.4"]]);
    assert!(
        log.contains("exited with 75 (in retry_exit_codes): busy, try 0"),
        "{log}"
    );
    let errors = dead_errors(&dir);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].contains("was still running after 300 ms and was killed with its process group"),
        "{}",
        errors[0]
    );
    assert!(errors[1].contains("exited with 2: cannot do that"), "{}", errors[1]);
    let hung = std::fs::read_to_string(dir.join("hung.pid")).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", hung.trim())).unwrap_or_default();
    assert!(
        status.is_empty() || status.contains("State:\tZ"),
        "the hanging command's child outlived the timeout: {status}"
    );
}

/// `rowhook check` names what is wrong with an exec sink, and the fix.
#[test]
fn check_names_a_bad_exec_config() {
    let dir = temp_dir("exec-check");
    let prog = script(&dir, "ok.sh", "exit 0");
    let check = |keys: &str| {
        let config = config(&dir, "", keys);
        let out = Command::new(env!("CARGO_BIN_EXE_rowhook"))
            .args(["check", "-c"])
            .arg(&config)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, out) = check("command = [\"iptables\", \"-s\", \"{ip}\"]\nplaceholders = { ip = \"ip\" }");
    assert!(!ok);
    assert!(
        out.contains("sinks.out.command[0]: `iptables` is not an absolute path") && out.contains("command -v iptables"),
        "{out}"
    );
    let (ok, out) = check(&format!(
        "command = [\"{}\", \"{{ip}}\", \"{{port}}\"]\nplaceholders = {{ ip = \"ip\" }}",
        prog.display()
    ));
    assert!(
        !ok && out.contains("sinks.out.placeholders: has no pattern for `{port}`"),
        "{out}"
    );
    let (ok, out) = check(&format!(
        "command = [\"{}\", \"{{ip}}\"]\nplaceholders = {{ ip = \"ip\" }}\ncwd = \"missing\"",
        prog.display()
    ));
    assert!(!ok, "{out}");
    assert!(
        out.contains("sink `out` (exec): cwd ")
            && out.contains("missing: No such file or directory")
            && out.contains("create it or change cwd"),
        "{out}"
    );
    let (ok, out) = check(&format!(
        "command = [\"{}\", \"{{ip}}\"]\nplaceholders = {{ ip = \"ip\" }}\nonce_only = true",
        prog.display()
    ));
    assert!(
        out.contains(&format!(
            "sink `out` (exec): {} with 1 argument(s), 1 placeholder(s), once-only ledger",
            prog.display()
        )),
        "{ok} {out}"
    );
}

/// The numbers the commands recorded, and how often each.
fn ran(runs: &Path) -> HashMap<u64, usize> {
    let mut seen = HashMap::new();
    for line in std::fs::read_to_string(runs).unwrap_or_default().lines() {
        *seen.entry(line.parse().unwrap()).or_default() += 1;
    }
    seen
}

/// `rowhook run` killed with SIGKILL again and again while rows arrive,
/// with checkpoints far apart: without the ledger, commands run again for
/// changes after the last checkpoint; with `once_only`, never, and a
/// change whose command may not have run is logged as in doubt.
#[test]
fn once_only_runs_each_command_once_across_sigkills() {
    for once_only in [false, true] {
        let dir = temp_dir(&format!("exec-ledger-{once_only}"));
        let prog = script(&dir, "count.sh", r#"echo "$1" >>runs; sleep 0.02"#);
        let server = Arc::new(Server::start(&[]));
        server.sql(
            "CREATE DATABASE x; CREATE TABLE x.calls (id INT AUTO_INCREMENT PRIMARY KEY, payload LONGTEXT NOT NULL);",
        );
        let source = format!(
            "[source]\nurl = \"{}\"\nserver_id = 7501\nstart = \"earliest\"\nheartbeat_secs = 1\n",
            server.url()
        );
        let config_path = config(
            &dir,
            &source,
            &format!(
                "command = [\"{}\", \"{{n}}\"]\nplaceholders = {{ n = \"uint\" }}\ncwd = \".\"\nonce_only = {once_only}",
                prog.display()
            ),
        );
        let text = std::fs::read_to_string(&config_path).unwrap();
        std::fs::write(
            &config_path,
            text.replace("path = \"state\"", "path = \"state\"\ncommit_interval_ms = 1500"),
        )
        .unwrap();
        let log = dir.join("rowhook.log");

        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (server, stop) = (server.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let rows: Vec<String> = (n..n + 5).map(|i| format!("(JSON_OBJECT('n', {i}))")).collect();
                    server.sql(&format!("INSERT INTO x.calls (payload) VALUES {};", rows.join(",")));
                    n += 5;
                    std::thread::sleep(Duration::from_millis(40));
                }
                n
            })
        };
        for i in 0..5u64 {
            let mut child = spawn_run(&config_path, &log);
            std::thread::sleep(Duration::from_millis(700 + 131 * i));
            child.kill().unwrap();
            child.wait().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        let rows = writer.join().unwrap();

        // A last run catches up, then stops cleanly.
        let child = spawn_run(&config_path, &log);
        let deadline = Instant::now() + Duration::from_secs(120);
        // The messages logged as in doubt (each restart before the next
        // checkpoint logs them again).
        let in_doubt = || {
            let text = std::fs::read_to_string(&log).unwrap();
            let changes: HashSet<&str> = text
                .lines()
                .filter(|l| l.contains("rowhook never saw it end"))
                .filter_map(|l| l.split(' ').find(|w| w.starts_with("change=")))
                .collect();
            changes.len()
        };
        while (ran(&dir.join("runs")).len() + in_doubt()) < rows as usize {
            assert!(
                Instant::now() < deadline,
                "caught up to {} of {rows}",
                ran(&dir.join("runs")).len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(300));
        crate::support::interrupt(child);

        let seen = ran(&dir.join("runs"));
        let twice = seen.values().filter(|&&c| c > 1).count();
        let missing = (0..rows).filter(|n| !seen.contains_key(n)).count();
        eprintln!(
            "once_only = {once_only}: {rows} rows, {twice} run twice or more, {missing} not run, {} in doubt",
            in_doubt()
        );
        if once_only {
            assert_eq!(twice, 0, "a command ran twice with once_only");
            // A command killed with rowhook (SIGKILL reaches rowhook only:
            // the command has its own process group and finishes) ran; one
            // recorded as started in the instant before its spawn did not.
            assert!(
                missing <= in_doubt(),
                "{missing} commands never ran, {} in doubt",
                in_doubt()
            );
            assert!(in_doubt() <= 5, "at most one message in doubt per kill");
        } else {
            assert_eq!(missing, 0, "at-least-once");
            assert!(
                twice > 0,
                "SIGKILLs 1.5 s apart from checkpoints should have made a command run again"
            );
        }
    }
}

/// `uid` and `gid` (rowhook running as root, as it does here and in CI):
/// the shop binlog's new orders through the `minimal` handler into an exec
/// sink whose command, run as nobody/nogroup (65534), records its ids with
/// each order; the files it writes are nobody's.
#[test]
fn the_command_runs_as_the_configured_uid_and_gid() {
    assert!(
        nix_is_root(),
        "this test switches the command's user: run the tests as root, as CI does"
    );
    let dir = temp_dir("exec-uid");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    std::os::unix::fs::chown(&out, Some(65534), Some(65534)).unwrap();
    let prog = script(&dir, "who.sh", r#"echo "$1 $(id -u) $(id -g) $(id -G)" >>ids"#);
    let config = crate::sink_support::minimal_config(
        &dir,
        "",
        "exec",
        &format!(
            "command = [\"{}\", \"{{order}}\"]\nplaceholders = {{ order = \"uint\" }}\nenv = {{ PATH = \"/usr/bin:/bin\" }}\ncwd = \"out\"\nuid = 65534\ngid = 65534",
            prog.display()
        ),
        "",
    );
    let replayed = crate::sink_support::replay_shop(&config);
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    let ids = out.join("ids");
    assert_eq!(
        std::fs::read_to_string(&ids).unwrap(),
        "1001 65534 65534 65534\n1002 65534 65534 65534\n1003 65534 65534 65534\n"
    );
    let meta = std::fs::metadata(&ids).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&meta),
            std::os::unix::fs::MetadataExt::gid(&meta)
        ),
        (65534, 65534)
    );
}

/// Whether the tests run as root.
fn nix_is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    out.stdout == b"0\n"
}
