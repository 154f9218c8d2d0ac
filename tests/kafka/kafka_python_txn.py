"""kafka-python 3.x transactions against `oncelog serve` (AddPartitionsToTxn, AddOffsetsToTxn,
TxnOffsetCommit and EndTxn at v3, the flexible encodings).

Usage: kafka_python_txn.py BOOTSTRAP TOPIC

Six transactions of 10 records over 4 partitions, committed and aborted in turn, the committed
ones with offsets of a group (send_offsets_to_transaction); then a read_committed consumer must
see each committed record once and no aborted one, read_uncommitted all of them, and the group's
committed offset the one of the last committed transaction. Prints OK or FAIL and exits 1.
"""
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

PARTITIONS = 4


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def read_all(bootstrap, topic, isolation, want):
    c = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation,
                      enable_auto_commit=False, consumer_timeout_ms=2000)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    c.assign(tps)
    c.seek_to_beginning()
    values = []
    until = time.time() + 90
    while len(values) < want and time.time() < until:
        for batch in c.poll(timeout_ms=500).values():
            values += [m.value.decode() for m in batch]
    # Anything beyond `want` would show up now.
    for batch in c.poll(timeout_ms=1000).values():
        values += [m.value.decode() for m in batch]
    c.close()
    return values


def main():
    bootstrap, topic = sys.argv[1], sys.argv[2]
    p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"kp-{topic}")
    p.init_transactions()
    committed, aborted = [], []
    for t in range(6):
        p.begin_transaction()
        vals = [f"t{t}-r{i}" for i in range(10)]
        for i, v in enumerate(vals):
            p.send(topic, v.encode(), partition=i % PARTITIONS)
        p.flush()
        p.send_offsets_to_transaction({TopicPartition(topic, 0): OffsetAndMetadata(t + 1, "", -1)},
                                      "kp-group")
        if t % 2 == 0:
            p.commit_transaction()
            committed += vals
        else:
            p.abort_transaction()
            aborted += vals
    p.close()
    rc = read_all(bootstrap, topic, "read_committed", len(committed))
    if sorted(rc) != sorted(committed):
        fail(f"read_committed saw {len(rc)} values: {sorted(set(rc) ^ set(committed))[:10]}")
    ru = read_all(bootstrap, topic, "read_uncommitted", len(committed) + len(aborted))
    if sorted(ru) != sorted(committed + aborted):
        fail(f"read_uncommitted saw {len(ru)} values")
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id="kp-group", enable_auto_commit=False)
    got = c.committed(TopicPartition(topic, 0))
    c.close()
    if got != 5:
        fail(f"group offset {got}, want 5 (the last committed transaction's)")
    print(f"OK kafka-python txn committed={len(committed)} aborted={len(aborted)}", flush=True)


if __name__ == "__main__":
    main()
