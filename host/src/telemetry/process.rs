//! The process's own CPU time and resident memory, read from `/proc` each
//! time the registry is read: nothing is counted on the way.

use std::sync::Arc;

use super::{Registry, names};

/// Clock ticks per second of `/proc/self/stat`'s times: `USER_HZ`, 100 on
/// every Linux architecture rowhook builds for.
const TICKS_PER_SEC: f64 = 100.0;
/// Bytes of a page in `/proc/self/statm`: 4 KiB on x86-64 and most aarch64
/// kernels.
const PAGE_BYTES: f64 = 4096.0;

/// Registers `process_cpu_seconds_total` and `process_resident_memory_bytes`
/// (the names Prometheus client libraries use), read from `/proc/self/stat`
/// and `/proc/self/statm` when the registry is read; 0 where `/proc` is
/// not there.
pub fn register_process_metrics(registry: &Registry) {
    registry.computed_counter(
        names::PROCESS_CPU,
        "CPU time the process used, user and system, in seconds.",
        vec![],
        Arc::new(|| cpu_seconds(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default()).unwrap_or(0.0)),
    );
    registry.computed_gauge(
        names::PROCESS_RSS,
        "Resident memory of the process, in bytes.",
        vec![],
        Arc::new(|| rss_bytes(&std::fs::read_to_string("/proc/self/statm").unwrap_or_default()).unwrap_or(0.0)),
    );
}

/// utime + stime of a `/proc/PID/stat` line, in seconds. The command name
/// (field 2) is in parentheses and may hold spaces: fields are counted
/// after its closing parenthesis.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state (3), then utime is field 14 and stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SEC)
}

/// The resident pages (second field) of `/proc/PID/statm`, in bytes.
fn rss_bytes(statm: &str) -> Option<f64> {
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages as f64 * PAGE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_lines() {
        let stat = "4242 (rowhook (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 1000 300";
        assert_eq!(cpu_seconds(stat), Some(3.0));
        assert_eq!(rss_bytes("5000 300 100 10 0 200 0"), Some(300.0 * 4096.0));
        assert_eq!(cpu_seconds("garbage"), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let registry = Registry::new();
        register_process_metrics(&registry);
        let snap = registry.snapshot();
        assert!(snap.sum(names::PROCESS_RSS) > 1 << 20);
        assert!(snap.has(names::PROCESS_CPU));
    }
}
