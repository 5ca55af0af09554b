//! `[cluster]`: the NATS JetStream deployment `rowhook capture` publishes
//! to, parsed as written and resolved into a [`ClusterPlan`].

use std::time::Duration;

use serde::Deserialize;

use crate::problem::SinkContext;
use crate::sink::nats::NatsServer;
use crate::sink::nats::config::{NatsKeys, resolve_server};

/// `[cluster]`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// The JetStream servers, `nats://HOST:PORT`, separated by commas (list
    /// every node of a cluster). Credentials go in `user`/`password`,
    /// `token`, `nkey` or `creds_file`, not in the URL.
    pub nats: String,
    /// The source's name: the second token of every subject
    /// (`rowhook.NAME.DB.TABLE.PARTITION`). Letters, digits, `_`, `-`
    /// (default `main`).
    pub source: Option<String>,
    /// The workers' group: workers of one group share the partitions, each
    /// group handles every change (default `workers`). Letters, digits,
    /// `_`, `-`.
    pub group: Option<String>,
    /// The JetStream stream the changes go to (default `ROWHOOK_` and the
    /// source name in upper case); its key-value buckets are named after it.
    pub stream: Option<String>,
    /// How many partitions the changes are spread over, by a hash of each
    /// row's primary key: 1 to 4096 (default 16). Fixed when the stream is
    /// created.
    pub partitions: Option<u32>,
    /// Copies JetStream keeps of the stream and the buckets: 1 to 5
    /// (default 1; 3 in a three-node cluster).
    pub replicas: Option<u32>,
    /// How long a lease lasts without being renewed, 1000 to 600000 ms
    /// (default 10000): a standby capture takes over within about this
    /// long after the holder died.
    pub lease_ttl_ms: Option<u64>,
    /// How long JetStream remembers a message id to drop a copy published
    /// again, in seconds, 10 to 86400 (default 120). At least twice the
    /// lease: a takeover publishes again what was not checkpointed.
    pub duplicate_window_secs: Option<u64>,
    /// How often the capture writes its checkpoint to the bucket, 10 to
    /// 60000 ms (default 500).
    pub checkpoint_interval_ms: Option<u64>,
    /// Messages published and not yet acknowledged by JetStream, at most:
    /// 16 to 1048576 (default 32768).
    pub max_unacked: Option<u32>,
    /// How long the capture lets a partition's message gather the changes
    /// of later transactions before it publishes it, 0 to 10000 ms
    /// (default 10): the latency a change may gain, for fewer and larger
    /// messages.
    pub linger_ms: Option<u64>,
    /// How long the stream keeps a message, in hours (0, the default: for
    /// ever). A group of workers that falls further behind loses changes.
    pub max_age_hours: Option<u64>,
    /// How many MiB the stream keeps at most, the oldest messages removed
    /// first (0, the default: no limit).
    pub max_bytes_mb: Option<u64>,
    /// User name, with `password`.
    pub user: Option<String>,
    /// Password, with `user`. Write it as `${ENV_VAR}`.
    pub password: Option<String>,
    /// Authentication token. Write it as `${ENV_VAR}`.
    pub token: Option<String>,
    /// NKey seed (`SU…`). Write it as `${ENV_VAR}`.
    pub nkey: Option<String>,
    /// A `.creds` file, relative to the config file's directory unless absolute.
    pub creds_file: Option<String>,
    /// PEM file of the certificate authorities of the servers' certificates.
    pub tls_ca_file: Option<String>,
    /// PEM client certificate for mutual TLS, with `tls_key_file`.
    pub tls_cert_file: Option<String>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<String>,
    /// Require TLS even for `nats://` URLs.
    pub tls_required: Option<bool>,
}

/// `[cluster]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPlan {
    /// The servers and how to authenticate.
    pub nats: NatsServer,
    /// The source's name in subjects.
    pub source: String,
    /// The workers' group.
    pub group: String,
    /// The stream.
    pub stream: String,
    /// Partitions (fixed when the stream is created).
    pub partitions: u32,
    /// Copies of the stream and buckets.
    pub replicas: usize,
    /// A lease's time to live.
    pub lease_ttl: Duration,
    /// The stream's duplicate window.
    pub duplicate_window: Duration,
    /// How often the capture checkpoints.
    pub checkpoint_interval: Duration,
    /// The capture's window of unacknowledged messages.
    pub max_unacked: usize,
    /// How long a partition's message may wait for later transactions.
    pub linger: Duration,
    /// How long the stream keeps a message (zero: for ever).
    pub max_age: Duration,
    /// How many bytes the stream keeps (`-1`: no limit).
    pub max_bytes: i64,
}

