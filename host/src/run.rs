//! `rowhook run` and `rowhook replay`: the configured handlers over a live
//! server or recorded binlog files.
//!
//! Handlers are called outside any async runtime: WASI's synchronous
//! bindings block on futures of their own, which cannot happen inside a
//! runtime's context. The drivers are therefore plain loops on the calling
//! thread that enter a private runtime only for I/O (reading the stream,
//! writing to sinks).
//!
//! `run` keeps handler state and the resume position in the store under
//! `[state] path` and resumes there; `replay` does so only when asked
//! ([`ReplayOptions::checkpoint`]), so that replaying recorded files is
//! repeatable by default.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::config::Plan;
use crate::decode::gtid::GtidState;
use crate::decode::{Decoder, DecoderOptions, Flow, RawEvent};
use crate::pipeline::{Pipeline, Stats};
use crate::runtime::Runtime;
use crate::source::StartPosition;
use crate::source::file::{BinlogFile, Next};
use crate::source::live::LiveOptions;
use crate::source::reconnect::{Resilient, RetryPolicy, Step};
use crate::store::{Checkpoint, Store};

fn decoder_for(plan: &Plan, file: &str) -> Decoder {
    let opts = DecoderOptions {
        require_names: true,
        tables: Pipeline::table_filter(plan),
        skip_statements: false,
    };
    Decoder::new(opts, file)
}

/// Feeds one event and flushes at commits and when the buffer is large. A
/// flush waiting on a sink gives way to `stop` (with [`Interrupted`]).
fn step(
    rt: &tokio::runtime::Runtime,
    decoder: &mut Decoder,
    pipeline: &mut Pipeline,
    ev: RawEvent<'_>,
    stop: Option<&mut watch::Receiver<bool>>,
) -> anyhow::Result<()> {
    let flow = decoder.feed(ev, pipeline)?;
    if let Some(e) = pipeline.take_halt() {
        return Err(e);
    }
    debug_assert_eq!(flow, Flow::Continue);
    if pipeline.flush_due() {
        match stop {
            Some(stop) => rt.block_on(async {
                tokio::select! {
                    r = pipeline.flush() => r,
                    _ = stop.wait_for(|stop| *stop) => Err(Interrupted.into()),
                }
            })?,
            None => rt.block_on(pipeline.flush())?,
        }
    }
    if !decoder.in_transaction() {
        pipeline.apply_reloads();
    }
    Ok(())
}

/// A flush given up for a stop request: the transaction was not acknowledged.
#[derive(Debug, thiserror::Error)]
#[error("stopped while a sink was being written")]
struct Interrupted;

