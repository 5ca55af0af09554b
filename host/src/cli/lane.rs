//! `rowhook run`'s lanes on connections of their own (see
//! [`crate::pipeline::lanes`]): each one a thread with its own runtime,
//! pipeline and binlog connection, reading from the lane's position until
//! it has caught up with the shared loop.

use std::sync::Arc;

use super::{decoder_for, io_runtime, resume_gtids};
use crate::driver::{DriveOptions, Ended, drive};
use crate::pipeline::Pipeline;
use crate::pipeline::lanes::{CaughtUp, LaneEnd, LaneRun, LaneStarter};
use crate::pipeline::reread::RereadStarter;
use crate::runtime::HandlerRuntime;
use crate::source::live::LiveOptions;
use crate::source::reconnect::{Resilient, RetryPolicy};
use crate::store::{Checkpoint, StateStore};
use crate::telemetry::Registry;

/// Starts lanes on the live server of `rowhook run`.
pub struct LiveLanes {
    /// Reads held changes from the binlog again.
    pub reread: Arc<dyn RereadStarter>,
    /// The main connection's options: a lane's differ in server id and start.
    pub live: LiveOptions,
    /// The tenants, in the order that numbers their server ids.
    pub tenants: Vec<String>,
    /// Where handlers are instantiated.
    pub runtime: HandlerRuntime,
    /// The store, shared.
    pub store: StateStore,
    /// The main pipeline's registry: the lanes' handlers and sinks count there.
    pub registry: Registry,
}

impl LiveLanes {
    /// The server id of `tenant`'s lane: the main one's plus one plus the
    /// tenant's place among the declared tenants.
    fn server_id(&self, tenant: &str) -> anyhow::Result<u32> {
        let place = self
            .tenants
            .iter()
            .position(|t| t == tenant)
            .unwrap_or(self.tenants.len());
        (self.live.server_id)
            .checked_add(1 + place as u32)
            .ok_or_else(|| anyhow::anyhow!("[source] server_id is too large to number the tenants' lanes after it"))
    }
}

impl LaneStarter for LiveLanes {
    fn start(&self, run: LaneRun) -> anyhow::Result<std::thread::JoinHandle<()>> {
        let from = run.place.get();
        let live = LiveOptions {
            server_id: self.server_id(&run.tenant)?,
            start: super::start_at(&from),
            ..self.live.clone()
        };
        let runtime = self.runtime.clone();
        let reread = self.reread.clone();
        let store = self.store.share();
        let registry = self.registry.clone();
        let name = format!("rowhook-lane-{}", run.tenant);
        std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || {
                let link = run.link.clone();
                let place = run.place.clone();
                let outcome = match lane(run, live, runtime, store, registry, reread, &from) {
                    Ok(end) => end,
                    Err(e) => LaneEnd::Failed(e),
                };
                link.ended(place.get(), outcome);
            })
            .map_err(|e| anyhow::anyhow!("starting the lane's thread: {e}"))
    }
}

/// Runs lane `run` from `from` until it caught up with the shared loop, is
/// stopped, or fails; its last checkpoint is committed either way.
fn lane(
    run: LaneRun,
    live: LiveOptions,
    runtime: HandlerRuntime,
    store: StateStore,
    registry: Registry,
    reread: Arc<dyn RereadStarter>,
    from: &Checkpoint,
) -> anyhow::Result<LaneEnd> {
    let rt = Arc::new(io_runtime()?);
    let mut stop = run.link.stop();
    let plan = run.plan.clone();
    let mut pipeline = rt.block_on(Pipeline::for_lane(run, runtime, registry))?;
    pipeline.watch_modules()?;
    pipeline.reread_with(reread);
    pipeline.attach_store(store)?;
    let mut source = rt.block_on(Resilient::open(live, RetryPolicy::default()))?;
    let mut decoder = decoder_for(&plan, "");
    decoder.set_gtid_state(source.start_gtids().clone());
    resume_gtids(&mut decoder, from)?;
    pipeline.flush_inside_events(rt.clone(), stop.clone());
    let result = drive(
        &rt,
        &mut source,
        &mut decoder,
        &mut pipeline,
        &mut stop,
        DriveOptions::default(),
    );
    let closed = rt.block_on(pipeline.close());
    let end = match result {
        Err(e) if e.is::<CaughtUp>() => LaneEnd::Joined,
        Ok(Ended::Interrupted) => LaneEnd::Stopped,
        Ok(ended) => LaneEnd::Failed(anyhow::anyhow!("the stream ended ({ended:?})")),
        Err(e) => LaneEnd::Failed(e),
    };
    Ok(match closed {
        Err(e) => LaneEnd::Failed(e),
        Ok(()) => end,
    })
}
