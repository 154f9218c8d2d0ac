"""kafka-python against `oncelog serve` over SASL_SSL with PLAIN (SaslHandshake v1, then
SaslAuthenticate).

Usage: kafka_python_secure.py BOOTSTRAP TOPIC N CAFILE USER PASSWORD

Produces N messages to partition 0 of TOPIC, reads them back from the beginning and checks
values and offsets 0..N. Prints OK and exits 0, or FAIL with the reason and exits 1.
"""
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def main():
    bootstrap, topic, n, cafile, user, password = sys.argv[1:7]
    n = int(n)
    security = {
        "bootstrap_servers": bootstrap,
        "security_protocol": "SASL_SSL",
        "ssl_cafile": cafile,
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": user,
        "sasl_plain_password": password,
    }
    p = KafkaProducer(**security, linger_ms=5)
    futures = [p.send(topic, value=f"kp-{i}".encode(), partition=0) for i in range(n)]
    p.flush(30)
    offsets = sorted(f.get(timeout=30).offset for f in futures)
    p.close()
    if offsets != list(range(n)):
        fail(f"offsets {offsets[:10]}...")
    c = KafkaConsumer(**security, enable_auto_commit=False, consumer_timeout_ms=10000)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    got = []
    for m in c:
        got.append(m)
        if len(got) == n:
            break
    c.close()
    if [(m.offset, m.value) for m in got] != [(i, f"kp-{i}".encode()) for i in range(n)]:
        fail(f"consumed {[(m.offset, m.value) for m in got][:5]}...")
    print(f"OK kafka-python SASL_SSL: {n} produced and consumed")


main()
