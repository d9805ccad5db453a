"""Hub-native outputs: one model card per output directory (classifier, stock-CLIP export), a pre-flight
check of the push target, and the upload of the CLIP export. Cards never replace a README we did not write."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id

from .records import RunRecord

logger = logging.getLogger(__name__)

CARD_TAG = "ldifs_hf"  # in every card we write: how we recognise our own README.md
README, FALLBACK_CARD = "README.md", "MODEL_CARD.md"
PAPER = '"Fine-tuning can cripple your foundation model; preserving features may be the solution" (Mukhoti et al., TMLR 2024)'


class HubPushError(ValueError):
    """The Hub push cannot work; the message is one line naming the problem and the fix."""


# -- model cards ---------------------------------------------------------------------------------------


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
    if os.path.exists(path) and not _is_our_card(path):
        fallback = os.path.join(directory, FALLBACK_CARD)
        logger.warning("%s was not written by ldifs_hf; leaving it as it is and writing the model card to %s", path, fallback)
        path = fallback
    card.save(path)
    return path


def _is_our_card(path: str) -> bool:
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
    # The run stores its regularizer's own text; records written before it did get the built-ins' text.
    if record.regularizer_text:
        return record.regularizer_text
    if record.regularizer == "ldifs":
        return f"LDIFS, λ = {record.ldifs_lambda}, {record.ldifs_normalization or 'token'} normalisation, taps {record.ldifs_layers}"
    if record.regularizer == "l2sp":
        return f"L2SP, λ = {record.l2sp_lambda}"
    return record.regularizer or "none"


def _training_table(record: RunRecord, dataset_id: str | None) -> str:
    rows = [
        ("base model", f"`{record.base_model}`"),
        ("method", f"`{record.method}`"),
        ("regularizer", _regularizer_text(record)),
        ("fine-tuning dataset", f"`{record.dataset}`" + (f" ([`{dataset_id}`](https://huggingface.co/datasets/{dataset_id}))" if dataset_id else "")),
        ("data splits", record.dataset_splits or "–"),
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
        return (f"The weights are derived from `{record.base_model}` and inherit its license; read the base "
                "model's card before using or redistributing them.")
    return f"Released under `{license}`; the weights are derived from `{record.base_model}`, whose license also applies."


def _render(data: ModelCardData, body: str) -> ModelCard:
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n")


def _classifier_card(output_dir, export_dir, record, repo_id, dataset_id, license, deltas) -> ModelCard:
    where = os.path.abspath(output_dir)
    title = os.path.basename(where)
    data = _card_data(record, model_name=title, pipeline_tag="image-classification", dataset_id=dataset_id,
                      license=license, deltas=deltas, accuracy_name="Test accuracy (A_FT)")
    if export_dir:
        target = f" to [`{repo_id}`](https://huggingface.co/{repo_id})" if repo_id else ""
        pushed = f"`--push_to_hub` (`push_clip_to_hub`) uploads the stock-CLIP export in `{os.path.abspath(export_dir)}`{target}, not this directory."
    else:
        pushed = "`--push_to_hub` uploads only the stock-CLIP export, which this run did not write."
    body = f"""
# {title}

