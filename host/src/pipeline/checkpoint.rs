//! Group commit of acknowledged transactions to the store.
//!
//! A transaction's state writes, dead letters and the position after it
//! join a batch once every sink acknowledged its messages; the batch is
//! committed to the store (one redb transaction) at most every
//! `commit_interval`. The caller makes the sinks' writes durable before
//! [`Checkpointer::commit`], so the position never moves past a message a
//! crash could lose. Without a store nothing is kept and nothing is due.

use std::time::{Duration, Instant};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::store::{Batch, Checkpoint, DeadLetter, HeldRange, StateStore};

/// Where a lane that reads on its own connection is, as its last commit
/// left it: that lane's checkpointer moves it, the main one reads it.
#[derive(Debug, Clone)]
pub struct LanePlace(Arc<Mutex<Checkpoint>>);

impl LanePlace {
    /// Starting at `at`.
    pub fn new(at: Checkpoint) -> LanePlace {
        LanePlace(Arc::new(Mutex::new(at)))
    }

    /// Where the lane's store position is now.
    pub fn get(&self) -> Checkpoint {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set(&self, at: Checkpoint) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = at;
    }
}

/// Where each tenant's lane is, once tenants are declared: the store
/// resumes at the lane furthest behind, and keeps the position of every
/// lane past it.
#[derive(Default)]
struct Lanes {
    /// Every declared tenant; empty: no lanes, one position.
    tenants: BTreeSet<String>,
    /// Lanes that halted, and where each stopped.
    halted: BTreeMap<String, Checkpoint>,
    /// Lanes past the stream (it restarted behind them), and where each is.
    ahead: BTreeMap<String, Checkpoint>,
    /// Lanes reading on their own connection: their checkpointer keeps
    /// their position in the store, and this one resumes no later.
    detached: BTreeMap<String, LanePlace>,
    /// Whether the store holds lane positions.
    stored: bool,
    /// Whether a lane halted since the last commit.
    dirty: bool,
    /// The lanes past the resume position the store holds now.
    committed: BTreeMap<String, Checkpoint>,
}

impl Lanes {
    fn active(&self) -> bool {
        !self.tenants.is_empty()
            && (!self.halted.is_empty() || !self.ahead.is_empty() || !self.detached.is_empty() || self.stored)
    }

    /// With the stream at `p`: where to resume (the lane furthest behind)
    /// and every lane past that.
    fn place(&mut self, p: &Checkpoint) -> (Checkpoint, BTreeMap<String, Checkpoint>) {
        let detached: BTreeMap<&String, Checkpoint> = self.detached.iter().map(|(t, l)| (t, l.get())).collect();
        let of = |t: &String| {
            (detached.get(t))
                .or_else(|| self.halted.get(t))
                .or_else(|| self.ahead.get(t).filter(|a| a.at() > p.at()))
                .unwrap_or(p)
        };
        let resume = self.tenants.iter().map(of).min_by_key(|c| c.at()).unwrap_or(p).clone();
        let lanes: BTreeMap<String, Checkpoint> = (self.tenants.iter())
            .filter(|t| !self.detached.contains_key(*t))
            .map(|t| (t, of(t)))
            .filter(|(_, c)| c.at() > resume.at())
            .map(|(t, c)| (t.clone(), c.clone()))
            .collect();
        self.stored = !lanes.is_empty() || !self.detached.is_empty();
        (resume, lanes)
    }
}

