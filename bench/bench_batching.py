"""Batched answering: answers per second and latency with 1, 2, 4 and 8 concurrent cameras, one at a time vs batched.

Each camera is a closed loop, as a robot that asks about what it sees now: it sends a new frame's features and one
question about it, waits for the answer, then sends the next. The server is what the server node runs, without ROS
(one real-rclpy run is in test/test_server_action.py): ``ServerCore`` (decode once per frame, pairing, statuses,
latency) + ``Batcher`` (``max_batch_size``; ``batch_wait_ms`` 0: a batch is whatever queued up while the previous one
ran) + the ``ModelAnswerer``, on one worker. Latency is the core's own ``total_ms`` (question received → answer
done, queueing included) on a monotonic clock, and the time to the first streamed token; answers per second count
every answer of the timed rounds.

Models (greedy decoding):
    bundled   models/easyvqa-tiny-ov with its TOFC codec (n_c = 16): the robot's payloads, decoded by the server
    qwen05b   the same payloads and projector input, with a Qwen2-0.5B-shaped LM (hidden 896, 24 layers, 14 heads,
              2 KV heads, intermediate 4864; vocabulary the bundled tokenizer's 504) and a 64 → 896 projector,
              random weights (seed 0): an LLaVA-OneVision-0.5B-sized server on this machine; timing does not
              depend on the values, and with random weights every answer runs to max_new_tokens

The same (camera, round) asks the same question about the same easy-vqa image in every configuration, so the batched
answers are checked against the one-at-a-time ones (``identical``).

Usage:
    python bench/bench_batching.py --model bundled --rounds 12
    python bench/bench_batching.py --model qwen05b --rounds 2 --max-new-tokens 16
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tofc_ros.backbones import GenerationOptions, load_device_half, load_server_half
from tofc_ros.codec import load_codec
from tofc_ros.data.easyvqa import load_split
from tofc_ros.pipeline.answerer import ModelAnswerer
from tofc_ros.pipeline.batcher import Batcher
from tofc_ros.pipeline.decoder import FrameDecoder
from tofc_ros.pipeline.encoder import FeatureEncoder
from tofc_ros.pipeline.records import ReceivedFrame, Request, Status
from tofc_ros.pipeline.server_core import Hooks, Job, ServerCore

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "easyvqa-tiny-ov"


def qwen05b_server(bundled):
    """The bundled server half with a random Qwen2-0.5B-shaped language model and a matching projector."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tofc_ros.backbones.server_half import ServerHalf

    torch.manual_seed(0)
    text = Qwen2Config(
        hidden_size=896,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        vocab_size=bundled.language_model.config.vocab_size,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
    )
    lm = Qwen2ForCausalLM(text).eval()
    lm.generation_config = bundled.language_model.generation_config
    d = bundled.spec.vision_dim
    projector = torch.nn.Sequential(torch.nn.Linear(d, 896), torch.nn.GELU(), torch.nn.Linear(896, 896)).eval()
    return ServerHalf(
        dataclasses.replace(bundled.spec, text_dim=896),
        projector,
        torch.randn(896) * 0.02,
        lm,
        bundled.tokenizer,
        dtype=torch.float32,
        device="cpu",
        fingerprint=bundled.fingerprint,  # the robot's payloads name the bundled backbone
    )


