//! `kind = "kafka"`: each message a record of a Kafka topic, written by an
//! idempotent producer with `acks = all`.
//!
//! - **Ack = every in-sync replica has it.** A batch is split by partition
//!   into record batches, sent to each partition's leader (several
//!   requests in flight on one connection), and `write_batch` returns `Ok`
//!   once every partition's leader answered without error: with
//!   `acks = -1`, after the in-sync replicas stored it.
//! - **Idempotent producer.** The sink asks the cluster for a producer id
//!   and numbers each partition's records. A batch that fails is kept, with
//!   its numbers, until the pipeline retries it: the retry sends only the
//!   record batches not yet acknowledged, under the same numbers, so a
//!   batch the broker stored but whose answer was lost is dropped as a
//!   duplicate (`DUPLICATE_SEQUENCE_NUMBER`), not stored twice, and order
//!   holds. A batch the pipeline gave up on is forgotten and the next one
//!   gets a new producer id. Across a restart the producer id is new, so
//!   a replay after a crash can store a record again: every record carries
//!   `rowhook-id: <change id>:<index>` for consumers that dedupe.
//! - **Partitions.** A keyed message goes to murmur2(key) modulo the
//!   partition count, as the Java client's default partitioner puts it,
//!   so a key's messages stay in order in one partition; a message without
//!   a key is placed by its change id.
//! - **Errors.** Unreachable brokers, a lost connection, a leader change,
//!   a missing topic, too few in-sync replicas, a timeout:
//!   [`SinkError::Unavailable`], retried (metadata is fetched again).
//!   Refused credentials or TLS, a record larger than the topic's
//!   `max.message.bytes`, no authorization for the topic: permanent.
//! - **Limits at emit.** The topic's `max.message.bytes` (asked of the
//!   broker at open) less room for the record's framing and a key of at
//!   most [`MAX_KEY`] bytes.

mod batch;
mod config;
mod wire;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    DescribeConfigsRequest, InitProducerIdRequest, MetadataRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

pub use self::batch::Codec;
use self::batch::Producer;
pub use self::config::RawKafkaSink;
use self::wire::{Conn, Dialer, Sent, WireError};
use super::kind::SinkKind;
use super::{Message, Sink, SinkError, SinkLimits};
use crate::probe::CheckLine;
use crate::problem::SinkContext;
use crate::sink::tls::{Secret, TlsFiles};
use crate::telemetry::{Counter, Registry};

/// The largest key, in bytes (Kafka has no key limit of its own; this
/// keeps room for the payload under `max.message.bytes`).
pub const MAX_KEY: usize = 4096;
/// How long one connection (TCP, TLS, versions, SASL) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `rowhook check` and `health` wait.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Produce requests in flight on one connection (what Kafka keeps order
/// and dedupes for with an idempotent producer).
const IN_FLIGHT: usize = 5;
/// The largest record batch rowhook builds, below the topic's limit.
const MAX_BATCH: usize = 1 << 20;
/// The largest produce request.
const MAX_REQUEST: usize = 4 << 20;
/// Kafka's default `max.message.bytes`, used until the broker says.
const DEFAULT_MAX_MESSAGE: usize = 1_048_588;

/// `kind = "kafka"` in the registry.
#[derive(Debug)]
pub struct KafkaKind;

impl SinkKind for KafkaKind {
    const NAME: &'static str = "kafka";
    // Boxed: the keys are many, and the registry's enums hold every kind.
    type Raw = Box<RawKafkaSink>;
    type Options = KafkaOptions;
    type Sink = KafkaSink;

    fn resolve(raw: Box<RawKafkaSink>, cx: &mut SinkContext<'_>) -> Option<KafkaOptions> {
        config::resolve(*raw, cx)
    }

    async fn open(name: &str, options: &KafkaOptions) -> Result<KafkaSink, SinkError> {
        KafkaSink::open(name, options.clone()).await
    }

    fn probe(name: &str, options: &KafkaOptions) -> CheckLine {
        probe(name, options)
    }

    fn one_line_per_message(_: &KafkaOptions) -> bool {
        false
    }
}

