"""Two-stage answering, evaluated offline through the deployed objects (issue 18's benchmark).

    python -m tofc_ros.eval.two_stage --data scenes --size 1280x720 --images 100 --model models/scenes-tiny-ov \
        --codec models/scenes-tiny-ov/tofc_codec.safetensors --out bench/results/two_stage_scenes

Per scene and question, the same objects the nodes run:
    (a) all tiles   FeatureEncoder(n_c = --all-n-c) -> ServerCore (one pass; --all-model, default --model)
    (b) first pass  FeatureEncoder(n_c = --first-n-c, assignment kept) -> ServerCore with TwoStage: the answer and
                    its min-entropy; every answer is held (threshold -1) so that
    (c) two-stage   its RefineAsk -> DeviceRefiner (the device node's: region from the weights, crop, encode at
                    --detail-n-c) -> ServerCore.refined -> the second pass (first-pass tokens + crop)
                    gives the refined answer of every question once; a threshold tau then keeps the first answer
                    where its min-entropy <= tau and the refined one elsewhere, bytes = first + crop where refined.

The threshold sweep is exact: the decision per question depends only on its first-pass uncertainty. Reported per
point: accuracy, mean uplink bytes per question (payload bytes: a frame answered by several questions counts once
per question, as the robot sends it per question in on-demand use), refinement rate, and a latency model at 1, 10
and 100 Mbit/s: device + bytes x 8 / rate + server, plus for refined questions the request's bytes on the downlink,
a round trip (--rtt-ms) and the crop's device, transfer and server time. Times are medians measured here.

Alternatives to min-entropy are reported too (Shannon entropy and 1 - max p of the least sure token, and the mean
min-entropy over the answer's tokens), each swept the same way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["run", "sweep", "main"]

_REQUEST_OVERHEAD_B = 120  # a RefineRequest's CDR bytes besides its weights (header, ids, camera, region fields)


@torch.inference_mode()
def run(args) -> list[dict]:
    """One row per question: both passes' answers, uncertainties, bytes and times, and the all-tiles answer."""
    from tofc_ros.backbones import GenerationOptions
    from tofc_ros.eval.deployment import Deployment, Point
    from tofc_ros.eval.rate_accuracy import test_items
    from tofc_ros.eval.replay.questions import is_correct
    from tofc_ros.pipeline.answerer import AnswerTask
    from tofc_ros.pipeline.encoder import FeatureEncoder
    from tofc_ros.pipeline.server_core import ServerCore
    from tofc_ros.pipeline.two_pass import TwoPassRig, job_of, received, request_about

    torch.set_num_threads(args.threads)
    all_model = args.all_model or args.model
    point = Point("two-stage", "tofc", "features", args.codec, args.model, n_c=args.first_n_c)
    one = Point("all tiles", "tofc", "features", args.codec, all_model, n_c=args.all_n_c)
    deployment = Deployment([point, one], GenerationOptions(max_new_tokens=args.max_new_tokens))
    decoder, answerer = deployment.server(args.model)
    codec = deployment.codec(point)
    device_half = deployment.device_half(args.model)
    all_tiles = FeatureEncoder(deployment.device_half(all_model), codec, args.all_n_c, args.dpc_k)
    rig = TwoPassRig(device_half, codec, decoder, answerer, args.first_n_c, args.detail_n_c, args.max_area, args.dpc_k)
    one_pass = ServerCore(*deployment.server(all_model), rig.clock, queue_size=1 << 20)
    rows = []
    items = test_items(args.data, None, args.size, args.skip + args.images)[args.skip : args.skip + args.images]
    for index, item in enumerate(items):
        rgb = item.rgb()
        t0 = time.perf_counter()
        full = all_tiles.encode(rgb)
        t1 = time.perf_counter()
        one_pass.add_frame(received(full, "cam", index + 1))
        requests = [
            request_about(f"{index}-{k}", q, index + 1, args.max_new_tokens) for k, q in enumerate(item.questions)
        ]
        full_records = one_pass.run_batch([job_of(one_pass, r) for r in requests])
        t2 = time.perf_counter()
        first, asks, device_first, server_first = rig.first_pass(rgb, item.questions, args.max_new_tokens)
        # The alternatives to min-entropy, from the same answerer's per-token numbers for the same first pass.
        decoded = decoder.decode(first.payload, first.format)
        answered = answerer.answer_batch([AnswerTask(decoded, q) for q in item.questions])
        alternatives = [_alternatives(a) for a in answered]
        for k, ask in enumerate(asks):
            region, crop, job, device_crop = rig.detail(ask, rgb)
            c0 = time.perf_counter()
            refined = rig.core.run_batch([job])[0]
            c1 = time.perf_counter()
            truths = [item.answers[k]]
            rows.append(
                {
                    "question_id": ask.question_id,
                    "type": item.question_types[k] if hasattr(item, "question_types") else "",
                    "answer": item.answers[k],
                    "all": full_records[k].text,
                    "all_ok": is_correct(full_records[k].text, truths),
                    "all_bytes": len(full.payload),
                    "first": job.first.text,
                    "first_ok": is_correct(job.first.text, truths),
                    "first_bytes": len(first.payload),
                    "uncertainty": job.first.uncertainty,
                    "alternatives": alternatives[k],
                    "refined": refined.text,
                    "refined_ok": is_correct(refined.text, truths),
                    "refinement": refined.refinement.name,
                    "crop_bytes": len(crop.payload),
                    "request_bytes": _REQUEST_OVERHEAD_B + 4 * ask.token_weights.size,
                    "region": [region.x, region.y, region.width, region.height],
                    "object_boxes": [list(o.box) for o in getattr(item, "objects", ())],
                    "ms": {
                        "device_all": (t1 - t0) * 1e3,
                        "device_first": device_first,
                        "server_all": (t2 - t1) * 1e3 / len(requests),
                        "server_first": server_first,
                        "device_crop": device_crop,
                        "server_second": (c1 - c0) * 1e3,
                    },
                }
            )
        if args.progress:
            print(f"{index + 1}/{len(items)} scenes", file=sys.stderr, flush=True)
    return rows


