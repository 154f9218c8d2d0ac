//! Guards the pure replication rules (`src/replication/`) with table-driven cases and properties.
//!
//! 1. A small datadriven runner (raft-rs style) reads every `tests/testdata/{hw,isr,truncation}/*.txt`
//!    file. A case is a command line (`hw isr=(1,2,3) leo=(10,7,_) min_isr=2 prev_hw=5`), a line
//!    `----`, and the expected output up to a blank line; `#` lines are comments. Commands within
//!    one file share state (a leader, a controller), so a file can tell a story step by step.
//!    The runner renders the actual output and compares; `UPDATE_TESTDATA=1` rewrites the files.
//! 2. Property tests: random epoch-cache operations keep the cache invariants; and for two
//!    replicas' logs produced by a random history of elections, appends, partial replication and
//!    crashes that lose tails, the fetch protocol (leader `on_fetch` + follower truncation)
//!    truncates the follower exactly to the divergence point — the longest common prefix by
//!    (offset, epoch) — and then makes the logs equal.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use oncelog::replication::controller::{Controller, InProcessController, LogRecovery};
use oncelog::replication::leader::compute_high_watermark;
use oncelog::replication::{
    AcksAllStatus, AlterIsrRequest, BecomeLeader, FetchDecision, FetchRequest, FetchedBatch,
    FollowerDecision, FollowerState, HwDecision, HwHold, IsrMember, LeaderConfig, LeaderEpochCache,
    LeaderState, PendingIsrChange, ReplicaId,
};
use oncelog::{LeaderEpoch, Offset};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// The datadriven runner.

/// One parsed command: `name key=value key=(a,b) flag`.
struct Cmd {
    name: String,
    args: Vec<(String, Vec<String>)>,
}

impl Cmd {
    fn parse(line: &str) -> Cmd {
        let mut tokens = Vec::new();
        let mut cur = String::new();
        let mut depth = 0;
        for ch in line.chars() {
            match ch {
                '(' => {
                    depth += 1;
                    cur.push(ch);
                }
                ')' => {
                    depth -= 1;
                    cur.push(ch);
                }
                c if c.is_whitespace() && depth == 0 => {
                    if !cur.is_empty() {
                        tokens.push(std::mem::take(&mut cur));
                    }
                }
                c => cur.push(c),
            }
        }
        if !cur.is_empty() {
            tokens.push(cur);
        }
        let mut it = tokens.into_iter();
        let name = it.next().expect("empty command");
        let args = it
            .map(|t| match t.split_once('=') {
                None => (t, vec![]),
                Some((k, v)) => {
                    let v = v.trim_start_matches('(').trim_end_matches(')');
                    let vals = if v.is_empty() {
                        vec![]
                    } else {
                        v.split(',').map(|s| s.trim().to_string()).collect()
                    };
                    (k.to_string(), vals)
                }
            })
            .collect();
        Cmd { name, args }
    }

    fn has(&self, key: &str) -> bool {
        self.args.iter().any(|(k, _)| k == key)
    }
    fn list(&self, key: &str) -> Option<&[String]> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
    fn str(&self, key: &str) -> Option<&str> {
        self.list(key).and_then(|v| v.first()).map(String::as_str)
    }
    fn u64(&self, key: &str) -> Option<u64> {
        self.str(key).map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("{key}={s}: not a number"))
        })
    }
    fn i32(&self, key: &str) -> Option<i32> {
        self.str(key).map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("{key}={s}: not a number"))
        })
    }
    fn ids(&self, key: &str) -> Option<Vec<ReplicaId>> {
        self.list(key).map(|v| {
            v.iter()
                .map(|s| ReplicaId(s.parse().expect("replica id")))
                .collect()
        })
    }
    /// `(10,7,_)`: `_` is unknown.
    fn offsets(&self, key: &str) -> Option<Vec<Option<Offset>>> {
        self.list(key).map(|v| {
            v.iter()
                .map(|s| (s != "_").then(|| Offset(s.parse().expect("offset"))))
                .collect()
        })
    }
    fn epochs(&self, key: &str) -> Option<Vec<LeaderEpoch>> {
        self.list(key)
            .map(|v| v.iter().map(|s| s.parse().expect("epoch")).collect())
    }
}

