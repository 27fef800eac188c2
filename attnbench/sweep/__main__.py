"""`python -m attnbench.sweep SWEEP_DIR`: (re)write and print the summary of a sweep."""
import sys

from .callback import main

sys.exit(main())
