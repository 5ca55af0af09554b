//! `[tenants.NAME]`: the teams that share one rowhook, as the operator
//! declares them: the tables each may read, the sinks it owns or is lent,
//! and caps on its handlers. With no `[tenants]` table every handler's
//! `tenant` is a label only; with one, every handler must belong to a
//! declared tenant and stay inside what it was given, or the config is
//! refused with each problem named.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::{HandlerPlan, Limits, OnError, TablePattern, valid_name};
use crate::problem::Problems;

/// `[tenants.NAME]`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    /// The tables its handlers may subscribe to: `db.table` or `db.*`.
    pub tables: Vec<String>,
    /// The sinks it owns: no other tenant may be granted or lent them.
    #[serde(default)]
    pub sinks: Vec<String>,
    /// Sinks the operator lends it, which other tenants may be lent too.
    #[serde(default)]
    pub lent: Vec<String>,
    /// The most handlers it may have.
    pub max_handlers: Option<u32>,
    /// The most memory its handlers may take together (the sum of their
    /// `limits.memory_mb`), in MiB.
    pub memory_mb_total: Option<u32>,
    /// The most state its handlers may keep together (the sum of their
    /// `limits.state_mb`), in MiB.
    pub state_mb_total: Option<u32>,
    /// Caps on each of its handlers' limits: a handler may set less, not more.
    pub limits: Option<RawTenantLimits>,
    /// A bearer token for the admin API that reaches this tenant's handlers
    /// only (take it from `${ENV}`).
    pub admin_token: Option<String>,
    /// The payload and key bytes its handlers may emit per second, all
    /// together, in MiB (1 to 65536); past it an emit gets `quota`.
    pub emit_mb_per_s: Option<u32>,
    /// A circuit breaker over all its handlers: `failures` timeouts and
    /// traps of any of them within `window_ms` suspend every one of them
    /// for `cooldown_ms`.
    pub breaker: Option<super::RawBreaker>,
    /// Its share of CPU, in percent of one core (1 to 100; default: an
    /// equal share of one core among the tenants). Past it in the shared
    /// loop, its lane reads on a connection of its own, where it gets no
    /// more than this much of a core.
    pub cpu_percent: Option<u32>,
}

/// `limits = { ... }` of a tenant: the most each of its handlers may set.
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawTenantLimits {
    /// `limits.memory_mb`.
    pub memory_mb: Option<u32>,
    /// `limits.time_ms`.
    pub time_ms: Option<u32>,
    /// `limits.emits_per_event`.
    pub emits_per_event: Option<u32>,
    /// `limits.emit_mb_per_event`.
    pub emit_mb_per_event: Option<u32>,
    /// `limits.state_mb`.
    pub state_mb: Option<u32>,
    /// `limits.state_keys`.
    pub state_keys: Option<u32>,
}

/// One tenant, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPlan {
    /// The tables its handlers may subscribe to.
    pub tables: Vec<TablePattern>,
    /// The sinks it owns.
    pub sinks: BTreeSet<String>,
    /// The sinks it is lent.
    pub lent: BTreeSet<String>,
    /// The most handlers it may have.
    pub max_handlers: Option<u32>,
    /// The most memory of all its handlers, in MiB.
    pub memory_mb_total: Option<u32>,
    /// The most state of all its handlers, in MiB.
    pub state_mb_total: Option<u32>,
    /// Caps on each handler's limits.
    pub limits: RawTenantLimits,
    /// The bytes its handlers may emit per second, together.
    pub emit_bytes_per_s: Option<u64>,
    /// Its breaker, over all its handlers, if it has one.
    pub breaker: Option<super::BreakerPlan>,
    /// Its share of CPU, in percent of one core, if set.
    pub cpu_percent: Option<u32>,
}

impl TenantPlan {
    /// Whether every table `pattern` can match is one of the tenant's.
    pub fn covers(&self, pattern: &TablePattern) -> bool {
        self.tables
            .iter()
            .any(|t| t.db == pattern.db && (t.table.is_none() || t.table == pattern.table))
    }

    /// Its share of one core: `cpu_percent`, or an equal share among
    /// `tenants` tenants.
    pub fn cpu_share(&self, tenants: usize) -> f64 {
        match self.cpu_percent {
            Some(pct) => f64::from(pct) / 100.0,
            None => 1.0 / tenants.max(1) as f64,
        }
    }

