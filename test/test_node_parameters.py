"""Every parameter a node declares is read by that node: its config object's attribute reads are traced while the
node starts and handles a message of each kind (the anti-pattern this guards against: configuration declared, then
ignored). A parameter that matters only in one mode is read in a scenario of that mode."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from pathlib import Path

import pytest
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

import tofc_ros
from tofc_ros.config import DemoClientConfig, DeviceConfig, ReplayConfig, ServerConfig, UplinkConfig
from tofc_ros.nodes.demo_client import DemoClient, synthetic_frame
from tofc_ros.nodes.device_node import DeviceNode
from tofc_ros.nodes.replay_node import ReplayNode
from tofc_ros.nodes.server_node import ServerNode
from tofc_ros.nodes.uplink_node import UplinkNode

from conftest import wait_for
from test_ros_nodes import Client
from test_server_action import AskClient

PACKAGE = Path(tofc_ros.__file__).resolve().parent
CONFIG_MODULE = PACKAGE / "config.py"


@contextlib.contextmanager
def traced(config_cls):
    """Record the names of config fields read from outside tofc_ros/config.py (validation reads them all)."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    reads: set[str] = set()

    def spy(self, name):
        if name in names:
            caller = Path(sys._getframe(1).f_code.co_filename).resolve()
            if caller.is_relative_to(PACKAGE) and caller != CONFIG_MODULE:
                reads.add(name)
        return object.__getattribute__(self, name)

    config_cls.__getattribute__ = spy
    try:
        yield reads
    finally:
        del config_cls.__getattribute__


def _params(**values):
    return [Parameter(k, value=v) for k, v in values.items()]


def _unread(config_cls, reads):
    return sorted({f.name for f in dataclasses.fields(config_cls)} - reads)


def test_the_device_node_reads_every_parameter(ros, tiny_model_dir, tiny_codec_path, tmp_path):
    from tofc_msgs.msg import Answer, Question
    from tofc_ros.codec import load_codec
    from tofc_ros.codec.points import OperatingPoint, OperatingPoints

    bundle = tmp_path / "points.safetensors"
    OperatingPoints([OperatingPoint("t8", "tofc/1", 8, learned=0)], [load_codec(str(tiny_codec_path))]).save(bundle)
    with traced(DeviceConfig) as reads:
        client = Client(ros)
        # TOFC, continuous: the model, codec and merging parameters; a camera frame.
        device = ros.add(
            DeviceNode(
                context=ros.context,
                parameter_overrides=_params(
                    codec="tofc", model_path=str(tiny_model_dir), codec_path=str(tiny_codec_path), max_rate_hz=50.0
                ),
            )
        )
        wait_for(lambda: device._subs["front"].get_publisher_count())
        client.image(synthetic_frame(0, 32, 32), sec=1)
        wait_for(lambda: client.features, timeout=60)
        # AlignedVQ: its codebooks file (the committed fixture: d = 64, split after layer 1) names the split.
        avq = Path(__file__).parent / "fixtures" / "alignedvq_d64_g4r2k16.safetensors"
        ros.add(
            DeviceNode(
                context=ros.context,
                namespace="avq",
                parameter_overrides=_params(codec="alignedvq", model_path=str(tiny_model_dir), alignedvq_path=str(avq)),
            )
        )
        # Placeholder, on demand: the history, the questions subscription, the stamp tolerance.
        on_demand = ros.add(
            DeviceNode(
                context=ros.context,
                namespace="od",
                parameter_overrides=_params(codec="placeholder-zstd", mode="on_demand"),
            )
        )
        on_demand._on_question(type("Q", (), {"camera": "", "image_stamp": type("T", (), {"sec": 0, "nanosec": 0})}))
        # Adaptive: the bundle, the policy's parameters, the answers subscription; a question and an answer.
        adaptive = ros.add(
            DeviceNode(
                context=ros.context,
                namespace="ad",
                parameter_overrides=_params(
                    mode="adaptive", model_path=str(tiny_model_dir), operating_points=str(bundle)
                ),
            )
        )
        adaptive._on_question(Question(camera="front"))
        adaptive._on_answer(Answer(camera="front", status=Answer.STATUS_OK, transfer_ms=5.0, server_ms=3.0))
        # Two-stage: the crops' default area and detail.
        ros.add(
            DeviceNode(
                context=ros.context,
                namespace="ts",
                parameter_overrides=_params(
                    model_path=str(tiny_model_dir), codec_path=str(tiny_codec_path), two_stage=True
                ),
            )
        )
    assert _unread(DeviceConfig, reads) == []


