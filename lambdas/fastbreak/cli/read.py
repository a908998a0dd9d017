"""``fastbreak read ENTITY_TYPE ENTITY_ID``: an entity's features, read from the online store the
way the feature API reads them (``FeatureClient``), printed as the API's JSON answer.

The table comes from ``--table`` or ``FASTBREAK_ONLINE_TABLE`` (which ``source
.fastbreak/local.env`` sets for the local platform); region, endpoint and credentials are the AWS
SDK's own settings.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from fastbreak.cli import UsageError

if TYPE_CHECKING:
    from rich.console import Console

NAME = "read"
HELP = "read an entity's features from the online store, as the feature API answers"
TABLE_ENVIRONMENT = "FASTBREAK_ONLINE_TABLE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("entity_type", help="user, game, team or content")
    parser.add_argument("entity_id")
    parser.add_argument("--features", nargs="+", metavar="NAME", default=None,
                        help="group or group.feature names (default: every group of the entity)")
    parser.add_argument("--table", default=os.environ.get(TABLE_ENVIRONMENT), metavar="NAME",
                        help=f"the online store table (default: ${TABLE_ENVIRONMENT})")


def run(args: argparse.Namespace, console: Console) -> int:
    if not args.table:
        raise UsageError(f"no online store table: pass --table or set {TABLE_ENVIRONMENT}")
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from fastbreak.definitions import CATALOG
    from fastbreak.serving import FeatureClient
    from fastbreak.serving.request import InvalidRequest, RequestValidator
    from fastbreak.serving.response import json_text, single_json

    try:  # the request first: a mistake in it is reported before any AWS setting is needed
        request = RequestValidator(CATALOG).single(args.entity_type, args.entity_id,
                                                   args.features)
    except InvalidRequest as error:
        raise UsageError(str(error)) from None
    try:
        result = FeatureClient(boto3.client("dynamodb"), args.table, concurrency=4).read(request)
    except (BotoCoreError, ClientError) as error:
        raise UsageError(f"cannot read table {args.table!r}: {error}") from None
    print(json_text(single_json(result)))
    return 0
