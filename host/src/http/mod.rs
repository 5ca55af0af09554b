//! The HTTP server for operators (`[http]`): `/metrics` (Prometheus text
//! or OpenMetrics), `/healthz`, `/readyz`, `/status`, `/events` (the
//! status as Server-Sent Events) and the admin API under `/admin/`
//! ([`routes`] has the table).
//!
//! The server runs on a thread of its own with its own current-thread
//! tokio runtime, so that a slow scrape never slows the pipeline and a
//! pipeline blocked on a sink never stops the server answering. It reads
//! only what other threads may read without slowing the per-change path:
//! the metrics [`Registry`] (atomics, and a lock that registration and
//! reads take, never a count), the [`LiveStatus`] slot the pipeline
//! replaces about once a second, and it talks to the pipeline only through
//! the [`ControlSender`] channel, which the pipeline polls at transaction
//! boundaries.

mod routes;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::config::HttpPlan;
use crate::pipeline::control::ControlSender;
use crate::status::LiveStatus;
use crate::telemetry::Registry;

/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server reads and whom it asks.
pub struct Observed {
    /// The run's metrics.
    pub registry: Registry,
    /// The run's status report and whether it stopped.
    pub status: LiveStatus,
    /// The pipeline's command channel (the admin API); `None`: admin calls
    /// that need the pipeline answer 503.
    pub control: Option<ControlSender>,
    /// Whether this is a replay (no live source to be connected to).
    pub replay: bool,
    /// Where handler deployments go (`[deploy]`); `None`: deploying is off.
    pub deploy: Option<crate::deploy::DeploySender>,
    /// Which tenant each running handler belongs to.
    pub roster: crate::handler_id::Roster,
}

/// A running server; it serves until the process ends.
pub struct HttpServer {
    addr: SocketAddr,
}

impl HttpServer {
    /// Binds `plan.listen` (an error if it cannot) and serves on a thread
    /// of its own.
    pub fn start(plan: &HttpPlan, observed: Observed) -> anyhow::Result<HttpServer> {
        let listener = std::net::TcpListener::bind(plan.listen)
            .map_err(|e| anyhow::anyhow!("[http] listen = \"{}\": cannot listen there: {e}", plan.listen))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| anyhow::anyhow!("starting the HTTP server's runtime: {e}"))?;
        crate::telemetry::register_process_metrics(&observed.registry);
        let state = Arc::new(routes::Server {
            observed,
            token: plan.token.clone(),
            tenants: plan.tenants.clone(),
        });
        std::thread::Builder::new()
            .name("rowhook-http".into())
            .spawn(move || rt.block_on(serve(listener, state)))
            .map_err(|e| anyhow::anyhow!("starting the HTTP server's thread: {e}"))?;
        tracing::info!(%addr, "HTTP server listening: /metrics /healthz /readyz /status /events /admin/");
        Ok(HttpServer { addr })
    }

    /// The address it listens on (the port chosen, for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

async fn serve(listener: std::net::TcpListener, state: Arc<routes::Server>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("the HTTP server cannot use its socket: {e}");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: try again shortly.
                tracing::warn!("the HTTP server cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(routes::respond(&state, req, peer).await) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, "HTTP connection ended: {e}");
            }
            drop(permit);
        });
    }
}
