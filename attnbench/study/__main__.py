"""`python -m attnbench.study ...` (see cli.py)."""
import sys

from .cli import main

sys.exit(main())
