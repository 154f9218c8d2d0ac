//! A deterministic exactly-once simulation: transactional source producers and
//! read-process-write processors over one [`Broker`] on a [`SimStorage`], with broker crashes
//! (process kill and power loss, some in the middle of a commit), all driven by one seed; then
//! the history is checked by [`checker::check`] (no aborted read, no lost committed write, no
//! duplicate, no uncommitted read, no partial transaction, per-producer order, and offsets
//! committed exactly with their outputs).
//!
//! One step runs one action of one actor (begin, send, send offsets, commit, abort, poll, a
//! reader's read, a coordinator tick, a crash), so transactions of different producers
//! interleave in the logs. `run(&EosOptions { seed, .. })` replays a seed exactly.

pub mod checker;

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::broker::{
    Broker, BrokerConfig, Consumer, TopicPartition, TransactionalProducer, TxnError,
};
use crate::clock::Clock;
use crate::clock::ManualClock;
use crate::config::{LogConfig, SyncMode};
use crate::error::Result;
use crate::format::batch::BatchBuilder;
use crate::io::sim::{CrashMode, FaultKind, SimStorage};
use crate::log::Isolation;
use crate::simulation::SimRng;

use checker::{Anomalies, Counts, History, Outcome, Pipeline, TxnHistory};

/// What one run does.
#[derive(Debug, Clone)]
pub struct EosOptions {
    pub seed: u64,
    /// Actor steps before the run heals and drains.
    pub steps: u32,
    /// Transactional source producers writing the input partitions.
    pub sources: usize,
    /// Input partitions, each with its own processor and output partition.
    pub partitions: u32,
    /// Chance per step of a broker crash, per mille.
    pub crash_per_mille: u64,
}

impl EosOptions {
    pub fn new(seed: u64) -> EosOptions {
        EosOptions {
            seed,
            steps: 400,
            sources: 3,
            partitions: 2,
            crash_per_mille: 12,
        }
    }
}

/// What a run did and what the checker found.
#[derive(Debug, Clone)]
pub struct EosReport {
    pub seed: u64,
    pub counts: Counts,
    pub anomalies: Anomalies,
    pub process_crashes: u32,
    pub power_losses: u32,
    /// Crashes that hit a commit in the middle (an I/O error injected partway through it).
    pub crashes_in_commit: u32,
    pub timeouts: u32,
}

const GROUP: &str = "processors";
const TXN_TIMEOUT_MS: i64 = 5_000;

fn transform(v: &[u8]) -> Vec<u8> {
    v.to_ascii_uppercase()
}

/// An output value is `transform(input)@attempt`: unique per processing attempt.
fn output_of(v: &[u8]) -> Vec<u8> {
    let end = v.iter().rposition(|&b| b == b'@').unwrap_or(v.len());
    v.get(..end).unwrap_or(v).to_vec()
}

fn tp(topic: &'static str, p: u32) -> TopicPartition {
    TopicPartition::internal(topic, p)
}

#[derive(Debug)]
struct Source {
    id: String,
    next_value: u64,
    /// The writes of the transaction it has begun, if any.
    txn: Option<Vec<(String, Vec<u8>)>>,
    /// A stalled source does not step until then (its transaction may time out meanwhile).
    stalled_until_ms: i64,
}

#[derive(Debug)]
struct Processor {
    id: String,
    input: TopicPartition,
    output: TopicPartition,
}

/// The live clients; all dropped at a crash (they die with the process).
#[derive(Debug, Default)]
struct Sessions {
    producers: BTreeMap<String, TransactionalProducer<Arc<Broker>>>,
    consumers: BTreeMap<String, Consumer<Arc<Broker>>>,
}

impl Sessions {
    /// The producer of `id`, registered now if it has none. `None` when the coordinator asks
    /// for a retry.
    fn producer(
        &mut self,
        broker: &Arc<Broker>,
        id: &str,
    ) -> Result<Option<&mut TransactionalProducer<Arc<Broker>>>> {
        if !self.producers.contains_key(id) {
            match TransactionalProducer::new(broker.clone(), id, None) {
                Ok(p) => {
                    self.producers.insert(id.to_string(), p);
                }
                Err(TxnError::Retriable(_)) => return Ok(None),
                Err(e) => return Err(into_error(e)),
            }
        }
        Ok(self.producers.get_mut(id))
    }

