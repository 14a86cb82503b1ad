"""TOFC training, Algorithm 1 of Yuan et al.: task loss + rate + expert balance, end to end through the codec.

    python -m tofc_ros.train.tofc --config configs/train_easyvqa_tofc.yaml [--resume] [--set lam=0.002]
    accelerate launch -m tofc_ros.train.tofc --config ...          (GPUs; the same script)
    torchrun --nproc_per_node 2 -m tofc_ros.train.tofc --config ... (CPU processes, gloo; or ``tofc train --processes``)

Per step, for a batch of images and all their questions::

    pixels ─ vision tower (+LoRA) ─► x [T, 729, d] ─ FMM (DPC-KNN assignment, pooled means with grad) ─► [T, n_c, d]
      ─ selective hyperprior (router softmax(·/T), STE rounding) ─► x̂, R (bits), L_balance
      ─ projector (trainable) ─ token order ─ LLM (+LoRA) on every question (prefix shared) ─► D = CE(answer + EOS)

    L = D + λ·R + w_bal·L_balance            (eqs. 10, 16, 18; R = bits per image, mean over the batch, or with
                                              rate_unit: element bits per coded value, tiles × n_c × d per image)
    T(step) = T_0 · (T_1 / T_0)^(step / (steps-1))  (exponential decay, default 10 → 0.1)

A separate optimizer trains the z-density quantiles (CompressAI's auxiliary loss); the parameter sets are asserted
disjoint. ``sweep`` entries in the config run several (λ, n_c, …) points from one file, each in its own directory.

Data (``data:``): easy-vqa, the scenes, or LLaVA's instruction format (``llava: {path, image_folder}``: multi-turn
conversations, loss on every assistant turn given the turns before it, images of any size).

Data parallelism. One optimizer step takes ``batch_images`` images (the global batch: over all processes and
``grad_accum`` micro-batches), in the same seeded order whatever the number of processes; process r of W takes its
own contiguous slice of each micro-step, never another's. Every term is normalised by the whole step's counts
(answer tokens, counted by tokenization before the forward passes; images), the balance loss uses the router usage
of the whole micro-step (all-reduced), and after the backward passes every process's gradients are summed over the
processes (all-reduce), the auxiliary quantiles' averaged; the clipped update is then the same on every process.
So W processes take exactly the step one process takes on the combined batch (to float rounding), and the replicas
stay identical (checked by digest at every checkpoint and at the end). Only process 0 writes files.

Outputs per run directory:
    codec.safetensors      the updated codec (``codec.weights.save_model``: safetensors + fingerprint)
    model/                 llava-hf directory with LoRA merged (``save_merged``), loadable by load_*_half
    adapters.safetensors   LoRA + projector (+ image_newline) tensors, for large models where a merged copy is big
    log.jsonl              step, loss, D, R (bits/image), balance, temperature, lr, train accuracy
    summary.json           config, steps, time, final estimates
    checkpoint/            resumable: trainable.safetensors, optimizer.safetensors, state.json (no pickle)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tofc_ros.backbones.answer_scoring import PromptCache, answer_logits, answer_token_stats
from tofc_ros.train.common import (
    JsonlLog,
    PixelPath,
    config_to_dict,
    cosine_lr,
    exp_temperature,
    load_config,
    seed_everything,
    set_threads,
    timer,
)
from tofc_ros.train.differentiable_merge import MERGE_METHODS, merge_features
from tofc_ros.train.llava import TrainableLlava
from tofc_ros.train.pretrain import SceneDataConfig, vision_batch

__all__ = [
    "DATA_SETS",
    "LoraSettings",
    "CodecSettings",
    "LlavaDataSettings",
    "TofcTrainConfig",
    "TofcTrainer",
    "expand_sweep",
    "load_train_items",
    "micro_batches",
    "main",
]

DATA_SETS = ("easyvqa", "scenes", "llava")
MIXED_PRECISION = ("no", "bf16", "fp16")
RATE_UNITS = ("image", "element")

VISION_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
TEXT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA (peft) on the vision encoder and on the LLM."""

    vision: bool = True
    text: bool = True
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    vision_targets: tuple[str, ...] = VISION_LORA_TARGETS
    text_targets: tuple[str, ...] = TEXT_LORA_TARGETS


@dataclass(frozen=True)
class CodecSettings:
    """Selective hyperprior settings (see ``codec.hyperprior.HyperpriorConfig``; d comes from the model)."""

    n_e: int = 16
    y_step: float = 1.0
    scale_min: float = 0.11
    scale_max: float = 64.0
    scale_levels: int = 64
    ha_hidden: tuple[int, ...] = ()
    hs_hidden: tuple[int, ...] = ()
    router_hidden: tuple[int, ...] = ()


