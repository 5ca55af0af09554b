// rowhook's dashboard: reads /metrics (Prometheus text) and /readyz once a
// second and the status report from /events (Server-Sent Events), and
// draws what they say. Every text from the run (handler, sink and metric names, error
// messages) goes into the page as text, never as markup.
"use strict";

const EVERY_MS = 1000;
// Samples each chart keeps: two minutes at one a second.
const KEEP = 120;
// Seconds of calls the p99 call time is taken over.
const P99_WINDOW = 10;
// Series drawn per handler, the last by name (a gauge per day: the latest days).
const MAX_SERIES = 48;

const samplesOf = new Map(); // series key -> [[t, value]]
const bucketsAt = []; // [t, Map(handler -> [[le, cumulative]])], oldest first
let previous = null; // {t, changes, calls: Map, sinks: Map}
let status = null; // the latest status report

// One line of Prometheus text: `name{label="value",…} value`.
const LINE = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function unescapeLabel(v) {
  return v.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
}

function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(LABEL)) labels[l[1]] = unescapeLabel(l[2]);
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c !== undefined && c !== null) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

const number = new Intl.NumberFormat("en", { maximumFractionDigits: 3 });
function fmt(v) {
  return Number.isFinite(v) ? number.format(v) : "—";
}
function seconds(s) {
  if (!Number.isFinite(s)) return "—";
  if (s === 0) return "0 s";
  if (s < 1e-3) return `${number.format(s * 1e6)} µs`;
  if (s < 1) return `${number.format(s * 1e3)} ms`;
  return `${number.format(s)} s`;
}
function bytes(n) {
  if (!Number.isFinite(n)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${number.format(i === 0 ? n : Math.round(n * 10) / 10)} ${units[i]}`;
}
function ago(unix) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - unix));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return new Date(unix * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function handlerKey(labels) {
  return `${labels.tenant}/${labels.handler}`;
}

// Sums series of `name` by `key(labels)`.
function byKey(samples, name, key, where) {
  const m = new Map();
  for (const s of samples) {
    if (s.name !== name || (where && !where(s.labels))) continue;
    const k = key(s.labels);
    m.set(k, (m.get(k) || 0) + s.value);
  }
  return m;
}

function sum(samples, name) {
  let total = 0;
  let seen = false;
  for (const s of samples) {
    if (s.name === name) {
      total += s.value;
      seen = true;
    }
  }
  return seen ? total : undefined;
}

// The p99 of the calls between two sets of cumulative buckets: the upper
// bound of the bucket the 99th percentile falls in.
function p99(now, before) {
  if (!now) return undefined;
  const diff = now.map(([le, n], i) => [le, n - (before ? before[i][1] : 0)]);
  const total = diff[diff.length - 1][1];
  if (total <= 0) return undefined;
  const rank = total * 0.99;
  for (const [le, n] of diff) if (n >= rank) return le;
  return undefined;
}

function rate(now, before, dt) {
  if (before === undefined || now === undefined || dt <= 0) return undefined;
  return Math.max(0, (now - before) / dt);
}

function remember(key, t, v) {
  let s = samplesOf.get(key);
  if (!s) samplesOf.set(key, (s = []));
  s.push([t, v]);
  if (s.length > KEEP) s.shift();
}

function setText(id, text, cls) {
  const e = document.getElementById(id);
  e.textContent = text;
  e.className = cls || "";
}

function drawSource(samples, t) {
  const connected = sum(samples, "rowhook_source_connected");
  if (connected === undefined) setText("source-connected", "replaying a file");
  else if (connected > 0) setText("source-connected", "connected", "ok");
  else setText("source-connected", "reconnecting", "bad");
  setText("source-lag", seconds(sum(samples, "rowhook_source_lag_seconds")));
  setText("source-behind", bytes(sum(samples, "rowhook_source_lag_bytes")));
  const changes = sum(samples, "rowhook_changes_total") || 0;
  setText("source-changes", fmt(changes));
  setText("source-rate", fmt(previous ? rate(changes, previous.changes, t - previous.t) : undefined));
  const pos = status && status.position;
  setText("source-position", pos ? `${pos.file}:${pos.pos}` : "—");
  return changes;
}

function statusOf(name) {
  return ((status && status.handlers) || []).find((h) => h.name === name);
}

function drawHandlers(samples, t) {
  const key = (l) => handlerKey(l);
  const calls = byKey(samples, "rowhook_handler_calls_total", key);
  const errors = byKey(samples, "rowhook_handler_errors_total", key);
  const halted = byKey(samples, "rowhook_handler_halted", key);
  const held = byKey(samples, "rowhook_handler_held_changes", key);
  const suspensions = byKey(samples, "rowhook_handler_suspensions_total", key);
  const tenantSuspended = byKey(samples, "rowhook_tenant_suspended", (l) => l.tenant);
  const buckets = new Map();
  for (const s of samples) {
    if (s.name !== "rowhook_handler_call_seconds_bucket") continue;
    const k = handlerKey(s.labels);
    if (!buckets.has(k)) buckets.set(k, []);
    buckets.get(k).push([s.labels.le === "+Inf" ? Infinity : Number(s.labels.le), s.value]);
  }
  bucketsAt.push([t, buckets]);
  while (bucketsAt.length > 1 && t - bucketsAt[0][0] > P99_WINDOW) bucketsAt.shift();
  const since = bucketsAt[0][1];

  const body = document.querySelector("#handlers tbody");
  const rows = [];
  for (const [k, n] of [...calls].sort(([a], [b]) => a.localeCompare(b))) {
    const name = k.slice(k.indexOf("/") + 1);
    const last = statusOf(name);
    const heldNow = held.get(k) || 0;
    let state = el("span", { class: "ok" }, "running");
    if (halted.get(k) > 0) state = el("span", { class: "bad" }, "halted");
    else if (heldNow > 0) state = el("span", { class: "warn" }, "holding");
    else if (tenantSuspended.get(k.slice(0, k.indexOf("/"))) > 0) {
      state = el("span", { class: "warn" }, "suspended by its tenant");
    }
    const lastError = last && last.last_error;
    const error = lastError
      ? el("td", { class: "error" }, lastError.message,
          el("small", {}, `${lastError.kind} at ${lastError.change}, ${ago(lastError.at)}`))
      : el("td", {}, "—");
    const before = previous && previous.calls.get(k);
    const p = p99(buckets.get(k), since.get(k)) ?? p99(buckets.get(k));
    const errs = errors.get(k) || 0;
    rows.push(
      el("tr", { "data-handler": k },
        el("th", { scope: "row" }, k),
        el("td", {}, state),
        el("td", { class: "n" }, fmt(previous ? rate(n, before, t - previous.t) : undefined)),
        el("td", { class: "n" }, fmt(n)),
        el("td", { class: errs > 0 ? "n bad" : "n" }, fmt(errs),
          suspensions.get(k) > 0 ? el("small", {}, ` (${fmt(suspensions.get(k))} suspensions)`) : null),
        el("td", { class: "n" }, seconds(p)),
        el("td", { class: "n" }, fmt(heldNow)),
        error));
  }
  if (rows.length === 0) rows.push(el("tr", {}, el("td", { colspan: 8 }, "no handler is configured")));
  body.replaceChildren(...rows);
  return calls;
}

// Per tenant: its handlers together, and its circuit breaker, if it has one.
function drawTenants(samples, t, calls) {
  const tenantOf = (k) => k.slice(0, k.indexOf("/"));
  const errors = byKey(samples, "rowhook_handler_errors_total", handlerKey);
  const halted = byKey(samples, "rowhook_handler_halted", handlerKey);
  const suspended = byKey(samples, "rowhook_tenant_suspended", (l) => l.tenant);
  const suspensions = byKey(samples, "rowhook_tenant_suspensions_total", (l) => l.tenant);
  const tenants = new Map();
  const of = (name) => {
    if (!tenants.has(name)) tenants.set(name, { handlers: 0, calls: 0, before: 0, errors: 0, halted: 0 });
    return tenants.get(name);
  };
  for (const [k, n] of calls) {
    const row = of(tenantOf(k));
    row.handlers += 1;
    row.calls += n;
    row.before += (previous && previous.calls.get(k)) || 0;
    row.errors += errors.get(k) || 0;
    row.halted += halted.get(k) > 0 ? 1 : 0;
  }
  for (const name of suspended.keys()) of(name);
  const rows = [...tenants].sort(([a], [b]) => a.localeCompare(b)).map(([name, r]) => {
    const open = suspended.get(name) > 0;
    let state = el("span", { class: "ok" }, "running");
    if (open) state = el("span", { class: "warn" }, "suspended");
    else if (r.halted > 0) state = el("span", { class: "bad" }, `${r.halted} halted`);
    const breaker = !suspended.has(name)
      ? "—"
      : `${open ? "open" : "closed"}, ${fmt(suspensions.get(name) || 0)} suspensions`;
    return el("tr", { "data-tenant": name },
      el("th", { scope: "row" }, name),
      el("td", {}, state),
      el("td", { class: "n" }, fmt(r.handlers)),
      el("td", { class: "n" }, fmt(previous ? rate(r.calls, r.before, t - previous.t) : undefined)),
      el("td", { class: r.errors > 0 ? "n bad" : "n" }, fmt(r.errors)),
      el("td", { class: open ? "warn" : "" }, breaker));
  });
  if (rows.length === 0) rows.push(el("tr", {}, el("td", { colspan: 6 }, "no handler is configured")));
  document.querySelector("#tenants tbody").replaceChildren(...rows);
}

function drawSinks(samples, t) {
  const ok = byKey(samples, "rowhook_sink_messages_total", (l) => l.sink, (l) => l.result === "ok");
  const refused = byKey(samples, "rowhook_sink_messages_total", (l) => l.sink, (l) => l.result === "refused");
  const retries = byKey(samples, "rowhook_sink_retries_total", (l) => l.sink);
  const failing = byKey(samples, "rowhook_sink_failing", (l) => l.sink);
  const names = new Set([...ok.keys(), ...refused.keys(), ...retries.keys(), ...failing.keys()]);
  const rows = [...names].sort().map((name) => {
    const n = ok.get(name) || 0;
    const before = previous && previous.sinks.get(name);
    const bad = failing.get(name) > 0;
    return el("tr", { "data-sink": name },
      el("th", { scope: "row" }, name),
      el("td", {}, el("span", { class: bad ? "bad" : "ok" }, bad ? "failing" : "ok")),
      el("td", { class: "n" }, fmt(previous ? rate(n, before, t - previous.t) : undefined)),
      el("td", { class: "n" }, fmt(n)),
      el("td", { class: "n" }, fmt(refused.get(name) || 0)),
      el("td", { class: "n" }, fmt(retries.get(name) || 0)));
  });
  if (rows.length === 0) rows.push(el("tr", {}, el("td", { colspan: 6 }, "no sink is configured")));
  document.querySelector("#sinks tbody").replaceChildren(...rows);
  return ok;
}

function sparkline(points) {
  const w = 120;
  const h = 40;
  const line = svg("svg", { viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none", "aria-hidden": "true" });
  if (points.length < 2) return line;
  const t0 = points[0][0];
  const span = Math.max(points[points.length - 1][0] - t0, 1e-9);
  const values = points.map((p) => p[1]);
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const range = hi - lo || 1;
  const xy = points.map(([t, v]) => {
    const x = ((t - t0) / span) * w;
    const y = hi === lo ? h / 2 : h - 2 - ((v - lo) / range) * (h - 4);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  line.append(svg("polyline", { points: xy.join(" ") }));
  return line;
}

// A bar per gauge, scaled to the largest: a handler's gauges side by side
// (one per day: the days' counts).
function bars(gauges) {
  const top = Math.max(...gauges.map((g) => Math.abs(g.value)), 1e-9);
  const list = el("div", { class: "bars", role: "list" });
  for (const g of gauges) {
    const bar = el("div", { class: "bar" });
    // Through the style object: the page's policy refuses style attributes.
    bar.style.width = `${((Math.abs(g.value) / top) * 100).toFixed(1)}%`;
    list.append(
      el("span", { role: "listitem", "aria-label": `${g.name}: ${fmt(g.value)}` }, g.name),
      el("div", { "aria-hidden": "true" }, bar),
      el("span", { class: "n", "aria-hidden": "true" }, fmt(g.value)));
  }
  return list;
}

function drawCharts(samples, t) {
  const byHandler = new Map();
  for (const s of samples) {
    const kind = s.name === "rowhook_handler_gauge" ? "gauge" : s.name === "rowhook_handler_counter_total" ? "counter" : null;
    if (!kind) continue;
    const k = handlerKey(s.labels);
    if (!byHandler.has(k)) byHandler.set(k, []);
    const series = `${k}|${kind}:${s.labels.name}`;
    remember(series, t, s.value);
    byHandler.get(k).push({ kind, name: s.labels.name, value: s.value, series });
  }
  const sections = [];
  for (const [k, all] of [...byHandler].sort(([a], [b]) => a.localeCompare(b))) {
    all.sort((a, b) => a.kind.localeCompare(b.kind) || a.name.localeCompare(b.name));
    const shown = all.length > MAX_SERIES ? all.slice(all.length - MAX_SERIES) : all;
    const section = el("section", { class: "handler-metrics", "data-handler": k, "aria-label": `metrics of ${k}` },
      el("h3", {}, k));
    const gauges = shown.filter((m) => m.kind === "gauge");
    if (gauges.length > 1) section.append(bars(gauges));
    const grid = el("div", { class: "grid" });
    for (const m of shown) {
      grid.append(el("figure", { class: "card", "data-series": `${m.kind}:${m.name}`, "data-value": String(m.value) },
        el("figcaption", {}, el("span", { class: "name", title: m.name }, m.name), el("span", {}, m.kind)),
        el("div", { class: "value", "aria-label": `${m.name}: ${fmt(m.value)}` }, fmt(m.value)),
        sparkline(samplesOf.get(m.series))));
    }
    section.append(grid);
    if (shown.length < all.length) {
      section.append(el("p", { class: "more" }, `${all.length - shown.length} more series, earlier by name, not drawn`));
    }
    sections.push(section);
  }
  if (sections.length === 0) sections.push(el("p", { class: "hint" }, "no handler has set a metric yet"));
  document.getElementById("charts").replaceChildren(...sections);
}

async function tick() {
  try {
    const reply = await fetch("/metrics", { cache: "no-store" });
    if (!reply.ok) throw new Error(`/metrics answered ${reply.status}`);
    const samples = parseMetrics(await reply.text());
    const t = performance.now() / 1000;
    const changes = drawSource(samples, t);
    const calls = drawHandlers(samples, t);
    drawTenants(samples, t, calls);
    const sinks = drawSinks(samples, t);
    drawCharts(samples, t);
    previous = { t, changes, calls, sinks };
    const ready = await fetch("/readyz", { cache: "no-store" });
    const when = `updated ${new Date().toLocaleTimeString()}`;
    if (ready.ok) setText("run", `ready, ${when}`, "ok");
    else {
      const why = await ready.json().catch(() => ({}));
      setText("run", `not ready: ${(why.reasons || [`/readyz answered ${ready.status}`]).join("; ")} (${when})`, "bad");
    }
  } catch (e) {
    setText("run", `cannot reach rowhook: ${e.message}`, "bad");
  }
}

function listen() {
  const events = new EventSource("/events");
  events.addEventListener("status", (e) => {
    try {
      status = JSON.parse(e.data);
    } catch {
      status = null;
    }
  });
}

listen();
tick();
setInterval(tick, EVERY_MS);
