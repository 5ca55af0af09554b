//! The `rowhook` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Prints one line of a command's report to stdout. A reader that went
/// away (`rowhook check | head -3`) ends the command quietly with status
/// 141, as a Unix tool killed by SIGPIPE would (rowhook keeps SIGPIPE
/// ignored: its sinks must see a closed pipe as an error, not die of it).
macro_rules! say {
    ($($arg:tt)*) => { say_line(format_args!($($arg)*)) };
}

/// The `--log-format` of this run, for the lines rowhook writes to stderr
/// itself (a run's summary, the error it ends with).
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Writes a summary or an error line to stderr: `rowhook: LINE`, or with
/// `--log-format json` a JSON object like the log's lines.
fn tell(level: &str, line: std::fmt::Arguments<'_>) {
    match LOG_FORMAT.get() {
        Some(LogFormat::Json) => {
            use tracing_subscriber::fmt::time::FormatTime as _;
            let mut timestamp = String::new();
            let _ = tracing_subscriber::fmt::time::SystemTime
                .format_time(&mut tracing_subscriber::fmt::format::Writer::new(&mut timestamp));
            let object = serde_json::json!({
                "timestamp": timestamp,
                "level": level,
                "message": line.to_string(),
                "target": "rowhook",
            });
            eprintln!("{object}");
        }
        _ => eprintln!("rowhook: {line}"),
    }
}

fn say_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(line).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        tell("ERROR", format_args!("writing to stdout: {e}"));
        std::process::exit(1);
    }
}
use rowhook::cli::inspect::{Format, Input, InspectOptions};
use rowhook::decode::txn::TableFilter;
use rowhook::source::StartPosition;
use rowhook::source::live::LiveOptions;
use rowhook::source::server::SourceUrl;

/// React to every row change in MySQL or MariaDB.
#[derive(Parser)]
#[command(name = "rowhook", version, about)]
struct Cli {
    /// How log lines (on stderr) are written: text, or one JSON object per
    /// line (timestamp, level, message and the event's fields: handler,
    /// change, sink, ...).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// `--log-format`.
#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Print decoded row changes as JSON lines, from a server or binlog files.
    Inspect(InspectArgs),
    /// Check that a server is ready to feed rowhook, and that a config's
    /// modules, grants, limits and sinks will run.
    Check(CheckArgs),
    /// Run the configured handlers on every row change of the live server.
    Run(RunArgs),
    /// Read tables as they are now and hand their rows to the handlers as
    /// `snapshot` changes: on a first start every subscribed table, then
    /// the binlog (as `run`); or one table (--table), also while a rowhook
    /// runs on this config, which then reads it while it streams.
    Snapshot(SnapshotArgs),
    /// Publish every change of the subscribed tables to the NATS JetStream
    /// stream of [cluster], partitioned by primary key, as the one capture
    /// of the source: others stand by and take over when its lease lapses.
    #[cfg(feature = "cluster")]
    Capture(RunArgs),
    /// Run the configured handlers on the partitions of the [cluster]
    /// stream this worker owns; workers of one group share them fairly and
    /// take over those of a worker that died.
    #[cfg(feature = "cluster")]
    Work(RunArgs),
    /// Run the configured handlers over recorded binlog files.
    Replay(ReplayArgs),
    /// Replay binlog files through the configured handlers into in-memory
    /// sinks and compare what each sink received with its golden file.
    Test(TestArgs),
    /// Write a handler project that builds and passes its own test.
    New(NewArgs),
    /// Show the checkpoint, the lag behind the server, handler state and
    /// dead letters; reset a handler's state or move the start position.
    State(StateArgs),
}

#[derive(clap::Args)]
struct StateArgs {
    /// The config file.
    #[arg(short, long, default_value = "rowhook.toml")]
    config: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    action: Option<StateAction>,
}

