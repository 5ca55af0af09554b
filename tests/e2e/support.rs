use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A private MariaDB with the binlog on, stopped on drop.
pub struct Server {
    pub dir: PathBuf,
    pub port: u16,
}

impl Server {
    /// Starts a server; `extra` are mariadbd options.
    pub fn start(extra: &[&str]) -> Server {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rh-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        // Several tests start servers at once; a start that loses a race
        // for a port or for CPU is retried once.
        let mut out = None;
        for _ in 0..2 {
            let _ = Command::new("bash")
                .arg(root().join("tests/mariadb.sh"))
                .arg("stop")
                .arg(&dir)
                .status();
            let o = Command::new("bash")
                .arg(root().join("tests/mariadb.sh"))
                .arg("start")
                .arg(&dir)
                .args(extra)
                .env("MARIADB_OWNER_PID", std::process::id().to_string())
                .stderr(Stdio::inherit())
                .output()
                .expect("run tests/mariadb.sh");
            if o.status.success() {
                out = Some(o);
                break;
            }
        }
        let out = out.expect("test MariaDB did not start");
        let port = String::from_utf8_lossy(&out.stdout).trim().parse().expect("port");
        Server { dir, port }
    }

    /// `mysql://root@127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// Runs SQL through the mariadb client as root; panics on error.
    pub fn sql(&self, sql: &str) -> String {
        let out = self.sql_as("root", "", sql);
        assert!(
            out.status.success(),
            "SQL failed: {}\n{}",
            sql,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs SQL as a user, returning the raw output.
    pub fn sql_as(&self, user: &str, password: &str, sql: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new("mariadb")
            .args(["--no-defaults", "-h127.0.0.1", "-N", "-B", "--max-allowed-packet=1G"])
            .arg(format!("-P{}", self.port))
            .arg(format!("-u{user}"))
            .args((!password.is_empty()).then(|| format!("--password={password}")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mariadb client");
        // A client that cannot reach the server (a test restarting it)
        // exits before reading: its exit status says so, not the pipe.
        let _ = child.stdin.take().unwrap().write_all(sql.as_bytes());
        child.wait_with_output().unwrap()
    }

    /// Runs a SQL file.
    pub fn sql_file(&self, path: &Path) {
        self.sql(&std::fs::read_to_string(path).unwrap());
    }

    /// Path of binlog file `name`.
    pub fn binlog(&self, name: &str) -> PathBuf {
        self.dir.join("log").join(name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("tests/mariadb.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// Runs the rowhook binary; a run that takes over two minutes is killed and
/// fails the test instead of hanging it.
pub fn rowhook(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rowhook"))
        .args(args)
        .env("ROWHOOK_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rowhook");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).unwrap();
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut v).unwrap();
        v
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("rowhook {args:?} did not finish within two minutes");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Starts `rowhook run -c config` in the background, its log (at info)
/// appended to `log`.
pub fn spawn_run(config: &Path, log: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_rowhook"))
        .args(["run", "-c"])
        .arg(config)
        .env("ROWHOOK_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
        .spawn()
        .expect("run rowhook")
}

/// Runs rowhook and returns stdout, panicking with stderr on failure.
pub fn rowhook_ok(args: &[&str]) -> String {
    let out = rowhook(args);
    assert!(
        out.status.success(),
        "rowhook {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// A fresh, empty directory for one test: `rh-<tag>-<pid>` under the
/// system's temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rh-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Builds the guest crate, or workspace of guest crates (every member,
/// also where the root is itself a package), at `manifest_dir`
/// for wasm32-wasip2 (release) in its own `target` directory, where the
/// example configs point, and returns the component of crate `name` (with
/// `_` for `-`, as cargo names it).
pub fn build_guest(manifest_dir: &Path, name: &str) -> PathBuf {
    let target_dir = manifest_dir.join("target");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--workspace",
            "--quiet",
            "--manifest-path",
        ])
        .arg(manifest_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .expect("run cargo for the guest");
    assert!(
        status.success(),
        "building guest {name} failed (is the wasm32-wasip2 target installed?)"
    );
    let wasm = target_dir.join("wasm32-wasip2/release").join(format!("{name}.wasm"));
    assert!(wasm.exists(), "{} was not built", wasm.display());
    wasm
}

/// Compares `actual` with golden file `name`, or rewrites it with ROWHOOK_BLESS=1.
pub fn golden(name: &str, actual: &str) {
    let path = root().join("tests/golden").join(name);
    if std::env::var_os("ROWHOOK_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("golden file {} missing; run with ROWHOOK_BLESS=1", path.display()));
    if expected != actual {
        let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
        let first = e
            .iter()
            .zip(&a)
            .position(|(x, y)| x != y)
            .unwrap_or(e.len().min(a.len()));
        panic!(
            "{} differs from the output at line {} ({} expected lines, {} actual)\nexpected: {}\nactual:   {}",
            path.display(),
            first + 1,
            e.len(),
            a.len(),
            e.get(first).unwrap_or(&"<none>"),
            a.get(first).unwrap_or(&"<none>")
        );
    }
}

/// Parses JSON lines.
pub fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect()
}

/// Sends SIGINT (Ctrl-C), as an operator stops `rowhook run`, and waits up
/// to 20 s for the exit.
pub fn interrupt(mut child: Child) -> ExitStatus {
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    wait_until(
        &mut child,
        Instant::now() + Duration::from_secs(20),
        "rowhook run after SIGINT",
    )
}

/// Waits for `child` until `deadline`; kills it and fails the test after that.
pub fn wait_until(child: &mut Child, deadline: Instant, what: &str) -> ExitStatus {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh directory (tagged `tag`) holding a test CA (`ca.pem`, `ca.key`)
/// and a server certificate it signed for `localhost` and `127.0.0.1`
/// (`server.pem`, `server.key`), made by `openssl`, valid for two days.
pub fn test_certs(tag: &str) -> PathBuf {
    let certs = temp_dir(tag);
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(&certs).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=rowhook test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(certs.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    certs
}

/// Polls `done` every 20 ms until it holds, failing the test after `timeout`.
pub fn wait_for(what: &str, timeout: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The text of a file, or nothing if it is not there (yet).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
