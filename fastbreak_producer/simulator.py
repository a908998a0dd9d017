"""A live-games workload: several concurrent games, Zipf-distributed fans, bursts of activity
after scoring plays, and the imperfections of real producers (late, duplicate and malformed
events). Deterministic for a seed, apart from the wall clock it stamps events with.
"""

from __future__ import annotations

import bisect
import itertools
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

SPORTS = ("soccer", "basketball", "hockey", "football")
SURFACES = ("home", "game_page", "push", "search")


class Kind(StrEnum):
    EVENT = "event"
    LATE = "late"  # event time minutes in the past: late arrival through a slow producer
    DUPLICATE = "duplicate"  # the same event again: a producer retry
    MALFORMED = "malformed"  # what a broken producer ships: not JSON, missing or wrong fields


@dataclass(frozen=True)
class SimulationConfig:
    rate: float = 500.0  # events per second between scoring plays
    games: int = 4
    users: int = 50_000
    contents: int = 2_000
    seed: int = 7
    zipf_exponent: float = 1.1
    late_fraction: float = 0.005
    duplicate_fraction: float = 0.01
    malformed_fraction: float = 0.002
    scoring_plays_per_game_minute: float = 3.0
    spike_factor: float = 3.0  # activity multiplier right after a scoring play
    spike_seconds: float = 6.0


@dataclass(frozen=True)
class Emission:
    kind: Kind
    partition_key: str
    event: dict[str, Any] | None = None  # None for malformed bytes
    raw: bytes | None = None


@dataclass
class _Game:
    game_id: str
    sport: str
    home: str
    away: str
    home_score: int = 0
    away_score: int = 0
    period: int = 1
    clock_seconds: int = 0
    elapsed: float = 0.0
    spike_until: float = 0.0


@dataclass
class SimulationStats:
    emitted: Counter[str] = field(default_factory=Counter)
    scoring_plays: int = 0


