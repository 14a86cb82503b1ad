"""Data sets as (image, questions, answers) groups, shared by training and evaluation (no rclpy, no model code).

    easyvqa   the easy-vqa wheel's 64x64 images and questions (the small sample)
    scenes    camera-resolution scenes: easy-vqa shapes pasted on photos that ship inside PyPI wheels

Everything is generated or read offline from files inside installed packages: nothing is downloaded. Submodules are
not imported here, so that ``python -m tofc_ros.data.scenes`` runs its module once.
"""
