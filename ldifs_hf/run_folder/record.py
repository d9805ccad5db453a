"""`RunRecord`: what a fine-tuning run was and what it measured, the one definition of `ldifs_run.json`.

The run writes it (`save`), the model cards and the Hub push read it, and evaluation finds it beside a
checkpoint (`RunRecord.find`) to learn the method, the task and the base model. Nothing else reads or
writes that file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from ..options import check_field_types

RUN_RECORD_FILE = "ldifs_run.json"
# Records written before the regularizer reported its own settings kept the built-ins' as fields of their own.
_EARLIER_FIELDS = ("ldifs_lambda", "l2sp_lambda", "ldifs_layers", "ldifs_normalization")


class RunRecordError(ValueError):
    """An `ldifs_run.json` that cannot be read as a run record: the message names the file."""


@dataclass
class RunRecord:
    """One fine-tuning run.

    Attributes:
        method: the method's registry name (e.g. "lp-init-ldifs").
        dataset: the fine-tuning benchmark's name.
        base_model: the pretrained model it started from (Hub id or local directory).
        regularizer: a registered regularizer's name ("none", "l2sp", "ldifs", "kl", ...).
        regularizer_settings: what the regularizer reports of its settings (its `record`: every setting, e.g.
            LDIFS's weight and the taps it used), JSON values; {} without settings.
        regularizer_weight: its weight λ in the loss (None without a weighted term), as the regularizer reads it
            from its settings: what the frontier, the tables and the cards show as λ.
        regularizer_text: the regularizer's own model-card text (its `describe`).
        dataset_splits: which data each split used, in words.
        text_tower: "pretrained", or "fine-tuned (FLYP)" for the methods that train it.
        results: A_FT on the validation and test splits ("validation_accuracy", "test_accuracy").
        output_dir: where the run wrote its files.
        export_dir: the stock-CLIP export, when written.
        completed: True once training, export and cards are all written.
        settings: the arguments that decide the run's result (`training.run.run_settings`), with the
            number of processes and the global batch; a rerun in the same folder with other values is
            refused. None in older records.
        alpha / source_run: for a weight-space interpolation (`ldifs_hf.interpolate`), its α and the run
            it interpolates towards its starting point; None for a run.
        method_spec: the method's facts as the registry had them ("head_init", "objective", "regularizer",
            "trained"): what a report pairs methods by ("differ only in the regularizer"); None in older records.
    """

    method: str
    dataset: str
    base_model: str
    regularizer: str = "none"
    regularizer_settings: dict = field(default_factory=dict)
    regularizer_weight: float | None = None
    regularizer_text: str | None = None
    dataset_splits: str | None = None
    text_tower: str = "pretrained"
    results: dict[str, float] = field(default_factory=dict)
    output_dir: str | None = None
    export_dir: str | None = None
    completed: bool = False
    settings: dict | None = None
    alpha: float | None = None
    source_run: str | None = None
    method_spec: dict | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunRecord":
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [name for name in ("method", "dataset", "base_model") if name not in data]
        if missing:
            raise ValueError(f"a run record needs {missing}; got keys {sorted(data)}")
        if any(name in data for name in _EARLIER_FIELDS):
            data = _from_earlier_format(data)
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, directory: str | os.PathLike) -> str:
        """Write `ldifs_run.json` into `directory` (atomically: a reader never sees half a file)."""
        path = os.path.join(directory, RUN_RECORD_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=2, default=str)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "RunRecord":
        """The record in `directory`; a file that is not a run record raises a RunRecordError naming it."""
        path = os.path.join(directory, RUN_RECORD_FILE)
        if os.path.isdir(path):
            raise RunRecordError(f"{path} is a directory, not a run record")
        with open(path) as f:
            try:
                data = json.load(f)
            except ValueError as err:
                raise RunRecordError(f"{path} is damaged: not JSON ({err}); it was edited or cut short") from None
        if not isinstance(data, dict):
            raise RunRecordError(f"{path} is damaged: it holds a JSON {type(data).__name__}, not a run record")
        try:
            record = cls.from_dict(data)
            check_field_types(record)  # e.g. settings that are not an object would compare as "unchanged"
        except (TypeError, ValueError) as err:
            raise RunRecordError(f"{path} is damaged: {err}") from None
        return record

    def moved_to(self, directory: str | os.PathLike, *, with_siblings: bool = False) -> "RunRecord":
        """This run's record as read from `directory`, where the run now is: a run moved or copied there
        keeps naming its old folder in `output_dir` and `export_dir` until these are rewritten to where it
        is. `with_siblings`: its parent folder moved with it (a sequence's task), so the inputs it took
        from a sibling (the previous task's export: `base_model`, the settings' model paths) move too."""
        directory = os.path.abspath(os.fspath(directory))
        old = self.output_dir
        if old is None or os.path.abspath(old) == directory:
            return self
        old = os.path.abspath(old)

        def moved(path, root_from, root_to):
            if not isinstance(path, str) or not os.path.abspath(path).startswith(root_from.rstrip(os.sep) + os.sep):
                return path
            return os.path.join(root_to, os.path.relpath(os.path.abspath(path), root_from))

        values = {"output_dir": directory, "export_dir": moved(self.export_dir, old, directory)}
        if with_siblings:
            parents = (os.path.dirname(old), os.path.dirname(directory))
            values["base_model"] = moved(self.base_model, *parents)
            if self.settings is not None:
                values["settings"] = {k: moved(v, *parents) if k.endswith("name_or_path") else v for k, v in self.settings.items()}
        return dataclasses.replace(self, **values)

    @classmethod
    def find(cls, checkpoint: str | os.PathLike) -> "RunRecord | None":
        """The record of the run a checkpoint belongs to: in its directory, else in the parent (for a
        `checkpoint-N` folder inside a run directory); None when there is none."""
        path = os.path.abspath(os.fspath(checkpoint))
        for directory in (path, os.path.dirname(path)):
            if os.path.isfile(os.path.join(directory, RUN_RECORD_FILE)):
                return cls.load(directory)
        return None


def _from_earlier_format(data: dict) -> dict:
    """A record of the earlier format (`ldifs_lambda`, `l2sp_lambda`, `ldifs_layers`, `ldifs_normalization` as fields;
    `regularizer_text` absent in the oldest) in today's shape: the run's own regularizer's settings as its
    `regularizer_settings`, its λ as `regularizer_weight`, and the card text those records were given."""
    data = dict(data)
    earlier = {name: data.pop(name, None) for name in _EARLIER_FIELDS}
    regularizer = data.get("regularizer") or "none"
    if regularizer == "ldifs":
        own = {"ldifs_lambda": earlier["ldifs_lambda"], "ldifs_layers": earlier["ldifs_layers"],
               "ldifs_normalization": earlier["ldifs_normalization"] or "token"}
        weight = own["ldifs_lambda"]
        text = f"LDIFS, λ = {weight}, {own['ldifs_normalization']} normalisation, taps {own['ldifs_layers']}"
    elif regularizer == "l2sp":
        own = {"l2sp_lambda": earlier["l2sp_lambda"]}
        weight = own["l2sp_lambda"]
        text = f"L2SP, λ = {weight}"
    else:
        own, weight, text = {}, None, regularizer
    data.setdefault("regularizer_settings", own)
    data.setdefault("regularizer_weight", weight)
    if not data.get("regularizer_text"):
        data["regularizer_text"] = text
    return data
