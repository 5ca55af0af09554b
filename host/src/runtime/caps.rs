//! The host side of the capability interfaces: emit (checked against the
//! handler's grants on every call), per-handler state, structured log and
//! metrics. A denial is a value the guest can handle, never a trap. And the
//! WASI functions rowhook gives its own meaning: frozen clocks whose
//! pollables are ready at once, and a `poll` that never waits past the
//! call's deadline.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::io::poll::{Host as AsyncPoll, HostPollable as AsyncPollable};
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

use super::HostState;
use super::bindings::rowhook::handler::{log, metrics, state};
use crate::telemetry::{Counter, Gauge, Registry, names};

/// Largest payload one emit may carry.
pub const MAX_PAYLOAD: usize = 16 << 20;
/// Largest key one emit may carry.
pub const MAX_EMIT_KEY: usize = 64 << 10;
/// Largest state key.
const MAX_KEY: usize = 1024;
/// Largest state value.
const MAX_VALUE: usize = 1 << 20;
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
/// Whether `payload` can be one line of a line sink (stdout, file, fifo),
/// and if not, why: it must be UTF-8 text with no control character but
/// tab. That keeps one message one line for every reader: `\n` and `\r`
/// (readers of CRLF text split there too) would split it, NUL makes
/// `grep` and other text tools treat the whole file as binary, ESC and the
/// other C0 and C1 controls can drive a terminal that shows the stream,
/// and bytes that are not UTF-8 stop a JSON or text reader at that line.
/// Row-change JSON passes: it escapes every C0 control; a handler that
/// copies text through another JSON encoder should make it escape DEL and
/// U+0080 to U+009F too.
pub fn line_payload(payload: &[u8]) -> Result<(), &'static str> {
    let text = std::str::from_utf8(payload).map_err(|_| "it is not UTF-8 text")?;
    // Controls are ASCII bytes below 0x20 or 0x7f, or U+0080..=U+009F,
    // which UTF-8 writes as 0xc2 0x80..=0x9f.
    let bytes = text.as_bytes();
    // Most payloads hold none of these bytes: a branch-free pass over
    // 64-byte blocks, which the compiler vectorises, clears them at about
    // 12 GB/s; the byte-by-byte pass below runs only to say why one is refused.
    let suspect = |block: &[u8]| {
        block
            .iter()
            .fold(false, |seen, &b| seen | (b < 0x20) | (b == 0x7f) | (b == 0xc2))
    };
    if !bytes.chunks(64).any(suspect) {
        return Ok(());
    }
    for (i, &b) in bytes.iter().enumerate() {
        let why = match b {
            b'\t' => continue,
            b'\n' => "it holds a newline (\\n)",
            b'\r' => "it holds a carriage return (\\r)",
            0 => "it holds a NUL byte",
            0x1b => "it holds an escape (ESC, 0x1b)",
            0..0x20 | 0x7f => "it holds a control character",
            0xc2 if matches!(bytes.get(i + 1), Some(0x80..=0x9f)) => {
                "it holds a C1 control character (U+0080 to U+009F)"
            }
            _ => continue,
        };
        return Err(why);
    }
    Ok(())
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
    pub sink: Arc<str>,
    /// Optional key (partitioning, dedupe): UTF-8 text, as the guest gave it.
    pub key: Option<Vec<u8>>,
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

/// A handler's key-value state: the current values, with undo journals so
/// that what a failed event wrote can be taken back, and the set of keys a
/// transaction changed, to commit together with the checkpoint.
///
/// The event journal holds, for each key the current event changed, its
/// value from before the event (one entry per key, however often the event
/// wrote it). Once the event succeeded ([`Self::settle`]) each key keeps
/// only its value from before the transaction, so a transaction of a
/// million rows that bumps one counter keeps one entry, not a million, and
/// the whole transaction can still be undone ([`Self::abandon`]) when its
/// stream is cut before its commit.
///
/// The size of the state is counted as it changes: [`Self::bytes`] is the
/// key and value bytes of the current values, kept up to date by every
/// write, delete, rollback and abandon, never recomputed by a scan. The
/// journals hold old values only: at most one per key changed, so at most
/// the state's size at the start of the event and of the transaction; and
/// the names of keys the transaction created, which [`Self::set`] keeps
/// within the quota too.
#[derive(Debug, Default, Clone)]
pub struct StateOverlay {
    values: HashMap<String, Vec<u8>>,
    /// Key and value bytes of `values`.
    bytes: u64,
    /// Keys the current event changed, with their values from before it.
    event_before: HashMap<String, Option<Vec<u8>>>,
    /// Keys changed by the transaction's settled events, with their values
    /// from before the transaction.
    txn_before: HashMap<String, Option<Vec<u8>>>,
    /// Name bytes of the keys in `event_before` that did not exist before
    /// the event.
    event_created: u64,
    /// Name bytes of the keys in `txn_before` that did not exist before the
    /// transaction.
    txn_created: u64,
}

