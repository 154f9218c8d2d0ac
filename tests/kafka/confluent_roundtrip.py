"""confluent-kafka (librdkafka) round trip against `oncelog serve`.

Usage: confluent_roundtrip.py BOOTSTRAP TOPIC COMPRESSION N [--idempotent] [--batch=M]

Produces N keyed messages to partition 0 of TOPIC with the given compression.type (none, gzip,
snappy, lz4, zstd), checks every delivery report, then reads partition 0 from the beginning with
an assigned consumer and checks the N messages come back in order with their keys, values and
headers, at offsets 0..N, and that the partition's high-water mark is N (nothing stored twice).
Exits 1 with the reason on any mismatch.
"""
import sys

from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def main():
    bootstrap, topic, compression, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    idempotent = "--idempotent" in sys.argv[5:]
    batch = next((int(a.split("=")[1]) for a in sys.argv[5:] if a.startswith("--batch=")), 50)
    conf = {
        "bootstrap.servers": bootstrap,
        "compression.type": compression,
        "linger.ms": 5,
        "batch.num.messages": batch,
        "enable.idempotence": idempotent,
        "message.timeout.ms": 30000,
    }
    p = Producer(conf)
    errors, offsets = [], []

    def report(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            offsets.append(msg.offset())

    for i in range(n):
        value = (f"value-{i}-" + "x" * (i % 50)).encode()
        p.produce(topic, value=value, key=f"k{i}".encode(), partition=0,
                  headers=[("h", f"{i}".encode())], on_delivery=report)
        p.poll(0)
    left = p.flush(30)
    if left:
        fail(f"{left} messages not delivered within 30 s")
    if errors:
        fail(f"delivery errors: {errors[:5]}")
    if sorted(offsets) != list(range(n)):
        fail(f"delivered offsets are not 0..{n}: {sorted(offsets)[:10]}...")

    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "oncelog-test-unused",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got = []
    idle = 0
    while len(got) < n and idle < 50:
        m = c.poll(0.2)
        if m is None:
            idle += 1
            continue
        if m.error():
            fail(f"consumer error: {m.error()}")
        got.append(m)
    low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    c.close()
    if (low, high) != (0, n):
        fail(f"watermarks ({low}, {high}), expected (0, {n}): a message stored twice or lost")
    if len(got) != n:
        fail(f"consumed {len(got)} of {n}")
    for i, m in enumerate(got):
        want = (f"value-{i}-" + "x" * (i % 50)).encode()
        if m.offset() != i or m.key() != f"k{i}".encode() or m.value() != want:
            fail(f"message {i}: offset {m.offset()} key {m.key()} value {m.value()[:20]}")
        if m.headers() != [("h", f"{i}".encode())]:
            fail(f"message {i}: headers {m.headers()}")
    print(f"OK confluent-kafka {compression} idempotent={idempotent}: {n} produced and consumed")


main()