    /// Whether its handlers may be granted `sink`.
    pub fn may_use(&self, sink: &str) -> bool {
        self.sinks.contains(sink) || self.lent.contains(sink)
    }
}

/// Resolves `[tenants]` against the defined sinks: tables that parse, sinks
/// that exist, each owned by one tenant and lent only if nobody owns it.
pub fn resolve(
    raw: BTreeMap<String, RawTenant>,
    defined_sinks: &BTreeSet<&str>,
    problems: &mut Problems,
) -> BTreeMap<String, TenantPlan> {
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (name, t) in &raw {
        let key = format!("tenants.{name}");
        if !valid_name(name) {
            problems.push(
                key.clone(),
                format!("`{name}` is not a tenant name"),
                "use letters, digits, `_` and `-` (at most 64)",
            );
        }
        let mut tables = Vec::new();
        if t.tables.is_empty() {
            problems.push(
                format!("{key}.tables"),
                "is empty: its handlers could read no table",
                "list what the tenant may read, e.g. tables = [\"shop.orders\"] or [\"shop.*\"]",
            );
        }
        for (j, s) in t.tables.iter().enumerate() {
            match TablePattern::parse(s) {
                Ok(p) => tables.push(p),
                Err(e) => problems.push(format!("{key}.tables[{j}]"), e, "write `db.table` or `db.*`"),
            }
        }
        for (field, list) in [("sinks", &t.sinks), ("lent", &t.lent)] {
            for s in list {
                if !defined_sinks.contains(s.as_str()) {
                    problems.push(
                        format!("{key}.{field}"),
                        format!("sink `{s}` is not defined"),
                        format!("define [sinks.{s}], or remove it from the list"),
                    );
                }
            }
        }
        for s in &t.sinks {
            if let Some(first) = owners.get(s) {
                problems.push(
                    format!("{key}.sinks"),
                    format!("sink `{s}` is already owned by tenant `{first}`"),
                    "a sink has one owner; to share it, list it in `lent` of each tenant instead",
                );
            } else {
                owners.insert(s.clone(), name.clone());
            }
        }
        out.insert(
            name.clone(),
            TenantPlan {
                tables,
                // A sink another tenant owned first is not this one's.
                sinks: t.sinks.iter().filter(|s| owners[*s] == *name).cloned().collect(),
                lent: t.lent.iter().cloned().collect(),
                max_handlers: t.max_handlers,
                memory_mb_total: t.memory_mb_total,
                state_mb_total: t.state_mb_total,
                limits: t.limits.unwrap_or_default(),
                emit_bytes_per_s: t.emit_mb_per_s.map(|mb| u64::from(mb) << 20),
                breaker: t.breaker.as_ref().map(|b| tenant_breaker(b, &key, problems)),
                cpu_percent: t.cpu_percent,
            },
        );
        if let Some(pct) = t.cpu_percent
            && !(1..=100).contains(&pct)
        {
            problems.push(
                format!("{key}.cpu_percent"),
                format!("{pct} is out of range"),
                "use 1 to 100 (percent of one core), or remove the key for an equal share",
            );
        }
        if let Some(mb) = t.emit_mb_per_s
            && !(1..=65536).contains(&mb)
        {
            problems.push(
                format!("{key}.emit_mb_per_s"),
                format!("{mb} is out of range"),
                "use 1 to 65536 MiB per second, or remove the key for no rate",
            );
        }
    }
    for (name, t) in &raw {
        for s in &t.lent {
            if let Some(owner) = owners.get(s) {
                problems.push(
                    format!("tenants.{name}.lent"),
                    format!("sink `{s}` is owned by tenant `{owner}` and cannot be lent to another"),
                    format!("remove it from tenant `{owner}`'s sinks and lend it to both, or give `{name}` a sink of its own"),
                );
            }
        }
    }
    out
}

