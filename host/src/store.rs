//! The checkpoint and state store: one embedded, crash-safe database
//! (redb) under `[state] path`.
//!
//! It holds the resume position (binlog file and offset just past the last
//! committed transaction, and the GTID state there), every handler's
//! key-value state, and the dead-letter index. A [`Batch`] of transactions
//! (their state writes, their dead letters and the position after the last
//! one) is committed in one database transaction, made durable before
//! [`StateStore::commit`] returns: a crash leaves either all of a batch or none
//! of it. The pipeline commits a batch only after the sinks acknowledged
//! every message of its transactions, so the checkpoint never passes an
//! unacknowledged write, and state counts each event exactly once.
//!
//! It also holds the changes held for suspended or paused handlers
//! ([`HeldChange`], see `pipeline::hold`): a batch adds those its
//! transactions held and removes those handed over since, so the position
//! may pass a held change without losing it.
//!
//! It also holds the once-only ledger of exec sinks ([`Ledger`]): which
//! commands were started and which finished, by message, since the last
//! checkpoint. The ledger writes its own small transactions around each
//! command; a checkpoint removes, in its own transaction, the entries of
//! the transactions it covers, which no replay can reach again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

/// The resume position: key `resume` → JSON [`Checkpoint`]; key
/// [`KEYS_MARK`] once handlers are keyed by tenant.
const POSITION: TableDefinition<&str, &[u8]> = TableDefinition::new("position");
/// Present in [`POSITION`] once [`STATE`] and [`HELD`] key each handler as
/// `tenant/name` (stores of earlier versions keyed it by name alone).
const KEYS_MARK: &str = "keys";
/// Handler state: (`tenant/handler`, key) → value.
const STATE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("state");
/// Dead letters: sequence number → JSON [`DeadLetter`].
const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");

/// The once-only ledger: (sink, `<change id>#<index>`) → [`LedgerMark`]
/// byte, then the entry's sequence number (8 bytes, big-endian).
const LEDGER: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("exec_ledger");
/// The ledger's entries by sequence number, oldest first, for pruning.
const LEDGER_SEQ: TableDefinition<u64, (&str, &str)> = TableDefinition::new("exec_ledger_seq");

/// Held changes as versions before held files kept them: (handler,
/// sequence number) → [`HeldChange::to_bytes`]. Read once, to move them
/// into the handler's held file ([`StateStore::adopt_held`]).
const HELD: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("held");
/// What each handler's held file holds: `tenant/handler` → [`HeldRange`].
const HELD_RANGES: TableDefinition<&str, &[u8]> = TableDefinition::new("held_ranges");

/// The directory of the held files, inside the state directory.
pub const HELD_DIR: &str = "held";

/// The file name of the database inside the state directory.
pub const DB_FILE: &str = "rowhook.redb";

/// Where a restart resumes: just past the last committed transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The binlog file of that transaction's commit.
    pub file: String,
    /// The offset just past its commit event.
    pub pos: u64,
    /// The executed GTID set there (empty where the server has no GTIDs).
    pub gtids: String,
    /// The transaction part of its row changes' ids.
    pub txn: String,
    /// The commit event's timestamp (seconds).
    pub ts: u32,
}

impl Checkpoint {
    /// Where it is in the binlog, comparable across files: the number
    /// of its file (the name's numeric suffix) and the offset.
    pub fn at(&self) -> (u64, u64) {
        binlog_at(&self.file, self.pos)
    }

    /// Just past `commit`.
    pub fn after(commit: &crate::decode::Commit<'_>) -> Checkpoint {
        Checkpoint {
            file: commit.file.to_owned(),
            pos: commit.end,
            gtids: commit.gtid_state.to_string(),
            txn: commit.txn.to_owned(),
            ts: commit.ts,
        }
    }

    /// Where `decoder` resumes (just past the last commit it decoded, or
    /// where it started), once it knows its file.
    pub fn resume_of(decoder: &crate::decode::Decoder) -> Option<Checkpoint> {
        let (file, pos, gtids) = decoder.resume_position();
        (!file.is_empty()).then(|| Checkpoint {
            file: file.to_owned(),
            pos,
            gtids: gtids.to_string(),
            txn: String::new(),
            ts: 0,
        })
    }
}

/// `file` and `pos` as a place comparable across files: the file's number
/// (its name's numeric suffix) and the offset.
pub fn binlog_at(file: &str, pos: u64) -> (u64, u64) {
    let number = file.rsplit_once('.').and_then(|(_, n)| n.parse().ok()).unwrap_or(0);
    (number, pos)
}

/// The key of [`POSITION`] that holds what is left of a snapshot.
const SNAPSHOT_KEY: &str = "snapshot";

/// The keys of [`POSITION`] that hold a tenant's lane position: `lane:TENANT`.
const LANE_PREFIX: &str = "lane:";

/// A change a handler failed on, sent to its dead-letter sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The handler that failed.
    pub handler: String,
    /// The change's id.
    pub id: String,
    /// The error.
    pub error: String,
    /// The sink it went to.
    pub sink: String,
}

impl DeadLetter {
    /// The record of `handler`'s change `id`, failed with `error`, sent to `sink`.
    pub fn new(handler: &str, id: &str, error: &(impl std::fmt::Display + ?Sized), sink: &str) -> DeadLetter {
        DeadLetter {
            handler: handler.to_owned(),
            id: id.to_owned(),
            error: error.to_string(),
            sink: sink.to_owned(),
        }
    }
}

