"""Concept-forgetting evaluation: ZS and LP accuracy of a model on many benchmarks, their change
against the pretrained model (Δ, paper eq. 2), A_FT, and parameter and feature distances (eq. 3).

    evaluator = ConceptForgettingEvaluator.from_pretrained("openai/clip-vit-base-patch32", EvaluatorSettings())
    record = evaluator.evaluate(model, ["cifar10", "mnist"], finetune_benchmark="eurosat")

The evaluator takes loaded models (`checkpoints.load_checkpoint` turns paths into models). A model's
image features on a benchmark split are extracted once and shared by the zero-shot and linear-probe
accuracies (and A_FT); zero-shot heads come from the pretrained text tower unless asked otherwise
(FLYP's protocol uses the model's own). Small splits are decoded once per process (`pixels`), and
benchmarks that label the same images share a model's features of them.

With `EvaluatorSettings.validation`, every benchmark also has its validation split (`VALIDATION_FRACTION`
of its training data, seeded `VALIDATION_SEED`: the fine-tuning runs' own hold-out), the linear probes
are fitted on the rest of the training data, and `evaluate` adds the record's "validation" scores (the
same heads and probes on the validation split): what λ and α are chosen on (`evaluation.choice`).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import OrderedDict
from typing import Iterable, Mapping, Sequence, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import CLIPModel

from ..benchmarks import BenchmarkError, BenchmarkSpec, LoadedBenchmark, collate_images, image_transform, load_benchmark
from ..benchmarks.registry import VALIDATION_FRACTION, VALIDATION_SEED, fill_templates
from ..heads import LP_PROTOCOL, extract_features, fit_linear_probe, zero_shot_classifier
from ..modeling import encode_images
from ..model_folder import load_clip_processor
from .cache import EvaluationCache, model_fingerprint, tensor_digest
from .checkpoints import CheckpointError, load_checkpoint
from .distances import feature_distance, parameter_distance
from .pixels import MAX_SPLIT_BYTES, cached_pixels, images_digest, labels_of, pixel_bytes
from .settings import TEXT_TOWERS, EvaluatorSettings

logger = logging.getLogger(__name__)

PRETRAINED_KEY = "pretrained"


class BenchmarkScores(TypedDict, total=False):
    """One model on one benchmark: accuracies in [0, 1], their Δ against the pretrained model (paper eq. 2)."""

    zs_acc: float
    lp_acc: float
    delta_zs: float
    delta_lp: float
    feature_distance: float


class ForgettingRecord(TypedDict, total=False):
    """One evaluated model: what `evaluate` returns, what the callback logs and what reports read.

    `run.evaluate_checkpoints` and the callback add the run's "method", "finetune_task", "checkpoint",
    "step" and "percent"; `run.evaluate_checkpoints` adds "status" ("ok", "failed" or "non_finite") and,
    unless ok, the "error"."""

    status: str
    error: str
    eval: dict[str, BenchmarkScores]
    a_ft: float | None
    validation: dict  # with validation scoring: {"a_ft", "eval": {benchmark: zs_acc, lp_acc, delta_zs, delta_lp}}
    param_distance: float
    feature_distance: float | None
    method: str
    finetune_task: str | None
    checkpoint: str
    step: int | None
    percent: float | None


# -- deltas (paper eq. 2) and A_FT -----------------------------------------------------------------


def accuracy_deltas(accuracies: Mapping[str, Mapping[str, float]], reference: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Δ(D) = A(f, D) − A(f_ref, D) for every benchmark and kind ("zs", "lp") present in both."""
    deltas = {}
    for name, by_kind in accuracies.items():
        if name in reference:
            deltas[name] = {kind: value - reference[name][kind] for kind, value in by_kind.items() if kind in reference[name]}
    return deltas


