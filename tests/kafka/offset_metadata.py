"""Offset metadata strings through `oncelog serve`, with kafka-python and confluent-kafka.

Usage: offset_metadata.py BOOTSTRAP CLIENT TOPIC   (CLIENT: kafka-python or confluent)

A group commits an offset with a metadata string (OffsetCommit) and committed() must return it;
a string above 4096 bytes is refused (OFFSET_METADATA_TOO_LARGE) and the earlier commit stays;
then a transactional producer commits an offset with metadata through
send_offsets_to_transaction, and committed() must return the new offset and its string. Prints
OK or FAIL and exits 1.
"""
import sys

PLAIN = "plain é {\"k\": 1}"
TXN = "inside a transaction"


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def kafka_python(bootstrap, topic):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.errors import OffsetMetadataTooLargeError
    from kafka.structs import OffsetAndMetadata

    tp = TopicPartition(topic, 0)
    group = f"kp-meta-{topic}"
    p = KafkaProducer(bootstrap_servers=bootstrap)
    p.send(topic, b"x", partition=0).get(timeout=60)
    p.close()
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    c.commit({tp: OffsetAndMetadata(1, PLAIN, -1)})
    got = c.committed(tp, metadata=True)
    if got is None or (got.offset, got.metadata) != (1, PLAIN):
        fail(f"plain commit: committed() = {got}")
    try:
        c.commit({tp: OffsetAndMetadata(2, "m" * 4097, -1)})
        fail("a 4097-byte metadata string was accepted")
    except OffsetMetadataTooLargeError:
        pass
    got = c.committed(tp, metadata=True)
    if (got.offset, got.metadata) != (1, PLAIN):
        fail(f"after the refused commit: committed() = {got}")
    c.close()

    p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"kp-meta-{topic}")
    p.init_transactions()
    p.begin_transaction()
    p.send(topic, b"y", partition=0)
    p.flush()
    p.send_offsets_to_transaction({tp: OffsetAndMetadata(2, TXN, -1)}, group)
    p.commit_transaction()
    p.close()
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    got = c.committed(tp, metadata=True)
    c.close()
    if got is None or (got.offset, got.metadata) != (2, TXN):
        fail(f"transactional commit: committed() = {got}")


def confluent(bootstrap, topic):
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

    group = f"ck-meta-{topic}"
    conf = {"bootstrap.servers": bootstrap}
    p = Producer(conf)
    p.produce(topic, b"x", partition=0)
    if p.flush(60) != 0:
        fail("produce did not complete")
    c = Consumer({**conf, "group.id": group, "enable.auto.commit": False})

    def committed():
        [got] = c.committed([TopicPartition(topic, 0)], timeout=60)
        return got.offset, got.metadata

    c.commit(offsets=[TopicPartition(topic, 0, 1, PLAIN)], asynchronous=False)
    if committed() != (1, PLAIN):
        fail(f"plain commit: committed() = {committed()}")
    try:
        res = c.commit(offsets=[TopicPartition(topic, 0, 2, "m" * 4097)], asynchronous=False)
        if not any(r.error is not None for r in res):
            fail("a 4097-byte metadata string was accepted")
    except KafkaException:
        pass
    if committed() != (1, PLAIN):
        fail(f"after the refused commit: committed() = {committed()}")

    tp = Producer({**conf, "transactional.id": f"ck-meta-{topic}"})
    tp.init_transactions(60)
    tp.begin_transaction()
    tp.produce(topic, b"y", partition=0)
    tp.send_offsets_to_transaction([TopicPartition(topic, 0, 2, TXN)],
                                   c.consumer_group_metadata(), 60)
    tp.commit_transaction(60)
    if committed() != (2, TXN):
        fail(f"transactional commit: committed() = {committed()}")
    c.close()


def main():
    bootstrap, client, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    {"kafka-python": kafka_python, "confluent": confluent}[client](bootstrap, topic)
    print(f"OK {client} offset metadata", flush=True)


if __name__ == "__main__":
    main()
