"""Our launch files run through the shipped launcher: the real nodes start, exchange messages, stop cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from tofc_msgs.msg import Answer, Question
from tofc_ros.nodes.demo_client import synthetic_frame

from conftest import wait_for

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _launch(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tofc_ros.launcher", "tofc_ros", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
    )


def _probe(ros, ns: str):
    """A camera publisher, a questions publisher and the answers received, on a launched graph's topics (ready)."""
    node = ros.add(Node("probe", context=ros.context))
    images = node.create_publisher(Image, f"/{ns}/cam", qos_profile_sensor_data)
    questions = node.create_publisher(Question, f"/{ns}/questions", RELIABLE)
    answers = []
    node.create_subscription(Answer, f"/{ns}/answers", answers.append, RELIABLE)
    wait_for(lambda: images.get_subscription_count() and questions.get_subscription_count(), timeout=90)
    return images, questions, answers


def _ask_about_one_frame(ros, ns: str, rgb, text: str, timeout_s: float) -> Answer:
    """Ask about a frame stamped 5 s on a launched graph's topics and return the first Answer. The camera is
    best-effort, so the frame is published again until an answer arrives (a bound for a loaded machine loading three
    models, not a verdict on speed)."""
    images, questions, answers = _probe(ros, ns)
    h, w = rgb.shape[:2]
    img = Image(height=h, width=w, encoding="rgb8", step=w * 3, data=rgb.tobytes())
    img.header.stamp.sec = 5
    question = Question(question_id="q", text=text, camera="front", timeout_s=timeout_s)
    question.image_stamp.sec = 5
    questions.publish(question)

    def answered():
        images.publish(img)
        return answers

    wait_for(answered, timeout=90, interval=0.25)
    return answers[0]


def test_demo_launch_runs_the_graph_to_completion():
    ns = f"demo_{uuid.uuid4().hex[:8]}"
    proc = _launch("demo.launch.xml", "questions:=2", f"namespace:={ns}")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "demo_client: 2/2 questions answered OK" in out
    for node in ("device_node-1", "server_node-2", "demo_client-3"):
        assert f"[{node}]: process has finished cleanly" in out, out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_graph_answers_a_question_and_stops_cleanly_on_signal(ros, sig):
    ns = f"g_{uuid.uuid4().hex[:8]}"
    proc = _launch("graph.launch.xml", f"namespace:={ns}", f"image_topic:=/{ns}/cam")
    try:
        answer = _ask_about_one_frame(ros, ns, synthetic_frame(0, 24, 32), "What is there?", timeout_s=10.0)
        assert answer.status == Answer.STATUS_OK, answer
        assert answer.image_stamp.sec == 5
    finally:
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "[device_node-1]: process has finished cleanly" in out, out
    assert "[server_node-2]: process has finished cleanly" in out, out


CONFIG = Path(__file__).resolve().parents[1] / "config"


def _ask_launched_graph(ros, prefix: str, device_params, server_params, rgb, text: str, timeout_s: float) -> Answer:
    """graph.launch.xml with these parameter files: one question about one frame, then a clean stop on SIGINT."""
    ns = f"{prefix}_{uuid.uuid4().hex[:8]}"
    proc = _launch(
        "graph.launch.xml",
        f"namespace:={ns}",
        f"image_topic:=/{ns}/cam",
        f"device_params:={device_params}",
        f"server_params:={server_params}",
    )
    try:
        answer = _ask_about_one_frame(ros, ns, rgb, text, timeout_s=timeout_s)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return answer


def test_the_shipped_alignedvq_configuration_answers_through_the_launched_graph(ros):
    """config/device_alignedvq.yaml + config/server_alignedvq.yaml (installed with the package): the device runs one
    vision layer of the shipped AlignedVQ model and sends alignedvq/1; the server answers."""
    answer = _ask_launched_graph(
        ros, "avq", CONFIG / "device_alignedvq.yaml", CONFIG / "server_alignedvq.yaml",
        synthetic_frame(0, 360, 640), "What color is the circle?", timeout_s=30.0,
    )  # fmt: skip
    assert answer.status == Answer.STATUS_OK, answer
    assert answer.format == "alignedvq/1" and 0 < answer.payload_bytes < 2000


