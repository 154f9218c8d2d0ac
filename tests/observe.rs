//! Observability: the `tracing` spans and events a log emits (captured by a subscriber written
//! here), the metrics it reports (through the crate's Prometheus recorder), and the
//! `oncelog node --metrics` endpoint scraped over HTTP.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::batch;
use oncelog::observe::{self, prometheus::PrometheusRecorder};
use oncelog::replica::{Acks, Replica, ReplicaConfig};
use oncelog::replication::{Controller, InProcessController, ReplicaId};
use oncelog::{Log, LogConfig};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        max_batch_bytes: 64 << 10,
        ..LogConfig::for_tests()
    }
}

/// What the capturing subscriber saw: spans by name with their fields (at creation and as
/// recorded later), and events with their fields (`message` included).
#[derive(Debug, Default)]
struct Seen {
    spans: Vec<(String, BTreeMap<String, String>)>,
    events: Vec<BTreeMap<String, String>>,
}

#[derive(Clone, Default)]
struct Capture {
    seen: Arc<Mutex<Seen>>,
    next_id: Arc<AtomicU64>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = BTreeMap::new();
        span.record(&mut Fields(&mut fields));
        let mut seen = self.seen.lock().unwrap();
        seen.spans
            .push((span.metadata().name().to_string(), fields));
        Id::from_u64(seen.spans.len() as u64 + self.next_id.load(Ordering::Relaxed))
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut seen = self.seen.lock().unwrap();
        let i = (span.into_u64() - 1) as usize;
        if let Some((_, fields)) = seen.spans.get_mut(i) {
            values.record(&mut Fields(fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        fields.insert("level".into(), event.metadata().level().to_string());
        self.seen.lock().unwrap().events.push(fields);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Capture {
    fn span(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        let seen = self.seen.lock().unwrap();
        seen.spans
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .collect()
    }
    fn events(&self, message: &str) -> Vec<BTreeMap<String, String>> {
        let seen = self.seen.lock().unwrap();
        seen.events
            .iter()
            .filter(|f| f.get("message").map(String::as_str) == Some(message))
            .cloned()
            .collect()
    }
}

#[test]
fn open_recovery_and_roll_are_traced_with_their_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let capture = Capture::default();
    let written: u64 = tracing::subscriber::with_default(capture.clone(), || {
        let log = Log::open(&dir, config()).unwrap();
        let mut bytes = 0;
        for tag in 0..20 {
            let b = batch(tag, 4, 100);
            bytes += b.len() as u64;
            log.append(&b).unwrap();
        }
        let end = log.log_end_offset().0;
        assert_eq!(log.roll().unwrap().0, end);
        log.append(&batch(99, 1, 10)).unwrap();
        // No clean-shutdown marker: the next open scans what was not synced.
        log.simulate_crash();
        bytes
    });

    let opens = capture.span("log_open");
    assert_eq!(opens.len(), 1, "{opens:?}");
    // A new directory: nothing to recover, nothing scanned.
    assert_eq!(opens[0]["clean_shutdown"], "false", "{opens:?}");
    assert_eq!(opens[0]["segments"], "1");
    assert_eq!(opens[0]["bytes_scanned"], "0");
    assert_eq!(opens[0]["log_end"], "0");
    assert!(opens[0]["dir"].ends_with("log"), "{opens:?}");

    let rolls = capture.events("segment rolled");
    assert_eq!(rolls.len(), 1, "{rolls:?}");
    assert_eq!(rolls[0]["level"], "INFO");
    assert_eq!(rolls[0]["sealed_base"], "0");
    assert_eq!(rolls[0]["new_base"], "80");
    assert_eq!(rolls[0]["sealed_bytes"], written.to_string());

    // The crashed log's recovery: its span carries the scan's figures.
    let again = Capture::default();
    let log =
        tracing::subscriber::with_default(again.clone(), || Log::open(&dir, config()).unwrap());
    let report = log.recovery_report().clone();
    assert!(!report.clean_shutdown);
    assert!(report.bytes_scanned > 0, "{report:?}");
    let opens = again.span("log_open");
    assert_eq!(opens.len(), 1, "{opens:?}");
    let o = &opens[0];
    assert_eq!(o["clean_shutdown"], "false");
    assert_eq!(o["bytes_scanned"], report.bytes_scanned.to_string());
    assert_eq!(o["segments_scanned"], report.segments_scanned.to_string());
    assert_eq!(o["segments"], "2");
    assert_eq!(o["log_end"], "81");
    assert_eq!(o["read_only"], "false");
    let opened = again.events("log opened");
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0]["bytes_scanned"], report.bytes_scanned.to_string());
    log.close().unwrap();
}

#[test]
fn a_large_recovery_reports_its_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    // One segment (no roll: a full index would cut one, and a background seal of the first
    // would move the recovery point past it at a time the test does not control), no sync:
    // the recovery point stays 0 and the reopen scans all ~140 MB.
    let cfg = LogConfig {
        segment_bytes: 160 << 20,
        max_batch_bytes: 1 << 20,
        index_max_entries: 1 << 16,
        background_thread: false,
        sync: oncelog::SyncMode::Os,
        ..LogConfig::for_tests()
    };
    let log = Log::open(&dir, cfg.clone()).unwrap();
    let mut b = oncelog::BatchBuilder::new();
    b.push(0, None, Some(&vec![7u8; 1000 << 10]));
    let big = b.build().unwrap();
    // 140 batches of ~1 MB: two progress reports (at 64 and 128 MiB).
    for _ in 0..140 {
        log.append(&big).unwrap();
    }
    log.simulate_crash();
    let capture = Capture::default();
    let log = tracing::subscriber::with_default(capture.clone(), || {
        Log::open(&dir, cfg.clone()).unwrap()
    });
    assert_eq!(log.log_end_offset().0, 140);
    assert_eq!(log.recovery_report().checkpoint_recovery_point, 0);
    assert_eq!(log.segments().len(), 1);
    let progress = capture.events("recovery: scanning");
    assert_eq!(progress.len(), 2, "{progress:?}");
    let at: Vec<u64> = progress
        .iter()
        .map(|e| e["scanned_bytes"].parse().unwrap())
        .collect();
    assert!(
        at[0] >= 64 << 20 && at[0] < (64 << 20) + (1 << 20),
        "{at:?}"
    );
    assert!(
        at[1] >= 128 << 20 && at[1] < (128 << 20) + (1 << 20),
        "{at:?}"
    );
    log.close().unwrap();
}

