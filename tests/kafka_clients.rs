//! `oncelog serve` against real Kafka clients, as black boxes: kcat (librdkafka 2.0), the
//! confluent-kafka Python client (librdkafka 2.16), kafka-python and aiokafka, each producing and
//! consuming through the Kafka wire protocol on an ephemeral loopback port
//! (docs/kafka-wire.md). A client that is not installed makes its test FAIL with the command
//! that installs it (`.ci/run` installs them all).
//!
//! The Python scripts are in tests/kafka/; each exits non-zero naming the first mismatch.
// Kafka's frames are big-endian (the hand-made frames of the bad-frame test).
#![allow(clippy::big_endian_bytes)]

#[path = "common/kafka_serve.rs"]
mod kafka_serve;
#[path = "common/procs.rs"]
mod procs;

use kafka_serve::{require_kcat, require_python, run, script, Serve};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use oncelog::broker::{Broker, BrokerConfig, TopicPartition};
use oncelog::Offset;

/// Every record value of `topic`-`partition` in a stopped server's data directory.
fn stored_values(data: &Path, topic: &str, partition: u32) -> Vec<Vec<u8>> {
    let mut config = BrokerConfig::default();
    config.log = config.log.with_segment_bytes(1 << 20);
    let broker = Broker::open(data, config).unwrap();
    let log = broker
        .partition(&TopicPartition::new(topic, partition).unwrap())
        .unwrap();
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.log_end_offset() {
        let fetch = log.read(next, 1 << 20).unwrap();
        for b in fetch.batches() {
            let b = b.unwrap();
            for r in b.records() {
                out.push(r.unwrap().value.unwrap_or_default().to_vec());
            }
            next = Offset(b.last_offset() + 1);
        }
    }
    broker.close().unwrap();
    out
}

#[test]
fn kcat_lists_produces_and_consumes() {
    require_kcat();
    let mut serve = Serve::start(&[]);
    let b = serve.bootstrap();
    run(
        Command::new("kcat").args(["-b", &b, "-P", "-t", "lines", "-p", "1", "-K", ":"]),
        Some("k1:one\nk2:two\nk3:three\n"),
        &serve,
    );
    let list = run(
        Command::new("kcat").args(["-b", &b, "-L", "-t", "lines"]),
        None,
        &serve,
    );
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("topic \"lines\" with 4 partitions"), "{list}");
    assert!(list.contains(&format!("broker 0 at {b}")), "{list}");
    let consumed = run(
        Command::new("kcat").args([
            "-b",
            &b,
            "-C",
            "-t",
            "lines",
            "-p",
            "1",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%o %k %s\\n",
        ]),
        None,
        &serve,
    );
    assert_eq!(
        String::from_utf8_lossy(&consumed.stdout),
        "0 k1 one\n1 k2 two\n2 k3 three\n"
    );
    assert!(serve.stop().success(), "{}", serve.stderr());
    assert!(
        serve.stderr().contains("closed cleanly"),
        "{}",
        serve.stderr()
    );
    assert_eq!(
        stored_values(&serve.data, "lines", 1),
        [&b"one"[..], b"two", b"three"]
    );
}

