"""Re-answer recorded features offline: no live graph, no wall clock, the live replay's report.

A robot records its CompressedFeatures and Questions once (the live replay with ``record_features``, or ``ros2 bag
record``); the server side can then be re-run on that bag as often as wanted, with another server model, other
generation settings or another batch size, without a camera, a device or a ROS graph:

    bag: CompressedFeatures + Questions (+ the live Answers)
      │ read in log-time order (rosbags, no rclpy)
      ▼
    ServerCore with a fake clock at each message's log time       FrameDecoder + Answerer from a ServerConfig
      features -> add_frame (the questions waiting for them are answered)
      question -> ask (answered at once when its frame is there, else it waits; NO_FRAME at its deadline)
      ▼
    <out>/report.json, report.md, plots (``replay.report.write_report``, as the live replay writes them)
    <out>/answers (a bag of the questions and the new answers)
    report meta "agreement": the new answers against the answers recorded in the bag (same status and text)

Time is the bag's: a question is received at its log time, a frame arrives at its own, deadlines pass in log time
and the answerer takes no time at all (``server_ms`` is 0; the device and transfer terms are the recorded ones). The
same bag therefore gives the same report on any machine; how long the re-answering took is in meta
``compute_s``, measured apart.

Usage:
    python -m tofc_ros.eval.offline --bag replay_out/answers --out offline_out [--model DIR] [--codec FILE]
        [--params-file config/server.yaml] [--max-new-tokens N] [--max-batch-size N] [--questions truth.jsonl]
        [--set name=value ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import sys
import time
from pathlib import Path

import yaml

from tofc_ros.config import ServerConfig, read_params_file
from tofc_ros.eval.replay.bags import BagQuestion, BagWriter, FeatureBag, read_feature_bag
from tofc_ros.eval.replay.messages import answer_cdr, answer_record, features_frame, question_cdr
from tofc_ros.eval.replay.questions import load_questions_file, sidecar_path
from tofc_ros.eval.replay.report import ReplayLog, markdown_summary, write_report
from tofc_ros.eval.replay.typestore import ANSWER, QUESTION
from tofc_ros.pipeline.pairing import Refused
from tofc_ros.pipeline.records import AnswerRecord, Request, deadline_ns, oversize_refusal
from tofc_ros.pipeline.server_core import Job, ServerCore

__all__ = ["Clock", "agreement", "reanswer", "main"]


class Clock:
    """The fake clock: whatever time the re-answering has reached (integer nanoseconds)."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def _request(q: BagQuestion, config: ServerConfig) -> Request:
    """A recorded Question as the server node would keep it, received at its log time (the node's adapter)."""
    return Request(
        question_id=q.question_id,
        text=q.text,
        camera=q.camera or config.default_camera,
        stamp_ns=q.image_stamp_ns,
        asked_ns=q.t_ns,  # the replay stamps a question with the time it asks it, which is its log time
        received_ns=q.t_ns,
        deadline_ns=deadline_ns(q.t_ns, q.timeout_s, config.default_timeout_s),
    )


def reanswer(bag: FeatureBag, decoder, answerer, config: ServerConfig, truth: dict | None = None) -> ReplayLog:
    """Answer every question of ``bag`` through a ServerCore on the bag's own time.

    Args:
        bag: from :func:`read_feature_bag`.
        decoder, answerer: the server's (``pipeline.answerer.build_server``).
        config: the server's parameters (bounds, timeouts, tolerance, batch size) as the node would use them.
        truth: question_id -> accepted answers (the report's accuracy), if known.

    Returns:
        A ReplayLog for ``write_report`` (times in seconds from the bag's first event); every question has its answer.
    """
    clock = Clock()
    core = ServerCore(
        decoder,
        answerer,
        clock,
        cache_size=config.cache_size,
        max_cameras=config.max_cameras,
        queue_size=config.queue_size,
        stamp_tolerance_ns=int(config.stamp_tolerance_s * 1e9),
    )
    start = bag.events[0][0] if bag.events else 0
    log = ReplayLog(truth=dict(truth or {}))
    deadlines: list[tuple[int, str]] = []  # questions waiting for a frame, by deadline

    def seconds(t_ns: int) -> float:
        return (t_ns - start) / 1e9

    def done(records: list[AnswerRecord]) -> None:
        for record in records:
            log.answers.setdefault(record.question_id, (record, seconds(clock.now)))

    def run(jobs: list[Job]) -> None:
        for i in range(0, len(jobs), config.max_batch_size):
            done(core.run_batch(jobs[i : i + config.max_batch_size]))

    def advance(t_ns: int) -> None:
        # Deadlines that pass before the next event expire at their own time, as the node's timer would see them.
        while deadlines and deadlines[0][0] <= t_ns:
            clock.now = max(clock.now, heapq.heappop(deadlines)[0])
            done(core.expire())
        clock.now = max(clock.now, t_ns)

    for t_ns, kind, item in bag.events:
        advance(t_ns)
        if kind == "features":
            frame = features_frame(item, arrival_ns=t_ns, keep_payload=True)
            refusal = oversize_refusal(frame.payload_size, config.max_payload_bytes)
            if refusal:  # dropped unread, as the node's adapter drops it
                frame = dataclasses.replace(frame, payload=b"", refusal=refusal)
            log.features.append((frame, seconds(t_ns)))
            try:
                jobs = core.add_frame(frame)
            except Refused:  # a camera beyond max_cameras: dropped, as the node drops it
                continue
            run(jobs)
        else:
            request = _request(item, config)
            log.asked.append((item, seconds(t_ns)))
            outcome = core.ask(request)
            if isinstance(outcome, Job):
                run([outcome])
            elif outcome is not None:
                done([outcome])
            else:
                heapq.heappush(deadlines, (request.deadline_ns, request.question_id))
    while deadlines:  # after the bag: the questions still waiting get NO_FRAME at their deadlines
        advance(deadlines[0][0])
    return log


