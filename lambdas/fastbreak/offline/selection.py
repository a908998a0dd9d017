"""Which features a training set holds, named as the feature API names them, and the error that
bad input to the builder raises. Pure Python (no pyarrow)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fastbreak.engine.plan import GroupPlan, Plan, ServedFeature


class TrainingSetError(ValueError):
    """Bad input to the training-set builder: one line naming the column, feature or file."""


@dataclass(frozen=True)
class SelectedGroup:
    plan: GroupPlan
    features: tuple[ServedFeature, ...]  # in the group's served order

    @property
    def name(self) -> str:
        return self.plan.group.name

    @property
    def entity(self) -> str:
        return self.plan.group.entity


def select_features(plan: Plan, names: Sequence[str]) -> list[SelectedGroup]:
    """``group.feature_window`` names or whole ``group`` names -> the groups and their served
    features, in the order first named; a name given twice counts once."""
    if not names:
        raise TrainingSetError("no features named: pass group or group.feature_window names")
    chosen: dict[str, list[str]] = {}
    for raw in names:
        name = raw.strip()
        group_name, _, feature = name.partition(".")
        group = plan.groups.get(group_name)
        if group is None:
            raise TrainingSetError(
                f"unknown feature '{name}': name a group ({', '.join(sorted(plan.groups))}) or "
                "group.feature_window, e.g. user_engagement.views_1h"
            )
        served = [s.name for s in group.served]
        if feature and feature not in served:
            raise TrainingSetError(
                f"unknown feature '{name}': group {group_name} serves {', '.join(served)}"
            )
        wanted = chosen.setdefault(group_name, [])
        for candidate in [feature] if feature else served:
            if candidate not in wanted:
                wanted.append(candidate)
    return [
        SelectedGroup(plan.groups[group], tuple(
            s for s in plan.groups[group].served if s.name in wanted
        ))
        for group, wanted in chosen.items()
    ]
