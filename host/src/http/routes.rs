//! What each path answers. The table is [`respond`]: a new endpoint is one
//! arm there and one function here.
//!
//! | Method and path | Answer |
//! |---|---|
//! | `GET /` | the dashboard (with `/dashboard.js` and `/dashboard.css`, all in the binary) |
//! | `GET /metrics` | every metric: Prometheus text 0.0.4, or OpenMetrics 1.0 if `Accept` asks for `application/openmetrics-text` |
//! | `GET /healthz` | `200 ok`: the process is alive and answering |
//! | `GET /readyz` | `200` when ready, else `503` and `{"ready":false,"reasons":[…]}` |
//! | `GET /status` | the status report (`status.json`), live |
//! | `GET /events` | the status report as Server-Sent Events, once a second |
//! | `POST /admin/handlers/NAME/pause` | stop calling the handler; its changes are held (token) |
//! | `POST /admin/handlers/NAME/resume` | call it again, held changes first (token) |
//! | `POST /admin/handlers/NAME/reload` | reload the handler's module now (token) |
//! | `GET /admin/handlers/NAME/state?prefix=&limit=` | the handler's state keys (token) |
//! | `POST /admin/snapshot?table=DB.TABLE&where=` | read a table (or a slice) again while streaming (operator token) |
//! | `PUT /admin/handlers/NAME` | deploy the handler's config, TOML keys in the body (`[deploy]`, token) |
//! | `PUT /admin/handlers/NAME/module` | deploy its component, `NAME.wasm` (`[deploy]`, token) |
//! | `DELETE /admin/handlers/NAME` | remove the deployed handler; its state stays (`[deploy]`, token) |
//!
//! No answer holds the source's password (nothing here can reach it) or a
//! message a handler emitted (nothing here reads them).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ::http::{Method, Request, Response, StatusCode, header};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body, Frame, Incoming};

use super::Observed;
use crate::pipeline::control::{Control, ControlError, MAX_STATE_KEYS};
use crate::status::LiveStatus;
use crate::telemetry::{self, names};

/// How long an admin call waits for the pipeline to take it.
const ADMIN_WAIT: Duration = Duration::from_secs(10);
/// Keys a state call returns when it gives no `limit`.
const DEFAULT_STATE_KEYS: usize = 100;
/// How often `/events` sends the status.
const EVENTS_EVERY: Duration = Duration::from_secs(1);

type HttpBody = BoxBody<Bytes, Infallible>;

/// The dashboard: one page, its script and its style, served from the
/// binary (no CDN, nothing built at run time). The script reads
/// `/metrics`, `/readyz` and `/events`.
const DASHBOARD_HTML: &str = include_str!("dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard/dashboard.css");
/// The dashboard loads only its own files and talks only to this server.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                             img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The server's shared state.
pub(super) struct Server {
    pub(super) observed: Observed,
    pub(super) token: Option<String>,
    /// The tenants' own tokens, each reaching its handlers only.
    pub(super) tenants: Vec<crate::config::TenantToken>,
}

