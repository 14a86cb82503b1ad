"""Uplink emulation: the link model's arithmetic, and the relay node delaying real messages by rate and latency."""

from __future__ import annotations

import time

import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy

from tofc_msgs.msg import CompressedFeatures
from tofc_ros.nodes.entry import StartupError
from tofc_ros.nodes.parameters import qos
from tofc_ros.nodes.uplink_node import UplinkNode
from tofc_ros.pipeline.uplink import Link, RateTrace

from conftest import wait_for


def test_link_serialises_messages_and_bounds_the_backlog():
    link = Link(rate_mbps=1.0, latency_s=0.1, max_backlog_s=0.5)
    assert link.transmit(125_000, now=0.0) == pytest.approx(1.1)  # 1 Mbit at 1 Mbit/s + latency
    assert link.transmit(125_000, now=0.4) is None  # would wait 0.6 s behind the first: dropped
    assert link.transmit(12_500, now=0.6) == pytest.approx(1.0 + 0.1 + 0.1)  # waits until 1.0, then 0.1 s
    with pytest.raises(ValueError):
        Link(rate_mbps=0)


def test_relay_delays_by_size_over_rate_plus_latency(ros):
    node = ros.add(
        UplinkNode(
            context=ros.context,
            parameter_overrides=[Parameter("rate_mbps", value=0.4), Parameter("latency_ms", value=100)],
        )
    )
    scheduled = []  # (bytes, received at, due at) as the node asked its link model
    transmit = node._link.transmit

    def spy(size, now):
        due = transmit(size, now)
        scheduled.append((size, now, due))
        return due

    node._link.transmit = spy
    probe = ros.add(Node("uplink_probe", context=ros.context))
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub = probe.create_publisher(CompressedFeatures, "features_in", qos)
    got = []
    probe.create_subscription(CompressedFeatures, "features_out", lambda m: got.append((time.monotonic(), m)), qos)
    wait_for(lambda: pub.get_subscription_count() and probe.count_subscribers("features_out"))
    for i in range(2):
        msg = CompressedFeatures(camera=f"c{i}")
        msg.payload = bytes(25_000)  # 0.5 s each at 0.4 Mbit/s
        pub.publish(msg)
    wait_for(lambda: len(got) == 2, timeout=30)
    assert [m.camera for _, m in got] == ["c0", "c1"] and len(got[1][1].payload) == 25_000
    # The node schedules each whole serialised message (payload + CDR framing) on the link: the first after its
    # own time on the wire plus latency, the second behind it. No clock verdict: the link's arithmetic on the
    # times the node gave it, and delivery never before the scheduled time.
    (size0, t0, due0), (size1, t1, due1) = scheduled
    assert size0 == size1 > 25_000
    wire = size0 * 8 / 0.4e6
    assert due0 == pytest.approx(t0 + wire + 0.1)
    assert due1 == pytest.approx(max(t1, t0 + wire) + wire + 0.1)
    assert got[0][0] >= due0 and got[1][0] >= due1


@pytest.mark.parametrize("device_reliability", ["reliable", "best_effort"])
def test_every_device_qos_reaches_the_far_side(ros, device_reliability):
    ros.add(
        UplinkNode(
            context=ros.context,
            parameter_overrides=[Parameter("rate_mbps", value=100.0), Parameter("latency_ms", value=0.0)],
        )
    )
    probe = ros.add(Node("uplink_qos_probe", context=ros.context))
    pub = probe.create_publisher(CompressedFeatures, "features_in", qos(device_reliability, 10))
    got = []
    probe.create_subscription(CompressedFeatures, "features_out", got.append, qos("reliable", 10))
    wait_for(lambda: pub.get_subscription_count() and probe.count_subscribers("features_out"))
    wait_for(lambda: (pub.publish(CompressedFeatures(camera="x")), got)[1], timeout=10)  # best effort may drop one
    assert got[0].camera == "x"


