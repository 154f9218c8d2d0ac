//! The `oncelog` binary, run as a user runs it: demo, verify (good and damaged logs), dump,
//! stat, and argument errors.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::batch;
use oncelog::format::batch::BatchView;
use oncelog::{Log, LogConfig};

fn oncelog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oncelog"))
        .args(args)
        .output()
        .expect("run oncelog")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A closed log of 4 KiB segments; returns `(base, last)` offsets of every batch.
fn write_log(dir: &Path, batches: u64) -> Vec<(u64, u64)> {
    let log = Log::open(dir, LogConfig::for_tests()).unwrap();
    let mut out = Vec::new();
    for tag in 0..batches {
        let info = log.append(&batch(tag, 1 + (tag % 4) as u32, 40)).unwrap();
        out.push((info.base_offset.0, info.last_offset.0));
    }
    log.close().unwrap();
    out
}

/// Every regular file of `dir` with its length and an FNV-1a hash of its contents, by name.
fn snapshot(dir: &Path) -> Vec<(String, usize, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = std::fs::read(e.path()).unwrap();
            let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
            (
                e.file_name().to_string_lossy().into_owned(),
                bytes.len(),
                hash,
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn demo_succeeds_and_prints_the_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = oncelog(&["demo", arg(&dir)]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("summary: written "), "{t}");
    assert!(t.contains(" / recovered "), "{t}");
    assert!(t.contains(" / verified "), "{t}");
    assert!(t.contains("result: OK"), "{t}");
    assert!(t.contains("demo: OK"), "{t}");
    assert!(t.contains("clean_shutdown=true"), "{t}");
    assert!(t.contains("clean_shutdown=false"), "{t}");
    // Run again over its own directory, as the README's first command does the second time:
    // every file the first run left is one oncelog writes (the producer-id checkpoint among
    // them), so the demo clears it instead of refusing.
    let again = oncelog(&["demo", arg(&dir)]);
    let t = text(&again);
    assert!(again.status.success(), "{t}");
    assert!(t.contains("demo: OK"), "{t}");
}

#[test]
fn verify_accepts_a_good_log() {
    let dir = tempfile::tempdir().unwrap();
    let batches = write_log(dir.path(), 200);
    let before = snapshot(dir.path());
    let out = oncelog(&["verify", arg(dir.path())]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("result: OK (0 warnings)"), "{t}");
    let last = batches.last().unwrap().1;
    assert!(t.contains(&format!("offsets 0..{last}")), "{t}");
    assert_eq!(
        snapshot(dir.path()),
        before,
        "verify must not modify the directory"
    );
}

#[test]
fn verify_names_the_file_and_position_of_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 200);
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    assert!(segments.len() > 3, "the log must roll: {segments:?}");
    let sealed = &segments[1];
    let mut bytes = std::fs::read(sealed).unwrap();
    let middle = bytes.len() / 2;
    // The batch holding the middle byte: that is where verify must point.
    let mut pos = 0;
    let batch_pos = loop {
        let (view, _) = BatchView::parse(&bytes[pos..]).unwrap();
        if pos + view.len() > middle {
            break pos;
        }
        pos += view.len();
    };
    bytes[middle] ^= 0x40;
    std::fs::write(sealed, &bytes).unwrap();

    let out = oncelog(&["verify", arg(dir.path())]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let name = sealed.file_name().unwrap().to_str().unwrap();
    assert!(
        t.lines()
            .any(|l| l.starts_with("ERROR: ") && l.contains(&format!("{name} at byte {batch_pos}"))),
        "must name {name} and byte {batch_pos}:\n{t}"
    );
    assert!(t.contains("result: FAILED"), "{t}");
}