/// Settings of a Kafka sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOptions {
    /// Bootstrap brokers, `(host, port)`, tried in order.
    pub brokers: Vec<(String, u16)>,
    /// The topic records go to.
    pub topic: String,
    /// The `client.id` brokers see.
    pub client_id: String,
    /// How long the brokers may take to acknowledge a batch.
    pub ack_timeout: Duration,
    /// How record batches are compressed.
    pub compression: Codec,
    /// How to authenticate.
    pub auth: Auth,
    /// TLS, when the brokers speak it.
    pub tls: Option<TlsFiles>,
}

/// How the sink authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Not at all.
    None,
    /// SASL, with a user and password.
    Sasl {
        /// The mechanism.
        mechanism: Mechanism,
        /// The user.
        user: String,
        /// The password.
        password: Secret,
    },
}

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// `PLAIN`: the password as is (use it over TLS).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl Mechanism {
    /// The name brokers know it by.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// What the cluster said about the topic.
#[derive(Debug, Clone)]
struct Meta {
    /// The leader's node id of each partition (index = partition); -1 none.
    leaders: Vec<i32>,
    /// Where each node listens.
    nodes: HashMap<i32, (String, u16)>,
}

/// One record batch of a planned write.
#[derive(Clone)]
struct Part {
    partition: i32,
    /// The messages' places in the batch.
    messages: Vec<u32>,
    records: Bytes,
}

/// What is known of a plan's parts, shared with the write in progress so
/// that it outlives a dropped `write_batch` future.
struct Progress {
    /// Acknowledged parts, by place in the plan.
    done: Vec<AtomicBool>,
    /// The broker forgot the producer or refused its numbers: the parts
    /// not done are numbered again under a new producer id.
    renumber: AtomicBool,
}

impl Progress {
    fn done(&self, i: usize) -> bool {
        self.done[i].load(Ordering::Relaxed)
    }
}

/// A batch cut into record batches and numbered, kept until every part
/// is acknowledged (so a retry sends the same numbers).
struct Plan {
    /// Which batch: its length and first and last messages.
    fingerprint: (usize, String, u32, String, u32),
    parts: Arc<Vec<Part>>,
    progress: Arc<Progress>,
}

impl Plan {
    fn new(fingerprint: (usize, String, u32, String, u32), parts: Vec<Part>, done: usize) -> Plan {
        let progress = Progress {
            done: (0..parts.len()).map(|i| AtomicBool::new(i < done)).collect(),
            renumber: AtomicBool::new(false),
        };
        Plan {
            fingerprint,
            parts: Arc::new(parts),
            progress: Arc::new(progress),
        }
    }
}

fn fingerprint(batch: &[Message]) -> (usize, String, u32, String, u32) {
    let (first, last) = (&batch[0], &batch[batch.len() - 1]);
    (batch.len(), first.id.clone(), first.index, last.id.clone(), last.index)
}

/// Writes records to a Kafka topic.
pub struct KafkaSink {
    name: String,
    opts: Box<KafkaOptions>,
    // Boxed, as `opts` is: the registry's enums hold every kind.
    dialer: Box<Dialer>,
    /// A connection to any broker, for metadata and producer ids.
    bootstrap: Option<Box<Conn>>,
    /// Connections to partition leaders, by node id.
    leaders: HashMap<i32, Conn>,
    meta: Option<Meta>,
    producer: Option<Producer>,
    /// The next sequence number of each partition, for `producer`.
    sequences: HashMap<i32, i32>,
    plan: Option<Plan>,
    /// The topic's `max.message.bytes`.
    max_message: usize,
    /// Whether the broker said it (else it is Kafka's default).
    max_message_known: bool,
    limits: SinkLimits,
    duplicates: Counter,
}

impl fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSink")
            .field("name", &self.name)
            .field("opts", &self.opts)
            .field("producer", &self.producer)
            .field("max_message", &self.max_message)
            .finish()
    }
}

