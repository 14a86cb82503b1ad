"""Laplacian conditional entropy model: y ~ Laplace(mu, b) convolved with U(-1/2, 1/2).

Yuan et al., TOFC, sec. IV-B: every element of a merged feature is modelled as a Laplacian whose mean mu and scale b
come from the hyper-synthesis; convolving with a unit uniform gives the probability of the rounded value::

    P(y_hat = v | mu, b) = F((v - mu + 1/2) / b) - F((v - mu - 1/2) / b),   F = standard Laplace CDF

Built on CompressAI's ``GaussianConditional`` (Balle et al. 2018): only the standardized CDF and quantile change,
so ``update()`` builds 16-bit quantized CDF tables for a fixed, log-spaced scale table and the rANS coder codes
symbols with per-element table indexes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ._compressai import GaussianConditional

__all__ = ["LaplacianConditional", "log_scale_table"]


def log_scale_table(scale_min: float, scale_max: float, levels: int) -> list[float]:
    """Scales s_i = scale_min * (scale_max / scale_min) ** (i / (levels - 1)), i = 0..levels-1.

    The hyper-synthesis predicts the (real-valued) table index directly, so the decoder never evaluates exp/log:
    index = clamp(round(u), 0, levels - 1) is exact on any machine.
    """
    if not (0 < scale_min < scale_max) or levels < 2:
        raise ValueError(f"need 0 < scale_min < scale_max and levels >= 2, got {scale_min}, {scale_max}, {levels}")
    ratio = math.log(scale_max / scale_min) / (levels - 1)
    return [float(scale_min * math.exp(i * ratio)) for i in range(levels)]


class LaplacianConditional(GaussianConditional):
    """``GaussianConditional`` with a Laplace instead of a Gaussian density (TOFC eq. 10-12).

    Args:
        scale_table: increasing positive scales, one quantized CDF table each (see :func:`log_scale_table`).
        tail_mass: probability mass left outside each table; out-of-range symbols use rANS escape coding.
    """

    @staticmethod
    def _standardized_cumulative(inputs: Tensor) -> Tensor:
        # F(x) = 1/2 exp(x) for x < 0, 1 - 1/2 exp(-x) otherwise; exp(-|x|) never overflows (no NaN gradients).
        half_tail = 0.5 * torch.exp(-inputs.abs())
        return torch.where(inputs < 0, half_tail, 1.0 - half_tail)

    @staticmethod
    def _standardized_quantile(quantile):
        q = np.asarray(quantile, dtype=np.float64)
        return np.where(q < 0.5, np.log(2.0 * q), -np.log(2.0 * (1.0 - q)))