def test_the_server_node_reads_every_parameter(ros, tiny_model_dir, tiny_codec_path):
    with traced(ServerConfig) as reads:
        server = ros.add(
            ServerNode(
                context=ros.context,
                parameter_overrides=_params(
                    answerer="model", model_path=str(tiny_model_dir), codec_path=str(tiny_codec_path)
                ),
            )
        )
        client = Client(ros)
        wait_for(lambda: client.questions.get_subscription_count() and server.count_publishers("features"))
        client.send_features(b"not a payload" * 8, sec=1, fmt="tofc/1")
        wait_for(lambda: server.core.cached_frames)
        q = __import__("tofc_msgs.msg", fromlist=["Question"]).Question(question_id="q", text="?")  # camera, timeout 0
        q.image_stamp.sec = 1
        client.questions.publish(q)
        client.answer("q")
        # The Ask action: a goal about its own picture (the image conversion's limit; batching's parameters).
        asker = AskClient(ros)
        image = Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(12))
        asker.result(asker.send("?", image=image))
        # Two-stage: the threshold, the wait and what the detail requests ask for.
        ros.add(
            ServerNode(
                context=ros.context,
                namespace="ts",
                parameter_overrides=_params(model_path=str(tiny_model_dir), codec_path="", two_stage=True),
            )
        )
    assert _unread(ServerConfig, reads) == []


def test_the_uplink_node_reads_every_parameter(ros):
    with traced(UplinkConfig) as reads:
        ros.add(UplinkNode(context=ros.context))
    assert _unread(UplinkConfig, reads) == []


def test_the_replay_node_reads_every_parameter(ros, tmp_path):
    from tofc_ros.eval.replay.messages import features_cdr
    from tofc_ros.eval.replay.sample import write_sample_bag

    bag, _, _ = write_sample_bag(tmp_path / "in.mcap", n_images=1, questions_per_image=1)
    with traced(ReplayConfig) as reads:
        replay = ros.add(
            ReplayNode(context=ros.context, parameter_overrides=_params(bag=str(bag), output_dir=str(tmp_path / "out")))
        )
        replay._on_features(features_cdr("f", "front", 1, 0, "fp16/1", b""))
        overlay = Image(height=1, width=1, encoding="rgb8", step=3, data=b"abc")
        overlay.header.stamp.sec, overlay.header.stamp.nanosec = divmod(replay.questions[0].image_stamp_ns, 10**9)
        replay._on_overlay(overlay)
        replay.finish()
    assert _unread(ReplayConfig, reads) == []


def test_the_demo_client_reads_every_parameter(ros):
    with traced(DemoClientConfig) as reads:
        ros.add(DemoClient(context=ros.context))
    assert _unread(DemoClientConfig, reads) == []


@pytest.mark.parametrize("config_cls", [DeviceConfig, ServerConfig, UplinkConfig, ReplayConfig, DemoClientConfig])
def test_the_tracer_sees_reads_and_would_report_an_unread_field(config_cls):
    with traced(config_cls) as reads:
        cfg = config_cls()  # validation alone reads every field, and is not counted
    assert reads == set()
    first = dataclasses.fields(config_cls)[0].name
    with traced(config_cls) as reads:
        getattr(cfg, first)  # this test file is not under tofc_ros/: not counted either
    assert reads == set() and len(_unread(config_cls, reads)) == len(dataclasses.fields(config_cls))
