//! Deploying handlers into a running rowhook: each tenant's directory of
//! handler files, and the admin API that writes into it.
//!
//! `[deploy] dir = "tenants"` gives every declared tenant a directory,
//! `tenants/TENANT/`, of `*.toml` files holding `[[handlers]]` tables (the
//! keys of the config's, plus `start`) and the modules they name, which must
//! lie in that directory. A [`Site`] thread watches the directories. When a
//! tenant's files change and settle, or an admin call asks, it reads the
//! tenant's files again and validates them together with the operator's
//! config as read at start and every other tenant's accepted handlers: every
//! check the config has (tables and sinks within the tenant's, limits within
//! its caps, handler count and totals, names unique), then each changed
//! module is read, its imports checked and compiled. A refused deployment
//! is logged (or answered) with every problem, and nothing running changes.
//! An accepted one goes to the pipeline as a [`Deployment`], which it
//! applies at a transaction boundary; the site waits for that answer.
//!
//! Tenant files are the tenant's, not the operator's: `${ENV}` is not
//! expanded in them (the text stays as written), and a module outside the
//! tenant's directory is refused.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher as _};
use serde::Deserialize;

use crate::config::{ConfigError, HandlerPlan, HandlerStart, Plan, RawConfig, RawHandler};
use crate::handler_id::{HandlerId, Roster};
use crate::runtime::reload::digest;
use crate::runtime::{HandlerRuntime, Module, read_module};

/// How long a tenant's files must be left alone before they are read.
const SETTLE: Duration = Duration::from_millis(150);
/// The largest handler file read.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// How long the site waits for the pipeline to apply a deployment before
/// it tells the caller it is still waiting (it is applied all the same).
const APPLY_WAIT: Duration = Duration::from_secs(30);

/// A tenant's handlers to add, change or remove, validated, for the
/// pipeline to apply at a transaction boundary.
pub struct Deployment {
    /// The tenant deploying.
    pub tenant: String,
    /// The whole plan the deployment was validated in: grants and emit
    /// rates are read from it.
    pub plan: Arc<Plan>,
    /// Handlers added or changed, their modules compiled.
    pub put: Vec<Deployed>,
    /// Handlers removed: their state stays in the store.
    pub remove: Vec<HandlerId>,
    /// The pipeline's answer: applied, or why not (then nothing changed).
    pub reply: mpsc::Sender<Result<(), String>>,
}

/// One handler to add or change.
pub struct Deployed {
    /// Its resolved config.
    pub plan: HandlerPlan,
    /// Its module, compiled.
    pub module: Module,
    /// For a new handler with `start = "latest"`: the end of the server's
    /// binlog when it was deployed; it takes only transactions after it.
    pub gate: Option<(String, u64)>,
}

/// What an admin call asks of a tenant's directory.
#[derive(Debug)]
pub enum Request {
    /// `PUT /admin/handlers/NAME`: the handler's keys, as TOML.
    Config {
        /// The tenant.
        tenant: String,
        /// The handler.
        name: String,
        /// Its keys (not `name`, and `tenant` only if it is the caller's).
        text: String,
    },
    /// `PUT /admin/handlers/NAME/module`: the component, as `NAME.wasm`.
    Module {
        /// The tenant.
        tenant: String,
        /// The handler.
        name: String,
        /// The component's bytes.
        bytes: Vec<u8>,
    },
    /// `DELETE /admin/handlers/NAME`: remove it (its state stays).
    Remove {
        /// The tenant.
        tenant: String,
        /// The handler.
        name: String,
    },
}

/// The outcome of a deployment.
#[derive(Debug, Default, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Applied {
    /// The tenant.
    pub tenant: String,
    /// Handlers added, by name.
    pub added: Vec<String>,
    /// Handlers whose config or module changed.
    pub changed: Vec<String>,
    /// Handlers removed.
    pub removed: Vec<String>,
}

/// Why a deployment was refused: nothing running changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// What kind of refusal, for the admin API's status code.
    pub kind: RefusedKind,
    /// Every problem, each naming its file or key and the fix.
    pub problems: Vec<String>,
}

/// The kinds of [`Refused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedKind {
    /// The files or the module are wrong.
    Invalid,
    /// No such handler was deployed through the admin API.
    NotFound,
    /// The pipeline could not take it now (stopping, or failed).
    Unavailable,
}

