//! `oncelog serve` secured and limited (docs/kafka-wire.md, "Security and limits"), as a black
//! box: TLS, mutual TLS, SASL/PLAIN and the ACL driven by confluent-kafka (librdkafka) and kcat;
//! the connection cap and the frame deadline by raw TCP clients. Certificates are made at run
//! time with `rcgen` (tests/common/pki.rs); the server's names 127.0.0.1 (an IP subject
//! alternative name), which the clients check.
// Kafka's frames are big-endian (the hand-made ApiVersions requests).
#![allow(clippy::big_endian_bytes)]

#[path = "common/kafka_serve.rs"]
mod kafka_serve;
#[path = "common/pki.rs"]
mod pki;
#[path = "common/procs.rs"]
mod procs;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kafka_serve::{require_kcat, require_python, run, script, Serve};
use oncelog::broker::{Broker, BrokerConfig};
use oncelog::net::CertPaths;
use pki::Ca;

/// A CA, the server's certificate (for 127.0.0.1) and a client certificate (`alice`).
struct Certs {
    _dir: tempfile::TempDir,
    ca: Ca,
    server: CertPaths,
    alice: CertPaths,
}

impl Certs {
    fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(&dir.path().join("certs"), "oncelog serve test CA");
        let server = ca.issue_as("127.0.0.1", None, "server");
        let alice = ca.issue("alice");
        Certs {
            _dir: dir,
            ca,
            server,
            alice,
        }
    }

    fn path(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// The serve flags for TLS with this server certificate.
    fn tls_flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            Self::path(&self.server.cert).into(),
            "--tls-key".into(),
            Self::path(&self.server.key).into(),
        ]
    }

    /// The client settings trusting the CA, for `protocol` (SSL or SASL_SSL).
    fn client(&self, protocol: &str) -> serde_like::Conf {
        serde_like::Conf::new()
            .set("security.protocol", protocol)
            .set("ssl.ca.location", Self::path(&self.ca.ca_path()))
    }
}

/// A flat JSON object of string settings, without a JSON crate.
mod serde_like {
    pub struct Conf(Vec<(String, String)>);

    impl Conf {
        pub fn new() -> Conf {
            Conf(Vec::new())
        }

        pub fn set(mut self, k: &str, v: &str) -> Conf {
            self.0.push((k.into(), v.into()));
            self
        }

        pub fn json(&self) -> String {
            let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
            let fields: Vec<String> = self
                .0
                .iter()
                .map(|(k, v)| format!("\"{}\":\"{}\"", esc(k), esc(v)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
    }
}

fn start(flags: &[String]) -> Serve {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Serve::start(&flags)
}

/// Runs tests/kafka/confluent_secure.py in `mode`; it must print OK.
fn secure(serve: &Serve, topic: &str, n: u32, conf: &serde_like::Conf, mode: &str) -> String {
    let out = run(
        Command::new("python3")
            .arg(script("confluent_secure.py"))
            .args([
                serve.bootstrap().as_str(),
                topic,
                &n.to_string(),
                &conf.json(),
                mode,
            ]),
        None,
        serve,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("OK"), "{stdout}");
    stdout
}

/// The topics in a stopped server's data directory.
fn stored_topics(data: &Path) -> Vec<String> {
    let mut config = BrokerConfig::default();
    config.log = config.log.with_segment_bytes(1 << 20);
    let broker = Broker::open(data, config).unwrap();
    let topics = broker.partitions().topics();
    broker.close().unwrap();
    topics
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// An ApiVersions v0 request frame with this correlation id.
fn api_versions(correlation: i32) -> Vec<u8> {
    let mut body = vec![0, 18, 0, 0];
    body.extend_from_slice(&correlation.to_be_bytes());
    body.extend_from_slice(&[0xff, 0xff]); // null client id
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// Sends ApiVersions on `s` and checks the answer carries `correlation` and no error.
fn ask_api_versions(s: &mut TcpStream, correlation: i32) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&api_versions(correlation)).unwrap();
    let mut size = [0u8; 4];
    s.read_exact(&mut size).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut body).unwrap();
    assert_eq!(body[0..4], correlation.to_be_bytes(), "correlation id");
    assert_eq!(body[4..6], [0, 0], "error code");
}

/// Sends a request (`key`, `version`, header v1 with a null client id, then `body`) and
/// returns the response body after the correlation id.
fn request(s: &mut TcpStream, key: i16, version: i16, correlation: i32, body: &[u8]) -> Vec<u8> {
    let mut req = Vec::new();
    req.extend_from_slice(&key.to_be_bytes());
    req.extend_from_slice(&version.to_be_bytes());
    req.extend_from_slice(&correlation.to_be_bytes());
    req.extend_from_slice(&[0xff, 0xff]);
    req.extend_from_slice(body);
    s.write_all(&(req.len() as i32).to_be_bytes()).unwrap();
    s.write_all(&req).unwrap();
    let resp = read_frame(s);
    assert_eq!(resp[0..4], correlation.to_be_bytes(), "correlation id");
    resp[4..].to_vec()
}

fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut size = [0u8; 4];
    s.read_exact(&mut size).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut body).unwrap();
    body
}

