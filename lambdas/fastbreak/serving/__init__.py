"""Online feature serving: request validation, answers and the ``FeatureClient``.

Plain Python over an injected DynamoDB client (no Powertools), so services can embed the
client and the feature API handler stays a thin HTTP face over the same code.
"""

from fastbreak.serving.client import EntityFeatures, FeatureClient, FeatureResult
from fastbreak.serving.request import (
    MAX_BODY_BYTES,
    MAX_ENTITIES,
    MAX_ENTITY_ID_LENGTH,
    EntityRef,
    GroupSelection,
    InvalidRequest,
    ReadRequest,
    RequestValidator,
)

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_ENTITIES",
    "MAX_ENTITY_ID_LENGTH",
    "EntityFeatures",
    "EntityRef",
    "FeatureClient",
    "FeatureResult",
    "GroupSelection",
    "InvalidRequest",
    "ReadRequest",
    "RequestValidator",
]
