"""The debug overlay: every patch of every tile tinted by its cluster where it came from in the frame, centres
marked; and the device node publishing it on debug/image for a real TOFC frame."""

from __future__ import annotations

import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from tofc_ros.backbones import load_device_half
from tofc_ros.backbones.spec import BackboneSpec
from tofc_ros.backbones.tiling import patch_boxes
from tofc_ros.backbones.tiny import tiny_config
from tofc_ros.codec import load_codec
from tofc_ros.nodes.demo_client import synthetic_frame
from tofc_ros.nodes.device_node import DeviceNode
from tofc_ros.pipeline.encoder import FeatureEncoder
from tofc_ros.pipeline.overlay import _PALETTE, cluster_overlay

from conftest import wait_for
from test_ros_nodes import Client


def test_each_patch_carries_its_clusters_colour_in_the_right_panel():
    spec = BackboneSpec.from_config(tiny_config("onevision", vocab_size=32))
    h, w = 480, 640
    rgb = np.zeros((h, w, 3), np.uint8)
    t, n = spec.num_tiles(spec.tile_grid((h, w))), spec.tokens_per_tile
    assignment = np.tile(np.arange(n) % 3, (t, 1))  # three clusters, interleaved
    centres = np.zeros((t, 3), np.int64)  # token 0 is every cluster's centre (fine for drawing)
    out = cluster_overlay(rgb, spec, assignment, centres)
    assert out.shape == (h, 2 * w + 8, 3) and out.dtype == np.uint8
    boxes = patch_boxes(spec, (h, w))
    for tile, panel in ((1, out[:, :w]), (0, out[:, w + 8 :])):
        k = 400  # a patch far from token 0's centre mark
        y0, x0, y1, x1 = boxes[tile, k]
        y, x = int((y0 + y1) / 2), int((x0 + x1) / 2)
        np.testing.assert_allclose(panel[y, x], np.round(0.45 * _PALETTE[k % 3]), atol=1)
    with pytest.raises(ValueError, match="does not fit"):
        cluster_overlay(rgb, spec, assignment[:2], centres[:2])


def test_the_device_publishes_the_overlay_of_the_frame_it_encoded(ros, tiny_model_dir, tiny_codec_path):
    device = ros.add(
        DeviceNode(
            context=ros.context,
            parameter_overrides=[
                Parameter("codec", value="tofc"),
                Parameter("model_path", value=str(tiny_model_dir)),
                Parameter("codec_path", value=str(tiny_codec_path)),
                Parameter("n_clusters", value=8),
                Parameter("debug_image", value=True),
                Parameter("max_rate_hz", value=50.0),
            ],
        )
    )
    client = Client(ros)
    overlays = []
    client.node.create_subscription(
        Image, "debug/image", overlays.append, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    )
    wait_for(lambda: device._subs["front"].get_publisher_count() and client.node.count_publishers("debug/image"))
    rgb = synthetic_frame(4, 300, 500)
    client.image(rgb, sec=77)
    msg = wait_for(lambda: overlays and overlays[0], timeout=60)
    assert msg.header.stamp.sec == 77 and (msg.height, msg.width, msg.encoding) == (300, 1008, "rgb8")
    # The same frame encoded directly gives the same clusters, hence the same picture.
    encoder = FeatureEncoder(load_device_half(tiny_model_dir), load_codec(str(tiny_codec_path)), 8, keep_clusters=True)
    expected = cluster_overlay(rgb, encoder.device_half.spec, *encoder.encode(rgb).clusters)
    assert np.array_equal(np.frombuffer(bytes(msg.data), np.uint8).reshape(300, 1008, 3), expected)
