//! Decoder throughput on a real binlog file: how many row changes per second
//! rowhook frames and decodes, with and without rendering them as JSON.
//!
//! The input is a binlog written by the shared workload generator
//! (`../shared/bench/workload/make_binlog.sh`, 1M row changes, ~211 MB), too
//! big to commit: point `ROWHOOK_BENCH_BINLOG` at it. Without it the bench
//! says how to make one and measures nothing. `tests/bench/run.sh` makes one
//! and runs this bench with it.
//!
//! Cases, each run `ROWHOOK_BENCH_RUNS` times (default 5), median reported:
//! - `frame`: read and checksum every event, decode nothing (the floor);
//! - `count`: frame + decode every column of every row, count them;
//! - `json`: frame + decode + render every row as contract JSON into a reused buffer.
//!
//! CPU time is this thread's on-CPU time from `/proc/thread-self/schedstat`
//! (nanoseconds, no `unsafe` needed); wall time from `Instant`. The machine is
//! shared, so compare cases within one run rather than across runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rowhook::decode::{ChangeVisitor, Decoder, DecoderOptions, Flow, RowChange};
use rowhook::source::file::{BinlogFile, Next};

/// Counts row changes; touches nothing else, so the figure is framing + decoding.
struct Count(u64);

impl ChangeVisitor for Count {
    fn change(&mut self, _change: &RowChange<'_>) -> Flow {
        self.0 += 1;
        Flow::Continue
    }
}

/// Renders every change into one reused buffer, emptied whenever it passes
/// 64 KiB (as `rowhook inspect` does before writing), and counts the bytes.
struct Json {
    rows: u64,
    bytes: u64,
    buf: Vec<u8>,
}

impl ChangeVisitor for Json {
    fn change(&mut self, change: &RowChange<'_>) -> Flow {
        change.write_json(&mut self.buf).expect("the workload renders");
        self.buf.push(b'\n');
        self.rows += 1;
        if self.buf.len() >= 1 << 16 {
            self.bytes += self.buf.len() as u64;
            self.buf.clear();
        }
        Flow::Continue
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Case {
    Frame,
    Count,
    Json,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Frame => "frame",
            Case::Count => "count",
            Case::Json => "json",
        }
    }
}

/// One pass over the file: (row changes, JSON bytes, wall, CPU).
fn pass(path: &Path, case: Case) -> (u64, u64, Duration, Duration) {
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    let mut file = BinlogFile::open(path).expect("open the binlog");
    let mut decoder = Decoder::new(DecoderOptions::default(), file.name());
    let mut count = Count(0);
    let mut json = Json {
        rows: 0,
        bytes: 0,
        buf: Vec::with_capacity(1 << 17),
    };
    let mut events = 0u64;
    while let Next::Event(ev) = file.next_event().expect("read the binlog") {
        events += 1;
        let flow = match case {
            Case::Frame => Ok(Flow::Continue),
            Case::Count => decoder.feed(ev, &mut count),
            Case::Json => decoder.feed(ev, &mut json),
        };
        flow.expect("decode the binlog");
    }
    let wall = t0.elapsed();
    let cpu = thread_cpu().saturating_sub(cpu0);
    let rows = match case {
        Case::Frame => events,
        Case::Count => count.0,
        Case::Json => json.rows,
    };
    (rows, json.bytes + json.buf.len() as u64, wall, cpu)
}

/// On-CPU time of this thread (first field of schedstat, in nanoseconds).
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let Some(path) = std::env::var_os("ROWHOOK_BENCH_BINLOG").map(PathBuf::from) else {
        println!(
            "decode bench: ROWHOOK_BENCH_BINLOG is not set, nothing measured.\n\
             Make the 1M-row workload binlog and point at it, e.g.:\n  \
             tests/bench/run.sh            # does it all (server, workload, this bench, the CLI figures)\n\
             or by hand:\n  \
             port=$(tests/mariadb.sh start /tmp/rh-db)\n  \
             cp -r ../shared/bench /tmp/rh-bench && chmod -R u+w /tmp/rh-bench\n  \
             PORT=$port /tmp/rh-bench/workload/make_binlog.sh 500 42\n  \
             . /tmp/rh-bench/workload.env\n  \
             ROWHOOK_BENCH_BINLOG=/tmp/rh-db/log/$BINLOG_FILE cargo bench -p rowhook --bench decode"
        );
        return;
    };
    let runs: usize = std::env::var("ROWHOOK_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1);
    let size = std::fs::metadata(&path).expect("stat the binlog").len();
    println!(
        "decode bench: {} ({:.1} MB), {runs} runs per case, median",
        path.display(),
        size as f64 / 1e6
    );
    println!(
        "{:<6} {:>10} {:>10} {:>10} {:>14} {:>14} {:>10} {:>11}",
        "case", "rows", "wall ms", "cpu ms", "rows/s wall", "rows/cpu-s", "MB/s", "JSON MB/s"
    );
    // Warm the page cache so the first case does not pay for the disk.
    let _ = pass(&path, Case::Frame);
    for case in [Case::Frame, Case::Count, Case::Json] {
        let (mut walls, mut cpus) = (Vec::new(), Vec::new());
        let (mut rows, mut bytes) = (0, 0);
        for _ in 0..runs {
            let (r, b, wall, cpu) = pass(&path, case);
            (rows, bytes) = (r, b);
            walls.push(wall);
            cpus.push(cpu);
        }
        let (wall, cpu) = (median(walls), median(cpus));
        let per = |d: Duration, n: f64| if d.is_zero() { 0.0 } else { n / d.as_secs_f64() };
        println!(
            "{:<6} {:>10} {:>10.1} {:>10.1} {:>14.0} {:>14.0} {:>10.1} {:>11}",
            case.name(),
            rows,
            wall.as_secs_f64() * 1e3,
            cpu.as_secs_f64() * 1e3,
            per(wall, rows as f64),
            per(cpu, rows as f64),
            per(wall, size as f64 / 1e6),
            if case == Case::Json {
                format!("{:.1}", per(wall, bytes as f64 / 1e6))
            } else {
                "-".into()
            }
        );
    }
    println!("(frame: rows = events; MB/s is of binlog bytes read)");
}
