"""Selective entropy model: a router picks one of n_e hyperprior entropy models per merged feature.

Yuan et al., TOFC, sec. IV-C::

                    +--> router (FC) --> logits[M, E] --train: softmax(logits / T) = w[M, E]   (eq. 15)
                    |                                  \\-infer: one_hot(argmax)              (eq. 19)
    x[T, C, D] --> y[M, D] --> E hyperprior experts --> y_hat_e[M, E, D], R_e[M, E] bits
                                                          |
            x_hat = step * sum_e w_e y_hat_e  (eq. 16),   R = sum_e w_e R_e  (eq. 17),   L_bal (eq. 18)

Balance loss (eq. 18), as implemented: L_bal = E * sum_e (P_e - 1/E)^2, with P_e the mean softmax probability of
expert e over the batch; it is 0 for uniform usage and at most E - 1 when one expert takes everything. (The
squared-deviation form is differentiable everywhere, unlike the switch-transformer f_i * P_i product.)

At inference the router, h_a and h_s are exact integer networks, so the chosen experts, the symbols and the decoded
tensor are bit-identical on every machine. The expert indices travel as side information with a fixed length of
ceil(log2 E) bits per merged feature (0 bits for E = 1); they are counted in the rate.

CompressAI contract: ``forward`` returns ``{"x_hat", "likelihoods", ...}``; ``update()`` must run before
``compress``/``decompress`` (else ``ValueError("Uninitialized CDFs. Run update() first")``); ``compress`` returns
``{"strings", "experts", "shape"}`` and ``decompress(strings, experts, shape)`` returns ``{"x_hat"}``.

Dimension legend: T tiles, C merged features per tile, M = T*C, D feature dim, E experts, Z = D/16.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .entropy_coding import TableCoder
from .fingerprint import model_fingerprint
from .fixed_point import FixedPointExpertMLP, round_half_up
from .hyperprior import HyperpriorConfig, HyperpriorExperts

__all__ = ["SelectiveEntropyModel"]


class SelectiveEntropyModel(nn.Module):
    """Router + n_e hyperprior entropy models over merged features [T, C, D].

    Args:
        cfg: a :class:`HyperpriorConfig`.
    """

    def __init__(self, cfg: HyperpriorConfig):
        super().__init__()
        if not isinstance(cfg, HyperpriorConfig):
            raise TypeError(f"cfg must be a HyperpriorConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.router = FixedPointExpertMLP(
            1,
            [cfg.d, *cfg.router_hidden, cfg.n_e],
            in_frac_bits=cfg.a_frac_bits,
            in_clip=cfg.y_clip,
            w_frac_bits=cfg.w_frac_bits,
            a_frac_bits=cfg.a_frac_bits,
            act_clip=cfg.act_clip,
        )
        self.experts = HyperpriorExperts(cfg)
        self._coders: tuple[TableCoder, TableCoder] | None = None
        self.fingerprint_bytes: bytes | None = None  # set by update() / weights.load_model()

    @property
    def index_bits(self) -> int:
        """Bits of side information per merged feature (fixed-length expert index)."""
        return math.ceil(math.log2(self.cfg.n_e)) if self.cfg.n_e > 1 else 0

    # ------------------------------------------------------------------ training
    def _features(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"features must be a floating-point Tensor[..., {self.cfg.d}]")
        if x.dim() < 1 or x.shape[-1] != self.cfg.d:
            raise ValueError(f"features must have shape [..., {self.cfg.d}], got {tuple(x.shape)}")
        return x.reshape(-1, self.cfg.d)

    def forward(self, x: Tensor, temperature: float = 1.0) -> dict:
        """Training/analysis pass (TOFC eqs. 13, 15-19).

        Args:
            x: Tensor[..., D] merged features.
            temperature: softmax temperature T of the router in training mode.

        Returns:
            dict with
              "x_hat": Tensor[..., D] weighted decode (eq. 16; argmax expert in eval mode),
              "likelihoods": {"y": Tensor[M, E, D], "z": Tensor[M, E, Z]} of every expert,
              "weights": Tensor[M, E] routing weights (softmax, or one-hot in eval mode),
              "bits": Tensor[M] weighted rate per merged feature in bits (eqs. 13, 17; without index bits),
              "balance_loss": scalar (eq. 18), "router_logits": Tensor[M, E].
        """
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        shape = x.shape
        y = self._features(x) / self.cfg.y_step
        logits = self.router(y)[:, 0, :]  # [M, E]
        probs = F.softmax(logits / temperature, dim=-1)
        if self.training:
            weights = probs
        else:
            weights = F.one_hot(logits.argmax(-1), self.cfg.n_e).to(y.dtype)
        out = self.experts(y)
        lik = out["likelihoods"]
        bits_e = -torch.log2(lik["y"]).sum(-1) - torch.log2(lik["z"]).sum(-1)  # [M, E]
        x_hat = (weights.unsqueeze(-1) * out["y_hat"]).sum(1) * self.cfg.y_step
        usage = probs.mean(0)
        balance = self.cfg.n_e * ((usage - 1.0 / self.cfg.n_e) ** 2).sum()
        return {
            "x_hat": x_hat.reshape(shape),
            "likelihoods": lik,
            "weights": weights,
            "bits": (weights * bits_e).sum(-1),
            "balance_loss": balance,
            "router_logits": logits,
        }

    def aux_loss(self) -> Tensor:
        """Quantile loss of the z densities (optimise with a separate optimizer, as in CompressAI)."""
        return self.experts.entropy_bottleneck.loss()

    # ------------------------------------------------------------------ export
    def update(self) -> None:
        """Freeze the integer networks, build the CDF tables and compute the fingerprint. Call before compress()."""
        self.experts.update()
        self.router.update()
        self._coders = None
        self.fingerprint_bytes = model_fingerprint(self)

    def _require_updated(self) -> tuple[TableCoder, TableCoder]:
        eb, gc = self.experts.entropy_bottleneck, self.experts.gaussian_conditional
        nets = (self.router, self.experts.h_a, self.experts.h_s)
        if eb._quantized_cdf.numel() == 0 or gc._quantized_cdf.numel() == 0 or not all(n.is_updated() for n in nets):
            raise ValueError("Uninitialized CDFs. Run update() first")
        if self._coders is None:
            self._coders = (TableCoder(eb), TableCoder(gc))
        return self._coders

    # ------------------------------------------------------------------ exact inference
    def _route_exact(self, y_int: Tensor) -> Tensor:
        logits = self.router.forward_exact(y_int, torch.zeros(y_int.shape[0], dtype=torch.long, device=y_int.device))
        return logits.argmax(-1)  # first maximum on ties: deterministic

    def _symbols(self, x: Tensor) -> dict[str, Tensor]:
        """Encoder: Tensor[M, D] -> experts, z_hat, z table indexes, y symbols, scale indexes (all exact)."""
        cfg = self.cfg
        y = (x.to(torch.float64) / cfg.y_step).clamp(-cfg.y_clip, cfg.y_clip)
        y_int = self.router.quantize_input(y)
        experts = self._route_exact(y_int)
        z_hat = self.experts.analysis_exact(y_int, experts)
        mu, scale_index = self.experts.synthesis_exact(z_hat, experts)
        y_sym = round_half_up(y - mu)
        return {"experts": experts, "z_hat": z_hat, "mu": mu, "scale_index": scale_index, "y_sym": y_sym}

    def _check_input(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(
                f"features must be a floating-point Tensor[T, C, {self.cfg.d}], got {type(x).__name__}"
                + (f" {x.dtype}" if isinstance(x, Tensor) else "")
            )
        if x.dim() != 3 or x.shape[-1] != self.cfg.d:
            raise ValueError(f"features must have shape [T, C, {self.cfg.d}], got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"features of shape {tuple(x.shape)} contain NaN or Inf")
        return x.detach().reshape(-1, self.cfg.d)

    @torch.no_grad()
    def compress(self, x: Tensor) -> dict:
        """Encode merged features with one rANS call for z and one for y.

        Args:
            x: Tensor[T, C, D] float merged features.

        Returns:
            {"strings": [z_string, y_string], "experts": LongTensor[T*C], "shape": (T, C, D)}.
        """
        z_coder, y_coder = self._require_updated()
        flat = self._check_input(x)
        s = self._symbols(flat)
        medians = self.experts.z_medians().to(flat.device)
        z_idx = self.experts.z_table_indexes(s["experts"])
        z_sym = s["z_hat"] - medians[z_idx]
        strings = [
            z_coder.encode(z_sym.to(torch.int64).cpu(), z_idx.cpu()),
            y_coder.encode(s["y_sym"].to(torch.int64).cpu(), s["scale_index"].cpu()),
        ]
        return {"strings": strings, "experts": s["experts"].cpu(), "shape": tuple(x.shape)}

    @torch.no_grad()
    def decompress(
        self, strings: Sequence[bytes], experts: Tensor, shape: Sequence[int], device: torch.device | str = "cpu"
    ) -> dict:
        """Decode what :meth:`compress` produced; bit-exact on any machine, thread count or device.

        Args:
            strings: [z_string, y_string].
            experts: LongTensor[T*C] expert per merged feature.
            shape: (T, C, D).
            device: where the integer networks run (any device gives the same result).

        Returns:
            {"x_hat": Tensor[T, C, D] float32}.
        """
        z_coder, y_coder = self._require_updated()
        t, c, d = (int(v) for v in shape)
        if d != self.cfg.d:
            raise ValueError(f"shape {tuple(shape)} does not match model feature dim {self.cfg.d}")
        if len(strings) != 2:
            raise ValueError(f"expected 2 strings (z, y), got {len(strings)}")
        experts = experts.to(torch.int64).reshape(-1)
        if experts.numel() != t * c:
            raise ValueError(f"{experts.numel()} expert indices for shape {tuple(shape)}")
        if experts.numel() and (int(experts.min()) < 0 or int(experts.max()) >= self.cfg.n_e):
            raise ValueError(f"expert index out of range 0..{self.cfg.n_e - 1}")
        z_idx = self.experts.z_table_indexes(experts)
        z_sym = z_coder.decode(strings[0], z_idx)
        z_hat = z_sym.to(torch.float64) + self.experts.z_medians()[z_idx]
        # The encoder clamps z_hat and y, so valid streams stay within these bounds; anything else is a forged or
        # garbled string (the CRC already rules out accidental corruption).
        if z_hat.numel() and float(z_hat.abs().max()) > self.cfg.z_clip:
            raise ValueError(f"decoded z outside +-{self.cfg.z_clip}: corrupt z string")
        mu, scale_index = self.experts.synthesis_exact(z_hat.to(device), experts.to(device))
        y_sym = y_coder.decode(strings[1], scale_index.cpu()).to(device=device, dtype=torch.float64)
        y_limit = self.cfg.y_clip + self.cfg.act_clip + 1  # |round(y - mu)| for |y| <= y_clip, |mu| <= act_clip
        if y_sym.numel() and float(y_sym.abs().max()) > y_limit:
            raise ValueError(f"decoded y symbol outside +-{y_limit}: corrupt y string")
        x_hat = ((y_sym + mu) * self.cfg.y_step).to(torch.float32)
        return {"x_hat": x_hat.reshape(t, c, d).cpu()}

    @torch.no_grad()
    def estimate_bits(self, x: Tensor) -> dict[str, float]:
        """The model's own entropy estimate of exactly what :meth:`compress` codes (same symbols and tables).

        Returns:
            {"z": bits, "y": bits, "index": bits of side information, "total": sum}.
        """
        self._require_updated()
        flat = self._check_input(x)
        s = self._symbols(flat)
        exp = self.experts
        # z: every element under its own expert's factorized density. z_likelihood evaluates all experts'
        # densities on a [M, E, Z] tensor; the chosen expert's slot is gathered (E x the work, which is tiny).
        m, e = s["z_hat"].shape[0], self.cfg.n_e
        z_all = s["z_hat"].to(torch.float32).unsqueeze(1).expand(m, e, self.cfg.z_dim)
        z_lik = exp.z_likelihood(z_all)[torch.arange(m), s["experts"]] if m else torch.ones(0)
        # y: Laplace(mu, table[scale_index]) convolved with U(-1/2, 1/2), in float64.
        table = torch.tensor(exp.scale_table, dtype=torch.float64)
        y_hat = s["y_sym"] + s["mu"]
        gc = exp.gaussian_conditional
        y_lik = gc.likelihood_lower_bound(gc._likelihood(y_hat, table[s["scale_index"]], s["mu"]))
        z_bits = float(-torch.log2(z_lik.double()).sum())
        y_bits = float(-torch.log2(y_lik).sum())
        index = float(self.index_bits * flat.shape[0])
        return {"z": z_bits, "y": y_bits, "index": index, "total": z_bits + y_bits + index}
