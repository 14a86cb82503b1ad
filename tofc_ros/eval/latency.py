"""Latency model after TOFC's Fig. 8: per question, device time + bytes / uplink rate + server time.

    python -m tofc_ros.eval.latency --model models/easyvqa-tiny-ov \
        --codec models/easyvqa-tiny-ov/tofc_codec.safetensors --images 20 --out bench/results/latency

Modes (each answers the same questions with the same model):
    tofc        device: vision tower + DPC-KNN (n_c) + TOFC encode        server: decode + projector + LLM
    jpeg q / webp q   device: image encode                                server: image decode + vision tower + LLM
    raw image   device: nothing (uint8 RGB, H·W·3 bytes)                  server: vision tower + LLM
Device and server times are medians measured on *this* machine (both halves run here, one after the other); the
transfer term is payload bytes × 8 / rate (no protocol overhead, no propagation delay). The LLM time is one greedy
``ServerHalf.generate`` per question (prefill + answer tokens).

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

from tofc_ros.eval.easyvqa import load_split

__all__ = ["measure", "model_latency", "main"]


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


@torch.inference_mode()
def measure(model: str, codec_path: str, n_c: int, images: int, jpeg_q: int, webp_q: int) -> dict:
    """Median device ms, server ms and payload bytes per mode over the first ``images`` test images."""
    from tofc_ros.backbones import GenerationOptions, load_device_half, load_server_half
    from tofc_ros.codec import dpc_knn_merge, load_codec

    dev = load_device_half(model)
    srv = load_server_half(model, load_vision=True)
    tofc = load_codec(codec_path)
    jpeg, webp = load_codec("jpeg/1", quality=jpeg_q), load_codec("webp/1", quality=webp_q)
    opts = GenerationOptions(max_new_tokens=8)
    items = load_split("test")[:images]
    rows: dict[str, dict[str, list[float]]] = {}

    def add(mode, device_ms, nbytes, server_ms):
        r = rows.setdefault(mode, {"device_ms": [], "bytes": [], "server_ms": []})
        r["device_ms"].append(device_ms)
        r["bytes"].append(nbytes)
        r["server_ms"].append(server_ms)

    # warm-up (first calls allocate and fill caches)
    rgb0 = items[0].rgb()
    vf0 = dev.encode_image(rgb0)
    srv.answer(vf0.features, vf0.grid, vf0.image_size, items[0].questions[0], opts)
    for item in items:
        rgb, question = item.rgb(), item.questions[0]
        t0 = time.perf_counter()
        vf = dev.encode_image(rgb)
        merged = dpc_knn_merge(vf.features.float(), n_c).merged
        payload = tofc.encode(merged)
        d_ms = _ms(t0)
        t1 = time.perf_counter()
        x = tofc.decode(payload)
        srv.answer(x, vf.grid, vf.image_size, question, opts)
        add(f"tofc n_c={n_c}", d_ms, len(payload), _ms(t1))
        for name, codec in ((f"jpeg q={jpeg_q}", jpeg), (f"webp q={webp_q}", webp)):
            t0 = time.perf_counter()
            payload = codec.encode(rgb)
            d_ms = _ms(t0)
            t1 = time.perf_counter()
            vfs = srv.encode_image(codec.decode(payload))
            srv.answer(vfs.features, vfs.grid, vfs.image_size, question, opts)
            add(name, d_ms, len(payload), _ms(t1))
        t1 = time.perf_counter()
        vfs = srv.encode_image(np.ascontiguousarray(rgb))
        srv.answer(vfs.features, vfs.grid, vfs.image_size, question, opts)
        add("raw image", 0.0, rgb.nbytes, _ms(t1))
    return {mode: {k: statistics.median(v) for k, v in r.items()} for mode, r in rows.items()}


def model_latency(measured: dict, rates_mbps=(1.0, 10.0, 100.0)) -> dict:
    """Per rate and mode: device, transfer (bytes·8/rate) and server milliseconds and their total."""
    out = {}
    for rate in rates_mbps:
        out[f"{rate:g} Mbps"] = {
            mode: {"device_ms": m["device_ms"], "transfer_ms": m["bytes"] * 8 / (rate * 1e6) * 1e3,
                   "server_ms": m["server_ms"],
                   "total_ms": m["device_ms"] + m["bytes"] * 8 / (rate * 1e6) * 1e3 + m["server_ms"]}
            for mode, m in measured.items()}
    return out


def _plot(model: dict, path: Path) -> None:
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
    fig.suptitle("Latency model: measured device/server times (2-core CPU, this machine) + bytes/uplink", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/easyvqa-tiny-ov")
    ap.add_argument("--codec", default="models/easyvqa-tiny-ov/tofc_codec.safetensors")
    ap.add_argument("--n-c", type=int, default=16)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--jpeg", type=int, default=50)
    ap.add_argument("--webp", type=int, default=50)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="bench/results/latency")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    measured = measure(args.model, args.codec, args.n_c, args.images, args.jpeg, args.webp)
    lat = model_latency(measured)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"measured_on": "this machine (2-core CPU, shared), torch threads = %d" % torch.get_num_threads(),
            "images": args.images, "measured_median": measured, "model": lat}
    (out / "latency.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    _plot(lat, out / "latency.png")
    print(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
