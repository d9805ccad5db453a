"""The classifier whose source travels with its weights: these modules import only torch and
transformers, so `save_pretrained` copies them beside the checkpoint for `trust_remote_code=True`."""

from .configuration_ldifs_clip import CLIPClassifierConfig
from .modeling_ldifs_clip import CLIPVisionClassifier

__all__ = ["CLIPClassifierConfig", "CLIPVisionClassifier"]