/// What a batch of committed transactions changes in the store.
#[derive(Debug, Default)]
pub struct Batch {
    /// The position after the batch's last transaction.
    pub position: Option<Checkpoint>,
    /// State writes by (handler, key): the last value, `None` deleting the key.
    pub state: BTreeMap<(String, String), Option<Vec<u8>>>,
    /// Dead letters written to sinks.
    pub dead_letters: Vec<DeadLetter>,
    /// Ledger entries numbered below this belong to the batch's
    /// transactions (or earlier ones): the commit removes them.
    pub ledger_below: Option<u64>,
    /// What each handler's held file holds after the batch's transactions
    /// and hand-overs, by `tenant/handler`: the file is synced up to each
    /// range's end before the batch commits.
    pub held: BTreeMap<String, HeldRange>,
    /// With tenants: the position of each tenant's lane that is not at
    /// `position` (a lane that halted behind it is, by then, what
    /// `position` is; lanes past it are listed). `Some` replaces every
    /// lane position the store holds but those of [`Batch::kept_lanes`].
    pub lanes: Option<BTreeMap<String, Checkpoint>>,
    /// Lanes whose position another writer keeps (a lane reading on its
    /// own connection: see [`Batch::lane`]): [`Batch::lanes`] leaves them.
    pub kept_lanes: BTreeSet<String>,
    /// Set the position of this one lane, and no other position (the batch
    /// of a lane that reads on its own connection).
    pub lane: Option<(String, Checkpoint)>,
    /// What is left of the snapshot after the batch's last snapshot chunk
    /// (empty: it is done).
    pub snapshot: Option<crate::snapshot::Progress>,
}

impl Batch {
    /// Whether committing it would change nothing.
    pub fn is_empty(&self) -> bool {
        self.position.is_none()
            && self.state.is_empty()
            && self.dead_letters.is_empty()
            && self.held.is_empty()
            && self.lanes.is_none()
            && self.lane.is_none()
            && self.snapshot.is_none()
    }
}

/// A row change kept for a handler that could not take it yet (suspended
/// by its circuit breaker with `while_suspended = "hold"`, or paused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldChange {
    /// The change's id (`txn:event:row`): its messages' id.
    pub id: String,
    /// The change as handlers receive it.
    pub encoded: Vec<u8>,
    /// Its JSON, kept for a dead letter if the handler has a dead-letter
    /// sink; empty otherwise.
    pub json: Vec<u8>,
}

impl HeldChange {
    /// What it takes in memory and on disk, near enough: what counts
    /// against `breaker.hold_mb`.
    pub fn size(&self) -> u64 {
        Self::bytes_len(&self.id, &self.json, &self.encoded) as u64
    }

    /// The length of [`HeldChange::to_bytes`] of a change of these parts.
    pub fn bytes_len(id: &str, json: &[u8], encoded: &[u8]) -> usize {
        8 + id.len() + json.len() + encoded.len()
    }

    /// Its stored form: the id's and the JSON's lengths (4 bytes each,
    /// big-endian), the id, the JSON, then the encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size() as usize);
        Self::write_bytes(&mut out, &self.id, &self.json, &self.encoded);
        out
    }

    /// Appends [`HeldChange::to_bytes`] of a change of these parts to `out`.
    pub fn write_bytes(out: &mut Vec<u8>, id: &str, json: &[u8], encoded: &[u8]) {
        out.extend_from_slice(&(id.len() as u32).to_be_bytes());
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(json);
        out.extend_from_slice(encoded);
    }

    /// Reads [`HeldChange::to_bytes`]; `None` if it is not that.
    pub fn from_bytes(b: &[u8]) -> Option<HeldChange> {
        let id_len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let json_len = u32::from_be_bytes(b.get(4..8)?.try_into().ok()?) as usize;
        let json_at = 8usize.checked_add(id_len)?;
        let encoded_at = json_at.checked_add(json_len)?;
        Some(HeldChange {
            id: String::from_utf8(b.get(8..json_at)?.to_vec()).ok()?,
            json: b.get(json_at..encoded_at)?.to_vec(),
            encoded: b.get(encoded_at..)?.to_vec(),
        })
    }
}

/// What is held for one handler: the records of its held file from
/// offset `head` to offset `end`, and, before them, the handler's changes
/// in a stretch of the binlog ([`HeldAt`]). `count` changes of `bytes`
/// (their [`HeldChange::size`]s) in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldRange {
    /// The offset of the oldest held change's record in the file.
    pub head: u64,
    /// The offset just past the newest one's.
    pub end: u64,
    /// How many changes are held, in the binlog and in the file.
    pub count: u64,
    /// Their sizes, added up.
    pub bytes: u64,
    /// The oldest held changes, when they are read again from the binlog
    /// rather than kept in the file.
    pub binlog: Option<HeldAt>,
}

/// Held changes left in the binlog: the first `count` changes routed to
/// the handler from the transaction that starts at `from`, beginning with
/// the change named `first` (or, if `past`, with the one after it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldAt {
    /// Where the transaction of the first held change starts: just past
    /// the commit before it, as a checkpoint names a place.
    pub from: Checkpoint,
    /// The id of the first held change, or of the last one handed over.
    pub first: String,
    /// `first` was handed over: the held changes start after it.
    pub past: bool,
    /// How many of the held changes are here.
    pub count: u64,
    /// No further held change may join these: one was refused for want
    /// of room, or kept in the file, after them.
    #[serde(default)]
    pub closed: bool,
}

