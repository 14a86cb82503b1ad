"""Full-size smoke: LLaVA-OneVision-0.5B's real architecture with random weights, through every path a team takes.

    python bench/full_size_smoke.py --out /tmp/fullsize [--threads 2] [--keep]
    tofc bench full_size_smoke --out /tmp/fullsize
    python bench/full_size_smoke.py --out /tmp/small --scale tiny     (the same phases on narrow layers: seconds)

Phases, each in its own process (its time and peak RSS measured alone), results in <out>/smoke.json:
    write    random bf16 weights (893.6M parameters, tied embeddings) saved twice, in the legacy llava-hf key layout
             and in the model-prefixed one (``backbones.random_checkpoint``), with the offline tokenizer
    load     both layouts through the deployed loaders (device half, server half: same fingerprint, same tensors)
             and through the trainer's loader (TrainableLlava, transformers' from_pretrained)
    train    one Algorithm-1 step from a LLaVA-format JSON (a multi-turn 640x480 scene record, converted) with
             the paper's settings for real models: LoRA rank 64 on the vision tower and the LLM, bf16 weights, bf16
             autocast, gradient checkpointing, λ = 0.01, balance weight 0.001; export (LoRA merged, codec)
    answer   one question through the deployed path: FeatureEncoder (device) → payload → FrameDecoder → ModelAnswerer
             (server), from the trained run's model and codec, in bf16

Random weights answer nonsense; what is checked is that every path runs at full size, and what it costs here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHASES = ("write", "load", "train", "answer")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def phase_write(out: Path, scale: str = "full") -> dict:
    from tofc_ros.backbones.random_checkpoint import (
        LAYOUTS,
        onevision_0_5b_config,
        random_state,
        save_random_checkpoint,
    )
    from tofc_ros.backbones.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer("onevision")
    config = onevision_0_5b_config(
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
    )
    if scale == "tiny":  # same structure and vocabulary, narrow and shallow: checks this script in seconds
        v, t = config.vision_config, config.text_config
        v.hidden_size, v.intermediate_size, v.num_hidden_layers, v.num_attention_heads = 64, 128, 26, 2
        t.hidden_size, t.intermediate_size, t.num_hidden_layers, t.num_attention_heads = 64, 128, 2, 2
        t.num_key_value_heads, t.head_dim = 1, 32
        t.layer_types = t.layer_types[:2] if getattr(t, "layer_types", None) else None
    t0 = time.perf_counter()
    state = random_state(config, seed=0)
    t_init = time.perf_counter() - t0
    sizes = {}
    for layout in LAYOUTS:
        path = save_random_checkpoint(out / layout, layout, state=state, config=config)
        sizes[layout] = (path / "model.safetensors").stat().st_size
    return {
        "parameters": sum(v.numel() for v in state.values()),
        "tensors": len(state),
        "init_s": round(t_init, 1),
        "bytes": sizes,
    }


def phase_load(out: Path) -> dict:
    import torch

    from tofc_ros.backbones import load_device_half, load_server_half
    from tofc_ros.train.llava import TrainableLlava

    res: dict = {}
    ref = None
    for layout in ("legacy", "model-prefixed"):
        t0 = time.perf_counter()
        dev = load_device_half(out / layout, dtype="bf16")
        srv = load_server_half(out / layout, dtype="bf16")
        t_halves = time.perf_counter() - t0
        probe = (
            dev.vision_tower.encoder.layers[25].mlp.fc2.weight.float().sum().item(),
            srv.language_model.lm_head.weight.float().sum().item(),
            srv.projector.linear_1.weight.float().sum().item(),
        )
        tied = (
            srv.language_model.lm_head.weight.data_ptr() == srv.language_model.get_input_embeddings().weight.data_ptr()
        )
        del dev, srv
        t0 = time.perf_counter()
        full = TrainableLlava.from_pretrained(out / layout, dtype=torch.bfloat16)
        t_full = time.perf_counter() - t0
        fp = full.spec
        probe_full = full.model.model.vision_tower.encoder.layers[25].mlp.fc2.weight.float().sum().item()
        del full
        res[layout] = {
            "halves_s": round(t_halves, 1),
            "trainable_s": round(t_full, 1),
            "vision_layers": fp.vision_layers_total,
            "tied_lm_head": tied,
            "probe": probe,
        }
        if ref is None:
            ref = (probe, probe_full)
        elif (probe, probe_full) != ref:
            raise RuntimeError(f"{layout} loads other tensors than legacy: {probe} vs {ref[0]}")
        if probe_full != probe[0]:
            raise RuntimeError("the trainer's loader and the device loader read different vision tensors")
    from tofc_ros.backbones.loading import CheckpointReader, backbone_fingerprint, load_config
    from tofc_ros.backbones.spec import BackboneSpec

    fps = set()
    for layout in ("legacy", "model-prefixed"):
        spec = BackboneSpec.from_config(load_config(out / layout))
        fps.add(backbone_fingerprint(CheckpointReader(out / layout), spec))
    res["same_fingerprint"] = len(fps) == 1
    return res


def phase_train(out: Path) -> dict:
    import yaml

    from tofc_ros.data import convert
    from tofc_ros.train.common import load_config
    from tofc_ros.train.tofc import TofcTrainConfig, TofcTrainer

    items = convert.load_items("scenes", "train", images=1, sizes=[(640, 480)])  # 640x480: 5 tiles
    data = convert.to_llava(items, out / "data", source="scenes", max_turns=3)
    base = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/train_llava_tofc.yaml").read_text())
    base.update(
        model=str(out / "legacy"),
        llava={"path": str(data), "image_folder": "", "text_only": "skip"},
        out=str(out / "run"),
        steps=1,
        batch_images=1,
        grad_accum=1,
        warmup_steps=0,
        checkpoint_every=0,
        log_every=1,
        sweep=[],
        threads=0,
    )
    (out / "train.yaml").write_text(yaml.safe_dump(base))
    cfg = load_config(TofcTrainConfig, out / "train.yaml")
    t0 = time.perf_counter()
    trainer = TofcTrainer(cfg)
    t_build = time.perf_counter() - t0
    lora = sum(p.numel() for n, p in trainer.llava.named_parameters() if p.requires_grad and "lora_" in n)
    t0 = time.perf_counter()
    rec = trainer.train_step()
    t_step = time.perf_counter() - t0
    t0 = time.perf_counter()
    trainer.save_checkpoint()
    files = trainer.export()
    t_export = time.perf_counter() - t0
    item = trainer.train[0]
    return {
        "build_s": round(t_build, 1),
        "step_s": round(t_step, 1),
        "export_s": round(t_export, 1),
        "lora_parameters": lora,
        "image": list(item.rgb().shape[:2]),
        "turns": len(item.questions),
        "step": {k: round(v, 4) for k, v in rec.items()},
        "files": files,
    }


def phase_answer(out: Path) -> dict:
    from tofc_ros.backbones import GenerationOptions, load_device_half, load_server_half
    from tofc_ros.codec import load_codec
    from tofc_ros.data.convert import load_items
    from tofc_ros.pipeline.answerer import ModelAnswerer
    from tofc_ros.pipeline.decoder import FrameDecoder
    from tofc_ros.pipeline.encoder import FeatureEncoder

    model = out / "run" / "model"
    t0 = time.perf_counter()
    dev = load_device_half(model, dtype="bf16")
    srv = load_server_half(model, dtype="bf16")
    codec_path = str(out / "run" / "codec.safetensors")
    encoder = FeatureEncoder(dev, load_codec(codec_path), 16)
    decoder = FrameDecoder([load_codec(codec_path)], srv.spec, srv.fingerprint)
    answerer = ModelAnswerer(srv, GenerationOptions(max_new_tokens=8))
    t_load = time.perf_counter() - t0
    item = load_items("scenes", "test", images=1, sizes=[(640, 480)])[0]
    rgb = item.rgb()
    t0 = time.perf_counter()
    encoded = encoder.encode(rgb)
    t_encode = time.perf_counter() - t0
    t0 = time.perf_counter()
    frame = decoder.decode(encoded.payload)
    t_decode = time.perf_counter() - t0
    t0 = time.perf_counter()
    text = answerer.answer(frame, item.questions[0])
    t_answer = time.perf_counter() - t0
    return {
        "load_s": round(t_load, 1),
        "image": list(rgb.shape[:2]),
        "tiles": int(frame.features.shape[0]),
        "tokens_per_tile": int(frame.features.shape[1]),
        "payload_bytes": len(encoded.payload),
        "encode_s": round(t_encode, 2),
        "decode_s": round(t_decode, 3),
        "answer_s": round(t_answer, 2),
        "question": item.questions[0],
        "answer": text,
    }


def run_phase(name: str, out: Path, scale: str) -> dict:
    t0 = time.perf_counter()
    result = phase_write(out, scale) if name == "write" else globals()[f"phase_{name}"](out)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["peak_rss_mb"] = round(_peak_mb())
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="working folder (several GB: two checkpoints and a merged model)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per phase (0: torch's default)")
    ap.add_argument("--scale", choices=("full", "tiny"), default="full", help="tiny: narrow layers (a quick check)")
    ap.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)  # internal: run one phase in this process
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints (default: delete them at the end)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.phase:
        print(json.dumps(run_phase(args.phase, out, args.scale)))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    results = {"scale": args.scale, "machine": {"cpus": os.cpu_count(), "threads": args.threads or "default"}}
    t0 = time.perf_counter()
    for name in PHASES:
        cmd = [sys.executable, __file__, "--out", str(out), "--phase", name, "--threads", str(args.threads)]
        cmd += ["--scale", args.scale]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            print(f"phase {name} failed (exit {proc.returncode})", file=sys.stderr)
            return 1
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{name:7s} {results[name]['wall_s']:8.1f} s  peak RSS {results[name]['peak_rss_mb']:7,} MB", flush=True)
    results["total_s"] = round(time.perf_counter() - t0, 1)
    (out / "smoke.json").write_text(json.dumps(results, indent=2) + "\n")
    if not args.keep:
        for sub in ("legacy", "model-prefixed", "run"):
            shutil.rmtree(out / sub, ignore_errors=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