/// Runs `script BOOTSTRAP TOPIC CODEC N` once per codec against one server, each codec on its
/// own topic; the script checks everything and prints OK.
fn round_trips(script_name: &str, codecs: &[&str], n: u32) {
    let serve = Serve::start(&[]);
    for &codec in codecs {
        let out = run(
            Command::new("python3").arg(script(script_name)).args([
                serve.bootstrap().as_str(),
                &format!("t-{codec}"),
                codec,
                &n.to_string(),
            ]),
            None,
            &serve,
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
    }
}

#[test]
fn confluent_kafka_round_trip_with_every_compression() {
    require_python("confluent_kafka");
    round_trips(
        "confluent_roundtrip.py",
        &["none", "gzip", "snappy", "lz4", "zstd"],
        300,
    );
}

#[test]
fn kafka_python_round_trip() {
    require_python("kafka");
    require_python("lz4");
    // kafka-python reads snappy and zstd only with python-snappy / zstandard; librdkafka
    // covers those codecs above.
    round_trips("kafka_python_roundtrip.py", &["none", "gzip", "lz4"], 200);
}

/// aiokafka negotiates the oldest versions of the clients here (ApiVersions v0, InitProducerId
/// v0, Produce v7).
#[test]
fn aiokafka_round_trip() {
    require_python("aiokafka");
    // aiokafka's lz4 needs another module; the other clients cover lz4.
    round_trips("aiokafka_roundtrip.py", &["none", "gzip"], 200);
}

/// The server drops the connection after every third Produce that appended, before answering:
/// librdkafka's idempotent producer re-sends the batches it had in flight with the same
/// (producer id, epoch, sequence), and the log answers them as duplicates with their original
/// offsets. 200 sent, 200 stored, in order, none twice.
#[test]
fn idempotent_retries_after_dropped_connections_are_answered_as_duplicates() {
    require_python("confluent_kafka");
    let mut serve = Serve::start(&["--test-drop-after-append", "3"]);
    run(
        Command::new("python3")
            .arg(script("confluent_roundtrip.py"))
            .args([
                &serve.bootstrap(),
                "idem",
                "none",
                "200",
                "--idempotent",
                "--batch=5",
            ]),
        None,
        &serve,
    );
    let log = serve.stderr();
    let drops = log.matches("TEST FAULT: dropping the connection").count();
    let dups = log.matches("TEST FAULT: duplicate").count();
    assert!(drops >= 5, "only {drops} dropped connections:\n{log}");
    assert!(dups >= 1, "no retry was answered as a duplicate:\n{log}");
    assert!(serve.stop().success());
    let values = stored_values(&serve.data, "idem", 0);
    let expected: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("value-{i}-{}", "x".repeat(i % 50)).into_bytes())
        .collect();
    assert_eq!(values.len(), 200, "stored {} records", values.len());
    assert!(values == expected, "stored records out of order or doubled");
}

