"""Train a tiny LLaVA-OneVision model from scratch on easy-vqa or the camera-resolution scenes.

    python -m tofc_ros.train.pretrain --config configs/train_easyvqa_base.yaml --out models/easyvqa-tiny-ov
    python -m tofc_ros.train.pretrain --config configs/train_scenes_base.yaml --out models/scenes-tiny-ov-base

The model uses the real classes (LlavaOnevisionForConditionalGeneration: SigLIP vision tower, 2-layer MLP projector,
Qwen2 language model) with small widths and the real vision geometry (384² tiles, 14-px patches, 27×27 = 729 tokens
per tile, anyres + thumbnail; a 64×64 easy-vqa image becomes thumbnail + one grid tile, M = 1485 image tokens).
Three stages, one command:

0. vision pre-training (``vision_pretrain``, ``train.vision_pretrain``): the tower alone learns the object's shape and
   colour through a linear head. Real LLaVA towers arrive pre-trained; this one cannot, and trained end to end from
   scratch on the VQA loss the model never learned shapes (83.1 % test, shape answers near chance). easy-vqa: one
   label per image (mean-pooled head); scenes: one label per patch, from the scene's object map.
1a. VQA training on merged tokens (``merged_stage``, optional): DPC-KNN merging to n_c tokens per tile, tower frozen.
   With ~40 image tokens instead of 1,485 the tiny LM learns to compare a question's word with the image, which it
   never learned on full tokens from a fresh start.
1. VQA training on full tokens: the loss is the cross-entropy of the answer tokens + EOS given the full prompt,
   through the same ServerHalf prompt/projection/token-order code that serves the model
   (``backbones.answer_scoring.answer_logits`` shares the image prefix between an image's questions, exactly).
   The tower stays frozen when ``train_vision`` is false (as in LLaVA's own recipe); no codec, and merging only if
   ``merge`` asks for it.

Stages 1a and 1 can re-balance the yes/no questions (``yes_no_match_rate``, ``train.counterfactual``).

What makes this fast enough on 2 CPU cores: tiny widths; all of an image's ~10 questions in one LM pass over the
1,488-token prefix (causal flash-attention kernel) with the suffixes attending to its KV cache; one vision-tower pass
per image (its thumbnail and grid tile are the same pixels); the processor's resize/normalise done directly (checked
against the processor); with the tower frozen, each image's (merged) features computed once and kept
(``cache_features``). Deterministic: seeded init, seeded data order, single process (scenes' stage 0 renders frames
in a worker process, in a seeded order).

Output directory: a llava-hf model (config.json, model.safetensors, tokenizer, preprocessor config) plus
``pretrain_summary.json`` (config, steps, wall time, test accuracy) and ``pretrain_log.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tofc_ros.backbones.answer_scoring import PromptCache, answer_logits, answer_stats
from tofc_ros.data import easyvqa, scenes
from tofc_ros.data.easyvqa import VQAImage
from tofc_ros.train.common import (
    JsonlLog,
    PixelPath,
    config_to_dict,
    cosine_lr,
    load_config,
    seed_everything,
    set_threads,
    timer,
)
from tofc_ros.train.counterfactual import Counterfactuals
from tofc_ros.train.differentiable_merge import MERGE_METHODS, merge_features
from tofc_ros.train.llava import TrainableLlava
from tofc_ros.train.vision_pretrain import VisionPretrainConfig, pretrain_vision, pretrain_vision_dense

__all__ = [
    "TinyModelConfig",
    "MergedStageConfig",
    "PretrainConfig",
    "build_tiny_ov",
    "pretrain",
    "vision_batch",
    "main",
]


@dataclass(frozen=True)
class TinyModelConfig:
    """Widths of the tiny LLaVA-OneVision model (geometry is the real one: 384² tiles, 14-px patches)."""

    vision_hidden: int = 64
    vision_layers: int = 3
    vision_heads: int = 4
    vision_mlp: int = 128
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 2
    text_kv_heads: int = 1
    text_mlp: int = 128
    # Initial vision position embeddings: "random" (the class default) or "sincos" (a 2-D sine/cosine table, then
    # trained). In 750 steps neither learned shapes here (random: 83.1 % test, colours 100 %, shape answers 47 %;
    # sincos: 81.0 %).
    vision_pos_init: str = "random"
    # Share the LM's input and output token embeddings (as Qwen2-0.5B, OneVision-0.5B's LM, does).
    tie_embeddings: bool = False


@dataclass(frozen=True)
class MergedStageConfig:
    """Stage 1a (``merged_stage:``): VQA training on merged tokens before the full-token stage; epochs 0: none.

    A curriculum: with ~40 image tokens instead of 1,485 the tiny LM learns to compare a question's colour or shape
    word with the image, which it never learned on full tokens from a fresh start; stage 1 then carries it over to
    full tokens.
    Same batch, learning-rate and schedule settings as stage 1, its own optimizer and schedule.
    """

    epochs: float = 0.0
    merge: str = "dpc_knn"
    n_c: int = 16

    def __post_init__(self):
        methods = tuple(m for m in MERGE_METHODS if m != "none")
        if self.merge not in methods:
            raise ValueError(f"merged_stage.merge must be one of {methods}, got {self.merge!r}")
        if not 1 <= self.n_c <= 729:
            raise ValueError(f"merged_stage.n_c must be in 1..729 (tokens per tile), got {self.n_c}")


@dataclass(frozen=True)
class SceneDataConfig:
    """``scenes:`` (data: scenes): how many scenes of each split and the generator's seed (tofc_ros.data.scenes)."""

    train_images: int = 10_000
    test_images: int = 1_000
    seed: int = 0


