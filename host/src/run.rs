//! `rowhook run` and `rowhook replay`: the configured handlers over a live
//! server or recorded binlog files.
//!
//! Both read through the one loop of [`crate::driver`], with the
//! [`Pipeline`] as its consumer. Handlers are called outside any async
//! runtime: WASI's synchronous bindings block on futures of their own, which
//! cannot happen inside a runtime's context; the loop enters a private
//! runtime only for I/O (reading the stream, writing to sinks).
//!
//! `run` keeps handler state and the resume position in the store under
//! `[state] path` and resumes there; `replay` does so only when asked
//! ([`ReplayOptions::checkpoint`]), so that replaying recorded files is
//! repeatable by default.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::Plan;
use crate::decode::gtid::GtidState;
use crate::decode::{DecodeError, Decoder, DecoderOptions};
use crate::driver::{Consumer, DriveOptions, Interrupted, Stop, drive, stop_on_signals};
use crate::pipeline::{Pipeline, Stats};
use crate::runtime::Runtime;
use crate::source::StartPosition;
use crate::source::file::{BinlogFiles, FileStart};
use crate::source::live::LiveOptions;
use crate::source::reconnect::{Resilient, RetryPolicy};
use crate::store::{Checkpoint, Store};

fn decoder_for(plan: &Plan, file: &str) -> Decoder {
    let opts = DecoderOptions {
        require_names: true,
        tables: Pipeline::table_filter(plan),
        skip_statements: false,
    };
    Decoder::new(opts, file)
}

impl Consumer for Pipeline {
    /// Flushes at commits and when the buffer is large; a flush waiting on a
    /// sink gives way to `stop` (with [`Interrupted`]). Reloads are applied
    /// between transactions.
    fn after_event(
        &mut self,
        rt: &tokio::runtime::Runtime,
        decoder: &Decoder,
        _: bool,
        stop: &mut Stop,
    ) -> anyhow::Result<()> {
        if let Some(e) = self.take_halt() {
            return Err(e);
        }
        if self.flush_due() {
            rt.block_on(async {
                tokio::select! {
                    r = self.flush() => r,
                    () = stop.requested_wait() => Err(Interrupted.into()),
                }
            })?;
        }
        if !decoder.in_transaction() {
            self.apply_reloads();
        }
        Ok(())
    }

    /// A handler that halted says why better than the decoder's error does.
    fn decode_failed(&mut self, e: DecodeError) -> anyhow::Error {
        self.take_halt().unwrap_or_else(|| e.into())
    }

    fn abandon_transaction(&mut self) {
        Pipeline::abandon_transaction(self);
    }

    fn next_tick(&self) -> Option<tokio::time::Instant> {
        Pipeline::next_tick(self)
    }

    fn tick(&mut self, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
        rt.block_on(Pipeline::tick(self))
    }
}

/// How often `run` rewrites the status file when no checkpoint did.
const STATUS_EVERY: Duration = Duration::from_secs(1);

fn io_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the I/O runtime: {e}"))
}

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
    let rt = io_runtime()?;
    let mut pipeline = rt.block_on(Pipeline::new(plan, Runtime::new()?))?;
    pipeline.watch_modules()?;
    let mut decoder = decoder_for(plan, "");
    let resume = match opts.checkpoint {
        true => pipeline.attach_store(Store::open(&plan.state.path)?)?,
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

fn resume_gtids(decoder: &mut Decoder, cp: &Checkpoint) -> anyhow::Result<()> {
    if !cp.gtids.is_empty() {
        let state = GtidState::parse(&cp.gtids)
            .map_err(|e| anyhow::anyhow!("the checkpoint's GTID state `{}` is unreadable: {e}", cp.gtids))?;
        decoder.set_gtid_state(state);
    }
    Ok(())
}

/// Runs the handlers of `plan` over the live server of its `[source]` until
/// stopped by SIGINT (Ctrl-C) or SIGTERM. Call it outside any async runtime.
pub fn run(plan: &Plan) -> anyhow::Result<Stats> {
    let source = plan
        .source
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("{}: `rowhook run` needs a [source] section", plan.file.display()))?;
    let rt = io_runtime()?;
    let mut pipeline = rt.block_on(Pipeline::new(plan, Runtime::new()?))?;
    pipeline.watch_modules()?;
    let resume = pipeline.attach_store(Store::open(&plan.state.path)?)?;
    let start = match &resume {
        Some(cp) if !cp.file.is_empty() => StartPosition::File {
            file: cp.file.clone(),
            pos: cp.pos,
        },
        Some(cp) => StartPosition::Gtid(cp.gtids.clone()),
        None => source.start.clone(),
    };
    match &resume {
        Some(cp) => tracing::info!(file = %cp.file, pos = cp.pos, gtids = %cp.gtids, "resuming after the checkpoint"),
        None => tracing::info!(start = ?source.start, "no checkpoint yet: starting where the config says"),
    }
    let opts = LiveOptions {
        url: source.url.clone(),
        server_id: source.server_id,
        start,
        heartbeat: source.heartbeat,
        allow_minimal_metadata: false,
    };
    // Lost connections resume at the last commit, forever, backing off to
    // 10 s; a failing first connection, bad grants or settings, and purged
    // positions are errors.
    let mut live = rt.block_on(Resilient::open(opts, RetryPolicy::default()))?;
    let mut decoder = decoder_for(plan, "");
    decoder.set_gtid_state(live.start_gtids().clone());
    if let Some(cp) = &resume {
        resume_gtids(&mut decoder, cp)?;
    }
    pipeline.attach_source(live.stats());
    pipeline.write_status();
    pipeline.write_status_every(STATUS_EVERY);
    let mut stop = stop_on_signals(&rt);
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
    result.and(closed)?;
    Ok(pipeline.stats())
}
