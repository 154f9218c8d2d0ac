"""aiokafka round trip against `oncelog serve`: the oldest versions a client here negotiates
(ApiVersions v0, InitProducerId v0, Produce v7).

Usage: aiokafka_roundtrip.py BOOTSTRAP TOPIC COMPRESSION N

Produces N keyed messages with an idempotent producer to partition 0 of TOPIC (COMPRESSION:
none, gzip or lz4), then reads them back with an assigned consumer (no group) and checks keys,
values and offsets 0..N. Exits 1 on a mismatch.
"""
import asyncio
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


async def main():
    bootstrap, topic, compression, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                         compression_type=None if compression == "none" else compression,
                         linger_ms=5)
    await p.start()
    try:
        futures = [await p.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=0)
                   for i in range(n)]
        offsets = [(await f).offset for f in futures]
    finally:
        await p.stop()
    if offsets != list(range(n)):
        fail(f"send offsets are not 0..{n}: {offsets[:10]}")

    tp = TopicPartition(topic, 0)
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await c.start()
    try:
        c.assign([tp])
        await c.seek_to_beginning(tp)
        got = []
        while len(got) < n:
            batch = await c.getmany(tp, timeout_ms=5000)
            if not batch:
                break
            got.extend(batch[tp])
        end = (await c.end_offsets([tp]))[tp]
    finally:
        await c.stop()
    if len(got) != n:
        fail(f"consumed {len(got)} of {n}")
    for i, m in enumerate(got):
        if (m.offset, m.key, m.value) != (i, f"k{i}".encode(), f"v{i}".encode()):
            fail(f"message {i}: offset {m.offset} key {m.key} value {m.value}")
    if end != n:
        fail(f"end offset {end}, expected {n}")
    print(f"OK aiokafka {compression}: {n} produced and consumed")


asyncio.run(main())
