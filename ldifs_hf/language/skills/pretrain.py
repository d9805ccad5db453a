"""Pre-train the skills world's tiny causal LM on the mixture of the old skills, and cache it on disk.

A character-level tokenizer is trained with the `tokenizers` library on the skills' text (the new
skill's letters included, so fine-tuning needs no new tokens) and saved as a `PreTrainedTokenizerFast`
beside a tiny `LlamaForCausalLM`, both with `save_pretrained`, under a folder named by a hash of the
settings: a later run with the same settings loads them, through the same `from_pretrained` path a
Hub checkpoint takes.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import numpy as np
import torch

from ...utils import torch_threads
from ...world.pretrain import descend, warmup_cosine
from ...world.settings import cached_folder
from .generator import OLD_SKILLS, SKILLS, Skill, SkillsWorld
from .settings import SkillsSettings, skills_cache_dir

MODEL_FOLDER = "model"
PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
# Every character a skill can write, so the tokenizer covers them whatever the draws.
ALPHABET = string.ascii_letters + string.digits + " +=\n"
_PRETRAIN_STREAM, TEST_STREAM = 0, 1


def train_char_tokenizer(texts):
    """A character-level `PreTrainedTokenizerFast` (one token per character, <pad> <eos> <unk>) trained on
    `texts` and the skills' alphabet; it decodes back to the exact text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")  # every character its own piece
    tok.decoder = decoders.Fuse()  # joined back without spaces
    tok.train_from_iterator([ALPHABET, *texts], trainers.WordLevelTrainer(special_tokens=[PAD, EOS, UNK], show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK)


def skills_model_config(tokenizer, settings: SkillsSettings, max_positions: int = 64):
    """The tiny Llama: `settings.num_layers` x `settings.hidden_size`, no dropout, untied embeddings."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=settings.hidden_size, intermediate_size=4 * settings.hidden_size,
        num_hidden_layers=settings.num_layers, num_attention_heads=settings.num_heads, num_key_value_heads=settings.num_heads,
        max_position_embeddings=max_positions, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )


def evaluation_items(world: SkillsWorld, skill: Skill, size: int) -> list[tuple[str, str]]:
    """A skill's test items: a finite skill's whole table (or `size` distinct facts of it when larger),
    else `size` distinct draws of its test stream."""
    if skill.finite:
        table = world.table(skill)
        if len(table) <= size:
            return table
        rng = np.random.default_rng([world.seed, TEST_STREAM, len(table)])
        return [table[i] for i in sorted(rng.choice(len(table), size=size, replace=False))]
    items: dict[str, str] = {}
    stream = TEST_STREAM
    while len(items) < size:  # distinct prompts: a repeated item would weigh twice
        for prompt, answer in world.sample(skill, size, stream):
            if len(items) < size:
                items.setdefault(prompt, answer)
        stream += 1000
    return list(items.items())


def pretraining_lines(world: SkillsWorld, settings: SkillsSettings) -> list[str]:
    """`pretrain_pool` lines per old skill. An open-ended skill (copy, reverse) never shows a test item;
    a finite one (add, capital) is a table of facts the model must know, so its test is that table."""
    lines = []
    for skill in OLD_SKILLS:
        held_out = set() if skill.finite else {p for p, _ in evaluation_items(world, skill, settings.test_size)}
        drawn = [(p, a) for p, a in world.sample(skill, settings.pretrain_pool, _PRETRAIN_STREAM) if p not in held_out]
        lines += [skill.text(p, a) for p, a in drawn]
    return lines


@torch_threads(1)
def pretrain_skills_model(settings: SkillsSettings, output_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Train the tiny LM on the old skills' lines (next-token loss on every real token, each line ended
    by <eos>) and save model and tokenizer to `output_dir`."""
    from tqdm.auto import tqdm
    from transformers import LlamaForCausalLM

    world = settings.world()
    lines = pretraining_lines(world, settings)
    tokenizer = train_char_tokenizer(lines + [s.text(*item) for s in SKILLS for item in world.sample(s, 50, 99)])
    config = skills_model_config(tokenizer, settings)
    tokenizer.model_max_length = config.max_position_embeddings
    torch.manual_seed(settings.seed)
    model = LlamaForCausalLM(config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(settings.warmup_steps, settings.pretrain_steps))
    order = np.random.default_rng([settings.seed, 2])
    bar = tqdm(range(settings.pretrain_steps), desc="pre-training the skills LM", disable=not progress)
    for _ in bar:
        batch = tokenizer([lines[i] + EOS for i in order.integers(len(lines), size=settings.batch_size)], padding=True, return_tensors="pt")
        labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
        loss = model(**batch, labels=labels).loss
        descend(loss, model, optimizer, schedule)
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def pretrained_skills_model(
    settings: SkillsSettings | None = None, cache_dir: str | os.PathLike | None = None, *, force: bool = False, progress: bool = True
) -> Path:
    """The folder of the pre-trained skills LM for `settings`, training and caching it on first use
    (written to a temporary sibling and renamed into place; `force=True` trains again)."""
    settings = settings or SkillsSettings()
    target = skills_cache_dir(settings, cache_dir) / MODEL_FOLDER
    return cached_folder(target, lambda tmp: pretrain_skills_model(settings, tmp, progress=progress), force=force, what="the skills LM")
