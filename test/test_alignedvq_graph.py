"""AlignedVQ in a live graph (real rclpy, generated messages): the device node cut inside the vision tower, the
server node running the rest of it; and a server that holds no tail for that split answers MODEL_MISMATCH."""

from __future__ import annotations

import pytest
import torch
from rclpy.parameter import Parameter

from tofc_msgs.msg import Answer
from tofc_ros.backbones import load_device_half
from tofc_ros.codec.aligned_vq import AlignedVQ, AlignedVQCodec, AlignedVQConfig, save_aligned_vq
from tofc_ros.nodes.demo_client import synthetic_frame
from tofc_ros.nodes.device_node import DeviceNode
from tofc_ros.nodes.server_node import ServerNode
from tofc_ros.pipeline.encoder import FeatureEncoder

from conftest import wait_for
from test_ros_nodes import Client


@pytest.fixture(scope="module")
def avq_path(tiny_model_dir, tmp_path_factory):
    """A codec fitted (k-means, priors) to the tiny model's hidden state after layer 1, merging to 8 tokens."""
    device = load_device_half(tiny_model_dir, split_layer=1)
    with torch.no_grad():
        h = torch.cat([device.encode_image(synthetic_frame(i, 64, 64)).features.reshape(-1, 64) for i in range(3)])
    model = AlignedVQ(AlignedVQConfig(d=64, split_layer=1, groups=4, stages=2, codebook_size=16, n_clusters=8))
    model.init_from(h, iters=3, seed=0)
    model.fit_priors(h)
    path = tmp_path_factory.mktemp("avq") / "alignedvq.safetensors"
    save_aligned_vq(model, path)
    return path


def _params(**values):
    return [Parameter(k, value=v) for k, v in values.items()]


def test_device_and_server_nodes_answer_through_the_split(ros, tiny_model_dir, avq_path):
    model = str(tiny_model_dir)
    device = ros.add(
        DeviceNode(
            context=ros.context,
            parameter_overrides=_params(
                model_path=model, codec="alignedvq", alignedvq_path=str(avq_path), max_rate_hz=50.0
            ),
        )
    )
    ros.add(
        ServerNode(
            context=ros.context,
            parameter_overrides=_params(
                model_path=model, codec_path="", alignedvq_path=str(avq_path), max_new_tokens=3
            ),
        )
    )
    client = Client(ros)
    wait_for(lambda: client.images.get_subscription_count() and client.questions.get_subscription_count())
    wait_for(lambda: device._subs["front"].get_publisher_count() > 0)
    rgb = synthetic_frame(5, 64, 64)
    wait_for(lambda: (client.image(rgb, sec=7), [f for f in client.features if f.header.stamp.sec == 7])[1])
    feature = next(f for f in client.features if f.header.stamp.sec == 7)
    assert feature.format == "alignedvq/1"
    client.ask("q1", sec=7, timeout_s=60.0)
    answer = client.answer("q1", timeout=60)
    assert answer.status == Answer.STATUS_OK, answer.error
    assert answer.format == "alignedvq/1" and answer.payload_bytes == len(feature.payload)
    assert not client.duplicates


def test_a_server_without_the_tail_answers_model_mismatch(ros, tiny_model_dir, avq_path):
    ros.add(
        ServerNode(
            context=ros.context,
            parameter_overrides=_params(model_path=str(tiny_model_dir), codec_path="", max_new_tokens=2),
        )
    )
    client = Client(ros)
    wait_for(lambda: client.raw_features.get_subscription_count() and client.questions.get_subscription_count())
    codec = AlignedVQCodec(path=avq_path)
    encoder = FeatureEncoder(load_device_half(tiny_model_dir, split_layer=1), codec, codec.n_clusters)
    client.send_features(encoder.encode(synthetic_frame(1, 64, 64)).payload, sec=3)
    client.ask("q", sec=3, timeout_s=10.0)
    answer = client.answer("q", timeout=30)
    assert answer.status == Answer.STATUS_MODEL_MISMATCH
    assert "alignedvq/1" in answer.error  # it holds no codebooks (and no tail) for this payload
