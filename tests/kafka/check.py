"""The checks the client scripts share: print FAIL and exit 1 on the first mismatch.

Imported by the scripts beside it (python3 puts a script's own directory first on sys.path).
"""
import sys


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def expect(what, got, want):
    if got != want:
        fail(f"{what}: got {got!r}, expected {want!r}")


def admin_outcomes(futures):
    """{name: "NONE" or the error's name} of confluent-kafka AdminClient futures."""
    from confluent_kafka import KafkaError

    out = {}
    for name, f in futures.items():
        try:
            f.result(timeout=60)
            out[name] = "NONE"
        except Exception as e:  # KafkaException carrying a KafkaError
            err = e.args[0]
            out[name] = err.name() if isinstance(err, KafkaError) else repr(e)
    return out