/// The default `[cluster] partitions`.
pub const DEFAULT_PARTITIONS: u32 = 16;
/// The default `[cluster] linger_ms`.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(10);
/// The default `[cluster] lease_ttl_ms`.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

impl ClusterPlan {
    /// The bucket of the leases (a key per role: `capture`), whose entries
    /// age out after the lease's time to live.
    pub fn lease_bucket(&self) -> String {
        format!("{}_leases", self.stream)
    }

    /// The bucket of the workers' handler state, per group and partition.
    pub fn state_bucket(&self) -> String {
        format!("{}_state", self.stream)
    }

    /// The bucket of the capture's checkpoint and the stream's settings.
    pub fn checkpoint_bucket(&self) -> String {
        format!("{}_checkpoints", self.stream)
    }

    /// What every subject of this source starts with: `rowhook.SOURCE.`.
    pub fn subject_prefix(&self) -> String {
        format!("rowhook.{}.", self.source)
    }
}

/// A name JetStream takes for a stream or a bucket, and a subject token.
fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Validates `[cluster]`; every problem is reported under `cluster.KEY`.
pub fn resolve(raw: RawCluster, cx: &mut SinkContext<'_>) -> Option<ClusterPlan> {
    let keys = NatsKeys {
        url_key: "nats",
        url: &raw.nats,
        user: raw.user.as_deref(),
        password: raw.password.as_deref(),
        token: raw.token.as_deref(),
        nkey: raw.nkey.as_deref(),
        creds_file: raw.creds_file.as_deref(),
        tls_ca_file: raw.tls_ca_file.as_deref(),
        tls_cert_file: raw.tls_cert_file.as_deref(),
        tls_key_file: raw.tls_key_file.as_deref(),
        tls_required: raw.tls_required,
    };
    let nats = resolve_server(&keys, cx);
    let source = raw.source.unwrap_or_else(|| "main".into());
    let mut ok = true;
    if !valid_name(&source) {
        cx.problem(
            "source",
            format!("`{source}` is not a source name"),
            "use letters, digits, `_` and `-` (at most 64): it is a token of every subject",
        );
        ok = false;
    }
    let group = raw.group.unwrap_or_else(|| "workers".into());
    if !valid_name(&group) {
        cx.problem(
            "group",
            format!("`{group}` is not a group name"),
            "use letters, digits, `_` and `-` (at most 64): it names the partitions' consumers",
        );
        ok = false;
    }
    let stream = raw
        .stream
        .unwrap_or_else(|| format!("ROWHOOK_{}", source.to_uppercase().replace('-', "_")));
    if !valid_name(&stream) || stream.len() > 48 {
        cx.problem(
            "stream",
            format!("`{stream}` is not a stream name"),
            "use letters, digits, `_` and `-` (at most 48: the buckets add a suffix)",
        );
        ok = false;
    }
    let partitions = cx.ranged(
        "partitions",
        raw.partitions.map(u64::from),
        1..=4096,
        u64::from(DEFAULT_PARTITIONS),
        "use 1 to 4096 (default 16): more partitions than workers, so each can take a fair share",
    );
    let replicas = cx.ranged(
        "replicas",
        raw.replicas.map(u64::from),
        1..=5,
        1,
        "use 1 to 5: 3 in a three-node cluster",
    );
    let ttl = cx.ranged(
        "lease_ttl_ms",
        raw.lease_ttl_ms,
        1_000..=600_000,
        DEFAULT_LEASE_TTL.as_millis() as u64,
        "use 1000 to 600000 ms (default 10000)",
    );
    let window = cx.ranged(
        "duplicate_window_secs",
        raw.duplicate_window_secs,
        10..=86_400,
        120,
        "use 10 to 86400 s (default 120)",
    );
    let interval = cx.ranged(
        "checkpoint_interval_ms",
        raw.checkpoint_interval_ms,
        10..=60_000,
        500,
        "use 10 to 60000 ms (default 500)",
    );
    let unacked = cx.ranged(
        "max_unacked",
        raw.max_unacked.map(u64::from),
        16..=1_048_576,
        32_768,
        "use 16 to 1048576 (default 32768)",
    );
    let linger = cx.ranged(
        "linger_ms",
        raw.linger_ms,
        0..=10_000,
        DEFAULT_LINGER.as_millis() as u64,
        "use 0 (publish at every commit) to 10000 ms (default 10)",
    );
    let max_age = cx.ranged(
        "max_age_hours",
        raw.max_age_hours,
        0..=87_600,
        0,
        "use 0 (keep every message) to 87600 hours",
    );
    let max_bytes = cx.ranged(
        "max_bytes_mb",
        raw.max_bytes_mb,
        0..=1 << 30,
        0,
        "use 0 (no limit) or a size in MiB",
    );
    if let (Some(ttl), Some(window)) = (ttl, window)
        && window * 1000 < 2 * ttl
    {
        cx.problem(
            "duplicate_window_secs",
            format!("{window} s is less than twice the lease ({ttl} ms)"),
            "a capture that takes over publishes again what was not checkpointed: make the window at least twice lease_ttl_ms",
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    Some(ClusterPlan {
        nats: nats?,
        source,
        group,
        stream,
        partitions: partitions? as u32,
        replicas: replicas? as usize,
        lease_ttl: Duration::from_millis(ttl?),
        duplicate_window: Duration::from_secs(window?),
        checkpoint_interval: Duration::from_millis(interval?),
        max_unacked: unacked? as usize,
        linger: Duration::from_millis(linger?),
        max_age: Duration::from_secs(max_age? * 3600),
        max_bytes: match max_bytes? {
            0 => -1,
            mb => (mb as i64) << 20,
        },
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, Plan};

    fn parse(text: &str) -> Result<Plan, ConfigError> {
        crate::config::parse_with_env(text, &[])
    }

    fn problems(text: &str) -> Vec<String> {
        crate::config::problem_lines(parse(text))
    }

    #[test]
    fn defaults_follow_the_source_name() {
        let plan = parse("[cluster]\nnats = \"nats://127.0.0.1:4222\"\nsource = \"shop-eu\"\n").unwrap();
        let c = plan.cluster.unwrap();
        assert_eq!(c.stream, "ROWHOOK_SHOP_EU");
        assert_eq!(c.partitions, 16);
        assert_eq!(c.replicas, 1);
        assert_eq!(c.lease_ttl.as_millis(), 10_000);
        assert_eq!(c.linger.as_millis(), 10);
        assert_eq!(c.subject_prefix(), "rowhook.shop-eu.");
        assert_eq!(c.lease_bucket(), "ROWHOOK_SHOP_EU_leases");
        assert_eq!(
            (c.max_age.as_secs(), c.max_bytes),
            (0, -1),
            "the stream keeps everything"
        );
        let c = parse("[cluster]\nnats = \"nats://h:4222\"\nmax_age_hours = 48\nmax_bytes_mb = 512\n")
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!((c.max_age.as_secs(), c.max_bytes), (48 * 3600, 512 << 20));
    }

    #[test]
    fn the_example_deployment_config_resolves() {
        let text = include_str!("../../../examples/ops/cluster/rowhook.toml");
        let plan = crate::config::parse_with_env(
            text,
            &[("ROWHOOK_DB_PASSWORD", "db"), ("ROWHOOK_NATS_PASSWORD", "nats")],
        )
        .unwrap();
        let c = plan.cluster.unwrap();
        assert_eq!(c.nats.servers.len(), 3);
        assert_eq!((c.partitions, c.replicas, c.stream.as_str()), (32, 3, "ROWHOOK_SHOP"));
    }

    #[test]
    fn bad_keys_are_named_with_a_fix() {
        let lines = problems(
            "[cluster]\nnats = \"\"\nsource = \"a.b\"\npartitions = 0\nlinger_ms = 20000\nlease_ttl_ms = 100000\nduplicate_window_secs = 60\nmax_age_hours = 100000\n",
        );
        let joined = lines.join("\n");
        for key in [
            "cluster.nats",
            "cluster.source",
            "cluster.partitions",
            "cluster.linger_ms",
            "cluster.duplicate_window_secs",
            "cluster.max_age_hours",
        ] {
            assert!(joined.contains(key), "{key} missing from {joined}");
        }
    }
}
