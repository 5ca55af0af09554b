//! `rowhook check`: is the server ready to feed rowhook, and will a config
//! run? Each problem is named with what fixes it.

use std::time::Instant;

use crate::config::{OnError, Plan};
pub use crate::probe::CheckLine;
use crate::probe::writable_dir;
use crate::runtime::{HandlerRuntime, LoadError};
use crate::source::server::{self, ProblemKind, ServerInfo, SourceUrl};

/// Checks the server behind `url` for use with replica id `server_id`.
pub async fn check_server(url: &SourceUrl, server_id: u32) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    let mut conn = match url.connect().await {
        Ok(c) => c,
        Err(e) => {
            lines.push(CheckLine {
                ok: false,
                text: format!("{e:#}"),
            });
            return lines;
        }
    };
    let info = match ServerInfo::read(&mut conn).await {
        Ok(i) => i,
        Err(e) => {
            lines.push(CheckLine {
                ok: false,
                text: url.scrub(&format!("reading server settings: {e:#}")),
            });
            return lines;
        }
    };
    lines.push(CheckLine {
        ok: true,
        text: format!("connected to {url} ({})", info.version),
    });
    let problems = info.problems();
    for (setting, kind) in [
        ("binary log on", ProblemKind::LogBin),
        ("binlog_format=ROW", ProblemKind::Format),
        ("binlog_row_image=FULL", ProblemKind::RowImage),
        ("binlog_row_metadata=FULL", ProblemKind::RowMetadata),
    ] {
        if !problems.iter().any(|p| p.kind == kind) {
            lines.push(CheckLine {
                ok: true,
                text: setting.to_string(),
            });
        }
    }
    lines.extend(problems.into_iter().map(|p| CheckLine {
        ok: false,
        text: p.to_string(),
    }));
    if info.log_bin
        && let Some(text) = info.retention()
    {
        lines.push(CheckLine { ok: true, text });
    }
    match server::server_id_problem(&mut conn, &info, server_id).await {
        Some(p) => lines.push(CheckLine {
            ok: false,
            text: p.to_string(),
        }),
        None => lines.push(CheckLine {
            ok: true,
            text: format!("server_id {server_id} is free"),
        }),
    }
    match server::missing_grants(&mut conn).await {
        Ok(missing) if missing.is_empty() => lines.push(CheckLine {
            ok: true,
            text: "grants REPLICATION SLAVE and REPLICATION CLIENT".into(),
        }),
        Ok(missing) => lines.extend(missing.into_iter().map(|p| CheckLine {
            ok: false,
            text: p.to_string(),
        })),
        Err(e) => lines.push(CheckLine {
            ok: false,
            text: url.scrub(&format!("cannot read the user's grants: {e:#}")),
        }),
    }
    let _ = conn.disconnect().await;
    lines
}

/// Checks what an initial snapshot needs (`[source] snapshot =
/// "initial"`): a server that places snapshots in its binlog, and each
/// subscribed table readable by the snapshot user, with a key to read it by.
pub async fn check_snapshot(plan: &Plan) -> Vec<CheckLine> {
    let Some(source) = plan.source.as_ref().filter(|s| s.snapshot.initial) else {
        return Vec::new();
    };
    let url = &source.snapshot.url;
    let mut conn = match url.connect().await {
        Ok(c) => c,
        Err(e) => return vec![fail(format!("snapshot: {e:#}"))],
    };
    if let Err(e) = crate::snapshot::reader::places_snapshots(&mut conn).await {
        return vec![fail(format!("snapshot: {e:#}"))];
    }
    let tables = match crate::cli::snapshot::subscribed(&mut conn, plan).await {
        Ok(t) => t,
        Err(e) => {
            return vec![fail(
                url.scrub(&format!("snapshot: listing the subscribed tables: {e:#}")),
            )];
        }
    };
    let mut lines = Vec::new();
    let mut readable = 0;
    for (n, t) in tables.iter().enumerate() {
        match crate::snapshot::reader::readable(&mut conn, url, t, n as u64).await {
            Ok(_) => readable += 1,
            Err(e) => lines.push(fail(format!("snapshot: {e:#}"))),
        }
    }
    if readable > 0 {
        lines.insert(
            0,
            ok(format!(
                "snapshot: {readable} subscribed tables readable by {url}, each with a key to read it in chunks by"
            )),
        );
    }
    let _ = conn.disconnect().await;
    lines
}

