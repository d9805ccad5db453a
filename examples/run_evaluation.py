#!/usr/bin/env python
"""Score fine-tuned checkpoints for concept forgetting on many benchmarks (LDIFS paper, Table 3).

    python examples/run_evaluation.py --checkpoint runs/eurosat-lp-ldifs --datasets all
    python examples/run_evaluation.py --checkpoint lp-ft=runs/a flyp=runs/b --datasets cifar10,mnist \
        --dataset_path cifar10=/data/cifar10 mnist=/data/mnist --output_dir reports/eurosat

Writes results.json, results.csv, results.md (fine-tune task x eval task rows, one column per method,
cells "Δ_ZS / Δ_LP" and A_FT) and PNG plots of Δ_LP and the distances over training (a run directory's
`checkpoint-N` folders are its points along training). A single `.json` argument is read as a config file.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from ldifs_hf.data import parse_benchmark_list, parse_dataset_paths
from ldifs_hf.evaluation import CheckpointError, ConceptForgettingEvaluator
from ldifs_hf.report import evaluate_checkpoints, resolve_checkpoints, write_report

logger = logging.getLogger(__name__)


@dataclass
class EvaluationArguments:
    checkpoint: list[str] = field(
        default_factory=list,
        metadata={"help": "Checkpoints or run directories, each 'path' or 'method=path' (method default: the run's ldifs_run.json, else the folder name)."},
    )
    datasets: str = field(default="all", metadata={"help": "'all' (every registered benchmark) or a comma-separated list of benchmark names."})
    dataset_path: list[str] = field(
        default_factory=list, metadata={"help": "Local copies of benchmarks, each 'name=path' (save_to_disk folder or parquet files)."}
    )
    pretrained: str | None = field(
        default=None, metadata={"help": "Pretrained CLIP (directory or Hub id); default: the base model the first checkpoint records."}
    )
    output_dir: str = field(default="concept_forgetting_report", metadata={"help": "Where results and plots are written."})
    include_intermediate: bool = field(default=True, metadata={"help": "Also score a run directory's checkpoint-N folders (points along training)."})
    text_tower: str = field(default="pretrained", metadata={"help": "Zero-shot heads from the 'pretrained' text tower (official) or the 'checkpoint' own (FLYP)."})
    lp_solver: str = field(default="adamw", metadata={"help": "Linear-probe solver: 'adamw' (official protocol) or 'logistic' (scikit-learn)."})
    lp_iterations: int = field(default=1000, metadata={"help": "Full-batch iterations of the linear probe."})
    distances: bool = field(default=True, metadata={"help": "Also compute parameter and feature distances to the pretrained model."})
    feature_distance_samples: int = field(default=256, metadata={"help": "Test examples per benchmark for the feature distance."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on each benchmark's linear-probe training set."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on each benchmark's test set."})
    batch_size: int = field(default=256, metadata={"help": "Feature-extraction batch size."})
    num_workers: int = field(default=4, metadata={"help": "DataLoader workers decoding and preprocessing images."})
    device: str | None = field(default=None, metadata={"help": "Device (default: cuda when available)."})
    seed: int = field(default=0, metadata={"help": "Seed of the validation split, subsampling and linear probe."})
    cache_dir: str | None = field(default=None, metadata={"help": "Cache folder for models and datasets."})


def parse_args(argv=None) -> EvaluationArguments:
    parser = HfArgumentParser(EvaluationArguments)
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        (args,) = parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    else:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
    return args


def main(argv=None) -> dict:
    # 1. Arguments, validated before any model or data is loaded.
    args = parse_args(argv)
    if not args.checkpoint:
        raise ValueError("--checkpoint is required: one or more checkpoint or run directories ('path' or 'method=path')")
    dataset_paths = parse_dataset_paths(args.dataset_path)
    benchmarks = parse_benchmark_list(args.datasets)  # unknown names: the registry's error

    # 2. Logging.
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)

    # 3. Checkpoints, with the method, fine-tuning task and base model their runs recorded.
    entries = resolve_checkpoints(args.checkpoint, include_intermediate=args.include_intermediate)
    pretrained = args.pretrained or next((e.base_model for e in entries if e.base_model), None)
    if pretrained is None:
        raise CheckpointError("no --pretrained given and no checkpoint records its base model (ldifs_run.json 'base_model'); pass --pretrained")
    logger.info("evaluating %d checkpoint(s) against %s on %s", len(entries), pretrained, ", ".join(benchmarks))

    # 4. The evaluator: the pretrained model (text tower, reference of Δ and distances) and the data.
    evaluator = ConceptForgettingEvaluator(
        pretrained,
        dataset_paths=dataset_paths,
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=args.device,
        lp_solver=args.lp_solver,
        lp_iterations=args.lp_iterations,
        text_tower=args.text_tower,
        feature_distance_samples=args.feature_distance_samples,
        seed=args.seed,
        cache_dir=args.cache_dir,
    )

    # 5. Score the pretrained model once, then every checkpoint (features extracted once per pair).
    pretrained_accuracies = evaluator.pretrained_accuracies(benchmarks)
    records = evaluate_checkpoints(evaluator, entries, benchmarks, distances=args.distances)

    # 6. Results: JSON, CSV, Markdown table and plots.
    paths = write_report(
        records, args.output_dir, pretrained=pretrained, pretrained_accuracies=pretrained_accuracies, benchmarks=benchmarks
    )
    for name, path in paths.items():
        logger.info("wrote %s: %s", name, path)
    return {"records": records, "pretrained_accuracy": pretrained_accuracies, "paths": paths}


if __name__ == "__main__":
    main()
