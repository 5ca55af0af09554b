//! The WebAssembly runtime: one wasmtime engine, handler components compiled
//! once and instantiated from `InstancePre`, instances reused across events
//! and recreated only after a trap.
//!
//! Every call runs under limits set per handler: a deadline (epoch
//! interruption, ticked by one background thread), a memory cap (a store
//! limiter), and an emit quota per event. A trap, a timeout or a quota breach
//! costs that instance, never the process. An [`Interrupt`] (rowhook was
//! asked to stop) cuts the call in progress within [`STOP_CHECK`] ticks
//! and refuses new ones, whatever the handler's deadline.
//!
//! The sandbox: a component may import the rowhook capability interfaces
//! and the WASI interfaces the Rust, C, JavaScript and Python runtimes
//! import (environment, exit, stdio, clocks, random, streams, filesystem
//! types with no directory opened, sockets and HTTP that refuse every use).
//! The environment is empty, the clocks are frozen at zero, randomness is
//! seeded per handler and change (see [`random`]), stdin is closed, stdout
//! and stderr go to rowhook's log (see [`output`]), no directory is
//! preopened, no socket may be created or name looked up, every HTTP
//! request is refused (see [`http`]), random bytes come at most
//! [`MAX_RANDOM_BYTES`] a call, and a component importing anything else is
//! refused at load, before it is compiled (see [`shape`]).
//!
//! Memory: the linear memories and tables of all the core instances of a
//! handler instance count together against its memory cap (see
//! [`HandlerLimiter`]), and the number of core instances against
//! `limits.instances`.
//!
//! Nothing a handler imports waits. Epoch interruption reaches wasm code
//! only, never a host function that blocks, so the host side may not block:
//! a sleep (`subscribe-duration`, `subscribe-instant` of the monotonic
//! clock, then `poll` or `block`) is ready at once, as it should be on a
//! clock that stands still; reading stdin ends at once (closed), writing
//! stdout or stderr is always ready. As a second line, `wasi:io/poll`'s
//! `poll` and `pollable.block` wait at most until the call's deadline and
//! give way to an interrupt, should a pollable ever not be ready.

pub mod cache;
mod caps;
pub mod http;
pub mod output;
pub mod random;
pub mod rate;
pub mod reload;
pub mod shape;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::sink::PayloadForm;
use crate::sink::sql::Refusal;

pub use caps::{
    Emitted, GuestMetrics, LogLine, MAX_LOG_LINES_PER_CALL, MAX_METRIC_NAMES, OverQuota, StateOverlay, line_payload,
};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit",
        world: "handler",
    });
}

use bindings::rowhook::handler::emit::EmitError;

/// How often the epoch advances: the granularity of call deadlines.
const TICK: Duration = Duration::from_millis(1);

/// Ticks between two looks at the [`Interrupt`] while wasm code runs: how
/// long a stop may wait for a call in progress.
pub const STOP_CHECK: u64 = 10;

/// The most random bytes one `get-random-bytes` (or the insecure one) may
/// ask for: filling them is host work the deadline cannot cut, and host
/// memory outside the handler's cap.
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// A request to cut the handler calls in progress and refuse new ones,
/// shared by every instance of a [`HandlerRuntime`]: a stop (SIGTERM,
/// SIGINT) does not wait for a handler's deadline, which may be a minute.
/// Once requested it stays requested.
#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Asks every call in progress to end and every later call to refuse.
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether it was requested.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What ends a call cut by an [`Interrupt`], told apart from a trap.
#[derive(Debug, thiserror::Error)]
#[error("the call was cut: rowhook is stopping")]
struct CallInterrupted;

/// Limits of one handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory cap per instance, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock deadline per call, in milliseconds.
    pub time_ms: u64,
    /// Emits allowed per event.
    pub emits_per_event: u32,
    /// Bytes (payloads and keys) one event may emit.
    pub emit_bytes_per_event: usize,
    /// Key and value bytes the handler's state may hold.
    pub state_bytes: u64,
    /// Keys the handler's state may hold.
    pub state_keys: usize,
    /// Core instances one instance of the handler may create.
    pub instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            time_ms: 100,
            emits_per_event: 64,
            emit_bytes_per_event: 16 << 20,
            state_bytes: 64 << 20,
            state_keys: 1_000_000,
            instances: 100,
        }
    }
}

