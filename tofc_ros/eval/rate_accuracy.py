"""Rate–accuracy on the easy-vqa test split: TOFC against merging only, raw/zstd features and JPEG/WebP images.

    python -m tofc_ros.eval.rate_accuracy --model models/easyvqa-tiny-ov \
        --tofc models/easyvqa-tiny-ov/tofc_codec.safetensors:16 --tofc runs/tofc/nc8_lam0.004 \
        --jpeg 5,10,25,50,90 --webp 1,5,10,25,50,90 --merge 8,16,32 --out bench/results/rate_accuracy

Every point runs the deployed objects: the ``FeatureEncoder`` / ``ImageEncoder`` the device node runs makes the
payload (bytes = the whole self-describing container), the ``FrameDecoder`` the server node runs validates and
decodes it, and the server's ``ModelAnswerer`` scores it. Image points send the JPEG/WebP payload; the answerer runs
the vision tower on the server (``load_vision``), as the server node does.

Accuracy is the exact-match accuracy of greedy generation, computed by ``ModelAnswerer.score`` from teacher-forced
logits: greedy decoding returns the reference iff every reference token (and the EOS) is the argmax given the
reference prefix (its agreement with ``ModelAnswerer.answer`` is tested). That scores all of an image's questions in
one pass over the image instead of one ``generate`` per question.

Outputs in ``--out``: results.json (every point: bytes per image, accuracy, questions, timings), table.md and
rate_accuracy.png (log-scale bytes per image against accuracy).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tofc_ros.data import easyvqa, scenes
from tofc_ros.data.easyvqa import VQAImage
from tofc_ros.eval.deployment import Deployment, Point

__all__ = ["Point", "PointResult", "evaluate_point", "run", "bytes_at_accuracy", "main"]


@dataclass
class PointResult:
    """Measured bytes and accuracy of one point."""

    name: str
    family: str
    bytes_per_image: float
    accuracy: float
    correct: int
    questions: int
    images: int
    n_c: int
    codec: str
    model: str
    device_ms_per_image: float
    server_ms_per_image: float


@torch.inference_mode()
def evaluate_point(
    point: Point,
    items: list[VQAImage],
    deployment: Deployment | None = None,
    batch_images: int = 16,
    progress: bool = False,
) -> PointResult:
    """Run one point over the images: the device's encoder, the server's decoder and answerer."""
    deployment = deployment or Deployment([point])
    encoder = deployment.encoder(point)
    decoder, answerer = deployment.server(point.model)
    total_bytes = correct = questions = 0
    device_s = server_s = 0.0
    rng = range(0, len(items), batch_images)
    if progress:
        from tqdm import tqdm

        rng = tqdm(rng, desc=point.name, leave=False)
    for s in rng:
        chunk = items[s : s + batch_images]
        frames = []
        for item in chunk:
            rgb = item.rgb()
            t0 = time.perf_counter()
            payload = encoder.encode(rgb).payload
            t1 = time.perf_counter()
            frames.append(decoder.decode(payload))
            device_s += t1 - t0
            server_s += time.perf_counter() - t1
            total_bytes += len(payload)
        t2 = time.perf_counter()
        hits = answerer.score(frames, [c.questions for c in chunk], [c.answers for c in chunk])
        server_s += time.perf_counter() - t2
        correct += sum(sum(row) for row in hits)
        questions += sum(len(row) for row in hits)
    n = max(len(items), 1)
    return PointResult(
        point.name,
        point.family,
        total_bytes / n,
        correct / max(questions, 1),
        correct,
        questions,
        len(items),
        point.n_c,
        point.codec,
        point.model,
        1e3 * device_s / n,
        1e3 * server_s / n,
    )


def bytes_at_accuracy(results: list[PointResult], family: str, accuracy: float) -> float | None:
    """Fewest bytes per image at which ``family`` reaches ``accuracy``.

    Linear interpolation in log(bytes) between the two points around the accuracy on the family's upper
    (monotone) envelope; None if no point of the family reaches it.
    """
    pts = sorted((r.bytes_per_image, r.accuracy) for r in results if r.family == family)
    if not pts:
        return None
    best = -1.0
    env = []
    for b, a in pts:  # running maximum: more bytes never needs to be worse
        best = max(best, a)
        env.append((b, best))
    for i, (b, a) in enumerate(env):
        if a >= accuracy:
            if i == 0:
                return b
            b0, a0 = env[i - 1]
            if a == a0:
                return b
            f = (accuracy - a0) / (a - a0)
            return math.exp(math.log(b0) + f * (math.log(b) - math.log(b0)))
    return None


def _table(results: list[PointResult]) -> str:
    lines = ["| point | family | n_c | bytes / image | accuracy | questions |", "|---|---|---:|---:|---:|---:|"]
    for r in sorted(results, key=lambda r: (r.family, r.bytes_per_image)):
        lines.append(
            f"| {r.name} | {r.family} | {r.n_c or '–'} | {r.bytes_per_image:,.1f} | "
            f"{100 * r.accuracy:.2f} % | {r.questions} |"
        )
    return "\n".join(lines)


def _plot(results: list[PointResult], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    markers = {"tofc": "o", "merge-fp16": "s", "fp16": "D", "fp16-zstd": "P", "jpeg": "^", "webp": "v"}
    for fam in sorted({r.family for r in results}):
        pts = sorted((r.bytes_per_image, 100 * r.accuracy, r.name) for r in results if r.family == fam)
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, marker=markers.get(fam.split(":")[0], "o"), label=fam, linewidth=1.2)
    ax.set_xscale("log")
    ax.set_xlabel("bytes per image (whole payload, log scale)")
    ax.set_ylabel("exact-match accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _parse_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()] if text else []


def _tofc_point(spec: str, default_model: str, default_n_c: int) -> Point:
    """``CODEC.safetensors[:n_c]`` (backbone: --model) or a training run directory (its model/ and codec)."""
    path, _, n_c = spec.partition(":")
    p = Path(path)
    if p.is_dir():
        summary = json.loads((p / "summary.json").read_text(encoding="utf-8"))
        cfg = summary["config"]
        model = str(p / "model") if (p / "model" / "config.json").is_file() else cfg["model"]
        return Point(
            name=f"tofc {p.name}",
            family="tofc",
            kind="features",
            codec=str(p / "codec.safetensors"),
            model=model,
            n_c=int(n_c or cfg["n_c"]),
            merge=cfg.get("merge", "dpc_knn"),
        )
    n = int(n_c or default_n_c)
    return Point(
        name=f"tofc n_c={n} {p.stem}", family="tofc", kind="features", codec=str(p), model=default_model, n_c=n
    )


def build_points(args) -> list[Point]:
    """Points named on the command line."""
    m = args.model
    pts = [_tofc_point(s, m, args.n_c) for s in args.tofc]
    for n in _parse_ints(args.merge):
        pts.append(Point(f"merge n_c={n} fp16", "merge-fp16", "features", "fp16/1", m, n_c=n))
    if args.raw:
        pts.append(Point("raw fp16 (all tokens)", "fp16", "features", "fp16/1", m))
        pts.append(Point("fp16+zstd (all tokens)", "fp16-zstd", "features", "fp16-zstd/1", m, {"level": 19}))
    for q in _parse_ints(args.jpeg):
        pts.append(Point(f"jpeg q={q}", "jpeg", "image", "jpeg/1", m, {"quality": q}))
    for q in _parse_ints(args.webp):
        pts.append(Point(f"webp q={q}", "webp", "image", "webp/1", m, {"quality": q}))
    return pts


def test_items(
    data: str = "easyvqa", limit: int | None = None, size: str | None = None, images: int | None = None
) -> list:
    """The test split of ``data`` ("easyvqa" or "scenes"); scenes at one frame size "WxH" (else both sizes).

    ``limit``: the first questions (image-major); ``images``: how many scenes to draw (scenes only).
    """
    if data == "easyvqa":
        return easyvqa.load_split("test", limit)
    if data != "scenes":
        raise ValueError(f"data must be 'easyvqa' or 'scenes', got {data!r}")
    sizes = scenes.FRAME_SIZES
    if size:
        w, _, h = size.partition("x")
        sizes = ((int(w), int(h)),)
    return scenes.load_split("test", images, limit=limit, sizes=sizes)


def run(
    points: list[Point],
    limit: int | None,
    out_dir: Path,
    progress: bool = True,
    title: str = "easy-vqa test",
    include: list[Path] = (),
    items: list | None = None,
) -> dict:
    """Evaluate the points and write results.json, table.md and rate_accuracy.png.

    ``include``: earlier output directories whose results (same split and limit) join this table and plot.
    ``items``: the test items (default: easy-vqa's test split, first ``limit`` questions).
    """
    items = test_items("easyvqa", limit) if items is None else items
    deployment = Deployment(points)
    results = []
    for prev in include:
        old = json.loads((Path(prev) / "results.json").read_text(encoding="utf-8"))
        if old["limit"] != limit:
            raise ValueError(f"{prev} was measured with limit {old['limit']}, not {limit}")
        results += [PointResult(**r) for r in old["results"]]
    t0 = time.perf_counter()
    for p in points:
        r = evaluate_point(p, items, deployment, progress=progress)
        results.append(r)
        if progress:
            print(f"{r.name:32s} {r.bytes_per_image:12,.1f} B  {100 * r.accuracy:6.2f} %", flush=True)
    comparisons = {}
    tofc = [r for r in results if r.family == "tofc"]
    raw = next((r for r in results if r.family == "fp16"), None)
    for r in tofc:
        row = {"bytes": r.bytes_per_image, "accuracy": r.accuracy}
        for fam in ("jpeg", "webp", "fp16-zstd", "merge-fp16"):
            b = bytes_at_accuracy(results, fam, r.accuracy)
            row[f"{fam}_bytes_at_equal_accuracy"] = b
            row[f"{fam}_over_tofc"] = (b / r.bytes_per_image) if b else None
        if raw is not None:
            row["raw_fp16_over_tofc"] = raw.bytes_per_image / r.bytes_per_image
            row["accuracy_drop_vs_raw_points"] = 100 * (raw.accuracy - r.accuracy)
        comparisons[r.name] = row
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "split": "test",
        "limit": limit,
        "images": len(items),
        "questions": sum(len(it.questions) for it in items),
        "metric": "greedy exact match (teacher-forced argmax of every answer token and EOS)",
        "seconds": round(time.perf_counter() - t0, 1),
        "torch_threads": torch.get_num_threads(),
        "results": [asdict(r) for r in results],
        "comparisons": comparisons,
    }
    (out_dir / "results.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (out_dir / "table.md").write_text(_table(results) + "\n", encoding="utf-8")
    _plot(results, out_dir / "rate_accuracy.png", f"{title} ({sum(len(it.questions) for it in items)} questions)")
    return data


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/easyvqa-tiny-ov", help="llava-hf directory for the baselines")
    ap.add_argument(
        "--tofc",
        action="append",
        default=[],
        help="CODEC.safetensors[:n_c] (backbone --model) or a tofc training run directory; repeatable",
    )
    ap.add_argument("--n-c", type=int, default=16, help="n_c for --tofc codecs given without one")
    ap.add_argument("--merge", default="16", help="merging-only (fp16) points, comma-separated n_c")
    ap.add_argument("--no-raw", dest="raw", action="store_false", help="skip raw fp16 and fp16+zstd")
    ap.add_argument("--jpeg", default="5,10,25,50,90", help="JPEG qualities")
    ap.add_argument("--webp", default="1,5,10,25,50,90", help="WebP qualities")
    ap.add_argument("--data", choices=("easyvqa", "scenes"), default="easyvqa", help="test split of which data set")
    ap.add_argument("--size", default=None, help="scenes: one frame size WxH (e.g. 1280x720); default both sizes")
    ap.add_argument("--images", type=int, default=None, help="scenes: how many test scenes (default 1000)")
    ap.add_argument("--limit", type=int, default=None, help="first N test questions (image-major)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="bench/results/rate_accuracy")
    ap.add_argument("--include", action="append", default=[], help="add the results of an earlier --out directory")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    items = test_items(args.data, args.limit, args.size, args.images)
    title = "easy-vqa test" if args.data == "easyvqa" else f"scenes test{' ' + args.size if args.size else ''}"
    data = run(
        build_points(args),
        args.limit,
        Path(args.out),
        progress=not args.no_progress,
        title=title,
        include=[Path(p) for p in args.include],
        items=items,
    )
    print((Path(args.out) / "table.md").read_text(encoding="utf-8"))
    print(json.dumps(data["comparisons"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
