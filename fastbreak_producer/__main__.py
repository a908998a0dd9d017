"""``python -m fastbreak_producer`` (``.venv/bin/python`` has the repository on its path)."""

from fastbreak_producer.cli import main

raise SystemExit(main())
