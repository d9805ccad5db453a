"""Weight-space interpolation of a fine-tuning run with its starting point (WiSE-FT, Wortsman et al. 2022).

θ(α) = (1 − α)·θ_start + α·θ_end over every weight of the classifier, encoder and head alike. θ_end is
the run's final model; θ_start is the model its fine-tuning started from: the pretrained encoder with
the run's initial zero-shot or linear-probe head (saved by the run as `start_head.safetensors`), or, for
FLYP, the pretrained CLIPModel with both towers. α = 0 gives the starting point and α = 1 the run, bit
for bit.

Two uses:
- on disk, `interpolate(run_dir, alpha, output_dir)` (`ldifs-hf interpolate`) writes a run-like folder:
  the classifier, a stock `clip/` export, model cards and a record naming α and the source run;
- in memory, for scoring a checkpoint at many α without writing copies:

      start = load_start_model(checkpoint)       # a run directory or one of its checkpoint-N folders
      for alpha, model in wise_sweep(loaded_checkpoint, start, [0, 0.5, 1]):
          score(model)                            # the checkpoint's own weights come back afterwards
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .cards import write_model_cards
from .model_folder import load_clip_or_classifier, load_clip_processor, looks_like_hub_id, not_a_hub_id, read_model_config
from .modeling import CLIPClassifierConfig, CLIPVisionClassifier, export_clip_model
from .run_folder import CHECKPOINT_DIR, EXPORT_FOLDER, RUN_RECORD_FILE, START_HEAD_FILE, FolderLock, RunRecord, remove_earlier_run
from .run_folder.lock import HOLDER_FILE, LOCK_FILE

logger = logging.getLogger(__name__)


def _load_model(name_or_path: str, what: str, cache_dir: str | None = None) -> nn.Module:
    """A CLIPModel or our classifier by its folder's model_type (no folder code runs); a folder or Hub id
    that cannot be read is one line naming it."""
    if not os.path.exists(name_or_path) and not looks_like_hub_id(name_or_path):
        raise ValueError(f"{what} {name_or_path!r} does not exist (and is not a Hub id: {not_a_hub_id(name_or_path)}); was it moved?")
    try:
        return load_clip_or_classifier(name_or_path, what=what, cache_dir=cache_dir).eval()
    except OSError as err:
        raise ValueError(
            f"could not load {what} {name_or_path!r} ({err}); without network, download a Hub model once elsewhere "
            "(`hf download <id>`) and pass its local directory"
        ) from err

def check_alpha(alpha) -> float:
    """`alpha` as a float if it lies in [0, 1], else a one-line ValueError.

    Values outside [0, 1] (extrapolation past the run or behind its start) are refused: WiSE-FT and
    the paper's frontier use the segment between the two models only.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1] (0: the run's starting point, 1: the fine-tuned run), got {alpha!r}")
    return float(alpha)


def parse_alphas(value, flag: str = "wise_alphas") -> list[float]:
    """Interpolation weights from a comma-separated string ("0,0.5,1") or a sequence of numbers, each
    checked by `check_alpha`; an empty list, a value that is not a number, or the same α twice is a
    one-line ValueError naming `flag`."""
    items = ([v.strip() for v in value.split(",")] if value.strip() else []) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(f"{flag} takes interpolation weights in [0, 1], comma-separated (e.g. '0,0.5,1'), got {value!r}")
    alphas = []
    for item in items:
        try:
            number = float(item) if isinstance(item, str) else item
        except ValueError:
            number = item
        try:
            alphas.append(check_alpha(number))
        except ValueError:
            raise ValueError(f"{flag}: {item!r} is not a number in [0, 1] (0: the run's starting point, 1: the fine-tuned run)") from None
    repeated = sorted({a for a in alphas if alphas.count(a) > 1})
    if repeated:
        raise ValueError(f"{flag} lists {', '.join(f'{a:g}' for a in repeated)} more than once; give each α once")
    return alphas


