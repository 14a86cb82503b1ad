"""A runner for ROS 2 XML/YAML launch files, for installs without ``ros2 launch`` (launch, launch_ros).

Pure Python plus subprocess; it never imports rclpy. The same files run under ``ros2 launch`` on a
robot. ``load_launch_description`` resolves a file into a :class:`LaunchPlan` (inspectable, nothing
started); ``run`` starts it and manages shutdown. See :mod:`.actions` for the supported tags and
:mod:`.process_group` for signals and exit codes.
"""

from .actions import declared_arguments, load_launch_description
from .errors import LaunchError
from .plan import ArgumentDecl, LaunchPlan, NodeInfo, ProcessSpec
from .process_group import run

__all__ = [
    "ArgumentDecl",
    "LaunchError",
    "LaunchPlan",
    "NodeInfo",
    "ProcessSpec",
    "declared_arguments",
    "load_launch_description",
    "run",
]
