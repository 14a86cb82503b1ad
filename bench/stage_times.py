#!/usr/bin/env python3
"""CPU time of each stage of one TOFC frame, runnable from a snapshot of any commit since issue 6 (issue 14).

    (cd SNAPSHOT && PYTHONPATH=. /work/main/.venv/bin/python /work/main/bench/stage_times.py --threads 1)

SNAPSHOT is ``git archive COMMIT | tar -x -C DIR`` (the bundled model comes with it). Per frame of the first test
images: the device half's vision tower (preprocess + tower), DPC-KNN merging to n_c, TOFC encode, TOFC decode and
the server's answer from the decoded features; and for a JPEG (q 50) payload, its decode, the server's vision tower
and the answer from those features. Medians of process CPU time (less sensitive than wall time to other jobs on a
shared machine, not immune); answers as the latency model generates them (greedy, at most 8 new tokens).

A micro-benchmark that builds the chain by hand on purpose: it has to run in trees older than the deployed objects
(``tofc_ros.eval.deployment``), so it uses only the calls every version has. The whole-chain figures come from
``tofc_ros.eval.latency``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/easyvqa-tiny-ov")
    ap.add_argument("--codec", default="models/easyvqa-tiny-ov/tofc_codec.safetensors")
    ap.add_argument("--n-c", type=int, default=16)
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--reps", type=int, default=6, help="rounds over the images (the first round is not counted)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from tofc_ros.backbones import GenerationOptions, load_device_half, load_server_half
    from tofc_ros.codec import dpc_knn_merge, load_codec

    try:
        from tofc_ros.data.easyvqa import load_split
    except ImportError:  # before issue 14 the data sets lived in tofc_ros.eval
        from tofc_ros.eval.easyvqa import load_split

    device_half = load_device_half(args.model)
    server_half = load_server_half(args.model, load_vision=True)
    codec = load_codec(args.codec)
    jpeg = load_codec("jpeg/1", quality=50)
    options = GenerationOptions(max_new_tokens=8)
    stages = ["vision", "merge", "encode", "decode", "answer", "jpeg_decode", "server_vision", "jpeg_answer"]
    times: dict[str, list[float]] = {stage: [] for stage in stages}

    @contextlib.contextmanager
    def timed(stage: str, keep: bool):
        start = time.process_time()
        yield
        if keep:
            times[stage].append((time.process_time() - start) * 1e3)

    items = load_split("test")[: args.images]
    with torch.inference_mode():
        for rep in range(args.reps):
            keep = rep > 0  # the first round warms up
            for item in items:
                rgb, question = item.rgb(), item.questions[0]
                with timed("vision", keep):
                    vision = device_half.encode_image(rgb)
                    features = vision.features.float()
                with timed("merge", keep):
                    merged = dpc_knn_merge(features, args.n_c).merged
                with timed("encode", keep):
                    payload = codec.encode(merged)
                with timed("decode", keep):
                    decoded = codec.decode(payload)
                with timed("answer", keep):
                    server_half.answer(decoded, vision.grid, vision.image_size, question, options)
                image_payload = jpeg.encode(rgb)
                with timed("jpeg_decode", keep):
                    image = jpeg.decode(image_payload)
                with timed("server_vision", keep):
                    sv = server_half.encode_image(image)
                with timed("jpeg_answer", keep):
                    server_half.answer(sv.features, sv.grid, sv.image_size, question, options)
    result = {
        "tree": os.getcwd(),
        "cpu_ms_median": {k: round(statistics.median(v), 2) for k, v in times.items()},
        "payload_bytes": len(payload),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
