"""LLM prefill with TOFC-merged image tokens vs full image tokens, and decode speed.

A Qwen2-0.5B-shaped language model (the LLM of llava-onevision-qwen2-0.5b: hidden 896, 24 layers, 14 heads, 2 KV heads,
intermediate 4864, vocabulary 151936) with random weights; timing does not depend on the values.

    merged: 10 tiles × 16 merged tokens = 160 image tokens + prompt
    full:   10 tiles × 729 vision tokens = 7290 image tokens + prompt

Prefill = one forward pass over the whole prompt that fills the KV cache and yields the first token's logits
(logits only for the last position, as ``generate`` does). Decode = tokens per second of greedy generation after the
merged prompt, prefill excluded.

A micro-benchmark of one stage (the language model's prefill and decode) on random embeddings: no feature chain is
built, so nothing here goes through the deployed encoder/decoder objects. The whole chain on the bundled model,
through them, is timed by ``python -m tofc_ros.eval.latency``.

Usage:
    python bench/bench_prefill.py [--repeats 5] [--full-repeats 2] [--dtype fp32] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

# Run from a checkout without installing: the repository root holds the tofc_ros package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def qwen2_05b_config(vocab_size: int = 151936):
    from transformers import Qwen2Config

    return Qwen2Config(
        hidden_size=896,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        vocab_size=vocab_size,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Timer:
    """Wall-clock and process CPU seconds of a block.

    On a shared machine other processes stretch wall-clock time; CPU time (all of this process's threads) is much less
    sensitive to them, so both are reported and the ratio is given for each.
    """

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        _sync(self.device)
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        _sync(self.device)
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


@torch.inference_mode()
def time_prefill(model, n_tokens: int, repeats: int, device: torch.device, dtype: torch.dtype) -> list[_Timer]:
    """Timers of ``repeats`` prefills of ``n_tokens`` input embeddings (KV cache on, logits for the last position)."""
    gen = torch.Generator().manual_seed(0)
    embeds = (torch.randn(1, n_tokens, model.config.hidden_size, generator=gen) * 0.02).to(device, dtype)
    mask = torch.ones(1, n_tokens, dtype=torch.long, device=device)
    timers = []
    for _ in range(repeats):
        with _Timer(device) as t:
            model(inputs_embeds=embeds, attention_mask=mask, use_cache=True, logits_to_keep=1)
        timers.append(t)
    return timers


@torch.inference_mode()
def time_decode(model, n_prompt: int, n_new: int, device: torch.device, dtype: torch.dtype) -> tuple[float, float]:
    """Decode tokens per wall-clock second and per CPU second after ``n_prompt`` embeddings (prefill subtracted)."""
    gen = torch.Generator().manual_seed(1)
    embeds = (torch.randn(1, n_prompt, model.config.hidden_size, generator=gen) * 0.02).to(device, dtype)
    mask = torch.ones(1, n_prompt, dtype=torch.long, device=device)
    kwargs = dict(inputs_embeds=embeds, attention_mask=mask, do_sample=False, pad_token_id=0, eos_token_id=None)
    with _Timer(device) as first:
        model.generate(**kwargs, max_new_tokens=1, min_new_tokens=1)
    with _Timer(device) as whole:
        out = model.generate(**kwargs, max_new_tokens=n_new, min_new_tokens=n_new)
    assert out.shape[1] == n_new, out.shape
    return (
        (n_new - 1) / max(whole.wall - first.wall, 1e-9),
        (n_new - 1) / max(whole.cpu - first.cpu, 1e-9),
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=10)
    parser.add_argument("--merged-per-tile", type=int, default=16)
    parser.add_argument("--full-per-tile", type=int, default=729)
    parser.add_argument(
        "--prompt-tokens", type=int, default=24, help="text tokens around the image (chat template + question)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed merged prefills (after one warm-up)")
    parser.add_argument(
        "--full-repeats", type=int, default=2, help="timed full prefills (the merged warm-up covers them)"
    )
    parser.add_argument("--gen-tokens", type=int, default=32)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="write the results here as JSON")
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM

    from tofc_ros.backbones.loading import parse_device, parse_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype, device = parse_dtype(args.dtype), parse_device(args.device)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_config(qwen2_05b_config(), dtype=dtype).to(device).eval()
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())

    n_merged = args.tiles * args.merged_per_tile + args.prompt_tokens
    n_full = args.tiles * args.full_per_tile + args.prompt_tokens
    time_prefill(model, n_merged, 1, device, dtype)  # warm-up
    merged = time_prefill(model, n_merged, args.repeats, device, dtype)
    full = time_prefill(model, n_full, args.full_repeats, device, dtype)
    # Best of two: on a shared machine other jobs only ever slow a run down.
    decode = [time_decode(model, n_merged, args.gen_tokens, device, dtype) for _ in range(2)]
    tok_s, tok_cpu_s = max(d[0] for d in decode), max(d[1] for d in decode)
    best = {name: min(t.wall for t in timers) for name, timers in (("merged", merged), ("full", full))}
    med = {
        name: {kind: statistics.median(getattr(t, kind) for t in timers) for kind in ("wall", "cpu")}
        for name, timers in (("merged", merged), ("full", full))
    }
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    result = {
        "command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "dtype": args.dtype,
        "device": str(device),
        "params_millions": round(n_params / 1e6, 1),
        "build_s": round(build_s, 2),
        "merged_tokens": n_merged,
        "full_tokens": n_full,
        "merged_prefill_s": round(med["merged"]["wall"], 3),
        "full_prefill_s": round(med["full"]["wall"], 2),
        "merged_prefill_cpu_s": round(med["merged"]["cpu"], 3),
        "full_prefill_cpu_s": round(med["full"]["cpu"], 2),
        "merged_prefill_all_s": [round(t.wall, 3) for t in merged],
        "full_prefill_all_s": [round(t.wall, 2) for t in full],
        "merged_prefill_min_s": round(best["merged"], 3),
        "full_prefill_min_s": round(best["full"], 2),
        "speedup": round(med["full"]["wall"] / med["merged"]["wall"], 1),
        "speedup_min": round(best["full"] / best["merged"], 1),
        "speedup_cpu_time": round(med["full"]["cpu"] / med["merged"]["cpu"], 1),
        "decode_tokens_per_s": round(tok_s, 2),
        "decode_tokens_per_cpu_s": round(tok_cpu_s, 2),
        "gen_tokens": args.gen_tokens,
        "load_average_1min_at_end": round(load, 2),
    }
    print(
        f"Qwen2-0.5B-shaped LM ({result['params_millions']} M params, random weights), {args.dtype} on {device}, "
        f"{torch.get_num_threads()} threads"
    )
    print("| prompt | tokens | prefill wall (median) | prefill CPU time (median) |")
    print("|---|---:|---:|---:|")
    print(
        f"| merged ({args.tiles}×{args.merged_per_tile} + {args.prompt_tokens}) | {n_merged} | "
        f"{result['merged_prefill_s']:.3f} s | {result['merged_prefill_cpu_s']:.3f} s |"
    )
    print(
        f"| full ({args.tiles}×{args.full_per_tile} + {args.prompt_tokens}) | {n_full} | "
        f"{result['full_prefill_s']:.2f} s | {result['full_prefill_cpu_s']:.2f} s |"
    )
    print(
        f"speedup (full / merged prefill): {result['speedup']}× wall (medians), {result['speedup_min']}× wall (best "
        f"runs: {result['full_prefill_min_s']:.2f} s / {result['merged_prefill_min_s']:.3f} s), "
        f"{result['speedup_cpu_time']}× CPU time"
    )
    print(
        f"decode after the merged prompt ({args.gen_tokens} greedy tokens, best of 2): "
        f"{result['decode_tokens_per_s']} tokens/s "
        f"wall; {result['decode_tokens_per_cpu_s']} tokens per CPU-second (× {torch.get_num_threads()} threads ≈ "
        f"{result['decode_tokens_per_cpu_s'] * torch.get_num_threads():.2f} tokens/s with the cores to itself)"
    )
    print(f"1-min load average at the end: {result['load_average_1min_at_end']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
