"""Model cards and Hub uploads for fine-tuned encoders exported as stock `CLIPModel`s."""

from __future__ import annotations

import json
import os

from huggingface_hub import HfApi, ModelCard

_CARD = """---
library_name: transformers
pipeline_tag: zero-shot-image-classification
tags:
- clip
- ldifs_hf
- {method}
base_model: {base_model}
---

# {title}

A stock `CLIPModel` whose image encoder was fine-tuned with **{method}** by
`ldifs_hf`, a Trainer-based toolkit implementing
"Fine-tuning can cripple your foundation model; preserving features may be the solution"
(Mukhoti et al., TMLR 2024).

| | |
|---|---|
| base model | `{base_model}` |
| method | `{method}` |
| regularizer | {regularizer} |
| fine-tuning dataset | `{dataset}` |
| text tower | {text_tower} |

## Results

{results}

## Use

```python
from transformers import pipeline
classifier = pipeline("zero-shot-image-classification", model="{repo}")
classifier(image, candidate_labels=["a cat", "a dog"])
```
"""


def _regularizer_text(info: dict) -> str:
    reg = info.get("regularizer", "none")
    if reg == "ldifs":
        return f"LDIFS, λ = {info.get('ldifs_lambda')}, {info.get('ldifs_normalization', 'token')} normalisation, taps {info.get('ldifs_layers')}"
    if reg == "l2sp":
        return f"L2SP, λ = {info.get('l2sp_lambda')}"
    return "none"


def write_model_card(output_dir: str, info: dict, repo_id: str | None = None) -> str:
    """Write README.md (a Hub model card) stating method, λ, dataset and, when known, results."""
    results = info.get("results") or {}
    rows = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in results.items())
    card = _CARD.format(
        title=repo_id or os.path.basename(os.path.abspath(output_dir)),
        method=info.get("method", "unknown"),
        base_model=info.get("base_model", "unknown"),
        regularizer=_regularizer_text(info),
        dataset=info.get("dataset", "unknown"),
        text_tower=info.get("text_tower", "pretrained"),
        results=("| metric | value |\n|---|---|\n" + rows) if rows else "Not measured yet.",
        repo=repo_id or "PATH_OR_REPO_ID",
    )
    ModelCard(card).save(os.path.join(output_dir, "README.md"))
    with open(os.path.join(output_dir, "ldifs_run.json"), "w") as f:
        json.dump(info, f, indent=2, default=str)
    return card


def push_clip_to_hub(folder: str, repo_id: str, token: str | None = None, private: bool | None = None, commit_message: str | None = None) -> str:
    """Upload an exported CLIP directory (weights, processor, card) to the Hub in one commit."""
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise ValueError(f"{folder!r} is not an exported model directory (no config.json)")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message=commit_message or "Upload fine-tuned CLIP (ldifs_hf)")
    return str(getattr(info, "commit_url", info))
