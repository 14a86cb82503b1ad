"""Device and server nodes in one process, through real rclpy and the generated messages."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_for
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from tofc_msgs.msg import Answer, CompressedFeatures, Question

from tofc_ros.pipeline import placeholder_pixels
from tofc_ros.config import DeviceConfig, ServerConfig
from tofc_ros.nodes.demo_client import synthetic_frame
from tofc_ros.nodes.device_node import DeviceNode
from tofc_ros.nodes.parameters import ParameterError
from tofc_ros.nodes.server_node import ServerNode
from tofc_ros.pipeline.device import PLACEHOLDER_FINGERPRINT

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
CONFIG = Path(__file__).resolve().parents[1] / "config"


class Client:
    """A test node playing camera and asker, recording what comes back."""

    def __init__(self, ros) -> None:
        self.node = ros.add(Node("test_client", context=ros.context))
        self.images = self.node.create_publisher(Image, "image", qos_profile_sensor_data)
        self.questions = self.node.create_publisher(Question, "questions", RELIABLE)
        self.raw_features = self.node.create_publisher(CompressedFeatures, "features", RELIABLE)
        self.features: list[CompressedFeatures] = []
        self.answers: dict[str, Answer] = {}
        self._lock = threading.Lock()
        self.node.create_subscription(CompressedFeatures, "features", self.features.append, RELIABLE)
        self.node.create_subscription(Answer, "answers", self._on_answer, RELIABLE)

    def _on_answer(self, msg: Answer) -> None:
        with self._lock:
            assert msg.question_id not in self.answers, f"second answer to {msg.question_id}"
            self.answers[msg.question_id] = msg

    def image(self, rgb: np.ndarray, sec: int, encoding: str = "rgb8") -> Image:
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, step=rgb.shape[1] * 3)
        msg.header.stamp.sec = sec
        msg.header.frame_id = "cam"
        msg.data = rgb.tobytes()
        self.images.publish(msg)
        return msg

    def ask(self, qid: str, sec: int = 0, timeout_s: float = 3.0, text: str = "What colour?") -> None:
        q = Question(question_id=qid, text=text, camera="front", timeout_s=timeout_s)
        q.image_stamp.sec = sec
        self.questions.publish(q)

    def answer(self, qid: str, timeout: float = 10.0) -> Answer:
        return wait_for(lambda: self.answers.get(qid), timeout)


def _overrides(**values):
    return [Parameter(k, value=v) for k, v in values.items()]


@pytest.fixture
def graph(ros):
    device = ros.add(DeviceNode(context=ros.context, parameter_overrides=_overrides(
        max_rate_hz=50.0, codec="placeholder-zstd")))
    server = ros.add(ServerNode(context=ros.context, parameter_overrides=_overrides(
        default_timeout_s=3.0, answerer="placeholder")))
    client = Client(ros)
    wait_for(lambda: device._subs['front'].get_publisher_count() > 0 and client.questions.get_subscription_count() > 0)
    return device, server, client


def test_frame_is_encoded_published_and_answered(graph):
    device, server, client = graph
    rgb = synthetic_frame(3, 48, 64)
    client.image(rgb, sec=100)
    features = wait_for(lambda: client.features and client.features[0])
    assert features.header.stamp.sec == 100 and features.header.frame_id == "cam"
    assert features.camera == "front" and features.format == placeholder_pixels.FORMAT
    assert (features.image_height, features.image_width) == (48, 64)
    assert features.codec_fingerprint == PLACEHOLDER_FINGERPRINT
    np.testing.assert_array_equal(placeholder_pixels.decode(bytes(features.payload), 1 << 20), rgb)
    assert features.device_ms >= features.encode_ms > 0

    client.ask("by-stamp", sec=100)
    client.ask("latest", sec=0)
    for qid in ("by-stamp", "latest"):
        answer = client.answer(qid)
        assert answer.status == Answer.STATUS_OK, answer.error
        assert answer.image_stamp.sec == 100 and answer.payload_bytes == len(features.payload)
        mean = np.round(rgb.reshape(-1, 3).mean(0)).astype(int)
        assert f"RGB({mean[0]}, {mean[1]}, {mean[2]})" in answer.text
        assert answer.total_ms >= answer.server_ms >= 0


def test_unknown_frame_gets_no_frame_within_its_timeout(graph):
    _, _, client = graph
    client.ask("ghost", sec=424242, timeout_s=0.3)
    answer = client.answer("ghost", timeout=3.0)
    assert answer.status == Answer.STATUS_NO_FRAME
    assert "front" in answer.error and 250 <= answer.total_ms < 2000


def test_malformed_payloads_get_decode_error_and_the_server_goes_on(graph):
    _, server, client = graph
    for sec, payload, fingerprint in ((7, b"garbage", PLACEHOLDER_FINGERPRINT), (8, b"", PLACEHOLDER_FINGERPRINT),
                                      (9, placeholder_pixels.encode(synthetic_frame(0, 4, 4)), "f" * 32)):
        msg = CompressedFeatures(camera="front", format=placeholder_pixels.FORMAT, codec_fingerprint=fingerprint,
                                 image_height=4, image_width=4)
        msg.header.stamp.sec = sec
        msg.payload = payload
        client.raw_features.publish(msg)
        wait_for(lambda s=sec: server._pairing.cache.get("front", s * 1_000_000_000))
    client.ask("bad-1", sec=7)
    client.ask("bad-2", sec=8)
    client.ask("other-weights", sec=9)
    assert client.answer("bad-1").status == Answer.STATUS_DECODE_ERROR
    assert "magic" in client.answer("bad-1").error or "shorter" in client.answer("bad-1").error
    assert client.answer("bad-2").status == Answer.STATUS_DECODE_ERROR
    assert client.answer("other-weights").status == Answer.STATUS_MODEL_MISMATCH

    client.image(synthetic_frame(1, 8, 8), sec=10)
    wait_for(lambda: server._pairing.cache.get("front", 10 * 1_000_000_000))
    client.ask("after", sec=10)
    assert client.answer("after").status == Answer.STATUS_OK


def test_bad_requests_and_busy_each_get_one_answer(ros):
    release = threading.Event()

    class SlowAnswerer:  # holds the single worker so the bounded queue fills
        def answer(self, frame, question):
            release.wait(10)
            return "done"

    server = ros.add(ServerNode(answerer=SlowAnswerer(), context=ros.context,
                                parameter_overrides=_overrides(queue_size=2, default_timeout_s=5.0)))
    client = Client(ros)
    wait_for(lambda: client.questions.get_subscription_count() > 0 and server.count_publishers("features") > 0)
    client.image(synthetic_frame(0, 4, 4), sec=1)  # nobody encodes: send features directly instead
    msg = CompressedFeatures(camera="front", format=placeholder_pixels.FORMAT,
                             codec_fingerprint=PLACEHOLDER_FINGERPRINT, image_height=4, image_width=4)
    msg.header.stamp.sec = 1
    msg.payload = placeholder_pixels.encode(synthetic_frame(0, 4, 4))
    client.raw_features.publish(msg)
    wait_for(lambda: server._pairing.cache.get("front", 1_000_000_000))
    for i in range(4):
        client.ask(f"q{i}", sec=1)
    client.ask("", sec=1)
    client.ask("empty", sec=1, text="  ")
    wait_for(lambda: len(client.answers) >= 4)  # all but the two held by the worker
    busy = [q for q, a in client.answers.items() if a.status == Answer.STATUS_BUSY]
    assert sorted(busy) == ["q2", "q3"]
    assert client.answer("empty").status == Answer.STATUS_BAD_REQUEST
    assert client.answer("").status == Answer.STATUS_BAD_REQUEST
    release.set()
    assert client.answer("q0").text == "done" and client.answer("q1").status == Answer.STATUS_OK


@pytest.mark.parametrize("node_cls, overrides, fragment", [
    (DeviceNode, {"max_rate_hz": 0.0}, "max_rate_hz"),
    (DeviceNode, {"zstd_level": 99}, "zstd_level"),
    (DeviceNode, {"image_format": "h264"}, "image_format"),
    (DeviceNode, {"max_rate_hz": "fast"}, "max_rate_hz"),
    (ServerNode, {"queue_size": 0}, "queue_size"),
    (ServerNode, {"features_qos_reliability": "sometimes"}, "features_qos_reliability"),
])
def test_bad_parameter_values_are_refused_with_a_clear_error(ros, node_cls, overrides, fragment):
    with pytest.raises(ParameterError, match=fragment):
        node_cls(context=ros.context, parameter_overrides=_overrides(**overrides))


@pytest.mark.parametrize("node_cls, config_cls, name", [
    (DeviceNode, DeviceConfig, "device"), (ServerNode, ServerConfig, "server")])
def test_parameter_files_load_into_the_node(ros, node_cls, config_cls, name):
    path = CONFIG / f"{name}.yaml"
    node = ros.add(node_cls(context=ros.context, cli_args=["--ros-args", "--params-file", str(path)]))
    from tofc_ros.config import read_params_file

    assert node.config == config_cls.from_mapping(read_params_file(path, node.get_name()))


def test_a_params_file_overrides_defaults_by_node_name(ros, tmp_path):
    path = tmp_path / "server.yaml"
    path.write_text("/**:\n  ros__parameters:\n    queue_size: 3\n    default_timeout_s: 2\n"
                    "server_node:\n  ros__parameters:\n    cache_size: 5\n"
                    "other_node:\n  ros__parameters:\n    cache_size: 99\n")
    node = ros.add(ServerNode(context=ros.context, cli_args=["--ros-args", "--params-file", str(path)]))
    assert (node.config.queue_size, node.config.default_timeout_s, node.config.cache_size) == (3, 2.0, 5)
    assert node.config != ServerConfig()


def test_tofc_graph_answers_with_the_model(ros, tiny_model_dir, tiny_codec_path):
    """Camera frame → vision tower → DPC-KNN → TOFC bitstream → server decode → projector → LLM → Answer."""
    model = dict(model_path=str(tiny_model_dir), codec_path=str(tiny_codec_path))
    ros.add(DeviceNode(context=ros.context, parameter_overrides=_overrides(codec="tofc", n_clusters=8, **model)))
    ros.add(ServerNode(context=ros.context, parameter_overrides=_overrides(answerer="model", max_new_tokens=3,
                                                                           **model)))
    client = Client(ros)
    wait_for(lambda: client.images.get_subscription_count() and client.questions.get_subscription_count())
    client.image(synthetic_frame(0, 64, 64), sec=42)
    features = wait_for(lambda: client.features and client.features[0], timeout=60)
    assert features.format == "tofc/1" and features.n_clusters == 8 and features.n_tiles >= 2
    assert features.vision_ms > 0 and features.merge_ms > 0 and features.encode_ms > 0
    assert len(features.payload) < features.n_tiles * 8 * features.feature_dim * 2  # below raw fp16 of the merge
    client.ask("q", sec=42, timeout_s=30.0)
    answer = client.answer("q", timeout=60)
    assert answer.status == Answer.STATUS_OK, answer.error
    assert answer.text and answer.payload_bytes == len(features.payload) and answer.server_ms > 0


def test_a_missing_model_stops_the_node_with_a_clear_error(ros, tmp_path):
    from tofc_ros.nodes.entry import StartupError

    with pytest.raises(StartupError, match="does not exist"):
        DeviceNode(context=ros.context, parameter_overrides=_overrides(codec="tofc", model_path=str(tmp_path / "x")))


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_a_30hz_camera_and_a_slow_encoder_keep_memory_bounded_and_drop_stale_frames(ros):
    from tofc_ros.pipeline.device import PlaceholderEncoder

    class SlowEncoder(PlaceholderEncoder):  # a real encoder made slower than the camera (~5 Hz)
        def encode(self, rgb):
            time.sleep(0.2)
            return super().encode(rgb)

    device = ros.add(DeviceNode(encoder=SlowEncoder(1), context=ros.context,
                                parameter_overrides=_overrides(max_rate_hz=100.0)))
    client = Client(ros)
    wait_for(lambda: device._subs["front"].get_publisher_count() > 0)
    frame = synthetic_frame(0, 720, 1280)
    rss = []
    start = time.monotonic()
    for i in range(120):  # 4 s at 30 Hz, 2.8 MB per frame: 330 MB if anything queued them
        client.image(frame, sec=1000 + i)
        if i == 30:
            rss.append(_rss_mb())
        time.sleep(max(0.0, start + (i + 1) / 30 - time.monotonic()))
    rss.append(_rss_mb())
    counters = device.counters.snapshot()
    published = wait_for(lambda: device.counters.snapshot()["published"] >= counters["published"] and
                         client.features and client.features)
    assert counters["frames_received"] >= 100
    assert counters["frames_dropped"] >= counters["frames_received"] // 2  # most frames never waited in a queue
    assert counters["published"] <= 4 / 0.2 + 2
    assert rss[-1] - rss[0] < 80, f"RSS grew {rss[-1] - rss[0]:.0f} MB"
    time.sleep(0.5)
    assert client.features[-1].header.stamp.sec >= 1000 + 120 - 10  # the last encoded frame was a fresh one
    assert len(published) >= 5
