"""The embedded local platform: the synthesized templates and the real handlers, no AWS account.

``python -m localplatform demo`` synthesizes the CDK app, deploys its templates into an
embedded moto server, and emulates what moto does not run (Lambda event source mappings,
Kinesis-sourced Firehose, alarm evaluation, the API Gateway front door); ``serve`` keeps it up
for other programs, which find it through ``.fastbreak/local.env``. The AWS fakes that tests and
benchmarks use live here too. See ``docs/local-platform.md``.
"""