def _alternatives(answered) -> dict:
    """Uncertainty measures of one answer from its per-token numbers (EOS excluded): the least sure token's
    min-entropy (the one two-stage uses), Shannon entropy and 1 - max p, and the mean min-entropy."""
    if isinstance(answered, Exception) or answered.token_uncertainty is None or len(answered.token_uncertainty) == 0:
        return {}
    u = np.asarray(answered.token_uncertainty)
    return {
        "max_min_entropy": float(u[:, 0].max()),
        "max_entropy": float(u[:, 1].max()),
        "max_one_minus_top": float(u[:, 2].max()),
        "mean_min_entropy": float(u[:, 0].mean()),
    }


def _median(rows, key) -> float:
    return statistics.median(r["ms"][key] for r in rows)


def sweep(rows: list[dict], thresholds, measure: str = "max_min_entropy", rates=(1.0, 10.0, 100.0), rtt_ms=0.0):
    """The table: (a) all tiles, (b) first pass only, and (c) two-stage at every threshold, for one measure."""

    def latency(bytes_up: float, refined: float, request_b: float, crop_b: float, crop: bool) -> dict:
        out = {}
        for rate in rates:
            per_ms = 8 / (rate * 1e3)  # bytes -> ms at this rate
            if crop:
                first = _median(rows, "device_first") + bytes_up * per_ms + _median(rows, "server_first")
                second = rtt_ms + request_b * per_ms + _median(rows, "device_crop") + crop_b * per_ms
                out[f"{rate:g}"] = first + refined * (second + _median(rows, "server_second"))
            else:
                out[f"{rate:g}"] = _median(rows, "device_all") + bytes_up * per_ms + _median(rows, "server_all")
        return out

    n = len(rows)

    def mean(key: str) -> float:
        return sum(r[key] for r in rows) / n

    table = [
        {"point": "(a) all tiles", "accuracy": mean("all_ok"), "bytes": mean("all_bytes"), "refined": 0.0,
         "latency_ms": latency(mean("all_bytes"), 0, 0, 0, False)},
        {"point": "(b) first pass only", "accuracy": mean("first_ok"), "bytes": mean("first_bytes"), "refined": 0.0,
         "latency_ms": latency(mean("first_bytes"), 0, 0, 0, True)},
    ]  # fmt: skip
    for tau in thresholds:
        ask = [_score(r, measure) > tau for r in rows]
        ok = [r["refined_ok"] if a else r["first_ok"] for r, a in zip(rows, ask)]
        crop_b = sum(r["crop_bytes"] for r, a in zip(rows, ask) if a) / max(1, sum(ask))
        request_b = sum(r["request_bytes"] for r, a in zip(rows, ask) if a) / max(1, sum(ask))
        rate = sum(ask) / n
        up = mean("first_bytes") + rate * crop_b
        table.append(
            {
                "point": f"(c) two-stage, tau = {tau:g}",
                "threshold": tau,
                "accuracy": sum(ok) / n,
                "bytes": up,
                "refined": rate,
                "latency_ms": latency(mean("first_bytes"), rate, request_b, crop_b, True),
            }
        )
    return table


def _score(row: dict, measure: str) -> float:
    if measure == "max_min_entropy":
        return row["uncertainty"]
    return row["alternatives"].get(measure, float("nan"))


