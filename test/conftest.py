"""Test-wide ROS settings, applied before anything imports rclpy.

Discovery stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) and every pytest run gets its own
ROS_DOMAIN_ID, so parallel runs (two checkouts, CI beside a developer) never see each other's topics.
"""

from __future__ import annotations

import os
import sys

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
# Domain ids 0..101 are safe with the default port mapping; pid-derived unless the caller pins one.
os.environ.setdefault("TOFC_TEST_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ["ROS_DOMAIN_ID"] = os.environ["TOFC_TEST_DOMAIN_ID"]
# The package and its messages are installed into this interpreter's prefix (the venv); no sourcing needed.
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import threading
import time

import pytest


@pytest.fixture
def ros():
    """An initialised rclpy context and an executor spinning in the background; nodes added via `ros.add`."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    class _Ros:
        def __init__(self) -> None:
            self.context = rclpy.Context()
            rclpy.init(context=self.context)
            self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
            self.nodes = []
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()

        def _spin(self) -> None:
            while self.context.ok():
                try:
                    self.executor.spin_once(timeout_sec=0.05)
                except Exception:  # context shut down mid-spin
                    if self.context.ok():
                        raise

        def add(self, node):
            self.nodes.append(node)
            self.executor.add_node(node)
            return node

        def close(self) -> None:
            for node in reversed(self.nodes):
                self.executor.remove_node(node)
                node.destroy_node()
            rclpy.shutdown(context=self.context)
            self._thread.join(timeout=5)
            self.executor.shutdown()

    env = _Ros()
    try:
        yield env
    finally:
        env.close()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):
    """Poll `predicate` until it returns something truthy; fail the test with a clear message on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s: {getattr(predicate, '__name__', predicate)}")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny LLaVA-OneVision checkpoint (real classes, seed 0) in llava-hf layout."""
    from tofc_ros.backbones.tiny import save_tiny_model

    return save_tiny_model("onevision", tmp_path_factory.mktemp("tiny_ov") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_codec_path(tiny_model_dir, tmp_path_factory):
    """An updated (untrained, seeded) TOFC codec for the tiny model's feature dim, as .safetensors."""
    import torch
    from transformers import AutoConfig

    from tofc_ros.codec import HyperpriorConfig, SelectiveEntropyModel, save_model

    d = AutoConfig.from_pretrained(tiny_model_dir).vision_config.hidden_size
    torch.manual_seed(0)
    model = SelectiveEntropyModel(HyperpriorConfig(d=d, n_e=4))
    model.update()
    path = tmp_path_factory.mktemp("tiny_codec") / "tofc_codec.safetensors"
    save_model(model, path)
    return path


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """{kind: directory} of the two tiny checkpoints (OneVision, LLaVA-1.5; seed 0), built once per session."""
    from tofc_ros.backbones.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("tiny_llava")
    return {kind: save_tiny_model(kind, root / kind, seed=0) for kind in ("onevision", "llava15")}


@pytest.fixture(scope="session")
def references(tiny_dirs):
    """{kind: reference model} loaded with from_pretrained, the way a user of transformers would."""
    from transformers import LlavaForConditionalGeneration, LlavaOnevisionForConditionalGeneration

    classes = {"onevision": LlavaOnevisionForConditionalGeneration, "llava15": LlavaForConditionalGeneration}
    return {kind: classes[kind].from_pretrained(d).eval() for kind, d in tiny_dirs.items()}