/// Answers one request.
pub(super) async fn respond(server: &Server, req: Request<Incoming>, peer: SocketAddr) -> Response<HttpBody> {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    match (&method, path.as_str()) {
        (&Method::GET, "/") => page(DASHBOARD_HTML, "text/html; charset=utf-8"),
        (&Method::GET, "/dashboard.js") => page(DASHBOARD_JS, "text/javascript; charset=utf-8"),
        (&Method::GET, "/dashboard.css") => page(DASHBOARD_CSS, "text/css; charset=utf-8"),
        (&Method::GET, "/metrics") => metrics(server, &req),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => readyz(server),
        (&Method::GET, "/status") => status(server),
        (&Method::GET, "/events") => events(server),
        (_, "/" | "/dashboard.js" | "/dashboard.css" | "/metrics" | "/healthz" | "/readyz" | "/status" | "/events") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n")
        }
        (_, p) if p.starts_with("/admin/") => admin(server, req, peer).await,
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(code: StatusCode, body: impl Into<Bytes>) -> Response<HttpBody> {
    with_type(code, "text/plain; charset=utf-8", body)
}

fn json(code: StatusCode, body: impl Into<Bytes>) -> Response<HttpBody> {
    with_type(code, "application/json", body)
}

fn with_type(code: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<HttpBody> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    resp
}

/// One of the dashboard's files, allowed to load only from this server.
fn page(body: &'static str, content_type: &'static str) -> Response<HttpBody> {
    let mut resp = with_type(StatusCode::OK, content_type, body);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(DASHBOARD_CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    resp
}

fn metrics(server: &Server, req: &Request<Incoming>) -> Response<HttpBody> {
    let openmetrics = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let registry = &server.observed.registry;
    match openmetrics {
        true => with_type(
            StatusCode::OK,
            telemetry::OPENMETRICS_CONTENT_TYPE,
            telemetry::render_openmetrics(registry),
        ),
        false => with_type(
            StatusCode::OK,
            telemetry::PROMETHEUS_CONTENT_TYPE,
            telemetry::render_prometheus(registry),
        ),
    }
}

/// Why the run is not ready, if it is not: it stopped on an error, a
/// handler halted, the source is not connected (a live run), or a sink
/// refused its last batch beyond its retries.
pub(super) fn unready_reasons(observed: &Observed) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(why) = observed.status.stopped() {
        reasons.push(format!("the run stopped: {why}"));
    }
    let snap = observed.registry.snapshot();
    for s in snap.family(names::HANDLER_HALTED).filter(|s| s.count() != 0) {
        reasons.push(format!(
            "handler `{}` (tenant `{}`) halted under on_error = \"halt\"",
            s.label("handler").unwrap_or_default(),
            s.label("tenant").unwrap_or_default()
        ));
    }
    if !observed.replay && snap.sum(names::SOURCE_CONNECTED) == 0 {
        reasons.push("the source is not connected: rowhook is reconnecting to the server".to_owned());
    }
    if snap.family(names::CLUSTER_NATS_CONNECTED).next().is_some() && snap.sum(names::CLUSTER_NATS_CONNECTED) == 0 {
        reasons.push("NATS is not connected: rowhook is reconnecting to the [cluster] servers".to_owned());
    }
    for s in snap.family(names::SINK_FAILING).filter(|s| s.count() != 0) {
        reasons.push(format!(
            "sink `{}` refused its last batch beyond its retries",
            s.label("sink").unwrap_or_default()
        ));
    }
    reasons
}

fn readyz(server: &Server) -> Response<HttpBody> {
    let reasons = unready_reasons(&server.observed);
    let ready = reasons.is_empty();
    let body = serde_json::json!({ "ready": ready, "reasons": reasons }).to_string();
    json(
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body,
    )
}

fn status(server: &Server) -> Response<HttpBody> {
    match server.observed.status.json() {
        Some(report) => json(StatusCode::OK, report.as_bytes().to_vec()),
        None => json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"no status report yet: the run is starting"}"#,
        ),
    }
}

fn events(server: &Server) -> Response<HttpBody> {
    let mut tick = tokio::time::interval(EVENTS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resp = Response::new(
        StatusEvents {
            status: server.observed.status.clone(),
            tick,
        }
        .boxed(),
    );
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    resp
}

/// `/events`: the status report as an SSE `status` event at once, then
/// once a second, until the client goes away.
struct StatusEvents {
    status: LiveStatus,
    tick: tokio::time::Interval,
}

impl Body for StatusEvents {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.tick.poll_tick(cx).is_pending() {
            return Poll::Pending;
        }
        let report = self.status.json();
        let data = report.as_deref().unwrap_or("{}");
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(format!(
            "event: status\ndata: {data}\n\n"
        ))))))
    }
}

/// The admin API: the bearer token, then the call; every call is logged
/// with who asked and what.
async fn admin(server: &Server, req: Request<Incoming>, peer: SocketAddr) -> Response<HttpBody> {
    let authorized = authorize(server, &req);
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let query = req.uri().query().unwrap_or("").to_owned();
    let name = handler_of(&path).to_owned();
    let owner = server.observed.roster.tenant_of(&name);
    let resp = match &authorized {
        Err(refused) => refused.response(),
        Ok(caller) if deploying(&method, &path) => deploy_call(server, caller, req, &name, owner, &query).await,
        Ok(Caller::Tenant(t)) if owner.as_deref() != Some(&t.tenant) => forbidden(server, t),
        Ok(_) => {
            // Only what the call needs is kept across the wait for the pipeline.
            drop(req);
            admin_call(server, &method, &path, &query).await
        }
    };
    let caller = match &authorized {
        Ok(Caller::Operator) => "operator",
        Ok(Caller::Tenant(t)) => t.tenant.as_str(),
        Err(_) => "-",
    };
    tracing::info!(
        %peer,
        caller,
        %method,
        %path,
        %query,
        status = resp.status().as_u16(),
        "admin call"
    );
    resp
}

