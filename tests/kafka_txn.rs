//! Kafka transactions through `oncelog serve` with real clients as black boxes
//! (docs/kafka-wire.md, "Transactions"): confluent-kafka (librdkafka 2.16) in every scenario of
//! tests/kafka/confluent_txn.py, kafka-python and aiokafka in a commit/abort run with offsets,
//! and offset metadata strings (plain and transactional commits) with kafka-python and
//! confluent-kafka.
//! Each test runs against its own server; the scripts check what the clients see and exit
//! non-zero naming the first mismatch.

#[path = "common/kafka_serve.rs"]
mod kafka_serve;
#[path = "common/procs.rs"]
mod procs;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use kafka_serve::{require_python, run, script, Serve};

/// Runs `confluent_txn.py BOOTSTRAP args...` and returns its stdout, which must say `OK`.
fn scenario(serve: &Serve, args: &[&str]) -> String {
    let out = run_script(serve, "confluent_kafka", "confluent_txn.py", args);
    assert!(out.contains(&format!("OK {}", args[0])), "{out}");
    out
}

fn run_script(serve: &Serve, module: &str, name: &str, args: &[&str]) -> String {
    require_python(module);
    let out = run(
        Command::new("python3")
            .arg(script(name))
            .arg(serve.bootstrap())
            .args(args),
        None,
        serve,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("OK "), "{stdout}");
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

/// kafka-python's transactional producer (the v3 flexible encodings of AddPartitionsToTxn,
/// AddOffsetsToTxn, TxnOffsetCommit and EndTxn): six transactions with group offsets, every
/// second aborted; read_committed sees the 30 committed records, read_uncommitted all 60, and
/// the group's offset is the last committed transaction's.
#[test]
fn kafka_python_commits_and_aborts_transactions_with_offsets() {
    let serve = Serve::start(&[]);
    let out = run_script(&serve, "kafka", "kafka_python_txn.py", &["kp"]);
    assert!(out.contains("committed=30 aborted=30"), "{out}");
}

/// kafka-python's transactional producer SIGKILLed inside a transaction whose records reached
/// the partitions (tests/kafka/kafka_python_txn_faults.py): a new kafka-python producer with the
/// same transactional.id aborts it when it initialises; read_committed never sees the doomed
/// records, read_uncommitted does.
#[test]
fn kafka_python_a_killed_producers_transaction_is_aborted_by_the_next_init() {
    let serve = Serve::start(&[]);
    let out = run_script(
        &serve,
        "kafka",
        "kafka_python_txn_faults.py",
        &["killed", "kpk", "kp-tid-killed"],
    );
    assert!(out.contains("OK killed"), "{out}");
}

/// A second kafka-python producer with the same transactional.id fences the first: the first's
/// commit fails as fenced and its records never become visible to read_committed.
#[test]
fn kafka_python_an_older_producer_is_fenced_by_a_new_init() {
    let serve = Serve::start(&[]);
    let out = run_script(
        &serve,
        "kafka",
        "kafka_python_txn_faults.py",
        &["fenced", "kpf", "kp-tid-fenced"],
    );
    assert!(out.contains("OK fenced"), "{out}");
}

/// The same with aiokafka, the client with the oldest versions (InitProducerId v0,
/// AddPartitionsToTxn v0, EndTxn v0).
#[test]
fn aiokafka_commits_and_aborts_transactions_with_offsets() {
    let serve = Serve::start(&[]);
    let out = run_script(&serve, "aiokafka", "aiokafka_txn.py", &["aio"]);
    assert!(out.contains("committed=30 aborted=30"), "{out}");
}

/// kafka-python's admin client (DescribeTransactions v0, ListTransactions v1): an open
/// transaction on two partitions, an initialised idle producer and a committed transaction are
/// described and listed as the coordinator holds them, the list filtered by state, producer id
/// and duration, an unknown id is TransactionalIdNotFoundError, and the open one is listed
/// CompleteCommit once it commits.
#[test]
fn kafka_python_admin_describes_and_lists_transactions() {
    let serve = Serve::start(&[]);
    let out = run_script(&serve, "kafka", "kafka_python_txn_admin.py", &["adm"]);
    assert!(
        out.contains("OK kafka-python DescribeTransactions"),
        "{out}"
    );
}

/// Offset metadata strings (tests/kafka/offset_metadata.py): a plain commit with metadata is
/// answered by committed() with its string, a 4097-byte string is refused and changes nothing,
/// and send_offsets_to_transaction's metadata is returned once the transaction commits.
#[test]
fn kafka_python_keeps_offset_metadata_plain_and_in_a_transaction() {
    let serve = Serve::start(&[]);
    let out = run_script(
        &serve,
        "kafka",
        "offset_metadata.py",
        &["kafka-python", "meta"],
    );
    assert!(out.contains("OK kafka-python offset metadata"), "{out}");
}

/// The same with confluent-kafka (librdkafka: OffsetCommit, OffsetFetch and TxnOffsetCommit at
/// the versions it negotiates).
#[test]
fn confluent_keeps_offset_metadata_plain_and_in_a_transaction() {
    let serve = Serve::start(&[]);
    let out = run_script(
        &serve,
        "confluent_kafka",
        "offset_metadata.py",
        &["confluent", "meta"],
    );
    assert!(out.contains("OK confluent offset metadata"), "{out}");
}

/// Durable sessions: the server is SIGKILLed and restarted on the same port while producer A is
/// between transactions and producer B has one open. A's next transaction commits with the
/// same producer object (no new InitProducerId: its session was rebuilt from the recorded
/// identity and the coordinator's state); B's open transaction was aborted at the restart (its
/// commit fails, a new instance commits); read_committed sees every committed record once and
/// none of B's aborted ones.
#[test]
fn a_transactional_producer_goes_on_after_a_server_restart() {
    require_python("confluent_kafka");
    let mut serve = Serve::start(&[]);
    let mut child = Command::new("python3")
        .arg(script("confluent_txn.py"))
        .args([serve.bootstrap().as_str(), "restart", "rs", "tid-restart"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            let _ = child.wait();
            panic!(
                "the script ended before RESTART: {seen}\nserver: {}",
                serve.stderr()
            );
        }
        seen.push_str(&line);
        if line.trim() == "RESTART" {
            break;
        }
    }
    serve.kill9_and_restart(&[]);
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "GO").unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    seen.push_str(&rest);
    assert!(
        status.success() && seen.contains("OK restart"),
        "{seen}\nserver: {}",
        serve.stderr()
    );
    assert!(
        serve.stderr().contains("transactional session(s) rebuilt"),
        "{}",
        serve.stderr()
    );
}
