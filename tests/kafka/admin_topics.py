"""CreateTopics against `oncelog serve` with an admin client.

Usage: admin_topics.py BOOTSTRAP CLIENT PREFIX    (CLIENT: confluent or kafka-python)

Creates PREFIX-three with 3 partitions, PREFIX-dflt with the server's default count (-1), and
checks the errors: the same name again (TOPIC_ALREADY_EXISTS), 0 partitions (INVALID_PARTITIONS),
replication factor 3 on a one-node cluster (INVALID_REPLICATION_FACTOR); validate_only creates
nothing. Then lists the topics through Metadata and produces one record to the last partition
of PREFIX-three. Prints OK, or FAIL and exits 1 on the first mismatch.
"""
import sys

from check import admin_outcomes, expect, fail


def confluent(bootstrap, prefix):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})

    def create(topics, validate_only=False):
        futures = admin.create_topics(topics, validate_only=validate_only, request_timeout=30)
        return admin_outcomes(futures)

    got = create([NewTopic(f"{prefix}-three", 3, 1), NewTopic(f"{prefix}-dflt")])
    expect("create", got, {f"{prefix}-three": "NONE", f"{prefix}-dflt": "NONE"})
    got = create([NewTopic(f"{prefix}-three", 3, 1), NewTopic(f"{prefix}-zero", 0, 1),
                  NewTopic(f"{prefix}-rf3", 1, 3)])
    expect("refused", got, {f"{prefix}-three": "TOPIC_ALREADY_EXISTS",
                            f"{prefix}-zero": "INVALID_PARTITIONS",
                            f"{prefix}-rf3": "INVALID_REPLICATION_FACTOR"})
    got = create([NewTopic(f"{prefix}-validated", 2, 1)], validate_only=True)
    expect("validate_only", got, {f"{prefix}-validated": "NONE"})

    md = admin.list_topics(timeout=30)
    counts = {t: len(m.partitions) for t, m in md.topics.items() if t.startswith(prefix)}
    expect("partition counts", counts, {f"{prefix}-three": 3, f"{prefix}-dflt": 4})

    p = Producer({"bootstrap.servers": bootstrap})
    delivered = []
    p.produce(f"{prefix}-three", b"v", partition=2,
              on_delivery=lambda err, m: delivered.append((err, m.partition(), m.offset())))
    p.flush(60)
    expect("delivery", delivered, [(None, 2, 0)])


def kafka_python(bootstrap, prefix):
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import (InvalidPartitionsError, InvalidReplicationFactorError,
                              TopicAlreadyExistsError)

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)

    def code(topics, validate_only=False):
        resp = admin.create_topics(topics, validate_only=validate_only, raise_errors=False)
        return {t["name"]: t["error_code"] for t in resp["topics"]}

    got = code([NewTopic(f"{prefix}-three", 3, 1), NewTopic(f"{prefix}-dflt", -1, -1)])
    expect("create", got, {f"{prefix}-three": 0, f"{prefix}-dflt": 0})
    got = code([NewTopic(f"{prefix}-three", 3, 1), NewTopic(f"{prefix}-zero", 0, 1),
                NewTopic(f"{prefix}-rf3", 1, 3)])
    expect("refused", got, {f"{prefix}-three": TopicAlreadyExistsError.errno,
                            f"{prefix}-zero": InvalidPartitionsError.errno,
                            f"{prefix}-rf3": InvalidReplicationFactorError.errno})
    got = code([NewTopic(f"{prefix}-validated", 2, 1)], validate_only=True)
    expect("validate_only", got, {f"{prefix}-validated": 0})
    # raise_errors (the default) turns a refusal into the client's exception.
    try:
        admin.create_topics([NewTopic(f"{prefix}-three", 1, 1)])
        fail("creating an existing topic did not raise")
    except TopicAlreadyExistsError:
        pass

    topics = sorted(t for t in admin.list_topics() if t.startswith(prefix))
    expect("topics", topics, [f"{prefix}-dflt", f"{prefix}-three"])
    described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(topics)}
    expect("partition counts", described, {f"{prefix}-three": 3, f"{prefix}-dflt": 4})
    admin.close()

    p = KafkaProducer(bootstrap_servers=bootstrap)
    md = p.send(f"{prefix}-three", b"v", partition=2).get(timeout=60)
    p.close()
    expect("delivery", (md.partition, md.offset), (2, 0))


def main():
    bootstrap, client, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
    {"confluent": confluent, "kafka-python": kafka_python}[client](bootstrap, prefix)
    print(f"OK {client} CreateTopics")


if __name__ == "__main__":
    main()
