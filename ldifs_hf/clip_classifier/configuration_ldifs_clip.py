"""`CLIPClassifierConfig` (model_type "ldifs_clip_classifier"): the CLIP vision tower's config, the
projection size and the head. Imports only transformers: this file is saved beside every checkpoint."""

from transformers import CLIPVisionConfig, PretrainedConfig


class CLIPClassifierConfig(PretrainedConfig):
    """Config of a classifier over a CLIP vision tower: the tower's config, projection size, head."""

    model_type = "ldifs_clip_classifier"
    sub_configs = {"vision_config": CLIPVisionConfig}

    def __init__(self, vision_config=None, projection_dim: int = 512, head_bias: bool = True, base_model: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if vision_config is None:
            vision_config = CLIPVisionConfig()
        elif isinstance(vision_config, dict):
            vision_config = CLIPVisionConfig(**vision_config)
        self.vision_config = vision_config
        self.projection_dim = projection_dim
        self.head_bias = head_bias
        self.base_model = base_model


# `save_pretrained` then writes `auto_map["AutoConfig"]` into config.json and copies this file, so the
# directory loads with `AutoConfig.from_pretrained(dir, trust_remote_code=True)` without ldifs_hf.
CLIPClassifierConfig.register_for_auto_class()
