"""Synthetic live-sports traffic: Zipf(1.1) over users and contents, a set of live games."""

from __future__ import annotations

import bisect
import itertools
import random
from typing import Any

from fastbreak.engine.timestamps import format_ms
from localplatform.kinesis_events import SEQUENCE_BASE, StreamRecord, json_bytes

T0 = 1_795_717_800_000


class Zipf:
    """Draws ranks 0..n-1 with P(k) proportional to 1 / (k + 1) ** s."""

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        weights = (1 / (k + 1) ** s for k in range(n))
        self.cumulative = list(itertools.accumulate(weights))
        self.rng = rng

    def draw(self) -> int:
        return bisect.bisect(self.cumulative, self.rng.random() * self.cumulative[-1])


def events(
    count: int, users: int = 100_000, games: int = 50, seed: int = 1, start_ms: int = T0,
    span_ms: int = 60_000,
) -> list[bytes]:
    """``count`` JSON events of about 300 bytes over ``span_ms`` of event time from
    ``start_ms``; the same ranks are the same users and contents whatever the seed."""
    rng = random.Random(seed)
    user_rank, content_rank = Zipf(users, 1.1, rng), Zipf(20_000, 1.1, rng)
    out: list[bytes] = []
    for n in range(count):
        user = f"user-{user_rank.draw():06d}"
        envelope: dict[str, Any] = {
            "event_id": f"{seed}-{n:08d}-5f0c1d7e-9a4b-4c1e-8f7d",
            "event_time": format_ms(start_ms + n * span_ms // count),
        }
        draw = rng.random()
        if draw < 0.5:
            body: dict[str, Any] = {
                "event_type": "content_view", "schema_version": 2, "user_id": user,
                "content_id": f"article-{content_rank.draw():05d}", "sport": "basketball",
                "surface": "game_page",
            }
        elif draw < 0.8:
            body = {
                "event_type": "video_play", "schema_version": 1, "user_id": user,
                "content_id": f"clip-{content_rank.draw():05d}",
                "game_id": f"game-{rng.randrange(games):03d}",
                "watch_seconds": rng.randint(1, 600) / 2,
            }
        elif draw < 0.9:
            body = {
                "event_type": "content_click", "schema_version": 1, "user_id": user,
                "content_id": f"article-{content_rank.draw():05d}",
                "position": rng.randint(0, 20),
            }
        else:
            body = {
                "event_type": "game_follow", "schema_version": 1, "user_id": user,
                "game_id": f"game-{rng.randrange(games):03d}",
                "team_id": f"team-{rng.randrange(60):02d}",
            }
        body["client"] = {"app": "fastbreak-ios", "version": "7.14.2", "locale": "en_US"}
        out.append(json_bytes({**envelope, **body}))
    return out


def stream(payloads: list[bytes], shard_id: str = "shardId-000000000000") -> list[StreamRecord]:
    arrival_s = T0 / 1000 + 90
    return [
        StreamRecord(str(SEQUENCE_BASE + n), "pk", payload, arrival_s, shard_id)
        for n, payload in enumerate(payloads)
    ]
