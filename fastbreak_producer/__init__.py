"""Fastbreak's producer SDK and CLI: validated, batched, retried writes to the events stream.

    from fastbreak_producer import Producer
    with Producer(kinesis_client, "events-stream") as producer:
        producer.send({"event_type": "content_view", "schema_version": 2, ...})

``python -m fastbreak_producer replay FILE`` and ``python -m fastbreak_producer simulate``.
"""

from fastbreak_producer.batching import MAX_RECORD_BYTES, MAX_REQUEST_BYTES, MAX_REQUEST_RECORDS
from fastbreak_producer.client import Producer, ProducerConfig, SendReport
from fastbreak_producer.schema import SchemaError, SchemaGate

__all__ = [
    "MAX_RECORD_BYTES",
    "MAX_REQUEST_BYTES",
    "MAX_REQUEST_RECORDS",
    "Producer",
    "ProducerConfig",
    "SchemaError",
    "SchemaGate",
    "SendReport",
]
