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

#[cfg(feature = "cluster")]
pub mod capture;
pub mod check;
pub mod inspect;
pub mod lane;
pub mod new;
pub mod replay;
pub mod reread;
pub mod run;
pub mod shapes;
pub mod snapshot;
pub mod state;
pub mod test;
pub mod trial;
#[cfg(feature = "cluster")]
pub mod work;

use crate::config::Plan;
use crate::decode::gtid::GtidState;
use crate::decode::{Decoder, DecoderOptions};
use crate::pipeline::Pipeline;
use crate::status::LiveStatus;
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

/// Starts the HTTP server of `plan`'s `[http]`, if it has one, reading
/// `pipeline`'s metrics and status and sending it admin commands. Returns
/// the status slot the server reads (`None` without `[http]`).
/// Which tenant each of `plan`'s handlers belongs to.
pub(crate) fn roster_of(plan: &Plan) -> crate::handler_id::Roster {
    crate::handler_id::Roster::of(plan.handlers.iter().map(|h| (h.name.clone(), h.tenant.clone())))
}

/// The file in the state directory that holds the address a run's HTTP
/// server listens on.
pub const HTTP_ADDR_FILE: &str = "http.addr";

pub(crate) fn serve_http(
    plan: &Plan,
    pipeline: &mut Pipeline,
    replay: bool,
    deploy: Option<crate::deploy::DeploySender>,
    roster: crate::handler_id::Roster,
) -> anyhow::Result<Option<LiveStatus>> {
    let Some(http) = &plan.http else { return Ok(None) };
    let status = LiveStatus::new();
    pipeline.publish_status(status.clone());
    #[cfg(feature = "http-server")]
    {
        let observed = crate::http::Observed {
            registry: pipeline.registry().clone(),
            status: status.clone(),
            control: Some(pipeline.accept_control()),
            replay,
            deploy,
            roster,
        };
        let server = crate::http::HttpServer::start(http, observed)?;
        // Where it listens (the port chosen, for port 0), for the commands
        // that ask this run: `rowhook snapshot --table`.
        let _ = std::fs::create_dir_all(&plan.state.path);
        if let Err(e) = crate::status::replace_file(
            &plan.state.path.join(HTTP_ADDR_FILE),
            server.addr().to_string().as_bytes(),
            false,
        ) {
            tracing::warn!("writing {}: {e}", plan.state.path.join(HTTP_ADDR_FILE).display());
        }
        Ok(Some(status))
    }
    #[cfg(not(feature = "http-server"))]
    {
        let _ = (replay, deploy, roster);
        anyhow::bail!(
            "{}: [http] listen = \"{}\" is configured, but this build of rowhook has no HTTP server: build it with the `http-server` feature, or remove [http]",
            plan.file.display(),
            http.listen
        )
    }
}

/// After a run that failed with `http` serving: keeps the process (and the
/// server, whose `/readyz` now says why) up until a stop is requested, so
/// that an operator or an orchestrator sees why it stopped. Without
/// `[http]`, or when stopping anyway, returns at once.
pub(crate) fn linger_after_failure(
    rt: &tokio::runtime::Runtime,
    http: Option<&LiveStatus>,
    pipeline: &mut Pipeline,
    error: &anyhow::Error,
    stop: &mut crate::driver::Stop,
) {
    let Some(status) = http else { return };
    if stop.requested() || error.is::<crate::driver::Interrupted>() {
        return;
    }
    status.set_stopped(&format!("{error:#}"));
    pipeline.write_status();
    tracing::error!(
        "the run stopped: {error:#}; the HTTP server keeps answering (/readyz says why) until SIGINT or SIGTERM"
    );
    rt.block_on(stop.requested_wait());
}

/// The live source of `source`, starting after `resume` if there is a
/// checkpoint, else where the config says; `what` names what goes on
/// from there in the log line.
pub(crate) fn live_after(
    source: &crate::config::SourcePlan,
    resume: Option<&Checkpoint>,
    what: &str,
) -> crate::source::live::LiveOptions {
    use crate::source::StartPosition;
    let start = match resume {
        Some(cp) if !cp.file.is_empty() => StartPosition::File {
            file: cp.file.clone(),
            pos: cp.pos,
        },
        Some(cp) => StartPosition::Gtid(cp.gtids.clone()),
        None => source.start.clone(),
    };
    match resume {
        Some(cp) => tracing::info!(file = %cp.file, pos = cp.pos, gtids = %cp.gtids, "{what} after the checkpoint"),
        None => tracing::info!(start = ?source.start, "no checkpoint yet: starting where the config says"),
    }
    crate::source::live::LiveOptions {
        url: source.url.clone(),
        server_id: source.server_id,
        start,
        heartbeat: source.heartbeat,
        allow_minimal_metadata: false,
        successor: false,
    }
}

/// The `[cluster]` of `plan`, checked to have handlers, for `command`; and
/// the one-thread runtime its NATS client runs on.
#[cfg(feature = "cluster")]
pub(crate) fn cluster_of<'a>(
    plan: &'a Plan,
    command: &str,
) -> anyhow::Result<(&'a crate::cluster::config::ClusterPlan, tokio::runtime::Runtime)> {
    let Some(cluster) = &plan.cluster else {
        anyhow::bail!(
            "{}: `rowhook {command}` needs a [cluster] section: nats = \"nats://HOST:4222\"",
            plan.file.display()
        );
    };
    anyhow::ensure!(
        !plan.handlers.is_empty(),
        "{}: no [[handlers]]: `rowhook {command}` takes the tables and handlers from them",
        plan.file.display()
    );
    let nats = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("rowhook-nats")
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the NATS runtime: {e}"))?;
    Ok((cluster, nats))
}

/// Where a binlog connection starts to read from `cp` on: its GTID state
/// where it names no file (a lane or held changes of a GTID start).
pub(crate) fn start_at(cp: &Checkpoint) -> crate::source::StartPosition {
    match cp.file.as_str() {
        "" => crate::source::StartPosition::Gtid(cp.gtids.clone()),
        file => crate::source::StartPosition::File {
            file: file.to_owned(),
            pos: cp.pos,
        },
    }
}

pub(crate) fn resume_gtids(decoder: &mut Decoder, cp: &Checkpoint) -> anyhow::Result<()> {
    if !cp.gtids.is_empty() {
        let state = GtidState::parse(&cp.gtids)
            .map_err(|e| anyhow::anyhow!("the checkpoint's GTID state `{}` is unreadable: {e}", cp.gtids))?;
        decoder.set_gtid_state(state);
    }
    Ok(())
}
