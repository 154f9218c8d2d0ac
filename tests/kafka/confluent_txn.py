"""Kafka transactions with confluent-kafka (librdkafka 2.16) against `oncelog serve`.

Usage: confluent_txn.py BOOTSTRAP SCENARIO [ARGS...]

Scenarios (each prints "OK <scenario> ..." or "FAIL: reason" and exits 1):
  commit-abort TOPIC        transactions committed and aborted in turn; read_committed sees every
                            committed record once and no aborted one, read_uncommitted sees both
  rpw IN OUT GROUP N        read-process-write with send_offsets_to_transaction: every third
                            transaction aborted; OUT holds every input once (read_committed), and
                            GROUP's committed offsets move only with committed transactions
  killed TOPIC TID          a producer process SIGKILLed inside a transaction (its records sent):
                            a new producer with the same transactional.id aborts it on init
  timeout TOPIC TID         the same, but nobody re-initialises: the coordinator's transaction
                            timeout aborts it
  fenced TOPIC TID          a second producer with the same transactional.id fences the first:
                            the first one's commit fails, its records are never committed
  restart TOPIC TID         the server restarts (kill -9) while producer A is between
                            transactions and producer B has one open: A goes on with the same
                            producer object (its session survived), B's open transaction was
                            aborted (its commit fails; a new instance of B commits), and
                            read_committed sees A's and the new B's records once, B's aborted none.
                            Says RESTART and waits for a line on stdin while the server restarts.
  child-open TOPIC TID TIMEOUT_MS   (helper) opens a transaction, sends, flushes, says READY, waits
"""
import os
import signal
import subprocess
import sys
import time

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)

PARTITIONS = 4
DEADLINE_S = 90


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def producer(bootstrap, tid, timeout_ms=60000):
    p = Producer({
        "bootstrap.servers": bootstrap,
        "transactional.id": tid,
        "transaction.timeout.ms": timeout_ms,
        "linger.ms": 5,
    })
    p.init_transactions(60)
    return p


