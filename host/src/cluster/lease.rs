//! Leases in a JetStream key-value bucket: who holds a role now.
//!
//! The bucket's entries age out (`max_age` = the lease's time to live), so
//! a lease that is not renewed lapses by itself. Taking a lease is a
//! create-if-absent; renewing it is an update that names the revision the
//! holder wrote last, so it fails once anyone else wrote the key. A holder
//! also counts the time itself: it treats the lease as lost a fifth of the
//! time to live before the server would let it lapse, so it stops before a
//! standby can start ([`Fence`]).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use serde::{Deserialize, Serialize};

/// What a lease's key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Who: `HOST:PID:NONCE`.
    pub holder: String,
    /// Since when, in ms since the epoch.
    pub since_ms: u64,
}

/// A name for this process, unique across restarts.
pub fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}:{}:{nonce:08x}", std::process::id())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether this process may still act as the holder, shared by the tasks
/// that publish, checkpoint and renew.
#[derive(Debug)]
pub struct Fence {
    lost: AtomicBool,
    why: Mutex<Option<String>>,
    until: Mutex<Instant>,
}

impl Fence {
    fn new(until: Instant) -> Arc<Fence> {
        Arc::new(Fence {
            lost: AtomicBool::new(false),
            why: Mutex::new(None),
            until: Mutex::new(until),
        })
    }

    /// Whether the lease is held now: not lost, and renewed recently enough.
    pub fn holds(&self) -> bool {
        !self.lost.load(Ordering::Acquire) && Instant::now() < *self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the lease is not held, once it is not.
    pub fn why(&self) -> String {
        if let Some(why) = self.why.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return why;
        }
        if self.lost.load(Ordering::Acquire) {
            "the lease was lost".into()
        } else {
            "the lease was not renewed in time (NATS unreachable?)".into()
        }
    }

    /// The lease is gone for good: someone else wrote the key, or this
    /// process stops.
    pub fn lose(&self, why: impl Into<String>) {
        let mut slot = self.why.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(why.into());
        }
        self.lost.store(true, Ordering::Release);
    }

    fn extend(&self, until: Instant) {
        let mut slot = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if until > *slot {
            *slot = until;
        }
    }
}

/// How long giving a lease up may take before it is left to lapse.
const RELEASE_WITHIN: Duration = Duration::from_secs(1);

/// A lease this process holds.
pub struct Lease {
    kv: kv::Store,
    key: String,
    holder: Holder,
    revision: u64,
    ttl: Duration,
    fence: Arc<Fence>,
}

/// How long a holder trusts a renewal sent at `sent`: a fifth of the time
/// to live less than the server keeps it.
fn trusted_until(sent: Instant, ttl: Duration) -> Instant {
    sent + ttl - ttl / 5
}

impl Lease {
    /// Takes the lease on `key` if nobody holds it: `Ok(None)` names who
    /// does.
    pub async fn try_take(
        kv: &kv::Store,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> anyhow::Result<Result<Lease, Option<Holder>>> {
        let me = Holder {
            holder: holder.to_owned(),
            since_ms: now_ms(),
        };
        let value = serde_json::to_vec(&me)?;
        let sent = Instant::now();
        match kv.create(key, value.into()).await {
            Ok(revision) => Ok(Ok(Lease {
                kv: kv.clone(),
                key: key.to_owned(),
                holder: me,
                revision,
                ttl,
                fence: Fence::new(trusted_until(sent, ttl)),
            })),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                let other = match kv.get(key).await {
                    Ok(Some(bytes)) => serde_json::from_slice(&bytes).ok(),
                    _ => None,
                };
                Ok(Err(other))
            }
            Err(e) => Err(anyhow::anyhow!("taking the lease `{key}`: {e}")),
        }
    }

    /// The fence the lease's users check.
    pub fn fence(&self) -> Arc<Fence> {
        self.fence.clone()
    }

    /// Who holds it: this process.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// Renews the lease. Someone else's write to the key loses it for good
    /// (the fence says so); a failure to reach the server does not, but the
    /// fence lapses by itself if renewals keep failing.
    pub async fn renew(&mut self) -> anyhow::Result<()> {
        let value = serde_json::to_vec(&self.holder)?;
        let sent = Instant::now();
        match self.kv.update(&self.key, value.into(), self.revision).await {
            Ok(revision) => {
                self.revision = revision;
                self.fence.extend(trusted_until(sent, self.ttl));
                Ok(())
            }
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                let why = format!("the lease `{}` lapsed or was taken over", self.key);
                self.fence.lose(why.clone());
                anyhow::bail!(why)
            }
            Err(e) => Err(anyhow::anyhow!("renewing the lease `{}`: {e}", self.key)),
        }
    }

    /// Renews every third of the time to live until the lease is lost or
    /// `stop` fires.
    pub async fn keep(mut self, mut stop: tokio::sync::watch::Receiver<bool>) -> Lease {
        let every = self.ttl / 3;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return self,
            }
            if let Err(e) = self.renew().await {
                if !self.fence.lost.load(Ordering::Acquire) {
                    tracing::warn!("{e:#}; retrying");
                    continue;
                }
                // The holder stands by or gives the partition up; the one
                // that took it over goes on.
                tracing::warn!("{e:#}: stopping at once");
                return self;
            }
        }
    }

    /// Gives the lease up, so that a standby takes over at once instead of
    /// after the time to live.
    pub async fn release(self) {
        self.fence.lose("released");
        let deleted = tokio::time::timeout(
            RELEASE_WITHIN,
            self.kv.delete_expect_revision(&self.key, Some(self.revision)),
        )
        .await;
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::info!("the lease `{}` was not released ({e}); it lapses by itself", self.key),
            Err(_) => tracing::info!("the lease `{}` was not released in time; it lapses by itself", self.key),
        }
    }
}