#[test]
fn verify_warns_about_a_torn_tail_and_fails_on_damage_below_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 1 << 16,
        max_batch_bytes: 4096,
        ..LogConfig::for_tests()
    };
    let log = Log::open(dir.path(), cfg.clone()).unwrap();
    for tag in 0..20 {
        log.append(&batch(tag, 2, 40)).unwrap();
    }
    let end = log.log_end_offset().0;
    log.simulate_crash();
    let seg = dir.path().join("00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    let valid: usize = {
        let mut pos = 0;
        while let Ok((v, _)) = BatchView::parse(&bytes[pos..]) {
            pos += v.len();
        }
        pos
    };
    // Garbage after the last batch, as a torn write would leave.
    bytes[valid + 10..valid + 30].fill(0xAB);
    std::fs::write(&seg, &bytes).unwrap();
    let out = oncelog(&["verify", arg(dir.path())]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "a torn tail is a warning:\n{t}");
    assert!(
        t.contains("WARNING: the next open cuts")
            && t.contains(&format!("offsets from {end} (R8)")),
        "{t}"
    );

    // A flip inside the synced part of the active segment is corruption.
    let log = Log::open(dir.path(), cfg).unwrap();
    log.flush().unwrap();
    log.simulate_crash();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    let out = oncelog(&["verify", arg(dir.path())]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("ERROR: corruption in") && t.contains("row R6: below the recovery point"),
        "{t}"
    );
}

#[test]
fn dump_prints_one_line_per_batch_with_its_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let batches = write_log(dir.path(), 60);
    let out = oncelog(&["dump", arg(dir.path())]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let lines: Vec<&str> = t.lines().filter(|l| l.starts_with("offset=")).collect();
    assert_eq!(lines.len(), batches.len(), "{t}");
    for (line, (base, last)) in lines.iter().zip(&batches) {
        assert!(
            line.starts_with(&format!("offset={base}..{last} ")),
            "{line} should be batch {base}..{last}"
        );
        assert!(line.ends_with(" valid"), "{line}");
    }
    assert!(t.contains(".index"), "other files are listed:\n{t}");
    assert!(t.contains("recovery-point"), "{t}");

    let out = oncelog(&["dump", "--records", arg(dir.path())]);
    let t = text(&out);
    let records: usize = batches.iter().map(|(b, l)| (l - b + 1) as usize).sum();
    assert_eq!(
        t.lines().filter(|l| l.starts_with("  | offset=")).count(),
        records
    );
    assert!(t.contains(
        "  | offset=0 ts=1000 key_len=2 value_len=40 headers=0 key=\"k0\" value=\"0:0:xx"
    ));
}

