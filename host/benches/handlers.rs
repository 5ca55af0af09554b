//! What a handler costs per row change: `rowhook::cli::replay::replay` with the
//! trivial handler (`tests/guests/trivial`: reads the `id` column, emits
//! nothing) over real binlog files, and the steps of that path measured one
//! by one so a slow figure says where the time goes.
//!
//! Inputs, too big to commit (`tests/bench/run.sh` makes both and runs this):
//! - `ROWHOOK_BENCH_BINLOG`: the shared 1M-row workload
//!   (`../shared/bench/workload/make_binlog.sh 500 42`); the handler
//!   subscribes to every table of it (`ROWHOOK_BENCH_TABLES`, default
//!   `cdcbench.*`);
//! - `ROWHOOK_BENCH_BINLOG10`: the same kind of rows spread evenly over ten
//!   tables; the handler subscribes to one (`ROWHOOK_BENCH_TABLE10`, default
//!   `cdcbench10.orders_3`), and the other nine must cost no call at all.
//!
//! The handler is `ROWHOOK_BENCH_WASM`, or `trivial.wasm` built here with
//! cargo (`wasm32-wasip2`, release) when that is unset. Without either
//! binlog the bench says how to make them and measures nothing.
//!
//! Cases, each run `ROWHOOK_BENCH_RUNS` times (default 5), median reported:
//! - `decode`: frame + decode every row of the subscribed tables (the floor);
//! - `encode`: + the row change encoding the guest receives (`guest_abi`);
//! - `call`: + one call of a trivial instance per change, straight to the
//!   runtime (no pipeline);
//! - `replay`: `rowhook::cli::replay::replay` with a config, as `rowhook replay`
//!   runs it: engine start, compile, decode, route, encode, call, commit.
//!
//! `rows` counts every row change in the file, subscribed or not; the rates
//! are over those. CPU is this thread's on-CPU time from
//! `/proc/thread-self/schedstat` (ns; every case runs on this thread) and,
//! as `proc ms`, the whole process's user+sys from `/proc/self/stat` (10 ms
//! ticks; adds the runtime's epoch ticker thread). The machine is shared:
//! compare cases within one run.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rowhook::config::Plan;
use rowhook::decode::table_map::TableMap;
use rowhook::decode::txn::TableFilter;
use rowhook::decode::{ChangeVisitor, Decoder, DecoderOptions, Flow, RowChange};
use rowhook::guest_abi::DirectoryCache;
use rowhook::runtime::{Grants, HandlerRuntime, Instance, Limits, Module};
use rowhook::source::file::{BinlogFile, Next};
use rowhook::status::Stats;

/// What a pass does per row change of a subscribed table.
enum Work<'a> {
    Decode,
    Encode(Vec<u8>),
    Call(Vec<u8>, &'a mut Instance),
}

/// Counts the changes it sees and the handler calls it makes.
struct Visit<'a> {
    work: Work<'a>,
    /// Column directories, laid out once per table as the pipeline does.
    directories: DirectoryCache,
    changes: u64,
    calls: u64,
}

impl ChangeVisitor for Visit<'_> {
    fn change(&mut self, change: &RowChange<'_>) -> Flow {
        self.changes += 1;
        match &mut self.work {
            Work::Decode => {
                black_box(change);
            }
            Work::Encode(buf) => {
                self.directories.encode(change, buf).expect("the workload encodes");
                black_box(buf.len());
            }
            Work::Call(buf, instance) => {
                self.directories.encode(change, buf).expect("the workload encodes");
                instance.call(buf).expect("the trivial handler succeeds");
                self.calls += 1;
            }
        }
        Flow::Continue
    }

    fn table_map(&mut self, table: &TableMap) {
        self.directories.forget(table.table_id);
    }
}

/// One measured pass; `rows` is every row change in the file, subscribed
/// or not (filled in by the caller: rows of filtered tables are skipped
/// undecoded, so a pass does not count them).
struct Sample {
    rows: u64,
    changes: u64,
    calls: u64,
    wall: Duration,
    cpu: Duration,
    proc_cpu: Duration,
}

/// One pass of the decoder over `path`, `work` on each subscribed change.
fn decode_pass(path: &Path, tables: &str, work: Work<'_>) -> Sample {
    let (cpu0, proc0, t0) = (thread_cpu(), process_cpu(), Instant::now());
    let mut file = BinlogFile::open(path).expect("open the binlog");
    let opts = DecoderOptions {
        require_names: true,
        tables: TableFilter::parse(tables).expect("a table list"),
        skip_statements: false,
    };
    let mut decoder = Decoder::new(opts, file.name());
    let mut visit = Visit {
        work,
        directories: DirectoryCache::default(),
        changes: 0,
        calls: 0,
    };
    while let Next::Event(ev) = file.next_event().expect("read the binlog") {
        decoder.feed(ev, &mut visit).expect("decode the binlog");
    }
    Sample {
        rows: 0,
        changes: visit.changes,
        calls: visit.calls,
        wall: t0.elapsed(),
        cpu: thread_cpu().saturating_sub(cpu0),
        proc_cpu: process_cpu().saturating_sub(proc0),
    }
}

