"""``fastbreak consistency``: the share of the values the online store served that the builder
recomputes exactly from the raw table.

See ``docs/training-sets.md`` ("Consistency"). The same check runs on AWS every hour
(``fastbreak.handlers.consistency_check``) and publishes the figure as a CloudWatch metric.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import TYPE_CHECKING, Any

from fastbreak.cli import UsageError, count, minutes
from fastbreak.cli.backfill import BUCKET_ENVIRONMENT, TABLE_ENVIRONMENT

if TYPE_CHECKING:
    from rich.console import Console

    from fastbreak.offline.consistency import ConsistencyReport

NAME = "consistency"
HELP = "recompute a sample of the values the online store served and report the share that match"
BELOW_TARGET = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--table", default=os.environ.get(TABLE_ENVIRONMENT), metavar="NAME",
                        help=f"the online store table (default: ${TABLE_ENVIRONMENT})")
    parser.add_argument("--bucket", default=os.environ.get(BUCKET_ENVIRONMENT), metavar="NAME",
                        help="the offline store bucket, whose raw/ and features/ are read "
                        f"(default: ${BUCKET_ENVIRONMENT})")
    parser.add_argument("--raw", metavar="PATH_OR_S3_URL",
                        help="the raw events table (default: s3://BUCKET/raw)")
    parser.add_argument("--feature-log", metavar="PATH_OR_S3_URL",
                        help="the feature log (default: s3://BUCKET/features)")
    parser.add_argument("--groups", nargs="+", metavar="GROUP", default=[],
                        help="the feature groups to check (default: every group)")
    parser.add_argument("--sample", type=count, default=100, metavar="N",
                        help="entities per group (default 100)")
    parser.add_argument("--lookback-minutes", type=minutes, default=60, metavar="MINUTES",
                        help="check the entities last written in this many minutes (default 60)")
    parser.add_argument("--settle-minutes", type=minutes, default=20,
                        metavar="MINUTES",
                        help="... up to this long ago, so that their events had time to reach "
                        "the raw table and the later ones to be applied (default 20: Firehose "
                        "delivers within 15)")
    parser.add_argument("--all-windows", action="store_true",
                        help="check lifetime and since-kickoff features too (reads the whole "
                        "raw table)")
    parser.add_argument("--max-window-hours", type=count, metavar="HOURS",
                        help="leave out features whose window is longer (the raw table is read "
                        "back that far; default: every bounded window)")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    parser.add_argument("--fail-below", type=float, metavar="PERCENT",
                        help="exit with code 1 when a feature's share is below this")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"),
                        metavar="URL", help="AWS endpoint, e.g. the local platform's (default: "
                        "$AWS_ENDPOINT_URL)")
    parser.add_argument("--region", help="AWS region (default: the AWS SDK's)")


def run(args: argparse.Namespace, console: Console) -> int:
    if not args.table:
        raise UsageError(f"no online store table: pass --table or set {TABLE_ENVIRONMENT}")
    if not args.bucket and not (args.raw and args.feature_log):
        raise UsageError(f"no offline store: pass --bucket (or set {BUCKET_ENVIRONMENT}), or "
                         "--raw and --feature-log")
    import boto3

    from fastbreak.cli._progress import RichProgress
    from fastbreak.offline.consistency import (
        ConsistencyError,
        ConsistencyRequest,
        check_consistency,
        recent,
    )
    from fastbreak.offline.raw_files import S3Options

    since, until = recent(time.time_ns() // 1_000_000, round(args.lookback_minutes * 60_000),
                          round(args.settle_minutes * 60_000))
    request = ConsistencyRequest(
        raw=args.raw or f"s3://{args.bucket}/raw",
        feature_log=args.feature_log or f"s3://{args.bucket}/features",
        table=args.table, since_ms=since, until_ms=until,
        groups=tuple(g for given in args.groups for g in given.split(",") if g),
        sample=args.sample, all_windows=args.all_windows, seed=args.seed,
        max_window_ms=args.max_window_hours * 3_600_000 if args.max_window_hours else None,
        s3=S3Options(args.endpoint_url, args.region),
    )
    dynamodb = boto3.client("dynamodb", endpoint_url=args.endpoint_url, region_name=args.region)
    with RichProgress(console) as progress:
        try:
            report = check_consistency(request, dynamodb, progress=progress)
        except ConsistencyError as error:
            raise UsageError(str(error)) from None
    for line in report_lines(report):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report_json(report), out, indent=2)
            out.write("\n")
    if args.fail_below is not None and report.lowest_rate * 100 < args.fail_below:
        return BELOW_TARGET
    return 0


def report_lines(report: ConsistencyReport) -> list[str]:
    """The report as a terminal shows it: one line per feature, then the totals."""
    if not report.checked:
        skipped = "".join(f", {count} {reason}" for reason, count in report.skipped.items())
        return [f"consistency: no entity written in the range to check ({report.candidates} "
                f"candidates{skipped})"]
    width = max(len(f.feature) for f in report.features)
    lines = [f"{f.feature:<{width}}  {f.rate:7.2%}  {f.matched:,} / {f.checked:,}"
             for f in report.features]
    lowest = min(report.features, key=lambda f: f.rate)
    skipped = "".join(f"; {count} skipped: {reason}" for reason, count in report.skipped.items())
    lines.append(
        f"consistency: {report.rate:.2%} of {report.checked:,} values matched exactly "
        f"({report.entities:,} entities; lowest {lowest.feature} {lowest.rate:.2%}){skipped}")
    lines.extend(f"mismatch: {m.feature} of {m.entity_key} at {m.at_ms}: served {m.online!r}, "
                 f"recomputed {m.offline!r}" for m in report.mismatches[:5])
    return lines


def report_json(report: ConsistencyReport) -> dict[str, Any]:
    return {
        "rate": report.rate, "lowest_rate": report.lowest_rate, "values": report.checked,
        "matched": report.matched, "entities": report.entities,
        "skipped": report.skipped,
        "features": {f.feature: {"rate": f.rate, "checked": f.checked, "matched": f.matched}
                     for f in report.features},
        "mismatches": [{"feature": m.feature, "entity_key": m.entity_key, "at_ms": m.at_ms,
                        "served": repr(m.online), "recomputed": repr(m.offline)}
                       for m in report.mismatches],
    }
