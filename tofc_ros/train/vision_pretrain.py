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

__all__ = [
    "VisionPretrainConfig",
    "object_labels",
    "pretrain_vision",
    "evaluate_vision",
    "N_PATCH_CLASSES",
    "patch_labels",
    "pretrain_vision_dense",
    "evaluate_dense",
]


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
    # Scenes (patch labels): tiles trained per frame (the thumbnail, those with objects, then random others), the
    # weight of background patches, and worker processes rendering and tiling frames while the tower trains.
    tiles_per_frame: int = 4
    background_weight: float = 0.1
    loader_workers: int = 1
    # Curriculum: object-centred tiles zoomed zoom_start x, shrinking linearly to 1 x (the grid tiles' scale) over
    # the first zoom_fraction of the steps; after that, the processor's own tiles. zoom_start 1: no curriculum.
    zoom_start: float = 1.0
    zoom_fraction: float = 0.5


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


# ------------------------------------------------------------------------------------------------ dense (scenes)
# Camera-resolution scenes hold 1-3 small objects on a photo: a per-image label cannot say which tokens to look at.
# Every patch is labelled instead, from the scene's own object map (tofc_ros.data.scenes): background, or the
# (shape, colour) of the object covering at least ``min_cover`` of the patch. Three heads read the tower's tokens:
#   colour:  each token: background, or the colour of the object it shows;
#   shape:   each *edge* token (an object covers part of it, ``edge_cover``): the object's shape. A patch inside a
#            shape looks the same for every shape; the outline through an edge patch (straight, slanted, curved, a
#            corner) is the local cue the 14-px patch embedding can learn;
#   objects: the mean of an object's tokens in a tile -> its shape and colour: the tower must carry the outline's
#            evidence into all of the object's tokens, which is what a DPC-KNN cluster of them sends to the LLM.

N_PATCH_CLASSES = 1 + len(SHAPES) * len(COLOURS)  # 0 background, 1 + shape * 8 + colour


def _labels_for_boxes(index: np.ndarray, objects, boxes: np.ndarray, min_cover: float):
    """Class and cover of patches with frame boxes [..., 4] (y0, x0, y1, x1; NaN rows: padding) over an object map."""
    h, w = index.shape
    valid = ~np.isnan(boxes[..., 0])
    b = np.where(valid[..., None], boxes, 0.0)
    y0 = np.floor(b[..., 0]).astype(np.int64).clip(0, h)
    x0 = np.floor(b[..., 1]).astype(np.int64).clip(0, w)
    y1 = np.ceil(b[..., 2]).astype(np.int64).clip(0, h)
    x1 = np.ceil(b[..., 3]).astype(np.int64).clip(0, w)
    area = np.maximum((np.ceil(b[..., 2]) - np.floor(b[..., 0])) * (np.ceil(b[..., 3]) - np.floor(b[..., 1])), 1)
    labels = np.zeros(boxes.shape[:-1], dtype=np.int64)
    best = np.zeros(boxes.shape[:-1])
    for k, obj in enumerate(objects, start=1):
        sat = np.zeros((h + 1, w + 1), dtype=np.int64)  # summed-area table of this object's pixels
        sat[1:, 1:] = (index == k).cumsum(0).cumsum(1)
        cover = (sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]) / area
        take = valid & (cover >= min_cover) & (cover > best)
        labels[take] = 1 + SHAPES.index(obj.shape) * len(COLOURS) + COLOURS.index(obj.color)
        best = np.where(take, cover, best)
    return torch.from_numpy(labels), torch.from_numpy(best).float()


def patch_labels(spec, item, min_cover: float = 0.3, with_cover: bool = False):
    """Per-token class of every tile of a scene: LongTensor[T, n_v] (see ``N_PATCH_CLASSES``).

    Args:
        spec: the backbone's BackboneSpec (tile geometry).
        item: a ``data.scenes.SceneItem``.
        min_cover: share of a patch an object must cover to label it (else background; padding is background).
        with_cover: also return the share of each patch its label's object covers (FloatTensor[T, n_v]).
    """
    from tofc_ros.backbones.tiling import patch_boxes

    index = item.object_index()
    labels, cover = _labels_for_boxes(index, item.objects, patch_boxes(spec, index.shape), min_cover)
    return (labels, cover) if with_cover else labels


