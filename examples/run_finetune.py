#!/usr/bin/env python
"""Fine-tune a CLIP model on one benchmark with one of the paper's methods.

    accelerate launch examples/run_finetune.py --method lp-init-ldifs --dataset eurosat \
        --model_name_or_path openai/clip-vit-base-patch32 --output_dir runs/eurosat-lp-ldifs

Offline: `--model_name_or_path` takes a local directory and `--dataset_path` a local copy of the data
(`save_to_disk` folder or parquet files). Mixed precision and multi-GPU come from accelerate/Trainer
(`--bf16`, `accelerate launch --num_processes N`). A single `.json` argument is read as a config file.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

import transformers
from transformers import CLIPModel, CLIPProcessor, HfArgumentParser

from ldifs_hf import LDIFSTrainer, LDIFSTrainingArguments
from ldifs_hf.config import check_output_dir
from ldifs_hf.finetune import as_classifier, build_collator, build_model, classifier_accuracy
from ldifs_hf.hub import push_clip_to_hub, write_model_card
from ldifs_hf.modeling import export_clip_model

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="openai/clip-vit-base-patch32", metadata={"help": "CLIP model id on the Hub or a local directory."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache downloaded models and data."})
    lp_solver: str = field(default="adamw", metadata={"help": "Linear-probe solver for LP-init: adamw (official) or logistic."})
    lp_iterations: int = field(default=1000, metadata={"help": "Full-batch iterations of the linear probe."})


@dataclass
class DataArguments:
    dataset: str = field(default="eurosat", metadata={"help": "A registered benchmark (ldifs_hf.list_benchmarks()) or 'custom'."})
    dataset_path: str | None = field(
        default=None,
        metadata={"help": "Local copy of the data: a save_to_disk folder, parquet files/glob or an image folder "
                  "(also found as $LDIFS_DATA_DIR/<name>)."},
    )
    image_column: str | None = field(default=None, metadata={"help": "Image column (default: the benchmark's)."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (default: the benchmark's)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep at most this many training images."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep at most this many validation/test images."})
    validation_fraction: float = field(default=0.1, metadata={"help": "Fraction of train held out for validation."})
    validation_seed: int = field(default=0, metadata={"help": "Seed of the validation split (paper protocol: 0)."})
    forgetting_benchmarks: str | None = field(
        default=None,
        metadata={"help": "Track concept forgetting during training on these benchmarks ('all' or 'a,b'): ZS/LP "
                  "accuracy, deltas and distances every --forgetting_every_percent of training."},
    )
    forgetting_every_percent: float = field(default=20.0, metadata={"help": "Spacing of the forgetting evaluations."})
    forgetting_dataset_paths: list[str] = field(
        default_factory=list, metadata={"help": "Local copies of the forgetting benchmarks: name=path entries."}
    )
    forgetting_max_samples: int | None = field(
        default=None, metadata={"help": "Cap on each forgetting benchmark's LP-train and test sets."}
    )
    epochs_from_benchmark: bool = field(
        default=True, metadata={"help": "Use the benchmark's epoch count (paper) unless --num_train_epochs or --max_steps is given."}
    )


def parse_args(argv=None):
    parser = HfArgumentParser((ModelArguments, DataArguments, LDIFSTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if data_args.epochs_from_benchmark and "--num_train_epochs" not in argv and training_args.max_steps <= 0:
        from ldifs_hf.benchmarks import get_benchmark

        if data_args.dataset != "custom":
            training_args.num_train_epochs = get_benchmark(data_args.dataset).epochs
    return model_args, data_args, training_args


def main(argv=None):
    # 1. Arguments, validated before anything expensive happens.
    model_args, data_args, training_args = parse_args(argv)
    if training_args.method is None:
        raise ValueError("--method is required; see ldifs_hf.list_methods()")
    spec = training_args.method_spec
    check_output_dir(training_args.output_dir, training_args.overwrite_output_dir)
    if model_args.lp_solver not in ("adamw", "logistic"):
        raise ValueError(f"--lp_solver must be 'adamw' or 'logistic', got {model_args.lp_solver!r}")
    from ldifs_hf.data import image_transform, load_benchmark, parse_benchmark_list, parse_dataset_paths

    forgetting_benchmarks = parse_benchmark_list(data_args.forgetting_benchmarks) if data_args.forgetting_benchmarks else []
    forgetting_paths = parse_dataset_paths(data_args.forgetting_dataset_paths)

    # 2. Logging.
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    logger.info("method %s (%s)", spec.name, spec)

    # 3. Data: the benchmark's train/validation/test splits, class names and prompt templates.
    benchmark = load_benchmark(
        data_args.dataset,
        data_path=data_args.dataset_path,
        image_column=data_args.image_column,
        label_column=data_args.label_column,
        max_train_samples=data_args.max_train_samples,
        max_eval_samples=data_args.max_eval_samples,
        validation_fraction=data_args.validation_fraction,
        seed=data_args.validation_seed,
        cache_dir=model_args.cache_dir,
    )

    # 4. Pretrained CLIP and its processor.
    try:
        clip_model = CLIPModel.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
        processor = CLIPProcessor.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
    except OSError as err:
        raise OSError(
            f"could not load CLIP model {model_args.model_name_or_path!r}: download it first "
            f"(`hf download {model_args.model_name_or_path}`) or pass a local directory ({err})"
        ) from err
    transform = image_transform(processor.image_processor)
    for split in benchmark.splits.values():
        split.set_transform(transform)
    train_dataset, eval_dataset = benchmark.splits["train"], benchmark.splits["validation"]

    # 5. The model the method trains (ZS or LP head over the vision tower, or CLIP itself for FLYP).
    with training_args.main_process_first(desc="head initialisation"):
        model = build_model(
            spec, clip_model, processor.tokenizer, benchmark.class_names, benchmark.templates, train_dataset,
            lp_solver=model_args.lp_solver, lp_iterations=model_args.lp_iterations, seed=training_args.seed,
        )
    collator = build_collator(spec, processor.tokenizer, benchmark.class_names, benchmark.templates, seed=training_args.seed)

    # 6. Train. The Hub push happens below, as a stock CLIPModel, not the Trainer's classifier.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    trainer = LDIFSTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset if training_args.eval_strategy != "no" else None,
        data_collator=collator,
        processing_class=processor,
    )
    if forgetting_benchmarks:
        from ldifs_hf.callbacks import ConceptForgettingCallback
        from ldifs_hf.evaluation import ConceptForgettingEvaluator

        evaluator = ConceptForgettingEvaluator(
            clip_model if spec.head_init else model_args.model_name_or_path,
            processor=processor,
            dataset_paths={data_args.dataset: data_args.dataset_path, **forgetting_paths} if data_args.dataset_path else forgetting_paths,
            max_train_samples=data_args.forgetting_max_samples,
            max_eval_samples=data_args.forgetting_max_samples,
            lp_solver=model_args.lp_solver,
            lp_iterations=model_args.lp_iterations,
            cache_dir=model_args.cache_dir,
        )
        trainer.add_callback(
            ConceptForgettingCallback(
                evaluator, forgetting_benchmarks, every_percent=data_args.forgetting_every_percent,
                finetune_benchmark=benchmark.spec.name if benchmark.spec.name in forgetting_benchmarks else None,
                trainer=trainer, method=spec.name,
            )
        )
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()

    # 7. Accuracy of the fine-tuned classifier on its own task (A_FT), on validation and test.
    results = {}
    if trainer.is_world_process_zero():
        classifier = as_classifier(trainer.model, processor.tokenizer, benchmark.class_names, benchmark.templates)
        results = {
            "validation_accuracy": classifier_accuracy(classifier, eval_dataset, training_args.per_device_eval_batch_size),
            "test_accuracy": classifier_accuracy(classifier, benchmark.splits["test"], training_args.per_device_eval_batch_size),
        }
        trainer.log_metrics("eval", results)
        trainer.save_metrics("eval", results)

        # 8. Export the encoder as a stock CLIPModel (loads with CLIPModel.from_pretrained and in the
        #    zero-shot pipeline), with a model card stating the method, λ, dataset and results.
        export_dir = os.path.join(training_args.output_dir, "clip")
        export_clip_model(trainer.model, model_args.model_name_or_path, export_dir)
        info = {
            "method": spec.name,
            "regularizer": training_args.regularizer,
            "ldifs_lambda": training_args.ldifs_lambda,
            "l2sp_lambda": training_args.l2sp_lambda,
            "ldifs_layers": trainer.ldifs_layers if training_args.regularizer == "ldifs" else None,
            "ldifs_normalization": training_args.ldifs_normalization,
            "dataset": benchmark.spec.name,
            "dataset_splits": "train minus a {:.0%} validation split (seed {}), test = '{}'".format(
                data_args.validation_fraction, data_args.validation_seed, benchmark.spec.test_split
            ),
            "base_model": model_args.model_name_or_path,
            "text_tower": "fine-tuned (FLYP)" if spec.uses_text_tower else "pretrained",
            "results": results,
        }
        for directory in (training_args.output_dir, export_dir):
            write_model_card(directory, info, repo_id=training_args.hub_model_id)
        if push_to_hub:
            repo_id = training_args.hub_model_id or os.path.basename(os.path.abspath(training_args.output_dir))
            url = push_clip_to_hub(export_dir, repo_id, token=training_args.hub_token, private=training_args.hub_private_repo)
            logger.info("pushed %s to %s", export_dir, url)
    return results


if __name__ == "__main__":
    main()
