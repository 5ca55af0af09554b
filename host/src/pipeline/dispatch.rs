//! The handlers and their calls: one live instance per handler, recreated
//! after a trap, swapped by hot reload, with what the pipeline counts of it.
//!
//! A call returns what the handler emitted or why it failed; the guest's log
//! lines go to rowhook's log at their level. A handler whose instance cannot
//! be created (after a trap, its start function fails) keeps its state and
//! is not called: each of its changes fails with the reason, under its own
//! `on_error`, and the next change tries to create the instance again.
//! Each handler has a circuit [`breaker`](super::breaker): one that keeps
//! timing out or trapping is suspended for a cool-down, its changes failing at once as
//! "suspended" under its `on_error`, without costing its neighbours a call.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{HandlerPlan, OnError, Plan};
use crate::handler_id::{HandlerId, IdMap};
use crate::runtime::rate::EmitRate;
use crate::runtime::{
    Emitted, Grants, GuestError, GuestMetrics, HandlerRuntime, Instance, Limits, LoadError, Module, SinkRules,
    StateOverlay,
};
use crate::sink::SinkLimits;
use crate::status::LastError;
use crate::telemetry::{Counter, Gauge, Histogram, Registry, names};

use super::breaker::{Breaker, Transition};

/// What a configured handler may emit to, with each sink's rules: what it
/// takes as a payload (from the config) and the limits `limits` gives for it
/// (from the open sink; [`SinkLimits::default`] where no sink is open, as
/// in `rowhook check`).
pub fn grants_of(
    plan: &Plan,
    h: &HandlerPlan,
    limits: impl Fn(&str) -> SinkLimits,
    rate: Option<Arc<EmitRate>>,
) -> Arc<Grants> {
    let grants = Grants::new(h.grants.iter().map(|name| {
        let form = plan.sinks.get(name).map(|s| s.payload_form()).unwrap_or_default();
        let SinkLimits { max_payload, max_key } = limits(name);
        (name.to_owned(), SinkRules::new(form, max_payload, max_key))
    }));
    Arc::new(grants.within(rate))
}

/// An emit rate for each tenant that has `emit_mb_per_s`, shared by its handlers.
pub fn emit_rates(plan: &Plan) -> std::collections::BTreeMap<String, Arc<EmitRate>> {
    (plan.tenants.iter())
        .filter_map(|(name, t)| Some((name.clone(), Arc::new(EmitRate::new(t.emit_bytes_per_s?)))))
        .collect()
}

/// The runtime limits of a configured handler.
pub fn runtime_limits(plan: &HandlerPlan) -> Limits {
    Limits {
        memory_bytes: plan.limits.memory_bytes(),
        time_ms: plan.limits.time.as_millis().max(1) as u64,
        emits_per_event: plan.limits.emits_per_event,
        emit_bytes_per_event: plan.limits.emit_bytes_per_event(),
        state_bytes: plan.limits.state_bytes(),
        state_keys: plan.limits.state_keys as usize,
        instances: plan.limits.instances,
    }
}

/// Why a call did not succeed.
#[derive(Debug)]
pub enum CallError {
    /// The guest failed: an error it returned, a trap, a timeout, a quota.
    Guest(GuestError),
    /// The handler has no instance: creating one failed, for this reason.
    NoInstance(String),
    /// The handler is suspended by its circuit breaker, or by its
    /// tenant's (`true`); it was not called.
    Suspended(bool),
}

impl CallError {
    /// Whether the handler was not called because it is suspended.
    pub fn is_suspended(&self) -> bool {
        matches!(self, CallError::Suspended(_))
    }

    /// Whether the failure costs the process (a timeout, a trap and the new
    /// instance it takes, an instance that cannot be created), which the
    /// circuit breaker counts. An error the handler returns, or a quota it
    /// breaches, costs no more than a success.
    pub fn is_costly(&self) -> bool {
        match self {
            CallError::Guest(GuestError::Timeout(_) | GuestError::Trap(_)) | CallError::NoInstance(_) => true,
            CallError::Guest(_) | CallError::Suspended(_) => false,
        }
    }

    /// Whether the call was cut, or not made, because rowhook is stopping:
    /// not the handler's failure.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, CallError::Guest(GuestError::Interrupted))
    }

    /// What kind of failure this is, for `rowhook_handler_errors_total{kind}`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CallError::Guest(GuestError::Failed(_) | GuestError::Interrupted) => ErrorKind::Error,
            CallError::Guest(GuestError::Timeout(_)) => ErrorKind::Timeout,
            CallError::Guest(GuestError::Trap(_)) => ErrorKind::Trap,
            CallError::Guest(GuestError::Quota(_) | GuestError::EmitBudget(_) | GuestError::EmitRate(_)) => {
                ErrorKind::Quota
            }
            CallError::NoInstance(_) => ErrorKind::NoInstance,
            CallError::Suspended(_) => ErrorKind::Suspended,
        }
    }
}

