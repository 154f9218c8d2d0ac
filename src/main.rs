//! `oncelog`: inspect, verify and demonstrate an oncelog partition-log directory.
//!
//! `dump`, `verify` and `stat` read the files directly and never open the `Log`: they work on a
//! damaged or locked directory and modify nothing. `demo` writes a log, kills a writer process
//! with SIGKILL and checks what recovery brings back.

mod cli;

use std::process::ExitCode;

const USAGE: &str = "\
oncelog - an embeddable partition log for exactly-once streams

USAGE:
    oncelog <COMMAND> [ARGS]

COMMANDS:
    demo [DIR]               write a log, crash a writer with SIGKILL, recover and verify it
                             (DIR defaults to ./oncelog-demo and is deleted first)
    demo-cluster [DIR]       three in-process replicas survive a leader kill: acks=all
                             writes, failover, retries, every record read exactly once
                             (DIR defaults to ./oncelog-demo-cluster, deleted first)
    dump [--records] DIR     print every batch of every segment (like kafka-dump-log);
                             --records also prints each record
    verify DIR               full integrity check; exit 0 if OK, 1 on any problem
    stat DIR                 segments, offsets, recovery point and clean-shutdown state
    help, --help, -h         print this help

dump, verify and stat never open the log for writing: they work on a locked or damaged
directory and change nothing.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let result = match command.as_str() {
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        "dump" => cli::dump::main(rest),
        "verify" => cli::verify::main(rest),
        "stat" => cli::stat::main(rest),
        "demo" => cli::demo::main(rest),
        "demo-cluster" => cli::demo_cluster::main(rest),
        cli::demo::CHILD_COMMAND => cli::demo::child_main(rest),
        other => Err(cli::CliError::Usage(format!("unknown command '{other}'"))),
    };
    match result {
        Ok(code) => code,
        Err(cli::CliError::Usage(msg)) => {
            eprintln!("oncelog: {msg}\n");
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
        Err(cli::CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(cli::CliError::Failed(msg)) => {
            eprintln!("oncelog: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
