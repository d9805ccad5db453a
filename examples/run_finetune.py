#!/usr/bin/env python
"""Fine-tune a CLIP model on one benchmark with one of the paper's methods (`ldifs-hf finetune`).

    accelerate launch examples/run_finetune.py --method lp-init-ldifs --dataset eurosat \\
        --model_name_or_path openai/clip-vit-base-patch32 --output_dir runs/eurosat-lp-ldifs

The work is done by the library (`ldifs_hf.cli`); this script only forwards its arguments. Run with
`--help` for the options and `--debug` for a traceback instead of a one-line error.
"""

import sys

from ldifs_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
