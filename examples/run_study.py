#!/usr/bin/env python
"""The paper's study as one command (`ldifs-hf study`): methods x fine-tune tasks (or sequences a>b)
x seeds, each cell fine-tuned and scored on the eval tasks, resumable, then Table 3 / Table 2 and figures.

    python examples/run_study.py --world quick --output_dir runs/world-study \
        --methods zs-init-ce,zs-init-l2sp,lp-init-ldifs --finetune_tasks world-digit,world-colour \
        --eval_tasks all --seeds 0,1 --max_steps 100 \
        --finetune_options '{"learning_rate": 1e-3, "per_device_train_batch_size": 32, "warmup_steps": 0}'
    python examples/run_study.py --output_dir runs/paper --seeds 0,1,2 --plan          # the paper's grid: what is left
    python examples/run_study.py --output_dir runs/paper --seeds 0,1,2 --launcher submitit --slurm_partition gpu

The work is done by the library (`ldifs_hf.study.run_study`); this script only forwards its arguments.
Run with `--help` for the options and `--debug` for a traceback instead of a one-line error.
"""

import sys

from ldifs_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["study", *sys.argv[1:]]))
