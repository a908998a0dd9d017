"""The feature catalog: the one place a platform team edits what Fastbreak computes.

Stacks (Glue columns, environment), the processor, the feature API and the local platform all
read ``CATALOG``. Add an event version by appending a schema with the next version number; the
processor keeps accepting the previous one (see ``make schema-check``).
"""

from __future__ import annotations

from fastbreak.definitions.model import (
    Aggregation,
    Catalog,
    Entity,
    EventSchema,
    Feature,
    FeatureGroup,
    Field,
    FieldType,
    Window,
)

STR, INT, DBL = FieldType.STRING, FieldType.INT, FieldType.DOUBLE

ENTITIES = (
    Entity("user", "user_id", "A fan using the app."),
    Entity("game", "game_id", "One fixture; live state comes from score_update events."),
    Entity("team", "team_id", "A club or franchise."),
    Entity("content", "content_id", "An article, clip or highlight."),
)

EVENTS = (
    EventSchema(
        "content_view",
        1,
        (Field("user_id", STR), Field("content_id", STR), Field("sport", STR)),
        {"user": "user_id", "content": "content_id"},
        "A fan opened a piece of content.",
    ),
    EventSchema(
        "content_view",
        2,
        (
            Field("user_id", STR),
            Field("content_id", STR),
            Field("sport", STR),
            Field("surface", STR, required=False, default="unknown"),
        ),
        {"user": "user_id", "content": "content_id"},
        "v2 adds the app surface (home, game_page, push) the view came from.",
    ),
    EventSchema(
        "content_click",
        1,
        (Field("user_id", STR), Field("content_id", STR), Field("position", INT)),
        {"user": "user_id", "content": "content_id"},
        "A fan clicked a recommendation at a list position.",
    ),
    EventSchema(
        "video_play",
        1,
        (
            Field("user_id", STR),
            Field("content_id", STR),
            Field("game_id", STR),
            Field("watch_seconds", DBL),
        ),
        {"user": "user_id", "content": "content_id", "game": "game_id"},
        "A fan watched a stream or clip of a game for watch_seconds.",
    ),
    EventSchema(
        "game_follow",
        1,
        (Field("user_id", STR), Field("game_id", STR), Field("team_id", STR)),
        {"user": "user_id", "game": "game_id"},
        "A fan followed a game, supporting team_id.",
    ),
    EventSchema(
        "score_update",
        1,
        (
            Field("game_id", STR),
            Field("home_score", INT),
            Field("away_score", INT),
            Field("period", INT),
            Field("clock_seconds", INT),
            Field("status", STR),
        ),
        {"game": "game_id"},
        "The official feed's state of a game; status is scheduled, live or final.",
    ),
    EventSchema(
        "push_open",
        1,
        (Field("user_id", STR), Field("campaign_id", STR)),
        {"user": "user_id"},
        "A fan opened a push notification.",
    ),
    EventSchema(
        "experiment_exposure",
        1,
        (Field("user_id", STR), Field("experiment_id", STR), Field("variant", STR)),
        {"user": "user_id"},
        "A fan was shown a variant of an experiment.",
    ),
)

A = Aggregation
HOUR_1 = Window.sliding("1h", "1m")
HOUR_24 = Window.sliding("24h", "1h")
DAY_7 = Window.sliding("7d", "1d")

GROUPS = (
    FeatureGroup(
        "user_engagement",
        "user",
        ("content_view", "content_click", "video_play", "push_open"),
        (
            Feature("views", A.COUNT, (HOUR_1, HOUR_24, DAY_7), events=("content_view",)),
            Feature("clicks", A.COUNT, (HOUR_1, HOUR_24), events=("content_click",)),
            Feature(
                "watch_seconds", A.SUM, (HOUR_1, HOUR_24, DAY_7), "watch_seconds",
                events=("video_play",),
            ),
            Feature("avg_watch_seconds", A.MEAN, (HOUR_24,), "watch_seconds",
                    events=("video_play",)),
            Feature(
                "distinct_content", A.APPROX_DISTINCT, (HOUR_24, DAY_7), "content_id",
                events=("content_view", "video_play"),
            ),
            Feature("push_opens", A.COUNT, (DAY_7,), events=("push_open",)),
        ),
        allowed_lateness_seconds=2 * 3600,
        doc="How much a fan engages, over the last hour, day and week.",
    ),
    FeatureGroup(
        "user_affinity",
        "user",
        ("game_follow", "content_view"),
        (
            Feature("top_teams", A.TOP_K, (Window.lifetime(),), "team_id", size=5,
                    events=("game_follow",)),
            Feature("last_followed_team", A.LAST, (Window.lifetime(),), "team_id",
                    events=("game_follow",)),
            Feature("recent_content", A.LAST_N, (Window.lifetime(),), "content_id", size=10,
                    events=("content_view",)),
            Feature("top_sports", A.TOP_K, (DAY_7,), "sport", size=3, events=("content_view",)),
        ),
        allowed_lateness_seconds=2 * 3600,
        doc="Which teams, sports and content a fan cares about.",
    ),
    FeatureGroup(
        "user_experiments",
        "user",
        ("experiment_exposure",),
        (
            Feature("recent_exposures", A.LAST_N, (Window.lifetime(),), "experiment_id", size=5),
            Feature("last_variant", A.LAST, (Window.lifetime(),), "variant"),
            Feature("exposures", A.COUNT, (HOUR_24,)),
        ),
        allowed_lateness_seconds=2 * 3600,
        doc="Which experiments a fan has seen, for exposure-aware ranking.",
    ),
    FeatureGroup(
        "game_live",
        "game",
        ("video_play", "game_follow", "score_update"),
        (
            Feature("viewers", A.APPROX_DISTINCT, (Window.sliding("5m", "1m"),
                                                   Window.since_kickoff()),
                    "user_id", events=("video_play",)),
            Feature("watch_seconds", A.SUM, (Window.sliding("5m", "1m"),), "watch_seconds",
                    events=("video_play",)),
            Feature("follows", A.COUNT, (Window.sliding("10m", "1m"), Window.lifetime()),
                    events=("game_follow",)),
            Feature("score_changes", A.COUNT, (Window.sliding("10m", "1m"),),
                    events=("score_update",)),
            Feature("home_score", A.LAST, (Window.lifetime(),), "home_score",
                    events=("score_update",)),
            Feature("away_score", A.LAST, (Window.lifetime(),), "away_score",
                    events=("score_update",)),
            Feature("period", A.LAST, (Window.lifetime(),), "period", events=("score_update",)),
            Feature("status", A.LAST, (Window.lifetime(),), "status", events=("score_update",)),
        ),
        allowed_lateness_seconds=10 * 60,
        doc="Live audience and momentum of a game: who watches now, how fast it moves.",
    ),
    FeatureGroup(
        "content_trending",
        "content",
        ("content_view", "content_click", "video_play"),
        (
            Feature("views", A.COUNT, (HOUR_1, HOUR_24), events=("content_view",)),
            Feature("clicks", A.COUNT, (HOUR_1,), events=("content_click",)),
            Feature("viewers", A.APPROX_DISTINCT, (HOUR_1,), "user_id",
                    events=("content_view", "video_play")),
            Feature("max_click_position", A.MAX, (HOUR_24,), "position",
                    events=("content_click",)),
        ),
        allowed_lateness_seconds=30 * 60,
        doc="What is hot right now, for trending rails.",
    ),
)

CATALOG = Catalog(ENTITIES, EVENTS, GROUPS).validate()