/// Who an admin call comes from.
enum Caller<'a> {
    /// The holder of the `[http]` token: every handler.
    Operator,
    /// A tenant, by its own token: its handlers only.
    Tenant(&'a crate::config::TenantToken),
}

/// The handler an admin path names (`/admin/handlers/NAME/...`), or "".
fn handler_of(path: &str) -> &str {
    let mut parts = path.trim_start_matches("/admin/").split('/');
    match (parts.next(), parts.next()) {
        (Some("handlers"), Some(name)) => name,
        _ => "",
    }
}

/// The one answer a tenant's token gets for any handler not its own,
/// whatever the name: it tells nothing of other tenants.
fn forbidden(server: &Server, t: &crate::config::TenantToken) -> Response<HttpBody> {
    error(
        StatusCode::FORBIDDEN,
        &format!(
            "the token of tenant `{}` reaches only its own handlers: {}",
            t.tenant,
            server.observed.roster.handlers_of(&t.tenant).join(", ")
        ),
    )
}

/// The calls that deploy: `PUT /admin/handlers/NAME`, `PUT
/// /admin/handlers/NAME/module`, `DELETE /admin/handlers/NAME`.
fn deploying(method: &Method, path: &str) -> bool {
    let parts: Vec<&str> = path.trim_start_matches("/admin/").split('/').collect();
    matches!(
        (method, parts.as_slice()),
        (&Method::PUT, ["handlers", _] | ["handlers", _, "module"]) | (&Method::DELETE, ["handlers", _])
    )
}

/// The most a deployed handler's config may weigh.
const MAX_CONFIG_BODY: usize = 1 << 20;
/// The most a deployed module may weigh (its `limits.module_mb` is
/// checked when it is deployed).
const MAX_MODULE_BODY: usize = 256 << 20;

/// Deploys, changes or removes handler `name` of the caller's tenant (the
/// operator names the tenant of a new handler with `?tenant=`).
async fn deploy_call(
    server: &Server,
    caller: &Caller<'_>,
    req: Request<Incoming>,
    name: &str,
    owner: Option<String>,
    query: &str,
) -> Response<HttpBody> {
    use crate::deploy::{RefusedKind, Request as Deploy};
    let Some(deploy) = &server.observed.deploy else {
        return error(
            StatusCode::NOT_FOUND,
            "deploying is off in this run: set [deploy] dir = \"tenants\" in the config (rowhook run only)",
        );
    };
    let tenant = match (caller, owner) {
        (Caller::Tenant(t), Some(owner)) if owner != t.tenant => return forbidden(server, t),
        (Caller::Tenant(t), _) => t.tenant.clone(),
        (Caller::Operator, owner) => {
            let asked = query.split('&').find_map(|kv| kv.strip_prefix("tenant="));
            let asked = match asked.map(crate::sink::tls::percent_decode).transpose() {
                Ok(a) => a,
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("tenant {e}")),
            };
            match (owner, asked) {
                (Some(o), Some(a)) if o != a => {
                    return error(
                        StatusCode::CONFLICT,
                        &format!("handler `{name}` belongs to tenant `{o}`, not `{a}`"),
                    );
                }
                (Some(o), _) => o,
                (None, Some(a)) => a,
                (None, None) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "name the tenant of a new handler: ?tenant=NAME",
                    );
                }
            }
        }
    };
    let name = name.to_owned();
    let method = req.method().clone();
    let module = req.uri().path().ends_with("/module");
    let limit = if module { MAX_MODULE_BODY } else { MAX_CONFIG_BODY };
    let body = if method == Method::DELETE {
        Bytes::new()
    } else {
        match http_body_util::Limited::new(req.into_body(), limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the body is larger than {limit} bytes, or was cut off"),
                );
            }
        }
    };
    let request = match (method, module) {
        (Method::DELETE, _) => Deploy::Remove { tenant, name },
        (_, true) => Deploy::Module {
            tenant,
            name,
            bytes: body.to_vec(),
        },
        (_, false) => match String::from_utf8(body.to_vec()) {
            Ok(text) => Deploy::Config { tenant, name, text },
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "the body is not UTF-8 text: send the handler's keys as TOML",
                );
            }
        },
    };
    match deploy.ask(request).await {
        Ok(applied) => json(StatusCode::OK, serde_json::to_string(&applied).unwrap_or_default()),
        Err(refused) => {
            let code = match refused.kind {
                RefusedKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
                RefusedKind::NotFound => StatusCode::NOT_FOUND,
                RefusedKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            };
            let body = serde_json::json!({
                "error": "deployment refused: nothing running changed",
                "problems": refused.problems,
            });
            json(code, body.to_string())
        }
    }
}

