#!/usr/bin/env python
"""Supervised fine-tuning of a causal LM with trl's SFTTrainer plus the LDIFS feature term.

    pip install trl
    python examples/sft_ldifs.py --model_name_or_path Qwen/Qwen2.5-0.5B --dataset_name trl-lib/Capybara \
        --output_dir runs/sft-ldifs --ldifs_lambda 10 --max_steps 500

Every SFTConfig option works; the LDIFS fields (`--regularizer`, `--ldifs_lambda`, `--ldifs_layers`,
`--keep_student_dropout`, `--teacher_dtype`, ...) come from `LDIFSArgumentsMixin`. `--dataset_name` is a
dataset on the Hub or a folder `Dataset.save_to_disk` wrote. bf16 is on where the GPU supports it (trl turns
it on everywhere, which stops a CPU-only machine); `--bf16 true/false` decides. The teacher is a frozen copy
of the model's base (decoder) as loaded, in the student's dtype, or, with `--use_peft`, the model itself with
its LoRA adapters disabled. Logged next to SFT's own metrics: `loss_task` and `loss_ldifs`.
"""

import os
from dataclasses import dataclass, field

from datasets import DatasetDict, load_dataset, load_from_disk
from transformers import HfArgumentParser
from transformers.utils import is_torch_bf16_gpu_available
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from ldifs_hf import LDIFSArgumentsMixin, LDIFSMixin


@dataclass
class LDIFSSFTConfig(LDIFSArgumentsMixin, SFTConfig):
    """SFTConfig with the LDIFS fields; bf16 by default only where the GPU supports it."""

    def __post_init__(self):
        if self.bf16 is None:
            self.bf16 = not self.fp16 and is_torch_bf16_gpu_available()
        super().__post_init__()


class LDIFSSFTTrainer(LDIFSMixin, SFTTrainer):
    """SFTTrainer whose loss adds the LDIFS (or L2SP) term."""


@dataclass
class ScriptArguments:
    dataset_name: str = field(
        default="trl-lib/Capybara", metadata={"help": "Dataset on the Hub, or a folder written by Dataset.save_to_disk."}
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})


def load_train_split(name: str, split: str):
    """`split` of a `save_to_disk` folder (a `DatasetDict`'s split, or the `Dataset` itself), else of a Hub dataset."""
    if not os.path.isdir(name):
        return load_dataset(name, split=split)
    dataset = load_from_disk(name)
    if not isinstance(dataset, DatasetDict):
        return dataset
    if split not in dataset:
        raise SystemExit(f"error: {name} has no split {split!r}; it has {', '.join(dataset)} (--dataset_train_split)")
    return dataset[split]


def main(argv=None):
    parser = HfArgumentParser((ScriptArguments, LDIFSSFTConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_into_dataclasses(args=argv)
    trainer = LDIFSSFTTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=load_train_split(script_args.dataset_name, script_args.dataset_train_split),
        peft_config=get_peft_config(model_args),
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)
    return trainer


if __name__ == "__main__":
    main()
