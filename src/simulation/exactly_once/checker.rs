//! The exactly-once checker: a pure function from what a run did (its history) and what the
//! logs hold at the end to the anomalies it shows, in the style of Jepsen's Kafka workload.
//!
//! A history holds every transaction a producer attempted (the values it wrote where, the
//! offsets it sent, and how it ended as far as the producer knows), every read_committed read
//! during the run, and the final read_committed contents of every partition and the committed
//! offsets of every group. The anomalies:
//!
//! - **aborted read**: a read_committed read (during the run or at the end) returned a value of
//!   a transaction whose abort was acknowledged;
//! - **lost write**: a value of a transaction whose commit was acknowledged is missing at the end;
//! - **duplicate**: a value appears more than once at the end (or twice in one run's reads of a
//!   partition at different offsets);
//! - **uncommitted read**: a read during the run returned a value the end does not hold (it was
//!   read before being decided, and the transaction then aborted or vanished);
//! - **partial transaction**: some of a transaction's values are visible at the end, others not
//!   (a transaction whose outcome the producer never learned must still be all or nothing);
//! - **order**: within a partition, one producer's values are not in the order it wrote them;
//! - **offsets vs outputs**: for a read-process-write pipeline, the output partition does not
//!   hold exactly the transform of the input records below the group's committed offset, in
//!   order (offsets committed without their outputs, or outputs without their offsets);
//! - **hanging transaction**: a partition whose last stable offset stays below its end after
//!   every transaction was ended or timed out.

use std::collections::{BTreeMap, HashMap, HashSet};

/// How a transaction ended, as the producer that ran it knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    Aborted,
    /// The producer crashed (or the broker did) before it learned the outcome.
    Unknown,
}

/// One attempted transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnHistory {
    /// The transactional id that ran it.
    pub producer: String,
    /// (partition, value) in the order written.
    pub writes: Vec<(String, Vec<u8>)>,
    pub outcome: Outcome,
}

/// A read-process-write pipeline: it reads `input` as `group`, writes one output value per
/// input record to `output`, and commits its input offsets in the same transaction. Output
/// values are unique per attempt (so an aborted attempt's value is told apart from the
/// committed retry's); `output_of` maps an output value back to `transform(input value)`.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub input: String,
    pub output: String,
    pub group: String,
    pub transform: fn(&[u8]) -> Vec<u8>,
    pub output_of: fn(&[u8]) -> Vec<u8>,
}

/// What a run did and what its logs hold at the end.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub txns: Vec<TxnHistory>,
    /// Every read_committed read during the run: (partition, offset, value).
    pub reads: Vec<(String, u64, Vec<u8>)>,
    /// The final read_committed contents of every partition: offset -> value, ascending.
    pub final_contents: BTreeMap<String, Vec<(u64, Vec<u8>)>>,
    /// The final committed offsets: (group, partition) -> next offset.
    pub committed_offsets: BTreeMap<(String, String), u64>,
    /// Partitions whose last stable offset stays below their end once every transaction was
    /// ended or timed out (a transaction nobody can end: readers would wait forever).
    pub hanging: Vec<String>,
}

/// Anomaly counts (all must be 0) and the first few examples.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Anomalies {
    pub aborted_reads: u64,
    pub lost_writes: u64,
    pub duplicates: u64,
    pub uncommitted_reads: u64,
    pub partial_txns: u64,
    pub order: u64,
    pub offsets_vs_outputs: u64,
    pub hanging_txns: u64,
    pub examples: Vec<String>,
}

impl Anomalies {
    pub fn total(&self) -> u64 {
        self.aborted_reads
            + self.lost_writes
            + self.duplicates
            + self.uncommitted_reads
            + self.partial_txns
            + self.order
            + self.offsets_vs_outputs
            + self.hanging_txns
    }

    fn note(&mut self, example: String) {
        if self.examples.len() < 8 {
            self.examples.push(example);
        }
    }
}

/// What the checker counted besides anomalies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub committed_txns: u64,
    pub aborted_txns: u64,
    pub unknown_txns: u64,
    pub reads: u64,
    pub final_records: u64,
}