#[derive(Subcommand)]
enum StateAction {
    /// Delete every key of one handler's state (rowhook must be stopped).
    Reset {
        /// The handler: TENANT/NAME, or its name if that is unique.
        handler: String,
        /// Confirm: the state cannot be recovered.
        #[arg(long)]
        yes: bool,
    },
    /// Move where the next run starts (rowhook must be stopped):
    /// FILE:POS, a GTID set, or `config` to forget the checkpoint and use
    /// the config's [source] start.
    SetStart {
        /// FILE:POS | GTID set | config.
        to: String,
        /// Confirm: changes between the old and the new position are
        /// skipped or handled again.
        #[arg(long)]
        yes: bool,
    },
    /// Print one handler's state as JSON lines.
    Dump {
        /// The handler: TENANT/NAME, or its name if that is unique.
        handler: String,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The config file.
    #[arg(short, long, default_value = "rowhook.toml")]
    config: PathBuf,
}

#[derive(clap::Args)]
struct SnapshotArgs {
    /// The config file.
    #[arg(short, long, default_value = "rowhook.toml")]
    config: PathBuf,
    /// Read this table (DB.TABLE) again, whatever the checkpoint.
    #[arg(long)]
    table: Option<String>,
    /// Only the rows this SQL condition selects (with --table).
    #[arg(long = "where", requires = "table")]
    filter: Option<String>,
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// The config file.
    #[arg(short, long, default_value = "rowhook.toml")]
    config: PathBuf,
    /// Binlog files, in order.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Keep handler state and the position in the config's [state] store,
    /// as `run` does, and resume after its checkpoint.
    #[arg(long)]
    checkpoint: bool,
}

#[derive(clap::Args)]
struct NewArgs {
    /// The handler's language: rust, js, python or c.
    #[arg(long, default_value = "rust")]
    lang: String,
    /// The project's name: lowercase letters, digits and `-`.
    name: String,
    /// Where to write it (default: ./NAME).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct TestArgs {
    /// The config file.
    #[arg(short, long, default_value = "rowhook.toml")]
    config: PathBuf,
    /// Binlog files, in order.
    #[arg(long, required = true, num_args = 1..)]
    binlog: Vec<PathBuf>,
    /// The golden files' directory: `SINK.out` for each sink (default:
    /// `golden/` beside the config).
    #[arg(long)]
    golden: Option<PathBuf>,
    /// Record what each sink received as its golden file.
    #[arg(long)]
    update: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    /// One JSON object per row change.
    Json,
    /// Only the number of row changes.
    Count,
}

/// `inspect --on-error`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum OnErrorArg {
    /// Stop at the first row that cannot be decoded.
    Halt,
    /// Log it and read on.
    Skip,
}