/// The kinds of handler failure `rowhook_handler_errors_total` is labelled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The handler returned an error.
    Error,
    /// The call ran past its deadline.
    Timeout,
    /// The handler trapped.
    Trap,
    /// An emit quota or budget was breached.
    Quota,
    /// No instance could be created.
    NoInstance,
    /// The circuit breaker held the change back.
    Suspended,
    /// Rows of its tables could not be decoded.
    Undecodable,
}

impl ErrorKind {
    const ALL: [ErrorKind; 7] = [
        ErrorKind::Error,
        ErrorKind::Timeout,
        ErrorKind::Trap,
        ErrorKind::Quota,
        ErrorKind::NoInstance,
        ErrorKind::Suspended,
        ErrorKind::Undecodable,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Error => "error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Trap => "trap",
            ErrorKind::Quota => "quota",
            ErrorKind::NoInstance => "no_instance",
            ErrorKind::Suspended => "suspended",
            ErrorKind::Undecodable => "undecodable",
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Guest(e) => e.fmt(f),
            CallError::NoInstance(e) => write!(f, "the handler's instance cannot be created: {e}"),
            CallError::Suspended(false) => f.write_str(
                "the handler is suspended by its circuit breaker (too many failures): not called until its cool-down ends",
            ),
            CallError::Suspended(true) => f.write_str(
                "the handler is suspended by its tenant's circuit breaker (too many failures of the tenant's handlers): not called until the tenant's cool-down ends",
            ),
        }
    }
}

/// What the pipeline counts per handler, labelled `tenant`, `handler`.
struct HandlerCounters {
    calls: Counter,
    call_seconds: Histogram,
    /// By [`ErrorKind`], in the order of [`ErrorKind::ALL`].
    errors: [Counter; ErrorKind::ALL.len()],
    reloads: Counter,
    reload_failures: Counter,
    suspensions: Counter,
    suspended: Counter,
    recycled: Counter,
    dead_letters: Counter,
    halted: Gauge,
}

impl HandlerCounters {
    fn new(registry: &Registry, h: &HandlerPlan) -> HandlerCounters {
        let labels = || vec![("tenant", h.tenant.clone()), ("handler", h.name.clone())];
        let result = |r: &str| {
            let mut labels = labels();
            labels.push(("result", r.to_owned()));
            labels
        };
        const RELOADS_HELP: &str =
            "Hot reloads: ok, swapped in; failed, refused while the previous version kept serving.";
        HandlerCounters {
            calls: registry.counter(names::HANDLER_CALLS, "Handler calls made.", labels()),
            call_seconds: registry.histogram(
                names::HANDLER_CALL_SECONDS,
                "How long handler calls took, in seconds.",
                labels(),
            ),
            errors: ErrorKind::ALL.map(|kind| {
                let mut labels = labels();
                labels.push(("kind", kind.as_str().to_owned()));
                registry.counter(
                    names::HANDLER_ERRORS,
                    "Handler failures handled by on_error skip or dead-letter, by kind.",
                    labels,
                )
            }),
            reloads: registry.counter(names::HANDLER_RELOADS, RELOADS_HELP, result("ok")),
            reload_failures: registry.counter(names::HANDLER_RELOADS, RELOADS_HELP, result("failed")),
            dead_letters: registry.counter(
                names::DEAD_LETTERS,
                "Dead letters written for the handler's failures and its refused messages.",
                labels(),
            ),
            halted: registry.gauge(
                names::HANDLER_HALTED,
                "1 once the handler's failure stopped the run under on_error halt.",
                labels(),
            ),
            suspensions: registry.counter(
                names::HANDLER_SUSPENSIONS,
                "Times the circuit breaker suspended the handler.",
                labels(),
            ),
            suspended: registry.counter(
                names::HANDLER_SUSPENDED,
                "Changes not handed to the handler while it was suspended, handled by its on_error.",
                labels(),
            ),
            recycled: registry.counter(
                names::HANDLER_RECYCLED,
                "Instances replaced between transactions because their memory had grown past half of its room.",
                labels(),
            ),
        }
    }
}

