//! `oncelog`: inspect, verify and demonstrate an oncelog partition-log directory.
//!
//! `dump`, `verify` and `stat` read the files directly and never open the `Log`: they work on a
//! damaged or locked directory and modify nothing. `demo` writes a log, kills a writer process
//! with SIGKILL and checks what recovery brings back. `controller`, `move-leader` and
//! `cluster-status` are the TCP driver's controller process and the operator's commands against
//! it (`docs/replication.md`, "TCP driver"); `produce` and `consume` are console clients of such
//! a cluster.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    init_tracing();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprint!("{}", cli::help::usage());
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    if let Some(code) = help_or_version(command, rest) {
        return code;
    }
    let result = match command.as_str() {
        "dump" => cli::dump::main(rest),
        "verify" => cli::verify::main(rest),
        "stat" => cli::stat::main(rest),
        "demo" => cli::demo::main(rest),
        #[cfg(feature = "net")]
        "controller" => cli::cluster::controller_main(rest),
        #[cfg(feature = "net")]
        "node" => cli::cluster::node_main(rest),
        #[cfg(feature = "net")]
        "move-leader" => cli::cluster::move_leader_main(rest),
        #[cfg(feature = "net")]
        "cluster-status" => cli::cluster::cluster_status_main(rest),
        #[cfg(feature = "net")]
        "produce" => cli::produce::main(rest),
        #[cfg(feature = "net")]
        "consume" => cli::consume::main(rest),
        #[cfg(not(feature = "net"))]
        "controller" | "node" | "move-leader" | "cluster-status" | "produce" | "consume" => {
            Err(not_built(command, "net"))
        }
        #[cfg(feature = "cluster")]
        "demo-cluster" => cli::demo_cluster::main(rest),
        #[cfg(not(feature = "cluster"))]
        "demo-cluster" => Err(not_built(command, "cluster")),
        "serve" => cli::serve::main(rest),
        cli::demo::CHILD_COMMAND => cli::demo::child_main(rest),
        other => Err(cli::CliError::Usage(format!("unknown command '{other}'"))),
    };
    match result {
        Ok(code) => code,
        Err(cli::CliError::Usage(msg)) => {
            eprintln!("oncelog: {msg}\n");
            match cli::help::find(command) {
                Some(c) => eprint!("{}", c.help()),
                None => eprint!("{}", cli::help::usage()),
            }
            ExitCode::from(2)
        }
        Err(cli::CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(cli::CliError::Failed(msg)) => {
            eprintln!("oncelog: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// The answer of a command this binary was built without (`--no-default-features`).
#[cfg(not(all(feature = "net", feature = "cluster")))]
fn not_built(command: &str, feature: &str) -> cli::CliError {
    cli::CliError::Failed(format!(
        "this oncelog was built without the `{feature}` feature, which `{command}` needs \
         (cargo build --features {feature})"
    ))
}

/// `--version`, `help [COMMAND]`, `--help`, and `COMMAND --help` anywhere in its arguments:
/// the exit code once printed, `None` for every other command line.
fn help_or_version(command: &str, rest: &[String]) -> Option<ExitCode> {
    let asks_help = |a: &String| a == "--help" || a == "-h";
    match command {
        "--version" | "-V" | "version" => {
            println!("oncelog {}", env!("CARGO_PKG_VERSION"));
            Some(ExitCode::SUCCESS)
        }
        "help" | "--help" | "-h" => match rest.first() {
            None => {
                print!("{}", cli::help::usage());
                Some(ExitCode::SUCCESS)
            }
            Some(name) => match cli::help::find(name) {
                Some(c) => {
                    print!("{}", c.help());
                    Some(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("oncelog: unknown command '{name}'\n");
                    eprint!("{}", cli::help::usage());
                    Some(ExitCode::from(2))
                }
            },
        },
        name if rest.iter().any(asks_help) => cli::help::find(name).map(|c| {
            print!("{}", c.help());
            ExitCode::SUCCESS
        }),
        _ => None,
    }
}

/// The library's and the commands' log events on stderr, with timestamps, filtered by
/// `RUST_LOG` (default `info`; e.g. `RUST_LOG=oncelog=debug`).
#[cfg(feature = "cli")]
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Fails only if a subscriber is already installed: keep that one.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Built without the `cli` feature: no subscriber, the library prints nothing.
#[cfg(not(feature = "cli"))]
fn init_tracing() {}
