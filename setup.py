"""ament_python package tofc_ros (the interfaces are the separate CMake package tofc_msgs, from msg/)."""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "tofc_ros"


def _tree(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries installing `folder` (nested) under share/tofc_ros/."""
    entries = []
    for root, _, files in sorted(os.walk(folder)):
        if files:
            entries.append((f"share/{PACKAGE}/{root}", sorted(os.path.join(root, f) for f in files)))
    return entries


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    # Data a ROS install finds through the ament index: `ros2 launch tofc_ros <file>`, find-pkg-share.
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.xml") + glob("launch/*.launch.yaml")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.txt")),
        (f"share/{PACKAGE}/msg", glob("msg/*.msg")),
        # The bundled sample bag and default model: package://tofc_ros/... parameters resolve to these.
        (f"share/{PACKAGE}/data", glob("data/*")),
        *_tree("models"),
    ],
    package_data={PACKAGE: ["py.typed"]},
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="tofc_ros developers",
    maintainer_email="tofc-ros@example.org",
    description="Task-oriented feature compression for LLaVA co-inference over ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "device_node = tofc_ros.nodes.device_node:main",
            "server_node = tofc_ros.nodes.server_node:main",
            "demo_client = tofc_ros.nodes.demo_client:main",
            "replay_node = tofc_ros.nodes.replay_node:main",
            "uplink_node = tofc_ros.nodes.uplink_node:main",
            "launch = tofc_ros.launcher.cli:main",
            "tofc = tofc_ros.cli:main",
        ],
    },
)