@dataclass(frozen=True)
class LlavaDataSettings:
    """``llava:`` (data: llava): a LLaVA-format JSON/JSONL file (``tofc_ros.data.llava_format``)."""

    path: str = ""
    image_folder: str = ""  # the records' image paths are relative to this (default: the file's folder)
    text_only: str = "skip"  # records without an image: skip (counted) or error


@dataclass(frozen=True)
class TofcTrainConfig:
    """Algorithm 1 settings (YAML keys of configs/train_easyvqa_tofc.yaml, configs/train_llava_tofc.yaml)."""

    model: str = "models/easyvqa-tiny-ov"  # llava-hf directory (the tiny bundled model or a real checkpoint)
    data: str = "easyvqa"  # easyvqa | scenes | llava
    scenes: SceneDataConfig = field(default_factory=SceneDataConfig)  # data: scenes
    llava: LlavaDataSettings = field(default_factory=LlavaDataSettings)  # data: llava
    out: str = "runs/tofc"
    name: str = ""  # run sub-directory (sweeps: filled from the sweep entry)
    seed: int = 0
    steps: int = 400
    batch_images: int = 8  # images per optimizer step, over all processes and micro-batches
    grad_accum: int = 1  # micro-batches per step (each process runs batch_images / (processes · grad_accum) images)
    n_c: int = 16
    k: int = 5
    merge: str = "dpc_knn"  # dpc_knn | centres | uniform | none (ablations)
    lam: float = 1e-3  # λ: weight of R (in rate_unit)
    rate_unit: str = "image"  # R in bits per image, or "element": bits per coded value (tiles × n_c × d per image)
    balance_weight: float = 1.0
    t_start: float = 10.0
    t_end: float = 0.1
    lr: float = 1e-3  # LoRA, projector
    codec_lr: float = 3e-3
    aux_lr: float = 1e-2
    warmup_steps: int = 20
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    train_projector: bool = True
    full_feature_images: int = 0  # per step, also D on uncompressed features of this many images (keeps raw path)
    lora: LoraSettings = field(default_factory=LoraSettings)
    codec: CodecSettings = field(default_factory=CodecSettings)
    codec_init: str = ""  # optional codec.safetensors to start from (e.g. a run with another λ)
    train_limit: int | None = None  # easyvqa/scenes: first N questions; llava: first N records
    save_merged: bool = True
    bundle_dir: str = ""  # also write the merged model + codec (as tofc_codec.safetensors) here, node-ready
    checkpoint_every: int = 100
    log_every: int = 10
    threads: int = 0
    dtype: str = "fp32"  # frozen weights; trainable ones (LoRA, projector, newline, codec) are always fp32
    mixed_precision: str = "no"  # no | bf16 | fp16: autocast for the model (fp16 with a loss scaler); codec in fp32
    gradient_checkpointing: bool = False  # recompute activations in backward (vision tower and LLM layers)
    sweep: tuple[dict, ...] = ()  # each entry overrides keys above for one run, e.g. {name: l2e-3, lam: 0.002}

    def __post_init__(self):
        if self.merge not in MERGE_METHODS:
            raise ValueError(f"merge must be one of {MERGE_METHODS}, got {self.merge!r}")
        if self.steps < 1 or self.batch_images < 1 or self.grad_accum < 1:
            raise ValueError("steps, batch_images and grad_accum must be ≥ 1")
        if self.lam < 0:
            raise ValueError(f"lam must be ≥ 0, got {self.lam}")
        if self.rate_unit not in RATE_UNITS:
            raise ValueError(f"rate_unit must be one of {RATE_UNITS}, got {self.rate_unit!r}")
        if self.data not in DATA_SETS:
            raise ValueError(f"data must be one of {DATA_SETS}, got {self.data!r}")
        if self.data == "llava" and not self.llava.path:
            raise ValueError("data: llava needs llava.path (a LLaVA-format JSON or JSONL file)")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if self.dtype.lower() not in ("fp32", "float32") and self.mixed_precision == "no":
            raise ValueError(
                f"dtype {self.dtype} keeps the frozen weights in reduced precision while the trainable ones stay fp32: "
                f"set mixed_precision ({self.dtype} autocast)"
            )


def load_train_items(cfg: TofcTrainConfig) -> list:
    """The training items of ``cfg.data`` (image_id, questions, answers, rgb(); LLaVA items are dialogues)."""
    if cfg.data == "easyvqa":
        from tofc_ros.data.easyvqa import load_split

        return load_split("train", cfg.train_limit)
    if cfg.data == "scenes":
        from tofc_ros.data import scenes

        return scenes.load_split("train", cfg.scenes.train_images, cfg.scenes.seed, limit=cfg.train_limit)
    from tofc_ros.data.llava_format import load_llava

    data = load_llava(
        cfg.llava.path, cfg.llava.image_folder or None, limit=cfg.train_limit, text_only=cfg.llava.text_only
    )
    return data.items


