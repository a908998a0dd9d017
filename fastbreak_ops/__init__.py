"""Operations commands for Fastbreak's on-call and platform teams: ``redrive`` replays the
processor's on-failure queue, ``cost`` prices a deployment from measured ratios.

Each module exposes ``main(argv) -> int`` and runs as ``python -m fastbreak_ops.<name>``.
"""
