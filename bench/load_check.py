"""Load check of the ROS graph: a 30 Hz 1280x720 camera and 10 Hz questions for a few minutes.

Starts graph.launch.xml through the package's launcher (device and server as separate processes, as deployed),
plays the camera and asks questions from this process, and reports:
  - answers == questions (every question gets exactly one answer) and their statuses;
  - RSS of the device and server processes at the start and end (growth = leak or unbounded queue);
  - the ROS path's overhead over an in-process call: the asker's round trip (publish Question → receive Answer)
    minus the server's own work time for that question (Answer.server_ms), median and p95.

    .venv/bin/python bench/load_check.py --duration 300 --out /tmp/load.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from tofc_msgs.msg import Answer, Question

from tofc_ros.nodes.demo_client import synthetic_frame


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


class Load(Node):
    def __init__(self, ns: str, width: int, height: int) -> None:
        super().__init__("load_check")
        reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.images = self.create_publisher(Image, f"/{ns}/camera", qos_profile_sensor_data)
        self.questions = self.create_publisher(Question, f"/{ns}/questions", reliable)
        self.create_subscription(Answer, f"/{ns}/answers", self._on_answer, reliable)
        frame = synthetic_frame(0, height, width)
        self.image = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=frame.tobytes())
        self.asked: dict[str, float] = {}
        self.rtt_ms: dict[str, float] = {}
        self.answers: dict[str, Answer] = {}
        self.duplicates = 0
        self.lock = threading.Lock()

    def _on_answer(self, msg: Answer) -> None:
        now = time.perf_counter()
        with self.lock:
            if msg.question_id in self.answers:
                self.duplicates += 1
                return
            if msg.question_id in self.asked:
                self.answers[msg.question_id] = msg
                self.rtt_ms[msg.question_id] = (now - self.asked[msg.question_id]) * 1e3

    def publish_frame(self) -> None:
        self.image.header.stamp = self.get_clock().now().to_msg()
        self.images.publish(self.image)

    def ask(self) -> None:
        qid = uuid.uuid4().hex
        q = Question(question_id=qid, text="What colour is the scene?", camera="front", timeout_s=5.0)
        q.header.stamp = self.get_clock().now().to_msg()
        with self.lock:
            self.asked[qid] = time.perf_counter()
        self.questions.publish(q)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    ap.add_argument("--camera-hz", type=float, default=30.0)
    ap.add_argument("--question-hz", type=float, default=10.0)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--launch-arg", action="append", default=[], help="extra name:=value for graph.launch.xml")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)

    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    env.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 50))
    os.environ.update(env)
    ns = f"load_{uuid.uuid4().hex[:6]}"
    launch = subprocess.Popen(
        [sys.executable, "-m", "tofc_ros.launcher", "tofc_ros", "graph.launch.xml", f"namespace:={ns}",
         f"image_topic:=/{ns}/camera", *args.launch_arg], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=env)
    pids: dict[str, int] = {}
    log: list[str] = []

    def read_output() -> None:
        for line in launch.stdout:
            log.append(line)
            m = re.search(r"\[(\w+_node)-\d+\]: process started with pid \[(\d+)\]", line)
            if m:
                pids[m.group(1)] = int(m.group(2))

    threading.Thread(target=read_output, daemon=True).start()
    rclpy.init()
    node = Load(ns, args.width, args.height)
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while not (node.questions.get_subscription_count() and node.images.get_subscription_count()):
            if time.monotonic() > deadline or launch.poll() is not None:
                print("".join(log[-30:]), file=sys.stderr)
                raise SystemExit("the graph did not come up")
            time.sleep(0.1)
        for _ in range(20):  # warm-up: the first frame encoded before questions start
            node.publish_frame()
            time.sleep(1 / args.camera_hz)
        rss_start = {name: _rss_mb(pid) for name, pid in pids.items()}
        start = time.monotonic()
        next_frame = next_question = start
        n_frames = 0
        while (now := time.monotonic()) < start + args.duration:
            if now >= next_frame:
                node.publish_frame()
                n_frames += 1
                next_frame += 1 / args.camera_hz
            if now >= next_question:
                node.ask()
                next_question += 1 / args.question_hz
            time.sleep(max(0.0, min(next_frame, next_question) - time.monotonic()))
        wait_until = time.monotonic() + 15
        while len(node.answers) < len(node.asked) and time.monotonic() < wait_until:
            time.sleep(0.1)
        rss_end = {name: _rss_mb(pid) for name, pid in pids.items()}
    finally:
        launch.send_signal(signal.SIGINT)
        try:
            launch.wait(30)
        except subprocess.TimeoutExpired:
            launch.kill()
        executor.shutdown()
        rclpy.try_shutdown()

    statuses: dict[str, int] = {}
    overhead = []
    for qid, answer in node.answers.items():
        statuses[str(answer.status)] = statuses.get(str(answer.status), 0) + 1
        overhead.append(node.rtt_ms[qid] - answer.server_ms)
    result = {
        "duration_s": args.duration, "camera_hz": args.camera_hz, "question_hz": args.question_hz,
        "image": f"{args.width}x{args.height}", "frames_published": n_frames, "questions": len(node.asked),
        "answers": len(node.answers), "duplicate_answers": node.duplicates, "statuses": statuses,
        "rss_mb_start": rss_start, "rss_mb_end": rss_end,
        "ros_overhead_ms_median": statistics.median(overhead) if overhead else float("nan"),
        "ros_overhead_ms_p95": _percentile(overhead, 95),
        "round_trip_ms_median": statistics.median(node.rtt_ms.values()) if node.rtt_ms else float("nan"),
        "launch_exit": launch.returncode,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    ok = result["answers"] == result["questions"] and not node.duplicates
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
