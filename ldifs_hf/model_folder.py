"""Model folders a user names (a base model, a reference model, a checkpoint), read as data before
anything loads them, and loaded only by known classes.

transformers' Auto classes (and `CLIPProcessor`, which asks `AutoConfig` for the model type) run the
Python files of a folder whose config.json has an `auto_map` and a `model_type` transformers does not
know, after asking "run the custom code? [y/N]" on a terminal. So here:
- the folder's config.json is read as JSON first (a missing, unreadable or non-JSON file is one error
  line naming it);
- its `model_type` must be one the command accepts (the refusal names it and the accepted ones);
- only then does a known class load it: `CLIPModel`, or the project's own `CLIPVisionClassifier`,
  whose source files saved beside its weights are never imported; processors load with
  `trust_remote_code=False`.
No command therefore prompts for, or runs, code from a folder it is given.

A damaged folder is refused, never loaded as if whole (`check_model_files`, read without loading: weight
files present and intact, a tokenizer and an image processor beside them); weights that do not fit the
config (tensors missing, extra or of another shape, which transformers would fill with fresh random
values or drop) are refused after loading, naming the tensors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
from collections.abc import Sequence

from .clip_classifier import CLIPClassifierConfig, CLIPVisionClassifier
from .run_folder.checkpoints import file_damage

CONFIG_FILE = "config.json"
CLIP_MODEL_TYPE = "clip"
FINETUNE_PURPOSE = "the paper's methods fine-tune a CLIP model"
EVALUATION_PURPOSE = "evaluation takes a CLIPModel or a CLIPVisionClassifier"
# Where a run's classifier has a stock CLIPModel a CLIP command can take.
CONTINUE_FROM_EXPORT = "to start from it, pass its stock CLIPModel export, '{path}/clip'"
# The files a saved CLIP processor leaves: a tokenizer (one file, or the vocabulary and merges) and an
# image processor (its own file, or inside the processor's).
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))
IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
# The weights a folder loads from, in the order transformers prefers them: an index names its shards.
_WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")


class ModelFolderError(ValueError):
    """A model folder that cannot be used: the message names the file or the model type at fault."""


def read_model_config(name_or_path: str | os.PathLike, *, what: str = "model", cache_dir: str | None = None) -> dict:
    """The config.json of a local model folder, or of a Hub id's cached snapshot, as a dict.

    Raises ModelFolderError (a folder without config.json, a file, a config that cannot be read or is
    not a JSON object) and, for a Hub id that cannot be fetched, transformers' OSError."""
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        config_file = os.path.join(path, CONFIG_FILE)
        if os.path.isdir(config_file):
            raise ModelFolderError(f"{what}: {config_file} is a directory, not a JSON config file")
        if not os.path.isfile(config_file):
            raise ModelFolderError(
                f"{what} {path!r} is not a model directory: it has no config.json; pass a folder a model "
                "was saved to with save_pretrained"
            )
    elif os.path.exists(path):
        raise ModelFolderError(f"{what} {path!r} is a file, not a model directory; pass the directory that holds its config.json")
    else:  # a Hub id: its config.json from the local cache, or downloaded
        from transformers.utils import cached_file

        config_file = cached_file(path, CONFIG_FILE, cache_dir=cache_dir)
    try:
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
    except OSError as err:
        raise ModelFolderError(f"{what}: cannot read {config_file} ({err.strerror or err})") from err
    except ValueError as err:  # not JSON, or not UTF-8
        raise ModelFolderError(f"{what}: {config_file} is not a JSON config ({' '.join(str(err).split())})") from err
    if not isinstance(config, dict):
        raise ModelFolderError(f"{what}: {config_file} holds a JSON {type(config).__name__}, not a config object")
    return config


def looks_like_hub_id(path: str) -> bool:
    """Whether a path that does not exist may be a Hub id: 'name' or 'owner/name', unless it starts like a
    local path ('./', '../', '~') or its 'owner' is a local folder (`runs/typo` is a misspelt run)."""
    parts = path.split("/")
    if len(parts) == 2 and os.path.isdir(parts[0]):
        return False
    return len(parts) <= 2 and all(parts) and not path.startswith((".", "~")) and os.sep not in path.replace("/", "")


