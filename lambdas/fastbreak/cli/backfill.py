"""``fastbreak backfill``: fill a new or changed feature group's online state from the raw table.

See ``docs/training-sets.md`` ("Backfill"). The stream processor folds a feature slot it meets
for the first time only from its cut-over on; this command folds the history before it into the
online store, with the same fold and the processor's rules. Safe to run again: a re-run, or a
run after a crash, writes only what is missing.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from fastbreak.cli import UsageError, minutes
from fastbreak.cli.training_set import RAW_ENVIRONMENT

if TYPE_CHECKING:
    from rich.console import Console

NAME = "backfill"
HELP = "fill new or changed feature groups' online state from the raw events table"
TABLE_ENVIRONMENT = "FASTBREAK_ONLINE_TABLE"
BUCKET_ENVIRONMENT = "FASTBREAK_OFFLINE_BUCKET"
INCOMPLETE = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--groups", required=True, nargs="+", metavar="GROUP",
                        help="the feature groups to backfill (space or comma separated)")
    parser.add_argument("--table", default=os.environ.get(TABLE_ENVIRONMENT), metavar="NAME",
                        help=f"the online store table (default: ${TABLE_ENVIRONMENT})")
    parser.add_argument("--bucket", default=os.environ.get(BUCKET_ENVIRONMENT), metavar="NAME",
                        help="the offline store bucket, where the writes are logged under "
                        f"features/ (default: ${BUCKET_ENVIRONMENT})")
    parser.add_argument("--raw", default=os.environ.get(RAW_ENVIRONMENT),
                        metavar="PATH_OR_S3_URL",
                        help=f"the raw events table: a folder or s3://bucket/raw (default: "
                        f"${RAW_ENVIRONMENT}, else s3://BUCKET/raw)")
    parser.add_argument("--settle-minutes", type=minutes, default=20, metavar="MINUTES",
                        help="how long after a cut-over the raw table holds every record "
                        "before it (default 20: Firehose delivers within 15)")
    parser.add_argument("--dry-run", action="store_true",
                        help="show the cut-overs and how many entities each group has before "
                        "them; write nothing")
    parser.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"),
                        metavar="URL", help="AWS endpoint, e.g. the local platform's (default: "
                        "$AWS_ENDPOINT_URL)")
    parser.add_argument("--region", help="AWS region (default: the AWS SDK's)")


def run(args: argparse.Namespace, console: Console) -> int:
    if not args.table:
        raise UsageError(f"no online store table: pass --table or set {TABLE_ENVIRONMENT}")
    if not args.bucket:
        raise UsageError(f"no offline store bucket: pass --bucket or set {BUCKET_ENVIRONMENT}")
    raw = args.raw or f"s3://{args.bucket}/raw"
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from fastbreak.cli._progress import RichProgress
    from fastbreak.engine.sinks import S3Sink
    from fastbreak.engine.timestamps import format_ms
    from fastbreak.offline.backfill import (
        Backfill,
        BackfillError,
        BackfillIncomplete,
        BackfillRequest,
    )
    from fastbreak.offline.raw_files import S3Options

    request = BackfillRequest(
        groups=tuple(dict.fromkeys(g for given in args.groups for g in given.split(",") if g)),
        raw=raw, table=args.table, s3=S3Options(args.endpoint_url, args.region),
        settle_ms=int(args.settle_minutes * 60_000), dry_run=args.dry_run,
    )
    clients = {"endpoint_url": args.endpoint_url, "region_name": args.region}
    with RichProgress(console) as progress:
        try:
            backfill = Backfill(request, boto3.client("dynamodb", **clients),
                                S3Sink(boto3.client("s3", **clients), args.bucket),
                                progress=progress)
            summary = backfill.run()
        except BackfillError as error:
            raise UsageError(str(error)) from None
        except BackfillIncomplete as error:
            console.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
            return INCOMPLETE
        except (BotoCoreError, ClientError) as error:
            console.print(f"error: {str(error).splitlines()[0]}: run the backfill again, it "
                          "resumes where it stopped", markup=False, highlight=False,
                          soft_wrap=True)
            return INCOMPLETE
    for group in summary.groups:
        if not group.cutovers:
            line = f"{group.group}: live since the registry was created, nothing to backfill"
        else:
            cutovers = ", ".join(format_ms(at) for at in group.cutovers)
            entities = f"{group.entities:,} entities"
            if args.dry_run:
                line = (f"{group.group}: would backfill {len(group.slots)} slots, records "
                        f"before {cutovers}, {entities}")
            else:
                line = (f"{group.group}: backfilled {len(group.slots)} slots with the records "
                        f"before {cutovers}: {entities}, {group.items_written:,} item writes, "
                        f"{group.already_done:,} items already done, {group.too_large:,} too "
                        "large")
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    return 0
