"""The latency model (TOFC Fig. 8) with full-size halves: SigLIP-SO400M + a Qwen2-0.5B-shaped LM, random weights.

    python bench/full_size_latency.py --bytes-from bench/results/scenes_latency/latency.json \
        --out bench/results/scenes_latency_full_size [--images 1] [--keep DIR]

Times: ``eval.latency.measure`` (the deployed encoder, decoder and answerer, the same modes and questions as the tiny
scene model's run) on a random llava-hf checkpoint of LLaVA-OneVision-0.5B's architecture
(``backbones.random_checkpoint``) with an untrained TOFC codec of its width (1152). Bytes: random features and an
untrained codec say nothing about the rate, so each mode's payload bytes are taken from ``--bytes-from`` (the trained
tiny scene model's run: medians over its frames, the first of which are the ones timed here). What was measured here
is kept in the output (``bytes_measured_here``), so the substitution is visible.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tofc_ros.eval.latency import measure, model_latency, plot_latency


def write_model(out: Path) -> tuple[str, str]:
    """A random full-size checkpoint and an untrained TOFC codec of its feature width, under ``out``."""
    from tofc_ros.backbones.random_checkpoint import save_random_checkpoint
    from tofc_ros.codec import HyperpriorConfig, SelectiveEntropyModel, save_model

    model = save_random_checkpoint(out / "model")
    torch.manual_seed(0)  # the codec's bytes are not used (see the module docstring); any initialisation serves
    codec = SelectiveEntropyModel(HyperpriorConfig(d=1152))
    codec.update()
    save_model(codec.eval(), out / "codec.safetensors")
    return str(model), str(out / "codec.safetensors")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bytes-from", required=True, help="latency.json of the trained tiny model on the same frames")
    ap.add_argument("--out", default="bench/results/scenes_latency_full_size")
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--keep", default=None, help="write the checkpoint here and keep it (default: a temp dir)")
    args = ap.parse_args(argv)
    reference = json.loads(Path(args.bytes_from).read_text(encoding="utf-8"))
    ref = reference["measured_median"]
    jpeg_q = int(next(m for m in ref if m.startswith("jpeg")).split("=")[1])
    webp_q = int(next(m for m in ref if m.startswith("webp")).split("=")[1])
    n_c = int(next(m for m in ref if m.startswith("tofc")).split("=")[1])
    with tempfile.TemporaryDirectory() as tmp:
        model, codec = write_model(Path(args.keep or tmp))
        measured = measure(
            model, codec, n_c, args.images, jpeg_q, webp_q, reference["data"], reference["size"], max_new_tokens=8
        )
    for mode, m in measured.items():
        m["bytes_measured_here"] = m["bytes"]
        m["bytes"] = ref[mode]["bytes"]  # medians over the reference's frames (image modes: the same codecs)
    lat = model_latency(measured)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "measured_on": f"this machine (2-core CPU), torch threads = {torch.get_num_threads()}",
        "backbone": "LLaVA-OneVision-0.5B architecture (SigLIP-SO400M 26 layers, Qwen2-0.5B), random weights, fp32",
        "images": args.images,
        "data": reference["data"],
        "size": reference["size"],
        "bytes_from": args.bytes_from,
        "measured_median": measured,
        "model": lat,
    }
    (out / "latency.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    plot_latency(
        lat,
        out / "latency.png",
        "Latency model, full-size halves (SigLIP-SO400M + Qwen2-0.5B shape, random weights) timed on a 2-core CPU;"
        " bytes from the trained tiny scene model",
    )
    print(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
