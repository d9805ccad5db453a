"""Concept forgetting: accuracy and its change against reference models (LDIFS paper, eqs. 2 and 5).

A local `evaluate` module (no Hub access needed): load it by path,

    import evaluate, ldifs_hf.metrics
    metric = evaluate.load(ldifs_hf.metrics.CONCEPT_FORGETTING)
    metric.compute(predictions=[0, 1, 1], references=[0, 1, 0], pretrained_accuracy=0.5)
    # {"accuracy": 0.667, "delta": 0.167}

The file imports only `evaluate`, `datasets` and `numpy` because `evaluate.load` copies it on its own.
"""

import datasets
import evaluate
import numpy as np

_CITATION = """\
@article{mukhoti2024ldifs,
  title={Fine-tuning can cripple your foundation model; preserving features may be the solution},
  author={Mukhoti, Jishnu and Gal, Yarin and Torr, Philip H. S. and Dokania, Puneet K.},
  journal={Transactions on Machine Learning Research},
  year={2024}
}
"""

_DESCRIPTION = """\
Top-1 accuracy A(f, D) of a model's predictions on a dataset, with the concept-forgetting deltas of the
LDIFS paper: Δ(D) = A(f_finetuned, D) − A(f_pretrained, D) (eq. 2; negative means forgetting) and, for
a sequence of fine-tuning tasks, Δ(D) = A(f_k, D) − max_{i<k} A(f_i, D) (eq. 5). It applies to zero-shot
and linear-probe predictions alike.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class indices of the evaluated (e.g. fine-tuned) model.
    references (`list` of `int`): true class indices.
    pretrained_predictions (`list` of `int`, *optional*): the pretrained model's predictions on the
        same examples; gives `pretrained_accuracy` and `delta`.
    pretrained_accuracy (`float`, *optional*): the pretrained model's accuracy, when its predictions
        are not at hand; gives `delta`.
    previous_accuracies (`list` of `float`, *optional*): accuracies of the earlier models of a task
        sequence (the pretrained one included); gives `sequence_delta`.
Returns:
    accuracy (`float`): in [0, 1].
    pretrained_accuracy (`float`): with `pretrained_predictions`.
    delta (`float`): accuracy − pretrained accuracy, with either pretrained argument.
    sequence_delta (`float`): accuracy − max(previous_accuracies), with `previous_accuracies`.
Examples:
    >>> metric = evaluate.load("path/to/concept_forgetting")
    >>> metric.compute(predictions=[0, 1], references=[0, 0], pretrained_predictions=[0, 0])
    {'accuracy': 0.5, 'pretrained_accuracy': 1.0, 'delta': -0.5}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ConceptForgetting(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            reference_urls=["https://arxiv.org/abs/2308.13320"],
        )

    def _compute(self, predictions, references, pretrained_predictions=None, pretrained_accuracy=None, previous_accuracies=None):
        predictions, references = np.asarray(predictions), np.asarray(references)
        if len(references) == 0:
            raise ValueError("concept_forgetting needs at least one prediction")
        result = {"accuracy": float((predictions == references).mean())}
        if pretrained_predictions is not None:
            pretrained_predictions = np.asarray(pretrained_predictions)
            if pretrained_predictions.shape != references.shape:
                raise ValueError(
                    f"pretrained_predictions has {len(pretrained_predictions)} entries but there are {len(references)} references"
                )
            if pretrained_accuracy is not None:
                raise ValueError("give pretrained_predictions or pretrained_accuracy, not both")
            pretrained_accuracy = float((pretrained_predictions == references).mean())
            result["pretrained_accuracy"] = pretrained_accuracy
        if pretrained_accuracy is not None:
            result["delta"] = result["accuracy"] - float(pretrained_accuracy)
        if previous_accuracies is not None:
            if len(previous_accuracies) == 0:
                raise ValueError("previous_accuracies must list at least one earlier model's accuracy")
            result["sequence_delta"] = result["accuracy"] - float(max(previous_accuracies))
        return result
