"""Write the small TOFC codec that the golden-bitstream and cross-CPU tests load (test/fixtures/).

Weights come from numpy's PCG64 (identical on every machine). The CDF tables that ``update()`` then builds are
float computations (CompressAI's density and quantile evaluation), which may differ in their last bits on another
CPU: that is why the *file* is the fixture and is committed. Running this script again on another machine may write a
file with another fingerprint; the tests never regenerate it. A codec is bit-exact given its stored tables, and that
is what the golden tests pin.

    .venv/bin/python tools/make_codec_fixture.py [--out test/fixtures/codec_d64_e4.safetensors]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from tofc_ros.codec import HyperpriorConfig, SelectiveEntropyModel, save_model

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "test" / "fixtures" / "codec_d64_e4.safetensors"
# Small tables keep the file at a few tens of kB: 16 Laplace scales up to 16 steps.
CONFIG = HyperpriorConfig(d=64, n_e=4, scale_levels=16, scale_max=16.0)


def build(seed: int = 20261129) -> SelectiveEntropyModel:
    """The fixture model: every randomly initialised parameter redrawn from PCG64, then ``update()``."""
    rng = np.random.default_rng(seed)
    model = SelectiveEntropyModel(CONFIG)
    with torch.no_grad():
        for net in (model.router, model.experts.h_a, model.experts.h_s):
            for w, b in zip(net.weights, net.biases):
                bound = 1.0 / math.sqrt(w.shape[-1])  # nn.Linear's default, per expert
                w.copy_(torch.from_numpy(rng.uniform(-bound, bound, tuple(w.shape)).astype(np.float32)))
                b.copy_(torch.from_numpy(rng.uniform(-bound, bound, tuple(b.shape)).astype(np.float32)))
        # Keep the hyper-synthesis's scale branch mid-table, as the constructor does.
        model.experts.h_s.biases[-1][:, CONFIG.d :] = (CONFIG.scale_levels - 1) / 2
        for _i, bias in enumerate(model.experts.entropy_bottleneck.biases):
            bias.copy_(torch.from_numpy(rng.uniform(-0.5, 0.5, tuple(bias.shape)).astype(np.float32)))
    model.update()
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = save_model(build(), args.out)
    print(f"{args.out}: {args.out.stat().st_size} bytes, fingerprint {fingerprint.hex()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