def test_shutdown_joins_the_delivery_thread_with_messages_still_queued(ros):
    node = UplinkNode(context=ros.context, parameter_overrides=[Parameter("rate_mbps", value=0.001)])
    ros.add(node)
    node._on_message(bytes(1000))  # 8 s on a 1 kbit/s link: still queued at shutdown
    assert node._thread.is_alive() and len(node._queue) == 1
    ros.executor.remove_node(node)
    ros.nodes.remove(node)
    node.destroy_node()
    assert not node._thread.is_alive()  # joined: it can never publish after its publisher is gone


def test_rate_trace_parses_text_and_files_and_refuses_bad_ones(tmp_path):
    trace = RateTrace.parse("0:50, 30:2, 60:10, 90:0.5")
    assert trace.starts == (0.0, 30.0, 60.0, 90.0) and trace.rates == (50.0, 2.0, 10.0, 0.5)
    f = tmp_path / "trace.txt"
    f.write_text("# offset_s, rate_mbps\n0,50\n30, 2  # the cellular part\n", encoding="utf-8")
    assert RateTrace.parse(str(f)) == RateTrace((0.0, 30.0), (50.0, 2.0))
    for bad, fragment in [
        ("5:10", "starts at offset 0"),
        ("0:10, 20:5, 10:1", "must increase"),
        ("0:-1", ">= 0"),
        ("0:10:3", "not offset_s:rate_mbps"),
        ("0:fast", "not two numbers"),
        (str(tmp_path / "missing"), "neither"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            RateTrace.parse(bad)


def test_a_message_crossing_segments_leaves_at_each_segments_rate():
    link = Link(rate_mbps=1.0, latency_s=0.05, trace=RateTrace((0.0, 1.0, 3.0), (8.0, 0.0, 4.0)), origin=100.0)
    # 1.5 MB = 12 Mbit: 8 Mbit in the first second, nothing while dead (1 s .. 3 s), the last 4 Mbit in 1 s at 4
    assert link.transmit(1_500_000, now=100.0) == pytest.approx(104.0 + 0.05)
    assert link.rate_at(101.5) == 0.0 and link.rate_at(250.0) == 4.0
    # the next message waits behind it (3.5 s, within the 10 s backlog), then 4 Mbit at 4 Mbit/s
    assert link.transmit(500_000, now=100.5) == pytest.approx(105.0 + 0.05)
    dead = Link(rate_mbps=1.0, trace=RateTrace((0.0, 1.0), (1.0, 0.0)))
    assert dead.transmit(100_000, now=0.0) == pytest.approx(0.8)  # 0.8 Mbit fits in the live second
    assert dead.transmit(100_000, now=0.0) is None  # would need bits after the link died for ever: dropped


def test_relay_follows_its_rate_trace_and_reports_per_segment(ros):
    node = ros.add(
        UplinkNode(
            context=ros.context,
            parameter_overrides=[Parameter("rate_trace", value="0:1000, 3600:0.001"), Parameter("latency_ms", value=0)],
        )
    )
    assert node._link.trace.rates == (1000.0, 0.001)
    probe = ros.add(Node("uplink_trace_probe", context=ros.context))
    pub = probe.create_publisher(CompressedFeatures, "features_in", qos("reliable", 10))
    got = []
    probe.create_subscription(CompressedFeatures, "features_out", got.append, qos("reliable", 10))
    wait_for(lambda: pub.get_subscription_count() and probe.count_subscribers("features_out"))
    pub.publish(CompressedFeatures(camera="x", payload=bytes(1000)))
    wait_for(lambda: got)
    status = wait_for(lambda: node._status()["delivered_per_segment"].startswith("1 msgs"))  # trace starts at it
    assert status and node._status()["rate_mbps"] == 1000.0 and node._status()["segment"] == 0


def test_a_bad_rate_trace_stops_the_relay_with_a_clear_error(ros):
    with pytest.raises(StartupError, match="rate_trace.*must increase"):
        UplinkNode(context=ros.context, parameter_overrides=[Parameter("rate_trace", value="0:1, 0:2")])
