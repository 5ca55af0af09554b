//! `rowhook run`: the configured handlers over the live server of the
//! config's `[source]`, keeping handler state and the resume position in the
//! store under `[state] path` and resuming there, until SIGINT or SIGTERM.

use std::time::Duration;

use super::snapshot::Ask;
use super::{decoder_for, io_runtime, linger_after_failure, resume_gtids, serve_http};
use crate::config::Plan;
use crate::deploy::Site;
use crate::driver::{DriveOptions, drive, stop_on_signals};
use crate::pipeline::Pipeline;
use crate::runtime::HandlerRuntime;
use crate::snapshot::reader::ReaderOptions;
use crate::snapshot::{Progress, TableProgress};
use crate::source::reconnect::{Resilient, RetryPolicy};
use crate::status::Stats;
use crate::store::StateStore;

/// How often `run` rewrites the status file when no checkpoint did.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Runs the handlers of `plan` over the live server of its `[source]` until
/// stopped by SIGINT (Ctrl-C) or SIGTERM. Call it outside any async runtime.
pub fn run(plan: &Plan) -> anyhow::Result<Stats> {
    run_with(plan, None)
}

/// [`run`], reading the snapshot `ask` says first (`rowhook snapshot`).
pub fn run_with(plan: &Plan, ask: Option<Ask>) -> anyhow::Result<Stats> {
    let source = plan
        .source
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("{}: `rowhook run` needs a [source] section", plan.file.display()))?;
    let rt = std::sync::Arc::new(io_runtime()?);
    let runtime = HandlerRuntime::new()?.with_compile_cache(plan.state.compile_cache_dir());
    let interrupt = runtime.interrupt();
    // With [deploy], the run starts with every tenant's accepted handlers.
    let (site, deployed) = match plan.deploy {
        Some(_) => {
            let (site, full) = Site::open(plan, &runtime, super::check::try_deployed)?;
            (Some(site), Some(full))
        }
        None => (None, None),
    };
    let plan = deployed.as_ref().unwrap_or(plan);
    let mut pipeline = rt.block_on(Pipeline::new(plan, runtime.clone()))?;
    pipeline.watch_modules()?;
    let store = StateStore::open(&plan.state.path)?;
    let shared = store.share();
    let left = store.snapshot()?;
    let resume = pipeline.attach_store(store)?;
    start_snapshots(&rt, plan, &mut pipeline, resume.is_none(), left, ask)?;
    let opts = super::live_after(source, resume.as_ref(), "resuming");
    // Lost connections resume at the last commit, forever, backing off to
    // 10 s; a failing first connection, bad grants or settings, and purged
    // positions are errors.
    // With tenants, a lane that takes more than its share, or catches up,
    // reads on a connection of its own.
    let reread: std::sync::Arc<dyn crate::pipeline::reread::RereadStarter> =
        std::sync::Arc::new(super::reread::LiveReread::new(opts.clone(), plan.tenants.len() as u32));
    pipeline.reread_with(reread.clone());
    pipeline.lanes_apart(Box::new(super::lane::LiveLanes {
        reread,
        live: opts.clone(),
        tenants: plan.tenants.keys().cloned().collect(),
        runtime: runtime.clone(),
        store: shared,
        registry: pipeline.registry().clone(),
    }));
    let mut live = rt.block_on(Resilient::open(opts, RetryPolicy::default()))?;
    let mut decoder = decoder_for(plan, "");
    decoder.set_gtid_state(live.start_gtids().clone());
    if let Some(cp) = &resume {
        resume_gtids(&mut decoder, cp)?;
    }
    pipeline.attach_source(live.stats());
    let roster = super::roster_of(plan);
    let deploy = match site {
        Some(site) => Some(site.start(runtime, pipeline.accept_deployments(), roster.clone())?),
        None => None,
    };
    let http = serve_http(plan, &mut pipeline, false, deploy, roster)?;
    if http.is_some() {
        live.watch_lag_bytes(pipeline.registry())?;
    }
    pipeline.write_status();
    pipeline.write_status_every(STATUS_EVERY);
    // A stop cuts a handler call in progress too: it does not wait for the
    // call's deadline.
    let mut stop = stop_on_signals(move || interrupt.request())?;
    pipeline.flush_inside_events(rt.clone(), stop.clone());
    let result = drive(
        &rt,
        &mut live,
        &mut decoder,
        &mut pipeline,
        &mut stop,
        DriveOptions::default(),
    );
    // Acknowledged transactions are checkpointed even when stopping on an
    // error; the one in progress is handled again at the next start.
    let closed = rt.block_on(pipeline.close());
    let result = result.and(closed);
    if let Err(e) = &result {
        linger_after_failure(&rt, http.as_ref(), &mut pipeline, e, &mut stop);
    }
    result?;
    Ok(pipeline.stats())
}

/// Queues the snapshots of this run: what a stopped run left, then an
/// initial snapshot on a first start (`[source] snapshot = "initial"`, or
/// `rowhook snapshot` without `--table`), then the table `ask` names.
fn start_snapshots(
    rt: &tokio::runtime::Runtime,
    plan: &Plan,
    pipeline: &mut Pipeline,
    first_start: bool,
    left: Progress,
    ask: Option<Ask>,
) -> anyhow::Result<()> {
    let Some(source) = &plan.source else { return Ok(()) };
    let snapshot = &source.snapshot;
    pipeline.snapshots_with(ReaderOptions {
        url: snapshot.url.clone(),
        chunk_rows: snapshot.chunk_rows,
        rows_per_second: snapshot.rows_per_second,
    });
    if !left.is_empty() {
        tracing::info!(
            tables = left.tables.len(),
            "going on with the snapshot the last run left"
        );
        pipeline.start_snapshot(rt, left, false)?;
    }
    let initial = match &ask {
        Some(Ask::Initial) if !first_start => anyhow::bail!(
            "the store at {} has a checkpoint: an initial snapshot is for a first start. \
             To read a table again, name it with --table DB.TABLE",
            plan.state.path.display()
        ),
        Some(Ask::Initial) => true,
        _ => first_start && snapshot.initial,
    };
    if initial {
        let tables = rt.block_on(async {
            let mut conn = snapshot.url.connect().await?;
            crate::cli::snapshot::subscribed(&mut conn, plan).await
        })?;
        if tables.is_empty() {
            tracing::warn!("initial snapshot: no handler takes `snapshot` changes of an existing table");
        }
        pipeline.start_snapshot(rt, Progress { tables }, true)?;
    }
    if let Some(Ask::Table { table, filter }) = ask {
        let Some((db, name)) = table.split_once('.').filter(|(d, t)| !d.is_empty() && !t.is_empty()) else {
            anyhow::bail!("`{table}` is not DB.TABLE: name one table");
        };
        pipeline.start_snapshot(
            rt,
            Progress {
                tables: vec![TableProgress::new(db, name, filter)],
            },
            true,
        )?;
    }
    Ok(())
}
