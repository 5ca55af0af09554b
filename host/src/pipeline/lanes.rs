//! Tenants' lanes that read the binlog on a connection of their own.
//!
//! With tenants declared, every tenant's handlers run in the shared loop,
//! which reads and decodes the binlog once. A tenant that takes more than
//! its share of that loop's time (its handlers' calls and its sinks'
//! writes, over windows of 150 ms in which the loop hardly waited for the
//! server) with changes that cost far more each than the others', or
//! whose halted lane may go on, leaves it: its handlers move to a pipeline
//! of their own on a thread of their own, which reads the binlog again from the
//! lane's position on a second connection, with its own sinks and its own
//! position in the store ([`LanePlace`]). That thread gets no more than the
//! tenant's share of one core ([`Throttle`]).
//!
//! Once the lane has read all the server has and keeps to its share, it
//! says so ([`LaneMsg::Ready`]); the shared loop then waits, between two
//! transactions, for the lane to reach the same place, takes its handlers
//! back (each keeping its state from the store) and lets them take the
//! transactions after that place. The second connection is closed. While
//! every lane is with the shared loop the server sees one connection.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::checkpoint::LanePlace;
use super::{HandlerId, Pipeline};
use crate::config::{HandlerPlan, Plan};
use crate::driver::Stop;
use crate::store::Checkpoint;

/// How long the shared loop's time is summed before it is shared out.
const WINDOW: Duration = Duration::from_millis(150);

/// How many times more than the other tenants' a tenant's changes cost
/// each before it may leave the shared loop for taking more than its share.
const HEAVIER: f64 = 4.0;

/// A wait for the server this long means the loop had caught up.
const CAUGHT_UP: Duration = Duration::from_millis(10);

/// How often a lane on its own connection looks at the CPU it took.
const THROTTLE_EVERY: Duration = Duration::from_millis(10);

/// The span over which a lane's CPU is held to its share.
const THROTTLE_SPAN: Duration = Duration::from_secs(5);

/// How often a lane that caught up says so, and how long after its last
/// throttling it first may.
const READY_EVERY: Duration = Duration::from_secs(1);

/// What a lane reading on its own connection is started with.
pub struct LaneRun {
    /// Its tenant.
    pub tenant: String,
    /// What its pipeline runs: the tenant's handlers and the sinks they use.
    pub plan: Plan,
    /// Where it reads from, kept up to date by its checkpoints.
    pub place: LanePlace,
    /// Its side of the link with the shared loop.
    pub link: LaneLink,
    /// Its share of one core.
    pub cpu_share: f64,
    /// Where handlers of it take nothing before (deployed with `start =
    /// "latest"`), as [`crate::store::binlog_at`] places.
    pub gates: Vec<(HandlerId, (u64, u64))>,
}

/// Starts lanes on connections of their own (`rowhook run`'s live source).
pub trait LaneStarter: Send {
    /// Runs `run` on a thread of its own, reading from `run.place`; the
    /// thread ends with [`LaneLink::ended`].
    fn start(&self, run: LaneRun) -> anyhow::Result<std::thread::JoinHandle<()>>;
}

/// How a lane that read on its own connection ended.
#[derive(Debug)]
pub enum LaneEnd {
    /// It reached the shared loop, which takes it back.
    Joined,
    /// It was asked to stop (rowhook is stopping).
    Stopped,
    /// It failed (a handler halted, a sink refused beyond its retries, the
    /// server cannot be read): the lane halts where it is.
    Failed(anyhow::Error),
}

/// How a lane's handlers come back to the shared loop.
enum Back<'a> {
    /// Caught up: they take the transactions after its position.
    Joined,
    /// It failed there: halted.
    Failed(&'a anyhow::Error),
    /// Stopped there for a deployment: halted until it goes on again.
    Recalled,
}

/// What a lane tells the shared loop.
enum LaneMsg {
    /// It read all the server had, up to here, and keeps to its share.
    Ready(Checkpoint),
    /// It ended at its position in the store.
    Ended(Checkpoint, LaneEnd),
}

/// The lane ended its drive: it reached where the shared loop waits for it.
#[derive(Debug, thiserror::Error)]
#[error("the tenant's lane caught up with the others")]
pub struct CaughtUp;