fn run_file(path: &Path, handler: &mut dyn FnMut(&Cmd) -> String) -> Result<(), String> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut failures = String::new();
    let mut i = 0;
    let mut cases = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            out.push_str(line);
            out.push('\n');
            i += 1;
            continue;
        }
        let cmd_line = i + 1;
        out.push_str(line);
        out.push('\n');
        i += 1;
        assert_eq!(
            lines.get(i).map(|l| l.trim()),
            Some("----"),
            "{}:{}: command without ----",
            path.display(),
            cmd_line
        );
        out.push_str("----\n");
        i += 1;
        let mut expected = String::new();
        while i < lines.len() && !lines[i].trim().is_empty() {
            expected.push_str(lines[i]);
            expected.push('\n');
            i += 1;
        }
        let actual = handler(&Cmd::parse(trimmed));
        let actual = if actual.ends_with('\n') {
            actual
        } else {
            actual + "\n"
        };
        cases += 1;
        if actual != expected {
            let _ = writeln!(
                failures,
                "{}:{}: {}\n--- expected\n{}--- actual\n{}",
                path.display(),
                cmd_line,
                trimmed,
                expected,
                actual
            );
        }
        out.push_str(&actual);
    }
    assert!(cases > 0, "{}: no cases", path.display());
    if std::env::var_os("UPDATE_TESTDATA").is_some() {
        if out != text {
            std::fs::write(path, out).unwrap();
        }
        return Ok(());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

fn testdata_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/testdata")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no test files in {}", dir.display());
    files
}

fn run_dir(dir: &str) {
    let mut failures = String::new();
    for file in testdata_files(dir) {
        let mut rules = Rules::default();
        if let Err(f) = run_file(&file, &mut |cmd| rules.run(cmd)) {
            failures.push_str(&f);
        }
    }
    assert!(failures.is_empty(), "\n{failures}");
}

#[test]
fn hw_rules() {
    run_dir("hw");
}

#[test]
fn isr_rules() {
    run_dir("isr");
}

#[test]
fn truncation_rules() {
    run_dir("truncation");
}

// ---------------------------------------------------------------------------------------------
// Rendering.

fn ids(v: &[ReplicaId]) -> String {
    let s: Vec<String> = v.iter().map(|r| r.0.to_string()).collect();
    format!("({})", s.join(","))
}

fn opt(o: Option<Offset>) -> String {
    o.map_or("_".to_string(), |o| o.0.to_string())
}

fn log_str(log: &[LeaderEpoch]) -> String {
    let s: Vec<String> = log.iter().map(|e| e.to_string()).collect();
    format!("({})", s.join(","))
}

fn cache_str(c: &LeaderEpochCache) -> String {
    let s: Vec<String> = c
        .entries()
        .iter()
        .map(|e| format!("{}@{}", e.epoch, e.start_offset.0))
        .collect();
    format!("({})", s.join(","))
}

fn hw_str(d: &HwDecision) -> String {
    match d {
        HwDecision::Advanced { from, to } => format!("hw={} (advanced from {})", to.0, from.0),
        HwDecision::Unchanged { hw, hold } => {
            let why = match hold {
                HwHold::BelowMinIsr { isr, min_isr } => {
                    format!("frozen: committed isr {isr} < min_isr {min_isr}")
                }
                HwHold::UnknownFollowerLeo(r) => format!("leo of {r} unknown"),
                HwHold::NotHigher { candidate } => {
                    format!("min leo {} not above hw", candidate.0)
                }
            };
            format!("hw={} (unchanged: {why})", hw.0)
        }
    }
}

fn leader_summary(l: &LeaderState) -> String {
    let pending = match l.pending() {
        None => "none".to_string(),
        Some(PendingIsrChange::Expand { proposed }) => format!("expand{}", ids(proposed)),
        Some(PendingIsrChange::Shrink { proposed }) => format!("shrink{}", ids(proposed)),
    };
    format!(
        "hw={} leo={} isr={} maximal={} pending={}",
        l.high_watermark().0,
        l.log_end().0,
        ids(l.isr()),
        ids(l.maximal_isr()),
        pending
    )
}

fn proposal_str(p: &AlterIsrRequest) -> String {
    format!(
        "propose isr={} at partition_epoch={}",
        ids(&p.isr()),
        p.partition_epoch
    )
}

