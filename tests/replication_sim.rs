//! Seeded whole-partition simulations (src/simulation): three replicas, a controller, a lossy
//! network and idempotent acks=all producers, with process crashes, power loss, pauses
//! (zombie leaders), partitions, wiped disks and corrupted segments. Every run checks the
//! invariants listed in `src/simulation/checker.rs`.
//!
//! `ONCELOG_SIM_SEED=<n>` replays one seed; `ONCELOG_SIM_SEEDS=<n>` sets the sweep size.

use oncelog::simulation::{run, Faults, SimOptions, SimStats};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

fn sweep(name: &str, first_seed: u64, default_seeds: u64, make: impl Fn(u64) -> SimOptions) {
    if let Some(seed) = env_u64("ONCELOG_SIM_SEED") {
        if let Err(f) = run(&make(seed)) {
            panic!("{f}");
        }
        return;
    }
    let seeds = env_u64("ONCELOG_SIM_SEEDS").unwrap_or(default_seeds);
    let mut total = SimStats::default();
    for seed in first_seed..first_seed + seeds {
        match run(&make(seed)) {
            Ok(stats) => total.add(&stats),
            Err(f) => panic!("{name}: {f}"),
        }
    }
    println!("{name}: {seeds} seeds passed: {total:?}");
}

#[test]
fn healthy_cluster_replicates_everything() {
    sweep("healthy", 0, 20, |seed| SimOptions {
        faults: Faults::none(),
        fault_ms: 500,
        ..SimOptions::new(seed)
    });
}

#[test]
fn all_faults() {
    sweep("all faults", 1_000, 2_000, SimOptions::new);
}

/// KIP-279 / T21: leaders change several times within one fetch interval (frequent crashes and
/// pauses, many dropped messages), with `min.insync.replicas = 1` so the ISR can shrink to the
/// leader alone and acks=all still completes.
#[test]
fn rapid_leader_changes_min_isr_one() {
    sweep("rapid leader changes", 100_000, 500, |seed| SimOptions {
        min_insync_replicas: 1,
        faults: Faults {
            drop_per_mille: 60,
            process_crash_per_mille: 15,
            pause_per_mille: 8,
            ..Faults::all()
        },
        ..SimOptions::new(seed)
    });
}

/// Five replicas, three producers.
#[test]
fn five_replicas() {
    sweep("five replicas", 200_000, 200, |seed| SimOptions {
        replicas: 5,
        min_insync_replicas: 3,
        producers: 3,
        ..SimOptions::new(seed)
    });
}

/// Transactions under every fault: two transactional producers (transactions of three
/// batches, about one in four aborted) beside a plain idempotent one. Besides the usual
/// checks, a read_committed consumer at the leader's LSO never sees an aborted or undecided
/// record, and at the end every committed transaction is seen whole and in order.
#[test]
fn transactions_under_all_faults() {
    sweep("transactions", 300_000, 1_000, |seed| SimOptions {
        producers: 3,
        transactional_producers: 2,
        ..SimOptions::new(seed)
    });
}

/// A minority of transactional producers, min ISR 1 and rapid leader changes: markers are
/// truncated away with their leaders and written again by the retrying coordinator.
#[test]
fn transactions_with_rapid_leader_changes() {
    sweep("transactions, rapid leader changes", 400_000, 300, |seed| {
        SimOptions {
            min_insync_replicas: 1,
            producers: 2,
            transactional_producers: 1,
            batches_per_txn: 2,
            faults: Faults {
                drop_per_mille: 60,
                process_crash_per_mille: 15,
                pause_per_mille: 8,
                ..Faults::all()
            },
            ..SimOptions::new(seed)
        }
    });
}