impl Refused {
    fn invalid(problems: Vec<String>) -> Refused {
        Refused {
            kind: RefusedKind::Invalid,
            problems,
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

type Reply = tokio::sync::oneshot::Sender<Result<Applied, Refused>>;

/// Asks the site thread to apply admin calls.
#[derive(Clone)]
pub struct DeploySender(mpsc::Sender<Input>);

impl DeploySender {
    /// Sends `request` and waits for its outcome.
    pub async fn ask(&self, request: Request) -> Result<Applied, Refused> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let gone = || Refused {
            kind: RefusedKind::Unavailable,
            problems: vec!["rowhook is stopping: nothing was deployed".to_owned()],
        };
        self.0.send(Input::Admin(request, tx)).map_err(|_| gone())?;
        rx.await.unwrap_or_else(|_| Err(gone()))
    }
}

enum Input {
    Files(notify::Result<notify::Event>),
    Admin(Request, Reply),
}

/// `[[handlers]]` of a tenant file: nothing else is taken.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantFile {
    #[serde(default)]
    handlers: Vec<RawHandler>,
}

/// A tenant's handlers as read from its files, each with the key its
/// problems are named under.
type TenantHandlers = Vec<(String, RawHandler)>;

/// Changes to a tenant's files an admin call makes, applied in memory
/// before anything is written, so that a refused call writes nothing.
#[derive(Default)]
struct Overlay {
    /// A handler file's new text, or `None` for a file removed.
    file: Option<(String, Option<String>)>,
    /// A module's new bytes.
    module: Option<(PathBuf, Vec<u8>)>,
}

/// What a new or changed module must pass before it is deployed, beyond
/// compiling: `rowhook check`'s trial (see `cli::check::try_deployed`).
pub type Tryout = fn(&HandlerRuntime, &Plan, &HandlerPlan, &Module) -> Result<(), String>;

/// The operator's config, the tenants' accepted handlers, and what runs.
pub struct Site {
    /// The operator's config file and its text as read at start.
    file: PathBuf,
    text: String,
    /// `[deploy] dir`.
    dir: PathBuf,
    tenants: BTreeSet<String>,
    source: Option<crate::config::SourcePlan>,
    /// Each tenant's accepted handlers, as read from its files.
    accepted: BTreeMap<String, TenantHandlers>,
    /// Each running deployed handler: its config and its module's digest.
    running: BTreeMap<HandlerId, (HandlerPlan, u64)>,
    /// The trial of a new or changed module.
    tryout: Tryout,
}

impl Site {
    /// Reads the operator's config at `plan.file` (with `[deploy]`) and
    /// every tenant's directory, creating those missing. A tenant whose
    /// files are refused starts without its deployed handlers (the
    /// problems are logged) and is read again when they change. Returns
    /// the plan with every accepted handler, to start the run with.
    pub fn open(plan: &Plan, runtime: &HandlerRuntime, tryout: Tryout) -> anyhow::Result<(Site, Plan)> {
        let mut site = Site::new(plan, tryout)?;
        for tenant in site.tenants.clone() {
            let tdir = site.dir.join(&tenant);
            create_private_dir(&tdir)?;
            match site.validate(&tenant, &Overlay::default(), runtime) {
                Ok((handlers, plan, modules)) => {
                    site.accept(&tenant, handlers, &plan, &modules);
                }
                Err(refused) => {
                    tracing::error!(
                        tenant = %tenant,
                        "the handlers deployed in {} are refused and do not start (fix the files: they are read again when they change):\n{refused}",
                        tdir.display()
                    );
                }
            }
        }
        let plan = site
            .resolve(None, &[])
            .map_err(|p| anyhow::anyhow!("{}", p.join("\n")))?;
        Ok((site, plan))
    }

    fn new(plan: &Plan, tryout: Tryout) -> anyhow::Result<Site> {
        let dir = plan.deploy.clone().expect("a plan with [deploy]");
        let text = std::fs::read_to_string(&plan.file)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", plan.file.display()))?;
        Ok(Site {
            file: plan.file.clone(),
            text,
            dir,
            tenants: plan.tenants.keys().cloned().collect(),
            source: plan.source.clone(),
            accepted: BTreeMap::new(),
            running: BTreeMap::new(),
            tryout,
        })
    }

