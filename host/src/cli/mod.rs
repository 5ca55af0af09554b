//! The commands of the `rowhook` binary, one module each; `main.rs` parses
//! the arguments and calls them.
//!
//! - [`run`]: `rowhook run`, the handlers over a live server, resuming at the checkpoint.
//! - [`replay`]: `rowhook replay`, the handlers over recorded binlog files.
//! - [`inspect`]: `rowhook inspect`, row changes as JSON lines, no handlers.
//! - [`check`]: `rowhook check`, is a server ready and will a config run.
//! - [`state`]: `rowhook state`, what the store holds, and the operator's changes to it.
//!
//! `run` and `replay` call handlers outside any async runtime: WASI's
//! synchronous bindings block on futures of their own, which cannot happen
//! inside a runtime's context. They read through the one loop of
//! [`crate::driver`], with the [`crate::pipeline::Pipeline`] as its
//! consumer, and enter a private runtime only for I/O (reading the stream,
//! writing to sinks).

pub mod check;
pub mod inspect;
pub mod new;
pub mod replay;
pub mod run;
pub mod shapes;
pub mod state;
pub mod test;
pub mod trial;

use crate::config::Plan;
use crate::decode::gtid::GtidState;
use crate::decode::{Decoder, DecoderOptions};
use crate::pipeline::Pipeline;
use crate::store::Checkpoint;

pub(crate) fn decoder_for(plan: &Plan, file: &str) -> Decoder {
    let opts = DecoderOptions {
        require_names: true,
        tables: Pipeline::table_filter(plan),
        skip_statements: false,
    };
    Decoder::new(opts, file)
}

pub(crate) fn io_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the I/O runtime: {e}"))
}

pub(crate) fn resume_gtids(decoder: &mut Decoder, cp: &Checkpoint) -> anyhow::Result<()> {
    if !cp.gtids.is_empty() {
        let state = GtidState::parse(&cp.gtids)
            .map_err(|e| anyhow::anyhow!("the checkpoint's GTID state `{}` is unreadable: {e}", cp.gtids))?;
        decoder.set_gtid_state(state);
    }
    Ok(())
}
