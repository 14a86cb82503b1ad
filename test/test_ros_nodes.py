"""Device and server nodes in one process, through real rclpy and the generated messages.

Verdicts are about behaviour (which answer, which status, which frame, in what order), never about elapsed time:
where a test needs the device to be slower than the camera, its encoder waits for an event the test controls.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from tofc_msgs.msg import Answer, CompressedFeatures, Question
from tofc_ros.codec import load_codec, peek_header
from tofc_ros.config import DeviceConfig, ServerConfig
from tofc_ros.nodes.demo_client import synthetic_frame
from tofc_ros.nodes.device_node import DeviceNode
from tofc_ros.nodes.parameters import ParameterError
from tofc_ros.nodes.server_node import ServerNode
from tofc_ros.pipeline.answerer import PlaceholderAnswerer
from tofc_ros.pipeline.decoder import FrameDecoder
from tofc_ros.pipeline.encoder import ImageEncoder

from conftest import wait_for

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
CONFIG = Path(__file__).resolve().parents[1] / "config"
PLACEHOLDER = load_codec("placeholder-zstd")


class Client:
    """A test node playing camera and asker, recording what comes back (callbacks only record; tests assert)."""

    def __init__(self, ros) -> None:
        self.node = ros.add(Node("test_client", context=ros.context))
        self.images = self.node.create_publisher(Image, "image", qos_profile_sensor_data)
        self.questions = self.node.create_publisher(Question, "questions", RELIABLE)
        self.raw_features = self.node.create_publisher(CompressedFeatures, "features", RELIABLE)
        self.features: list[CompressedFeatures] = []
        self.answers: dict[str, Answer] = {}
        self.duplicates: list[str] = []
        self._lock = threading.Lock()
        self.node.create_subscription(CompressedFeatures, "features", self.features.append, RELIABLE)
        self.node.create_subscription(Answer, "answers", self._on_answer, RELIABLE)

    def _on_answer(self, msg: Answer) -> None:
        with self._lock:
            if msg.question_id in self.answers:
                self.duplicates.append(msg.question_id)
            self.answers.setdefault(msg.question_id, msg)

    def image(self, rgb: np.ndarray, sec: int, encoding: str = "rgb8") -> Image:
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, step=rgb.shape[1] * 3)
        msg.header.stamp.sec = sec
        msg.header.frame_id = "cam"
        msg.data = rgb.tobytes()
        self.images.publish(msg)
        return msg

    def send_features(self, payload: bytes, sec: int, fmt: str | None = None) -> None:
        msg = CompressedFeatures(camera="front", format=peek_header(payload).format if fmt is None else fmt)
        msg.header.stamp.sec = sec
        msg.payload = payload
        self.raw_features.publish(msg)

    def ask(self, qid: str, sec: int = 0, timeout_s: float = 3.0, text: str = "What colour?") -> None:
        q = Question(question_id=qid, text=text, camera="front", timeout_s=float(timeout_s))
        q.image_stamp.sec = sec
        self.questions.publish(q)

    def answer(self, qid: str, timeout: float = 30.0) -> Answer:
        return wait_for(lambda: self.answers.get(qid), timeout)


def _overrides(**values):
    return [Parameter(k, value=v) for k, v in values.items()]


@pytest.fixture
def graph(ros):
    device = ros.add(
        DeviceNode(context=ros.context, parameter_overrides=_overrides(max_rate_hz=50.0, codec="placeholder-zstd"))
    )
    server = ros.add(
        ServerNode(context=ros.context, parameter_overrides=_overrides(default_timeout_s=3.0, answerer="placeholder"))
    )
    client = Client(ros)
    wait_for(lambda: device._subs["front"].get_publisher_count() > 0 and client.questions.get_subscription_count() > 0)
    return device, server, client


def test_frame_is_encoded_published_and_answered(graph):
    device, server, client = graph
    rgb = synthetic_frame(3, 48, 64)
    client.image(rgb, sec=100)
    features = wait_for(lambda: client.features and client.features[0])
    assert features.header.stamp.sec == 100 and features.header.frame_id == "cam"
    assert features.camera == "front" and features.format == "placeholder-zstd/1"
    assert peek_header(bytes(features.payload)).image_size == (48, 64)  # the payload describes itself
    np.testing.assert_array_equal(PLACEHOLDER.decode(bytes(features.payload)), rgb)
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
    assert client.duplicates == []


def test_unknown_frame_gets_no_frame_after_its_timeout(graph):
    _, _, client = graph
    client.ask("ghost", sec=424242, timeout_s=0.3)
    answer = client.answer("ghost")
    assert answer.status == Answer.STATUS_NO_FRAME and "front" in answer.error
    assert answer.total_ms >= 300  # never before its timeout (later on a loaded machine, which is fine)


def test_malformed_and_foreign_payloads_get_their_status_and_the_server_goes_on(graph):
    _, server, client = graph
    good = PLACEHOLDER.encode(synthetic_frame(0, 4, 4))
    v1 = good[:4] + b"\x01" + good[5:]
    cases = {
        7: (b"garbage" * 20, "placeholder-zstd/1"),
        8: (b"", "placeholder-zstd/1"),
        9: (good, "fp16/1"),  # the message's format disagrees with its payload
        10: (v1, "placeholder-zstd/1"),
        11: (load_codec("jpeg").encode(synthetic_frame(0, 4, 4)), "jpeg/1"),  # a format this server lacks
        12: (load_codec("rgb8").encode(synthetic_frame(0, 4, 4)), "rgb8/1"),
    }
    for sec, (payload, fmt) in cases.items():
        client.send_features(payload, sec, fmt)
        wait_for(lambda s=sec: server.core._pairing.cache.get("front", s * 1_000_000_000))
        client.ask(f"q{sec}", sec=sec)
    status = {sec: client.answer(f"q{sec}") for sec in cases}
    assert status[7].status == Answer.STATUS_DECODE_ERROR and "magic" in status[7].error
    assert status[8].status == Answer.STATUS_DECODE_ERROR and "shorter" in status[8].error
    assert status[9].status == Answer.STATUS_DECODE_ERROR and "message says format 'fp16/1'" in status[9].error
    assert status[10].status == Answer.STATUS_DECODE_ERROR and "version 1" in status[10].error
    assert status[11].status == Answer.STATUS_MODEL_MISMATCH and "not served here" in status[11].error
    assert status[12].status == Answer.STATUS_MODEL_MISMATCH

    client.image(synthetic_frame(1, 8, 8), sec=20)
    wait_for(lambda: server.core._pairing.cache.get("front", 20 * 1_000_000_000))
    client.ask("after", sec=20)
    assert client.answer("after").status == Answer.STATUS_OK
    assert client.duplicates == []


def test_an_oversize_payload_is_refused_unread(ros):
    server = ros.add(
        ServerNode(context=ros.context, parameter_overrides=_overrides(answerer="placeholder", max_payload_bytes=100))
    )
    client = Client(ros)
    wait_for(lambda: client.questions.get_subscription_count() > 0 and server.count_publishers("features") > 0)
    client.send_features(PLACEHOLDER.encode(synthetic_frame(0, 40, 40)), sec=3)
    wait_for(lambda: server.core._pairing.cache.get("front", 3_000_000_000))
    assert server.core._pairing.cache.get("front", 3_000_000_000).payload == b""
    client.ask("big", sec=3)
    answer = client.answer("big")
    assert answer.status == Answer.STATUS_DECODE_ERROR and "max_payload_bytes" in answer.error


class GatedAnswerer(PlaceholderAnswerer):
    """Holds the single worker until the test releases it, so the bounded queue fills."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def answer(self, frame, question):
        self.release.wait(60)
        return "done"