def not_a_hub_id(path: str) -> str:
    """Why a missing `path` is read as a local path, in words (`looks_like_hub_id` said it is not a Hub id)."""
    owner = path.split("/")[0]
    if path.count("/") == 1 and os.path.isdir(owner):
        return f"{owner!r} is a local folder, so this is a path in it"
    return "a Hub id has the form 'name' or 'owner/name'"


def check_model_type(
    config: dict, name: str, accepted: Sequence[str], *, what: str = "model", purpose: str, classifier_hint: str | None = None,
) -> str:
    """`config`'s model_type, if it is one of `accepted`; otherwise a ModelFolderError naming both.

    `purpose` says why: "... is a 'bert' model; {purpose}: accepted model_type 'clip'"; `classifier_hint`
    what to pass instead of one of our classifiers ("{path}" is its folder)."""
    model_type = config.get("model_type")
    if model_type in accepted:
        return model_type
    accepted_text = f"{purpose}: accepted model_type {' or '.join(repr(t) for t in accepted)}"
    if model_type is None:
        raise ModelFolderError(f"{what} {os.fspath(name)!r} has no model_type in its config.json; {accepted_text}")
    if model_type == CLIPClassifierConfig.model_type:  # our own classifier, not a folder's custom code
        raise ModelFolderError(
            f"{what} {os.fspath(name)!r} is a classifier fine-tuned by ldifs_hf ({model_type!r}); {accepted_text}"
            + (f": {classifier_hint.format(path=os.fspath(name))}" if classifier_hint else "")
        )
    remote = " (its config names custom code, which is never run)" if "auto_map" in config else ""
    raise ModelFolderError(f"{what} {os.fspath(name)!r} is a {model_type!r} model{remote}; {accepted_text}")


def config_object(config_class, config: dict, name, *, what: str = "model"):
    """`config_class.from_dict(config)`, or a ModelFolderError naming the folder: a value of the wrong type
    (a string where a size goes) otherwise fails inside transformers, naming no file."""
    try:
        return config_class.from_dict(config)
    except Exception as err:  # the config classes' own validation errors have no common base
        raise ModelFolderError(
            f"{what} {os.fspath(name)!r}: its config.json is not a valid {config_class.__name__} ({' '.join(str(err).split())[:300]})"
        ) from None


def clip_config(name_or_path, *, what: str = "model", purpose: str = "this command takes a CLIP model", cache_dir: str | None = None):
    """The `CLIPConfig` of a CLIP model folder or Hub id, read without loading weights."""
    from transformers import CLIPConfig

    config = read_model_config(name_or_path, what=what, cache_dir=cache_dir)
    check_model_type(config, name_or_path, (CLIP_MODEL_TYPE,), what=what, purpose=purpose, classifier_hint=CONTINUE_FROM_EXPORT)
    return config_object(CLIPConfig, config, name_or_path, what=what)


def check_model_files(name_or_path, *, what: str = "model", processor: bool = True) -> None:
    """A local model folder's weights are there and intact (a safetensors header and size, a torch file's
    archive; every shard an index names), and with `processor` a tokenizer and an image processor are
    saved beside them; a ModelFolderError naming the file otherwise. Read without loading anything; a Hub
    id is not checked here (its files are fetched when it loads)."""
    path = os.fspath(name_or_path)
    if not os.path.isdir(path):
        return
    for file in _weight_files(path, what):
        problem = file_damage(file)
        if problem is not None:
            raise ModelFolderError(f"{what} {path!r}: {problem}; save or download the model again")
    if processor:
        check_processor_files(path, what=what)


def _weight_files(path: str, what: str) -> list[str]:
    """The weight files a folder loads from (an index's shards), or a ModelFolderError saying none are there."""
    name = next((n for n in _WEIGHT_FILES if os.path.isfile(os.path.join(path, n))), None)
    if name is None:
        raise ModelFolderError(
            f"{what} {path!r} has no weights ({' or '.join(_WEIGHT_FILES[1::2])}, or a sharded index); pass a folder a model was saved to with save_pretrained"
        )
    if not name.endswith(".index.json"):
        return [os.path.join(path, name)]
    index = os.path.join(path, name)
    try:
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ModelFolderError(f"{what}: {index} is not a weight index ({' '.join(str(err).split())[:200]})") from err
    missing = [shard for shard in shards if not os.path.isfile(os.path.join(path, shard))]
    if missing:
        raise ModelFolderError(f"{what} {path!r}: {name} names the shard {missing[0]}, which is missing ({len(missing)} of {len(shards)} shards are)")
    return [os.path.join(path, shard) for shard in shards]


