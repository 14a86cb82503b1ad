"""Rosbag replay evaluation, pure part (no rclpy): bags, questions files, ground truth, the report.

The thin ROS shell is :mod:`tofc_ros.nodes.replay_node`; ``launch/replay.launch.xml`` runs it with the graph.

    bag: frames [+ questions]  --image, questions-->  device_node --features--> server_node
    questions file [+ truth]         (replay_node)                                    |
                                          ^  <--------------- answers ---------------+
                                          v
                     <output_dir>/answers (bag), report.json, report.md, *.png
"""

from tofc_ros.eval.replay.bags import BagError, BagQuestion, BagWriter, Frame, ReplayBag, iter_messages, read_replay_bag
from tofc_ros.eval.replay.questions import (
    QuestionsFile,
    is_correct,
    load_questions_file,
    normalise,
    questions_for,
    sidecar_path,
    write_questions_file,
)
from tofc_ros.eval.replay.report import REPORT_FILES, ReplayLog, build_report, markdown_summary, write_report

__all__ = [
    "BagError",
    "BagQuestion",
    "BagWriter",
    "Frame",
    "QuestionsFile",
    "REPORT_FILES",
    "ReplayBag",
    "ReplayLog",
    "build_report",
    "is_correct",
    "iter_messages",
    "load_questions_file",
    "markdown_summary",
    "normalise",
    "questions_for",
    "read_replay_bag",
    "sidecar_path",
    "write_questions_file",
    "write_report",
]
