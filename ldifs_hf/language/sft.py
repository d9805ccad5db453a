"""trl's SFT with the regularizers: `LanguageSFTConfig` (SFTConfig with their fields) and `LanguageSFTTrainer`
(SFTTrainer with `LDIFSMixin`). Importing this module imports trl; `language.finetune` imports it on use."""

from __future__ import annotations

from dataclasses import dataclass

from trl import SFTConfig, SFTTrainer

from ..training.arguments import LDIFSArgumentsMixin
from ..training.trainer import LDIFSMixin


@dataclass
class LanguageSFTConfig(LDIFSArgumentsMixin, SFTConfig):
    """trl's SFTConfig with the regularizer's fields."""


class LanguageSFTTrainer(LDIFSMixin, SFTTrainer):
    """trl's SFTTrainer whose loss adds the regularizer's term."""
