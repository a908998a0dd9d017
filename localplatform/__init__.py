"""The embedded local platform: Fastbreak without an AWS account (see docs, ARCHITECTURE §6)."""
