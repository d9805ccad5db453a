"""Concept-forgetting evaluation (paper eqs. 2 and 3): ZS and LP accuracy of a checkpoint on many
benchmarks, their change against the pretrained model, A_FT, and parameter and feature distances.

    evaluator = ConceptForgettingEvaluator("openai/clip-vit-base-patch32")
    record = evaluator.evaluate("runs/eurosat-lp-ldifs", ["cifar10", "mnist"], finetune_benchmark="eurosat")

A checkpoint's image features on a benchmark split are extracted once and shared by the zero-shot
and linear-probe accuracies (and A_FT); zero-shot heads come from the pretrained text tower unless
asked otherwise (FLYP's protocol uses the checkpoint's own).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import CLIPModel, CLIPProcessor

from .heads import extract_features, fill_templates, fit_linear_probe, zero_shot_classifier
from .trainer import named_encoder_parameters

logger = logging.getLogger(__name__)

CLASSIFIER_MODEL_TYPE = "ldifs_clip_classifier"
TEXT_TOWERS = ("pretrained", "checkpoint")
RUN_INFO_FILE = "ldifs_run.json"


class CheckpointError(ValueError):
    """A checkpoint path or object that cannot be evaluated; the message says what would be accepted."""


# -- checkpoints ----------------------------------------------------------------------------------


def _read_config(path: str) -> dict:
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise CheckpointError(
            f"{path!r} is not a model directory: it has no config.json. Pass a directory written by "
            "save_pretrained (a CLIPModel or a CLIPVisionClassifier) or a Hub model id"
        )
    with open(config_file) as f:
        return json.load(f)


def load_checkpoint(checkpoint, *, device=None, cache_dir: str | None = None) -> nn.Module:
    """A model to evaluate: an in-memory model as is, or one loaded from a directory or Hub id.

    Directories holding a `CLIPVisionClassifier` (config model_type "ldifs_clip_classifier") load as
    that class; anything else with a CLIP config loads as a `CLIPModel`.
    """
    if isinstance(checkpoint, nn.Module):
        model = checkpoint
    else:
        path = os.fspath(checkpoint)
        if os.path.isdir(path):
            model_type = _read_config(path).get("model_type")
        elif os.path.exists(path):
            raise CheckpointError(f"{path!r} is a file, not a model directory; pass the directory that holds its config.json")
        elif looks_like_hub_id(path):
            model_type = "clip"
        else:
            raise CheckpointError(f"checkpoint {path!r} does not exist (neither a local directory nor a Hub model id)")
        try:
            if model_type == CLASSIFIER_MODEL_TYPE:
                from .modeling import CLIPVisionClassifier

                model = CLIPVisionClassifier.from_pretrained(path, cache_dir=cache_dir)
            elif model_type == "clip":
                model = CLIPModel.from_pretrained(path, cache_dir=cache_dir)
            else:
                raise CheckpointError(
                    f"{path!r} holds a {model_type!r} model; evaluation takes a CLIPModel ('clip') or a "
                    f"CLIPVisionClassifier ({CLASSIFIER_MODEL_TYPE!r})"
                )
        except OSError as err:
            where = "a local directory" if os.path.isdir(path) else "a Hub model id (no local directory has that name)"
            raise CheckpointError(
                f"could not load checkpoint {path!r} as {where} ({err}). Without network, download a Hub model once "
                "elsewhere (`hf download <id>`) and pass its local directory"
            ) from err
    for attribute in ("vision_model", "visual_projection"):
        if not hasattr(model, attribute):
            raise CheckpointError(f"a {type(model).__name__} has no `{attribute}`; evaluation needs a CLIP image tower and projection")
    if device is not None:
        model = model.to(device)
    return model.eval()


def looks_like_hub_id(path: str) -> bool:
    parts = path.split("/")
    return len(parts) <= 2 and all(parts) and not path.startswith((".", "~")) and os.sep not in path.replace("/", "")


def read_run_info(checkpoint) -> dict:
    """What a run recorded about itself: `ldifs_run.json` (method, dataset, base_model, ...) in the
    checkpoint directory or its parent (for `checkpoint-N` folders), plus the classifier config's
    `base_model`. Empty for in-memory models and plain CLIP directories."""
    if not isinstance(checkpoint, (str, os.PathLike)) or not os.path.isdir(checkpoint):
        return {}
    path = os.path.abspath(os.fspath(checkpoint))
    info: dict = {}
    for directory in (os.path.dirname(path), path):  # the checkpoint's own file wins
        run_file = os.path.join(directory, RUN_INFO_FILE)
        if os.path.isfile(run_file):
            with open(run_file) as f:
                info.update(json.load(f))
    config_file = os.path.join(path, "config.json")
    if "base_model" not in info and os.path.isfile(config_file):
        with open(config_file) as f:
            base = json.load(f).get("base_model")
        if base:
            info["base_model"] = base
    return info


# -- distances (paper eq. 3 and ||theta - theta_0||^2) -------------------------------------------


@torch.no_grad()
def parameter_distance(model: nn.Module, reference: nn.Module) -> float:
    """Squared L2 distance ||theta - theta_0||^2 between two models' vision towers (and projections)."""
    params, ref = named_encoder_parameters(model), named_encoder_parameters(reference)
    if params.keys() != ref.keys():
        missing = sorted(params.keys() ^ ref.keys())[:3]
        raise ValueError(f"the two vision towers have different parameters (e.g. {missing}); they must share an architecture")
    total = torch.zeros((), dtype=torch.float64)
    for name, p in params.items():
        total += (p.detach().double() - ref[name].detach().to(p.device).double()).pow(2).sum().cpu()
    return total.item()


