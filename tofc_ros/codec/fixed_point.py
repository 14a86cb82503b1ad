"""Expert-batched MLPs that train in floating point and run as exact fixed-point integer networks at inference.

Why: the decoder must pick exactly the same CDF table and mean as the encoder, on another CPU, thread count or a GPU.
Float32 ``Linear`` changes its low bits with the thread count, and one flipped scale index corrupts the rest of an
rANS stream (CompressAI issue #309). Following Balle et al. 2019 ("Integer networks for data compression with
latent-variable models"), every network the decoder (or the encoder's side information) depends on is evaluated on
integers:

    weights  W_int = round(W * 2^wb)                 (int32 buffers, |W_int| < 2^31)
    biases   b_int = round(b * 2^(wb + a_in))        (int64 buffers, at the scale of the accumulator)
    layer    acc   = x_int @ W_int^T + b_int         exact: integer-valued float64, every |partial sum| < 2^53
             x_out = clamp(round(act(acc) / 2^(wb + a_in - ab)), -clip, clip)   (power-of-two division: exact)

Integer sums below 2^53 are exact in float64 in any summation order, so the result is independent of BLAS blocking,
threads and device. :meth:`FixedPointExpertMLP.update` asserts that bound from the actual weight magnitudes and the
clamp on the inputs. Training uses the float network with straight-through fake quantisation of weights, biases and
activations, so training matches inference up to the rounding rule. Rounding is half-up (floor(x + 1/2))
everywhere, both in training and inference.

Dimension legend: M rows (merged features), E experts, I input and O output width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["FixedPointExpertMLP", "round_half_up", "round_ste"]


def round_half_up(x: Tensor) -> Tensor:
    """floor(x + 1/2): one deterministic rounding rule for encoder, decoder and training."""
    return torch.floor(x + 0.5)


def round_ste(x: Tensor) -> Tensor:
    """Straight-through rounding (TOFC eqs. 7-8): forward round_half_up(x), backward identity."""
    return x + (round_half_up(x) - x).detach()


def _fake_quant(x: Tensor, frac_bits: int) -> Tensor:
    scale = float(2**frac_bits)
    return round_ste(x * scale) / scale


class FixedPointExpertMLP(nn.Module):
    """E independent MLPs of identical widths, ReLU between layers, no activation after the last layer.

    Args:
        n_experts: number of experts E (1 for a plain network).
        sizes: widths [I, H1, ..., O].
        in_frac_bits: fractional bits of the integer input (input = x_int / 2^in_frac_bits).
        in_clip: |input| bound in real units; inputs are clamped to it (the 2^53 bound depends on it).
        w_frac_bits: fractional bits of the weights (wb).
        a_frac_bits: fractional bits of every layer output (ab).
        act_clip: |activation| and |output| bound in real units.
    """

    def __init__(
        self,
        n_experts: int,
        sizes: Sequence[int],
        *,
        in_frac_bits: int,
        in_clip: float,
        w_frac_bits: int = 14,
        a_frac_bits: int = 8,
        act_clip: float = 2.0**14,
    ):
        super().__init__()
        sizes = [int(s) for s in sizes]
        if n_experts < 1 or len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"need n_experts >= 1 and >= 2 positive sizes, got {n_experts}, {sizes}")
        self.n_experts, self.sizes = int(n_experts), sizes
        self.in_frac_bits, self.in_clip = int(in_frac_bits), float(in_clip)
        self.w_frac_bits, self.a_frac_bits, self.act_clip = int(w_frac_bits), int(a_frac_bits), float(act_clip)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default init, per expert
            self.weights.append(nn.Parameter(torch.empty(n_experts, fan_out, fan_in).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n_experts, fan_out).uniform_(-bound, bound)))
            # Filled by update(); empty until then (and resized on load).
            self.register_buffer(f"w_int{i}", torch.empty(0, dtype=torch.int32))
            self.register_buffer(f"b_int{i}", torch.empty(0, dtype=torch.int64))
        self._f64_cache: dict = {}

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def _in_bits(self, layer: int) -> int:
        return self.in_frac_bits if layer == 0 else self.a_frac_bits

    # ------------------------------------------------------------------ training (float, fake-quantised)
    def forward(self, x: Tensor, fake_quant: bool = True) -> Tensor:
        """All experts on all rows (training and analysis).

        Args:
            x: Tensor[M, I] real-valued input shared by all experts, or Tensor[M, E, I] one input per expert.
            fake_quant: apply straight-through fake quantisation (train as the integer network will run).

        Returns:
            Tensor[M, E, O].
        """
        h = x.clamp(-self.in_clip, self.in_clip)
        if fake_quant:
            h = _fake_quant(h, self.in_frac_bits)
        if h.dim() == 2:
            h = h.unsqueeze(1).expand(-1, self.n_experts, -1)
        for i in range(self.n_layers):
            w, b = self.weights[i], self.biases[i]
            if fake_quant:
                w = _fake_quant(w, self.w_frac_bits)
                b = _fake_quant(b, self.w_frac_bits + self._in_bits(i))
            h = torch.einsum("mei,eoi->meo", h, w) + b
            if i < self.n_layers - 1:
                h = torch.relu(h)
            h = h.clamp(-self.act_clip, self.act_clip)
            if fake_quant:
                h = _fake_quant(h, self.a_frac_bits)
        return h

    # ------------------------------------------------------------------ export
    @torch.no_grad()
    def update(self) -> None:
        """Freeze the float weights into integer buffers and check the exactness bound.

        Raises:
            ValueError: some accumulator could reach 2^53 (lower w_frac_bits/a_frac_bits or the clips).
        """
        for i in range(self.n_layers):
            w_int = round_half_up(self.weights[i].detach().double() * 2.0**self.w_frac_bits)
            b_int = round_half_up(self.biases[i].detach().double() * 2.0 ** (self.w_frac_bits + self._in_bits(i)))
            if w_int.abs().max() >= 2**31:
                raise ValueError(f"layer {i}: weights too large for int32 at w_frac_bits={self.w_frac_bits}")
            setattr(self, f"w_int{i}", w_int.to(torch.int32))
            setattr(self, f"b_int{i}", b_int.to(torch.int64))
        self.check_exact_bound()
        self._f64_cache = {}

    def is_updated(self) -> bool:
        return all(getattr(self, f"w_int{i}").numel() > 0 for i in range(self.n_layers))

    def check_exact_bound(self) -> None:
        """Assert every accumulator magnitude stays below 2^53 for any input within the clamps."""
        for i in range(self.n_layers):
            w_int, b_int = getattr(self, f"w_int{i}"), getattr(self, f"b_int{i}")
            expect = (self.n_experts, self.sizes[i + 1], self.sizes[i])
            if tuple(w_int.shape) != expect or tuple(b_int.shape) != expect[:2]:
                raise ValueError(
                    f"layer {i}: integer weights {tuple(w_int.shape)}/{tuple(b_int.shape)}, "
                    f"expected {expect}/{expect[:2]}"
                )
            clip = self.in_clip if i == 0 else self.act_clip
            max_in = clip * 2.0 ** self._in_bits(i)
            # Python ints: the bound itself must not be rounded.
            row_l1 = int(w_int.to(torch.int64).abs().sum(-1).max().item())
            bound = row_l1 * int(math.ceil(max_in)) + int(b_int.abs().max().item()) if b_int.numel() else 0
            if bound >= 2**53:
                raise ValueError(
                    f"layer {i}: accumulator bound {bound} >= 2^53; float64 integer arithmetic "
                    "would not be exact (lower w_frac_bits, a_frac_bits or the clips)"
                )

    # ------------------------------------------------------------------ exact inference
    def _f64(self, name: str, device: torch.device) -> Tensor:
        key = (name, str(device))
        if key not in self._f64_cache:
            self._f64_cache[key] = getattr(self, name).to(device=device, dtype=torch.float64)
        return self._f64_cache[key]

    def quantize_input(self, x: Tensor) -> Tensor:
        """Real input -> integer-valued float64 at 2^-in_frac_bits, clamped (exact elementwise)."""
        x = x.to(torch.float64).clamp(-self.in_clip, self.in_clip)
        return round_half_up(x * 2.0**self.in_frac_bits)

    @torch.no_grad()
    def forward_exact(self, x_int: Tensor, experts: Tensor) -> Tensor:
        """Integer inference, each row through its own expert.

        Args:
            x_int: Tensor[M, I] integer-valued float64 (see :meth:`quantize_input`).
            experts: LongTensor[M], expert per row.

        Returns:
            Tensor[M, O] integer-valued float64; the real output is this / 2^a_frac_bits.
        """
        if not self.is_updated():
            raise ValueError("Uninitialized integer weights. Run update() first")
        if x_int.dtype != torch.float64:
            raise TypeError(f"x_int must be float64, got {x_int.dtype}")
        out = torch.zeros(x_int.shape[0], self.sizes[-1], dtype=torch.float64, device=x_int.device)
        # Loop over the (few) experts actually used, never over rows.
        for e in torch.unique(experts).tolist():
            rows = (experts == e).nonzero().squeeze(1)
            h = x_int.index_select(0, rows)
            for i in range(self.n_layers):
                w = self._f64(f"w_int{i}", x_int.device)[e]
                b = self._f64(f"b_int{i}", x_int.device)[e]
                acc = torch.addmm(b, h, w.t())  # exact: integer-valued, |partial sums| < 2^53 (checked)
                if i < self.n_layers - 1:
                    acc = acc.clamp_min(0.0)
                shift = self.w_frac_bits + self._in_bits(i) - self.a_frac_bits
                lim = self.act_clip * 2.0**self.a_frac_bits
                h = round_half_up(acc * 2.0**-shift).clamp(-lim, lim)
            out.index_copy_(0, rows, h)
        return out

    def _apply(self, fn, *args, **kwargs):  # .to()/.double() etc. invalidate the float64 weight cache
        self._f64_cache = {}
        return super()._apply(fn, *args, **kwargs)
