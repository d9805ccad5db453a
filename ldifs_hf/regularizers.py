"""The forgetting regularizers: LDIFS (feature space), L2SP (parameter space) and the KL anchor (output space).

Formulas follow docs/PROTOCOL.md, section 2 Regularizers (paper arXiv 2308.13320 and its official code):
- LDIFS, "token" normalisation (official default): each tapped hidden state [B, T, D] is L2-normalised
  along the token axis; the squared student-teacher difference is averaged over T and D, then over
  the taps, then over the batch.
- LDIFS, "flatten" normalisation (paper appendix B): each tap is flattened to T*D and unit-normalised;
  the taps are concatenated and the squared L2 distance of the concatenations is averaged over the batch.
- L2SP: sum over parameters of ||theta - theta_0||^2.
- KL anchor: tau^2 * KL(p_teacher || p_student) of each row of logits, p = softmax(logits / tau).

Shapes: a tap is [B, T, D] (tokens), or a channels-first conv feature map [B, C, H, W], whose H*W
spatial positions are the tokens ([B, H*W, C]); any other rank is refused. With an `attention_mask`
[B, T] (1 = real token), padded positions take no part: the token-axis norm, the mean over T and the
flattened vector all cover the real tokens only, so padding a batch leaves the distance unchanged.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

LDIFS_NORMALIZATIONS = ("token", "flatten")
_EPS = 1e-10


def default_ldifs_layers(num_hidden_layers: int) -> list[int]:
    """Hidden-state indices tapped by default: the embedding output (0) and every L/4 blocks.

    For a 12-block ViT this is [0, 3, 6, 9, 12], the official code's taps.
    """
    if num_hidden_layers < 1:
        raise ValueError(f"num_hidden_layers must be >= 1, got {num_hidden_layers}")
    taps = {0} | {round(num_hidden_layers * k / 4) for k in range(1, 5)}
    return sorted(taps)


def check_ldifs_layers(layers: Sequence[int], num_blocks: int) -> None:
    """The taps fit a model of `num_blocks` blocks, whose hidden states are indices 0..num_blocks (negative ones
    count from the end); else a one-line error naming the first that does not."""
    bad = [i for i in layers if not -(num_blocks + 1) <= i <= num_blocks]
    if bad:
        raise ValueError(
            f"ldifs layer index {bad[0]} out of range: the model has {num_blocks} blocks, so hidden_states indices are 0..{num_blocks}"
        )


def _as_tokens(hidden: torch.Tensor) -> torch.Tensor:
    """A tap as [B, T, D]: token sequences as they are, conv maps [B, C, H, W] as H*W tokens of C features."""
    if hidden.dim() == 3:
        return hidden
    if hidden.dim() == 4:
        return hidden.flatten(2).transpose(1, 2)
    raise ValueError(
        f"LDIFS taps must be token states [B, T, D] or conv feature maps [B, C, H, W], got a hidden state of "
        f"shape {tuple(hidden.shape)}"
    )


def ldifs_per_sample(
    student_hidden_states: Sequence[torch.Tensor],
    teacher_hidden_states: Sequence[torch.Tensor],
    layers: Sequence[int],
    normalization: str = "token",
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """LDIFS distance of each example, shape [B], computed in float32.

    attention_mask: optional [B, T], nonzero at real tokens; padded positions are left out.
    """
    if normalization not in LDIFS_NORMALIZATIONS:
        raise ValueError(f"ldifs normalization must be one of {LDIFS_NORMALIZATIONS}, got {normalization!r}")
    check_ldifs_layers(layers, len(student_hidden_states) - 1)
    per_tap = []
    for i in layers:
        s = _as_tokens(student_hidden_states[i]).float()
        t = _as_tokens(teacher_hidden_states[i].detach()).float()
        if s.shape != t.shape:
            raise ValueError(f"student and teacher hidden state {i} differ in shape: {tuple(s.shape)} vs {tuple(t.shape)}")
        real_tokens = None
        if attention_mask is not None:
            if attention_mask.shape != s.shape[:2]:
                raise ValueError(
                    f"attention_mask of shape {tuple(attention_mask.shape)} does not match hidden state {i} "
                    f"[B, T] = {tuple(s.shape[:2])}"
                )
            keep = (attention_mask != 0).to(s.dtype).unsqueeze(-1)
            # Zeroed padding adds nothing to a norm or a squared difference.
            s, t = s * keep, t * keep
            real_tokens = keep.sum(dim=(1, 2))
        if normalization == "token":
            s, t = F.normalize(s, dim=1, eps=_EPS), F.normalize(t, dim=1, eps=_EPS)
            squared = (s - t).pow(2)
            if real_tokens is None:
                per_tap.append(squared.flatten(1).mean(dim=1))
            else:
                per_tap.append(squared.sum(dim=(1, 2)) / (real_tokens * s.shape[2]))
        else:
            s, t = F.normalize(s.flatten(1), dim=1, eps=_EPS), F.normalize(t.flatten(1), dim=1, eps=_EPS)
            per_tap.append((s - t).pow(2).sum(dim=1))
    stacked = torch.stack(per_tap, dim=1)  # [B, taps]
    # "token": mean over taps; "flatten": the squared norm of a concatenation is the sum over taps.
    return stacked.mean(dim=1) if normalization == "token" else stacked.sum(dim=1)


def ldifs_distance(
    student_hidden_states: Sequence[torch.Tensor],
    teacher_hidden_states: Sequence[torch.Tensor],
    layers: Sequence[int],
    normalization: str = "token",
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Batch-mean LDIFS distance (0-dim float32 tensor); differentiable w.r.t. the student only."""
    return ldifs_per_sample(student_hidden_states, teacher_hidden_states, layers, normalization, attention_mask).mean()