def test_the_shipped_two_stage_configuration_refines_through_the_launched_graph(ros, tmp_path):
    """config/device_two_stage.yaml + config/server_two_stage.yaml (the shipped two-stage model): the device sends one
    merged token per tile; with the threshold at 0 every unsure answer is refined by a crop."""
    server = tmp_path / "server.yaml"
    server.write_text(
        (CONFIG / "server_two_stage.yaml").read_text().replace("refine_threshold: 0.05", "refine_threshold: 0.0")
    )
    answer = _ask_launched_graph(
        ros, "ts", CONFIG / "device_two_stage.yaml", server,
        synthetic_frame(0, 64, 64), "what shape is in the image?", timeout_s=60.0,
    )  # fmt: skip
    assert answer.status == Answer.STATUS_OK, answer
    assert answer.format == "tofc/1" and answer.payload_bytes < 400  # n_c = 1: the cheap first pass
    if answer.uncertainty > 0:  # (an answer of probability exactly 1 is never refined)
        assert answer.refinement == Answer.REFINE_DONE, answer.error
        assert answer.refine_payload_bytes > 0


def test_a_node_that_dies_fails_the_launch_with_a_clear_message(tmp_path):
    bad = tmp_path / "server.yaml"
    bad.write_text("/**:\n  ros__parameters:\n    queue_size: 0\n")
    proc = _launch("graph.launch.xml", f"namespace:=bad_{uuid.uuid4().hex[:8]}", f"server_params:={bad}")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert "queue_size" in out and "server_node-2" in out, out
    assert "[device_node-1]: process has finished cleanly" in out, out


def test_two_robots_share_one_server(ros):
    ns = f"fleet_{uuid.uuid4().hex[:8]}"
    proc = _launch(
        "two_robots.launch.xml", f"server_namespace:={ns}", f"robot1_image:=/{ns}/r1", f"robot2_image:=/{ns}/r2"
    )
    try:
        node = ros.add(Node("fleet_probe", context=ros.context))
        cams = {r: node.create_publisher(Image, f"/{ns}/{r}", qos_profile_sensor_data) for r in ("r1", "r2")}
        questions = node.create_publisher(Question, f"/{ns}/questions", RELIABLE)
        answers = {}
        node.create_subscription(Answer, f"/{ns}/answers", lambda a: answers.setdefault(a.question_id, a), RELIABLE)
        wait_for(
            lambda: all(p.get_subscription_count() for p in cams.values()) and questions.get_subscription_count(),
            timeout=90,
        )
        for i, camera in enumerate(("robot1", "robot2")):
            q = Question(question_id=camera, text="What is there?", camera=camera, timeout_s=20.0)
            q.image_stamp.sec = 10 + i
            questions.publish(q)
        deadline = time.monotonic() + 90  # generous: a loaded machine loads three models slowly
        while len(answers) < 2 and time.monotonic() < deadline:
            for i, robot in enumerate(("r1", "r2")):
                img = Image(
                    height=8,
                    width=8 * (i + 1),
                    encoding="rgb8",
                    step=24 * (i + 1),
                    data=synthetic_frame(i, 8, 8 * (i + 1)).tobytes(),
                )
                img.header.stamp.sec = 10 + i
                cams[robot].publish(img)
            time.sleep(0.2)
        assert {q: (a.status, a.camera, a.image_stamp.sec) for q, a in answers.items()} == {
            "robot1": (Answer.STATUS_OK, "robot1", 10),
            "robot2": (Answer.STATUS_OK, "robot2", 11),
        }
        assert all(a.format == "tofc/1" and a.text for a in answers.values())  # the bundled model answered
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