/// The API keys an ApiVersions v0 answer lists.
fn advertised_keys(s: &mut TcpStream) -> Vec<i16> {
    let b = request(s, 18, 0, 9, &[]);
    assert_eq!(b[0..2], [0, 0]);
    let n = i32::from_be_bytes(b[2..6].try_into().unwrap()) as usize;
    (0..n)
        .map(|i| i16::from_be_bytes(b[6 + 6 * i..8 + 6 * i].try_into().unwrap()))
        .collect()
}

/// A Kafka string: i16 length, bytes.
fn kstring(s: &str) -> Vec<u8> {
    let mut v = (s.len() as i16).to_be_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

/// Reads until the server closes `s` (or `within` passes: then false).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let until = Instant::now() + within;
    let mut buf = [0u8; 256];
    while Instant::now() < until {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn confluent_kafka_round_trips_over_ssl_and_kcat_lists_metadata() {
    require_python("confluent_kafka");
    require_kcat();
    let certs = Certs::new();
    let mut serve = start(&certs.tls_flags());
    secure(&serve, "tls-topic", 100, &certs.client("SSL"), "roundtrip");
    let list = run(
        Command::new("kcat").args([
            "-b",
            &serve.bootstrap(),
            "-X",
            "security.protocol=SSL",
            "-X",
            &format!("ssl.ca.location={}", Certs::path(&certs.ca.ca_path())),
            "-L",
            "-t",
            "tls-topic",
            "-m",
            "10",
        ]),
        None,
        &serve,
    );
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains("topic \"tls-topic\" with 4 partitions"),
        "{list}"
    );
    assert!(serve.stop().success(), "{}", serve.stderr());
}

#[test]
fn a_plaintext_client_on_the_tls_port_gets_no_kafka_answer() {
    let certs = Certs::new();
    let serve = start(&certs.tls_flags());
    let mut s = TcpStream::connect(serve.bootstrap()).unwrap();
    s.write_all(&api_versions(77)).unwrap();
    let mut got = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.read_to_end(&mut got);
    let answered = got.len() >= 8 && got[4..8] == 77i32.to_be_bytes();
    assert!(!answered, "a Kafka answer in plaintext: {got:?}");
    // What comes back, if anything, is a TLS alert record.
    assert!(got.is_empty() || got[0] == 0x15, "{got:?}");
}

/// With `--tls-client-ca`, a client without a certificate gets no metadata; with one, its
/// principal is the certificate's DNS name, else its common name: `carol` (a common name only)
/// is granted everything by the ACL and round-trips, `mallory` (granted nothing) is refused
/// Produce with TOPIC_AUTHORIZATION_FAILED.
#[test]
fn mutual_tls_refuses_a_client_without_a_certificate() {
    require_python("confluent_kafka");
    let certs = Certs::new();
    let carol = certs.ca.issue_common_name_only("carol");
    let mallory = certs.ca.issue("mallory");
    let dir = tempfile::tempdir().unwrap();
    let acl = write(
        dir.path(),
        "acl",
        "allow alice produce,read,group\nallow carol produce,read,group\n",
    );
    let mut flags = certs.tls_flags();
    flags.extend([
        "--tls-client-ca".to_string(),
        Certs::path(&certs.ca.ca_path()).to_string(),
        "--acl".to_string(),
        Certs::path(&acl).to_string(),
    ]);
    let mut serve = start(&flags);
    secure(&serve, "mtls", 0, &certs.client("SSL"), "refused");
    let presenting = |who: &CertPaths| {
        certs
            .client("SSL")
            .set("ssl.certificate.location", Certs::path(&who.cert))
            .set("ssl.key.location", Certs::path(&who.key))
    };
    secure(&serve, "mtls", 20, &presenting(&certs.alice), "roundtrip");
    secure(&serve, "mtls-cn", 20, &presenting(&carol), "roundtrip");
    secure(&serve, "mtls", 1, &presenting(&mallory), "topic-denied");
    assert!(serve.stop().success(), "{}", serve.stderr());
    assert!(
        serve.stderr().contains("TLS handshake"),
        "{}",
        serve.stderr()
    );
}

/// SASL_SSL with PLAIN: alice (granted produce, read and group by the ACL) round-trips; a
/// wrong password is an authentication error and stores nothing; `reader` (granted read only)
/// is refused Produce with TOPIC_AUTHORIZATION_FAILED, CreateTopics with the same (and Metadata
/// does not auto-create for it), and a consumer group with GROUP_AUTHORIZATION_FAILED.
#[test]
fn sasl_plain_over_tls_authenticates_and_the_acl_refuses_produce_to_a_reader() {
    require_python("confluent_kafka");
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    // alice's password is "alice-secret" (plain); reader's is "password" (its SHA-256).
    let users = write(
        dir.path(),
        "users",
        "# test users\nalice:plain:alice-secret\n\
         reader:sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\n",
    );
    let acl = write(
        dir.path(),
        "acl",
        "allow alice produce,read,group\nallow reader read\n",
    );
    let mut flags = certs.tls_flags();
    flags.extend([
        "--sasl-users".into(),
        Certs::path(&users).into(),
        "--acl".into(),
        Certs::path(&acl).into(),
    ]);
    let mut serve = start(&flags);
    let as_user = |user: &str, password: &str| {
        certs
            .client("SASL_SSL")
            .set("sasl.mechanism", "PLAIN")
            .set("sasl.username", user)
            .set("sasl.password", password)
    };
    secure(
        &serve,
        "sasl",
        50,
        &as_user("alice", "alice-secret"),
        "roundtrip",
    );
    // kafka-python authenticates with SaslHandshake v1 and SaslAuthenticate.
    require_python("kafka");
    let out = run(
        Command::new("python3")
            .arg(script("kafka_python_secure.py"))
            .args([serve.bootstrap().as_str(), "sasl-kp", "30"])
            .arg(certs.ca.ca_path())
            .args(["alice", "alice-secret"]),
        None,
        &serve,
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
    secure(
        &serve,
        "denied",
        1,
        &as_user("alice", "wrong"),
        "auth-failure",
    );
    secure(
        &serve,
        "denied",
        1,
        &as_user("nobody", "password"),
        "auth-failure",
    );
    secure(
        &serve,
        "sasl",
        1,
        &as_user("reader", "password"),
        "topic-denied",
    );
    // Neither admin (CreateTopics, nor Metadata's auto-creation) nor group for reader.
    let reader = as_user("reader", "password");
    secure(&serve, "new-topic", 0, &reader, "admin-denied");
    secure(&serve, "sasl", 0, &reader, "group-denied");
    assert!(serve.stop().success(), "{}", serve.stderr());
    let log = serve.stderr();
    assert!(log.contains("SASL authentication failed"), "{log}");
    let topics = stored_topics(&serve.data);
    assert!(topics.contains(&"sasl".to_string()), "{topics:?}");
    assert!(!topics.contains(&"denied".to_string()), "{topics:?}");
    assert!(!topics.contains(&"new-topic".to_string()), "{topics:?}");
    // 50 from alice, none from reader.
    let mut config = BrokerConfig::default();
    config.log = config.log.with_segment_bytes(1 << 20);
    let broker = Broker::open(&serve.data, config).unwrap();
    let log0 = broker
        .partition(&oncelog::broker::TopicPartition::new("sasl", 0).unwrap())
        .unwrap();
    assert_eq!(log0.log_end_offset().0, 50);
    broker.close().unwrap();
}

#[test]
fn sasl_needs_tls_unless_allowed_and_bad_files_stop_the_start() {
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let users = write(dir.path(), "users", "alice:plain:x\n");
    let bad_users = write(dir.path(), "bad-users", "alice:plain:x\nbob\n");
    let bad_acl = write(dir.path(), "bad-acl", "allow a read\nallow b write\n");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--sasl-users".into(), Certs::path(&users).into()],
            "in the clear without TLS",
        ),
        (
            vec![
                "--sasl-users".into(),
                Certs::path(&bad_users).into(),
                "--sasl-allow-plaintext".into(),
            ],
            "bad-users: line 2: expected USER",
        ),
        (
            vec!["--acl".into(), Certs::path(&bad_acl).into()],
            "bad-acl: line 2: unknown operation 'write'",
        ),
        (
            vec![
                "--tls-cert".into(),
                Certs::path(&users).into(),
                "--tls-key".into(),
                Certs::path(&certs.server.key).into(),
            ],
            "no CERTIFICATE",
        ),
        (
            vec!["--max-connections".into(), "0".into()],
            "--max-connections must be at least 1",
        ),
        (
            vec!["--frame-deadline-ms".into(), "0".into()],
            "--frame-deadline-ms must be",
        ),
        (
            vec!["--idle-timeout-ms".into(), "0".into()],
            "--idle-timeout-ms must be",
        ),
    ];
    for (flags, needle) in cases {
        let data = dir.path().join("data");
        let out = Command::new(kafka_serve::BIN)
            .arg("serve")
            .arg("--data")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"])
            .args(&flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} started");
        assert!(err.contains(needle), "{flags:?}: {err}");
        assert!(!err.contains("panicked"), "{flags:?}: {err}");
    }
}

