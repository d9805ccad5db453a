"""On-disk cache of the pretrained model's image features and accuracies, shared by every run of a study.

Every run of a study scores the same pretrained model on the same benchmarks; with
`EvaluatorSettings(feature_cache_dir=...)` the first run stores its features and accuracies here and
the others read them back instead of decoding, resizing and encoding every image again.

An entry is found by the SHA-256 of a key that names everything its value depends on:
- the model: `model_fingerprint`, a digest of its state dict (every tensor's name, dtype, shape and
  bytes), so another model, or the same weights in another dtype, never reuses an entry;
- the data: the benchmark, the split, its row count and its `datasets` fingerprint (which changes
  with the data files, the subsample cap, the seed and the attached transform; a dataset built in
  memory has a random fingerprint, so its entries are never found again by another process);
- the preprocessing: the image processor's settings; and the device type the features came from;
- for accuracies also: the zero-shot head's digest and the linear probe's settings.
Each entry stores its key and is used only if the stored key equals the asked one. Features are
safetensors files ({"features": [N, P] float32, "labels": [N] int64}), accuracies JSON files.
Writes go to a temporary file then `os.replace`, so concurrent runs sharing the folder never read a
half-written entry. An entry that cannot be read back (truncated, edited, written by something else)
is named in a one-line warning, deleted and reported as missing, so the caller computes it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from typing import Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..run_folder import folder_problem

CACHE_FORMAT = "ldifs_hf-evaluation-cache-v1"

logger = logging.getLogger(__name__)


def tensor_digest(tensor: torch.Tensor, digest=None) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (hex); with `digest`, updates it instead."""
    own = digest is None
    digest = digest or hashlib.sha256()
    tensor = tensor.detach()
    digest.update(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    # Viewed as bytes, so dtypes numpy lacks (bfloat16) hash the same way as the others.
    digest.update(tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest() if own else ""


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 (hex) of a model's class and state dict: names, dtypes, shapes and bytes of every tensor."""
    digest = hashlib.sha256(type(model).__name__.encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        tensor_digest(tensor, digest)
    return digest.hexdigest()


def key_digest(key: Mapping) -> str:
    """SHA-256 (hex) of a key's canonical JSON; the key must be JSON-serialisable."""
    return hashlib.sha256(_canonical(key).encode()).hexdigest()


def _canonical(key: Mapping) -> str:
    try:
        return json.dumps({"format": CACHE_FORMAT, **key}, sort_keys=True, separators=(",", ":"))
    except TypeError as err:
        raise TypeError(f"an evaluation cache key must be JSON-serialisable, got {dict(key)!r}: {err}") from None


def check_cache_dir(directory: str) -> None:
    """The cache folder (created if missing) takes files: one line naming it, before any feature is computed."""
    problem = folder_problem(directory)
    if problem is not None:
        raise OSError(f"feature_cache_dir {directory!r} cannot hold the cache: {problem}; choose another folder")


class EvaluationCache:
    """Features and accuracies under `directory`, one file per key (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = os.fspath(directory)
        check_cache_dir(self.directory)
        os.makedirs(self.directory, exist_ok=True)

    def _path(self, key: Mapping, suffix: str) -> str:
        return os.path.join(self.directory, key_digest(key) + suffix)

    def load_features(self, key: Mapping) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(features, labels) stored under `key`, or None if there are none (or only a damaged entry)."""
        path = self._path(key, ".safetensors")
        if not os.path.exists(path):
            return None
        try:
            with safe_open(path, framework="pt") as f:
                if (f.metadata() or {}).get("key") != _canonical(key):
                    return None
                features, labels = f.get_tensor("features"), f.get_tensor("labels")
        except (SafetensorError, OSError, ValueError, KeyError) as err:
            return self._drop(path, err)
        if features.dim() != 2 or labels.dim() != 1 or len(features) != len(labels):
            return self._drop(path, f"features {tuple(features.shape)} and labels {tuple(labels.shape)} are not [N, P] and [N]")
        return features, labels

    def save_features(self, key: Mapping, features: torch.Tensor, labels: torch.Tensor) -> None:
        tensors = {"features": features.detach().cpu().contiguous(), "labels": labels.detach().cpu().contiguous()}
        self._write(self._path(key, ".safetensors"), lambda tmp: save_file(tensors, tmp, metadata={"key": _canonical(key)}))

    def load_accuracies(self, key: Mapping) -> dict | None:
        """The accuracies stored under `key`, or None if there are none (or only a damaged entry)."""
        path = self._path(key, ".json")
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                entry = json.load(f)
        except (OSError, ValueError) as err:  # ValueError: not JSON, or not UTF-8
            return self._drop(path, err)
        if not isinstance(entry, dict) or not isinstance(entry.get("value"), dict):
            return self._drop(path, 'not an object with a "key" and a "value" object')
        return entry["value"] if entry.get("key") == _canonical(key) else None

    def save_accuracies(self, key: Mapping, value: Mapping) -> None:
        def write(tmp):
            with open(tmp, "w") as f:
                json.dump({"key": _canonical(key), "value": dict(value)}, f)

        self._write(self._path(key, ".json"), write)

    def _drop(self, path: str, reason) -> None:
        """Delete a damaged entry (another run may have deleted or rewritten it already) so it is recomputed."""
        logger.warning("evaluation cache entry %s is damaged and is recomputed (%s)", path, " ".join(str(reason).split())[:200])
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        return None

    def _write(self, path: str, write) -> None:
        handle, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        os.close(handle)
        try:
            write(tmp)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
