"""Hyperprior entropy models for merged features (TOFC, Yuan et al., sec. IV-B), E of them batched as experts.

One expert is the model of paper Fig. 3, with fully connected transforms because a merged feature is a vector::

    y = x / y_step ----------------------------------------------> round(y - mu) + mu = y_hat --> x_hat = y_hat*step
      |                                                                ^             |
      +--> h_a: FC d -> ... -> d/16 = z --> round --> z_hat --> h_s --> (mu, b)     +--> Laplace(mu, b) * U(-1/2,1/2)
                                              |                                           (y rate, eq. 13)
                                              +--> factorized density (EntropyBottleneck)  (z rate, eq. 13)

Training uses straight-through rounding (eqs. 7-8) of z and of y - mu. The scale branch predicts a real-valued
index u into a fixed log-spaced scale table, b = table[round(u)], so the decoder never evaluates exp/log.
h_a and h_s are :class:`~tofc_ros.codec.fixed_point.FixedPointExpertMLP`: exact integer networks at inference.

The z densities of all experts live in one ``EntropyBottleneck`` with E * d/16 channels (expert e owns channels
e*d/16 .. (e+1)*d/16 - 1) and the y tables in one shared ``LaplacianConditional``, so a whole image needs one rANS
call for z and one for y. Medians of the z densities are rounded to integers at ``update()`` so z_hat stays an
integer (the input of the integer h_s).

Dimension legend: M merged features, E experts, D feature dim (d), Z = d/16 hyperprior dim.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ._compressai import EntropyBottleneck
from .fixed_point import FixedPointExpertMLP, round_half_up, round_ste
from .laplacian import LaplacianConditional, log_scale_table

__all__ = ["HyperpriorConfig", "HyperpriorExperts"]


@dataclass(frozen=True)
class HyperpriorConfig:
    """Architecture and quantisation of the (selective) hyperprior entropy model; stored with the weights.

    Attributes:
        d: feature dimension D (1152 for SigLIP-SO400M, 1024 for CLIP-L).
        n_e: number of experts E (paper default 16; 1 gives the plain hyperprior).
        z_dim: hyperprior width, default d // 16.
        ha_hidden: hidden widths of h_a, default (d // 4, d // 8).
        hs_hidden: hidden widths of h_s, default (d // 8, d // 4).
        router_hidden: hidden widths of the router, default () (one FC layer d -> E).
        y_step: quantisation step of the features: y = x / y_step is rounded (paper: 1.0).
        y_clip: |y| bound in steps (inputs are clamped; keeps the integer networks' accumulators < 2^53).
        z_clip: |z_hat| bound.
        w_frac_bits, a_frac_bits, act_clip: fixed-point format of the integer networks (see fixed_point.py).
        scale_min, scale_max, scale_levels: the log-spaced Laplace scale table (in units of y_step).
        tail_mass: probability mass outside each CDF table (escape coded).
    """

    d: int
    n_e: int = 16
    z_dim: int = 0
    ha_hidden: tuple[int, ...] = field(default=())
    hs_hidden: tuple[int, ...] = field(default=())
    router_hidden: tuple[int, ...] = ()
    y_step: float = 1.0
    y_clip: float = 2.0**12
    z_clip: float = 2.0**10
    w_frac_bits: int = 14
    a_frac_bits: int = 8
    act_clip: float = 2.0**14
    scale_min: float = 0.11
    scale_max: float = 64.0
    scale_levels: int = 64
    tail_mass: float = 1e-9

    def __post_init__(self) -> None:
        if not isinstance(self.d, int) or self.d < 16:
            raise ValueError(f"d must be an int >= 16, got {self.d!r}")
        if not isinstance(self.n_e, int) or not 1 <= self.n_e <= 256:
            raise ValueError(f"n_e must be an int in 1..256, got {self.n_e!r}")
        if self.z_dim == 0:
            object.__setattr__(self, "z_dim", self.d // 16)
        if self.ha_hidden == ():
            object.__setattr__(self, "ha_hidden", (self.d // 4, self.d // 8))
        if self.hs_hidden == ():
            object.__setattr__(self, "hs_hidden", (self.d // 8, self.d // 4))
        for name in ("ha_hidden", "hs_hidden", "router_hidden"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if not (self.y_step > 0 and math.isfinite(self.y_step)):
            raise ValueError(f"y_step must be positive and finite, got {self.y_step!r}")

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): part of the model fingerprint."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> HyperpriorConfig:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("config JSON must be an object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        for key in ("ha_hidden", "hs_hidden", "router_hidden"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


class HyperpriorExperts(nn.Module):
    """E hyperprior entropy models (h_a, h_s, z density) plus the shared Laplacian y tables.

    Args:
        cfg: the model configuration.
    """

    def __init__(self, cfg: HyperpriorConfig):
        super().__init__()
        self.cfg = cfg
        fp = dict(w_frac_bits=cfg.w_frac_bits, a_frac_bits=cfg.a_frac_bits, act_clip=cfg.act_clip)
        self.h_a = FixedPointExpertMLP(
            cfg.n_e, [cfg.d, *cfg.ha_hidden, cfg.z_dim], in_frac_bits=cfg.a_frac_bits, in_clip=cfg.y_clip, **fp
        )
        self.h_s = FixedPointExpertMLP(
            cfg.n_e, [cfg.z_dim, *cfg.hs_hidden, 2 * cfg.d], in_frac_bits=0, in_clip=cfg.z_clip, **fp
        )
        with torch.no_grad():  # start every scale in the middle of the table, not at scale_min (dead gradients)
            self.h_s.biases[-1][:, cfg.d :] = (cfg.scale_levels - 1) / 2
        self.entropy_bottleneck = EntropyBottleneck(cfg.n_e * cfg.z_dim)
        self.scale_table = log_scale_table(cfg.scale_min, cfg.scale_max, cfg.scale_levels)
        self.gaussian_conditional = LaplacianConditional(
            self.scale_table, scale_bound=cfg.scale_min, tail_mass=cfg.tail_mass
        )
        self._log_ratio = math.log(cfg.scale_max / cfg.scale_min) / (cfg.scale_levels - 1)

    # ------------------------------------------------------------------ training
    def z_likelihood(self, z_hat: Tensor) -> Tensor:
        """Tensor[M, E, Z] quantized z -> likelihoods of the factorized density, same shape."""
        m = z_hat.shape[0]
        values = z_hat.reshape(m, -1).t().unsqueeze(1)  # [E*Z, 1, M]: EntropyBottleneck's channel-first layout
        lik, _, _ = self.entropy_bottleneck._likelihood(values)
        lik = self.entropy_bottleneck.likelihood_lower_bound(lik)
        return lik.squeeze(1).t().reshape(z_hat.shape)

    def scales_from_index(self, u: Tensor) -> Tensor:
        """Real-valued table index u -> Laplace scale b = table[round(u)] (straight-through in training)."""
        u = round_ste(u.clamp(0.0, self.cfg.scale_levels - 1))
        return self.cfg.scale_min * torch.exp(u * self._log_ratio)

    def forward(self, y: Tensor) -> dict[str, Tensor]:
        """All experts on all features (training; TOFC eqs. 7-13).

        Args:
            y: Tensor[M, D] features in quantisation steps (x / y_step).

        Returns:
            dict with "y_hat" Tensor[M, E, D], "likelihoods": {"y": Tensor[M, E, D], "z": Tensor[M, E, Z]}.
        """
        cfg = self.cfg
        z = self.h_a(y)  # [M, E, Z]
        z_hat = round_ste(z).clamp(-cfg.z_clip, cfg.z_clip)
        params = self.h_s(z_hat)  # [M, E, 2D] (per-expert inputs)
        mu, u = params[..., : cfg.d], params[..., cfg.d :]
        y_hat = round_ste(y.unsqueeze(1) - mu) + mu
        scales = self.scales_from_index(u)
        lik_y = self.gaussian_conditional._likelihood(y_hat, scales, mu)
        lik_y = self.gaussian_conditional.likelihood_lower_bound(lik_y)
        return {"y_hat": y_hat, "likelihoods": {"y": lik_y, "z": self.z_likelihood(z_hat)}}

    # ------------------------------------------------------------------ exact inference
    @torch.no_grad()
    def update(self) -> None:
        """Freeze integer networks, round z medians to integers and build all CDF tables."""
        self.h_a.update()
        self.h_s.update()
        eb = self.entropy_bottleneck
        eb._update_quantiles()
        eb.quantiles.data[:, :, 1] = round_half_up(eb.quantiles.data[:, :, 1])
        eb.update(force=True)
        self.gaussian_conditional.update_scale_table(self.scale_table, force=True)

    def z_medians(self) -> Tensor:
        """Tensor[E*Z] float64, integer-valued medians of the z densities (after update())."""
        return self.entropy_bottleneck.quantiles.detach()[:, 0, 1].to(torch.float64)

    def z_table_indexes(self, experts: Tensor) -> Tensor:
        """LongTensor[M] experts -> LongTensor[M, Z] EntropyBottleneck channel per z element."""
        z = self.cfg.z_dim
        return experts.unsqueeze(1) * z + torch.arange(z, device=experts.device)

    def analysis_exact(self, y_int: Tensor, experts: Tensor) -> Tensor:
        """Encoder side: integer y (2^-a_frac_bits steps) -> z_hat Tensor[M, Z] integer-valued float64."""
        z = self.h_a.forward_exact(y_int, experts) * 2.0**-self.cfg.a_frac_bits
        return round_half_up(z).clamp(-self.cfg.z_clip, self.cfg.z_clip)

    def synthesis_exact(self, z_hat: Tensor, experts: Tensor) -> tuple[Tensor, Tensor]:
        """Both ends: z_hat -> (mu Tensor[M, D] float64 dyadic, scale index LongTensor[M, D]); bit-exact anywhere."""
        cfg = self.cfg
        params = self.h_s.forward_exact(z_hat, experts) * 2.0**-cfg.a_frac_bits
        mu, u = params[:, : cfg.d], params[:, cfg.d :]
        index = round_half_up(u).clamp(0, cfg.scale_levels - 1).to(torch.int64)
        return mu, index
