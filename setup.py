"""ament_python package tofc_ros (the interfaces are the separate CMake package tofc_msgs, from msg/)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "tofc_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    # Data a ROS install finds through the ament index: `ros2 launch tofc_ros <file>`, find-pkg-share.
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.xml") + glob("launch/*.launch.yaml")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/msg", glob("msg/*.msg")),
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
            "launch = tofc_ros.launcher.cli:main",
        ],
    },
)
