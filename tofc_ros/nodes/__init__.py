"""Thin rclpy shells: message in → pure function (tofc_ros.pipeline, codec, backbones) → message out."""