def check_processor_files(name_or_path, *, what: str = "model") -> None:
    """A local folder holds a saved CLIP tokenizer and image processor: without them transformers builds
    an empty tokenizer, or the Hub's defaults, whose errors would come much later and name neither."""
    path = os.fspath(name_or_path)
    if not os.path.isdir(path):
        return
    for name in (*(f for files in TOKENIZER_FILES for f in files), *IMAGE_PROCESSOR_FILES, "tokenizer_config.json"):
        problem = file_damage(os.path.join(path, name)) if name.endswith(".json") and os.path.isfile(os.path.join(path, name)) else None
        if problem is not None:
            raise ModelFolderError(f"{what} {path!r}: {problem}; save the model's processor again (CLIPProcessor.save_pretrained)")
    if not any(all(os.path.isfile(os.path.join(path, f)) for f in files) for files in TOKENIZER_FILES):
        raise ModelFolderError(
            f"{what} {path!r} has no tokenizer ({' or '.join(' with '.join(files) for files in TOKENIZER_FILES)}), which the zero-shot "
            "heads need; save the model's processor beside it (CLIPProcessor.save_pretrained)"
        )
    if not any(os.path.isfile(os.path.join(path, f)) for f in IMAGE_PROCESSOR_FILES):
        raise ModelFolderError(
            f"{what} {path!r} has no image processor ({' or '.join(IMAGE_PROCESSOR_FILES)}), which says how images are resized "
            "for it; save the model's processor beside it (CLIPProcessor.save_pretrained)"
        )


def _not_a_load_report(record: logging.LogRecord) -> bool:
    return "LOAD REPORT" not in str(record.msg)


@contextlib.contextmanager
def _quiet_load_report():
    """transformers' own table of missing or mismatched tensors stays off the console: the refusal below
    names them. A filter, not a level: transformers runs other checks (and warns) by that logger's level."""
    report = logging.getLogger("transformers.modeling_utils")
    report.addFilter(_not_a_load_report)
    try:
        yield
    finally:
        report.removeFilter(_not_a_load_report)


def load_weights(model_class, name_or_path, *, what: str = "model", cache_dir: str | None = None):
    """`model_class.from_pretrained(name_or_path)`, refused in one line when the folder is damaged
    (`check_model_files`) or its weights do not fit its config: tensors missing (transformers would
    initialise them at random), extra, or of another shape."""
    check_model_files(name_or_path, what=what, processor=False)
    path = os.fspath(name_or_path)
    try:
        with _quiet_load_report():
            model, info = model_class.from_pretrained(name_or_path, cache_dir=cache_dir, output_loading_info=True, ignore_mismatched_sizes=True)
    except pickle.UnpicklingError as err:
        raise ModelFolderError(
            f"{what} {path!r}: its pytorch_model.bin holds pickled Python objects, not plain tensors, which torch loads only by running "
            "them; load it where it was made and save it again with save_pretrained (safetensors)"
        ) from err
    problems = []
    for key, words in (("missing_keys", "lack {} tensor(s) the config has"), ("unexpected_keys", "hold {} tensor(s) the config has no place for")):
        names = sorted(info.get(key) or ())
        if names:
            problems.append(f"its weights {words.format(len(names))} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})")
    for name, stored, expected in sorted(info.get("mismatched_keys") or (), key=str)[:1]:
        problems.append(f"{name} has shape {tuple(stored)} in its weights but {tuple(expected)} in its config")
    if problems:
        raise ModelFolderError(
            f"{what} {path!r} does not match its config.json: {'; '.join(problems)}; a model loaded from it would not be the one "
            "saved, so it is refused: save or download it again"
        )
    return model