impl KafkaSink {
    /// Tries the brokers once, to learn the topic's `max.message.bytes`;
    /// brokers that cannot be reached now are not an error (the first write
    /// reports them as unavailable), but refused credentials or TLS are.
    pub async fn open(name: &str, opts: KafkaOptions) -> Result<KafkaSink, SinkError> {
        let tls = match &opts.tls {
            None => None,
            Some(files) => Some(wire::tls_connector(files).map_err(|e| SinkError::permanent(name, e))?),
        };
        let dialer = Dialer {
            tls,
            auth: opts.auth.clone(),
            client_id: StrBytes::from_string(opts.client_id.clone()),
            timeout: CONNECT_TIMEOUT,
        };
        let mut sink = KafkaSink {
            name: name.to_owned(),
            opts: Box::new(opts),
            dialer: Box::new(dialer),
            bootstrap: None,
            leaders: HashMap::new(),
            meta: None,
            producer: None,
            sequences: HashMap::new(),
            plan: None,
            max_message: DEFAULT_MAX_MESSAGE,
            max_message_known: false,
            limits: SinkLimits {
                max_payload: None,
                max_key: Some(MAX_KEY),
            },
            duplicates: Counter::detached(),
        };
        match sink.learn_limit().await {
            Ok(()) => {}
            Err(e @ SinkError::Permanent { .. }) => return Err(e),
            Err(e) => tracing::info!(sink = %name, "not connected yet: {e}"),
        }
        Ok(sink)
    }

    /// Records the broker stored already and dropped as duplicates (what
    /// `rowhook_sink_duplicates_total` counts).
    pub fn duplicates(&self) -> u64 {
        self.duplicates.get()
    }

    fn error(&self, e: WireError) -> SinkError {
        match e {
            WireError::Unavailable(s) => SinkError::unavailable(&self.name, s),
            WireError::Permanent(s) => SinkError::permanent(&self.name, s),
        }
    }

    fn brokers(&self) -> String {
        let list: Vec<String> = self.opts.brokers.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        list.join(", ")
    }

    /// The bootstrap connection, or a new one to the first broker that answers.
    async fn bootstrap(&mut self) -> Result<&mut Conn, SinkError> {
        if self.bootstrap.is_none() {
            let mut last = None;
            for (host, port) in &self.opts.brokers {
                match self.dialer.connect(host, *port).await {
                    Ok(c) => {
                        self.bootstrap = Some(Box::new(c));
                        break;
                    }
                    Err(e @ WireError::Permanent(_)) => return Err(self.error(e)),
                    Err(e) => last = Some(e),
                }
            }
            if self.bootstrap.is_none() {
                let why = last.map_or_else(String::new, |e| e.to_string());
                return Err(SinkError::unavailable(
                    &self.name,
                    format!("no broker of {} answers: {why}", self.brokers()),
                ));
            }
        }
        Ok(self.bootstrap.as_mut().expect("connected"))
    }

