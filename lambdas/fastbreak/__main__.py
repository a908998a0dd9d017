"""``python -m fastbreak COMMAND``: the offline tools (see ``fastbreak.cli``)."""

from fastbreak.cli import main

raise SystemExit(main())