/// The batch waiting for the store, and the transaction in progress.
pub struct Checkpointer {
    store: Option<StateStore>,
    /// Acknowledged transactions not yet in the store.
    batch: Batch,
    commit_interval: Duration,
    last_commit: Instant,
    /// The position after the commit seen last, until its transaction ends.
    txn_position: Option<Checkpoint>,
    /// What is left of the snapshot after the transaction in progress, if
    /// it is a snapshot chunk.
    txn_snapshot: Option<crate::snapshot::Progress>,
    /// Dead letters of the transaction in progress.
    txn_dead_letters: Vec<DeadLetter>,
    /// The position of the stream last committed to the store.
    position: Option<Checkpoint>,
    /// Where the store resumes: `position`, or with a lane halted behind
    /// it, that lane's.
    resume: Option<Checkpoint>,
    lanes: Lanes,
    /// The lane this checkpointer keeps the position of, alone: it reads
    /// on its own connection, and the main checkpointer keeps the rest.
    own_lane: Option<(String, LanePlace)>,
}

impl Checkpointer {
    /// Commits at most every `commit_interval`, once a store is attached.
    pub fn new(commit_interval: Duration) -> Checkpointer {
        Checkpointer {
            store: None,
            batch: Batch::default(),
            commit_interval,
            last_commit: Instant::now(),
            txn_position: None,
            txn_snapshot: None,
            txn_dead_letters: Vec::new(),
            position: None,
            resume: None,
            lanes: Lanes::default(),
            own_lane: None,
        }
    }

    /// Keeps the position of `tenant`'s lane alone, in `place` as well as
    /// in the store: the lane reads on its own connection (see
    /// [`Checkpointer::detach_lane`] for the main checkpointer's side).
    pub fn own_lane(&mut self, tenant: &str, place: LanePlace) {
        self.own_lane = Some((tenant.to_owned(), place));
    }

    /// Keeps a position per tenant of `tenants` (see [`Checkpointer::halt_lane`]).
    pub fn lanes(&mut self, tenants: impl IntoIterator<Item = String>) {
        self.lanes.tenants = tenants.into_iter().collect();
    }

    /// Keeps batches in `store`; returns the position to resume at (with
    /// lanes, that of the lane furthest behind; the lanes past it are in
    /// [`Checkpointer::lanes_ahead`]).
    pub fn attach(&mut self, store: StateStore) -> anyhow::Result<Option<Checkpoint>> {
        if let Some((_, place)) = &self.own_lane {
            let at = place.get();
            self.position = Some(at.clone());
            self.resume = Some(at.clone());
            self.store = Some(store);
            return Ok(Some(at));
        }
        let position = store.position()?;
        self.lanes.ahead = store.lanes()?;
        self.lanes.stored = !self.lanes.ahead.is_empty();
        self.lanes.committed = self.lanes.ahead.clone();
        // A lane the store knows of keeps its position, configured or not.
        self.lanes.tenants.extend(self.lanes.ahead.keys().cloned());
        self.position = position.clone();
        self.resume = position.clone();
        self.store = Some(store);
        Ok(position)
    }

    /// The lanes past the resume position, and where each is: their
    /// tenants' handlers take nothing before it.
    pub fn lanes_ahead(&self) -> &BTreeMap<String, Checkpoint> {
        &self.lanes.ahead
    }

    /// Where a restart resumes, as the store holds it now.
    pub fn resume(&self) -> Option<&Checkpoint> {
        self.resume.as_ref()
    }

    /// The lanes past the resume position, as the store holds them now.
    pub fn stored_lanes(&self) -> &BTreeMap<String, Checkpoint> {
        &self.lanes.committed
    }

    /// The stream has passed binlog place `at`: lanes that were ahead of
    /// it up to there are with the stream again.
    pub fn passed(&mut self, at: (u64, u64)) {
        if !self.lanes.ahead.is_empty() {
            self.lanes.ahead.retain(|_, c| c.at() > at);
        }
    }

    /// `tenant`'s lane reads on its own connection from now on: its
    /// checkpointer keeps its position, which `place` shows, and batches of
    /// this one leave it alone (and resume no later than it).
    pub fn detach_lane(&mut self, tenant: &str, place: LanePlace) {
        self.lanes.halted.remove(tenant);
        self.lanes.ahead.remove(tenant);
        self.lanes.tenants.insert(tenant.to_owned());
        self.lanes.detached.insert(tenant.to_owned(), place);
        self.lanes.dirty = true;
    }

