#!/usr/bin/env python
"""Forgetting in a tiny language model, offline on a CPU: SFT on the skills world's new skill ("shift")
with trl's SFTTrainer and `LDIFSMixin`, under no regularizer, LDIFS, L2SP and the KL anchor at a few λ, then
every run scored on every skill against the pre-trained model (Δ per old skill, A_FT, held-out loss).

    pip install "ldifs_hf[trl,lm_eval]"
    python examples/skills_forgetting.py --output_dir runs/skills --max_steps 300 --lambdas ldifs=1,10 l2sp=0.1,1 kl=0.1,1

Each run's folder holds the model, its tokenizer and a run record (method, regularizer, λ, seed), which
the evaluation reads; the report is `<output_dir>/report/results.md`.
"""

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field

import torch
from datasets import load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser
from trl import SFTConfig, SFTTrainer

from ldifs_hf import LDIFSArgumentsMixin, LDIFSMixin, RunRecord
from ldifs_hf.language import evaluate_language_model
from ldifs_hf.language.skills import prepare_skills, skills_settings
from ldifs_hf.study.arguments import parse_lambda_sweeps
from ldifs_hf.training.arguments import weight_arguments
from ldifs_hf.utils import parse_seeds


@dataclass
class LDIFSSFTConfig(LDIFSArgumentsMixin, SFTConfig):
    """SFTConfig with the regularizer's fields."""


class LDIFSSFTTrainer(LDIFSMixin, SFTTrainer):
    """SFTTrainer whose loss adds the regularizer's term."""


@dataclass
class ExperimentArguments:
    output_dir: str = field(default="runs/skills_forgetting", metadata={"help": "Where the runs and the report go."})
    max_steps: int = field(default=300, metadata={"help": "SFT steps of every run."})
    batch_size: int = field(default=32, metadata={"help": "SFT batch size."})
    learning_rate: float = field(default=1e-3, metadata={"help": "SFT learning rate."})
    lambdas: list[str] = field(
        default_factory=lambda: ["ldifs=1,10", "l2sp=0.1,1", "kl=0.1,1"],
        metadata={"help": "The regularized runs: REGULARIZER=w1,w2,... entries (each weight one run per seed)."},
    )
    seeds: str = field(default="0", metadata={"help": "Training seeds, comma-separated."})
    save_steps: int = field(default=0, metadata={"help": "Also save (and score) a checkpoint every N steps (0: only the final model)."})
    size: str = field(default="default", metadata={"help": "Skills world size: default or quick."})
    cache_dir: str | None = field(default=None, metadata={"help": "Cache root (default: $LDIFS_HF_CACHE)."})


def fine_tune(skills, regularizer: str, lam: float | None, seed: int, args: ExperimentArguments) -> str:
    """One SFT run in its own folder, with a run record; returns the folder."""
    method = "sft" if regularizer == "none" else f"sft+{regularizer}"
    out = os.path.join(args.output_dir, method, "base" if lam is None else f"lambda-{lam:g}", f"seed-{seed}")
    weights = weight_arguments(regularizer, lam) if lam is not None else {}
    config = LDIFSSFTConfig(
        output_dir=out, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size, learning_rate=args.learning_rate,
        lr_scheduler_type="constant", warmup_steps=0, logging_steps=50,
        save_strategy="steps" if args.save_steps else "no", save_steps=args.save_steps or 500, save_only_model=True, report_to=[], use_cpu=True, bf16=False,
        disable_tqdm=True, seed=seed, data_seed=seed, max_length=64, regularizer=regularizer, **weights,
    )
    model = AutoModelForCausalLM.from_pretrained(skills.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(skills.model_dir)
    trainer = LDIFSSFTTrainer(model=model, args=config, train_dataset=load_from_disk(str(skills.sft_dir)), processing_class=tokenizer)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.save_model(out)
    trainer.save_state()  # trainer_state.json: the final model's step, so a checkpoint-N of that step is not scored twice
    RunRecord(method=method, dataset=skills.new_task, base_model=str(skills.model_dir), **trainer.regularizer_record(), output_dir=out, completed=True,
              settings={"seed": seed, "max_steps": args.max_steps, "learning_rate": args.learning_rate, "train_seconds": round(seconds, 1)}).save(out)
    print(f"{method} λ={lam} seed {seed}: {seconds:.1f} s of SFT, final loss {trainer.state.log_history[-2].get('loss')}", flush=True)
    return out


def main():
    (args,) = HfArgumentParser(ExperimentArguments).parse_args_into_dataclasses()
    torch.set_num_threads(1)
    start = time.perf_counter()
    skills = prepare_skills(skills_settings(args.size), args.cache_dir)
    print(f"skills world ready in {time.perf_counter() - start:.1f} s: {skills.model_dir}", flush=True)
    grid = [("none", None)]
    grid += [(regularizer, lam) for regularizer, weights in parse_lambda_sweeps([(e, "--lambdas") for e in args.lambdas]).items() for lam in weights]
    runs = [fine_tune(skills, regularizer, lam, seed, args) for seed in parse_seeds(args.seeds) for regularizer, lam in grid]
    start = time.perf_counter()
    result = evaluate_language_model(
        checkpoint=runs, pretrained=str(skills.model_dir), tasks=list(skills.tasks), task_dir=str(skills.task_dir),
        finetune_task=skills.new_task, retain=str(skills.retain_dir), output_dir=os.path.join(args.output_dir, "report"),
        overwrite_report=True, batch_size=64, cache_dir=args.cache_dir and os.path.join(args.cache_dir, "language-eval"),
    )
    print(f"evaluated {len(runs)} runs in {time.perf_counter() - start:.1f} s (base from cache: {result.base_from_cache})")
    print(open(result.paths["markdown"]).read())
    with open(os.path.join(args.output_dir, "experiment.json"), "w") as f:
        json.dump({"arguments": dataclasses.asdict(args), "runs": runs}, f, indent=2)


if __name__ == "__main__":
    main()
