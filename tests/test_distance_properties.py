"""Property tests (hypothesis) of the distances: the LDIFS feature distance in both normalisations,
the L2SP penalty and the evaluation's parameter distance. Each is zero for identical inputs,
symmetric and non-negative; the LDIFS distance ignores exactly the scalings its normalisation removes."""

import copy
import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import CLIPConfig, CLIPModel

from ldifs_hf.evaluation.distances import parameter_distance
from ldifs_hf.regularizers import ldifs_distance, l2sp_penalty

FAST = settings(max_examples=40, deadline=None)
seeds = st.integers(0, 2**31 - 1)
normalizations = st.sampled_from(["token", "flatten"])


def _states(seed, batch, tokens, dim, taps=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, tokens, dim, generator=g) for _ in range(taps)]


shapes = st.tuples(seeds, st.integers(1, 3), st.integers(1, 5), st.integers(1, 6))


@FAST
@given(shape=shapes, other=seeds, normalization=normalizations)
def test_ldifs_distance_is_zero_on_identical_inputs_symmetric_and_non_negative(shape, other, normalization):
    seed, batch, tokens, dim = shape
    a, b = _states(seed, batch, tokens, dim), _states(other, batch, tokens, dim)
    layers = [0, 1, 2]
    assert ldifs_distance(a, [t.clone() for t in a], layers, normalization).item() == pytest.approx(0.0, abs=1e-6)
    ab, ba = ldifs_distance(a, b, layers, normalization).item(), ldifs_distance(b, a, layers, normalization).item()
    assert ab == pytest.approx(ba, rel=1e-5, abs=1e-7)
    assert ab >= 0.0


@FAST
@given(shape=shapes, other=seeds, scale_seed=seeds)
def test_token_normalisation_ignores_a_positive_scale_per_example_and_feature(shape, other, scale_seed):
    # "token" normalises each feature dimension over the tokens: a scale c[b, d] > 0 shared by the
    # tokens of one example and dimension cancels.
    seed, batch, tokens, dim = shape
    a, b = _states(seed, batch, tokens, dim), _states(other, batch, tokens, dim)
    g = torch.Generator().manual_seed(scale_seed)
    scaled = [t * torch.exp(2 * torch.randn(batch, 1, dim, generator=g)) for t in a]
    assert ldifs_distance(scaled, b, [0, 1, 2], "token").item() == pytest.approx(ldifs_distance(a, b, [0, 1, 2], "token").item(), rel=1e-4, abs=1e-6)


@FAST
@given(shape=shapes, other=seeds, scale_seed=seeds)
def test_flatten_normalisation_ignores_a_positive_scale_per_example_and_tap(shape, other, scale_seed):
    seed, batch, tokens, dim = shape
    a, b = _states(seed, batch, tokens, dim), _states(other, batch, tokens, dim)
    g = torch.Generator().manual_seed(scale_seed)
    scaled = [t * torch.exp(2 * torch.randn(batch, 1, 1, generator=g)) for t in a]
    assert ldifs_distance(scaled, b, [0, 1, 2], "flatten").item() == pytest.approx(ldifs_distance(a, b, [0, 1, 2], "flatten").item(), rel=1e-4, abs=1e-6)


def test_the_normalisations_remove_those_scalings_and_no_others():
    # By hand, one example, two tokens, one feature: student (1, 0), teacher (0, 1), both unit vectors
    # over the tokens: squared difference (1, 1), mean over T*D = 1 ("token"); sum = 2 ("flatten").
    s, t = [torch.tensor([[[1.0], [0.0]]])], [torch.tensor([[[0.0], [1.0]]])]
    assert ldifs_distance(s, t, [0], "token").item() == pytest.approx(1.0)
    assert ldifs_distance(s, t, [0], "flatten").item() == pytest.approx(2.0)
    # A scale that differs between the tokens is not removed: (3, 1) vs (1, 1) normalise differently.
    a, b = [torch.tensor([[[3.0], [1.0]]])], [torch.tensor([[[1.0], [1.0]]])]
    assert ldifs_distance(a, b, [0], "token").item() > 0.01


@FAST
@given(seed=seeds, other=seeds, sizes=st.lists(st.integers(1, 5), min_size=1, max_size=4))
def test_l2sp_penalty_is_the_squared_distance_zero_symmetric_non_negative(seed, other, sizes):
    a = [torch.randn(n, generator=torch.Generator().manual_seed(seed + i)) for i, n in enumerate(sizes)]
    b = [torch.randn(n, generator=torch.Generator().manual_seed(other + i + 7)) for i, n in enumerate(sizes)]
    assert l2sp_penalty(a, [x.clone() for x in a]).item() == 0.0
    ab, ba = l2sp_penalty(a, b).item(), l2sp_penalty(b, a).item()
    assert ab == pytest.approx(ba, rel=1e-6) and ab >= 0.0
    assert ab == pytest.approx(sum(((x - y) ** 2).sum().item() for x, y in zip(a, b)), rel=1e-5)


@functools.lru_cache(maxsize=1)
def _tiny_clip() -> CLIPModel:
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": 50, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 8},
        vision_config={"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 8, "patch_size": 4},
        projection_dim=4,
    )
    return CLIPModel(config).eval()


def _moved(seed, scale) -> tuple[CLIPModel, float]:
    """A copy of the tiny CLIP with noise on its image encoder and projection, and ||noise||²."""
    model = copy.deepcopy(_tiny_clip())
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    with torch.no_grad():
        for p in [*model.vision_model.parameters(), *model.visual_projection.parameters()]:
            noise = scale * torch.randn(p.shape, generator=g)
            p.add_(noise)
            total += noise.double().pow(2).sum().item()
    return model, total


@settings(max_examples=30, deadline=None)
@given(seed=seeds, other=seeds, scale=st.floats(1e-3, 1.0))
def test_parameter_distance_is_zero_symmetric_non_negative_and_the_squared_norm(seed, other, scale):
    base = _tiny_clip()
    a, moved_by = _moved(seed, scale)
    b, _ = _moved(other, scale)
    assert parameter_distance(base, copy.deepcopy(base)) == 0.0
    assert parameter_distance(a, base) == pytest.approx(moved_by, rel=1e-5)  # the text tower is not counted
    ab, ba = parameter_distance(a, b), parameter_distance(b, a)
    assert ab == pytest.approx(ba, rel=1e-9) and ab >= 0.0