/// One handler: its plan, compiled module and live instance.
struct HandlerSlot {
    plan: HandlerPlan,
    module: Module,
    /// `None` while no instance can be created; its state then waits in `parked`.
    instance: Option<Instance>,
    parked: StateOverlay,
    grants: Arc<Grants>,
    counters: HandlerCounters,
    breaker: Breaker,
    log_rate: LogRate,
    /// Its series for what the guest's `metrics` calls write; each new
    /// instance (after a trap, a reload) writes to the same series.
    metrics: GuestMetrics,
    /// Its latest failure in this run (the status report shows it).
    last_error: Option<LastError>,
}

impl HandlerSlot {
    fn instantiate(&self, runtime: &HandlerRuntime, module: &Module) -> anyhow::Result<Instance> {
        runtime.instantiate_with(
            module,
            self.grants.clone(),
            runtime_limits(&self.plan),
            self.metrics.clone(),
        )
    }

    /// Creates the instance if there is none, taking over the parked state.
    fn ensure_live(&mut self, runtime: &HandlerRuntime) -> Result<(), String> {
        if self.instance.is_none() {
            let mut fresh = self.instantiate(runtime, &self.module).map_err(|e| format!("{e:#}"))?;
            fresh.replace_state(std::mem::take(&mut self.parked));
            tracing::info!(handler = %self.plan.name, "the handler's instance was created again");
            self.instance = Some(fresh);
        }
        Ok(())
    }

    /// Replaces a trapped instance, keeping the handler's state; if no new
    /// one can be created, parks the state until one can.
    fn recover(&mut self, runtime: &HandlerRuntime) {
        let Some(mut broken) = self.instance.take() else { return };
        let state = std::mem::take(broken.state());
        match self.instantiate(runtime, &self.module) {
            Ok(mut fresh) => {
                fresh.replace_state(state);
                self.instance = Some(fresh);
            }
            Err(e) => {
                tracing::error!(
                    handler = %self.plan.name,
                    "re-creating the handler's instance after a trap failed; its changes fail under its on_error until it can be created: {e:#}"
                );
                self.parked = state;
            }
        }
    }

    /// One call, its log lines forwarded, a trapped instance replaced.
    fn call(&mut self, runtime: &HandlerRuntime, change: &[u8], out: &mut Vec<Emitted>) -> Result<(), CallError> {
        self.ensure_live(runtime).map_err(CallError::NoInstance)?;
        let instance = self.instance.as_mut().expect("ensured");
        let result = instance.call(change);
        let name = &self.plan.name;
        for line in instance.take_logs() {
            // A line the log level filters out costs nothing of the rate.
            let enabled = match line.level {
                "error" => tracing::enabled!(tracing::Level::ERROR),
                "warn" => tracing::enabled!(tracing::Level::WARN),
                "info" => tracing::enabled!(tracing::Level::INFO),
                "debug" => tracing::enabled!(tracing::Level::DEBUG),
                _ => tracing::enabled!(tracing::Level::TRACE),
            };
            if !enabled {
                continue;
            }
            match self.log_rate.take(Instant::now()) {
                Take::Pass => {}
                Take::PassAfter(dropped) => {
                    tracing::warn!(handler = %name, "handler log below its rate again: {dropped} lines were dropped (limits.log_lines_per_sec)");
                }
                Take::Drop { first } => {
                    if first {
                        tracing::warn!(handler = %name, "handler log over {} lines per second (limits.log_lines_per_sec): lines are dropped and counted until it slows down", self.plan.limits.log_lines_per_sec);
                    }
                    self.metrics.log_line_dropped();
                    continue;
                }
            }
            let (fields, msg) = (&line.fields, &line.message);
            match line.level {
                "error" => tracing::error!(handler = %name, fields = ?fields, "{msg}"),
                "warn" => tracing::warn!(handler = %name, fields = ?fields, "{msg}"),
                "info" => tracing::info!(handler = %name, fields = ?fields, "{msg}"),
                "debug" => tracing::debug!(handler = %name, fields = ?fields, "{msg}"),
                _ => tracing::trace!(handler = %name, fields = ?fields, "{msg}"),
            }
        }
        let emitted = match result {
            Ok(()) => {
                instance.take_emitted(out);
                Ok(())
            }
            Err(e) => Err(CallError::Guest(e)),
        };
        if instance.is_broken() {
            // A trapped component instance refuses further calls.
            self.recover(runtime);
        }
        emitted
    }