#[test]
fn appends_syncs_rolls_and_recovery_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let recorder = PrometheusRecorder::new();
    // The log registers its handles at open; they report to this recorder from any thread.
    let log = metrics::with_local_recorder(&recorder, || Log::open(&dir, config()).unwrap());
    let mut bytes = 0;
    for tag in 0..10 {
        let b = batch(tag, 3, 50);
        bytes += b.len() as u64;
        log.append(&b).unwrap();
    }
    log.roll().unwrap();
    log.flush().unwrap();
    assert_eq!(recorder.counter(observe::APPENDED_BATCHES, &[]), Some(10));
    assert_eq!(recorder.counter(observe::APPENDED_BYTES, &[]), Some(bytes));
    assert_eq!(recorder.counter(observe::SEGMENT_ROLLS, &[]), Some(1));
    let appends = recorder.histogram(observe::APPEND_SECONDS, &[]).unwrap();
    assert_eq!(appends.count(), 10);
    assert!(appends.sum() > 0.0);
    let msyncs = recorder
        .histogram(observe::SYNC_SECONDS, &[("kind", "msync")])
        .unwrap();
    assert!(msyncs.count() >= 1, "flush msynced nothing");
    let checkpoints = recorder
        .histogram(observe::SYNC_SECONDS, &[("kind", "checkpoint")])
        .unwrap();
    assert!(checkpoints.count() >= 1, "flush checkpointed nothing");
    assert_eq!(log.last_stable_offset().0, 30);
    assert_eq!(
        recorder.counter(observe::RECOVERY_SCANNED_BYTES, &[]),
        Some(0)
    );

    // A duplicate (an idempotent retry) is not counted as appended.
    let mut b = oncelog::BatchBuilder::new().producer(oncelog::ProducerId(5), 0, 0);
    b.push(0, None, Some(b"once"));
    let idem = b.build().unwrap();
    assert!(!log.append(&idem).unwrap().duplicate);
    assert!(log.append(&idem).unwrap().duplicate);
    assert_eq!(recorder.counter(observe::APPENDED_BATCHES, &[]), Some(11));
    assert_eq!(
        recorder.counter(observe::APPENDED_BYTES, &[]),
        Some(bytes + idem.len() as u64)
    );
    assert_eq!(appends.count(), 12);
    log.append(&batch(50, 1, 10)).unwrap();
    log.simulate_crash();

    let reopened = metrics::with_local_recorder(&recorder, || Log::open(&dir, config()).unwrap());
    let scanned = reopened.recovery_report().bytes_scanned;
    assert!(scanned > 0);
    assert_eq!(
        recorder.counter(observe::RECOVERY_SCANNED_BYTES, &[]),
        Some(scanned)
    );
    let text = recorder.render();
    for name in [
        "oncelog_appended_batches_total 12",
        "# TYPE oncelog_append_seconds histogram",
        "oncelog_append_seconds_count 13",
        "oncelog_sync_seconds_count{kind=\"msync\"}",
        "oncelog_segment_rolls_total 1",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    // Gauges are per log, labelled with the log directory's name: a second log in the
    // process has its own.
    let other_dir = tmp.path().join("other");
    let other =
        metrics::with_local_recorder(&recorder, || Log::open(&other_dir, config()).unwrap());
    other.append(&batch(99, 2, 50)).unwrap();
    assert_eq!(other.last_stable_offset().0, 2);
    let lso = reopened.last_stable_offset().0;
    assert!(lso > 2);
    assert_eq!(
        recorder.gauge(observe::LAST_STABLE_OFFSET, &[("log", "log")]),
        Some(lso as f64)
    );
    assert_eq!(
        recorder.gauge(observe::LAST_STABLE_OFFSET, &[("log", "other")]),
        Some(2.0)
    );
    assert_eq!(recorder.gauge(observe::LAST_STABLE_OFFSET, &[]), None);
    other.close().unwrap();
    reopened.close().unwrap();
}