#[test]
fn dump_and_verify_work_on_a_locked_open_log_without_changing_it() {
    let dir = tempfile::tempdir().unwrap();
    // One segment and no background thread: no seal or queued producer snapshot may change
    // the directory while we look.
    let cfg = LogConfig {
        segment_bytes: 1 << 16,
        background_thread: false,
        ..LogConfig::for_tests()
    };
    let log = Log::open(dir.path(), cfg).unwrap();
    for tag in 0..50 {
        log.append(&batch(tag, 3, 30)).unwrap();
    }
    log.flush().unwrap();
    let before = snapshot(dir.path());
    let out = oncelog(&["verify", arg(dir.path())]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = oncelog(&["dump", arg(dir.path())]);
    assert!(out.status.success(), "{}", text(&out));
    let out = oncelog(&["stat", arg(dir.path())]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("log end offset: 150\n"),
        "{}",
        text(&out)
    );
    assert_eq!(snapshot(dir.path()), before);
    log.close().unwrap();
}

#[test]
fn stat_prints_the_log_end_offset() {
    let dir = tempfile::tempdir().unwrap();
    let batches = write_log(dir.path(), 120);
    let end = batches.last().unwrap().1 + 1;
    let out = oncelog(&["stat", arg(dir.path())]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains(&format!("log end offset: {end}\n")), "{t}");
    assert!(t.contains("log start offset: 0"), "{t}");
    assert!(t.contains(&format!("recovery point: {end} ")), "{t}");
    assert!(t.contains("clean-shutdown marker: present"), "{t}");
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let out = oncelog(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown command 'frobnicate'"), "{err}");
    assert!(err.contains("USAGE"), "{err}");
    assert!(out.stdout.is_empty());

    let out = oncelog(&[]);
    assert_eq!(out.status.code(), Some(2));

    let out = oncelog(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("verify DIR"));

    let out = oncelog(&["verify"]);
    assert_eq!(out.status.code(), Some(2));
    let out = oncelog(&["dump", "--bogus", "x"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn version_and_help_for_every_command() {
    let out = oncelog(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("oncelog {}", env!("CARGO_PKG_VERSION"))
    );
    let out = oncelog(&["help"]);
    assert_eq!(out.status.code(), Some(0));
    let usage = String::from_utf8_lossy(&out.stdout).into_owned();
    // Every command, and the flags each one accepts, as `<command> --help` and `help
    // <command>` print them.
    let flags: &[(&str, &[&str])] = &[
        ("demo", &[]),
        ("demo-cluster", &[]),
        ("dump", &["--records"]),
        ("verify", &[]),
        ("stat", &[]),
        (
            "controller",
            &[
                "--cluster",
                "--insecure",
                "--cert",
                "--key",
                "--dir",
                "--session-timeout-ms",
                "--max-connections",
                "--idle-timeout-ms",
                "--frame-timeout-ms",
                "--max-request-bytes",
            ],
        ),
        (
            "node",
            &[
                "--cluster",
                "--id",
                "--insecure",
                "--cert",
                "--key",
                "--dir",
                "--tick-ms",
                "--lag-ms",
                "--max-connections",
                "--idle-timeout-ms",
                "--frame-timeout-ms",
                "--max-request-bytes",
            ],
        ),
        (
            "move-leader",
            &[
                "--cluster",
                "--to",
                "--unclean",
                "--timeout-ms",
                "--cert",
                "--key",
            ],
        ),
        (
            "cluster-status",
            &["--cluster", "--timeout-ms", "--cert", "--key"],
        ),
        (
            "produce",
            &[
                "--cluster",
                "--acks",
                "--key-separator",
                "--timeout-ms",
                "--cert",
                "--key",
            ],
        ),
        (
            "consume",
            &[
                "--cluster",
                "--from-beginning",
                "--offset",
                "--max-records",
                "--follow",
                "--print-offset",
                "--print-key",
                "--timeout-ms",
                "--cert",
                "--key",
            ],
        ),
    ];
    for (command, command_flags) in flags {
        assert!(
            usage.contains(&format!("    {command} ")),
            "{command}: {usage}"
        );
        for how in [
            vec![*command, "--help"],
            vec!["help", command],
            vec![*command, "-h"],
        ] {
            let out = oncelog(&how);
            assert_eq!(out.status.code(), Some(0), "{how:?}");
            let help = String::from_utf8_lossy(&out.stdout);
            assert!(
                help.starts_with(&format!("oncelog {command}")),
                "{how:?}: {help}"
            );
            for f in *command_flags {
                assert!(help.contains(f), "{how:?} does not list {f}: {help}");
            }
        }
    }
    // A flag given anywhere, even after other arguments, still asks for help; nothing runs.
    let out = oncelog(&["node", "--cluster", "/nonexistent", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let out = oncelog(&["help", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    // A usage error shows that command's help.
    let out = oncelog(&["node", "--tick"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown option '--tick'"), "{err}");
    assert!(err.contains("--tick-ms N"), "{err}");
}

#[cfg(feature = "net")]
#[test]
fn an_endless_cluster_file_fails_fast_with_a_typed_error() {
    let commands: [&[&str]; 3] = [
        &["node", "--cluster", "/dev/zero", "--id", "1"],
        &["controller", "--cluster", "/dev/zero"],
        &["cluster-status", "--cluster", "/dev/zero"],
    ];
    for args in commands {
        let command = args[0];
        let start = std::time::Instant::now();
        let out = oncelog(args);
        assert_eq!(out.status.code(), Some(1), "{command}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("/dev/zero: larger than 1048576 bytes"),
            "{command}: {err}"
        );
        let took = start.elapsed();
        assert!(
            took < std::time::Duration::from_secs(5),
            "{command}: {took:?}"
        );
    }
}

/// `verify` compares the newest producer snapshot with a replay of the log: a clean log with
/// an idempotent producer passes; a snapshot that disagrees with the log (wrong epoch for a
/// producer whose batches are in the log) is an error naming the snapshot.
#[test]
fn verify_checks_producer_snapshots_against_the_log() {
    use oncelog::producer::{ProducerConfig, ProducerStateManager};
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::for_tests()).unwrap();
    let (pid, epoch) = log.init_producer().unwrap();
    for seq in 0..40 {
        let mut b = oncelog::BatchBuilder::new().producer(pid, epoch, seq);
        b.push(1, None, Some(format!("v{seq}").as_bytes()));
        log.append(&b.build().unwrap()).unwrap();
    }
    let end = log.log_end_offset().0;
    let state = log.producer_state();
    log.close().unwrap();
    let out = oncelog(&["verify", arg(dir.path())]);
    assert!(out.status.success(), "{}", text(&out));

    // Rewrite the snapshot at the log end with the producer at a different epoch.
    let mut wrong = ProducerStateManager::new(ProducerConfig {
        expiration_ms: u64::MAX / 4,
        max_producers: 1000,
    });
    let entry = state.get(pid).unwrap();
    for b in entry.batches() {
        wrong.record(pid, epoch + 1, *b);
    }
    wrong.set_map_end_offset(end);
    let name = format!("{end:020}.snapshot");
    std::fs::write(
        dir.path().join(&name),
        oncelog::format::snapshot::encode(end, &wrong),
    )
    .unwrap();
    let out = oncelog(&["verify", arg(dir.path())]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&name) && t.contains("disagrees with the log"),
        "{t}"
    );
}

/// `verify` and `stat` on a log another thread is writing, with segments rolling, sealing and
/// being deleted by size retention, and snapshots rotating: files vanish between the listing and
/// their read. Neither command may fail on that ("No such file or directory" naming no path),
/// and what open would do with the directory at that instant is never a corruption verdict.
#[test]
fn verify_and_stat_tolerate_a_live_log_deleting_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 8 << 10,
        retention_bytes: Some(32 << 10),
        snapshot_interval_bytes: 4 << 10,
        ..LogConfig::for_tests()
    };
    let log = std::sync::Arc::new(Log::open(dir.path(), cfg).unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (log, stop, written) = (log.clone(), stop.clone(), written.clone());
        std::thread::spawn(move || {
            let mut tag = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                log.append(&batch(tag, 2, 100)).unwrap();
                if tag % 8 == 0 {
                    log.flush().unwrap();
                    log.apply_retention().unwrap();
                }
                tag += 1;
                written.store(tag, std::sync::atomic::Ordering::Relaxed);
            }
            tag
        })
    };
    // At least 40 rounds, and on until the writer wrote 100 batches meanwhile (a loaded
    // machine may starve it for a while; the rounds are what the test is about).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut round = 0;
    while round < 40 || written.load(std::sync::atomic::Ordering::Relaxed) <= 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer wrote only {} batches in 120 s of verify rounds",
            written.load(std::sync::atomic::Ordering::Relaxed)
        );
        let cmd = if round % 3 == 2 { "stat" } else { "verify" };
        let out = oncelog(&[cmd, arg(dir.path())]);
        let t = text(&out);
        assert!(
            out.status.code() == Some(0),
            "{cmd} round {round} on a live log:\n{t}"
        );
        assert!(!t.contains("No such file"), "{cmd} round {round}:\n{t}");
        round += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let batches = writer.join().unwrap();
    assert!(
        batches > 100,
        "the writer wrote while verify ran ({batches} batches)"
    );
    let log = std::sync::Arc::try_unwrap(log).unwrap();
    assert!(log.recovery_report().segments_deleted == 0);
    log.close().unwrap();
}

/// `verify` and `dump` know the issued-epochs checkpoint: a log whose producer was
/// re-initialised verifies, `dump` names the file, and a damaged one (open would refuse the log)
/// is an error naming it; `Log::open` refuses it with `CorruptFile` naming the file.
#[test]
fn verify_checks_the_issued_epochs_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::for_tests()).unwrap();
    let (pid, _) = log.init_producer().unwrap();
    assert_eq!(log.reinit_producer(pid).unwrap(), (pid, 1));
    log.close().unwrap();
    let out = oncelog(&["verify", arg(dir.path())]);
    assert!(out.status.success(), "{}", text(&out));
    let out = oncelog(&["dump", arg(dir.path())]);
    assert!(
        text(&out).contains("issued producer epochs checkpoint"),
        "{}",
        text(&out)
    );

    let path = dir.path().join(oncelog::log::PRODUCER_EPOCHS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[17] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let out = oncelog(&["verify", arg(dir.path())]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains(oncelog::log::PRODUCER_EPOCHS_FILE), "{t}");
    match Log::open(dir.path(), LogConfig::for_tests()) {
        Err(oncelog::Error::CorruptFile { path: p, .. }) => assert_eq!(p, path),
        other => panic!("open of a damaged producer-epochs: {other:?}"),
    }
}

/// `stat` reads what `Log::open` reads (a cleanly closed log's sealed segments not at all), so it
/// stays cheap on a large stopped log and agrees with open; `verify` reads every byte. Damage in
/// the middle of a sealed segment of a cleanly closed log: open succeeds (the segment's first
/// use reports it), `stat` prints the same plan open executes, `verify` fails naming the file.
#[test]
fn stat_reads_what_open_reads_and_verify_reads_everything() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 120);
    let sealed = dir.path().join("00000000000000000000.log");
    let mut bytes = std::fs::read(&sealed).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&sealed, &bytes).unwrap();
    let out = oncelog(&["stat", arg(dir.path())]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("verdict: opens read-write"), "{t}");
    assert!(
        t.contains("00000000000000000000.log: deferred"),
        "a clean log's sealed segment is not read by stat:\n{t}"
    );
    let out = oncelog(&["verify", arg(dir.path())]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("ERROR: corruption in"), "{t}");
    let log = Log::open(dir.path(), LogConfig::for_tests()).unwrap();
    assert!(log.recovery_report().clean_shutdown);
}

/// A closed log of 4 KiB segments with transactions: producer P commits one, aborts one (its
/// ABORT in a sealed segment), then producer Q's transaction stays open to the end, with
/// plain batches around them so segments roll. Returns `(P, Q, the aborted transaction's
/// first offset and marker offset, Q's first offset)`.
fn write_txn_log(dir: &Path) -> (i64, i64, (u64, u64), u64) {
    use oncelog::{BatchBuilder, Marker, MarkerKind};
    let log = Log::open(dir, LogConfig::for_tests()).unwrap();
    let (p, e) = log.init_producer().unwrap();
    let (q, qe) = log.init_producer().unwrap();
    let txn = |pid, epoch, seq: i32, v: &str| {
        let mut b = BatchBuilder::new()
            .producer(pid, epoch, seq)
            .transactional();
        b.push(1, None, Some(v.as_bytes()));
        b.build().unwrap()
    };
    let marker = |pid, epoch, kind| Marker {
        producer_id: pid,
        producer_epoch: epoch,
        coordinator_epoch: 3,
        kind,
    };
    log.append(&txn(p, e, 0, "committed-0")).unwrap();
    log.append(&txn(p, e, 1, "committed-1")).unwrap();
    log.append_marker(&marker(p, e + 1, MarkerKind::Commit))
        .unwrap();
    let first = log
        .append(&txn(p, e + 1, 0, "aborted-0"))
        .unwrap()
        .base_offset
        .0;
    for tag in 0..10 {
        log.append(&batch(tag, 2, 40)).unwrap();
    }
    let abort = log
        .append_marker(&marker(p, e + 2, MarkerKind::Abort))
        .unwrap()
        .base_offset
        .0;
    // Enough plain batches that the ABORT's segment is sealed, then Q's open transaction.
    for tag in 10..80 {
        log.append(&batch(tag, 2, 40)).unwrap();
    }
    let q_first = log.append(&txn(q, qe, 0, "open-0")).unwrap().base_offset.0;
    log.append(&batch(80, 2, 40)).unwrap();
    assert_eq!(log.last_stable_offset().0, q_first);
    assert!(log.segments().len() > 3);
    log.close().unwrap();
    (p.0, q.0, (first, abort), q_first)
}

/// The `.txnindex` of the segment holding `offset`.
fn txn_index_holding(dir: &Path, offset: u64) -> std::path::PathBuf {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_suffix(".log").map(|b| b.parse().unwrap())
        })
        .collect();
    bases.sort();
    let base = bases.iter().rev().find(|&&b| b <= offset).unwrap();
    dir.join(format!("{base:020}.txnindex"))
}

