#!/usr/bin/env python3
"""Accuracy of a model per easy-vqa question type: which questions does it get wrong? (issue 6)

    .venv/bin/python bench/vqa_breakdown.py --model models/easyvqa-tiny-ov-base [--split test] [--images 1000]

Types: naming the shape, naming the colour, and yes/no questions split by subject (shape or colour word), negation
("not", "no") and the reference answer. The metric is the benchmarks' teacher-forced greedy exact match.

Every question runs the deployed objects (``tofc_ros.eval.deployment``): the device node's encoder makes the payload,
the server node's ``FrameDecoder`` decodes it and its ``ModelAnswerer`` scores it. Uncompressed (default): the image
goes losslessly (rgb8 payload) and the server runs the vision tower. With --merge: the device merges the features to
n_c per tile (DPC-KNN as deployed, or an ablation method) and sends them as float16 (no entropy coding), or with
--codec in that codec (e.g. a TOFC .safetensors). Prints a Markdown table; --out writes JSON too.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tofc_ros.data.easyvqa import COLOURS, SHAPES, load_split
from tofc_ros.eval.deployment import Deployment, Point
from tofc_ros.train.differentiable_merge import MERGE_METHODS  # the methods FeatureEncoder's merge= hook runs


def question_type(question: str, answer: str) -> str:
    """ "name shape", "name colour", or "yes/no <shape|colour> <positive|negated> -> <answer>"."""
    if answer in SHAPES:
        return "name shape"
    if answer in COLOURS:
        return "name colour"
    words = question.rstrip("?").split()
    subject = "shape" if any(w in words for w in SHAPES) else "colour" if any(w in words for w in COLOURS) else "?"
    negated = "negated" if ("not" in words or "no" in words) else "positive"
    return f"yes/no {subject} {negated} -> {answer}"


def make_point(model: str, merge: str = "none", n_c: int = 16, codec: str = "fp16/1") -> Point:
    """The deployed point a breakdown runs: the lossless image, or merged features in ``codec``."""
    if merge == "none":
        return Point("uncompressed (rgb8 image)", "rgb8", "image", "rgb8/1", model)
    return Point(f"{merge} n_c={n_c} {codec}", merge, "features", codec, model, n_c=n_c, merge=merge)


@torch.inference_mode()
def breakdown(point: Point, items, batch: int = 16, deployment: Deployment | None = None) -> dict[str, list[int]]:
    """{type: [correct, total]} over every question of ``items``, through the point's deployed objects."""
    deployment = deployment or Deployment([point])
    encoder = deployment.encoder(point)
    decoder, answerer = deployment.server(point.model)
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for s in tqdm(range(0, len(items), batch), desc="questions", leave=False):
        chunk = items[s : s + batch]
        frames = [decoder.decode(encoder.encode(item.rgb()).payload) for item in chunk]
        hits = answerer.score(frames, [c.questions for c in chunk], [c.answers for c in chunk])
        for c, row in zip(chunk, hits):
            for q, a, hit in zip(c.questions, c.answers, row):
                counts = stats[question_type(q, a)]
                counts[0] += int(hit)
                counts[1] += 1
    return dict(stats)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/easyvqa-tiny-ov-base")
    ap.add_argument("--split", default="test", choices=("train", "test"))
    ap.add_argument("--images", type=int, default=None, help="first N images (default: all)")
    ap.add_argument("--merge", default="none", choices=MERGE_METHODS, help="merge features on the device first")
    ap.add_argument("--n-c", type=int, default=16, help="merged tokens per tile with --merge")
    ap.add_argument("--codec", default="fp16/1", help="feature codec with --merge (a format or a TOFC .safetensors)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    items = load_split(args.split)[: args.images]
    point = make_point(args.model, args.merge, args.n_c, args.codec)
    stats = breakdown(point, items)
    correct, total = sum(v[0] for v in stats.values()), sum(v[1] for v in stats.values())
    print(f"{point.name}")
    print(f"| question type ({args.split}, {len(items)} images) | accuracy | questions |\n|---|---:|---:|")
    for name, (c, n) in sorted(stats.items()):
        print(f"| {name} | {100 * c / n:.1f} % | {n:,} |")
    print(f"| **all** | **{100 * correct / total:.1f} %** | {total:,} |")
    if args.out:
        record = {
            "model": args.model,
            "split": args.split,
            "images": len(items),
            "point": point.name,
            "merge": args.merge,
            "n_c": args.n_c,
            "codec": point.codec,
            "types": stats,
            "accuracy": correct / total,
        }
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
