"""What the language model's own numbers say about an answer: how sure it was, and where in the image it looked.

Two-stage answering (pipeline/refine.py) asks the robot for detail only when the first pass is unsure, and only of
the region the model attended to:

    uncertainty  per generated token t: min-entropy H_min = -log max_v p_t(v) in nats (0 = certain; the paper's
                 confidence measure), and for contrast the Shannon entropy -sum p log p and 1 - max p. The answer's
                 uncertainty is its least sure token's (max over the answer tokens; the closing EOS excluded, it
                 only says the answer ended).
    attention    one teacher-forced pass over prompt + answer with eager attention (sdpa gives no weights); the rows
                 of the positions that produced the answer tokens, over the M image positions, averaged over every
                 layer and head, renormalised over the image positions (the mass that goes to the chat template's
                 text and the attention sink is not about the image), averaged over the answer tokens.
    token map    image position m of the prompt -> the payload token (tile, index) it came from
                 (token_order's arrangement inverted; newline positions map to none).

Nothing here imports rclpy; ServerHalf calls it while answering.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from .spec import BackboneSpec
from .token_order import arrange_image_tokens

__all__ = [
    "TokenUncertainty",
    "token_uncertainty",
    "answer_uncertainty",
    "image_attention",
    "image_token_sources",
    "eager_attention",
]


@dataclass(frozen=True)
class TokenUncertainty:
    """Per-token uncertainties of one generated answer, in nats (min-entropy, Shannon) and as 1 - max p."""

    min_entropy: tuple[float, ...]
    entropy: tuple[float, ...]
    one_minus_top: tuple[float, ...]


def token_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """[G, V] next-token logits -> [G, 3] (min-entropy, Shannon entropy, 1 - max p), float64, in nats."""
    if logits.dim() != 2 or logits.shape[1] < 1:
        raise ValueError(f"logits must be [G, V], got {tuple(logits.shape)}")
    logp = torch.log_softmax(logits.double(), dim=-1)
    top = logp.max(dim=-1).values
    entropy = -(logp.exp() * logp).sum(-1)
    return torch.stack([-top, entropy, 1.0 - top.exp()], dim=-1)


def answer_uncertainty(per_token: torch.Tensor, token_ids, eos_ids) -> float:
    """The answer's uncertainty: the max min-entropy over its tokens, the closing EOS excluded (0.0 for an answer of
    EOS only: nothing was said to be unsure of).

    Args:
        per_token: [G, 3] from ``token_uncertainty`` (column 0 is used), G = the generated tokens.
        token_ids: the G generated ids.
        eos_ids: the ids that end an answer.
    """
    ids = [int(t) for t in token_ids]
    if len(ids) != per_token.shape[0]:
        raise ValueError(f"{len(ids)} token ids for {per_token.shape[0]} uncertainties")
    keep = [i for i, t in enumerate(ids) if t not in set(eos_ids)]
    return float(per_token[keep, 0].max()) if keep else 0.0


@contextlib.contextmanager
def eager_attention(model):
    """Run ``model`` with eager attention inside the block (attention weights need it), then restore its own."""
    before = model.config._attn_implementation
    if before == "eager":
        yield model
        return
    model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        model.set_attn_implementation(before)


def image_attention(attentions, image_mask: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
    """The answer tokens' attention over the image positions: [M], summing to 1 (see the module docstring).

    Args:
        attentions: per layer [1, H, L, L] (a model's ``output_attentions``).
        image_mask: [L] bool, True at the M image positions.
        query_positions: [A] positions whose next-token prediction is an answer token.
    """
    if not attentions:
        raise ValueError("no attention weights (the model must run with eager attention and output_attentions)")
    mask = image_mask.to(torch.bool)
    if not bool(mask.any()):
        raise ValueError("the prompt has no image positions")
    rows = torch.stack([a[0, :, query_positions, :].double() for a in attentions])  # [layers, H, A, L]
    over_image = rows[..., mask.to(rows.device)].mean(dim=(0, 1))  # [A, M]
    over_image = over_image / over_image.sum(-1, keepdim=True).clamp_min(1e-300)
    weights = over_image.mean(0)
    return weights / weights.sum()


def image_token_sources(spec: BackboneSpec, n_tiles: int, n_per_tile: int, grid, image_size) -> np.ndarray:
    """For each of the M image positions, the flat payload index (tile * n + token) it came from, -1 for newlines.

    Built by arranging the indices themselves through ``arrange_image_tokens``, so it cannot drift from the order the
    prompt is built in. The reference packing of full tiles may downsample the feature map (anyres_max); positions that
    mix several tokens there are refused (merged features never are downsampled).
    """
    index = torch.arange(n_tiles * n_per_tile, dtype=torch.float64).reshape(n_tiles, n_per_tile, 1)
    newline = torch.full((1,), -1.0, dtype=torch.float64) if spec.family == "onevision" else None
    out = arrange_image_tokens(spec, index, grid, image_size, newline)[:, 0]
    if not torch.equal(out, out.round()):
        raise ValueError("this image's full-token packing downsamples the feature map: positions mix several tokens")
    return out.to(torch.int64).numpy()