class _L2SPPenalty(torch.autograd.Function):
    """sum ||theta - theta_0||^2 as ONE autograd node.

    Forward and backward use foreach kernels over all parameters at once instead of building a
    per-parameter graph; the backward hands 2 * (theta - theta_0) * grad_out to every parameter, so
    loss scaling, gradient accumulation and DDP all see an ordinary gradient. The node keeps only the
    parameters and the reference it was given (no copy of theta - theta_0 waits for the backward, which
    would be one more encoder-sized buffer through the whole step): the backward recomputes the
    difference, in the buffers that become the gradients.
    """

    @staticmethod
    def forward(ctx, reference: list[torch.Tensor], *params: torch.Tensor) -> torch.Tensor:
        detached = [p.detach() for p in params]
        norms = torch._foreach_norm(torch._foreach_sub(detached, reference))
        ctx.save_for_backward(*params)
        ctx.reference = reference
        return torch.stack([n.float() for n in norms]).pow(2).sum()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grads = torch._foreach_sub([p.detach() for p in ctx.saved_tensors], ctx.reference)
        torch._foreach_mul_(grads, 2.0 * grad_out)
        return (None, *grads)


def l2sp_penalty(params: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum_i ||params_i - reference_i||^2 (0-dim float32), with gradient 2 (theta - theta_0)."""
    params, reference = list(params), list(reference)
    if len(params) != len(reference):
        raise ValueError(f"L2SP needs one reference per parameter, got {len(params)} parameters and {len(reference)} references")
    if not params:
        raise ValueError("L2SP needs at least one parameter")
    return _L2SPPenalty.apply(reference, *params)


def kl_anchor(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """τ²·KL(p_teacher ‖ p_student) of each row, shape [N], in float32; logits [N, C], p = softmax(logits / τ) over C.

    KL(p_t ‖ p_s) = Σ_c p_t,c (log p_t,c − log p_s,c) (forward KL: the student keeps mass wherever the teacher had
    it). The τ² (Hinton et al. 2015) keeps the gradient's scale as τ changes: ∂/∂z_s = τ (p_s − p_t), so at τ = 1
    it is p_s − p_t. The teacher's logits take no gradient; identical logits give exactly 0."""
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(
            f"KL compares logits [N, C] of the same shape, got student {tuple(student_logits.shape)} and teacher "
            f"{tuple(teacher_logits.shape)}"
        )
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    return temperature**2 * F.kl_div(log_student, log_teacher, reduction="none", log_target=True).sum(dim=-1)
