"""Data sets generated offline from files that ship inside PyPI wheels (no downloads): see ``tofc_ros.data.scenes``.

Pure: numpy and Pillow only (no rclpy, no torch). Submodules are not imported here, so that
``python -m tofc_ros.data.scenes`` runs its module once.
"""
