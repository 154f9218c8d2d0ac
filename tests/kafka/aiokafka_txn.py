"""aiokafka 0.14 transactions against `oncelog serve` (the oldest versions: InitProducerId v0,
AddPartitionsToTxn v0, EndTxn v0).

Usage: aiokafka_txn.py BOOTSTRAP TOPIC

Six transactions of 10 records over 4 partitions with offsets of a group
(send_offsets_to_transaction), every second one aborted: read_committed sees exactly the
committed records, read_uncommitted all, and the group's committed offset is the last committed
transaction's. Prints OK or FAIL and exits 1.
"""
import asyncio
import sys
import time

from aiokafka import AIOKafkaProducer, AIOKafkaConsumer
from aiokafka.structs import TopicPartition
async def main(bootstrap, topic):
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"aio-{topic}")
    await p.start()
    committed, aborted = [], []
    for t in range(6):
        vals = [f"t{t}-r{i}" for i in range(10)]
        try:
            async with p.transaction():
                for i, v in enumerate(vals):
                    await p.send_and_wait(topic, v.encode(), partition=i % 4)
                await p.send_offsets_to_transaction({TopicPartition(topic, 0): t + 1}, "aio-group")
                if t % 2:
                    raise RuntimeError("abort")
            committed += vals
        except RuntimeError:
            aborted += vals
    await p.stop()
    for iso, want in (("read_committed", committed), ("read_uncommitted", committed + aborted)):
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level=iso, enable_auto_commit=False)
        await c.start()
        tps = [TopicPartition(topic, q) for q in range(4)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        got = []
        until = time.time() + 90
        while len(got) < len(want) and time.time() < until:
            res = await c.getmany(timeout_ms=500)
            for msgs in res.values():
                got += [m.value.decode() for m in msgs]
        # Anything beyond `want` would show up now.
        res = await c.getmany(timeout_ms=1000)
        for msgs in res.values():
            got += [m.value.decode() for m in msgs]
        await c.stop()
        if sorted(got) != sorted(want):
            print(f"FAIL: {iso} saw {len(got)} want {len(want)}"); sys.exit(1)
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id="aio-group", enable_auto_commit=False)
    await c.start()
    off = await c.committed(TopicPartition(topic, 0))
    await c.stop()
    if off != 5:
        print(f"FAIL: group offset {off}"); sys.exit(1)
    print(f"OK aiokafka txn committed={len(committed)} aborted={len(aborted)}")
asyncio.run(main(sys.argv[1], sys.argv[2]))