fn error(code: StatusCode, message: &str) -> Response<HttpBody> {
    json(code, serde_json::json!({ "error": message }).to_string())
}

fn authorize<'a>(server: &'a Server, req: &Request<Incoming>) -> Result<Caller<'a>, Refusal> {
    if server.token.is_none() && server.tenants.is_empty() {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "the admin API is off: set [http] token = \"${ROWHOOK_HTTP_TOKEN}\" in the config to turn it on",
        ));
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(given) = given else {
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "send the [http] token or your tenant's admin_token: Authorization: Bearer TOKEN",
        ));
    };
    // Every token is compared, so the time taken does not tell whose it is.
    let operator = server
        .token
        .as_ref()
        .is_some_and(|t| same_bytes(given.as_bytes(), t.as_bytes()));
    let mut tenant = None;
    for t in &server.tenants {
        if same_bytes(given.as_bytes(), t.token.as_bytes()) {
            tenant = Some(t);
        }
    }
    match (operator, tenant) {
        (true, _) => Ok(Caller::Operator),
        (false, Some(t)) => Ok(Caller::Tenant(t)),
        (false, None) => Err(Refusal(StatusCode::UNAUTHORIZED, "wrong token")),
    }
}

/// An admin call refused before it reached the pipeline.
struct Refusal(StatusCode, &'static str);

impl Refusal {
    fn response(&self) -> Response<HttpBody> {
        let mut resp = error(self.0, self.1);
        if self.0 == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"rowhook\""),
            );
        }
        resp
    }
}

/// Compares in time that depends on the length only, so that the time
/// taken does not tell how much of a guess was right.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