DATA_SETS = ("easyvqa", "scenes")


@dataclass(frozen=True)
class PretrainConfig:
    """Pre-training settings (YAML keys of configs/train_easyvqa_base.yaml, configs/train_scenes_base.yaml)."""

    data: str = "easyvqa"  # easyvqa | scenes
    scenes: SceneDataConfig = field(default_factory=SceneDataConfig)
    model: TinyModelConfig = field(default_factory=TinyModelConfig)
    vision_pretrain: VisionPretrainConfig = field(default_factory=VisionPretrainConfig)  # stage 0 (steps 0: none)
    merged_stage: MergedStageConfig = field(default_factory=MergedStageConfig)  # stage 1a (epochs 0: none)
    seed: int = 0
    epochs: float = 3.0  # passes over the 4,000 training images (each pass sees all ~38.6k questions)
    max_steps: int | None = None  # cap (tests, smoke runs)
    train_limit: int | None = None  # use only the first N training questions (tests)
    batch_images: int = 8
    lr: float = 2e-3
    warmup_steps: int = 100
    final_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_limit: int | None = None  # test questions scored at the end (None: all 9,673)
    eval_batch_images: int = 16
    log_every: int = 25
    threads: int = 0  # torch threads (0: default)
    init_from: str | None = None  # continue from a saved model directory instead of a fresh initialisation
    vision_from: str | None = None  # fresh model, but the vision tower copied from a saved model directory
    # Train on merged tokens (train.differentiable_merge.MERGE_METHODS; "none": all 729 per tile). A curriculum: a
    # model first trained on n_c cluster means per tile, then fine-tuned on full tokens with ``init_from``.
    merge: str = "none"
    n_c: int = 32
    train_vision: bool = True  # False: the vision tower keeps its initial weights (projector + LM train)
    # Share of training yes/no questions rewritten to name the object (train.counterfactual; None: as easy-vqa has
    # them, 1 in 8 for colours and 1 in 3 for shapes).
    yes_no_match_rate: float | None = None
    # With the tower frozen, keep each training image's (merged) features after its first use instead of running the
    # tower again every epoch (full-token scene features take ~0.8 MB each in float16).
    cache_features: bool = True
    vqa_images: int | None = None  # the VQA stages use only the first N training images (None: all)
    loader_workers: int = 1  # processes rendering and tiling frames while the tower computes cached features

    def __post_init__(self):
        if self.data not in DATA_SETS:
            raise ValueError(f"data must be one of {DATA_SETS}, got {self.data!r}")
        if self.data == "scenes" and self.yes_no_match_rate is not None:
            raise ValueError("yes_no_match_rate rewrites easy-vqa questions; scenes are balanced by construction")
        # Checked here, not at the first VQA step: that comes after the vision stage's ~11 minutes.
        if self.merge not in MERGE_METHODS:
            raise ValueError(f"merge must be one of {MERGE_METHODS}, got {self.merge!r}")
        if self.merge != "none" and not 1 <= self.n_c <= 729:
            raise ValueError(f"n_c must be in 1..729 (tokens per tile) when merging, got {self.n_c}")
        if self.yes_no_match_rate is not None and not 0.0 <= self.yes_no_match_rate <= 1.0:
            raise ValueError(f"yes_no_match_rate must be in [0, 1] or null, got {self.yes_no_match_rate}")