    /// For `rowhook check`: `plan` with the handlers each tenant's
    /// directory holds, and a line per tenant (its problems, if refused;
    /// the modules are checked with the plan's handlers).
    pub fn check(plan: &Plan) -> anyhow::Result<(Plan, Vec<crate::probe::CheckLine>)> {
        use crate::probe::CheckLine;
        let mut site = Site::new(plan, |_, _, _, _| Ok(()))?;
        let mut lines = Vec::new();
        for tenant in site.tenants.clone() {
            let tdir = site.dir.join(&tenant);
            if !tdir.is_dir() {
                lines.push(CheckLine::ok(format!(
                    "tenant `{tenant}`: {} does not exist yet (rowhook run makes it)",
                    tdir.display()
                )));
                continue;
            }
            let read = read_tenant(&site.dir, &tenant, &Overlay::default());
            match read.and_then(|hs| site.resolve(Some(&tenant), &hs).map(|_| hs)) {
                Ok(hs) => {
                    lines.push(CheckLine::ok(format!(
                        "tenant `{tenant}`: {} handler(s) deployed in {}",
                        hs.len(),
                        tdir.display()
                    )));
                    site.accepted.insert(tenant, hs);
                }
                Err(problems) => lines.push(CheckLine::fail(format!(
                    "tenant `{tenant}`: the handlers deployed in {} are refused: {}",
                    tdir.display(),
                    problems.join("; ")
                ))),
            }
        }
        let plan = site
            .resolve(None, &[])
            .map_err(|p| anyhow::anyhow!("{}", p.join("\n")))?;
        Ok((plan, lines))
    }

    /// Watches the tenants' directories on a thread of its own, which
    /// sends what it accepts to `pipeline`; returns the sender of admin
    /// calls. `roster` is kept up to date with every handler's tenant.
    pub fn start(
        self,
        runtime: HandlerRuntime,
        pipeline: mpsc::Sender<Deployment>,
        roster: Roster,
    ) -> anyhow::Result<DeploySender> {
        let (tx, rx) = mpsc::channel();
        let files = tx.clone();
        let mut watcher = notify::recommended_watcher(move |e| {
            let _ = files.send(Input::Files(e));
        })
        .map_err(|e| anyhow::anyhow!("starting the deploy watcher: {e}"))?;
        for tenant in &self.tenants {
            let d = self.dir.join(tenant);
            watcher
                .watch(&d, RecursiveMode::NonRecursive)
                .map_err(|e| anyhow::anyhow!("watching {}: {e}", d.display()))?;
        }
        std::thread::Builder::new()
            .name("rowhook-deploy".into())
            .spawn(move || {
                let _watcher = watcher;
                let mut site = self;
                site.serve(&runtime, &rx, &pipeline, &roster);
            })
            .map_err(|e| anyhow::anyhow!("starting the deploy thread: {e}"))?;
        Ok(DeploySender(tx))
    }

