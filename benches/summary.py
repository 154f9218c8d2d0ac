#!/usr/bin/env python3
"""Prints the medians of the last `cargo bench` run as markdown tables, one per criterion group,
with every variant's ratio to the group's baselines (docs/benchmarks.md).

    python3 benches/summary.py [TARGET_DIR]     # default: $CARGO_TARGET_DIR or ./target

Ratios are throughput ratios (baseline time / variant time): above 1 means faster than the
baseline. Every variant of a group appended or read the same bytes in the same run.
"""
import json
import os
import sys

BASELINES = [
    "memcpy_resident_map",
    "memcpy_fresh_map",
    "write_per_batch",
    "write_built_per_batch",
    "write_fdatasync_per_batch",
    "memcpy_map_read",
    "memcpy_batch_from_map",
    "commitlog_append",
    "commitlog_read",
    "commitlog_read_compare",
    "read2_bytes",
    "commitlog_read_by_offset",
    "log_append",
]


def human_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def human_rate(tp, ns):
    if not tp:
        return ""
    kind, n = next(iter(tp.items()))
    per_s = n / (ns / 1e9)
    if kind == "Bytes":
        return f"{per_s / 2**30:.2f} GiB/s" if per_s >= 2**30 else f"{per_s / 2**20:.0f} MiB/s"
    return f"{per_s / 1e6:.2f} M/s" if per_s >= 1e6 else f"{per_s / 1e3:.1f} k/s"


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CARGO_TARGET_DIR", "target")
    root = os.path.join(root, "criterion")
    groups = {}
    for dirpath, _, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        name = bench["full_id"][len(bench["group_id"]) + 1:]
        groups.setdefault(bench["group_id"], []).append(
            (name, est["median"]["point_estimate"], bench.get("throughput"))
        )
    for group in sorted(groups):
        rows = sorted(groups[group])
        times = dict((n, t) for n, t, _ in rows)
        bases = [b for b in BASELINES if b in times]
        print(f"\n#### `{group}`\n")
        head = "| variant | median | throughput |" + "".join(f" vs {b} |" for b in bases)
        print(head)
        print("|" + "---|" * (3 + len(bases)))
        for name, ns, tp in rows:
            ratios = "".join(f" {times[b] / ns:.2f} |" for b in bases)
            print(f"| {name} | {human_time(ns)} | {human_rate(tp, ns)} |{ratios}")


if __name__ == "__main__":
    main()