/// The replication gauges are per log like the LSO: a leader and its follower in one process
/// report their high-water marks under their own `log` label, the leader its ISR size and
/// its follower's lag, and none of them is reported without a label.
#[test]
fn replication_gauges_are_labelled_with_their_log() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = [ReplicaId(1), ReplicaId(2)];
    let recorder = PrometheusRecorder::new();
    // The follower-lag gauge is looked up at each fetch: drive everything under the recorder.
    metrics::with_local_recorder(&recorder, || {
        let open = |id: u32| {
            let cfg = ReplicaConfig::new(ReplicaId(id), &ids, config());
            Replica::open(tmp.path().join(format!("events-0-r{id}")), cfg, 0).unwrap()
        };
        let (mut leader, mut follower) = (open(1), open(2));
        let record = InProcessController::new(&ids).leader_and_isr();
        assert_eq!(record.leader, Some(ReplicaId(1)));
        leader.on_leader_and_isr(&record, 0).unwrap();
        follower.on_leader_and_isr(&record, 0).unwrap();
        for tag in 0..3 {
            leader
                .produce(&batch(tag, 2, 20), Acks::Leader, tag, u64::MAX)
                .unwrap();
        }
        // The first fetch copies the batches, the second tells the leader the follower has
        // them (the HW moves) and brings the HW back to the follower.
        for now in [10, 20] {
            let (to, request) = follower.fetch_request().unwrap();
            assert_eq!(to, ReplicaId(1));
            let response = leader.handle_fetch(&request, now).unwrap();
            follower.handle_fetch_response(response).unwrap();
        }
        assert_eq!(leader.high_watermark().0, 6);
        assert_eq!(follower.high_watermark().0, 6);
        leader.close().unwrap();
        follower.close().unwrap();
    });
    let text = recorder.render();
    for line in [
        "oncelog_high_watermark{log=\"events-0-r1\"} 6",
        "oncelog_high_watermark{log=\"events-0-r2\"} 6",
        "oncelog_isr_size{log=\"events-0-r1\"} 2",
        "oncelog_follower_lag_records{log=\"events-0-r1\",replica=\"2\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    for name in [observe::HIGH_WATERMARK, observe::ISR_SIZE] {
        assert_eq!(
            recorder.gauge(name, &[]),
            None,
            "{name} without a label:\n{text}"
        );
    }
    assert!(
        !text.contains("oncelog_follower_lag_records{replica="),
        "a lag without its log:\n{text}"
    );
}

