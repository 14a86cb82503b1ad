"""tofc_ros: task-oriented feature compression for LLaVA co-inference over ROS 2."""

__version__ = "0.1.0"
