"""ldifs_hf: fine-tune CLIP-like foundation models with the Hugging Face Trainer without forgetting.

LDIFS (feature-space distance to the frozen pretrained encoder), L2SP, FLYP and the paper's other
baselines as one `LDIFSTrainer`, plus benchmarks, concept-forgetting evaluation and reports.
"""

from .callbacks import ConceptForgettingCallback
from .config import LDIFSTrainingArguments
from .evaluation import ConceptForgettingEvaluator
from .methods import MethodSpec, get_method, list_methods, register_method
from .modeling import CLIPClassifierConfig, CLIPVisionClassifier, encode_images, export_clip_model
from .regularizers import default_ldifs_layers, l2sp_penalty, ldifs_distance
from .trainer import LDIFSTrainer

__version__ = "0.1.0"

__all__ = [
    "CLIPClassifierConfig",
    "CLIPVisionClassifier",
    "ConceptForgettingCallback",
    "ConceptForgettingEvaluator",
    "LDIFSTrainer",
    "LDIFSTrainingArguments",
    "MethodSpec",
    "default_ldifs_layers",
    "encode_images",
    "export_clip_model",
    "get_method",
    "l2sp_penalty",
    "ldifs_distance",
    "list_methods",
    "register_method",
]
