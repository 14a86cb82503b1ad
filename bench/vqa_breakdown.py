#!/usr/bin/env python3
"""Accuracy of a model per easy-vqa question type: which questions does it get wrong? (issue 6)

    .venv/bin/python bench/vqa_breakdown.py --model models/easyvqa-tiny-ov-base [--split test] [--images 1000]

Types: naming the shape, naming the colour, and yes/no questions split by subject (shape or colour word), negation
("not", "no") and the reference answer. Uncompressed features, or merged ones with --merge (no entropy coding); the
metric is the benchmarks' teacher-forced greedy exact match. Prints a Markdown table; --out writes JSON too.
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

from tofc_ros.backbones.answer_scoring import PromptCache, answer_logits, answer_stats
from tofc_ros.data.easyvqa import COLOURS, SHAPES, load_split
from tofc_ros.train.common import PixelPath, set_threads
from tofc_ros.train.differentiable_merge import MERGE_METHODS, merge_features
from tofc_ros.train.llava import TrainableLlava
from tofc_ros.train.pretrain import vision_batch


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


@torch.no_grad()
def breakdown(
    model: TrainableLlava, items, batch: int = 16, merge: str = "none", n_c: int = 16
) -> dict[str, list[int]]:
    """{type: [correct, total]} over every question of ``items`` (features merged to n_c per tile unless "none")."""
    pixels, prompts = PixelPath(model.device_half), PromptCache(model.server)
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for s in tqdm(range(0, len(items), batch), desc="questions", leave=False):
        chunk = items[s : s + batch]
        embeds = [
            model.server.image_embeddings(merge_features(f, n_c, merge), g, size)
            for f, g, size in vision_batch(model, pixels, chunk)
        ]
        _, ok = answer_stats(
            answer_logits(model.server, prompts, embeds, [c.questions for c in chunk], [c.answers for c in chunk])
        )
        qs = [(q, a) for c in chunk for q, a in zip(c.questions, c.answers)]
        for (q, a), hit in zip(qs, ok.tolist()):
            row = stats[question_type(q, a)]
            row[0] += int(hit)
            row[1] += 1
    return dict(stats)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/easyvqa-tiny-ov-base")
    ap.add_argument("--split", default="test", choices=("train", "test"))
    ap.add_argument("--images", type=int, default=None, help="first N images (default: all)")
    ap.add_argument("--merge", default="none", choices=MERGE_METHODS, help="merge features first (no entropy coding)")
    ap.add_argument("--n-c", type=int, default=16, help="merged tokens per tile with --merge")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    model = TrainableLlava.from_pretrained(args.model)
    model.model.eval()
    items = load_split(args.split)[: args.images]
    stats = breakdown(model, items, merge=args.merge, n_c=args.n_c)
    correct, total = sum(v[0] for v in stats.values()), sum(v[1] for v in stats.values())
    print(f"| question type ({args.split}, {len(items)} images) | accuracy | questions |\n|---|---:|---:|")
    for name, (c, n) in sorted(stats.items()):
        print(f"| {name} | {100 * c / n:.1f} % | {n:,} |")
    print(f"| **all** | **{100 * correct / total:.1f} %** | {total:,} |")
    if args.out:
        record = {
            "model": args.model,
            "split": args.split,
            "images": len(items),
            "merge": args.merge,
            "n_c": args.n_c,
            "types": stats,
            "accuracy": correct / total,
        }
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