    /// `tenant`'s lane, read on its own connection up to `at`, is back:
    /// halted there, or (`halted` false) with the stream, which takes it
    /// on from there (past the stream, it is kept as a lane ahead).
    pub fn rejoin_lane(&mut self, tenant: &str, at: Checkpoint, halted: bool) {
        self.lanes.detached.remove(tenant);
        if halted {
            self.lanes.halted.insert(tenant.to_owned(), at);
        } else {
            self.lanes.ahead.insert(tenant.to_owned(), at);
        }
        self.lanes.dirty = true;
    }

    /// Where `tenant`'s halted lane stopped, if it halted.
    pub fn halted_at(&self, tenant: &str) -> Option<&Checkpoint> {
        self.lanes.halted.get(tenant)
    }

    /// The lanes reading on their own connection, and where each is.
    pub fn detached_lanes(&self) -> BTreeMap<String, Checkpoint> {
        (self.lanes.detached.iter())
            .map(|(t, p)| (t.clone(), p.get()))
            .collect()
    }

    /// `tenant`'s lane halted after the transaction that ends at `at`: the
    /// store keeps that as its position from the next commit on, whatever
    /// the others do, and a restart resumes there for it.
    pub fn halt_lane(&mut self, tenant: &str, at: Checkpoint) {
        let at = match self.lanes.ahead.remove(tenant) {
            Some(ahead) if ahead.at() > at.at() => ahead,
            _ => at,
        };
        self.lanes.halted.insert(tenant.to_owned(), at);
        self.lanes.dirty = true;
    }

    /// The store, if one is attached.
    pub fn store(&self) -> Option<&StateStore> {
        self.store.as_ref()
    }

    /// Whether a store is attached (otherwise nothing is recorded).
    pub fn keeps(&self) -> bool {
        self.store.is_some()
    }

    /// The stream's position last committed to the store (a lane that
    /// halted behind it is where a restart resumes: see
    /// [`Checkpointer::resume`]).
    pub fn position(&self) -> Option<&Checkpoint> {
        self.position.as_ref()
    }

    /// The transaction in progress committed at `position`.
    pub fn commit_seen(&mut self, position: Checkpoint) {
        if self.keeps() {
            self.txn_position = Some(position);
        }
    }

    /// The transaction in progress is a snapshot chunk, after which
    /// `progress` is what is left of the snapshot.
    pub fn snapshot_seen(&mut self, progress: crate::snapshot::Progress) {
        if self.keeps() {
            self.txn_snapshot = Some(progress);
        }
    }

    /// A dead letter of the transaction in progress.
    pub fn dead_letter(&mut self, record: DeadLetter) {
        if self.keeps() {
            self.txn_dead_letters.push(record);
        }
    }

    /// What handlers' held files hold after a transaction every sink
    /// acknowledged (by `tenant/handler`): joins the batch.
    pub fn held_ranges(&mut self, ranges: impl IntoIterator<Item = (String, HeldRange)>) {
        if self.keeps() {
            self.batch.held.extend(ranges);
        }
    }

    /// Held changes were handed over and what they emitted acknowledged:
    /// the held files' ranges after them, their state writes and their
    /// dead letters join the batch. Returns whether the batch is due.
    pub fn handed_over(&mut self, ranges: impl IntoIterator<Item = (String, HeldRange)>) -> bool {
        if !self.keeps() {
            return false;
        }
        self.batch.held.extend(ranges);
        self.batch.dead_letters.append(&mut self.txn_dead_letters);
        self.last_commit.elapsed() >= self.commit_interval
    }

    /// `handler`'s state writes of the transaction in progress (`None`
    /// deletes the key).
    pub fn state_writes(&mut self, handler: &str, writes: Vec<(String, Option<Vec<u8>>)>) {
        if self.keeps() {
            for (key, value) in writes {
                self.batch.state.insert((handler.to_owned(), key), value);
            }
        }
    }

