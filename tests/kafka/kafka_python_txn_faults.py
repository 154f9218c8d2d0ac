"""kafka-python 3.x transactions under faults against `oncelog serve`.

Usage:
  kafka_python_txn_faults.py BOOTSTRAP killed TOPIC TID   a producer process SIGKILLed inside a
      transaction (its records sent and flushed); a new producer with the same transactional.id
      aborts it when it initialises; read_committed sees only the later committed records,
      read_uncommitted the doomed ones too.
  kafka_python_txn_faults.py BOOTSTRAP fenced TOPIC TID   a second producer with the same
      transactional.id fences the first: the first's commit fails, its records are never
      visible to read_committed, the second commits.
  (child-open is the doomed child's own mode.)

Prints OK or FAIL and exits 1.
"""
import os
import signal
import subprocess
import sys
import time

from kafka import KafkaProducer

from check import fail
from kafka_python_txn import read_all

PARTITIONS = 4


def producer(bootstrap, tid):
    p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=tid)
    p.init_transactions()
    return p


def check_once(values, expected, what):
    if sorted(values) != sorted(expected):
        extra = sorted(set(values) - set(expected))[:5]
        missing = sorted(set(expected) - set(values))[:5]
        fail(f"{what}: {len(values)} values, expected {len(expected)}; "
             f"unexpected {extra}, missing {missing}")


def commit_some(p, topic, tag):
    vals = [f"{tag}-{i}" for i in range(12)]
    p.begin_transaction()
    for i, v in enumerate(vals):
        p.send(topic, v.encode(), partition=i % PARTITIONS)
    p.commit_transaction()
    return vals


def child_open(bootstrap, topic, tid):
    p = producer(bootstrap, tid)
    p.begin_transaction()
    for i in range(20):
        p.send(topic, f"doomed-{i}".encode(), partition=i % PARTITIONS)
    p.flush()
    print("READY", flush=True)
    time.sleep(600)


def killed(bootstrap, topic, tid):
    child = subprocess.Popen(
        [sys.executable, __file__, bootstrap, "child-open", topic, tid],
        stdout=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    if "READY" not in line:
        fail(f"the child did not open its transaction: {line!r}")
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    doomed = [f"doomed-{i}" for i in range(20)]
    p = producer(bootstrap, tid)  # fences the dead instance and aborts its transaction
    vals = commit_some(p, topic, "after")
    p.close()
    check_once(read_all(bootstrap, topic, "read_committed", len(vals)), vals, "read_committed")
    check_once(read_all(bootstrap, topic, "read_uncommitted", len(vals) + len(doomed)),
               vals + doomed, "read_uncommitted")
    print("OK killed", flush=True)


def fenced(bootstrap, topic, tid):
    old = producer(bootstrap, tid)
    old.begin_transaction()
    for i in range(10):
        old.send(topic, f"zombie-{i}".encode(), partition=i % PARTITIONS)
    old.flush()
    new = producer(bootstrap, tid)
    try:
        old.commit_transaction()
        fail("the fenced producer committed")
    except Exception as e:  # kafka.errors.KafkaError subclasses
        how = type(e).__name__
        if not any(k in how for k in ("Fenced", "InvalidProducerEpoch")):
            fail(f"the fenced producer's commit failed, but not as fenced: {how}: {e}")
    vals = commit_some(new, topic, "new")
    new.close()
    check_once(read_all(bootstrap, topic, "read_committed", len(vals)), vals, "read_committed")
    print(f"OK fenced ({how})", flush=True)


def main():
    bootstrap, mode = sys.argv[1], sys.argv[2]
    modes = {"killed": killed, "fenced": fenced, "child-open": child_open}
    if mode not in modes:
        fail(f"unknown mode {mode}")
    modes[mode](bootstrap, *sys.argv[3:])


if __name__ == "__main__":
    main()
