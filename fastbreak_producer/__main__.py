"""``python -m fastbreak_producer``; needs ``lambdas/`` on PYTHONPATH, as every Make target sets."""

from fastbreak_producer.cli import main

raise SystemExit(main())
