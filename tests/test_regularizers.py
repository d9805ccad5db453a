"""LDIFS and L2SP pinned to hand computations of docs/PROTOCOL.md, section 2 Regularizers."""

import math

import pytest
import torch

from ldifs_hf.regularizers import default_ldifs_layers, l2sp_penalty, ldifs_distance, ldifs_per_sample


def _hand_ldifs(student, teacher, layers, normalization):
    """Plain-Python loops over nested lists: [tap][b][t][d]."""
    per_sample = []
    for b in range(len(student[0])):
        tap_values = []
        for i in layers:
            s, t = student[i][b], teacher[i][b]
            T, D = len(s), len(s[0])
            if normalization == "token":
                total = 0.0
                for d in range(D):
                    ns = max(math.sqrt(sum(s[k][d] ** 2 for k in range(T))), 1e-10)
                    nt = max(math.sqrt(sum(t[k][d] ** 2 for k in range(T))), 1e-10)
                    total += sum((s[k][d] / ns - t[k][d] / nt) ** 2 for k in range(T))
                tap_values.append(total / (T * D))
            else:
                fs = [v for row in s for v in row]
                ft = [v for row in t for v in row]
                ns, nt = math.sqrt(sum(v * v for v in fs)), math.sqrt(sum(v * v for v in ft))
                tap_values.append(sum((a / ns - c / nt) ** 2 for a, c in zip(fs, ft)))
        per_sample.append(sum(tap_values) / len(tap_values) if normalization == "token" else sum(tap_values))
    return per_sample


@pytest.mark.parametrize("normalization", ["token", "flatten"])
def test_ldifs_matches_hand_computation(normalization):
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(3, 4, 5, generator=g) for _ in range(5)]
    teacher = [torch.randn(3, 4, 5, generator=g) for _ in range(5)]
    layers = [0, 2, 4]
    expected = _hand_ldifs([s.tolist() for s in student], [t.tolist() for t in teacher], layers, normalization)
    got = ldifs_per_sample(student, teacher, layers, normalization)
    assert got.shape == (3,)
    assert torch.allclose(got, torch.tensor(expected), rtol=1e-5, atol=1e-7)
    assert ldifs_distance(student, teacher, layers, normalization).item() == pytest.approx(sum(expected) / 3, rel=1e-5)


def test_ldifs_token_axis_and_known_value():
    # One tap, B=1, T=2, D=1: student column (3, 4) -> (0.6, 0.8); teacher (1, 0) -> (1, 0).
    student = [torch.tensor([[[3.0], [4.0]]])]
    teacher = [torch.tensor([[[1.0], [0.0]]])]
    # ((0.6-1)^2 + 0.8^2) / (T*D=2) = (0.16 + 0.64) / 2 = 0.4
    assert ldifs_distance(student, teacher, [0], "token").item() == pytest.approx(0.4)
    # Scaling a token column does not change the token-normalised distance.
    assert ldifs_distance([student[0] * 7], teacher, [0], "token").item() == pytest.approx(0.4)


def test_ldifs_is_zero_for_identical_features_and_grad_flows_to_student_only():
    h = [torch.randn(2, 3, 4) for _ in range(3)]
    assert ldifs_distance(h, [x.clone() for x in h], [0, 1, 2]).item() == 0.0
    student = [x.clone().requires_grad_(True) for x in h]
    teacher = [torch.randn(2, 3, 4, requires_grad=True) for _ in range(3)]
    ldifs_distance(student, teacher, [0, 2]).backward()
    assert student[0].grad is not None and student[0].grad.abs().sum() > 0
    assert student[1].grad is None  # not tapped
    assert all(t.grad is None for t in teacher)  # teacher is detached


def test_ldifs_computes_in_float32_under_half_inputs():
    h = [torch.randn(2, 3, 4).to(torch.bfloat16) for _ in range(2)]
    t = [torch.randn(2, 3, 4).to(torch.bfloat16) for _ in range(2)]
    d = ldifs_distance(h, t, [0, 1])
    assert d.dtype == torch.float32
    assert d.item() == pytest.approx(ldifs_distance([x.float() for x in h], [x.float() for x in t], [0, 1]).item())


def test_ldifs_rejects_bad_normalization_and_layers():
    h = [torch.randn(1, 2, 2)] * 3
    with pytest.raises(ValueError, match="normalization must be one of"):
        ldifs_distance(h, h, [0], "bogus")
    with pytest.raises(ValueError, match="layer index 5 out of range"):
        ldifs_distance(h, h, [0, 5])


def test_default_layers():
    assert default_ldifs_layers(12) == [0, 3, 6, 9, 12]
    assert default_ldifs_layers(24) == [0, 6, 12, 18, 24]
    assert default_ldifs_layers(4) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        default_ldifs_layers(0)


def test_l2sp_value_and_gradient():
    p = [torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([[0.5]], requires_grad=True)]
    ref = [torch.tensor([0.0, 4.0]), torch.tensor([[1.5]])]
    value = l2sp_penalty(p, ref)
    # (1-0)^2 + (2-4)^2 + (0.5-1.5)^2 = 1 + 4 + 1 = 6
    assert value.item() == pytest.approx(6.0)
    (3.0 * value).backward()
    # d/dθ 3·Σ(θ-θ0)^2 = 6(θ-θ0)
    assert torch.allclose(p[0].grad, torch.tensor([6.0, -12.0]))
    assert torch.allclose(p[1].grad, torch.tensor([[-6.0]]))


def test_l2sp_matches_autograd_reference_on_random_tensors():
    g = torch.Generator().manual_seed(1)
    p = [torch.randn(4, 3, generator=g, requires_grad=True), torch.randn(7, generator=g, requires_grad=True)]
    ref = [torch.randn(4, 3, generator=g), torch.randn(7, generator=g)]
    l2sp_penalty(p, ref).backward()
    fast = [x.grad.clone() for x in p]
    for x in p:
        x.grad = None
    sum(((x - r) ** 2).sum() for x, r in zip(p, ref)).backward()
    for a, x in zip(fast, p):
        assert torch.allclose(a, x.grad)


def test_l2sp_rejects_mismatched_lists():
    with pytest.raises(ValueError, match="one reference per parameter"):
        l2sp_penalty([torch.zeros(1, requires_grad=True)], [])
