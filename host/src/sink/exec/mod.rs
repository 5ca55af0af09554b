//! `kind = "exec"`: a granted command, run once per message.
//!
//! The operator names one executable and an argument template in the
//! config; a handler's message is a JSON object whose fields fill the
//! template's placeholders, each checked against its pattern. Handlers
//! choose values, never commands.
//!
//! - **No shell.** The executable is run directly (`execve`), never looked
//!   up in `PATH`; a placeholder fills exactly one argument, so `;`,
//!   `$(…)`, quotes, spaces and newlines in a field are that argument's
//!   bytes, if its pattern lets them through at all. A payload that does
//!   not fit (not a JSON object, a field missing, not a string or number,
//!   longer than 4096 bytes, or not matching its pattern) refuses the whole
//!   batch as permanent before anything of it runs. Messages name the
//!   placeholder and what was wrong, never the value.
//! - **One at a time, in order.** The batch's commands run one after the
//!   other; the sink keeps no queue, so a slow command is backpressure.
//! - **A clean process.** The environment holds only the config's `env`;
//!   the working directory is the config's `cwd`; stdin is `/dev/null`;
//!   with `uid`/`gid` (rowhook running as root) the command runs as that
//!   user, without rowhook's supplementary groups. Each command is the
//!   leader of its own process group.
//! - **Bounded.** A command still running at `timeout_ms` is killed with
//!   its whole process group (SIGKILL); `on_timeout` says whether that is
//!   retried (unavailable) or permanent. Whatever the command leaves behind
//!   in its group when it exits is killed too. Of stdout and stderr the
//!   first `output_max_bytes` each are kept for the log (the rest is read
//!   and dropped, and the log says how much).
//! - **Exit status.** 0 acknowledges the message. A code listed in
//!   `retry_exit_codes` is unavailable (the pipeline retries the batch);
//!   another code is permanent (the handler's `on_error` decides). A
//!   command killed by a signal it was not sent by rowhook is unavailable.
//! - **Cancel-safe.** A dropped `write_batch` (rowhook stopping mid-command)
//!   kills the running command's process group at once: stopping never
//!   waits for a command. The batch counts as not delivered.
//! - **At-least-once**, like every sink: a command may run again for a
//!   message after a crash or a stop (the retry runs the whole batch
//!   again). With `once_only`, the state store keeps a ledger (see
//!   [`crate::store::Ledger`]): before a command starts its message is
//!   recorded as started, durably, and once it exits 0 as done. A message
//!   recorded as done is never run again; one recorded as started and
//!   never finished (rowhook died or was stopped while it ran, so it may or
//!   may not have taken effect) is not run again either: it is logged at
//!   `warn` and counted (`commands_in_doubt`), for the operator to look at.
//!   A command that failed (any non-zero exit, a timeout) has its record
//!   removed, so the retry runs it again. The checkpoint drops the records
//!   of the transactions it moves past.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt as _};

mod config;
mod template;

pub use self::config::RawExecSink;
pub use self::template::{Arg, MAX_VALUE, Pattern};
use super::kind::SinkKind;
use super::{Message, Sink, SinkError};
use crate::probe::CheckLine;
use crate::problem::SinkContext;
use crate::store::{Ledger, LedgerMark};
use crate::telemetry::{Counter, Registry};

/// How long the rest of a command's output is awaited once its process
/// group was killed (a descendant that left the group may hold the pipes).
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(1);

/// `kind = "exec"` in the registry.
#[derive(Debug)]
pub struct ExecKind;

impl SinkKind for ExecKind {
    const NAME: &'static str = "exec";
    type Raw = Box<RawExecSink>;
    type Options = ExecOptions;
    type Sink = ExecSink;

    fn resolve(raw: Box<RawExecSink>, cx: &mut SinkContext<'_>) -> Option<ExecOptions> {
        config::resolve(*raw, cx)
    }