fn controller_str(c: &InProcessController) -> String {
    let s = c.leader_and_isr();
    let mut line = format!(
        "leader={} leader_epoch={} partition_epoch={} isr={}",
        s.leader.map_or("none".to_string(), |l| l.0.to_string()),
        s.leader_epoch,
        s.partition_epoch,
        ids(&s.isr)
    );
    let catch_up: Vec<ReplicaId> = (1..=9)
        .map(ReplicaId)
        .filter(|r| c.needs_catch_up(*r))
        .collect();
    if !catch_up.is_empty() {
        let _ = write!(line, " needs_catch_up={}", ids(&catch_up));
    }
    line
}

// ---------------------------------------------------------------------------------------------
// Commands.

#[derive(Default)]
struct Rules {
    leader: Option<LeaderState>,
    controller: Option<InProcessController>,
}

fn cache_from_log(log: &[LeaderEpoch]) -> LeaderEpochCache {
    let mut c = LeaderEpochCache::new();
    for (o, e) in log.iter().enumerate() {
        c.assign(*e, Offset(o as u64)).unwrap();
    }
    c
}

/// `epochs=(0@0,3@40)`.
fn cache_from_arg(cmd: &Cmd) -> LeaderEpochCache {
    let mut c = LeaderEpochCache::new();
    for e in cmd.list("epochs").unwrap_or(&[]) {
        let (epoch, start) = e.split_once('@').expect("epoch@start");
        c.assign(epoch.parse().unwrap(), Offset(start.parse().unwrap()))
            .unwrap();
    }
    c
}

impl Rules {
    fn run(&mut self, cmd: &Cmd) -> String {
        match cmd.name.as_str() {
            "hw" => hw_rule(cmd),
            "leader" => self.new_leader(cmd),
            "fetch" | "append" | "expand" | "shrink" | "commit" | "reject" | "acks" | "catchup"
            | "state" => self.leader_cmd(cmd),
            "controller" => {
                let c = InProcessController::new(&cmd.ids("replicas").unwrap());
                let out = controller_str(&c);
                self.controller = Some(c);
                out
            }
            "alter" | "fail" | "restart" | "elect" => self.controller_cmd(cmd),
            "sync" => sync_cmd(cmd),
            other => panic!("unknown command {other}"),
        }
    }

    fn new_leader(&mut self, cmd: &Cmd) -> String {
        let replicas = cmd.ids("replicas").unwrap();
        let isr = cmd.ids("isr").unwrap_or_else(|| replicas.clone());
        let args = BecomeLeader {
            leader: cmd.u64("id").map_or(replicas[0], |i| ReplicaId(i as u32)),
            replicas,
            isr,
            leader_epoch: cmd.i32("epoch").unwrap_or(1),
            partition_epoch: cmd.i32("partition_epoch").unwrap_or(0),
            log_start: Offset(cmd.u64("log_start").unwrap_or(0)),
            log_end: Offset(cmd.u64("leo").unwrap()),
            high_watermark: Offset(cmd.u64("hw").unwrap_or(0)),
            epoch_cache: cache_from_arg(cmd),
        };
        let config = LeaderConfig {
            min_insync_replicas: cmd.u64("min_isr").unwrap_or(1) as usize,
            replica_lag_time_max_ms: cmd.u64("lag").unwrap_or(30_000),
        };
        match LeaderState::new(args, config, cmd.u64("now").unwrap_or(0)) {
            Ok(l) => {
                l.check_invariants();
                let out = format!(
                    "{}\nepoch_start={} epochs={}",
                    leader_summary(&l),
                    l.leader_epoch_start_offset().0,
                    cache_str(l.epoch_cache())
                );
                self.leader = Some(l);
                out
            }
            Err(e) => format!("error: {e}"),
        }
    }

