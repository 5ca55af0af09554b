//! The keys of a `kind = "exec"` sink: parsed as written, then resolved
//! into [`ExecOptions`].

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::template::{Arg, BUILT_IN, Pattern};
use super::{EnvVars, ExecOptions};
use crate::problem::SinkContext;

/// Default `timeout_ms`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `output_max_bytes`: what is kept of each of stdout and stderr.
pub const DEFAULT_OUTPUT_MAX: u64 = 64 << 10;

/// `kind = "exec"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExecSink {
    /// The executable and its arguments, run without a shell:
    /// `["/usr/sbin/iptables", "-A", "INPUT", "-s", "{ip}", "-j", "DROP"]`.
    /// The executable is an absolute path, or `./` or `../` relative to the
    /// config file's directory; never looked up in `PATH`. An argument is
    /// fixed text, or fixed text around one placeholder `{field}` (`{{` and
    /// `}}` for literal braces), filled from that field of the handler's
    /// JSON payload.
    pub command: Vec<String>,
    /// The pattern each placeholder's value must match: `ipv4`, `ipv6`,
    /// `ip`, `int`, `uint`, `uuid`, `word`, or `regex:EXPR` (the whole value
    /// must match): `placeholders = { ip = "ip" }`. Every placeholder needs one.
    #[serde(default)]
    pub placeholders: BTreeMap<String, String>,
    /// The command's whole environment (nothing is inherited):
    /// `env = { PATH = "/usr/sbin:/usr/bin", LANG = "C.UTF-8" }`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The working directory, relative to the config file's directory
    /// unless absolute (default `/`).
    pub cwd: Option<String>,
    /// How long a command may run before its process group is killed, in
    /// ms: 100 to 600000 (default 10000).
    pub timeout_ms: Option<u64>,
    /// What a command killed at its timeout is: `"retry"` (unavailable,
    /// retried; the default) or `"fail"` (permanent).
    pub on_timeout: Option<String>,
    /// Exit codes that mean "try again later" (unavailable); any other
    /// non-zero exit is permanent. Default: none.
    #[serde(default)]
    pub retry_exit_codes: Vec<i64>,
    /// Bytes kept of each of the command's stdout and stderr for the log;
    /// the rest is read and dropped: 0 to 16777216 (default 65536).
    pub output_max_bytes: Option<u64>,
    /// The user id to run the command as (rowhook must run as root).
    pub uid: Option<u32>,
    /// The group id to run the command as (rowhook must run as root).
    pub gid: Option<u32>,
    /// Keep a once-only ledger in the state store, so that a command that
    /// ran (or may have run) for a message is not run again after a crash
    /// (default false: at-least-once, like every sink).
    #[serde(default)]
    pub once_only: bool,
}

