"""Reusable Fastbreak constructs with secure defaults; each exposes what it builds."""

from constructs_lib.consistency_check import ConsistencyCheck
from constructs_lib.event_stream import EventStream
from constructs_lib.feature_api import FeatureApi
from constructs_lib.flink_application import FlinkApplication
from constructs_lib.monitoring import Monitoring
from constructs_lib.offline_store import OfflineStore
from constructs_lib.online_store import OnlineStore
from constructs_lib.powertools_function import PowertoolsFunction
from constructs_lib.props import ConstructPropsError
from constructs_lib.stream_processor import StreamProcessor
from constructs_lib.training_set_job import TrainingSetJob

__all__ = [
    "ConsistencyCheck",
    "ConstructPropsError",
    "EventStream",
    "FeatureApi",
    "FlinkApplication",
    "Monitoring",
    "OfflineStore",
    "OnlineStore",
    "PowertoolsFunction",
    "StreamProcessor",
    "TrainingSetJob",
]