/// Why a handler call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    /// The handler returned an error for this event.
    #[error("handler returned an error: {0}")]
    Failed(String),
    /// The call ran past its deadline.
    #[error("handler exceeded its time limit of {0} ms")]
    Timeout(u64),
    /// The handler trapped (panic, unreachable, out-of-bounds, memory cap).
    #[error("handler trapped: {0}")]
    Trap(String),
    /// The handler emitted more than its quota for one event.
    #[error("handler exceeded its emit quota of {0} per event")]
    Quota(u32),
    /// The handler emitted more bytes (payloads and keys) than its budget
    /// for one event.
    #[error(
        "handler exceeded its emit budget of {} MiB per event (limits.emit_mb_per_event)",
        .0 >> 20
    )]
    EmitBudget(usize),
    /// The handler's tenant emitted more bytes (payloads and keys, all its
    /// handlers together) than its rate allows: this many per second.
    #[error(
        "the handler's tenant emitted more than its rate of {} MiB per second ([tenants] emit_mb_per_s)",
        .0 >> 20
    )]
    EmitRate(u64),
    /// The call was cut, or not made, because rowhook is stopping (see
    /// [`Interrupt`]): not the handler's failure, and no `on_error` applies;
    /// the event is handled again at the next start.
    #[error("handler call interrupted: rowhook is stopping")]
    Interrupted,
}

/// Why a module cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// Module path.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The path names something other than a regular file (a device, a
    /// FIFO, a directory, or a link to one).
    #[error("{path} is {what}, not a regular file: point the handler's module at a .wasm file")]
    NotAFile {
        /// Module path.
        path: String,
        /// What it is.
        what: &'static str,
    },
    /// The file is larger than the handler's `limits.module_mb`.
    #[error(
        "{path} is larger than {max_mb} MiB (limits.module_mb): it was not read; raise the limit if the module is meant to be that large"
    )]
    TooLarge {
        /// Module path.
        path: String,
        /// The cap, MiB.
        max_mb: u64,
    },
    /// The file does not start with WebAssembly's magic bytes. Its bytes
    /// are not shown: the path may name any file.
    #[error("{path} is not a WebAssembly file (it does not start with \\0asm)")]
    NotWasm {
        /// Module path.
        path: String,
    },
    /// Not a valid component for this engine.
    #[error("{path} is not a valid WebAssembly component: {detail}")]
    Invalid {
        /// Module path.
        path: String,
        /// What wasmtime said.
        detail: String,
    },
    /// A core module, not a component.
    #[error(
        "{path} is a core WebAssembly module, not a component: build for wasm32-wasip2 (Rust), or link with wasm-component-ld or `wasm-tools component new` (C)"
    )]
    CoreModule {
        /// Module path.
        path: String,
    },
    /// The component imports something the sandbox does not give.
    #[error("{path} imports `{import}`, which rowhook does not grant to handlers: {remedy}")]
    ForbiddenImport {
        /// Module path.
        path: String,
        /// The import.
        import: String,
        /// The build flag or change that removes it.
        remedy: &'static str,
    },
    /// The component does not implement the handler world.
    #[error("{path} does not implement the rowhook:handler world: {detail}")]
    WrongWorld {
        /// Module path.
        path: String,
        /// What is missing.
        detail: String,
    },
}

/// Reads the module file at `path`, refusing without blocking or reading
/// what cannot be a module: anything but a regular file (a FIFO would block
/// the reader forever, `/dev/zero` would never end) and a file larger than
/// `max_bytes`. Opened non-blocking, checked on the open handle (so a file
/// swapped in between is not read), and read through a cap in case it
/// grows while being read.
pub fn read_module(path: &Path, max_bytes: u64) -> Result<Vec<u8>, LoadError> {
    use std::io::Read as _;
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};

    let p = || path.display().to_string();
    let read_err = |error| LoadError::Read { path: p(), error };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a named pipe"
        } else if ft.is_char_device() || ft.is_block_device() {
            "a device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(LoadError::NotAFile { path: p(), what });
    }
    let too_large = || LoadError::TooLarge {
        path: p(),
        max_mb: max_bytes.div_ceil(1 << 20),
    };
    if meta.len() > max_bytes {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max_bytes + 1).read_to_end(&mut bytes).map_err(read_err)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large());
    }
    Ok(bytes)
}

/// WASI interfaces a handler may import (without version suffix).
const ALLOWED_WASI: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    // Language runtimes ask for their preopened directories at start; there
    // are none, so these give access to nothing.
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    // What Python's and other runtimes link their socket modules to: no
    // socket can be created and no name looked up (every call answers
    // `access-denied`).
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
    // What the JavaScript runtimes link `fetch` to: every request is refused
    // (`HTTP-request-denied`).
    "wasi:http/types",
    "wasi:http/outgoing-handler",
];