#[test]
fn dump_shows_markers_the_aborted_index_open_transactions_and_the_lso() {
    let dir = tempfile::tempdir().unwrap();
    let (p, q, (first, abort), q_first) = write_txn_log(dir.path());
    let out = oncelog(&["dump", arg(dir.path())]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "control: COMMIT producer_id={p} producer_epoch=1 coordinator_epoch=3"
        )),
        "{t}"
    );
    let abort_line = t
        .lines()
        .find(|l| l.starts_with(&format!("offset={abort}..{abort} ")))
        .unwrap();
    assert!(
        abort_line.contains(&format!(
            "control: ABORT producer_id={p} producer_epoch=2 coordinator_epoch=3"
        )),
        "{abort_line}"
    );
    let data_line = t
        .lines()
        .find(|l| l.starts_with(&format!("offset={first}..{first} ")))
        .unwrap();
    assert!(data_line.contains(" transactional "), "{data_line}");
    // The ABORT's segment's .txnindex, and the open transaction at the end.
    assert!(t.contains(".txnindex: 1 aborted"), "{t}");
    assert!(
        t.contains(&format!(
            "aborted producer_id={p} first_offset={first} marker_offset={abort} \
             last_stable_offset={}",
            abort + 1
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!("open at end: producer {q} from offset {q_first}")),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "Open transactions at the log end (rebuilt from the batches): producer {q} from \
             offset {q_first}"
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "Last stable offset: {q_first} (log start 0, log end"
        )),
        "{t}"
    );
}