A `CLIPVisionClassifier` — the CLIP vision tower and projection of `{record.base_model}` with a linear head
over the unit-normalised image embedding — fine-tuned on `{record.dataset}` with **{record.method}** by
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
    where = (repo_id if is_export and repo_id else None) or os.path.abspath(directory)
    title = (repo_id if is_export and repo_id else None) or os.path.basename(os.path.abspath(directory))
    flyp = record.text_tower != "pretrained"
    data = _card_data(record, model_name=title, pipeline_tag="zero-shot-image-classification", dataset_id=dataset_id,
                      license=license, deltas=deltas,
                      accuracy_name="Test accuracy (A_FT), zero-shot with the benchmark's prompts" if flyp
                      else "Test accuracy (A_FT) of the fine-tuned classifier head, not zero-shot")
    text_tower = ("fine-tuned with the image tower (FLYP)" if flyp
                  else f"the pretrained one of `{record.base_model}`, unchanged")
    a_ft = ("The test accuracy (A_FT) is this model's zero-shot accuracy with the benchmark's prompt templates."
            if flyp else "The test accuracy (A_FT) is that of the fine-tuned classifier (this image encoder plus the trained "
            "linear head, which stays in the run directory); zero-shot accuracy with text prompts can differ.")
    target = f" to [`{repo_id}`](https://huggingface.co/{repo_id})" if repo_id else ""
    if is_export:
        pushed = (f"This directory — weights, processor and this card — is what `push_clip_to_hub` (`--push_to_hub`) "
                  f"uploads{target}. The classifier head is not part of it.")
    elif export_dir:
        pushed = (f"`--push_to_hub` (`push_clip_to_hub`) uploads the copy of these weights exported to "
                  f"`{os.path.abspath(export_dir)}`{target}, not this directory (which also holds checkpoints and logs).")
    else:
        pushed = "`--push_to_hub` uploads only the stock-CLIP export, which this run did not write."
    body = f"""
# {title}

A stock `CLIPModel` whose image encoder was fine-tuned on `{record.dataset}` with **{record.method}** by
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


# -- pushing -------------------------------------------------------------------------------------------


def _network_errors() -> tuple[type[BaseException], ...]:
    """OSError (requests' errors, OfflineModeIsEnabled, HfHubHTTPError are OSErrors) plus the base error
    of whichever HTTP client huggingface_hub uses, which need not be an OSError."""
    import importlib

    errors: list[type[BaseException]] = [OSError]
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass  # that client is not installed, so it cannot raise either
    return tuple(errors)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _status(exc: BaseException) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def check_push_target(repo_id: str | None, token: str | None = None, *, api=None) -> str:
    """Before training: check that `--push_to_hub` can work, and return the full repo id ('owner/name').

    Checks, in order: `repo_id` is a model repo id ('owner/name', or 'name' under the token's account);
    a token is there (`token`, else `hf auth login`/HF_TOKEN); the Hub answers `whoami` with it and it may
    write; the namespace is the user's or one of their organisations; the repo is a reachable model repo
    or does not exist yet (then the push creates it). `api` replaces `HfApi(token=token)` (tests).
    Raises HubPushError with one line naming the problem and the fix.
    """
    if not repo_id or not str(repo_id).strip():
        raise HubPushError("no Hub repo to push to: pass --hub_model_id owner/name (or name, to push under your account)")
    repo_id = str(repo_id).strip()
    kind = repo_id.split("/", 1)[0]
    if kind in ("datasets", "spaces") and repo_id.count("/") == 2:
        raise HubPushError(f"{repo_id!r} names a {kind[:-1]} repo but --push_to_hub uploads a model; pass --hub_model_id owner/name")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubPushError(f"{repo_id!r} is not a Hub model repo id ({_one_line(e)}); pass --hub_model_id owner/name or name") from None

    token = token or get_token()
    if not token:
        raise HubPushError("no Hugging Face token: run `hf auth login` or pass --hub_token (or set HF_TOKEN), or drop --push_to_hub")
    api = api if api is not None else HfApi(token=token)

    unreachable = "cannot reach the Hugging Face Hub to push to {!r} ({}); check the network or drop --push_to_hub"
    try:
        me = api.whoami()
    except HfHubHTTPError as e:
        if _status(e) == 401:
            raise HubPushError(f"the Hugging Face token was rejected ({_one_line(e)}); run `hf auth login` or pass a valid --hub_token") from None
        raise HubPushError(unreachable.format(repo_id, _one_line(e))) from None
    except _network_errors() as e:
        raise HubPushError(unreachable.format(repo_id, _one_line(e))) from None

    user = me.get("name") if isinstance(me, Mapping) else None
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role") if isinstance(me, Mapping) else None
    if role == "read":
        raise HubPushError(f"the Hugging Face token of {user!r} is read-only; create a write token and run `hf auth login` or pass --hub_token")
    if "/" not in repo_id:
        if not user:
            raise HubPushError(f"cannot tell which account {repo_id!r} belongs to (whoami gave no name); pass --hub_model_id owner/name")
        repo_id = f"{user}/{repo_id}"
    namespace = repo_id.split("/", 1)[0]
    if user and isinstance(me, Mapping):
        mine = {user} | {org.get("name") for org in me.get("orgs") or [] if isinstance(org, Mapping)}
        if namespace not in mine:
            raise HubPushError(f"the token of {user!r} cannot push to {repo_id!r}: {namespace!r} is neither the user nor one of "
                               f"their organisations {sorted(n for n in mine if n)}; pass --hub_model_id {user}/{repo_id.split('/', 1)[1]}")

    try:
        api.repo_info(repo_id, repo_type="model")
    except GatedRepoError as e:  # a subclass of RepositoryNotFoundError: the repo exists but is not ours to read
        raise HubPushError(f"the model repo {repo_id!r} exists but this token cannot access it ({_one_line(e)}); pass another --hub_model_id") from None
    except RepositoryNotFoundError:
        return repo_id  # does not exist yet: push_clip_to_hub creates it
    except HfHubHTTPError as e:
        raise HubPushError(f"the Hub refused access to {repo_id!r} ({_one_line(e)}); check the token's permissions or pass another --hub_model_id") from None
    except _network_errors() as e:
        raise HubPushError(unreachable.format(repo_id, _one_line(e))) from None
    return repo_id


def push_clip_to_hub(folder: str, repo_id: str, token: str | None = None, private: bool | None = None, commit_message: str | None = None) -> str:
    """Upload an exported CLIP directory (weights, processor, card) to the Hub in one commit; returns the
    commit URL. A failed upload raises HubPushError (one line) saying the export is still on disk."""
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise ValueError(f"{folder!r} is not an exported model directory (no config.json)")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message=commit_message or "Upload fine-tuned CLIP (ldifs_hf)")
    except _network_errors() as e:
        raise HubPushError(f"pushing {folder!r} to {repo_id!r} failed ({_one_line(e)}); the export is kept there: "
                           "retry with ldifs_hf.hub.push_clip_to_hub") from None
    return str(getattr(info, "commit_url", info))