def micro_batches(indices: list[int], processes: int, rank: int, grad_accum: int) -> list[list[int]]:
    """Process ``rank``'s micro-batches of one step's global batch: micro-step j of it takes the j-th of
    ``grad_accum`` equal blocks, and each process its own contiguous slice of that block (disjoint, covering)."""
    n = len(indices)
    per = n // (processes * grad_accum)
    if per * processes * grad_accum != n or per < 1:
        raise ValueError(
            f"batch_images {n} must be a positive multiple of processes × grad_accum = {processes} × {grad_accum}"
        )
    return [indices[(j * processes + rank) * per : (j * processes + rank + 1) * per] for j in range(grad_accum)]


def _dist():
    """torch.distributed when a process group is up (several processes), else None."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def _all_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over processes, in place (no-op alone)."""
    dist = _dist()
    if dist is not None:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def expand_sweep(cfg: TofcTrainConfig) -> list[TofcTrainConfig]:
    """One config per sweep entry (or ``[cfg]`` without a sweep). Entry names default to lam/n_c."""
    if not cfg.sweep:
        return [cfg]
    runs = []
    base = config_to_dict(cfg)
    base["sweep"] = []
    for entry in cfg.sweep:
        data = json.loads(json.dumps(base))
        for key, value in entry.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key].update(value)
            else:
                data[key] = value
        if not entry.get("name"):
            data["name"] = f"nc{data['n_c']}_lam{data['lam']:g}"
        from tofc_ros.train.common import _from_dict

        runs.append(_from_dict(TofcTrainConfig, data))
    return runs


