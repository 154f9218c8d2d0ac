"""confluent-kafka (librdkafka) against a secured `oncelog serve` (TLS, SASL/PLAIN, ACL).

Usage: confluent_secure.py BOOTSTRAP TOPIC N CONFIG_JSON MODE

CONFIG_JSON is merged into every client's configuration (security.protocol, ssl.*, sasl.*).
MODE:
  roundtrip        produce N messages to partition 0, check every delivery report, read them
                   back from the beginning and check values, offsets 0..N and the high-water
                   mark N;
  auth-failure     produce one message; the client must report an authentication error
                   (_AUTHENTICATION) and the message must not be delivered;
  topic-denied     produce one message; its delivery report must be
                   TOPIC_AUTHORIZATION_FAILED;
  refused          list the topics; the client must not get metadata (a failed handshake);
  admin-denied     create TOPIC with the AdminClient: TOPIC_AUTHORIZATION_FAILED, and Metadata
                   must not have auto-created it;
  group-denied     subscribe a consumer in a group: GROUP_AUTHORIZATION_FAILED.
Prints OK and exits 0 on success; prints FAIL with the reason and exits 1 otherwise.
"""
import json
import sys
import time

from confluent_kafka import (Consumer, KafkaError, KafkaException, Producer, TopicPartition,
                             OFFSET_BEGINNING)


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def roundtrip(base, topic, n):
    p = Producer({**base, "linger.ms": 5, "message.timeout.ms": 30000})
    errors, offsets = [], []

    def report(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            offsets.append(msg.offset())

    for i in range(n):
        p.produce(topic, value=f"secure-{i}".encode(), key=f"k{i}".encode(), partition=0,
                  on_delivery=report)
        p.poll(0)
    if p.flush(30):
        fail("messages not delivered within 30 s")
    if errors:
        fail(f"delivery errors: {errors[:5]}")
    if sorted(offsets) != list(range(n)):
        fail(f"delivered offsets are not 0..{n}: {sorted(offsets)[:10]}")
    c = Consumer({**base, "group.id": "secure-unused", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got, idle = [], 0
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
        fail(f"watermarks ({low}, {high}), expected (0, {n})")
    for i, m in enumerate(got):
        if m.offset() != i or m.value() != f"secure-{i}".encode():
            fail(f"message {i}: offset {m.offset()} value {m.value()}")
    if len(got) != n:
        fail(f"consumed {len(got)} of {n}")
    print(f"OK: {n} produced and consumed")


def auth_failure(base, topic):
    seen = []
    p = Producer({**base, "message.timeout.ms": 8000, "error_cb": lambda e: seen.append(e)})
    delivered = []
    p.produce(topic, value=b"must-not-be-stored", partition=0,
              on_delivery=lambda err, msg: delivered.append(err))
    until = time.time() + 15
    while time.time() < until and not any(
            e.code() == KafkaError._AUTHENTICATION for e in seen):
        p.poll(0.2)
    p.flush(10)
    if not any(e.code() == KafkaError._AUTHENTICATION for e in seen):
        fail(f"no authentication error reported; errors: {[str(e) for e in seen]}")
    if delivered and delivered[0] is None:
        fail("the message was delivered")
    print(f"OK: authentication refused: {[str(e) for e in seen][:1]}")


def topic_denied(base, topic):
    p = Producer({**base, "message.timeout.ms": 10000})
    reports = []
    p.produce(topic, value=b"denied", partition=0,
              on_delivery=lambda err, msg: reports.append(err))
    p.flush(15)
    if not reports:
        fail("no delivery report")
    err = reports[0]
    if err is None:
        fail("the message was delivered")
    if err.code() != KafkaError.TOPIC_AUTHORIZATION_FAILED:
        fail(f"expected TOPIC_AUTHORIZATION_FAILED, got {err}")
    print(f"OK: {err}")


def refused(base):
    admin_like = Producer({**base, "error_cb": lambda e: None})
    try:
        md = admin_like.list_topics(timeout=5)
    except KafkaException as e:
        print(f"OK: no metadata: {e}")
        return
    fail(f"got metadata: brokers {md.brokers}")


def admin_denied(base, topic):
    from confluent_kafka.admin import AdminClient, NewTopic
    a = AdminClient(base)
    md = a.list_topics(topic=topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is None:
        fail(f"metadata auto-created {topic} for a principal without produce or admin")
    futures = a.create_topics([NewTopic(topic, 2, 1)], operation_timeout=10)
    try:
        futures[topic].result(15)
    except KafkaException as e:
        err = e.args[0]
        if err.code() != KafkaError.TOPIC_AUTHORIZATION_FAILED:
            fail(f"expected TOPIC_AUTHORIZATION_FAILED, got {err}")
        print(f"OK: {err}")
        return
    fail("the topic was created")


def group_denied(base, topic):
    c = Consumer({**base, "group.id": "denied-group", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    until = time.time() + 15
    while time.time() < until:
        m = c.poll(0.2)
        if m is not None and m.error():
            if m.error().code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
                print(f"OK: {m.error()}")
                c.close()
                return
            fail(f"unexpected consumer error {m.error()}")
        if m is not None:
            fail("a message was consumed in a group without the group grant")
    fail("no GROUP_AUTHORIZATION_FAILED within 15 s")


def main():
    bootstrap, topic, n, conf, mode = sys.argv[1:6]
    base = {"bootstrap.servers": bootstrap, **json.loads(conf)}
    if mode == "roundtrip":
        roundtrip(base, topic, int(n))
    elif mode == "auth-failure":
        auth_failure(base, topic)
    elif mode == "topic-denied":
        topic_denied(base, topic)
    elif mode == "admin-denied":
        admin_denied(base, topic)
    elif mode == "group-denied":
        group_denied(base, topic)
    elif mode == "refused":
        refused(base)
    else:
        fail(f"unknown mode {mode}")


main()