    fn serve(
        &mut self,
        runtime: &HandlerRuntime,
        rx: &mpsc::Receiver<Input>,
        pipeline: &mpsc::Sender<Deployment>,
        roster: &Roster,
    ) {
        let dir = self.dir.canonicalize().unwrap_or_else(|_| self.dir.clone());
        let mut dirty: HashMap<String, Instant> = HashMap::new();
        loop {
            let wait = (dirty.values())
                .map(|t| (*t + SETTLE).saturating_duration_since(Instant::now()))
                .min()
                .unwrap_or(Duration::from_secs(3600));
            match rx.recv_timeout(wait) {
                Ok(Input::Files(Ok(event))) => {
                    for p in &event.paths {
                        let rel = p.strip_prefix(&dir).or_else(|_| p.strip_prefix(&self.dir));
                        let tenant = rel.ok().and_then(|r| r.components().next());
                        if let Some(Component::Normal(t)) = tenant
                            && let Some(t) = t.to_str()
                            && self.tenants.contains(t)
                            && !is_temporary(p)
                        {
                            dirty.insert(t.to_owned(), Instant::now());
                        }
                    }
                }
                Ok(Input::Files(Err(e))) => tracing::warn!("watching the tenants' directories: {e}"),
                Ok(Input::Admin(request, reply)) => {
                    let outcome = self.admin(request, runtime, pipeline, roster);
                    let _ = reply.send(outcome);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            let settled: Vec<String> = (dirty.iter())
                .filter(|(_, t)| t.elapsed() >= SETTLE)
                .map(|(k, _)| k.clone())
                .collect();
            for tenant in settled {
                dirty.remove(&tenant);
                match self.deploy(&tenant, &Overlay::default(), runtime, pipeline, roster) {
                    Ok(a) if a.added.is_empty() && a.changed.is_empty() && a.removed.is_empty() => {}
                    Ok(a) => tracing::info!(
                        tenant = %tenant,
                        added = ?a.added, changed = ?a.changed, removed = ?a.removed,
                        "deployed from {}", self.dir.join(&tenant).display()
                    ),
                    Err(refused) => tracing::error!(
                        tenant = %tenant,
                        "deployment refused, nothing running changed:\n{refused}"
                    ),
                }
            }
        }
    }

    /// Validates `tenant`'s files (with `overlay`) and hands what changed
    /// to the pipeline.
    fn deploy(
        &mut self,
        tenant: &str,
        overlay: &Overlay,
        runtime: &HandlerRuntime,
        pipeline: &mpsc::Sender<Deployment>,
        roster: &Roster,
    ) -> Result<Applied, Refused> {
        let (handlers, plan, modules) = self.validate(tenant, overlay, runtime)?;
        let mut applied = Applied {
            tenant: tenant.to_owned(),
            ..Applied::default()
        };
        let mut put = Vec::new();
        for h in plan.handlers.iter().filter(|h| h.tenant == tenant) {
            let id = HandlerId::new(&h.tenant, &h.name);
            let Some((module, _)) = modules.get(&id) else { continue };
            let Some(module) = module else { continue };
            let gate = match (self.running.contains_key(&id), h.start) {
                (false, HandlerStart::Latest) => Some(self.binlog_end().map_err(|e| {
                    Refused::invalid(vec![format!(
                        "handler `{}`: start = \"latest\" needs to ask the server where its binlog ends: {e:#}",
                        h.name
                    )])
                })?),
                _ => None,
            };
            match self.running.contains_key(&id) {
                true => applied.changed.push(h.name.clone()),
                false => applied.added.push(h.name.clone()),
            }
            put.push(Deployed {
                plan: h.clone(),
                module: module.clone(),
                gate,
            });
        }
        let remove: Vec<HandlerId> = (self.running.keys())
            .filter(|id| id.tenant() == tenant && !modules.contains_key(*id))
            .cloned()
            .collect();
        applied.removed = remove.iter().map(|id| id.name().to_owned()).collect();
        if put.is_empty() && remove.is_empty() {
            self.accepted.insert(tenant.to_owned(), handlers);
            return Ok(applied);
        }
        let plan = Arc::new(plan);
        let (reply, answer) = mpsc::channel();
        let unavailable = |why: String| Refused {
            kind: RefusedKind::Unavailable,
            problems: vec![why],
        };
        pipeline
            .send(Deployment {
                tenant: tenant.to_owned(),
                plan: plan.clone(),
                put,
                remove,
                reply,
            })
            .map_err(|_| unavailable("the pipeline has stopped: nothing was deployed".to_owned()))?;
        match answer.recv_timeout(APPLY_WAIT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Refused::invalid(vec![e])),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // The pipeline takes it at its next transaction boundary;
                // what it answers then is not heard here.
                return Err(unavailable(format!(
                    "the pipeline did not reach a transaction boundary within {APPLY_WAIT:?} (a sink or handler is holding it): the deployment waits for it and is applied there unless it fails; see the log"
                )));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(unavailable("the pipeline has stopped: nothing was deployed".to_owned()));
            }
        }
        self.accept(tenant, handlers, &plan, &modules);
        roster.set(plan.handlers.iter().map(|h| (h.name.clone(), h.tenant.clone())));
        Ok(applied)
    }

    /// Records `tenant`'s accepted handlers and what runs of them.
    fn accept(
        &mut self,
        tenant: &str,
        handlers: TenantHandlers,
        plan: &Plan,
        modules: &BTreeMap<HandlerId, (Option<Module>, u64)>,
    ) {
        self.accepted.insert(tenant.to_owned(), handlers);
        self.running.retain(|id, _| id.tenant() != tenant);
        for h in plan.handlers.iter().filter(|h| h.tenant == tenant) {
            let id = HandlerId::new(&h.tenant, &h.name);
            if let Some((_, d)) = modules.get(&id) {
                self.running.insert(id, (h.clone(), *d));
            }
        }
    }