/// Checks `h`; `pipelines` name the read-process-write pipelines the run had.
pub fn check(h: &History, pipelines: &[Pipeline]) -> (Counts, Anomalies) {
    let mut a = Anomalies::default();
    let mut counts = Counts {
        reads: h.reads.len() as u64,
        ..Counts::default()
    };

    // Where each value ended up, once or more.
    let mut present: HashMap<(&str, &[u8]), Vec<u64>> = HashMap::new();
    for (p, records) in &h.final_contents {
        counts.final_records += records.len() as u64;
        for (o, v) in records {
            present
                .entry((p.as_str(), v.as_slice()))
                .or_default()
                .push(*o);
        }
    }
    for ((p, v), offsets) in &present {
        if offsets.len() > 1 {
            a.duplicates += offsets.len() as u64 - 1;
            a.note(format!("duplicate: {} in {p} at {offsets:?}", show(v)));
        }
    }

    let mut aborted: HashSet<(&str, &[u8])> = HashSet::new();
    for t in &h.txns {
        let visible = t
            .writes
            .iter()
            .filter(|(p, v)| present.contains_key(&(p.as_str(), v.as_slice())))
            .count();
        match t.outcome {
            Outcome::Committed => {
                counts.committed_txns += 1;
                for (p, v) in &t.writes {
                    if !present.contains_key(&(p.as_str(), v.as_slice())) {
                        a.lost_writes += 1;
                        a.note(format!(
                            "lost write: {} of a committed transaction of {} missing from {p}",
                            show(v),
                            t.producer
                        ));
                    }
                }
            }
            Outcome::Aborted => {
                counts.aborted_txns += 1;
                for (p, v) in &t.writes {
                    aborted.insert((p.as_str(), v.as_slice()));
                    if present.contains_key(&(p.as_str(), v.as_slice())) {
                        a.aborted_reads += 1;
                        a.note(format!(
                            "aborted read: {} of an aborted transaction of {} visible in {p}",
                            show(v),
                            t.producer
                        ));
                    }
                }
            }
            Outcome::Unknown => {
                counts.unknown_txns += 1;
                if visible != 0 && visible != t.writes.len() {
                    a.partial_txns += 1;
                    a.note(format!(
                        "partial transaction of {}: {visible} of {} values visible",
                        t.producer,
                        t.writes.len()
                    ));
                }
            }
        }
    }

    for hang in &h.hanging {
        a.hanging_txns += 1;
        a.note(format!("hanging transaction: {hang}"));
    }

    // Reads during the run.
    let mut read_at: HashMap<(&str, &[u8]), u64> = HashMap::new();
    for (p, o, v) in &h.reads {
        let key = (p.as_str(), v.as_slice());
        if aborted.contains(&key) {
            a.aborted_reads += 1;
            a.note(format!(
                "aborted read during the run: {} in {p} at {o}",
                show(v)
            ));
        } else if !present.contains_key(&key) {
            a.uncommitted_reads += 1;
            a.note(format!(
                "uncommitted read: {} in {p} at {o}, not in the final log",
                show(v)
            ));
        }
        if let Some(prev) = read_at.insert(key, *o) {
            if prev != *o {
                a.duplicates += 1;
                a.note(format!(
                    "read twice at different offsets: {} in {p} at {prev} and {o}",
                    show(v)
                ));
            }
        }
    }

    // Per-producer order within each partition: the order of the producer's writes.
    let mut written_order: HashMap<(&str, &[u8]), (&str, usize)> = HashMap::new();
    let mut n_by_producer: HashMap<&str, usize> = HashMap::new();
    for t in &h.txns {
        for (p, v) in &t.writes {
            let n = n_by_producer.entry(t.producer.as_str()).or_default();
            written_order.insert((p.as_str(), v.as_slice()), (t.producer.as_str(), *n));
            *n += 1;
        }
    }
    for (p, records) in &h.final_contents {
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (o, v) in records {
            if let Some(&(producer, n)) = written_order.get(&(p.as_str(), v.as_slice())) {
                if let Some(&prev) = last.get(producer) {
                    if n < prev {
                        a.order += 1;
                        a.note(format!(
                            "order: {} of {producer} at {o} in {p} after a later write",
                            show(v)
                        ));
                    }
                }
                last.insert(producer, n);
            }
        }
    }

    // Offsets committed <=> outputs committed.
    for pl in pipelines {
        let input = h
            .final_contents
            .get(&pl.input)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let output = h
            .final_contents
            .get(&pl.output)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let committed = h
            .committed_offsets
            .get(&(pl.group.clone(), pl.input.clone()))
            .copied()
            .unwrap_or(0);
        let expected: Vec<Vec<u8>> = input
            .iter()
            .filter(|(o, _)| *o < committed)
            .map(|(_, v)| (pl.transform)(v))
            .collect();
        let actual: Vec<Vec<u8>> = output.iter().map(|(_, v)| (pl.output_of)(v)).collect();
        let same = expected == actual;
        if !same {
            a.offsets_vs_outputs += 1;
            let first_diff = expected
                .iter()
                .zip(&actual)
                .position(|(e, x)| e != x)
                .unwrap_or(expected.len().min(actual.len()));
            a.note(format!(
                "offsets vs outputs: {} committed {committed} on {} ({} outputs expected), {} holds \
                 {}; first difference at output {first_diff}",
                pl.group,
                pl.input,
                expected.len(),
                pl.output,
                actual.len()
            ));
        }
    }
    (counts, a)
}