def own_head_accuracy(model: nn.Module, features: torch.Tensor, labels: torch.Tensor, zero_shot_weights, num_classes: int, name: str = "the benchmark") -> float:
    """A_FT: accuracy of the fine-tuned model's own classifier on unit-normalised image features.

    A classifier uses its own head; a CLIPModel (FLYP, or an exported encoder) classifies with the
    zero-shot head of its own text tower, `zero_shot_weights()` ([C, P]).
    """
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        if head.out_features != num_classes:
            raise ValueError(
                f"the model's head has {head.out_features} classes but {name!r} has {num_classes}; "
                "is it the benchmark the model was fine-tuned on?"
            )
        with torch.no_grad():
            logits = features.to(head.weight) @ head.weight.T + (head.bias if head.bias is not None else 0)
        return _accuracy(logits.float().cpu(), labels)
    return _accuracy(features @ zero_shot_weights().T, labels)


# -- the evaluator ------------------------------------------------------------------------------


class ConceptForgettingEvaluator:
    """Scores models on benchmarks against a pretrained CLIP (ZS, LP, deltas, A_FT, distances).

    Args:
        pretrained: the pretrained `CLIPModel`. Its text tower builds the zero-shot heads and it is the
            reference for deltas and distances.
        processor: its `CLIPProcessor` (tokenizer + image processor).
        settings: `EvaluatorSettings` (data, batch size, linear probe, text tower, ...).
    """

    def __init__(self, pretrained: CLIPModel, processor, settings: EvaluatorSettings | None = None):
        if not isinstance(pretrained, CLIPModel):
            raise CheckpointError(f"the pretrained model must be a CLIPModel (it provides the text tower), got {type(pretrained).__name__}")
        self.settings = settings or EvaluatorSettings()
        self.device = self.settings.torch_device
        self.pretrained = pretrained.to(self.device).eval()
        self.processor = processor
        self.pretrained_path: str | None = None
        self._benchmarks: dict[str, LoadedBenchmark] = {}
        self._raw: dict[str, dict] = {}  # benchmark -> its splits without the transform
        self._digests: dict[tuple[str, str], tuple[str, torch.Tensor]] = {}  # (benchmark, split) -> (images digest, labels)
        self._features: OrderedDict[str, dict] = OrderedDict()  # model key -> {(benchmark, split) or pixels digest: features}
        self._probes: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}  # (model key, benchmark) -> its linear probe
        self._zero_shot_weights: dict[str, torch.Tensor] = {}
        self._pretrained_accuracies: dict[str, dict[str, dict[str, float]]] = {}  # split -> benchmark -> {"zs", "lp"}
        self._disk_cache = EvaluationCache(self.settings.feature_cache_dir) if self.settings.feature_cache_dir else None
        self._pretrained_fingerprint: str | None = None

    @classmethod
    def from_pretrained(cls, name_or_path, settings: EvaluatorSettings | None = None, *, processor=None) -> "ConceptForgettingEvaluator":
        """The evaluator of a pretrained CLIP given as a directory or Hub id (its processor loaded beside it)."""
        settings = settings or EvaluatorSettings()
        model = load_checkpoint(name_or_path, cache_dir=settings.cache_dir, what="pretrained model")
        if processor is None:
            processor = load_clip_processor(name_or_path, cache_dir=settings.cache_dir)
        evaluator = cls(model, processor, settings)
        if os.path.isdir(os.fspath(name_or_path)):
            evaluator.pretrained_path = os.path.abspath(os.fspath(name_or_path))
        return evaluator

    # benchmarks ------------------------------------------------------------------------------

    def benchmark(self, name) -> LoadedBenchmark:
        """A benchmark with the image transform attached to its train and test splits, and its validation
        split with `settings.validation` (cached).

        `name` is a registered name (the registry's own error lists the valid ones), a `BenchmarkSpec`
        (read from its own `data_path` and columns) or a `LoadedBenchmark`.
        """
        key = name.spec.name if isinstance(name, LoadedBenchmark) else name.name if isinstance(name, BenchmarkSpec) else str(name)
        if key in self._benchmarks:
            return self._benchmarks[key]
        if isinstance(name, LoadedBenchmark):
            loaded = name
        else:
            s = self.settings
            # Without validation scoring, no hold-out: the linear probe chooses its learning rate on a 90/10
            # split of all of train and is then refitted on all of it (the official protocol). With it, the
            # probe trains on the rest of train and never sees the validation rows.
            loaded = load_benchmark(
                name if isinstance(name, BenchmarkSpec) else key, data_path=s.dataset_paths.get(key), image_column=s.image_columns.get(key), label_column=s.label_columns.get(key),
                max_train_samples=s.max_train_samples, max_eval_samples=s.max_eval_samples, seed=s.seed, cache_dir=s.cache_dir,
                validation_fraction=VALIDATION_FRACTION if s.validation else 0.0, validation_seed=VALIDATION_SEED if s.validation else None,
            )
        _check_promptable(key, loaded.class_names, loaded.templates)
        for split in ("train", "test"):  # the linear probe fits on train; every accuracy is on test
            if len(loaded.splits[split]) == 0:
                raise BenchmarkError(f"the {split} split of {key!r} is empty; scoring it needs at least one {split} example")
        transform = image_transform(self.processor.image_processor)
        names = ("train", "test", "validation") if self.settings.validation else ("train", "test")
        self._raw[key] = {split: loaded.splits[split] for split in names if split in loaded.splits}
        splits = {split: raw.with_transform(transform) for split, raw in self._raw[key].items()}
        self._benchmarks[key] = LoadedBenchmark(spec=loaded.spec, splits=splits, class_names=list(loaded.class_names), templates=list(loaded.templates))
        return self._benchmarks[key]

    def _name(self, benchmark) -> str:
        return self.benchmark(benchmark).spec.name if isinstance(benchmark, (LoadedBenchmark, BenchmarkSpec)) else str(benchmark)

    # features -------------------------------------------------------------------------------

    def model_key(self, model: nn.Module, key: str | None = None) -> str:
        """Cache key of a model: `key` if given, "pretrained" for the pretrained model, else a fresh key.

        An in-memory model's weights may change between calls (training), so without an explicit
        key its features are shared only within one `evaluate` call.
        """
        if key is not None:
            return str(key)
        if model is self.pretrained:
            return PRETRAINED_KEY
        return f"in-memory-{uuid.uuid4().hex}"

    def features(self, model: nn.Module, benchmark, split: str, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-normalised image features and labels of `model` on a benchmark split, extracted once per key
        (the pretrained model's also kept in `settings.feature_cache_dir` when that is set)."""
        name = self._name(benchmark)
        bench = self.benchmark(benchmark)
        store = self._features.get(key)
        if store is None:
            store = self._features[key] = {}
            self._evict()
        self._features.move_to_end(key)
        if (name, split) not in store:
            on_disk = self._disk_cache is not None and key == PRETRAINED_KEY and model is self.pretrained
            cache_key = self._cache_key(name, split) if on_disk else None
            cached = self._disk_cache.load_features(cache_key) if on_disk else None
            if cached is None:
                cached = self._extract(model, name, split, store)
                if on_disk:
                    self._disk_cache.save_features(cache_key, *cached)
            store[(name, split)] = cached
        return store[(name, split)]

    def _extract(self, model: nn.Module, name: str, split: str, store: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """A split's features: from its pixels decoded once per process (shared by benchmarks with the same
        images, in `store`), or streamed from the dataset when the split is too large to keep."""
        kept = self._pixels(name, split)
        if kept is None:
            return extract_features(
                model, self.benchmark(name).splits[split], batch_size=self.settings.batch_size, num_workers=self.settings.num_workers,
                desc=f"{name}/{split} features",
            )
        pixels, labels, digest = kept
        if ("pixels", digest) not in store:
            store[("pixels", digest)] = _encode_pixels(model, pixels, self.settings.batch_size, self.device)
        return store[("pixels", digest)], labels

    def _pixels(self, name: str, split: str) -> tuple[torch.Tensor, torch.Tensor, str] | None:
        """A small split's preprocessed images, labels and images digest (`pixels`); None for a split too large to keep."""
        raw = self._raw[name][split]
        size = pixel_bytes(self.processor.image_processor)
        if size is None or size * len(raw) > MAX_SPLIT_BYTES or len(raw) == 0:
            return None
        if (name, split) not in self._digests:  # read once per evaluator: the images' identity and the labels
            self._digests[(name, split)] = images_digest(raw, self.processor.image_processor.to_json_string()), labels_of(raw)
        digest, labels = self._digests[(name, split)]
        return cached_pixels(digest, lambda: self._decode(name, split)), labels, digest

    def _decode(self, name: str, split: str) -> torch.Tensor:
        loader = torch.utils.data.DataLoader(self.benchmark(name).splits[split], batch_size=self.settings.batch_size,
                                             collate_fn=collate_images, num_workers=self.settings.num_workers)
        return torch.cat([batch["pixel_values"] for batch in loader])

    def _cache_key(self, name: str, split: str) -> dict:
        """What the pretrained model's features on a split depend on (`ldifs_hf.evaluation.cache`)."""
        if self._pretrained_fingerprint is None:
            self._pretrained_fingerprint = model_fingerprint(self.pretrained)
        data = self.benchmark(name).splits[split]
        return {
            "kind": "features",
            "model": self._pretrained_fingerprint,
            "benchmark": name,
            "split": split,
            "rows": len(data),
            "data": data._fingerprint,
            "image_processor": self.processor.image_processor.to_json_string(),
            "device": self.device.type,
        }

    def _evict(self) -> None:
        checkpoints = [k for k in self._features if k != PRETRAINED_KEY]
        while len(checkpoints) > self.settings.max_cached_models:
            self._forget(checkpoints.pop(0))

    def _forget(self, key: str) -> None:
        del self._features[key]
        for probe in [p for p in self._probes if p[0] == key]:
            del self._probes[probe]

    def clear_cache(self) -> None:
        """Forget every model's features (and linear probes) except the pretrained model's."""
        for key in [k for k in self._features if k != PRETRAINED_KEY]:
            self._forget(key)

    # accuracies -----------------------------------------------------------------------------

    def zero_shot_weights(self, benchmark, model: nn.Module | None = None) -> torch.Tensor:
        """[C, P] zero-shot classifier of a benchmark from `model`'s text tower (default: the pretrained one)."""
        name, bench = self._name(benchmark), self.benchmark(benchmark)
        if model is None or model is self.pretrained:
            if name not in self._zero_shot_weights:
                self._zero_shot_weights[name] = zero_shot_classifier(self.pretrained, self.processor.tokenizer, bench.class_names, bench.templates)
            return self._zero_shot_weights[name]
        return zero_shot_classifier(model, self.processor.tokenizer, bench.class_names, bench.templates)

    def _text_tower_for(self, model: nn.Module, text_tower: str | None) -> nn.Module | None:
        text_tower = text_tower or self.settings.text_tower
        if text_tower not in TEXT_TOWERS:
            raise ValueError(f"text_tower must be one of {TEXT_TOWERS}, got {text_tower!r}")
        if text_tower == "checkpoint":
            if hasattr(model, "text_model"):
                return model
            logger.warning("%s has no text tower; zero-shot heads come from the pretrained one", type(model).__name__)
        return None

    def zero_shot_accuracy(self, model: nn.Module, benchmark, *, text_tower: str | None = None, key: str | None = None,
                           split: str = "test") -> float:
        """A_ZS: zero-shot top-1 accuracy of a model on a benchmark's test split (or its validation split)."""
        key = self.model_key(model, key)
        features, labels = self.features(model, benchmark, split, key)
        head = self.zero_shot_weights(benchmark, self._text_tower_for(model, text_tower))
        return _accuracy(features @ head.T, labels)

    def linear_probe(self, model: nn.Module, benchmark, *, key: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The linear probe (weight [C, P], bias [C]) fitted on the (frozen) train-split features, once per model key."""
        key = self.model_key(model, key)
        name = self._name(benchmark)
        if (key, name) not in self._probes:
            train_features, train_labels = self.features(model, benchmark, "train", key)
            s = self.settings
            self._probes[(key, name)] = fit_linear_probe(
                train_features, train_labels, len(self.benchmark(benchmark).class_names), solver=s.lp_solver, iterations=s.lp_iterations,
                seed=s.seed, device=self.device,
            )
        return self._probes[(key, name)]

    def linear_probe_accuracy(self, model: nn.Module, benchmark, *, key: str | None = None, split: str = "test") -> float:
        """A_LP: accuracy on the test split (or the validation split) of the linear probe (`linear_probe`)."""
        key = self.model_key(model, key)
        weight, bias = self.linear_probe(model, benchmark, key=key)
        features, labels = self.features(model, benchmark, split, key)
        return _accuracy(features @ weight.T + bias, labels)

    def accuracies(self, model: nn.Module, benchmarks: Iterable, *, key: str | None = None, text_tower: str | None = None,
                   split: str = "test") -> dict[str, dict[str, float]]:
        """{benchmark: {"zs": A_ZS, "lp": A_LP}} on `split`, features extracted once per benchmark and shared."""
        key = self.model_key(model, key)
        results = {}
        for benchmark in tqdm(list(benchmarks), desc="benchmarks", leave=False):
            results[self._name(benchmark)] = {
                "zs": self.zero_shot_accuracy(model, benchmark, text_tower=text_tower, key=key, split=split),
                "lp": self.linear_probe_accuracy(model, benchmark, key=key, split=split),
            }
        return results

    def pretrained_accuracies(self, benchmarks: Iterable, split: str = "test") -> dict[str, dict[str, float]]:
        """The pretrained model's accuracies on `split` (computed once per benchmark), the reference of every Δ."""
        benchmarks = list(benchmarks)
        names = [self._name(b) for b in benchmarks]
        known = self._pretrained_accuracies.setdefault(split, {})
        for benchmark, name in zip(benchmarks, names):
            if name in known:
                continue
            cache_key = self._accuracy_cache_key(name, split) if self._disk_cache is not None else None
            cached = self._disk_cache.load_accuracies(cache_key) if cache_key is not None else None
            if cached is None:
                cached = self.accuracies(self.pretrained, [benchmark], key=PRETRAINED_KEY, text_tower="pretrained", split=split)[name]
                if cache_key is not None:
                    self._disk_cache.save_accuracies(cache_key, cached)
            known[name] = cached
        return {n: known[n] for n in names}

    def _accuracy_cache_key(self, name: str, split: str = "test") -> dict:
        """What the pretrained model's ZS and LP accuracies on a benchmark's `split` depend on."""
        s = self.settings
        return {
            "kind": "accuracies",
            "train": self._cache_key(name, "train"),
            # The scored split under its own name: a test split keeps the key it always had.
            split: self._cache_key(name, split),
            "zero_shot_head": tensor_digest(self.zero_shot_weights(name)),
            "lp_solver": s.lp_solver,
            "lp_protocol": LP_PROTOCOL,
            "lp_iterations": s.lp_iterations,
            "seed": s.seed,
        }

    def finetune_accuracy(self, model: nn.Module, benchmark, *, key: str | None = None, split: str = "test") -> float:
        """A_FT: the fine-tuned model's accuracy on its own task's test split, or its validation split (`own_head_accuracy`)."""
        key = self.model_key(model, key)
        bench = self.benchmark(benchmark)
        features, labels = self.features(model, benchmark, split, key)
        return own_head_accuracy(
            model, features, labels, lambda: self.zero_shot_weights(benchmark, self._text_tower_for(model, "checkpoint")),
            len(bench.class_names), self._name(benchmark),
        )

    # everything at once ---------------------------------------------------------------------

    def evaluate(
        self,
        model: nn.Module,
        benchmarks: Iterable,
        *,
        key: str | None = None,
        finetune_benchmark=None,
        reference: nn.Module | None = None,
        distances: bool = True,
        text_tower: str | None = None,
        ldifs_layers: Sequence[int] | None = None,
        ldifs_normalization: str = "token",
    ) -> ForgettingRecord:
        """One record of a model: per-benchmark accuracies and Δs, A_FT, distances.

        `reference` (default: the pretrained model) is θ0 of the distances; `ldifs_layers` and
        `ldifs_normalization` are the feature distance's taps and normalisation (a run's own, when it
        recorded them; default: 0 and every L/4 blocks, token normalisation).
        """
        key = self.model_key(model, key)
        benchmarks = list(benchmarks)
        accuracies = self.accuracies(model, benchmarks, key=key, text_tower=text_tower)
        deltas = accuracy_deltas(accuracies, self.pretrained_accuracies(benchmarks))
        record: ForgettingRecord = {"eval": {}}
        for name, accs in accuracies.items():
            record["eval"][name] = {"zs_acc": accs["zs"], "lp_acc": accs["lp"], "delta_zs": deltas[name]["zs"], "delta_lp": deltas[name]["lp"]}
        record["a_ft"] = self.finetune_accuracy(model, finetune_benchmark, key=key) if finetune_benchmark is not None else None
        if self.settings.validation:
            record["validation"] = self._validation_scores(model, benchmarks, key, finetune_benchmark, text_tower)
        if distances:
            reference = reference if reference is not None else self.pretrained
            record["param_distance"] = parameter_distance(model, reference)
            for name in accuracies:
                record["eval"][name]["feature_distance"] = self.feature_distance(
                    model, name, reference=reference, layers=ldifs_layers, normalization=ldifs_normalization
                )
            record["feature_distance"] = float(np.mean([e["feature_distance"] for e in record["eval"].values()])) if accuracies else None
        return record

    def _validation_scores(self, model: nn.Module, benchmarks: list, key: str, finetune_benchmark, text_tower: str | None) -> dict:
        """The record's "validation" part: the same heads and probes on each benchmark's validation split."""
        accuracies = self.accuracies(model, benchmarks, key=key, text_tower=text_tower, split="validation")
        deltas = accuracy_deltas(accuracies, self.pretrained_accuracies(benchmarks, split="validation"))
        scores = {name: {"zs_acc": a["zs"], "lp_acc": a["lp"], "delta_zs": deltas[name]["zs"], "delta_lp": deltas[name]["lp"]}
                  for name, a in accuracies.items()}
        a_ft = self.finetune_accuracy(model, finetune_benchmark, key=key, split="validation") if finetune_benchmark is not None else None
        return {"a_ft": a_ft, "eval": scores}

    def feature_distance(
        self, model: nn.Module, benchmark, *, reference: nn.Module | None = None, layers: Sequence[int] | None = None, normalization: str = "token"
    ) -> float:
        """Eq. 3 on (a seeded sample of `feature_distance_samples` examples of) the benchmark's test split."""
        test = self.benchmark(benchmark).splits["test"]
        samples = self.settings.feature_distance_samples
        rows = np.arange(len(test))
        if samples and len(test) > samples:
            rows = np.sort(np.random.default_rng(self.settings.seed).permutation(len(test))[:samples])
            test = test.select(rows)
        kept = self._pixels(self._name(benchmark), "test")
        if kept is not None:  # the same rows' pixels, already decoded
            test = [{"pixel_values": kept[0][i], "labels": int(kept[1][i])} for i in rows]
        return feature_distance(
            model, reference if reference is not None else self.pretrained, test, layers=layers, normalization=normalization,
            batch_size=self.settings.batch_size, num_workers=self.settings.num_workers,
        )

    def load(self, path: str) -> nn.Module:
        """A checkpoint directory or Hub id as a model on the evaluator's device (the pretrained model
        itself when `path` is its directory)."""
        if self.pretrained_path is not None and os.path.abspath(os.fspath(path)) == self.pretrained_path:
            return self.pretrained
        return load_checkpoint(path, device=self.device, cache_dir=self.settings.cache_dir)


@torch.no_grad()
def _encode_pixels(model: nn.Module, pixels: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Unit-normalised image features [N, P] (float32, CPU) of preprocessed images, batch by batch as
    `heads.extract_features` computes them (the same batches, so the same numbers)."""
    dtype = next(model.parameters()).dtype
    was_training = model.training
    model.eval()
    try:
        features = [F.normalize(encode_images(model, pixels[i:i + batch_size].to(device=device, dtype=dtype)).float(), dim=-1)
                    for i in range(0, len(pixels), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(features).cpu()


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