    fn consumer(
        &mut self,
        broker: &Arc<Broker>,
        id: &str,
        group: &str,
        tp: &TopicPartition,
    ) -> Result<&mut Consumer<Arc<Broker>>> {
        Ok(match self.consumers.entry(id.to_string()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Consumer::new(
                broker.clone(),
                group,
                std::slice::from_ref(tp),
            )?),
        })
    }
}

fn into_error(e: TxnError) -> crate::Error {
    match e {
        TxnError::Retriable(e)
        | TxnError::Abortable(e)
        | TxnError::Fenced(e)
        | TxnError::Fatal(e) => e,
    }
}

/// What a step asks of the run.
#[derive(Debug, PartialEq, Eq)]
enum StepEnd {
    Fine,
    /// An injected I/O error hit a commit: the process dies now.
    CrashNow,
}

struct Run<'a> {
    opts: &'a EosOptions,
    rng: SimRng,
    storage: Arc<SimStorage>,
    clock: Arc<ManualClock>,
    config: BrokerConfig,
    dir: PathBuf,
    broker: Option<Arc<Broker>>,
    sessions: Sessions,
    sources: Vec<Source>,
    processors: Vec<Processor>,
    history: History,
    report: EosReport,
    /// Off while draining: the end of a run is fault-free so every transaction gets decided.
    faults: bool,
    /// Processing attempts so far (tags output values).
    attempts: u64,
}

/// Runs one seed.
pub fn run(opts: &EosOptions) -> Result<EosReport> {
    let storage = Arc::new(SimStorage::new(opts.seed));
    let clock = Arc::new(ManualClock::new(1_000_000));
    let log = LogConfig {
        sync: SyncMode::Os,
        background_thread: false,
        ..LogConfig::for_tests()
    }
    .with_segment_bytes(16 << 10)
    .with_storage(storage.clone())
    .with_clock(clock.clone());
    let config = BrokerConfig {
        log,
        internal_segment_bytes: 16 << 10,
        default_txn_timeout: Duration::from_millis(TXN_TIMEOUT_MS as u64),
    };
    let mut run = Run {
        opts,
        rng: SimRng::new(opts.seed),
        storage,
        clock,
        config,
        dir: PathBuf::from("/sim/broker"),
        broker: None,
        sessions: Sessions::default(),
        sources: (0..opts.sources)
            .map(|k| Source {
                id: format!("src{k}"),
                next_value: 0,
                txn: None,
                stalled_until_ms: 0,
            })
            .collect(),
        processors: (0..opts.partitions)
            .map(|p| Processor {
                id: format!("proc{p}"),
                input: tp("in", p),
                output: tp("out", p),
            })
            .collect(),
        history: History::default(),
        report: EosReport {
            seed: opts.seed,
            counts: Counts::default(),
            anomalies: Anomalies::default(),
            process_crashes: 0,
            power_losses: 0,
            crashes_in_commit: 0,
            timeouts: 0,
        },
        faults: true,
        attempts: 0,
    };
    run.execute()?;
    Ok(run.report)
}