/// Where `count` held changes wait, the oldest of them (if any) left in the
/// binlog at `binlog`: `"50 in the binlog from mysql-bin.000002:1234,
/// from change 0-1-7:0:0; 20 in its held file"` (`after change …` where
/// that change was handed over already). Empty if none are held.
pub fn held_place(binlog: Option<&HeldAt>, count: u64) -> String {
    let in_binlog = binlog.map_or(0, |b| b.count.min(count));
    let mut out = String::new();
    if let Some(b) = binlog.filter(|_| in_binlog > 0) {
        out = format!(
            "{in_binlog} in the binlog from {}:{}, {} change {}",
            b.from.file,
            b.from.pos,
            if b.past { "after" } else { "from" },
            b.first
        );
    }
    if count > in_binlog {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(&format!("{} in its held file", count - in_binlog));
    }
    out
}

impl HeldRange {
    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How many held changes are in the file.
    pub fn in_file(&self) -> u64 {
        self.count - self.binlog.as_ref().map_or(0, |b| b.count)
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        for v in [self.head, self.end, self.count, self.bytes] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        if let Some(at) = &self.binlog {
            out.extend(serde_json::to_vec(at).expect("a held place serializes"));
        }
        out
    }

    fn from_bytes(b: &[u8]) -> Option<HeldRange> {
        let v = |i: usize| Some(u64::from_be_bytes(b.get(i * 8..i * 8 + 8)?.try_into().ok()?));
        let binlog = match b.get(32..) {
            Some(rest) if !rest.is_empty() => Some(serde_json::from_slice(rest).ok()?),
            _ => None,
        };
        Some(HeldRange {
            head: v(0)?,
            end: v(1)?,
            count: v(2)?,
            bytes: v(3)?,
            binlog,
        })
    }
}

/// What the ledger knows of one message's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerMark {
    /// It was about to start, and its end was never recorded: it may or
    /// may not have run (rowhook died or was stopped while it ran).
    Started,
    /// It ran and succeeded.
    Done,
}

/// The once-only ledger of exec sinks, in the state store: a handle any
/// number of sinks share with the store. Each call is its own durable
/// transaction. Entries are keyed by sink and message (change id and
/// index) and numbered in the order they are written, which is binlog
/// order; [`crate::pipeline::checkpoint`] notes the next number as each
/// acknowledged transaction ends, and the checkpoint that covers it removes
/// the entries below.
#[derive(Clone)]
pub struct Ledger {
    db: Arc<Database>,
    next: Arc<AtomicU64>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("next", &self.next).finish()
    }
}

impl Ledger {
    fn key(id: &str, index: u32) -> String {
        format!("{id}#{index}")
    }

    /// The number the next entry gets.
    pub fn next(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    /// What is recorded for message (`id`, `index`) of `sink`.
    pub fn mark(&self, sink: &str, id: &str, index: u32) -> anyhow::Result<Option<LedgerMark>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(LEDGER)?;
        Ok(t.get((sink, Self::key(id, index).as_str()))?
            .map(|v| match v.value().first() {
                Some(&2) => LedgerMark::Done,
                _ => LedgerMark::Started,
            }))
    }

    /// Records, durably, that the command of (`id`, `index`) is about to start.
    pub fn start(&self, sink: &str, id: &str, index: u32) -> anyhow::Result<()> {
        let key = Self::key(id, index);
        let seq = self.next.fetch_add(1, Ordering::SeqCst);
        let txn = self.db.begin_write()?;
        {
            let mut value = vec![1];
            value.extend_from_slice(&seq.to_be_bytes());
            txn.open_table(LEDGER)?.insert((sink, key.as_str()), value.as_slice())?;
            txn.open_table(LEDGER_SEQ)?.insert(seq, (sink, key.as_str()))?;
        }
        txn.commit().context("recording a command in the exec ledger")?;
        Ok(())
    }

    /// Records, durably, that the command of (`id`, `index`) succeeded.
    pub fn done(&self, sink: &str, id: &str, index: u32) -> anyhow::Result<()> {
        let key = Self::key(id, index);
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(LEDGER)?;
            let mut value = t
                .get((sink, key.as_str()))?
                .map(|v| v.value().to_vec())
                .unwrap_or_else(|| vec![0; 9]);
            value[0] = 2;
            t.insert((sink, key.as_str()), value.as_slice())?;
        }
        txn.commit()
            .context("recording a command's success in the exec ledger")?;
        Ok(())
    }

    /// Removes, durably, the entry of (`id`, `index`): its command failed
    /// and may run again.
    pub fn forget(&self, sink: &str, id: &str, index: u32) -> anyhow::Result<()> {
        let key = Self::key(id, index);
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(LEDGER)?;
            let seq = t.remove((sink, key.as_str()))?.and_then(|v| {
                let b = v.value();
                b.get(1..9).map(|s| u64::from_be_bytes(s.try_into().expect("8 bytes")))
            });
            if let Some(seq) = seq {
                txn.open_table(LEDGER_SEQ)?.remove(seq)?;
            }
        }
        txn.commit().context("removing a failed command from the exec ledger")?;
        Ok(())
    }

    /// How many entries the ledger holds.
    pub fn len(&self) -> anyhow::Result<u64> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(LEDGER_SEQ)?.len()?)
    }

    /// Whether the ledger is empty.
    pub fn is_empty(&self) -> anyhow::Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// The size of one handler's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateSize {
    /// Keys.
    pub keys: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