class Timed:
    """Wraps a method and adds up the seconds spent in it."""

    def __init__(self, obj, name: str) -> None:
        self.seconds = 0.0
        inner = getattr(obj, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        setattr(obj, name, timed)


def run(
    core: ServerCore, payloads, questions, cameras: int, rounds: int, max_batch: int, stream: bool, warmup: int = 1
) -> dict:
    """Closed-loop cameras against one worker; returns throughput, latency percentiles and every answer.

    ``stream``: every question streams its answer (as action goals do), and the time to its first token is taken.
    """
    batcher = Batcher(max_batch, 0, time.monotonic_ns)
    sequence = dict.fromkeys(range(cameras), 0)
    texts: dict[tuple[int, int], str] = {}
    latencies: list[float] = []
    hooks: dict[str, Hooks] = {}
    first_token: dict[str, int] = {}  # question_id -> ns of its first streamed token
    received: dict[str, int] = {}
    ttft: list[float] = []
    answered = dict.fromkeys(range(cameras), 0)
    total_rounds = warmup + rounds

    def submit(camera: int) -> None:
        r = sequence[camera]
        sequence[camera] += 1
        index = (camera * 1009 + r * 7) % len(payloads)  # the same (camera, round) -> the same image everywhere
        now = time.monotonic_ns()
        frame = ReceivedFrame(
            f"cam{camera}", r + 1, r, "tofc/1", payloads[index], len(payloads[index]), "", 0.0, 0, now
        )
        core.add_frame(frame)
        qid = f"c{camera}-r{r}"
        request = Request(qid, questions[index], f"cam{camera}", r + 1, now, now, now + 600 * 10**9)
        received[qid] = now
        if stream:
            hooks[qid] = Hooks(on_text=lambda text, q=qid: first_token.setdefault(q, time.monotonic_ns()))
        job = core.ask(request)
        assert isinstance(job, Job), job
        batcher.add(job)

    for c in range(cameras):
        submit(c)
    t_start = None
    cpu_start = 0.0
    while batcher.due_in_ns() is not None:
        batch = batcher.take()
        for record in core.run_batch(batch, hooks):
            camera, r = (int(x[1:]) for x in record.question_id.split("-"))
            assert record.status == Status.OK, (record.status, record.error)
            texts[(camera, r)] = record.text
            answered[camera] += 1
            if r >= warmup:
                latencies.append(record.total_ms)
                if stream:
                    ttft.append((first_token[record.question_id] - received[record.question_id]) / 1e6)
            if sequence[camera] < total_rounds:
                submit(camera)
        if t_start is None and all(n >= warmup for n in answered.values()):
            t_start, cpu_start, counted_from = time.perf_counter(), time.process_time(), len(latencies)
    elapsed, cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
    n = len(latencies) - counted_from
    # Throughput from the first moment every camera has had its warm-up answer; latency over all timed rounds.
    lat = np.asarray(latencies)
    return {
        "cameras": cameras,
        "max_batch_size": max_batch,
        "answers": len(latencies),
        "answers_per_s": round(n / elapsed, 3) if elapsed > 0 else None,
        # Other jobs on a shared machine stretch wall time; this process's CPU time is far less sensitive to them.
        "answers_per_cpu_s": round(n / cpu, 3) if cpu > 0 else None,
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)), 1),
            "p95": round(float(np.percentile(lat, 95)), 1),
            "mean": round(float(lat.mean()), 1),
        },
        "first_token_ms_p50": round(float(np.percentile(ttft, 50)), 1) if ttft else None,
        "texts": {f"{c}-{r}": t for (c, r), t in sorted(texts.items())},
    }


