//! The host side of the capability interfaces: emit (checked against the
//! handler's grants on every call), per-handler state, structured log and
//! metrics. A denial is a value the guest can handle, never a trap.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::HostState;
use super::bindings::rowhook::handler::{emit, log, metrics, state};

/// Largest payload one emit may carry.
pub const MAX_PAYLOAD: usize = 16 << 20;
/// Largest state key.
const MAX_KEY: usize = 1024;
/// Largest state value.
const MAX_VALUE: usize = 1 << 20;
/// Most keys one handler may keep.
const MAX_KEYS: usize = 1_000_000;

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
    /// Counters and gauges, shown by the host.
    pub counters: BTreeMap<String, u64>,
    /// Gauges, shown by the host.
    pub gauges: BTreeMap<String, f64>,
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
        // Bounded: a handler cannot grow host memory through its log.
        if self.logs.len() < 10_000 {
            self.logs.push(LogLine { level, message, fields });
        }
    }
}

impl metrics::Host for HostState {
    fn counter_add(&mut self, name: String, delta: u64) {
        if self.state.counters.len() < 1000 || self.state.counters.contains_key(&name) {
            let c = self.state.counters.entry(name).or_default();
            *c = c.saturating_add(delta);
        }
    }

    fn gauge_set(&mut self, name: String, value: f64) {
        if self.state.gauges.len() < 1000 || self.state.gauges.contains_key(&name) {
            self.state.gauges.insert(name, value);
        }
    }
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
    use super::*;

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
