#!/usr/bin/env python3
"""Build a replay sample: test images and questions as a rosbag2 bag plus ground truth.

    .venv/bin/python tools/make_sample_bag.py                      # data/easyvqa_sample.mcap (+ .questions.jsonl)
    .venv/bin/python tools/make_sample_bag.py --data scenes        # data/scenes_sample.mcap: 1280x720 scenes
    .venv/bin/python tools/make_sample_bag.py --out /tmp/b --storage sqlite3 --images 5

Deterministic: the same bytes every run. data/easyvqa_sample.mcap is committed; the scenes bag (22 MB of raw
1280x720 frames) is rebuilt by `make setup` instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tofc_ros.eval.replay.sample import write_sample_bag


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=("easyvqa", "scenes"), default="easyvqa")
    ap.add_argument("--size", default="1280x720", help="scenes: frame size WxH")
    ap.add_argument(
        "--out", default=None, help="a .mcap file, or a rosbag2 directory to create (default: data/<data>_sample.mcap)"
    )
    ap.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    ap.add_argument("--images", type=int, default=None, help="default: 20 (easyvqa), 8 (scenes)")
    ap.add_argument("--rate", type=float, default=2.0, help="frames per second")
    ap.add_argument("--questions-per-image", type=int, default=None, help="default: alternately 3 and 2")
    ap.add_argument("--force", action="store_true", help="replace an existing output")
    args = ap.parse_args(argv)
    out = Path(args.out or Path(__file__).resolve().parents[1] / "data" / f"{args.data}_sample.mcap")
    images = args.images or (8 if args.data == "scenes" else 20)
    size = tuple(int(v) for v in args.size.split("x"))
    if args.force and out.exists():
        if out.is_dir():
            import shutil

            shutil.rmtree(out)
        else:
            out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    bag, sidecar, n = write_sample_bag(
        out, args.storage, images, args.rate, args.questions_per_image, data=args.data, size=size
    )
    nbytes = sum(p.stat().st_size for p in ([bag] if bag.is_file() else bag.rglob("*")))
    print(f"wrote {bag} ({nbytes / 1024:.0f} KiB, {images} frames, {n} questions) and {sidecar}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
