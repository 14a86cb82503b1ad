"""The generated tofc_msgs types travel between two nodes through real rclpy with every field intact."""

from __future__ import annotations

import os

from rclpy.qos import QoSProfile, ReliabilityPolicy

from tofc_msgs.msg import Answer, CompressedFeatures, Question

from conftest import wait_for

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _features() -> CompressedFeatures:
    m = CompressedFeatures()
    m.header.stamp.sec, m.header.stamp.nanosec = 1_700_000_000, 123_456_789
    m.header.frame_id = "front_optical_frame"
    m.camera = "front"
    m.sequence = 2**40 + 7
    m.format = "tofc/1"
    m.payload = os.urandom(70_000)  # larger than one UDP datagram: fragmentation must keep every byte
    m.vision_ms, m.merge_ms, m.encode_ms, m.device_ms = 1.5, 2.25, 3.125, 7.0
    m.sent.sec, m.sent.nanosec = 1_700_000_001, 5
    return m


def _question() -> Question:
    q = Question(question_id="q-1", text="What shape is red? ünïcode ✓", camera="front", timeout_s=2.5)
    q.header.stamp.sec = 12
    q.image_stamp.sec, q.image_stamp.nanosec = 1_700_000_000, 123_456_789
    return q


def _answer() -> Answer:
    a = Answer(
        question_id="q-1",
        status=Answer.STATUS_MODEL_MISMATCH,
        error="fingerprint differs",
        text="",
        camera="front",
        format="tofc/1",
        payload_bytes=4242,
        device_ms=1.0,
        transfer_ms=2.0,
        wait_ms=3.0,
        server_ms=4.0,
        total_ms=10.0,
    )
    a.image_stamp.sec = 99
    return a


def _fields(msg) -> dict:
    out = {}
    for name in msg.get_fields_and_field_types():
        value = getattr(msg, name)
        if hasattr(value, "get_fields_and_field_types"):
            value = _fields(value)
        elif not isinstance(value, (str, int, float)):
            value = bytes(value)
        out[name] = value
    return out


def test_every_field_survives_a_round_trip_between_nodes(ros):
    sender = ros.add(ros_node(ros, "sender"))
    receiver = ros.add(ros_node(ros, "receiver"))
    got = {}
    for msg_type, topic, make in (
        (CompressedFeatures, "features", _features),
        (Question, "questions", _question),
        (Answer, "answers", _answer),
    ):
        receiver.create_subscription(msg_type, topic, lambda m, t=topic: got.setdefault(t, m), RELIABLE)
        pub = sender.create_publisher(msg_type, topic, RELIABLE)
        wait_for(lambda p=pub: p.get_subscription_count() > 0)
        sent = make()
        pub.publish(sent)
        received = wait_for(lambda t=topic: got.get(t))
        assert _fields(received) == _fields(sent)


def test_the_status_enum_mirrors_the_answer_constants_one_to_one():
    from tofc_ros.eval.replay.typestore import ANSWER, typestore
    from tofc_ros.pipeline.records import Status

    generated = {k[len("STATUS_") :]: v for k, v in vars(Answer).items() if k.startswith("STATUS_")}
    assert generated == {s.name: s.value for s in Status}
    bag_type = typestore().types[ANSWER]  # the rosbags view of the same .msg file
    assert {k[len("STATUS_") :]: getattr(bag_type, k) for k in dir(bag_type) if k.startswith("STATUS_")} == generated


def test_compressed_features_carries_routing_and_timing_only():
    # Everything else a decoder needs is in the payload (the frame contract): no second copy to disagree with.
    assert set(CompressedFeatures.get_fields_and_field_types()) == {
        "header",
        "camera",
        "sequence",
        "format",
        "payload",
        "vision_ms",
        "merge_ms",
        "encode_ms",
        "device_ms",
        "sent",
    }


def ros_node(ros, name):
    from rclpy.node import Node

    return Node(name, context=ros.context)


def test_a_questions_wait_is_bounded_whatever_the_wire_says():
    # timeout_s is a float32 on the wire: inf, NaN and huge values must neither overflow the clock nor wait forever.
    from tofc_msgs.action import Ask
    from tofc_ros.nodes.adapters import goal_request, request
    from tofc_ros.pipeline.records import MAX_TIMEOUT_S

    received = 5_000_000_000
    cases = {
        float("inf"): MAX_TIMEOUT_S,
        1e30: MAX_TIMEOUT_S,
        float("nan"): 2.0,
        -1.0: 2.0,
        0.0: 2.0,
        0.25: 0.25,
    }
    for timeout_s, waited_s in cases.items():
        q = Question(question_id="q", text="what?", timeout_s=timeout_s)
        g = Ask.Goal(text="what?", timeout_s=timeout_s)
        for r in (request(q, received, "front", 2.0), goal_request(g, "g", received, "front", 2.0)):
            assert r.deadline_ns == received + int(waited_s * 1e9), timeout_s