/// The Python SDK's build checks a component's imports against its own
/// copy of [`ALLOWED_WASI`]; it must hold every entry.
#[cfg(test)]
#[test]
fn the_python_sdk_allows_what_the_runtime_links() {
    let build = include_str!("../../../guest-sdk/python/rowhook_guest/build.py");
    for name in ALLOWED_WASI {
        assert!(
            build.contains(&format!("\"{name}\"")),
            "{name} is missing from guest-sdk/python/rowhook_guest/build.py"
        );
    }
}

/// Whether a handler may import `name` (`wasi:cli/stdout@0.2.3`).
fn allowed_import(name: &str) -> bool {
    let base = name.split('@').next().unwrap_or(name);
    base.starts_with("rowhook:handler/") || ALLOWED_WASI.contains(&base)
}

/// The memory cap of a handler instance, over all its core instances'
/// linear memories and tables together (a table element counts as
/// [`TABLE_ELEMENT_BYTES`]), and its cap of core instances. A store's
/// own limits would bound each memory on its own: a component of many
/// core instances could then hold many times the cap.
pub struct HandlerLimiter {
    cap: usize,
    used: usize,
    instances: usize,
}

/// What one table element counts for against the memory cap: a table lives
/// in host memory as pointers.
const TABLE_ELEMENT_BYTES: usize = 8;

/// Why a memory or table did not grow: the cap, named for the operator.
#[derive(Debug, thiserror::Error)]
#[error("the handler's memory would grow past limits.memory_mb = {} MiB ({used} bytes in use, {more} more asked for)", .cap >> 20)]
pub struct OverMemoryCap {
    cap: usize,
    used: usize,
    more: usize,
}

impl HandlerLimiter {
    fn new(cap: usize, instances: u32) -> HandlerLimiter {
        HandlerLimiter {
            cap,
            used: 0,
            instances: instances as usize,
        }
    }

    /// Takes `more` bytes, or fails (a trap) past the cap.
    fn grow(&mut self, more: usize) -> wasmtime::Result<bool> {
        match self.used.checked_add(more) {
            Some(total) if total <= self.cap => {
                self.used = total;
                Ok(true)
            }
            _ => Err(OverMemoryCap {
                cap: self.cap,
                used: self.used,
                more,
            }
            .into()),
        }
    }
}

impl wasmtime::ResourceLimiter for HandlerLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grow(desired.saturating_sub(current))
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grow(desired.saturating_sub(current).saturating_mul(TABLE_ELEMENT_BYTES))
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        10_000
    }

    fn memories(&self) -> usize {
        10_000
    }
}

/// The sinks a handler may emit to, each with what it can carry.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    sinks: HashMap<Box<str>, (Arc<str>, SinkRules)>,
    /// The emit rate of the handler's tenant, shared by its handlers.
    rate: Option<Arc<rate::EmitRate>>,
}

/// What a granted sink accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkRules {
    /// What a payload must be: one line of UTF-8 text with no control
    /// character but tab for the sinks that write lines (see
    /// [`line_payload`]), a row operation on one of its tables for a SQL
    /// sink (see [`crate::sink::sql`]), or anything.
    pub form: PayloadForm,
    /// The largest payload an emit to it may carry, in bytes: rowhook's
    /// own cap, or the sink's where lower (a NATS server's `max_payload`).
    pub max_payload: usize,
    /// The largest key, in bytes, likewise.
    pub max_key: usize,
}

impl SinkRules {
    /// The rules of a sink that takes payloads of `form`, with the limits
    /// it states (`None`: none of its own); rowhook's caps apply where
    /// they are lower.
    pub fn new(form: PayloadForm, max_payload: Option<usize>, max_key: Option<usize>) -> SinkRules {
        SinkRules {
            form,
            max_payload: max_payload.map_or(caps::MAX_PAYLOAD, |m| m.min(caps::MAX_PAYLOAD)),
            max_key: max_key.map_or(caps::MAX_EMIT_KEY, |m| m.min(caps::MAX_EMIT_KEY)),
        }
    }

    /// Checks a payload against the sink's form: `Err` with the error the
    /// guest sees and why, for rowhook's log.
    fn check(&self, payload: &[u8]) -> Result<(), (EmitError, std::borrow::Cow<'static, str>)> {
        match &self.form {
            PayloadForm::Bytes => Ok(()),
            PayloadForm::Line => line_payload(payload).map_err(|why| (EmitError::Invalid, why.into())),
            PayloadForm::RowOps(tables) => tables.admit(payload).map_err(|r| match r {
                Refusal::Denied => (
                    EmitError::Denied,
                    "the row operation names a table the sink may not write".into(),
                ),
                Refusal::Invalid(why) => (EmitError::Invalid, why.into()),
            }),
        }
    }
}

