"""``tofc points``: write an operating-point bundle for an adaptive device, with priors measured on this machine.

    tofc points --model models/scenes-tiny-ov --codec models/scenes-tiny-ov/tofc_codec.safetensors \\
        --point name=all-fp16-zstd,codec=fp16-zstd,level=3 --point name=tofc-32,codec=tofc,n_c=32 \\
        --point name=tofc-16,codec=tofc,n_c=16 --point name=tofc-8,codec=tofc,n_c=8 \\
        --out models/scenes-tiny-ov/operating_points.safetensors

Points are listed richest first (the policy sends the first one that fits the budget). ``codec=tofc`` points use the
``--codec`` weights (several ``--codec`` files: ``learned=<index>``); other codecs are weightless (fp16, fp16-zstd,
quant-zstd, jpeg, webp with their options: level, bits, quality). The priors (mean payload bytes, device ms, server
ms per point) are measured through the deployed objects (``eval.adaptive.measure``) on the first ``--frames`` images
of the train split of ``--data`` (scenes at ``--size``, or easyvqa), or of a LLaVA/TSV file (``--data-file``); the
device refines them
online. Measure on the robot and server you deploy on, or edit them with ``--prior name=bytes,device_ms,server_ms``.
"""

from __future__ import annotations

import argparse
import dataclasses

from tofc_ros.codec.points import OperatingPoint, OperatingPoints

__all__ = ["parse_point", "main"]

_INT = {"n_c", "level", "bits", "quality", "learned"}


def parse_point(spec: str) -> OperatingPoint:
    """``name=tofc-16,codec=tofc,n_c=16`` -> OperatingPoint (``codec``: a format name, version optional)."""
    from tofc_ros.codec.registry import _resolve

    fields: dict = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not value:
            raise ValueError(f"--point {spec!r}: '{part}' is not key=value")
        fields[key.strip()] = value.strip()
    unknown = set(fields) - {"name", "codec"} - _INT
    if unknown or "name" not in fields or "codec" not in fields:
        raise ValueError(f"--point {spec!r}: needs name= and codec=, and knows n_c, level, bits, quality, learned")
    try:
        ints = {k: int(v) for k, v in fields.items() if k in _INT}
    except ValueError:
        raise ValueError(f"--point {spec!r}: n_c, level, bits, quality and learned are integers") from None
    fmt = _resolve(fields["codec"])
    learned = ints.pop("learned", 0 if fmt == "tofc/1" else -1)
    n_c = ints.pop("n_c", 0)
    return OperatingPoint(fields["name"], fmt, n_c, ints, learned)


def main(argv: list[str] | None = None) -> int:
    from tofc_ros.codec import load_codec
    from tofc_ros.eval.adaptive import measure, priors_from

    ap = argparse.ArgumentParser(prog="tofc points", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="llava-hf checkpoint directory the points run with")
    ap.add_argument("--codec", action="append", default=[], help="TOFC weights (.safetensors), in learned= order")
    ap.add_argument("--point", action="append", required=True, help="name=...,codec=...[,n_c=..] (richest first)")
    ap.add_argument("--out", required=True, help="bundle to write (.safetensors)")
    ap.add_argument("--frames", type=int, default=5, help="frames the priors are measured on")
    ap.add_argument("--data", default="scenes", choices=("scenes", "easyvqa"), help="train split to measure on")
    ap.add_argument("--size", default="1280x720", help="scene frame size WxH (--data scenes)")
    ap.add_argument("--data-file", default=None, help="measure on a LLaVA JSON/JSONL or VLMEvalKit TSV file's images")
    args = ap.parse_args(argv)
    bundle = OperatingPoints([parse_point(p) for p in args.point], [load_codec(c) for c in args.codec])
    if args.data_file:
        from tofc_ros.eval.rate_accuracy import load_eval_file

        items = load_eval_file(args.data_file)[: args.frames]
    elif args.data == "easyvqa":
        from tofc_ros.data import easyvqa

        items = easyvqa.load_split("train")[: args.frames]
    else:
        from tofc_ros.data import scenes

        w, _, h = args.size.partition("x")
        items = scenes.load_split("train", args.frames, sizes=((int(w), int(h)),))
    priors = {p.name: p for p in priors_from(measure(bundle, args.model, items, first_question_only=True))}
    points = [
        dataclasses.replace(
            p,
            bytes=round(priors[p.name].bytes, 1),
            device_ms=round(priors[p.name].device_ms, 1),
            server_ms=round(priors[p.name].server_ms, 1),
        )
        for p in bundle.points
    ]
    OperatingPoints(points, bundle.codecs).save(args.out)
    for p in points:
        print(
            f"{p.name:20s} {p.codec:12s} n_c {p.n_c:4d} {p.bytes:12,.0f} B  device {p.device_ms:8.1f} ms  "
            f"server {p.server_ms:8.1f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
