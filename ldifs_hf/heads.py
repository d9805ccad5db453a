"""Classification heads over CLIP image features: zero-shot (from prompts) and linear probe (fitted).

Both heads act on unit-normalised projected image features, the same features `extract_features`
returns, so a head fitted or built here can be used for evaluation and to initialise a classifier.

Which text tower builds a zero-shot head. The official evaluation rebuilds every zero-shot head from a
freshly loaded pretrained CLIP, whatever model it scores, so the paper's FLYP numbers (A_FT on the
fine-tuning task as well as Δ_ZS elsewhere) pair FLYP's fine-tuned image encoder with the pretrained
text tower's prompts. Here Δ_ZS follows that protocol by default (the evaluator's text_tower
"pretrained"), but FLYP's A_FT uses the run's own fine-tuned text tower: FLYP trains the text tower as
its classifier, and that is how FLYP itself (Goyal et al. 2023) classifies; scoring it with the
pretrained tower would measure an image encoder paired with prompts it was trained away from.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .benchmarks.registry import fill_templates
from .benchmarks.transforms import collate_images
from .modeling import encode_images
from .utils import torch_threads

LP_LEARNING_RATES = (0.01, 0.05, 0.1, 0.5, 1.0)
LP_SOLVERS = ("adamw", "logistic")
# The official protocol's full-batch iterations of the linear probe (every default refers to this one).
LP_ITERATIONS = 1000
# The official code's grid for scikit-learn's solver: C = 1/L with L in {1e-6, 1e-4, 1e-2, 1, 1e2, 1e4, 1e6}
# (every second power of ten), tried in that order of L.
LOGISTIC_LS = (1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e4, 1e6)
LOGISTIC_CS = tuple(1.0 / strength for strength in LOGISTIC_LS)
# The official selection split: random_split seeded 0 whatever the run's seed, validation capped at 20k rows.
SELECTION_SPLIT_SEED = 0
MAX_VALIDATION_ROWS = 20_000
ABSENT_CLASS_BIAS = -1e4  # the bias of a class with no training row: its logit never wins
# Names the probe's protocol in cache keys: a probe fitted by an earlier protocol is never reused.
LP_PROTOCOL = "official-2: random_split seed 0, fresh nn.Linear per fit, classes from train labels, 7-value C grid"


def check_lp_solver(solver: str) -> str:
    """`solver` if it names a linear-probe solver, else a ValueError listing them."""
    if solver not in LP_SOLVERS:
        raise ValueError(f"unknown linear-probe solver {solver!r}; choose one of {', '.join(LP_SOLVERS)}")
    return solver


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def zero_shot_classifier(
    clip_model, tokenizer, class_names: Sequence[str], templates: Sequence[str], batch_size: int = 256, *, logit_scale: bool = False
) -> torch.Tensor:
    """Zero-shot head [C, P] (float32, on CPU): per class, the mean of its unit-normalised prompt embeddings, re-normalised.

    With `logit_scale`, multiplied by `exp(clip_model.logit_scale)`: the weight of a ZS-init classifier
    head, whose logits are then CLIP's. Without it, argmax is the same and the values are cosines.
    """
    if not hasattr(clip_model, "text_model") or not hasattr(clip_model, "text_projection"):
        raise TypeError(f"a zero-shot head needs a model with a text tower (a CLIPModel), got {type(clip_model).__name__}")
    if not templates:
        raise ValueError("at least one prompt template is needed to build a zero-shot head")
    if not class_names:
        raise ValueError("at least one class name is needed to build a zero-shot head")
    prompts = [p for name in class_names for p in fill_templates(str(name), templates)]
    device = _model_device(clip_model)
    was_training = clip_model.training
    clip_model.eval()
    try:
        embeddings = []
        for start in range(0, len(prompts), batch_size):
            tokens = tokenizer(prompts[start : start + batch_size], padding=True, truncation=True, return_tensors="pt").to(device)
            pooled = clip_model.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
            embeddings.append(F.normalize(clip_model.text_projection(pooled).float(), dim=-1).cpu())
    finally:
        clip_model.train(was_training)
    per_class = torch.cat(embeddings).view(len(class_names), len(templates), -1).mean(dim=1)
    weights = F.normalize(per_class, dim=-1)
    if logit_scale:
        weights = clip_model.logit_scale.exp().detach().float().cpu() * weights
    return weights


@torch.no_grad()
def extract_features(
    model,
    dataset,
    *,
    batch_size: int = 256,
    device=None,
    collate_fn: Callable | None = None,
    desc: str | None = None,
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-normalised projected image features [N, P] (float32, CPU) and labels [N] of a dataset.

    The dataset's items must give "pixel_values" and "labels" (e.g. a `datasets.Dataset` with
    `image_transform` attached). The model is run in eval mode and put back in its previous mode.
    `num_workers` DataLoader processes decode and preprocess images (the bottleneck on a GPU).
    Batches go to the device from pinned memory without blocking and the features stay there until
    the end, so the loop never waits for the device (one copy back, not one per batch).
    """
    device = torch.device(device) if device is not None else _model_device(model)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn or collate_images, num_workers=num_workers, pin_memory=device.type == "cuda"
    )
    dtype = next(model.parameters()).dtype
    was_training = model.training
    model.eval()
    features, labels = [], []
    try:
        for batch in tqdm(loader, desc=desc or "extracting features", leave=False):
            pixel_values = batch["pixel_values"].to(device=device, dtype=dtype, non_blocking=True)
            features.append(F.normalize(encode_images(model, pixel_values).float(), dim=-1))
            labels.append(torch.as_tensor(batch["labels"]))
    finally:
        model.train(was_training)
    if not features:
        raise ValueError("cannot extract features from an empty dataset")
    return torch.cat(features).cpu(), torch.cat(labels).long()