/// The lane's side of its link with the shared loop.
#[derive(Clone)]
pub struct LaneLink {
    tx: mpsc::Sender<LaneMsg>,
    /// Where the shared loop waits for the lane, once it does.
    join_at: Arc<Mutex<Option<(u64, u64)>>>,
    /// Where the shared loop is, as of its last transaction boundary.
    main_at: Arc<Mutex<(u64, u64)>>,
    stop: Stop,
}

impl LaneLink {
    /// Stops when the shared loop asks the lane to.
    pub fn stop(&self) -> Stop {
        self.stop.clone()
    }

    /// Tells the shared loop how the lane ended, with its position in the
    /// store (which its last checkpoint left in its [`LanePlace`]).
    pub fn ended(&self, at: Checkpoint, end: LaneEnd) {
        let _ = self.tx.send(LaneMsg::Ended(at, end));
    }

    fn join_at(&self) -> Option<(u64, u64)> {
        *self.join_at.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn main_at(&self) -> (u64, u64) {
        *self.main_at.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A lane reading on its own connection, as the shared loop sees it.
pub(super) struct Detached {
    /// Its handlers, to take back.
    plans: Vec<HandlerPlan>,
    place: LanePlace,
    rx: mpsc::Receiver<LaneMsg>,
    join_at: Arc<Mutex<Option<(u64, u64)>>>,
    main_at: Arc<Mutex<(u64, u64)>>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Detached {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// What a pipeline on a lane's own connection does besides handling
/// changes: hold its CPU to the tenant's share, and find its way back.
pub(super) struct LaneMode {
    link: LaneLink,
    throttle: Throttle,
    /// When it last said it is ready.
    ready_at: Option<Instant>,
}

impl LaneMode {
    pub(super) fn new(link: LaneLink, cpu_share: f64) -> LaneMode {
        LaneMode {
            link,
            throttle: Throttle::new(cpu_share),
            ready_at: None,
        }
    }

    /// Between transactions, at `done`: [`CaughtUp`] once the shared loop
    /// waits for the lane at or before it.
    pub(super) fn check_join(&self, done: Option<&Checkpoint>) -> anyhow::Result<()> {
        if let Some(target) = self.link.join_at()
            && done.map_or((0, 0), Checkpoint::at) >= target
        {
            return Err(CaughtUp.into());
        }
        Ok(())
    }

    /// The server has nothing more for now: the lane is ready to rejoin if
    /// it is where the shared loop is, or past it, and kept to its share
    /// lately.
    pub(super) fn idle(&mut self, done: Option<&Checkpoint>) {
        let now = Instant::now();
        let quiet = (self.throttle.throttled_at).is_none_or(|t| now.duration_since(t) >= READY_EVERY);
        let due = self.ready_at.is_none_or(|t| now.duration_since(t) >= READY_EVERY);
        if let Some(done) = done
            && quiet
            && due
            && done.at() >= self.link.main_at()
            && self.link.join_at().is_none()
        {
            self.ready_at = Some(now);
            let _ = self.link.tx.send(LaneMsg::Ready(done.clone()));
        }
    }

    /// Pauses here, on the calling thread, as long as the CPU share asks
    /// (between two handler calls, inside a transaction too), or until
    /// `stop` is requested.
    pub(super) fn keep_to_share(&mut self, stop: Option<&Stop>) {
        let Some(mut pause) = self.throttle.pause() else { return };
        while !pause.is_zero() && !stop.is_some_and(Stop::requested) {
            let slice = pause.min(Duration::from_millis(50));
            std::thread::sleep(slice);
            pause -= slice;
        }
    }
}

/// Holds a thread's CPU time to a share of its wall time.
struct Throttle {
    share: f64,
    since: Instant,
    cpu_since: Duration,
    next_check: Instant,
    throttled_at: Option<Instant>,
}

impl Throttle {
    fn new(share: f64) -> Throttle {
        let now = Instant::now();
        Throttle {
            share: share.clamp(0.01, 1.0),
            since: now,
            cpu_since: thread_cpu(),
            next_check: now,
            throttled_at: None,
        }
    }

    fn pause(&mut self) -> Option<Duration> {
        let now = Instant::now();
        if now < self.next_check || self.share >= 1.0 {
            return None;
        }
        self.next_check = now + THROTTLE_EVERY;
        let cpu = thread_cpu().saturating_sub(self.cpu_since);
        let wall = now.duration_since(self.since);
        // The wall time in which `cpu` is the share.
        let owed = cpu.div_f64(self.share).saturating_sub(wall);
        if wall >= THROTTLE_SPAN && owed.is_zero() {
            self.since = now;
            self.cpu_since = thread_cpu();
        }
        if owed < THROTTLE_EVERY {
            return None;
        }
        self.throttled_at = Some(now);
        Some(owed)
    }
}

/// The CPU time the calling thread has taken.
fn thread_cpu() -> Duration {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// What each tenant took of the shared loop's time in the current window.
pub(super) struct Fairness {
    since: Instant,
    /// Per tenant: the time taken, and the calls made.
    used: BTreeMap<String, (Duration, u64)>,
    /// How long the loop waited for the server in this window, and since
    /// when it waits, if it does: a loop that waits a tenth of its time
    /// kept nobody waiting.
    idle: Duration,
    idle_since: Option<Instant>,
    shares: BTreeMap<String, f64>,
}

impl Fairness {
    pub(super) fn new(plan: &Plan) -> Fairness {
        let n = plan.tenants.len();
        Fairness {
            since: Instant::now(),
            used: BTreeMap::new(),
            idle: Duration::ZERO,
            idle_since: None,
            shares: (plan.tenants.iter())
                .map(|(t, p)| (t.clone(), p.cpu_share(n)))
                .collect(),
        }
    }

    /// `tenant`'s handler took `took` (`call`), or a sink took that long to
    /// take its messages; returns whether the tenant has now taken more
    /// than its share of a whole window.
    pub(super) fn charge(&mut self, tenant: &str, took: Duration, call: bool) -> bool {
        let used = match self.used.get_mut(tenant) {
            Some(u) => {
                u.0 += took;
                u.1 += u64::from(call);
                u.0
            }
            None => {
                self.used.insert(tenant.to_owned(), (took, u64::from(call)));
                took
            }
        };
        used.as_secs_f64() > self.share(tenant) * WINDOW.as_secs_f64()
    }

    /// Whether `tenant`'s changes cost far more each than the other
    /// tenants' in this window ([`HEAVIER`] times, calls and sink writes
    /// together): a tenant that is merely busy, with as cheap changes as
    /// the others, slows nobody more than they slow themselves.
    fn heavier(&self, tenant: &str) -> bool {
        let Some((used, calls)) = self.used.get(tenant) else {
            return false;
        };
        let (others, other_calls) = (self.used.iter())
            .filter(|(t, _)| t.as_str() != tenant)
            .fold((Duration::ZERO, 0u64), |(u, c), (_, (du, dc))| (u + *du, c + dc));
        if other_calls == 0 {
            return false;
        }
        let mine = used.as_secs_f64() / (*calls).max(1) as f64;
        mine >= HEAVIER * others.as_secs_f64() / other_calls as f64
    }

    /// The loop waits for the server from now.
    pub(super) fn idle(&mut self) {
        self.idle_since.get_or_insert_with(Instant::now);
    }

    /// The loop has work again (an event came, or a timer fired). After a
    /// real wait (the loop had caught up) a new window starts: whether
    /// the loop is behind is a question about the time since.
    pub(super) fn woke(&mut self) {
        if let Some(since) = self.idle_since.take() {
            let waited = since.elapsed();
            if waited >= CAUGHT_UP {
                self.restart();
            } else {
                self.idle += waited;
            }
        }
    }

    /// Whether the loop was behind in this window: it waited for the
    /// server a tenth of it at most.
    fn behind(&self) -> bool {
        let waiting = self.idle_since.map_or(Duration::ZERO, |t| t.elapsed());
        self.idle + waiting <= self.since.elapsed() / 10
    }

    /// A new window.
    fn restart(&mut self) {
        self.used.clear();
        self.idle = Duration::ZERO;
        if let Some(since) = &mut self.idle_since {
            *since = Instant::now();
        }
        self.since = Instant::now();
    }

    pub(super) fn share(&self, tenant: &str) -> f64 {
        self.shares.get(tenant).copied().unwrap_or(1.0)
    }
}

impl Pipeline {
    /// Lets tenants' lanes read on connections of their own, which
    /// `starter` opens: a tenant that takes more than its share of the
    /// shared loop, and a halted lane that may go on (its handler reloaded
    /// or resumed), which catches up there. Without it a halted lane goes
    /// on at the next start. Only with tenants declared.
    pub fn lanes_apart(&mut self, starter: Box<dyn LaneStarter>) {
        if !self.lanes {
            return;
        }
        self.fair = Some(Fairness::new(&self.plan));
        self.delivery.charge_tenants();
        self.starter = Some(starter);
    }

    /// Shares the shared loop's time out, once a window has passed (or a
    /// tenant took its share of a whole one): the tenant that took most
    /// beyond its share, while the loop was behind, leaves (see
    /// [`Pipeline::leave`]). Call between transactions.
    pub(super) fn share_fairly(&mut self) {
        let Some(f) = &mut self.fair else { return };
        for (tenant, took) in self.delivery.take_charges() {
            f.charge(&tenant, took, false);
        }
        let elapsed = f.since.elapsed();
        // A tenant is past its share once it took more than its share of
        // the window so far, or of a whole window before it ends.
        let span = elapsed.max(WINDOW).as_secs_f64();
        let over = (f.used.iter())
            .map(|(t, u)| (t, u.0.as_secs_f64() / span))
            .filter(|(t, part)| *part > f.share(t) && f.heavier(t))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(t, part)| (t.clone(), part));
        if over.is_none() && elapsed < WINDOW {
            return;
        }
        let busy = f.behind();
        f.restart();
        if let Some((tenant, part)) = over.filter(|_| busy) {
            self.leave(&tenant, Duration::from_secs_f64(part * span), elapsed);
        }
    }

    /// `tenant`'s handler took `took` of the shared loop: past its share of
    /// a whole window while the loop is behind, with changes far costlier
    /// than the others', the tenant leaves at once, in the middle of the
    /// transaction (see [`Pipeline::leave`]). Returns whether it left.
    pub(super) fn charge(&mut self, tenant: &str, took: Duration) -> bool {
        let Some(f) = &mut self.fair else { return false };
        if !f.charge(tenant, took, true) || !f.behind() || !f.heavier(tenant) {
            return false;
        }
        let (used, elapsed) = (f.used.get(tenant).map_or(Duration::ZERO, |u| u.0), f.since.elapsed());
        self.leave(tenant, used, elapsed)
    }

    /// `tenant`, which took `used` of the loop's last `elapsed`, leaves it
    /// if lanes may and another tenant stays: as a halted lane, its part
    /// of the transaction in progress is undone (its state writes and
    /// buffered messages), and at the next boundary its lane starts on a
    /// connection of its own from after its last transaction done.
    fn leave(&mut self, tenant: &str, used: Duration, elapsed: Duration) -> bool {
        // While a snapshot runs, its chunks go to the handlers of the
        // shared loop: every lane stays in it.
        if self.starter.is_none() || self.halted_lanes.contains(tenant) || !self.snapshots.progress().is_empty() {
            return false;
        }
        if self.set_lane_aside(tenant).is_none() {
            return false;
        }
        let share = self.fair.as_mut().map_or(1.0, |f| {
            f.restart();
            f.share(tenant)
        });
        self.leaving.insert(tenant.to_owned());
        tracing::warn!(
            tenant = %tenant,
            "the tenant took {:.0} ms of the shared loop's last {:.0} ms, more than its share of {:.0}%: its lane reads on a connection of its own from its last transaction done, the others go on without waiting for it",
            used.as_secs_f64() * 1000.0,
            elapsed.as_secs_f64() * 1000.0,
            share * 100.0,
        );
        true
    }

    /// Moves `tenant`'s handlers to a pipeline on a connection of their
    /// own, reading from `from` (call between transactions): the store is
    /// brought up to date first, so that they start with their committed
    /// state. Returns whether the lane left.
    pub(super) fn detach_lane(&mut self, rt: &tokio::runtime::Runtime, tenant: &str, from: Checkpoint) -> bool {
        if self.starter.is_none() {
            return false;
        }
        if let Err(e) = rt.block_on(self.checkpoint()) {
            tracing::error!(tenant = %tenant, "the tenant's lane stays: committing the checkpoint first failed: {e:#}");
            return false;
        }
        let ids: Vec<HandlerId> = (self.handlers.ids().iter())
            .filter(|id| id.tenant() == tenant)
            .cloned()
            .collect();
        let plans: Vec<HandlerPlan> = ids.iter().filter_map(|id| self.handlers.plan(id).cloned()).collect();
        let gates: Vec<(HandlerId, (u64, u64))> = (ids.iter())
            .filter_map(|id| self.gates.get(id).map(|g| (id.clone(), *g)))
            .collect();
        for id in &ids {
            self.handlers.remove(id);
            self.router.remove(id);
            self.holds.remove(id);
            self.gates.remove(id);
        }
        self.halted_lanes.remove(tenant);
        let place = LanePlace::new(from.clone());
        self.checkpointer.detach_lane(tenant, place.clone());
        self.start_lane(tenant, plans, place, gates);
        true
    }

    /// Starts `tenant`'s lane on its own connection from `place`; if it
    /// cannot start, its handlers come back halted there.
    fn start_lane(
        &mut self,
        tenant: &str,
        plans: Vec<HandlerPlan>,
        place: LanePlace,
        gates: Vec<(HandlerId, (u64, u64))>,
    ) {
        let (tx, rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let join_at = Arc::new(Mutex::new(None));
        let main_at = Arc::new(Mutex::new(self.done.as_ref().map_or((0, 0), Checkpoint::at)));
        let link = LaneLink {
            tx,
            join_at: join_at.clone(),
            main_at: main_at.clone(),
            stop: Stop::on(stop_rx),
        };
        let n = self.plan.tenants.len();
        let run = LaneRun {
            tenant: tenant.to_owned(),
            plan: self.plan.for_lane(tenant, &plans),
            place: place.clone(),
            link,
            cpu_share: self.plan.tenants.get(tenant).map_or(1.0, |t| t.cpu_share(n)),
            gates,
        };
        let started = self.starter.as_ref().expect("started with a starter").start(run);
        let from = place.get();
        match started {
            Ok(thread) => {
                tracing::info!(tenant = %tenant, file = %from.file, pos = from.pos, "the tenant's lane reads on a connection of its own");
                self.detached.insert(
                    tenant.to_owned(),
                    Detached {
                        plans,
                        place,
                        rx,
                        join_at,
                        main_at,
                        stop: stop_tx,
                        thread: Some(thread),
                    },
                );
            }
            Err(e) => {
                let e = e.context("starting the tenant's lane on a connection of its own");
                self.take_back(tenant, &plans, from, Back::Failed(&e));
            }
        }
        self.write_status();
    }

    /// Puts `tenant`'s handlers `plans` back into the shared loop, each with
    /// its state from the store, taking the transactions after `at`; with
    /// `failed`, halted at `at` instead.
    fn take_back(&mut self, tenant: &str, plans: &[HandlerPlan], at: Checkpoint, back: Back<'_>) {
        let failed = match back {
            Back::Failed(e) => Some(e),
            Back::Joined | Back::Recalled => None,
        };
        let halted = !matches!(back, Back::Joined);
        for h in plans {
            let id = HandlerId::new(&h.tenant, &h.name);
            let module = match self.handlers.runtime().load(&h.module, h.limits.module_bytes()) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(handler = %id, "the handler cannot come back with its tenant's lane: {e}; it stays out until its module loads (a new module file, or a restart)");
                    continue;
                }
            };
            if let Err(e) = self.install(h, module) {
                tracing::error!(handler = %id, "the handler cannot come back with its tenant's lane: {e}");
                continue;
            }
            if failed.is_some() {
                self.handlers.mark_halted(&id);
            } else if !halted {
                self.gates.insert(id, at.at());
            }
        }
        self.checkpointer.rejoin_lane(tenant, at.clone(), halted);
        if halted {
            self.halted_lanes.insert(tenant.to_owned());
        }
        match back {
            Back::Recalled => {
                tracing::info!(tenant = %tenant, file = %at.file, pos = at.pos, "the tenant's lane stops on its own connection for a deployment, and goes on there after it");
            }
            Back::Failed(e) => {
                tracing::error!(
                    tenant = %tenant, file = %at.file, pos = at.pos,
                    "the tenant's lane halted: {e:#}. Its handlers take no more changes and the other tenants go on; its position stays where it was. Fix the handler (a new module file, or POST /admin/handlers/NAME/resume once its sink is back) or restart rowhook: the tenant catches up from its position on a connection of its own"
                );
            }
            Back::Joined => {
                tracing::info!(tenant = %tenant, file = %at.file, pos = at.pos, "the tenant's lane caught up: its handlers are back with the others and its own connection is closed");
            }
        }
        self.write_status();
    }

    /// Stops `tenant`'s lane on its own connection where it is and takes
    /// its handlers back, halted there, so that a deployment can change
    /// them (the caller lets the lane go on after: see
    /// [`Pipeline::resume_lane`]). Returns whether the lane was apart.
    pub(super) fn recall_lane(&mut self, tenant: &str) -> bool {
        let Some(mut d) = self.detached.remove(tenant) else {
            return false;
        };
        d.stop.send_replace(true);
        if let Some(t) = d.thread.take() {
            let _ = t.join();
        }
        let ended = d.rx.try_iter().find_map(|m| match m {
            LaneMsg::Ended(at, end) => Some((at, end)),
            LaneMsg::Ready(_) => None,
        });
        let plans = std::mem::take(&mut d.plans);
        match ended {
            Some((at, LaneEnd::Failed(e))) => self.take_back(tenant, &plans, at, Back::Failed(&e)),
            Some((at, _)) => self.take_back(tenant, &plans, at, Back::Recalled),
            None => self.take_back(tenant, &plans, d.place.get(), Back::Recalled),
        }
        true
    }

    /// Lets `tenant`'s halted lane go on (its handler was reloaded or
    /// resumed through the admin API): it catches up from its position on
    /// a connection of its own. Call between transactions.
    pub(super) fn resume_lane(&mut self, rt: &tokio::runtime::Runtime, tenant: &str) -> bool {
        if !self.halted_lanes.contains(tenant) || self.in_transaction {
            return false;
        }
        if self.starter.is_none() {
            tracing::warn!(tenant = %tenant, "the tenant's lane stays halted: restart rowhook to let it catch up from its position (this source cannot be read again while running)");
            return false;
        }
        let Some(from) = self.checkpointer.halted_at(tenant).cloned() else {
            return false;
        };
        for id in self.handlers.ids().iter().filter(|id| id.tenant() == tenant) {
            self.handlers.unmark_halted(id);
        }
        tracing::info!(tenant = %tenant, file = %from.file, pos = from.pos, "the tenant's lane resumes: it catches up from its position on a connection of its own");
        self.detach_lane(rt, tenant, from)
    }

    /// Answers the lanes on their own connection (call between
    /// transactions): one that is ready is waited for, here, until it
    /// reaches this place, and taken back; one that ended is taken back,
    /// halted if it failed.
    pub(super) fn poll_lanes(&mut self, stop: &Stop) {
        if self.detached.is_empty() {
            return;
        }
        let here = self.done.as_ref().map_or((0, 0), Checkpoint::at);
        for d in self.detached.values() {
            *d.main_at.lock().unwrap_or_else(PoisonError::into_inner) = here;
        }
        let tenants: Vec<String> = self.detached.keys().cloned().collect();
        for tenant in tenants {
            let Some(d) = self.detached.get(&tenant) else { continue };
            let msg = match d.rx.try_recv() {
                Ok(msg) => msg,
                Err(mpsc::TryRecvError::Empty) => continue,
                Err(mpsc::TryRecvError::Disconnected) => LaneMsg::Ended(
                    d.place.get(),
                    LaneEnd::Failed(anyhow::anyhow!("the lane's thread ended")),
                ),
            };
            let ended = match msg {
                LaneMsg::Ready(at) => {
                    let here = self.done.as_ref().map_or((0, 0), Checkpoint::at);
                    tracing::debug!(tenant = %tenant, file = %at.file, pos = at.pos, "the tenant's lane read all the server has: the stream waits for it here");
                    *d.join_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(here);
                    // The stream waits here until the lane is here too.
                    loop {
                        if stop.requested() {
                            break None;
                        }
                        match d.rx.recv_timeout(Duration::from_millis(50)) {
                            Ok(LaneMsg::Ended(at, end)) => break Some((at, end)),
                            Ok(LaneMsg::Ready(_)) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                            Err(mpsc::RecvTimeoutError::Disconnected) => {
                                let e = anyhow::anyhow!("the lane's thread ended");
                                break Some((d.place.get(), LaneEnd::Failed(e)));
                            }
                        }
                    }
                }
                LaneMsg::Ended(at, end) => Some((at, end)),
            };
            if let Some((at, end)) = ended {
                self.lane_ended(&tenant, at, end);
            }
        }
    }

    /// `tenant`'s lane on its own connection ended at `at`.
    fn lane_ended(&mut self, tenant: &str, at: Checkpoint, end: LaneEnd) {
        let Some(mut d) = self.detached.remove(tenant) else {
            return;
        };
        if let Some(t) = d.thread.take() {
            let _ = t.join();
        }
        let plans = std::mem::take(&mut d.plans);
        match end {
            LaneEnd::Joined if self.done.as_ref().is_none_or(|done| done.at() <= at.at()) => {
                self.take_back(tenant, &plans, at, Back::Joined);
            }
            LaneEnd::Joined => {
                // The stream went on before the lane was waited for.
                self.start_lane(tenant, plans, LanePlace::new(at), Vec::new());
            }
            LaneEnd::Stopped => {
                let e = anyhow::anyhow!("it stopped");
                self.take_back(tenant, &plans, at, Back::Failed(&e));
            }
            LaneEnd::Failed(e) => self.take_back(tenant, &plans, at, Back::Failed(&e)),
        }
    }

    /// Stops every lane on its own connection and waits for each to commit
    /// where it is (rowhook is stopping).
    pub(super) fn stop_lanes(&mut self) {
        for (tenant, mut d) in std::mem::take(&mut self.detached) {
            d.stop.send_replace(true);
            if let Some(t) = d.thread.take()
                && t.join().is_err()
            {
                tracing::error!(tenant = %tenant, "the lane's thread panicked");
            }
        }
    }

    /// Why no handler named `handler` answers here: it runs with a lane on
    /// its own connection, or there is none.
    pub(super) fn no_handler(&self, handler: String) -> super::control::ControlError {
        use super::control::ControlError;
        let apart = (self.detached.iter()).find(|(_, d)| d.plans.iter().any(|h| h.name == handler));
        match apart {
            Some((tenant, _)) => ControlError::Apart {
                handler,
                tenant: tenant.clone(),
            },
            None => ControlError::NoHandler(handler),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fairness(tenants: &[&str]) -> Fairness {
        Fairness {
            since: Instant::now(),
            used: BTreeMap::new(),
            idle: Duration::ZERO,
            idle_since: None,
            shares: tenants
                .iter()
                .map(|t| ((*t).to_owned(), 1.0 / tenants.len() as f64))
                .collect(),
        }
    }

    #[test]
    fn only_a_tenant_past_its_share_whose_changes_cost_far_more_each_may_leave() {
        let mut f = fairness(&["a", "b", "c"]);
        // C: a thousand cheap calls, more than a third of a window.
        for _ in 0..1000 {
            f.charge("c", Duration::from_micros(100), true);
        }
        assert!(f.charge("c", Duration::ZERO, true), "past its share");
        assert!(!f.heavier("c"), "nobody else called: nobody to slow");
        // A: one call to its time limit.
        assert!(f.charge("a", Duration::from_millis(100), true));
        assert!(f.heavier("a"));
        assert!(!f.heavier("c"), "merely busy");
        // B: cheap calls, but its sink takes a millisecond a message.
        for _ in 0..10 {
            f.charge("b", Duration::from_micros(100), true);
        }
        assert!(!f.heavier("b"));
        f.charge("b", Duration::from_millis(10), false);
        assert!(f.heavier("b"));
        f.restart();
        assert!(!f.heavier("a"), "a new window");
    }
}