#[test]
fn a_connection_beyond_the_cap_is_closed_at_once() {
    let serve = Serve::start(&["--max-connections", "2"]);
    let mut a = TcpStream::connect(serve.bootstrap()).unwrap();
    let mut b = TcpStream::connect(serve.bootstrap()).unwrap();
    ask_api_versions(&mut a, 1);
    ask_api_versions(&mut b, 2);
    let mut c = TcpStream::connect(serve.bootstrap()).unwrap();
    let _ = c.write_all(&api_versions(3));
    assert!(
        closed_within(&mut c, Duration::from_secs(3)),
        "a third connection was served"
    );
    ask_api_versions(&mut a, 4);
    ask_api_versions(&mut b, 5);
    let until = Instant::now() + Duration::from_secs(5);
    while !serve.stderr().contains("over the cap of 2") {
        assert!(Instant::now() < until, "no log line: {}", serve.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    // A slot given back serves the next connection.
    drop(a);
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let mut d = TcpStream::connect(serve.bootstrap()).unwrap();
        d.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        if d.write_all(&api_versions(6)).is_ok() && d.read(&mut [0u8; 4]).is_ok_and(|n| n == 4) {
            break;
        }
        assert!(Instant::now() < until, "the freed slot was not reused");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_stalled_frame_is_cut_at_the_deadline_while_others_are_served() {
    let serve = Serve::start(&["--frame-deadline-ms", "300"]);
    let mut stalled = TcpStream::connect(serve.bootstrap()).unwrap();
    let mut active = TcpStream::connect(serve.bootstrap()).unwrap();
    ask_api_versions(&mut active, 1);
    let start = Instant::now();
    stalled.write_all(&[0, 0]).unwrap();
    let mut n = 2;
    while start.elapsed() < Duration::from_millis(500) {
        ask_api_versions(&mut active, n);
        n += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        closed_within(&mut stalled, Duration::from_secs(3)),
        "the stalled connection is still open"
    );
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    ask_api_versions(&mut active, n);
    assert!(
        serve
            .stderr()
            .contains("did not arrive whole within 300 ms"),
        "{}",
        serve.stderr()
    );
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let serve = Serve::start(&["--idle-timeout-ms", "300"]);
    let mut idle = TcpStream::connect(serve.bootstrap()).unwrap();
    ask_api_versions(&mut idle, 1);
    let start = Instant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(3)));
    assert!(start.elapsed() >= Duration::from_millis(250));
}

/// SASL/PLAIN in plaintext (allowed for the test) over the v0 exchange by hand: the SASL APIs
/// are advertised only with SASL on; a mechanism other than PLAIN is refused with the list;
/// after the v0 handshake the bare token is answered with an empty frame; a request before
/// authentication, or a wrong password, closes the connection.
#[test]
fn sasl_v0_exchange_and_requests_before_authentication() {
    let plain = Serve::start(&[]);
    let mut s = TcpStream::connect(plain.bootstrap()).unwrap();
    let keys = advertised_keys(&mut s);
    assert!(!keys.contains(&17) && !keys.contains(&36), "{keys:?}");

    let dir = tempfile::tempdir().unwrap();
    let users = write(dir.path(), "users", "alice:plain:secret\n");
    let serve = Serve::start(&[
        "--sasl-users",
        Certs::path(&users),
        "--sasl-allow-plaintext",
    ]);
    let mut s = TcpStream::connect(serve.bootstrap()).unwrap();
    let keys = advertised_keys(&mut s);
    assert!(keys.contains(&17) && keys.contains(&36), "{keys:?}");
    // SCRAM is refused (UNSUPPORTED_SASL_MECHANISM, 33) with the list: [PLAIN].
    let r = request(&mut s, 17, 0, 1, &kstring("SCRAM-SHA-256"));
    assert_eq!(r[0..2], 33i16.to_be_bytes());
    assert_eq!(r[2..6], 1i32.to_be_bytes());
    assert_eq!(r[6..], kstring("PLAIN")[..]);
    let r = request(&mut s, 17, 0, 2, &kstring("PLAIN"));
    assert_eq!(r[0..2], [0, 0]);
    let token = b"\0alice\0secret";
    s.write_all(&(token.len() as i32).to_be_bytes()).unwrap();
    s.write_all(token).unwrap();
    assert!(
        read_frame(&mut s).is_empty(),
        "the v0 success answer is an empty frame"
    );
    // Metadata v0 for no topic in particular (an empty list: every topic).
    let r = request(&mut s, 3, 0, 3, &0i32.to_be_bytes());
    assert_eq!(r[0..4], 1i32.to_be_bytes(), "one broker");

    // Before authentication: Metadata closes the connection.
    let mut early = TcpStream::connect(serve.bootstrap()).unwrap();
    early.write_all(&api_versions(1)).unwrap();
    read_frame(&mut early);
    let mut md = vec![0, 3, 0, 0, 0, 0, 0, 4, 0xff, 0xff];
    md.extend_from_slice(&0i32.to_be_bytes());
    early.write_all(&(md.len() as i32).to_be_bytes()).unwrap();
    early.write_all(&md).unwrap();
    assert!(closed_within(&mut early, Duration::from_secs(3)));

    // A wrong password after a v0 handshake: closed without an answer.
    let mut wrong = TcpStream::connect(serve.bootstrap()).unwrap();
    let r = request(&mut wrong, 17, 0, 1, &kstring("PLAIN"));
    assert_eq!(r[0..2], [0, 0]);
    let token = b"\0alice\0guess";
    wrong
        .write_all(&(token.len() as i32).to_be_bytes())
        .unwrap();
    wrong.write_all(token).unwrap();
    assert!(closed_within(&mut wrong, Duration::from_secs(3)));
    let until = Instant::now() + Duration::from_secs(5);
    while !serve
        .stderr()
        .contains("wrong user or password (user 'alice')")
    {
        assert!(Instant::now() < until, "{}", serve.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
}
