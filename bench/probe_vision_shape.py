"""Linear probes on a trained model's vision features: is the shape of the easy-vqa object in them at all?

Diagnoses where the bundled model's shape errors come from (issue 6). The language model can only answer what the
vision features carry, so a linear classifier for the object's shape (circle / rectangle / triangle) is trained on
features pooled over the 729 tokens of the image's tile (mean; mean + max + min) of training images and scored on test
images. Colour is probed the same way as a control. Chance is ~33 % for shapes.

The features are the ones the server receives from the deployed objects (``tofc_ros.eval.deployment``): the device
node's ``FeatureEncoder`` sends every token (no merging) as float16 and the server's ``FrameDecoder`` decodes them.

    .venv/bin/python bench/probe_vision_shape.py --model models/easyvqa-tiny-ov-base --out /tmp/probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tofc_ros.data.easyvqa import COLOURS, SHAPES, VQAImage, load_split, object_label
from tofc_ros.eval.deployment import Deployment, Point


def all_tokens_point(model: str) -> Point:
    """Every vision token of every tile, sent as float16 (the rate-accuracy table's raw fp16 point)."""
    return Point("raw fp16 (all tokens)", "fp16", "features", "fp16/1", model)


@torch.inference_mode()
def pooled_features(deployment: Deployment, point: Point, items: list[VQAImage]) -> torch.Tensor:
    """[B, 3d]: mean, max and min over the tokens of each image's first tile, as the server decodes them."""
    encoder = deployment.encoder(point)
    decoder, _ = deployment.server(point.model)
    out = []
    for item in tqdm(items, desc="features", leave=False):
        f = decoder.decode(encoder.encode(item.rgb()).payload).features[0].float()
        out.append(torch.cat([f.mean(0), f.amax(0), f.amin(0)]))
    return torch.stack(out)


def linear_probe(x_train, y_train, x_test, y_test, classes: int, steps: int = 500) -> dict:
    """Multinomial logistic regression (Adam, full batch, standardised inputs); train and test accuracy."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    torch.manual_seed(0)
    head = torch.nn.Linear(x_train.shape[1], classes)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(x_train), y_train).backward()
        opt.step()
    with torch.no_grad():
        acc = lambda x, y: round(float((head(x).argmax(1) == y).float().mean()), 4)
        return {"train": acc(x_train, y_train), "test": acc(x_test, y_test)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/easyvqa-tiny-ov-base")
    ap.add_argument("--train-images", type=int, default=1500)
    ap.add_argument("--test-images", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    point = all_tokens_point(args.model)
    deployment = Deployment([point])
    data = {}
    for split, n in (("train", args.train_images), ("test", args.test_images)):
        items = [
            it
            for it in load_split(split)
            if object_label(it, SHAPES) is not None and object_label(it, COLOURS) is not None
        ][:n]
        data[split] = (
            pooled_features(deployment, point, items),
            torch.tensor([object_label(it, SHAPES) for it in items]),
            torch.tensor([object_label(it, COLOURS) for it in items]),
        )
    d = data["train"][0].shape[1] // 3
    result = {"model": args.model, "train_images": len(data["train"][1]), "test_images": len(data["test"][1])}
    for target, col, classes in (("shape", 1, len(SHAPES)), ("colour", 2, len(COLOURS))):
        for pool, sl in (("mean", slice(0, d)), ("mean+max+min", slice(None))):
            result[f"{target}/{pool}"] = linear_probe(
                data["train"][0][:, sl], data["train"][col], data["test"][0][:, sl], data["test"][col], classes
            )
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
