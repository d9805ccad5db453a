"""ldifs_hf: fine-tune CLIP-like foundation models with the Hugging Face Trainer without forgetting.

LDIFS (feature-space distance to the frozen pretrained encoder), L2SP, FLYP and the paper's other
baselines as one `LDIFSTrainer`; a fine-tuning run (`finetune`) and a concept-forgetting evaluation
(`evaluate`) as library calls; benchmarks, reports and the embedded concept world.

Importing the package is cheap: each name below imports its module on first use.
"""

from . import world  # registers the world's tasks as a benchmark family (cheap: the world's model loads on use)
from ._lazy import lazy_exports

__version__ = "0.2.0"

_EXPORTS = {
    "ConceptForgettingCallback": ".evaluation",
    "ConceptForgettingEvaluator": ".evaluation",
    "EvaluationResult": ".evaluation",
    "EvaluatorSettings": ".evaluation",
    "evaluate": ".evaluation",
    "CLIPClassifierConfig": ".modeling",
    "CLIPVisionClassifier": ".modeling",
    "encode_images": ".modeling",
    "export_clip_model": ".modeling",
    "interpolate": ".interpolation",
    "RunRecord": ".run_folder",
    "default_ldifs_layers": ".regularizers",
    "l2sp_penalty": ".regularizers",
    "ldifs_distance": ".regularizers",
    "LDIFSArgumentsMixin": ".training",
    "LDIFSMixin": ".training",
    "LDIFSTrainer": ".training",
    "LDIFSTrainingArguments": ".training",
    "MethodSpec": ".training",
    "finetune": ".training",
    "get_method": ".training",
    "list_methods": ".training",
    "register_method": ".training",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
