"""python -m prefork: the prefork command (cli.py)."""

import sys

from .cli import main

sys.exit(main())
