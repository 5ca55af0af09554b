//! `rowhook replay`: the configured handlers over recorded binlog files.
//!
//! State is kept in memory only unless asked ([`ReplayOptions::checkpoint`]),
//! so that replaying recorded files is repeatable by default; with it, state
//! and the position are kept in the store under `[state] path` as `run`
//! keeps them, and a replay resumes after the last checkpoint.

use std::path::PathBuf;

use anyhow::Context as _;

use super::{decoder_for, io_runtime, resume_gtids, serve_http};
use crate::config::Plan;
use crate::driver::{DriveOptions, Stop, drive};
use crate::pipeline::Pipeline;
use crate::runtime::HandlerRuntime;
use crate::source::file::{BinlogFiles, FileStart};
use crate::status::Stats;
use crate::store::StateStore;

/// How often a replay serving `[http]` refreshes the status it serves.
const STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Options of [`replay_with`].
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Keep handler state and the position in the store under `[state]
    /// path`, as `run` does: state carries over between replays, and a
    /// replay resumes after the last checkpoint (its file must be among the
    /// files given).
    pub checkpoint: bool,
}

/// Runs the handlers of `plan` over binlog `files`, in order, with state in
/// memory only. Call it outside any async runtime.
pub fn replay(plan: &Plan, files: &[PathBuf]) -> anyhow::Result<Stats> {
    replay_with(plan, files, &ReplayOptions::default())
}

/// Like [`replay`], with options.
pub fn replay_with(plan: &Plan, files: &[PathBuf], opts: &ReplayOptions) -> anyhow::Result<Stats> {
    anyhow::ensure!(!files.is_empty(), "no binlog files given");
    let rt = std::sync::Arc::new(io_runtime()?);
    let mut pipeline = rt.block_on(Pipeline::new(
        plan,
        HandlerRuntime::new()?.with_compile_cache(plan.state.compile_cache_dir()),
    ))?;
    pipeline.watch_modules()?;
    let mut decoder = decoder_for(plan, "");
    let resume = match opts.checkpoint {
        true => {
            pipeline.reread_with(std::sync::Arc::new(super::reread::FileReread { files: files.to_vec() }));
            pipeline.attach_store(StateStore::open(&plan.state.path)?)?
        }
        false => None,
    };
    let (first, start) = match &resume {
        Some(cp) => {
            let first = BinlogFiles::position_of(files, &cp.file).with_context(|| {
                format!(
                    "the checkpoint in {} is at {}:{}, and {} is not among the files given: pass it and the files after it, or move the start with `rowhook state set-start`",
                    plan.state.path.display(),
                    cp.file,
                    cp.pos,
                    cp.file
                )
            })?;
            resume_gtids(&mut decoder, cp)?;
            tracing::info!(file = %cp.file, pos = cp.pos, "resuming after the checkpoint");
            (first, Some(FileStart::At(cp.pos)))
        }
        None => (0, None),
    };
    let mut source = BinlogFiles::new(files, first, start, false)?;
    if serve_http(plan, &mut pipeline, true, None, super::roster_of(plan))?.is_some() {
        pipeline.write_status();
        pipeline.write_status_every(STATUS_EVERY);
    }
    pipeline.flush_inside_events(rt.clone(), Stop::never());
    let result = drive(
        &rt,
        &mut source,
        &mut decoder,
        &mut pipeline,
        &mut Stop::never(),
        DriveOptions::default(),
    );
    // Messages of a transaction whose commit is not in the files are not sent:
    // the transaction is not committed as far as these files tell. After a
    // failure, what was acknowledged before it is still checkpointed.
    let closed = rt.block_on(pipeline.close());
    result.and(closed)?;
    Ok(pipeline.stats())
}