class TofcTrainer:
    """One Algorithm-1 run (build, train, checkpoint/resume, export).

    Args:
        cfg: the run's config (no sweep).
        accelerator: an ``accelerate.Accelerator`` (None: plain single-process CPU/GPU).
    """

    def __init__(self, cfg: TofcTrainConfig, accelerator=None):
        from tofc_ros.backbones.loading import parse_dtype
        from tofc_ros.codec.hyperprior import HyperpriorConfig
        from tofc_ros.codec.selective import SelectiveEntropyModel

        self.cfg = cfg
        self.acc = accelerator
        dist = _dist()
        self.processes = dist.get_world_size() if dist is not None else 1
        self.rank = dist.get_rank() if dist is not None else 0
        micro_batches(list(range(cfg.batch_images)), self.processes, 0, cfg.grad_accum)  # divisible: fail early
        self.run_dir = Path(cfg.out) / cfg.name if cfg.name else Path(cfg.out)
        set_threads(cfg.threads)
        seed_everything(cfg.seed)
        device = str(accelerator.device) if accelerator is not None else "cpu"
        self.device = torch.device(device)
        self.train = load_train_items(cfg)  # before the model: a bad data file fails in seconds, not after loading
        self.llava = TrainableLlava.from_pretrained(cfg.model, dtype=parse_dtype(cfg.dtype), device=device)
        self._apply_lora()
        if cfg.gradient_checkpointing:
            # Non-reentrant: LoRA layers inside frozen blocks get gradients without inputs that require them.
            self.llava.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        d = self.llava.spec.vision_dim
        c = cfg.codec
        hcfg = HyperpriorConfig(
            d=d,
            n_e=c.n_e,
            y_step=c.y_step,
            scale_min=c.scale_min,
            scale_max=c.scale_max,
            scale_levels=c.scale_levels,
            ha_hidden=c.ha_hidden,
            hs_hidden=c.hs_hidden,
            router_hidden=c.router_hidden,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 1)
            self.codec = SelectiveEntropyModel(hcfg).to(device)
        if cfg.codec_init:
            from tofc_ros.codec.weights import load_model

            init = load_model(cfg.codec_init)
            own = dict(self.codec.named_parameters())
            # Only tensors of the same shape (an init from a codec with another n_e keeps just what fits).
            params = {k: v for k, v in init.state_dict().items() if k in own and own[k].shape == v.shape}
            self.codec.load_state_dict(params, strict=False)
        # Parameter groups: main (LoRA, projector, codec nets) and aux (z-density quantiles), disjoint.
        aux = [p for n, p in self.codec.named_parameters() if n.endswith("quantiles")]
        aux_ids = {id(p) for p in aux}
        codec_main = [p for p in self.codec.parameters() if id(p) not in aux_ids]
        model_params = [p for p in self.llava.parameters() if p.requires_grad]
        for p in model_params:  # master weights in fp32 whatever the frozen weights' dtype (autocast computes)
            if p.dtype != torch.float32:
                p.data = p.data.float()
        main_ids = {id(p) for p in codec_main + model_params}
        if main_ids & aux_ids:
            raise RuntimeError("main and auxiliary parameter sets overlap")
        groups = [
            {"params": model_params, "lr": cfg.lr, "base_lr": cfg.lr},
            {"params": codec_main, "lr": cfg.codec_lr, "base_lr": cfg.codec_lr},
        ]
        self.opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=cfg.weight_decay)
        self.aux_opt = torch.optim.Adam(aux, lr=cfg.aux_lr)
        self.model_params, self.codec_main, self.aux_params = model_params, codec_main, aux
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.mixed_precision == "fp16")
        self.pixels = PixelPath(self.llava.device_half)
        self.prompts = PromptCache(self.llava.server)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self._sizes: dict[int, tuple[int, int]] = {}  # image sizes (rate_unit: element)
        self.order: list[int] = []
        self.step = 0
        self._broadcast_parameters()

    def _replicated(self) -> list[torch.nn.Parameter]:
        """Everything the processes must hold identically: trainable model parameters and all codec parameters."""
        return self.model_params + self.codec_main + self.aux_params

    def _broadcast_parameters(self) -> None:
        """Process 0's initial values everywhere (seeded init is the same anyway; this makes it a guarantee)."""
        dist = _dist()
        if dist is not None:
            with torch.no_grad():
                for p in self._replicated():
                    dist.broadcast(p.data, src=0)

    # ------------------------------------------------------------------------------------------------- set-up
    def _apply_lora(self) -> None:
        cfg = self.cfg
        model = self.llava.model
        patterns = []
        if cfg.lora.vision:
            patterns.append(r".*vision_tower\..*\.(" + "|".join(cfg.lora.vision_targets) + r")$")
        if cfg.lora.text:
            patterns.append(r".*language_model\..*\.(" + "|".join(cfg.lora.text_targets) + r")$")
        self.llava.add_lora(patterns, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, seed=cfg.seed + 2)
        if cfg.train_projector:
            inner = model.model
            for p in inner.multi_modal_projector.parameters():
                p.requires_grad_(True)
            if getattr(inner, "image_newline", None) is not None:
                inner.image_newline.requires_grad_(True)

    # ------------------------------------------------------------------------------------------------ training
    def temperature(self, step: int | None = None) -> float:
        """Router temperature at ``step`` (exponential decay)."""
        return exp_temperature(self.step if step is None else step, self.cfg.steps, self.cfg.t_start, self.cfg.t_end)

    def _global_batch(self) -> list[int]:
        """The next step's image indices (the same on every process: one seeded order)."""
        cfg = self.cfg
        while len(self.order) < cfg.batch_images:
            self.order += torch.randperm(len(self.train), generator=self.gen).tolist()
        idx = self.order[: cfg.batch_images]
        del self.order[: cfg.batch_images]
        return idx

    def _next_micro_batches(self) -> list[list]:
        """This process's images of the next step, as its micro-batches."""
        mine = micro_batches(self._global_batch(), self.processes, self.rank, self.cfg.grad_accum)
        return [[self.train[i] for i in mb] for mb in mine]

    def _autocast(self):
        mp = self.cfg.mixed_precision
        if mp == "no":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if mp == "bf16" else torch.float16)

    def _coded_values(self, item) -> int:
        """Values the codec codes for an image (tiles × merged tokens per tile × d), from its size alone."""
        key = id(item)
        if key not in self._sizes:
            path = getattr(item, "path", None)
            if path and Path(path).is_file():
                from PIL import Image

                with Image.open(path) as im:  # the header only
                    self._sizes[key] = (im.size[1], im.size[0])
            else:
                self._sizes[key] = tuple(item.rgb().shape[:2])
        spec = self.llava.spec
        tiles = spec.num_tiles(spec.tile_grid(self._sizes[key]))
        per_tile = spec.tokens_per_tile if self.cfg.merge == "none" else min(self.cfg.n_c, spec.tokens_per_tile)
        return tiles * per_tile * spec.vision_dim

    def _scored_tokens(self, items) -> int:
        return sum(self.prompts.scored_tokens(it.questions, it.answers, getattr(it, "dialogue", False)) for it in items)

    def loss_terms(self, batch, temperature: float, norm: dict | None = None) -> dict:
        """D, R (bits per image, mean), L_balance and the total for one (micro-)batch (differentiable).

        Args:
            batch: items (image_id, questions, answers, rgb(); ``dialogue`` items are one conversation each).
            temperature: router temperature.
            norm: the whole step's counts over all processes and micro-batches: ``tokens`` (scored answer tokens),
                ``images``, ``micro`` (micro-steps), ``full_tokens``; None: this batch's own (one process, one
                micro-batch). ``loss`` is this batch's share of the step's loss, so the shares' gradients add up.

        Returns:
            ``loss`` (the share), and this batch's own D (mean CE per answer token), R (mean bits per image),
            balance, acc (greedy exact match), plus the sums the step aggregates (keys starting with "_").
        """
        cfg = self.cfg
        server = self.llava.server
        dialogue = [bool(getattr(b, "dialogue", False)) for b in batch]
        share = not cfg.gradient_checkpointing  # checkpointed layers drop the KV cache that prefix sharing needs
        feats = vision_batch(self.llava, self.pixels, batch)
        merged = [merge_features(f, cfg.n_c, cfg.merge, cfg.k) for f, _, _ in feats]
        sizes = [m.shape[0] * m.shape[1] for m in merged]
        with torch.autocast(self.device.type, enabled=False):  # the entropy model's likelihoods stay in fp32
            flat = torch.cat([m.reshape(-1, m.shape[-1]) for m in merged]).float()
            out = self.codec(flat, temperature=temperature)
        x_hat = torch.split(out["x_hat"], sizes)
        bits = torch.stack([b.sum() for b in torch.split(out["bits"], sizes)])  # [B] bits per image
        embeds = [server.image_embeddings(xh.reshape(m.shape), g, s) for xh, m, (_, g, s) in zip(x_hat, merged, feats)]
        questions, answers = [b.questions for b in batch], [b.answers for b in batch]
        scores = answer_logits(server, self.prompts, embeds, questions, answers, dialogue=dialogue, share_prefix=share)
        ce_sum, n_tok, ok = answer_token_stats(scores)
        n_full_img = min(cfg.full_feature_images, len(batch))
        if norm is None:
            full_tok = self._scored_tokens(batch[:n_full_img]) if n_full_img else 0
            norm = {"tokens": n_tok, "images": len(batch), "micro": 1, "full_tokens": full_tok, "local": True}
            norm["rate"] = len(batch) if cfg.rate_unit == "image" else sum(m.numel() for m in merged)
        balance, balance_share = self._balance(out, norm)
        rate_sum = bits.sum()
        share_loss = ce_sum / norm["tokens"] + cfg.lam * rate_sum / norm["rate"] + cfg.balance_weight * balance_share
        terms = {
            "D": ce_sum / max(n_tok, 1),
            "R": bits.mean() if cfg.rate_unit == "image" else rate_sum / sum(m.numel() for m in merged),
            "balance": balance,
            "acc": ok.float().mean(),
            "_ce": ce_sum.detach(),
            "_tokens": n_tok,
            "_bits": rate_sum.detach(),
            "_images": len(batch),
            "_elements": sum(m.numel() for m in merged),
            "_hits": int(ok.sum()),
            "_questions": int(ok.numel()),
        }
        if n_full_img:
            full = [server.image_embeddings(f, g, s) for f, g, s in feats[:n_full_img]]
            sc = answer_logits(
                server,
                self.prompts,
                full,
                questions[:n_full_img],
                answers[:n_full_img],
                dialogue=dialogue[:n_full_img],
                share_prefix=share,
            )
            full_ce, full_n, _ = answer_token_stats(sc)
            terms["D_full"] = full_ce / max(full_n, 1)
            terms["_full_ce"], terms["_full_tokens"] = full_ce.detach(), full_n
            share_loss = share_loss + full_ce / norm["full_tokens"]
        terms["loss"] = share_loss
        return terms

    def _balance(self, out: dict, norm: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_balance of the micro-step, this process's share of it for the loss).

        Alone, the codec's own balance loss. With several processes, the router usage P_e is that of the whole
        micro-step (all processes' merged features, all-reduced); each process's share is a surrogate with exactly
        its part of the gradient, dL/dp = 2·n_e·(P_e − 1/n_e)/M for each of its M_r routing rows.
        """
        dist = _dist()
        if dist is None or norm.get("local"):
            return out["balance_loss"], out["balance_loss"] / norm["micro"]
        probs = out["weights"]  # [M_r, E]: the softmax in training mode
        n_e = probs.shape[1]
        stats = torch.cat([probs.sum(0).detach().double(), probs.new_tensor([probs.shape[0]], dtype=torch.float64)])
        _all_sum(stats)
        usage = (stats[:n_e] / stats[n_e]).to(probs.dtype)  # P_e over the micro-step
        balance = n_e * ((usage - 1.0 / n_e) ** 2).sum()
        grad = (2.0 * n_e * (usage - 1.0 / n_e) / stats[n_e].to(probs.dtype)).detach()
        return balance, (probs.sum(0) * grad).sum() / norm["micro"]

    def train_step(self) -> dict:
        """One optimisation step (main + auxiliary optimizer) over the global batch. Returns the step's terms.

        D is the cross-entropy per answer token and R the bits per image over the whole step (all processes and
        micro-batches), balance the mean over micro-steps, acc the greedy exact match of its questions.
        """
        cfg = self.cfg
        self.llava.model.train()
        self.codec.train()
        lr_scale = cosine_lr(self.step, cfg.steps, cfg.warmup_steps, 1.0, 0.1)
        for g in self.opt.param_groups:
            g["lr"] = g["base_lr"] * lr_scale
        temp = self.temperature()
        mine = self._next_micro_batches()
        # The step's normalisers, before any forward pass: answer tokens by tokenization, summed over processes.
        n_full = min(cfg.full_feature_images, len(mine[0]))
        elements = sum(self._coded_values(it) for mb in mine for it in mb) if cfg.rate_unit == "element" else 0
        counts = torch.tensor(
            [
                sum(self._scored_tokens(mb) for mb in mine),
                sum(self._scored_tokens(mb[:n_full]) for mb in mine),
                elements,
            ],
            dtype=torch.float64,
            device=self.device,
        )
        _all_sum(counts)
        norm = {"tokens": float(counts[0]), "images": cfg.batch_images, "micro": cfg.grad_accum}
        norm["full_tokens"] = max(float(counts[1]), 1.0)
        norm["rate"] = float(counts[2]) if cfg.rate_unit == "element" else cfg.batch_images
        self.opt.zero_grad(set_to_none=True)
        # ce, tokens, bits, images, hits, questions, balance, full ce, full tokens, coded values: summed over
        # micro-steps and processes
        sums = torch.zeros(10, dtype=torch.float64)
        for mb in mine:
            with self._autocast():
                terms = self.loss_terms(mb, temp, norm)
            self.scaler.scale(terms["loss"]).backward()
            sums += torch.tensor(
                [
                    float(terms["_ce"]),
                    terms["_tokens"],
                    float(terms["_bits"]),
                    terms["_images"],
                    terms["_hits"],
                    terms["_questions"],
                    float(terms["balance"].detach()) / (self.processes * cfg.grad_accum),
                    float(terms.get("_full_ce", 0.0)),
                    terms.get("_full_tokens", 0),
                    terms["_elements"],
                ],
                dtype=torch.float64,
            )
        self._sum_gradients(self.model_params + self.codec_main)
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.model_params + self.codec_main, cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.aux_opt.zero_grad(set_to_none=True)
        aux = self.codec.aux_loss()
        aux.backward()
        self._sum_gradients(self.aux_params, average=True)  # every process computed the same aux loss
        self.aux_opt.step()
        self.step += 1
        sums = _all_sum(sums.to(self.device)).cpu()
        ce, tokens, bits, images, hits, questions, balance, full_ce, full_n, elements = sums.tolist()
        rec = {
            "D": ce / max(tokens, 1),
            "R": bits / max(images, 1) if cfg.rate_unit == "image" else bits / max(elements, 1),
            "balance": balance,
            "acc": hits / max(questions, 1),
            "bits_per_image": bits / max(images, 1),
        }
        rec["loss"] = rec["D"] + cfg.lam * rec["R"] + cfg.balance_weight * balance
        if full_n:
            rec["D_full"] = full_ce / full_n
            rec["loss"] += rec["D_full"]
        rec.update(aux=float(aux.detach()), T=temp, lr=cfg.lr * lr_scale)
        return rec

    def _sum_gradients(self, params: list[torch.nn.Parameter], average: bool = False) -> None:
        """All-reduce the gradients of ``params`` over the processes (one flat buffer; a missing grad counts as 0)."""
        dist = _dist()
        if dist is None or not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        if average:
            flat /= self.processes
        pos = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[pos : pos + n].view_as(g).to(g.dtype)
            pos += n

    def replica_digest(self) -> str:
        """Hash of every replicated parameter's bytes (trainable model parameters, codec incl. quantiles)."""
        h = hashlib.blake2b(digest_size=16)
        for p in self._replicated():
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def check_replicas(self) -> dict:
        """Every process's digest; raises if the replicas differ (a data-parallel step that was not one)."""
        digest = self.replica_digest()
        dist = _dist()
        if dist is None:
            return {"processes": 1, "identical": True, "digests": [digest]}
        digests: list = [None] * self.processes
        dist.all_gather_object(digests, digest)
        if len(set(digests)) != 1:
            raise RuntimeError(f"the {self.processes} processes' parameters diverged at step {self.step}: {digests}")
        return {"processes": self.processes, "identical": True, "digests": digests}

    # ------------------------------------------------------------------------------------------- checkpoints
    def _trainable_state(self) -> dict[str, torch.Tensor]:
        state = {
            f"model.{n}": p.detach().cpu().contiguous() for n, p in self.llava.named_parameters() if p.requires_grad
        }
        state.update({f"codec.{n}": p.detach().cpu().contiguous() for n, p in self.codec.named_parameters()})
        return state

    def _named_param_list(self) -> list[tuple[str, torch.nn.Parameter]]:
        named = [(f"model.{n}", p) for n, p in self.llava.named_parameters() if p.requires_grad]
        named += [(f"codec.{n}", p) for n, p in self.codec.named_parameters()]
        return named

    def _optimizer_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors: dict[str, torch.Tensor] = {}
        meta: dict = {}
        ids = {id(p): n for n, p in self._named_param_list()}
        for opt_name, opt in (("main", self.opt), ("aux", self.aux_opt)):
            opt = getattr(opt, "optimizer", opt)  # unwrap accelerate
            for group in opt.param_groups:
                for p in group["params"]:
                    st = opt.state.get(p, {})
                    for key, value in st.items():
                        name = f"{opt_name}|{ids[id(p)]}|{key}"
                        if torch.is_tensor(value):
                            tensors[name] = value.detach().cpu().contiguous()
                        else:
                            meta[name] = value
        return tensors, meta

    def save_checkpoint(self) -> Path:
        """Write ``checkpoint/`` atomically (safetensors + JSON only)."""
        from safetensors.torch import save_file

        ck = self.run_dir / "checkpoint"
        tmp = self.run_dir / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(self._trainable_state(), str(tmp / "trainable.safetensors"))
        opt_tensors, opt_meta = self._optimizer_state()
        opt_tensors["rng|torch"] = torch.get_rng_state()
        opt_tensors["rng|data"] = self.gen.get_state()
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        state = {
            "step": self.step,
            "order": self.order,
            "optimizer_scalars": opt_meta,
            "scaler": self.scaler.state_dict(),
            "config": config_to_dict(self.cfg),
        }
        (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
        shutil.rmtree(ck, ignore_errors=True)
        tmp.rename(ck)
        return ck

    def load_checkpoint(self, ck: Path | None = None) -> bool:
        """Restore parameters, optimizer moments, RNG and data order from ``checkpoint/``. False if none."""
        from safetensors.torch import load_file

        ck = Path(ck) if ck else self.run_dir / "checkpoint"
        if not (ck / "state.json").is_file():
            return False
        state = json.loads((ck / "state.json").read_text(encoding="utf-8"))
        params = load_file(str(ck / "trainable.safetensors"))
        named = dict(self._named_param_list())
        if set(params) != set(named):
            raise ValueError(f"checkpoint parameters do not match this run: {sorted(set(params) ^ set(named))[:5]}")
        with torch.no_grad():
            for n, p in named.items():
                p.copy_(params[n].to(p.device, p.dtype))
        tensors = load_file(str(ck / "optimizer.safetensors"))
        for opt_name, opt in (("main", self.opt), ("aux", self.aux_opt)):
            opt = getattr(opt, "optimizer", opt)
            for group in opt.param_groups:
                for p in group["params"]:
                    pname = next(n for n, q in named.items() if q is p)
                    st = {}
                    for key in ("step", "exp_avg", "exp_avg_sq"):
                        tname = f"{opt_name}|{pname}|{key}"
                        if tname in tensors:
                            st[key] = tensors[tname].to(p.device) if key != "step" else tensors[tname]
                        elif tname in state["optimizer_scalars"]:
                            st[key] = state["optimizer_scalars"][tname]
                    if st:
                        opt.state[p] = st
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(tensors["rng|torch"])
        self.gen.set_state(tensors["rng|data"])
        self.order = list(state["order"])
        self.step = int(state["step"])
        return True

    # ------------------------------------------------------------------------------------------------ export
    def export(self) -> dict:
        """Update and save the codec, save adapters and (optionally) the merged model. Returns file paths."""
        from safetensors.torch import save_file

        from tofc_ros.codec.weights import save_model

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.codec.eval()
        self.codec.update()
        fp = save_model(self.codec, self.run_dir / "codec.safetensors")
        adapters = {n: p.detach().cpu().contiguous() for n, p in self.llava.named_parameters() if p.requires_grad}
        save_file(
            adapters,
            str(self.run_dir / "adapters.safetensors"),
            metadata={"format": "tofc-adapters/1", "base_model": str(self.cfg.model)},
        )
        out = {
            "codec": str(self.run_dir / "codec.safetensors"),
            "codec_fingerprint": fp.hex(),
            "adapters": str(self.run_dir / "adapters.safetensors"),
        }
        if self.cfg.save_merged or self.cfg.bundle_dir:
            out["model"] = str(self.save_merged_model(self.run_dir / "model"))
        if self.cfg.bundle_dir:
            out["bundle"] = str(bundle(self.run_dir, self.cfg.bundle_dir))
        return out

    def save_merged_model(self, out_dir: Path) -> Path:
        """LoRA merged into the base weights, written as a llava-hf directory (adapters removed from this run)."""
        self.llava.merge_lora()
        return self.llava.save(out_dir)

    # ------------------------------------------------------------------------------------------------- driver
    def run(self, resume: bool = False, progress: bool = True) -> dict:
        """Train to ``cfg.steps`` (resuming if asked and possible), export, write summary.json."""
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        resumed = self.load_checkpoint() if resume else False
        if not resumed:
            (self.run_dir / "log.jsonl").unlink(missing_ok=True)
        log = JsonlLog(self.run_dir / "log.jsonl")
        is_main = self.rank == 0
        bar = None
        if progress and is_main:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc=f"tofc {cfg.name or ''}".strip(), dynamic_ncols=True)
        t0 = timer()
        while self.step < cfg.steps:
            rec = self.train_step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(D=f"{rec['D']:.3f}", R=f"{rec['R']:.4g}", T=f"{rec['T']:.2f}")
            if is_main and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                log.write(step=self.step, **rec, elapsed_s=timer() - t0)
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                self.check_replicas()  # every process takes part; only process 0 writes
                if is_main:
                    self.save_checkpoint()
        if bar is not None:
            bar.close()
        train_s = timer() - t0
        summary = {
            "config": config_to_dict(cfg),
            "steps": self.step,
            "train_seconds": round(train_s, 1),
            "resumed": resumed,
            "processes": self.processes,
            "replicas": self.check_replicas(),
        }
        if is_main:
            self.save_checkpoint()
            summary["files"] = self.export()
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
            if self.cfg.bundle_dir:
                shutil.copy2(self.run_dir / "summary.json", Path(self.cfg.bundle_dir) / "tofc_train_summary.json")
        return summary


def bundle(run_dir: str | Path, bundle_dir: str | Path) -> Path:
    """Copy a run's merged model and codec into one node-ready directory.

    The device and server nodes read ``model_path`` (a llava-hf directory) and ``codec_path``
    (``<model_path>/tofc_codec.safetensors`` by default); the codec is only valid with this backbone.
    """
    run_dir, dst = Path(run_dir), Path(bundle_dir)
    src = run_dir / "model"
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src}: no merged model to bundle (save_merged)")
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, dst / f.name)
    shutil.copy2(run_dir / "codec.safetensors", dst / "tofc_codec.safetensors")
    return dst