/// Validates the keys; every problem is reported.
pub fn resolve(raw: RawExecSink, cx: &mut SinkContext<'_>) -> Option<ExecOptions> {
    let mut ok = true;
    let base = cx.base().to_owned();
    let mut program = None;
    let mut args = Vec::new();
    match raw.command.split_first() {
        None => {
            cx.problem(
                "command",
                "is empty",
                "name the executable and its arguments, e.g. [\"/usr/sbin/iptables\", \"-A\", \"INPUT\", \"-s\", \"{ip}\", \"-j\", \"DROP\"]",
            );
            ok = false;
        }
        Some((exe, rest)) => {
            match executable(&base, exe) {
                Ok(p) => program = Some(p),
                Err((what, fix)) => {
                    cx.problem("command[0]", what, fix);
                    ok = false;
                }
            }
            for (i, a) in rest.iter().enumerate() {
                match Arg::parse(a) {
                    Ok(arg) => args.push(arg),
                    Err(what) => {
                        cx.problem(
                            &format!("command[{}]", i + 1),
                            format!("`{a}` {what}"),
                            "write fixed text around at most one `{field}`, and `{{`/`}}` for literal braces",
                        );
                        ok = false;
                    }
                }
            }
        }
    }

    let mut patterns = BTreeMap::new();
    for (name, text) in &raw.placeholders {
        match Pattern::parse(text) {
            Ok(p) => {
                patterns.insert(name.clone(), p);
            }
            Err(what) => {
                cx.problem(&format!("placeholders.{name}"), what, format!("use one of {BUILT_IN}"));
                ok = false;
            }
        }
    }
    let used: Vec<&str> = args.iter().filter_map(Arg::placeholder).collect();
    for name in &used {
        if !raw.placeholders.contains_key(*name) {
            cx.problem(
                "placeholders",
                format!("has no pattern for `{{{name}}}`"),
                format!("add `{name} = \"PATTERN\"`, one of {BUILT_IN}"),
            );
            ok = false;
        }
    }
    for name in raw.placeholders.keys() {
        if !used.contains(&name.as_str()) {
            cx.problem(
                &format!("placeholders.{name}"),
                format!("`{{{name}}}` is not in the command"),
                "use it in an argument of `command`, or remove it",
            );
            ok = false;
        }
    }

    for name in raw.env.keys() {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            cx.problem(
                &format!("env.{name}"),
                "is not an environment variable name",
                "use a name without `=`, e.g. PATH",
            );
            ok = false;
        }
    }
    if raw.env.values().any(|v| v.contains('\0')) {
        cx.problem("env", "a value holds a NUL byte", "remove it");
        ok = false;
    }

    let cwd = match raw.cwd.as_deref() {
        None => Some(PathBuf::from("/")),
        Some(c) => cx.path("cwd", c),
    };
    let timeout = cx.timeout_ms("timeout_ms", raw.timeout_ms, DEFAULT_TIMEOUT);
    let timeout_retries = match raw.on_timeout.as_deref() {
        None | Some("retry") => Some(true),
        Some("fail") => Some(false),
        Some(other) => {
            cx.problem(
                "on_timeout",
                format!("`{other}` is not a choice"),
                "write \"retry\" (the default) or \"fail\"",
            );
            None
        }
    };
    let mut retry_exit_codes = Vec::new();
    for &code in &raw.retry_exit_codes {
        if (1..=255).contains(&code) {
            retry_exit_codes.push(code as i32);
        } else {
            cx.problem(
                "retry_exit_codes",
                format!("{code} is not a failing exit code"),
                "list exit codes from 1 to 255 (0 is success)",
            );
            ok = false;
        }
    }
    retry_exit_codes.sort_unstable();
    retry_exit_codes.dedup();
    let output_max = cx.ranged(
        "output_max_bytes",
        raw.output_max_bytes,
        0..=16 << 20,
        DEFAULT_OUTPUT_MAX,
        format!("use 0 to 16777216 bytes (default {DEFAULT_OUTPUT_MAX})"),
    );
    if raw.uid.is_some() || raw.gid.is_some() {
        let me = nix::unistd::geteuid();
        if !me.is_root() {
            let key = if raw.uid.is_some() { "uid" } else { "gid" };
            cx.problem(
                key,
                format!("needs rowhook to run as root to switch to it, and it runs as uid {me}"),
                "run rowhook as root, or remove uid and gid (the command then runs as rowhook's user)",
            );
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    Some(ExecOptions {
        program: program?,
        args,
        patterns,
        env: EnvVars(raw.env),
        cwd: cwd?,
        timeout: timeout?,
        timeout_retries: timeout_retries?,
        retry_exit_codes,
        output_max: output_max? as usize,
        uid: raw.uid,
        gid: raw.gid,
        once_only: raw.once_only,
    })
}

/// The executable as written: absolute, or `./`/`../` against the config
/// file's directory; it must be an executable regular file. `Err`: what
/// is wrong, and the fix.
fn executable(base: &Path, written: &str) -> Result<PathBuf, (String, String)> {
    let path = if written.starts_with('/') {
        PathBuf::from(written)
    } else if written.starts_with("./") || written.starts_with("../") {
        crate::problem::resolve_path(base, written)
    } else {
        return Err((
            format!("`{written}` is not an absolute path, and rowhook does not search PATH"),
            format!(
                "write the full path, e.g. \"/usr/sbin/{written}\" (`command -v {written}` prints it), or \"./{written}\" for a file beside the config"
            ),
        ));
    };
    executable_file(&path).map_err(|what| (what, "point it at an executable file (chmod +x)".into()))?;
    Ok(path)
}

/// Whether `path` is a regular file with an execute bit; `Err` says what it is.
pub fn executable_file(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Err(e) => Err(format!("{}: {e}", path.display())),
        Ok(m) if !m.is_file() => Err(format!("{} is not a file", path.display())),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err(format!("{} is not executable", path.display())),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ConfigError, Plan, problem_lines};
    use crate::sink::SinkSpec;

    use super::*;

    fn parse(text: &str) -> Result<Plan, ConfigError> {
        Plan::parse(text, Path::new("/etc/rowhook/rowhook.toml"), |_| None)
    }

    #[test]
    fn keys_resolve_with_defaults() {
        let plan = parse(
            "[sinks.fw]\nkind = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"exit 0\", \"sh\", \"--src={ip}/32\", \"{n}\"]\nplaceholders = { ip = \"ip\", n = \"regex:[0-9]{1,3}\" }\n\
             [sinks.b]\nkind = \"exec\"\ncommand = [\"/bin/true\"]\nenv = { PATH = \"/usr/bin\" }\ncwd = \"run\"\ntimeout_ms = 500\non_timeout = \"fail\"\nretry_exit_codes = [75, 4, 75]\noutput_max_bytes = 0\nuid = 65534\ngid = 65534\nonce_only = true\n",
        )
        .unwrap();
        let SinkSpec::Exec(fw) = &plan.sinks["fw"] else {
            panic!()
        };
        assert_eq!(fw.program, Path::new("/bin/sh"));
        assert_eq!(fw.args.len(), 5);
        assert_eq!(fw.patterns["ip"].to_string(), "ip");
        assert_eq!(fw.patterns["n"].to_string(), "regex:[0-9]{1,3}");
        assert_eq!(fw.cwd, Path::new("/"));
        assert_eq!(fw.timeout, DEFAULT_TIMEOUT);
        assert!(fw.timeout_retries);
        assert!(fw.retry_exit_codes.is_empty());
        assert_eq!(fw.output_max, 64 << 10);
        assert!(fw.env.0.is_empty());
        assert!(!fw.once_only);
        let SinkSpec::Exec(b) = &plan.sinks["b"] else { panic!() };
        assert_eq!(b.cwd, Path::new("/etc/rowhook/run"));
        assert_eq!(b.timeout, Duration::from_millis(500));
        assert!(!b.timeout_retries);
        assert_eq!(b.retry_exit_codes, [4, 75]);
        assert_eq!(b.output_max, 0);
        assert_eq!((b.uid, b.gid), (Some(65534), Some(65534)));
        assert!(b.once_only);
        // The environment may hold secrets: Debug shows its names only.
        assert_eq!(format!("{:?}", b.env), "EnvVars([\"PATH\"])");
    }

    #[test]
    fn problems_name_the_key() {
        let got = problem_lines(parse(
            "[sinks.a]\nkind = \"exec\"\ncommand = [\"iptables\", \"{ip}\", \"{a}{b}\", \"{port}\"]\nplaceholders = { ip = \"ipv5\", port = \"uint\", extra = \"word\" }\non_timeout = \"ignore\"\nretry_exit_codes = [0, 256]\noutput_max_bytes = 20000000\ntimeout_ms = 5\n\
             [sinks.b]\nkind = \"exec\"\ncommand = []\ncwd = \"\"\n\
             [sinks.c]\nkind = \"exec\"\ncommand = [\"/etc/passwd\", \"{x}\"]\n\
             [sinks.d]\nkind = \"exec\"\ncommand = [\"./missing.sh\"]\nenv = { \"A=B\" = \"1\" }\n",
        ));
        assert_eq!(
            got,
            [
                "sinks.a.command[0]: `iptables` is not an absolute path, and rowhook does not search PATH",
                "sinks.a.command[2]: `{a}{b}` has a second placeholder: an argument takes at most one",
                "sinks.a.placeholders.ip: `ipv5` is not a pattern",
                "sinks.a.placeholders.extra: `{extra}` is not in the command",
                "sinks.a.timeout_ms: 5 is out of range",
                "sinks.a.on_timeout: `ignore` is not a choice",
                "sinks.a.retry_exit_codes: 0 is not a failing exit code",
                "sinks.a.retry_exit_codes: 256 is not a failing exit code",
                "sinks.a.output_max_bytes: 20000000 is out of range",
                "sinks.b.command: is empty",
                "sinks.b.cwd: is empty",
                "sinks.c.command[0]: /etc/passwd is not executable",
                "sinks.c.placeholders: has no pattern for `{x}`",
                "sinks.d.command[0]: /etc/rowhook/missing.sh: No such file or directory (os error 2)",
                "sinks.d.env.A=B: is not an environment variable name",
            ]
        );
        match parse("[sinks.p]\nkind = \"exec\"\ncommand = [\"/bin/true\"]\nshell = true\n") {
            Err(ConfigError::Syntax { line, key, message, .. }) => {
                assert_eq!((line, key.as_deref()), (Some(4), Some("sinks.p.shell")), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }
}