def agreement(log: ReplayLog, recorded: dict[str, bytes]) -> dict:
    """How the new answers compare with the ones recorded in the bag: same status and same text, per question."""
    differ = []
    compared = 0
    for q, _ in log.asked:
        if q.question_id not in recorded or q.question_id not in log.answers:
            continue
        compared += 1
        live, new = answer_record(recorded[q.question_id]), log.answers[q.question_id][0]
        if (live.status, live.text) != (new.status, new.text):
            differ.append(
                {
                    "question_id": q.question_id,
                    "recorded": {"status": live.status.name, "text": live.text},
                    "offline": {"status": new.status.name, "text": new.text},
                }
            )
    return {"compared": compared, "agree": compared - len(differ), "differ": differ}


def _config(args) -> ServerConfig:
    values = read_params_file(args.params_file, "server_node") if args.params_file else {}
    for item in args.set or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes name=value, got {item!r}")
        values[name] = yaml.safe_load(value)
    flags = {
        "model_path": args.model,
        "codec_path": args.codec,
        "answerer": args.answerer,
        "max_new_tokens": args.max_new_tokens,
        "max_batch_size": args.max_batch_size,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    return ServerConfig.from_mapping(values)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m tofc_ros.eval.offline", description=__doc__.split("\n\n")[0].strip()
    )
    parser.add_argument("--bag", required=True, help="bag with CompressedFeatures and Questions (+ Answers)")
    parser.add_argument("--out", required=True, help="output folder: report files and the answers bag")
    parser.add_argument("--model", help="server model (ServerConfig.model_path; default the bundled one)")
    parser.add_argument("--codec", help="TOFC codec weights (ServerConfig.codec_path)")
    parser.add_argument("--answerer", choices=("model", "placeholder"))
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--max-batch-size", type=int)
    parser.add_argument("--params-file", help="a ROS 2 params file with the server_node's parameters")
    parser.add_argument("--set", action="append", metavar="NAME=VALUE", help="any other ServerConfig parameter")
    parser.add_argument("--questions", help="ground-truth questions file (default: the bag's sidecar, if any)")
    parser.add_argument("--features-topic")
    parser.add_argument("--questions-topic")
    parser.add_argument("--answers-topic")
    parser.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"), help="storage of <out>/answers")
    args = parser.parse_args(argv)

    from tofc_ros.pipeline.answerer import build_server

    config = _config(args)
    bag = read_feature_bag(args.bag, args.features_topic, args.questions_topic, args.answers_topic)
    qpath = Path(args.questions) if args.questions else sidecar_path(args.bag)
    truth = load_questions_file(qpath).truth if qpath.is_file() else {}
    decoder, answerer = build_server(config)
    t0 = time.perf_counter()
    log = reanswer(bag, decoder, answerer, config, truth)
    compute_s = time.perf_counter() - t0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with BagWriter(out / "answers", args.storage) as writer:
        for q, _ in log.asked:
            writer.write(bag.questions_topic, QUESTION, q.t_ns, question_cdr(q, q.t_ns))
        for record, answered_s in log.answers.values():
            t_ns = (bag.events[0][0] if bag.events else 0) + int(answered_s * 1e9)
            writer.write(bag.answers_topic or "/answers", ANSWER, t_ns, answer_cdr(record, t_ns))
    match = agreement(log, bag.answers)
    log.outcome = "ok" if len(log.answers) == len(log.asked) else "unanswered"
    log.meta = {
        "mode": "offline",
        "bag": str(bag.path),
        "storage": bag.storage,
        "topics": {"features": bag.features_topic, "questions": bag.questions_topic, "answers": bag.answers_topic},
        "questions_file": str(qpath) if truth else "",
        "server": {k: v for k, v in dataclasses.asdict(config).items() if "qos" not in k},
        "duration_s": round((bag.events[-1][0] - bag.events[0][0]) / 1e9, 3) if bag.events else 0.0,
        "compute_s": round(compute_s, 3),
        "output_bag": str(out / "answers"),
        "agreement": match,
    }
    report = write_report(log, out)
    print(markdown_summary(report), flush=True)
    if bag.answers:
        print(
            f"offline: {match['agree']}/{match['compared']} answers agree with the ones recorded in the bag "
            f"(status and text)",
            flush=True,
        )
    print(f"offline: report in {out.resolve()} ({compute_s:.1f} s of answering)", flush=True)
    return report


if __name__ == "__main__":
    main()
    sys.exit(0)