def test_bad_requests_and_busy_each_get_one_answer(ros):
    answerer = GatedAnswerer()
    server = ros.add(
        ServerNode(
            server=(FrameDecoder(accept_images=True), answerer),
            context=ros.context,
            parameter_overrides=_overrides(queue_size=2, default_timeout_s=30.0),
        )
    )
    client = Client(ros)
    wait_for(lambda: client.questions.get_subscription_count() > 0 and server.count_publishers("features") > 0)
    client.send_features(PLACEHOLDER.encode(synthetic_frame(0, 4, 4)), sec=1)
    wait_for(lambda: server.core._pairing.cache.get("front", 1_000_000_000))
    for i in range(4):  # a generous timeout: q1 waits behind the gated q0 for as long as this machine takes
        client.ask(f"q{i}", sec=1, timeout_s=120.0)
    client.ask("", sec=1)
    client.ask("empty", sec=1, text="  ")
    wait_for(lambda: len(client.answers) >= 4)  # all but the two held by the worker
    busy = [q for q, a in client.answers.items() if a.status == Answer.STATUS_BUSY]
    assert sorted(busy) == ["q2", "q3"]
    assert client.answer("empty").status == Answer.STATUS_BAD_REQUEST
    assert client.answer("").status == Answer.STATUS_BAD_REQUEST
    answerer.release.set()
    assert client.answer("q0").text == "done" and client.answer("q1").status == Answer.STATUS_OK
    assert client.duplicates == []