/// The report of a handler's trial calls (see [`super::trial`]).
/// The line of a trial's outcome: not ok for a handler whose memory grows
/// toward its cap, or that fails for good on real rows.
pub(crate) fn trial_line(
    h: &crate::config::HandlerPlan,
    sample: &super::trial::Samples,
    real: bool,
    t: &super::trial::Trial,
) -> CheckLine {
    use super::trial::{CALLS, LEAK_HORIZON, WARM_UP};
    let mib = |b: usize| b as f64 / f64::from(1 << 20);
    let mut text = format!("handler `{}`: {} calls with {}", h.name, t.calls, sample.from);
    if let Some(broke) = &t.broke {
        text.push_str(&format!(": call {} failed for good: {broke}", t.calls));
        if !real {
            text.push_str("; pass --binlog FILE to try real rows");
            return ok(text);
        }
        return fail(format!("{text}; the handler's on_error applies to such a change"));
    }
    match t.errors {
        0 => text.push_str(": every call returned ok"),
        n => text.push_str(&format!(
            ": {n} returned an error (first: {})",
            t.first_error.as_deref().unwrap_or_default()
        )),
    }
    let (warm, end) = t.memory;
    text.push_str(&format!(
        "; memory {:.1} MiB after {WARM_UP} calls, {:.1} MiB after {}",
        mib(warm),
        mib(end),
        t.calls
    ));
    let cap = h.limits.memory_bytes();
    match t.calls_to_cap(cap) {
        None => {
            text.push_str(": flat");
            ok(text)
        }
        Some(left) => {
            text.push_str(&format!(
                ": it grows ~{:.0} bytes per call and reaches memory_mb = {} after about {left} more calls",
                t.growth_per_call(),
                h.limits.memory_mb
            ));
            if left < LEAK_HORIZON && t.calls == CALLS {
                fail(format!(
                    "{text}; the build keeps memory from every call (a leaking language runtime or a cache without bound): find what it keeps, or raise limits.memory_mb if it levels off"
                ))
            } else {
                ok(text)
            }
        }
    }
}

/// What `rowhook check` tries of a deployed handler, off the pipeline (see
/// [`crate::deploy::Tryout`]): `module`
/// starts within `h`'s limits, and a thousand calls with changes made up
/// from its subscription do not grow its memory toward the cap.
pub fn try_deployed(
    runtime: &HandlerRuntime,
    plan: &Plan,
    h: &crate::config::HandlerPlan,
    module: &crate::runtime::Module,
) -> Result<(), String> {
    let grants = crate::pipeline::grants_of(plan, h, |_| crate::sink::SinkLimits::default(), None);
    let mut instance = runtime
        .instantiate(module, &h.name, grants, crate::pipeline::runtime_limits(h))
        .map_err(|e| {
            format!(
                "{e:#}; if the memory limit is the cause, raise limits.memory_mb (now {})",
                h.limits.memory_mb
            )
        })?;
    let sample = super::trial::synthetic(h);
    let outcome = super::trial::run(&mut instance, &sample.changes);
    let line = trial_line(h, &sample, false, &outcome);
    if line.ok { Ok(()) } else { Err(line.text) }
}

fn ok(text: String) -> CheckLine {
    CheckLine::ok(text)
}

fn fail(text: String) -> CheckLine {
    CheckLine::fail(text)
}

/// What to do about a module that cannot load.
fn load_fix(e: &LoadError) -> &'static str {
    match e {
        LoadError::Read { .. } => {
            "build the handler (cargo build --release --target wasm32-wasip2) or point `module` at the built .wasm"
        }
        LoadError::CoreModule { .. } => "link it into a component, as the error says",
        LoadError::NotAFile { .. } | LoadError::NotWasm { .. } => {
            "point `module` at the handler's built .wasm component"
        }
        LoadError::TooLarge { .. } => {
            "raise the handler's limits.module_mb if the module is meant to be that large, or point `module` at the right file"
        }
        LoadError::Invalid { .. } => {
            "build the handler as a WebAssembly component for wasm32-wasip2 (a core module must be wrapped with `wasm-tools component new`)"
        }
        LoadError::ForbiddenImport { .. } => {
            "handlers reach the outside only by emitting to the sinks they are granted"
        }
        LoadError::WrongWorld { .. } => {
            "build the handler against guest-sdk/wit (world rowhook:handler/handler, exporting on-change), e.g. with rowhook-guest's export_handler!"
        }
    }
}