    /// Reads and validates `tenant`'s files with `overlay`: its handlers,
    /// the whole plan, and per deployed handler of the tenant, its module
    /// compiled if it is new or changed (`None`: unchanged) and its digest.
    #[allow(clippy::type_complexity)]
    fn validate(
        &self,
        tenant: &str,
        overlay: &Overlay,
        runtime: &HandlerRuntime,
    ) -> Result<(TenantHandlers, Plan, BTreeMap<HandlerId, (Option<Module>, u64)>), Refused> {
        let handlers = read_tenant(&self.dir, tenant, overlay).map_err(Refused::invalid)?;
        let plan = self.resolve(Some(tenant), &handlers).map_err(Refused::invalid)?;
        let keys: HashMap<&str, &str> = handlers.iter().map(|(k, h)| (h.name.as_str(), k.as_str())).collect();
        let mut problems = Vec::new();
        let mut modules = BTreeMap::new();
        for h in plan
            .handlers
            .iter()
            .filter(|h| h.tenant == tenant && keys.contains_key(h.name.as_str()))
        {
            let key = keys[h.name.as_str()];
            let max = h.limits.module_bytes();
            let bytes = match &overlay.module {
                Some((path, bytes)) if *path == h.module => match bytes.len() as u64 > max {
                    true => Err(crate::runtime::LoadError::TooLarge {
                        path: path.display().to_string(),
                        max_mb: max.div_ceil(1 << 20),
                    }),
                    false => Ok(bytes.clone()),
                },
                _ => match confined(&self.dir.join(tenant), &h.module) {
                    Ok(()) => read_module(&h.module, max),
                    Err(e) => {
                        problems.push(format!("{key}.module: {e}"));
                        continue;
                    }
                },
            };
            let bytes = match bytes {
                Ok(b) => b,
                Err(e) => {
                    problems.push(format!("{key}.module: {e}"));
                    continue;
                }
            };
            let d = digest(&bytes);
            let id = HandlerId::new(&h.tenant, &h.name);
            if self.running.get(&id).is_some_and(|(p, old)| p == h && *old == d) {
                modules.insert(id, (None, d));
                continue;
            }
            match runtime.load_bytes(&h.module.display().to_string(), &bytes) {
                Ok(m) => match (self.tryout)(runtime, &plan, h, &m) {
                    Ok(()) => {
                        modules.insert(id, (Some(m), d));
                    }
                    Err(e) => problems.push(format!("{key}.module: {e}")),
                },
                Err(e) => problems.push(format!("{key}.module: {e}")),
            }
        }
        if !problems.is_empty() {
            return Err(Refused::invalid(problems));
        }
        Ok((handlers, plan, modules))
    }

    /// The operator's config with every tenant's accepted handlers, and
    /// `tenant`'s replaced by `handlers` (last, so that its problems are
    /// its own).
    fn resolve(&self, tenant: Option<&str>, handlers: &[(String, RawHandler)]) -> Result<Plan, Vec<String>> {
        let mut raw =
            RawConfig::parse(&self.text, &self.file, |v| std::env::var(v).ok()).map_err(|e| vec![e.to_string()])?;
        for (t, hs) in &self.accepted {
            if Some(t.as_str()) == tenant {
                continue;
            }
            for (key, h) in hs {
                raw.add_deployed(key.clone(), h.clone());
            }
        }
        for (key, h) in handlers {
            raw.add_deployed(key.clone(), h.clone());
        }
        raw.resolve(&self.file).map_err(|e| match e {
            ConfigError::Invalid { problems, .. } => problems.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        })
    }

    /// Where the server's binlog ends now.
    fn binlog_end(&self) -> anyhow::Result<(String, u64)> {
        let source = (self.source.as_ref()).ok_or_else(|| anyhow::anyhow!("the config has no [source]"))?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(crate::source::lag::binlog_end(&source.url))
    }

