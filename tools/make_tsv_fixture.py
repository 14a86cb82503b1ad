"""Write test/fixtures/bench_mini.tsv: a small VLMEvalKit TSV from our own test data (committed; rebuilt by this).

    python tools/make_tsv_fixture.py [--out test/fixtures/bench_mini.tsv]

The first 60 easy-vqa test questions (64x64 PNG images) and the questions of the first two 640x480 test scenes (JPEG
at quality 85, to keep the file small): shape and colour questions as multiple choice, yes/no, counts and sides as
short answers, one category per data set and question type. Deterministic: the same file every time.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tofc_ros.data.convert import load_items, to_tsv


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="test/fixtures/bench_mini.tsv")
    args = ap.parse_args()
    rows: list[dict] = []
    easy = load_items("easyvqa", "test", limit=60)
    to_tsv(easy, args.out, source="easyvqa", rows=rows)
    scenes = load_items("scenes", "test", images=2, sizes=[(640, 480)])
    path = to_tsv(
        scenes, args.out, source="scenes", image_format="jpeg", jpeg_quality=85, start_index=len(rows), rows=rows
    )
    print(f"{path}: {len(rows)} questions, {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