/// `dump` computes the LSO by the log's own rule: a transaction open below the log start (moved
/// there by `advance_log_start`, as Kafka's DeleteRecords) holds it at the log start, not at the
/// transaction's first offset, which is no longer in the log.
#[test]
fn dump_and_the_log_agree_on_the_lso_when_the_log_start_passed_an_open_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, _, q_first) = write_txn_log(dir.path());
    let log = Log::open(dir.path(), LogConfig::for_tests()).unwrap();
    let start = q_first + 1;
    log.advance_log_start(oncelog::Offset(start)).unwrap();
    let lso = log.last_stable_offset().0;
    assert_eq!(
        lso, start,
        "the open transaction holds the LSO at the log start"
    );
    log.close().unwrap();
    let out = oncelog(&["dump", arg(dir.path())]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "Last stable offset: {lso} (log start {start}, log end"
        )),
        "{t}"
    );
}

#[test]
fn verify_checks_transaction_indexes_against_the_log() {
    use oncelog::format::txn_index;
    let dir = tempfile::tempdir().unwrap();
    let (_, _, (_, abort), _) = write_txn_log(dir.path());
    let out = oncelog(&["verify", arg(dir.path())]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("result: OK (0 warnings)"), "{t}");

    // Damaged: a flipped byte. A warning (open rebuilds it), and open does rebuild it.
    let path = txn_index_holding(dir.path(), abort);
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    bad[txn_index::ENTRIES_OFFSET + 3] ^= 0x10;
    std::fs::write(&path, &bad).unwrap();
    let out = oncelog(&["verify", arg(dir.path())]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains(&format!("WARNING: {name}: does not decode"))
            && t.contains("open rebuilds it from the batches"),
        "{t}"
    );
    assert!(t.contains("result: OK (1 warnings)"), "{t}");
    let log = Log::open(dir.path(), LogConfig::for_tests()).unwrap();
    assert!(log.recovery_report().txn_indexes.rebuilt >= 1);
    log.close().unwrap();
    // Rebuilt with the same entry (the first segment's: its last stable offset is
    // conservative, at most the base, as open cannot know what was open below it).
    let (was, now) = (
        txn_index::decode(&good).unwrap(),
        txn_index::decode(&std::fs::read(&path).unwrap()).unwrap(),
    );
    let key = |f: &txn_index::SegmentTxnFile| {
        f.aborted
            .iter()
            .map(|a| (a.producer_id, a.first_offset, a.last_offset))
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&now), key(&was));
    assert_eq!(
        (now.open_at_end, now.log_length),
        (was.open_at_end, was.log_length)
    );
    let t = text(&oncelog(&["verify", arg(dir.path())]));
    assert!(t.contains("result: OK (0 warnings)"), "{t}");

    // Missing: a warning too.
    std::fs::remove_file(&path).unwrap();
    let t = text(&oncelog(&["verify", arg(dir.path())]));
    assert!(
        t.contains(&format!("WARNING: {name}: missing; open rebuilds it")),
        "{t}"
    );
    std::fs::write(&path, &good).unwrap();
    let t = text(&oncelog(&["verify", arg(dir.path())]));
    assert!(t.contains("result: OK (0 warnings)"), "{t}");

    // A well-formed file, bound to the segment, that lost its aborted entry: open would trust
    // it, so it is an error that names the file and the entry.
    let mut forged = txn_index::decode(&good).unwrap();
    assert_eq!(forged.aborted.len(), 1);
    forged.aborted.clear();
    std::fs::write(&path, txn_index::encode(&forged)).unwrap();
    let out = oncelog(&["verify", arg(dir.path())]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "ERROR: {name}: disagrees with the segment's batches"
        )) && t.contains(&format!("last_offset: {abort}")),
        "{t}"
    );
}

