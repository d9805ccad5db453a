"""The embedded "skills world": synthetic skills as text, a tiny causal LM pre-trained on the old ones,
each skill a local lm-evaluation-harness task, and a new skill to fine-tune on, so that forgetting in a
language model can be shown offline on a CPU in minutes.

    skills = prepare_skills()       # pre-trains (about 2 minutes, once) or loads the cached model
    skills.model_dir, skills.task_dir, skills.sft_dir, skills.retain_dir
"""

from __future__ import annotations

from ..._lazy import lazy_exports

# Each public name and its module, imported on first use: the pre-training and the data files (torch,
# transformers, datasets) stay unimported until asked for.
_EXPORTS = {
    **{name: ".generator" for name in ("NEW_SKILL", "OLD_SKILLS", "SKILLS", "Skill", "SkillsWorld", "get_skill", "shift_letters")},
    **{name: ".settings" for name in ("SKILLS_SIZES", "SkillsSettings", "skills_cache_dir", "skills_settings")},
    **{name: ".pretrain" for name in ("pretrain_skills_model", "pretrained_skills_model", "train_char_tokenizer", "evaluation_items")},
    **{name: ".tasks" for name in ("PreparedSkills", "build_skills_data", "prepare_skills", "task_name")},
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