    async fn open(name: &str, options: &ExecOptions) -> Result<ExecSink, SinkError> {
        Ok(ExecSink::new(name, options.clone()))
    }

    fn probe(name: &str, options: &ExecOptions) -> CheckLine {
        let head = format!("sink `{name}` (exec)");
        if let Err(what) = config::executable_file(&options.program) {
            return CheckLine::fail(format!("{head}: {what}; point command[0] at an executable file"));
        }
        match std::fs::metadata(&options.cwd) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return CheckLine::fail(format!(
                    "{head}: cwd {} is not a directory; create it or change cwd",
                    options.cwd.display()
                ));
            }
            Err(e) => {
                return CheckLine::fail(format!(
                    "{head}: cwd {}: {e}; create it or change cwd",
                    options.cwd.display()
                ));
            }
        }
        if (options.uid.is_some() || options.gid.is_some()) && !nix::unistd::geteuid().is_root() {
            return CheckLine::fail(format!(
                "{head}: uid/gid need rowhook to run as root; run it as root or remove them"
            ));
        }
        let placeholders = options.args.iter().filter(|a| a.placeholder().is_some()).count();
        CheckLine::ok(format!(
            "{head}: {} with {} argument(s), {placeholders} placeholder(s){}",
            options.program.display(),
            options.args.len(),
            if options.once_only { ", once-only ledger" } else { "" }
        ))
    }

    fn one_line_per_message(_: &ExecOptions) -> bool {
        false
    }
}

/// The command's environment. Its values may be credentials: `Debug`
/// shows the names only.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct EnvVars(pub BTreeMap<String, String>);

