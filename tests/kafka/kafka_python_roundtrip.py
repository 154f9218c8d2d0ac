"""kafka-python round trip against `oncelog serve`.

Usage: kafka_python_roundtrip.py BOOTSTRAP TOPIC COMPRESSION N

Produces N keyed messages to partition 0 of TOPIC (kafka-python's producer is idempotent by
default; COMPRESSION is none, gzip or lz4, the codecs installed here), checks every send, then
reads partition 0 from the beginning with an assigned consumer (no group) and checks the N
messages come back in order at offsets 0..N and that the end offset is N. Exits 1 on a mismatch.
"""
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def main():
    bootstrap, topic, compression, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    p = KafkaProducer(
        bootstrap_servers=bootstrap,
        compression_type=None if compression == "none" else compression,
        linger_ms=5,
        acks="all",
    )
    futures = [
        p.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=0,
               headers=[("h", f"{i}".encode())])
        for i in range(n)
    ]
    p.flush(30)
    offsets = [f.get(timeout=30).offset for f in futures]
    p.close()
    if offsets != list(range(n)):
        fail(f"send offsets are not 0..{n}: {offsets[:10]}")

    tp = TopicPartition(topic, 0)
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      consumer_timeout_ms=5000)
    c.assign([tp])
    c.seek_to_beginning(tp)
    got = []
    for m in c:
        got.append(m)
        if len(got) == n:
            break
    end = c.end_offsets([tp])[tp]
    c.close()
    if len(got) != n:
        fail(f"consumed {len(got)} of {n}")
    for i, m in enumerate(got):
        if (m.offset, m.key, m.value) != (i, f"k{i}".encode(), f"v{i}".encode()):
            fail(f"message {i}: offset {m.offset} key {m.key} value {m.value}")
        if list(m.headers) != [("h", f"{i}".encode())]:
            fail(f"message {i}: headers {m.headers}")
    if end != n:
        fail(f"end offset {end}, expected {n}")
    print(f"OK kafka-python {compression}: {n} produced and consumed")


main()
