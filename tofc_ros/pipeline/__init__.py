"""What the nodes call, with no rclpy: frame encoders (device side), answerers and question pairing (server side)."""