def save_start_head(model: nn.Module, run_dir: str | os.PathLike) -> str | None:
    """Write the head a classifier starts training with into `run_dir` (safetensors); None for a model
    without a head (FLYP trains the CLIPModel itself, whose start is the pretrained model as saved)."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        return None
    tensors = {"weight": head.weight.detach().cpu().contiguous()}
    if head.bias is not None:
        tensors["bias"] = head.bias.detach().cpu().contiguous()
    path = os.path.join(run_dir, START_HEAD_FILE)
    save_file(tensors, path, metadata={"format": "pt"})
    return path


def run_directory(path: str | os.PathLike) -> str:
    """The run directory of `path`: `path` itself, or the run holding it when it is a `checkpoint-N` folder."""
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    if CHECKPOINT_DIR.match(os.path.basename(path)) and os.path.isfile(os.path.join(parent, RUN_RECORD_FILE)):
        return parent
    return path


def start_problem(path: str | os.PathLike) -> str | None:
    """Why the starting point of the checkpoint at `path` cannot be rebuilt, read from its files without
    loading any weights; None when `load_start_model` can rebuild it."""
    run_dir = run_directory(path)
    if not os.path.isfile(os.path.join(run_dir, RUN_RECORD_FILE)):
        return f"{os.fspath(path)!r} is not an ldifs_hf run (no {RUN_RECORD_FILE}), so its starting point is unknown"
    model_dir = os.fspath(path)
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        return f"{model_dir!r} holds no model (no config.json)"
    if _model_type(model_dir) == CLIPClassifierConfig.model_type and not os.path.isfile(os.path.join(run_dir, START_HEAD_FILE)):
        return (
            f"run {run_dir!r} did not record its starting head ({START_HEAD_FILE}), as runs made before interpolation "
            "existed do not: rerun it to interpolate it"
        )
    return None


def load_start_model(path: str | os.PathLike, *, cache_dir: str | None = None) -> nn.Module:
    """The model the run at `path` (a run directory or one of its `checkpoint-N` folders) started from.

    A classifier run: its base model's vision tower and projection with the head it recorded in
    `start_head.safetensors`, rebuilt as the run built it (`CLIPVisionClassifier.from_clip`). A FLYP run:
    the base CLIPModel. Refuses, in one line (`start_problem`), a folder that is no run of ours or a
    classifier run written before runs recorded their starting head.
    """
    problem = start_problem(path)
    if problem is not None:
        raise ValueError(problem)
    run_dir, model_dir = run_directory(path), os.fspath(path)
    record = RunRecord.load(run_dir)
    if _model_type(model_dir) != CLIPClassifierConfig.model_type:  # FLYP: CLIP itself, both towers
        return _load_model(record.base_model, "base model", cache_dir)
    base_model = _load_model(record.base_model, "base model", cache_dir)
    head = load_file(os.path.join(run_dir, START_HEAD_FILE))
    trained_config = CLIPClassifierConfig.from_pretrained(model_dir)
    start = CLIPVisionClassifier.from_clip(base_model, head["weight"], head.get("bias"), id2label=trained_config.id2label)
    return start.eval()


def _model_type(model_dir: str) -> str | None:
    return read_model_config(model_dir, what="run").get("model_type")


def interpolated_state_dict(start, end, alpha: float) -> dict[str, torch.Tensor]:
    """θ(α) = (1 − α)·θ_start + α·θ_end for every entry of two state dicts (or modules) of one architecture.

    Computed with `torch.lerp`, which returns θ_start exactly at α = 0 and θ_end exactly at α = 1; the
    result has `end`'s dtypes and devices. Integer buffers (position ids) must be equal and are kept.
    Refuses, naming the first offending entry, state dicts whose keys or shapes differ.
    """
    alpha = check_alpha(alpha)
    start_state = start.state_dict() if isinstance(start, nn.Module) else start
    end_state = end.state_dict() if isinstance(end, nn.Module) else end
    if start_state.keys() != end_state.keys():
        only_start, only_end = sorted(start_state.keys() - end_state.keys()), sorted(end_state.keys() - start_state.keys())
        raise ValueError(
            f"the start and end models differ in their weights (only in start: {only_start[:3]}, only in end: {only_end[:3]}); "
            "interpolation needs two models of one architecture"
        )
    mixed = {}
    for name, end_tensor in end_state.items():
        start_tensor = start_state[name].to(device=end_tensor.device)
        if start_tensor.shape != end_tensor.shape:
            raise ValueError(f"weight {name!r} has shape {tuple(start_tensor.shape)} at the start and {tuple(end_tensor.shape)} at the end")
        if not end_tensor.is_floating_point():
            if not torch.equal(start_tensor, end_tensor):
                raise ValueError(f"non-float entry {name!r} differs between the start and end models, so it cannot be interpolated")
            mixed[name] = end_tensor.detach().clone()
            continue
        # In float32 or wider, then back: half-precision lerp would round the weights twice.
        wide = torch.promote_types(end_tensor.dtype, torch.float32)
        mixed[name] = torch.lerp(start_tensor.detach().to(wide), end_tensor.detach().to(wide), alpha).to(end_tensor.dtype)
    return mixed


@contextmanager
def interpolated_weights(model: nn.Module, start, alpha: float) -> Iterator[nn.Module]:
    """Within the block `model` (holding θ_end) holds θ(α) towards `start`; its own weights come back,
    bit for bit, on exit (also on an error). Nothing is written to disk."""
    mixed = interpolated_state_dict(start, model, alpha)  # refuses bad alpha or mismatched models first
    own = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    try:
        model.load_state_dict(mixed)
        yield model
    finally:
        model.load_state_dict(own)


def wise_sweep(model: nn.Module, start, alphas: Iterable[float]) -> Iterator[tuple[float, nn.Module]]:
    """(α, model at θ(α)) for each α in turn, in memory; `model`'s own weights are back after the sweep
    (or when the loop is left early). All α are checked before the first is applied."""
    alphas = [check_alpha(a) for a in alphas]
    start_state = start.state_dict() if isinstance(start, nn.Module) else start
    for alpha in alphas:
        with interpolated_weights(model, start_state, alpha):
            yield alpha, model


def interpolate(run_dir: str | os.PathLike, alpha: float, output_dir: str | os.PathLike, *, cache_dir: str | None = None) -> RunRecord:
    """Write θ(α) of the finished run in `run_dir` to `output_dir` as a run-like folder; return its record.

    The folder holds the model as the run saved its own (a `CLIPVisionClassifier`, or a CLIPModel for
    FLYP; safetensors), the processor, the run's starting head, a stock-CLIP export in `clip/`, model
    cards, and an `ldifs_run.json` copied from the run's with `alpha` and `source_run` set and no results
    (none were measured at α). Its start is the run's, so it can itself be interpolated or swept.
    Refused in one line, before any model is loaded: α outside [0, 1], a folder that is not a finished
    run, an output folder that is the run's (or inside it) or holds files, unless they are this same
    interpolation: a finished one is returned as it is, one cut short (a kill) is written again.
    """
    alpha = check_alpha(alpha)
    run_dir, output_dir = os.path.realpath(os.fspath(run_dir)), os.path.realpath(os.fspath(output_dir))
    if not os.path.isfile(os.path.join(run_dir, RUN_RECORD_FILE)):
        raise ValueError(f"run {run_dir!r} is not an ldifs_hf run directory (no {RUN_RECORD_FILE})")
    if run_directory(run_dir) != run_dir:
        raise ValueError(
            f"run {run_dir!r} is a checkpoint of the run {run_directory(run_dir)!r}; pass the run's folder (its final model), or score "
            "checkpoints at several α with `ldifs-hf evaluate --wise_alphas`"
        )
    source = RunRecord.load(run_dir)
    if not source.completed:
        raise ValueError(f"run {run_dir!r} is not finished (its {RUN_RECORD_FILE} says completed: false); finish it first")
    if output_dir == run_dir or output_dir.startswith(run_dir + os.sep):
        raise ValueError(f"output_dir {output_dir!r} is the run's folder or inside it; choose a folder outside {run_dir!r}")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"output_dir {output_dir!r} is a file; choose a new or empty folder")
    # Held from the emptiness check to the record, so that two interpolations into one new folder cannot
    # both find it empty and both report it as theirs.
    with FolderLock(output_dir):
        if set(os.listdir(output_dir)) - {LOCK_FILE, HOLDER_FILE}:
            earlier = _earlier_interpolation(output_dir, run_dir, alpha)
            if earlier.completed:
                logger.warning("%s already holds this interpolation: nothing was written, its record is returned", output_dir)
                return earlier
            remove_earlier_run(output_dir)  # cut short: written again
        return _write_interpolation(run_dir, source, alpha, output_dir, cache_dir)


def _earlier_interpolation(output_dir: str, run_dir: str, alpha: float) -> RunRecord:
    """The record of this same interpolation (of `run_dir` at `alpha`) in a folder that is not empty, so that
    the same command returns it when it finished and writes it again when it was cut short; any other
    content is refused, naming it."""
    try:
        earlier = RunRecord.load(output_dir) if os.path.isfile(os.path.join(output_dir, RUN_RECORD_FILE)) else None
    except ValueError:
        earlier = None
    if earlier is None or earlier.alpha is None:
        raise ValueError(f"output_dir {output_dir!r} is not empty; choose a new or empty folder")
    if (os.path.realpath(earlier.source_run or ""), earlier.alpha) != (run_dir, alpha):
        raise ValueError(
            f"output_dir {output_dir!r} holds the interpolation of {earlier.source_run!r} at alpha {earlier.alpha:g}, not of {run_dir!r} "
            f"at {alpha:g}; choose a new or empty folder"
        )
    return earlier.moved_to(output_dir)


def _write_interpolation(run_dir: str, source: RunRecord, alpha: float, output_dir: str, cache_dir: str | None) -> RunRecord:
    """The body of `interpolate`, once its checks passed and `output_dir` is held."""
    start = load_start_model(run_dir, cache_dir=cache_dir)
    model = _load_model(run_dir, "run")
    model.load_state_dict(interpolated_state_dict(start, model, alpha))
    del start
    os.makedirs(output_dir, exist_ok=True)
    export_dir = os.path.join(output_dir, EXPORT_FOLDER)
    record = RunRecord.from_dict(
        {**source.to_dict(), "results": {}, "output_dir": output_dir, "export_dir": export_dir, "completed": False,
         "alpha": alpha, "source_run": run_dir}
    )
    record.save(output_dir)  # first: a folder cut short is known as this interpolation, and the same command redoes it
    model.save_pretrained(output_dir, safe_serialization=True)
    try:
        load_clip_processor(run_dir).save_pretrained(output_dir)
    except (OSError, ValueError):
        pass  # a run folder without its processor: the clip/ export still carries the base model's
    if os.path.isfile(os.path.join(run_dir, START_HEAD_FILE)):  # the same start: the folder interpolates further
        shutil.copyfile(os.path.join(run_dir, START_HEAD_FILE), os.path.join(output_dir, START_HEAD_FILE))
    export_clip_model(model, source.base_model, export_dir)
    write_model_cards(output_dir, export_dir, record)
    record.completed = True
    record.save(output_dir)
    return record

