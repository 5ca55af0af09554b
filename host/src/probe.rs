//! What `rowhook check` reports: one [`CheckLine`] per item checked, fine or
//! with its fix, and the probes that sink kinds share. A leaf module, so
//! that the command ([`crate::cli::check`]) and the sink kinds that answer
//! it can both use it.

use std::path::Path;

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckLine {
    /// Whether this item is fine.
    pub ok: bool,
    /// What was checked and what was found (with the fix, when not ok).
    pub text: String,
}

impl CheckLine {
    /// A line for something that is fine.
    pub fn ok(text: String) -> CheckLine {
        CheckLine { ok: true, text }
    }

    /// A line for a problem: `text` says what was found and the fix.
    pub fn fail(text: String) -> CheckLine {
        CheckLine { ok: false, text }
    }
}

/// The probe of a sink that writes to `path` (see
/// [`crate::sink::SinkKind::probe`]): its directory can be written to (or
/// created), and whatever is at `path` already is what the kind writes to:
/// `wrong_type` says what is wrong with it and the fix, or `None`.
pub fn path_probe(
    name: &str,
    kind: &str,
    path: &Path,
    wrong_type: impl FnOnce(&std::fs::Metadata) -> Option<&'static str>,
) -> CheckLine {
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Err(e) = writable_dir(dir) {
        return CheckLine::fail(format!(
            "sink `{name}` ({kind}): directory {}: {e}; create it or change the sink's path",
            dir.display()
        ));
    }
    match std::fs::metadata(path).ok().as_ref().and_then(wrong_type) {
        Some(wrong) => CheckLine::fail(format!("sink `{name}` ({kind}): {} {wrong}", path.display())),
        None => CheckLine::ok(format!("sink `{name}` ({kind}): {}", path.display())),
    }
}

/// Whether files can be created in `dir` (or in the nearest existing
/// ancestor, for a directory rowhook would create).
pub fn writable_dir(dir: &Path) -> Result<(), String> {
    let mut d = dir;
    loop {
        match std::fs::metadata(d) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Err(format!("{} is not a directory", d.display())),
            Err(_) => match d.parent() {
                Some(p) if !p.as_os_str().is_empty() => d = p,
                _ => return Err("no existing parent directory".into()),
            },
        }
    }
    nix::unistd::access(d, nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK)
        .map_err(|e| format!("{} is not writable ({e})", d.display()))
}
