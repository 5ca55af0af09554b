//! Hot reload: watch every handler's module file, compile a changed one off
//! the event path, and hand the result to the pipeline, which swaps it in at
//! a transaction boundary.
//!
//! The directory holding each module is watched, not the file itself, so a
//! file replaced by rename (how editors, `cp` to a temp name then `mv`, and
//! deploy tools write) is seen as well as one rewritten in place. A file is
//! compiled once it has been quiet for [`SETTLE`], so a file being written
//! is not read half-way; one that is still half-written, malformed, of the
//! wrong world, or asking for imports handlers are not given, fails
//! validation and the previous version keeps serving. A file whose bytes did
//! not change is not compiled again.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher as _};

use super::{HandlerRuntime, LoadError, Module, read_module};
use crate::handler_id::HandlerId;

/// How long a module file must be left alone before it is compiled.
pub const SETTLE: Duration = Duration::from_millis(150);

/// The outcome of compiling a changed module file, for every handler that
/// uses that file.
pub enum Reload {
    /// Compiled and validated; swap it in at the next transaction boundary.
    Ready {
        /// Handlers that use the file.
        handlers: Vec<HandlerId>,
        /// The new version.
        module: Module,
    },
    /// The file cannot serve; the previous version keeps serving.
    Failed {
        /// Handlers that use the file.
        handlers: Vec<HandlerId>,
        /// Why.
        error: LoadError,
    },
}

/// Watches module files; dropping it stops the watch and its thread.
pub struct Reloader {
    _watcher: notify::RecommendedWatcher,
    ready: mpsc::Receiver<Reload>,
}

/// A watched module file.
struct Watched {
    handlers: Vec<HandlerId>,
    /// Hash of the bytes last compiled (or loaded at start).
    last: Option<u64>,
    /// The most that is read of it: the largest `limits.module_mb` of its handlers.
    max_bytes: u64,
}

/// A hash of a module file's bytes, to tell whether it changed.
pub(crate) fn digest(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The path a watch event names for `module`: its canonical directory
/// joined with its file name (the file itself may come and go).
fn watch_key(module: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
    let dir = match module.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = dir.canonicalize()?;
    let name = module
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} names no file", module.display())))?;
    Ok((dir.join(name), dir))
}

impl Reloader {
    /// Watches `modules`: each handler's module path, with the most of it
    /// to read.
    pub fn watch(runtime: &HandlerRuntime, modules: &[(HandlerId, PathBuf, u64)]) -> anyhow::Result<Reloader> {
        let mut files: HashMap<PathBuf, Watched> = HashMap::new();
        let mut dirs = Vec::new();
        for (id, m, max_bytes) in modules {
            let (key, dir) = watch_key(m).map_err(|e| anyhow::anyhow!("watching {}: {e}", m.display()))?;
            let last = read_module(&key, *max_bytes).ok().map(|b| digest(&b));
            let watched = files.entry(key).or_insert_with(|| Watched {
                handlers: Vec::new(),
                last,
                max_bytes: *max_bytes,
            });
            watched.handlers.push(id.clone());
            watched.max_bytes = watched.max_bytes.max(*max_bytes);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        let (raw_tx, raw_rx) = mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher =
            notify::recommended_watcher(raw_tx).map_err(|e| anyhow::anyhow!("starting the module watcher: {e}"))?;
        for dir in &dirs {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|e| anyhow::anyhow!("watching {}: {e}", dir.display()))?;
        }
        let (ready_tx, ready) = mpsc::channel();
        let runtime = runtime.clone();
        std::thread::Builder::new()
            .name("rowhook-reload".into())
            .spawn(move || compile_loop(&runtime, files, &raw_rx, &ready_tx))
            .map_err(|e| anyhow::anyhow!("starting the reload thread: {e}"))?;
        Ok(Reloader {
            _watcher: watcher,
            ready,
        })
    }

    /// The next reload outcome, if one is waiting.
    pub fn try_next(&self) -> Option<Reload> {
        self.ready.try_recv().ok()
    }
}

/// Collects changed paths until each has settled, then compiles it.
fn compile_loop(
    runtime: &HandlerRuntime,
    mut files: HashMap<PathBuf, Watched>,
    raw: &mpsc::Receiver<notify::Result<notify::Event>>,
    ready: &mpsc::Sender<Reload>,
) {
    // Changed files and when they last changed.
    let mut dirty: HashMap<PathBuf, Instant> = HashMap::new();
    loop {
        let wait = dirty
            .values()
            .map(|t| (*t + SETTLE).saturating_duration_since(Instant::now()))
            .min()
            .unwrap_or(Duration::from_secs(3600));
        match raw.recv_timeout(wait) {
            Ok(Ok(event)) => {
                if matches!(event.kind, notify::EventKind::Access(_)) {
                    continue;
                }
                for p in event.paths {
                    if files.contains_key(&p) {
                        dirty.insert(p, Instant::now());
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!("module watcher: {e}"),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let settled: Vec<PathBuf> = dirty
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= SETTLE)
            .map(|(p, _)| p.clone())
            .collect();
        for path in settled {
            dirty.remove(&path);
            let watched = files.get_mut(&path).expect("only watched paths are dirty");
            let outcome = match read_module(&path, watched.max_bytes) {
                // Removed (or mid-rename): the next event brings the new file.
                Err(LoadError::Read { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => Reload::Failed {
                    handlers: watched.handlers.clone(),
                    error,
                },
                Ok(bytes) => {
                    let d = digest(&bytes);
                    if watched.last == Some(d) {
                        continue;
                    }
                    watched.last = Some(d);
                    match runtime.load_bytes(&path.display().to_string(), &bytes) {
                        Ok(module) => Reload::Ready {
                            handlers: watched.handlers.clone(),
                            module,
                        },
                        Err(error) => Reload::Failed {
                            handlers: watched.handlers.clone(),
                            error,
                        },
                    }
                }
            };
            if ready.send(outcome).is_err() {
                return;
            }
        }
    }
}