def build_tiny_ov(cfg: TinyModelConfig, seed: int) -> TrainableLlava:
    """A fresh tiny OneVision model with the offline tokenizer and PIL image processor of ``backbones.tiny``."""
    from tofc_ros.backbones.tiny import build_tiny_image_processor, build_tiny_tokenizer, tiny_config

    tokenizer = build_tiny_tokenizer("onevision")
    config = tiny_config("onevision", vocab_size=len(tokenizer))
    v, t = config.vision_config, config.text_config
    v.hidden_size, v.num_hidden_layers = cfg.vision_hidden, cfg.vision_layers
    v.num_attention_heads, v.intermediate_size = cfg.vision_heads, cfg.vision_mlp
    t.hidden_size, t.num_hidden_layers = cfg.text_hidden, cfg.text_layers
    t.num_attention_heads, t.num_key_value_heads, t.intermediate_size = cfg.text_heads, cfg.text_kv_heads, cfg.text_mlp
    t.head_dim = cfg.text_hidden // cfg.text_heads
    if getattr(t, "layer_types", None) is not None:  # Qwen2 validates one entry per layer
        t.layer_types = [t.layer_types[0]] * cfg.text_layers
    t.max_position_embeddings = 4096
    config.tie_word_embeddings = t.tie_word_embeddings = cfg.tie_embeddings
    model = TrainableLlava.from_config(config, tokenizer, build_tiny_image_processor("onevision"), seed=seed)
    if cfg.vision_pos_init == "sincos":
        emb = model.vision_core.embeddings.position_embedding
        side = int(round(emb.weight.shape[0] ** 0.5))
        with torch.no_grad():
            emb.weight.copy_(sincos_2d(side, emb.weight.shape[1]))
    elif cfg.vision_pos_init != "random":
        raise ValueError(f"vision_pos_init must be 'sincos' or 'random', got {cfg.vision_pos_init!r}")
    return model


def sincos_2d(side: int, dim: int) -> torch.Tensor:
    """2-D sine/cosine position table [side², dim] (row-major patches; half the channels per axis)."""
    if dim % 4:
        raise ValueError(f"dim must be a multiple of 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(side, dtype=torch.float64)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    out_y = ys.reshape(-1, 1) * omega
    out_x = xs.reshape(-1, 1) * omega
    table = torch.cat([out_y.sin(), out_y.cos(), out_x.sin(), out_x.cos()], dim=1)
    return table.float()


def load_data(cfg: PretrainConfig, split: str, limit: int | None = None) -> list:
    """The (image, questions, answers) items of a split of the configured data set."""
    if cfg.data == "scenes":
        n = cfg.scenes.train_images if split == "train" else cfg.scenes.test_images
        return scenes.load_split(split, n, cfg.scenes.seed, limit=limit)
    return easyvqa.load_split(split, limit)


class FeatureCache:
    """Vision features per training image, computed once while the tower is frozen (merged ones as float32, full
    ones as float16; the LM trains on float32 either way)."""

    def __init__(self, model: TrainableLlava, enabled: bool):
        self.model, self.enabled = model, enabled
        self.pixels = PixelPath(model.device_half)
        self._store: dict[tuple, tuple] = {}

    def batch(self, items: list, merge: str, n_c: int) -> list[tuple[torch.Tensor, tuple, tuple]]:
        """(features [T, n, d], grid, image size) per item; differentiable unless cached (frozen tower)."""
        keys = [(getattr(it, "split", ""), it.image_id, merge, n_c) for it in items]
        missing = [i for i, k in enumerate(keys) if k not in self._store] if self.enabled else range(len(items))
        fresh = {}
        if missing:
            with torch.no_grad() if self.enabled else torch.enable_grad():
                feats = vision_batch(self.model, self.pixels, [items[i] for i in missing])
            for i, (f, grid, size) in zip(missing, feats):
                f = merge_features(f, n_c, merge)
                fresh[i] = (f, grid, size)
                if self.enabled:
                    self._store[keys[i]] = (f.half() if merge == "none" else f, grid, size)
        out = []
        for i, k in enumerate(keys):
            f, grid, size = fresh[i] if i in fresh else self._store[k]
            out.append((f.float(), grid, size))
        return out

    def precompute(self, items: list, variants: list[tuple[str, int]], workers: int = 1, progress: bool = False):
        """Fill the cache for every item and (merge, n_c) variant with one tower pass per image, rendering and
        tiling frames in ``workers`` processes meanwhile (the processor costs as much as the tiny tower here)."""
        if not self.enabled:
            return
        todo = [
            it
            for it in items
            if any((getattr(it, "split", ""), it.image_id, m, n) not in self._store for m, n in variants)
        ]
        if not todo:
            return
        loader = torch.utils.data.DataLoader(
            _Tiles(self.pixels, todo),
            batch_size=None,
            num_workers=workers,
            prefetch_factor=8 if workers else None,
            multiprocessing_context="fork" if workers else None,
        )
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="features", dynamic_ncols=True)
        with torch.no_grad():
            for item, (px, repeat, grid, size) in zip(todo, loader):
                f = self.model.vision_features(px.to(self.model.device_))
                f = f.repeat(repeat, 1, 1) if repeat > 1 else f
                for merge, n_c in variants:
                    merged = merge_features(f, n_c, merge)
                    key = (getattr(item, "split", ""), item.image_id, merge, n_c)
                    self._store[key] = (merged.half() if merge == "none" else merged, grid, size)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()


