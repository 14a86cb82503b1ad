"""Demo client: plays a synthetic camera, asks questions about its frames and prints every Answer.

It exits when every question has its answer (or `answer_timeout_s` passes), with status 0 only if all answers
are OK, so a launch file can end the whole graph on it (on_exit="shutdown").
"""

from __future__ import annotations

import sys
import uuid

import numpy as np
import rclpy
import rclpy.executors
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from tofc_msgs.msg import Answer, Question

from tofc_ros.nodes.entry import EXIT_BAD_PARAMETER, spin_until
from tofc_ros.nodes.parameters import ParameterError

_STATUS_NAMES = {v: k[len("STATUS_"):] for k, v in vars(Answer).items() if k.startswith("STATUS_")}


def synthetic_frame(index: int, height: int, width: int) -> np.ndarray:
    """A deterministic RGB test frame [H, W, 3] uint8: a colour gradient with a moving square."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)),
                    np.full_like(x, (index * 37) % 256)], axis=-1).astype(np.uint8)
    side = max(min(height, width) // 4, 1)
    top = (index * 11) % max(height - side, 1)
    left = (index * 17) % max(width - side, 1)
    rgb[top:top + side, left:left + side] = (255, 255, 255)
    return rgb


class DemoClient(Node):
    """Publishes `image` frames, asks on `questions`, listens on `answers`."""

    def __init__(self, **kwargs) -> None:
        super().__init__("demo_client", **kwargs)
        self.n_questions = self._int_param("questions", 5, 1, 10_000)
        self.camera = self.declare_parameter("camera", "front").value
        self.frame_rate = self.declare_parameter("frame_rate_hz", 10.0).value
        self.answer_timeout = self.declare_parameter("answer_timeout_s", 60.0).value
        self.height = self._int_param("image_height", 480, 1, 8192)
        self.width = self._int_param("image_width", 640, 1, 8192)
        if not 0.1 <= self.frame_rate <= 1000.0 or self.answer_timeout <= 0:
            raise ParameterError("frame_rate_hz must lie in [0.1, 1000] and answer_timeout_s be > 0")

        self._images = self.create_publisher(Image, "image", qos_profile_sensor_data)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self._questions = self.create_publisher(Question, "questions", reliable)
        self.create_subscription(Answer, "answers", self._on_answer, reliable)
        self._frame_index = 0
        self._asked: dict[str, str] = {}
        self.answers: dict[str, Answer] = {}
        self._started = self.get_clock().now()
        self.create_timer(1.0 / self.frame_rate, self._publish_frame)
        # The first question waits one second so the graph's discovery has settled.
        self.create_timer(1.0, self._ask)

    def _int_param(self, name: str, default: int, low: int, high: int) -> int:
        value = self.declare_parameter(name, default).value
        if not low <= value <= high:
            raise ParameterError(f"parameter '{name}' = {value} outside [{low}, {high}]")
        return value

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
        status = _STATUS_NAMES.get(msg.status, str(msg.status))
        self.get_logger().info(
            f"answer {len(self.answers)}/{self.n_questions} [{msg.question_id[:8]}] {status}: "
            f"{msg.text or msg.error} | {msg.format}, {msg.payload_bytes} B, device {msg.device_ms:.1f} ms, "
            f"transfer {msg.transfer_ms:.1f} ms, server {msg.server_ms:.1f} ms, total {msg.total_ms:.1f} ms")

    @property
    def done(self) -> bool:
        waited = (self.get_clock().now() - self._started).nanoseconds / 1e9
        return len(self.answers) >= self.n_questions or waited > self.answer_timeout + self.n_questions


def main(args=None) -> int:
    """Console entry point (`ros2 run tofc_ros demo_client`)."""
    rclpy.init(args=args)
    node = None
    try:
        node = DemoClient()
        spin_until(node, lambda: node.done, 0.1)
    except ParameterError as exc:
        rclpy.logging.get_logger("demo_client").fatal(f"bad parameter: {exc}")
        return EXIT_BAD_PARAMETER
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        return 130
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    ok = sum(a.status == Answer.STATUS_OK for a in node.answers.values())
    print(f"demo_client: {ok}/{node.n_questions} questions answered OK", flush=True)
    return 0 if ok == node.n_questions else 1


if __name__ == "__main__":
    sys.exit(main())