    /// Runs `f` on the bootstrap connection; a connection that failed is dropped.
    async fn on_bootstrap<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut Conn) -> Result<T, WireError>,
    ) -> Result<T, SinkError> {
        let conn = self.bootstrap().await?;
        match f(conn).await {
            Ok(t) => Ok(t),
            Err(e) => {
                self.bootstrap = None;
                Err(self.error(e))
            }
        }
    }

    /// The topic's partitions and their leaders.
    async fn meta(&mut self) -> Result<&Meta, SinkError> {
        if self.meta.is_none() {
            let topic = self.opts.topic.clone();
            let answer = self.on_bootstrap(async |c| fetch_meta(c, &topic).await).await?;
            let meta = answer.map_err(|(permanent, why)| {
                if permanent {
                    SinkError::permanent(&self.name, why)
                } else {
                    SinkError::unavailable(&self.name, why)
                }
            })?;
            self.meta = Some(meta);
        }
        Ok(self.meta.as_ref().expect("fetched"))
    }

    async fn learn_limit(&mut self) -> Result<(), SinkError> {
        let topic = self.opts.topic.clone();
        if let Some(max) = self.on_bootstrap(async |c| topic_max_message(c, &topic).await).await? {
            self.max_message = max;
            self.max_message_known = true;
        }
        self.limits.max_payload = Some(self.max_payload());
        Ok(())
    }

    /// The largest payload a record can hold under the topic's limit.
    fn max_payload(&self) -> usize {
        self.max_message
            .saturating_sub(batch::BATCH_OVERHEAD + batch::RECORD_OVERHEAD + MAX_KEY + 128)
    }

    /// A producer id for the idempotent producer.
    async fn producer(&mut self) -> Result<Producer, SinkError> {
        if let Some(p) = self.producer {
            return Ok(p);
        }
        let answer = self
            .on_bootstrap(async |c| {
                let v = c.version::<InitProducerIdRequest>(4)?;
                let req = InitProducerIdRequest::default()
                    .with_transactional_id(None)
                    .with_transaction_timeout_ms(60_000)
                    .with_producer_id((-1).into())
                    .with_producer_epoch(-1);
                c.call(&req, v).await
            })
            .await?;
        if let Some(e) = ResponseError::try_from_code(answer.error_code) {
            let why = format!("asking {} for a producer id: {e}", self.brokers());
            return Err(if e.is_retriable() {
                SinkError::unavailable(&self.name, why)
            } else {
                SinkError::permanent(
                    &self.name,
                    format!("{why}; grant the user IdempotentWrite on the cluster (Kafka before 3.0 needs it)"),
                )
            });
        }
        let p = Producer {
            id: answer.producer_id.0,
            epoch: answer.producer_epoch,
        };
        self.producer = Some(p);
        self.sequences.clear();
        Ok(p)
    }

    /// Refuses a batch holding a record the topic cannot take, before
    /// anything is sent.
    fn check_sizes(&self, batch: &[Message]) -> Result<(), SinkError> {
        let max = self.max_message.saturating_sub(batch::BATCH_OVERHEAD);
        for m in batch {
            if batch::record_size(m) > max {
                return Err(SinkError::permanent(
                    &self.name,
                    format!(
                        "message `{}` has a {}-byte payload and a {}-byte key, more than topic {}'s max.message.bytes ({} bytes, with the record's framing); emit less, or raise max.message.bytes",
                        m.id,
                        m.payload.len(),
                        m.key.as_ref().map_or(0, Vec::len),
                        self.opts.topic,
                        self.max_message
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Cuts `batch` into record batches by partition, numbered for
    /// `producer`; only the messages in `only` when given.
    fn number(&mut self, batch: &[Message], producer: Producer, partitions: usize, only: Option<&[u32]>) -> Vec<Part> {
        let mut by_partition: Vec<Vec<u32>> = vec![Vec::new(); partitions];
        let mut add = |i: u32| by_partition[batch::partition(&batch[i as usize], partitions)].push(i);
        match only {
            Some(list) => list.iter().copied().for_each(&mut add),
            None => (0..batch.len() as u32).for_each(&mut add),
        }
        let limit = self.max_message.min(MAX_BATCH);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut parts = Vec::new();
        for (partition, list) in by_partition.into_iter().enumerate() {
            let partition = partition as i32;
            let mut start = 0;
            while start < list.len() {
                let mut size = batch::BATCH_OVERHEAD;
                let mut end = start;
                while end < list.len() {
                    let s = batch::record_size(&batch[list[end] as usize]);
                    if end > start && size + s > limit {
                        break;
                    }
                    size += s;
                    end += 1;
                }
                let seq = self.sequences.entry(partition).or_insert(0);
                let mut out = BytesMut::with_capacity(size);
                let chosen = &list[start..end];
                batch::encode_batch(
                    &mut out,
                    chosen.iter().map(|&i| &batch[i as usize]),
                    producer,
                    *seq,
                    now,
                    self.opts.compression,
                );
                *seq = batch::advance(*seq, chosen.len());
                parts.push(Part {
                    partition,
                    messages: chosen.to_vec(),
                    records: out.freeze(),
                });
                start = end;
            }
        }
        parts
    }

    /// Makes `self.plan` the plan of `batch`: the kept one if it is this
    /// batch's (the pipeline's retry), renumbered if the broker asked for
    /// it; else a new one. The kept plan stays in place across every await.
    async fn plan(&mut self, batch: &[Message]) -> Result<(), SinkError> {
        let partitions = self.meta().await?.leaders.len();
        let print = fingerprint(batch);
        let kept = self
            .plan
            .as_ref()
            .map(|p| (p.fingerprint == print, p.progress.renumber.load(Ordering::Relaxed)));
        match kept {
            Some((true, false)) => Ok(()),
            Some((true, true)) => {
                self.producer = None;
                let producer = self.producer().await?;
                let old = self.plan.take().expect("kept");
                let mut done_messages = vec![false; batch.len()];
                let mut parts = Vec::new();
                for (i, p) in Arc::try_unwrap(old.parts)
                    .unwrap_or_else(|a| a.iter().map(Part::clone).collect())
                    .into_iter()
                    .enumerate()
                {
                    if old.progress.done(i) {
                        for &m in &p.messages {
                            done_messages[m as usize] = true;
                        }
                        parts.push(p);
                    }
                }
                let done = parts.len();
                let left: Vec<u32> = (0..batch.len() as u32)
                    .filter(|&i| !done_messages[i as usize])
                    .collect();
                parts.extend(self.number(batch, producer, partitions, Some(&left)));
                self.plan = Some(Plan::new(print, parts, done));
                Ok(())
            }
            kept => {
                if kept.is_some() {
                    // A batch given up on: its numbers may or may not have
                    // reached the broker, so start afresh.
                    self.plan = None;
                    self.producer = None;
                }
                let producer = self.producer().await?;
                let parts = self.number(batch, producer, partitions, None);
                self.plan = Some(Plan::new(print, parts, 0));
                Ok(())
            }
        }
    }

    /// Sends every part of the plan not acknowledged yet, leader by leader.
    async fn send_plan(&mut self) -> Result<(), SinkError> {
        let meta = self.meta().await?.clone();
        let plan = self.plan.as_ref().expect("planned");
        let (parts, progress) = (plan.parts.clone(), plan.progress.clone());
        let mut leaders: Vec<i32> = Vec::new();
        for (_, p) in parts.iter().enumerate().filter(|(i, _)| !progress.done(*i)) {
            let leader = meta.leaders.get(p.partition as usize).copied().unwrap_or(-1);
            if !leaders.contains(&leader) {
                leaders.push(leader);
            }
        }
        let mut first_error: Option<SinkError> = None;
        for leader in leaders {
            let result = self.send_to_leader(&meta, leader, &parts, &progress).await;
            if let Err(e) = result {
                let worse = matches!(e, SinkError::Permanent { .. });
                if first_error.is_none() || worse {
                    first_error = Some(e);
                }
            }
        }
        let done = (0..parts.len()).all(|i| progress.done(i));
        match first_error {
            Some(e) => Err(e),
            None if done => Ok(()),
            None => Err(SinkError::unavailable(
                &self.name,
                "some partitions were not acknowledged",
            )),
        }
    }

    async fn send_to_leader(
        &mut self,
        meta: &Meta,
        leader: i32,
        parts: &[Part],
        progress: &Progress,
    ) -> Result<(), SinkError> {
        let Some((host, port)) = meta.nodes.get(&leader).cloned() else {
            self.meta = None;
            return Err(SinkError::unavailable(
                &self.name,
                format!(
                    "topic {} has a partition without a leader; waiting for the cluster to elect one",
                    self.opts.topic
                ),
            ));
        };
        let mut conn = match self.leaders.remove(&leader) {
            Some(c) => c,
            None => self.dialer.connect(&host, port).await.map_err(|e| {
                self.meta = None;
                self.error(e)
            })?,
        };
        let timeout = self.opts.ack_timeout + CONNECT_TIMEOUT;
        let outcome = tokio::time::timeout(timeout, self.produce(&mut conn, meta, leader, parts, progress)).await;
        match outcome {
            Ok(Ok(())) => {
                self.leaders.insert(leader, conn);
                Ok(())
            }
            Ok(Err(Failure::Wire(e))) => {
                self.meta = None;
                Err(self.error(e))
            }
            Ok(Err(Failure::Refused(e))) => {
                self.leaders.insert(leader, conn);
                Err(e)
            }
            Err(_) => {
                self.meta = None;
                Err(SinkError::unavailable(
                    &self.name,
                    format!(
                        "{} did not acknowledge within ack_timeout_ms ({} ms)",
                        conn.addr(),
                        self.opts.ack_timeout.as_millis()
                    ),
                ))
            }
        }
    }

    /// Sends the plan's parts led by `leader` on `conn`, `IN_FLIGHT`
    /// requests at a time, one part per partition per request.
    async fn produce(
        &mut self,
        conn: &mut Conn,
        meta: &Meta,
        leader: i32,
        parts: &[Part],
        progress: &Progress,
    ) -> Result<(), Failure> {
        let v = conn.version::<ProduceRequest>(11).map_err(Failure::Wire)?;
        let mine: Vec<usize> = (0..parts.len())
            .filter(|&i| !progress.done(i) && meta.leaders.get(parts[i].partition as usize) == Some(&leader))
            .collect();
        // Requests: lists of parts, in plan order.
        let mut requests: Vec<Vec<usize>> = Vec::new();
        let mut size = 0;
        for i in mine {
            let p = &parts[i];
            let fits = requests.last().is_some_and(|r| {
                size + p.records.len() <= MAX_REQUEST && r.iter().all(|&j| parts[j].partition != p.partition)
            });
            if !fits {
                requests.push(Vec::new());
                size = 0;
            }
            size += p.records.len();
            requests.last_mut().expect("pushed").push(i);
        }
        let topic = TopicName(StrBytes::from_string(self.opts.topic.clone()));
        let timeout_ms = self.opts.ack_timeout.as_millis().min(i32::MAX as u128) as i32;
        let mut in_flight: VecDeque<(Sent, Vec<usize>)> = VecDeque::new();
        let mut failed: HashSet<i32> = HashSet::new();
        let mut refusal: Option<SinkError> = None;
        for request in requests {
            if in_flight.len() >= IN_FLIGHT {
                let (sent, request) = in_flight.pop_front().expect("full");
                let answer = conn.receive::<ProduceRequest>(sent).await.map_err(Failure::Wire)?;
                self.settle(answer, &request, parts, progress, &mut failed, &mut refusal);
            }
            let data = request
                .iter()
                .map(|&i| {
                    PartitionProduceData::default()
                        .with_index(parts[i].partition)
                        .with_records(Some(parts[i].records.clone()))
                })
                .collect();
            let req = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(timeout_ms)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(topic.clone())
                        .with_partition_data(data),
                ]);
            let sent = conn.send(&req, v).await.map_err(Failure::Wire)?;
            if in_flight.len() + 1 >= IN_FLIGHT {
                conn.flush().await.map_err(Failure::Wire)?;
            }
            in_flight.push_back((sent, request));
        }
        conn.flush().await.map_err(Failure::Wire)?;
        while let Some((sent, request)) = in_flight.pop_front() {
            let answer = conn.receive::<ProduceRequest>(sent).await.map_err(Failure::Wire)?;
            self.settle(answer, &request, parts, progress, &mut failed, &mut refusal);
        }
        match refusal {
            Some(e) => Err(Failure::Refused(e)),
            None => Ok(()),
        }
    }

    /// Marks the parts a produce answer acknowledged; keeps the first refusal.
    fn settle(
        &mut self,
        answer: kafka_protocol::messages::ProduceResponse,
        request: &[usize],
        parts: &[Part],
        progress: &Progress,
        failed: &mut HashSet<i32>,
        refusal: &mut Option<SinkError>,
    ) {
        let mut codes: HashMap<i32, (i16, String)> = HashMap::new();
        for t in answer.responses {
            for p in t.partition_responses {
                let text = p.error_message.as_ref().map_or_else(String::new, |m| m.to_string());
                codes.insert(p.index, (p.error_code, text));
            }
        }
        for &i in request {
            let partition = parts[i].partition;
            let Some((code, text)) = codes.get(&partition) else {
                failed.insert(partition);
                refusal.get_or_insert_with(|| {
                    SinkError::unavailable(&self.name, format!("partition {partition} was not answered"))
                });
                continue;
            };
            let Some(e) = ResponseError::try_from_code(*code) else {
                progress.done[i].store(true, Ordering::Relaxed);
                continue;
            };
            if e == ResponseError::DuplicateSequenceNumber {
                progress.done[i].store(true, Ordering::Relaxed);
                self.duplicates.add(parts[i].messages.len() as u64);
                continue;
            }
            let where_ = format!("topic {} partition {partition}", self.opts.topic);
            let detail = if text.is_empty() {
                String::new()
            } else {
                format!(" ({text})")
            };
            let err = match e {
                ResponseError::OutOfOrderSequenceNumber if failed.contains(&partition) => {
                    // Follows a refused part of the same partition: it is
                    // sent again after it, under the same numbers.
                    continue;
                }
                ResponseError::OutOfOrderSequenceNumber
                | ResponseError::UnknownProducerId
                | ResponseError::InvalidProducerEpoch
                | ResponseError::ProducerFenced => {
                    progress.renumber.store(true, Ordering::Relaxed);
                    SinkError::unavailable(
                        &self.name,
                        format!("{where_}: {e}{detail}; the retry numbers the records under a new producer id"),
                    )
                }
                ResponseError::MessageTooLarge | ResponseError::RecordListTooLarge => SinkError::permanent(
                    &self.name,
                    format!("{where_}: {e}{detail}; raise the topic's max.message.bytes, or emit less"),
                ),
                ResponseError::TopicAuthorizationFailed | ResponseError::ClusterAuthorizationFailed => {
                    SinkError::permanent(
                        &self.name,
                        format!("{where_}: {e}{detail}; grant the user Write on the topic"),
                    )
                }
                e if e.is_retriable() => {
                    self.meta = None;
                    SinkError::unavailable(&self.name, format!("{where_}: {e}{detail}"))
                }
                e => SinkError::permanent(&self.name, format!("{where_}: {e}{detail}")),
            };
            failed.insert(partition);
            let worse = matches!(err, SinkError::Permanent { .. });
            if refusal.is_none() || worse {
                *refusal = Some(err);
            }
        }
    }
}

/// Why a produce to one leader stopped.
enum Failure {
    /// The connection failed: drop it.
    Wire(WireError),
    /// The broker answered, refusing some parts: keep the connection.
    Refused(SinkError),
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write_batch(&mut self, batch: &[Message]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.check_sizes(batch)?;
        // The plan is kept before anything is sent, so that a retry (or a
        // call after this future was dropped) reuses its numbers.
        self.plan(batch).await?;
        self.send_plan().await?;
        self.plan = None;
        Ok(())
    }

    async fn health(&mut self) -> Result<(), SinkError> {
        let topic = self.opts.topic.clone();
        let fetched = tokio::time::timeout(PROBE_TIMEOUT, self.on_bootstrap(async |c| fetch_meta(c, &topic).await))
            .await
            .unwrap_or_else(|_| {
                Err(SinkError::unavailable(
                    &self.name,
                    format!("{} did not answer within {} s", self.brokers(), PROBE_TIMEOUT.as_secs()),
                ))
            });
        match fetched {
            Ok(Ok(meta)) => {
                self.meta = Some(meta);
                Ok(())
            }
            Ok(Err((permanent, why))) => Err(if permanent {
                SinkError::permanent(&self.name, why)
            } else {
                SinkError::unavailable(&self.name, why)
            }),
            Err(e) => {
                self.bootstrap = None;
                Err(e)
            }
        }
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        // Acknowledged batches are on the replicas already.
        self.bootstrap = None;
        self.leaders.clear();
        Ok(())
    }

    fn limits(&self) -> SinkLimits {
        self.limits
    }

    fn register_metrics(&self, registry: &Registry) {
        registry.attach_counter(
            "rowhook_sink_duplicates_total",
            "Records a Kafka broker had stored already and dropped (by producer id and sequence): re-sends of a batch whose acknowledgement was lost.",
            vec![("sink", self.name.clone())],
            &self.duplicates,
        );
    }
}

/// The topic's partitions and leaders, or why there are none:
/// `(permanent, why)`.
async fn fetch_meta(conn: &mut Conn, topic: &str) -> Result<Result<Meta, (bool, String)>, WireError> {
    let v = conn.version::<MetadataRequest>(12)?;
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(topic.to_owned())))),
        ]))
        .with_allow_auto_topic_creation(false);
    let answer = conn.call(&req, v).await?;
    let nodes = answer
        .brokers
        .iter()
        .filter_map(|b| Some((b.node_id.0, (b.host.to_string(), u16::try_from(b.port).ok()?))))
        .collect();
    let Some(t) = answer
        .topics
        .into_iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
    else {
        return Ok(Err((false, format!("{} did not describe topic {topic}", conn.addr()))));
    };
    if let Some(e) = ResponseError::try_from_code(t.error_code) {
        return Ok(Err(match e {
            ResponseError::UnknownTopicOrPartition => (
                false,
                format!(
                    "topic {topic} does not exist; create it, e.g. `kafka-topics.sh --create --topic {topic} --partitions 3`"
                ),
            ),
            ResponseError::TopicAuthorizationFailed => (
                true,
                format!("topic {topic}: {e}; grant the user Describe and Write on it"),
            ),
            e => (!e.is_retriable(), format!("topic {topic}: {e}")),
        }));
    }
    if t.partitions.is_empty() {
        return Ok(Err((false, format!("topic {topic} has no partitions yet"))));
    }
    let mut leaders = vec![-1; t.partitions.len()];
    for p in &t.partitions {
        if let Some(slot) = usize::try_from(p.partition_index).ok().and_then(|i| leaders.get_mut(i)) {
            *slot = p.leader_id.0;
        }
    }
    Ok(Ok(Meta { leaders, nodes }))
}

