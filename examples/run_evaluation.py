#!/usr/bin/env python
"""Score fine-tuned checkpoints for concept forgetting on many benchmarks (`ldifs-hf evaluate`).

    python examples/run_evaluation.py --checkpoint runs/eurosat-lp-ldifs --datasets all

The work is done by the library (`ldifs_hf.cli`); this script only forwards its arguments. Run with
`--help` for the options and `--debug` for a traceback instead of a one-line error.
"""

import sys

from ldifs_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
