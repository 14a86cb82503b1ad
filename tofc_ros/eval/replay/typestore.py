"""The rosbags typestore: ROS 2 Jazzy's standard types plus tofc_msgs, registered from our own .msg files.

rosbags serialises CDR byte-for-byte like rclpy and derives the same message definition text and RIHS01 type hash
that ``ros2 bag record`` stores per connection, so bags written here replay with ``ros2 bag play`` and bags recorded
by ``ros2 bag`` read here. No rclpy import: this runs in offline tools and tests too.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

__all__ = [
    "IMAGE",
    "COMPRESSED_IMAGE",
    "QUESTION",
    "ANSWER",
    "FEATURES",
    "REFINE_REQUEST",
    "REFINED_FEATURES",
    "TOFC_TYPES",
    "msg_dir",
    "typestore",
]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
QUESTION = "tofc_msgs/msg/Question"
ANSWER = "tofc_msgs/msg/Answer"
FEATURES = "tofc_msgs/msg/CompressedFeatures"
REFINE_REQUEST = "tofc_msgs/msg/RefineRequest"
REFINED_FEATURES = "tofc_msgs/msg/RefinedFeatures"
TOFC_TYPES = (QUESTION, ANSWER, FEATURES, REFINE_REQUEST, REFINED_FEATURES)


def msg_dir() -> Path:
    """Where tofc_msgs' .msg files are: the installed interface package first, then this source checkout's msg/."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    candidates = [Path(p) / "share" / "tofc_msgs" / "msg" for p in prefixes]
    candidates.append(Path(__file__).resolve().parents[3] / "msg")
    for candidate in candidates:
        if all((candidate / f"{t.rsplit('/', 1)[1]}.msg").is_file() for t in TOFC_TYPES):
            return candidate
    raise FileNotFoundError(f"tofc_msgs .msg files not found in any of {[str(c) for c in candidates]}")


@functools.lru_cache(maxsize=1)
def typestore() -> Typestore:
    """Jazzy's typestore with tofc_msgs' messages added (cached)."""
    store = get_typestore(Stores.ROS2_JAZZY)
    folder = msg_dir()
    types = {}
    for name in TOFC_TYPES:
        types.update(get_types_from_msg((folder / f"{name.rsplit('/', 1)[1]}.msg").read_text(), name))
    store.register(types)
    return store
