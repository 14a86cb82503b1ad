"""Two-stage answering in a live graph (real rclpy, generated messages, the tiny real model): refined, timed out with
no device to ask, refused by the device; every question gets exactly one Answer; bad requests and replies are
refused with a clear error on both sides."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from rclpy.parameter import Parameter

from tofc_msgs.msg import Answer, RefinedFeatures, RefineRequest
from tofc_ros.backbones import load_device_half
from tofc_ros.codec import load_codec
from tofc_ros.codec.bitstream import peek_header
from tofc_ros.nodes.demo_client import synthetic_frame
from tofc_ros.nodes.device_node import DeviceNode
from tofc_ros.nodes.server_node import ServerNode
from tofc_ros.pipeline.encoder import FeatureEncoder

from conftest import wait_for
from test_ros_nodes import RELIABLE, Client


def _params(**values):
    return [Parameter(k, value=v) for k, v in values.items()]


class Refinements:
    """The client's view of the refinement topics: what the server asked, what the device replied."""

    def __init__(self, client: Client) -> None:
        node = client.node
        self.requests: list[RefineRequest] = []
        self.replies: list[RefinedFeatures] = []
        self._lock = threading.Lock()
        self.to_device = node.create_publisher(RefineRequest, "refine_requests", RELIABLE)
        self.to_server = node.create_publisher(RefinedFeatures, "refined_features", RELIABLE)
        node.create_subscription(RefineRequest, "refine_requests", self._on_request, RELIABLE)
        node.create_subscription(RefinedFeatures, "refined_features", self._on_reply, RELIABLE)

    def _on_request(self, msg):
        with self._lock:
            self.requests.append(msg)

    def _on_reply(self, msg):
        with self._lock:
            self.replies.append(msg)

    def reply_to(self, qid: str, timeout: float = 30.0) -> RefinedFeatures:
        return wait_for(lambda: next((r for r in self.replies if r.question_id == qid), None), timeout)


def _server(ros, model, codec, **extra):
    values = dict(model_path=model, codec_path=codec, max_new_tokens=3, two_stage=True, refine_threshold=0.0)
    values.update(extra)
    return ros.add(ServerNode(context=ros.context, parameter_overrides=_params(**values)))


def _device(ros, model, codec, **extra):
    values = dict(model_path=model, codec_path=codec, n_clusters=3, max_rate_hz=50.0, two_stage=True,
                  refine_n_clusters=5, refine_max_area=0.2)  # fmt: skip
    values.update(extra)
    return ros.add(DeviceNode(context=ros.context, parameter_overrides=_params(**values)))


def _features_for(client, device, rgb, sec):
    wait_for(lambda: device._subs["front"].get_publisher_count() > 0)
    wait_for(lambda: (client.image(rgb, sec=sec), [f for f in client.features if f.header.stamp.sec == sec])[1])
    return next(f for f in client.features if f.header.stamp.sec == sec)


def test_an_unsure_answer_is_refined_by_the_devices_crop(ros, tiny_model_dir, tiny_codec_path):
    model, codec = str(tiny_model_dir), str(tiny_codec_path)
    device = _device(ros, model, codec)
    server = _server(ros, model, codec, refine_timeout_s=60.0)
    client = Client(ros)
    seen = Refinements(client)
    wait_for(lambda: client.questions.get_subscription_count() and seen.to_device.get_subscription_count())
    first = _features_for(client, device, synthetic_frame(3, 480, 800), sec=9)
    client.ask("q", sec=9, timeout_s=120.0)
    answer = client.answer("q", timeout=120)
    assert answer.status == Answer.STATUS_OK, answer.error
    assert answer.refinement == Answer.REFINE_DONE and answer.uncertainty >= 0
    (request,) = [r for r in seen.requests if r.question_id == "q"]
    reply = seen.reply_to("q")
    assert reply.status == RefinedFeatures.STATUS_OK and reply.features.format == "tofc/1"
    tiles, per_tile, _ = peek_header(bytes(first.payload)).feature_shape
    assert per_tile == 3 and len(request.token_weights) == tiles * per_tile  # one weight per first-pass token
    assert answer.payload_bytes == len(first.payload)
    assert answer.refine_payload_bytes == len(reply.features.payload) > 0
    assert 0 < reply.width * reply.height <= 0.2 * 480 * 800 + 1 and reply.x + reply.width <= 800
    wait_for(lambda: server.counters.snapshot()["refined"] == 1)
    assert not client.duplicates and device.counters.snapshot()["refine_replies"] == 1


