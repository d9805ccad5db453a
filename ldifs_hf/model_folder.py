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
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from .clip_classifier import CLIPClassifierConfig, CLIPVisionClassifier

CONFIG_FILE = "config.json"
CLIP_MODEL_TYPE = "clip"
FINETUNE_PURPOSE = "the paper's methods fine-tune a CLIP model"
EVALUATION_PURPOSE = "evaluation takes a CLIPModel or a CLIPVisionClassifier"


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


def check_model_type(config: dict, name: str, accepted: Sequence[str], *, what: str = "model", purpose: str) -> str:
    """`config`'s model_type, if it is one of `accepted`; otherwise a ModelFolderError naming both.

    `purpose` says why: "... is a 'bert' model; {purpose}: accepted model_type 'clip'"."""
    model_type = config.get("model_type")
    if model_type in accepted:
        return model_type
    remote = " (its config names custom code, which is never run)" if "auto_map" in config else ""
    raise ModelFolderError(
        f"{what} {os.fspath(name)!r} is a {model_type!r} model{remote}; {purpose}: accepted model_type "
        f"{' or '.join(repr(t) for t in accepted)}"
    )


def clip_config(name_or_path, *, what: str = "model", purpose: str = "this command takes a CLIP model", cache_dir: str | None = None):
    """The `CLIPConfig` of a CLIP model folder or Hub id, read without loading weights."""
    from transformers import CLIPConfig

    config = read_model_config(name_or_path, what=what, cache_dir=cache_dir)
    check_model_type(config, name_or_path, (CLIP_MODEL_TYPE,), what=what, purpose=purpose)
    return CLIPConfig.from_dict(config)


def load_clip_model(name_or_path, *, what: str = "model", purpose: str = "this command takes a CLIP model", cache_dir: str | None = None):
    """A `CLIPModel` from a folder or Hub id whose config.json says model_type 'clip'."""
    from transformers import CLIPModel

    config = read_model_config(name_or_path, what=what, cache_dir=cache_dir)
    check_model_type(config, name_or_path, (CLIP_MODEL_TYPE,), what=what, purpose=purpose)
    return CLIPModel.from_pretrained(name_or_path, cache_dir=cache_dir)


def load_clip_or_classifier(name_or_path, *, what: str = "checkpoint", purpose: str = EVALUATION_PURPOSE, cache_dir: str | None = None):
    """A `CLIPModel` ('clip') or the project's `CLIPVisionClassifier` ('ldifs_clip_classifier'),
    by the folder's model_type; the classifier's own class loads it, never the files saved beside it."""
    from transformers import CLIPModel

    config = read_model_config(name_or_path, what=what, cache_dir=cache_dir)
    accepted = (CLIP_MODEL_TYPE, CLIPClassifierConfig.model_type)
    model_type = check_model_type(config, name_or_path, accepted, what=what, purpose=purpose)
    model_class = CLIPVisionClassifier if model_type == CLIPClassifierConfig.model_type else CLIPModel
    return model_class.from_pretrained(name_or_path, cache_dir=cache_dir)


def load_clip_processor(name_or_path, *, cache_dir: str | None = None):
    """The `CLIPProcessor` saved with a model; never runs code named by the folder's configs."""
    from transformers import CLIPProcessor

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
