"""Model cards: one per output directory, the `CLIPVisionClassifier`'s (the run directory) and the stock
`CLIPModel` export's (what `--push_to_hub` uploads), with Hub metadata. Cards never replace a README we
did not write, and never name a path on this machine: a model or dataset on the Hub is named by its id,
a local one as "a local model" / "local data" with its folder's name.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .records import RunRecord

logger = logging.getLogger(__name__)

CARD_TAG = "ldifs_hf"  # in every card we write: how we recognise our own README.md
README, FALLBACK_CARD = "README.md", "MODEL_CARD.md"
PAPER = '"Fine-tuning can cripple your foundation model; preserving features may be the solution" (Mukhoti et al., TMLR 2024)'


def write_model_cards(
    output_dir: str,
    export_dir: str | None,
    record: RunRecord,
    *,
    repo_id: str | None = None,
    dataset_id: str | None = None,
    license: str = "other",
    deltas: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, str]:
    """Write the classifier's card into `output_dir` and, when given, the stock-CLIP card into `export_dir`.

    Args:
        output_dir: the run directory holding the `CLIPVisionClassifier` (`save_pretrained`).
        export_dir: the stock-`CLIPModel` export (what `push_clip_to_hub` uploads), or None.
        record: the run; its `results["test_accuracy"]` becomes the cards' `eval_results` (A_FT).
        repo_id: the Hub repo the CLIP export is pushed to, if any (named in the CLIP card).
        dataset_id: the fine-tuning benchmark's Hub dataset id, when it has one (`datasets` metadata).
        license: a Hub license id; "other" says the weights inherit the base model's license.
        deltas: optional concept-forgetting Δs against the pretrained model, {benchmark: {"zs": Δ, "lp": Δ}}
            (accuracy fractions), added to the cards' text and `eval_results`.

    Returns {"classifier": path, "clip": path} ("clip" only with `export_dir`); "classifier" is the run
    directory's card, which describes a stock CLIPModel when that is what it holds (FLYP). A card goes to README.md
    unless a README.md that ldifs_hf did not write is there: that one is kept and the card goes to
    MODEL_CARD.md (with a warning). Nothing else is written (the run saves `ldifs_run.json` itself).
    """
    if not isinstance(license, str) or not license.strip():
        raise ValueError(f"license must be a Hub license id such as 'mit', 'apache-2.0' or 'other'; got {license!r}")
    args = (output_dir, export_dir, record, repo_id, dataset_id, license, deltas)
    # FLYP trains CLIP itself, so its run directory holds a stock CLIPModel: that directory's card must
    # not promise a CLIPVisionClassifier.
    run_card = _classifier_card(*args) if _saved_model_type(output_dir, record) != "clip" else _clip_card(*args, is_export=False)
    paths = {"classifier": _write_card(output_dir, run_card)}
    if export_dir is not None:
        paths["clip"] = _write_card(export_dir, _clip_card(*args, is_export=True))
    return paths


def _saved_model_type(directory: str, record: RunRecord) -> str:
    """The model_type in `directory`/config.json; without one, what the run trains ("clip" for FLYP)."""
    try:
        with open(os.path.join(directory, "config.json")) as f:
            return str(json.load(f).get("model_type"))
    except (OSError, ValueError):
        return "clip" if record.text_tower != "pretrained" else "ldifs_clip_classifier"


def _write_card(directory: str, card: ModelCard) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, README)
    if os.path.exists(path) and not is_our_card(path):
        fallback = os.path.join(directory, FALLBACK_CARD)
        logger.warning("%s was not written by ldifs_hf; leaving it as it is and writing the model card to %s", path, fallback)
        path = fallback
    card.save(path)
    return path


def is_our_card(path: str) -> bool:
    """Whether the card at `path` is one ldifs_hf wrote (its tags hold `CARD_TAG`)."""
    try:
        tags = ModelCard.load(path).data.tags or []
    except Exception:  # unreadable or malformed YAML header: certainly not a card we wrote
        return False
    return CARD_TAG in tags


def hub_base_model(base_model: str | None) -> str | None:
    """`base_model` as a Hub id ('owner/name' or 'name'), or None for a local path (existing or not)."""
    if not base_model or os.path.exists(base_model):
        return None
    try:
        validate_repo_id(base_model)
    except HFValidationError:
        return None
    return base_model


def model_name(name_or_path: str) -> str:
    """How a card names a model: `owner/name` for a Hub id, else "a local model (`folder`)"; never a
    path on this machine."""
    hub_id = hub_base_model(name_or_path)
    return f"`{hub_id}`" if hub_id else f"a local model (`{_folder_name(name_or_path)}`)"


def data_name(record: RunRecord) -> str:
    """How a card names the fine-tuning data: the benchmark, and "local data (`folder`)" when the run
    read a local copy (a "custom" run is only that); never a path on this machine."""
    path = _recorded_data_path(record)
    if not path:
        return f"`{record.dataset}`"
    local = f"local data (`{_folder_name(path)}`)"
    return local if record.dataset == "custom" else f"`{record.dataset}` ({local})"


def _recorded_data_path(record: RunRecord) -> str | None:
    return (record.settings or {}).get("dataset_path") or None


def _folder_name(path: str) -> str:
    return os.path.basename(os.path.normpath(os.path.expanduser(os.fspath(path)))) or os.fspath(path)


# A path on this machine inside free text a run recorded: absolute, home-relative or Windows-style.
_PATH = re.compile(r"(?<![\w:/.`])(?:~?/|[A-Za-z]:\\)[^\s;,`'\"()]+")


def _without_paths(text: str, record: RunRecord) -> str:
    """Free text a run recorded (its data splits, its regularizer's words) with every path on this
    machine cut to its folder's name."""
    path = _recorded_data_path(record)
    if path:
        text = text.replace(path, f"`{_folder_name(path)}`")
    return _PATH.sub(lambda m: f"`{_folder_name(m.group(0))}`", text)


def _relative_to(directory: str, other: str) -> str:
    """Where `other` is, seen from `directory`'s card: `clip/` inside it, else the folder's name."""
    relative = os.path.relpath(os.path.abspath(other), os.path.abspath(directory))
    if not relative.startswith(os.pardir):
        return f"the `{relative}/` folder of this directory"
    return f"the folder `{_folder_name(other)}`"


def _card_data(record: RunRecord, *, model_name: str, pipeline_tag: str, dataset_id: str | None, license: str,
               deltas: Mapping[str, Mapping[str, float]] | None, accuracy_name: str) -> ModelCardData:
    eval_results = []
    test_accuracy = (record.results or {}).get("test_accuracy")
    if test_accuracy is not None:
        eval_results.append(EvalResult(
            task_type="image-classification", task_name="Image classification",
            dataset_type=dataset_id or record.dataset, dataset_name=record.dataset, dataset_split="test",
            metric_type="accuracy", metric_name=accuracy_name, metric_value=float(test_accuracy),
        ))
    for benchmark, by_kind in sorted((deltas or {}).items()):
        dataset_type = dataset_id if (dataset_id and benchmark == record.dataset) else benchmark
        for kind, value in sorted(by_kind.items()):
            task = "zero-shot-image-classification" if kind == "zs" else "image-classification"
            eval_results.append(EvalResult(
                task_type=task, dataset_type=dataset_type, dataset_name=benchmark, dataset_split="test",
                metric_type=f"delta_{kind}_accuracy", metric_name=f"Δ_{kind.upper()} accuracy vs the pretrained model",
                metric_value=float(value),
            ))
    return ModelCardData(
        license=license,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        base_model=hub_base_model(record.base_model),
        datasets=[dataset_id] if dataset_id else None,
        tags=[CARD_TAG, record.method, "clip"],
        model_name=model_name,
        eval_results=eval_results or None,
    )


def _regularizer_text(record: RunRecord) -> str:
    # The run stores its regularizer's own text (records of the earlier formats are given theirs when read).
    if record.regularizer_text:
        return _without_paths(record.regularizer_text, record)
    weight = "" if record.regularizer_weight is None else f", λ = {record.regularizer_weight}"
    return (record.regularizer or "none") + weight


def _training_table(record: RunRecord, dataset_id: str | None) -> str:
    rows = [
        ("base model", model_name(record.base_model)),
        ("method", f"`{record.method}`"),
        ("regularizer", _regularizer_text(record)),
        ("fine-tuning dataset", data_name(record) + (f" ([`{dataset_id}`](https://huggingface.co/datasets/{dataset_id}))" if dataset_id else "")),
        ("data splits", _without_paths(record.dataset_splits, record) if record.dataset_splits else "–"),
        ("text tower", record.text_tower),
    ]
    if record.alpha is not None:
        rows.append(("weight interpolation", f"α = {record.alpha:g}: (1 − α)·start + α·`{record.source_run}` (WiSE-FT)"))
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _results_text(record: RunRecord, deltas: Mapping[str, Mapping[str, float]] | None) -> str:
    results = record.results or {}
    if not results and not deltas:
        return "Not measured yet."
    lines = []
    if results:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in results.items()]
    if deltas:
        lines += ["", "Concept forgetting against the pretrained model (percentage points; negative = forgotten):", "",
                  "| benchmark | Δ_ZS | Δ_LP |", "|---|---|---|"]
        for benchmark, by_kind in sorted(deltas.items()):
            cells = [f"{100 * by_kind[k]:+.2f}" if k in by_kind else "–" for k in ("zs", "lp")]
            lines.append(f"| {benchmark} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def _license_text(license: str, record: RunRecord) -> str:
    if license == "other":
        return (f"The weights are derived from {model_name(record.base_model)} and inherit its license; read the base "
                "model's card before using or redistributing them.")
    return f"Released under `{license}`; the weights are derived from {model_name(record.base_model)}, whose license also applies."


def _render(data: ModelCardData, body: str) -> ModelCard:
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n")


def _classifier_card(output_dir, export_dir, record, repo_id, dataset_id, license, deltas) -> ModelCard:
    title = _folder_name(output_dir)
    where = f"path/to/{title}"  # the folder, wherever it is copied to
    data = _card_data(record, model_name=title, pipeline_tag="image-classification", dataset_id=dataset_id,
                      license=license, deltas=deltas, accuracy_name="Test accuracy (A_FT)")
    if export_dir:
        target = f" to [`{repo_id}`](https://huggingface.co/{repo_id})" if repo_id else ""
        pushed = f"`--push_to_hub` (`push_clip_to_hub`) uploads the stock-CLIP export in {_relative_to(output_dir, export_dir)}{target}, not this directory."
    else:
        pushed = "`--push_to_hub` uploads only the stock-CLIP export, which this run did not write."
    body = f"""
# {title}

A `CLIPVisionClassifier` — the CLIP vision tower and projection of {model_name(record.base_model)} with a linear head
over the unit-normalised image embedding — fine-tuned on {data_name(record)} with **{record.method}** by
`ldifs_hf`, a Trainer-based toolkit implementing {PAPER}.

This directory carries the model's code (`modeling_ldifs_clip.py`, `configuration_ldifs_clip.py`; its
`config.json` maps to them), so it loads with plain `transformers`, without `ldifs_hf`, given
`trust_remote_code=True`:

```python
from transformers import AutoModelForImageClassification, pipeline

model = AutoModelForImageClassification.from_pretrained("{where}", trust_remote_code=True)
classifier = pipeline("image-classification", model="{where}", trust_remote_code=True)
classifier(image)
```

## Training

{_training_table(record, dataset_id)}

## Results

{_results_text(record, deltas)}

## What is pushed

{pushed} This classifier (weights, code, processor, this card) stays local; to share it, upload this
folder yourself, e.g. `HfApi().upload_folder(folder_path="{where}", repo_id=...)`.

## License

{_license_text(license, record)}
"""
    return _render(data, body)


def _clip_card(output_dir, export_dir, record, repo_id, dataset_id, license, deltas, *, is_export: bool) -> ModelCard:
    """The card of a stock CLIPModel: the export (`is_export`, what gets pushed) or a FLYP run directory."""
    directory = export_dir if is_export else output_dir
    title = (repo_id if is_export and repo_id else None) or _folder_name(directory)
    where = (repo_id if is_export and repo_id else None) or f"path/to/{title}"  # the folder, wherever it is copied to
    flyp = record.text_tower != "pretrained"
    data = _card_data(record, model_name=title, pipeline_tag="zero-shot-image-classification", dataset_id=dataset_id,
                      license=license, deltas=deltas,
                      accuracy_name="Test accuracy (A_FT), zero-shot with the benchmark's prompts" if flyp
                      else "Test accuracy (A_FT) of the fine-tuned classifier head, not zero-shot")
    text_tower = ("fine-tuned with the image tower (FLYP)" if flyp
                  else f"the pretrained one of {model_name(record.base_model)}, unchanged")
    a_ft = ("The test accuracy (A_FT) is this model's zero-shot accuracy with the benchmark's prompt templates."
            if flyp else "The test accuracy (A_FT) is that of the fine-tuned classifier (this image encoder plus the trained "
            "linear head, which stays in the run directory); zero-shot accuracy with text prompts can differ.")
    target = f" to [`{repo_id}`](https://huggingface.co/{repo_id})" if repo_id else ""
    if is_export:
        pushed = (f"This directory — weights, processor and this card — is what `push_clip_to_hub` (`--push_to_hub`) "
                  f"uploads{target}. The classifier head is not part of it.")
    elif export_dir:
        pushed = (f"`--push_to_hub` (`push_clip_to_hub`) uploads the copy of these weights exported to "
                  f"{_relative_to(output_dir, export_dir)}{target}, not this directory (which also holds checkpoints and logs).")
    else:
        pushed = "`--push_to_hub` uploads only the stock-CLIP export, which this run did not write."
    body = f"""
# {title}

A stock `CLIPModel` whose image encoder was fine-tuned on {data_name(record)} with **{record.method}** by
`ldifs_hf`, a Trainer-based toolkit implementing {PAPER}. The text tower is {text_tower}.
It needs no custom code:

```python
from transformers import pipeline

classifier = pipeline("zero-shot-image-classification", model="{where}")
classifier(image, candidate_labels=["a photo of a cat", "a photo of a dog"])
```

## Training

{_training_table(record, dataset_id)}

## Results

{_results_text(record, deltas)}

{a_ft}

## What is pushed

{pushed}

## License

{_license_text(license, record)}
"""
    return _render(data, body)