/// Checks what a config needs besides the server: every handler's module
/// compiles, asks only for what handlers are given, implements the handler
/// world and starts within its memory limit; every sink and the state
/// directory can be written where the config says. Each handler is then
/// called a thousand times ([`super::trial`]) with the changes of its
/// tables in `binlog`, or else with changes made up from `shapes` (its
/// tables as the server describes them, see [`super::shapes`]). Call it
/// outside any async runtime (instantiating a handler may run WASI code).
pub fn check_plan(
    plan: &Plan,
    binlog: &[std::path::PathBuf],
    shapes: &std::collections::HashMap<String, Vec<super::shapes::TableShape>>,
) -> Vec<CheckLine> {
    let mut lines = vec![ok(format!(
        "config {}: {} sink(s), {} handler(s)",
        plan.file.display(),
        plan.sinks.len(),
        plan.handlers.len()
    ))];
    for (name, spec) in &plan.sinks {
        lines.push(spec.probe(name));
    }
    lines.push(match writable_dir(&plan.state.path) {
        Ok(()) => ok(format!("state directory {} is writable", plan.state.path.display())),
        Err(e) => fail(format!(
            "state directory {}: {e}; create it or set [state] path to a writable directory",
            plan.state.path.display()
        )),
    });
    let mut samples = std::collections::HashMap::new();
    if !binlog.is_empty() {
        match super::trial::from_binlog(plan, binlog) {
            Ok(s) => samples = s,
            Err(e) => lines.push(fail(format!("reading --binlog: {e:#}"))),
        }
    }
    let runtime = match HandlerRuntime::new() {
        Ok(r) => r.with_compile_cache(plan.state.compile_cache_dir()),
        Err(e) => {
            lines.push(fail(format!("{e:#}")));
            return lines;
        }
    };
    for h in &plan.handlers {
        let started = Instant::now();
        let module = match runtime.load(&h.module, h.limits.module_bytes()) {
            Ok(m) => m,
            Err(e) => {
                lines.push(fail(format!("handler `{}`: {e}; {}", h.name, load_fix(&e))));
                continue;
            }
        };
        let compiled = started.elapsed();
        let grants = crate::pipeline::grants_of(plan, h, |_| crate::sink::SinkLimits::default(), None);
        let limits = crate::pipeline::runtime_limits(h);
        let how = match module.origin() {
            crate::runtime::cache::Origin::Cached => "loads from the compile cache",
            crate::runtime::cache::Origin::Compiled => "compiles",
        };
        let instantiating = Instant::now();
        match runtime.instantiate(&module, &h.name, grants, limits) {
            Ok(mut instance) => {
                lines.push(ok(format!(
                "handler `{}`: {} {how} ({} ms), imports only what handlers are given and starts in {} ms within memory_mb = {} ({:.1} MiB used, {} core instances); limits time_ms = {}, emits_per_event = {}, state_mb = {}",
                h.name,
                h.module.display(),
                compiled.as_millis(),
                instantiating.elapsed().as_millis(),
                h.limits.memory_mb,
                instance.memory_bytes() as f64 / f64::from(1 << 20),
                module.core_instances(),
                limits.time_ms,
                h.limits.emits_per_event,
                h.limits.state_mb
                )));
                let sample = match (samples.remove(&h.name), shapes.get(&h.name)) {
                    (Some(s), _) if !s.changes.is_empty() => s,
                    (_, Some(tables)) if !tables.is_empty() => super::shapes::samples(h, tables),
                    _ => super::trial::synthetic(h),
                };
                let real = !binlog.is_empty() && !sample.from.contains("made-up");
                lines.push(trial_line(
                    h,
                    &sample,
                    real,
                    &super::trial::run(&mut instance, &sample.changes),
                ));
            }
            Err(e) => {
                let e = format!("{e:#}");
                let fix = if e.contains("limits.") {
                    String::new()
                } else {
                    format!(
                        "; if the memory limit is the cause, raise limits.memory_mb (now {})",
                        h.limits.memory_mb
                    )
                };
                lines.push(fail(format!("handler `{}`: {e}{fix}", h.name)));
            }
        }
        let granted: Vec<&str> = h.grants.iter().collect();
        let mut text = format!(
            "handler `{}` (tenant `{}`): tables {}, may emit to {}",
            h.name,
            h.tenant,
            h.tables.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", "),
            if granted.is_empty() {
                "no sink".to_string()
            } else {
                granted.join(", ")
            }
        );
        if let OnError::DeadLetter { sink } = &h.on_error {
            text.push_str(&format!(", dead letters to {sink}"));
        }
        lines.push(ok(text));
    }
    lines
}