@torch.no_grad()
def feature_distance(
    model: nn.Module,
    reference: nn.Module,
    dataset,
    *,
    layers: Sequence[int] | None = None,
    normalization: str = "token",
    batch_size: int = 256,
    collate_fn=None,
    desc: str | None = None,
    num_workers: int = 0,
) -> float:
    """LDIFS feature-space distance d(theta, theta_0, D) (eq. 3), averaged over the examples of `dataset`.

    Both vision towers see the same pixel values; `layers` defaults to the training default taps.
    """
    from .heads import _default_collate
    from .regularizers import default_ldifs_layers, ldifs_distance

    layers = list(layers) if layers is not None else default_ldifs_layers(model.vision_model.config.num_hidden_layers)
    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn or _default_collate, num_workers=num_workers)
    modes = (model.training, reference.training)
    model.eval()
    reference.eval()
    total, count = 0.0, 0
    try:
        for batch in tqdm(loader, desc=desc or "feature distance", leave=False):
            pixel_values = batch["pixel_values"].to(device)
            student = model.vision_model(pixel_values=pixel_values.to(next(model.parameters()).dtype), output_hidden_states=True).hidden_states
            ref_device = next(reference.parameters()).device
            teacher = reference.vision_model(
                pixel_values=pixel_values.to(device=ref_device, dtype=next(reference.parameters()).dtype), output_hidden_states=True
            ).hidden_states
            teacher = [t.to(device) for t in teacher]
            total += ldifs_distance(student, teacher, layers, normalization=normalization).item() * len(pixel_values)
            count += len(pixel_values)
    finally:
        model.train(modes[0])
        reference.train(modes[1])
    if count == 0:
        raise ValueError("cannot compute a feature distance over an empty dataset")
    return total / count


# -- deltas (paper eq. 2) ------------------------------------------------------------------------


