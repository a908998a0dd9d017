"""Feature definitions: what a platform team declares (entities, event schemas, feature groups).

``catalog.py`` is the one place to edit; ``model.py`` holds the types and their validation.
"""

from fastbreak.definitions.catalog import CATALOG
from fastbreak.definitions.model import (
    Aggregation,
    Catalog,
    DefinitionError,
    Entity,
    EventSchema,
    Feature,
    FeatureGroup,
    Field,
    FieldType,
    Window,
    WindowKind,
)

__all__ = [
    "CATALOG",
    "Aggregation",
    "Catalog",
    "DefinitionError",
    "Entity",
    "EventSchema",
    "Feature",
    "FeatureGroup",
    "Field",
    "FieldType",
    "Window",
    "WindowKind",
]