impl fmt::Debug for EnvVars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EnvVars")
            .field(&self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Settings of an exec sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOptions {
    /// The executable, absolute.
    pub program: PathBuf,
    /// Its arguments (after the program name).
    pub args: Vec<Arg>,
    /// Each placeholder's pattern.
    pub patterns: BTreeMap<String, Pattern>,
    /// The command's whole environment.
    pub env: EnvVars,
    /// Its working directory.
    pub cwd: PathBuf,
    /// When it is killed.
    pub timeout: Duration,
    /// Whether a command killed at its timeout is retried (else permanent).
    pub timeout_retries: bool,
    /// Exit codes that are retried, sorted.
    pub retry_exit_codes: Vec<i32>,
    /// Bytes kept of each of stdout and stderr.
    pub output_max: usize,
    /// The user to run as.
    pub uid: Option<u32>,
    /// The group to run as.
    pub gid: Option<u32>,
    /// Whether the once-only ledger is kept.
    pub once_only: bool,
}

/// What the sink counts, beyond what the pipeline counts of every sink.
#[derive(Debug, Default)]
struct ExecCounters {
    commands: Counter,
    in_doubt: Counter,
}

/// Runs the configured command once per message.
#[derive(Debug)]
pub struct ExecSink {
    name: String,
    opts: ExecOptions,
    ledger: Option<Ledger>,
    counters: ExecCounters,
}

impl ExecSink {
    /// A sink that runs `opts`' command.
    pub fn new(name: &str, opts: ExecOptions) -> ExecSink {
        ExecSink {
            name: name.to_owned(),
            opts,
            ledger: None,
            counters: ExecCounters::default(),
        }
    }

    /// The argument lists of `batch`, or the first message that does not fit.
    fn fill_all(&self, batch: &[Message]) -> Result<Vec<Vec<String>>, SinkError> {
        batch
            .iter()
            .map(|m| {
                template::fill(&self.opts.args, |name| &self.opts.patterns[name], &m.payload).map_err(|unfit| {
                    SinkError::permanent(
                        &self.name,
                        format!(
                            "message {}#{}: {unfit}; nothing of the batch was run: emit a JSON object whose fields match the placeholders' patterns",
                            m.id, m.index
                        ),
                    )
                })
            })
            .collect()
    }

    /// Runs the command of `m` with `argv`, minding the ledger.
    async fn run_once(&mut self, m: &Message, argv: &[String]) -> Result<(), SinkError> {
        let ledger = if self.opts.once_only { self.ledger.clone() } else { None };
        let ledger_error = |e: anyhow::Error| {
            SinkError::unavailable(&self.name, format!("the once-only ledger in the state store: {e:#}"))
        };
        if let Some(l) = &ledger {
            match l.mark(&self.name, &m.id, m.index).map_err(ledger_error)? {
                Some(LedgerMark::Done) => {
                    tracing::debug!(sink = %self.name, change = %m.id, index = m.index, "command already ran for this message; not run again");
                    return Ok(());
                }
                Some(LedgerMark::Started) => {
                    self.counters.in_doubt.inc();
                    tracing::warn!(
                        sink = %self.name,
                        change = %m.id,
                        index = m.index,
                        "command was started for this message and rowhook never saw it end (a crash or a stop while it ran): it may or may not have taken effect; once_only does not run it again, check by hand"
                    );
                    return Ok(());
                }
                None => l.start(&self.name, &m.id, m.index).map_err(ledger_error)?,
            }
        }
        // No await between the record above and the spawn: a stop cannot
        // leave a "started" record for a command that never started.
        let result = run(&self.name, &self.opts, m, argv).await;
        self.counters.commands.inc();
        if let Some(l) = &ledger {
            match &result {
                Ok(()) => l.done(&self.name, &m.id, m.index).map_err(ledger_error)?,
                Err(_) => l.forget(&self.name, &m.id, m.index).map_err(ledger_error)?,
            }
        }
        result
    }
}

impl Sink for ExecSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write_batch(&mut self, batch: &[Message]) -> Result<(), SinkError> {
        let argvs = self.fill_all(batch)?;
        for (m, argv) in batch.iter().zip(&argvs) {
            self.run_once(m, argv).await?;
        }
        Ok(())
    }

    async fn health(&mut self) -> Result<(), SinkError> {
        config::executable_file(&self.opts.program)
            .map_err(|what| SinkError::permanent(&self.name, format!("{what}; point command[0] at an executable file")))
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn attach_ledger(&mut self, ledger: &Ledger) {
        if self.opts.once_only {
            self.ledger = Some(ledger.clone());
        }
    }

    fn register_metrics(&self, registry: &Registry) {
        let sink = || vec![("sink", self.name.clone())];
        registry.attach_counter(
            "rowhook_sink_commands_total",
            "Commands an exec sink ran.",
            sink(),
            &self.counters.commands,
        );
        registry.attach_counter(
            "rowhook_sink_commands_in_doubt_total",
            "Messages an exec sink with once_only did not run again: their command had started and rowhook never saw it end.",
            sink(),
            &self.counters.in_doubt,
        );
    }
}

/// Kills a command's process group when dropped: when the command ends,
/// times out, or `write_batch` is dropped mid-command.
struct Group(Option<Pid>);

impl Group {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // ESRCH: nothing is left of the group.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Up to `max` bytes of `from`, read to its end, and how many there were.
async fn read_bounded(from: Option<impl AsyncRead + Unpin>, max: usize) -> (Vec<u8>, usize) {
    let Some(mut from) = from else { return (Vec::new(), 0) };
    let mut kept = Vec::new();
    let mut total = 0;
    let mut buf = [0u8; 8192];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = max.saturating_sub(kept.len()).min(n);
        kept.extend_from_slice(&buf[..room]);
        total += n;
    }
    (kept, total)
}

/// Captured output as log text: lossy UTF-8, and how much was dropped.
fn shown((kept, total): &(Vec<u8>, usize)) -> String {
    let mut s = String::from_utf8_lossy(kept).trim_end().to_owned();
    if *total > kept.len() {
        s.push_str(&format!(" […{} more bytes not kept]", total - kept.len()));
    }
    s
}

/// How a command ended.
enum Ended {
    Exited(std::process::ExitStatus),
    TimedOut,
}

/// Runs one command to its end, its timeout, or the drop of this future
/// (which kills its process group). `Ok` on exit 0.
async fn run(sink: &str, opts: &ExecOptions, m: &Message, argv: &[String]) -> Result<(), SinkError> {
    let what = || format!("{} for message {}#{}", opts.program.display(), m.id, m.index);
    let mut cmd = tokio::process::Command::new(&opts.program);
    cmd.args(argv)
        .env_clear()
        .envs(&opts.env.0)
        .current_dir(&opts.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(gid) = opts.gid {
        cmd.gid(gid);
    }
    if let Some(uid) = opts.uid {
        cmd.uid(uid);
    }
    // The values may be anything a row held: at `debug` only.
    tracing::debug!(sink, change = %m.id, index = m.index, program = %opts.program.display(), args = ?argv, "running command");
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| spawn_error(sink, opts, &what(), &e))?;
    let mut group = Group(child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw));
    let max = opts.output_max;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let reads = async { tokio::join!(read_bounded(stdout, max), read_bounded(stderr, max)) };
    let mut reads = std::pin::pin!(reads);
    let mut output = None;
    let deadline = tokio::time::Instant::from_std(started + opts.timeout);
    let ended = loop {
        tokio::select! {
            status = child.wait() => match status {
                Ok(s) => break Ended::Exited(s),
                Err(e) => return Err(SinkError::unavailable(sink, format!("waiting for {}: {e}", what()))),
            },
            o = &mut reads, if output.is_none() => output = Some(o),
            () = tokio::time::sleep_until(deadline) => break Ended::TimedOut,
        }
    };
    // The leader is done (or overdue): nothing of its group outlives it.
    group.kill();
    if let Ended::TimedOut = ended {
        let _ = child.wait().await;
    }
    let output = match output {
        Some(o) => o,
        None => tokio::time::timeout(DRAIN_AFTER_KILL, &mut reads)
            .await
            .unwrap_or_default(),
    };
    let ms = started.elapsed().as_millis() as u64;
    let (stdout, stderr) = (shown(&output.0), shown(&output.1));
    let result = match ended {
        Ended::Exited(status) if status.success() => {
            tracing::info!(sink, change = %m.id, index = m.index, ms, stdout, stderr, "command exited 0");
            return Ok(());
        }
        Ended::TimedOut => {
            let reason = format!(
                "{} was still running after {} ms and was killed with its process group",
                what(),
                opts.timeout.as_millis()
            );
            if opts.timeout_retries {
                SinkError::unavailable(sink, format!("{reason} (on_timeout = \"retry\")"))
            } else {
                SinkError::permanent(
                    sink,
                    format!("{reason}; raise timeout_ms, or make the command finish sooner"),
                )
            }
        }
        Ended::Exited(status) => {
            let tail = last_line(&output.1.0);
            match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
                (Some(code), _) if opts.retry_exit_codes.binary_search(&code).is_ok() => SinkError::unavailable(
                    sink,
                    format!("{} exited with {code} (in retry_exit_codes){tail}", what()),
                ),
                (Some(code), _) => SinkError::permanent(
                    sink,
                    format!(
                        "{} exited with {code}{tail}; fix the command, or list {code} in retry_exit_codes if retrying can help",
                        what()
                    ),
                ),
                (None, signal) => SinkError::unavailable(
                    sink,
                    format!("{} was killed by signal {}{tail}", what(), signal.unwrap_or(0)),
                ),
            }
        }
    };
    tracing::warn!(sink, change = %m.id, index = m.index, ms, stdout, stderr, "command failed");
    Err(result)
}