@pytest.mark.parametrize(
    "node_cls, overrides, fragment",
    [
        (DeviceNode, {"max_rate_hz": 0.0}, "max_rate_hz"),
        (DeviceNode, {"zstd_level": 99}, "zstd_level"),
        (DeviceNode, {"image_format": "h264"}, "image_format"),
        (DeviceNode, {"max_rate_hz": "fast"}, "max_rate_hz"),
        (ServerNode, {"queue_size": 0}, "queue_size"),
        (ServerNode, {"features_qos_reliability": "sometimes"}, "features_qos_reliability"),
    ],
)
def test_bad_parameter_values_are_refused_with_a_clear_error(ros, node_cls, overrides, fragment):
    with pytest.raises(ParameterError, match=fragment):
        node_cls(context=ros.context, parameter_overrides=_overrides(**overrides))


@pytest.mark.parametrize(
    "node_cls, config_cls, name", [(DeviceNode, DeviceConfig, "device"), (ServerNode, ServerConfig, "server")]
)
def test_parameter_files_load_into_the_node(ros, node_cls, config_cls, name):
    path = CONFIG / f"{name}.yaml"
    node = ros.add(node_cls(context=ros.context, cli_args=["--ros-args", "--params-file", str(path)]))
    from tofc_ros.config import read_params_file

    assert node.config == config_cls.from_mapping(read_params_file(path, node.get_name()))


def test_a_params_file_overrides_defaults_by_node_name(ros, tmp_path):
    path = tmp_path / "server.yaml"
    path.write_text(
        "/**:\n  ros__parameters:\n    queue_size: 3\n    default_timeout_s: 2\n"
        "server_node:\n  ros__parameters:\n    cache_size: 5\n"
        "other_node:\n  ros__parameters:\n    cache_size: 99\n"
    )
    node = ros.add(ServerNode(context=ros.context, cli_args=["--ros-args", "--params-file", str(path)]))
    assert (node.config.queue_size, node.config.default_timeout_s, node.config.cache_size) == (3, 2.0, 5)
    assert node.config != ServerConfig()


def test_tofc_graph_answers_with_the_model(ros, tiny_model_dir, tiny_codec_path):
    """Camera frame → vision tower → DPC-KNN → TOFC bitstream → server decode → projector → LLM → Answer."""
    model = dict(model_path=str(tiny_model_dir), codec_path=str(tiny_codec_path))
    ros.add(DeviceNode(context=ros.context, parameter_overrides=_overrides(codec="tofc", n_clusters=8, **model)))
    ros.add(
        ServerNode(context=ros.context, parameter_overrides=_overrides(answerer="model", max_new_tokens=3, **model))
    )
    client = Client(ros)
    wait_for(lambda: client.images.get_subscription_count() and client.questions.get_subscription_count())
    client.image(synthetic_frame(0, 64, 64), sec=42)
    features = wait_for(lambda: client.features and client.features[0], timeout=60)
    header = peek_header(bytes(features.payload))
    assert features.format == "tofc/1" and header.tokens_per_tile == 8 and header.n_tiles >= 2
    assert features.vision_ms > 0 and features.merge_ms > 0 and features.encode_ms > 0
    assert len(features.payload) < header.n_tiles * 8 * header.feature_dim * 2  # below raw fp16 of the merge
    client.ask("q", sec=42, timeout_s=30.0)
    answer = client.answer("q", timeout=60)
    assert answer.status == Answer.STATUS_OK, answer.error
    assert answer.text and answer.payload_bytes == len(features.payload) and answer.server_ms > 0


