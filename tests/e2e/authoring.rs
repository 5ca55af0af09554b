//! What handler authors run: `rowhook test` over a recorded binlog into
//! in-memory sinks, compared with golden files, with no server of any kind.

use crate::support::{build_guest, root, rowhook, temp_dir};

/// Golden files are recorded with `--update`, then compared: a match passes,
/// a difference fails naming the sink, the line and both texts, and a
/// missing golden file says how to record it. A sink whose server is not
/// there (redis on a closed port) is never opened: its messages are
/// captured, shown as JSON with their keys.
#[test]
fn rowhook_test_records_and_compares_golden_files_without_servers() {
    let minimal = build_guest(&root().join("guest-sdk/examples/minimal"), "minimal");
    let hostile = build_guest(&root().join("tests/guests"), "hostile");
    let dir = temp_dir("authoring-test");
    let config = dir.join("rowhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[sinks.orders_queue]
kind = "file"
path = "never-written.jsonl"

[sinks.out]
kind = "redis"
url = "redis://127.0.0.1:1"
stream = "orders"

[sinks.dead]
kind = "stdout"

[[handlers]]
name = "orders"
module = "{minimal}"
tables = ["shop.orders"]
ops = ["insert"]
sinks = ["orders_queue"]

[[handlers]]
name = "hostile"
module = "{hostile}"
tables = ["shop.sms_outbox", "shop.hits"]
sinks = ["out"]
breaker = {{ failures = 0 }}
on_error = "dead-letter"
dead_letter = "dead"
"#,
            minimal = minimal.display(),
            hostile = hostile.display()
        ),
    )
    .unwrap();
    let binlog = root().join("examples/binlog/shop-bin.000001");
    let test = |extra: &[&str]| {
        let mut args = vec![
            "test",
            "-c",
            config.to_str().unwrap(),
            "--binlog",
            binlog.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = rowhook(&args);
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };

    let (ok, stdout) = test(&[]);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("FAIL sink `orders_queue`: 3 messages;") && stdout.contains("run with --update"),
        "{stdout}"
    );

    let (ok, stdout) = test(&["--update"]);
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("ok   sink `orders_queue`: 3 messages recorded in"),
        "{stdout}"
    );
    let golden = dir.join("golden");
    assert_eq!(
        std::fs::read_to_string(golden.join("orders_queue.out")).unwrap(),
        "{\"order\":1001}\n{\"order\":1002}\n{\"order\":1003}\n"
    );
    // The redis sink's messages, with the keys the handler gave (none), as
    // JSON; the hostile handler's failures went to the dead-letter sink.
    let stream = std::fs::read_to_string(golden.join("out.out")).unwrap();
    let first: serde_json::Value = serde_json::from_str(stream.lines().next().unwrap()).unwrap();
    assert!(first["key"].is_null(), "{stream}");
    assert!(first["payload"].as_str().unwrap().starts_with("denied: "), "{stream}");
    // A redis stand-in takes what redis takes: the newline a line sink
    // refuses, bytes that are not UTF-8.
    assert!(
        stream.contains("NEWLINE ACCEPTED") && stream.contains("payload_base64"),
        "{stream}"
    );
    let dead = std::fs::read_to_string(golden.join("dead.out")).unwrap();
    assert!(dead.contains("hostile handler panics on purpose"), "{dead}");
    assert!(
        !dir.join("never-written.jsonl").exists(),
        "the real file sink was opened"
    );

    let (ok, stdout) = test(&[]);
    assert!(ok, "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok   sink")).count(),
        3,
        "{stdout}"
    );

    let text = std::fs::read_to_string(golden.join("orders_queue.out")).unwrap();
    std::fs::write(golden.join("orders_queue.out"), text.replace("1002", "1009")).unwrap();
    let (ok, stdout) = test(&[]);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("FAIL sink `orders_queue`: 3 messages; differs at line 2")
            && stdout.contains("expected: {\"order\":1009}")
            && stdout.contains("received: {\"order\":1002}"),
        "{stdout}"
    );
}

/// Writes a `lang` project with `rowhook new` into `project`, runs its
/// `test.sh` and checks that it passed out of the box, against the golden
/// output every language's project shares.
fn new_project_passes_its_test(lang: &str, project: &std::path::Path) {
    let name = format!("orders-{lang}");
    let out = rowhook(&["new", "--lang", lang, &name, "--dir", project.to_str().unwrap()]);
    assert!(out.status.success(), "{lang}: {}", String::from_utf8_lossy(&out.stderr));
    let test = std::process::Command::new("bash")
        .arg(project.join("test.sh"))
        .env("ROWHOOK", env!("CARGO_BIN_EXE_rowhook"))
        .output()
        .expect("run test.sh");
    let stdout = String::from_utf8_lossy(&test.stdout);
    assert!(
        test.status.success(),
        "{lang}: {stdout}{}",
        String::from_utf8_lossy(&test.stderr)
    );
    assert_eq!(stdout, "ok   sink `out`: 3 messages, as golden/out.out\n", "{lang}");
}

/// `rowhook new` writes a Rust project that builds and passes its own test
/// out of the box, with the SDK it ships; a second one into the same place
/// is refused.
#[test]
fn rowhook_new_writes_a_rust_project_that_passes_its_own_test() {
    let project = temp_dir("authoring-new-rust").join("orders-rust");
    new_project_passes_its_test("rust", &project);
    let again = rowhook(&["new", "orders-rust", "--dir", project.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists and is not empty"));
}

/// `rowhook new` in JavaScript, Python and C: each project builds with its
/// language's toolchain and passes its own test out of the box, against the
/// same golden output as the Rust one.
#[test]
fn rowhook_new_writes_js_python_and_c_projects_that_pass_their_own_tests() {
    let dir = temp_dir("authoring-new-langs");
    for lang in ["js", "python", "c"] {
        new_project_passes_its_test(lang, &dir.join(lang));
    }
}
