"""What JPEG and WebP would have sent for the frames of a replay, at the accuracy TOFC reached: the demo's last table.

    python -m tofc_ros.eval.compare --bag data/scenes_sample.mcap --report out/demo/report.json \
        --benchmark bench/results/scenes_rate_accuracy/results.json

For each image codec, the rate-accuracy benchmark (same model, same test split, many qualities) gives the lowest
quality whose accuracy reaches TOFC's; the bag's own frames are then encoded at that quality through the deployed
ImageEncoder, so the bytes are those of these frames, not of the benchmark's. A codec that never reaches TOFC's
accuracy is shown at its lowest quality, as a lower bound ("> bytes"). TOFC's bytes are what the replay actually
received (the report).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["matching_quality", "compare", "main"]


def matching_quality(results: list[dict], family: str, accuracy: float) -> dict | None:
    """The benchmark point of ``family`` with the lowest quality whose accuracy reaches ``accuracy`` (None if none)."""
    points = sorted((r for r in results if r["family"] == family), key=lambda r: r["bytes_per_image"])
    return next((r for r in points if r["accuracy"] >= accuracy), None)


def _quality(point: dict) -> int:
    return int(point["name"].rsplit("=", 1)[1])


def compare(bag: str | Path, report: dict, benchmark: dict) -> dict:
    """The comparison as a dict: TOFC's bytes per frame and, per image codec, the matched quality and its bytes."""
    import numpy as np

    from tofc_ros.codec import load_codec
    from tofc_ros.eval.replay import read_replay_bag
    from tofc_ros.eval.replay.typestore import typestore
    from tofc_ros.pipeline.encoder import ImageEncoder

    tofc_points = [r for r in benchmark["results"] if r["family"] == "tofc"]
    if not tofc_points:
        raise ValueError("the benchmark holds no TOFC point")
    reference = max(tofc_points, key=lambda r: r["accuracy"])
    frames = read_replay_bag(bag).frames
    images = []
    for f in frames:
        msg = typestore().deserialize_cdr(f.data, f.msgtype)
        images.append(np.asarray(msg.data, np.uint8).reshape(msg.height, msg.width, 3))
    per_frame = {r["image_stamp_ns"]: r["payload_bytes"] for r in report["questions"] if r["payload_bytes"]}
    if not per_frame:
        raise ValueError("the report holds no answered question with a payload")
    out = {
        "frames": len(images),
        "tofc_benchmark_accuracy": reference["accuracy"],
        "tofc_bytes_per_frame_replay": float(np.mean(list(per_frame.values()))),
        "codecs": {},
    }
    for family in ("jpeg", "webp"):
        point = matching_quality(benchmark["results"], family, reference["accuracy"])
        reaches = point is not None
        if not reaches:
            # It would need more than its lowest benchmarked quality sends: show that as a lower bound.
            points = [r for r in benchmark["results"] if r["family"] == family]
            if not points:
                out["codecs"][family] = None
                continue
            point = min(points, key=lambda r: r["bytes_per_image"])
        quality = _quality(point)
        encoder = ImageEncoder(load_codec(f"{family}/1", quality=quality))
        nbytes = [len(encoder.encode(rgb).payload) for rgb in images]
        out["codecs"][family] = {
            "quality": quality,
            "benchmark_accuracy": point["accuracy"],
            "bytes_per_frame": float(np.mean(nbytes)),
            "reaches_tofc_accuracy": reaches,
        }
    return out


def markdown(result: dict) -> str:
    """The comparison as a Markdown table."""
    tofc = result["tofc_bytes_per_frame_replay"]
    lines = [
        f"## Bytes for these {result['frames']} frames at TOFC's accuracy "
        f"({100 * result['tofc_benchmark_accuracy']:.1f} % on the benchmark)",
        "",
        "| payload | quality | benchmark accuracy | bytes per frame | × TOFC |",
        "|---|---|---|---|---|",
        f"| TOFC (what the replay sent) | – | {100 * result['tofc_benchmark_accuracy']:.1f} % | {tofc:,.0f} | 1.0 |",
    ]
    for family, row in result["codecs"].items():
        if row is None:
            lines.append(f"| {family.upper()} | – | not in the benchmark | – | – |")
            continue
        ratio = f"{row['bytes_per_frame'] / tofc:.1f}"
        if row["reaches_tofc_accuracy"]:
            lines.append(
                f"| {family.upper()} | {row['quality']} | {100 * row['benchmark_accuracy']:.1f} % | "
                f"{row['bytes_per_frame']:,.0f} | {ratio} |"
            )
        else:
            lines.append(
                f"| {family.upper()} | never reaches it; lowest: {row['quality']} | "
                f"{100 * row['benchmark_accuracy']:.1f} % | > {row['bytes_per_frame']:,.0f} | > {ratio} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bag", required=True)
    ap.add_argument("--report", required=True, help="the replay's report.json")
    ap.add_argument("--benchmark", required=True, help="rate-accuracy results.json of the same model")
    args = ap.parse_args(argv)
    report = json.loads(Path(args.report).read_text(encoding="utf-8"))
    benchmark = json.loads(Path(args.benchmark).read_text(encoding="utf-8"))
    print(markdown(compare(args.bag, report, benchmark)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
