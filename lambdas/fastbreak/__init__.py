"""Fastbreak Lambda asset: feature definitions, the feature engine and thin handlers.

Nothing under ``fastbreak.definitions`` or ``fastbreak.engine`` imports CDK or boto3 at module
level, so the CDK app, the Lambdas, the local platform and the tests share one copy.
"""
