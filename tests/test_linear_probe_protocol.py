"""The linear probe as the official code fits it: the selection split (random_split seeded 0, the last
int(0.1 N) rows, at most 20k; or a benchmark's own validation split), a fresh nn.Linear init for every
candidate and for the refit, the class count from the training labels, and scikit-learn's C grid."""

import pytest
import torch
import torch.nn.functional as F

from ldifs_hf import heads
from ldifs_hf.heads import LOGISTIC_CS, LOGISTIC_LS, LP_LEARNING_RATES, fit_linear_probe, selection_split


def _features(n=50, dim=8, classes=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = F.normalize(torch.randn(classes, dim, generator=generator), dim=-1) * 3
    return centres[labels] + 0.1 * torch.randn(n, dim, generator=generator), labels


def _spy_adamw(monkeypatch):
    calls = []
    original = heads._fit_adamw

    def spy(features, labels, num_classes, lrs, iterations, inits, *args):
        calls.append({"features": features.clone(), "labels": labels.clone(), "num_classes": num_classes, "lrs": list(lrs), "inits": inits.clone()})
        return original(features, labels, num_classes, lrs, iterations, inits, *args)

    monkeypatch.setattr(heads, "_fit_adamw", spy)
    return calls


# -- the selection split -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [19, 50, 1000])
def test_selection_split_is_random_split_seeded_0_with_the_last_tenth_as_validation(n):
    train, validation = selection_split(n)
    n_val = int(0.1 * n)  # floor, not round: 19 rows hold out 1
    official_train, official_val = torch.utils.data.random_split(range(n), [n - n_val, n_val], generator=torch.Generator().manual_seed(0))
    assert train.tolist() == official_train.indices and validation.tolist() == official_val.indices
    assert validation.tolist() == torch.randperm(n, generator=torch.Generator().manual_seed(0))[n - n_val :].tolist()


def test_selection_validation_is_capped_at_20k_rows():
    train, validation = selection_split(250_000)
    assert len(validation) == 20_000 and len(train) == 230_000
    assert sorted(torch.cat([train, validation]).tolist()) == list(range(250_000))


def test_the_probe_selects_on_the_same_rows_whatever_its_seed(monkeypatch):
    features, labels = _features()
    calls = _spy_adamw(monkeypatch)
    for seed in (0, 7):
        fit_linear_probe(features, labels, 3, iterations=2, seed=seed)
    train_rows, _ = selection_split(50)
    selection_calls = [calls[0], calls[2]]  # each probe: the candidates' fit, then the refit
    for call in selection_calls:
        assert torch.equal(call["features"], F.normalize(features, dim=-1)[train_rows])
        assert call["lrs"] == list(LP_LEARNING_RATES)
    assert not torch.equal(calls[0]["inits"], calls[2]["inits"])  # the seed changes the inits only


def _constant_predictors(monkeypatch, fit_name="_fit_adamw"):
    """Candidate i predicts class i for every row: which candidate wins shows which labels were scored."""
    calls = []

    def fake(features, labels, num_classes, lrs, *args):
        calls.append((len(features), list(lrs)))
        weights = torch.zeros(len(lrs), num_classes, features.shape[1])
        biases = torch.stack([F.one_hot(torch.tensor(i % num_classes), num_classes).float() for i in range(len(lrs))])
        return weights, biases

    monkeypatch.setattr(heads, fit_name, fake)
    return calls


def test_the_learning_rate_is_chosen_on_the_validation_rows_of_the_split(monkeypatch):
    train_rows, validation_rows = selection_split(50)
    features, labels = torch.randn(50, 4), torch.zeros(50, dtype=torch.long)
    labels[train_rows] = torch.arange(len(train_rows)) % 3
    labels[validation_rows] = 2  # only the third candidate (class 2 everywhere) is right on them
    calls = _constant_predictors(monkeypatch)
    fit_linear_probe(features, labels, 3, iterations=1)
    assert calls == [(45, list(LP_LEARNING_RATES)), (50, [LP_LEARNING_RATES[2]])]


def test_a_benchmarks_own_validation_split_replaces_the_random_split(monkeypatch):
    features, labels = torch.randn(50, 4), torch.arange(50) % 3
    validation = (torch.randn(10, 4), torch.full((10,), 1))
    calls = _constant_predictors(monkeypatch)
    fit_linear_probe(features, labels, 3, iterations=1, validation=validation)
    # The candidates train on every training row and are scored on the given split (all class 1).
    assert calls == [(50, list(LP_LEARNING_RATES)), (50, [LP_LEARNING_RATES[1]])]
    with pytest.raises(ValueError, match="validation features"):
        fit_linear_probe(features, labels, 3, validation=(torch.randn(10, 4), torch.zeros(9, dtype=torch.long)))


# -- initialisation ------------------------------------------------------------------------------------


def test_every_candidate_and_the_refit_start_from_a_fresh_nn_linear_init(monkeypatch):
    features, labels = _features()
    calls = _spy_adamw(monkeypatch)
    state = torch.get_rng_state()
    fit_linear_probe(features, labels, 3, iterations=2, seed=4)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    with torch.random.fork_rng():
        torch.manual_seed(4)  # the official probe: a new nn.Linear per candidate, then one for the refit
        layers = [torch.nn.Linear(8, 3) for _ in range(len(LP_LEARNING_RATES) + 1)]
    expected = torch.stack([torch.cat([layer.weight, layer.bias[:, None]], 1) for layer in layers]).detach()
    assert torch.equal(calls[0]["inits"], expected[:-1]) and torch.equal(calls[1]["inits"], expected[-1:])
    assert len({tuple(init.flatten().tolist()) for init in expected}) == len(expected)  # all different


def test_iterations_0_returns_the_refits_fresh_init():
    features, labels = _features()
    weight, bias = fit_linear_probe(features, labels, 3, iterations=0, seed=2)
    with torch.random.fork_rng():
        torch.manual_seed(2)
        layer = [torch.nn.Linear(8, 3) for _ in range(len(LP_LEARNING_RATES) + 1)][-1]
    assert torch.equal(weight, layer.weight.detach()) and torch.equal(bias, layer.bias.detach())


# -- the class count -----------------------------------------------------------------------------------


def test_the_class_count_comes_from_the_training_labels(monkeypatch):
    train_rows, validation_rows = selection_split(40)
    features, labels = torch.randn(40, 8, generator=torch.Generator().manual_seed(0)), torch.zeros(40, dtype=torch.long)
    labels[train_rows] = 2 * (torch.arange(len(train_rows)) % 2)  # classes 0 and 2
    labels[validation_rows] = 3  # class 3 only among the rows held out for selection
    calls = _spy_adamw(monkeypatch)
    weight, bias = fit_linear_probe(features, labels, 5, iterations=50)
    assert [c["num_classes"] for c in calls] == [2, 3]  # selection train: {0, 2}; refit: {0, 2, 3}
    assert weight.shape == (5, 8) and bias.shape == (5,)
    for absent in (1, 4):  # no training row: a zero weight and a bias that never wins
        assert torch.equal(weight[absent], torch.zeros(8)) and bias[absent] == heads.ABSENT_CLASS_BIAS
    predictions = (F.normalize(features, dim=-1) @ weight.T + bias).argmax(-1)
    assert set(predictions.tolist()) <= {0, 2, 3}


def test_missing_classes_map_back_to_their_own_rows():
    features, labels = _features(n=60, classes=3)
    labels = labels * 2  # classes 0, 2, 4 of 6
    weight, bias = fit_linear_probe(features, labels, 6, iterations=200)
    predictions = (F.normalize(features, dim=-1) @ weight.T + bias).argmax(-1)
    assert torch.equal(predictions, labels)


# -- scikit-learn's grid -------------------------------------------------------------------------------


def test_the_logistic_grid_is_c_equals_1_over_l_for_seven_strengths_in_order(monkeypatch):
    assert LOGISTIC_LS == (1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e4, 1e6)
    assert LOGISTIC_CS == tuple(1 / strength for strength in LOGISTIC_LS)
    calls = []
    original = heads._fit_logistic
    monkeypatch.setattr(heads, "_fit_logistic", lambda features, labels, cs, *a: calls.append(list(cs)) or original(features, labels, cs, *a))
    features, labels = _features(n=60)
    fit_linear_probe(features, labels, 3, solver="logistic", iterations=100)
    assert calls[0] == list(LOGISTIC_CS) and len(calls[1]) == 1 and calls[1][0] in LOGISTIC_CS


# -- cached accuracies ---------------------------------------------------------------------------------


def test_cached_probe_accuracies_of_another_protocol_are_not_reused(tiny_clip_dir, eurosat_dir, tmp_path, monkeypatch):
    from ldifs_hf.evaluation import ConceptForgettingEvaluator, EvaluatorSettings
    from ldifs_hf.evaluation import evaluator as evaluator_module

    def accuracy_files():
        return sorted(f for f in tmp_path.iterdir() if f.suffix == ".json")

    settings = EvaluatorSettings(dataset_paths={"eurosat": str(eurosat_dir)}, device="cpu", lp_iterations=5, feature_cache_dir=str(tmp_path))
    ConceptForgettingEvaluator.from_pretrained(tiny_clip_dir, settings).pretrained_accuracies(["eurosat"])
    assert len(accuracy_files()) == 1
    ConceptForgettingEvaluator.from_pretrained(tiny_clip_dir, settings).pretrained_accuracies(["eurosat"])
    assert len(accuracy_files()) == 1  # same protocol: reused
    monkeypatch.setattr(evaluator_module, "LP_PROTOCOL", "an earlier protocol")
    ConceptForgettingEvaluator.from_pretrained(tiny_clip_dir, settings).pretrained_accuracies(["eurosat"])
    assert len(accuracy_files()) == 2  # another protocol: fitted again, not read back
