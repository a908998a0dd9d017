"""The application zip's entry point (Managed Flink's run option ``python``, as ``main.py`` at
the zip's root): the zip's ``python/`` folder on the path, then the job."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "python"))

from fastbreak_flink.job import main

if __name__ == "__main__":
    main()