    /// Replaces a worn instance between transactions (its state carries
    /// over); one that cannot be created leaves the worn one serving.
    fn recycle_if_worn(&mut self, runtime: &HandlerRuntime) {
        let Some(grown) = self.instance.as_ref().filter(|i| i.worn()).map(Instance::memory_bytes) else {
            return;
        };
        match self.instantiate(runtime, &self.module) {
            Ok(mut fresh) => {
                if let Some(mut worn) = self.instance.take() {
                    fresh.replace_state(std::mem::take(worn.state()));
                }
                self.instance = Some(fresh);
                self.counters.recycled.inc();
                tracing::info!(
                    handler = %self.plan.name,
                    "the handler's instance was replaced between transactions: its memory had grown to {:.1} MiB of limits.memory_mb = {} (its state carries over)",
                    grown as f64 / f64::from(1 << 20),
                    self.plan.limits.memory_mb
                );
            }
            Err(e) => {
                tracing::warn!(handler = %self.plan.name, "replacing the handler's worn instance failed; it keeps serving: {e:#}")
            }
        }
    }

    fn state(&mut self) -> &mut StateOverlay {
        match &mut self.instance {
            Some(i) => i.state(),
            None => &mut self.parked,
        }
    }
}

/// What [`LogRate::take`] says of one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// Log it.
    Pass,
    /// Log it; this many lines before it were dropped.
    PassAfter(u64),
    /// Drop it (`first`: the first of a run of drops).
    Drop { first: bool },
}

/// A handler's log rate limit across calls: a token bucket of ten
/// seconds' worth of lines, refilled at `per_sec`. A run of drops is
/// reported twice: at its first drop, and at the first line logged after a
/// second without drops, with their number.
#[derive(Debug)]
struct LogRate {
    per_sec: f64,
    tokens: f64,
    last: Option<Instant>,
    /// Lines dropped in the current run, and when the last was.
    dropped: u64,
    last_drop: Option<Instant>,
}

impl LogRate {
    fn new(per_sec: u32) -> LogRate {
        let per_sec = f64::from(per_sec);
        LogRate {
            per_sec,
            tokens: per_sec * 10.0,
            last: None,
            dropped: 0,
            last_drop: None,
        }
    }

    fn take(&mut self, now: Instant) -> Take {
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * self.per_sec;
            self.tokens = (self.tokens + refill).min(self.per_sec * 10.0);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            let quiet = self
                .last_drop
                .is_none_or(|t| now.saturating_duration_since(t) >= std::time::Duration::from_secs(1));
            if self.dropped > 0 && quiet {
                Take::PassAfter(std::mem::take(&mut self.dropped))
            } else {
                Take::Pass
            }
        } else {
            self.dropped += 1;
            self.last_drop = Some(now);
            Take::Drop {
                first: self.dropped == 1,
            }
        }
    }
}

/// A handler's instance created by [`Handlers::prepare`], not yet running.
pub struct Prepared(HandlerSlot);

/// The configured handlers, by id, in call order.
pub struct Handlers {
    runtime: HandlerRuntime,
    slots: IdMap<HandlerSlot>,
    order: Vec<HandlerId>,
    /// The breakers of tenants that have one, by tenant.
    tenants: std::collections::BTreeMap<String, TenantBreaker>,
    /// How long the last call took (the shared loop charges it to the
    /// handler's tenant: see `pipeline::lanes`).
    last_call: std::time::Duration,
}

/// A tenant's circuit breaker over all its handlers, and its metrics.
struct TenantBreaker {
    breaker: Breaker,
    plan: crate::config::BreakerPlan,
    suspensions: Counter,
    suspended: Gauge,
}

impl TenantBreaker {
    /// Counts and logs what `transition` did to `tenant`'s breaker:
    /// `failures` says whose failures opened it (and `last`, which one
    /// did), `trial` is the handler whose trial closed it.
    fn moved(&mut self, transition: Transition, tenant: &str, trial: &str, failures: &str, last: &str) {
        match transition {
            Transition::None => {}
            Transition::Opened => {
                self.suspensions.inc();
                self.suspended.set(1.0);
                tracing::warn!(
                    tenant = %tenant,
                    "tenant suspended for {} ms by its circuit breaker ({} failures of {failures} within {} ms{last}): each of its handlers' changes go to its while_suspended until a trial change succeeds",
                    self.plan.cooldown.as_millis(),
                    self.plan.failures,
                    self.plan.window.as_millis(),
                );
            }
            Transition::Closed => {
                self.suspended.set(0.0);
                tracing::info!(tenant = %tenant, "tenant resumed: a trial change of its handler `{trial}` succeeded after the cool-down");
            }
        }
    }
}

