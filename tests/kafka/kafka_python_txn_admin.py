"""DescribeTransactions and ListTransactions with kafka-python's KafkaAdminClient against
`oncelog serve`.

Usage: kafka_python_txn_admin.py BOOTSTRAP TOPIC

A transactional producer PREFIX "adm-open" sends records to partitions 0 and 2 of TOPIC and
keeps its transaction open; "adm-idle" only initialises; "adm-done" commits one transaction.
The admin client must then describe and list them as the coordinator holds them (states,
partitions, producer ids, timeout), filter the list by state, producer id, duration and
id pattern (ListTransactions v2: the whole id must match), and
report an unknown id as TransactionalIdNotFoundError. After "adm-open" commits, it is listed
as CompleteCommit. Prints OK or FAIL and exits 1 on the first mismatch.
"""
import sys
import time

from kafka import KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import TransactionalIdNotFoundError

from check import expect, fail


def producer(bootstrap, tid):
    p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=tid,
                      transaction_timeout_ms=120000)
    p.init_transactions()
    return p


def listed(admin, **filters):
    out = {}
    for listings in admin.list_transactions(**filters).values():
        for t in listings:
            out[t.transactional_id] = str(t.state.value)
    return out


def main():
    bootstrap, topic = sys.argv[1], sys.argv[2]
    open_p = producer(bootstrap, "adm-open")
    open_p.begin_transaction()
    for part in (0, 2):
        open_p.send(topic, b"pending", partition=part)
    open_p.flush()
    idle = producer(bootstrap, "adm-idle")
    done = producer(bootstrap, "adm-done")
    done.begin_transaction()
    done.send(topic, b"committed", partition=1)
    done.commit_transaction()

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    d = admin.describe_transactions(["adm-open", "adm-idle", "adm-done"])
    o = d["adm-open"]
    expect("open state", str(o.state.value), "Ongoing")
    expect("open partitions", sorted(o.topic_partitions),
           [TopicPartition(topic, 0), TopicPartition(topic, 2)])
    expect("open timeout", o.transaction_timeout_ms, 120000)
    if not 0 < o.transaction_start_time_ms <= time.time() * 1000 + 1000:
        fail(f"open start time {o.transaction_start_time_ms}")
    expect("open producer id", o.producer_id, open_p._transaction_manager.producer_id_and_epoch.producer_id)
    expect("idle state", str(d["adm-idle"].state.value), "Empty")
    expect("idle partitions", d["adm-idle"].topic_partitions, set())
    expect("done state", str(d["adm-done"].state.value), "CompleteCommit")
    try:
        admin.describe_transactions(["adm-unknown"])
        fail("an unknown transactional id was described")
    except TransactionalIdNotFoundError:
        pass

    expect("list", listed(admin), {"adm-open": "Ongoing", "adm-idle": "Empty",
                                   "adm-done": "CompleteCommit"})
    expect("list Ongoing", listed(admin, state_filters=["Ongoing"]), {"adm-open": "Ongoing"})
    expect("list by producer id", listed(admin, producer_id_filters=[o.producer_id]),
           {"adm-open": "Ongoing"})
    expect("list older than an hour", listed(admin, duration_filter_ms=3600000), {})
    # ListTransactions v2: the whole id must match the pattern.
    expect("list by pattern", listed(admin, transactional_id_pattern="adm-(open|idle)"),
           {"adm-open": "Ongoing", "adm-idle": "Empty"})
    expect("list by a partial pattern", listed(admin, transactional_id_pattern="open"), {})
    time.sleep(0.01)
    expect("list started", listed(admin, duration_filter_ms=0),
           {"adm-open": "Ongoing", "adm-done": "CompleteCommit"})

    open_p.commit_transaction()
    expect("after commit", listed(admin, state_filters=["Ongoing", "CompleteCommit"]),
           {"adm-open": "CompleteCommit", "adm-done": "CompleteCommit"})
    admin.close()
    for p in (open_p, idle, done):
        p.close()
    print("OK kafka-python DescribeTransactions ListTransactions", flush=True)


if __name__ == "__main__":
    main()