def load_clip_model(name_or_path, *, what: str = "model", purpose: str = "this command takes a CLIP model", cache_dir: str | None = None):
    """A `CLIPModel` from a folder or Hub id whose config.json says model_type 'clip' (`load_weights`' checks)."""
    from transformers import CLIPModel

    clip_config(name_or_path, what=what, purpose=purpose, cache_dir=cache_dir)
    return load_weights(CLIPModel, name_or_path, what=what, cache_dir=cache_dir)


def load_clip_or_classifier(name_or_path, *, what: str = "checkpoint", purpose: str = EVALUATION_PURPOSE, cache_dir: str | None = None):
    """A `CLIPModel` ('clip') or the project's `CLIPVisionClassifier` ('ldifs_clip_classifier'),
    by the folder's model_type; the classifier's own class loads it, never the files saved beside it."""
    from transformers import CLIPModel

    config = read_model_config(name_or_path, what=what, cache_dir=cache_dir)
    accepted = (CLIP_MODEL_TYPE, CLIPClassifierConfig.model_type)
    model_type = check_model_type(config, name_or_path, accepted, what=what, purpose=purpose)
    model_class = CLIPVisionClassifier if model_type == CLIPClassifierConfig.model_type else CLIPModel
    config_object(model_class.config_class, config, name_or_path, what=what)
    return load_weights(model_class, name_or_path, what=what, cache_dir=cache_dir)


def load_clip_processor(name_or_path, *, cache_dir: str | None = None, what: str = "model"):
    """The `CLIPProcessor` saved with a model (a local folder must hold one: `check_processor_files`);
    never runs code named by the folder's configs."""
    from transformers import CLIPProcessor

    check_processor_files(name_or_path, what=what)
    return CLIPProcessor.from_pretrained(name_or_path, cache_dir=cache_dir, trust_remote_code=False)


# -- causal language models -------------------------------------------------------------------------

ADAPTER_CONFIG_FILE = "adapter_config.json"
CAUSAL_LM_PURPOSE = "the language-model evaluation takes a causal LM (AutoModelForCausalLM) or a PEFT adapter of one"


def causal_lm_types() -> tuple[str, ...]:
    """The model_types transformers loads as `AutoModelForCausalLM` with its own classes."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return tuple(sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES))


def is_adapter_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a PEFT adapter folder (adapter_config.json and no config.json of a full model)."""
    path = os.fspath(path)
    return os.path.isfile(os.path.join(path, ADAPTER_CONFIG_FILE)) and not os.path.isfile(os.path.join(path, CONFIG_FILE))


def read_adapter_config(path: str | os.PathLike, *, what: str = "adapter") -> dict:
    """A PEFT adapter folder's adapter_config.json as a dict (one error line when it cannot be read)."""
    config_file = os.path.join(os.fspath(path), ADAPTER_CONFIG_FILE)
    try:
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
    except OSError as err:
        raise ModelFolderError(f"{what}: cannot read {config_file} ({err.strerror or err})") from err
    except ValueError as err:
        raise ModelFolderError(f"{what}: {config_file} is not a JSON config ({' '.join(str(err).split())})") from err
    if not isinstance(config, dict):
        raise ModelFolderError(f"{what}: {config_file} holds a JSON {type(config).__name__}, not a config object")
    return config


def load_causal_lm(name_or_path, *, what: str = "model", purpose: str = CAUSAL_LM_PURPOSE, cache_dir: str | None = None, **kwargs):
    """A causal LM from a folder or Hub id whose config.json names a model_type transformers itself
    implements (`causal_lm_types`); custom code named by the folder is never run."""
    from transformers import AutoModelForCausalLM

    config = read_model_config(name_or_path, what=what, cache_dir=cache_dir)
    model_type = config.get("model_type")
    if model_type not in causal_lm_types():
        remote = " (its config names custom code, which is never run)" if "auto_map" in config else ""
        raise ModelFolderError(f"{what} {os.fspath(name_or_path)!r} is a {model_type!r} model{remote}, which is not a causal LM; {purpose}")
    return AutoModelForCausalLM.from_pretrained(name_or_path, cache_dir=cache_dir, trust_remote_code=False, **kwargs)


def load_tokenizer(name_or_path, *, cache_dir: str | None = None):
    """The tokenizer saved with a model; never runs code named by the folder's configs."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path, cache_dir=cache_dir, trust_remote_code=False)