impl Handlers {
    /// No handlers yet; instances come from `runtime`.
    pub fn new(runtime: HandlerRuntime) -> Handlers {
        Handlers {
            runtime,
            slots: IdMap::default(),
            order: Vec::new(),
            tenants: Default::default(),
            last_call: std::time::Duration::ZERO,
        }
    }

    /// How long the last call took.
    pub fn last_call(&self) -> std::time::Duration {
        self.last_call
    }

    /// Handler `id`'s plan.
    pub fn plan(&self, id: &HandlerId) -> Option<&HandlerPlan> {
        self.slots.get(id).map(|s| &s.plan)
    }

    /// Gives each tenant of `plan` with a `breaker` its breaker, counted
    /// in `registry`.
    pub fn tenant_breakers(&mut self, plan: &Plan, registry: &Registry) {
        for (name, t) in &plan.tenants {
            let Some(b) = t.breaker else { continue };
            let labels = || vec![("tenant", name.clone())];
            self.tenants.insert(
                name.clone(),
                TenantBreaker {
                    breaker: Breaker::new(b),
                    plan: b,
                    suspensions: registry.counter(
                        names::TENANT_SUSPENSIONS,
                        "Times the tenant's circuit breaker suspended all its handlers.",
                        labels(),
                    ),
                    suspended: registry.gauge(
                        names::TENANT_SUSPENDED,
                        "1 while the tenant's circuit breaker holds its handlers suspended.",
                        labels(),
                    ),
                },
            );
        }
    }

    /// The runtime handlers are instantiated in.
    pub fn runtime(&self) -> &HandlerRuntime {
        &self.runtime
    }

    /// Loads `h`'s module and creates its instance, which may emit as
    /// `grants` say; it is called after the handlers added before it.
    /// Counts in `registry`.
    pub fn add(&mut self, h: &HandlerPlan, grants: Arc<Grants>, registry: &Registry) -> anyhow::Result<HandlerId> {
        let id = HandlerId::new(&h.tenant, &h.name);
        anyhow::ensure!(!self.slots.contains_key(&id), "handler `{id}` is configured twice");
        let module = self
            .runtime
            .load(&h.module, h.limits.module_bytes())
            .map_err(|e| anyhow::anyhow!("handler `{}`: {e}", h.name))?;
        let prepared = self.prepare(h, module, grants, registry)?;
        self.put(&id, prepared, Default::default());
        Ok(id)
    }

    /// Creates `h`'s instance of `module`, which may emit as `grants` say,
    /// ready to [`Handlers::put`] in; nothing running changes. Counts in
    /// `registry`.
    pub fn prepare(
        &self,
        h: &HandlerPlan,
        module: Module,
        grants: Arc<Grants>,
        registry: &Registry,
    ) -> anyhow::Result<Prepared> {
        let mut slot = HandlerSlot {
            plan: h.clone(),
            module,
            instance: None,
            parked: StateOverlay::default(),
            grants,
            counters: HandlerCounters::new(registry, h),
            breaker: Breaker::new(h.breaker),
            log_rate: LogRate::new(h.limits.log_lines_per_sec),
            metrics: GuestMetrics::new(registry, &h.tenant, &h.name),
            last_error: None,
        };
        slot.instance = Some(slot.instantiate(&self.runtime, &slot.module)?);
        Ok(Prepared(slot))
    }

    /// Puts a prepared handler in (at a transaction boundary). A new one
    /// is called after the others and starts with `state`; one that runs
    /// already (a changed config or module) keeps its place and its state,
    /// and its breaker and last error start afresh.
    pub fn put(&mut self, id: &HandlerId, prepared: Prepared, state: std::collections::HashMap<String, Vec<u8>>) {
        let Prepared(mut slot) = prepared;
        match self.slots.get_mut(id) {
            Some(old) => {
                let kept = std::mem::take(old.state());
                *slot.state() = kept;
                *old = slot;
            }
            None => {
                *slot.state() = StateOverlay::from_values(state);
                self.slots.insert(id.clone(), slot);
                self.order.push(id.clone());
            }
        }
    }

    /// Whether handler `id` runs.
    pub fn contains(&self, id: &HandlerId) -> bool {
        self.slots.contains_key(id)
    }

    /// Removes handler `id` (its state and instance go with it).
    pub fn remove(&mut self, id: &HandlerId) {
        self.slots.remove(id);
        self.order.retain(|h| h != id);
    }

    /// The handlers, in call order.
    pub fn ids(&self) -> &[HandlerId] {
        &self.order
    }