    /// The transaction in progress was acknowledged by every sink: it joins
    /// the batch. Returns whether the batch is due.
    pub fn end_transaction(&mut self) -> bool {
        if !self.keeps() {
            return false;
        }
        if let Some(p) = self.txn_position.take() {
            self.batch.position = Some(p);
            // The exec sinks' ledger entries so far are of this transaction
            // or earlier ones: the checkpoint that moves past it drops them.
            self.batch.ledger_below = self.store.as_ref().map(StateStore::ledger_next);
        }
        if let Some(p) = self.txn_snapshot.take() {
            self.batch.snapshot = Some(p);
        }
        self.batch.dead_letters.append(&mut self.txn_dead_letters);
        self.last_commit.elapsed() >= self.commit_interval
    }

    /// The transaction in progress was cut before its commit: what it
    /// recorded is dropped.
    pub fn abandon_transaction(&mut self) {
        self.txn_position = None;
        self.txn_snapshot = None;
        self.txn_dead_letters.clear();
    }

    /// Whether acknowledged transactions (or a lane's halt) wait for the store.
    pub fn pending(&self) -> bool {
        !self.batch.is_empty() || (self.lanes.dirty && self.keeps())
    }

    /// Time until the waiting batch is due (zero if it is), `None` if none waits.
    pub fn due_in(&self) -> Option<Duration> {
        self.pending()
            .then(|| self.commit_interval.saturating_sub(self.last_commit.elapsed()))
    }

    /// Where the transaction in progress starts: just past the last
    /// transaction acknowledged, committed to the store or not.
    pub fn txn_start(&self) -> Option<&Checkpoint> {
        self.batch.position.as_ref().or(self.position.as_ref())
    }