def accuracy_deltas(accuracies: Mapping[str, Mapping[str, float]], reference: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Δ(D) = A(f, D) − A(f_ref, D) for every benchmark and kind ("zs", "lp") present in both."""
    deltas = {}
    for name, by_kind in accuracies.items():
        if name in reference:
            deltas[name] = {kind: value - reference[name][kind] for kind, value in by_kind.items() if kind in reference[name]}
    return deltas


# -- the evaluator ------------------------------------------------------------------------------


@dataclass
class _Benchmark:
    name: str
    class_names: list[str]
    templates: list[str]
    splits: dict  # split name -> dataset yielding pixel_values and labels


class ConceptForgettingEvaluator:
    """Scores checkpoints on benchmarks against a pretrained CLIP (ZS, LP, deltas, A_FT, distances).

    Args:
        pretrained: the pretrained CLIPModel (a directory, a Hub id or an in-memory model). Its text
            tower builds the zero-shot heads and it is the reference for deltas and distances.
        processor: CLIPProcessor (tokenizer + image processor); default: loaded from `pretrained`.
        dataset_paths: benchmark name -> local copy of its data (`load_benchmark(data_path=...)`).
        max_train_samples / max_eval_samples: subsample the LP training set / the test set (quick runs).
        batch_size: feature-extraction batch size.
        num_workers: DataLoader worker processes for image decoding and preprocessing.
        device: where models run (default: CUDA when available).
        lp_solver / lp_iterations: the linear probe (`fit_linear_probe`).
        text_tower: "pretrained" (official protocol) or "checkpoint" (FLYP's: a CLIPModel's own text
            tower; a classifier without one falls back to the pretrained tower).
        feature_distance_samples: test examples per benchmark for the feature distance.
        max_cached_models: how many checkpoints' features stay in memory (the pretrained model's always do).
    """

    def __init__(
        self,
        pretrained="openai/clip-vit-base-patch32",
        *,
        processor=None,
        dataset_paths: Mapping[str, str] | None = None,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
        device=None,
        lp_solver: str = "adamw",
        lp_iterations: int = 1000,
        text_tower: str = "pretrained",
        feature_distance_samples: int = 256,
        max_cached_models: int = 2,
        seed: int = 0,
        cache_dir: str | None = None,
    ):
        if text_tower not in TEXT_TOWERS:
            raise ValueError(f"text_tower must be one of {TEXT_TOWERS}, got {text_tower!r}")
        if lp_solver not in ("adamw", "logistic"):
            raise ValueError(f"lp_solver must be 'adamw' or 'logistic', got {lp_solver!r}")
        self.device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.pretrained = load_checkpoint(pretrained, device=self.device, cache_dir=cache_dir)
        self._pretrained_path = os.path.abspath(os.fspath(pretrained)) if isinstance(pretrained, (str, os.PathLike)) and os.path.isdir(pretrained) else None
        if not isinstance(self.pretrained, CLIPModel):
            raise CheckpointError(f"the pretrained model must be a CLIPModel (it provides the text tower), got {type(self.pretrained).__name__}")
        if processor is None:
            if isinstance(pretrained, nn.Module):
                raise ValueError("pass `processor=` (a CLIPProcessor) along with an in-memory pretrained model")
            processor = CLIPProcessor.from_pretrained(pretrained, cache_dir=cache_dir)
        self.processor = processor
        self.dataset_paths = dict(dataset_paths or {})
        self.max_train_samples, self.max_eval_samples = max_train_samples, max_eval_samples
        self.batch_size, self.num_workers, self.seed, self.cache_dir = batch_size, num_workers, seed, cache_dir
        self.lp_solver, self.lp_iterations = lp_solver, lp_iterations
        self.text_tower, self.feature_distance_samples = text_tower, feature_distance_samples
        self.max_cached_models = max_cached_models
        self._benchmarks: dict[str, _Benchmark] = {}
        self._features: OrderedDict[str, dict] = OrderedDict()  # model key -> {(benchmark, split): (features, labels)}
        self._zero_shot_heads: dict[str, torch.Tensor] = {}
        self._pretrained_accuracies: dict[str, dict[str, float]] = {}

    # benchmarks ------------------------------------------------------------------------------

    def benchmark(self, name) -> _Benchmark:
        """A benchmark's splits with the image transform attached, its class names and templates (cached).

        `name` is a registered name (the registry's own error lists the valid ones) or a `LoadedBenchmark`.
        """
        from .data import LoadedBenchmark, image_transform, load_benchmark

        key = name.spec.name if isinstance(name, LoadedBenchmark) else str(name)
        if key in self._benchmarks:
            return self._benchmarks[key]
        if isinstance(name, LoadedBenchmark):
            loaded = name
        else:
            loaded = load_benchmark(
                key,
                data_path=self.dataset_paths.get(key),
                max_train_samples=self.max_train_samples,
                max_eval_samples=self.max_eval_samples,
                seed=self.seed,
                cache_dir=self.cache_dir,
            )
        _check_promptable(key, loaded.class_names, loaded.templates)
        transform = image_transform(self.processor.image_processor)
        splits = {split: loaded.splits[split].with_transform(transform) for split in ("train", "test")}
        self._benchmarks[key] = _Benchmark(key, list(loaded.class_names), list(loaded.templates), splits)
        return self._benchmarks[key]

    # features -------------------------------------------------------------------------------

    def model_key(self, model, key: str | None = None) -> str:
        """Cache key of a checkpoint: `key` if given, its absolute path, or a fresh key per in-memory model.

        An in-memory model's weights may change between calls (training), so without an explicit
        key its features are shared only within one `evaluate` call.
        """
        if key is not None:
            return str(key)
        if model is self.pretrained:
            return "pretrained"
        if isinstance(model, (str, os.PathLike)):
            return os.path.abspath(os.fspath(model))
        return f"in-memory-{uuid.uuid4().hex}"

    def features(self, model: nn.Module, benchmark, split: str, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-normalised image features and labels of `model` on a benchmark split, extracted once per key."""
        bench = self.benchmark(benchmark)
        store = self._features.get(key)
        if store is None:
            store = self._features[key] = {}
            self._evict()
        self._features.move_to_end(key)
        if (bench.name, split) not in store:
            store[(bench.name, split)] = extract_features(
                model, bench.splits[split], batch_size=self.batch_size, num_workers=self.num_workers, desc=f"{bench.name}/{split} features"
            )
        return store[(bench.name, split)]

    def _evict(self) -> None:
        checkpoints = [k for k in self._features if k != "pretrained"]
        while len(checkpoints) > self.max_cached_models:
            del self._features[checkpoints.pop(0)]

    def clear_cache(self) -> None:
        """Forget every checkpoint's features except the pretrained model's."""
        for key in [k for k in self._features if k != "pretrained"]:
            del self._features[key]

    # accuracies -----------------------------------------------------------------------------

    def zero_shot_head(self, benchmark, model: nn.Module | None = None) -> torch.Tensor:
        """[C, P] zero-shot head of a benchmark from `model`'s text tower (default: the pretrained one)."""
        bench = self.benchmark(benchmark)
        if model is None or model is self.pretrained:
            if bench.name not in self._zero_shot_heads:
                self._zero_shot_heads[bench.name] = zero_shot_classifier(self.pretrained, self.processor.tokenizer, bench.class_names, bench.templates)
            return self._zero_shot_heads[bench.name]
        return zero_shot_classifier(model, self.processor.tokenizer, bench.class_names, bench.templates)

    def _text_tower_for(self, model: nn.Module, text_tower: str | None) -> nn.Module | None:
        text_tower = text_tower or self.text_tower
        if text_tower not in TEXT_TOWERS:
            raise ValueError(f"text_tower must be one of {TEXT_TOWERS}, got {text_tower!r}")
        if text_tower == "checkpoint":
            if hasattr(model, "text_model"):
                return model
            logger.warning("%s has no text tower; zero-shot heads come from the pretrained one", type(model).__name__)
        return None

    def zero_shot_accuracy(self, checkpoint, benchmark, *, text_tower: str | None = None, key: str | None = None) -> float:
        """A_ZS: zero-shot top-1 accuracy of a checkpoint on a benchmark's test split."""
        model, key = self._resolve(checkpoint, key)
        features, labels = self.features(model, benchmark, "test", key)
        head = self.zero_shot_head(benchmark, self._text_tower_for(model, text_tower))
        return _accuracy(features @ head.T, labels)

    def linear_probe_accuracy(self, checkpoint, benchmark, *, key: str | None = None) -> float:
        """A_LP: accuracy on the test split of a linear probe fitted on the (frozen) train-split features."""
        model, key = self._resolve(checkpoint, key)
        bench = self.benchmark(benchmark)
        train_features, train_labels = self.features(model, benchmark, "train", key)
        weight, bias = fit_linear_probe(
            train_features, train_labels, len(bench.class_names), solver=self.lp_solver, iterations=self.lp_iterations, seed=self.seed, device=self.device
        )
        test_features, test_labels = self.features(model, benchmark, "test", key)
        return _accuracy(test_features @ weight.T + bias, test_labels)

    def accuracies(self, checkpoint, benchmarks: Iterable, *, key: str | None = None, text_tower: str | None = None) -> dict[str, dict[str, float]]:
        """{benchmark: {"zs": A_ZS, "lp": A_LP}}, features extracted once per benchmark and shared."""
        model, key = self._resolve(checkpoint, key)
        results = {}
        for name in tqdm(list(benchmarks), desc="benchmarks", leave=False):
            bench = self.benchmark(name)
            results[bench.name] = {
                "zs": self.zero_shot_accuracy(model, name, text_tower=text_tower, key=key),
                "lp": self.linear_probe_accuracy(model, name, key=key),
            }
        return results

    def pretrained_accuracies(self, benchmarks: Iterable) -> dict[str, dict[str, float]]:
        """The pretrained model's accuracies (computed once per benchmark), the reference of every Δ."""
        names = [self.benchmark(n).name for n in benchmarks]
        missing = [n for n in names if n not in self._pretrained_accuracies]
        if missing:
            self._pretrained_accuracies.update(self.accuracies(self.pretrained, missing, key="pretrained", text_tower="pretrained"))
        return {n: self._pretrained_accuracies[n] for n in names}

    def finetune_accuracy(self, checkpoint, benchmark, *, key: str | None = None) -> float:
        """A_FT: the fine-tuned classifier's accuracy on its own task's test split.

        A classifier uses its own head; a CLIPModel (FLYP, or an exported encoder) classifies with
        zero-shot heads from its own text tower.
        """
        model, key = self._resolve(checkpoint, key)
        bench = self.benchmark(benchmark)
        features, labels = self.features(model, benchmark, "test", key)
        head = getattr(model, "head", None)
        if isinstance(head, nn.Linear):
            if head.out_features != len(bench.class_names):
                raise ValueError(
                    f"the checkpoint's head has {head.out_features} classes but {bench.name!r} has {len(bench.class_names)}; "
                    "is it the benchmark the checkpoint was fine-tuned on?"
                )
            with torch.no_grad():
                logits = features.to(head.weight) @ head.weight.T + (head.bias if head.bias is not None else 0)
            return _accuracy(logits.float().cpu(), labels)
        return self.zero_shot_accuracy(model, benchmark, text_tower="checkpoint", key=key)

    # everything at once ---------------------------------------------------------------------

    def evaluate(
        self,
        checkpoint,
        benchmarks: Iterable,
        *,
        key: str | None = None,
        finetune_benchmark=None,
        reference: nn.Module | None = None,
        distances: bool = True,
        text_tower: str | None = None,
    ) -> dict:
        """One record of a checkpoint: per-benchmark accuracies and Δs, A_FT, distances.

        {"eval": {bench: {"zs_acc", "lp_acc", "delta_zs", "delta_lp", "feature_distance"?}},
         "a_ft": float | None, "param_distance": float?, "feature_distance": mean over benchmarks?}
        `reference` (default: the pretrained model) is θ0 of the distances.
        """
        model, key = self._resolve(checkpoint, key)
        benchmarks = list(benchmarks)
        accuracies = self.accuracies(model, benchmarks, key=key, text_tower=text_tower)
        deltas = accuracy_deltas(accuracies, self.pretrained_accuracies(benchmarks))
        record: dict = {"eval": {}}
        for name, accs in accuracies.items():
            record["eval"][name] = {"zs_acc": accs["zs"], "lp_acc": accs["lp"], "delta_zs": deltas[name]["zs"], "delta_lp": deltas[name]["lp"]}
        record["a_ft"] = self.finetune_accuracy(model, finetune_benchmark, key=key) if finetune_benchmark is not None else None
        if distances:
            reference = reference if reference is not None else self.pretrained
            record["param_distance"] = parameter_distance(model, reference)
            for name in accuracies:
                record["eval"][name]["feature_distance"] = self.feature_distance(model, name, reference=reference)
            record["feature_distance"] = float(np.mean([e["feature_distance"] for e in record["eval"].values()])) if accuracies else None
        return record

    def feature_distance(self, checkpoint, benchmark, *, reference: nn.Module | None = None) -> float:
        """Eq. 3 on (a seeded sample of `feature_distance_samples` examples of) the benchmark's test split."""
        model, _ = self._resolve(checkpoint, None)
        test = self.benchmark(benchmark).splits["test"]
        if self.feature_distance_samples and len(test) > self.feature_distance_samples:
            rows = np.random.default_rng(self.seed).permutation(len(test))[: self.feature_distance_samples]
            test = test.select(np.sort(rows))
        return feature_distance(
            model, reference if reference is not None else self.pretrained, test, batch_size=self.batch_size, num_workers=self.num_workers
        )

    def _resolve(self, checkpoint, key: str | None) -> tuple[nn.Module, str]:
        """The model and its cache key. In-memory models stay where they are (a model being trained
        must not be moved off its device); checkpoints on disk load onto the evaluator's device."""
        if isinstance(checkpoint, (str, os.PathLike)) and self._pretrained_path and os.path.abspath(os.fspath(checkpoint)) == self._pretrained_path:
            checkpoint = self.pretrained
        key = self.model_key(checkpoint, key)
        if isinstance(checkpoint, nn.Module):
            return checkpoint, key
        return load_checkpoint(checkpoint, device=self.device, cache_dir=self.cache_dir), key


def _check_promptable(name: str, class_names: Sequence[str], templates: Sequence[str]) -> None:
    """Zero-shot evaluation needs a non-empty name for every class and templates with "{}"."""
    if not class_names:
        raise ValueError(f"benchmark {name!r} has no class names, so its classes cannot be given zero-shot prompts")
    bad = [i for i, c in enumerate(class_names) if not isinstance(c, str) or not c.strip()]
    if bad:
        raise ValueError(
            f"benchmark {name!r}: classes {bad[:5]} have no usable name ({[class_names[i] for i in bad[:5]]!r}), so they "
            "cannot be given zero-shot prompts; pass class_names=[...] to load_benchmark or register the benchmark with them"
        )
    if not templates:
        raise ValueError(f"benchmark {name!r} has no prompt templates; give templates like 'a photo of a {{}}.'")
    try:
        fill_templates(class_names[0], templates)
    except ValueError as err:
        raise ValueError(f"benchmark {name!r}: {err}") from None


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(-1) == labels).float().mean().item()
