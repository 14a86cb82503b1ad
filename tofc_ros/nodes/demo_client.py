"""Demo client: plays a synthetic camera, asks questions about its frames and prints every Answer.

It exits when every question has its answer (or `answer_timeout_s` passes), with status 0 only if all answers
are OK, so a launch file can end the whole graph on it (on_exit="shutdown").
"""

from __future__ import annotations

import sys
import uuid

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image

from tofc_msgs.msg import Answer, Question
from tofc_ros.config import DemoClientConfig
from tofc_ros.nodes.entry import run_node
from tofc_ros.nodes.parameters import declare_config, qos
from tofc_ros.pipeline.records import Status


def synthetic_frame(index: int, height: int, width: int) -> np.ndarray:
    """A deterministic RGB test frame [H, W, 3] uint8: a colour gradient with a moving square."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack(
        [(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)), np.full_like(x, (index * 37) % 256)], axis=-1
    ).astype(np.uint8)
    side = max(min(height, width) // 4, 1)
    top = (index * 11) % max(height - side, 1)
    left = (index * 17) % max(width - side, 1)
    rgb[top : top + side, left : left + side] = (255, 255, 255)
    return rgb


class DemoClient(Node):
    """Publishes `image` frames, asks on `questions`, listens on `answers`."""

    def __init__(self, **kwargs) -> None:
        super().__init__("demo_client", **kwargs)
        self.config: DemoClientConfig = declare_config(self, DemoClientConfig)
        cfg = self.config
        self.n_questions, self.camera = cfg.questions, cfg.camera
        self.answer_timeout, self.height, self.width = cfg.answer_timeout_s, cfg.image_height, cfg.image_width
        self._images = self.create_publisher(Image, "image", qos(cfg.image_qos_reliability, cfg.image_qos_depth))
        self._questions = self.create_publisher(
            Question, "questions", qos(cfg.questions_qos_reliability, cfg.questions_qos_depth)
        )
        self.create_subscription(
            Answer, "answers", self._on_answer, qos(cfg.answers_qos_reliability, cfg.answers_qos_depth)
        )
        self._frame_index = 0
        self._asked: dict[str, str] = {}
        self.answers: dict[str, Answer] = {}
        self._started = self.get_clock().now()
        self.create_timer(1.0 / cfg.frame_rate_hz, self._publish_frame)
        # The first question waits one second so the graph's discovery has settled.
        self.create_timer(1.0, self._ask)

    def _publish_frame(self) -> None:
        rgb = synthetic_frame(self._frame_index, self.height, self.width)
        msg = Image(height=self.height, width=self.width, encoding="rgb8", is_bigendian=0, step=self.width * 3)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = f"{self.camera}_optical_frame"
        msg.data = rgb.tobytes()
        self._images.publish(msg)
        self._frame_index += 1

    def _ask(self) -> None:
        if len(self._asked) >= self.n_questions:
            return
        # Questions are reliable but volatile: one sent before the server subscribes is lost. Start once the
        # graph is up (server on `questions`, device on `image`), however long the nodes take to load.
        if not (self._questions.get_subscription_count() and self._images.get_subscription_count()):
            self.get_logger().info("waiting for the device and server nodes", throttle_duration_sec=5.0)
            self._started = self.get_clock().now()
            return
        q = Question(question_id=str(uuid.uuid4()), text="What colour is the scene?", camera=self.camera)
        q.header.stamp = self.get_clock().now().to_msg()
        self._asked[q.question_id] = q.text
        self._questions.publish(q)
        self.get_logger().info(f"asked {len(self._asked)}/{self.n_questions}: {q.text} [{q.question_id[:8]}]")

    def _on_answer(self, msg: Answer) -> None:
        if msg.question_id not in self._asked or msg.question_id in self.answers:
            return
        self.answers[msg.question_id] = msg
        status = Status(msg.status).name if msg.status in Status._value2member_map_ else str(msg.status)
        self.get_logger().info(
            f"answer {len(self.answers)}/{self.n_questions} [{msg.question_id[:8]}] {status}: "
            f"{msg.text or msg.error} | {msg.format}, {msg.payload_bytes} B, device {msg.device_ms:.1f} ms, "
            f"transfer {msg.transfer_ms:.1f} ms, server {msg.server_ms:.1f} ms, total {msg.total_ms:.1f} ms"
        )

    @property
    def done(self) -> bool:
        waited = (self.get_clock().now() - self._started).nanoseconds / 1e9
        return len(self.answers) >= self.n_questions or waited > self.answer_timeout + self.n_questions


def _finish(node: DemoClient, interrupted: bool) -> int:
    ok = sum(a.status == Answer.STATUS_OK for a in node.answers.values())
    print(f"demo_client: {ok}/{node.n_questions} questions answered OK", flush=True)
    return 130 if interrupted else 0 if ok == node.n_questions else 1


def main(args=None) -> int:
    """Console entry point (`ros2 run tofc_ros demo_client`)."""
    return run_node(DemoClient, "demo_client", args, done=lambda node: node.done, finish=_finish)


if __name__ == "__main__":
    sys.exit(main())
