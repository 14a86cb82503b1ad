#!/usr/bin/env python3
"""Build the bundled replay sample: easy-vqa test images and questions as a rosbag2 bag plus ground truth.

    .venv/bin/python tools/make_sample_bag.py                      # data/easyvqa_sample.mcap (+ .questions.jsonl)
    .venv/bin/python tools/make_sample_bag.py --out /tmp/b --storage sqlite3 --images 5

The committed data/easyvqa_sample.mcap is this script's default output (deterministic: same bytes every run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tofc_ros.eval.replay.sample import write_sample_bag


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parents[1] / "data" / "easyvqa_sample.mcap"),
        help="a .mcap file, or a rosbag2 directory to create",
    )
    ap.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--rate", type=float, default=2.0, help="frames per second")
    ap.add_argument("--questions-per-image", type=int, default=None, help="default: alternately 3 and 2")
    ap.add_argument("--force", action="store_true", help="replace an existing output")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.force and out.exists():
        if out.is_dir():
            import shutil

            shutil.rmtree(out)
        else:
            out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    bag, sidecar, n = write_sample_bag(out, args.storage, args.images, args.rate, args.questions_per_image)
    size = sum(p.stat().st_size for p in ([bag] if bag.is_file() else bag.rglob("*")))
    print(f"wrote {bag} ({size / 1024:.0f} KiB, {args.images} frames, {n} questions) and {sidecar}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
