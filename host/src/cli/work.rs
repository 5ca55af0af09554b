//! `rowhook work`: the config's handlers run on the partitions of the
//! `[cluster]` stream this worker owns, beside the other workers of its
//! group, until SIGINT or SIGTERM.

use crate::cluster::join_when_ready;
use crate::cluster::lease::holder_name;
use crate::cluster::work::{WorkStats, Worker};
use crate::config::Plan;
use crate::driver::stop_on_signals;

/// Runs `plan`'s handlers as a worker of its `[cluster]` group until
/// stopped. Call it outside any async runtime.
pub fn work(plan: &Plan) -> anyhow::Result<WorkStats> {
    let (cluster, nats) = super::cluster_of(plan, "work")?;
    let mut stop = stop_on_signals(|| {})?;
    let Some(joined) = nats.block_on(join_when_ready(cluster, cluster.max_unacked, &mut stop))? else {
        return Ok(WorkStats::default());
    };
    let holder = holder_name();
    let mut worker = nats.block_on(Worker::new(plan, cluster, &joined, holder.clone()))?;
    tracing::info!(holder, group = %cluster.group, "working on the partitions of stream {}", cluster.stream);
    let result = worker.run(&nats, &mut stop);
    result.map(|()| worker.stats.clone())
}