    /// Applies an admin call: the files it writes are validated in memory
    /// first, written only once the pipeline applied them.
    fn admin(
        &mut self,
        request: Request,
        runtime: &HandlerRuntime,
        pipeline: &mpsc::Sender<Deployment>,
        roster: &Roster,
    ) -> Result<Applied, Refused> {
        let base = self.dir.clone();
        let tdir = |t: &str| base.join(t);
        match request {
            Request::Config { tenant, name, text } => {
                let file = format!("{name}.toml");
                let body = handler_file(&tenant, &name, &text).map_err(|e| Refused::invalid(vec![e]))?;
                let overlay = Overlay {
                    file: Some((file.clone(), Some(body.clone()))),
                    module: None,
                };
                let applied = self.deploy(&tenant, &overlay, runtime, pipeline, roster)?;
                write_atomically(&tdir(&tenant).join(&file), body.as_bytes()).map_err(|e| Refused::invalid(vec![e]))?;
                Ok(applied)
            }
            Request::Module { tenant, name, bytes } => {
                let path = tdir(&tenant).join(format!("{name}.wasm"));
                // Refused at once if it is no handler component, whether or
                // not a handler uses it yet.
                runtime
                    .load_bytes(&path.display().to_string(), &bytes)
                    .map_err(|e| Refused::invalid(vec![e.to_string()]))?;
                let overlay = Overlay {
                    file: None,
                    module: Some((path.clone(), bytes)),
                };
                let applied = self.deploy(&tenant, &overlay, runtime, pipeline, roster)?;
                let (_, bytes) = overlay.module.expect("set above");
                write_atomically(&path, &bytes).map_err(|e| Refused::invalid(vec![e]))?;
                Ok(applied)
            }
            Request::Remove { tenant, name } => {
                let file = format!("{name}.toml");
                let path = tdir(&tenant).join(&file);
                let defines = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| toml::from_str::<TenantFile>(&t).ok())
                    .is_some_and(|f| f.handlers.iter().any(|h| h.name == name));
                if !defines {
                    return Err(Refused {
                        kind: RefusedKind::NotFound,
                        problems: vec![format!(
                            "no handler `{name}` was deployed through the admin API ({}/{file}); a handler in another file of the tenant's directory is removed there",
                            tenant
                        )],
                    });
                }
                let overlay = Overlay {
                    file: Some((file, None)),
                    module: None,
                };
                let applied = self.deploy(&tenant, &overlay, runtime, pipeline, roster)?;
                std::fs::remove_file(&path)
                    .map_err(|e| Refused::invalid(vec![format!("removing {}: {e}", path.display())]))?;
                let module = tdir(&tenant).join(format!("{name}.wasm"));
                let used = self.running.values().any(|(p, _)| p.module == module);
                if !used {
                    let _ = std::fs::remove_file(module);
                }
                Ok(applied)
            }
        }
    }
}

/// The text of `NAME.toml` for an admin call's keys: one `[[handlers]]`
/// table with its name and tenant.
fn handler_file(tenant: &str, name: &str, text: &str) -> Result<String, String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| {
        format!(
            "the body is not TOML: {}; send the handler's keys (module, tables, sinks, ...), one per line",
            e.message().trim_end()
        )
    })?;
    for (key, want) in [("name", name), ("tenant", tenant)] {
        match table.get(key) {
            Some(toml::Value::String(v)) if v == want => {}
            None => {}
            Some(_) => {
                return Err(format!(
                    "`{key}` in the body is not `{want}`; leave it out: the path names the handler and the token its tenant"
                ));
            }
        }
    }
    table.insert("name".into(), toml::Value::String(name.to_owned()));
    table.insert("tenant".into(), toml::Value::String(tenant.to_owned()));
    table
        .entry("module")
        .or_insert_with(|| toml::Value::String(format!("{name}.wasm")));
    let mut file = toml::Table::new();
    file.insert("handlers".into(), toml::Value::Array(vec![toml::Value::Table(table)]));
    toml::to_string(&file).map_err(|e| format!("writing the handler's file: {e}"))
}