/// The endpoints of the processes: `oncelog node --metrics` and `oncelog controller --metrics`.
#[cfg(feature = "net")]
mod endpoints {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use super::common::free_port;
    use super::common::procs::{self, Proc};

    const BIN: &str = env!("CARGO_BIN_EXE_oncelog");

    /// Starts `oncelog ARGS`, waits for a stdout line containing "listening on", keeps draining it.
    fn start(args: &[&str], stderr: &Path) -> Proc {
        procs::start_until_ready(Path::new(BIN), args, stderr, "listening on")
    }

    /// One `GET /metrics`; `None` while nothing answers.
    fn scrape(port: u16) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        Some(text)
    }

    fn metric(page: &str, line_start: &str) -> Option<f64> {
        page.lines()
            .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
    }

    #[test]
    fn a_node_serves_its_metrics_over_http() {
        use oncelog::net::ClusterFile;
        use oncelog::node::PartitionClient;
        use oncelog::producer::ProduceTarget;
        use oncelog::replica::Acks;

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let cluster = dir.join("cluster");
        let controller_port = free_port();
        std::fs::write(
            &cluster,
            format!(
                "controller 127.0.0.1:{controller_port}\nreplica 1 127.0.0.1:{} d1\n",
                free_port()
            ),
        )
        .unwrap();
        let cluster = cluster.to_str().unwrap().to_string();
        let metrics_port = free_port();
        let _controller = start(
            &["controller", "--insecure", "--cluster", &cluster],
            &dir.join("controller.err"),
        );
        let _node = start(
            &[
                "node",
                "--insecure",
                "--cluster",
                &cluster,
                "--id",
                "1",
                "--tick-ms",
                "20",
                "--metrics",
                &format!("127.0.0.1:{metrics_port}"),
            ],
            &dir.join("node.err"),
        );
        let client =
            PartitionClient::new(ClusterFile::load(Path::new(&cluster)).unwrap(), Acks::All);
        let mut sent = 0;
        let until = Instant::now() + Duration::from_secs(120);
        while sent < 5 {
            assert!(
                Instant::now() < until,
                "the node never accepted a write; stderr: {}",
                std::fs::read_to_string(dir.join("node.err")).unwrap_or_default()
            );
            let mut b = oncelog::BatchBuilder::new();
            b.push(0, None, Some(format!("v{sent}").as_bytes()));
            if client.produce(&b.build().unwrap()).is_ok() {
                sent += 1;
            } else {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Acknowledged with acks=all: the HW covers them. Wait for the page to say so.
        let until = Instant::now() + Duration::from_secs(120);
        let page = loop {
            if let Some(page) = scrape(metrics_port) {
                let batches = metric(&page, "oncelog_appended_batches_total ");
                let hw = metric(&page, "oncelog_high_watermark{log=\"d1\"} ");
                if batches == Some(5.0) && hw == Some(5.0) {
                    break page;
                }
                assert!(
                    Instant::now() < until,
                    "metrics never showed the writes:\n{page}"
                );
            } else {
                assert!(
                    Instant::now() < until,
                    "the metrics endpoint never answered"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(
            page.contains("Content-Type: text/plain; version=0.0.4"),
            "{page}"
        );
        assert_eq!(
            metric(&page, "oncelog_isr_size{log=\"d1\"} "),
            Some(1.0),
            "{page}"
        );
        assert!(metric(&page, "oncelog_appended_bytes_total ").unwrap() > 0.0);
        assert_eq!(
            metric(&page, "oncelog_append_seconds_count "),
            Some(5.0),
            "{page}"
        );
        assert!(
            page.contains("# TYPE oncelog_append_seconds histogram"),
            "{page}"
        );
        assert!(
            page.contains("oncelog_recovery_scanned_bytes_total "),
            "{page}"
        );
        // The node logs with levels and timestamps through its subscriber (feature `cli`).
        if cfg!(feature = "cli") {
            let err = std::fs::read_to_string(dir.join("node.err")).unwrap();
            let line = err
                .lines()
                .find(|l| l.contains("metrics in the Prometheus text format"))
                .unwrap_or_else(|| panic!("no metrics line: {err}"));
            assert!(line.contains(" INFO "), "{line}");
            // An RFC 3339 timestamp first: 2026-12-07T13:04:05.123456Z.
            let stamp = line.split_whitespace().next().unwrap_or_default();
            assert!(
                stamp.len() >= 20 && stamp.as_bytes()[4] == b'-' && stamp.contains('T'),
                "{line}"
            );
        }
    }

    /// `oncelog controller --metrics` serves the controller's view (leader, leader epoch, ISR
    /// size, requests answered) once a node has registered and been elected.
    #[test]
    fn a_controller_serves_its_metrics_over_http() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let cluster = dir.join("cluster");
        let controller_port = free_port();
        std::fs::write(
            &cluster,
            format!(
                "controller 127.0.0.1:{controller_port}\nreplica 1 127.0.0.1:{} d1\n",
                free_port()
            ),
        )
        .unwrap();
        let cluster = cluster.to_str().unwrap().to_string();
        let metrics_port = free_port();
        let _controller = start(
            &[
                "controller",
                "--insecure",
                "--cluster",
                &cluster,
                "--metrics",
                &metrics_port.to_string(),
            ],
            &dir.join("controller.err"),
        );
        // Before any node: no leader yet, or none known; the endpoint answers either way.
        let until = Instant::now() + Duration::from_secs(120);
        while scrape(metrics_port).is_none() {
            assert!(
                Instant::now() < until,
                "the controller's metrics endpoint never answered; stderr: {}",
                std::fs::read_to_string(dir.join("controller.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let _node = start(
            &[
                "node",
                "--insecure",
                "--cluster",
                &cluster,
                "--id",
                "1",
                "--tick-ms",
                "20",
            ],
            &dir.join("node.err"),
        );
        // The gauges follow the controller's record: once replica 1 leads with an ISR of one, the
        // leader-epoch gauge converges to the epoch the controller answers (0 if the node
        // registered before its session expired, higher if it was expired and elected again).
        let mut ctl = oncelog::net::ControllerClient::new(
            ([127, 0, 0, 1], controller_port).into(),
            oncelog::net::TransportConfig::default(),
            Duration::from_secs(10),
        );
        let until = Instant::now() + Duration::from_secs(120);
        let page = loop {
            let page = scrape(metrics_port).unwrap_or_default();
            let epoch = ctl.metadata().ok().map(|m| f64::from(m.state.leader_epoch));
            if metric(&page, "oncelog_controller_leader ") == Some(1.0)
                && metric(&page, "oncelog_controller_isr_size ") == Some(1.0)
                && epoch.is_some()
                && metric(&page, "oncelog_controller_leader_epoch ") == epoch
                && metric(&page, "oncelog_controller_requests_total ").unwrap_or(0.0) >= 1.0
            {
                break page;
            }
            assert!(
                Instant::now() < until,
                "the controller's metrics never showed replica 1 leading at the controller's \
                 epoch {epoch:?}:\n{page}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(
            metric(&page, "oncelog_controller_requests_total ").unwrap() >= 1.0,
            "{page}"
        );
        assert!(
            page.contains("# TYPE oncelog_controller_requests_total counter"),
            "{page}"
        );
    }
}
