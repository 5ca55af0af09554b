//! The host side of the capability interfaces: emit (checked against the
//! handler's grants on every call), per-handler state, structured log and
//! metrics. A denial is a value the guest can handle, never a trap. And the
//! WASI functions rowhook gives its own meaning: frozen clocks whose
//! pollables are ready at once, and a `poll` that never waits past the
//! call's deadline.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::io::poll::{Host as AsyncPoll, HostPollable as AsyncPollable};
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

use super::HostState;
use super::bindings::rowhook::handler::{emit, log, metrics, state};
use crate::telemetry::{Counter, Gauge, Registry, names};

/// Largest payload one emit may carry.
pub const MAX_PAYLOAD: usize = 16 << 20;
/// Largest key one emit may carry.
pub const MAX_EMIT_KEY: usize = 64 << 10;
/// Largest state key.
const MAX_KEY: usize = 1024;
/// Largest state value.
const MAX_VALUE: usize = 1 << 20;
/// Most keys one handler may keep.
const MAX_KEYS: usize = 1_000_000;
/// Log lines one call may write; the rest are dropped and counted.
pub const MAX_LOG_LINES_PER_CALL: usize = 10_000;
/// The most bytes of log text (messages, field names and values) one call
/// may write; past it, lines are dropped and counted like lines past
/// [`MAX_LOG_LINES_PER_CALL`].
pub const MAX_LOG_BYTES_PER_CALL: usize = 1 << 20;
/// The most bytes of one log message, and of an error string a handler
/// returns, that reach rowhook's log or a dead letter.
pub const MAX_GUEST_TEXT: usize = 4096;
/// The most bytes of one log field's name or value.
const MAX_FIELD_TEXT: usize = 512;
/// The most fields of one log line.
const MAX_FIELDS: usize = 32;

/// Text a guest wrote, made safe for rowhook's log (one line per record,
/// whatever the guest wrote) and bounded: control characters are escaped
/// (`\n`, `\r`, `\t`, `\u{1b}`), so a guest cannot forge log lines or
/// terminal escapes, and anything past `max` bytes is cut, saying how much.
pub fn guest_text(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 16);
    for (i, c) in s.char_indices() {
        if out.len() >= max {
            out.push_str(&format!("… ({} more bytes)", s.len() - i));
            return out;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}
/// Distinct counter names (and, apart, gauge names) one handler may use.
pub const MAX_METRIC_NAMES: usize = 1_000;
/// Invalid metric names warned about per instance (each once).
const MAX_WARNED_NAMES: usize = 100;
/// The longest metric name, bytes.
pub const MAX_METRIC_NAME: usize = 64;
/// The most metric writes one call may make; the rest are ignored and
/// counted, so a loop of `counter-add` cannot grow host memory.
pub const MAX_METRIC_WRITES_PER_CALL: usize = 10_000;

/// One message a handler emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// The sink it names (granted: checked at emit).
    pub sink: String,
    /// Optional key (partitioning, dedupe).
    pub key: Option<String>,
    /// The payload.
    pub payload: Vec<u8>,
}

/// One structured log line a handler wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `trace` … `error`.
    pub level: &'static str,
    /// The message.
    pub message: String,
    /// Key-value fields.
    pub fields: Vec<(String, String)>,
}

/// A handler's key-value state: the current values, with an undo journal so
/// that what a failed event wrote can be taken back, and the set of keys a
/// transaction changed, to commit together with the checkpoint.
///
/// The journal covers one event: once the event succeeded ([`Self::settle`])
/// each key it wrote keeps only its value from before the transaction, so a
/// transaction of a million rows that bumps one counter keeps one entry, not
/// a million, and the whole transaction can still be undone
/// ([`Self::abandon`]) when its stream is cut before its commit.
#[derive(Debug, Default, Clone)]
pub struct StateOverlay {
    values: HashMap<String, Vec<u8>>,
    /// (key, value before the write) in write order, for the current event.
    undo: Vec<(String, Option<Vec<u8>>)>,
    /// Keys changed by the transaction's settled events, with their values
    /// from before the transaction.
    txn_before: HashMap<String, Option<Vec<u8>>>,
}

