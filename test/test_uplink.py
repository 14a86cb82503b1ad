"""Uplink emulation: the link model's arithmetic, and the relay node delaying real messages by rate and latency."""

from __future__ import annotations

import time

import pytest
from conftest import wait_for
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from tofc_msgs.msg import CompressedFeatures

from tofc_ros.nodes.uplink_node import UplinkNode
from tofc_ros.pipeline.uplink import Link


def test_link_serialises_messages_and_bounds_the_backlog():
    link = Link(rate_mbps=1.0, latency_s=0.1, max_backlog_s=0.5)
    assert link.transmit(125_000, now=0.0) == pytest.approx(1.1)  # 1 Mbit at 1 Mbit/s + latency
    assert link.transmit(125_000, now=0.4) is None  # would wait 0.6 s behind the first: dropped
    assert link.transmit(12_500, now=0.6) == pytest.approx(1.0 + 0.1 + 0.1)  # waits until 1.0, then 0.1 s
    with pytest.raises(ValueError):
        Link(rate_mbps=0)


def test_relay_delays_by_size_over_rate_plus_latency(ros):
    ros.add(UplinkNode(context=ros.context, parameter_overrides=[
        Parameter("rate_mbps", value=0.4), Parameter("latency_ms", value=100)]))
    probe = ros.add(Node("uplink_probe", context=ros.context))
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub = probe.create_publisher(CompressedFeatures, "features_in", qos)
    got = []
    probe.create_subscription(CompressedFeatures, "features_out", lambda m: got.append((time.monotonic(), m)), qos)
    wait_for(lambda: pub.get_subscription_count() and probe.count_subscribers("features_out"))
    sent = time.monotonic()
    for i in range(2):
        msg = CompressedFeatures(camera=f"c{i}")
        msg.payload = bytes(25_000)  # 0.5 s each at 0.4 Mbit/s
        pub.publish(msg)
    wait_for(lambda: len(got) == 2, timeout=10)
    assert [m.camera for _, m in got] == ["c0", "c1"] and len(got[1][1].payload) == 25_000
    assert 0.55 <= got[0][0] - sent < 1.2  # 0.5 s on the wire + 0.1 s latency
    assert 1.05 <= got[1][0] - sent < 1.8  # waited for the first to leave the link