    fn leader_cmd(&mut self, cmd: &Cmd) -> String {
        let l = self.leader.as_mut().expect("no leader: use `leader` first");
        let now = cmd.u64("now").unwrap_or(0);
        let hw_before = l.high_watermark();
        let first = match cmd.name.as_str() {
            "fetch" => {
                let req = FetchRequest {
                    replica: ReplicaId(cmd.u64("r").unwrap() as u32),
                    incarnation: cmd.u64("inc").unwrap_or(0),
                    fetch_offset: Offset(cmd.u64("offset").unwrap()),
                    last_fetched_epoch: cmd.i32("epoch"),
                    current_leader_epoch: cmd.i32("leader_epoch").unwrap_or(l.leader_epoch()),
                    max_bytes: 1 << 20,
                };
                match l.on_fetch_request(&req, now) {
                    Ok(FetchDecision::Read { from, log_end, .. }) => {
                        format!("read [{}, {})", from.0, log_end.0)
                    }
                    Ok(FetchDecision::Diverging { epoch, end_offset }) => {
                        format!("diverging epoch={epoch} end={}", end_offset.0)
                    }
                    Err(e) => format!("error: {e}"),
                }
            }
            "append" => {
                l.on_append(Offset(cmd.u64("leo").unwrap()));
                "appended".to_string()
            }
            "expand" => l
                .maybe_expand_isr(now)
                .map_or("no change".to_string(), |p| proposal_str(&p)),
            "shrink" => l
                .maybe_shrink_isr(now)
                .map_or("no change".to_string(), |p| proposal_str(&p)),
            "commit" => {
                let pe = cmd
                    .i32("partition_epoch")
                    .unwrap_or(l.partition_epoch() + 1);
                match l.on_isr_committed(pe, &cmd.ids("isr").unwrap()) {
                    Ok(_) => format!("committed at partition_epoch={pe}"),
                    Err(e) => format!("error: {e}"),
                }
            }
            "reject" => {
                l.on_isr_rejected();
                "rejected".to_string()
            }
            "acks" => {
                let before = match l.check_enough_replicas() {
                    Ok(()) => "accept".to_string(),
                    Err(e) => format!("refuse: {e}"),
                };
                match cmd.u64("last") {
                    None => format!("before append: {before}"),
                    Some(last) => {
                        let after = match l.acks_all_check(Offset(last)) {
                            AcksAllStatus::Waiting => "waiting".to_string(),
                            AcksAllStatus::Complete => "complete".to_string(),
                            AcksAllStatus::NotEnoughReplicasAfterAppend {
                                maximal_isr,
                                min_isr,
                            } => format!(
                                "NOT_ENOUGH_REPLICAS_AFTER_APPEND (maximal isr {maximal_isr} < \
                                 {min_isr})"
                            ),
                        };
                        format!("before append: {before}; last={last}: {after}")
                    }
                }
            }
            "catchup" => {
                let r = ReplicaId(cmd.u64("r").unwrap() as u32);
                l.mark_needs_catch_up(r);
                format!("{r} must catch up to rejoin")
            }
            "state" => {
                let mut s = String::new();
                for r in l.replicas().iter().filter(|r| **r != l.leader()) {
                    let p = l.follower(*r).unwrap();
                    let _ = writeln!(
                        s,
                        "{r}: leo={} caught_up={} eligible={}",
                        opt(p.log_end_offset),
                        p.last_caught_up_time_ms
                            .map_or("never".to_string(), |t| t.to_string()),
                        l.is_isr_eligible(*r)
                    );
                }
                s.trim_end().to_string()
            }
            _ => unreachable!(),
        };
        l.check_invariants();
        assert!(l.high_watermark() >= hw_before, "HW decreased");
        format!("{first}\n{}", leader_summary(l))
    }

