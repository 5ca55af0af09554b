//! `rowhook run` and `rowhook replay`: the configured handlers over a live
//! server or recorded binlog files.
//!
//! Handlers are called outside any async runtime: WASI's synchronous
//! bindings block on futures of their own, which cannot happen inside a
//! runtime's context. The drivers are therefore plain loops on the calling
//! thread that enter a private runtime only for I/O (reading the stream,
//! writing to sinks).

use std::path::PathBuf;

use crate::config::Plan;
use crate::decode::{Decoder, DecoderOptions, Flow, RawEvent};
use crate::pipeline::{Pipeline, Stats};
use crate::runtime::Runtime;
use crate::source::file::{BinlogFile, Next};
use crate::source::live::{LiveOptions, LiveSource};

fn decoder_for(plan: &Plan, file: &str) -> Decoder {
    let opts = DecoderOptions {
        require_names: true,
        tables: Pipeline::table_filter(plan),
        skip_statements: false,
    };
    Decoder::new(opts, file)
}

/// Feeds one event and flushes at commits and when the buffer is large.
fn step(
    rt: &tokio::runtime::Runtime,
    decoder: &mut Decoder,
    pipeline: &mut Pipeline,
    ev: RawEvent<'_>,
) -> anyhow::Result<()> {
    let flow = decoder.feed(ev, pipeline)?;
    if let Some(e) = pipeline.take_halt() {
        return Err(e);
    }
    debug_assert_eq!(flow, Flow::Continue);
    if pipeline.flush_due() {
        rt.block_on(pipeline.flush())?;
    }
    Ok(())
}

fn io_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the I/O runtime: {e}"))
}

/// Runs the handlers of `plan` over binlog `files`, in order. Call it
/// outside any async runtime.
pub fn replay(plan: &Plan, files: &[PathBuf]) -> anyhow::Result<Stats> {
    anyhow::ensure!(!files.is_empty(), "no binlog files given");
    let rt = io_runtime()?;
    let mut pipeline = rt.block_on(Pipeline::new(plan, Runtime::new()?))?;
    let mut decoder = decoder_for(plan, "");
    for path in files {
        let mut file = BinlogFile::open(path)?;
        decoder.set_file(file.name());
        loop {
            match file.next_event()? {
                Next::Event(ev) => step(&rt, &mut decoder, &mut pipeline, ev)?,
                Next::End { partial } => {
                    if let Some(at) = partial {
                        tracing::warn!(file = %path.display(), offset = at, "the file ends inside an event: stopped at the last whole event");
                    }
                    break;
                }
            }
        }
    }
    // Messages of a transaction whose commit is not in the files are not sent:
    // the transaction is not committed as far as these files tell.
    rt.block_on(pipeline.close())?;
    Ok(pipeline.stats().clone())
}

/// Runs the handlers of `plan` over the live server of its `[source]` until
/// interrupted (Ctrl-C / SIGINT). Call it outside any async runtime.
pub fn run(plan: &Plan) -> anyhow::Result<Stats> {
    let source = plan
        .source
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("{}: `rowhook run` needs a [source] section", plan.file.display()))?;
    let rt = io_runtime()?;
    let mut pipeline = rt.block_on(Pipeline::new(plan, Runtime::new()?))?;
    let opts = LiveOptions {
        url: source.url.clone(),
        server_id: source.server_id,
        start: source.start.clone(),
        heartbeat: source.heartbeat,
        allow_minimal_metadata: false,
    };
    let mut live = rt.block_on(LiveSource::open(&opts))?;
    let mut decoder = decoder_for(plan, "");
    decoder.set_gtid_state(live.start_gtids().clone());
    let _guard = rt.enter();
    let shutdown = tokio::spawn(async { tokio::signal::ctrl_c().await.ok() });
    drop(_guard);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let event = rt.block_on(async {
            tokio::select! {
                e = live.next_event() => e.map(Some),
                _ = &mut shutdown => Ok(None),
            }
        })?;
        let Some(Some(event)) = event else { break };
        let raw = live.raw(&event);
        let payload = raw.header.type_code == crate::decode::event::types::TRANSACTION_PAYLOAD;
        step(&rt, &mut decoder, &mut pipeline, raw)?;
        if payload {
            live.skip_payload_copies(decoder.payload_events());
        }
    }
    rt.block_on(pipeline.close())?;
    Ok(pipeline.stats().clone())
}