/// One `rowhook::cli::replay::replay` of `path` with `config`.
fn replay_pass(config: &Path, path: &Path) -> (Sample, Stats) {
    let (cpu0, proc0, t0) = (thread_cpu(), process_cpu(), Instant::now());
    let plan = Plan::load(config).expect("the bench config loads");
    let stats = rowhook::cli::replay::replay(&plan, &[path.to_owned()]).expect("replay succeeds");
    let sample = Sample {
        rows: 0,
        changes: stats.changes,
        calls: stats.calls,
        wall: t0.elapsed(),
        cpu: thread_cpu().saturating_sub(cpu0),
        proc_cpu: process_cpu().saturating_sub(proc0),
    };
    (sample, stats)
}

/// On-CPU time of this thread (first field of schedstat, in nanoseconds).
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// User + system time of the whole process (all threads), from
/// `/proc/self/stat` fields 14 and 15, in clock ticks of 10 ms (USER_HZ is
/// 100 on Linux whatever the kernel's HZ).
fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // The command name (field 2) may hold spaces: count from after its `)`.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // `rest` starts at field 3 (state): utime is field 14, stime 15.
    Duration::from_millis((tick(11) + tick(12)) * 10)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `pass` `runs` times and prints the median line of the case.
fn report(case: &str, runs: usize, mut pass: impl FnMut() -> Sample) -> Sample {
    let samples: Vec<Sample> = (0..runs).map(|_| pass()).collect();
    let last = samples.last().expect("at least one run");
    let (rows, changes, calls) = (last.rows, last.changes, last.calls);
    for s in &samples {
        assert_eq!(
            (s.rows, s.changes, s.calls),
            (rows, changes, calls),
            "{case}: counts differ between runs"
        );
    }
    let wall = median(samples.iter().map(|s| s.wall).collect());
    let cpu = median(samples.iter().map(|s| s.cpu).collect());
    let proc_cpu = median(samples.iter().map(|s| s.proc_cpu).collect());
    let per = |d: Duration| {
        if d.is_zero() {
            0.0
        } else {
            rows as f64 / d.as_secs_f64()
        }
    };
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9.1} {:>9.1} {:>9.0} {:>12.0} {:>12.0} {:>8.0}",
        case,
        rows,
        changes,
        calls,
        wall.as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e3,
        proc_cpu.as_secs_f64() * 1e3,
        per(wall),
        per(cpu),
        if rows == 0 {
            0.0
        } else {
            cpu.as_secs_f64() * 1e9 / rows as f64
        },
    );
    Sample {
        rows,
        changes,
        calls,
        wall,
        cpu,
        proc_cpu,
    }
}

fn header(title: &str) {
    println!("\n{title}");
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12} {:>12} {:>8}",
        "case", "rows", "changes", "calls", "wall ms", "cpu ms", "proc ms", "rows/s wall", "rows/cpu-s", "ns/row"
    );
}

/// `trivial.wasm`: `ROWHOOK_BENCH_WASM`, or built from `tests/guests/trivial`
/// in the guest workspace `tests/guests`.
fn trivial_wasm() -> PathBuf {
    if let Some(p) = std::env::var_os("ROWHOOK_BENCH_WASM") {
        return PathBuf::from(p);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/guests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--quiet",
            "-p",
            "trivial",
        ])
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(dir.join("target"))
        .status()
        .expect("run cargo for the trivial guest");
    assert!(
        status.success(),
        "building tests/guests/trivial failed (rustup target add wasm32-wasip2?)"
    );
    dir.join("target/wasm32-wasip2/release/trivial.wasm")
}

/// A config with the trivial handler on `tables`, all ops, no sinks.
fn write_config(dir: &Path, name: &str, wasm: &Path, tables: &str) -> PathBuf {
    let list: Vec<String> = tables.split(',').map(|t| format!("{:?}", t.trim())).collect();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[state]\npath = \"state\"\n\n[[handlers]]\nname = \"trivial\"\nmodule = {:?}\ntables = [{}]\n",
            wasm.display().to_string(),
            list.join(", ")
        ),
    )
    .expect("write the bench config");
    path
}

/// A fresh trivial instance, with the default limits of a handler.
fn trivial_instance(runtime: &HandlerRuntime, module: &Module) -> Instance {
    runtime
        .instantiate(module, "trivial", Arc::new(Grants::default()), Limits::default())
        .expect("instantiate the trivial guest")
}

