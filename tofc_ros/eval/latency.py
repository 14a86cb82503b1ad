"""Latency model after TOFC's Fig. 8: per question, device time + bytes / uplink rate + server time.

    python -m tofc_ros.eval.latency --model models/easyvqa-tiny-ov \
        --codec models/easyvqa-tiny-ov/tofc_codec.safetensors --images 20 --out bench/results/latency
    python -m tofc_ros.eval.latency --data scenes --size 1280x720 --model models/scenes-tiny-ov \
        --codec models/scenes-tiny-ov/tofc_codec.safetensors --images 10 --out bench/results/scenes_latency

Modes (each answers the same questions with the same model, through the deployed objects: the device node's
encoder, the server node's decoder and answerer, see ``eval.deployment``):
    tofc        device: vision tower + DPC-KNN (n_c) + TOFC encode        server: decode + projector + LLM
    alignedvq   device: embeddings + blocks 1..X (+ DPC-KNN) + VQ encode  server: decode + blocks X+1..k + projector
                                                                                  + LLM   (--alignedvq, repeatable)
    jpeg q / webp q   device: image encode                                server: image decode + vision tower + LLM
    raw image   device: rgb8 container (H·W·3 bytes + 72)                 server: vision tower + LLM
Device and server times are medians measured on *this* machine (both halves run here, one after the other); the
transfer term is payload bytes × 8 / rate (no protocol overhead, no propagation delay). The LLM time is one greedy
``ModelAnswerer.answer`` per question (prefill + answer tokens).

Outputs: latency.json and latency.png (stacked bars: device / transfer / server at 1, 10 and 100 Mbps).
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

from tofc_ros.eval.deployment import Deployment, Point
from tofc_ros.eval.rate_accuracy import test_items

__all__ = ["measure", "model_latency", "plot_latency", "main"]


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


@torch.inference_mode()
def measure(
    model: str,
    codec_path: str,
    n_c: int,
    images: int,
    jpeg_q: int,
    webp_q: int,
    data: str = "easyvqa",
    size: str | None = None,
    max_new_tokens: int = 8,
    extra: list[Point] = (),
) -> dict:
    """Median device ms, server ms and payload bytes per mode over the first ``images`` test images.

    ``extra``: more points (e.g. AlignedVQ, each with its own model directory), measured the same way.
    """
    from tofc_ros.backbones import GenerationOptions

    modes = [
        Point(f"tofc n_c={n_c}", "tofc", "features", codec_path, model, n_c=n_c),
        *extra,
        Point(f"jpeg q={jpeg_q}", "jpeg", "image", "jpeg/1", model, {"quality": jpeg_q}),
        Point(f"webp q={webp_q}", "webp", "image", "webp/1", model, {"quality": webp_q}),
        Point("raw image", "rgb8", "image", "rgb8/1", model),
    ]
    deployment = Deployment(modes, GenerationOptions(max_new_tokens=max_new_tokens))
    servers = {p.name: deployment.server(p.model) for p in modes}
    encoders = {p.name: deployment.encoder(p) for p in modes}
    items = test_items(data, None, size, images)[:images]
    rows: dict[str, dict[str, list[float]]] = {}
    # warm-up (first calls allocate and fill caches)
    for name, enc in encoders.items():
        decoder, answerer = servers[name]
        answerer.answer(decoder.decode(enc.encode(items[0].rgb()).payload), items[0].questions[0])
    for item in items:
        rgb, question = item.rgb(), item.questions[0]
        for name, enc in encoders.items():
            decoder, answerer = servers[name]
            t0 = time.perf_counter()
            payload = enc.encode(rgb).payload
            t1 = time.perf_counter()
            answerer.answer(decoder.decode(payload), question)
            r = rows.setdefault(name, {"device_ms": [], "bytes": [], "server_ms": []})
            r["device_ms"].append((t1 - t0) * 1e3)
            r["bytes"].append(len(payload))
            r["server_ms"].append(_ms(t1))
    return {mode: {k: statistics.median(v) for k, v in r.items()} for mode, r in rows.items()}


def model_latency(measured: dict, rates_mbps=(1.0, 10.0, 100.0)) -> dict:
    """Per rate and mode: device, transfer (bytes·8/rate) and server milliseconds and their total."""
    out = {}
    for rate in rates_mbps:
        out[f"{rate:g} Mbps"] = {
            mode: {
                "device_ms": m["device_ms"],
                "transfer_ms": m["bytes"] * 8 / (rate * 1e6) * 1e3,
                "server_ms": m["server_ms"],
                "total_ms": m["device_ms"] + m["bytes"] * 8 / (rate * 1e6) * 1e3 + m["server_ms"],
            }
            for mode, m in measured.items()
        }
    return out


def plot_latency(model: dict, path: Path, title: str | None = None) -> None:
    """Stacked bars (device / transfer / server) per mode, one panel per uplink rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = list(model)
    modes = list(next(iter(model.values())))
    fig, axes = plt.subplots(1, len(rates), figsize=(4.2 * len(rates), 4.2), sharey=False)
    for ax, rate in zip(np.atleast_1d(axes), rates):
        x = np.arange(len(modes))
        dev = [model[rate][m]["device_ms"] for m in modes]
        tra = [model[rate][m]["transfer_ms"] for m in modes]
        ser = [model[rate][m]["server_ms"] for m in modes]
        ax.bar(x, dev, label="device", color="#4c72b0")
        ax.bar(x, tra, bottom=dev, label="transfer", color="#dd8452")
        ax.bar(x, ser, bottom=np.add(dev, tra), label="server", color="#55a868")
        ax.set_xticks(x, modes, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"uplink {rate}")
        ax.set_ylabel("ms per question")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle(
        title or "Latency model: measured device/server times (2-core CPU, this machine) + bytes/uplink", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/easyvqa-tiny-ov")
    ap.add_argument("--codec", default="models/easyvqa-tiny-ov/tofc_codec.safetensors")
    ap.add_argument("--n-c", type=int, default=16)
    ap.add_argument("--alignedvq", action="append", default=[], help="AlignedVQ codec or training run; repeatable")
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--jpeg", type=int, default=50)
    ap.add_argument("--webp", type=int, default=50)
    ap.add_argument("--data", choices=("easyvqa", "scenes"), default="easyvqa")
    ap.add_argument("--size", default=None, help="scenes: frame size WxH (e.g. 1280x720)")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="bench/results/latency")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from tofc_ros.eval.rate_accuracy import alignedvq_point

    extra = [alignedvq_point(spec, args.model) for spec in args.alignedvq]
    measured = measure(
        args.model,
        args.codec,
        args.n_c,
        args.images,
        args.jpeg,
        args.webp,
        args.data,
        args.size,
        args.max_new_tokens,
        extra,
    )
    lat = model_latency(measured)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "measured_on": f"this machine (2-core CPU, shared), torch threads = {torch.get_num_threads()}",
        "images": args.images,
        "data": args.data,
        "size": args.size,
        "model_dir": args.model,
        "measured_median": measured,
        "model": lat,
    }
    (out / "latency.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    plot_latency(lat, out / "latency.png")
    print(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