    /// Commits the waiting batch to the store; the sinks must have made
    /// its messages durable. Returns whether anything was committed; the
    /// interval restarts either way.
    pub fn commit(&mut self) -> anyhow::Result<bool> {
        self.last_commit = Instant::now();
        if self.store.is_none() || !self.pending() {
            return Ok(false);
        }
        let stream = self.batch.position.clone().or_else(|| self.position.clone());
        if let Some((tenant, _)) = &self.own_lane {
            if let Some(p) = self.batch.position.take() {
                self.batch.lane = Some((tenant.clone(), p));
            }
        } else if let Some(p) = &stream
            && self.lanes.active()
        {
            let (resume, lanes) = self.lanes.place(p);
            self.batch.position = Some(resume);
            self.batch.lanes = Some(lanes);
            self.batch.kept_lanes = self.lanes.detached.keys().cloned().collect();
        }
        self.store.as_mut().expect("checked above").commit(&self.batch)?;
        if let (Some((_, place)), Some((_, at))) = (&self.own_lane, &self.batch.lane) {
            place.set(at.clone());
        }
        self.lanes.dirty = false;
        if let Some(lanes) = self.batch.lanes.take() {
            self.lanes.committed = lanes;
        }
        if stream.is_some() {
            self.resume = self.batch.position.clone().or_else(|| stream.clone());
            self.position = stream;
        }
        self.batch = Batch::default();
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testing::TempDir;

    fn at(pos: u64) -> Checkpoint {
        Checkpoint {
            file: "mysql-bin.000001".into(),
            pos,
            gtids: String::new(),
            txn: format!("mysql-bin.000001:{pos}"),
            ts: 0,
        }
    }

    fn write(key: &str, value: &str) -> Vec<(String, Option<Vec<u8>>)> {
        vec![(key.to_owned(), Some(value.as_bytes().to_vec()))]
    }

    #[test]
    fn without_a_store_nothing_is_kept_or_due() {
        let mut c = Checkpointer::new(Duration::ZERO);
        c.commit_seen(at(100));
        c.state_writes("h", write("k", "v"));
        assert!(!c.end_transaction());
        assert!(!c.pending());
        assert_eq!(c.due_in(), None);
        assert!(!c.commit().unwrap());
    }

    #[test]
    fn transactions_join_the_batch_and_commit_together() {
        let dir = TempDir::new("checkpointer-batch");
        let mut c = Checkpointer::new(Duration::from_secs(3600));
        assert_eq!(c.attach(StateStore::open(dir.path()).unwrap()).unwrap(), None);
        c.commit_seen(at(100));
        c.state_writes("h", write("n", "1"));
        assert!(!c.end_transaction(), "the interval has not passed");
        c.commit_seen(at(200));
        c.state_writes("h", write("n", "2"));
        c.dead_letter(DeadLetter::new("h", "mysql-bin.000001:150:0", "boom", "dead"));
        c.end_transaction();
        assert!(c.pending());
        assert!(c.due_in().unwrap() > Duration::from_secs(3000));
        assert_eq!(c.position(), None, "nothing is in the store yet");
        assert!(c.commit().unwrap());
        assert_eq!(c.position(), Some(&at(200)));
        assert!(!c.pending());
        let store = c.store().unwrap();
        assert_eq!(store.position().unwrap(), Some(at(200)));
        assert_eq!(store.load_state("h").unwrap()["n"], b"2");
        assert_eq!(store.dead_letter_count().unwrap(), 1);
    }

    #[test]
    fn an_abandoned_transaction_leaves_no_trace() {
        let dir = TempDir::new("checkpointer-abandon");
        let mut c = Checkpointer::new(Duration::ZERO);
        c.attach(StateStore::open(dir.path()).unwrap()).unwrap();
        c.commit_seen(at(100));
        assert!(c.end_transaction(), "a zero interval is due at once");
        c.commit().unwrap();
        c.dead_letter(DeadLetter::new("h", "mysql-bin.000001:150:0", "boom", "dead"));
        c.commit_seen(at(200));
        c.abandon_transaction();
        c.end_transaction();
        assert!(!c.pending(), "the cut transaction recorded nothing");
        assert!(!c.commit().unwrap());
        assert_eq!(c.store().unwrap().position().unwrap(), Some(at(100)));
        assert_eq!(c.store().unwrap().dead_letter_count().unwrap(), 0);
    }

    #[test]
    fn a_halted_lane_keeps_its_position_and_the_others_theirs() {
        let dir = TempDir::new("checkpointer-lanes");
        let tenants = ["books", "edge", "shop"].map(String::from);
        let mut c = Checkpointer::new(Duration::ZERO);
        c.lanes(tenants.clone());
        c.attach(StateStore::open(dir.path()).unwrap()).unwrap();
        c.commit_seen(at(100));
        c.end_transaction();
        c.commit().unwrap();
        assert!(c.store().unwrap().lanes().unwrap().is_empty(), "no lane apart yet");
        // Edge halts after 100; the stream goes on to 300.
        c.halt_lane("edge", at(100));
        assert!(c.pending(), "the halt is recorded even without a transaction");
        c.commit().unwrap();
        for pos in [200, 300] {
            c.commit_seen(at(pos));
            c.end_transaction();
            c.commit().unwrap();
        }
        assert_eq!(c.position(), Some(&at(300)), "the stream's position");
        assert_eq!(c.resume(), Some(&at(100)));
        assert_eq!(c.stored_lanes().len(), 2);
        let store = c.store().unwrap();
        assert_eq!(store.position().unwrap(), Some(at(100)), "resumes for the lane behind");
        let lanes = store.lanes().unwrap();
        assert_eq!(
            lanes,
            [("books".to_owned(), at(300)), ("shop".to_owned(), at(300))].into()
        );
        drop(c);

        // After a restart the others are ahead until the stream passes them.
        let mut c = Checkpointer::new(Duration::ZERO);
        c.lanes(tenants);
        assert_eq!(c.attach(StateStore::open(dir.path()).unwrap()).unwrap(), Some(at(100)));
        assert_eq!(c.lanes_ahead().len(), 2);
        c.commit_seen(at(200));
        c.end_transaction();
        c.passed(at(200).at());
        c.commit().unwrap();
        let store = c.store().unwrap();
        assert_eq!(store.position().unwrap(), Some(at(200)), "edge caught up to 200");
        assert_eq!(store.lanes().unwrap()["books"], at(300));
        c.commit_seen(at(300));
        c.end_transaction();
        c.passed(at(300).at());
        c.commit().unwrap();
        c.commit_seen(at(400));
        c.end_transaction();
        c.passed(at(400).at());
        c.commit().unwrap();
        let store = c.store().unwrap();
        assert_eq!(store.position().unwrap(), Some(at(400)));
        assert!(store.lanes().unwrap().is_empty(), "every lane with the stream again");
    }

    #[test]
    fn a_lane_on_its_own_connection_keeps_its_position_and_the_stream_resumes_no_later() {
        let dir = TempDir::new("checkpointer-lane-apart");
        let mut main = Checkpointer::new(Duration::ZERO);
        main.lanes(["books", "edge"].map(String::from));
        main.attach(StateStore::open(dir.path()).unwrap()).unwrap();
        main.commit_seen(at(100));
        main.end_transaction();
        main.commit().unwrap();
        // Edge leaves at 100; its own checkpointer shares the store.
        let place = LanePlace::new(at(100));
        main.detach_lane("edge", place.clone());
        let mut edge = Checkpointer::new(Duration::ZERO);
        edge.own_lane("edge", place.clone());
        assert_eq!(edge.attach(main.store().unwrap().share()).unwrap(), Some(at(100)));
        for pos in [200, 300, 400] {
            main.commit_seen(at(pos));
            main.state_writes("books/h", write("n", &pos.to_string()));
            main.end_transaction();
            main.commit().unwrap();
        }
        let store = main.store().unwrap();
        assert_eq!(store.position().unwrap(), Some(at(100)), "edge is behind");
        assert_eq!(store.lanes().unwrap(), [("books".to_owned(), at(400))].into());
        edge.commit_seen(at(200));
        edge.state_writes("edge/h", write("n", "200"));
        edge.end_transaction();
        edge.commit().unwrap();
        assert_eq!(place.get(), at(200));
        assert_eq!(main.detached_lanes(), [("edge".to_owned(), at(200))].into());
        let store = main.store().unwrap();
        assert_eq!(
            store.position().unwrap(),
            Some(at(100)),
            "the main checkpointer writes where to resume"
        );
        assert_eq!(store.lanes().unwrap()["edge"], at(200), "the lane writes its own");
        // The main checkpointer's next batch keeps the lane's position.
        main.commit_seen(at(500));
        main.end_transaction();
        main.commit().unwrap();
        let store = main.store().unwrap();
        assert_eq!(store.position().unwrap(), Some(at(200)));
        assert_eq!(store.lanes().unwrap()["edge"], at(200));
        assert_eq!(store.lanes().unwrap()["books"], at(500));
        assert_eq!(store.load_state("edge/h").unwrap()["n"], b"200");
        // It rejoins past the stream: kept as a lane ahead until passed.
        edge.commit_seen(at(600));
        edge.end_transaction();
        edge.commit().unwrap();
        main.rejoin_lane("edge", at(600), false);
        main.commit().unwrap();
        let store = main.store().unwrap();
        assert_eq!(store.position().unwrap(), Some(at(500)));
        assert_eq!(store.lanes().unwrap(), [("edge".to_owned(), at(600))].into());
        main.commit_seen(at(600));
        main.end_transaction();
        main.passed(at(600).at());
        main.commit().unwrap();
        assert!(main.store().unwrap().lanes().unwrap().is_empty());
    }
}
