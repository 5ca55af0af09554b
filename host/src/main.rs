//! The `rowhook` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use rowhook::decode::txn::TableFilter;
use rowhook::inspect::{Format, Input, InspectOptions};
use rowhook::source::StartPosition;
use rowhook::source::live::LiveOptions;
use rowhook::source::server::SourceUrl;

/// React to every row change in MySQL or MariaDB.
#[derive(Parser)]
#[command(name = "rowhook", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print decoded row changes as JSON lines, from a server or binlog files.
    Inspect(InspectArgs),
    /// Check that a server is ready to feed rowhook.
    Check(CheckArgs),
    /// Run the configured handlers on every row change of the live server.
    Run(RunArgs),
    /// Run the configured handlers over recorded binlog files.
    Replay(ReplayArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The config file.
    #[arg(short, long, default_value = "rowhook.toml")]
    config: PathBuf,
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// The config file.
    #[arg(short, long, default_value = "rowhook.toml")]
    config: PathBuf,
    /// Binlog files, in order.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    /// One JSON object per row change.
    Json,
    /// Only the number of row changes.
    Count,
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
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Source server, mysql://USER:PASSWORD@HOST:PORT (or ROWHOOK_URL).
    #[arg(long, env = "ROWHOOK_URL", hide_env_values = true)]
    url: String,
    /// Replica server id rowhook will use.
    #[arg(long, default_value_t = 4242)]
    server_id: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("ROWHOOK_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rowhook: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Handlers run outside the async runtime (see rowhook::run).
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Replay(args) => replay(args),
        Command::Inspect(args) => rt.block_on(inspect(args)),
        Command::Check(args) => rt.block_on(check(args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rowhook: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
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
    };
    let stdout = std::io::stdout().lock();
    let out = std::io::BufWriter::with_capacity(1 << 16, stdout);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    rowhook::inspect::run(opts, out, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

async fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let url = SourceUrl::parse(&args.url)?;
    let lines = rowhook::check::check_server(&url, args.server_id).await;
    let mut ok = true;
    for line in &lines {
        println!("{} {}", if line.ok { "ok  " } else { "FAIL" }, line.text);
        ok &= line.ok;
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let plan = rowhook::config::Plan::load(&args.config)?;
    let stats = rowhook::run::replay(&plan, &args.files)?;
    eprintln!(
        "rowhook: {} row changes, {} handler calls, {} messages, {} handler errors, {} transactions",
        stats.changes, stats.calls, stats.messages, stats.handler_errors, stats.commits
    );
    Ok(ExitCode::SUCCESS)
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let plan = rowhook::config::Plan::load(&args.config)?;
    let stats = rowhook::run::run(&plan)?;
    eprintln!(
        "rowhook: stopped after {} row changes, {} messages, {} transactions",
        stats.changes, stats.messages, stats.commits
    );
    Ok(ExitCode::SUCCESS)
}