impl Run<'_> {
    fn broker(&self) -> Result<Arc<Broker>> {
        self.broker
            .clone()
            .ok_or_else(|| crate::Error::InvalidConfig("the simulated broker is down".into()))
    }

    fn execute(&mut self) -> Result<()> {
        let broker = Broker::open(&self.dir, self.config.clone())?;
        broker.create_topic("in", self.opts.partitions)?;
        broker.create_topic("out", self.opts.partitions)?;
        self.broker = Some(Arc::new(broker));

        for _ in 0..self.opts.steps {
            self.clock.advance(self.rng.range(1, 200) as i64);
            if self.rng.below(1000) < self.opts.crash_per_mille {
                self.crash()?;
                continue;
            }
            let n_sources = self.sources.len();
            let n_processors = self.processors.len();
            let actor = self.rng.below((n_sources + n_processors + 2) as u64) as usize;
            let end = if actor < n_sources {
                self.source_step(actor)?
            } else if actor < n_sources + n_processors {
                self.processor_step(actor - n_sources)?.0
            } else if actor == n_sources + n_processors {
                self.report.timeouts += self.broker()?.tick()?.len() as u32;
                StepEnd::Fine
            } else {
                self.reader_step()?;
                StepEnd::Fine
            };
            if end == StepEnd::CrashNow {
                self.report.crashes_in_commit += 1;
                self.crash()?;
            }
        }
        self.drain()?;
        self.final_state()?;
        let pipelines: Vec<Pipeline> = self
            .processors
            .iter()
            .map(|p| Pipeline {
                input: p.input.to_string(),
                output: p.output.to_string(),
                group: GROUP.to_string(),
                transform,
                output_of,
            })
            .collect();
        let (counts, anomalies) = checker::check(&self.history, &pipelines);
        self.report.counts = counts;
        self.report.anomalies = anomalies;
        Ok(())
    }

    /// The broker process dies (kill or power loss) and restarts. Transactions whose commit
    /// was never asked for can never commit: they are recorded as aborted.
    fn crash(&mut self) -> Result<()> {
        for s in &mut self.sources {
            if let Some(writes) = s.txn.take() {
                self.history.txns.push(TxnHistory {
                    producer: s.id.clone(),
                    writes,
                    outcome: Outcome::Aborted,
                });
            }
        }
        self.sessions = Sessions::default();
        self.storage.clear_fault();
        if let Some(broker) = self.broker.take() {
            match Arc::try_unwrap(broker) {
                Ok(b) => b.simulate_crash(),
                Err(_) => {
                    return Err(crate::Error::InvalidConfig(
                        "a client outlived its session at a crash".into(),
                    ))
                }
            }
        }
        let mode = if self.rng.chance(500) {
            self.report.power_losses += 1;
            CrashMode::PowerLoss
        } else {
            self.report.process_crashes += 1;
            CrashMode::Process
        };
        self.storage.crash(mode);
        self.broker = Some(Arc::new(Broker::open(&self.dir, self.config.clone())?));
        Ok(())
    }

    /// Arms an I/O error `ops` storage operations ahead, for a commit that then dies midway.
    fn arm_fault(&mut self) -> bool {
        if self.faults && self.rng.chance(40) {
            self.storage
                .fail_after(self.rng.below(30), FaultKind::Eio, true);
            true
        } else {
            false
        }
    }

    fn source_step(&mut self, k: usize) -> Result<StepEnd> {
        let now = self.clock.now_ms();
        let broker = self.broker()?;
        let Some(s) = self.sources.get_mut(k) else {
            return Ok(StepEnd::Fine);
        };
        if s.stalled_until_ms > now {
            return Ok(StepEnd::Fine);
        }
        if s.txn.is_some() && self.rng.chance(15) {
            s.stalled_until_ms = now + TXN_TIMEOUT_MS + 1_000;
            return Ok(StepEnd::Fine);
        }
        let id = s.id.clone();
        let Some(producer) = self.sessions.producer(&broker, &id)? else {
            return Ok(StepEnd::Fine);
        };
        let Some(s) = self.sources.get_mut(k) else {
            return Ok(StepEnd::Fine);
        };
        let Some(writes) = s.txn.as_mut() else {
            producer.begin().map_err(into_error)?;
            s.txn = Some(Vec::new());
            return Ok(StepEnd::Fine);
        };
        if writes.is_empty() || self.rng.chance(600) {
            let p = self.rng.below(u64::from(self.opts.partitions)) as u32;
            let part = tp("in", p);
            let mut b = BatchBuilder::new();
            let mut values = Vec::new();
            for _ in 0..self.rng.range(1, 3) {
                let v = format!("s{k}-{}", s.next_value).into_bytes();
                s.next_value += 1;
                b.push(now, None, Some(&v));
                values.push((part.to_string(), v));
            }
            match producer.send(&part, b) {
                Ok(_) => writes.extend(values),
                Err(TxnError::Retriable(_)) => {}
                Err(TxnError::Fatal(e)) => return Err(e),
                Err(_) => {
                    // Fenced (the coordinator timed it out) or abortable: never commits.
                    let _ = producer.abort();
                    self.end_source(k, Outcome::Aborted);
                }
            }
            return Ok(StepEnd::Fine);
        }
        let commit = self.rng.chance(850);
        let faulted = commit && self.arm_fault();
        let Some(producer) = self.sessions.producers.get_mut(&id) else {
            return Ok(StepEnd::Fine);
        };
        let result = if commit {
            producer.commit()
        } else {
            producer.abort()
        };
        self.storage.clear_fault();
        match result {
            Ok(()) if commit => self.end_source(k, Outcome::Committed),
            Ok(()) => self.end_source(k, Outcome::Aborted),
            Err(_) if faulted => {
                self.end_source(k, Outcome::Unknown);
                return Ok(StepEnd::CrashNow);
            }
            Err(TxnError::Retriable(_)) => {}
            Err(TxnError::Fatal(e)) => return Err(e),
            Err(_) => {
                let _ = producer.abort();
                self.end_source(k, Outcome::Aborted);
            }
        }
        Ok(if faulted {
            StepEnd::CrashNow
        } else {
            StepEnd::Fine
        })
    }

    fn end_source(&mut self, k: usize, outcome: Outcome) {
        if let Some(s) = self.sources.get_mut(k) {
            if let Some(writes) = s.txn.take() {
                self.history.txns.push(TxnHistory {
                    producer: s.id.clone(),
                    writes,
                    outcome,
                });
            }
            if outcome != Outcome::Committed {
                // A fenced or failed instance is replaced by a new one at its next step.
                self.sessions.producers.remove(&s.id);
            }
        }
    }

    /// One read-process-write transaction of processor `i`; true when it consumed something.
    fn processor_step(&mut self, i: usize) -> Result<(StepEnd, bool)> {
        let broker = self.broker()?;
        let Some(p) = self.processors.get(i) else {
            return Ok((StepEnd::Fine, false));
        };
        let (id, input, output) = (p.id.clone(), p.input.clone(), p.output.clone());
        if self.sessions.producer(&broker, &id)?.is_none() {
            return Ok((StepEnd::Fine, false));
        }
        let max = 64 * self.rng.range(1, 8) as usize;
        let consumer = self.sessions.consumer(&broker, &id, GROUP, &input)?;
        let records = consumer.poll(max)?;
        let positions = consumer.positions();
        if records.is_empty() {
            return Ok((StepEnd::Fine, false));
        }
        for r in &records {
            self.history.reads.push((
                input.to_string(),
                r.offset,
                r.value.clone().unwrap_or_default(),
            ));
        }
        let mut b = BatchBuilder::new();
        let mut writes = Vec::new();
        self.attempts += 1;
        for r in &records {
            let mut v = transform(r.value.as_deref().unwrap_or_default());
            v.extend_from_slice(format!("@{}", self.attempts).as_bytes());
            b.push(r.timestamp, None, Some(&v));
            writes.push((output.to_string(), v));
        }
        let commit = self.rng.chance(900);
        let faulted = commit && self.arm_fault();
        let Some(producer) = self.sessions.producers.get_mut(&id) else {
            return Ok((StepEnd::Fine, false));
        };
        let result = producer
            .begin()
            .and_then(|()| producer.send(&output, b))
            .and_then(|_| producer.send_offsets(GROUP, &positions))
            .and_then(|_| {
                if commit {
                    producer.commit()
                } else {
                    producer.abort()
                }
            });
        self.storage.clear_fault();
        let outcome = match result {
            Ok(()) if commit => Outcome::Committed,
            Ok(()) => Outcome::Aborted,
            Err(_) if faulted => Outcome::Unknown,
            Err(TxnError::Fatal(e)) => return Err(e),
            Err(_) => {
                if producer.in_transaction() && producer.abort().is_err() {
                    self.sessions.producers.remove(&id);
                }
                Outcome::Aborted
            }
        };
        self.history.txns.push(TxnHistory {
            producer: id.clone(),
            writes,
            outcome,
        });
        if outcome != Outcome::Committed {
            // Start over from what the group committed.
            self.sessions.consumers.remove(&id);
        }
        if faulted {
            return Ok((StepEnd::CrashNow, true));
        }
        Ok((StepEnd::Fine, true))
    }

    /// A read_committed reader of a random partition records what it sees.
    fn reader_step(&mut self) -> Result<()> {
        let broker = self.broker()?;
        let topic = if self.rng.chance(500) { "in" } else { "out" };
        let part = tp(
            topic,
            self.rng.below(u64::from(self.opts.partitions)) as u32,
        );
        let id = format!("reader-{part}");
        let consumer = self.sessions.consumer(&broker, &id, &id, &part)?;
        for r in consumer.poll(256)? {
            self.history
                .reads
                .push((part.to_string(), r.offset, r.value.unwrap_or_default()));
        }
        Ok(())
    }

    /// Ends every open source transaction and lets the processors consume all input.
    fn drain(&mut self) -> Result<()> {
        self.faults = false;
        for k in 0..self.sources.len() {
            if let Some(s) = self.sources.get_mut(k) {
                s.stalled_until_ms = 0;
            }
            if self.sources.get(k).is_some_and(|s| s.txn.is_some()) {
                let commit = self.rng.chance(700);
                let broker = self.broker()?;
                let id = self
                    .sources
                    .get(k)
                    .map(|s| s.id.clone())
                    .unwrap_or_default();
                let result = match self.sessions.producer(&broker, &id)? {
                    Some(p) if commit => p.commit(),
                    Some(p) => p.abort(),
                    None => Ok(()),
                };
                let outcome = match result {
                    Ok(()) if commit => Outcome::Committed,
                    Ok(()) => Outcome::Aborted,
                    Err(_) => Outcome::Unknown,
                };
                self.end_source(k, outcome);
            }
        }
        // Transactions a crash orphaned (their producer never came back) end by timeout, as
        // they would in a real deployment; until then they hold every partition's LSO.
        self.clock.advance(TXN_TIMEOUT_MS + 1);
        self.broker()?.tick()?;
        for _ in 0..100_000 {
            let mut progressed = false;
            for i in 0..self.processors.len() {
                let (_, p) = self.processor_step(i)?;
                progressed |= p;
            }
            if !progressed {
                return Ok(());
            }
        }
        Err(crate::Error::InvalidConfig(
            "the processors did not drain the input".into(),
        ))
    }

    /// Reads what survives one more crash: the final contents and committed offsets.
    fn final_state(&mut self) -> Result<()> {
        self.crash()?;
        let broker = self.broker()?;
        for topic in ["in", "out"] {
            for p in 0..self.opts.partitions {
                let part = tp(topic, p);
                let log = broker.partition(&part)?;
                if log.last_stable_offset() < log.log_end_offset() {
                    self.history.hanging.push(format!(
                        "{part}: last stable offset {} below the log end {} after every \
                         transaction was ended",
                        log.last_stable_offset().0,
                        log.log_end_offset().0
                    ));
                }
                let mut at = log.log_start_offset();
                let mut all = Vec::new();
                loop {
                    let f = log.read_with(at, 1 << 20, Isolation::ReadCommitted)?;
                    let Some(end) = f.fetch.end_offset() else {
                        break;
                    };
                    for r in f.committed_records() {
                        let r = r?;
                        all.push((r.offset, r.record.value.unwrap_or_default().to_vec()));
                    }
                    at = crate::types::Offset(end);
                }
                self.history.final_contents.insert(part.to_string(), all);
            }
        }
        for p in &self.processors {
            if let Some(o) = broker.offsets().fetch_committed(GROUP, &p.input)? {
                self.history
                    .committed_offsets
                    .insert((GROUP.to_string(), p.input.to_string()), o.0);
            }
        }
        self.sessions = Sessions::default();
        drop(broker);
        if let Some(b) = self.broker.take() {
            if let Ok(b) = Arc::try_unwrap(b) {
                b.close()?;
            }
        }
        Ok(())
    }
}