    fn controller_cmd(&mut self, cmd: &Cmd) -> String {
        let c = self
            .controller
            .as_mut()
            .expect("no controller: use `controller` first");
        let first = match cmd.name.as_str() {
            "alter" => {
                let s = c.leader_and_isr();
                let req = AlterIsrRequest {
                    leader: ReplicaId(
                        cmd.u64("leader")
                            .map_or_else(|| s.leader.map_or(0, |l| l.0), |v| v as u32),
                    ),
                    leader_epoch: cmd.i32("leader_epoch").unwrap_or(s.leader_epoch),
                    partition_epoch: cmd.i32("partition_epoch").unwrap_or(s.partition_epoch),
                    // `3@1`: replica 3 seen as incarnation 1.
                    new_isr: cmd
                        .list("isr")
                        .unwrap()
                        .iter()
                        .map(|m| match m.split_once('@') {
                            Some((r, i)) => IsrMember {
                                replica: ReplicaId(r.parse().unwrap()),
                                incarnation: Some(i.parse().unwrap()),
                            },
                            None => IsrMember {
                                replica: ReplicaId(m.parse().unwrap()),
                                incarnation: None,
                            },
                        })
                        .collect(),
                };
                match c.alter_isr(&req) {
                    Ok(_) => "accepted".to_string(),
                    Err(e) => format!("rejected: {e}"),
                }
            }
            "fail" => {
                c.replica_failed(ReplicaId(cmd.u64("r").unwrap() as u32));
                "failed".to_string()
            }
            "restart" => {
                let recovery = match cmd.str("log").unwrap_or("intact") {
                    "intact" => LogRecovery::Intact,
                    "lost-tail" => LogRecovery::MayHaveLostTail,
                    "damaged" => LogRecovery::EmptyOrDamaged,
                    other => panic!("log={other}"),
                };
                c.replica_restarted(
                    ReplicaId(cmd.u64("r").unwrap() as u32),
                    cmd.u64("inc").unwrap(),
                    recovery,
                );
                "restarted".to_string()
            }
            "elect" => match c.elect_leader(cmd.has("unclean")) {
                Ok(e) if e.unclean => "elected UNCLEAN (committed data may be lost)".to_string(),
                Ok(_) => "elected".to_string(),
                Err(e) => format!("error: {e}"),
            },
            _ => unreachable!(),
        };
        c.check_invariants();
        format!("{first}\n{}", controller_str(c))
    }
}

/// `hw isr=(1,2,3) leo=(10,7,_) min_isr=2 prev_hw=5 [replicas=..] [pending_add=..]`: the pure
/// HW rule. `leo` is aligned with `replicas` (default: the ISR then `pending_add`); the leader is
/// the first ISR member; `pending_add` members join the maximal ISR, `pending_remove` members
/// stay in it (a shrink is not assumed).
fn hw_rule(cmd: &Cmd) -> String {
    let isr = cmd.ids("isr").unwrap();
    let pending_add = cmd.ids("pending_add").unwrap_or_default();
    let replicas = cmd
        .ids("replicas")
        .unwrap_or_else(|| [isr.clone(), pending_add.clone()].concat());
    let leo = cmd.offsets("leo").unwrap();
    assert_eq!(leo.len(), replicas.len(), "leo must align with replicas");
    let leo_of = |r: ReplicaId| leo[replicas.iter().position(|x| *x == r).unwrap()];
    let leader = isr[0];
    let maximal: BTreeSet<ReplicaId> = isr.iter().chain(&pending_add).copied().collect();
    let followers: Vec<(ReplicaId, Option<Offset>)> = maximal
        .iter()
        .filter(|r| **r != leader)
        .map(|r| (*r, leo_of(*r)))
        .collect();
    let min_isr = (cmd.u64("min_isr").unwrap_or(1) as usize).min(replicas.len());
    let d = compute_high_watermark(
        Offset(cmd.u64("prev_hw").unwrap_or(0)),
        leo_of(leader).expect("the leader's LEO is always known"),
        isr.len(),
        min_isr,
        &followers,
    );
    hw_str(&d)
}

// ---------------------------------------------------------------------------------------------
// Truncation: two logs (one leader epoch per offset) and the fetch protocol between them.

/// The outcome of syncing a follower to a leader through the protocol.
#[derive(Debug)]
struct SyncTrace {
    lines: Vec<String>,
    /// The lowest log end the follower reached (its truncation point).
    lowest: usize,
    follower_log: Vec<LeaderEpoch>,
}

