"""DeleteTopics against `oncelog serve` with an admin client.

Usage: admin_delete.py BOOTSTRAP CLIENT PREFIX    (CLIENT: confluent or kafka-python)

Creates PREFIX-gone (3 partitions) and PREFIX-kept (2), produces "old" to PREFIX-gone
partition 0 and "kept" to PREFIX-kept partition 1, then deletes PREFIX-gone (kafka-python: by
its topic id, which Metadata reports) and PREFIX-never (UNKNOWN_TOPIC_OR_PARTITION). Metadata
must no longer list PREFIX-gone; a new producer's record to it auto-creates it afresh (the
server's default partition count, the record at offset 0), and a consumer reading it from the
beginning sees only the new record. With confluent, a group's committed offset on PREFIX-gone
is gone after the deletion, and the one on PREFIX-kept stays. Prints OK, or FAIL and exits 1 on the first mismatch.
"""
import sys
import uuid

from check import admin_outcomes, expect, fail


def confluent(bootstrap, prefix):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})

    topics = [NewTopic(f"{prefix}-gone", 3, 1), NewTopic(f"{prefix}-kept", 2, 1)]
    got = admin_outcomes(admin.create_topics(topics, request_timeout=30))
    expect("create", got, {f"{prefix}-gone": "NONE", f"{prefix}-kept": "NONE"})

    def produce(topic, value, partition):
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        delivered = []
        p.produce(topic, value, partition=partition,
                  on_delivery=lambda err, m: delivered.append((err, m.partition(), m.offset())))
        p.flush(60)
        return delivered

    expect("old", produce(f"{prefix}-gone", b"old", 0), [(None, 0, 0)])
    expect("kept", produce(f"{prefix}-kept", b"kept", 1), [(None, 1, 0)])

    # A group's committed offsets on both topics: the deleted topic's go with it.
    group = f"{prefix}-committer"
    gc = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                   "enable.auto.commit": False})
    gc.commit(offsets=[TopicPartition(f"{prefix}-gone", 0, 1),
                       TopicPartition(f"{prefix}-kept", 1, 1)], asynchronous=False)

    def committed():
        got = gc.committed([TopicPartition(f"{prefix}-gone", 0),
                            TopicPartition(f"{prefix}-kept", 1)], timeout=30)
        return [tp.offset for tp in got]

    expect("committed before delete", committed(), [1, 1])

    doomed = [f"{prefix}-gone", f"{prefix}-never"]
    got = admin_outcomes(admin.delete_topics(doomed, request_timeout=30))
    expect("delete", got, {f"{prefix}-gone": "NONE",
                           f"{prefix}-never": "UNKNOWN_TOPIC_OR_PART"})
    md = admin.list_topics(timeout=30)
    listed = sorted(t for t in md.topics if t.startswith(prefix))
    expect("listed after delete", listed, [f"{prefix}-kept"])

    # Auto-created anew by the producer's Metadata request.
    expect("new", produce(f"{prefix}-gone", b"new", 0), [(None, 0, 0)])
    md = admin.list_topics(timeout=30)
    expect("partitions of the new topic", len(md.topics[f"{prefix}-gone"].partitions), 4)
    # -1001: no committed offset (librdkafka's OFFSET_INVALID).
    expect("committed after delete", committed(), [-1001, 1])
    gc.close()

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}-reader",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(f"{prefix}-gone", 0, 0)])
    values = []
    for _ in range(50):
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            values.append(m.value())
        if values and m is None:
            break
    c.close()
    expect("records of the new topic", values, [b"new"])


def kafka_python(bootstrap, prefix):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import UnknownTopicOrPartitionError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    resp = admin.create_topics([NewTopic(f"{prefix}-gone", 3, 1), NewTopic(f"{prefix}-kept", 2, 1)],
                               raise_errors=False)
    expect("create", {t["name"]: t["error_code"] for t in resp["topics"]},
           {f"{prefix}-gone": 0, f"{prefix}-kept": 0})

    def produce(topic, value, partition):
        p = KafkaProducer(bootstrap_servers=bootstrap)
        md = p.send(topic, value, partition=partition).get(timeout=60)
        p.close()
        return (md.partition, md.offset)

    expect("old", produce(f"{prefix}-gone", b"old", 0), (0, 0))
    expect("kept", produce(f"{prefix}-kept", b"kept", 1), (1, 0))

    described = admin.describe_topics([f"{prefix}-gone"])
    topic_id = described[0].get("topic_id")
    if topic_id is None:
        fail(f"no topic_id in {described[0]!r}")
    # describe_topics gives the id as a string; delete_topics takes a uuid.UUID as an id.
    resp = admin.delete_topics([uuid.UUID(str(topic_id))], raise_errors=False)
    expect("delete by id", [(t["name"], t["error_code"]) for t in resp["topics"]],
           [(f"{prefix}-gone", 0)])
    try:
        admin.delete_topics([f"{prefix}-never"])
        fail("deleting an unknown topic did not raise")
    except UnknownTopicOrPartitionError:
        pass
    topics = sorted(t for t in admin.list_topics() if t.startswith(prefix))
    expect("listed after delete", topics, [f"{prefix}-kept"])
    admin.close()

    expect("new", produce(f"{prefix}-gone", b"new", 0), (0, 0))
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      consumer_timeout_ms=3000)
    c.assign([TopicPartition(f"{prefix}-gone", 0)])
    c.seek_to_beginning()
    values = [m.value for m in c]
    c.close()
    expect("records of the new topic", values, [b"new"])


def main():
    bootstrap, client, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
    {"confluent": confluent, "kafka-python": kafka_python}[client](bootstrap, prefix)
    print(f"OK {client} DeleteTopics")


if __name__ == "__main__":
    main()