impl StateOverlay {
    /// Committed state loaded from the store.
    pub fn from_values(values: HashMap<String, Vec<u8>>) -> StateOverlay {
        StateOverlay {
            values,
            ..StateOverlay::default()
        }
    }

    /// A position in the undo journal.
    pub fn mark(&self) -> usize {
        self.undo.len()
    }

    /// Undoes every write after `mark`.
    pub fn rollback_to(&mut self, mark: usize) {
        while self.undo.len() > mark {
            let (key, before) = self.undo.pop().expect("len > mark");
            match before {
                Some(v) => self.values.insert(key, v),
                None => self.values.remove(&key),
            };
        }
    }

    /// Keeps the current event's writes: they can no longer be undone.
    pub fn settle(&mut self) {
        for (key, before) in self.undo.drain(..) {
            self.txn_before.entry(key).or_insert(before);
        }
    }

    /// Undoes every write of the transaction in progress (its stream was
    /// cut; it will be handled again from its first change).
    pub fn abandon(&mut self) {
        self.rollback_to(0);
        for (key, before) in self.txn_before.drain() {
            match before {
                Some(v) => self.values.insert(key, v),
                None => self.values.remove(&key),
            };
        }
    }

    /// Ends the transaction: its writes stay, and the keys it changed are
    /// returned with their new values (`None`: deleted), for the store.
    pub fn commit(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        self.settle();
        let mut out = Vec::with_capacity(self.txn_before.len());
        for (key, _) in self.txn_before.drain() {
            let v = self.values.get(&key).cloned();
            out.push((key, v));
        }
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// A value.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.values.get(key).map(Vec::as_slice)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn write(&mut self, key: String, value: Option<Vec<u8>>) {
        let before = match value {
            Some(v) => self.values.insert(key.clone(), v),
            None => self.values.remove(&key),
        };
        self.undo.push((key, before));
    }
}

/// A handler's metrics in the [`Registry`]: what its `metrics` calls set,
/// and the host's count of its dropped log lines and ignored metric calls,
/// all labelled with its tenant and name.
///
/// A call's metric writes wait in `pending` and reach the registry only
/// when the call succeeds ([`GuestMetrics::apply`]); a failed call's are
/// dropped with its emits ([`GuestMetrics::discard`]), and a name it used
/// first does not appear at all. A name is resolved to its series once;
/// after that a write costs a map lookup and, at the end of the call, one
/// atomic operation.
#[derive(Debug, Clone)]
pub struct GuestMetrics {
    registry: Registry,
    tenant: String,
    handler: String,
    counters: HashMap<String, Counter>,
    gauges: HashMap<String, Gauge>,
    pending: Vec<MetricWrite>,
    log_lines_dropped: Counter,
    ignored: Counter,
    warned: HashSet<String>,
}

#[derive(Debug, Clone)]
enum MetricWrite {
    Add(Counter, u64),
    Set(Gauge, f64),
    /// A name this handler has not used yet: registered when applied.
    AddNew(String, u64),
    SetNew(String, f64),
}

impl GuestMetrics {
    /// The metrics of handler `handler` of `tenant`, in `registry`.
    pub fn new(registry: &Registry, tenant: &str, handler: &str) -> GuestMetrics {
        let labels = || vec![("tenant", tenant.to_owned()), ("handler", handler.to_owned())];
        GuestMetrics {
            log_lines_dropped: registry.counter(
                names::HANDLER_LOG_LINES_DROPPED,
                "Log lines a handler wrote past the per-call cap or its log rate, dropped.",
                labels(),
            ),
            ignored: registry.counter(
                names::HANDLER_METRIC_CALLS_IGNORED,
                "Metric calls of a handler ignored: an invalid name, or more names than allowed.",
                labels(),
            ),
            registry: registry.clone(),
            tenant: tenant.to_owned(),
            handler: handler.to_owned(),
            counters: HashMap::new(),
            gauges: HashMap::new(),
            pending: Vec::new(),
            warned: HashSet::new(),
        }
    }

    /// The name of the handler.
    pub fn handler(&self) -> &str {
        &self.handler
    }

