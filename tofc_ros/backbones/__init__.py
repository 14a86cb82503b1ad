"""The device and server halves of Hugging Face LLaVA models (no rclpy)."""
