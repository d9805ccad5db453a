"""LDIFS over padded token sequences and conv feature maps, against hand computations."""

import pytest
import torch

from ldifs_hf.regularizers import ldifs_per_sample


@pytest.mark.parametrize("normalization", ["token", "flatten"])
def test_masked_ldifs_equals_each_sequence_without_its_padding(normalization):
    g = torch.Generator().manual_seed(0)
    lengths = [2, 5, 3]
    student = [torch.randn(3, 5, 4, generator=g) for _ in range(2)]
    teacher = [torch.randn(3, 5, 4, generator=g) for _ in range(2)]
    mask = torch.tensor([[1 if t < n else 0 for t in range(5)] for n in lengths])
    got = ldifs_per_sample(student, teacher, [0, 1], normalization, attention_mask=mask)
    for b, n in enumerate(lengths):
        alone = ldifs_per_sample([s[b : b + 1, :n] for s in student], [t[b : b + 1, :n] for t in teacher], [0, 1], normalization)
        assert got[b].item() == pytest.approx(alone.item(), rel=1e-6)
    # Values at padded positions do not matter.
    noisy = [s.masked_fill(mask.unsqueeze(-1) == 0, 1e3) for s in student]
    assert torch.allclose(ldifs_per_sample(noisy, teacher, [0, 1], normalization, attention_mask=mask), got)


def test_masked_token_ldifs_known_value():
    # B=1, T=3 (last padded), D=1: student (3, 4, pad) -> (0.6, 0.8); teacher (1, 0, pad) -> (1, 0).
    student = [torch.tensor([[[3.0], [4.0], [50.0]]])]
    teacher = [torch.tensor([[[1.0], [0.0], [-9.0]]])]
    mask = torch.tensor([[1, 1, 0]])
    # ((0.6-1)^2 + 0.8^2) / (2 real tokens * D=1) = 0.4
    assert ldifs_per_sample(student, teacher, [0], "token", attention_mask=mask).item() == pytest.approx(0.4)


@pytest.mark.parametrize("normalization", ["token", "flatten"])
def test_conv_maps_use_spatial_positions_as_tokens(normalization):
    g = torch.Generator().manual_seed(1)
    student = [torch.randn(2, 6, 3, 4, generator=g)]  # [B, C, H, W]
    teacher = [torch.randn(2, 6, 3, 4, generator=g)]
    as_tokens = lambda x: x.permute(0, 2, 3, 1).reshape(2, 12, 6)  # noqa: E731  [B, H*W, C]
    expected = ldifs_per_sample([as_tokens(student[0])], [as_tokens(teacher[0])], [0], normalization)
    assert torch.allclose(ldifs_per_sample(student, teacher, [0], normalization), expected)


def test_other_ranks_and_mismatched_masks_are_refused():
    with pytest.raises(ValueError, match=r"token states \[B, T, D\] or conv feature maps \[B, C, H, W\], got .*\(2, 5\)"):
        ldifs_per_sample([torch.randn(2, 5)], [torch.randn(2, 5)], [0])
    h = [torch.randn(2, 5, 3)]
    with pytest.raises(ValueError, match=r"attention_mask of shape \(2, 4\) does not match hidden state 0 \[B, T\] = \(2, 5\)"):
        ldifs_per_sample(h, h, [0], attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="differ in shape"):
        ldifs_per_sample(h, [torch.randn(2, 4, 3)], [0])