    /// Applies the writes of the call that just succeeded.
    pub fn apply(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        for w in pending.drain(..) {
            match w {
                MetricWrite::Add(c, n) => c.saturating_add(n),
                MetricWrite::Set(g, v) => g.set(v),
                MetricWrite::AddNew(name, n) => {
                    if let Some(c) = self.new_counter(name) {
                        c.saturating_add(n);
                    }
                }
                MetricWrite::SetNew(name, v) => {
                    if let Some(g) = self.new_gauge(name) {
                        g.set(v);
                    }
                }
            }
        }
        // Keep the allocation for the next call.
        self.pending = pending;
    }

    /// Drops the writes of the call that just failed.
    pub fn discard(&mut self) {
        self.pending.clear();
    }

    /// Counts a log line dropped by the per-call cap.
    pub fn log_line_dropped(&self) {
        self.log_lines_dropped.inc();
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        if self.pending.len() >= MAX_METRIC_WRITES_PER_CALL {
            self.ignore(&name, "is written past the 10000 metric writes one call may make");
            return;
        }
        let write = match self.counters.get(&name).cloned() {
            Some(known) => MetricWrite::Add(known, delta),
            None if self.valid(&name) => MetricWrite::AddNew(name, delta),
            None => return,
        };
        self.pending.push(write);
    }

    fn gauge_set(&mut self, name: String, value: f64) {
        if self.pending.len() >= MAX_METRIC_WRITES_PER_CALL {
            self.ignore(&name, "is written past the 10000 metric writes one call may make");
            return;
        }
        let write = match self.gauges.get(&name).cloned() {
            Some(known) => MetricWrite::Set(known, value),
            None if self.valid(&name) => MetricWrite::SetNew(name, value),
            None => return,
        };
        self.pending.push(write);
    }

    /// The series of counter `name` (one call may have used it twice), or
    /// `None` if the handler has used all the names it may.
    fn new_counter(&mut self, name: String) -> Option<Counter> {
        if let Some(c) = self.counters.get(&name) {
            return Some(c.clone());
        }
        if self.counters.len() >= MAX_METRIC_NAMES {
            self.ignore(&name, "is one name too many: a handler may use 1000 counter names");
            return None;
        }
        let c = self.registry.counter(
            names::GUEST_COUNTER,
            "A counter a handler adds to (metrics.counter-add).",
            self.labels(&name),
        );
        self.counters.insert(name, c.clone());
        Some(c)
    }

    /// Like [`Self::new_counter`], for a gauge.
    fn new_gauge(&mut self, name: String) -> Option<Gauge> {
        if let Some(g) = self.gauges.get(&name) {
            return Some(g.clone());
        }
        if self.gauges.len() >= MAX_METRIC_NAMES {
            self.ignore(&name, "is one name too many: a handler may use 1000 gauge names");
            return None;
        }
        let g = self.registry.gauge(
            names::GUEST_GAUGE,
            "A gauge a handler sets (metrics.gauge-set).",
            self.labels(&name),
        );
        self.gauges.insert(name, g.clone());
        Some(g)
    }

    fn labels(&self, name: &str) -> crate::telemetry::Labels {
        vec![
            ("tenant", self.tenant.clone()),
            ("handler", self.handler.clone()),
            ("name", name.to_owned()),
        ]
    }

    /// Whether `name` is a valid metric name; if not, the call is ignored.
    fn valid(&mut self, name: &str) -> bool {
        if valid_metric_name(name) {
            return true;
        }
        self.ignore(
            name,
            "is not a valid metric name (ASCII letters, digits and `_`, not starting with a digit, at most 64 bytes)",
        );
        false
    }

    /// Counts an ignored call, and logs it once per name.
    fn ignore(&mut self, name: &str, why: &str) {
        self.ignored.inc();
        // Only a bounded prefix of a name is kept and shown: a guest may
        // pass names of any length.
        let shown = guest_text(name, MAX_METRIC_NAME);
        if self.warned.len() < MAX_WARNED_NAMES && !self.warned.contains(&shown) {
            tracing::warn!(handler = %self.handler, tenant = %self.tenant, "metric `{shown}` {why}: its calls are ignored");
            self.warned.insert(shown);
        }
    }
}