def _zoomed_tiles(device_half, item, zoom: float, rng) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tiles centred (with jitter) on each object, ``zoom`` times larger than the grid tiles show them.

    The curriculum of stage 0 on scenes: objects first at the sizes easy-vqa's own images have (where the tiny
    tower learns shapes), then shrinking to the grid tiles' scale. Pixels are resized and normalised as the
    image processor does (bicubic, its mean and std); labels come from the same boxes.
    """
    from PIL import Image

    from tofc_ros.backbones.tiling import patch_boxes

    spec, ip = device_half.spec, device_half.image_processor
    rgb, index = item.render()
    h, w = index.shape
    grid_boxes = patch_boxes(spec, (h, w))[1]  # a grid tile: its patch pitch in frame pixels
    pitch = float(np.nanmedian(grid_boxes[:, 2] - grid_boxes[:, 0]))
    side = spec.tile_size * pitch / spec.patch_size / zoom  # frame pixels one zoomed tile covers
    mean = np.asarray(ip.image_mean, np.float32)
    std = np.asarray(ip.image_std, np.float32)
    edges = np.arange(spec.patches_per_side + 1) * spec.patch_size * side / spec.tile_size
    tiles, boxes = [], []
    for obj in item.objects[:2]:
        cx, cy = (obj.box[0] + obj.box[2]) / 2, (obj.box[1] + obj.box[3]) / 2
        oy = cy - side / 2 + rng.uniform(-0.3, 0.3) * side
        ox = cx - side / 2 + rng.uniform(-0.3, 0.3) * side
        crop = Image.fromarray(rgb).crop((round(ox), round(oy), round(ox + side), round(oy + side)))  # zero padding
        px = np.asarray(crop.resize((spec.tile_size, spec.tile_size), Image.Resampling.BICUBIC), np.float32)
        tiles.append(torch.from_numpy(((px / 255.0 - mean) / std).transpose(2, 0, 1).copy()))
        ys0, xs0 = np.meshgrid(oy + edges[:-1], ox + edges[:-1], indexing="ij")
        ys1, xs1 = np.meshgrid(oy + edges[1:], ox + edges[1:], indexing="ij")
        box = np.stack([ys0, xs0, ys1, xs1], -1).reshape(-1, 4)
        box[(box[:, 2] <= 0) | (box[:, 3] <= 0) | (box[:, 0] >= h) | (box[:, 1] >= w)] = np.nan
        boxes.append(box)
    labels, cover = _labels_for_boxes(index, item.objects, np.stack(boxes), 0.3)
    return torch.stack(tiles), labels, cover


class _DenseTiles(torch.utils.data.Dataset):
    """Scene frames as (pixels of the tiles worth training on, their patch labels), made in a worker process.

    ``zoom(i)`` > 1 gives sample i object-centred tiles at that zoom instead of the processor's tiles.
    """

    def __init__(self, device_half, items, tiles_per_frame: int, seed: int, hflip: bool, zoom=lambda i: 1.0):
        self.dh, self.items, self.k, self.seed, self.hflip = device_half, items, tiles_per_frame, seed, hflip
        self.zoom = zoom

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        from dataclasses import replace

        item = self.items[i]
        rng = np.random.default_rng((self.seed, i))
        if self.hflip and rng.random() < 0.5:  # mirror the spec: objects and labels move with the pixels
            w = item.size[0]
            mirrored = tuple(replace(o, box=(w - o.box[2], o.box[1], w - o.box[0], o.box[3])) for o in item.objects)
            item = replace(item, flip=not item.flip, objects=mirrored)
        zoom = self.zoom(i)
        if zoom > 1.0:
            return _zoomed_tiles(self.dh, item, zoom, rng)
        pixels, _, _ = self.dh.preprocess(item.rgb())
        labels, cover = patch_labels(self.dh.spec, item, with_cover=True)
        # The thumbnail, every tile that shows an object, then random others up to tiles_per_frame.
        with_objects = [t for t in range(1, len(labels)) if bool((labels[t] > 0).any())]
        others = [t for t in rng.permutation(len(labels)).tolist() if t and t not in with_objects]
        keep = ([0, *with_objects, *others])[: max(self.k, 1 + len(with_objects))]
        return pixels[keep].float().cpu(), labels[keep], cover[keep]


def _collate(batch):
    return tuple(torch.cat([b[i] for b in batch]) for i in range(3))


def _shape_colour(classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (classes - 1) // len(COLOURS), (classes - 1) % len(COLOURS)


def _object_means(tokens: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean token of every (tile, object class) present: ([K, d], classes [K]); tokens [N, P, d], labels [N, P]."""
    keys = (labels + torch.arange(labels.shape[0], device=labels.device).unsqueeze(1) * N_PATCH_CLASSES).reshape(-1)
    present, slot = torch.unique(keys, return_inverse=True)
    sums = torch.zeros(len(present), tokens.shape[-1], dtype=tokens.dtype, device=tokens.device)
    sums = sums.index_add(0, slot, tokens.reshape(-1, tokens.shape[-1]))
    means = sums / torch.bincount(slot, minlength=len(present)).unsqueeze(1).to(tokens.dtype)
    classes = present % N_PATCH_CLASSES
    keep = classes > 0
    return means[keep], classes[keep]


