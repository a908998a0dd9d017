"""The feature engine: decode, validate, aggregate, write, and read back.

Plain Python with no AWS SDK or CDK import: clients are passed in, so the Lambda handlers, the
backfill, the training-set builder, the local platform and the tests share this one copy of the
logic. ``fastbreak.engine.fold`` holds the fold and the merge: the definition of every feature.
"""

from fastbreak.engine.audience import AudienceMerger, AudienceResult, AudienceSettings
from fastbreak.engine.fold import FeatureValue, ItemFold, ItemMerge, ItemState, merge_items
from fastbreak.engine.online_store import OnlineStore, RetryPolicy
from fastbreak.engine.partials import PartialsSink
from fastbreak.engine.plan import Plan, compile_plan
from fastbreak.engine.processor import BatchResult, ProcessorSettings, StreamProcessor
from fastbreak.engine.read import merge_group
from fastbreak.engine.rejections import Reason
from fastbreak.engine.sinks import MemorySink, ObjectSink, S3Sink

__all__ = [
    "AudienceMerger",
    "AudienceResult",
    "AudienceSettings",
    "BatchResult",
    "FeatureValue",
    "ItemFold",
    "ItemMerge",
    "ItemState",
    "MemorySink",
    "ObjectSink",
    "OnlineStore",
    "PartialsSink",
    "Plan",
    "ProcessorSettings",
    "Reason",
    "RetryPolicy",
    "S3Sink",
    "StreamProcessor",
    "compile_plan",
    "merge_group",
    "merge_items",
]
