//! Kafka transactions through `oncelog serve` with a real client, confluent-kafka (librdkafka
//! 2.16), as a black box (docs/kafka-wire.md, "Transactions"). Each test runs one scenario of
//! tests/kafka/confluent_txn.py against its own server; the script checks what the clients see
//! and exits non-zero naming the first mismatch.

#[path = "common/kafka_serve.rs"]
mod kafka_serve;
#[path = "common/procs.rs"]
mod procs;

use std::process::Command;

use kafka_serve::{require_python, run, script, Serve};

/// Runs `confluent_txn.py BOOTSTRAP args...` and returns its stdout, which must say `OK`.
fn scenario(serve: &Serve, args: &[&str]) -> String {
    require_python("confluent_kafka");
    let out = run(
        Command::new("python3")
            .arg(script("confluent_txn.py"))
            .arg(serve.bootstrap())
            .args(args),
        None,
        serve,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains(&format!("OK {}", args[0])), "{stdout}");
    stdout
}

/// Eight transactions over four partitions, committed and aborted in turn: a read_committed
/// consumer sees each committed record once and no aborted one; read_uncommitted sees both.
#[test]
fn committed_and_aborted_transactions_read_committed_and_uncommitted() {
    let mut serve = Serve::start(&[]);
    scenario(&serve, &["commit-abort", "ca"]);
    assert!(serve.stop().success(), "{}", serve.stderr());
}

/// Consume from one topic, produce to another and commit the input offsets inside the
/// transaction (`send_offsets_to_transaction`), every third transaction aborted and re-done:
/// the output holds every input exactly once, and the group's committed offsets move only when
/// a transaction commits.
#[test]
fn read_process_write_commits_offsets_with_the_output() {
    let serve = Serve::start(&[]);
    let out = scenario(&serve, &["rpw", "in", "out", "rpw-group", "300"]);
    assert!(
        !out.contains("aborts=0"),
        "no transaction was aborted: {out}"
    );
}

/// A producer process SIGKILLed inside a transaction whose records reached the partitions: a
/// new producer with the same transactional.id aborts it when it initialises, and
/// read_committed never sees those records (read_uncommitted does: they were stored).
#[test]
fn a_killed_producers_transaction_is_aborted_by_the_next_init() {
    let serve = Serve::start(&[]);
    scenario(&serve, &["killed", "k", "tid-killed"]);
}

/// The same kill, and nobody takes the transactional id over: the coordinator's transaction
/// timeout (3 s here), driven by the server's background tick, aborts it, and read_committed
/// gets past it to a later committed transaction.
#[test]
fn a_killed_producers_transaction_is_aborted_on_timeout() {
    let serve = Serve::start(&[]);
    scenario(&serve, &["timeout", "tm", "tid-timeout"]);
    assert!(
        serve
            .stderr()
            .contains("transaction timeout aborted [\"tid-timeout\"]"),
        "{}",
        serve.stderr()
    );
}

/// A second producer with the same transactional.id fences the first: its commit fails as
/// fenced, and its records are never visible to read_committed.
#[test]
fn an_older_producer_is_fenced_by_a_new_init() {
    let serve = Serve::start(&[]);
    let out = scenario(&serve, &["fenced", "f", "tid-fenced"]);
    assert!(out.contains("FENCED"), "{out}");
}
