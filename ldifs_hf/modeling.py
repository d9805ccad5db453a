"""Models the methods train: a classifier over a CLIP vision tower, and export to a stock CLIPModel.

`CLIPVisionClassifier` keeps CLIP's own module names (`vision_model`, `visual_projection`), so its
tower loads from and exports back to a stock `CLIPModel` checkpoint by plain state-dict copies; its
source (`ldifs_hf.clip_classifier`) is saved with every checkpoint, which then loads with
`trust_remote_code=True` where ldifs_hf is not installed.
"""

from __future__ import annotations

import copy
import os

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForImageClassification, CLIPModel

# The classifier lives in modules that import only torch/transformers so that `save_pretrained` can
# copy them beside the weights (`trust_remote_code=True` loading without ldifs_hf). Import it from here:
# this module registers it with the Auto classes (below), so `from_pretrained` of its folders works.
from .clip_classifier import CLIPClassifierConfig, CLIPVisionClassifier
from .model_folder import load_clip_model, load_clip_processor


def encode_images(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projected (not normalised) image embeddings [B, P] of a CLIPModel or a CLIPVisionClassifier.

    Both keep the tower as `vision_model` and the projection as `visual_projection`, so one function
    serves the pretrained model, a fine-tuned classifier and a FLYP-trained CLIPModel alike.
    """
    pooled = model.vision_model(pixel_values=pixel_values).pooler_output
    return model.visual_projection(pooled)


def encode_texts(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Projected (not normalised) text embeddings [N, P] of a CLIPModel."""
    pooled = model.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    return model.text_projection(pooled)


def is_peft_model(model: nn.Module) -> bool:
    """Whether `model` is a peft `PeftModel` (peft stays an optional dependency)."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def is_encoder_decoder(model: nn.Module) -> bool:
    """Whether `model` (or the model a PeftModel wraps) is an encoder-decoder (T5, BART, Whisper, ...)."""
    if is_peft_model(model):
        model = model.get_base_model()
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False)) and hasattr(model, "get_encoder")


def image_encoder(model: nn.Module) -> nn.Module:
    """The module LDIFS taps and L2SP anchors: a CLIP vision tower, an encoder-decoder model's encoder
    (its hidden states do not depend on the labels), else the HF base model.

    For a `PeftModel` it is the encoder of the wrapped model (its adapter layers included), never
    the peft wrapper, whose `base_model` is the whole model with its head.
    """
    if is_peft_model(model):
        model = model.get_base_model()
    if hasattr(model, "vision_model"):
        return model.vision_model
    if is_encoder_decoder(model):
        return model.get_encoder()
    base = getattr(model, "base_model", None)
    return base if isinstance(base, nn.Module) else model


def named_encoder_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters L2SP anchors and ||θ−θ0||² measures: the image encoder and, for CLIP, its projection;
    never a head or a text tower."""
    named = {f"encoder.{n}": p for n, p in image_encoder(model).named_parameters()}
    projection = getattr(model, "visual_projection", None)
    if isinstance(projection, nn.Module):
        named.update({f"visual_projection.{n}": p for n, p in projection.named_parameters()})
    return named


L2SP_SCOPES = ("encoder", "all")


def named_scope_parameters(model: nn.Module, scope: str = "encoder") -> dict[str, nn.Parameter]:
    """The parameters of an L2SP scope: "encoder" (`named_encoder_parameters`) or "all" (every parameter)."""
    if scope == "encoder":
        return named_encoder_parameters(model)
    if scope == "all":
        return {f"model.{n}": p for n, p in model.named_parameters()}
    raise ValueError(f"l2sp_scope must be one of {L2SP_SCOPES}, got {scope!r}")


def encoder_parameters(model: nn.Module) -> list[nn.Parameter]:
    return list(named_encoder_parameters(model).values())


def lora_delta_weights(module: nn.Module, peft_model: nn.Module) -> list[torch.Tensor]:
    """The effective weight change scale·B·A of every LoRA-adapted layer in `module`, per active adapter.

    Differentiable in the LoRA factors. Refuses what is not a plain LoRA change of a frozen weight
    (DoRA, merged adapters, other peft methods), since ‖θ−θ0‖² has no such form there.
    """
    from peft.tuners.lora import LoraLayer
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, config in peft_model.peft_config.items():
        peft_type = str(getattr(config.peft_type, "value", config.peft_type))
        if peft_type != "LORA" or getattr(config, "use_dora", False):
            kind = "DoRA" if getattr(config, "use_dora", False) else peft_type
            raise ValueError(f"L2SP on a PeftModel supports plain LoRA adapters only, got adapter {name!r} of type {kind}")
    deltas = []
    for layer_name, layer in module.named_modules():
        if isinstance(layer, BaseTunerLayer) and not isinstance(layer, LoraLayer):
            raise ValueError(f"L2SP on a PeftModel supports LoRA layers only, got {type(layer).__name__} at {layer_name!r}")
        if not isinstance(layer, LoraLayer):
            continue
        if layer.merged:
            raise ValueError(f"LoRA layer {layer_name!r} has its adapter merged into the base weight; unmerge it for L2SP")
        deltas.extend(layer.get_delta_weight(a) for a in layer.active_adapters if a in layer.lora_A or a in layer.lora_embedding_A)
    return deltas


class VisionSnapshot(nn.Module):
    """A frozen copy of a model's image encoder (tower + projection): θ0 of the distances."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.vision_model = copy.deepcopy(model.vision_model).requires_grad_(False).eval()
        self.visual_projection = copy.deepcopy(model.visual_projection).requires_grad_(False).eval()


AutoConfig.register(CLIPClassifierConfig.model_type, CLIPClassifierConfig, exist_ok=True)
AutoModelForImageClassification.register(CLIPClassifierConfig, CLIPVisionClassifier, exist_ok=True)


def export_clip_model(model, base_clip: CLIPModel | str, output_dir: str | os.PathLike | None = None) -> CLIPModel:
    """A stock `CLIPModel` carrying `model`'s fine-tuned image encoder.

    `model` is a CLIPVisionClassifier (its tower and projection replace the base CLIP's; the text
    tower and logit scale stay pretrained) or a CLIPModel (FLYP: returned as trained, text tower
    included). With `output_dir`, it is saved there (safetensors) and loads with
    `CLIPModel.from_pretrained`; the base model's processor is saved beside it when it has one.
    """
    if isinstance(model, CLIPModel):
        exported = model
    else:
        base = load_clip_model(base_clip, what="base model") if isinstance(base_clip, (str, os.PathLike)) else base_clip
        exported = copy.deepcopy(base).to(device=model.device)
        exported.vision_model.load_state_dict(model.vision_model.state_dict())
        exported.visual_projection.load_state_dict(model.visual_projection.state_dict())
    if output_dir is not None:
        exported.save_pretrained(output_dir)
        if isinstance(base_clip, (str, os.PathLike)):
            _copy_processor(str(base_clip), str(output_dir))
    return exported


def _copy_processor(source: str, output_dir: str) -> None:
    try:
        load_clip_processor(source).save_pretrained(output_dir)
    except (OSError, ValueError):
        pass  # a bare model directory without a processor: nothing to copy
