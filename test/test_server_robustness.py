"""Every question gets exactly one Answer whatever raises where: an exception injected at each stage of the real
server (decode, projector, generate, publish) answers that question INTERNAL_ERROR and the next ones normally."""

from __future__ import annotations

import pytest
from rclpy.parameter import Parameter

from tofc_msgs.msg import Answer
from tofc_ros.backbones import load_device_half
from tofc_ros.codec import load_codec
from tofc_ros.nodes.demo_client import synthetic_frame
from tofc_ros.nodes.server_node import ServerNode
from tofc_ros.pipeline.encoder import FeatureEncoder

from conftest import wait_for
from test_ros_nodes import Client


@pytest.fixture(scope="module")
def payload(tiny_model_dir, tiny_codec_path):
    encoder = FeatureEncoder(load_device_half(tiny_model_dir), load_codec(str(tiny_codec_path)), n_clusters=4)
    return encoder.encode(synthetic_frame(0, 64, 64)).payload


def _once(obj, name: str, error: Exception):
    """Make ``obj.name`` raise ``error`` on its next call only."""
    original = getattr(obj, name)

    def broken(*args, **kwargs):
        setattr(obj, name, original)
        raise error

    setattr(obj, name, broken)


@pytest.mark.parametrize("stage", ["decode", "projector", "generate", "publish"])
def test_an_exception_at_any_stage_is_one_internal_error_and_the_worker_goes_on(
    ros, tiny_model_dir, tiny_codec_path, payload, stage
):
    server = ros.add(
        ServerNode(
            context=ros.context,
            parameter_overrides=[
                Parameter("answerer", value="model"),
                Parameter("model_path", value=str(tiny_model_dir)),
                Parameter("codec_path", value=str(tiny_codec_path)),
                Parameter("max_new_tokens", value=2),
            ],
        )
    )
    client = Client(ros)
    wait_for(lambda: client.questions.get_subscription_count() and server.count_publishers("features"))
    client.send_features(payload, sec=1)
    wait_for(lambda: server.core._pairing.cache.get("front", 1_000_000_000))
    half = server.core.answerer.server_half
    target = {
        "decode": (server.core.decoder, "decode"),
        "projector": (half.projector, "forward"),
        "generate": (half.language_model, "generate"),
        "publish": (server._answers, "publish"),
    }[stage]
    _once(*target, RuntimeError(f"{stage} failed"))
    client.ask("broken", sec=1, timeout_s=30)
    broken = client.answer("broken", timeout=60)
    assert broken.status == Answer.STATUS_INTERNAL_ERROR and f"{stage} failed" in broken.error
    for qid in ("next-1", "next-2"):
        client.ask(qid, sec=1, timeout_s=30)
        assert client.answer(qid, timeout=60).status == Answer.STATUS_OK
    assert client.duplicates == [] and server._worker.is_alive() and server.core.in_flight == 0