/// ASCII letters, digits and `_`, not starting with a digit, 1 to
/// [`MAX_METRIC_NAME`] bytes.
fn valid_metric_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_METRIC_NAME
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

impl emit::Host for HostState {
    fn emit(&mut self, sink: String, key: Option<String>, payload: Vec<u8>) -> Result<(), emit::EmitError> {
        HostState::emit(self, sink, key, payload)
    }
}

impl state::Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.state.get(&key).map(<[u8]>::to_vec)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), state::StateError> {
        if key.len() > MAX_KEY || value.len() > MAX_VALUE {
            return Err(state::StateError::TooLarge);
        }
        if self.state.get(&key).is_none() && self.state.len() >= MAX_KEYS {
            return Err(state::StateError::Quota);
        }
        self.state.write(key, Some(value));
        Ok(())
    }

    fn delete(&mut self, key: String) {
        if self.state.get(&key).is_some() {
            self.state.write(key, None);
        }
    }

    fn increment(&mut self, key: String, delta: i64) -> Result<i64, state::StateError> {
        if key.len() > MAX_KEY {
            return Err(state::StateError::TooLarge);
        }
        let current = match self.state.get(&key) {
            None => 0,
            Some(b) => {
                let Ok(a) = <[u8; 8]>::try_from(b) else {
                    return Err(state::StateError::NotACounter);
                };
                i64::from_le_bytes(a)
            }
        };
        if self.state.get(&key).is_none() && self.state.len() >= MAX_KEYS {
            return Err(state::StateError::Quota);
        }
        let next = current.checked_add(delta).ok_or(state::StateError::Overflow)?;
        self.state.write(key, Some(next.to_le_bytes().to_vec()));
        Ok(next)
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String, fields: Vec<(String, String)>) {
        let level = match level {
            log::Level::Trace => "trace",
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        // Bounded: a handler cannot grow host memory through its log, and
        // what it writes is escaped and cut before it is kept.
        let bytes = message.len() + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if self.logs.len() < MAX_LOG_LINES_PER_CALL && self.log_bytes + bytes <= MAX_LOG_BYTES_PER_CALL {
            self.log_bytes += bytes;
            let fields = fields
                .iter()
                .take(MAX_FIELDS)
                .map(|(k, v)| (guest_text(k, MAX_FIELD_TEXT), guest_text(v, MAX_FIELD_TEXT)))
                .collect();
            self.logs.push(LogLine {
                level,
                message: guest_text(&message, MAX_GUEST_TEXT),
                fields,
            });
            return;
        }
        if !self.logs_dropped_this_call {
            self.logs_dropped_this_call = true;
            tracing::warn!(handler = %self.handler, "handler wrote more than {MAX_LOG_LINES_PER_CALL} log lines or {MAX_LOG_BYTES_PER_CALL} bytes of log in one call: the rest of this call's lines are dropped and counted");
        }
        self.metrics.log_line_dropped();
    }
}

impl metrics::Host for HostState {
    fn counter_add(&mut self, name: String, delta: u64) {
        self.metrics.counter_add(name, delta);
    }

    fn gauge_set(&mut self, name: String, value: f64) {
        self.metrics.gauge_set(name, value);
    }
}

/// The WASI version wasmtime-wasi defines its p2 interfaces at. A guest
/// built against any 0.2 version links to these (the linker takes the
/// newest semver-compatible one), so what is shadowed here covers it.
const WASI_P2: &str = "0.2.12";