/// Why [`StateOverlay::set`] refused a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverQuota {
    /// The state would be larger than the quota.
    State,
    /// The keys the transaction created would take more than the quota to
    /// name in its undo journal (keys created and deleted over and over).
    Journal,
}

impl StateOverlay {
    /// The current values: the committed state when no transaction is open
    /// (after [`Self::commit`]).
    pub fn values(&self) -> &HashMap<String, Vec<u8>> {
        &self.values
    }

    /// Committed state loaded from the store. Its size is counted once,
    /// here.
    pub fn from_values(values: HashMap<String, Vec<u8>>) -> StateOverlay {
        let bytes = values.iter().map(|(k, v)| entry_bytes(k, v)).sum();
        StateOverlay {
            values,
            bytes,
            ..StateOverlay::default()
        }
    }

    /// Undoes every write of the current event.
    pub fn rollback_event(&mut self) {
        for (key, before) in self.event_before.drain() {
            put(&mut self.values, &mut self.bytes, key, before);
        }
        self.event_created = 0;
    }

    /// Keeps the current event's writes: they can no longer be undone on
    /// their own, only with the whole transaction.
    pub fn settle(&mut self) {
        for (key, before) in self.event_before.drain() {
            match self.txn_before.entry(key) {
                std::collections::hash_map::Entry::Occupied(_) => {}
                std::collections::hash_map::Entry::Vacant(e) => {
                    if before.is_none() {
                        self.txn_created += e.key().len() as u64;
                    }
                    e.insert(before);
                }
            }
        }
        self.event_created = 0;
    }

    /// Undoes every write of the transaction in progress (its stream was
    /// cut; it will be handled again from its first change).
    pub fn abandon(&mut self) {
        self.rollback_event();
        for (key, before) in self.txn_before.drain() {
            put(&mut self.values, &mut self.bytes, key, before);
        }
        self.txn_created = 0;
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
        self.txn_created = 0;
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// A value.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.values.get(key).map(Vec::as_slice)
    }

    /// Every key and its value, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Bytes of the keys and values held: what counts against the quota.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Stores `value` under `key`, unless the write would grow the state
    /// past `quota` bytes or the names of the keys the transaction created
    /// past `quota`. A write that does not grow the state is always taken,
    /// so a state already past its quota (loaded after the quota was
    /// lowered) can still be overwritten in place and shrunk. A refused
    /// write changes nothing.
    pub fn set(&mut self, key: String, value: Vec<u8>, quota: u64) -> Result<(), OverQuota> {
        let old = self.values.get(&key).map(|v| entry_bytes(&key, v));
        let new = entry_bytes(&key, &value);
        let after = self.bytes - old.unwrap_or(0) + new;
        if after > quota && after > self.bytes {
            return Err(OverQuota::State);
        }
        if old.is_none()
            && !self.event_before.contains_key(&key)
            && !self.txn_before.contains_key(&key)
            && self.event_created + self.txn_created + key.len() as u64 > quota
        {
            return Err(OverQuota::Journal);
        }
        self.write(key, Some(value));
        Ok(())
    }

    /// Removes `key`; a missing key is not an error.
    pub fn delete(&mut self, key: &str) {
        if self.values.contains_key(key) {
            self.write(key.to_owned(), None);
        }
    }

    fn write(&mut self, key: String, value: Option<Vec<u8>>) {
        if self.event_before.contains_key(&key) {
            put(&mut self.values, &mut self.bytes, key, value);
            return;
        }
        let before = put(&mut self.values, &mut self.bytes, key.clone(), value);
        if before.is_none() {
            self.event_created += key.len() as u64;
        }
        self.event_before.insert(key, before);
    }
}