/// A transaction open across two segment boundaries, aborted in the third segment: verify
/// follows the chain of open transactions from segment to segment as open does, and a middle
/// file that forgets the transaction open at its base is stale for both (a warning; open
/// rebuilds it, after which verify is clean).
#[test]
fn verify_follows_a_transaction_across_segments_as_open_does() {
    use oncelog::format::txn_index;
    use oncelog::{BatchBuilder, Marker, MarkerKind};
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::for_tests()).unwrap();
    let (p, e) = log.init_producer().unwrap();
    let mut b = BatchBuilder::new().producer(p, e, 0).transactional();
    b.push(1, None, Some(b"spanning"));
    let first = log.append(&b.build().unwrap()).unwrap().base_offset.0;
    for tag in 0..60 {
        log.append(&batch(tag, 2, 40)).unwrap();
    }
    log.append_marker(&Marker {
        producer_id: p,
        producer_epoch: e + 1,
        coordinator_epoch: 0,
        kind: MarkerKind::Abort,
    })
    .unwrap();
    for tag in 60..70 {
        log.append(&batch(tag, 2, 40)).unwrap();
    }
    assert!(log.segments().len() >= 3);
    let middle = log.segments()[1].base_offset();
    log.close().unwrap();
    let t = text(&oncelog(&["verify", arg(dir.path())]));
    assert!(t.contains("result: OK (0 warnings)"), "{t}");

    let path = dir.path().join(format!("{middle:020}.txnindex"));
    let mut f = txn_index::decode(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(f.open_at_base, vec![(first, p)]);
    f.open_at_base.clear();
    std::fs::write(&path, txn_index::encode(&f)).unwrap();
    let out = oncelog(&["verify", arg(dir.path())]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains(&format!(
            "open at base: none, but the predecessor ends with producer {} from offset {first} \
             open; open rebuilds it",
            p.0
        )),
        "{t}"
    );
    let log = Log::open(dir.path(), LogConfig::for_tests()).unwrap();
    assert!(log.recovery_report().txn_indexes.rebuilt >= 1);
    log.close().unwrap();
    let t = text(&oncelog(&["verify", arg(dir.path())]));
    assert!(t.contains("result: OK (0 warnings)"), "{t}");
}