#[derive(clap::Args)]
struct InspectArgs {
    /// Source server, mysql://USER:PASSWORD@HOST:PORT (or ROWHOOK_URL).
    #[arg(
        long,
        env = "ROWHOOK_URL",
        conflicts_with = "file",
        required_unless_present = "file",
        hide_env_values = true
    )]
    url: Option<String>,
    /// Binlog files to read instead of a server, in order.
    #[arg(long, num_args = 1..)]
    file: Vec<PathBuf>,
    /// earliest | latest | FILE:POS | GTID set.
    #[arg(long, default_value = "earliest")]
    start: String,
    /// Only these tables: db.table,db.* (default: all).
    #[arg(long, default_value = "")]
    tables: String,
    /// Stop after N row changes.
    #[arg(long)]
    limit: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    format: FormatArg,
    /// With --file: wait for more events at the end, following ROTATEs.
    #[arg(long, requires = "file")]
    follow: bool,
    /// Replica server id to connect with (unique among the server's replicas).
    #[arg(long, default_value_t = 4242)]
    server_id: u32,
    /// Heartbeat period in seconds; three missed heartbeats mean the connection is dead.
    #[arg(long, default_value_t = 5.0)]
    heartbeat: f64,
    /// Accept binlogs without column names (binlog_row_metadata not FULL):
    /// live, names come from information_schema and can be wrong across DDL;
    /// from files, columns are named @1, @2, ...
    #[arg(long)]
    allow_minimal_metadata: bool,
    /// Log and skip statement-based changes (binlog_format=STATEMENT or
    /// MIXED) instead of stopping: their rows are not in the binlog.
    #[arg(long)]
    skip_statements: bool,
    /// Rows that cannot be decoded (a table whose TABLE_MAP cannot be
    /// planned, a value that cannot be read): halt with an error naming the
    /// table, column and position, or skip them with a warning and read on.
    #[arg(long = "on-error", value_enum, default_value = "halt")]
    on_error: OnErrorArg,
    /// Give up after N failed reconnection attempts in a row (default: keep
    /// trying, backing off up to 10 s; 0: a lost connection ends the run).
    #[arg(long, value_name = "N")]
    max_reconnect_attempts: Option<u32>,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Source server, mysql://USER:PASSWORD@HOST:PORT (or ROWHOOK_URL).
    #[arg(
        long,
        env = "ROWHOOK_URL",
        hide_env_values = true,
        required_unless_present = "config",
        conflicts_with = "config"
    )]
    url: Option<String>,
    /// Replica server id rowhook will use (with --url).
    #[arg(long, default_value_t = 4242, conflicts_with = "config")]
    server_id: u32,
    /// A config file: checks it, every handler's module, grants, limits and
    /// sinks, and its [source] server if it has one.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// With --config: recorded binlog files whose changes of each
    /// handler's tables the trial calls use (default: made-up changes).
    #[arg(long, num_args = 1.., requires = "config")]
    binlog: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = LOG_FORMAT.set(cli.log_format);
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROWHOOK_LOG").unwrap_or_else(|_| "warn".into());
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tell("ERROR", format_args!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    // Handlers run outside the async runtime (see rowhook::cli).
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Snapshot(args) => snapshot(args),
        #[cfg(feature = "cluster")]
        Command::Capture(args) => capture(args),
        #[cfg(feature = "cluster")]
        Command::Work(args) => work(args),
        Command::Replay(args) => replay(args),
        Command::Test(args) => test(args),
        Command::New(args) => new(args),
        Command::State(args) => state(&rt, args),
        Command::Inspect(args) => inspect(&rt, args),
        Command::Check(args) => check(&rt, args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tell("ERROR", format_args!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

fn inspect(rt: &tokio::runtime::Runtime, args: InspectArgs) -> anyhow::Result<ExitCode> {
    let start: StartPosition = args
        .start
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--start: {e}"))?;
    let tables = TableFilter::parse(&args.tables).map_err(|e| anyhow::anyhow!("--tables: {e}"))?;
    let input = match args.url {
        Some(url) => {
            anyhow::ensure!(args.heartbeat > 0.0, "--heartbeat must be positive");
            Input::Live(LiveOptions {
                url: SourceUrl::parse(&url)?,
                server_id: args.server_id,
                start: start.clone(),
                heartbeat: Duration::from_secs_f64(args.heartbeat),
                allow_minimal_metadata: args.allow_minimal_metadata,
                successor: false,
            })
        }
        None => Input::Files(args.file),
    };
    let opts = InspectOptions {
        input,
        start,
        tables,
        limit: args.limit,
        format: match args.format {
            FormatArg::Json => Format::Json,
            FormatArg::Count => Format::Count,
        },
        follow: args.follow,
        allow_minimal_metadata: args.allow_minimal_metadata,
        skip_statements: args.skip_statements,
        reconnect: rowhook::source::reconnect::RetryPolicy {
            max_attempts: args.max_reconnect_attempts,
            ..Default::default()
        },
        on_undecodable: match args.on_error {
            OnErrorArg::Halt => rowhook::cli::inspect::OnUndecodable::Halt,
            OnErrorArg::Skip => rowhook::cli::inspect::OnUndecodable::Skip,
        },
    };
    let stdout = std::io::stdout().lock();
    let out = std::io::BufWriter::with_capacity(1 << 16, stdout);
    rowhook::cli::inspect::run(rt, opts, out, rowhook::driver::stop_on_signals(|| {})?)?;
    Ok(ExitCode::SUCCESS)
}

fn check(rt: &tokio::runtime::Runtime, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let lines = match (args.url, args.config) {
        (Some(url), _) => rt.block_on(rowhook::cli::check::check_server(
            &SourceUrl::parse(&url)?,
            args.server_id,
        )),
        (None, Some(config)) => {
            let plan = rowhook::config::Plan::load(&config)?;
            // With [deploy], the tenants' deployed handlers are checked too.
            let (plan, deployed) = match plan.deploy {
                Some(_) => rowhook::deploy::Site::check(&plan)?,
                None => (plan, Vec::new()),
            };
            // Without a binlog, the trial calls are shaped as the server
            // describes the handlers' tables, where it can be reached (if it
            // cannot, check_server below says why).
            let shapes = match &plan.source {
                Some(source) if args.binlog.is_empty() => rt
                    .block_on(rowhook::cli::shapes::read(&source.url, &plan))
                    .unwrap_or_default(),
                _ => Default::default(),
            };
            // Modules are checked outside the async runtime (see rowhook::cli).
            let mut lines = rowhook::cli::check::check_plan(&plan, &args.binlog, &shapes);
            lines.extend(deployed);
            match &plan.source {
                Some(source) => {
                    lines.extend(rt.block_on(rowhook::cli::check::check_server(&source.url, source.server_id)));
                    lines.extend(rt.block_on(rowhook::cli::check::check_snapshot(&plan)));
                }
                None => lines.push(rowhook::cli::check::CheckLine {
                    ok: true,
                    text: "no [source]: the config can replay binlog files; `rowhook run` needs a [source]".into(),
                }),
            }
            #[cfg(feature = "cluster")]
            if let Some(cluster) = &plan.cluster {
                lines.extend(rt.block_on(rowhook::cluster::probe(cluster)));
            }
            lines
        }
        (None, None) => unreachable!("clap requires --url or --config"),
    };
    let mut ok = true;
    for line in &lines {
        say!("{} {}", if line.ok { "ok  " } else { "FAIL" }, line.text);
        ok &= line.ok;
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let plan = rowhook::config::Plan::load(&args.config)?;
    let opts = rowhook::cli::replay::ReplayOptions {
        checkpoint: args.checkpoint,
    };
    let stats = rowhook::cli::replay::replay_with(&plan, &args.files, &opts)?;
    tell(
        "INFO",
        format_args!(
            "{} row changes, {} handler calls, {} messages, {} handler errors, {} transactions",
            stats.changes, stats.calls, stats.messages, stats.handler_errors, stats.commits
        ),
    );
    Ok(ExitCode::SUCCESS)
}

fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    let lang = rowhook::cli::new::Lang::parse(&args.lang).map_err(|e| anyhow::anyhow!("--lang: {e}"))?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    let files = rowhook::cli::new::new_project(lang, &args.name, &dir)?;
    say!(
        "wrote {} files into {}: `cd {} && bash test.sh` builds the handler and tests it",
        files.len(),
        dir.display(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let plan = rowhook::config::Plan::load(&args.config)?;
    let opts = rowhook::cli::test::TestOptions {
        golden: args
            .golden
            .unwrap_or_else(|| rowhook::cli::test::default_golden_dir(&args.config)),
        update: args.update,
    };
    let outcomes = rowhook::cli::test::test(&plan, &args.binlog, &opts)?;
    let mut ok = true;
    for o in &outcomes {
        match &o.problem {
            None if args.update => say!(
                "ok   sink `{}`: {} messages recorded in {}",
                o.sink,
                o.messages,
                o.golden.display()
            ),
            None => say!(
                "ok   sink `{}`: {} messages, as {}",
                o.sink,
                o.messages,
                o.golden.display()
            ),
            Some(problem) => {
                ok = false;
                say!("FAIL sink `{}`: {} messages; {problem}", o.sink, o.messages);
            }
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let plan = rowhook::config::Plan::load(&args.config)?;
    let stats = rowhook::cli::run::run(&plan)?;
    tell(
        "INFO",
        format_args!(
            "stopped after {} row changes, {} messages, {} transactions",
            stats.changes, stats.messages, stats.commits
        ),
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "cluster")]
fn capture(args: RunArgs) -> anyhow::Result<ExitCode> {
    let plan = rowhook::config::Plan::load(&args.config)?;
    let stats = rowhook::cli::capture::capture(&plan)?;
    tell(
        "INFO",
        format_args!(
            "stopped after publishing {} row changes ({} acknowledged, {} of them duplicates) in {} terms as the capture",
            stats.changes, stats.acked, stats.duplicates, stats.terms
        ),
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "cluster")]
fn work(args: RunArgs) -> anyhow::Result<ExitCode> {
    let plan = rowhook::config::Plan::load(&args.config)?;
    let stats = rowhook::cli::work::work(&plan)?;
    tell(
        "INFO",
        format_args!(
            "stopped after {} row changes, {} messages, {} state writes; took {} partitions, gave up {}",
            stats.changes, stats.messages, stats.commits, stats.taken, stats.released
        ),
    );
    Ok(ExitCode::SUCCESS)
}

fn snapshot(args: SnapshotArgs) -> anyhow::Result<ExitCode> {
    use rowhook::cli::snapshot::{Ask, Outcome};
    let plan = rowhook::config::Plan::load(&args.config)?;
    let ask = match args.table {
        Some(table) => Ask::Table {
            table,
            filter: args.filter,
        },
        None => Ask::Initial,
    };
    match rowhook::cli::snapshot::snapshot(&plan, ask)? {
        Outcome::Queued(answer) => say!("{answer}"),
        Outcome::Ran(stats) => tell(
            "INFO",
            format_args!(
                "stopped after {} row changes, {} messages, {} transactions",
                stats.changes, stats.messages, stats.commits
            ),
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn state(rt: &tokio::runtime::Runtime, args: StateArgs) -> anyhow::Result<ExitCode> {
    let plan = rowhook::config::Plan::load(&args.config)?;
    match args.action {
        None => {
            let report = rt.block_on(rowhook::cli::state::report(&plan))?;
            if args.json {
                say!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", rowhook::cli::state::render(&report));
            }
        }
        Some(StateAction::Reset { handler, yes }) => {
            anyhow::ensure!(
                yes,
                "resetting deletes every key of handler `{handler}`'s state for good; add --yes to confirm"
            );
            let (handler, n) = rowhook::cli::state::reset_state(&plan, &handler)?;
            say!("handler `{handler}`: {n} keys deleted");
        }
        Some(StateAction::SetStart { to, yes }) => {
            anyhow::ensure!(
                yes,
                "moving the start position skips or repeats the changes in between; add --yes to confirm"
            );
            match rowhook::cli::state::set_start(&plan, &to)? {
                Some(cp) if cp.file.is_empty() => say!("the next run starts after GTID set {}", cp.gtids),
                Some(cp) => say!("the next run starts at {}:{}", cp.file, cp.pos),
                None => say!("checkpoint forgotten: the next run starts where [source] start says"),
            }
        }
        Some(StateAction::Dump { handler }) => print!("{}", rowhook::cli::state::dump(&plan, &handler)?),
    }
    Ok(ExitCode::SUCCESS)
}
