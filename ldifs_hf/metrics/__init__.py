"""Local `evaluate` modules, loadable by path without the Hub: `evaluate.load(CONCEPT_FORGETTING)`."""

import os

CONCEPT_FORGETTING = os.path.join(os.path.dirname(os.path.abspath(__file__)), "concept_forgetting", "concept_forgetting.py")


def load_concept_forgetting(**kwargs):
    """`evaluate.load` of the concept-forgetting metric shipped with this package (works offline)."""
    import evaluate

    return evaluate.load(CONCEPT_FORGETTING, **kwargs)
