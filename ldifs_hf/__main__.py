"""`python -m ldifs_hf ...` is the `ldifs-hf` command."""

import sys

from .cli import main

sys.exit(main())