class _Tiles(torch.utils.data.Dataset):
    """An item's tiles as the model's processor makes them (``PixelPath.tiles``), for a worker process."""

    def __init__(self, pixels: PixelPath, items: list):
        self.pixels, self.items = pixels, items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.pixels.tiles(self.items[i].rgb())


def vision_batch(model: TrainableLlava, pixels: PixelPath, items: list[VQAImage]):
    """Per-image full vision features for a batch, one vision-tower pass over the distinct tiles.

    Returns:
        list of (features [T, n_v, d], grid, image_size), differentiable when grad is enabled.
    """
    tiles, meta = [], []
    for item in items:
        px, repeat, grid, size = pixels.tiles(item.rgb())
        tiles.append(px)
        meta.append((px.shape[0], repeat, grid, size))
    feats = model.vision_features(torch.cat(tiles).to(model.device_))
    out, i = [], 0
    for u, repeat, grid, size in meta:
        f = feats[i : i + u]
        out.append((f.repeat(repeat, 1, 1) if repeat > 1 else f, grid, size))
        i += u
    return out


@torch.no_grad()
def evaluate_full(
    model: TrainableLlava,
    items: list[VQAImage],
    batch_images: int = 16,
    progress: bool = False,
    merge: str = "none",
    n_c: int = 32,
) -> dict:
    """Teacher-forced greedy exact-match accuracy (see ``backbones.answer_scoring.answer_stats``): uncompressed
    features, or merged ones when ``merge`` is not "none"."""
    pixels = PixelPath(model.device_half)
    prompts = PromptCache(model.server)
    correct = total = 0
    rng = range(0, len(items), batch_images)
    if progress:
        from tqdm import tqdm

        rng = tqdm(rng, desc="eval", leave=False)
    for s in rng:
        chunk = items[s : s + batch_images]
        feats = vision_batch(model, pixels, chunk)
        embeds = [model.server.image_embeddings(merge_features(f, n_c, merge), g, sz) for f, g, sz in feats]
        scores = answer_logits(model.server, prompts, embeds, [c.questions for c in chunk], [c.answers for c in chunk])
        _, ok = answer_stats(scores)
        correct += int(ok.sum())
        total += int(ok.numel())
    return {"accuracy": correct / max(total, 1), "correct": correct, "questions": total}


def _vqa_stage(
    model: TrainableLlava,
    cfg: PretrainConfig,
    train: list[VQAImage],
    epochs: float,
    merge: str,
    n_c: int,
    name: str,
    rewrite: Counterfactuals | None,
    log: JsonlLog,
    progress: bool,
    seed_offset: int = 0,
    cache: FeatureCache | None = None,
) -> int:
    """One VQA training stage (fresh AdamW, warm-up + cosine schedule) on full or merged tokens; returns its steps."""
    steps_per_epoch = math.ceil(len(train) / cfg.batch_images)
    total = int(round(epochs * steps_per_epoch))
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    pixels = PixelPath(model.device_half)
    prompts = PromptCache(model.server)
    gen = torch.Generator().manual_seed(cfg.seed + seed_offset)
    order: list[int] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=name, dynamic_ncols=True)
    t0 = timer()
    run_loss = run_acc = 0.0
    run_n = 0
    for step in range(total):
        if len(order) < cfg.batch_images:
            order += torch.randperm(len(train), generator=gen).tolist()
        batch = [train[i] for i in order[: cfg.batch_images]]
        del order[: cfg.batch_images]
        lr = cosine_lr(step, total, cfg.warmup_steps, cfg.lr, cfg.final_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        if cache is not None:
            feats = cache.batch(batch, merge, n_c)
        else:
            feats = [(merge_features(f, n_c, merge), g, sz) for f, g, sz in vision_batch(model, pixels, batch)]
        embeds = [model.server.image_embeddings(f, grid, size) for f, grid, size in feats]
        qa = [rewrite.questions(b, f"{name}/{step}") if rewrite else (b.questions, b.answers) for b in batch]
        scores = answer_logits(model.server, prompts, embeds, [q for q, _ in qa], [a for _, a in qa])
        loss, ok = answer_stats(scores)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        run_loss += float(loss.detach())
        run_acc += float(ok.float().mean())
        run_n += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss):.3f}", acc=f"{float(ok.float().mean()):.2f}")
        if (step + 1) % cfg.log_every == 0 or step + 1 == total:
            log.write(
                stage=name,
                step=step + 1,
                loss=run_loss / run_n,
                train_acc=run_acc / run_n,
                lr=lr,
                grad_norm=float(gnorm),
                elapsed_s=timer() - t0,
            )
            run_loss = run_acc = 0.0
            run_n = 0
    if bar is not None:
        bar.close()
    return total


