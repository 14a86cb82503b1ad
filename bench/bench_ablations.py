#!/usr/bin/env python3
"""Ablations after TOFC's Table I and Fig. 12 on easy-vqa (issue 6, item 4).

    .venv/bin/python bench/bench_ablations.py --model models/easyvqa-tiny-ov \
        --codec16 models/easyvqa-tiny-ov/tofc_codec.safetensors --codec1 runs/easyvqa-tofc-sweep/ne1/codec.safetensors \
        --limit 2000 --out bench/results/ablations

1. Merging at equal token count (n_c per tile): DPC-KNN (cluster means) vs the DPC-KNN centres only vs uniform
   pooling of the 27×27 grid; features sent as fp16 (so bytes are equal per n_c), accuracy compared.
2. Entropy model: 16 selective hyperpriors vs 1 hyperprior vs a heuristic Laplacian whose per-channel mean and scale
   are batch statistics of training features (no hyperprior, no side information). All three quantise the same
   merged features with the same step (y_step), so their decoded features and accuracy are comparable; bytes are the
   models' own entropy estimates (``estimate_bits``: y + z + expert indices; the heuristic: y only) plus the same
   container overhead, and for the trained codecs also the real payload bytes.

Every figure runs the deployed objects (``tofc_ros.eval.deployment``): the device node's ``FeatureEncoder`` makes the
payload, the server node's ``FrameDecoder`` decodes it and its ``ModelAnswerer`` scores it. The merge ablation's other
methods go through the encoder's ``merge=`` hook. The entropy estimates need the merged features themselves: they are
taken from the deployed merging-only point (DPC-KNN, n_c, fp16 payload) as the server decodes it, i.e. rounded to
float16; TOFC itself codes the float32 merge. On the first 500 test questions (52 images) the bundled codec's estimate
is 891.67 B on the float16 features against 891.65 B on the float32 ones (largest rounding 0.006, features up to 20).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tofc_ros.data.easyvqa import load_split, num_questions
from tofc_ros.eval.deployment import Deployment, Point
from tofc_ros.eval.rate_accuracy import evaluate_point


@torch.inference_mode()
def merge_ablation(model: str, items, n_cs, deployment: Deployment) -> list[dict]:
    rows = []
    for n_c in n_cs:
        for method in ("dpc_knn", "centres", "uniform"):
            r = evaluate_point(
                Point(f"{method} n_c={n_c}", method, "features", "fp16/1", model, n_c=n_c, merge=method),
                items,
                deployment,
            )
            rows.append({"method": method, "n_c": n_c, "bytes_per_image": r.bytes_per_image, "accuracy": r.accuracy})
            print(f"merge {method:8s} n_c={n_c:3d}  {r.bytes_per_image:8.1f} B  {100 * r.accuracy:6.2f} %", flush=True)
    return rows


def _laplace_bits(y: torch.Tensor, mu: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """-log2 P(round(y - mu) + mu) under Laplace(mu, b) convolved with U(-1/2, 1/2); y, mu, b in quantisation steps."""
    v = torch.floor(y - mu + 0.5)

    def cdf(x):
        return torch.where(x < 0, 0.5 * torch.exp(x), 1 - 0.5 * torch.exp(-x))

    p = cdf((v + 0.5) / b) - cdf((v - 0.5) / b)
    return -torch.log2(p.clamp_min(1e-9))


def merged_features(deployment: Deployment, model: str, n_c: int, items) -> list[torch.Tensor]:
    """Each image's DPC-KNN-merged features [T, n_c, d] as the server decodes them from the deployed merging-only
    point (fp16 payload)."""
    encoder = deployment.encoder(Point(f"merge n_c={n_c} fp16", "merge-fp16", "features", "fp16/1", model, n_c=n_c))
    decoder, _ = deployment.server(model)
    return [decoder.decode(encoder.encode(item.rgb()).payload).features.float() for item in items]


@torch.inference_mode()
def entropy_ablation(model: str, points: list[Point], items, train_items, n_c: int, deployment) -> list[dict]:
    from tofc_ros.codec.bitstream import HEADER_SIZE

    rows = []
    merged = merged_features(deployment, model, n_c, items)
    # Heuristic Laplacian: per-channel mean and mean absolute deviation of training merged features.
    train_feats = torch.cat([f.reshape(-1, f.shape[-1]) for f in merged_features(deployment, model, n_c, train_items)])
    step = deployment.codec(points[0]).model.cfg.y_step
    ty = train_feats / step
    mu = ty.mean(0)
    b = (ty - mu).abs().mean(0).clamp_min(0.11)
    heur_bits = [float(_laplace_bits(f.reshape(-1, f.shape[-1]) / step, mu, b).sum()) for f in merged]
    # The heuristic decodes to round(y - mu) + mu: the same quantiser as the hyperprior (step 1 in y units), so
    # its accuracy is that of the trained codecs' quantisation; we report bytes only (estimate + container).
    heur = sum(heur_bits) / len(heur_bits)
    rows.append(
        {
            "entropy_model": "heuristic Laplacian (batch statistics)",
            "estimated_bytes": heur / 8 + HEADER_SIZE + 8,
            "payload_bytes": None,
            "accuracy": None,
            "train_images_for_statistics": len(train_items),
        }
    )
    print(f"heuristic Laplacian        est {heur / 8 + HEADER_SIZE + 8:8.1f} B", flush=True)
    for point in points:
        codec = deployment.codec(point)
        est = [codec.model.estimate_bits(f)["total"] for f in merged]
        r = evaluate_point(point, items, deployment)
        e = sum(est) / len(est) / 8 + HEADER_SIZE + 12 + 4  # + 3 section lengths + CRC32
        rows.append(
            {
                "entropy_model": point.name,
                "estimated_bytes": e,
                "payload_bytes": r.bytes_per_image,
                "accuracy": r.accuracy,
            }
        )
        print(
            f"{point.name:26s} est {e:8.1f} B  payload {r.bytes_per_image:8.1f} B  {100 * r.accuracy:6.2f} %",
            flush=True,
        )
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/easyvqa-tiny-ov")
    ap.add_argument("--codec16", default="models/easyvqa-tiny-ov/tofc_codec.safetensors")
    ap.add_argument("--codec1", default="", help="a codec trained the same way with n_e = 1")
    ap.add_argument("--n-c", default="4,8,16", help="token counts for the merging ablation")
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--stat-images", type=int, default=200, help="training images for the heuristic's statistics")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="bench/results/ablations")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    items = load_split("test", args.limit)
    codecs = {"16 experts (selective)": args.codec16}
    if args.codec1:
        codecs["1 expert (hyperprior)"] = args.codec1
    points = [Point(name, "tofc", "features", path, args.model, n_c=16) for name, path in codecs.items()]
    deployment = Deployment(points)
    merge = merge_ablation(args.model, items, [int(v) for v in args.n_c.split(",")], deployment)
    entropy = entropy_ablation(args.model, points, items, load_split("train")[: args.stat_images], 16, deployment)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"split": "test", "limit": args.limit, "questions": num_questions(items), "merge": merge, "entropy": entropy}
    (out / "ablations.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
