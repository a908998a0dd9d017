"""The embedded local platform: the synthesized templates and the real handlers, no AWS account.

``python -m localplatform demo`` synthesizes the CDK app, deploys its templates into an
embedded moto server, and emulates what moto does not run (Lambda event source mappings,
Kinesis-sourced Firehose, alarm evaluation, the API Gateway front door). See
``docs/local-platform.md``.
"""
