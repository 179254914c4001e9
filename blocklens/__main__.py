"""``python -m blocklens``: the command line, as the ``blocklens`` script runs it."""
import sys

from .cli import main

sys.exit(main())
