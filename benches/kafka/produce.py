"""librdkafka (confluent-kafka) producing 1 KB messages, acks=all, idempotent, to one topic.

Started by benches/kafka_produce.rs against `oncelog serve`. With RATE 0 (the default) the
messages are offered as fast as the client takes them (throughput; the latency is then mostly
time queued in the client); with RATE > 0 they are offered at RATE per second (the delivery
latency of a producer below saturation). Prints one JSON line:
{"messages", "seconds", "per_second", "p50_ms", "p99_ms", "max_ms"}. The latency of a message
is librdkafka's own (Message.latency(): from produce() to its delivery report), so it includes
the time spent waiting in the client's queue, as a user of the client sees it. Exits non-zero
if any message is not delivered.

usage: produce.py BOOTSTRAP TOPIC MESSAGES [SIZE] [RATE]
"""
import json
import os
import sys
import time

from confluent_kafka import Producer


def main():
    bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    rate = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    p = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "client.id": "oncelog-produce-bench",
    })
    latencies = []
    errors = []

    def delivered(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            latencies.append(msg.latency())

    # Warm-up outside the clock: metadata, topic auto-creation, the producer id.
    p.produce(topic, b"warm-up", on_delivery=delivered)
    if p.flush(30) != 0 or errors:
        sys.exit(f"warm-up not delivered: {errors}")
    latencies.clear()

    value = os.urandom(size)
    start = time.perf_counter()
    for i in range(count):
        if rate > 0 and i % 50 == 0:
            # poll() returns early when it serves a delivery report: wait out the remainder.
            while (ahead := start + i / rate - time.perf_counter()) > 0:
                p.poll(ahead)
        while True:
            try:
                p.produce(topic, value, key=str(i % 64).encode(), on_delivery=delivered)
                break
            except BufferError:
                p.poll(0.005)
        if i % 1000 == 0:
            p.poll(0)
    left = p.flush(120)
    seconds = time.perf_counter() - start
    if left or errors or len(latencies) != count:
        sys.exit(f"{left} left in the queue, {len(latencies)}/{count} delivered, errors: {errors[:5]}")
    latencies.sort()

    def pct(q):
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    print(json.dumps({
        "messages": count,
        "seconds": seconds,
        "per_second": count / seconds,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000,
    }))


if __name__ == "__main__":
    main()
