"""`python -m attnbench.report PATH [PATH ...]`."""
import sys

from .cli import main

sys.exit(main())
