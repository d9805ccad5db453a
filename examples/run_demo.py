#!/usr/bin/env python
"""The embedded default: concept forgetting on a laptop CPU, with no downloads (`ldifs-hf demo`).

    python examples/run_demo.py --output_dir runs/demo

The work is done by the library (`ldifs_hf.cli`); this script only forwards its arguments. Run with
`--help` for the options and `--debug` for a traceback instead of a one-line error.
"""

import sys

from ldifs_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
