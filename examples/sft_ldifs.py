#!/usr/bin/env python
"""Supervised fine-tuning of a causal LM with trl's SFTTrainer plus the LDIFS feature term.

    pip install trl
    python examples/sft_ldifs.py --model_name_or_path Qwen/Qwen2.5-0.5B --dataset_name trl-lib/Capybara \
        --output_dir runs/sft-ldifs --ldifs_lambda 10 --max_steps 500

Every SFTConfig option works; the LDIFS fields (`--regularizer`, `--ldifs_lambda`, `--ldifs_layers`,
`--keep_student_dropout`, ...) come from `LDIFSArgumentsMixin`. The teacher is a frozen copy of the
model's base (decoder) as loaded, or, with `--use_peft`, the model itself with its LoRA adapters
disabled. Logged next to SFT's own metrics: `loss_task` and `loss_ldifs`.
"""

from dataclasses import dataclass, field

from datasets import load_dataset
from transformers import HfArgumentParser
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from ldifs_hf import LDIFSArgumentsMixin, LDIFSMixin


@dataclass
class LDIFSSFTConfig(LDIFSArgumentsMixin, SFTConfig):
    """SFTConfig with the LDIFS fields."""


class LDIFSSFTTrainer(LDIFSMixin, SFTTrainer):
    """SFTTrainer whose loss adds the LDIFS (or L2SP) term."""


@dataclass
class ScriptArguments:
    dataset_name: str = field(default="trl-lib/Capybara", metadata={"help": "Dataset on the Hub or a local path."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})


def main():
    script_args, training_args, model_args = HfArgumentParser((ScriptArguments, LDIFSSFTConfig, ModelConfig)).parse_args_into_dataclasses()
    dataset = load_dataset(script_args.dataset_name, split=script_args.dataset_train_split)
    trainer = LDIFSSFTTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=dataset,
        peft_config=get_peft_config(model_args),
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)


if __name__ == "__main__":
    main()
