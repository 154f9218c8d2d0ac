//! `oncelog`: inspect, verify and demonstrate an oncelog partition-log directory.
//!
//! `dump`, `verify` and `stat` read the files directly and never open the `Log`: they work on a
//! damaged or locked directory and modify nothing. `demo` writes a log, kills a writer process
//! with SIGKILL and checks what recovery brings back. `controller`, `move-leader` and
//! `cluster-status` are the TCP driver's controller process and the operator's commands against
//! it (`docs/replication.md`, "TCP driver").

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
    dump [--records] DIR     print every batch of every segment (like kafka-dump-log),
                             markers and transactional batches, each .txnindex, the open
                             transactions and the last stable offset;
                             --records also prints each record
    verify DIR               full integrity check; exit 0 if OK, 1 on any problem
    stat DIR                 segments, offsets, recovery point and clean-shutdown state
    controller --cluster FILE [--dir DIR] [--session-timeout-ms N]
                             run the partition's controller (leader, epochs, ISR, replica
                             sessions, producer ids) on the cluster file's controller address;
                             state in DIR (default: controller-data beside FILE)
    node --cluster FILE --id N [--dir DIR]
                             run replica N of the cluster (its log in DIR or the directory the
                             cluster file names) until killed
    move-leader --cluster FILE --to N [--unclean]
                             move leadership to replica N (it must be in the ISR and caught
                             up; --unclean only when no in-sync replica can lead)
    cluster-status --cluster FILE
                             leader, leader and partition epochs, ISR and each replica's session
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
        "controller" => cli::cluster::controller_main(rest),
        "node" => cli::cluster::node_main(rest),
        "move-leader" => cli::cluster::move_leader_main(rest),
        "cluster-status" => cli::cluster::cluster_status_main(rest),
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