/// Syncs `follower_log` (cache `follower_cache`) to `leader_log` (cache `leader_cache`) with
/// `leader_epoch` as the current epoch, using `LeaderState` and `FollowerState`.
fn sync(
    leader_log: &[LeaderEpoch],
    leader_cache: LeaderEpochCache,
    leader_hw: u64,
    leader_epoch: LeaderEpoch,
    follower_log: &[LeaderEpoch],
    follower_cache: LeaderEpochCache,
    follower_hw: u64,
) -> SyncTrace {
    let (l_id, f_id) = (ReplicaId(1), ReplicaId(2));
    let mut leader = LeaderState::new(
        BecomeLeader {
            leader: l_id,
            replicas: vec![l_id, f_id],
            isr: vec![l_id, f_id],
            leader_epoch,
            partition_epoch: 0,
            log_start: Offset(0),
            log_end: Offset(leader_log.len() as u64),
            high_watermark: Offset(leader_hw),
            epoch_cache: leader_cache,
        },
        LeaderConfig::default(),
        0,
    )
    .unwrap();
    let mut follower = FollowerState::new(
        f_id,
        1,
        leader_epoch,
        Offset(0),
        Offset(follower_log.len() as u64),
        Offset(follower_hw),
        follower_cache,
    );
    let mut flog = follower_log.to_vec();
    let mut lowest = flog.len();
    let mut lines = Vec::new();
    for round in 0..20 {
        let req = follower.fetch_request(1 << 20);
        let outcome = leader.on_fetch_request(&req, round);
        let batches = match outcome {
            Ok(FetchDecision::Read { from, log_end, .. }) => (from.0..log_end.0)
                .map(|o| FetchedBatch {
                    base_offset: Offset(o),
                    last_offset: Offset(o),
                    leader_epoch: leader_log[o as usize],
                    bytes: vec![],
                })
                .collect(),
            _ => vec![],
        };
        let leader_says = match &outcome {
            Ok(FetchDecision::Read { from, log_end, .. }) => {
                format!("read [{}, {})", from.0, log_end.0)
            }
            Ok(FetchDecision::Diverging { epoch, end_offset }) => {
                format!("diverging epoch={epoch} end={}", end_offset.0)
            }
            Err(e) => format!("error: {e}"),
        };
        let resp = leader.fetch_response(outcome, batches).unwrap();
        let decision = follower.on_fetch_response(resp).unwrap();
        let (follower_does, synced) = match decision {
            FollowerDecision::Append {
                batches,
                high_watermark,
                ..
            } => {
                flog.extend(batches.iter().map(|b| b.leader_epoch));
                (
                    format!("append {} hw={}", batches.len(), high_watermark.0),
                    flog.len() == leader_log.len(),
                )
            }
            FollowerDecision::Truncate { to, done } => {
                flog.truncate(to.0 as usize);
                let done = if done { "done" } else { "not done" };
                (format!("truncate to={} {done}", to.0), false)
            }
            FollowerDecision::TruncateUnclean { to } => {
                flog.truncate(to.0 as usize);
                (format!("truncate unclean to={}", to.0), false)
            }
            other => panic!("unexpected {other:?}"),
        };
        lowest = lowest.min(flog.len());
        follower.check_invariants();
        leader.check_invariants();
        lines.push(format!(
            "fetch offset={} last_epoch={} -> {leader_says} -> {follower_does}",
            req.fetch_offset.0,
            req.last_fetched_epoch
                .map_or("none".to_string(), |e| e.to_string()),
        ));
        if synced {
            // One more round lets the leader see the follower at its end (HW catches up).
            let req = follower.fetch_request(1 << 20);
            leader.on_fetch_request(&req, round + 1).unwrap();
            break;
        }
    }
    lines.push(format!(
        "leader hw={} follower log={}",
        leader.high_watermark().0,
        log_str(&flog)
    ));
    SyncTrace {
        lines,
        lowest,
        follower_log: flog,
    }
}

