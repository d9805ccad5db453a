"""Pre-train the world's tiny CLIP (its "foundation model") contrastively and cache it on disk.

The model and its processor are written with `save_pretrained` under a folder named by a hash of the
settings, so a later run with the same settings loads them instead of training again, through the same
`from_pretrained` path a hub checkpoint takes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from ..benchmarks.registry import fill_template
from ..console import console_stream
from ..tiny import tiny_clip_config, tiny_image_processor, train_clip_tokenizer
from .concepts import CONCEPTS
from ..utils import torch_threads
from .settings import WorldSettings, cached_folder, world_cache_dir

MODEL_FOLDER = "model"


def pixel_values(images: np.ndarray, image_mean, image_std) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> normalised float [N, 3, H, W], what the CLIP processor gives for images of its size."""
    mean = torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1)
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 - mean) / std


@torch_threads(1)
def pretrain_world_clip(settings: WorldSettings, output_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Train a tiny CLIP contrastively on fresh world captions and save model and processor to `output_dir`."""
    from tqdm.auto import tqdm
    from transformers import CLIPModel, CLIPProcessor

    world = settings.world()
    pairs = world.sample(settings.pretrain_images, split="train", stream=0)
    prompts = [fill_template(template, value) for concept in CONCEPTS for template in concept.templates for value in concept.values]
    tokenizer = train_clip_tokenizer(pairs.captions + prompts, vocab_size=settings.vocab_size)
    config = tiny_clip_config(
        tokenizer,
        image_size=settings.image_size,
        patch_size=settings.patch_size,
        hidden_size=settings.hidden_size,
        num_layers=settings.vision_layers,
        num_heads=settings.num_heads,
        projection_dim=settings.projection_dim,
    )
    config.text_config.num_hidden_layers = settings.text_layers
    tokenizer.model_max_length = config.text_config.max_position_embeddings
    image_processor = tiny_image_processor(settings.image_size)

    torch.manual_seed(settings.seed)
    model = CLIPModel(config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(settings.warmup_steps, settings.pretrain_steps))
    order = torch.Generator().manual_seed(settings.seed)
    caption_rng = np.random.default_rng([settings.seed, 1])

    bar = tqdm(range(settings.pretrain_steps), desc="pre-training world CLIP", disable=not progress, file=console_stream())
    for _ in bar:
        rows = torch.randint(len(pairs), (settings.batch_size,), generator=order).numpy()
        # A fresh caption per draw: the same image is described through different concept subsets.
        captions = world.captions({name: values[rows] for name, values in pairs.labels.items()}, caption_rng)
        text = tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
        images = pixel_values(pairs.images[rows], image_processor.image_mean, image_processor.image_std)
        loss = model(input_ids=text.input_ids, attention_mask=text.attention_mask, pixel_values=images, return_loss=True).loss
        descend(loss, model, optimizer, schedule)
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)

    model.eval()
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(output_dir)
    return output_dir


def descend(loss: torch.Tensor, model: torch.nn.Module, optimizer, schedule, max_norm: float = 1.0) -> None:
    """One training step: the gradients of `loss`, clipped to a total norm of `max_norm`, the optimizer's
    update and the schedule's."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    schedule.step()


def warmup_cosine(warmup_steps: int, total_steps: int):
    """The learning-rate factor of a step: linear warm-up over `warmup_steps`, then cosine decay to 0 at `total_steps`."""

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, warmup_steps))
        return warm * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))

    return factor


def pretrained_world_clip(
    settings: WorldSettings | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """The folder of the pre-trained world CLIP for `settings`, training and caching it on first use.

    The model is written to a temporary sibling and renamed into place, so an interrupted run never
    leaves a half-written cache behind; `force=True` trains again.
    """
    settings = settings or WorldSettings()
    target = world_cache_dir(settings, cache_dir) / MODEL_FOLDER
    return cached_folder(target, lambda tmp: pretrain_world_clip(settings, tmp, progress=progress), force=force, what="the world CLIP")
