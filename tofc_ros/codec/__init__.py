"""Pure torch/numpy feature codecs (no rclpy): DPC-KNN merging, entropy models, bitstream, baselines."""
