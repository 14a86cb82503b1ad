"""Adaptive operating points, evaluated closed-loop: a rate trace, bursts of questions, a latency budget.

    python -m tofc_ros.eval.adaptive --out bench/results/adaptive --budget-ms 1000 \\
        --trace "0:50, 25:2, 50:10, 75:0.5"

Two steps, both through the deployed objects:

1. Measure: every operating point of the bundle runs over the scene test frames with the encoders the device node
   builds (``pipeline.encoder.point_encoders``) and the decoder and answerer the server node builds
   (``pipeline.answerer.model_server``): per frame its payload bytes and device ms, per question the generated
   answer's correctness (the benchmark's rule) and the server's decode + answer ms. Saved as measurements.json.
2. Replay in virtual time: frames at a fixed period, questions in bursts (busy blocks ask every question of a scene,
   quiet blocks one question of every third scene), the uplink a ``pipeline.uplink.Link`` driven by the rate trace,
   a one-at-a-time FIFO server. The device is the node's own ``AdaptiveController`` (fed the same events: questions,
   frames sent, Answers with their transfer and server ms) or a fixed point, on demand or continuous. Each
   question's latency is question -> answer; a question whose frame never arrives gets NO_FRAME at its timeout.

The measured compute times make step 2 a faithful replay of this machine's costs; the link, the queue and the
policy's decisions are exact arithmetic, so a run is repeatable from measurements.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import math
import time
from pathlib import Path

from tofc_ros.pipeline.adaptive import AdaptiveController, AdaptiveSettings, PointPrior
from tofc_ros.pipeline.uplink import Link, RateTrace

__all__ = ["measure", "question_schedule", "simulate", "Outcome", "main"]

CAMERA = "front"


# -- 1. measurement ------------------------------------------------------------------------------------------------
def measure(bundle, model: str, items, progress: bool = False, first_question_only: bool = False) -> dict:
    """Per point, per frame: payload bytes and device ms; per question: correct and server ms (module docstring)."""
    import torch

    from tofc_ros.backbones import GenerationOptions, load_device_half, load_server_half
    from tofc_ros.data.vlmevalkit import score_prediction
    from tofc_ros.eval.rate_accuracy import question_specs
    from tofc_ros.pipeline.answerer import model_server
    from tofc_ros.pipeline.encoder import point_encoders

    needs_vision = any(p.kind == "image" for p in bundle.points)
    device_half = load_device_half(model)
    server_half = load_server_half(model, load_vision=needs_vision)
    decoder, answerer = model_server(
        server_half, bundle.learned_codecs(), GenerationOptions(max_new_tokens=16), accept_images=needs_vision
    )
    encoders = point_encoders(bundle, device_half)
    out = {"points": [dataclasses.asdict(p) for p in bundle.points], "images": [], "frames": {}}
    rows = items
    if progress:
        from tqdm import tqdm

        rows = tqdm(rows, desc="frames")
    with torch.inference_mode():
        for item in rows:
            rgb = item.rgb()
            specs = question_specs(item)[: 1 if first_question_only else None]
            out["images"].append({"image": str(item.image_id), "questions": len(specs)})
            for point, encoder in zip(bundle.points, encoders):
                t0 = time.perf_counter()
                payload = encoder.encode(rgb).payload
                t1 = time.perf_counter()
                frame = decoder.decode(payload)
                decode_ms = (time.perf_counter() - t1) * 1e3
                questions = []
                for spec in specs:
                    t2 = time.perf_counter()
                    text = answerer.answer(frame, spec.question)
                    ms = (time.perf_counter() - t2) * 1e3 + decode_ms
                    questions.append([bool(score_prediction(spec.kind, text, spec.answer, spec.options)), round(ms, 2)])
                out["frames"].setdefault(point.name, []).append(
                    {"bytes": len(payload), "device_ms": round((t1 - t0) * 1e3, 2), "questions": questions}
                )
    return out


def priors_from(measured: dict) -> list[PointPrior]:
    """Mean bytes, device ms and server ms per point of a measurement (the bundle's priors)."""
    out = []
    for p in measured["points"]:
        frames = measured["frames"][p["name"]]
        server = [ms for f in frames for _, ms in f["questions"]]
        out.append(
            PointPrior(
                p["name"],
                sum(f["bytes"] for f in frames) / len(frames),
                sum(f["device_ms"] for f in frames) / len(frames),
                sum(server) / max(len(server), 1),
            )
        )
    return out


def bundle_priors(measured: dict) -> list[PointPrior]:
    """The priors the device node would start from: the bundle's own (measured when it was made), else the means
    of this measurement."""
    points = measured["points"]
    if all(p.get("bytes") and p.get("device_ms") and p.get("server_ms") for p in points):
        return [PointPrior(p["name"], p["bytes"], p["device_ms"], p["server_ms"]) for p in points]
    return priors_from(measured)


# -- 2. closed-loop replay -----------------------------------------------------------------------------------------
def question_schedule(
    counts: list[int], period_s: float, block: int = 10, quiet_every: int = 3
) -> list[tuple[float, int, int]]:
    """(time s, frame, turn) of every question: busy blocks of ``block`` frames ask all of each frame's questions
    (0.1 s apart, from 0.2 s after the frame), quiet blocks ask the first question of every ``quiet_every``-th."""
    out = []
    for k, n in enumerate(counts):
        busy = (k // block) % 2 == 0
        turns = range(n) if busy else (range(1) if k % quiet_every == 0 else range(0))
        out += [(k * period_s + 0.2 + 0.1 * j, k, j) for j in turns]
    return out


@dataclasses.dataclass
class Outcome:
    """One question's fate in a replay."""

    asked: float
    frame: int
    turn: int
    latency_ms: float = math.inf
    status: str = "NO_FRAME"
    correct: bool = False
    point: str = ""


def simulate(
    measured: dict,
    trace: RateTrace,
    policy: str | int,
    settings: AdaptiveSettings,
    period_s: float = 1.0,
    latency_ms: float = 20.0,
    timeout_s: float = 30.0,
    history: int = 10,
    max_backlog_s: float = 10.0,
    speculative: bool | None = None,
) -> dict:
    """Replay the frames and the question schedule; return outcomes, bytes and the decision timeline.

    ``policy``: "adaptive" (the AdaptiveController) or a point index (fixed). ``speculative``: for a fixed point,
    True encodes every frame continuously, False on demand; for "adaptive", False disables speculation.
    """
    names = [p["name"] for p in measured["points"]]
    frames = measured["frames"]
    counts = [img["questions"] for img in measured["images"]]
    schedule = question_schedule(counts, period_s)
    if policy == "adaptive" and speculative is False:
        settings = dataclasses.replace(settings, speculate_on_hz=math.inf, speculate_off_hz=math.inf)
    controller = AdaptiveController(bundle_priors(measured), settings) if policy == "adaptive" else None
    link = Link(1.0, latency_ms / 1e3, max_backlog_s, trace=trace, origin=0.0)

    events: list = []
    seq = iter(range(1 << 62))

    def push(t: float, kind: str, *data) -> None:
        heapq.heappush(events, (t, next(seq), kind, data))

    outcomes = [Outcome(t, k, j) for t, k, j in schedule]
    for i, (t, _, _) in enumerate(schedule):
        push(t, "question", i)
    for k in range(len(counts)):
        push(k * period_s, "frame", k)

    state = {"busy": False, "pending": None, "server_busy": False}
    requests: list[int] = []
    sent_frames: set[int] = set()
    cache: dict[int, tuple[int, float, float]] = {}  # frame -> (point, arrival, sent)
    waiting: dict[int, list[int]] = {}
    server_queue: list[int] = []
    decisions, uplink_bytes, dropped = [], 0, 0

    def continuous(now: float) -> bool:
        if controller is not None:
            return controller.speculative(now)
        return bool(speculative)

    def device_next(now: float) -> None:
        if state["busy"]:
            return
        k = None
        if continuous(now):
            k, state["pending"] = state["pending"], None
        else:
            state["pending"] = None
            while requests and k is None:
                r = requests.pop(0)
                current = int(now // period_s)
                if r not in sent_frames and current - r < history:
                    k = r
        if k is None:
            return
        if controller is not None:
            choice = controller.choose(now)
            index = choice.index
            decisions.append((now, index, controller.link.rate_mbps, choice.predicted_ms))
        else:
            index = int(policy)
        f = frames[names[index]][k]
        sent_frames.add(k)
        state["busy"] = True
        push(now + f["device_ms"] / 1e3, "sent", k, index)

    def server_next(now: float) -> None:
        if state["server_busy"] or not server_queue:
            return
        i = server_queue.pop(0)
        o = outcomes[i]
        index, _, _ = cache[o.frame]
        _, ms = frames[names[index]][o.frame]["questions"][o.turn]
        state["server_busy"] = True
        push(now + ms / 1e3, "answered", i, ms)

    while events:
        now, _, kind, data = heapq.heappop(events)
        if kind == "frame":
            (k,) = data
            if continuous(now):
                if state["pending"] is not None:
                    dropped += 1
                state["pending"] = k
            device_next(now)
        elif kind == "question":
            (i,) = data
            o = outcomes[i]
            if controller is not None:
                controller.question(now, CAMERA, o.frame)
            if o.frame in cache:
                server_queue.append(i)
                server_next(now)
            else:
                waiting.setdefault(o.frame, []).append(i)
                push(now + timeout_s, "expire", i)
                requests.append(o.frame)
                device_next(now)
        elif kind == "sent":
            k, index = data
            f = frames[names[index]][k]
            if controller is not None:
                controller.sent(now, CAMERA, k, index, f["bytes"], f["device_ms"])
            arrival = link.transmit(f["bytes"], now)
            uplink_bytes += f["bytes"]
            if arrival is not None:
                push(arrival, "arrive", k, index, now)
            state["busy"] = False
            device_next(now)
        elif kind == "arrive":
            k, index, sent_at = data
            cache[k] = (index, now, sent_at)
            server_queue.extend(waiting.pop(k, []))
            server_next(now)
        elif kind == "answered":
            i, ms = data
            o = outcomes[i]
            index, arrival, sent_at = cache[o.frame]
            correct, _ = frames[names[index]][o.frame]["questions"][o.turn]
            o.latency_ms, o.status, o.correct, o.point = (now - o.asked) * 1e3, "OK", bool(correct), names[index]
            if controller is not None:
                controller.answered(now, CAMERA, o.frame, True, False, (arrival - sent_at) * 1e3, ms)
            state["server_busy"] = False
            server_next(now)
        elif kind == "expire":
            (i,) = data
            o = outcomes[i]
            if i in waiting.get(o.frame, []):
                waiting[o.frame].remove(i)
                o.latency_ms = (now - o.asked) * 1e3
                if controller is not None:
                    controller.answered(now, CAMERA, o.frame, False, True, 0.0, 0.0)
    return {
        "outcomes": outcomes,
        "uplink_bytes": uplink_bytes,
        "frames_sent": len(sent_frames),
        "frames_dropped_on_device": dropped,
        "decisions": decisions,
        "counts": dict(controller.counts) if controller else {},
    }


def summarise(run: dict, budget_ms: float, trace: RateTrace, period_s: float) -> dict:
    """Share within budget, accuracy and bytes per question, overall and per trace segment (by question time)."""

    def stats(outs):
        n = max(len(outs), 1)
        return {
            "questions": len(outs),
            "within_budget": sum(o.latency_ms <= budget_ms for o in outs) / n,
            "accuracy": sum(o.correct for o in outs) / n,
            "no_frame": sum(o.status != "OK" for o in outs),
            "p95_latency_ms": _quantile([o.latency_ms for o in outs], 0.95),
        }

    outs = run["outcomes"]
    per_segment = [
        {"rate_mbps": trace.rates[s], **stats([o for o in outs if trace.segment(o.asked) == s])}
        for s in range(len(trace.rates))
    ]
    return {
        **stats(outs),
        "bytes_per_question": run["uplink_bytes"] / max(len(outs), 1),
        "frames_sent": run["frames_sent"],
        "segments": per_segment,
        "counts": run["counts"],
    }


def targets(table: dict, trace: RateTrace, good_mbps: float, share: float = 0.95) -> dict:
    """The issue's three targets, checked on a summarised run table.

    1. The adaptive device answers >= ``share`` of its questions within the budget.
    2. On the good-link segments (rate >= ``good_mbps``) its accuracy is at most 1 point below the best fixed point
       that also answers >= ``share`` within the budget there.
    3. Its accuracy beats every fixed point that answers >= ``share`` within the budget on every segment.
    """
    good = [i for i, r in enumerate(trace.rates) if r >= good_mbps]
    every = range(len(trace.rates))

    def accuracy(s, idx):
        n = sum(s["segments"][i]["questions"] for i in idx)
        return sum(s["segments"][i]["accuracy"] * s["segments"][i]["questions"] for i in idx) / max(n, 1)

    def meets(s, idx):
        return all(s["segments"][i]["within_budget"] >= share for i in idx if s["segments"][i]["questions"])

    a = table["adaptive"]
    fixed = {k: v for k, v in table.items() if not k.startswith("adaptive")}
    good_fixed = {k: accuracy(v, good) for k, v in fixed.items() if meets(v, good)}
    every_fixed = {k: v["accuracy"] for k, v in fixed.items() if meets(v, every)}
    best_good = max(good_fixed.items(), key=lambda kv: kv[1]) if good_fixed else (None, None)
    best_every = max(every_fixed.items(), key=lambda kv: kv[1]) if every_fixed else (None, None)
    return {
        "within_budget": {"adaptive": a["within_budget"], "target": share, "met": a["within_budget"] >= share},
        "good_link": {
            "segments_mbps": [trace.rates[i] for i in good],
            "adaptive_accuracy": accuracy(a, good),
            "best_fixed": best_good[0],
            "best_fixed_accuracy": best_good[1],
            "met": best_good[1] is None or accuracy(a, good) >= best_good[1] - 0.01,
        },
        "everywhere": {
            "adaptive_accuracy": a["accuracy"],
            "best_fixed": best_every[0],
            "best_fixed_accuracy": best_every[1],
            "met": best_every[1] is None or a["accuracy"] > best_every[1],
        },
    }


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(int(q * len(s)), len(s) - 1)]


def _plot(runs: dict, trace: RateTrace, budget_ms: float, names: list[str], path: Path, period_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    adaptive = runs["adaptive"]
    end = max(o.asked for o in adaptive["outcomes"]) + period_s
    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(12, 8), sharex=True)
    xs = list(trace.starts) + [end]
    a1.step(xs, list(trace.rates) + [trace.rates[-1]], where="post", label="link rate (trace)")
    d = adaptive["decisions"]
    a1.plot([t for t, *_ in d], [r for _, _, r, _ in d], ".", ms=3, label="device's estimate")
    a1.set_yscale("log")
    a1.set_ylabel("Mbit/s")
    a1.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    a2.plot([t for t, *_ in d], [i for _, i, _, _ in d], ".", ms=4)
    a1.set_title(f"adaptive operating points: budget {budget_ms:g} ms, questions capped at 30 s (NO_FRAME)")
    a2.set_yticks(range(len(names)), names, fontsize=8)
    a2.invert_yaxis()
    a2.set_ylabel("point sent")
    for label, run in runs.items():  # the fixed points on demand, then the adaptive device on top
        if label.endswith("on demand"):
            outs = run["outcomes"]
            a3.plot(
                [o.asked for o in outs], [min(o.latency_ms, 30_000) for o in outs], ".", ms=2, alpha=0.5, label=label
            )
    outs = adaptive["outcomes"]
    a3.plot([o.asked for o in outs], [min(o.latency_ms, 30_000) for o in outs], "k.", ms=3, label="adaptive")
    a3.axhline(budget_ms, color="k", lw=0.8, ls="--", label="budget")
    a3.set_yscale("log")
    a3.set_ylabel("answer latency (ms)")
    a3.set_xlabel("time (s)")
    a3.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_all(measured: dict, trace: RateTrace, settings: AdaptiveSettings, period_s: float, latency_ms: float) -> dict:
    """The adaptive device (with and without speculation) and every fixed point on demand and continuous."""
    runs = {
        "adaptive": simulate(measured, trace, "adaptive", settings, period_s, latency_ms),
        "adaptive, no speculation": simulate(
            measured, trace, "adaptive", settings, period_s, latency_ms, speculative=False
        ),
    }
    for i, p in enumerate(measured["points"]):
        for spec, label in ((False, "on demand"), (True, "continuous")):
            runs[f"{p['name']}, {label}"] = simulate(
                measured, trace, i, settings, period_s, latency_ms, speculative=spec
            )
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tofc_ros.eval.adaptive", description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", default="models/scenes-tiny-ov/operating_points.safetensors")
    ap.add_argument("--model", default="models/scenes-tiny-ov")
    ap.add_argument("--out", default="bench/results/adaptive")
    ap.add_argument("--data", default="scenes", choices=("scenes", "easyvqa"), help="test split replayed")
    ap.add_argument(
        "--images", type=int, default=100, help="test frames (scenes at 1280x720; easyvqa: 108, 1,000 questions)"
    )
    ap.add_argument("--measurements", default=None, help="reuse a measurements.json instead of measuring")
    ap.add_argument("--trace", default="0:50, 25:2, 50:10, 75:0.5")
    ap.add_argument("--budget-ms", type=float, default=1000.0)
    ap.add_argument("--period-s", type=float, default=1.0)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--good-mbps", type=float, default=10.0, help="segments at least this fast are the good link")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.measurements:
        measured = json.loads(Path(args.measurements).read_text(encoding="utf-8"))
    else:
        from tofc_ros.codec.points import OperatingPoints
        from tofc_ros.eval.rate_accuracy import test_items

        if args.data == "scenes":
            items = test_items("scenes", size="1280x720", images=args.images)
        else:
            items = test_items("easyvqa", 1000)[: args.images]  # the rate-accuracy benchmark's 1,000 questions
        t0 = time.perf_counter()
        measured = measure(OperatingPoints.load(args.points), args.model, items, progress=True)
        measured["seconds"] = round(time.perf_counter() - t0, 1)
        (out / "measurements.json").write_text(json.dumps(measured) + "\n", encoding="utf-8")
    trace = RateTrace.parse(args.trace)
    settings = AdaptiveSettings(latency_budget_ms=args.budget_ms, frame_period_s=args.period_s)
    runs = run_all(measured, trace, settings, args.period_s, args.latency_ms)
    names = [p["name"] for p in measured["points"]]
    table = {label: summarise(r, args.budget_ms, trace, args.period_s) for label, r in runs.items()}
    result = {
        "trace": args.trace,
        "budget_ms": args.budget_ms,
        "period_s": args.period_s,
        "latency_ms": args.latency_ms,
        "settings": dataclasses.asdict(settings),
        "priors": [dataclasses.asdict(p) for p in bundle_priors(measured)],
        "measured_means": [dataclasses.asdict(p) for p in priors_from(measured)],
        "runs": table,
    }
    result["targets"] = targets(table, trace, args.good_mbps)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = _table(table, trace) + "\n\n" + _targets_text(result["targets"])
    (out / "table.md").write_text(text + "\n", encoding="utf-8")
    _plot(runs, trace, args.budget_ms, names, out / "timeline.png", args.period_s)
    print(text)
    return 0


def _targets_text(t: dict) -> str:
    def pct(x):
        return "–" if x is None else f"{100 * x:.1f} %"

    w, g, e = t["within_budget"], t["good_link"], t["everywhere"]
    return "\n".join(
        [
            f"- within budget: {pct(w['adaptive'])} (target >= {pct(w['target'])}): {'met' if w['met'] else 'MISSED'}",
            f"- good-link segments ({', '.join(f'{r:g}' for r in g['segments_mbps'])} Mbit/s): adaptive "
            f"{pct(g['adaptive_accuracy'])}, best fixed point meeting the budget there {g['best_fixed']} "
            f"{pct(g['best_fixed_accuracy'])} (target: at most 1 point below): {'met' if g['met'] else 'MISSED'}",
            f"- accuracy {pct(e['adaptive_accuracy'])} against the best fixed point meeting the budget on every "
            f"segment, {e['best_fixed']} {pct(e['best_fixed_accuracy'])} (target: above it): "
            f"{'met' if e['met'] else 'MISSED'}",
        ]
    )


def _table(table: dict, trace: RateTrace) -> str:
    seg = " | ".join(f"{r:g} Mbit/s" for r in trace.rates)
    lines = [
        f"| device | within budget | p95 latency | accuracy | bytes / question | within budget per segment ({seg}) | "
        "accuracy per segment |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for label, s in table.items():
        within = " / ".join(f"{100 * x['within_budget']:.0f}" for x in s["segments"])
        acc = " / ".join(f"{100 * x['accuracy']:.1f}" for x in s["segments"])
        lines.append(
            f"| {label} | {100 * s['within_budget']:.1f} % | {s['p95_latency_ms']:,.0f} ms | "
            f"{100 * s['accuracy']:.1f} % | {s['bytes_per_question']:,.0f} | {within} | {acc} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
