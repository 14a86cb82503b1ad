"""The replay report: per-question rows, a summary, and JSON + Markdown + PNG files (matplotlib, Agg backend).

Summary fields: questions asked and answered, accuracy where ground truth exists (exact match after
:func:`~tofc_ros.eval.replay.questions.normalise`; an unanswered or failed question counts as wrong), answers by
status, uplink bytes per answered question (mean, median; a two-stage answer's crop included), how two-stage
refinements ended, latency per term (device, transfer, wait, server,
total; mean, p50, p95 over OK answers), frames played vs feature messages received (drops).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tofc_ros.eval.replay.bags import BagQuestion
from tofc_ros.eval.replay.questions import is_correct
from tofc_ros.pipeline.records import AnswerRecord, ReceivedFrame, Status

__all__ = ["LATENCY_TERMS", "ReplayLog", "build_report", "markdown_summary", "write_report"]

LATENCY_TERMS = ("device_ms", "transfer_ms", "wait_ms", "server_ms", "total_ms")
REPORT_FILES = ("report.json", "report.md", "accuracy_bytes.png", "latency.png", "timeline.png")


@dataclass
class ReplayLog:
    """What a replay saw; times are seconds since the replay started (wall clock)."""

    meta: dict = field(default_factory=dict)
    asked: list[tuple[BagQuestion, float]] = field(default_factory=list)
    answers: dict[str, tuple[AnswerRecord, float]] = field(default_factory=dict)
    frames: list[tuple[int, float]] = field(default_factory=list)  # (image stamp ns, played at)
    features: list[tuple[ReceivedFrame, float]] = field(default_factory=list)
    truth: dict[str, list[str]] = field(default_factory=dict)
    outcome: str = "ok"  # ok, unanswered, no_graph or interrupted (see nodes/replay_node.py)
    overlays: dict[int, np.ndarray] = field(default_factory=dict)  # image stamp ns -> the device's debug overlay


def _stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "mean": None, "p50": None, "p95": None}
    a = np.asarray(values, dtype=float)
    return {
        "n": int(a.size),
        "mean": float(a.mean()),
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
    }


def build_report(log: ReplayLog) -> dict:
    """The report as a JSON-ready dict: ``meta``, ``summary`` and ``questions`` (one row per question asked)."""
    rows = []
    for q, asked_s in log.asked:
        got = log.answers.get(q.question_id)
        ans, answered_s = got if got else (None, None)
        truth = log.truth.get(q.question_id)
        row = {
            "question_id": q.question_id,
            "question": q.text,
            "camera": q.camera,
            "image_stamp_ns": q.image_stamp_ns,
            "ground_truth": truth,
            "asked_s": round(asked_s, 6),
            "answered_s": None if answered_s is None else round(answered_s, 6),
            "answer": ans.text if ans else None,
            "status": ans.status.name if ans else "UNANSWERED",
            "error": ans.error if ans else "",
            "correct": None,
            "format": ans.format if ans else "",
            "payload_bytes": ans.payload_bytes if ans else None,
            "refinement": ans.refinement.name if ans else None,
            "refine_payload_bytes": ans.refine_payload_bytes if ans else None,
            "uncertainty": None if ans is None or ans.uncertainty < 0 else ans.uncertainty,
        }
        for term in LATENCY_TERMS:
            row[term] = getattr(ans, term) if ans else None
        if truth is not None:
            row["correct"] = bool(ans and ans.status == Status.OK and is_correct(ans.text, truth))
        rows.append(row)

    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    graded = [r for r in rows if r["correct"] is not None]
    graded_ok = [r for r in graded if r["status"] == "OK"]
    ok = [r for r in rows if r["status"] == "OK"]
    # Uplink bytes per question: the first pass's and, for two-stage answers, the crop's.
    sizes = [r["payload_bytes"] + (r["refine_payload_bytes"] or 0) for r in rows if r["payload_bytes"]]
    refinements: dict[str, int] = {}
    for r in rows:
        if r["refinement"] is not None:
            refinements[r["refinement"]] = refinements.get(r["refinement"], 0) + 1
    played = {stamp for stamp, _ in log.frames}
    received = {f.stamp_ns for f, _ in log.features}
    n_played = len(log.frames)
    n_received = len(played & received)
    summary = {
        "questions": len(rows),
        "answered": sum(r["status"] != "UNANSWERED" for r in rows),
        "unanswered": statuses.get("UNANSWERED", 0),
        "status_counts": dict(sorted(statuses.items())),
        "with_ground_truth": len(graded),
        "correct": sum(r["correct"] for r in graded),
        "accuracy": (sum(r["correct"] for r in graded) / len(graded)) if graded else None,
        "accuracy_ok_only": (sum(r["correct"] for r in graded_ok) / len(graded_ok)) if graded_ok else None,
        "bytes_per_question": {
            "n": len(sizes),
            "mean": float(np.mean(sizes)) if sizes else None,
            "median": float(np.median(sizes)) if sizes else None,
        },
        "latency_ms": {term: _stats([r[term] for r in ok]) for term in LATENCY_TERMS},
        # Answers per payload format (an adaptive device mixes them): count and mean bytes.
        "formats": {
            fmt: {"answers": len(b), "mean_bytes": float(np.mean(b))}
            for fmt in sorted({r["format"] for r in ok})
            for b in [[r["payload_bytes"] for r in ok if r["format"] == fmt]]
        },
        # Two-stage answering: answers by how their refinement ended (all NONE without it).
        "refinements": dict(sorted(refinements.items())),
        "frames_played": n_played,
        "features_received": n_received,
        "frames_dropped": n_played - n_received,
        "drop_rate": ((n_played - n_received) / n_played) if n_played else None,
        "feature_messages": len(log.features),
    }
    overlays = [
        {
            "image_stamp_ns": stamp,
            "file": f"overlay_{i}.png",
            "questions": [r["question_id"] for r in rows if r["image_stamp_ns"] == stamp],
        }
        for i, stamp in enumerate(sorted(log.overlays))
    ]
    return {"outcome": log.outcome, "meta": dict(log.meta), "summary": summary, "questions": rows, "overlays": overlays}


def _fmt(x, spec: str = ".1f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _formats(formats: dict) -> str:
    return ", ".join(f"{k} {v['answers']} × {v['mean_bytes']:,.0f} B" for k, v in formats.items()) or "–"


def markdown_summary(report: dict) -> str:
    """The summary as Markdown (what the replay node prints at the end)."""
    s, meta = report["summary"], report["meta"]
    acc = (
        f"{s['accuracy']:.1%} ({s['correct']}/{s['with_ground_truth']})"
        if s["accuracy"] is not None
        else "– (no ground truth)"
    )
    lines = [
        "## Replay report",
        "",
        f"bag `{meta.get('bag', '?')}` ({meta.get('storage', '?')}), mode {meta.get('mode', '?')}"
        + (f" × {meta['rate']:g}" if meta.get("mode") == "timed" and meta.get("rate") else "")
        + f", {_fmt(meta.get('duration_s'), '.1f')} s",
        "",
        "| metric | value |",
        "|---|---|",
        f"| questions answered | {s['answered']}/{s['questions']} |",
        f"| status | {', '.join(f'{k} {v}' for k, v in s['status_counts'].items()) or '–'} |",
        f"| accuracy | {acc} |",
        f"| bytes per question | mean {_fmt(s['bytes_per_question']['mean'], '.0f')}, "
        f"median {_fmt(s['bytes_per_question']['median'], '.0f')} |",
        f"| frames played → features | {s['frames_played']} → {s['features_received']} "
        f"({s['frames_dropped']} dropped) |",
        f"| payload formats (OK answers) | {_formats(s.get('formats', {}))} |",
        f"| two-stage refinements | {', '.join(f'{k} {v}' for k, v in s.get('refinements', {}).items()) or '–'} |",
        "",
        "| latency (ms, OK answers) | mean | p50 | p95 |",
        "|---|---|---|---|",
    ]
    for term in LATENCY_TERMS:
        st = s["latency_ms"][term]
        lines.append(f"| {term[:-3]} | {_fmt(st['mean'])} | {_fmt(st['p50'])} | {_fmt(st['p95'])} |")
    return "\n".join(lines) + "\n"


def _markdown(report: dict) -> str:
    out = [
        markdown_summary(report),
        "## Questions",
        "",
        "| id | question | truth | answer | status | bytes | total ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["questions"]:
        answer = (r["answer"] or r["error"] or "").replace("|", "\\|").replace("\n", " ")
        truth = "/".join(r["ground_truth"]) if r["ground_truth"] else "–"
        mark = "" if r["correct"] is None else (" ✓" if r["correct"] else " ✗")
        out.append(
            f"| {r['question_id']} | {r['question'].replace('|', '/')} | {truth} | {answer[:80]}{mark} | "
            f"{r['status']} | {_fmt(r['payload_bytes'], 'd')} | {_fmt(r['total_ms'])} |"
        )
    if report.get("overlays"):
        rows = {r["question_id"]: r for r in report["questions"]}
        out += [
            "",
            "## What the robot sent",
            "",
            "Each patch tinted by the DPC-KNN cluster it was merged into (grid tiles left, thumbnail right); "
            "white squares are the cluster centres. One merged token per cluster travels.",
            "",
        ]
        for o in report["overlays"]:
            asked = "; ".join(
                f"{rows[q]['question']} → {rows[q]['answer'] or rows[q]['status']}" for q in o["questions"]
            )
            out += [f"![frame {o['image_stamp_ns']}]({o['file']})", "", f"{asked or '(no question)'}", ""]
    out += [
        "",
        "Plots: ![accuracy and bytes](accuracy_bytes.png) ![latency](latency.png) ![timeline](timeline.png)",
        "",
    ]
    return "\n".join(out)


_STATUS_COLOURS = {
    "OK": "tab:green",
    "UNANSWERED": "tab:gray",
    "NO_FRAME": "tab:orange",
    "TIMEOUT": "tab:red",
    "BUSY": "tab:brown",
    "DECODE_ERROR": "tab:pink",
    "MODEL_MISMATCH": "tab:olive",
}


def _plots(report: dict, log: ReplayLog | None, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on robots, servers or CI
    import matplotlib.pyplot as plt

    s, rows = report["summary"], report["questions"]
    x = np.arange(len(rows))

    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 3.8), gridspec_kw={"width_ratios": [1, 1.3, 2.6]})
    names = list(s["status_counts"])
    a1.bar(names, [s["status_counts"][n] for n in names], color=[_STATUS_COLOURS.get(n, "tab:purple") for n in names])
    a1.set_title("answers by status")
    a1.tick_params(axis="x", labelrotation=30)
    accs = [("all", s["accuracy"]), ("OK only", s["accuracy_ok_only"])]
    a2.bar([k for k, _ in accs], [v or 0.0 for _, v in accs], color="tab:blue")
    for i, (_, v) in enumerate(accs):
        a2.text(i, (v or 0.0) + 0.02, "n/a" if v is None else f"{v:.0%}", ha="center")
    a2.set_ylim(0, 1.1)
    a2.set_title(f"accuracy ({s['with_ground_truth']} with ground truth)")
    a3.bar(x, [r["payload_bytes"] or 0 for r in rows], color="tab:cyan")
    if s["bytes_per_question"]["mean"] is not None:
        a3.axhline(s["bytes_per_question"]["mean"], color="k", ls="--", lw=1, label="mean")
        a3.legend()
    a3.set_title("uplink bytes per question")
    a3.set_xlabel("question #")
    fig.tight_layout()
    fig.savefig(out / "accuracy_bytes.png", dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(rows) + 3), 4))
    bottom = np.zeros(len(rows))
    for term, colour in zip(LATENCY_TERMS[:-1], ("tab:blue", "tab:orange", "tab:gray", "tab:green")):
        vals = np.array([r[term] or 0.0 for r in rows])
        ax.bar(x, vals, bottom=bottom, color=colour, label=term[:-3])
        bottom += vals
    ax.plot(x, [r["total_ms"] or np.nan for r in rows], "k_", ms=10, label="total")
    ax.set_xlabel("question #")
    ax.set_ylabel("ms")
    ax.set_title("latency breakdown per question")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 4))
    if log is not None:
        ax.plot(
            [t for _, t in log.frames],
            np.full(len(log.frames), -1.0),
            "|",
            color="tab:blue",
            ms=10,
            label="frame played",
        )
        ax.plot(
            [t for _, t in log.features],
            np.full(len(log.features), -2.0),
            "|",
            color="tab:cyan",
            ms=10,
            label="features received",
        )
    for i, r in enumerate(rows):
        end = r["answered_s"] if r["answered_s"] is not None else r["asked_s"]
        ax.plot([r["asked_s"], end], [i, i], "-", color=_STATUS_COLOURS.get(r["status"], "tab:purple"), lw=2)
        ax.plot([r["asked_s"]], [i], ".", color="k", ms=3)
    for status in s["status_counts"]:  # one legend entry per status present
        ax.plot([], [], "-", lw=2, color=_STATUS_COLOURS.get(status, "tab:purple"), label=status)
    ax.set_xlabel("seconds since replay start")
    ax.set_ylabel("question # (bars: asked → answered)")
    ax.set_title("timeline")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "timeline.png", dpi=80)
    plt.close(fig)


def write_report(log: ReplayLog, out_dir: str | Path) -> dict:
    """Build the report and write report.json, report.md and the three PNGs into ``out_dir``; return it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(log)
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "report.md").write_text(_markdown(report), encoding="utf-8")
    _plots(report, log, out)
    if log.overlays:
        from PIL import Image

        for o in report["overlays"]:
            Image.fromarray(log.overlays[o["image_stamp_ns"]]).save(out / o["file"])
    return report
