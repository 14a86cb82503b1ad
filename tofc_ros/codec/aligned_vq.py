"""AlignedVQ ("alignedvq/1"): grouped residual vector quantisation at a split inside the vision tower.

Liu et al., LLaVA-AlignedVQ (arXiv 2411.05961): cut the vision encoder after block X where the activation is
normalised (LayerNorm outputs vary far less than attention or MLP outputs, so they quantise well), send only codebook
indices, and let the cloud run the remaining blocks. Here::

    h [T, N, d]  the residual stream after block X (every token; vision_split)
      │ per token: μ = mean(h), σ = std(h), z = (h − μ) / σ     block X+1's LayerNorm before its affine: the
      │                                                           normalised activation the paper quantises
      │ z as G groups of d/G; per group R residual stages, each the nearest of K codewords (greedy)
      ▼
    indices [T·N, G, R]  + per token the levels of μ and σ (``stats: scalar``; ``none`` sends no statistics and the
      │                    server uses the training set's typical μ and σ, as the paper sends indices only)
      │ rANS against static empirical priors: one integer CDF table per (group, stage) and per statistic
      ▼
    sections [statistics string, index string]      (in the shared container: fingerprints, split layer, CRC32)

    decode: ẑ = Σ_r C[g, r, i_gr];  ĥ = σ̂·ẑ + μ̂

Why the statistics travel: block X+1 adds its attention output to h itself (the residual), not to z, so the server
needs each token's scale and offset back; at full width (SigLIP 1152, CLIP 1024) they are a small part of the bits.

Exactness: decoding is table lookups, additions of R codewords in a fixed order, one multiply and one add per value
(never fused), all in float32 - bit-exact on any machine. Encoding picks nearest codewords in float64, so only
near-ties could pick differently on another machine; a decoder never depends on that.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .base import Codec, register_codec
from .baselines import check_features
from .bitstream import CodecMismatchError, FrameHeader, LimitError, MalformedPayloadError
from .entropy_coding import TableCoder
from .fingerprint import canonical_tensors, tensors_fingerprint

__all__ = ["AlignedVQConfig", "AlignedVQ", "AlignedVQCodec", "save_aligned_vq", "load_aligned_vq", "FORMAT"]

FORMAT = "alignedvq/1"
STATS = ("scalar", "none")
_PRECISION = 16  # rANS CDF precision (CompressAI's default)
_TAIL = 1.0 / (1 << 15)  # probability left to the escape symbol of every table (never used by a valid encoder)


@dataclass(frozen=True)
class AlignedVQConfig:
    """Shape of an AlignedVQ codec.

    Attributes:
        d: feature width at the split (the vision tower's hidden size).
        split_layer: encoder layers the device runs (X); payloads cut elsewhere are refused.
        groups: G, groups per feature (d divisible by G).
        stages: R, residual codebooks per group.
        codebook_size: K, codewords per codebook (2 ≤ K ≤ 65536).
        stats: "scalar" (per-token μ and σ levels are sent) or "none" (indices only).
        stat_levels: L, levels of each statistic (uniform in μ, uniform in log σ).
        eps: added to the variance (the tower's LayerNorm eps is of this order).
        n_clusters: tokens per tile the device keeps by DPC-KNN before quantising (0: every token, as the paper);
            the server's remaining layers then run on the merged tokens. The codec was trained with it, so the
            device takes it from here.
    """

    d: int
    split_layer: int
    groups: int = 4
    stages: int = 2
    codebook_size: int = 256
    stats: str = "scalar"
    stat_levels: int = 64
    eps: float = 1e-6
    n_clusters: int = 0

    def __post_init__(self):
        if self.d < 1 or self.groups < 1 or self.d % self.groups:
            raise ValueError(f"d={self.d} must be a positive multiple of groups={self.groups}")
        if not 1 <= self.stages <= 16:
            raise ValueError(f"stages must be in 1..16, got {self.stages}")
        if not 2 <= self.codebook_size <= 65536:
            raise ValueError(f"codebook_size must be in 2..65536, got {self.codebook_size}")
        if self.stats not in STATS:
            raise ValueError(f"stats must be one of {STATS}, got {self.stats!r}")
        if not 2 <= self.stat_levels <= 4096:
            raise ValueError(f"stat_levels must be in 2..4096, got {self.stat_levels}")
        if self.split_layer < 0:
            raise ValueError(f"split_layer must be ≥ 0, got {self.split_layer}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if self.n_clusters < 0:
            raise ValueError(f"n_clusters must be ≥ 0, got {self.n_clusters}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AlignedVQConfig:
        data = json.loads(text)
        if not isinstance(data, dict) or set(data) - set(cls.__dataclass_fields__):
            raise ValueError(f"not an AlignedVQ config: {text[:200]!r}")
        return cls(**data)

    @property
    def group_dim(self) -> int:
        return self.d // self.groups

    def bits_per_token_raw(self) -> float:
        """Bits per token before entropy coding (indices, plus the two statistics)."""
        stats = 2 * np.log2(self.stat_levels) if self.stats == "scalar" else 0.0
        return float(self.groups * self.stages * np.log2(self.codebook_size) + stats)


def _uniform_cdf(n: int) -> list[int]:
    return _quantized_cdf(np.ones(n))


def _quantized_cdf(counts: np.ndarray) -> list[int]:
    """CompressAI's integer CDF (precision 16) of a pmf proportional to ``counts``, with an escape tail."""
    import importlib

    from ._compressai import ans  # noqa: F401  (installs the compressai package stand-in first)

    cxx = importlib.import_module("compressai._CXX")
    pmf = np.asarray(counts, dtype=np.float64)
    pmf = pmf / pmf.sum() * (1.0 - _TAIL)
    return cxx.pmf_to_quantized_cdf([*pmf.tolist(), _TAIL], _PRECISION)


class AlignedVQ(nn.Module):
    """The quantiser, its statistics levels and its priors (trainable codebooks; everything else buffers).

    Training: ``forward`` (straight-through estimator, codebook and commitment terms); ``init_from`` (k-means on
    real features); ``fit_priors`` (the empirical index and level frequencies) before saving.
    """

    def __init__(self, cfg: AlignedVQConfig) -> None:
        super().__init__()
        self.cfg = cfg
        g, r, k, dg, lv = cfg.groups, cfg.stages, cfg.codebook_size, cfg.group_dim, cfg.stat_levels
        self.codebooks = nn.Parameter(torch.zeros(g, r, k, dg))
        n_levels = lv if cfg.stats == "scalar" else 1
        # Reconstruction values of μ and σ (σ levels spaced uniformly in log σ). Encoding picks the nearest level.
        self.register_buffer("mean_levels", torch.zeros(n_levels))
        self.register_buffer("std_levels", torch.ones(n_levels))
        self.register_buffer("index_cdf", torch.tensor([_uniform_cdf(k)] * (g * r), dtype=torch.int32))
        self.register_buffer("stat_cdf", torch.tensor([_uniform_cdf(n_levels)] * 2, dtype=torch.int32))
        self.fingerprint_bytes: bytes | None = None

    # ------------------------------------------------------------------------------------------- the maths
    def normalise(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """h [..., d] → (z [..., d], μ [...], σ [...]): LayerNorm without its affine."""
        mean = h.mean(-1)
        std = torch.sqrt(h.var(-1, unbiased=False) + self.cfg.eps)
        return (h - mean[..., None]) / std[..., None], mean, std

    def stat_levels(self, mean: Tensor, std: Tensor) -> tuple[Tensor, Tensor]:
        """Nearest levels of μ (linear) and σ (log), int64; zeros when no statistics are sent."""
        if self.cfg.stats == "none":
            zeros = torch.zeros(mean.shape, dtype=torch.int64, device=mean.device)
            return zeros, zeros
        return _nearest_level(mean, self.mean_levels), _nearest_level(torch.log(std), torch.log(self.std_levels))

    def assign(self, z: Tensor, dtype=torch.float64) -> Tensor:
        """Greedy residual assignment: z [M, d] → indices [M, G, R] (distances in ``dtype``)."""
        cfg = self.cfg
        res = z.reshape(-1, cfg.groups, cfg.group_dim).to(dtype)
        books = self.codebooks.detach().to(dtype)
        out = []
        for r in range(cfg.stages):
            c = books[:, r]  # [G, K, dg]
            # |res - c|² = |res|² - 2 res·c + |c|² ; |res|² does not change the argmin
            dist = (c * c).sum(-1)[None] - 2.0 * torch.einsum("mgd,gkd->mgk", res, c)
            idx = dist.argmin(-1)  # [M, G]; ties go to the lowest index
            res = res - _gather(c, idx)
            out.append(idx)
        return torch.stack(out, -1)

    def reconstruct(self, idx: Tensor) -> Tensor:
        """indices [M, G, R] → ẑ [M, d]: the codewords of each group's stages added in stage order."""
        cfg = self.cfg
        books = self.codebooks.detach().float()
        z = _gather(books[:, 0], idx[..., 0])
        for r in range(1, cfg.stages):
            z = z + _gather(books[:, r], idx[..., r])
        return z.reshape(-1, cfg.d)

    def denormalise(self, z_hat: Tensor, q_mean: Tensor, q_std: Tensor) -> Tensor:
        """ĥ = σ̂·ẑ + μ̂ as two separate float32 operations (a fused multiply-add would differ between CPUs)."""
        scaled = torch.mul(z_hat, self.std_levels[q_std][:, None])
        return torch.add(scaled, self.mean_levels[q_mean][:, None])

    def forward(self, h: Tensor, beta: float = 0.25) -> dict:
        """Training pass on h [M, d]: ĥ with straight-through gradients to h, and the VQ losses.

        Returns: ``h_hat`` [M, d], ``codebook_loss`` (moves codewords to the residuals), ``commit_loss`` (β·keeps
        the features near their codewords), ``indices`` [M, G, R].
        """
        cfg = self.cfg
        z, mean, std = self.normalise(h)
        idx = self.assign(z.detach(), dtype=torch.float32)
        res = z.reshape(-1, cfg.groups, cfg.group_dim)
        book_loss = commit = z.new_zeros(())
        quantised = torch.zeros_like(res)
        for r in range(cfg.stages):
            e = _gather(self.codebooks[:, r], idx[..., r])
            book_loss = book_loss + ((res.detach() - e) ** 2).mean()
            commit = commit + ((res - e.detach()) ** 2).mean()
            quantised = quantised + e
            res = res - e.detach()
        z_flat = z.reshape(-1, cfg.d)
        z_hat = z_flat + (quantised.reshape(-1, cfg.d) - z_flat).detach()  # straight-through
        q_mean, q_std = self.stat_levels(mean.detach(), std.detach())
        mean_hat = mean + (self.mean_levels[q_mean] - mean).detach()
        std_hat = std + (self.std_levels[q_std] - std).detach()
        h_hat = z_hat * std_hat[:, None] + mean_hat[:, None]
        return {"h_hat": h_hat, "codebook_loss": book_loss, "commit_loss": beta * commit, "indices": idx}

    # ------------------------------------------------------------------------------------- fitting to data
    @torch.no_grad()
    def init_from(self, h: Tensor, iters: int = 10, seed: int = 0) -> None:
        """k-means initialisation from real features h [M, d]: the statistics levels from their quantiles, then each
        stage's codebooks by Lloyd's algorithm on the previous stages' residuals. Initial centres are drawn with
        numpy's PCG64 (``seed``), so the draw is the same everywhere."""
        cfg = self.cfg
        h = h.detach().float().reshape(-1, cfg.d)
        z, mean, std = self.normalise(h)
        self.set_stat_levels(mean, std)
        rng = np.random.Generator(np.random.PCG64(seed))
        res = z.reshape(-1, cfg.groups, cfg.group_dim).clone()
        for r in range(cfg.stages):
            for g in range(cfg.groups):
                self.codebooks.data[g, r] = _kmeans(res[:, g], cfg.codebook_size, iters, rng)
            res = res - _gather(self.codebooks.data[:, r], self.assign(res.reshape(-1, cfg.d), torch.float32)[..., r])

    @torch.no_grad()
    def set_stat_levels(self, mean: Tensor, std: Tensor) -> None:
        """Levels spanning the 0.1-99.9 % quantiles of μ and log σ (or their medians, for ``stats: none``)."""
        mean, log_std = mean.float().reshape(-1), torch.log(std.float().reshape(-1))
        n = self.mean_levels.numel()
        if n == 1:
            self.mean_levels.copy_(mean.median().reshape(1))
            self.std_levels.copy_(torch.exp(log_std.median()).reshape(1))
            return
        q = torch.tensor([0.001, 0.999])
        lo, hi = torch.quantile(mean, q)
        self.mean_levels.copy_(torch.linspace(float(lo), float(hi), n))
        lo, hi = torch.quantile(log_std, q)
        self.std_levels.copy_(torch.exp(torch.linspace(float(lo), float(hi), n)))

    @torch.no_grad()
    def fit_priors(self, h: Tensor) -> dict:
        """Set the entropy coder's tables to the index and level frequencies of real features h [M, d] (plus one
        count each, so every symbol stays codable), and the fingerprint. Returns the ideal bits per token."""
        cfg = self.cfg
        h = h.detach().float().reshape(-1, cfg.d)
        z, mean, std = self.normalise(h)
        idx = self.assign(z).reshape(-1, cfg.groups * cfg.stages)
        k = cfg.codebook_size
        counts = np.stack([np.bincount(idx[:, j].numpy(), minlength=k) for j in range(idx.shape[1])]) + 1
        self.index_cdf.copy_(torch.tensor([_quantized_cdf(c) for c in counts], dtype=torch.int32))
        q_mean, q_std = self.stat_levels(mean, std)
        n = self.mean_levels.numel()
        stat_counts = [np.bincount(q.numpy(), minlength=n) + 1 for q in (q_mean, q_std)]
        self.stat_cdf.copy_(torch.tensor([_quantized_cdf(c) for c in stat_counts], dtype=torch.int32))
        self.refresh_fingerprint()
        p = counts / counts.sum(1, keepdims=True)
        index_bits = float(-(np.log2(p) * p).sum())  # ideal bits per token, all groups and stages
        stat_bits = 0.0
        if cfg.stats == "scalar":
            for c in stat_counts:
                ps = c / c.sum()
                stat_bits += float(-(np.log2(ps) * ps).sum())
        return {"index_bits": index_bits, "stat_bits": stat_bits, "used_codewords": int((counts > 1).sum())}

    def refresh_fingerprint(self) -> bytes:
        self.fingerprint_bytes = tensors_fingerprint(self.cfg.to_json(), canonical_tensors(self), format=FORMAT)
        return self.fingerprint_bytes

    # --------------------------------------------------------------------------------------- entropy coding
    def _coders(self) -> tuple[TableCoder, TableCoder]:
        n = self.mean_levels.numel()
        k = self.cfg.codebook_size
        stat = TableCoder.from_tables(self.stat_cdf.tolist(), [n + 2] * 2, [0, 0])
        index = TableCoder.from_tables(
            self.index_cdf.tolist(), [k + 2] * self.index_cdf.shape[0], [0] * len(self.index_cdf)
        )
        return stat, index

    @torch.no_grad()
    def compress(self, h: Tensor) -> list[bytes]:
        """h [M, d] → [statistics string, index string]."""
        cfg = self.cfg
        z, mean, std = self.normalise(h.float())
        idx = self.assign(z).reshape(-1, cfg.groups * cfg.stages)
        stat_coder, index_coder = self._coders()
        tables = torch.arange(cfg.groups * cfg.stages).expand_as(idx)
        stats = b""
        if cfg.stats == "scalar":
            q = torch.stack(self.stat_levels(mean, std), -1)  # [M, 2]
            stats = stat_coder.encode(q, torch.arange(2).expand_as(q))
        return [stats, index_coder.encode(idx, tables)]

    @torch.no_grad()
    def decompress(self, strings, m: int) -> Tensor:
        """[statistics string, index string] of ``m`` tokens → ĥ [m, d] float32 (raises MalformedPayloadError)."""
        cfg = self.cfg
        stats, index = strings
        stat_coder, index_coder = self._coders()
        gr = cfg.groups * cfg.stages
        idx = index_coder.decode(index, torch.arange(gr).expand(m, gr))
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= cfg.codebook_size):
            raise MalformedPayloadError(f"codebook index outside 0..{cfg.codebook_size - 1} (a forged string)")
        if cfg.stats == "scalar":
            q = stat_coder.decode(stats, torch.arange(2).expand(m, 2))
            n = self.mean_levels.numel()
            if q.numel() and (int(q.min()) < 0 or int(q.max()) >= n):
                raise MalformedPayloadError(f"statistics level outside 0..{n - 1} (a forged string)")
            q_mean, q_std = q[:, 0], q[:, 1]
        else:
            if stats:
                raise MalformedPayloadError("statistics section must be empty for stats: none")
            q_mean = q_std = torch.zeros(m, dtype=torch.int64)
        z_hat = self.reconstruct(idx.reshape(m, cfg.groups, cfg.stages))
        return self.denormalise(z_hat, q_mean, q_std)


def _nearest_level(values: Tensor, levels: Tensor) -> Tensor:
    """Index of the nearest of sorted ``levels`` (midpoint rule; values outside clamp to the ends)."""
    if levels.numel() == 1:
        return torch.zeros(values.shape, dtype=torch.int64, device=values.device)
    mids = (levels[1:] + levels[:-1]) / 2
    return torch.bucketize(values.float(), mids.float())


def _gather(books: Tensor, idx: Tensor) -> Tensor:
    """books [G, K, dg], idx [M, G] → [M, G, dg]: each group's chosen codeword."""
    g = torch.arange(books.shape[0], device=idx.device)
    return books[g[None, :], idx]


def _kmeans(x: Tensor, k: int, iters: int, rng: np.random.Generator) -> Tensor:
    """Lloyd's k-means on x [M, dg] (float32): centres seeded from distinct samples drawn with ``rng``; an empty
    cluster keeps its centre."""
    m = x.shape[0]
    pick = rng.choice(m, size=k, replace=m < k)
    centres = x[torch.from_numpy(pick)].clone()
    for _ in range(iters):
        dist = (centres * centres).sum(-1)[None] - 2.0 * x @ centres.T
        assign = dist.argmin(-1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres


# --------------------------------------------------------------------------------------------------- weights
def aligned_vq_to_bytes(model: AlignedVQ) -> bytes:
    """Safetensors bytes: every buffer and codebook, metadata {format, config, fingerprint}."""
    from safetensors.torch import save

    tensors = canonical_tensors(model)
    fp = tensors_fingerprint(model.cfg.to_json(), tensors, format=FORMAT)
    return save(tensors, metadata={"format": FORMAT, "config": model.cfg.to_json(), "fingerprint": fp.hex()})


def save_aligned_vq(model: AlignedVQ, path: str | os.PathLike) -> bytes:
    """Write ``model`` (atomic rename). Returns its fingerprint."""
    data = aligned_vq_to_bytes(model)
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return model.refresh_fingerprint()


def aligned_vq_from_bytes(data: bytes) -> AlignedVQ:
    """Load a file written by :func:`save_aligned_vq` (no pickle; the header is bounded before parsing).

    Raises:
        ValueError: not an alignedvq/1 file, missing/unknown tensors, wrong shapes or dtypes, unsorted levels, CDF
            tables that are not valid, or a stored fingerprint that does not match the content.
    """
    from safetensors.torch import load

    from .weights import safetensors_metadata

    meta = safetensors_metadata(data, "an AlignedVQ codec")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "config" not in meta:
        raise ValueError(f"safetensors metadata must have format={FORMAT!r} and a config, got {meta!r}")
    cfg = AlignedVQConfig.from_json(meta["config"])
    tensors = load(data)
    model = AlignedVQ(cfg)
    own = model.state_dict()
    if set(own) != set(tensors):
        raise ValueError(f"tensors {sorted(tensors)} do not match an AlignedVQ codec's {sorted(own)}")
    for name, value in tensors.items():
        if value.shape != own[name].shape or value.dtype != own[name].dtype:
            raise ValueError(
                f"tensor {name}: {value.dtype} {tuple(value.shape)}, expected {own[name].dtype} "
                f"{tuple(own[name].shape)}"
            )
    model.load_state_dict(tensors, strict=True)
    _check_tables(model)
    model.refresh_fingerprint()
    stored = meta.get("fingerprint")
    if stored != model.fingerprint_bytes.hex():
        raise ValueError(f"stored fingerprint {stored} does not match the content {model.fingerprint_bytes.hex()}")
    return model.eval()


def _check_tables(model: AlignedVQ) -> None:
    if not torch.isfinite(model.codebooks).all():
        raise ValueError("codebooks hold NaN or Inf")
    for name in ("mean_levels", "std_levels"):
        levels = getattr(model, name)
        if not torch.isfinite(levels).all() or (levels.numel() > 1 and not bool((levels[1:] > levels[:-1]).all())):
            raise ValueError(f"{name} must be finite and strictly increasing")
    if not bool((model.std_levels > 0).all()):
        raise ValueError("std_levels must be positive")
    for name in ("index_cdf", "stat_cdf"):
        cdf = getattr(model, name)
        if not bool(
            (cdf[:, 0] == 0).all() and (cdf[:, -1] == 1 << _PRECISION).all() and (cdf[:, 1:] > cdf[:, :-1]).all()
        ):
            raise ValueError(f"{name} rows must rise strictly from 0 to 2^{_PRECISION}")


def load_aligned_vq(path: str | os.PathLike) -> AlignedVQ:
    with open(path, "rb") as f:
        return aligned_vq_from_bytes(f.read())


# ----------------------------------------------------------------------------------------------------- codec
@register_codec
class AlignedVQCodec(Codec):
    """The AlignedVQ codec around a fitted :class:`AlignedVQ`.

    Args:
        model: a fitted model, or
        path: a ``.safetensors`` file written by :func:`save_aligned_vq`.
        device: accepted for symmetry with the TOFC codec (decoding runs on the CPU: it is lookups and adds).
    """

    format = FORMAT
    n_sections = 2

    def __init__(self, model: AlignedVQ | None = None, path: str | os.PathLike | None = None, device="cpu"):
        if (model is None) == (path is None):
            raise ValueError("AlignedVQCodec needs exactly one of model= or path= (a .safetensors file)")
        if path is not None:
            model = load_aligned_vq(path)
        if not isinstance(model, AlignedVQ):
            raise TypeError(f"model must be an AlignedVQ, got {type(model).__name__}")
        self.model = model.eval()
        self.model.refresh_fingerprint()
        self.device = device

    @property
    def fingerprint(self) -> bytes:
        return self.model.fingerprint_bytes

    @property
    def split_layer(self) -> int:
        """Encoder layers the device must run before this codec (the payload's vision-layers field)."""
        return self.model.cfg.split_layer

    @property
    def n_clusters(self) -> int:
        """Tokens per tile the device merges to before this codec (0: all)."""
        return self.model.cfg.n_clusters

    def encode(self, data, context=None) -> bytes:
        if context is not None and context.vision_layers != self.split_layer:
            raise ValueError(
                f"features cut after {context.vision_layers} vision layers; this codec quantises the hidden state "
                f"after layer {self.split_layer}"
            )
        return super().encode(data, context)

    def encode_sections(self, features: Tensor):
        """Tensor[T, N, d] hidden state at the split -> sections (raises TypeError/ValueError on bad input)."""
        features = check_features(features)
        t, n, d = features.shape
        if d != self.model.cfg.d:
            raise ValueError(f"features are {d} wide; this codec quantises d={self.model.cfg.d}")
        return (t, n, d), self.model.compress(features.reshape(t * n, d))

    def check_header(self, header: FrameHeader, n_sections: int) -> None:
        super().check_header(header, n_sections)
        if header.vision_layers != self.split_layer:
            raise CodecMismatchError(
                f"payload cut after {header.vision_layers} vision layers, this codec after {self.split_layer}"
            )

    def decode_sections(self, header: FrameHeader, sections) -> Tensor:
        t, n, d = header.feature_shape
        if d != self.model.cfg.d:
            raise LimitError(f"payload feature dim {d} does not match the codec's d={self.model.cfg.d}")
        try:
            h = self.model.decompress(sections, t * n)
        except (ValueError, RuntimeError) as exc:
            if isinstance(exc, MalformedPayloadError):
                raise
            raise MalformedPayloadError(f"entropy decoding failed: {exc}") from None
        return h.reshape(t, n, d)