def _median_of(runs: list[dict]) -> dict:
    """One configuration's repeated runs: the median of every figure; the first run's answers."""

    def med(values):
        values = [v for v in values if v is not None]
        return round(float(np.median(values)), 3) if values else None

    out = dict(runs[0])
    for key in ("answers_per_s", "answers_per_cpu_s", "first_token_ms_p50", "decode_share", "generate_share"):
        out[key] = med([r[key] for r in runs])
    out["latency_ms"] = {k: med([r["latency_ms"][k] for r in runs]) for k in runs[0]["latency_ms"]}
    out["answers_per_s_all"] = [r["answers_per_s"] for r in runs]
    out["load_average"] = med([r["load_average"] for r in runs])
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("bundled", "qwen05b"), default="bundled")
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rounds", type=int, default=12, help="timed questions per camera (after one warm-up)")
    parser.add_argument("--max-batch-size", type=int, default=8, help="the batched runs' max_batch_size")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--unbatched", type=int, nargs="*", default=None, help="camera counts run one at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--stream", action="store_true", help="stream every answer (time to first token)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of the whole plan (medians)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    device = load_device_half(MODEL)
    codec = load_codec(str(MODEL / "tofc_codec.safetensors"))
    encoder = FeatureEncoder(device, codec, n_clusters=16)
    images = load_split("test")[:64]
    payloads = [encoder.encode(item.rgb()).payload for item in images]
    questions = [item.questions[0] for item in images]
    bundled = load_server_half(MODEL)
    server = bundled if args.model == "bundled" else qwen05b_server(bundled)
    decoder = FrameDecoder([codec], server.spec, server.fingerprint)
    answerer = ModelAnswerer(server, GenerationOptions(max_new_tokens=args.max_new_tokens))

    unbatched = args.cameras if args.unbatched is None else args.unbatched
    plan = [(c, 1) for c in unbatched] + [(c, args.max_batch_size) for c in args.cameras]
    # One throwaway pass first: the first configuration measured must not pay for first-call costs (allocator,
    # tokenizer and kernel caches) that the others do not.
    run(
        ServerCore(decoder, answerer, time.monotonic_ns, cache_size=2, queue_size=64),
        payloads,
        questions,
        max(args.cameras),
        2,
        args.max_batch_size,
        args.stream,
    )
    trials: dict[tuple[int, int], list[dict]] = {key: [] for key in plan}
    for trial in range(args.repeats):  # interleaved, so a busy minute on a shared machine hits every configuration
        for cameras, max_batch in plan:
            core = ServerCore(decoder, answerer, time.monotonic_ns, cache_size=2, queue_size=64)
            decode_t, answer_t = Timed(decoder, "decode"), Timed(answerer, "answer_batch")
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            result = run(core, payloads, questions, cameras, args.rounds, max_batch, args.stream)
            wall = time.perf_counter() - t0
            del decoder.decode, answerer.answer_batch  # unwrap (the wrappers are instance attributes)
            result.update(
                decode_share=round(decode_t.seconds / wall, 3),
                generate_share=round(answer_t.seconds / wall, 3),
                load_average=round((load0 + os.getloadavg()[0]) / 2, 2),
            )
            trials[(cameras, max_batch)].append(result)
            print(
                f"[{trial + 1}/{args.repeats}] {args.model}: {cameras} camera(s), max_batch_size {max_batch}: "
                f"{result['answers_per_s']} answers/s ({result['answers_per_cpu_s']} per CPU-s), "
                f"p50 {result['latency_ms']['p50']} ms, p95 {result['latency_ms']['p95']} ms, first token p50 "
                f"{result['first_token_ms_p50']} ms (frame decoding {result['decode_share']:.0%}, batched prefill + "
                f"decode {result['generate_share']:.0%} of the time; load {result['load_average']})",
                flush=True,
            )
    results = [_median_of(runs) for runs in trials.values()]
    print(f"\n{args.model}, median of {args.repeats} interleaved runs:")
    print("| cameras | max_batch_size | answers/s | answers per CPU-s | p50 ms | p95 ms | first token p50 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['cameras']} | {r['max_batch_size']} | {r['answers_per_s']} | {r['answers_per_cpu_s']} | "
            f"{r['latency_ms']['p50']} | {r['latency_ms']['p95']} | {r['first_token_ms_p50']} |"
        )

    def find(cameras, max_batch):
        return next((r for r in results if r["cameras"] == cameras and r["max_batch_size"] == max_batch), None)

    checks = []
    for c in args.cameras:
        one, many = find(c, 1), find(c, args.max_batch_size)
        if one and many:
            same = sum(one["texts"][k] == many["texts"][k] for k in one["texts"])
            checks.append({"cameras": c, "identical": same, "of": len(one["texts"])})
    top = max(args.cameras)
    base, batched, single = find(top, 1), find(top, args.max_batch_size), find(1, args.max_batch_size) or find(1, 1)
    summary = {
        "speedup_at_max_cameras": round(batched["answers_per_s"] / base["answers_per_s"], 2) if base else None,
        "speedup_at_max_cameras_cpu": (
            round(batched["answers_per_cpu_s"] / base["answers_per_cpu_s"], 2) if base else None
        ),
        "p95_vs_single_camera_p95": (
            round(batched["latency_ms"]["p95"] / single["latency_ms"]["p95"], 2) if single else None
        ),
        "identical_answers": checks,
    }
    print(json.dumps(summary, indent=1))
    out = {
        "command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch thread(s)",
        "torch": torch.__version__,
        "model": args.model,
        "max_new_tokens": args.max_new_tokens,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "summary": summary,
        "runs": [{k: v for k, v in r.items() if k != "texts"} for r in results],
        "answers": {f"{r['cameras']}x{r['max_batch_size']}": r["texts"] for r in results},
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1, ensure_ascii=False))
    return out


if __name__ == "__main__":
    main()
