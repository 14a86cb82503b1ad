"""Two-stage training: teach the server's model to answer from the first pass's tokens plus the robot's crop.

    python -m tofc_ros.train.two_stage --config configs/train_scenes_two_stage.yaml

1. Crops, as serving makes them: for each training image the deployed first pass (the device's FeatureEncoder at
   ``first_n_c`` with the codec, the server's ServerCore holding every answer), then per question the device's
   DeviceRefiner (region from where the *initial* model's answer looked, crop, encode at ``detail_n_c``), both
   payloads decoded by the server's FrameDecoder (``pipeline.two_pass.TwoPassRig``: the same objects the evaluation
   runs). The vision tower and the codec stay frozen: robots keep sending what they send.
2. Task loss (answer + EOS cross-entropy) through ``ServerHalf.prepare_inputs(detail=...)``, the function serving
   builds prompts with (token_order's regime 3), over LoRA on the LLM and the projector; a ``detail_share`` of the
   samples carry the crop, an ``all_share`` every tile at the one-pass point (``all_n_c``) and the others only the
   first pass, so the one model serves both passes and the one-pass mode.
3. LoRA merged, the model written as a llava-hf directory with the codec beside it (``bundle_dir``: node-ready).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tofc_ros.train.common import (
    JsonlLog,
    config_from_cli,
    config_to_dict,
    cosine_lr,
    seed_everything,
    set_threads,
    timer,
)
from tofc_ros.train.llava import TrainableLlava
from tofc_ros.train.tofc import LoraSettings

__all__ = ["TwoStageTrainConfig", "make_samples", "train", "main"]


@dataclass(frozen=True)
class TwoStageTrainConfig:
    """Two-stage training settings (YAML keys of configs/train_scenes_two_stage.yaml)."""

    model: str = "models/scenes-tiny-ov"  # llava-hf directory (its vision tower is kept: payloads stay valid)
    codec: str = "models/scenes-tiny-ov/tofc_codec.safetensors"
    out: str = "runs/two-stage"
    bundle_dir: str = ""  # also write the merged model + codec here
    seed: int = 0
    data: str = "scenes"  # scenes (1280x720 frames) | easyvqa
    images: int = 300  # training images whose crops are made (the first ones of the train split)
    scene_seed: int = 0
    first_n_c: int = 4
    detail_n_c: int = 16
    max_area: float = 0.1
    all_n_c: int = 16  # the one-pass operating point the same model keeps serving (two_stage off)
    detail_share: float = 0.4  # samples with the first pass + the crop
    all_share: float = 0.3  # samples with every tile at all_n_c (the rest: the first pass alone)
    steps: int = 600
    batch: int = 16
    lr: float = 1e-3
    warmup_steps: int = 20
    grad_clip: float = 1.0
    train_projector: bool = True
    lora: LoraSettings = field(default_factory=lambda: LoraSettings(vision=False, text=True))
    threads: int = 2
    log_every: int = 25


@dataclass(frozen=True)
class Sample:
    """One question with both views, as the server decodes them."""

    first: tuple  # (features [T, n, d], grid, image size)
    detail: tuple  # the crop's (features, grid, image size)
    all_tiles: tuple  # every tile at all_n_c
    question: str
    answer: str


@torch.inference_mode()
def make_samples(cfg: TwoStageTrainConfig, progress: bool = False) -> list[Sample]:
    """Step 1: both views of every question of ``cfg.images`` training scenes, through the deployed objects."""
    from tofc_ros.backbones import GenerationOptions, load_device_half, load_server_half
    from tofc_ros.codec import load_codec
    from tofc_ros.data import easyvqa, scenes
    from tofc_ros.pipeline.answerer import model_server
    from tofc_ros.pipeline.encoder import FeatureEncoder
    from tofc_ros.pipeline.two_pass import TwoPassRig

    codec = load_codec(cfg.codec)
    decoder, answerer = model_server(
        load_server_half(cfg.model), [codec], GenerationOptions(max_new_tokens=8), accept_images=False
    )
    device_half = load_device_half(cfg.model)
    rig = TwoPassRig(device_half, codec, decoder, answerer, cfg.first_n_c, cfg.detail_n_c, cfg.max_area)
    one_pass = FeatureEncoder(device_half, codec, cfg.all_n_c)

    def view(encoded) -> tuple:
        frame = decoder.decode(encoded.payload, encoded.format)
        # numpy: a tensor made in inference mode cannot enter the autograd graph of training
        return frame.features.float().numpy().copy(), tuple(frame.header.grid), tuple(frame.header.image_size)

    out = []
    if cfg.data == "scenes":
        items = scenes.load_split("train", cfg.images, cfg.scene_seed, sizes=[(1280, 720)])
    elif cfg.data == "easyvqa":
        items = easyvqa.load_split("train")[: cfg.images]
    else:
        raise ValueError(f"data must be 'scenes' or 'easyvqa', got {cfg.data!r}")
    for i, item in enumerate(items):
        rgb = item.rgb()
        first, asks, _, _ = rig.first_pass(rgb, item.questions, 8)
        first_view, all_view = view(first), view(one_pass.encode(rgb))
        for k, ask in enumerate(asks):
            _, crop, job, _ = rig.detail(ask, rgb)
            rig.core.run_batch([job])  # the held question leaves (its second pass is not needed here)
            out.append(Sample(first_view, view(crop), all_view, item.questions[k], item.answers[k]))
        if progress and (i + 1) % 25 == 0:
            print(f"crops: {i + 1}/{len(items)} images", file=sys.stderr, flush=True)
    return out


def _loss(llava: TrainableLlava, sample: Sample, view: str) -> torch.Tensor:
    """The answer loss of one sample seen as ``view``: "detail" (first pass + crop), "all" or "first"."""
    server = llava.server
    first = sample.all_tiles if view == "all" else sample.first
    detail = sample.detail if view == "detail" else None
    prepared = server.prepare_inputs(*first, sample.question, answer=sample.answer, detail=detail)
    logits = server.forward_embeds(prepared.inputs_embeds)
    return torch.nn.functional.cross_entropy(logits[:-1].float(), prepared.labels[1:], ignore_index=-100)


def train(cfg: TwoStageTrainConfig, samples: list[Sample], log: JsonlLog) -> TrainableLlava:
    """Step 2: the task loss over LoRA on the LLM (+ the projector)."""
    llava = TrainableLlava.from_pretrained(cfg.model)
    patterns = [r".*language_model\..*\.(" + "|".join(cfg.lora.text_targets) + r")$"] if cfg.lora.text else []
    llava.add_lora(patterns, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, seed=cfg.seed + 2)
    if cfg.train_projector:
        for p in llava.server.projector.parameters():
            p.requires_grad_(True)
    params = [p for p in llava.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: enable lora.text or train_projector")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    llava.model.train()
    started = timer()
    for step in range(1, cfg.steps + 1):
        lr = cosine_lr(step - 1, cfg.steps, cfg.warmup_steps, cfg.lr)
        for group in opt.param_groups:
            group["lr"] = lr
        picks = rng.integers(0, len(samples), cfg.batch)
        draws = rng.random(cfg.batch)
        views = ["detail" if u < cfg.detail_share else "all" if u < cfg.detail_share + cfg.all_share else "first"
                 for u in draws]  # fmt: skip
        loss = sum(_loss(llava, samples[i], v) for i, v in zip(picks, views)) / cfg.batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.write(step=step, loss=float(loss.detach()), lr=lr, seconds=timer() - started)
    llava.model.eval()
    return llava


def main(argv: list[str] | None = None) -> int:
    cfg, args = config_from_cli(TwoStageTrainConfig, "tofc train-two-stage", __doc__.split("\n\n")[0], argv)
    seed_everything(cfg.seed)
    set_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "log.jsonl").unlink(missing_ok=True)
    log = JsonlLog(out / "log.jsonl")
    t0 = timer()
    samples = make_samples(cfg, progress=not args.no_progress)
    t1 = timer()
    llava = train(cfg, samples, log)
    t2 = timer()
    llava.merge_lora()
    model_dir = llava.save(out / "model")
    shutil.copy2(cfg.codec, model_dir / "tofc_codec.safetensors")
    summary = {
        "config": config_to_dict(cfg),
        "samples": len(samples),
        "crop_seconds": t1 - t0,
        "train_seconds": t2 - t1,
        "model": str(model_dir),
    }
    if cfg.bundle_dir:
        shutil.copytree(model_dir, cfg.bundle_dir, dirs_exist_ok=True)
        summary["bundle"] = cfg.bundle_dir
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (model_dir / "two_stage_train_summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: summary[k] for k in ("samples", "crop_seconds", "train_seconds", "model")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
