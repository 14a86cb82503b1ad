"""Replay node: plays a bag's camera frames and questions into the live graph, records the answers, writes a report.

Two modes (parameter ``mode``):

* ``timed``: every message at its recorded log time, scaled by ``rate`` (2.0 = twice as fast);
* ``fast``: as fast as the graph keeps up: each frame waits for its CompressedFeatures (up to ``frame_timeout_s``;
  set ``wait_for_features`` false when the device encodes on demand), each question for its Answer (up to
  ``answer_timeout_s``) before the next message goes out. Frames recorded before a question are played before it.

Frames go out as the bag's CDR bytes, unchanged (their stamps name the frames questions ask about); questions are
re-stamped with the time they are actually asked, since the server measures waiting and total latency from
``header.stamp``. Every Answer (and the Questions asked, and with ``record_features`` the CompressedFeatures) is
recorded into ``<output_dir>/answers`` (rosbag2, ``storage`` mcap or sqlite3). The node exits when every question
has its answer or ``answer_timeout_s`` has passed since the last one was asked, writes report.json, report.md and
PNG plots into ``output_dir`` and prints the Markdown summary. Exit status: 0 when every question was answered
(whatever its status), 1 when some were not (or no device/server appeared), 2 for a bad parameter or bag.

All the bag, questions-file and report work is in :mod:`tofc_ros.eval.replay` (no rclpy); this is the ROS shell.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import rclpy
import rclpy.executors
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from tofc_msgs.msg import Answer, CompressedFeatures, Question

from tofc_ros.eval.replay import (BagError, ReplayLog, load_questions_file, markdown_summary,
                                  questions_for, read_replay_bag, sidecar_path, write_report)
from tofc_ros.eval.replay.bags import BackgroundBagWriter, BagQuestion, Frame
from tofc_ros.eval.replay.messages import answer_record, features_info, question_cdr
from tofc_ros.eval.replay.typestore import ANSWER, FEATURES, IMAGE, QUESTION
from tofc_ros.nodes.entry import EXIT_BAD_PARAMETER, spin_until
from tofc_ros.nodes.parameters import ParameterError

EXIT_UNANSWERED = 1
MODES = ("timed", "fast")


class ReplayNode(Node):
    """Publishes ``image`` (or ``image/compressed``) and ``questions``; listens on ``answers`` and ``features``."""

    def __init__(self, **kwargs) -> None:
        super().__init__("replay_node", **kwargs)
        p = self._params()
        try:
            qfile = None
            qpath = Path(p["questions_file"]) if p["questions_file"] else sidecar_path(p["bag"])
            if p["questions_file"] and not qpath.is_file():
                raise ParameterError(f"questions_file '{qpath}' does not exist")
            if qpath.is_file():
                qfile = load_questions_file(qpath)
            self.bag = read_replay_bag(p["bag"], p["camera_topic"] or None, p["questions_topic"] or None,
                                       need_questions=not (qfile and qfile.questions))
        except (BagError, ValueError) as exc:
            raise ParameterError(str(exc)) from exc
        self.questions = questions_for(self.bag, qfile)
        self.questions_from_file = bool(qfile and qfile.questions)
        self.questions_path = str(qpath) if qfile else ""
        if not self.questions:
            raise ParameterError(f"nothing to ask: bag '{p['bag']}' and the questions file hold no questions")
        self.p = p
        self.log = ReplayLog(truth=dict(qfile.truth) if qfile else {})
        events: list[tuple[int, int, object]] = [(f.t_ns, 0, f) for f in self.bag.frames]
        events += [(q.t_ns, 1, q) for q in self.questions]  # frames first at equal times
        events.sort(key=lambda e: (e[0], e[1]))
        self._events = [e[2] for e in events]
        self._t0_ns = events[0][0]

        compressed = self.bag.frames and self.bag.frames[0].msgtype != IMAGE
        self._images = self.create_publisher(CompressedImage if compressed else Image,
                                             "image/compressed" if compressed else "image", qos_profile_sensor_data)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self._questions = self.create_publisher(Question, "questions", reliable)
        self._answers_sub = self.create_subscription(Answer, "answers", self._on_answer, reliable, raw=True)
        # Best effort matches a reliable or a best-effort features publisher; this is only an observer.
        self._features_sub = self.create_subscription(
            CompressedFeatures, "features", self._on_features,
            QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT), raw=True)

        out = Path(p["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        bag_out = out / "answers"
        if bag_out.exists():
            if not (bag_out / "metadata.yaml").is_file():
                raise ParameterError(f"'{bag_out}' exists and is not a bag this node wrote; move it away")
            self.get_logger().info(f"replacing the previous output bag {bag_out}")
            shutil.rmtree(bag_out)
        self.writer = BackgroundBagWriter(bag_out, p["storage"])

        self._next = 0
        self._waiting: tuple[str, object, float] | None = None
        self._started: float | None = None
        self._startup_deadline = time.monotonic() + p["startup_timeout_s"]
        self._last_sent = 0.0
        self._feature_stamps: set[int] = set()
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
            f"questions ({'file ' + str(qpath) if qfile and qfile.questions else 'bag'}; ground truth for "
            f"{len(self.log.truth)}) → {self._images.topic_name}, {self._questions.topic_name}; mode {p['mode']}"
            + (f" × {p['rate']:g}" if p["mode"] == "timed" else ""))
        if self.bag.skipped_topics:
            self.get_logger().info(f"skipping topics {sorted(self.bag.skipped_topics)}")

    # -- parameters -----------------------------------------------------------------------------------------
    def _params(self) -> dict:
        def declare(name, default, description):
            desc = ParameterDescriptor(description=description, read_only=True,
                                       dynamic_typing=isinstance(default, float))
            return self.declare_parameter(name, default, desc).value

        p = {
            "bag": declare("bag", "", "Input bag: rosbag2 directory or .mcap/.db3 file"),
            "questions_file": declare("questions_file", "",
                                      "Questions/ground-truth JSONL; '' or auto: <bag>.questions.jsonl if present"),
            "output_dir": declare("output_dir", "replay_report", "Where the answers bag and the report go"),
            "mode": declare("mode", "timed", "timed (recorded timing x rate) or fast (as fast as the graph keeps up)"),
            "rate": declare("rate", 1.0, "Playback speed factor in timed mode"),
            "camera_topic": declare("camera_topic", "",
                                    "Camera topic in the bag; '' or auto: its only Image/CompressedImage"),
            "questions_topic": declare("questions_topic", "", "Question topic in the bag; '' or auto = its only one"),
            "storage": declare("storage", "mcap", "Output bag storage: mcap or sqlite3"),
            "record_features": declare("record_features", False, "Also record CompressedFeatures"),
            "wait_for_features": declare("wait_for_features", True, "fast mode: wait for each frame's features"),
            "frame_timeout_s": declare("frame_timeout_s", 2.0, "fast mode: longest wait for a frame's features"),
            "answer_timeout_s": declare("answer_timeout_s", 30.0, "Longest wait for an answer"),
            "startup_timeout_s": declare("startup_timeout_s", 30.0, "Longest wait for the graph's subscribers"),
        }
        for name in ("questions_file", "camera_topic", "questions_topic"):
            if p[name] == "auto":  # launch files cannot pass an empty string
                p[name] = ""
        if not p["bag"]:
            raise ParameterError("parameter 'bag' is required (a rosbag2 directory or .mcap/.db3 file)")
        if p["mode"] not in MODES:
            raise ParameterError(f"parameter 'mode' = {p['mode']!r}: one of {', '.join(MODES)}")
        if p["storage"] not in ("mcap", "sqlite3"):
            raise ParameterError(f"parameter 'storage' = {p['storage']!r}: one of mcap, sqlite3")
        for name, low, high in (("rate", 0.01, 1000.0), ("frame_timeout_s", 0.0, 3600.0),
                                ("answer_timeout_s", 0.1, 86400.0), ("startup_timeout_s", 0.1, 3600.0)):
            value = p[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ParameterError(f"parameter '{name}' = {value!r} outside [{low}, {high}]")
            p[name] = float(value)
        for name in ("record_features", "wait_for_features"):
            if not isinstance(p[name], bool):
                raise ParameterError(f"parameter '{name}' must be true or false, got {p[name]!r}")
        return p

    # -- callbacks ------------------------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return time.monotonic() - self._started if self._started is not None else 0.0

    def _on_answer(self, data: bytes) -> None:
        if self.finished:
            return
        rec = answer_record(data)
        if rec.question_id not in self.asked_ids:
            self.foreign_answers += 1
            return
        if rec.question_id in self.log.answers:
            self.duplicate_answers += 1
            self.get_logger().warning(f"second answer for question '{rec.question_id}' (ignored)")
            return
        self.log.answers[rec.question_id] = (rec, self._elapsed())
        self.writer.write(self._answers_sub.topic_name, ANSWER, self.get_clock().now().nanoseconds, data)
        self.get_logger().info(
            f"answer {len(self.log.answers)}/{len(self.questions)} [{rec.question_id}] {rec.status}: "
            f"{(rec.text or rec.error)[:60]!r} | {rec.payload_bytes} B, total {rec.total_ms:.1f} ms")

    def _on_features(self, data: bytes) -> None:
        if self.finished:
            return
        info = features_info(data)
        self._feature_stamps.add(info.stamp_ns)
        self.log.features.append((info, self._elapsed()))
        if self.p["record_features"]:
            self.writer.write(self._features_sub.topic_name, FEATURES, self.get_clock().now().nanoseconds, data)

    # -- playback -------------------------------------------------------------------------------------------
    def _play(self, event) -> None:
        now = self._elapsed()
        if isinstance(event, Frame):
            self._images.publish(event.data)
            self.log.frames.append((event.stamp_ns, now))
            if self.p["mode"] == "fast" and self.p["wait_for_features"]:
                self._waiting = ("frame", event.stamp_ns, now + self.p["frame_timeout_s"])
        else:
            q: BagQuestion = event
            stamp = self.get_clock().now().nanoseconds
            data = question_cdr(q, stamp)
            self.asked_ids.add(q.question_id)
            self.log.asked.append((q, now))
            self._questions.publish(data)
            self.writer.write(self._questions.topic_name, QUESTION, stamp, data)
            if self.p["mode"] == "fast":
                self._waiting = ("question", q.question_id, now + self.p["answer_timeout_s"])
        self._last_sent = now

    def _ready(self) -> bool:
        """Discovery: the device and server subscribe to what we publish, and the server publishes answers."""
        return bool(self._images.get_subscription_count() and self._questions.get_subscription_count()
                    and self._answers_sub.get_publisher_count())

    def step(self) -> None:
        """Advance playback (the 5 ms timer). Sets ``finished`` when done; then call :meth:`finish`."""
        if self.finished:
            return
        if self._started is None:
            if self._ready():
                time.sleep(0.5)  # the other side's discovery of our publishers settles too
                self._started = time.monotonic()
                self.get_logger().info("graph is up; replay starts")
            elif time.monotonic() > self._startup_deadline:
                self.failed = (f"no device/server subscribed to {self._images.topic_name} and "
                               f"{self._questions.topic_name} (or published {self._answers_sub.topic_name}) within "
                               f"{self.p['startup_timeout_s']:g} s")
                self.finished = True
            return
        now = self._elapsed()
        if self.p["mode"] == "timed":
            while self._next < len(self._events):
                event = self._events[self._next]
                due = (event.t_ns - self._t0_ns) / 1e9 / self.p["rate"]
                if due > now:
                    break
                self._play(event)
                self._next += 1
        else:
            while self._next < len(self._events):
                if self._waiting is not None:
                    kind, key, deadline = self._waiting
                    done = key in self._feature_stamps if kind == "frame" else key in self.log.answers
                    if not done and now < deadline:
                        break
                    if not done:
                        self.get_logger().warning(f"no {'features' if kind == 'frame' else 'answer'} for {kind} "
                                                  f"{key} within the timeout; going on")
                    self._waiting = None
                self._play(self._events[self._next])
                self._next += 1
        if self._next >= len(self._events):
            all_answered = self.asked_ids <= set(self.log.answers)
            if all_answered or now - self._last_sent > self.p["answer_timeout_s"]:
                self.finished = True

    def finish(self) -> dict:
        """Close the output bag, write the report; return it."""
        self.writer.close()
        unanswered = sorted(self.asked_ids - set(self.log.answers))
        self.log.meta = {
            "bag": str(self.bag.path), "storage": self.bag.storage, "camera_topic": self.bag.camera_topic,
            "questions_source": "file" if self.questions_from_file else "bag",
            "questions_file": self.questions_path,
            "mode": self.p["mode"], "rate": self.p["rate"] if self.p["mode"] == "timed" else None,
            "duration_s": round(self._elapsed(), 3), "output_bag": str(self.writer.path),
            "output_storage": self.p["storage"], "skipped_topics": self.bag.skipped_topics,
            "unanswered": unanswered, "duplicate_answers": self.duplicate_answers,
            "foreign_answers": self.foreign_answers, "failed": self.failed,
            "topics": {"image": self._images.topic_name, "questions": self._questions.topic_name,
                       "answers": self._answers_sub.topic_name, "features": self._features_sub.topic_name},
        }
        return write_report(self.log, self.p["output_dir"])


def main(args=None) -> int:
    """Console entry point (`ros2 run tofc_ros replay_node --ros-args -p bag:=... -p output_dir:=...`)."""
    rclpy.init(args=args)
    node = None
    try:
        node = ReplayNode()
        spin_until(node, lambda: node.finished, 0.05)
    except ParameterError as exc:
        rclpy.logging.get_logger("replay_node").fatal(f"cannot replay: {exc}")
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass  # interrupted: still write what was recorded
    if node is None:
        rclpy.try_shutdown()
        return EXIT_BAD_PARAMETER
    try:
        report = node.finish()
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    summary = report["summary"]
    print(markdown_summary(report), flush=True)
    print(f"replay_node: {summary['answered']}/{summary['questions']} questions answered; report in "
          f"{Path(node.p['output_dir']).resolve()}", flush=True)
    if node.failed:
        print(f"replay_node: {node.failed}", flush=True)
    return 0 if summary["unanswered"] == 0 and not node.failed else EXIT_UNANSWERED


if __name__ == "__main__":
    sys.exit(main())