/// The cases over one file: the steps, then the whole replay.
fn bench_file(label: &str, path: &Path, tables: &str, wasm: &Path, dir: &Path, runs: usize, check_calls: bool) {
    let size = std::fs::metadata(path).expect("stat the binlog").len();
    header(&format!(
        "{label}: {} ({:.1} MB), handler on {tables}, {runs} runs per case, median",
        path.display(),
        size as f64 / 1e6
    ));
    // Every row change in the file; this also warms the page cache so the
    // first case does not pay for the disk.
    let rows = decode_pass(path, "", Work::Decode).changes;
    let with_rows = |s: Sample| Sample { rows, ..s };
    let decode = report("decode", runs, || with_rows(decode_pass(path, tables, Work::Decode)));
    report("decode+encode", runs, || {
        with_rows(decode_pass(path, tables, Work::Encode(Vec::new())))
    });
    let runtime = HandlerRuntime::new().expect("start wasmtime");
    let module = runtime.load(wasm, 64 << 20).expect("load the trivial guest");
    report("decode+encode+call", runs, || {
        // A fresh instance per pass, made before the clock starts.
        let mut instance = trivial_instance(&runtime, &module);
        with_rows(decode_pass(path, tables, Work::Call(Vec::new(), &mut instance)))
    });
    drop(module);
    drop(runtime);
    let config = write_config(dir, label, wasm, tables);
    let mut last = Stats::default();
    let replay = report("replay", runs, || {
        let (s, stats) = replay_pass(&config, path);
        last = stats;
        with_rows(s)
    });
    println!(
        "replay counters: {} changes of subscribed tables, {} handler calls, {} messages, {} transactions; {} row changes in the file",
        last.changes, last.calls, last.messages, last.commits, decode.rows
    );
    assert_eq!(
        last.changes, decode.changes,
        "replay saw other changes than the decoder"
    );
    if check_calls {
        assert_eq!(
            last.calls, decode.changes,
            "calls must equal the subscribed table's changes: the others cost no call"
        );
        println!(
            "calls == changes of {tables}: {} of {} row changes ({:.1}%) reached the handler",
            last.calls,
            decode.rows,
            100.0 * last.calls as f64 / decode.rows.max(1) as f64
        );
    }
    let per_row = |s: &Sample| s.cpu.as_secs_f64() * 1e9 / s.changes.max(1) as f64;
    println!(
        "per subscribed change: decode {:.0} ns; replay {:.0} ns (cpu over {} changes)",
        per_row(&decode),
        per_row(&replay),
        replay.changes
    );
}

/// Engine start, compile and instantiate: what a replay pays once.
fn setup_cost(wasm: &Path) {
    let t0 = Instant::now();
    let runtime = HandlerRuntime::new().expect("start wasmtime");
    let t1 = Instant::now();
    let module = runtime.load(wasm, 64 << 20).expect("load the trivial guest");
    let t2 = Instant::now();
    let _instance = trivial_instance(&runtime, &module);
    let t3 = Instant::now();
    println!(
        "setup (once per replay): engine {:.1} ms, compile {} ({} KB) {:.1} ms, instantiate {:.2} ms",
        (t1 - t0).as_secs_f64() * 1e3,
        wasm.file_name().unwrap_or_default().to_string_lossy(),
        std::fs::metadata(wasm).map_or(0, |m| m.len() / 1024),
        (t2 - t1).as_secs_f64() * 1e3,
        (t3 - t2).as_secs_f64() * 1e3
    );
}

fn main() {
    let binlog = std::env::var_os("ROWHOOK_BENCH_BINLOG").map(PathBuf::from);
    let binlog10 = std::env::var_os("ROWHOOK_BENCH_BINLOG10").map(PathBuf::from);
    if binlog.is_none() && binlog10.is_none() {
        println!(
            "handlers bench: neither ROWHOOK_BENCH_BINLOG nor ROWHOOK_BENCH_BINLOG10 is set, nothing measured.\n\
             tests/bench/run.sh makes both binlogs and runs this bench with them:\n  \
             ONLY=handlers tests/bench/run.sh\n\
             or point at binlogs it left (KEEP_DB=1, BENCH_DIR=/tmp/rowhook-bench; see $BENCH_DIR/cases.env):\n  \
             ROWHOOK_BENCH_BINLOG=/tmp/rowhook-bench/db/log/$WL_FILE \\\n  \
             ROWHOOK_BENCH_BINLOG10=/tmp/rowhook-bench/db/log/$TEN_FILE cargo bench -p rowhook --bench handlers"
        );
        return;
    }
    let runs: usize = std::env::var("ROWHOOK_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1);
    let wasm = trivial_wasm();
    let dir = std::env::temp_dir().join(format!("rowhook-bench-handlers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the bench directory");
    println!("handlers bench: trivial handler {}", wasm.display());
    setup_cost(&wasm);
    if let Some(path) = &binlog {
        let tables = std::env::var("ROWHOOK_BENCH_TABLES").unwrap_or_else(|_| "cdcbench.*".into());
        bench_file("all", path, &tables, &wasm, &dir, runs, false);
    }
    if let Some(path) = &binlog10 {
        let table = std::env::var("ROWHOOK_BENCH_TABLE10").unwrap_or_else(|_| "cdcbench10.orders_3".into());
        bench_file("1-in-10", path, &table, &wasm, &dir, runs, true);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
