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