def selection_split(num_rows: int, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(selection-train rows, validation rows) of a linear probe's hyperparameter selection, as the
    official code cuts them: `torch.utils.data.random_split` with a generator seeded 0 whatever the run's
    seed, the validation part the last `int(val_fraction * N)` rows of its permutation, at most
    `MAX_VALIDATION_ROWS`."""
    num_validation = min(int(num_rows * val_fraction), MAX_VALIDATION_ROWS)
    train, validation = torch.utils.data.random_split(
        range(num_rows), [num_rows - num_validation, num_validation], generator=torch.Generator().manual_seed(SELECTION_SPLIT_SEED)
    )
    return torch.as_tensor(train.indices, dtype=torch.long), torch.as_tensor(validation.indices, dtype=torch.long)


def _one_cpu_thread_if_small(work: float, device: torch.device, threshold: float = 5e7):
    """Tiny CPU problems run on one thread: their ops are too small to share (see `torch_threads`)."""
    return torch_threads(1 if device.type == "cpu" and work <= threshold else None)


def _fit_adamw(features, labels, num_classes, lrs, iterations, inits, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8):
    """Full-batch AdamW on softmax regression, one independent head per learning rate in `lrs`, the
    head for `lrs[i]` starting from `inits[i]` ([C, P + 1], bias last).

    The gradient is written out ((softmax - onehot)^T x / N, with the bias folded in as a constant
    input) and torch.optim.AdamW's update (default hyperparameters, bias decayed too) is applied to
    all learning rates at once: a few matmuls per iteration instead of an autograd graph and one
    optimizer per learning rate, which matters for 1000 iterations x 6 fits.
    Returns weights [L, C, P] and biases [L, C].
    """
    n, dim = features.shape
    with _one_cpu_thread_if_small(len(lrs) * n * (dim + 1) * num_classes, features.device):
        return _adamw_loop(features, labels, num_classes, lrs, iterations, inits, weight_decay, betas, eps)


def _adamw_loop(features, labels, num_classes, lrs, iterations, inits, weight_decay, betas, eps):
    n, dim = features.shape
    inputs = torch.cat([features, torch.ones(n, 1, dtype=features.dtype, device=features.device)], dim=1)
    targets = F.one_hot(labels, num_classes).to(features.dtype)
    lr = torch.as_tensor(list(lrs), dtype=features.dtype, device=features.device).view(-1, 1, 1)
    params = inits.to(features).clone()
    exp_avg, exp_avg_sq = torch.zeros_like(params), torch.zeros_like(params)
    decay = 1 - lr * weight_decay
    inputs_t = inputs.T.contiguous()  # [P+1, N]
    targets_t = targets.T.contiguous()  # [C, N]
    for step in range(1, iterations + 1):
        # Class-major logits [L, C, N]: torch's CPU softmax over a short last axis (C) is ~20x slower
        # than over a middle one, and this loop runs 1000 times per fit.
        grad = torch.matmul(torch.matmul(params, inputs_t).softmax(1) - targets_t, inputs).div_(n)
        params.mul_(decay)
        exp_avg.lerp_(grad, 1 - betas[0])
        exp_avg_sq.mul_(betas[1]).addcmul_(grad, grad, value=1 - betas[1])
        denom = (exp_avg_sq / (1 - betas[1] ** step)).sqrt_().add_(eps)
        params.addcdiv_(exp_avg * (lr / (1 - betas[0] ** step)), denom, value=-1)
    return params[..., :dim], params[..., dim]


def _fit_logistic(features, labels, cs, iterations, seed):
    """scikit-learn LogisticRegression, one fit per C in `cs`; returns weights [L, K, P], biases [L, K]
    over the K classes present in `labels` (which are 0..K-1)."""
    from sklearn.linear_model import LogisticRegression

    weights, biases = [], []
    for c in cs:
        classifier = LogisticRegression(C=c, max_iter=iterations, random_state=seed)
        classifier.fit(features.cpu().numpy(), labels.cpu().numpy())
        coef = torch.as_tensor(classifier.coef_, dtype=torch.float32)
        intercept = torch.as_tensor(classifier.intercept_, dtype=torch.float32)
        if coef.shape[0] == 1:  # binary: sklearn keeps one row; split it so softmax matches its sigmoid
            coef, intercept = torch.cat([-coef / 2, coef / 2]), torch.cat([-intercept / 2, intercept / 2])
        weights.append(coef)
        biases.append(intercept)
    return torch.stack(weights).to(features.device), torch.stack(biases).to(features.device)


class _ProbeFitter:
    """One solver's successive fits, each over the classes present in the labels it is given.

    An AdamW fit starts from fresh `nn.Linear` default inits, as the official code builds a new layer
    for every candidate and for the refit: the layers drawn in turn after `torch.manual_seed(seed)`, on
    a forked RNG, so that the caller's random state is untouched.
    """

    def __init__(self, solver: str, iterations: int, seed: int):
        self.solver, self.iterations, self.seed = solver, iterations, seed
        self._rng_state = None  # the CPU RNG state after the last draw: the next fit continues the stream

    def _fresh_inits(self, count: int, in_features: int, out_features: int) -> torch.Tensor:
        """[count, out_features, in_features + 1]: `count` new nn.Linear layers' weights, bias last."""
        with torch.random.fork_rng(devices=[]):
            if self._rng_state is None:
                torch.manual_seed(self.seed)
            else:
                torch.set_rng_state(self._rng_state)
            layers = [nn.Linear(in_features, out_features) for _ in range(count)]
            self._rng_state = torch.get_rng_state()
        return torch.stack([torch.cat([layer.weight.detach(), layer.bias.detach()[:, None]], dim=1) for layer in layers])

    def fit(self, features, labels, grid):
        """Heads [L, K, P] and [L, K] over the K distinct classes of `labels`, and those classes [K]."""
        present, compact = torch.unique(labels, return_inverse=True)  # the official class count: distinct train labels
        if self.solver == "logistic":
            weights, biases = _fit_logistic(features, compact, grid, self.iterations, self.seed)
        else:
            inits = self._fresh_inits(len(grid), features.shape[1], len(present))
            weights, biases = _fit_adamw(features, compact, len(present), grid, self.iterations, inits)
        return weights, biases, present


def fit_linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    num_classes: int,
    *,
    solver: str = "adamw",
    lrs: Sequence[float] = LP_LEARNING_RATES,
    iterations: int = LP_ITERATIONS,
    seed: int = 0,
    val_fraction: float = 0.1,
    cs: Sequence[float] = LOGISTIC_CS,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    device=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit a linear head (weight [C, P], bias [C], float32, CPU) on unit-normalised features, as the
    official code does.

    solver="adamw" is the official protocol: full-batch AdamW for `iterations` steps from a fresh
    `nn.Linear` default init, the learning rate picked from `lrs` by accuracy on held-out rows (ties go
    to the first candidate), then refitted on all the training rows from another fresh init.
    solver="logistic" is scikit-learn's LogisticRegression with its inverse regularisation strength C
    picked from `cs` the same way (`iterations` = max_iter).

    The held-out rows: `validation` (features, labels), a benchmark's own validation split when it has
    one (EuroSAT's, in the official code), the candidates then training on all of `train_features`;
    otherwise `selection_split` of the training rows, seeded 0 whatever `seed` is. With one candidate,
    or no rows to hold out, nothing is selected. `seed` seeds the inits: after `torch.manual_seed(seed)`,
    the `nn.Linear` layers drawn in turn go to the candidates in grid order, then to the refit.

    The class count is taken from the training labels, as in the official code: each fit's softmax
    covers the classes its labels contain. A class among `num_classes` with no training row gets a zero
    weight and a -1e4 bias, so it never wins. `device` is where the fit runs (default: where the
    features are); a GPU makes the full-size protocol take seconds.
    """
    grid = list({"adamw": lrs, "logistic": cs}[check_lp_solver(solver)])
    if not grid:
        raise ValueError(f"the {solver} solver needs at least one candidate hyperparameter")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    features, labels = _probe_inputs(train_features, train_labels, num_classes, device, "training")
    fitter = _ProbeFitter(solver, iterations, seed)

    if validation is not None:
        val_features, val_labels = _probe_inputs(*validation, num_classes, features.device, "validation")
        select_features, select_labels = features, labels
    else:
        train_rows, val_rows = (rows.to(features.device) for rows in selection_split(len(labels), val_fraction))
        select_features, select_labels = features[train_rows], labels[train_rows]
        val_features, val_labels = features[val_rows], labels[val_rows]
    best = grid[0]
    if len(grid) > 1 and len(val_labels) > 0 and len(select_labels) > 0:
        weights, biases, present = fitter.fit(select_features, select_labels, grid)
        predictions = present[(torch.matmul(val_features, weights.transpose(1, 2)) + biases[:, None]).argmax(-1)]
        scores = (predictions == val_labels).float().mean(-1).tolist()
        best = grid[max(range(len(grid)), key=lambda i: (scores[i], -i))]  # ties go to the first candidate
    weights, biases, present = fitter.fit(features, labels, [best])
    weight = torch.zeros(num_classes, features.shape[1])
    bias = torch.full((num_classes,), ABSENT_CLASS_BIAS)
    weight[present.cpu()], bias[present.cpu()] = weights[0].float().cpu(), biases[0].float().cpu()
    return weight, bias


def _probe_inputs(features, labels, num_classes, device, what):
    features = torch.as_tensor(features).float()
    features = F.normalize(features.to(device) if device is not None else features, dim=-1)
    labels = torch.as_tensor(labels).long().to(features.device)
    if features.ndim != 2 or len(features) != len(labels) or len(labels) == 0:
        raise ValueError(f"need {what} features [N, P] and labels [N] with N > 0, got {tuple(features.shape)} and {tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{labels.min().item()}, {labels.max().item()}]")
    return features, labels