def region_hits(rows: list[dict]) -> float:
    """Share of regions that overlap an object of the scene (where the answer is)."""

    def overlaps(region, box) -> bool:
        x, y, w, h = region
        return x < box[2] and box[0] < x + w and y < box[3] and box[1] < y + h

    with_objects = [r for r in rows if r["object_boxes"]]
    hits = sum(any(overlaps(r["region"], b) for b in r["object_boxes"]) for r in with_objects)
    return hits / max(1, len(with_objects))


def plot(tables: dict, path: Path, title: str) -> None:
    """Accuracy against mean bytes per question: (a), (b) and each measure's threshold sweep; dashed, the target's
    corner (within 1 point of (a), at most half of its bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    main = tables["max_min_entropy"]
    for row, marker in zip(main[:2], ("s", "v")):
        ax.scatter(row["bytes"], 100 * row["accuracy"], marker=marker, s=60, label=row["point"], zorder=3)
    for measure, table in tables.items():
        sweep_rows = table[2:]
        label = f"(c) two-stage, {measure.replace('_', ' ')}"
        width = 2 if measure == "max_min_entropy" else 1
        xs, ys = [r["bytes"] for r in sweep_rows], [100 * r["accuracy"] for r in sweep_rows]
        ax.plot(xs, ys, marker=".", label=label, lw=width)
    a = main[0]
    ax.axhline(100 * a["accuracy"] - 1, color="gray", ls="--", lw=0.8)
    ax.axvline(a["bytes"] / 2, color="gray", ls="--", lw=0.8)
    ax.set_xlabel("mean uplink bytes per question")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(table: list[dict]) -> str:
    lines = [
        "| point | accuracy | bytes / question | refined | latency at 1 / 10 / 100 Mbit/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in table:
        lat = " / ".join(f"{v:.0f}" for v in r["latency_ms"].values())
        lines.append(
            f"| {r['point']} | {100 * r['accuracy']:.2f} % | {r['bytes']:,.0f} | {100 * r['refined']:.1f} % "
            f"| {lat} ms |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="tofc two-stage", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="scenes", choices=("scenes", "easyvqa"))
    ap.add_argument("--size", default="1280x720", help="scene frame size WxH")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--skip", type=int, default=0, help="start after this many test scenes (a held-out range)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--codec", required=True, help="the TOFC codec both passes and (a) use")
    ap.add_argument("--all-n-c", type=int, default=16, help="(a): merged tokens per tile")
    ap.add_argument("--all-model", help="(a)'s model, when one pass is deployed with another one (default: --model)")
    ap.add_argument("--first-n-c", type=int, default=4, help="(b), first pass: merged tokens per tile")
    ap.add_argument("--detail-n-c", type=int, default=16, help="the crop's merged tokens per tile")
    ap.add_argument("--max-area", type=float, default=0.1, help="largest region, fraction of the frame")
    ap.add_argument("--dpc-k", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument(
        "--thresholds", default="0,0.005,0.01,0.02,0.05,0.1,0.2,0.3,0.4,0.5,0.6,0.65,0.7,0.8,0.9,1.0,1.2,1.5"
    )
    ap.add_argument("--rtt-ms", type=float, default=40.0, help="round trip of the refinement request (latency model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", help="reuse the per-question rows of an earlier run (rows.json) instead of running")
    ap.add_argument("--out", required=True)
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = json.loads(Path(args.rows).read_text()) if args.rows else run(args)
    (out / "rows.json").write_text(json.dumps(rows))
    thresholds = [float(t) for t in args.thresholds.split(",")]
    measures = ("max_min_entropy", "mean_min_entropy", "max_entropy", "max_one_minus_top")
    tables = {m: sweep(rows, thresholds, m, rtt_ms=args.rtt_ms) for m in measures}
    summary = {
        "questions": len(rows),
        "region_overlaps_an_object": region_hits(rows),
        "refined_everywhere_accuracy": sum(r["refined_ok"] for r in rows) / len(rows),
        "seconds": time.perf_counter() - started,
        "args": vars(args),
        "tables": tables,
    }
    (out / "two_stage.json").write_text(json.dumps(summary, indent=1))
    (out / "table.md").write_text("\n\n".join(f"### {m}\n\n{markdown(t)}" for m, t in tables.items()) + "\n")
    where = f"{args.data} test images {args.skip + 1}-{args.skip + args.images}"
    plot(tables, out / "two_stage.png", f"Two-stage answering, {where} ({len(rows)} questions, deployed objects)")
    print(markdown(tables["max_min_entropy"]))
    print(
        json.dumps({k: summary[k] for k in ("questions", "region_overlaps_an_object", "refined_everywhere_accuracy")})
    )
    return summary


if __name__ == "__main__":
    main()