class LiveGameSimulator:
    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.stats = SimulationStats()
        teams = [f"team-{i:03d}" for i in range(config.games * 2)]
        self.games = [
            _Game(f"game-{i:03d}", SPORTS[i % len(SPORTS)], teams[2 * i], teams[2 * i + 1])
            for i in range(config.games)
        ]
        # Zipf: the fan of rank r is active in proportion to 1 / r^s (a few superfans, a
        # long tail), and so are contents.
        self._user_weights = _zipf_cumulative(config.users, config.zipf_exponent)
        self._content_weights = _zipf_cumulative(config.contents, config.zipf_exponent)
        self._carry = 0.0
        self._sent: list[dict[str, Any]] = []  # a window of recent events, for duplicates
        self._ids = itertools.count()

    # ---- the clock -----------------------------------------------------------------------
    def tick(self, now: float, dt: float) -> list[Emission]:
        """What producers emit during the ``dt`` seconds ending at ``now`` (epoch seconds)."""
        emissions: list[Emission] = []
        for game in self.games:
            game.elapsed += dt
            game.clock_seconds = int(game.elapsed)
            if self.rng.random() < self.config.scoring_plays_per_game_minute * dt / 60:
                emissions.append(self._score(game, now))
            elif self.rng.random() < dt / 10:  # the feed's heartbeat between plays
                emissions.append(self._emit(self._score_update(game, now)))
        spiking = sum(1 for game in self.games if game.spike_until > now)
        rate = self.config.rate * (1 + (self.config.spike_factor - 1) * spiking / len(self.games))
        self._carry += rate * dt
        count, self._carry = int(self._carry), self._carry - int(self._carry)
        for _ in range(count):
            emissions.append(self._fan_emission(now))
        return emissions

    def _fan_emission(self, now: float) -> Emission:
        draw = self.rng.random()
        config = self.config
        if draw < config.malformed_fraction:
            return self._malformed()
        draw -= config.malformed_fraction
        if draw < config.duplicate_fraction and self._sent:
            original = self.rng.choice(self._sent)
            self.stats.emitted[Kind.DUPLICATE.value] += 1
            return Emission(Kind.DUPLICATE, _key_of(original), dict(original))
        draw -= config.duplicate_fraction
        late = draw < config.late_fraction
        lateness = self.rng.uniform(30, 15 * 60) if late else 0.0
        emission = self._emit(self._fan_event(now - lateness), Kind.LATE if late else Kind.EVENT)
        return emission

    # ---- events --------------------------------------------------------------------------
    def _emit(self, event: dict[str, Any], kind: Kind = Kind.EVENT) -> Emission:
        self._sent.append(event)
        if len(self._sent) > 1000:
            del self._sent[:500]
        self.stats.emitted[kind.value] += 1
        return Emission(kind, _key_of(event), event)

    def _envelope(self, event_type: str, version: int, at: float) -> dict[str, Any]:
        return {
            "event_type": event_type,
            "schema_version": version,
            "event_id": f"{self.config.seed:x}-{next(self._ids):012x}",
            "event_time": _iso(at),
        }

    def _fan_event(self, at: float) -> dict[str, Any]:
        user = f"user-{bisect.bisect(self._user_weights, self.rng.random()):06d}"
        content = f"content-{bisect.bisect(self._content_weights, self.rng.random()):05d}"
        game = self.rng.choice(self.games)
        kind = self.rng.random()
        if kind < 0.35:
            # A few producers still ship v1 (no surface): the processor upcasts them.
            if self.rng.random() < 0.1:
                return {**self._envelope("content_view", 1, at), "user_id": user,
                        "content_id": content, "sport": game.sport}
            return {**self._envelope("content_view", 2, at), "user_id": user,
                    "content_id": content, "sport": game.sport,
                    "surface": self.rng.choice(SURFACES)}
        if kind < 0.75:
            return {**self._envelope("video_play", 1, at), "user_id": user,
                    "content_id": content, "game_id": game.game_id,
                    "watch_seconds": round(self.rng.expovariate(1 / 45), 1)}
        if kind < 0.87:
            return {**self._envelope("content_click", 1, at), "user_id": user,
                    "content_id": content, "position": self.rng.randint(1, 20)}
        if kind < 0.93:
            return {**self._envelope("game_follow", 1, at), "user_id": user,
                    "game_id": game.game_id, "team_id": self.rng.choice((game.home, game.away))}
        if kind < 0.97:
            return {**self._envelope("push_open", 1, at), "user_id": user,
                    "campaign_id": f"campaign-{self.rng.randint(1, 12)}"}
        return {**self._envelope("experiment_exposure", 1, at), "user_id": user,
                "experiment_id": f"exp-{self.rng.randint(1, 5)}",
                "variant": self.rng.choice(("control", "treatment"))}

    def _score(self, game: _Game, now: float) -> Emission:
        if self.rng.random() < 0.5:
            game.home_score += 1
        else:
            game.away_score += 1
        game.spike_until = now + self.config.spike_seconds
        self.stats.scoring_plays += 1
        return self._emit(self._score_update(game, now))

    def _score_update(self, game: _Game, at: float) -> dict[str, Any]:
        return {**self._envelope("score_update", 1, at), "game_id": game.game_id,
                "home_score": game.home_score, "away_score": game.away_score,
                "period": game.period, "clock_seconds": game.clock_seconds, "status": "live"}

    def _malformed(self) -> Emission:
        self.stats.emitted[Kind.MALFORMED.value] += 1
        user = f"user-{self.rng.randrange(self.config.users):06d}"
        choice = self.rng.randrange(3)
        if choice == 0:
            return Emission(Kind.MALFORMED, user, raw=b'{"event_type": "content_view", trunc')
        event = self._fan_event(0)
        event["event_time"] = _iso(datetime.now(UTC).timestamp())
        if choice == 1:
            event.pop("user_id", None)
            event.pop("game_id", None)
        else:
            event["schema_version"] = 99
        return Emission(Kind.MALFORMED, user, raw=_dumps(event))


def _zipf_cumulative(count: int, exponent: float) -> list[float]:
    weights = list(itertools.accumulate(1 / (rank ** exponent) for rank in range(1, count + 1)))
    total = weights[-1]
    return [weight / total for weight in weights[:-1]]


def _key_of(event: dict[str, Any]) -> str:
    return str(event.get("user_id") or event.get("game_id") or event["event_id"])


def _iso(epoch_seconds: float) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=epoch_seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _dumps(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()