def test_a_missing_model_stops_the_node_with_a_clear_error(ros, tmp_path):
    from tofc_ros.nodes.entry import StartupError

    with pytest.raises(StartupError, match="does not exist"):
        DeviceNode(context=ros.context, parameter_overrides=_overrides(codec="tofc", model_path=str(tmp_path / "x")))


class GatedEncoder(ImageEncoder):
    """The placeholder encoder, made to wait on its first frame until the test releases it (slower than the camera
    by construction, whatever the machine's speed)."""

    def __init__(self) -> None:
        super().__init__(PLACEHOLDER)
        self.started = threading.Event()
        self.release = threading.Event()

    def encode(self, rgb):
        self.started.set()
        self.release.wait(60)
        return super().encode(rgb)


def test_a_fast_camera_and_a_slow_encoder_keep_only_the_newest_frame(ros):
    encoder = GatedEncoder()
    device = ros.add(
        DeviceNode(encoder=encoder, context=ros.context, parameter_overrides=_overrides(max_rate_hz=100.0))
    )
    client = Client(ros)
    wait_for(lambda: device._subs["front"].get_publisher_count() > 0)
    client.image(synthetic_frame(1, 72, 128), sec=1000)
    wait_for(encoder.started.is_set)  # the worker is busy with the first frame from now on
    for i in range(1, 31):  # 30 more frames arrive while it works
        client.image(synthetic_frame(i, 72, 128), sec=1000 + i)
    newest_ns = 1030 * 1_000_000_000
    wait_for(lambda: (device._store._pending["front"] or (0,))[0] == newest_ns)  # the camera's last frame is in
    received = device.counters.snapshot()["frames_received"]
    encoder.release.set()
    wait_for(lambda: len(client.features) >= 2)
    counters = device.counters.snapshot()
    # Every frame that arrived while the worker was busy replaced the one before it: all but the newest dropped,
    # and the store never held more than one waiting frame (memory is bounded by construction).
    assert counters["frames_dropped"] == received - 2
    assert counters["published"] == 2
    assert [f.header.stamp.sec for f in client.features] == [1000, 1030]


def test_the_device_worker_survives_any_failure(ros):
    class Failing(ImageEncoder):
        def __init__(self):
            super().__init__(PLACEHOLDER)
            self.calls = 0

        def encode(self, rgb):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("encoder exploded")
            return super().encode(rgb)

    device = ros.add(
        DeviceNode(encoder=Failing(), context=ros.context, parameter_overrides=_overrides(max_rate_hz=100.0))
    )
    client = Client(ros)
    wait_for(lambda: device._subs["front"].get_publisher_count() > 0)
    client.image(synthetic_frame(0, 8, 8), sec=1)
    wait_for(lambda: device.counters.snapshot()["encode_errors"] == 1)
    publish = device._pub.publish
    device._pub.publish = lambda msg: (_ for _ in ()).throw(RuntimeError("publisher broke"))
    client.image(synthetic_frame(1, 8, 8), sec=2)
    wait_for(lambda: device.counters.snapshot()["internal_errors"] == 1)
    device._pub.publish = publish
    client.image(synthetic_frame(2, 8, 8), sec=3)
    wait_for(lambda: client.features and client.features[-1].header.stamp.sec == 3)
    assert device._worker.is_alive()