fn show(v: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(producer: &str, writes: &[(&str, &str)], outcome: Outcome) -> TxnHistory {
        TxnHistory {
            producer: producer.into(),
            writes: writes
                .iter()
                .map(|(p, v)| (p.to_string(), v.as_bytes().to_vec()))
                .collect(),
            outcome,
        }
    }

    fn contents(p: &str, values: &[&str]) -> (String, Vec<(u64, Vec<u8>)>) {
        (
            p.to_string(),
            values
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u64, v.as_bytes().to_vec()))
                .collect(),
        )
    }

    fn upper(v: &[u8]) -> Vec<u8> {
        v.to_ascii_uppercase()
    }

    fn pipeline() -> Pipeline {
        Pipeline {
            input: "in-0".into(),
            output: "out-0".into(),
            group: "g".into(),
            transform: upper,
            output_of: |v| v.to_vec(),
        }
    }

    fn clean() -> History {
        History {
            txns: vec![
                txn("a", &[("in-0", "a1"), ("in-0", "a2")], Outcome::Committed),
                txn("a", &[("in-0", "a3")], Outcome::Aborted),
                txn("a", &[("in-0", "a4")], Outcome::Unknown),
                txn("p", &[("out-0", "A1")], Outcome::Committed),
            ],
            reads: vec![("in-0".into(), 0, b"a1".to_vec())],
            final_contents: [contents("in-0", &["a1", "a2"]), contents("out-0", &["A1"])]
                .into_iter()
                .collect(),
            committed_offsets: [(("g".to_string(), "in-0".to_string()), 1)]
                .into_iter()
                .collect(),
            hanging: Vec::new(),
        }
    }

    #[test]
    fn a_clean_history_has_no_anomaly() {
        let (counts, a) = check(&clean(), &[pipeline()]);
        assert_eq!(a, Anomalies::default(), "{:?}", a.examples);
        assert_eq!(
            (
                counts.committed_txns,
                counts.aborted_txns,
                counts.unknown_txns
            ),
            (2, 1, 1)
        );
    }

    #[test]
    fn each_anomaly_is_found() {
        let mut h = clean();
        h.final_contents.insert(
            "in-0".into(),
            vec![(0, b"a1".to_vec()), (1, b"a3".to_vec())],
        );
        let (_, a) = check(&h, &[]);
        assert_eq!((a.lost_writes, a.aborted_reads), (1, 1), "{:?}", a.examples);

        let mut h = clean();
        h.final_contents.insert(
            "in-0".into(),
            vec![
                (0, b"a1".to_vec()),
                (1, b"a2".to_vec()),
                (2, b"a1".to_vec()),
            ],
        );
        assert_eq!(check(&h, &[]).1.duplicates, 1);

        let mut h = clean();
        h.reads.push(("in-0".into(), 5, b"a4".to_vec()));
        assert_eq!(check(&h, &[]).1.uncommitted_reads, 1);
        h.reads.push(("in-0".into(), 6, b"a3".to_vec()));
        assert_eq!(check(&h, &[]).1.aborted_reads, 1);

        let mut h = clean();
        h.txns.push(txn(
            "b",
            &[("in-0", "b1"), ("out-0", "b2")],
            Outcome::Unknown,
        ));
        h.final_contents
            .get_mut("in-0")
            .unwrap()
            .push((2, b"b1".to_vec()));
        assert_eq!(check(&h, &[]).1.partial_txns, 1);

        let mut h = clean();
        h.final_contents.insert(
            "in-0".into(),
            vec![(0, b"a2".to_vec()), (1, b"a1".to_vec())],
        );
        assert_eq!(check(&h, &[]).1.order, 1);

        // Offsets committed past the outputs, and outputs without their offsets.
        let mut h = clean();
        h.committed_offsets.insert(("g".into(), "in-0".into()), 2);
        assert_eq!(check(&h, &[pipeline()]).1.offsets_vs_outputs, 1);
        let mut h = clean();
        h.committed_offsets.insert(("g".into(), "in-0".into()), 0);
        assert_eq!(check(&h, &[pipeline()]).1.offsets_vs_outputs, 1);

        let mut h = clean();
        h.hanging.push("in-0: stuck".into());
        assert_eq!(check(&h, &[]).1.hanging_txns, 1);
    }
}
