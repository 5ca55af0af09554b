//! Held changes read again from the binlog.
//!
//! A handler suspended with `while_suspended = "hold"` (or paused) while
//! the stream comes from a source that can start again at a place (`run`
//! with its server, `replay --checkpoint` with its files) does not have its
//! changes copied anywhere: its queue ([`super::hold`]) records where the
//! oldest held change is ([`HeldAt`]) and how many there are. When the
//! handler may take them again, a [`Rereader`] reads the binlog from that
//! place on a thread of its own, with a connection or file handle of its
//! own, and passes the handler's changes back, in order, as the stream
//! first gave them: same ids, same encoding. Holding a change therefore
//! costs its neighbours nothing but a count.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use tokio::runtime::Runtime;

use super::router::Subscription;
use crate::decode::table_map::TableMap;
use crate::decode::txn::TableFilter;
use crate::decode::{ChangeVisitor, Commit, Decoder, Flow, RowChange, Undecodable};
use crate::driver::{Consumer, Stop};
use crate::guest_abi::DirectoryCache;
use crate::handler_id::HandlerId;
use crate::store::{Checkpoint, HeldAt, HeldChange};

/// What a reader passes back.
pub enum Reread {
    /// The next held change, and where its transaction starts.
    Change(HeldChange, Arc<Checkpoint>),
    /// The reader stopped on this error: nothing more comes.
    Failed(anyhow::Error),
}

/// What a reader is to read: `handler`'s changes (those `subscription`
/// routes to it) from `at`.
pub struct RereadJob {
    /// The handler.
    pub handler: HandlerId,
    /// Where its held changes start.
    pub at: HeldAt,
    /// What it subscribes to.
    pub subscription: Subscription,
    /// Whether its held changes carry their JSON (for dead letters).
    pub dead_letters: bool,
    /// Where the changes go; the reader stops once nobody takes them.
    pub out: SyncSender<Reread>,
    /// Stops the reader.
    pub stop: Stop,
}

/// Starts readers: given by the commands whose source can start again at
/// a held place.
pub trait RereadStarter: Send + Sync {
    /// Reads `job`'s changes on a thread of its own. The thread ends when
    /// `job.stop` is requested, when nobody takes its changes any more,
    /// or after passing back [`Reread::Failed`].
    fn start(&self, job: RereadJob) -> anyhow::Result<()>;
}

/// The decoder's table filter for `subscription`: only its tables are
/// decoded.
pub fn table_filter(subscription: &Subscription) -> TableFilter {
    super::router::table_filter(subscription.tables.iter())
}

/// The driver's consumer on a reader's thread: picks the handler's changes
/// out of the stream and passes them back.
pub struct Rereader {
    job: RereadJob,
    directories: DirectoryCache,
    /// Where the transaction in progress starts.
    from: Arc<Checkpoint>,
    /// Looking for the first held change (`job.at.first`) still.
    seeking: bool,
    /// Whether the transaction in progress began while seeking: a stream
    /// cut inside it seeks again from its start.
    seeking_txn: bool,
    /// Changes of the transaction in progress passed back: a stream cut
    /// inside it sends them again, and they are passed over then.
    sent_in_txn: u64,
    /// How many changes of the re-sent transaction to pass over.
    resent: u64,
}

impl Rereader {
    /// A consumer for `job`.
    pub fn new(job: RereadJob) -> Rereader {
        Rereader {
            from: Arc::new(job.at.from.clone()),
            directories: DirectoryCache::default(),
            seeking: true,
            seeking_txn: true,
            sent_in_txn: 0,
            resent: 0,
            job,
        }
    }

    /// Passes `r` back: false if nobody takes it any more.
    fn send(&self, r: Reread) -> bool {
        self.job.out.send(r).is_ok()
    }

    /// Ends the reading with `e`, passed back to the queue.
    pub fn fail(&self, e: anyhow::Error) {
        let _ = self.send(Reread::Failed(e));
    }

    /// Whether the reader is still wanted.
    pub fn stopped(&self) -> bool {
        self.job.stop.requested()
    }
}

impl ChangeVisitor for Rereader {
    fn change(&mut self, change: &RowChange<'_>) -> Flow {
        let t = &change.table;
        if !self.job.subscription.matches(&t.db, &t.table, change.op) {
            return Flow::Continue;
        }
        let id = change.id();
        if self.seeking {
            if id != self.job.at.first {
                return Flow::Continue;
            }
            self.seeking = false;
            if self.job.at.past {
                return Flow::Continue;
            }
        }
        if self.resent > 0 {
            self.resent -= 1;
            self.sent_in_txn += 1;
            return Flow::Continue;
        }
        let mut encoded = Vec::new();
        if self.directories.encode(change, &mut encoded).is_err() {
            // The stream's pipeline failed it under the handler's
            // on_error: it was not held.
            return Flow::Continue;
        }
        let mut json = Vec::new();
        if self.job.dead_letters && change.write_json(&mut json).is_err() {
            json.clear();
        }
        let held = HeldChange { id, json, encoded };
        self.sent_in_txn += 1;
        if self.send(Reread::Change(held, self.from.clone())) {
            Flow::Continue
        } else {
            Flow::Stop
        }
    }

    fn commit(&mut self, commit: &Commit<'_>) -> Flow {
        if self.seeking {
            self.fail(anyhow::anyhow!(
                "held change {} is not in the transaction at {}:{} of the binlog",
                self.job.at.first,
                self.job.at.from.file,
                self.job.at.from.pos
            ));
            return Flow::Stop;
        }
        self.sent_in_txn = 0;
        self.resent = 0;
        self.seeking_txn = false;
        self.from = Arc::new(Checkpoint::after(commit));
        Flow::Continue
    }

    fn table_map(&mut self, table: &TableMap) {
        self.directories.forget(table.table_id);
    }

    /// The stream's pipeline applied the handler's `on_error` to these
    /// rows: none was held.
    fn undecodable(&mut self, _rows: &Undecodable<'_>) -> Flow {
        Flow::Continue
    }
}

impl Consumer for Rereader {
    fn after_event(&mut self, _rt: &Runtime, _decoder: &Decoder, _began: bool, _stop: &mut Stop) -> anyhow::Result<()> {
        Ok(())
    }

    fn abandon_transaction(&mut self) {
        if self.seeking_txn {
            self.seeking = true;
            self.resent = 0;
        } else {
            self.resent = self.sent_in_txn;
        }
        self.sent_in_txn = 0;
    }
}