impl Grants {
    /// Grants from `(sink name, rules)` pairs.
    pub fn new(sinks: impl IntoIterator<Item = (String, SinkRules)>) -> Grants {
        Grants {
            sinks: sinks
                .into_iter()
                .map(|(name, rules)| (name.as_str().into(), (name.into(), rules)))
                .collect(),
            rate: None,
        }
    }

    /// The same grants, within the emit rate of the handler's tenant.
    pub fn within(mut self, rate: Option<Arc<rate::EmitRate>>) -> Grants {
        self.rate = rate;
        self
    }

    /// The granted sink `name`: its name, shared by every message to it,
    /// and its rules.
    fn get(&self, name: &str) -> Option<(&Arc<str>, &SinkRules)> {
        self.sinks.get(name).map(|(name, rules)| (name, rules))
    }
}

/// The engine all handlers share.
#[derive(Clone)]
pub struct HandlerRuntime {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    stop: Arc<AtomicBool>,
    interrupt: Interrupt,
    clock: CoarseClock,
    cache: Option<cache::CompileCache>,
}

impl Drop for HandlerRuntime {
    fn drop(&mut self) {
        if Arc::strong_count(&self.stop) == 1 {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// A compiled, validated handler component, ready to instantiate.
#[derive(Clone)]
pub struct Module {
    pre: bindings::HandlerPre<HostState>,
    path: String,
    core_instances: u32,
    origin: cache::Origin,
}

impl Module {
    /// Where it was loaded from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The core instances it creates (see [`shape::Shape::core_instances`]).
    pub fn core_instances(&self) -> u32 {
        self.core_instances
    }

    /// Whether it was compiled or read from the compile cache.
    pub fn origin(&self) -> cache::Origin {
        self.origin
    }
}

/// The emit limit an event breached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EmitLimit {
    /// `emits_per_event`.
    Count,
    /// `emit_mb_per_event`.
    Bytes,
    /// The tenant's `emit_mb_per_s`.
    Rate,
}

/// What a handler instance's store holds: its WASI context, its limits, its
/// grants, and what it emitted and wrote during the current transaction.
pub struct HostState {
    wasi: WasiCtx,
    http: http::HttpState,
    table: ResourceTable,
    limits: HandlerLimiter,
    stdout: output::GuestOutput,
    stderr: output::GuestOutput,
    /// Sinks this handler may emit to.
    grants: Arc<Grants>,
    /// Messages emitted since the last `take_emitted`.
    emitted: Vec<Emitted>,
    emits_this_event: u32,
    max_emits: u32,
    /// Payload and key bytes emitted in this event, and the budget.
    emit_bytes_this_event: usize,
    max_emit_bytes: usize,
    /// Which emit limit this event breached, if any.
    quota_hit: Option<EmitLimit>,
    /// State writes since the last commit, over the committed state.
    state: StateOverlay,
    /// Key and value bytes `state` may hold.
    state_quota: u64,
    /// Keys `state` may hold.
    max_keys: usize,
    /// Whether this instance logged a refused state write already.
    state_quota_warned: bool,
    /// Reseeded from the change's id at each call.
    random: random::HandlerRandom,
    logs: Vec<LogLine>,
    /// Whether this call already wrote more log lines than allowed.
    logs_dropped_this_call: bool,
    /// Bytes of log text written in this call.
    log_bytes: usize,
    /// What its `metrics` calls write, applied when the call succeeds.
    metrics: GuestMetrics,
    handler: Arc<str>,
    interrupt: Interrupt,
    /// The runtime's coarse clock, and when the current call's deadline
    /// passes on it (ms).
    clock: CoarseClock,
    deadline_ms: u64,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HandlerRuntime {
    /// Creates the engine and starts the epoch ticker.
    pub fn new() -> anyhow::Result<HandlerRuntime> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // For profiling handlers: `perf record` then names their functions
        // from the map wasmtime writes to /tmp/perf-<pid>.map.
        if std::env::var_os("ROWHOOK_PERF_MAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("starting wasmtime: {e}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
        caps::never_wait(&mut linker).map_err(|e| anyhow::anyhow!("linking WASI clocks and poll: {e}"))?;
        http::link(&mut linker).map_err(|e| anyhow::anyhow!("linking WASI HTTP: {e}"))?;
        {
            use bindings::rowhook::handler::{log, metrics, state};
            use wasmtime::component::HasSelf;
            state::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)
                .and_then(|()| log::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s))
                .and_then(|()| metrics::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s))
                .and_then(|()| caps::link_emit(&mut linker))
                .map_err(|e| anyhow::anyhow!("linking rowhook capabilities: {e}"))?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.clone();
        let ticker_stop = stop.clone();
        let clock = CoarseClock::default();
        let ticker_clock = clock.clone();
        std::thread::Builder::new()
            .name("rowhook-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    ticker_clock.tick();
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(|e| anyhow::anyhow!("starting the epoch thread: {e}"))?;
        Ok(HandlerRuntime {
            engine,
            linker: Arc::new(linker),
            stop,
            interrupt: Interrupt::default(),
            clock,
            cache: None,
        })
    }

    /// Keeps compiled components in `dir` (see [`cache`]): a handler is
    /// compiled once, then loaded in milliseconds at every start, reload
    /// and check.
    pub fn with_compile_cache(mut self, dir: PathBuf) -> HandlerRuntime {
        self.cache = Some(cache::CompileCache::new(dir, &self.engine));
        self
    }

    /// The interrupt of every instance of this runtime (and its clones).
    pub fn interrupt(&self) -> Interrupt {
        self.interrupt.clone()
    }

    /// Compiles and validates the component at `path`: it must be a
    /// component, import nothing beyond what handlers are given, and export
    /// the handler entry point.
    /// Reads at most `max_bytes` (see [`read_module`]).
    pub fn load(&self, path: &Path, max_bytes: u64) -> Result<Module, LoadError> {
        let bytes = read_module(path, max_bytes)?;
        self.load_bytes(&path.display().to_string(), &bytes)
    }

    /// Like [`HandlerRuntime::load`], from bytes.
    pub fn load_bytes(&self, path: &str, bytes: &[u8]) -> Result<Module, LoadError> {
        // Checked here, not left to wasmtime, whose error would quote the
        // first bytes of whatever file the path names.
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::NotWasm { path: path.to_owned() });
        }
        // The imports are checked before compiling, which takes seconds
        // for an interpreter-based component: a refusal is instant.
        let shape = shape::read(bytes).map_err(|e| match e {
            shape::NotAComponent::CoreModule => LoadError::CoreModule { path: path.to_owned() },
            shape::NotAComponent::Malformed(detail) => LoadError::Invalid {
                path: path.to_owned(),
                detail,
            },
        })?;
        if let Some(import) = shape.imports.iter().find(|name| !allowed_import(name)) {
            return Err(LoadError::ForbiddenImport {
                path: path.to_owned(),
                import: import.clone(),
                remedy: shape::remedy(import),
            });
        }
        let compile = || Component::new(&self.engine, bytes);
        let (component, origin) = match &self.cache {
            Some(cache) => cache.load(&self.engine, bytes, compile),
            None => compile().map(|c| (c, cache::Origin::Compiled)),
        }
        .map_err(|e| LoadError::Invalid {
            path: path.to_owned(),
            detail: format!("{e:#}"),
        })?;
        // What wasmtime makes of the imports, the final word.
        if let Some((name, _)) = component
            .component_type()
            .imports(&self.engine)
            .find(|(name, _)| !allowed_import(name))
        {
            return Err(LoadError::ForbiddenImport {
                path: path.to_owned(),
                import: name.to_owned(),
                remedy: shape::remedy(name),
            });
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld {
                path: path.to_owned(),
                detail: format!("{e:#}"),
            })?;
        let pre = bindings::HandlerPre::new(pre).map_err(|e| LoadError::WrongWorld {
            path: path.to_owned(),
            detail: format!("{e:#}"),
        })?;
        Ok(Module {
            pre,
            path: path.to_owned(),
            core_instances: shape.core_instances,
            origin,
        })
    }