/// A consumer group of 3 (subscribe, manual synchronous commits) over a 4-partition topic; one
/// member is SIGKILLed mid-stream, its session expires, the group rebalances and the other two
/// finish from its committed offsets: no value lost, re-deliveries only of what was not
/// committed, and the group's committed offsets at the partitions' ends.
#[test]
fn a_consumer_group_survives_a_killed_member() {
    require_python("confluent_kafka");
    let serve = Serve::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let out = run(
        Command::new("python3")
            .arg(script("confluent_group.py"))
            .arg(serve.bootstrap())
            .args(["grp", "400"])
            .arg(work.path()),
        None,
        &serve,
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK group"));
}

/// Bytes that are not a request close their connection and nothing else: the server answers the
/// next connection, including an ApiVersions newer than it serves (a v0 answer with
/// UNSUPPORTED_VERSION and the list, KIP-511).
#[test]
fn bad_frames_close_only_their_connection() {
    let serve = Serve::start(&["--max-request-bytes", "1024"]);
    let send = |bytes: &[u8]| {
        let mut s = TcpStream::connect(("127.0.0.1", serve.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    };
    let frame = |body: &[u8]| [&(body.len() as i32).to_be_bytes()[..], body].concat();
    // A negative size, a size above the limit, a header cut short, an unknown API key, an API
    // we do not serve (WriteTxnMarkers), a Metadata request whose body is garbage: each is
    // closed unanswered.
    for bad in [
        vec![0xff; 4],
        frame(&[0; 2048]),
        frame(&[0, 3, 0]),
        frame(&[0x7f, 0x7f, 0, 0, 0, 0, 0, 1]),
        frame(&[0, 27, 0, 1, 0, 0, 0, 1, 0, 0]),
        frame(&[0, 3, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff]),
    ] {
        assert_eq!(send(&bad), Vec::<u8>::new(), "{bad:?}");
    }
    // ApiVersions v9 (correlation id 7, client id null): a v0 body, error 35.
    let answer = send(&frame(&[0, 18, 0, 9, 0, 0, 0, 7, 0xff, 0xff]));
    assert!(answer.len() > 10, "{answer:?}");
    assert_eq!(&answer[4..8], &7i32.to_be_bytes(), "correlation id");
    assert_eq!(&answer[8..10], &35i16.to_be_bytes(), "UNSUPPORTED_VERSION");
    assert!(serve.stderr().contains("closed"), "{}", serve.stderr());
}

/// CreateTopics from the admin clients (librdkafka negotiates v4, kafka-python the flexible
/// v7): topics with 3 and the default 4 partitions created, the same name again
/// TOPIC_ALREADY_EXISTS, 0 partitions INVALID_PARTITIONS, replication factor 3
/// INVALID_REPLICATION_FACTOR, validate_only creating nothing; Metadata then lists exactly the
/// created topics with their counts and a record goes to the last partition.
/// Runs an admin script (`tests/kafka/`) with confluent-kafka (topic prefix `c`), then with
/// kafka-python (prefix `k`); each must print OK.
fn run_admin_script(serve: &Serve, name: &str) {
    for (module, client, prefix) in [
        ("confluent_kafka", "confluent", "c"),
        ("kafka", "kafka-python", "k"),
    ] {
        require_python(module);
        let out = run(
            Command::new("python3").arg(script(name)).args([
                serve.bootstrap().as_str(),
                client,
                prefix,
            ]),
            None,
            serve,
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
    }
}

#[test]
fn admin_clients_create_topics() {
    let mut serve = Serve::start(&[]);
    run_admin_script(&serve, "admin_topics.py");
    assert!(serve.stop().success(), "{}", serve.stderr());
    // The directory holds exactly the partitions created, and the one record sent.
    assert_eq!(stored_values(&serve.data, "c-three", 2), [b"v"]);
    assert_eq!(stored_values(&serve.data, "k-three", 2), [b"v"]);
    let mut config = BrokerConfig::default();
    config.log = config.log.with_segment_bytes(1 << 20);
    let broker = Broker::open(&serve.data, config).unwrap();
    for prefix in ["c", "k"] {
        let count = |t: &str| broker.partitions().of_topic(&format!("{prefix}-{t}")).len();
        assert_eq!(
            [
                count("three"),
                count("dflt"),
                count("zero"),
                count("rf3"),
                count("validated")
            ],
            [3, 4, 0, 0, 0],
            "{prefix}"
        );
    }
    broker.close().unwrap();
}

#[test]
fn admin_clients_delete_topics() {
    let mut serve = Serve::start(&[]);
    run_admin_script(&serve, "admin_delete.py");
    assert!(serve.stop().success(), "{}", serve.stderr());
    // The deleted topic's directories went; the one auto-created after holds only the new
    // record; the other topic kept its record.
    for prefix in ["c", "k"] {
        assert_eq!(
            stored_values(&serve.data, &format!("{prefix}-gone"), 0),
            [b"new"]
        );
        assert_eq!(
            stored_values(&serve.data, &format!("{prefix}-kept"), 1),
            [b"kept"]
        );
        assert!(!serve.data.join(format!("DELETE-{prefix}-gone")).exists());
    }
    let mut config = BrokerConfig::default();
    config.log = config.log.with_segment_bytes(1 << 20);
    let broker = Broker::open(&serve.data, config).unwrap();
    for prefix in ["c", "k"] {
        let count = |t: &str| broker.partitions().of_topic(&format!("{prefix}-{t}")).len();
        assert_eq!([count("gone"), count("kept")], [4, 2], "{prefix}");
    }
    broker.close().unwrap();
}