/// `: <the last line of stderr>`, at most 200 characters, or nothing.
fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    match text.lines().rev().find(|l| !l.trim().is_empty()) {
        None => String::new(),
        Some(l) => {
            let l: String = l.trim().chars().take(200).collect();
            format!(": {l}")
        }
    }
}

/// A command that could not be started: the program or the directory is
/// wrong (permanent), or the machine is short of something (unavailable).
fn spawn_error(sink: &str, opts: &ExecOptions, what: &str, e: &std::io::Error) -> SinkError {
    use std::io::ErrorKind as K;
    let reason = format!("starting {what} (cwd {}): {e}", opts.cwd.display());
    match e.kind() {
        K::NotFound | K::PermissionDenied | K::NotADirectory | K::InvalidInput => {
            SinkError::permanent(sink, format!("{reason}; check command[0], cwd and uid/gid"))
        }
        _ => SinkError::unavailable(sink, reason),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::Path;

    use super::*;
    use crate::sink::testing::TempDir;
    use crate::store::StateStore;

    /// An executable script `body` (bash) in `dir`.
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/bash\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn options(program: PathBuf, args: &[&str], dir: &Path) -> ExecOptions {
        ExecOptions {
            program,
            args: args.iter().map(|a| Arg::parse(a).unwrap()).collect(),
            patterns: BTreeMap::from([("ip".to_owned(), Pattern::Ip)]),
            env: EnvVars::default(),
            cwd: dir.to_owned(),
            timeout: Duration::from_secs(5),
            timeout_retries: true,
            retry_exit_codes: vec![75],
            output_max: 16,
            uid: None,
            gid: None,
            once_only: false,
        }
    }

    fn msg(id: &str, payload: &str) -> Message {
        Message {
            key: None,
            payload: payload.as_bytes().to_vec(),
            id: id.to_owned(),
            index: 0,
        }
    }

    #[tokio::test]
    async fn a_command_runs_per_message_in_a_clean_process() {
        let dir = TempDir::new("exec-run");
        let log = dir.path().join("calls");
        let prog = script(
            dir.path(),
            "record.sh",
            "printf '%s|' \"$@\" \"$(pwd)\" \"$(env | sort | tr '\\n' ' ')\" >>calls; echo >>calls",
        );
        let mut opts = options(prog, &["-s", "{ip}", "a b"], dir.path());
        opts.env = EnvVars(BTreeMap::from([("ONLY".to_owned(), "this".to_owned())]));
        let mut s = ExecSink::new("fw", opts);
        s.write_batch(&[msg("1", r#"{"ip":"203.0.113.7"}"#), msg("2", r#"{"ip":"::1"}"#)])
            .await
            .unwrap();
        let d = dir.path().display();
        let calls = std::fs::read_to_string(&log).unwrap();
        // bash adds PWD, SHLVL and `_` of its own; nothing of rowhook's environment.
        let env = format!("ONLY=this PWD={d} SHLVL=1 _=/usr/bin/env ");
        assert_eq!(calls, format!("-s|203.0.113.7|a b|{d}|{env}|\n-s|::1|a b|{d}|{env}|\n"));
    }

    #[tokio::test]
    async fn exit_codes_timeouts_and_unfit_payloads_are_classified() {
        let dir = TempDir::new("exec-codes");
        let prog = script(dir.path(), "exit.sh", "echo \"line one\nwhy: $1\" >&2; exit $1");
        let mut opts = options(prog, &["{ip}"], dir.path());
        opts.patterns.insert("ip".into(), Pattern::Uint);
        let mut s = ExecSink::new("x", opts.clone());
        let e = s.write_batch(&[msg("1", r#"{"ip":75}"#)]).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(
            e.to_string().contains("exited with 75 (in retry_exit_codes): why: 75"),
            "{e}"
        );
        let e = s.write_batch(&[msg("1", r#"{"ip":3}"#)]).await.unwrap_err();
        assert!(!e.is_retryable(), "{e}");
        assert!(e.to_string().contains("exited with 3: why: 3; fix the command"), "{e}");
        let e = s.write_batch(&[msg("1", r#"{"ip":"-3"}"#)]).await.unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("does not match its pattern `uint`"), "{e}");

        let hang = script(dir.path(), "hang.sh", "sleep 30 & sleep 30; echo never");
        opts.program = hang;
        opts.args.clear();
        opts.timeout = Duration::from_millis(200);
        let mut s = ExecSink::new("x", opts.clone());
        let t = Instant::now();
        let e = s.write_batch(&[msg("1", "{}")]).await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(
            e.is_retryable() && e.to_string().contains("killed with its process group"),
            "{e}"
        );
        opts.timeout_retries = false;
        let e = ExecSink::new("x", opts)
            .write_batch(&[msg("1", "{}")])
            .await
            .unwrap_err();
        assert!(!e.is_retryable() && e.to_string().contains("raise timeout_ms"), "{e}");
    }

    #[tokio::test]
    async fn output_is_bounded_and_a_dropped_write_kills_the_group() {
        let dir = TempDir::new("exec-drop");
        let prog = script(
            dir.path(),
            "loud.sh",
            "head -c 1000000 /dev/zero; echo $$ >pid; sleep 30 & echo $! >child; wait",
        );
        let mut s = ExecSink::new("x", options(prog, &[], dir.path()));
        let batch = [msg("1", "{}")];
        let write = s.write_batch(&batch);
        assert!(tokio::time::timeout(Duration::from_millis(1500), write).await.is_err());
        // The future was dropped mid-command: the group is gone.
        let child: i32 = std::fs::read_to_string(dir.path().join("child"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = || nix::sys::signal::kill(Pid::from_raw(child), None).is_err();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !gone() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone(), "the command's background child outlived the dropped write");
        assert_eq!(shown(&(b"abc".to_vec(), 10)), "abc […7 more bytes not kept]");
    }

    #[tokio::test]
    async fn uid_and_gid_are_dropped_to_when_rowhook_is_root() {
        // The tests run as root (here and in CI), or this one could not
        // switch users; as any other user the config refuses uid/gid
        // (config::tests).
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test switches the command's user: run the tests as root"
        );
        let dir = TempDir::new("exec-uid");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let prog = script(
            dir.path(),
            "who.sh",
            "[ \"$(id -u):$(id -g):$(id -G)\" = 65534:65534:65534 ] || { id >&2; exit 3; }",
        );
        let mut opts = options(prog, &[], Path::new("/"));
        opts.env = EnvVars(BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]));
        opts.uid = Some(65534);
        opts.gid = Some(65534);
        ExecSink::new("x", opts).write_batch(&[msg("1", "{}")]).await.unwrap();
    }

    #[tokio::test]
    async fn the_ledger_runs_a_command_once_and_again_after_a_failure() {
        let dir = TempDir::new("exec-ledger");
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        let prog = script(
            dir.path(),
            "count.sh",
            "echo run >>runs; [ -e fail ] && exit 75; exit 0",
        );
        let mut opts = options(prog, &[], dir.path());
        opts.once_only = true;
        let mut s = ExecSink::new("x", opts);
        s.attach_ledger(&store.ledger());
        let runs = || {
            std::fs::read_to_string(dir.path().join("runs"))
                .unwrap_or_default()
                .lines()
                .count()
        };
        std::fs::write(dir.path().join("fail"), "").unwrap();
        assert!(s.write_batch(&[msg("a", "{}")]).await.unwrap_err().is_retryable());
        assert_eq!(runs(), 1);
        std::fs::remove_file(dir.path().join("fail")).unwrap();
        s.write_batch(&[msg("a", "{}")]).await.unwrap();
        assert_eq!(runs(), 2, "a failed command runs again");
        s.write_batch(&[msg("a", "{}"), msg("b", "{}")]).await.unwrap();
        assert_eq!(runs(), 3, "a done command does not");
        // Started, never finished (a crash mid-command): not run again.
        store.ledger().start("x", "c", 0).unwrap();
        s.write_batch(&[msg("c", "{}")]).await.unwrap();
        assert_eq!(runs(), 3);
        assert_eq!(s.counters.in_doubt.get(), 1);
    }
}