/// Redefines, over what `wasmtime_wasi::p2::add_to_linker_sync` linked,
/// the WASI functions that could hold rowhook's thread in the host, where
/// epoch interruption does not reach:
///
/// - `wasi:clocks/monotonic-clock` `subscribe-duration` and
///   `subscribe-instant` give a pollable that is ready at once: the clock
///   stands still at zero, so a sleep of any length returns at once, and a
///   loop that sleeps until the clock moves runs into the deadline like
///   any other loop;
/// - `wasi:io/poll` `poll` and `pollable.block` wait at most until the
///   call's deadline (then the call times out) and give way to an
///   [`super::Interrupt`] within [`super::STOP_CHECK`] ms. Every pollable a
///   handler can make is ready at once, so this is a second line only.
pub fn never_wait(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(&format!("wasi:clocks/monotonic-clock@{WASI_P2}"))?;
    clock.func_wrap(
        "subscribe-duration",
        |mut cx: StoreContextMut<'_, HostState>, (_,): (u64,)| Ok((ready_pollable(&mut cx.data_mut().table)?,)),
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut cx: StoreContextMut<'_, HostState>, (_,): (u64,)| Ok((ready_pollable(&mut cx.data_mut().table)?,)),
    )?;
    let mut poll = linker.instance(&format!("wasi:io/poll@{WASI_P2}"))?;
    poll.func_wrap(
        "poll",
        |mut cx: StoreContextMut<'_, HostState>, (pollables,): (Vec<Resource<DynPollable>>,)| {
            let state = cx.data_mut();
            let (deadline, interrupt) = (state.deadline, state.interrupt.clone());
            let ready = within_deadline(deadline, &interrupt, AsyncPoll::poll(&mut state.table, pollables))?;
            Ok((ready,))
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut cx: StoreContextMut<'_, HostState>, (pollable,): (Resource<DynPollable>,)| {
            let state = cx.data_mut();
            let (deadline, interrupt) = (state.deadline, state.interrupt.clone());
            within_deadline(deadline, &interrupt, AsyncPollable::block(&mut state.table, pollable))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A pollable that is always ready: what a sleep is on a frozen clock.
struct Ready;

#[wasmtime_wasi::async_trait]
impl Pollable for Ready {
    async fn ready(&mut self) {}
}

fn ready_pollable(table: &mut ResourceTable) -> wasmtime::Result<Resource<DynPollable>> {
    let ready = table.push(Ready)?;
    subscribe(table, ready)
}

/// Runs a host wait until it ends, the call's `deadline` passes (a
/// timeout, as when wasm code runs past it) or `interrupt` is requested.
fn within_deadline<R>(
    deadline: std::time::Instant,
    interrupt: &super::Interrupt,
    wait: impl Future<Output = wasmtime::Result<R>>,
) -> wasmtime::Result<R> {
    wasmtime_wasi::runtime::in_tokio(async {
        let deadline = tokio::time::Instant::from_std(deadline);
        let mut wait = std::pin::pin!(wait);
        loop {
            let check = deadline.min(tokio::time::Instant::now() + super::TICK * super::STOP_CHECK as u32);
            tokio::select! {
                biased;
                r = &mut wait => return r,
                () = tokio::time::sleep_until(check) => {
                    if interrupt.requested() {
                        return Err(super::CallInterrupted.into());
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(wasmtime::Trap::Interrupt.into());
                    }
                }
            }
        }
    })
}

/// Clocks that stand still: handlers get no clock unless granted one, so
/// their output depends on the change alone.
pub struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn guest_text_is_one_escaped_bounded_line() {
        assert_eq!(guest_text("plain ü", 100), "plain ü");
        assert_eq!(
            guest_text("a\nb\r\tc\\d\u{1b}[2J\u{7f}\u{2028}", 100),
            "a\\nb\\r\\tc\\\\d\\u{1b}[2J\\u{7f}\\u{2028}"
        );
        // Cut on a character boundary, saying how much is left out.
        assert_eq!(guest_text("ééé", 3), "éé… (2 more bytes)");
        assert_eq!(
            guest_text(&"x".repeat(10_000), 4096).len(),
            4096 + "… (5904 more bytes)".len()
        );
    }

    use super::*;

    /// The shadowed functions sit in the very instances wasmtime-wasi
    /// defined: with shadowing off, defining them again is refused. (Were
    /// [`WASI_P2`] another version, they would land in a new instance that
    /// guests of older versions do not resolve to.)
    #[test]
    fn the_shadowed_functions_are_the_ones_wasmtime_wasi_defines() {
        let engine = wasmtime::Engine::default();
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        for (interface, func) in [
            ("wasi:clocks/monotonic-clock", "subscribe-duration"),
            ("wasi:clocks/monotonic-clock", "subscribe-instant"),
            ("wasi:io/poll", "poll"),
            ("wasi:io/poll", "[method]pollable.block"),
        ] {
            let mut instance = linker.instance(&format!("{interface}@{WASI_P2}")).unwrap();
            let again = instance.func_wrap(func, |_: StoreContextMut<'_, HostState>, (): ()| Ok(()));
            assert!(
                again.is_err(),
                "{interface}@{WASI_P2} {func} is not defined by wasmtime-wasi"
            );
        }
        never_wait(&mut linker).unwrap();
    }

    #[test]
    fn a_sleep_is_ready_at_once() {
        let mut table = ResourceTable::new();
        let sleep = ready_pollable(&mut table).unwrap();
        let far = std::time::Instant::now() + Duration::from_secs(3600);
        let started = std::time::Instant::now();
        let borrowed = Resource::<DynPollable>::new_borrow(sleep.rep());
        let ready = within_deadline(
            far,
            &super::super::Interrupt::default(),
            AsyncPoll::poll(&mut table, vec![borrowed]),
        )
        .unwrap();
        assert_eq!(ready, vec![0]);
        let borrowed = Resource::<DynPollable>::new_borrow(sleep.rep());
        within_deadline(
            far,
            &super::super::Interrupt::default(),
            AsyncPollable::block(&mut table, borrowed),
        )
        .unwrap();
        // An hour asked for; a busy machine may take a while to schedule.
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    }

    #[test]
    fn a_host_wait_ends_at_the_deadline_or_at_an_interrupt() {
        let never = || async { std::future::pending::<wasmtime::Result<()>>().await };
        let interrupt = super::super::Interrupt::default();
        let started = std::time::Instant::now();
        let err = within_deadline(started + Duration::from_millis(50), &interrupt, never()).unwrap_err();
        assert!(
            matches!(err.downcast_ref::<wasmtime::Trap>(), Some(wasmtime::Trap::Interrupt)),
            "{err:?}"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(50) && took < Duration::from_millis(50 + 250),
            "{took:?}"
        );

        let requester = interrupt.clone();
        let started = std::time::Instant::now();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            requester.request();
        });
        let err = within_deadline(started + Duration::from_secs(60), &interrupt, never()).unwrap_err();
        stopper.join().unwrap();
        assert!(err.downcast_ref::<super::super::CallInterrupted>().is_some(), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_millis(30 + 250),
            "{:?}",
            started.elapsed()
        );

        // What is ready is taken, even past the deadline.
        let done = within_deadline(started, &interrupt, async { Ok(7) }).unwrap();
        assert_eq!(done, 7);
    }

    #[test]
    fn state_rolls_back_a_failed_event_and_commits_the_rest() {
        let mut s = StateOverlay::default();
        s.write("a".into(), Some(b"1".to_vec()));
        let mark = s.mark();
        s.write("a".into(), Some(b"2".to_vec()));
        s.write("b".into(), Some(b"x".to_vec()));
        s.rollback_to(mark);
        assert_eq!(s.get("a"), Some(&b"1"[..]));
        assert_eq!(s.get("b"), None);
        s.write("c".into(), None);
        assert_eq!(
            s.commit(),
            vec![("a".to_string(), Some(b"1".to_vec())), ("c".to_string(), None)]
        );
        assert_eq!(s.mark(), 0);
    }

    #[test]
    fn settled_events_keep_one_entry_per_key() {
        let mut s = StateOverlay::default();
        for i in 0..10_000u32 {
            s.write("n".into(), Some(i.to_le_bytes().to_vec()));
            s.settle();
        }
        assert_eq!(s.undo.len(), 0);
        assert_eq!(s.txn_before.len(), 1);
        assert_eq!(
            s.commit(),
            vec![("n".to_string(), Some(9_999u32.to_le_bytes().to_vec()))]
        );
    }

    fn guest_series(registry: &Registry) -> Vec<(String, String, crate::telemetry::Value)> {
        registry
            .snapshot()
            .samples
            .into_iter()
            .filter(|s| s.name.starts_with("rowhook_guest_"))
            .map(|s| (s.name.clone(), s.label("name").unwrap_or("").to_owned(), s.value))
            .collect()
    }

    #[test]
    fn metric_writes_land_only_when_the_call_succeeds() {
        use crate::telemetry::Value;
        let registry = Registry::new();
        let mut m = GuestMetrics::new(&registry, "shop", "orders");
        m.counter_add("orders".into(), 2);
        m.gauge_set("latest".into(), 1.5);
        m.apply();
        m.counter_add("orders".into(), 40);
        m.gauge_set("latest".into(), 9.0);
        m.counter_add("leaked".into(), 1);
        m.gauge_set("leaked".into(), 1.0);
        m.discard();
        m.counter_add("orders".into(), 1);
        m.apply();
        assert_eq!(
            guest_series(&registry),
            vec![
                ("rowhook_guest_counter_total".into(), "orders".into(), Value::Counter(3)),
                ("rowhook_guest_gauge".into(), "latest".into(), Value::Gauge(1.5)),
            ]
        );
        let calls = registry.snapshot();
        let s = calls.family(names::GUEST_COUNTER).next().unwrap();
        assert_eq!((s.label("tenant"), s.label("handler")), (Some("shop"), Some("orders")));
    }

    #[test]
    fn invalid_and_surplus_metric_names_are_ignored_and_counted() {
        let registry = Registry::new();
        let mut m = GuestMetrics::new(&registry, "shop", "orders");
        for bad in ["", "1st", "a-b", "a b", "é"] {
            m.counter_add(bad.into(), 1);
            m.gauge_set(bad.into(), 1.0);
        }
        for i in 0..MAX_METRIC_NAMES + 5 {
            m.counter_add(format!("n{i}"), 1);
        }
        m.counter_add("_ok_9".into(), 1);
        m.apply();
        let snap = registry.snapshot();
        assert_eq!(snap.family(names::GUEST_COUNTER).count(), MAX_METRIC_NAMES);
        assert!(!snap.has(names::GUEST_GAUGE));
        assert_eq!(snap.sum(names::HANDLER_METRIC_CALLS_IGNORED), 10 + 5 + 1);
        assert!(valid_metric_name("_ok_9") && valid_metric_name("Orders"));
    }

    #[test]
    fn long_names_and_write_floods_are_ignored_and_counted() {
        let registry = Registry::new();
        let mut m = GuestMetrics::new(&registry, "shop", "orders");
        assert!(valid_metric_name(&"n".repeat(MAX_METRIC_NAME)));
        m.counter_add("n".repeat(4 << 20), 1);
        for _ in 0..MAX_METRIC_WRITES_PER_CALL + 7 {
            m.counter_add("hits".into(), 1);
        }
        m.apply();
        let snap = registry.snapshot();
        assert_eq!(snap.sum(names::GUEST_COUNTER), MAX_METRIC_WRITES_PER_CALL as u64);
        assert_eq!(snap.sum(names::HANDLER_METRIC_CALLS_IGNORED), 1 + 7);
        // What is kept to log a name once is a bounded prefix.
        assert!(m.warned.iter().all(|n| n.len() <= MAX_METRIC_NAME + 32));
    }

    #[test]
    fn an_abandoned_transaction_leaves_the_committed_state() {
        let mut s = StateOverlay::default();
        s.write("kept".into(), Some(b"1".to_vec()));
        s.write("gone".into(), Some(b"1".to_vec()));
        s.commit();
        for i in 0..5u8 {
            s.write("kept".into(), Some(vec![i]));
            s.write("new".into(), Some(vec![i]));
            s.write("gone".into(), None);
            s.settle();
        }
        s.write("kept".into(), Some(b"unsettled".to_vec()));
        s.abandon();
        assert_eq!(s.get("kept"), Some(&b"1"[..]));
        assert_eq!(s.get("gone"), Some(&b"1"[..]));
        assert_eq!(s.get("new"), None);
        assert_eq!(s.commit(), vec![]);
    }
}
