#!/usr/bin/env python3
"""DPC-KNN merging of this tree against an earlier commit's, on the bundled model's real features (issue 14).

    .venv/bin/python bench/merge_versions.py --ref f7c300c --images 10 --reps 30 --threads 1

The earlier ``tofc_ros/codec/merging.py`` is read with ``git show REF:...`` and loaded as a separate module, so both
versions run in one process, interleaved (the order flips every round), on the same inputs. Reports how often centres
and assignments agree and the largest difference of the merged features, for two inputs per test image: the float32
vision features that ``FeatureEncoder`` merges on the device, and the same features rounded to float16 (as the server
receives the raw-fp16 point), whose repeated values make exact ties likelier. Where a tile's centres agree but tokens
went to another centre, it reports how close the two centres were for those tokens (relative gap of their float64
distances) and how often this version picked the nearer one. Then the time per image of each version on the float32
features (medians and the median of paired ratios).

A micro-benchmark of one stage: it calls the device half's ``encode_image`` directly to get the merge's exact input
(the deployed ``FeatureEncoder`` does not hand out its unmerged features).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tofc_ros.codec.merging import dpc_knn_merge
from tofc_ros.data.easyvqa import load_split
from tofc_ros.eval.deployment import Deployment, Point


def load_reference(ref: str):
    """The ``dpc_knn_merge`` of ``tofc_ros/codec/merging.py`` at git commit ``ref``."""
    text = subprocess.run(
        ["git", "show", f"{ref}:tofc_ros/codec/merging.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(text)
    spec = importlib.util.spec_from_file_location(f"merging_{ref}", f.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    Path(f.name).unlink()
    return module.dpc_knn_merge


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", default="f7c300c", help="git commit of the reference merging.py")
    ap.add_argument("--model", default="models/easyvqa-tiny-ov")
    ap.add_argument("--images", type=int, default=108, help="first N test images for the agreement check")
    ap.add_argument("--time-images", type=int, default=10, help="first N of them for the timing")
    ap.add_argument("--n-c", type=int, default=16)
    ap.add_argument("--reps", type=int, default=30, help="timed rounds over all images")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ref_merge = load_reference(args.ref)
    point = Point("raw fp16 (all tokens)", "fp16", "features", "fp16/1", args.model)
    deployment = Deployment([point])
    device_half = deployment.halves(args.model)[0]
    items = load_split("test")[: args.images]
    agreement = {}
    with torch.inference_mode():
        feats = [device_half.encode_image(i.rgb()).features.float() for i in items]
        for name, inputs in (("float32", feats), ("float16", [x.half().float() for x in feats])):
            same_centres = same_assignment = 0
            max_diff = 0.0
            gaps, this_nearer = [], 0
            for x in inputs:
                a, b = ref_merge(x, args.n_c), dpc_knn_merge(x, args.n_c)
                same_centres += bool(torch.equal(a.centres, b.centres))
                same_assignment += bool(torch.equal(a.assignment, b.assignment))
                max_diff = max(max_diff, float((a.merged - b.merged).abs().max()))
                for t in range(x.shape[0]):  # tiles with the same centres whose tokens went to another one
                    if torch.equal(a.centres[t], b.centres[t]) and not torch.equal(a.assignment[t], b.assignment[t]):
                        xt = x[t].double()
                        dist = torch.cdist(xt, xt[b.centres[t]])  # float64 distances to the centres
                        for i in (a.assignment[t] != b.assignment[t]).nonzero().flatten().tolist():
                            d_ref, d_this = dist[i, a.assignment[t][i]], dist[i, b.assignment[t][i]]
                            gaps.append(float((d_ref - d_this).abs() / d_this.clamp_min(1e-30)))
                            this_nearer += bool(d_this <= d_ref)
            agreement[name] = {
                "same_centres": same_centres,
                "same_assignment": same_assignment,
                "max_abs_merged_difference": max_diff,
                "tokens_assigned_otherwise_under_equal_centres": len(gaps),
                "their_relative_distance_gap_median": statistics.median(gaps) if gaps else None,
                "their_relative_distance_gap_max": max(gaps) if gaps else None,
                "this_version_picks_the_float64_nearer_centre": this_nearer,
            }
        timed = feats[: args.time_images]
        for x in timed:  # warm-up
            ref_merge(x, args.n_c), dpc_knn_merge(x, args.n_c)
        t_ref, t_new = [], []
        for r in range(args.reps):
            for x in timed:
                pairs = ((ref_merge, t_ref), (dpc_knn_merge, t_new))
                for fn, out in pairs if r % 2 == 0 else pairs[::-1]:
                    t = time.perf_counter()
                    fn(x, args.n_c)
                    out.append((time.perf_counter() - t) * 1e3)
    result = {
        "ref": args.ref,
        "shape": list(feats[0].shape),
        "images": len(feats),
        "agreement": agreement,
        "timed_images": len(timed),
        "ref_ms_per_image": statistics.median(t_ref),
        "this_ms_per_image": statistics.median(t_new),
        "paired_ratio_median": statistics.median(n / o for n, o in zip(t_new, t_ref)),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