/// The tenants' admin tokens (`raw`: tenant, token); a token that is
/// short, not unique, or without an `[http]` to serve it is a problem.
pub fn admin_tokens(
    raw: &[(String, String)],
    http: Option<&super::HttpPlan>,
    problems: &mut Problems,
) -> Vec<super::TenantToken> {
    let mut out = Vec::new();
    for (i, (tenant, token)) in raw.iter().enumerate() {
        let key = format!("tenants.{tenant}.admin_token");
        if token.chars().count() < super::MIN_HTTP_TOKEN_LEN || token.trim() != token {
            problems.push(
                key,
                format!(
                    "the token is shorter than {} characters or has spaces around it",
                    super::MIN_HTTP_TOKEN_LEN
                ),
                format!(
                    "use a long random string from the environment: admin_token = \"${{{}_TOKEN}}\" (e.g. `openssl rand -hex 24`)",
                    tenant.to_uppercase().replace('-', "_")
                ),
            );
            continue;
        }
        let Some(http) = http else {
            problems.push(
                key,
                "the admin API is served by [http], which this config does not have",
                "add [http] (listen = \"127.0.0.1:9187\"), or remove the token",
            );
            continue;
        };
        let shared = (raw[..i]
            .iter()
            .find(|(_, t)| t == token)
            .map(|(other, _)| format!("tenant `{other}`")))
        .or_else(|| (http.token.as_deref() == Some(token)).then(|| "[http] token".to_owned()));
        if let Some(other) = shared {
            problems.push(
                key,
                format!("is the same as the {other}'s"),
                "give each tenant a token of its own, apart from the operator's [http] token",
            );
            continue;
        }
        out.push(super::TenantToken {
            tenant: tenant.clone(),
            token: token.clone(),
        });
    }
    out
}

/// A tenant's `breaker`: failures, window and cool-down as a handler's;
/// what becomes of the changes is each handler's own `while_suspended`.
fn tenant_breaker(raw: &super::RawBreaker, key: &str, problems: &mut Problems) -> super::BreakerPlan {
    if raw.while_suspended.is_some() || raw.hold_mb.is_some() || raw.hold_in.is_some() {
        problems.push(
            format!("{key}.breaker"),
            "while_suspended, hold_mb and hold_in are each handler's own",
            "set them in the handlers' breaker; the tenant's takes failures, window_ms and cooldown_ms",
        );
    }
    let plain = super::RawBreaker {
        failures: raw.failures,
        window_ms: raw.window_ms,
        cooldown_ms: raw.cooldown_ms,
        while_suspended: None,
        hold_mb: None,
        hold_in: None,
    };
    super::resolve_breaker(Some(plain), key, problems)
}

/// Checks handler `h` (at `key`, `handlers[i]`) against its tenant.
pub fn check_handler(tenants: &BTreeMap<String, TenantPlan>, h: &HandlerPlan, key: &str, problems: &mut Problems) {
    let Some(t) = tenants.get(&h.tenant) else {
        let declared: Vec<&str> = tenants.keys().map(String::as_str).collect();
        problems.push(
            format!("{key}.tenant"),
            format!("tenant `{}` is not declared in [tenants]", h.tenant),
            format!(
                "declare [tenants.{}] with its tables and sinks, or use one of: {}",
                h.tenant,
                declared.join(", ")
            ),
        );
        return;
    };
    let tenant = &h.tenant;
    for (j, p) in h.tables.iter().enumerate() {
        if !t.covers(p) {
            problems.push(
                format!("{key}.tables[{j}]"),
                format!("`{p}` is outside the tables of tenant `{tenant}`"),
                format!("subscribe within [tenants.{tenant}] tables, or ask the operator to add it there"),
            );
        }
    }
    for s in &h.grants.0 {
        if !t.may_use(s) {
            problems.push(
                format!("{key}.sinks"),
                format!("sink `{s}` is neither owned by nor lent to tenant `{tenant}`"),
                format!("grant one of the tenant's sinks, or add `{s}` to [tenants.{tenant}] sinks or lent"),
            );
        }
    }
    if let OnError::DeadLetter { sink } = &h.on_error
        && !t.may_use(sink)
    {
        problems.push(
            format!("{key}.dead_letter"),
            format!("sink `{sink}` is neither owned by nor lent to tenant `{tenant}`"),
            format!("use one of the tenant's sinks, or add `{sink}` to [tenants.{tenant}] sinks or lent"),
        );
    }
    let l = &h.limits;
    let time_ms = u32::try_from(l.time.as_millis()).unwrap_or(u32::MAX);
    for (field, value, cap, unit) in [
        ("memory_mb", l.memory_mb, t.limits.memory_mb, "MiB"),
        ("time_ms", time_ms, t.limits.time_ms, "ms"),
        ("emits_per_event", l.emits_per_event, t.limits.emits_per_event, ""),
        (
            "emit_mb_per_event",
            l.emit_mb_per_event,
            t.limits.emit_mb_per_event,
            "MiB",
        ),
        ("state_mb", l.state_mb, t.limits.state_mb, "MiB"),
        ("state_keys", l.state_keys, t.limits.state_keys, "keys"),
    ] {
        if let Some(cap) = cap
            && value > cap
        {
            let unit = if unit.is_empty() {
                String::new()
            } else {
                format!(" {unit}")
            };
            problems.push(
                format!("{key}.limits.{field}"),
                format!("{value}{unit} (set, or the default) is above the {cap}{unit} tenant `{tenant}` allows"),
                format!("set limits.{field} to {cap} or less"),
            );
        }
    }
}