/// How often `run` rewrites the status file when no checkpoint did.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Turns the first SIGINT or SIGTERM into a stop request; the second exits
/// at once (the store is crash-safe: the next start resumes at the last
/// checkpoint).
fn stop_on_signals(rt: &tokio::runtime::Runtime) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    rt.spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut signals = 0;
        loop {
            tokio::select! {
                r = tokio::signal::ctrl_c() => if r.is_err() { return },
                Some(()) = async {
                    match term.as_mut() {
                        Some(t) => t.recv().await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            signals += 1;
            if signals == 1 {
                tracing::info!("stopping after the acknowledged transactions (signal again to exit at once)");
                tx.send_replace(true);
            } else {
                tracing::warn!("exiting at once: the next start resumes at the last checkpoint");
                std::process::exit(130);
            }
        }
    });
    rx
}

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
    let mut first = 0;
    let mut seek_to = None;
    let resume = match opts.checkpoint {
        true => pipeline.attach_store(Store::open(&plan.state.path)?)?,
        false => None,
    };
    if let Some(cp) = resume {
        first = files
            .iter()
            .position(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == cp.file))
            .with_context(|| {
                format!(
                    "the checkpoint in {} is at {}:{}, and {} is not among the files given: pass it and the files after it, or move the start with `rowhook state set-start`",
                    plan.state.path.display(),
                    cp.file,
                    cp.pos,
                    cp.file
                )
            })?;
        seek_to = Some(cp.pos);
        resume_gtids(&mut decoder, &cp)?;
        tracing::info!(file = %cp.file, pos = cp.pos, "resuming after the checkpoint");
    }
    let result = (|| {
        for path in &files[first..] {
            let mut file = BinlogFile::open(path)?;
            decoder.set_file(file.name());
            if let Some(pos) = seek_to.take() {
                // The format description comes first, wherever we resume.
                if let Next::Event(ev) = file.next_event()? {
                    step(&rt, &mut decoder, &mut pipeline, ev, None)?;
                }
                file.seek(pos)?;
            }
            loop {
                match file.next_event()? {
                    Next::Event(ev) => step(&rt, &mut decoder, &mut pipeline, ev, None)?,
                    Next::End { partial } => {
                        if let Some(at) = partial {
                            tracing::warn!(file = %path.display(), offset = at, "the file ends inside an event: stopped at the last whole event");
                        }
                        break;
                    }
                }
            }
        }
        Ok(())
    })();
    // Messages of a transaction whose commit is not in the files are not sent:
    // the transaction is not committed as far as these files tell. After a
    // failure, what was acknowledged before it is still checkpointed.
    let closed = rt.block_on(pipeline.close());
    result.and(closed)?;
    Ok(pipeline.stats().clone())
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
    let mut stop = stop_on_signals(&rt);
    let mut next_status = tokio::time::Instant::now() + STATUS_EVERY;
    let result = loop {
        let due = pipeline.checkpoint_due_in();
        let next = rt.block_on(async {
            tokio::select! {
                // Cancel-safe: a timer may win mid-reconnect.
                e = live.next_event() => e.map(Wake::Event).map_err(anyhow::Error::from),
                _ = stop.wait_for(|stop| *stop) => Ok(Wake::Stop),
                _ = tokio::time::sleep(due.unwrap_or_default()), if due.is_some() => Ok(Wake::Checkpoint),
                _ = tokio::time::sleep_until(next_status) => Ok(Wake::Status),
            }
        });
        let event = match next {
            Ok(Wake::Event(Step::Event(e))) => e,
            Ok(Wake::Event(Step::Resumed(_))) => {
                // The new stream starts at the last commit: the open
                // transaction comes again from its first event.
                decoder.abandon_transaction();
                pipeline.abandon_transaction();
                continue;
            }
            Ok(Wake::Stop) => break Ok(()),
            Ok(Wake::Checkpoint) => match rt.block_on(pipeline.checkpoint()) {
                Ok(()) => continue,
                Err(e) => break Err(e),
            },
            Ok(Wake::Status) => {
                // Also when the stream is idle: an interval fsync is due
                // whether or not another batch comes.
                rt.block_on(pipeline.check_sinks());
                pipeline.write_status();
                next_status = tokio::time::Instant::now() + STATUS_EVERY;
                continue;
            }
            Err(e) => break Err(e),
        };
        let raw = live.raw(&event);
        let payload = raw.header.type_code == crate::decode::event::types::TRANSACTION_PAYLOAD;
        let commits = pipeline.stats().commits;
        match step(&rt, &mut decoder, &mut pipeline, raw, Some(&mut stop)) {
            Ok(()) => {}
            Err(e) if e.is::<Interrupted>() => {
                // Its messages may be partly written: it is handled again,
                // with the same ids, at the next start.
                decoder.abandon_transaction();
                pipeline.abandon_transaction();
                break Ok(());
            }
            Err(e) => break Err(e),
        }
        if pipeline.stats().commits != commits {
            live.committed(decoder.resume_position());
        }
        if payload {
            live.skip_payload_copies(decoder.payload_events());
        }
    };
    // Acknowledged transactions are checkpointed even when stopping on an
    // error; the one in progress is handled again at the next start.
    let closed = rt.block_on(pipeline.close());
    result.and(closed)?;
    Ok(pipeline.stats().clone())
}

/// What the live loop woke up for.
enum Wake {
    Event(Step),
    Stop,
    Checkpoint,
    Status,
}