/// Reads `tenant`'s handler files in `dir/tenant` (with `overlay`), sorted
/// by file name; every problem is named with the file.
fn read_tenant(dir: &Path, tenant: &str, overlay: &Overlay) -> Result<TenantHandlers, Vec<String>> {
    let tdir = dir.join(tenant);
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    let entries = std::fs::read_dir(&tdir).map_err(|e| vec![format!("{}: cannot be read: {e}", tdir.display())])?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !name.ends_with(".toml") || is_temporary(&path) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_symlink()) {
            problems.push(format!(
                "{}: is a symbolic link; a tenant's handler files are regular files in its directory",
                path.display()
            ));
            continue;
        }
        match read_small(&path) {
            Ok(t) => {
                texts.insert(name, t);
            }
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    if let Some((file, text)) = &overlay.file {
        match text {
            Some(t) => texts.insert(file.clone(), t.clone()),
            None => texts.remove(file),
        };
    }
    let mut handlers = Vec::new();
    for (file, text) in texts {
        let path = tdir.join(&file);
        let parsed: TenantFile = match toml::from_str(&text) {
            Ok(f) => f,
            Err(e) => {
                let at = e
                    .span()
                    .map(|s| {
                        format!(
                            ":{}",
                            text.as_bytes()[..s.start.min(text.len())]
                                .iter()
                                .filter(|&&b| b == b'\n')
                                .count()
                                + 1
                        )
                    })
                    .unwrap_or_default();
                problems.push(format!("{}{at}: {}", path.display(), e.message().trim_end()));
                continue;
            }
        };
        for (j, mut h) in parsed.handlers.into_iter().enumerate() {
            let key = format!("{}: handlers[{j}]", path.display());
            match &h.tenant {
                Some(t) if t != tenant => problems.push(format!(
                    "{key}.tenant: `{t}` is not this directory's tenant `{tenant}`; leave it out or write `{tenant}`"
                )),
                _ => h.tenant = Some(tenant.to_owned()),
            }
            match inside(&tdir, &h.module) {
                Some(p) => h.module = p.display().to_string(),
                None => problems.push(format!(
                    "{key}.module: `{}` is outside {}; name a file in the tenant's directory, e.g. module = \"{}.wasm\"",
                    h.module,
                    tdir.display(),
                    h.name
                )),
            }
            handlers.push((key, h));
        }
    }
    if problems.is_empty() {
        Ok(handlers)
    } else {
        Err(problems)
    }
}

/// `module` as a path in `dir`: relative, with no `..`, `.` or root.
fn inside(dir: &Path, module: &str) -> Option<PathBuf> {
    let p = Path::new(module);
    let plain = !module.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    plain.then(|| dir.join(p))
}

/// Whether `path` is in `dir` once links are followed: a module a tenant
/// links to outside its directory (another tenant's, the operator's) is
/// refused.
fn confined(dir: &Path, path: &Path) -> Result<(), String> {
    let real = path
        .canonicalize()
        .map_err(|e| format!("{} cannot be read: {e}", path.display()))?;
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    if real.starts_with(&dir) {
        Ok(())
    } else {
        Err(format!(
            "{} leads outside {} through a symbolic link; put the module itself in the tenant's directory",
            path.display(),
            dir.display()
        ))
    }
}

/// Editors' and the admin API's files being written, not handler files.
fn is_temporary(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    name.starts_with('.') || name.ends_with('~') || name.ends_with(".tmp") || name.ends_with(".swp")
}

fn read_small(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".to_owned());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("is larger than {MAX_FILE_BYTES} bytes"));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot be read as UTF-8 text: {e}"))
}

/// A directory only its owner reads, made with its parents if missing.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| anyhow::anyhow!("creating the tenant directory {}: {e}", dir.display()))
}

