"""ldifs_hf: fine-tune CLIP-like foundation models with the Hugging Face Trainer without forgetting.

LDIFS (feature-space distance to the frozen pretrained encoder), L2SP, FLYP and the paper's other
baselines as one `LDIFSTrainer`; a fine-tuning run (`finetune`) and a concept-forgetting evaluation
(`evaluate`) as library calls; benchmarks, reports and the embedded concept world.
"""

from . import world  # registers the world's tasks as a benchmark family
from .evaluation import ConceptForgettingCallback, ConceptForgettingEvaluator, EvaluationResult, EvaluatorSettings, evaluate
from .interpolate import interpolate
from .modeling import CLIPClassifierConfig, CLIPVisionClassifier, encode_images, export_clip_model
from .records import RunRecord
from .regularizers import default_ldifs_layers, l2sp_penalty, ldifs_distance
from .training import LDIFSArgumentsMixin, LDIFSMixin, LDIFSTrainer, LDIFSTrainingArguments, MethodSpec, finetune, get_method, list_methods, register_method

__version__ = "0.2.0"

__all__ = [
    "CLIPClassifierConfig",
    "CLIPVisionClassifier",
    "ConceptForgettingCallback",
    "ConceptForgettingEvaluator",
    "EvaluationResult",
    "EvaluatorSettings",
    "LDIFSArgumentsMixin",
    "LDIFSMixin",
    "LDIFSTrainer",
    "LDIFSTrainingArguments",
    "MethodSpec",
    "RunRecord",
    "default_ldifs_layers",
    "encode_images",
    "evaluate",
    "export_clip_model",
    "finetune",
    "get_method",
    "interpolate",
    "l2sp_penalty",
    "ldifs_distance",
    "list_methods",
    "register_method",
]
