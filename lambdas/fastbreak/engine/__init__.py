"""The feature engine: decode, validate, aggregate, write, and read back.

Plain Python with no AWS SDK or CDK import: clients are passed in, so the Lambda handlers, the
backfill, the local platform and the tests share this one copy of the logic.
"""

from fastbreak.engine.online_store import OnlineStore, RetryPolicy
from fastbreak.engine.plan import Plan, compile_plan
from fastbreak.engine.processor import BatchResult, ProcessorSettings, StreamProcessor
from fastbreak.engine.read import FeatureValue, merge_group, read_group
from fastbreak.engine.rejections import Reason
from fastbreak.engine.sinks import MemorySink, ObjectSink, S3Sink

__all__ = [
    "BatchResult",
    "FeatureValue",
    "MemorySink",
    "ObjectSink",
    "OnlineStore",
    "Plan",
    "ProcessorSettings",
    "Reason",
    "RetryPolicy",
    "S3Sink",
    "StreamProcessor",
    "compile_plan",
    "merge_group",
    "read_group",
]