/// What one key and its value count against the quota.
fn entry_bytes(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

/// Sets or removes `key` in `values`, keeping `bytes` their size; returns
/// the value it replaced.
fn put(values: &mut HashMap<String, Vec<u8>>, bytes: &mut u64, key: String, value: Option<Vec<u8>>) -> Option<Vec<u8>> {
    let key_len = key.len() as u64;
    let old = match value {
        Some(v) => {
            *bytes += key_len + v.len() as u64;
            values.insert(key, v)
        }
        None => values.remove(&key),
    };
    if let Some(o) = &old {
        *bytes -= key_len + o.len() as u64;
    }
    old
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

/// Links `rowhook:handler/emit` by hand rather than through the generated
/// bindings, which would copy the sink name into a new `String` at every
/// call: the name, key and payload are read in the guest's memory, checked
/// there, and only an accepted key and payload are copied, once.
pub(super) fn link_emit(linker: &mut wasmtime::component::Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime::component::{WasmList, WasmStr};
    type Params = (WasmStr, Option<WasmStr>, WasmList<u8>);
    linker.instance("rowhook:handler/emit@0.1.0")?.func_wrap(
        "emit",
        |mut cx: wasmtime::StoreContextMut<'_, HostState>, (sink, key, payload): Params| {
            let sink = sink.to_str(&cx)?;
            let key = key.as_ref().map(|k| k.to_str(&cx)).transpose()?;
            let bytes = payload.as_le_slice(&cx);
            let key_len = key.as_deref().map_or(0, str::len);
            // The checks borrow the state as the memory is borrowed: both
            // are read only until the message is copied out.
            let (name, rules) = match cx.data().admit(&sink, key_len, bytes.len()) {
                Ok(ok) => ok,
                Err((error, hit)) => {
                    if hit.is_some() {
                        cx.data_mut().quota_hit = hit;
                    }
                    return Ok((Err(error),));
                }
            };
            if let Err((error, why)) = rules.check(bytes) {
                tracing::debug!(handler = %cx.data().handler, sink = %name, "emit refused as {error:?}: {why}");
                return Ok((Err(error),));
            }
            if !cx.data().within_rate(key_len + bytes.len()) {
                cx.data_mut().quota_hit = Some(super::EmitLimit::Rate);
                return Ok((Err(super::EmitError::Quota),));
            }
            let emitted = Emitted {
                sink: name,
                key: key.map(|k| k.as_bytes().to_vec()),
                payload: bytes.to_vec(),
            };
            cx.data_mut().accept(emitted);
            Ok((Ok(()),))
        },
    )
}

impl state::Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.state.get(&key).map(<[u8]>::to_vec)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), state::StateError> {
        if key.len() > MAX_KEY || value.len() > MAX_VALUE {
            return Err(state::StateError::TooLarge);
        }
        self.state_write(key, value)
    }

    fn delete(&mut self, key: String) {
        self.state.delete(&key);
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
        let next = current.checked_add(delta).ok_or(state::StateError::Overflow)?;
        self.state_write(key, next.to_le_bytes().to_vec())?;
        Ok(next)
    }
}

