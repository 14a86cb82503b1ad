"""Replay node: plays a bag's camera frames and questions into the live graph, records the answers, writes a report.

When each event goes out is decided by the pure :class:`~tofc_ros.eval.replay.schedule.ReplaySchedule` (modes
``timed`` and ``fast``); this node only publishes, listens and records. Frames go out as the bag's CDR bytes,
unchanged (their stamps name the frames questions ask about); questions are re-stamped with the time they are
actually asked, since the server measures waiting and total latency from ``header.stamp``. Every Answer (and the
Questions asked, and with ``record_features`` the CompressedFeatures) is recorded into ``<output_dir>/answers``
(rosbag2, ``storage`` mcap or sqlite3). The node exits when every question has its answer or ``answer_timeout_s``
has passed since the last one was asked, writes report.json, report.md and PNG plots into ``output_dir`` and prints
the Markdown summary. report.json's ``outcome`` and the last line printed, ``replay_node: RESULT <outcome>
<answered>/<questions> (exit <status>)``, say how it ended: ``ok`` (exit 0: every question answered, whatever its
status), ``unanswered`` or ``no_graph`` (no device/server appeared) or ``interrupted`` (exit 1), ``bad_parameter``
(exit 2, no report). Scripts under ``ros2 launch``, which exits 0 whatever a node did, check those.

All the bag, questions-file, schedule and report work is in :mod:`tofc_ros.eval.replay` (no rclpy).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from tofc_msgs.msg import Answer, CompressedFeatures, Question
from tofc_ros.config import ReplayConfig
from tofc_ros.eval.replay import (
    BagError,
    ReplayLog,
    load_questions_file,
    markdown_summary,
    questions_for,
    read_replay_bag,
    sidecar_path,
    write_report,
)
from tofc_ros.eval.replay.bags import BackgroundBagWriter, BagQuestion, Frame
from tofc_ros.eval.replay.messages import answer_record, features_frame, question_cdr
from tofc_ros.eval.replay.schedule import ReplaySchedule
from tofc_ros.eval.replay.typestore import ANSWER, FEATURES, IMAGE, QUESTION
from tofc_ros.nodes.entry import EXIT_BAD_PARAMETER, run_node
from tofc_ros.nodes.images import ImageError, image_msg_to_rgb
from tofc_ros.nodes.parameters import ParameterError, declare_config, qos
from tofc_ros.pipeline.records import stamp_ns

EXIT_UNANSWERED = 1
_SETTLE_S = 0.5  # after the graph is seen, time for the other side to discover our publishers


def _auto(value: str) -> str:
    return "" if value == "auto" else value  # launch files cannot pass an empty string


class ReplayNode(Node):
    """Publishes ``image`` (or ``image/compressed``) and ``questions``; listens on ``answers`` and ``features``."""

    def __init__(self, **kwargs) -> None:
        super().__init__("replay_node", **kwargs)
        self.config: ReplayConfig = declare_config(self, ReplayConfig)
        cfg = self.config
        bag = _auto(cfg.bag)
        if not bag:
            raise ParameterError("parameter 'bag' is required (a rosbag2 directory or .mcap/.db3 file)")
        try:
            qfile = None
            qpath = Path(_auto(cfg.questions_file)) if _auto(cfg.questions_file) else sidecar_path(bag)
            if _auto(cfg.questions_file) and not qpath.is_file():
                raise ParameterError(f"questions_file '{qpath}' does not exist")
            if qpath.is_file():
                qfile = load_questions_file(qpath)
            self.bag = read_replay_bag(
                bag,
                _auto(cfg.camera_topic) or None,
                _auto(cfg.questions_topic) or None,
                need_questions=not (qfile and qfile.questions),
            )
        except (BagError, ValueError) as exc:
            raise ParameterError(str(exc)) from exc
        self.questions = questions_for(self.bag, qfile)
        self.questions_from_file = bool(qfile and qfile.questions)
        self.questions_path = str(qpath) if qfile else ""
        if not self.questions:
            raise ParameterError(f"nothing to ask: bag '{bag}' and the questions file hold no questions")
        self.log = ReplayLog(truth=dict(qfile.truth) if qfile else {})
        self.schedule = ReplaySchedule(
            self.bag.frames,
            self.questions,
            cfg.mode,
            cfg.rate,
            cfg.frame_timeout_s,
            cfg.answer_timeout_s,
            cfg.wait_for_features,
        )

        compressed = self.bag.frames and self.bag.frames[0].msgtype != IMAGE
        self._images = self.create_publisher(
            CompressedImage if compressed else Image,
            "image/compressed" if compressed else "image",
            qos(cfg.image_qos_reliability, cfg.image_qos_depth),
        )
        self._questions = self.create_publisher(
            Question, "questions", qos(cfg.questions_qos_reliability, cfg.questions_qos_depth)
        )
        self._answers_sub = self.create_subscription(
            Answer, "answers", self._on_answer, qos(cfg.answers_qos_reliability, cfg.answers_qos_depth), raw=True
        )
        self.create_subscription(Image, "debug/image", self._on_overlay, qos("reliable", 10))
        self._features_sub = self.create_subscription(
            CompressedFeatures,
            "features",
            self._on_features,
            qos(cfg.features_qos_reliability, cfg.features_qos_depth),
            raw=True,
        )

        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        bag_out = out / "answers"
        if bag_out.exists():
            if not (bag_out / "metadata.yaml").is_file():
                raise ParameterError(f"'{bag_out}' exists and is not a bag this node wrote; move it away")
            self.get_logger().info(f"replacing the previous output bag {bag_out}")
            shutil.rmtree(bag_out)
        self.writer = BackgroundBagWriter(bag_out, cfg.storage)

        self._started: float | None = None
        self._settle_until: float | None = None
        self._startup_deadline = time.monotonic() + cfg.startup_timeout_s
        self.asked_ids: set[str] = set()
        self.duplicate_answers = 0
        self.foreign_answers = 0
        self.finished = False
        self.failed: str | None = None
        # Playback runs in a timer, so the node works under any executor (its main, or a test's); the node's
        # default callback group is mutually exclusive, so step() and the subscriptions never run concurrently.
        self.create_timer(0.005, self.step)
        self.get_logger().info(
            f"replaying {len(self.bag.frames)} frames from {self.bag.camera_topic} and {len(self.questions)} "
            f"questions ({'file ' + str(qpath) if self.questions_from_file else 'bag'}; ground truth for "
            f"{len(self.log.truth)}) → {self._images.topic_name}, {self._questions.topic_name}; mode {cfg.mode}"
            + (f" × {cfg.rate:g}" if cfg.mode == "timed" else "")
        )
        if self.bag.skipped_topics:
            self.get_logger().info(f"skipping topics {sorted(self.bag.skipped_topics)}")

    # -- callbacks ------------------------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return time.monotonic() - self._started if self._started is not None else 0.0

    def _on_answer(self, data: bytes) -> None:
        if self.finished:
            return
        try:
            rec = answer_record(data)
        except ValueError as exc:  # an Answer with a status this release does not know
            self.get_logger().warning(f"unreadable answer ignored: {exc}")
            return
        if rec.question_id not in self.asked_ids:
            self.foreign_answers += 1
            return
        if rec.question_id in self.log.answers:
            self.duplicate_answers += 1
            self.get_logger().warning(f"second answer for question '{rec.question_id}' (ignored)")
            return
        self.log.answers[rec.question_id] = (rec, self._elapsed())
        self.schedule.answered(rec.question_id)
        self.writer.write(self._answers_sub.topic_name, ANSWER, self.get_clock().now().nanoseconds, data)
        self.get_logger().info(
            f"answer {len(self.log.answers)}/{len(self.questions)} [{rec.question_id}] {rec.status.name}: "
            f"{(rec.text or rec.error)[:60]!r} | {rec.payload_bytes} B, total {rec.total_ms:.1f} ms"
        )

    def _on_features(self, data: bytes) -> None:
        if self.finished:
            return
        frame = features_frame(data)
        self.schedule.features_seen(frame.stamp_ns)
        self.log.features.append((frame, self._elapsed()))
        if self.config.record_features:
            self.writer.write(self._features_sub.topic_name, FEATURES, self.get_clock().now().nanoseconds, data)

    def _on_overlay(self, msg: Image) -> None:
        stamp = stamp_ns(msg.header.stamp)
        wanted = {q.image_stamp_ns for q in self.questions}
        if self.finished or stamp not in wanted or len(self.log.overlays) >= self.config.report_overlays:
            return
        try:
            self.log.overlays[stamp] = image_msg_to_rgb(msg, 1 << 26)
        except ImageError as exc:
            self.get_logger().warning(f"debug image ignored: {exc}", throttle_duration_sec=5.0)

    # -- playback -------------------------------------------------------------------------------------------
    def _play(self, event: Frame | BagQuestion, now: float) -> None:
        if isinstance(event, Frame):
            self._images.publish(event.data)
            self.log.frames.append((event.stamp_ns, now))
            return
        stamp = self.get_clock().now().nanoseconds
        data = question_cdr(event, stamp)
        self.asked_ids.add(event.question_id)
        self.log.asked.append((event, now))
        self._questions.publish(data)
        self.writer.write(self._questions.topic_name, QUESTION, stamp, data)

    def _ready(self) -> bool:
        """Discovery: the device and server subscribe to what we publish, and the server publishes answers."""
        return bool(
            self._images.get_subscription_count()
            and self._questions.get_subscription_count()
            and self._answers_sub.get_publisher_count()
        )

    def step(self) -> None:
        """Advance playback (the 5 ms timer). Sets ``finished`` when done; then call :meth:`finish`."""
        if self.finished:
            return
        if self._started is None:
            if self._ready():
                # The other side's discovery of our publishers settles too: start _SETTLE_S after the graph is seen
                # (counted here, never slept: the timer callback must not block the executor).
                if self._settle_until is None:
                    self._settle_until = time.monotonic() + _SETTLE_S
                if time.monotonic() >= self._settle_until:
                    self._started = time.monotonic()
                    self.get_logger().info("graph is up; replay starts")
            elif time.monotonic() > self._startup_deadline:
                self.failed = (
                    f"no device/server subscribed to {self._images.topic_name} and "
                    f"{self._questions.topic_name} (or published {self._answers_sub.topic_name}) within "
                    f"{self.config.startup_timeout_s:g} s"
                )
                self.finished = True
            return
        now = self._elapsed()
        seen = len(self.schedule.timeouts)
        for event in self.schedule.due(now):
            self._play(event, now)
        for warning in self.schedule.timeouts[seen:]:
            self.get_logger().warning(warning)
        self.finished = self.schedule.finished(now)

    def finish(self, outcome: str | None = None) -> dict:
        """Close the output bag, write the report (``outcome``: ok, unanswered, no_graph or interrupted; None
        derives ok or unanswered); return it."""
        self.writer.close()
        unanswered = sorted(self.asked_ids - set(self.log.answers))
        self.log.outcome = outcome or (
            "unanswered" if unanswered or len(self.asked_ids) < len(self.questions) else "ok"
        )
        cfg = self.config
        self.log.meta = {
            "bag": str(self.bag.path),
            "storage": self.bag.storage,
            "camera_topic": self.bag.camera_topic,
            "questions_source": "file" if self.questions_from_file else "bag",
            "questions_file": self.questions_path,
            "mode": cfg.mode,
            "rate": cfg.rate if cfg.mode == "timed" else None,
            "duration_s": round(self._elapsed(), 3),
            "output_bag": str(self.writer.path),
            "output_storage": cfg.storage,
            "skipped_topics": self.bag.skipped_topics,
            "unanswered": unanswered,
            "duplicate_answers": self.duplicate_answers,
            "foreign_answers": self.foreign_answers,
            "failed": self.failed,
            "topics": {
                "image": self._images.topic_name,
                "questions": self._questions.topic_name,
                "answers": self._answers_sub.topic_name,
                "features": self._features_sub.topic_name,
            },
        }
        return write_report(self.log, cfg.output_dir)


def _finish(node: ReplayNode, interrupted: bool) -> int:
    """Write the report (also after a signal) with its outcome, print its summary and the RESULT line."""
    outcome = "no_graph" if node.failed else "interrupted" if interrupted else None
    report = node.finish(outcome)
    summary = report["summary"]
    print(markdown_summary(report), flush=True)
    print(f"replay_node: report in {Path(node.config.output_dir).resolve()}", flush=True)
    code = 0 if report["outcome"] == "ok" else EXIT_UNANSWERED
    _result(report["outcome"], summary["answered"], summary["questions"], code)
    return code


def _result(outcome: str, answered: int, questions: int, code: int) -> None:
    """The last line, for scripts under ``ros2 launch`` (which exits 0 whatever a node did)."""
    print(f"replay_node: RESULT {outcome} {answered}/{questions} (exit {code})", flush=True)


def main(args=None) -> int:
    """Console entry point (`ros2 run tofc_ros replay_node --ros-args -p bag:=... -p output_dir:=...`)."""
    code = run_node(ReplayNode, "replay_node", args, done=lambda node: node.finished, finish=_finish)
    if code == EXIT_BAD_PARAMETER:
        _result("bad_parameter", 0, 0, code)
    return code


if __name__ == "__main__":
    sys.exit(main())