    /// Handler `id`'s `on_error`.
    pub fn on_error(&self, id: &HandlerId) -> &OnError {
        &self.slots[id].plan.on_error
    }

    /// Whether `id`'s changes are held while its breaker is open
    /// (`while_suspended = "hold"`).
    pub fn holds_while_suspended(&self, id: &HandlerId) -> bool {
        self.slots[id].plan.breaker.hold_bytes.is_some()
    }

    /// Whether `id`'s circuit breaker, or its tenant's, is open (or a
    /// trial is in progress).
    pub fn suspended(&self, id: &HandlerId) -> bool {
        let closed = |b: &Breaker| b.state() == super::breaker::State::Closed;
        !closed(&self.slots[id].breaker) || self.tenants.get(id.tenant()).is_some_and(|t| !closed(&t.breaker))
    }

    /// When `id` could next be called (see [`Breaker::callable_at`]): when
    /// both its breaker and its tenant's let it.
    pub fn callable_at(&self, id: &HandlerId, now: Instant) -> Option<Instant> {
        let own = self.slots[id].breaker.callable_at(now)?;
        match self.tenants.get(id.tenant()) {
            Some(t) => Some(own.max(t.breaker.callable_at(now)?)),
            None => Some(own),
        }
    }

    /// Makes `id`'s next call a trial: it starts with changes a previous
    /// run held for it.
    pub fn trial_first(&mut self, id: &HandlerId) {
        if let Some(slot) = self.slots.get_mut(id) {
            slot.breaker.trial_first(Instant::now());
        }
    }

    /// Whether a dead letter of `id` would carry the change (its
    /// `on_error` is `dead-letter`).
    pub fn dead_letters(&self, id: &HandlerId) -> bool {
        matches!(self.slots[id].plan.on_error, OnError::DeadLetter { .. })
    }

    /// `id`'s place in the call order.
    pub fn place(&self, id: &HandlerId) -> usize {
        self.order.iter().position(|h| h == id).unwrap_or(0)
    }

    /// Counts a failure of `id` that `on_error` skipped or dead-lettered.
    pub fn count_error(&self, id: &HandlerId, kind: ErrorKind) {
        let i = ErrorKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("every kind is listed");
        self.slots[id].counters.errors[i].inc();
    }

    /// Keeps `error` as handler `id`'s latest failure.
    pub fn note_error(&mut self, id: &HandlerId, error: LastError) {
        if let Some(slot) = self.slots.get_mut(id) {
            slot.last_error = Some(error);
        }
    }

    /// Handler `id`'s latest failure in this run.
    pub fn last_error(&self, id: &HandlerId) -> Option<&LastError> {
        self.slots.get(id)?.last_error.as_ref()
    }

    /// Counts a dead letter written for `id`.
    pub fn count_dead_letter(&self, id: &HandlerId) {
        self.slots[id].counters.dead_letters.inc();
    }

    /// Marks `id` as the handler whose failure stopped the run.
    pub fn mark_halted(&self, id: &HandlerId) {
        if let Some(slot) = self.slots.get(id) {
            slot.counters.halted.set(1.0);
        }
    }

    /// Handler `id` runs again (its tenant's lane resumed).
    pub fn unmark_halted(&self, id: &HandlerId) {
        if let Some(slot) = self.slots.get(id) {
            slot.counters.halted.set(0.0);
        }
    }

    /// Calls handler `id` with one encoded row change; what it emitted is
    /// appended to `out`. A trapped instance is replaced before this
    /// returns. A suspended handler is not called.
    pub fn call(&mut self, id: &HandlerId, change: &[u8], out: &mut Vec<Emitted>) -> Result<(), CallError> {
        let slot = self.slots.get_mut(id).expect("routes name configured handlers");
        let mut tenant = self.tenants.get_mut(id.tenant());
        // Both breakers are asked before either moves, so a trial is taken
        // only when the call is made. Closed breakers read no clock.
        let by_tenant = tenant.as_ref().is_some_and(|t| t.breaker.refuses(Instant::now));
        if by_tenant || slot.breaker.refuses(Instant::now) {
            slot.counters.suspended.inc();
            return Err(CallError::Suspended(by_tenant));
        }
        slot.breaker.admit(Instant::now);
        if let Some(t) = tenant.as_mut() {
            t.breaker.admit(Instant::now);
        }
        slot.counters.calls.inc();
        let started = Instant::now();
        let result = slot.call(&self.runtime, change, out);
        self.last_call = started.elapsed();
        slot.counters.call_seconds.observe(self.last_call);
        let costly = matches!(&result, Err(e) if e.is_costly());
        let transition = slot.breaker.ended(costly, Instant::now);
        let b = &slot.plan.breaker;
        match transition {
            Transition::None => {}
            Transition::Opened => {
                slot.counters.suspensions.inc();
                tracing::warn!(
                    handler = %slot.plan.name,
                    "handler suspended for {} ms by its circuit breaker ({} failures within {} ms); its changes go to its on_error until a trial change succeeds",
                    b.cooldown.as_millis(),
                    b.failures,
                    b.window.as_millis(),
                );
            }
            Transition::Closed => {
                tracing::info!(handler = %slot.plan.name, "handler resumed: its trial change succeeded after the cool-down");
            }
        }
        if let Some(t) = tenant {
            let transition = t.breaker.ended(costly, Instant::now);
            t.moved(transition, id.tenant(), id.name(), "its handlers", "");
        }
        result
    }

