//! The exactly-once simulation sweep: transactional sources and read-process-write processors
//! over one broker on a simulated disk, with process kills, power loss and commits cut by I/O
//! errors; every run's history must show no anomaly (docs/transactions.md, "Proof").
//!
//! `ONCELOG_EOS_SEEDS=n` runs n seeds instead of the default; `ONCELOG_EOS_SEED=s` replays one.

use oncelog::simulation::exactly_once::{run, EosOptions};

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("ONCELOG_EOS_SEED") {
        return vec![s.parse().expect("ONCELOG_EOS_SEED is a number")];
    }
    let n = std::env::var("ONCELOG_EOS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000u64);
    (1..=n).collect()
}

#[test]
fn no_anomaly_in_any_seed() {
    let mut totals = [0u64; 9];
    let mut failures = Vec::new();
    for seed in seeds() {
        let report = match run(&EosOptions::new(seed)) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("seed {seed}: the run failed: {e}"));
                continue;
            }
        };
        let c = report.counts;
        for (t, v) in totals.iter_mut().zip([
            1,
            c.committed_txns,
            c.aborted_txns,
            c.unknown_txns,
            c.reads,
            u64::from(report.process_crashes),
            u64::from(report.power_losses),
            u64::from(report.crashes_in_commit),
            report.anomalies.total(),
        ]) {
            *t += v;
        }
        if report.anomalies.total() != 0 {
            failures.push(format!(
                "seed {seed}: {:?} (replay: ONCELOG_EOS_SEED={seed} cargo test --release --test exactly_once_sim)",
                report.anomalies
            ));
        }
    }
    println!(
        "exactly-once simulation: {} seeds, transactions {} committed / {} aborted / {} unknown, \
         {} read_committed reads checked, {} process kills, {} power losses, {} commits cut by \
         an I/O error; anomalies: {}",
        totals[0],
        totals[1],
        totals[2],
        totals[3],
        totals[4],
        totals[5],
        totals[6],
        totals[7],
        totals[8]
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The sweep must exercise what it claims to.
    assert!(
        totals[1] > 0 && totals[2] > 0 && totals[5] + totals[6] > 0,
        "{totals:?}"
    );
}