/// Writes `bytes` to `path` (see [`crate::status::replace_file`]: no
/// link a tenant plants in its directory is followed), synced.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    crate::status::replace_file(path, bytes, true).map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_must_be_in_the_tenant_directory() {
        let d = Path::new("/srv/tenants/growth");
        assert_eq!(inside(d, "a.wasm"), Some(d.join("a.wasm")));
        assert_eq!(inside(d, "build/a.wasm"), Some(d.join("build/a.wasm")));
        for bad in ["../books/a.wasm", "/etc/a.wasm", "./a.wasm", "a/../../b.wasm", ""] {
            assert_eq!(inside(d, bad), None, "{bad}");
        }
    }

    #[test]
    fn an_admin_body_becomes_one_handler_of_the_caller() {
        let text = handler_file(
            "growth",
            "signups",
            "tables = [\"shop.user_info\"]\nsinks = [\"out\"]\n",
        )
        .unwrap();
        let f: TenantFile = toml::from_str(&text).unwrap();
        let h = &f.handlers[0];
        assert_eq!((h.name.as_str(), h.tenant.as_deref()), ("signups", Some("growth")));
        assert_eq!(h.module, "signups.wasm");
        assert_eq!(h.tables, ["shop.user_info"]);
        let e = handler_file("growth", "signups", "tenant = \"books\"\ntables = []").unwrap_err();
        assert!(e.contains("`tenant` in the body is not `growth`"), "{e}");
        let e = handler_file("growth", "signups", "name = \"other\"").unwrap_err();
        assert!(e.contains("`name`"), "{e}");
        let e = handler_file("growth", "signups", "tables = [").unwrap_err();
        assert!(e.starts_with("the body is not TOML"), "{e}");
    }

    #[test]
    fn tenant_files_are_read_with_their_problems_named() {
        let dir = crate::sink::testing::TempDir::new("deploy-tenant-files");
        let t = dir.path().join("growth");
        std::fs::create_dir(&t).unwrap();
        std::fs::write(
            t.join("a.toml"),
            "[[handlers]]\nname = \"a\"\nmodule = \"a.wasm\"\ntables = [\"shop.x\"]\n",
        )
        .unwrap();
        std::fs::write(t.join(".b.toml.tmp"), "not read").unwrap();
        let hs = read_tenant(dir.path(), "growth", &Overlay::default()).unwrap();
        assert_eq!(hs.len(), 1);
        assert_eq!(hs[0].1.tenant.as_deref(), Some("growth"));
        assert_eq!(hs[0].1.module, t.join("a.wasm").display().to_string());
        assert!(hs[0].0.ends_with("growth/a.toml: handlers[0]"), "{}", hs[0].0);

        let overlay = Overlay {
            file: Some((
                "b.toml".into(),
                Some("[[handlers]]\nname = \"b\"\ntenant = \"books\"\nmodule = \"../books/b.wasm\"\ntables = [\"shop.x\"]\nsecret = 1\n".into()),
            )),
            module: None,
        };
        let problems = read_tenant(dir.path(), "growth", &overlay).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("b.toml:6: unknown field `secret`"), "{problems:?}");

        let overlay = Overlay {
            file: Some((
                "b.toml".into(),
                Some("[[handlers]]\nname = \"b\"\ntenant = \"books\"\nmodule = \"../books/b.wasm\"\ntables = [\"shop.x\"]\n".into()),
            )),
            module: None,
        };
        let problems = read_tenant(dir.path(), "growth", &overlay).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("handlers[0].tenant: `books` is not this directory's tenant `growth`"));
        assert!(problems[1].contains("handlers[0].module: `../books/b.wasm` is outside"));

        let removed = Overlay {
            file: Some(("a.toml".into(), None)),
            module: None,
        };
        assert!(read_tenant(dir.path(), "growth", &removed).unwrap().is_empty());
    }

    #[test]
    fn links_out_of_the_tenant_directory_are_refused() {
        let dir = crate::sink::testing::TempDir::new("deploy-links");
        let t = dir.path().join("growth");
        std::fs::create_dir(&t).unwrap();
        let outside = dir.path().join("secret.toml");
        std::fs::write(
            &outside,
            "[[handlers]]\nname = \"x\"\nmodule = \"x.wasm\"\ntables = [\"s.t\"]\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(&outside, t.join("peek.toml")).unwrap();
        let problems = read_tenant(dir.path(), "growth", &Overlay::default()).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].ends_with(
                "peek.toml: is a symbolic link; a tenant's handler files are regular files in its directory"
            )
        );
        std::os::unix::fs::symlink(&outside, t.join("m.wasm")).unwrap();
        let e = confined(&t, &t.join("m.wasm")).unwrap_err();
        assert!(e.contains("leads outside"), "{e}");
        std::fs::write(t.join("own.wasm"), b"\0asm").unwrap();
        std::os::unix::fs::symlink(t.join("own.wasm"), t.join("alias.wasm")).unwrap();
        assert_eq!(
            confined(&t, &t.join("alias.wasm")),
            Ok(()),
            "a link within the directory is fine"
        );
    }
}