    /// `sink` refused messages of `tenant`'s handlers beyond its retries: a
    /// failure of the tenant's circuit breaker, if it has one, which
    /// suspends the whole tenant once they add up, so that the others stop
    /// waiting on retries of a sink that stays down.
    pub fn tenant_sink_failed(&mut self, tenant: &str, sink: &str) {
        let Some(t) = self.tenants.get_mut(tenant) else { return };
        let transition = t.breaker.failed(Instant::now());
        let last = format!(", the last sink `{sink}` refusing its messages beyond its retries");
        t.moved(transition, tenant, "", "its handlers or sinks", &last);
    }

    /// Replaces the state of every handler with what `load` returns for it.
    pub fn load_state(
        &mut self,
        mut load: impl FnMut(&HandlerId) -> anyhow::Result<std::collections::HashMap<String, Vec<u8>>>,
    ) -> anyhow::Result<()> {
        for (id, slot) in self.slots.iter_mut() {
            let values = load(id)?;
            *slot.state() = StateOverlay::from_values(values);
        }
        Ok(())
    }

    /// Every handler's current state values, in call order: the committed
    /// state right after [`Handlers::commit_state`].
    pub fn state_values(&mut self) -> Vec<(HandlerId, &std::collections::HashMap<String, Vec<u8>>)> {
        (self.slots.iter_mut())
            .map(|(id, slot)| (id.clone(), &*slot.state()))
            .map(|(id, state)| (id, state.values()))
            .collect()
    }

    /// Ends every handler's transaction; `keep` gets each one's writes.
    /// An instance whose memory has grown past half of its room is then
    /// replaced by a fresh one (see [`Instance::worn`]), which takes over
    /// the state: a runtime that leaks a little per call never reaches its
    /// cap.
    pub fn commit_state(&mut self, mut keep: impl FnMut(&HandlerId, Vec<(String, Option<Vec<u8>>)>)) {
        for id in &self.order {
            let slot = self.slots.get_mut(id).expect("ordered ids are slots");
            let writes = slot.state().commit();
            keep(id, writes);
            slot.recycle_if_worn(&self.runtime);
        }
    }

    /// Undoes every handler's writes and drops what it emitted in the
    /// transaction in progress.
    pub fn abandon_transaction(&mut self) {
        self.abandon_where(|_| true);
    }

    /// Undoes the writes of `tenant`'s handlers and drops what they emitted
    /// in the transaction in progress (its lane halted).
    pub fn abandon_tenant(&mut self, tenant: &str) {
        self.abandon_where(|id| id.tenant() == tenant);
    }

    fn abandon_where(&mut self, pick: impl Fn(&HandlerId) -> bool) {
        for slot in self.slots.iter_mut().filter(|(id, _)| pick(id)).map(|(_, slot)| slot) {
            slot.state().abandon();
            if let Some(i) = &mut slot.instance {
                i.drop_emitted();
            }
        }
    }

    /// Each handler, its number of state keys and their bytes (keys and
    /// values), in call order.
    pub fn state_sizes(&mut self) -> Vec<(HandlerId, u64, u64)> {
        let slots = &mut self.slots;
        self.order
            .iter()
            .map(|id| {
                let state = slots.get_mut(id).expect("ordered ids are slots").state();
                (id.clone(), state.len() as u64, state.bytes())
            })
            .collect()
    }

    /// Each handler's module path and the most of it to read.
    pub fn modules(&self) -> Vec<(HandlerId, PathBuf, u64)> {
        self.order
            .iter()
            .map(|id| {
                let p = &self.slots[id].plan;
                (id.clone(), p.module.clone(), p.limits.module_bytes())
            })
            .collect()
    }

