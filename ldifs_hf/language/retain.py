"""The held-out loss of a causal LM on a retain set: the cheap forgetting measure (peft's), the mean
negative log-likelihood per token of text the fine-tuning never saw, and its perplexity.

    loss = (1 / T) · Σ_texts Σ_{i ≥ 2} −log p(t_i | t_<i),   perplexity = exp(loss)

over the tokens t_1..t_n of each text as the tokenizer encodes it (its own special tokens included,
no end token added), T being the number of predicted tokens: a token-weighted mean, so a long text
counts per token, not per text. A text longer than `max_length` tokens is cut there (a warning says
how many were); a text of one token predicts nothing and adds nothing.

The retain set is a `datasets` Dataset (or DatasetDict), or paths: a `save_to_disk` folder, a folder of
.txt files, .txt files (one text per non-empty line), .json/.jsonl/.csv/.parquet files; its texts are in
`text_column` (texts in memory: `Dataset.from_dict({"text": texts})`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

_DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class RetainLoss:
    """Mean token NLL (nats), its perplexity, and the number of tokens and texts it averages."""

    loss: float
    perplexity: float
    tokens: int
    texts: int


def load_retain_texts(source, *, text_column: str = "text", split: str | None = None, max_samples: int | None = None) -> list[str]:
    """The retain set's texts (the first `max_samples` when given), from any of the module's sources."""
    if isinstance(source, (str, os.PathLike)):
        texts = _texts_from_path(os.fspath(source), text_column, split)
    elif isinstance(source, (list, tuple)) and all(isinstance(s, (str, os.PathLike)) for s in source):
        texts = [text for path in source for text in _texts_from_path(os.fspath(path), text_column, split)]
    else:
        texts = _column(_one_split(source, split, repr(type(source).__name__)), text_column, "the retain dataset")
    if max_samples is not None:
        if max_samples <= 0:
            raise ValueError(f"retain_max_samples must be > 0, got {max_samples}")
        texts = texts[:max_samples]
    if not texts:
        raise ValueError(f"the retain set {source if isinstance(source, (str, os.PathLike)) else type(source).__name__!r} holds no text")
    return texts


def _texts_from_path(path: str, text_column: str, split: str | None) -> list[str]:
    import datasets

    if not os.path.exists(path):
        raise FileNotFoundError(f"retain set {path!r} does not exist; pass a save_to_disk folder, .txt/.json/.jsonl/.csv/.parquet files or a dataset")
    if os.path.isdir(path):
        try:
            data = datasets.load_from_disk(path)
        except FileNotFoundError:
            text_files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".txt"))
            if not text_files:
                raise ValueError(f"retain set {path!r} is neither a save_to_disk folder nor a folder of .txt files") from None
            return [text for file in text_files for text in _lines(file)]
        return _column(_one_split(data, split, path), text_column, path)
    extension = os.path.splitext(path)[1].lower()
    if extension == ".txt":
        return _lines(path)
    if extension not in _DATA_FILE_BUILDERS:
        raise ValueError(f"retain set {path!r}: unknown file type {extension or '(none)'!r}; accepted: .txt, {', '.join(_DATA_FILE_BUILDERS)}")
    return _column(datasets.load_dataset(_DATA_FILE_BUILDERS[extension], data_files=path, split="train"), text_column, path)


def _lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def _one_split(data, split: str | None, where: str):
    """A Dataset as is; a DatasetDict's `split`, or its only split (several and none named: refused)."""
    if not hasattr(data, "keys"):
        if split is not None:
            raise ValueError(f"retain set {where} is one dataset without splits; drop retain_split={split!r}")
        return data
    splits = list(data.keys())
    if split is None and len(splits) == 1:
        return data[splits[0]]
    if split not in splits:
        raise ValueError(f"retain set {where} has splits {', '.join(splits)}; pass retain_split (one of them), got {split!r}")
    return data[split]


def _column(dataset, text_column: str, where: str) -> list[str]:
    if text_column not in dataset.column_names:
        raise ValueError(f"retain set {where} has no column {text_column!r}; its columns: {', '.join(dataset.column_names)} (pass retain_text_column)")
    texts = dataset[text_column]
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise ValueError(f"retain set {where}: column {text_column!r} holds a {type(bad).__name__}, not text")
    return list(texts)


def texts_digest(texts: Sequence[str]) -> str:
    """SHA-256 of the texts, in order (the retain set's part of the base model's cache key)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(len(text.encode()).to_bytes(8, "little"))
        digest.update(text.encode())
    return digest.hexdigest()


@torch.no_grad()
def held_out_loss(model, tokenizer, texts: Sequence[str], *, batch_size: int = 16, max_length: int | None = None) -> RetainLoss:
    """The mean token NLL and perplexity of `model` on `texts` (see the module docstring), in float32."""
    max_length = max_length or _model_max_length(model, tokenizer)
    encoded = [tokenizer(text)["input_ids"] for text in texts]
    cut = sum(len(ids) > max_length for ids in encoded)
    if cut:
        logger.warning("%d of %d retain texts are longer than %d tokens and are cut there", cut, len(encoded), max_length)
    encoded = [ids[:max_length] for ids in encoded if len(ids) >= 2]
    if not encoded:
        raise ValueError("no retain text has two tokens or more: the held-out loss predicts none")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    try:
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start : start + batch_size]
            width = max(len(ids) for ids in batch)
            input_ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for row, ids in enumerate(batch):  # right padding: each text's positions start at 0
                input_ids[row, : len(ids)] = torch.tensor(ids)
                mask[row, : len(ids)] = 1
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits.float()
            targets = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100).to(device)
            total += F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum").item()
            count += int((targets != -100).sum())
    finally:
        model.train(was_training)
    loss = total / count
    return RetainLoss(loss=loss, perplexity=math.exp(loss) if loss < 700 else math.inf, tokens=count, texts=len(encoded))


def _model_max_length(model, tokenizer) -> int:
    """The longest input the model takes: its config's positions, else the tokenizer's own limit, else 2048."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else 2048
