"""`CLIPVisionClassifier`: CLIP vision tower + projection + linear head over the unit-normalised image
embedding. Imports only torch, transformers and its config: this file is saved beside every checkpoint."""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, CLIPVisionModel, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration_ldifs_clip import CLIPClassifierConfig


class CLIPVisionClassifier(PreTrainedModel):
    """CLIP vision tower + projection + linear head over the unit-normalised image embedding.

    A zero-shot head is exp(logit_scale) x the class-prompt embeddings (no bias); a linear-probe
    head is fitted on the same normalised features. `forward` returns `logits`, the cross-entropy
    `loss` when `labels` are given, and the tower's `hidden_states` when asked (for LDIFS).
    The tower keeps CLIP's module names (`vision_model`, `visual_projection`), so it loads from and
    exports back to a stock `CLIPModel` checkpoint by plain state-dict copies.
    """

    config_class = CLIPClassifierConfig
    base_model_prefix = "vision_model"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = ["CLIPEncoderLayer"]

    def __init__(self, config: CLIPClassifierConfig):
        super().__init__(config)
        tower = CLIPVisionModel._from_config(config.vision_config, attn_implementation=config._attn_implementation)
        # The same module type and state-dict keys as CLIPModel.vision_model on every transformers
        # major version (v4 wraps the transformer one level deeper than v5).
        self.vision_model = getattr(tower, "vision_model", tower)
        self.visual_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        self.head = nn.Linear(config.projection_dim, config.num_labels, bias=config.head_bias)
        self.post_init()

    def _init_weights(self, module):
        # Real weights always come from a CLIP checkpoint (from_clip / from_pretrained); this only
        # gives fresh modules a sane start.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Unit-normalised projected image embeddings [B, P] (what the head sees)."""
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output
        return F.normalize(self.visual_projection(pooled), dim=-1)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, output_hidden_states: bool | None = None, **kwargs):
        tower = self.vision_model(pixel_values=pixel_values, output_hidden_states=output_hidden_states)
        features = F.normalize(self.visual_projection(tower.pooler_output), dim=-1)
        logits = self.head(features)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=tower.hidden_states)

    @classmethod
    def from_clip(
        cls,
        clip_model: CLIPModel,
        head_weight: torch.Tensor,
        head_bias: torch.Tensor | None = None,
        id2label: dict[int, str] | None = None,
        base_model: str | None = None,
    ) -> "CLIPVisionClassifier":
        """A classifier with `clip_model`'s vision tower and projection and the given head; `base_model`, the Hub
        id it came from, is recorded in its config (None: nothing, e.g. for a local folder, whose path on this
        machine means nothing elsewhere)."""
        num_labels, projection_dim = head_weight.shape
        if projection_dim != clip_model.config.projection_dim:
            raise ValueError(f"head has input size {projection_dim} but the CLIP projection has {clip_model.config.projection_dim}")
        id2label = id2label or {i: str(i) for i in range(num_labels)}
        config = CLIPClassifierConfig(
            vision_config=clip_model.config.vision_config.to_dict(),
            projection_dim=clip_model.config.projection_dim,
            head_bias=head_bias is not None,
            base_model=base_model,
            num_labels=num_labels,
            id2label={int(k): v for k, v in id2label.items()},
            label2id={v: int(k) for k, v in id2label.items()},
        )
        config._attn_implementation = clip_model.config._attn_implementation
        model = cls(config)
        model.vision_model.load_state_dict(clip_model.vision_model.state_dict())
        model.visual_projection.load_state_dict(clip_model.visual_projection.state_dict())
        with torch.no_grad():
            model.head.weight.copy_(head_weight)
            if head_bias is not None:
                model.head.bias.copy_(head_bias)
        return model.to(device=clip_model.device, dtype=clip_model.dtype)


# `save_pretrained` then writes `auto_map["AutoModelForImageClassification"]` and copies this file and
# its config's, so `pipeline("image-classification", model=dir, trust_remote_code=True)` runs it.
CLIPVisionClassifier.register_for_auto_class("AutoModelForImageClassification")