    /// A fresh instance of `module` for handler `name` with `grants` and
    /// `limits`, whose metrics go to a registry of its own.
    pub fn instantiate(
        &self,
        module: &Module,
        name: &str,
        grants: Arc<Grants>,
        limits: Limits,
    ) -> anyhow::Result<Instance> {
        let metrics = GuestMetrics::new(&crate::telemetry::Registry::new(), "default", name);
        self.instantiate_with(module, grants, limits, metrics)
    }

    /// A fresh instance of `module` for the handler `metrics` names, with
    /// `grants` and `limits`; its `metrics` calls and dropped log lines are
    /// counted in `metrics`' registry.
    pub fn instantiate_with(
        &self,
        module: &Module,
        grants: Arc<Grants>,
        limits: Limits,
        metrics: GuestMetrics,
    ) -> anyhow::Result<Instance> {
        let name = metrics.handler().to_owned();
        if module.core_instances > limits.instances {
            anyhow::bail!(
                "{} creates {} core instances, more than limits.instances = {} of handler `{name}`: raise the limit",
                module.path,
                module.core_instances,
                limits.instances
            );
        }
        let (stdout, stderr) = (output::GuestOutput::default(), output::GuestOutput::default());
        let mut wasi = wasmtime_wasi::WasiCtxBuilder::new();
        wasi.stdout(stdout.clone()).stderr(stderr.clone());
        wasi.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        wasi.wall_clock(caps::FrozenClock).monotonic_clock(caps::FrozenClock);
        wasi.max_random_size(MAX_RANDOM_BYTES);
        let random = random::HandlerRandom::new(&name);
        wasi.secure_random(random.secure())
            .insecure_random(random.insecure())
            .insecure_random_seed(random.insecure_seed());
        let state = HostState {
            wasi: wasi.build(),
            http: http::HttpState::default(),
            table: ResourceTable::new(),
            limits: HandlerLimiter::new(limits.memory_bytes, limits.instances),
            stdout,
            stderr,
            grants,
            emitted: Vec::new(),
            emits_this_event: 0,
            max_emits: limits.emits_per_event,
            emit_bytes_this_event: 0,
            max_emit_bytes: limits.emit_bytes_per_event,
            quota_hit: None,
            state: StateOverlay::default(),
            state_quota: limits.state_bytes,
            max_keys: limits.state_keys,
            state_quota_warned: false,
            random,
            logs: Vec::new(),
            logs_dropped_this_call: false,
            log_bytes: 0,
            metrics,
            handler: Arc::from(name.as_str()),
            interrupt: self.interrupt.clone(),
            clock: self.clock.clone(),
            deadline_ms: 0,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // Instantiation runs the component's start code under the deadline too.
        let first = arm_deadline(store.data_mut(), limits.time_ms);
        store.set_epoch_deadline(first);
        store.epoch_deadline_callback(on_epoch_deadline);
        let handler = match module.pre.instantiate(&mut store) {
            Ok(handler) => handler,
            Err(e) => {
                let (lines, _) = store.data().stderr.take_lines();
                let stderr = output::tail(&lines)
                    .map(|t| format!("; stderr: {t}"))
                    .unwrap_or_default();
                anyhow::bail!(
                    "instantiating {} for handler `{name}`: {e:#}{}",
                    module.path,
                    caps::guest_text(&stderr, caps::MAX_GUEST_TEXT)
                );
            }
        };
        let memory_at_start = store.data().limits.used;
        Ok(Instance {
            store,
            handler,
            limits,
            broken: false,
            memory_at_start,
        })
    }
}

fn deadline_ticks(time_ms: u64) -> u64 {
    (time_ms.max(1) * 1000 / TICK.as_micros() as u64).max(1)
}

/// Starts a call's deadline of `time_ms` from now; returns the ticks until
/// the epoch deadline first looks at it. Read on the coarse clock (one
/// atomic load, not a clock read per call), one millisecond later than
/// asked, so that the clock's lag never ends a call early.
fn arm_deadline(state: &mut HostState, time_ms: u64) -> u64 {
    state.deadline_ms = state.clock.now_ms() + time_ms.max(1) + 1;
    deadline_ticks(time_ms).min(STOP_CHECK)
}

/// At an epoch deadline while wasm code runs: stop the call if rowhook
/// is stopping, end it once its deadline passed, or let it run on. The
/// deadline is read from the clock, not counted in ticks: a tick is often
/// longer than asked for.
fn on_epoch_deadline(cx: wasmtime::StoreContextMut<'_, HostState>) -> wasmtime::Result<wasmtime::UpdateDeadline> {
    let state = cx.data();
    if state.interrupt.requested() {
        return Err(CallInterrupted.into());
    }
    let now = state.clock.now_ms();
    if now >= state.deadline_ms {
        return Ok(wasmtime::UpdateDeadline::Interrupt);
    }
    let ticks = (state.deadline_ms - now).div_ceil(TICK.as_millis() as u64);
    Ok(wasmtime::UpdateDeadline::Continue(ticks.clamp(1, STOP_CHECK)))
}

/// Milliseconds since the runtime started, kept by the epoch thread at
/// each tick: what call deadlines are measured on.
#[derive(Debug, Clone)]
struct CoarseClock {
    origin: std::time::Instant,
    ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Default for CoarseClock {
    fn default() -> Self {
        CoarseClock {
            origin: std::time::Instant::now(),
            ms: Arc::default(),
        }
    }
}

impl CoarseClock {
    fn tick(&self) {
        self.ms
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::Relaxed)
    }