/// The topic's `max.message.bytes`, if the broker says (`DescribeConfigs`).
async fn topic_max_message(conn: &mut Conn, topic: &str) -> Result<Option<usize>, WireError> {
    if !conn.knows::<DescribeConfigsRequest>() {
        return Ok(None);
    }
    let v = conn.version::<DescribeConfigsRequest>(3)?;
    let req = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_owned()))
            // Every key: some brokers (tansu 0.6) cannot parse a list of names.
            .with_configuration_keys(None),
    ]);
    let answer = conn.call(&req, v).await?;
    Ok(answer
        .results
        .iter()
        .filter(|r| r.error_code == 0)
        .flat_map(|r| r.configs.iter())
        .find(|c| c.name.as_str() == "max.message.bytes")
        .and_then(|c| c.value.as_ref()?.as_str().parse().ok()))
}

/// `rowhook check`: connects and authenticates, finds the topic and its
/// partition leaders, and reads its `max.message.bytes`. Changes nothing.
fn probe(name: &str, opts: &KafkaOptions) -> CheckLine {
    let head = format!("sink `{name}` (kafka)");
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return CheckLine::fail(format!("{head}: cannot start the probe: {e}")),
    };
    let found = rt.block_on(async {
        let mut sink = KafkaSink::open(name, opts.clone()).await.map_err(reason)?;
        let brokers = sink.brokers();
        let work = async {
            sink.learn_limit().await.map_err(reason)?;
            let meta = sink.meta().await.map_err(reason)?;
            let leaderless = meta.leaders.iter().filter(|&&l| l < 0).count();
            Ok::<_, String>((meta.leaders.len(), leaderless))
        };
        match tokio::time::timeout(PROBE_TIMEOUT, work).await {
            Ok(Ok((partitions, 0))) => Ok(format!(
                "{brokers}, topic {} has {partitions} partition(s), max.message.bytes {}{}",
                opts.topic,
                sink.max_message,
                if sink.max_message_known { "" } else { " (Kafka's default: the broker did not say)" }
            )),
            Ok(Ok((partitions, leaderless))) => Err(format!(
                "{brokers}: {leaderless} of topic {}'s {partitions} partitions have no leader; check the brokers' health",
                opts.topic
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!(
                "{brokers} did not answer within {} s; check that the brokers are up and brokers is right",
                PROBE_TIMEOUT.as_secs()
            )),
        }
    });
    match found {
        Ok(text) => CheckLine::ok(format!("{head}: {text}")),
        Err(text) => CheckLine::fail(format!("{head}: {text}")),
    }
}

fn reason(e: SinkError) -> String {
    match e {
        SinkError::Unavailable { reason, .. } => format!("{reason}; start the brokers or fix brokers"),
        SinkError::Permanent { reason, .. } => reason,
    }
}