def make_accelerator():
    """An ``accelerate.Accelerator`` for this process: CUDA when present, else CPU processes over gloo.

    Under torchrun on a machine without CUDA, accelerate falls back to one independent process each unless told to
    use the CPU, which would train unsynchronised replicas: ``cpu=True`` there, and a check that it sees them all.
    """
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != launched:
        raise RuntimeError(f"launched {launched} processes but accelerate sees {accelerator.num_processes}")
    return accelerator


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: one run, or every entry of ``sweep`` in turn."""
    parser = argparse.ArgumentParser(prog="tofc train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML config (keys of TofcTrainConfig)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--resume", action="store_true", help="continue from each run's checkpoint/ if present")
    parser.add_argument("--only", default="", help="run only the sweep entry with this name")
    parser.add_argument(
        "--accelerate", action="store_true", help="use accelerate (implied under accelerate launch / torchrun)"
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = load_config(TofcTrainConfig, args.config, args.set)
    runs = [r for r in expand_sweep(cfg) if not args.only or r.name == args.only]
    if args.only and not runs:
        raise ValueError(f"no sweep entry named {args.only!r} in {args.config}")
    accelerator = None
    if args.accelerate or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        accelerator = make_accelerator()
    for run in runs:
        summary = TofcTrainer(run, accelerator).run(resume=args.resume, progress=not args.no_progress)
        if accelerator is None or accelerator.is_main_process:
            print(json.dumps({k: summary.get(k) for k in ("steps", "train_seconds", "processes", "files")}))
    if accelerator is not None:
        # Every process reaches here, then the group is torn down: a process that exits with gloo's threads still
        # up can abort in C++ ("terminate called without an active exception"), and torchrun then fails the run.
        accelerator.wait_for_everyone()
        accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
