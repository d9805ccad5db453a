"""The fine-tuning methods as data: head init x objective x regularizer x trained towers.

The paper's eight methods (`PAPER_METHODS`) and the KL anchor's two are registered here; one training path
(LDIFSTrainer) runs them all.
Combinations beyond the eight come from the same data: `get_method("flyp+ldifs")` is FLYP with the
LDIFS regularizer, `get_method("zs-init-ce+l2sp")` is ZS-init-L2SP.
"""

from __future__ import annotations

import difflib

import dataclasses
import fnmatch
from dataclasses import dataclass

from .objectives import OBJECTIVES as _OBJECTIVE_REGISTRY
from .terms import list_regularizers

HEAD_INITS = ("zero-shot", "linear-probe", None)
OBJECTIVES = tuple(_OBJECTIVE_REGISTRY)  # the objective registry's names (training/objectives.py)
TRAINED = ("vision", "both")


def __getattr__(name):
    # REGULARIZERS is read from the regularizer registry at each use, so a regularizer registered later counts.
    if name == "REGULARIZERS":
        return tuple(list_regularizers())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class MethodSpec:
    """One fine-tuning method.

    name: registry name, e.g. "lp-init-ldifs".
    head_init: "zero-shot" or "linear-probe" for a classifier over the vision tower; None for the
        FLYP family, which trains the CLIP model itself against text prompts.
    objective: "ce" (cross-entropy of a classifier's logits), "clip-contrastive" (FLYP: CLIP loss of
        images vs one random template of their class), or "clip-ce" (FLYP-CE: cross-entropy over
        scale * cos(image, prompt of every class)).
    regularizer: a registered regularizer (`list_regularizers()`): "none", "l2sp", "ldifs", ...
    trained: "vision" (vision tower + head) or "both" (both towers and the logit scale).
    train_logit_scale: whether a CLIP objective learns the logit scale (FLYP-CE does; FLYP detaches it,
        keeping the pretrained model's, as the official code does).
    """

    name: str
    head_init: str | None
    objective: str
    regularizer: str
    trained: str
    train_logit_scale: bool = True

    def __post_init__(self):
        for field_name, allowed in (
            ("head_init", HEAD_INITS),
            ("objective", OBJECTIVES),
            ("regularizer", tuple(list_regularizers())),
            ("trained", TRAINED),
        ):
            value = getattr(self, field_name)
            if value not in allowed:
                raise ValueError(f"MethodSpec {self.name!r}: {field_name}={value!r} is not one of {allowed}")
        if (self.objective == "ce") != (self.head_init is not None):
            raise ValueError(
                f"MethodSpec {self.name!r}: objective 'ce' needs a head_init and the CLIP objectives need none "
                f"(got objective={self.objective!r}, head_init={self.head_init!r})"
            )

    @property
    def uses_text_tower(self) -> bool:
        return self.objective != "ce"


_REGISTRY: dict[str, MethodSpec] = {}


def method_names(text: str) -> list[str]:
    """The methods of a comma-separated list, each by its registry name, in order (a name given twice stays twice,
    for the caller to refuse); "all" stands for the paper's eight (`PAPER_METHODS`), e.g. "all,lp-init-kl". An
    unknown name is refused by `get_method`."""
    names = []
    for item in (m.strip() for m in text.split(",")):
        names += list(PAPER_METHODS) if item == "all" else ([get_method(item).name] if item else [])
    return names


def register_method(spec: MethodSpec, overwrite: bool = False) -> MethodSpec:
    if spec.name in _REGISTRY and not overwrite:
        raise ValueError(f"method {spec.name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[spec.name] = spec
    return spec


def list_methods(pattern: str | None = None) -> list[str]:
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_method(name: str) -> MethodSpec:
    """Look a method up by name; "BASE+REGULARIZER" swaps the regularizer of a registered method."""
    key = name.strip().lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    base, sep, regularizer = key.partition("+")
    if sep and base in _REGISTRY:
        if regularizer not in list_regularizers():
            raise ValueError(f"unknown regularizer {regularizer!r} in method {name!r}; valid regularizers: {', '.join(list_regularizers())}")
        return dataclasses.replace(_REGISTRY[base], name=key, regularizer=regularizer)
    close = difflib.get_close_matches(key, list_methods(), n=1)
    raise ValueError(
        f"unknown method {name!r}{f' (did you mean {close[0]!r}?)' if close else ''}; valid methods: {', '.join(list_methods())} "
        f"(or METHOD+REGULARIZER with a regularizer in {', '.join(list_regularizers())})"
    )


# The paper's eight methods ("all" in a study or the demo), by name.
PAPER_METHODS = ("flyp", "flyp-ce", "lp-init-ce", "lp-init-l2sp", "lp-init-ldifs", "zs-init-ce", "zs-init-l2sp", "zs-init-ldifs")

for _spec in (
    MethodSpec("zs-init-ce", "zero-shot", "ce", "none", "vision"),
    MethodSpec("lp-init-ce", "linear-probe", "ce", "none", "vision"),
    MethodSpec("zs-init-l2sp", "zero-shot", "ce", "l2sp", "vision"),
    MethodSpec("lp-init-l2sp", "linear-probe", "ce", "l2sp", "vision"),
    MethodSpec("flyp", None, "clip-contrastive", "none", "both", train_logit_scale=False),
    MethodSpec("flyp-ce", None, "clip-ce", "none", "both"),
    MethodSpec("zs-init-ldifs", "zero-shot", "ce", "ldifs", "vision"),
    MethodSpec("lp-init-ldifs", "linear-probe", "ce", "ldifs", "vision"),
    # Beyond the paper: the KL anchor to the starting classifier's output distribution.
    MethodSpec("zs-init-kl", "zero-shot", "ce", "kl", "vision"),
    MethodSpec("lp-init-kl", "linear-probe", "ce", "kl", "vision"),
):
    register_method(_spec)
