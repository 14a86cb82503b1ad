"""Load check of the ROS graph: a 30 Hz 1280x720 camera and 10 Hz questions for a few minutes.

Starts graph.launch.xml through the package's launcher (device and server as separate processes, as deployed),
plays the camera from a child process (as a camera driver would: its 83 MB/s of serialisation does not share a GIL
with the asker) and asks questions from this process, and reports:
  - answers == questions (every question gets exactly one answer) and their statuses;
  - RSS of the device and server processes sampled through the run (growth = leak or unbounded queue);
  - the ROS path's overhead over an in-process call: the asker's round trip (publish Question → receive Answer)
    minus the server's own work time for that question (Answer.server_ms), median and p95, split into the
    question's transit (asker → server callback), its wait for the server's worker, and the answer's transit;
  - next to it, under the same load, the round trip of a trivial rclpy echo node: the floor of any Python server.

The frames and answers go through the launched device_node and server_node, i.e. through the deployed
FeatureEncoder, FrameDecoder and ModelAnswerer that the nodes build (``pipeline.encoder.make_encoder``,
``pipeline.answerer.build_server``); this script builds no part of the feature chain itself. It runs the installed
package (``make setup`` after changing the code).

The asker spins a SingleThreadedExecutor, as the package's nodes do: rclpy's MultiThreadedExecutor adds about
3.5 ms to every callback dispatch on this machine (a ping-pong of small messages: 5.7 ms vs 2.0 ms round trip).

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
from rclpy.executors import SingleThreadedExecutor
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


def run_camera(ns: str, width: int, height: int, hz: float) -> int:
    """Child process: publish one synthetic rgb8 frame at ``hz`` until SIGINT/SIGTERM."""
    rclpy.init()
    node = Node("load_check_camera")
    pub = node.create_publisher(Image, f"/{ns}/camera", qos_profile_sensor_data)
    frame = synthetic_frame(0, height, width)
    image = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=frame.tobytes())
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    frames, next_frame = 0, time.monotonic()
    while not stop.is_set():
        image.header.stamp = node.get_clock().now().to_msg()
        pub.publish(image)
        frames += 1
        next_frame += 1 / hz
        stop.wait(max(0.0, next_frame - time.monotonic()))
    print(json.dumps({"frames_published": frames}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def run_echo(ns: str) -> int:
    """Child process: the cheapest possible rclpy node, answering every Question with an empty Answer at once.

    Its round trip under the same load is the floor any Python ROS 2 server pays on this machine (two DDS hops, two
    executor dispatches); the load check reports it next to the server's overhead.
    """
    rclpy.init()
    node = Node("load_check_echo")
    reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(Answer, f"/{ns}/echo_answers", reliable)
    node.create_subscription(
        Question, f"/{ns}/echo_questions", lambda q: pub.publish(Answer(question_id=q.question_id)), reliable
    )
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


class Asker(Node):
    def __init__(self, ns: str) -> None:
        super().__init__("load_check")
        reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.questions = self.create_publisher(Question, f"/{ns}/questions", reliable)
        self.create_subscription(Answer, f"/{ns}/answers", self._on_answer, reliable)
        self.echo_questions = self.create_publisher(Question, f"/{ns}/echo_questions", reliable)
        self.create_subscription(Answer, f"/{ns}/echo_answers", self._on_echo, reliable)
        self.pinged: dict[str, float] = {}
        self.echo_rtt_ms: list[float] = []
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

    def _on_echo(self, msg: Answer) -> None:
        now = time.perf_counter()
        with self.lock:
            sent = self.pinged.pop(msg.question_id, None)
            if sent is not None:
                self.echo_rtt_ms.append((now - sent) * 1e3)

    def ping(self) -> None:
        qid = uuid.uuid4().hex
        with self.lock:
            self.pinged[qid] = time.perf_counter()
        self.echo_questions.publish(Question(question_id=qid, text="echo"))

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
    ap.add_argument("--rss-every", type=float, default=10.0, help="seconds between RSS samples")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument("--camera-only", metavar="NAMESPACE", help=argparse.SUPPRESS)  # the camera child process
    ap.add_argument("--echo-only", metavar="NAMESPACE", help=argparse.SUPPRESS)  # the echo child process
    args = ap.parse_args(argv)
    if args.camera_only:
        return run_camera(args.camera_only, args.width, args.height, args.camera_hz)
    if args.echo_only:
        return run_echo(args.echo_only)

    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    env.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 50))
    os.environ.update(env)
    ns = f"load_{uuid.uuid4().hex[:6]}"
    launch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tofc_ros.launcher",
            "tofc_ros",
            "graph.launch.xml",
            f"namespace:={ns}",
            f"image_topic:=/{ns}/camera",
            *args.launch_arg,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
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
    node = Asker(ns)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    camera = echo = None
    rss_samples: list[dict] = []
    try:
        deadline = time.monotonic() + 60
        while not (node.questions.get_subscription_count() and node.count_subscribers(f"/{ns}/camera")):
            if time.monotonic() > deadline or launch.poll() is not None:
                print("".join(log[-30:]), file=sys.stderr)
                raise SystemExit("the graph did not come up")
            time.sleep(0.1)
        echo = subprocess.Popen([sys.executable, __file__, "--echo-only", ns], env=env)
        camera = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--camera-only",
                ns,
                "--camera-hz",
                str(args.camera_hz),
                "--width",
                str(args.width),
                "--height",
                str(args.height),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        # Warm-up: the first frame is encoded and reaches the server before questions start.
        while not (node.count_publishers(f"/{ns}/camera") and node.echo_questions.get_subscription_count()):
            if time.monotonic() > deadline:
                raise SystemExit("the camera or echo child did not come up")
            time.sleep(0.1)
        time.sleep(20 / args.camera_hz + 2.0)

        def sample_rss(t: float) -> None:
            rss_samples.append({"t_s": round(t, 1), **{name: round(_rss_mb(pid), 1) for name, pid in pids.items()}})

        start = time.monotonic()
        sample_rss(0.0)
        # Echo pings at the question rate, half a period after each question so the two never overlap.
        next_question, next_ping, next_rss = start, start + 0.5 / args.question_hz, start + args.rss_every
        while (now := time.monotonic()) < start + args.duration:
            if now >= next_question:
                node.ask()
                next_question += 1 / args.question_hz
            if now >= next_ping:
                node.ping()
                next_ping += 1 / args.question_hz
            if now >= next_rss:
                sample_rss(now - start)
                next_rss += args.rss_every
            time.sleep(max(0.0, min(next_question, next_ping, next_rss) - time.monotonic()))
        wait_until = time.monotonic() + 15
        while len(node.answers) < len(node.asked) and time.monotonic() < wait_until:
            time.sleep(0.1)
        sample_rss(time.monotonic() - start)
    finally:
        n_frames = None
        if echo is not None:
            echo.send_signal(signal.SIGINT)
            try:
                echo.wait(10)
            except subprocess.TimeoutExpired:
                echo.kill()
        if camera is not None:
            camera.send_signal(signal.SIGINT)
            try:
                out, _ = camera.communicate(timeout=10)
                n_frames = json.loads(out.strip().splitlines()[-1])["frames_published"]
            except (subprocess.TimeoutExpired, ValueError, IndexError, KeyError):
                camera.kill()
        launch.send_signal(signal.SIGINT)
        try:
            launch.wait(30)
        except subprocess.TimeoutExpired:
            launch.kill()
        executor.shutdown()
        rclpy.try_shutdown()

    statuses: dict[str, int] = {}
    overhead, q_transit, wait, a_transit = [], [], [], []
    for qid, answer in node.answers.items():
        statuses[str(answer.status)] = statuses.get(str(answer.status), 0) + 1
        overhead.append(node.rtt_ms[qid] - answer.server_ms)
        # total_ms runs from the question's header stamp to the server's publish (one clock, one machine).
        q_transit.append(answer.total_ms - answer.wait_ms - answer.server_ms)
        wait.append(answer.wait_ms)
        a_transit.append(node.rtt_ms[qid] - answer.total_ms)

    def med(values: list[float]) -> float:
        return round(statistics.median(values), 3) if values else float("nan")

    result = {
        "duration_s": args.duration,
        "camera_hz": args.camera_hz,
        "question_hz": args.question_hz,
        "image": f"{args.width}x{args.height}",
        "frames_published": n_frames,
        "questions": len(node.asked),
        "answers": len(node.answers),
        "duplicate_answers": node.duplicates,
        "statuses": statuses,
        "rss_mb_start": rss_samples[0] if rss_samples else {},
        "rss_mb_end": rss_samples[-1] if rss_samples else {},
        "rss_mb_samples": rss_samples,
        "ros_overhead_ms_median": med(overhead),
        "ros_overhead_ms_p95": round(_percentile(overhead, 95), 3),
        "overhead_split_ms_median": {
            "question_transit": med(q_transit),
            "server_queue_wait": med(wait),
            "answer_transit": med(a_transit),
        },
        "round_trip_ms_median": med(list(node.rtt_ms.values())),
        "echo_round_trip_ms_median": med(node.echo_rtt_ms),
        "echo_round_trip_ms_p95": round(_percentile(node.echo_rtt_ms, 95), 3),
        "echo_pings_answered": len(node.echo_rtt_ms),
        "launch_exit": launch.returncode,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    ok = result["answers"] == result["questions"] and not node.duplicates
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