impl HostState {
    /// A write within the key count and the byte quota, or `quota`. The
    /// first refusal of an instance is logged; the guest sees each one.
    fn state_write(&mut self, key: String, value: Vec<u8>) -> Result<(), state::StateError> {
        let keys_full;
        let refused = if self.state.get(&key).is_none() && self.state.len() >= self.max_keys {
            keys_full = format!("holds {} keys, its quota (limits.state_keys)", self.max_keys);
            Some(keys_full.as_str())
        } else {
            match self.state.set(key, value, self.state_quota) {
                Ok(()) => None,
                Err(OverQuota::State) => Some("would grow past its quota (limits.state_mb)"),
                Err(OverQuota::Journal) => {
                    Some("created and deleted more key names in one transaction than its quota (limits.state_mb) holds")
                }
            }
        };
        let Some(why) = refused else { return Ok(()) };
        if !self.state_quota_warned {
            self.state_quota_warned = true;
            tracing::warn!(
                handler = %self.handler,
                bytes = self.state.bytes(),
                quota = self.state_quota,
                "handler state {why}: writes that grow it get `quota` (logged once per instance)"
            );
        }
        Err(state::StateError::Quota)
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
            let (deadline, interrupt) = (state.deadline(), state.interrupt.clone());
            let ready = within_deadline(deadline, &interrupt, AsyncPoll::poll(&mut state.table, pollables))?;
            Ok((ready,))
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut cx: StoreContextMut<'_, HostState>, (pollable,): (Resource<DynPollable>,)| {
            let state = cx.data_mut();
            let (deadline, interrupt) = (state.deadline(), state.interrupt.clone());
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
    const Q: u64 = u64::MAX;

    #[test]
    fn state_rolls_back_a_failed_event_and_commits_the_rest() {
        let mut s = StateOverlay::default();
        s.set("a".into(), b"1".to_vec(), Q).unwrap();
        s.settle();
        s.set("a".into(), b"2".to_vec(), Q).unwrap();
        s.set("a".into(), b"3".to_vec(), Q).unwrap();
        s.set("b".into(), b"x".to_vec(), Q).unwrap();
        s.rollback_event();
        assert_eq!(s.get("a"), Some(&b"1"[..]));
        assert_eq!(s.get("b"), None);
        s.delete("c");
        assert_eq!(s.commit(), vec![("a".to_string(), Some(b"1".to_vec()))]);
        assert!(s.event_before.is_empty() && s.txn_before.is_empty());
    }

    #[test]
    fn settled_events_keep_one_entry_per_key() {
        let mut s = StateOverlay::default();
        for i in 0..10_000u32 {
            s.set("n".into(), i.to_le_bytes().to_vec(), Q).unwrap();
            s.set("n".into(), i.to_le_bytes().to_vec(), Q).unwrap();
            assert_eq!(s.event_before.len(), 1);
            s.settle();
        }
        assert_eq!(s.txn_before.len(), 1);
        assert_eq!(
            s.commit(),
            vec![("n".to_string(), Some(9_999u32.to_le_bytes().to_vec()))]
        );
    }

    /// The count a scan of the values would give.
    fn scanned(s: &StateOverlay) -> u64 {
        s.values.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
    }

    #[test]
    fn bytes_follow_writes_overwrites_and_deletes() {
        let mut s = StateOverlay::default();
        assert_eq!(s.bytes(), 0);
        s.set("ab".into(), vec![0; 10], Q).unwrap();
        assert_eq!(s.bytes(), 12);
        s.set("ab".into(), vec![0; 3], Q).unwrap();
        assert_eq!(s.bytes(), 5);
        s.set("c".into(), vec![], Q).unwrap();
        assert_eq!(s.bytes(), 6);
        s.delete("ab");
        s.delete("missing");
        assert_eq!(s.bytes(), 1);
        assert_eq!(s.bytes(), scanned(&s));
        s.commit();
        assert_eq!(s.bytes(), 1);
        let loaded = StateOverlay::from_values(HashMap::from([("key".to_string(), vec![1; 5])]));
        assert_eq!(loaded.bytes(), 8);
    }

    #[test]
    fn bytes_follow_rollback_abandon_and_commit() {
        let mut s = StateOverlay::from_values(HashMap::from([("kept".to_string(), vec![0; 4])]));
        assert_eq!(s.bytes(), 8);
        s.set("kept".into(), vec![0; 100], Q).unwrap();
        s.set("new".into(), vec![0; 7], Q).unwrap();
        s.settle();
        assert_eq!(s.bytes(), 114);
        // A failed event: back to where it started.
        s.set("kept".into(), vec![0; 1000], Q).unwrap();
        s.delete("new");
        s.set("other".into(), vec![0; 5], Q).unwrap();
        assert_eq!(s.bytes(), 1014);
        s.rollback_event();
        assert_eq!(s.bytes(), 114);
        assert_eq!(s.bytes(), scanned(&s));
        // A cut transaction: back to the committed state.
        s.delete("kept");
        assert_eq!(s.bytes(), 10);
        s.abandon();
        assert_eq!(s.bytes(), 8);
        assert_eq!(s.bytes(), scanned(&s));
        // A committed one stays.
        s.set("new".into(), vec![0; 7], Q).unwrap();
        s.settle();
        s.commit();
        assert_eq!(s.bytes(), 18);
        s.abandon();
        assert_eq!(s.bytes(), 18);
    }

    #[test]
    fn writes_that_grow_past_the_quota_are_refused_and_change_nothing() {
        let mut s = StateOverlay::default();
        s.set("a".into(), vec![0; 9], 20).unwrap();
        s.set("b".into(), vec![0; 9], 20).unwrap();
        assert_eq!(s.bytes(), 20);
        assert_eq!(s.set("c".into(), vec![], 20), Err(OverQuota::State));
        assert_eq!(s.set("a".into(), vec![0; 10], 20), Err(OverQuota::State));
        assert_eq!(
            (s.bytes(), s.get("c"), s.get("a").map(<[u8]>::len)),
            (20, None, Some(9))
        );
        // Overwriting in place and shrinking are taken.
        s.set("a".into(), vec![1; 9], 20).unwrap();
        s.set("a".into(), vec![1; 2], 20).unwrap();
        assert_eq!(s.bytes(), 13);
        s.set("c".into(), vec![0; 6], 20).unwrap();
        assert_eq!(s.bytes(), 20);
    }

    #[test]
    fn a_state_loaded_over_a_lowered_quota_shrinks_but_does_not_grow() {
        let big: HashMap<String, Vec<u8>> = (0..10).map(|i| (format!("k{i}"), vec![0; 98])).collect();
        let mut s = StateOverlay::from_values(big);
        assert_eq!(s.bytes(), 1000);
        let quota = 500;
        assert_eq!(s.set("new".into(), vec![], quota), Err(OverQuota::State));
        assert_eq!(s.set("k0".into(), vec![0; 99], quota), Err(OverQuota::State));
        s.set("k0".into(), vec![7; 98], quota).unwrap();
        s.set("k1".into(), vec![7; 8], quota).unwrap();
        s.delete("k2");
        assert_eq!(s.bytes(), 1000 - 90 - 100);
        for i in 3..10 {
            s.delete(&format!("k{i}"));
        }
        assert_eq!(s.bytes(), 100 + 10);
        s.set("new".into(), vec![0; 100], quota).unwrap();
        s.commit();
        assert_eq!(s.bytes(), 213);
    }

    #[test]
    fn the_journal_of_created_keys_is_bounded_by_the_quota() {
        let mut s = StateOverlay::default();
        // Create and delete: the state stays empty, the journal keeps the
        // names to undo the transaction, up to the quota.
        let mut created = 0;
        for i in 0..1000 {
            let key = format!("key-{i:04}");
            match s.set(key.clone(), vec![], 100) {
                Ok(()) => created += 1,
                Err(e) => {
                    assert_eq!(e, OverQuota::Journal);
                    break;
                }
            }
            s.delete(&key);
            if i % 3 == 0 {
                s.settle();
            }
        }
        assert_eq!(created, 100 / 8);
        assert_eq!(s.bytes(), 0);
        // A commit empties the journal.
        assert_eq!(s.commit().len(), created);
        s.set("key-x".into(), vec![], 100).unwrap();
    }

    fn guest_series(registry: &Registry) -> Vec<(String, String, crate::telemetry::Value)> {
        registry
            .snapshot()
            .samples
            .into_iter()
            .filter(|s| s.name == names::GUEST_COUNTER || s.name == names::GUEST_GAUGE)
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
                (
                    "rowhook_handler_counter_total".into(),
                    "orders".into(),
                    Value::Counter(3)
                ),
                ("rowhook_handler_gauge".into(), "latest".into(), Value::Gauge(1.5)),
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
        s.set("kept".into(), b"1".to_vec(), Q).unwrap();
        s.set("gone".into(), b"1".to_vec(), Q).unwrap();
        s.commit();
        for i in 0..5u8 {
            s.set("kept".into(), vec![i], Q).unwrap();
            s.set("new".into(), vec![i], Q).unwrap();
            s.delete("gone");
            s.settle();
        }
        s.set("kept".into(), b"unsettled".to_vec(), Q).unwrap();
        s.abandon();
        assert_eq!(s.get("kept"), Some(&b"1"[..]));
        assert_eq!(s.get("gone"), Some(&b"1"[..]));
        assert_eq!(s.get("new"), None);
        assert_eq!(s.bytes(), 10);
        assert_eq!(s.commit(), vec![]);
    }

    #[test]
    fn line_payloads_are_one_line_of_text() {
        for ok in ["", "{\"a\":\"b\\nc\"}", "tab\there", "ü € \u{2028} 😀", "\u{a0}"] {
            assert_eq!(line_payload(ok.as_bytes()), Ok(()), "{ok:?}");
        }
        for (bad, why) in [
            (&b"a\nb"[..], "newline"),
            (b"a\r", "carriage return"),
            (b"\0", "NUL"),
            (b"\x1b[2J", "escape"),
            (b"\x07", "control character"),
            (b"\x7f", "control character"),
            ("\u{9b}31m".as_bytes(), "C1"),
            ("\u{85}".as_bytes(), "C1"),
            (b"\xff\xfe", "not UTF-8"),
            (b"\xc2", "not UTF-8"),
        ] {
            let e = line_payload(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
