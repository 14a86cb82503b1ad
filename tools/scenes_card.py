#!/usr/bin/env python3
"""The numbers of data/SCENES.md: cut-out audit, scene and question counts, answer balance, render time.

.venv/bin/python tools/scenes_card.py            # default sizes (DEFAULT_IMAGES), seed 0; Markdown on stdout
.venv/bin/python tools/scenes_card.py --timing   # also ms per rendered frame (machine-dependent)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tofc_ros.data import scenes


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(n: int, total: int) -> str:
    return f"{n} ({100 * n / total:.1f} %)" if total else "0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing", action="store_true")
    args = parser.parse_args(argv)

    print("## easy-vqa cut-outs\n")
    audits = {split: scenes.audit_cutouts(split) for split in scenes.SPLITS}
    keys = sorted(set().union(*audits.values()))
    print(_table(["", *scenes.SPLITS], [[k, *(audits[s].get(k, 0) for s in scenes.SPLITS)] for k in keys]))

    items = {split: scenes.load_split(split, scenes.DEFAULT_IMAGES[split], args.seed) for split in scenes.SPLITS}
    print(f"\n## Scenes (seed {args.seed})\n")
    rows = []
    for split, its in items.items():
        objects = [o for it in its for o in it.objects]
        sizes = Counter(f"{w}x{h}" for w, h in (it.size for it in its))
        photos = Counter(it.background for it in its)
        widths = [100 * (o.box[2] - o.box[0]) / it.size[0] for it in its for o in it.objects]
        rows.append(
            [
                split,
                len(its),
                scenes.num_questions(its),
                len(objects),
                ", ".join(f"{k} {v}" for k, v in sorted(sizes.items())),
                ", ".join(f"{k} {v}" for k, v in sorted(photos.items())),
                f"{min(widths):.1f}-{max(widths):.1f} %",
            ]
        )
    print(_table(["split", "scenes", "questions", "objects", "frame sizes", "photos", "object width / W"], rows))

    for field, words in (("shape", scenes.SHAPES), ("color", scenes.COLOURS)):
        print(f"\nObjects by {field}:\n")
        counts = {s: Counter(getattr(o, field) for it in its for o in it.objects) for s, its in items.items()}
        print(
            _table(["split", *words], [[s, *(_pct(c[w], sum(c.values())) for w in words)] for s, c in counts.items()])
        )
    print("\nObjects per scene:\n")
    counts = {s: Counter(len(it.objects) for it in its) for s, its in items.items()}
    print(
        _table(
            ["split", "1", "2", "3"], [[s, *(_pct(c[n], len(items[s])) for n in (1, 2, 3))] for s, c in counts.items()]
        )
    )

    print("\n## Answer balance\n")
    for split, its in items.items():
        balance = scenes.answer_balance(its)
        rows = []
        for qtype, answers in balance.items():
            total = sum(answers.values())
            rows.append([qtype, total, ", ".join(f"{a} {100 * n / total:.1f}" for a, n in answers.items())])
        print(f"{split} (% of the type's questions):\n")
        print(_table(["type", "questions", "answers (%)"], rows))
        print()

    if args.timing:
        print("## Render time (ms per frame, one core, mean of 20)\n")
        rows = []
        for size in scenes.FRAME_SIZES:
            its = scenes.load_split("test", 20, args.seed, sizes=(size,))
            its[0].rgb()
            start = time.perf_counter()
            for it in its:
                it.rgb()
            rows.append([f"{size[0]}x{size[1]}", f"{1000 * (time.perf_counter() - start) / len(its):.1f}"])
        print(_table(["frame", "ms"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