    /// Swaps `module` in for `handlers` (at a transaction boundary: the new
    /// instance takes over the committed state). A handler whose new
    /// instance cannot be created keeps its previous version.
    pub fn reloaded(&mut self, handlers: &[HandlerId], module: &Module) {
        for id in handlers {
            let _ = self.swap(id, module);
        }
    }

    /// Swaps `module` in for handler `id`, logged and counted; the error
    /// says why the previous version keeps serving.
    fn swap(&mut self, id: &HandlerId, module: &Module) -> Result<(), String> {
        let Some(slot) = self.slots.get_mut(id) else {
            return Err(format!("no handler `{id}`"));
        };
        match slot.instantiate(&self.runtime, module) {
            Ok(mut fresh) => {
                fresh.replace_state(std::mem::take(slot.state()));
                slot.instance = Some(fresh);
                slot.module = module.clone();
                slot.counters.reloads.inc();
                // A suspended handler's new version is tried at once.
                slot.breaker.cool_down_now(Instant::now());
                tracing::info!(handler = %slot.plan.name, module = %module.path(), "handler reloaded: the new version handles the next transaction");
                Ok(())
            }
            Err(e) => {
                tracing::error!(handler = %slot.plan.name, "reload refused, the previous version keeps serving: {e:#}");
                slot.counters.reload_failures.inc();
                Err(format!("{e:#}"))
            }
        }
    }

    /// The handler named `name` (names are unique across tenants).
    pub fn find(&self, name: &str) -> Option<HandlerId> {
        self.order.iter().find(|id| id.name() == name).cloned()
    }

    /// The handler whose [`HandlerId::key`] is `key`.
    pub fn find_key(&self, key: &str) -> Option<HandlerId> {
        self.order.iter().find(|id| id.key() == key).cloned()
    }

    /// Reads handler `id`'s module file again, compiles it and swaps it in
    /// now, as a hot reload would (call at a transaction boundary). The
    /// error says why the previous version keeps serving.
    pub fn reload_now(&mut self, id: &HandlerId) -> Result<String, String> {
        let (path, max_bytes) = match self.slots.get(id) {
            Some(slot) => (slot.plan.module.clone(), slot.plan.limits.module_bytes()),
            None => return Err(format!("no handler `{id}`")),
        };
        match self.runtime.load(&path, max_bytes) {
            Ok(module) => {
                self.swap(id, &module)?;
                Ok(module.path().to_owned())
            }
            Err(e) => {
                self.reload_failed(std::slice::from_ref(id), &e);
                Err(e.to_string())
            }
        }
    }

    /// Handler `id`'s state as of the last change it handled.
    pub fn state_of(&mut self, id: &HandlerId) -> Option<&mut StateOverlay> {
        self.slots.get_mut(id).map(HandlerSlot::state)
    }

    /// `handlers`' changed module file was refused.
    pub fn reload_failed(&self, handlers: &[HandlerId], error: &LoadError) {
        for id in handlers {
            let Some(slot) = self.slots.get(id) else { continue };
            tracing::error!(handler = %slot.plan.name, "reload refused, the previous version keeps serving: {error}");
            slot.counters.reload_failures.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_log_rate_allows_a_burst_then_the_rate_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut r = LogRate::new(10);
        for _ in 0..100 {
            assert_eq!(r.take(t0), Take::Pass, "a burst of ten seconds' worth");
        }
        assert_eq!(r.take(t0), Take::Drop { first: true });
        assert_eq!(r.take(t0), Take::Drop { first: false });
        // A tenth of a second later, one line's worth came back: it is
        // logged, and the run of drops goes on (reported once).
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(r.take(t1), Take::Pass);
        assert_eq!(r.take(t1), Take::Drop { first: false });
        // A second without drops: the next line reports the run.
        let t2 = t1 + Duration::from_millis(1500);
        assert_eq!(r.take(t2), Take::PassAfter(3));
        // Idle for a minute: the bucket is full again, not fuller.
        let t3 = t2 + Duration::from_secs(60);
        for _ in 0..100 {
            assert_eq!(r.take(t3), Take::Pass);
        }
        assert_eq!(r.take(t3), Take::Drop { first: true });
    }

    #[test]
    fn a_rate_of_zero_drops_every_line() {
        let mut r = LogRate::new(0);
        let t0 = Instant::now();
        assert_eq!(r.take(t0), Take::Drop { first: true });
        assert_eq!(r.take(t0 + Duration::from_secs(100)), Take::Drop { first: false });
    }
}