    /// The instant `ms` on this clock stands for.
    fn instant(&self, ms: u64) -> std::time::Instant {
        self.origin + Duration::from_millis(ms)
    }
}

impl HostState {
    /// Moves what the guest wrote to stdout and stderr since the last look
    /// into its log (as `info` and `warn` lines with a `stream` field,
    /// under the log's bounds); returns the last lines of stderr.
    fn log_output(&mut self) -> Option<String> {
        use bindings::rowhook::handler::log::{Host as _, Level};
        let mut stderr_tail = None;
        for (stream, level) in [("stdout", Level::Info), ("stderr", Level::Warn)] {
            let out = if stream == "stdout" { &self.stdout } else { &self.stderr };
            let (lines, dropped) = out.take_lines();
            if stream == "stderr" {
                stderr_tail = output::tail(&lines);
            }
            for line in lines {
                self.log(level, line, vec![("stream".to_owned(), stream.to_owned())]);
            }
            if dropped > 0 {
                self.log(
                    Level::Warn,
                    format!(
                        "{dropped} more bytes of {stream} dropped: a call may write {} KiB",
                        output::MAX_BYTES_PER_CALL >> 10
                    ),
                    vec![("stream".to_owned(), stream.to_owned())],
                );
            }
        }
        stderr_tail
    }