EDGE_COVER = (0.15, 0.85)  # an edge patch: an object covers this share of it (more: inside, less: outside)


def _targets(labels: torch.Tensor, cover: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour targets (0 background, 1 + colour) of every token; shape targets of edge tokens (-100 elsewhere)."""
    shape, colour = _shape_colour(labels)
    colour_t = torch.where(labels > 0, colour + 1, torch.zeros_like(labels))
    edge = (labels > 0) & (cover >= EDGE_COVER[0]) & (cover < EDGE_COVER[1])
    return colour_t, torch.where(edge, shape, torch.full_like(labels, -100))


class _Counts:
    """Running accuracies of the three heads."""

    def __init__(self) -> None:
        self.c = np.zeros(9, dtype=np.int64)

    def add(self, colour_logits, shape_logits, labels, cover, object_logits, classes) -> None:
        colour_t, shape_t = _targets(labels, cover)
        obj, edge = labels > 0, shape_t >= 0
        pc = colour_logits.argmax(-1)
        os_, oc = _shape_colour(classes)
        self.c += (
            int((pc[obj] == colour_t[obj]).sum()),
            int(obj.sum()),
            int((pc[~obj] == 0).sum()),
            int((~obj).sum()),
            int((shape_logits.argmax(-1)[edge] == shape_t[edge]).sum()),
            int(edge.sum()),
            int((object_logits[:, : len(SHAPES)].argmax(-1) == os_).sum()),
            int((object_logits[:, len(SHAPES) :].argmax(-1) == oc).sum()),
            int(len(classes)),
        )

    def summary(self) -> dict:
        c = self.c
        return {
            "patch_colour_acc": c[0] / max(c[1], 1),
            "background_acc": c[2] / max(c[3], 1),
            "edge_shape_acc": c[4] / max(c[5], 1),
            "object_shape_acc": c[6] / max(c[8], 1),
            "object_colour_acc": c[7] / max(c[8], 1),
            "objects": int(c[8]),
        }


def _heads_forward(model, heads, px, labels):
    colour_head, shape_head, object_head = heads
    tokens = model.vision_features(px.to(model.device_))
    means, classes = _object_means(tokens, labels)
    return colour_head(tokens), shape_head(tokens), object_head(means), classes


def _make_heads(d: int, device) -> tuple[torch.nn.Linear, ...]:
    return (
        torch.nn.Linear(d, 1 + len(COLOURS)).to(device),
        torch.nn.Linear(d, len(SHAPES)).to(device),
        torch.nn.Linear(d, len(SHAPES) + len(COLOURS)).to(device),
    )


@torch.no_grad()
def evaluate_dense(model, heads, items, tiles_per_frame: int = 4, batch: int = 8) -> dict:
    """Accuracy of the stage's heads on ``items``: per patch (colour, edge shape) and per object mean."""
    data = _DenseTiles(model.device_half, items, tiles_per_frame, seed=1, hflip=False)
    counts = _Counts()
    for s in range(0, len(items), batch):
        px, labels, cover = _collate([data[i] for i in range(s, min(s + batch, len(items)))])
        labels, cover = labels.to(model.device_), cover.to(model.device_)
        colour_logits, shape_logits, object_logits, classes = _heads_forward(model, heads, px, labels)
        counts.add(colour_logits, shape_logits, labels, cover, object_logits, classes)
    return counts.summary()


def pretrain_vision_dense(
    model, cfg: VisionPretrainConfig, train, test, seed: int, log=None, progress: bool = True
) -> dict:
    """Stage 0 for scenes: the tower and two throw-away heads learn every patch's label and every object's.

    Background patches (most of them) weigh ``cfg.background_weight`` in the patch cross-entropy; the object head's
    shape and colour cross-entropies are added. Frames are rendered and tiled by the model's own image processor in a
    worker process while the tower trains.
    """
    if cfg.steps <= 0:
        return {"steps": 0}
    d = model.vision_core.config.hidden_size
    heads = _make_heads(d, model.device_)
    params = [p for p in model.vision_core.parameters() if p.requires_grad]
    params += [p for h in heads for p in h.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    weight = torch.ones(1 + len(COLOURS), device=model.device_)
    weight[0] = cfg.background_weight
    gen = torch.Generator().manual_seed(seed)
    epochs = -(-cfg.steps * cfg.batch_images // len(train))
    order = torch.cat([torch.randperm(len(train), generator=gen) for _ in range(epochs)])
    n = cfg.steps * cfg.batch_images
    ramp = max(cfg.zoom_fraction * n, 1.0)

    def zoom(i: int) -> float:
        return 1.0 if i >= ramp else cfg.zoom_start + (1.0 - cfg.zoom_start) * i / ramp

    data = _DenseTiles(
        model.device_half, [train[i] for i in order[:n].tolist()], cfg.tiles_per_frame, seed, cfg.hflip, zoom
    )
    workers = cfg.loader_workers
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=cfg.batch_images,
        collate_fn=_collate,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        multiprocessing_context="fork" if workers else None,
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, desc="vision pre-train (patches)", dynamic_ncols=True)
    model.vision_core.train()
    t0 = timer()
    run_loss, counts = 0.0, _Counts()
    for step, (px, labels, cover) in enumerate(loader):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, cfg.steps, cfg.warmup_steps, cfg.lr, cfg.final_lr_ratio)
        labels, cover = labels.to(model.device_), cover.to(model.device_)
        colour_logits, shape_logits, object_logits, classes = _heads_forward(model, heads, px, labels)
        colour_t, shape_t = _targets(labels, cover)
        loss = F.cross_entropy(colour_logits.reshape(-1, 1 + len(COLOURS)), colour_t.reshape(-1), weight=weight)
        if bool((shape_t >= 0).any()):
            loss = loss + F.cross_entropy(shape_logits.reshape(-1, len(SHAPES)), shape_t.reshape(-1))
        if len(classes):
            shape, colour = _shape_colour(classes)
            loss = loss + F.cross_entropy(object_logits[:, : len(SHAPES)], shape)
            loss = loss + F.cross_entropy(object_logits[:, len(SHAPES) :], colour)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        run_loss += float(loss.detach())
        counts.add(colour_logits.detach(), shape_logits.detach(), labels, cover, object_logits.detach(), classes)
        if bar is not None:
            bar.update(1)
        if log is not None and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
            n = (step % cfg.log_every) + 1
            log.write(
                stage="vision_patches", step=step + 1, loss=run_loss / n, **counts.summary(), elapsed_s=timer() - t0
            )
            run_loss, counts = 0.0, _Counts()
    if bar is not None:
        bar.close()
    model.vision_core.eval()
    summary = {"steps": cfg.steps, "seconds": round(timer() - t0, 1), "objective": "patch and object labels"}
    if test:
        summary["test"] = evaluate_dense(model, heads, test[: cfg.eval_images])
    return summary
