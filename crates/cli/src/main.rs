//! `netsleuth`: argument parsing and dispatch only. Each subcommand's flags and its thin glue to
//! the library crates live in `cmd/<name>.rs`; logic lives in the libraries.

mod cmd;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// mimalloc instead of glibc's malloc: its per-thread heaps make the small allocations of reading a
/// large `iptables-save` on all cores cheap (docs/benchmarks.md, iptables section).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kubernetes network diagnosis and monitoring.
///
/// Ask why traffic does not get through (`diagnose`), gather the state it reasons about
/// (`collect`), try it on an emulated cluster built from network namespaces (`lab`, `demo`), and
/// watch the kernel on every node (`agent`).
#[derive(Parser)]
#[command(
    name = "netsleuth",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// Log verbosity for diagnostics on stderr (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "warn", env = "NETSLEUTH_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Diagnose(cmd::diagnose::Args),
    Collect(cmd::collect::Args),
    #[command(subcommand)]
    Lab(cmd::lab::LabCommand),
    Demo(cmd::demo::Args),
    Agent(cmd::agent::Args),
    /// Look at an iptables-save dump on its own: counts, and what the simulator does not model.
    #[command(subcommand)]
    Netfilter(cmd::netfilter::NetfilterCommand),
    /// Speed benchmarks, measured side by side with a peer (results: docs/benchmarks.md).
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`netsleuth … | head`) as command-line tools do, instead of
    // panicking on the failed write.
    // SAFETY: called first thing, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let result = match cli.command {
        Command::Diagnose(args) => cmd::diagnose::run(args),
        Command::Collect(args) => cmd::collect::run(args),
        Command::Lab(command) => cmd::lab::run(command),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Agent(args) => cmd::agent::run(args),
        Command::Netfilter(command) => cmd::netfilter::run(command),
        Command::Bench(command) => cmd::bench::run(command),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "netsleuth",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("netsleuth: error: {err:#}");
            cmd::exit_code_for(&err)
        }
    }
}