/// Checks what the tenants' handlers add up to: how many each has and
/// their memory together.
pub fn check_totals(tenants: &BTreeMap<String, TenantPlan>, handlers: &[HandlerPlan], problems: &mut Problems) {
    for (name, t) in tenants {
        let own: Vec<&HandlerPlan> = handlers.iter().filter(|h| &h.tenant == name).collect();
        if let Some(max) = t.max_handlers
            && own.len() > max as usize
        {
            problems.push(
                format!("tenants.{name}.max_handlers"),
                format!("tenant `{name}` has {} handlers, more than its {max}", own.len()),
                format!("remove handlers of `{name}`, or raise max_handlers"),
            );
        }
        for (field, each, total) in [
            (
                "memory_mb",
                (|l: &Limits| l.memory_mb) as fn(&Limits) -> u32,
                t.memory_mb_total,
            ),
            ("state_mb", |l: &Limits| l.state_mb, t.state_mb_total),
        ] {
            let sum: u64 = own.iter().map(|h| u64::from(each(&h.limits))).sum();
            if let Some(total) = total
                && sum > u64::from(total)
            {
                problems.push(
                    format!("tenants.{name}.{field}_total"),
                    format!("the handlers of tenant `{name}` may take {sum} MiB together (their limits.{field}), more than its {total} MiB"),
                    format!("lower its handlers' limits.{field}, or raise {field}_total"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ConfigError, Plan};

    /// Three teams, as the README's example has them.
    const THREE: &str = r#"
[sinks.signups]
kind = "stdout"
[sinks.orders-out]
kind = "stdout"
[sinks.audit]
kind = "stdout"
[sinks.blocked]
kind = "stdout"

[tenants.growth]
tables = ["shop.user_info"]
sinks = ["signups"]
lent = ["audit"]
max_handlers = 2
limits = { memory_mb = 32, time_ms = 50 }

[tenants.orders]
tables = ["shop.orders", "shop.order_items"]
sinks = ["orders-out"]
lent = ["audit"]
memory_mb_total = 128

[tenants.edge]
tables = ["web.*"]
sinks = ["blocked"]

[[handlers]]
name = "daily-signups"
tenant = "growth"
module = "a.wasm"
tables = ["shop.user_info"]
sinks = ["signups", "audit"]
limits = { memory_mb = 16, time_ms = 50 }

[[handlers]]
name = "orders-copy"
tenant = "orders"
module = "b.wasm"
tables = ["shop.orders"]
sinks = ["orders-out"]
on_error = "dead-letter"
dead_letter = "audit"

[[handlers]]
name = "ip-block"
tenant = "edge"
module = "c.wasm"
tables = ["web.hits", "web.*"]
sinks = ["blocked"]
"#;

    fn problems(text: &str) -> Vec<String> {
        match Plan::parse(text, Path::new("/etc/rowhook/rowhook.toml"), |_| None) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(|p| format!("{}: {}", p.key, p.what)).collect()
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn three_tenants_within_their_grants_resolve() {
        let plan = Plan::parse(THREE, Path::new("/etc/rowhook/rowhook.toml"), |_| None).unwrap();
        assert_eq!(plan.tenants.keys().collect::<Vec<_>>(), ["edge", "growth", "orders"]);
        assert!(plan.tenants["growth"].may_use("audit"));
        assert!(!plan.tenants["growth"].may_use("orders-out"));
        assert_eq!(plan.tenants["growth"].limits.memory_mb, Some(32));
    }

    #[test]
    fn each_step_outside_a_tenant_is_named() {
        let bad = THREE
            .replace(
                "tables = [\"shop.user_info\"]\nsinks = [\"signups\", \"audit\"]\nlimits = { memory_mb = 16, time_ms = 50 }",
                "tables = [\"shop.user_info\", \"shop.*\", \"web.hits\"]\nsinks = [\"signups\", \"blocked\"]\nlimits = { memory_mb = 64, time_ms = 50 }",
            )
            .replace("dead_letter = \"audit\"", "dead_letter = \"signups\"")
            .replace("tenant = \"edge\"", "tenant = \"nobody\"")
            .replace("sinks = [\"orders-out\"]\nlent", "sinks = [\"orders-out\", \"signups\"]\nlent")
            .replace("[tenants.edge]\ntables = [\"web.*\"]\nsinks = [\"blocked\"]", "[tenants.edge]\ntables = [\"web.*\"]\nlent = [\"blocked\", \"orders-out\", \"nowhere\"]");
        assert_eq!(
            problems(&bad),
            [
                "tenants.edge.lent: sink `nowhere` is not defined",
                "tenants.orders.sinks: sink `signups` is already owned by tenant `growth`",
                "tenants.edge.lent: sink `orders-out` is owned by tenant `orders` and cannot be lent to another",
                "handlers[0].tables[1]: `shop.*` is outside the tables of tenant `growth`",
                "handlers[0].tables[2]: `web.hits` is outside the tables of tenant `growth`",
                "handlers[0].sinks: sink `blocked` is neither owned by nor lent to tenant `growth`",
                "handlers[0].limits.memory_mb: 64 MiB (set, or the default) is above the 32 MiB tenant `growth` allows",
                "handlers[1].dead_letter: sink `signups` is neither owned by nor lent to tenant `orders`",
                "handlers[2].tenant: tenant `nobody` is not declared in [tenants]",
            ]
        );
    }

    #[test]
    fn counts_and_memory_add_up_per_tenant() {
        let more = format!(
            "{THREE}\n[[handlers]]\nname = \"signups-2\"\ntenant = \"growth\"\nmodule = \"d.wasm\"\ntables = [\"shop.user_info\"]\nlimits = {{ memory_mb = 32, time_ms = 50 }}\n\
             \n[[handlers]]\nname = \"signups-3\"\ntenant = \"growth\"\nmodule = \"e.wasm\"\ntables = [\"shop.user_info\"]\nlimits = {{ memory_mb = 32, time_ms = 50 }}\n\
             \n[[handlers]]\nname = \"orders-2\"\ntenant = \"orders\"\nmodule = \"f.wasm\"\ntables = [\"shop.order_items\"]\nlimits = {{ memory_mb = 96 }}\n"
        );
        assert_eq!(
            problems(&more),
            [
                "tenants.growth.max_handlers: tenant `growth` has 3 handlers, more than its 2",
                "tenants.orders.memory_mb_total: the handlers of tenant `orders` may take 160 MiB together (their limits.memory_mb), more than its 128 MiB",
            ]
        );
    }

    #[test]
    fn each_tenant_token_is_long_its_own_and_served() {
        let with = |growth: &str, orders: &str, http: &str| {
            THREE
                .replace(
                    "max_handlers = 2",
                    &format!("max_handlers = 2\nadmin_token = \"{growth}\""),
                )
                .replace(
                    "memory_mb_total = 128",
                    &format!("memory_mb_total = 128\nadmin_token = \"{orders}\""),
                )
                + http
        };
        let http = "\n[http]\nlisten = \"127.0.0.1:0\"\ntoken = \"operator-token-0123456789\"\n";
        let plan = Plan::parse(
            &with("growth-token-0123456789", "orders-token-0123456789", http),
            Path::new("/etc/rowhook/rowhook.toml"),
            |_| None,
        )
        .unwrap();
        let tokens: Vec<(&str, &str)> = (plan.http.as_ref().unwrap().tenants.iter())
            .map(|t| (t.tenant.as_str(), t.token.as_str()))
            .collect();
        assert_eq!(
            tokens,
            [
                ("growth", "growth-token-0123456789"),
                ("orders", "orders-token-0123456789")
            ]
        );
        assert!(!format!("{:?}", plan.http).contains("growth-token"), "never in Debug");
        assert_eq!(
            problems(&with("tiny-tok", "operator-token-0123456789", http)),
            [
                "tenants.growth.admin_token: the token is shorter than 16 characters or has spaces around it",
                "tenants.orders.admin_token: is the same as the [http] token's",
            ]
        );
        assert_eq!(
            problems(&with("growth-token-0123456789", "growth-token-0123456789", http)),
            ["tenants.orders.admin_token: is the same as the tenant `growth`'s"]
        );
        assert_eq!(
            problems(&with("growth-token-0123456789", "orders-token-0123456789", "")),
            [
                "tenants.growth.admin_token: the admin API is served by [http], which this config does not have",
                "tenants.orders.admin_token: the admin API is served by [http], which this config does not have",
            ]
        );
    }

    #[test]
    fn an_emit_rate_is_in_mib_per_second_within_its_range() {
        let with = |mb: u32| {
            THREE.replace(
                "sinks = [\"blocked\"]\n\n",
                &format!("sinks = [\"blocked\"]\nemit_mb_per_s = {mb}\n\n"),
            )
        };
        let plan = Plan::parse(&with(8), Path::new("/etc/rowhook/rowhook.toml"), |_| None).unwrap();
        assert_eq!(plan.tenants["edge"].emit_bytes_per_s, Some(8 << 20));
        assert_eq!(plan.tenants["growth"].emit_bytes_per_s, None);
        assert_eq!(problems(&with(0)), ["tenants.edge.emit_mb_per_s: 0 is out of range"]);
    }

    #[test]
    fn a_cpu_share_is_a_percent_of_one_core_or_an_equal_share() {
        let with = |pct: u32| {
            THREE.replace(
                "sinks = [\"blocked\"]\n\n",
                &format!("sinks = [\"blocked\"]\ncpu_percent = {pct}\n\n"),
            )
        };
        let plan = Plan::parse(&with(25), Path::new("/etc/rowhook/rowhook.toml"), |_| None).unwrap();
        assert_eq!(plan.tenants["edge"].cpu_share(3), 0.25);
        assert_eq!(plan.tenants["growth"].cpu_share(3), 1.0 / 3.0);
        assert_eq!(problems(&with(0)), ["tenants.edge.cpu_percent: 0 is out of range"]);
        assert_eq!(problems(&with(101)), ["tenants.edge.cpu_percent: 101 is out of range"]);
    }

    #[test]
    fn state_keys_and_state_in_all_are_capped_per_tenant() {
        let text = THREE
            .replace(
                "limits = { memory_mb = 32, time_ms = 50 }\n\n[tenants.orders]",
                "limits = { memory_mb = 32, time_ms = 50, state_keys = 1000 }\nstate_mb_total = 100\n\n[tenants.orders]",
            )
            .replace(
                "limits = { memory_mb = 16, time_ms = 50 }",
                "limits = { memory_mb = 16, time_ms = 50, state_mb = 128 }",
            );
        assert_eq!(
            problems(&text),
            [
                "handlers[0].limits.state_keys: 1000000 keys (set, or the default) is above the 1000 keys tenant `growth` allows",
                "tenants.growth.state_mb_total: the handlers of tenant `growth` may take 128 MiB together (their limits.state_mb), more than its 100 MiB",
            ]
        );
    }

    #[test]
    fn a_tenant_breaker_counts_failures_and_leaves_the_changes_to_each_handler() {
        let with = |b: &str| {
            THREE.replace(
                "sinks = [\"blocked\"]\n\n",
                &format!("sinks = [\"blocked\"]\nbreaker = {b}\n\n"),
            )
        };
        let plan = Plan::parse(
            &with("{ failures = 20, cooldown_ms = 5000 }"),
            Path::new("/etc/rowhook/rowhook.toml"),
            |_| None,
        )
        .unwrap();
        let b = plan.tenants["edge"].breaker.unwrap();
        assert_eq!((b.failures, b.cooldown.as_millis(), b.hold_bytes), (20, 5000, None));
        assert_eq!(plan.tenants["growth"].breaker, None);
        assert_eq!(
            problems(&with("{ failures = 20, while_suspended = \"hold\" }")),
            ["tenants.edge.breaker: while_suspended, hold_mb and hold_in are each handler's own"]
        );
    }

    #[test]
    fn without_tenants_the_tenant_is_a_label() {
        let plain = "[sinks.out]\nkind = \"stdout\"\n[[handlers]]\nname = \"a\"\ntenant = \"anyone\"\nmodule = \"a.wasm\"\ntables = [\"x.*\"]\nsinks = [\"out\"]\n";
        assert_eq!(problems(plain), Vec::<String>::new());
    }
}