fn common_prefix(a: &[LeaderEpoch], b: &[LeaderEpoch]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// `sync leader=(1,1,2) follower=(1,1,1) epoch=3 [leader_hw=] [follower_hw=]
/// [follower_extra=E]`: logs give the epoch of each offset; the leader became leader of `epoch`
/// (recorded at its log end); `follower_extra=E` means the follower once led epoch E and recorded
/// it at its log end without writing. Prints each fetch round, then the truncation point against
/// the true divergence point, and what truncating to the follower's HW (pre-KIP-101) would do.
fn sync_cmd(cmd: &Cmd) -> String {
    let leader_log = cmd.epochs("leader").unwrap();
    let follower_log = cmd.epochs("follower").unwrap();
    let epoch = cmd.i32("epoch").unwrap();
    let leader_hw = cmd.u64("leader_hw").unwrap_or(0);
    let follower_hw = cmd.u64("follower_hw").unwrap_or(0);
    let mut fcache = cache_from_log(&follower_log);
    if let Some(e) = cmd.i32("follower_extra") {
        fcache.assign(e, Offset(follower_log.len() as u64)).unwrap();
    }
    let trace = sync(
        &leader_log,
        cache_from_log(&leader_log),
        leader_hw,
        epoch,
        &follower_log,
        fcache,
        follower_hw,
    );
    let mut out = trace.lines.join("\n");
    let lcp = common_prefix(&leader_log, &follower_log);
    let _ = write!(
        out,
        "\ntruncated to {} (divergence point {lcp}){}",
        trace.lowest,
        if trace.lowest == lcp { "" } else { " WRONG" }
    );
    assert_eq!(trace.follower_log, leader_log, "not in sync");
    // What the pre-KIP-101 protocol did: truncate to the own HW, then copy from there.
    if !cmd.has("follower_hw") {
        return out;
    }
    let hw = (follower_hw as usize).min(follower_log.len());
    let kept_divergent =
        common_prefix(&leader_log[..hw.min(leader_log.len())], &follower_log[..hw]);
    let by_hw = if kept_divergent < hw {
        format!("keeps a divergent record at offset {kept_divergent} forever")
    } else if hw < lcp {
        format!(
            "drops {} records the leader has (offsets {hw}..{lcp}); acked ones are lost if this \
             replica leads next",
            lcp - hw
        )
    } else {
        "same result".to_string()
    };
    let _ = write!(out, "\nby hw ({hw}): {by_hw}");
    out
}

// ---------------------------------------------------------------------------------------------
// Properties.

#[derive(Debug, Clone)]
enum CacheOp {
    Assign(LeaderEpoch, u64),
    TruncateEnd(u64),
    TruncateStart(u64),
}

fn cache_op() -> impl Strategy<Value = CacheOp> {
    prop_oneof![
        4 => (0..12i32, 0..60u64).prop_map(|(e, o)| CacheOp::Assign(e, o)),
        1 => (0..60u64).prop_map(CacheOp::TruncateEnd),
        1 => (0..60u64).prop_map(CacheOp::TruncateStart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Random assign/truncate operations keep the cache strictly increasing in both
    /// coordinates, and each operation has its documented effect.
    #[test]
    fn epoch_cache_keeps_its_invariants(ops in prop::collection::vec(cache_op(), 0..40)) {
        let mut c = LeaderEpochCache::new();
        for op in ops {
            let before = c.clone();
            match op {
                CacheOp::Assign(e, o) => {
                    let changed = c.assign(e, Offset(o)).unwrap();
                    let latest = c.latest().unwrap();
                    if changed {
                        prop_assert_eq!((latest.epoch, latest.start_offset), (e, Offset(o)));
                        // Entries before the new one are untouched.
                        prop_assert!(before.entries().starts_with(
                            &c.entries()[..c.entries().len() - 1]));
                    } else {
                        prop_assert_eq!(&c, &before);
                        prop_assert!(latest.epoch == e && latest.start_offset <= Offset(o));
                    }
                }
                CacheOp::TruncateEnd(o) => {
                    c.truncate_from_end(Offset(o));
                    prop_assert!(c.entries().iter().all(|x| x.start_offset < Offset(o)));
                    prop_assert!(before.entries().starts_with(c.entries()));
                }
                CacheOp::TruncateStart(o) => {
                    let covering = before.epoch_for_offset(Offset(o));
                    c.truncate_from_start(Offset(o));
                    prop_assert!(c.entries().iter().all(|x| x.start_offset >= Offset(o)));
                    prop_assert_eq!(c.epoch_for_offset(Offset(o)), covering);
                    for probe in o..o + 20 {
                        prop_assert_eq!(
                            c.epoch_for_offset(Offset(probe)),
                            before.epoch_for_offset(Offset(probe))
                        );
                    }
                }
            }
            c.check_invariants();
            // end_offset_for never names a higher epoch than asked, nor an end past the log.
            let leo = Offset(100);
            for r in 0..14 {
                if let Some((e, end)) = c.end_offset_for(r, leo) {
                    prop_assert!(e <= r && end <= leo);
                }
            }
            let round_trip = LeaderEpochCache::from_checkpoint(&c.to_checkpoint()).unwrap();
            prop_assert_eq!(&round_trip, &c);
        }
    }
}

/// One step of a random cluster history over 3 replicas.
#[derive(Debug, Clone)]
enum HistoryOp {
    /// A replica becomes leader of a new epoch (any replica: unclean elections included, so
    /// logs diverge in every way the protocol must handle).
    Elect(usize),
    /// The leader appends records.
    Append(usize),
    /// A follower copies from the leader (by an oracle, not the code under test): its log
    /// becomes a prefix of the leader's, at least up to their common prefix.
    Replicate(usize, usize),
    /// A replica crashes and loses a tail (power loss); a leader stops leading.
    Crash(usize, usize),
}

fn history_op() -> impl Strategy<Value = HistoryOp> {
    prop_oneof![
        2 => (0..3usize).prop_map(HistoryOp::Elect),
        4 => (1..4usize).prop_map(HistoryOp::Append),
        3 => (0..3usize, 0..100usize).prop_map(|(r, f)| HistoryOp::Replicate(r, f)),
        1 => (0..3usize, 0..100usize).prop_map(|(r, f)| HistoryOp::Crash(r, f)),
    ]
}

#[derive(Clone, Default, Debug)]
struct Replica {
    log: Vec<LeaderEpoch>,
    cache: LeaderEpochCache,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    /// The key property: whatever the history, the follower truncates exactly to the divergence
    /// point (the longest common prefix of the two logs by (offset, epoch)) — never below it
    /// (which would lose records the leader has, KIP-101 scenario 1) nor above it (which would
    /// keep a divergent record, scenario 2) — and then ends with the leader's log.
    #[test]
    fn follower_truncates_exactly_to_the_divergence_point(
        ops in prop::collection::vec(history_op(), 0..40),
        final_leader in 0..3usize,
        follower_pick in 1..3usize,
    ) {
        let mut reps = vec![Replica::default(); 3];
        let mut leader: Option<usize> = None;
        let mut epoch: LeaderEpoch = 0;
        for op in ops {
            match op {
                HistoryOp::Elect(r) => {
                    epoch += 1;
                    leader = Some(r);
                    let rep = &mut reps[r];
                    rep.cache.assign(epoch, Offset(rep.log.len() as u64)).unwrap();
                }
                HistoryOp::Append(n) => {
                    if let Some(l) = leader {
                        let rep = &mut reps[l];
                        for _ in 0..n {
                            rep.cache.assign(epoch, Offset(rep.log.len() as u64)).unwrap();
                            rep.log.push(epoch);
                        }
                    }
                }
                HistoryOp::Replicate(f, frac) => {
                    let Some(l) = leader else { continue };
                    if f == l { continue; }
                    let src = reps[l].log.clone();
                    let dst = &mut reps[f];
                    let lcp = common_prefix(&src, &dst.log);
                    let new_len = lcp + (src.len() - lcp) * frac / 99;
                    dst.log.truncate(lcp);
                    dst.cache.truncate_from_end(Offset(lcp as u64));
                    for (o, e) in src.iter().enumerate().take(new_len).skip(lcp) {
                        dst.cache.assign(*e, Offset(o as u64)).unwrap();
                        dst.log.push(*e);
                    }
                }
                HistoryOp::Crash(r, frac) => {
                    let rep = &mut reps[r];
                    let keep = rep.log.len() * frac / 99;
                    rep.log.truncate(keep);
                    rep.cache.truncate_from_end(Offset(keep as u64));
                    if leader == Some(r) {
                        leader = None;
                    }
                }
            }
            for rep in &reps {
                rep.cache.check_invariants();
                // The cache is the one derived from the log, plus at most an empty latest epoch
                // recorded by a leader before it wrote.
                let derived = cache_from_log(&rep.log);
                let n = derived.entries().len();
                prop_assert!(rep.cache.entries().len() <= n + 1);
                prop_assert_eq!(&rep.cache.entries()[..n], derived.entries());
                if let Some(extra) = rep.cache.entries().get(n) {
                    prop_assert_eq!(extra.start_offset, Offset(rep.log.len() as u64));
                }
            }
        }
        let l = match leader {
            Some(l) => l,
            None => {
                epoch += 1;
                let rep = &mut reps[final_leader];
                rep.cache.assign(epoch, Offset(rep.log.len() as u64)).unwrap();
                final_leader
            }
        };
        let f = (l + follower_pick) % 3;
        let (lrep, frep) = (reps[l].clone(), reps[f].clone());
        let trace = sync(&lrep.log, lrep.cache, 0, epoch, &frep.log, frep.cache, 0);
        let lcp = common_prefix(&lrep.log, &frep.log);
        prop_assert_eq!(trace.lowest, lcp, "trace: {:#?}", trace.lines);
        prop_assert_eq!(&trace.follower_log, &lrep.log);
    }
}
