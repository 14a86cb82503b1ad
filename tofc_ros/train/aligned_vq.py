"""AlignedVQ training: codebooks (k-means initialised) trained end to end with the task loss, optionally with LoRA on
the layers after the split, the projector and the LLM.

    python -m tofc_ros.train.aligned_vq --config configs/train_scenes_alignedvq.yaml [--set split_layer=1]

Per step, for a batch of images and all their questions::

    pixels ─ embeddings + layers 1..X (frozen: the robot runs them unchanged) ─► h [T, N, d]
      ─ AlignedVQ (normalise, grouped residual VQ, straight-through) ─► ĥ
      ─ layers X+1..k (+LoRA) ─ selection ─► [T, n_v, d] ─ projector ─ token order ─ LLM (+LoRA) ─► D = CE(answer + EOS)

    L = D + Σ_r |sg(res_r) − e_r|² + β·|res_r − sg(e_r)|²       (codebook and commitment terms per residual stage)

Before step 1 the statistics levels and every stage's codebooks are fitted by k-means to the features of
``init_images`` training images; after the last step the entropy coder's priors are the index and level frequencies
over ``prior_images`` images. The serving objects are the training objects: the tail is ``TrainableLlava.vision_tail``
(the model's own layers), and the server half's projector and LLM are the model's.

Outputs in ``out``: ``alignedvq.safetensors`` (the codec), ``log.jsonl``, ``summary.json``, and with any trained
model weights (LoRA or projector) ``model/``, the merged llava-hf directory the codec belongs to (its fingerprint
changes with them). ``bundle_dir`` also copies the codec (and the model, if trained) there, node-ready.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tofc_ros.backbones.answer_scoring import PromptCache, answer_logits, answer_token_stats
from tofc_ros.train.common import (
    JsonlLog,
    PixelPath,
    config_from_cli,
    config_to_dict,
    cosine_lr,
    seed_everything,
    set_threads,
    timer,
)
from tofc_ros.train.llava import TrainableLlava
from tofc_ros.train.pretrain import SceneDataConfig
from tofc_ros.train.tofc import DATA_SETS, LlavaDataSettings, LoraSettings, load_train_items

__all__ = ["AlignedVQTrainConfig", "AlignedVQTrainer", "main"]

CODEC_FILE = "alignedvq.safetensors"


@dataclass(frozen=True)
class AlignedVQTrainConfig:
    """AlignedVQ training settings (YAML keys of configs/train_*_alignedvq.yaml)."""

    model: str = "models/scenes-tiny-ov"  # llava-hf directory
    data: str = "scenes"  # easyvqa | scenes | llava
    scenes: SceneDataConfig = field(default_factory=SceneDataConfig)
    llava: LlavaDataSettings = field(default_factory=LlavaDataSettings)
    out: str = "runs/alignedvq"
    seed: int = 0
    split_layer: int = 1  # encoder layers the robot runs (X)
    groups: int = 4  # G
    stages: int = 2  # R
    codebook_size: int = 256  # K
    stats: str = "scalar"  # scalar | none
    stat_levels: int = 64
    n_clusters: int = 0  # DPC-KNN to this many tokens per tile after the split (0: every token, as the paper)
    k: int = 5  # DPC-KNN neighbours
    beta: float = 0.25  # commitment weight
    steps: int = 200
    batch_images: int = 8
    lr: float = 1e-3  # LoRA and projector
    codec_lr: float = 1e-3  # codebooks
    warmup_steps: int = 10
    grad_clip: float = 1.0
    lora: LoraSettings = field(default_factory=lambda: LoraSettings(vision=False, text=False))  # vision: after X
    train_projector: bool = False
    init_images: int = 64  # k-means initialisation
    kmeans_iters: int = 15
    prior_images: int = 256  # entropy-coder priors
    train_limit: int | None = None
    log_every: int = 10
    threads: int = 0
    bundle_dir: str = ""

    def __post_init__(self):
        if self.data not in DATA_SETS:
            raise ValueError(f"data must be one of {DATA_SETS}, got {self.data!r}")
        if self.steps < 0 or self.batch_images < 1 or self.init_images < 1 or self.prior_images < 1:
            raise ValueError("steps must be ≥ 0; batch_images, init_images and prior_images ≥ 1")
        if self.beta < 0:
            raise ValueError(f"beta must be ≥ 0, got {self.beta}")

    @property
    def trains_model(self) -> bool:
        return self.lora.vision or self.lora.text or self.train_projector


class AlignedVQTrainer:
    """One AlignedVQ run: build, initialise, train, fit the priors, export."""

    def __init__(self, cfg: AlignedVQTrainConfig):
        from tofc_ros.backbones.vision_split import check_split_layer
        from tofc_ros.codec.aligned_vq import AlignedVQ, AlignedVQConfig

        self.cfg = cfg
        set_threads(cfg.threads)
        seed_everything(cfg.seed)
        self.train = load_train_items(cfg)
        self.llava = TrainableLlava.from_pretrained(cfg.model)
        spec = self.llava.spec
        check_split_layer(spec, cfg.split_layer)
        if cfg.split_layer == spec.vision_layers_needed:
            raise ValueError(f"split_layer {cfg.split_layer} is the feature layer: AlignedVQ splits inside the tower")
        self.vq = AlignedVQ(
            AlignedVQConfig(
                d=spec.vision_dim,
                split_layer=cfg.split_layer,
                groups=cfg.groups,
                stages=cfg.stages,
                codebook_size=cfg.codebook_size,
                stats=cfg.stats,
                stat_levels=cfg.stat_levels,
                n_clusters=cfg.n_clusters,
            )
        )
        self._apply_lora()
        self.tail = self.llava.vision_tail(cfg.split_layer)
        self.model_params = [p for p in self.llava.parameters() if p.requires_grad]
        groups = [{"params": [self.vq.codebooks], "lr": cfg.codec_lr, "base_lr": cfg.codec_lr}]
        if self.model_params:
            groups.append({"params": self.model_params, "lr": cfg.lr, "base_lr": cfg.lr})
        self.opt = torch.optim.AdamW(groups, weight_decay=0.0)
        self.pixels = PixelPath(self.llava.device_half)
        self.prompts = PromptCache(self.llava.server)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.order: list[int] = []
        self.step = 0

    def _apply_lora(self) -> None:
        cfg, spec = self.cfg, self.llava.spec
        patterns = []
        if cfg.lora.vision:  # only the layers after the split: the robot's layers stay the checkpoint's
            layers = "|".join(str(i) for i in range(cfg.split_layer, spec.vision_layers_needed))
            targets = "|".join(cfg.lora.vision_targets)
            patterns.append(rf".*vision_tower\..*encoder\.layers\.({layers})\..*\.({targets})$")
        if cfg.lora.text:
            patterns.append(r".*language_model\..*\.(" + "|".join(cfg.lora.text_targets) + r")$")
        self.llava.add_lora(patterns, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, seed=cfg.seed + 2)
        if cfg.train_projector:
            for p in self.llava.model.model.multi_modal_projector.parameters():
                p.requires_grad_(True)

    # ------------------------------------------------------------------------------------------------ data
    def _batch(self, n: int) -> list:
        while len(self.order) < n:
            self.order += torch.randperm(len(self.train), generator=self.gen).tolist()
        idx = self.order[:n]
        del self.order[:n]
        return [self.train[i] for i in idx]

    def split_features(self, items) -> list[tuple[torch.Tensor, int, tuple, tuple]]:
        """Per image: (h [U, N, d] after the split for its U distinct tiles, merged as the device merges them when
        ``n_clusters``, repeat, grid, image size); the robot's layers are frozen, so no gradients."""
        from tofc_ros.backbones.vision_split import leading_cls
        from tofc_ros.codec.merging import merge_keeping_first

        cfg, cls = self.cfg, leading_cls(self.llava.spec)
        out = []
        with torch.no_grad():
            for item in items:
                px, repeat, grid, size = self.pixels.tiles(item.rgb())
                h = self.llava.vision_features(px, cfg.split_layer)
                if 0 < cfg.n_clusters < h.shape[1] - cls:
                    h = merge_keeping_first(h, cfg.n_clusters, cfg.k, cls)
                out.append((h, repeat, grid, size))
        return out

    def _sample(self, n_images: int) -> torch.Tensor:
        """Hidden states at the split of ``n_images`` training images (seeded draw), every token, [M, d]."""
        gen = torch.Generator().manual_seed(self.cfg.seed + 7)
        pick = torch.randperm(len(self.train), generator=gen)[:n_images].tolist()
        feats = self.split_features([self.train[i] for i in pick])
        return torch.cat([h.reshape(-1, h.shape[-1]) for h, _, _, _ in feats])

    # -------------------------------------------------------------------------------------------- training
    def loss_terms(self, items) -> dict:
        server = self.llava.server
        feats = self.split_features(items)
        sizes = [h.shape[0] * h.shape[1] for h, _, _, _ in feats]
        out = self.vq(torch.cat([h.reshape(-1, h.shape[-1]) for h, _, _, _ in feats]), beta=self.cfg.beta)
        embeds = []
        for h_hat, (h, repeat, grid, size) in zip(torch.split(out["h_hat"], sizes), feats, strict=True):
            tiles = self.tail(h_hat.reshape(h.shape))
            if repeat > 1:
                tiles = tiles.repeat(repeat, 1, 1)
            embeds.append(server.image_embeddings(tiles, grid, size))
        scores = answer_logits(server, self.prompts, embeds, [b.questions for b in items], [b.answers for b in items])
        ce, n_tok, ok = answer_token_stats(scores)
        d = ce / max(n_tok, 1)
        loss = d + out["codebook_loss"] + out["commit_loss"]
        return {"loss": loss, "D": d, "acc": ok.float().mean(), "vq": out["codebook_loss"] + out["commit_loss"]}

    def train_step(self) -> dict:
        cfg = self.cfg
        self.llava.model.train()
        scale = cosine_lr(self.step, cfg.steps, cfg.warmup_steps, 1.0, 0.1)
        for g in self.opt.param_groups:
            g["lr"] = g["base_lr"] * scale
        terms = self.loss_terms(self._batch(cfg.batch_images))
        self.opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_([self.vq.codebooks, *self.model_params], cfg.grad_clip)
        self.opt.step()
        self.step += 1
        return {k: float(v.detach()) for k, v in terms.items()} | {"lr_scale": scale}

    def run(self, progress: bool = True) -> dict:
        from tofc_ros.codec.aligned_vq import save_aligned_vq

        cfg = self.cfg
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        t0 = timer()
        self.vq.init_from(self._sample(cfg.init_images), iters=cfg.kmeans_iters, seed=cfg.seed)
        init_s = timer() - t0
        log = JsonlLog(out / "log.jsonl")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, desc="alignedvq", dynamic_ncols=True)
        t1 = timer()
        while self.step < cfg.steps:
            rec = self.train_step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(D=f"{rec['D']:.3f}", vq=f"{rec['vq']:.3f}", acc=f"{rec['acc']:.2f}")
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                log.write(step=self.step, **rec, elapsed_s=timer() - t1)
        if bar is not None:
            bar.close()
        train_s = timer() - t1
        self.llava.model.eval()
        priors = self.vq.fit_priors(self._sample(cfg.prior_images))
        files = {}
        if cfg.trains_model:
            self.llava.merge_lora()
            files["model"] = str(self.llava.save(out / "model"))
        fp = save_aligned_vq(self.vq, out / CODEC_FILE)
        files["codec"] = str(out / CODEC_FILE)
        summary = {
            "config": config_to_dict(cfg),
            "steps": self.step,
            "init_seconds": round(init_s, 1),
            "train_seconds": round(train_s, 1),
            "codec_fingerprint": fp.hex(),
            "ideal_bits_per_token": priors,
            "files": files,
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        if cfg.bundle_dir:
            dst = Path(cfg.bundle_dir)
            if cfg.trains_model:
                shutil.copytree(out / "model", dst, dirs_exist_ok=True)
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(out / CODEC_FILE, dst / CODEC_FILE)
            shutil.copy2(out / "summary.json", dst / "alignedvq_train_summary.json")
        return summary


def main(argv: list[str] | None = None) -> int:
    cfg, args = config_from_cli(AlignedVQTrainConfig, "tofc train-avq", __doc__.split("\n")[0], argv)
    summary = AlignedVQTrainer(cfg).run(progress=not args.no_progress)
    print(json.dumps({k: summary[k] for k in ("steps", "train_seconds", "ideal_bits_per_token", "files")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