/// A time index entry is the largest `max_timestamp` of the batches up to its batch (format.md),
/// whatever the timestamps: all negative here. The appender that resumes a segment after a
/// reopen used to start its running maximum at -1 (the empty tail's value), so the entries it
/// wrote for negative timestamps said -1, and `verify` called the sealed segment's
/// `.timeindex` wrong on a healthy log.
#[test]
fn negative_timestamps_index_the_same_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let stamped = |ts: i64| {
        let mut b = oncelog::BatchBuilder::new();
        b.push(ts, Some(b"k"), Some(b"v"));
        b.build().unwrap()
    };
    let log = Log::open(dir.path(), LogConfig::for_tests()).unwrap();
    log.append(&stamped(-1000)).unwrap();
    log.close().unwrap();
    let log = Log::open(dir.path(), LogConfig::for_tests()).unwrap();
    log.append(&stamped(-900)).unwrap();
    log.append(&stamped(-950)).unwrap();
    log.roll().unwrap();
    log.append(&stamped(-800)).unwrap();
    log.close().unwrap();
    let out = oncelog(&["verify", arg(dir.path())]);
    let t = text(&out);
    assert!(out.status.success() && !t.contains("WARNING"), "{t}");
}

/// Every error `oncelog verify` reports names the file it is about (or the directory, when the
/// problem is the directory), for each way a log directory can be broken, through the binary.
/// Among them the reproduction: `truncate -s 0 producer-ids` (verify used to say OK
/// while open failed) and an I/O error reading a checkpoint.
#[test]
fn verify_errors_name_their_file() {
    type Break = fn(&Path);
    let cases: &[(&str, &str, Break)] = &[
        ("truncate -s 0 producer-ids", "producer-ids", |d| {
            std::fs::File::options()
                .write(true)
                .open(d.join("producer-ids"))
                .unwrap()
                .set_len(0)
                .unwrap()
        }),
        ("garbage log-start-offset", "log-start-offset", |d| {
            std::fs::write(d.join("log-start-offset"), b"garbage garbage garbage").unwrap()
        }),
        (
            "a flipped byte in a sealed segment",
            "00000000000000000000.log",
            |d| {
                let p = d.join("00000000000000000000.log");
                let mut b = std::fs::read(&p).unwrap();
                let mid = b.len() / 2;
                b[mid] ^= 0x40;
                std::fs::write(p, b).unwrap();
            },
        ),
        ("a missing middle segment", ".log", |d| {
            let mut logs: Vec<_> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
                .collect();
            logs.sort();
            std::fs::remove_file(&logs[1]).unwrap();
        }),
        ("a recovery point with no segment", "recovery-point", |d| {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|e| e == "log") {
                    std::fs::remove_file(p).unwrap();
                }
            }
        }),
        (
            "producer-ids is a directory (an I/O error)",
            "producer-ids",
            |d| {
                std::fs::remove_file(d.join("producer-ids")).unwrap();
                std::fs::create_dir(d.join("producer-ids")).unwrap();
            },
        ),
    ];
    for (what, names, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 120);
        // A producer id block, so that `producer-ids` exists.
        let log = Log::open(dir.path(), LogConfig::for_tests()).unwrap();
        log.init_producer().unwrap();
        log.close().unwrap();
        damage(dir.path());
        let out = oncelog(&["verify", arg(dir.path())]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {t}");
        let errors: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("ERROR:") || l.starts_with("oncelog: error:"))
            .collect();
        assert!(!errors.is_empty(), "{what}: no error line:\n{t}");
        let dir_s = dir.path().display().to_string();
        let file_names = [
            "clean-shutdown",
            "recovery-point",
            "log-start-offset",
            "producer-ids",
            "producer-epochs",
            ".log",
            ".index",
            ".timeindex",
            ".snapshot",
            ".txnindex",
        ];
        for e in &errors {
            assert!(
                e.contains(&dir_s) || file_names.iter().any(|n| e.contains(n)),
                "{what}: an error that names no file: {e}"
            );
        }
        assert!(
            errors.iter().any(|e| e.contains(names)),
            "{what}: no error names {names}:\n{t}"
        );
        // Nothing but the damage: the marker is intact in every case (a refused plan's end is
        // the prefix before the damage, not what the marker vouches for).
        assert!(!t.contains("says the log ends at"), "{what}:\n{t}");
        // Open refuses the same directory and names the same file.
        let opened = Log::open(dir.path(), LogConfig::for_tests()).map(|_| ());
        match opened {
            Err(e) => assert!(e.to_string().contains(names), "{what}: open says {e}"),
            Ok(()) if *what == "a flipped byte in a sealed segment" => {} // found on first use
            Ok(()) => panic!("{what}: open succeeded"),
        }
    }
}