    /// When the current call's deadline passes.
    fn deadline(&self) -> std::time::Instant {
        self.clock.instant(self.deadline_ms)
    }
}

/// A live handler instance.
pub struct Instance {
    store: Store<HostState>,
    handler: bindings::Handler,
    limits: Limits,
    broken: bool,
    /// Memory it held once created, bytes.
    memory_at_start: usize,
}

impl Instance {
    /// Calls the handler with one encoded row change (see `guest_abi`).
    ///
    /// After an `Err` other than [`GuestError::Failed`] the instance is
    /// broken (a component instance refuses calls after a trap) and must be
    /// replaced; what it emitted for this event is dropped.
    pub fn call(&mut self, change: &[u8]) -> Result<(), GuestError> {
        debug_assert!(!self.broken, "call on a broken instance");
        if self.store.data().interrupt.requested() {
            return Err(GuestError::Interrupted);
        }
        let mark = self.store.data().emitted.len();
        {
            let data = self.store.data_mut();
            // The id alone, from the header: the guest checks the rest.
            data.random.reseed(rowhook_abi::id_bytes(change).unwrap_or(change));
            data.emits_this_event = 0;
            data.emit_bytes_this_event = 0;
            data.quota_hit = None;
            data.logs_dropped_this_call = false;
            data.log_bytes = 0;
        }
        let first = arm_deadline(self.store.data_mut(), self.limits.time_ms);
        self.store.set_epoch_deadline(first);
        let result = self.handler.call_on_change(&mut self.store, change);
        let quota_hit = self.store.data().quota_hit;
        let outcome = match result {
            // A breached quota is the failure, whatever the guest made of
            // the error value it got.
            Ok(_) if quota_hit == Some(EmitLimit::Count) => Err(GuestError::Quota(self.limits.emits_per_event)),
            Ok(_) if quota_hit == Some(EmitLimit::Bytes) => {
                Err(GuestError::EmitBudget(self.limits.emit_bytes_per_event))
            }
            Ok(_) if quota_hit == Some(EmitLimit::Rate) => Err(GuestError::EmitRate(
                (self.store.data().grants.rate.as_ref()).map_or(0, |r| r.per_second()),
            )),
            Ok(Ok(())) => Ok(()),
            // What the guest says goes to the log and to dead letters:
            // escaped and bounded like its log lines.
            Ok(Err(msg)) => Err(GuestError::Failed(caps::guest_text(&msg, caps::MAX_GUEST_TEXT))),
            Err(e) => {
                self.broken = true;
                if e.downcast_ref::<CallInterrupted>().is_some() {
                    Err(GuestError::Interrupted)
                } else if matches!(e.downcast_ref::<wasmtime::Trap>(), Some(wasmtime::Trap::Interrupt)) {
                    Err(GuestError::Timeout(self.limits.time_ms))
                } else {
                    Err(GuestError::Trap(format!("{e:#}")))
                }
            }
        };
        let data = self.store.data_mut();
        let stderr_tail = data.log_output();
        // What the guest wrote to stderr before it trapped says why (a
        // panic message, a traceback): it goes with the trap.
        let outcome = outcome.map_err(|e| match e {
            GuestError::Trap(trap) => {
                let why = match stderr_tail {
                    Some(tail) => format!("{trap}; stderr: {tail}"),
                    None => trap,
                };
                GuestError::Trap(caps::guest_text(&why, caps::MAX_GUEST_TEXT))
            }
            other => other,
        });
        if outcome.is_err() {
            // Nothing of a failed event leaves the handler (but its log).
            data.emitted.truncate(mark);
            data.state.rollback_event();
            data.metrics.discard();
        } else {
            data.state.settle();
            data.metrics.apply();
        }
        outcome
    }

