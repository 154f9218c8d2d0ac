"""A confluent-kafka consumer group of 3 against `oncelog serve`, one member killed mid-stream.

Usage: confluent_group.py BOOTSTRAP TOPIC N WORKDIR

Produces N messages (values 0..N) over the topic's partitions, then starts three consumer
processes in one group (subscribe, manual synchronous commit after every message). Each appends
"value" lines to WORKDIR/consumer-K.log as it consumes. Once consumer 0 has consumed a few
messages it is killed with SIGKILL; its session expires, the group rebalances, and the other two
take over its partitions from its last committed offsets. The run passes when every value was
consumed (nothing lost), every value consumed twice was consumed by the killed member or had its
commit refused in a rebalance (the re-deliveries at-least-once allows), and the group's committed offsets
equal the partitions' ends. Exits 1 with the reason otherwise.
"""
import os
import signal
import subprocess
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def consumer(bootstrap, topic, log_path, quiet_exit_s):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "oncelog-group-test",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 3000,
        "heartbeat.interval.ms": 300,
        "partition.assignment.strategy": "range",
    })
    c.subscribe([topic])
    last = time.time()
    with open(log_path, "a") as out:
        while time.time() - last < quiet_exit_s:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                print(f"consumer error: {m.error()}", flush=True)
                continue
            out.write(m.value().decode() + "\n")
            out.flush()
            try:
                c.commit(message=m, asynchronous=False)
            except KafkaException as e:
                # The partition moved on in a rebalance: its next owner starts from the last
                # commit and reads this message again (at-least-once allows it).
                print(f"commit of {m.value().decode()} refused: {e}", flush=True)
                with open(log_path + ".uncommitted", "a") as u:
                    u.write(m.value().decode() + "\n")
            last = time.time()
            time.sleep(0.005)
    c.close()


def main():
    if sys.argv[1] == "--consumer":
        consumer(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
        return
    bootstrap, topic, n, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(n):
        p.produce(topic, key=str(i).encode(), value=str(i).encode())
    if p.flush(30):
        fail("produce did not finish")

    logs = [os.path.join(work, f"consumer-{k}.log") for k in range(3)]
    procs = [subprocess.Popen([sys.executable, __file__, "--consumer", bootstrap, topic, logs[k], "8"])
             for k in range(3)]

    def lines(k, suffix=""):
        try:
            with open(logs[k] + suffix) as f:
                return [l.strip() for l in f if l.strip()]
        except FileNotFoundError:
            return []

    deadline = time.time() + 60
    while len(lines(0)) < 5:
        if time.time() > deadline or procs[0].poll() is not None:
            fail(f"consumer 0 consumed {len(lines(0))} messages before the deadline")
        time.sleep(0.01)
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait()
    for pr in procs[1:]:
        try:
            pr.wait(90)
        except subprocess.TimeoutExpired:
            pr.kill()
            fail("a surviving consumer did not finish")

    seen = [lines(k) for k in range(3)]
    all_values = [v for s in seen for v in s]
    missing = set(str(i) for i in range(n)) - set(all_values)
    if missing:
        fail(f"{len(missing)} values never consumed, e.g. {sorted(missing, key=int)[:10]}")
    dups = {v for v in all_values if all_values.count(v) > 1}
    allowed = set(seen[0]).union(*(lines(k, ".uncommitted") for k in range(3)))
    if not dups <= allowed:
        fail(f"values consumed twice though committed by a live member: {sorted(dups - allowed)[:10]}")

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "oncelog-group-test"})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    tps = [TopicPartition(topic, p) for p in parts]
    committed = c.committed(tps, timeout=10)
    for tp in committed:
        low, high = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
        if tp.offset != high:
            fail(f"partition {tp.partition}: committed {tp.offset}, end {high}")
    c.close()
    print(f"OK group: {n} values consumed by 3 members, one killed after {len(seen[0])}; "
          f"{len(dups)} re-delivered; per member {[len(s) for s in seen]}")


main()