def read_all(bootstrap, topic, isolation, expect_at_least=0):
    """Every value of `topic` (all partitions, from the start) up to the end a consumer with
    `isolation` may read; waits until at least `expect_at_least` values were read."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"reader-{os.getpid()}-{time.time()}",
        "isolation.level": isolation,
        "enable.partition.eof": True,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    values = []
    eof = set()
    until = time.time() + DEADLINE_S
    while time.time() < until:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                eof.add(m.partition())
                if len(eof) == PARTITIONS and len(values) >= expect_at_least:
                    break
                continue
            fail(f"consumer error: {m.error()}")
        eof.discard(m.partition())
        values.append(m.value().decode())
    else:
        fail(f"{isolation} reader of {topic}: only {len(values)} values, EOF on {sorted(eof)}")
    c.close()
    return values


def check_once(values, expected, what):
    if len(values) != len(set(values)):
        dups = sorted({v for v in values if values.count(v) > 1})
        fail(f"{what}: duplicates {dups[:10]}")
    if set(values) != set(expected):
        missing = sorted(set(expected) - set(values))
        extra = sorted(set(values) - set(expected))
        fail(f"{what}: missing {missing[:10]}, unexpected {extra[:10]}")


def commit_abort(bootstrap, topic):
    p = producer(bootstrap, f"ca-{topic}")
    committed, aborted = [], []
    for t in range(8):
        p.begin_transaction()
        vals = [f"t{t}-r{i}" for i in range(25)]
        for i, v in enumerate(vals):
            p.produce(topic, v.encode(), partition=i % PARTITIONS)
        p.flush(30)  # abort_transaction purges what is unsent: send it all first
        if t % 2 == 0:
            p.commit_transaction(30)
            committed += vals
        else:
            p.abort_transaction(30)
            aborted += vals
    rc = read_all(bootstrap, topic, "read_committed", len(committed))
    check_once(rc, committed, "read_committed")
    ru = read_all(bootstrap, topic, "read_uncommitted", len(committed) + len(aborted))
    check_once(ru, committed + aborted, "read_uncommitted")
    print(f"OK commit-abort committed={len(committed)} aborted={len(aborted)}", flush=True)


def committed_offsets(consumer, topic):
    got = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
    return {tp.partition: tp.offset for tp in got}


def rpw(bootstrap, src, dst, group, n):
    n = int(n)
    plain = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(n):
        plain.produce(src, f"in-{i}".encode(), partition=i % PARTITIONS)
    if plain.flush(30) != 0:
        fail("input not delivered")
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
    })
    c.subscribe([src])
    p = producer(bootstrap, f"rpw-{group}")
    done = set()
    txn = 0
    commits = aborts = 0
    until = time.time() + DEADLINE_S
    while len(done) < n:
        if time.time() > until:
            fail(f"read-process-write stalled at {len(done)} of {n}")
        msgs = c.consume(num_messages=20, timeout=1.0)
        msgs = [m for m in msgs if m.error() is None]
        if not msgs:
            continue
        before = committed_offsets(c, src)
        p.begin_transaction()
        for m in msgs:
            p.produce(dst, ("out-" + m.value().decode()[3:]).encode(), partition=m.partition())
        positions = [tp for tp in c.position(c.assignment()) if tp.offset >= 0]
        p.send_offsets_to_transaction(positions, c.consumer_group_metadata(), 30)
        p.flush(30)
        txn += 1
        if txn % 3 == 0:
            p.abort_transaction(30)
            aborts += 1
            after = committed_offsets(c, src)
            if after != before:
                fail(f"an aborted transaction moved the committed offsets: {before} -> {after}")
            # Re-read what the aborted transaction consumed.
            for tp in c.assignment():
                off = before.get(tp.partition, -1001)
                c.seek(TopicPartition(src, tp.partition, off if off >= 0 else OFFSET_BEGINNING))
        else:
            p.commit_transaction(30)
            commits += 1
            after = committed_offsets(c, src)
            want = {tp.partition: tp.offset for tp in positions}
            for part, off in want.items():
                if after.get(part) != off:
                    fail(f"after commit, partition {part} committed {after.get(part)}, want {off}")
            for m in msgs:
                done.add(m.value().decode())
    c.close()
    out = read_all(bootstrap, dst, "read_committed", n)
    check_once(out, [f"out-{i}" for i in range(n)], "output (read_committed)")
    check = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    final = committed_offsets(check, src)
    check.close()
    if sum(final.values()) != n:
        fail(f"committed offsets {final} do not add up to the {n} inputs")
    print(f"OK rpw n={n} commits={commits} aborts={aborts}", flush=True)


def child_open(bootstrap, topic, tid, timeout_ms):
    p = producer(bootstrap, tid, int(timeout_ms))
    p.begin_transaction()
    for i in range(20):
        p.produce(topic, f"doomed-{i}".encode(), partition=i % PARTITIONS)
    if p.flush(30) != 0:
        fail("doomed records not delivered")
    print("READY", flush=True)
    time.sleep(600)


def start_doomed(bootstrap, topic, tid, timeout_ms):
    child = subprocess.Popen(
        [sys.executable, __file__, bootstrap, "child-open", topic, tid, str(timeout_ms)],
        stdout=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    if "READY" not in line:
        fail(f"the child did not open its transaction: {line!r}")
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    return [f"doomed-{i}" for i in range(20)]


def commit_some(p, topic, tag):
    vals = [f"{tag}-{i}" for i in range(12)]
    p.begin_transaction()
    for i, v in enumerate(vals):
        p.produce(topic, v.encode(), partition=i % PARTITIONS)
    p.commit_transaction(30)
    return vals


def killed(bootstrap, topic, tid):
    doomed = start_doomed(bootstrap, topic, tid, 60000)
    p = producer(bootstrap, tid)  # fences the dead instance and aborts its transaction
    vals = commit_some(p, topic, "after")
    check_once(read_all(bootstrap, topic, "read_committed", len(vals)), vals, "read_committed")
    check_once(read_all(bootstrap, topic, "read_uncommitted", len(vals) + len(doomed)),
               vals + doomed, "read_uncommitted")
    print("OK killed", flush=True)


def timeout(bootstrap, topic, tid):
    doomed = start_doomed(bootstrap, topic, tid, 3000)
    # Nobody re-initialises `tid`: only the coordinator's timeout can end that transaction.
    # Until it does, read_committed stops below the doomed records (the LSO).
    p = producer(bootstrap, tid + "-other")
    vals = commit_some(p, topic, "later")
    check_once(read_all(bootstrap, topic, "read_committed", len(vals)), vals, "read_committed")
    print("OK timeout", flush=True)


def fenced(bootstrap, topic, tid):
    old = producer(bootstrap, tid)
    old.begin_transaction()
    for i in range(10):
        old.produce(topic, f"zombie-{i}".encode(), partition=i % PARTITIONS)
    if old.flush(30) != 0:
        fail("zombie records not delivered")
    new = producer(bootstrap, tid)
    try:
        old.commit_transaction(30)
        fail("the fenced producer committed")
    except KafkaException as e:
        err = e.args[0]
        if not (err.fatal() or err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                              KafkaError.INVALID_PRODUCER_EPOCH)):
            fail(f"the fenced producer's commit failed, but not as fenced: {err}")
        how = err.name()
    vals = commit_some(new, topic, "new")
    check_once(read_all(bootstrap, topic, "read_committed", len(vals)), vals, "read_committed")
    print(f"OK fenced ({how})", flush=True)


def restart(bootstrap, topic, tid):
    a = producer(bootstrap, tid + "-a")
    before = commit_some(a, topic, "a-before")
    b = producer(bootstrap, tid + "-b")
    b.begin_transaction()
    doomed = [f"b-open-{i}" for i in range(10)]
    for i, v in enumerate(doomed):
        b.produce(topic, v.encode(), partition=i % PARTITIONS)
    if b.flush(30) != 0:
        fail("B's open transaction was not delivered")
    print("RESTART", flush=True)
    if sys.stdin.readline().strip() != "GO":
        fail("the test did not restart the server")
    # A was between transactions: its session is rebuilt, the same object goes on.
    after = commit_some(a, topic, "a-after")
    # B's transaction could not survive (its sequence bases were in memory): aborted at start.
    try:
        b.commit_transaction(30)
        fail("B's transaction, open across the restart, committed")
    except KafkaException as e:
        how = e.args[0].name()
    b2 = producer(bootstrap, tid + "-b")
    later = commit_some(b2, topic, "b-new")
    committed = before + after + later
    check_once(read_all(bootstrap, topic, "read_committed", len(committed)), committed,
               "read_committed")
    check_once(read_all(bootstrap, topic, "read_uncommitted", len(committed) + len(doomed)),
               committed + doomed, "read_uncommitted")
    print(f"OK restart (B's commit: {how})", flush=True)


def main():
    bootstrap, scenario, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    {
        "commit-abort": commit_abort,
        "rpw": rpw,
        "killed": killed,
        "timeout": timeout,
        "fenced": fenced,
        "restart": restart,
        "child-open": child_open,
    }[scenario](bootstrap, *args)


if __name__ == "__main__":
    main()