def pretrain(cfg: PretrainConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Train, evaluate on the test split, save. Returns the summary written to ``pretrain_summary.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    model = TrainableLlava.from_pretrained(cfg.init_from) if cfg.init_from else build_tiny_ov(cfg.model, cfg.seed)
    if cfg.vision_from:
        source = TrainableLlava.from_pretrained(cfg.vision_from)
        model.vision_core.load_state_dict(source.vision_core.state_dict())  # strict: the towers must match
        del source
    log_path = out / "pretrain_log.jsonl"
    log_path.unlink(missing_ok=True)
    log = JsonlLog(log_path)
    train = load_data(cfg, "train", cfg.train_limit)
    stage0 = pretrain_vision_dense if cfg.data == "scenes" else pretrain_vision
    vision_summary = stage0(
        model,
        cfg.vision_pretrain,
        train,
        load_data(cfg, "test") if cfg.vision_pretrain.steps > 0 else None,
        cfg.seed,
        log=log,
        progress=progress,
    )
    model.model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    if not cfg.train_vision:
        for p in model.vision_core.parameters():
            p.requires_grad_(False)
    rewrite = Counterfactuals(cfg.yes_no_match_rate, cfg.seed) if cfg.yes_no_match_rate is not None else None
    cache = FeatureCache(model, enabled=cfg.cache_features and not cfg.train_vision)
    t0 = timer()
    ms = cfg.merged_stage
    vqa_train = train[: cfg.vqa_images] if cfg.vqa_images else train
    variants = ([(ms.merge, ms.n_c)] if ms.epochs > 0 else []) + ([(cfg.merge, cfg.n_c)] if cfg.epochs > 0 else [])
    cache.precompute(vqa_train, variants, workers=cfg.loader_workers, progress=progress)
    feature_s = timer() - t0
    merged_steps = 0
    if ms.epochs > 0:
        merged_steps = _vqa_stage(
            model, cfg, vqa_train, ms.epochs, ms.merge, ms.n_c, "vqa_merged", rewrite, log, progress, 1, cache
        )
    total = _vqa_stage(model, cfg, vqa_train, cfg.epochs, cfg.merge, cfg.n_c, "vqa", rewrite, log, progress, 0, cache)
    del cache
    train_s = timer() - t0
    model.model.eval()
    model.save(out)
    t1 = timer()
    test = load_data(cfg, "test", cfg.eval_limit)
    result = evaluate_full(model, test, cfg.eval_batch_images, progress=progress)
    merged = None
    if cfg.merge != "none":
        merged = evaluate_full(model, test, cfg.eval_batch_images, progress=progress, merge=cfg.merge, n_c=cfg.n_c)
    summary = {
        "config": config_to_dict(cfg),
        "vision_pretrain": vision_summary,
        "steps": total,
        "vqa_merged_steps": merged_steps,
        "train_images_seen": (total + merged_steps) * cfg.batch_images,
        "train_seconds": round(train_s, 1),
        "feature_cache_seconds": round(feature_s, 1),
        "eval_seconds": round(timer() - t1, 1),
        "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "test": {
            **result,
            "split": "test",
            "limit": cfg.eval_limit,
            "metric": "greedy exact match (teacher-forced argmax of every answer token and EOS)",
            "features": "uncompressed (729 per tile, reference OneVision packing)",
        },
    }
    if merged is not None:
        summary["test_merged"] = {**merged, "merge": cfg.merge, "n_c": cfg.n_c}
    (out / "pretrain_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML config (keys of PretrainConfig)")
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set epochs=1 --set model.vision_layers=2",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = load_config(PretrainConfig, args.config, args.set)
    summary = pretrain(cfg, args.out, progress=not args.no_progress)
    print(json.dumps({k: summary[k] for k in ("steps", "train_seconds", "eval_seconds", "test")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