def test_no_device_to_ask_times_out_with_the_first_answer_and_a_refusal_fails_it(ros, tiny_model_dir, tiny_codec_path):
    model, codec = str(tiny_model_dir), str(tiny_codec_path)
    server = _server(ros, model, codec, refine_timeout_s=0.5)
    client = Client(ros)
    seen = Refinements(client)
    wait_for(lambda: client.raw_features.get_subscription_count() and client.questions.get_subscription_count())
    encoder = FeatureEncoder(load_device_half(model), load_codec(codec), 3)
    client.send_features(encoder.encode(synthetic_frame(1, 480, 800)).payload, sec=4)
    client.ask("gone", sec=4, timeout_s=60.0)
    answer = client.answer("gone", timeout=60)  # nobody serves refine_requests: the first answer, flagged
    assert (answer.status, answer.refinement) == (Answer.STATUS_OK, Answer.REFINE_TIMED_OUT)
    assert answer.text and "in time" in answer.error and answer.refine_payload_bytes == 0

    client.ask("refused", sec=4, timeout_s=60.0)
    request = wait_for(lambda: next((r for r in seen.requests if r.question_id == "refused"), None), 60)
    refusal = RefinedFeatures(question_id="refused", camera=request.camera, status=RefinedFeatures.STATUS_REFUSED,
                              error="no frame stamped 4 s among the last 10")  # fmt: skip
    refusal.image_stamp = request.image_stamp
    seen.to_server.publish(refusal)
    answer = client.answer("refused", timeout=30)
    assert (answer.status, answer.refinement) == (Answer.STATUS_OK, Answer.REFINE_FAILED)
    assert "no frame stamped" in answer.error

    # A reply for a question nobody asked about is refused (counted, logged); it publishes no Answer.
    stray = RefinedFeatures(question_id="never-asked", camera="front", status=RefinedFeatures.STATUS_REFUSED)
    seen.to_server.publish(stray)
    wait_for(lambda: server.counters.snapshot()["refinements_refused"] == 1)
    assert "never-asked" in server.counters.last_error and "never-asked" not in client.answers
    assert not client.duplicates


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(x=700, y=0, width=200, height=100), "not inside"),
        (dict(sec=99), "no frame of camera 'front' stamped"),
        (dict(camera="rear"), "unknown camera 'rear'"),
        (dict(weights=np.ones(5, np.float32)), "5 token weights"),
        (dict(weights=np.zeros(0, np.float32)), "neither token weights nor a region"),
    ],
)
def test_the_device_refuses_bad_requests_with_one_reply_each(ros, tiny_model_dir, tiny_codec_path, change, message):
    device = _device(ros, str(tiny_model_dir), str(tiny_codec_path))
    client = Client(ros)
    seen = Refinements(client)
    wait_for(lambda: seen.to_device.get_subscription_count() and device._refined.get_subscription_count())
    _features_for(client, device, synthetic_frame(2, 480, 800), sec=5)
    request = RefineRequest(question_id="bad", camera=change.get("camera", "front"))
    request.image_stamp.sec = change.get("sec", 5)
    request.token_weights = change.get("weights", np.ones(7 * 3, np.float32))  # 800x480: a 2 x 3 grid + thumbnail
    request.x, request.y = change.get("x", 0), change.get("y", 0)
    request.width, request.height = change.get("width", 0), change.get("height", 0)
    seen.to_device.publish(request)
    reply = seen.reply_to("bad")
    assert reply.status == RefinedFeatures.STATUS_REFUSED and message in reply.error
    assert len(reply.features.payload) == 0 and device.counters.snapshot()["refine_refused"] == 1
    assert [r.question_id for r in seen.replies] == ["bad"]