/// Another process (a running rowhook) holds the store.
#[derive(Debug, thiserror::Error)]
#[error("{} is in use by another rowhook process; stop it, or give this one its own [state] path", .0.display())]
pub struct InUse(pub PathBuf);

/// The open store.
pub struct StateStore {
    db: Arc<Database>,
    path: PathBuf,
    /// The number of dead letters recorded, shared by every handle.
    next_dead_letter: Arc<AtomicU64>,
    ledger_next: Arc<AtomicU64>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore").field("path", &self.path).finish()
    }
}

impl StateStore {
    /// Opens (creating if needed) the store in directory `dir`. A database
    /// left by a crash is recovered to its last committed batch.
    pub fn open(dir: &Path) -> anyhow::Result<StateStore> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        // Handler state is the tenants' data: only rowhook's user may read it.
        // Directories that already exist keep the mode their operator gave them.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the state directory {}", dir.display()))?;
        let path = dir.join(DB_FILE);
        if !path.exists() {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("creating the state store {}", path.display()))?;
        }
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => anyhow::Error::new(InUse(path.clone())),
            e => anyhow::anyhow!("opening the state store {}: {e}", path.display()),
        })?;
        // Create the tables, so readers find them.
        let txn = db.begin_write()?;
        txn.open_table(POSITION)?;
        txn.open_table(STATE)?;
        txn.open_table(LEDGER)?;
        txn.open_table(HELD)?;
        txn.open_table(HELD_RANGES)?;
        let next_dead_letter = {
            let t = txn.open_table(DEAD_LETTERS)?;
            t.last()?.map(|(k, _)| k.value() + 1).unwrap_or(0)
        };
        let ledger_next = {
            let t = txn.open_table(LEDGER_SEQ)?;
            t.last()?.map(|(k, _)| k.value() + 1).unwrap_or(0)
        };
        txn.commit()?;
        Ok(StateStore {
            db: Arc::new(db),
            path,
            next_dead_letter: Arc::new(AtomicU64::new(next_dead_letter)),
            ledger_next: Arc::new(AtomicU64::new(ledger_next)),
        })
    }

    /// Another handle on the same open store, for a writer on another
    /// thread (a tenant's lane reading on its own connection): its batches
    /// and this handle's are committed one at a time.
    pub fn share(&self) -> StateStore {
        StateStore {
            db: Arc::clone(&self.db),
            path: self.path.clone(),
            next_dead_letter: Arc::clone(&self.next_dead_letter),
            ledger_next: Arc::clone(&self.ledger_next),
        }
    }

    /// The once-only ledger of exec sinks, sharing this store's database.
    pub fn ledger(&self) -> Ledger {
        Ledger {
            db: Arc::clone(&self.db),
            next: Arc::clone(&self.ledger_next),
        }
    }

    /// The number the ledger's next entry gets (see [`Batch::ledger_below`]).
    pub fn ledger_next(&self) -> u64 {
        self.ledger_next.load(Ordering::SeqCst)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keys every handler's state and held changes by `tenant/name`, as
    /// [`crate::handler_id::HandlerId::key`] does: a store written by an
    /// earlier version keyed them by name alone, and its entries move to
    /// the tenant `tenant_of` gives for the name (`default` for a handler
    /// it does not know). Returns how many entries moved; once done, it
    /// is a single read.
    pub fn key_by_tenant(&mut self, tenant_of: impl Fn(&str) -> Option<String>) -> anyhow::Result<u64> {
        if self.db.begin_read()?.open_table(POSITION)?.get(KEYS_MARK)?.is_some() {
            return Ok(0);
        }
        let owner = |name: &str| format!("{}/{name}", tenant_of(name).unwrap_or_else(|| "default".to_owned()));
        let txn = self.db.begin_write()?;
        let mut moved = 0;
        {
            let mut t = txn.open_table(STATE)?;
            let old: Vec<(String, String, Vec<u8>)> = t
                .iter()?
                .filter_map(|e| {
                    let (k, v) = e.ok()?;
                    let (h, key) = k.value();
                    (!h.contains('/')).then(|| (h.to_owned(), key.to_owned(), v.value().to_vec()))
                })
                .collect();
            for (h, key, v) in &old {
                t.remove((h.as_str(), key.as_str()))?;
                t.insert((owner(h).as_str(), key.as_str()), v.as_slice())?;
            }
            moved += old.len() as u64;
        }
        {
            let mut t = txn.open_table(HELD)?;
            let old: Vec<(String, u64, Vec<u8>)> = t
                .iter()?
                .filter_map(|e| {
                    let (k, v) = e.ok()?;
                    let (h, seq) = k.value();
                    (!h.contains('/')).then(|| (h.to_owned(), seq, v.value().to_vec()))
                })
                .collect();
            for (h, seq, v) in &old {
                t.remove((h.as_str(), *seq))?;
                t.insert((owner(h).as_str(), *seq), v.as_slice())?;
            }
            moved += old.len() as u64;
        }
        txn.open_table(POSITION)?
            .insert(KEYS_MARK, b"tenant/handler".as_slice())?;
        txn.commit()?;
        Ok(moved)
    }

    /// The last committed position, if any.
    pub fn position(&self) -> anyhow::Result<Option<Checkpoint>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(POSITION)?;
        let Some(v) = t.get("resume")? else { return Ok(None) };
        let cp = serde_json::from_slice(v.value())
            .with_context(|| format!("{}: the stored position is unreadable", self.path.display()))?;
        Ok(Some(cp))
    }

    /// What is left of a snapshot, as the last chunk committed left it.
    pub fn snapshot(&self) -> anyhow::Result<crate::snapshot::Progress> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(POSITION)?;
        let Some(v) = t.get(SNAPSHOT_KEY)? else {
            return Ok(crate::snapshot::Progress::default());
        };
        serde_json::from_slice(v.value())
            .with_context(|| format!("{}: the stored snapshot progress is unreadable", self.path.display()))
    }

    /// The tenants' lanes that are past the resume position, and where
    /// each is (see [`Batch::lanes`]).
    pub fn lanes(&self) -> anyhow::Result<BTreeMap<String, Checkpoint>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(POSITION)?;
        let mut lanes = BTreeMap::new();
        for e in t.range(LANE_PREFIX..)? {
            let (k, v) = e?;
            let Some(tenant) = k.value().strip_prefix(LANE_PREFIX) else {
                break;
            };
            let cp = serde_json::from_slice(v.value()).with_context(|| {
                format!(
                    "{}: the stored position of tenant `{tenant}` is unreadable",
                    self.path.display()
                )
            })?;
            lanes.insert(tenant.to_owned(), cp);
        }
        Ok(lanes)
    }

    /// Every key and value of `handler`'s state (`tenant/name`).
    pub fn load_state(&self, handler: &str) -> anyhow::Result<HashMap<String, Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(STATE)?;
        let mut out = HashMap::new();
        for entry in t.range((handler, "")..)? {
            let (k, v) = entry?;
            let (h, key) = k.value();
            if h != handler {
                break;
            }
            out.insert(key.to_owned(), v.value().to_vec());
        }
        Ok(out)
    }

    /// Keys and bytes of state per handler, by `tenant/name`.
    pub fn state_sizes(&self) -> anyhow::Result<Vec<(String, StateSize)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(STATE)?;
        let mut out: Vec<(String, StateSize)> = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            let (h, key) = k.value();
            if out.last().is_none_or(|(name, _)| name != h) {
                out.push((h.to_owned(), StateSize::default()));
            }
            let size = &mut out.last_mut().expect("pushed").1;
            size.keys += 1;
            size.bytes += (key.len() + v.value().len()) as u64;
        }
        Ok(out)
    }

    /// The directory of the handlers' held files.
    pub fn held_dir(&self) -> PathBuf {
        self.path.parent().unwrap_or(Path::new(".")).join(HELD_DIR)
    }

    /// What each handler's held file holds, by `tenant/name`.
    pub fn held_ranges(&self) -> anyhow::Result<BTreeMap<String, HeldRange>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(HELD_RANGES)?;
        let mut out = BTreeMap::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            let range = HeldRange::from_bytes(v.value()).with_context(|| {
                format!(
                    "{}: the held range of handler `{}` is unreadable",
                    self.path.display(),
                    k.value()
                )
            })?;
            out.insert(k.value().to_owned(), range);
        }
        Ok(out)
    }

    /// The changes an earlier version kept in the store itself, by
    /// handler (`tenant/name`), oldest first.
    pub fn legacy_held(&self) -> anyhow::Result<BTreeMap<String, Vec<HeldChange>>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(HELD)?;
        let mut out: BTreeMap<String, Vec<HeldChange>> = BTreeMap::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            let (handler, seq) = k.value();
            let change = HeldChange::from_bytes(v.value()).with_context(|| {
                format!(
                    "{}: held change {seq} of handler `{handler}` is unreadable",
                    self.path.display()
                )
            })?;
            out.entry(handler.to_owned()).or_default().push(change);
        }
        Ok(out)
    }

    /// `handler`'s changes an earlier version kept in the store are now in
    /// its held file (synced), which holds `range`: one commit records the
    /// range and drops them from the store.
    pub fn adopt_held(&mut self, handler: &str, range: HeldRange) -> anyhow::Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(HELD)?;
            let seqs: Vec<u64> = t
                .range((handler, 0)..=(handler, u64::MAX))?
                .map(|e| e.map(|(k, _)| k.value().1))
                .collect::<Result<_, _>>()?;
            for seq in seqs {
                t.remove((handler, seq))?;
            }
            txn.open_table(HELD_RANGES)?
                .insert(handler, range.to_bytes().as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// How many changes are held per handler, and their bytes, by
    /// `tenant/name`.
    pub fn held_sizes(&self) -> anyhow::Result<BTreeMap<String, (u64, u64)>> {
        let mut out: BTreeMap<String, (u64, u64)> = (self.held_ranges()?.into_iter())
            .map(|(k, r)| (k, (r.count, r.bytes)))
            .collect();
        for (k, changes) in self.legacy_held()? {
            let size = out.entry(k).or_default();
            size.0 += changes.len() as u64;
            size.1 += changes.iter().map(HeldChange::size).sum::<u64>();
        }
        Ok(out)
    }

    /// How many dead letters were recorded, batches committed so far included.
    pub fn dead_letter_total(&self) -> u64 {
        self.next_dead_letter.load(Ordering::SeqCst)
    }

    /// How many dead letters were recorded.
    pub fn dead_letter_count(&self) -> anyhow::Result<u64> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(DEAD_LETTERS)?.len()?)
    }

    /// Commits `batch` atomically and durably.
    pub fn commit(&mut self, batch: &Batch) -> anyhow::Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut state = txn.open_table(STATE)?;
            for ((handler, key), value) in &batch.state {
                match value {
                    Some(v) => {
                        state.insert((handler.as_str(), key.as_str()), v.as_slice())?;
                    }
                    None => {
                        state.remove((handler.as_str(), key.as_str()))?;
                    }
                }
            }
            let mut dl = txn.open_table(DEAD_LETTERS)?;
            // Numbered inside the write transaction: another handle may
            // have committed letters since this one last did.
            let next = dl.last()?.map(|(k, _)| k.value() + 1).unwrap_or(0);
            for (i, d) in batch.dead_letters.iter().enumerate() {
                dl.insert(next + i as u64, serde_json::to_vec(d)?.as_slice())?;
            }
            self.next_dead_letter
                .fetch_max(next + batch.dead_letters.len() as u64, Ordering::SeqCst);
            if !batch.held.is_empty() {
                let mut ranges = txn.open_table(HELD_RANGES)?;
                for (handler, range) in &batch.held {
                    if range.is_empty() {
                        ranges.remove(handler.as_str())?;
                    } else {
                        ranges.insert(handler.as_str(), range.to_bytes().as_slice())?;
                    }
                }
            }
            if let Some(cp) = &batch.position {
                txn.open_table(POSITION)?
                    .insert("resume", serde_json::to_vec(cp)?.as_slice())?;
            }
            if let Some(progress) = &batch.snapshot {
                let mut t = txn.open_table(POSITION)?;
                if progress.is_empty() {
                    t.remove(SNAPSHOT_KEY)?;
                } else {
                    t.insert(SNAPSHOT_KEY, serde_json::to_vec(progress)?.as_slice())?;
                }
            }
            if let Some(lanes) = &batch.lanes {
                let mut t = txn.open_table(POSITION)?;
                let old: Vec<String> = t
                    .range(LANE_PREFIX..)?
                    .map(|e| e.map(|(k, _)| k.value().to_owned()))
                    .collect::<Result<_, _>>()?;
                let kept = |k: &str| (k.strip_prefix(LANE_PREFIX)).is_some_and(|t| batch.kept_lanes.contains(t));
                for k in old.iter().filter(|k| k.starts_with(LANE_PREFIX) && !kept(k)) {
                    t.remove(k.as_str())?;
                }
                for (tenant, cp) in lanes {
                    t.insert(
                        format!("{LANE_PREFIX}{tenant}").as_str(),
                        serde_json::to_vec(cp)?.as_slice(),
                    )?;
                }
            }
            if let Some((tenant, cp)) = &batch.lane {
                txn.open_table(POSITION)?.insert(
                    format!("{LANE_PREFIX}{tenant}").as_str(),
                    serde_json::to_vec(cp)?.as_slice(),
                )?;
            }
            if let Some(below) = batch.ledger_below {
                let mut seqs = txn.open_table(LEDGER_SEQ)?;
                let mut ledger = txn.open_table(LEDGER)?;
                let covered: Vec<(u64, String, String)> = seqs
                    .range(..below)?
                    .map(|e| {
                        e.map(|(k, v)| {
                            let (sink, key) = v.value();
                            (k.value(), sink.to_owned(), key.to_owned())
                        })
                    })
                    .collect::<Result<_, _>>()?;
                for (seq, sink, key) in covered {
                    seqs.remove(seq)?;
                    ledger.remove((sink.as_str(), key.as_str()))?;
                }
            }
        }
        txn.commit()
            .with_context(|| format!("committing to the state store {}", self.path.display()))?;
        Ok(())
    }

    /// Removes every key of `handler`'s state; returns how many there were.
    pub fn reset_state(&mut self, handler: &str) -> anyhow::Result<u64> {
        let txn = self.db.begin_write()?;
        let n = {
            let mut t = txn.open_table(STATE)?;
            let keys: Vec<String> = t
                .range((handler, "")..)?
                .map_while(|e| {
                    e.ok()
                        .and_then(|(k, _)| (k.value().0 == handler).then(|| k.value().1.to_owned()))
                })
                .collect();
            for k in &keys {
                t.remove((handler, k.as_str()))?;
            }
            keys.len() as u64
        };
        txn.commit()?;
        Ok(n)
    }

    /// Replaces the resume position (`None`: forget it, so the next run
    /// starts where the config says).
    pub fn set_position(&mut self, cp: Option<&Checkpoint>) -> anyhow::Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(POSITION)?;
            match cp {
                Some(cp) => {
                    t.insert("resume", serde_json::to_vec(cp)?.as_slice())?;
                }
                None => {
                    t.remove("resume")?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rh-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn cp(pos: u64) -> Checkpoint {
        Checkpoint {
            file: "bin.000001".into(),
            pos,
            gtids: "0-1-7".into(),
            txn: "0-1-7".into(),
            ts: 1,
        }
    }

    #[test]
    fn a_held_place_says_how_many_wait_where() {
        let at = |count, past| HeldAt {
            from: cp(120),
            first: "0-1-8:0:3".into(),
            past,
            count,
            closed: false,
        };
        assert_eq!(held_place(None, 0), "");
        assert_eq!(held_place(None, 20), "20 in its held file");
        assert_eq!(
            held_place(Some(&at(50, false)), 50),
            "50 in the binlog from bin.000001:120, from change 0-1-8:0:3"
        );
        assert_eq!(
            held_place(Some(&at(50, true)), 70),
            "50 in the binlog from bin.000001:120, after change 0-1-8:0:3; 20 in its held file"
        );
        assert_eq!(held_place(Some(&at(0, true)), 5), "5 in its held file");
    }

    fn letter() -> DeadLetter {
        DeadLetter {
            handler: "a".into(),
            id: "0-1-7:0:0".into(),
            error: "trap".into(),
            sink: "dead".into(),
        }
    }

    #[test]
    fn batches_survive_reopen_and_handlers_are_separate() {
        let dir = temp("reopen");
        {
            let mut s = StateStore::open(&dir).unwrap();
            assert_eq!(s.position().unwrap(), None);
            let batch = Batch {
                position: Some(cp(100)),
                state: BTreeMap::from([
                    (("a".into(), "n".into()), Some(vec![1])),
                    (("ab".into(), "n".into()), Some(vec![3])),
                    (("a".into(), "gone".into()), None),
                ]),
                dead_letters: vec![letter()],
                ..Batch::default()
            };
            s.commit(&batch).unwrap();
        }
        let mut s = StateStore::open(&dir).unwrap();
        assert_eq!(s.position().unwrap(), Some(cp(100)));
        assert_eq!(s.load_state("a").unwrap(), HashMap::from([("n".to_string(), vec![1])]));
        assert_eq!(s.load_state("ab").unwrap(), HashMap::from([("n".to_string(), vec![3])]));
        assert_eq!(s.load_state("b").unwrap(), HashMap::new());
        assert_eq!(s.dead_letter_count().unwrap(), 1);
        s.commit(&Batch {
            dead_letters: vec![letter()],
            ..Batch::default()
        })
        .unwrap();
        assert_eq!(
            s.dead_letter_count().unwrap(),
            2,
            "sequence numbers continue after reopen"
        );
        assert_eq!(
            s.state_sizes().unwrap(),
            vec![
                ("a".into(), StateSize { keys: 1, bytes: 2 }),
                ("ab".into(), StateSize { keys: 1, bytes: 2 })
            ]
        );
        assert_eq!(s.reset_state("a").unwrap(), 1);
        assert_eq!(s.load_state("ab").unwrap().len(), 1);
        s.set_position(None).unwrap();
        assert_eq!(s.position().unwrap(), None);
    }

    #[test]
    fn the_ledger_survives_reopen_and_a_checkpoint_prunes_what_it_covers() {
        let dir = temp("ledger");
        {
            let s = StateStore::open(&dir).unwrap();
            let l = s.ledger();
            assert_eq!(l.mark("fw", "0-1-7:0:0", 0).unwrap(), None);
            l.start("fw", "0-1-7:0:0", 0).unwrap();
            l.done("fw", "0-1-7:0:0", 0).unwrap();
            l.start("fw", "0-1-7:0:0", 1).unwrap();
            l.start("other", "0-1-7:0:0", 0).unwrap();
            l.forget("other", "0-1-7:0:0", 0).unwrap();
            assert_eq!(l.len().unwrap(), 2);
            // The transaction of 0-1-7 ended here; 0-1-8 follows.
            let below = s.ledger_next();
            l.start("fw", "0-1-8:0:0", 0).unwrap();
            assert_eq!(l.mark("fw", "0-1-7:0:0", 0).unwrap(), Some(LedgerMark::Done));
            assert_eq!(l.mark("fw", "0-1-7:0:0", 1).unwrap(), Some(LedgerMark::Started));
            assert_eq!(l.mark("other", "0-1-7:0:0", 0).unwrap(), None);
            // The ledger shares the database: both go before it closes.
            drop((s, l));
            // Reopened (a crash): the marks are still there, numbering goes on.
            let mut s = StateStore::open(&dir).unwrap();
            assert_eq!(s.ledger_next(), 4);
            let l = s.ledger();
            assert_eq!(l.mark("fw", "0-1-8:0:0", 0).unwrap(), Some(LedgerMark::Started));
            s.commit(&Batch {
                position: Some(cp(100)),
                ledger_below: Some(below),
                ..Batch::default()
            })
            .unwrap();
            assert_eq!(l.mark("fw", "0-1-7:0:0", 0).unwrap(), None, "covered by the checkpoint");
            assert_eq!(l.mark("fw", "0-1-8:0:0", 0).unwrap(), Some(LedgerMark::Started));
            assert_eq!(l.len().unwrap(), 1);
        }
    }

    /// Writes held changes as versions before held files did.
    fn put_legacy_held(s: &StateStore, handler: &str, changes: &[HeldChange]) {
        let txn = s.db.begin_write().unwrap();
        {
            let mut t = txn.open_table(HELD).unwrap();
            for (seq, c) in changes.iter().enumerate() {
                t.insert((handler, seq as u64), c.to_bytes().as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    #[test]
    fn held_ranges_survive_reopen_and_an_empty_one_is_dropped() {
        let dir = temp("held");
        let change = |id: &str| HeldChange {
            id: id.into(),
            encoded: vec![1, 2, 3],
            json: br#"{"op":"insert"}"#.to_vec(),
        };
        let range = |head, end, count| HeldRange {
            head,
            end,
            count,
            bytes: count * 10,
            binlog: None,
        };
        {
            let mut s = StateStore::open(&dir).unwrap();
            let mut held = BTreeMap::new();
            held.insert("t/a".to_owned(), range(0, 40, 2));
            held.insert("t/b".to_owned(), range(0, 20, 1));
            s.commit(&Batch {
                position: Some(cp(100)),
                held,
                ..Batch::default()
            })
            .unwrap();
            let mut held = BTreeMap::new();
            held.insert("t/b".to_owned(), range(20, 20, 0));
            s.commit(&Batch {
                held,
                ..Batch::default()
            })
            .unwrap();
        }
        let mut s = StateStore::open(&dir).unwrap();
        let ranges = s.held_ranges().unwrap();
        assert_eq!(ranges.keys().collect::<Vec<_>>(), ["t/a"]);
        assert_eq!(ranges["t/a"], range(0, 40, 2));
        assert_eq!(s.held_dir(), dir.join(HELD_DIR));

        // Changes an earlier version kept in the store: counted until adopted.
        put_legacy_held(&s, "t/c", &[change("t:1:0"), change("t:2:0")]);
        let legacy = s.legacy_held().unwrap();
        assert_eq!(
            legacy["t/c"].iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["t:1:0", "t:2:0"]
        );
        assert_eq!(legacy["t/c"][0], change("t:1:0"));
        assert_eq!(s.held_sizes().unwrap()["t/c"], (2, 2 * change("x:1:0").size()));
        s.adopt_held("t/c", range(0, 60, 2)).unwrap();
        assert!(s.legacy_held().unwrap().is_empty());
        assert_eq!(s.held_sizes().unwrap()["t/c"], (2, 20));
        assert_eq!(
            HeldChange::from_bytes(&[0, 0, 0, 9, 0, 0, 0, 0, b'x']),
            None,
            "a short record is refused"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_store_keyed_by_name_moves_each_handler_under_its_tenant_once() {
        let dir = temp("tenants");
        let held = HeldChange {
            id: "t:1:0".into(),
            encoded: vec![1],
            json: Vec::new(),
        };
        let mut s = StateStore::open(&dir).unwrap();
        // As an earlier version wrote it: handlers by name alone.
        let mut state = BTreeMap::new();
        state.insert(("orders".to_owned(), "n".to_owned()), Some(b"3".to_vec()));
        state.insert(("gone".to_owned(), "n".to_owned()), Some(b"1".to_vec()));
        s.commit(&Batch {
            state,
            ..Batch::default()
        })
        .unwrap();
        put_legacy_held(&s, "orders", &[held]);
        let tenant_of = |name: &str| (name == "orders").then(|| "shop".to_owned());
        assert_eq!(s.key_by_tenant(tenant_of).unwrap(), 3);
        assert_eq!(s.load_state("shop/orders").unwrap()["n"], b"3");
        assert_eq!(s.load_state("default/gone").unwrap()["n"], b"1");
        assert!(s.load_state("orders").unwrap().is_empty());
        assert_eq!(s.legacy_held().unwrap()["shop/orders"][0].id, "t:1:0");
        // Done once: a later entry without a tenant is not moved again.
        let mut state = BTreeMap::new();
        state.insert(("loose".to_owned(), "n".to_owned()), Some(b"1".to_vec()));
        s.commit(&Batch {
            state,
            ..Batch::default()
        })
        .unwrap();
        assert_eq!(s.key_by_tenant(tenant_of).unwrap(), 0);
        drop(s);
        let mut s = StateStore::open(&dir).unwrap();
        assert_eq!(s.key_by_tenant(tenant_of).unwrap(), 0, "the mark survives reopen");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_process_is_told_the_store_is_in_use() {
        let dir = temp("busy");
        let _first = StateStore::open(&dir).unwrap();
        let err = StateStore::open(&dir).unwrap_err().to_string();
        assert!(err.contains("in use by another rowhook process"), "{err}");
    }

    #[test]
    fn state_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("rowhook-store-mode-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store_dir = dir.join("a/b");
        let _store = StateStore::open(&store_dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store_dir), 0o700);
        assert_eq!(mode(&dir.join("a")), 0o700);
        assert_eq!(mode(&store_dir.join(DB_FILE)), 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn two_handles_commit_their_own_lanes_and_number_dead_letters_apart() {
        let dir = temp("share");
        let mut main = StateStore::open(&dir).unwrap();
        let mut lane = main.share();
        let letter = || DeadLetter::new("h", "bin.000001:10:0", "boom", "dead");
        let mut batch = Batch {
            position: Some(cp(100)),
            lanes: Some([("books".to_owned(), cp(300))].into()),
            dead_letters: vec![letter()],
            ..Batch::default()
        };
        main.commit(&batch).unwrap();
        lane.commit(&Batch {
            lane: Some(("edge".to_owned(), cp(200))),
            dead_letters: vec![letter(), letter()],
            ..Batch::default()
        })
        .unwrap();
        assert_eq!(main.dead_letter_count().unwrap(), 3, "numbered apart");
        assert_eq!(main.dead_letter_total(), 3);
        assert_eq!(
            main.position().unwrap(),
            Some(cp(100)),
            "the lane's batch leaves the resume position"
        );
        // The main handle replaces its lanes, and keeps the lane it is told to.
        batch.lanes = Some([("books".to_owned(), cp(400))].into());
        batch.kept_lanes = ["edge".to_owned()].into();
        batch.dead_letters.clear();
        main.commit(&batch).unwrap();
        assert_eq!(
            main.lanes().unwrap(),
            [("books".to_owned(), cp(400)), ("edge".to_owned(), cp(200))].into()
        );
        batch.kept_lanes.clear();
        main.commit(&batch).unwrap();
        assert_eq!(main.lanes().unwrap(), [("books".to_owned(), cp(400))].into());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