    /// Whether the instance trapped and must be replaced.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Moves the messages emitted since the last call of this to the end
    /// of `out` (both keep their capacity: no allocation per call).
    pub fn take_emitted(&mut self, out: &mut Vec<Emitted>) {
        out.append(&mut self.store.data_mut().emitted);
    }

    /// Drops the messages emitted since the last [`Instance::take_emitted`].
    pub fn drop_emitted(&mut self) {
        self.store.data_mut().emitted.clear();
    }

    /// Takes the log lines written since the last call of this.
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.store.data_mut().logs)
    }

    /// The handler's state (committed plus this transaction's writes).
    pub fn state(&mut self) -> &mut StateOverlay {
        &mut self.store.data_mut().state
    }

    /// Moves the state into a new instance (after a trap or a reload).
    pub fn replace_state(&mut self, state: StateOverlay) {
        self.store.data_mut().state = state;
    }

    /// The name of the handler.
    pub fn handler(&self) -> &str {
        &self.store.data().handler
    }

    /// Bytes of linear memory and tables its core instances hold, as
    /// counted against `limits.memory_mb`.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limits.used
    }

    /// Whether its memory has grown past half of the room it had when it
    /// was created: it is better replaced between transactions than left
    /// to trap at its cap (language runtimes that leak a little on every
    /// call get there in the end).
    pub fn worn(&self) -> bool {
        let room = self.limits.memory_bytes.saturating_sub(self.memory_at_start);
        self.memory_bytes() > self.memory_at_start + room / 2
    }
}

impl HostState {
    /// The checks of `emit` that need no copy of the message: the grant,
    /// the quotas, the sizes. The sink's name and rules if they pass, else
    /// the error and the quota the message would breach.
    #[allow(clippy::type_complexity)]
    fn admit(
        &self,
        sink: &str,
        key_len: usize,
        payload_len: usize,
    ) -> Result<(Arc<str>, &SinkRules), (EmitError, Option<EmitLimit>)> {
        let Some((name, rules)) = self.grants.get(sink) else {
            return Err((EmitError::Denied, None));
        };
        if self.emits_this_event >= self.max_emits {
            return Err((EmitError::Quota, Some(EmitLimit::Count)));
        }
        if payload_len > rules.max_payload || key_len > rules.max_key {
            return Err((EmitError::TooLarge, None));
        }
        if self.emit_bytes_this_event + payload_len + key_len > self.max_emit_bytes {
            return Err((EmitError::Quota, Some(EmitLimit::Bytes)));
        }
        Ok((name.clone(), rules))
    }

    /// Takes `bytes` from the tenant's emit rate, if it has one: the last
    /// check of an emit, once the message is known to be fit.
    fn within_rate(&self, bytes: usize) -> bool {
        (self.grants.rate.as_ref()).is_none_or(|rate| rate.take(bytes, std::time::Instant::now()))
    }

    /// Queues a message [`HostState::admit`] let through.
    fn accept(&mut self, emitted: Emitted) {
        self.emits_this_event += 1;
        self.emit_bytes_this_event += emitted.payload.len() + emitted.key.as_ref().map_or(0, Vec::len);
        self.emitted.push(emitted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::sql::{TableRule, Tables};

    #[test]
    fn a_sql_sink_takes_operations_on_its_tables_only() {
        let tables = Tables::new([("orders_copy".to_owned(), TableRule { key: vec!["id".into()] })]);
        let rules = SinkRules::new(PayloadForm::RowOps(Arc::new(tables)), None, None);
        assert!(
            rules
                .check(br#"{"op":"upsert","table":"orders_copy","row":{"id":1}}"#)
                .is_ok()
        );
        let (e, why) = rules
            .check(br#"{"op":"delete","table":"users","key":{"id":1}}"#)
            .unwrap_err();
        assert!(matches!(e, EmitError::Denied), "{why}");
        let (e, why) = rules
            .check(br#"{"op":"upsert","table":"orders_copy","row":{"x":1}}"#)
            .unwrap_err();
        assert!(matches!(e, EmitError::Invalid));
        assert!(why.contains("lacks the key column `id`"), "{why}");
        let (e, _) = rules.check(b"not json").unwrap_err();
        assert!(matches!(e, EmitError::Invalid));
        // Line sinks refuse control characters; others take any bytes.
        let line = SinkRules::new(PayloadForm::Line, None, None);
        assert!(matches!(line.check(b"a\nb").unwrap_err().0, EmitError::Invalid));
        assert!(SinkRules::new(PayloadForm::Bytes, None, None).check(b"a\nb").is_ok());
    }
}
