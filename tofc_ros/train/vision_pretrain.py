"""Stage 0 of the bundled model: pre-train the vision tower to see the object (its shape and colour).

Real LLaVA models start from a vision tower pre-trained elsewhere (SigLIP on WebLI); nothing can be downloaded here,
so the tiny tower gets its pre-training from the easy-vqa *training* images: a linear head on the per-image mean of
the tower's output tokens classifies the object's shape (3 classes) and colour (8), labels read from the training
questions' answers (``easyvqa.object_label``; images no question names are skipped for that head). The head is
thrown away afterwards; the tower is what the VQA stage starts from.

Why it is needed (BENCHMARKS.md, issue 6): trained end to end from scratch on the VQA loss, the model learned colours
but settled at chance-level shape answers for thousands of steps, with a tiny language model that never learns to
attend to the few edge tokens. The mean-pooled head instead makes the tower *spread* the shape over all its tokens,
which evenly spread attention can read. With the mean-pooled head the shape accuracy also sits at chance for ~150
steps, then rises to ~95 % within a few hundred more.

Augmentation: horizontal flips (shape and colour labels are invariant).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tofc_ros.data.easyvqa import COLOURS, SHAPES, VQAImage, object_label
from tofc_ros.train.common import PixelPath, cosine_lr, timer

__all__ = ["VisionPretrainConfig", "object_labels", "pretrain_vision", "evaluate_vision"]


@dataclass(frozen=True)
class VisionPretrainConfig:
    """Keys under ``vision_pretrain:`` in configs/train_easyvqa_base.yaml (steps 0: skip the stage)."""

    steps: int = 0
    batch_images: int = 32
    lr: float = 2e-3
    warmup_steps: int = 50
    final_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    hflip: bool = True
    log_every: int = 25
    eval_images: int = 1000  # test images scored at the end of the stage (reported only)


def object_labels(items: list[VQAImage]) -> tuple[torch.Tensor, torch.Tensor]:
    """(shape, colour) class indices per image; -100 (cross-entropy's ignore index) where no question names it."""
    shape = [object_label(it, SHAPES) for it in items]
    colour = [object_label(it, COLOURS) for it in items]
    as_tensor = lambda v: torch.tensor([-100 if x is None else x for x in v], dtype=torch.long)
    return as_tensor(shape), as_tensor(colour)


def _pooled(model, pixels: PixelPath, items: list[VQAImage], flip: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the tokens of each image's (first) tile of the vision features the LM will see: [B, d]."""
    tiles = []
    for i, item in enumerate(items):
        rgb = item.rgb()
        if flip is not None and bool(flip[i]):
            rgb = np.ascontiguousarray(rgb[:, ::-1])
        px, _, _, _ = pixels.tiles(rgb)
        tiles.append(px[:1])
    return model.vision_features(torch.cat(tiles).to(model.device_)).mean(1)


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    keep = labels >= 0
    return int((logits[keep].argmax(-1) == labels[keep]).sum()), int(keep.sum())


@torch.no_grad()
def evaluate_vision(model, head: torch.nn.Linear, items: list[VQAImage], batch: int = 50) -> dict:
    """Shape and colour accuracy of the stage's linear head on ``items`` (labelled images only)."""
    pixels = PixelPath(model.device_half)
    ys, yc = object_labels(items)
    counts = np.zeros(4, dtype=np.int64)
    for s in range(0, len(items), batch):
        z = head(_pooled(model, pixels, items[s : s + batch]))
        counts += (
            *_accuracy(z[:, : len(SHAPES)], ys[s : s + batch]),
            *_accuracy(z[:, len(SHAPES) :], yc[s : s + batch]),
        )
    return {
        "shape": counts[0] / max(counts[1], 1),
        "shape_images": int(counts[1]),
        "colour": counts[2] / max(counts[3], 1),
        "colour_images": int(counts[3]),
    }


def pretrain_vision(
    model,
    cfg: VisionPretrainConfig,
    train: list[VQAImage],
    test: list[VQAImage] | None,
    seed: int,
    log=None,
    progress: bool = True,
) -> dict:
    """Train ``model``'s vision tower (and a throw-away head) for ``cfg.steps``; returns a summary dict."""
    if cfg.steps <= 0:
        return {"steps": 0}
    ys, yc = object_labels(train)
    d = model.vision_core.config.hidden_size
    head = torch.nn.Linear(d, len(SHAPES) + len(COLOURS)).to(model.device_)
    params = [p for p in model.vision_core.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    pixels = PixelPath(model.device_half)
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, desc="vision pre-train", dynamic_ncols=True)
    model.vision_core.train()
    t0 = timer()
    run = np.zeros(5)  # loss, shape hits, shape n, colour hits, colour n
    for step in range(cfg.steps):
        if len(order) < cfg.batch_images:
            order += torch.randperm(len(train), generator=gen).tolist()
        idx = order[: cfg.batch_images]
        del order[: cfg.batch_images]
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, cfg.steps, cfg.warmup_steps, cfg.lr, cfg.final_lr_ratio)
        flip = torch.rand(len(idx), generator=gen) < 0.5 if cfg.hflip else None
        z = head(_pooled(model, pixels, [train[i] for i in idx], flip))
        a, b = ys[idx].to(z.device), yc[idx].to(z.device)
        loss = F.cross_entropy(z[:, : len(SHAPES)], a, ignore_index=-100) + F.cross_entropy(
            z[:, len(SHAPES) :], b, ignore_index=-100
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        run += (
            float(loss.detach()),
            *_accuracy(z.detach()[:, : len(SHAPES)], a),
            *_accuracy(z.detach()[:, len(SHAPES) :], b),
        )
        if bar is not None:
            bar.update(1)
        if log is not None and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
            n = (step % cfg.log_every) + 1
            log.write(
                stage="vision",
                step=step + 1,
                loss=run[0] / n,
                shape_acc=run[1] / max(run[2], 1),
                colour_acc=run[3] / max(run[4], 1),
                elapsed_s=timer() - t0,
            )
            run[:] = 0
    if bar is not None:
        bar.close()
    model.vision_core.eval()
    summary = {"steps": cfg.steps, "seconds": round(timer() - t0, 1)}
    if test:
        summary["test"] = evaluate_vision(model, head, test[: cfg.eval_images])
    return summary