async fn admin_call(server: &Server, method: &Method, path: &str, query: &str) -> Response<HttpBody> {
    let Some(control) = &server.observed.control else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no pipeline takes admin calls in this run",
        );
    };
    let path = path.trim_start_matches("/admin/");
    let parts: Vec<&str> = path.split('/').collect();
    let answer = match (method, parts.as_slice()) {
        (&Method::POST, ["handlers", name, "pause"]) => {
            let handler = (*name).to_owned();
            control
                .ask(ADMIN_WAIT, |reply| Control::Pause { handler, reply })
                .await
                .map(|r| serde_json::to_string(&r))
        }
        (&Method::POST, ["handlers", name, "resume"]) => {
            let handler = (*name).to_owned();
            control
                .ask(ADMIN_WAIT, |reply| Control::Resume { handler, reply })
                .await
                .map(|r| serde_json::to_string(&r))
        }
        (&Method::POST, ["handlers", name, "reload"]) => {
            let handler = (*name).to_owned();
            control
                .ask(ADMIN_WAIT, |reply| Control::Reload { handler, reply })
                .await
                .map(|r| serde_json::to_string(&r))
        }
        (&Method::GET, ["handlers", name, "state"]) => {
            let (prefix, limit) = match state_query(query) {
                Ok(q) => q,
                Err(e) => return error(StatusCode::BAD_REQUEST, &e),
            };
            let handler = (*name).to_owned();
            control
                .ask(ADMIN_WAIT, |reply| Control::State {
                    handler,
                    prefix,
                    limit,
                    reply,
                })
                .await
                .map(|page| serde_json::to_string(&page))
        }
        (&Method::POST, ["snapshot"]) => {
            let (table, filter) = match snapshot_query(query) {
                Ok(q) => q,
                Err(e) => return error(StatusCode::BAD_REQUEST, &e),
            };
            control
                .ask(ADMIN_WAIT, |reply| Control::Snapshot { table, filter, reply })
                .await
                .map(|queued| serde_json::to_string(&queued))
        }
        (_, ["snapshot"]) => return error(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
        (_, ["handlers", _, "reload" | "pause" | "resume"]) => {
            return error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        }
        (_, ["handlers", _, "state"]) => return error(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
        _ => return error(StatusCode::NOT_FOUND, "no such admin call"),
    };
    match answer {
        Ok(Ok(body)) => json(StatusCode::OK, body),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => {
            let code = match e {
                ControlError::NoHandler(_) => StatusCode::NOT_FOUND,
                ControlError::Failed(_) => StatusCode::UNPROCESSABLE_ENTITY,
                ControlError::Busy(_) | ControlError::Gone | ControlError::Apart { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            error(code, &e.to_string())
        }
    }
}

/// `table` (`db.table`) and `where` (a SQL condition), percent-decoded.
fn snapshot_query(query: &str) -> Result<(String, Option<String>), String> {
    let (mut table, mut filter) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = crate::sink::tls::percent_decode(&v.replace('+', " ")).map_err(|e| format!("{k} {e}"))?;
        match k {
            "table" => table = Some(v),
            "where" => filter = Some(v).filter(|f| !f.trim().is_empty()),
            other => return Err(format!("unknown parameter `{other}`: use table and where")),
        }
    }
    let table = table.ok_or("name the table: ?table=db.table (and &where=CONDITION for a slice of it)")?;
    Ok((table, filter))
}

/// `prefix` (percent-decoded) and `limit` (default 100, at most 1000).
fn state_query(query: &str) -> Result<(String, usize), String> {
    let mut prefix = String::new();
    let mut limit = DEFAULT_STATE_KEYS;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "prefix" => prefix = crate::sink::tls::percent_decode(v).map_err(|e| format!("prefix {e}"))?,
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .map_err(|_| format!("limit `{v}` is not a number; give 1 to {MAX_STATE_KEYS}"))?
                    .min(MAX_STATE_KEYS)
            }
            other => return Err(format!("unknown parameter `{other}`: use prefix and limit")),
        }
    }
    Ok((prefix, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same_bytes(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_bytes(b"0123456789abcdef", b"0123456789abcdeF"));
        assert!(!same_bytes(b"0123456789abcdef", b"0123456789abcde"));
    }

    #[test]
    fn state_queries() {
        assert_eq!(state_query(""), Ok((String::new(), DEFAULT_STATE_KEYS)));
        assert_eq!(state_query("prefix=k%3A1&limit=5"), Ok(("k:1".to_owned(), 5)));
        assert_eq!(state_query("limit=99999"), Ok((String::new(), MAX_STATE_KEYS)));
        assert!(state_query("limit=x").is_err());
        assert!(state_query("secret=1").is_err());
    }

    #[test]
    fn readiness_names_each_reason() {
        let registry = telemetry::Registry::new();
        let observed = Observed {
            registry: registry.clone(),
            status: LiveStatus::new(),
            control: None,
            replay: false,
            deploy: None,
            roster: Default::default(),
        };
        let connected = registry.gauge(names::SOURCE_CONNECTED, "c", vec![]);
        assert_eq!(unready_reasons(&observed).len(), 1, "not connected yet");
        connected.set(1.0);
        assert!(unready_reasons(&observed).is_empty());
        let h = vec![("tenant", "t".to_owned()), ("handler", "h".to_owned())];
        registry.gauge(names::HANDLER_HALTED, "h", h).set(1.0);
        registry
            .gauge(names::SINK_FAILING, "f", vec![("sink", "out".to_owned())])
            .set(1.0);
        observed.status.set_stopped("boom");
        let reasons = unready_reasons(&observed);
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("boom") && reasons[1].contains("`h`") && reasons[2].contains("`out`"));
    }
}
