"""A robot's recordings as training data: a rosbag's camera frames + a questions file with answers → LLaVA JSON.

    bag (sensor_msgs/Image | CompressedImage [+ tofc_msgs/Question])  ┐
    questions file (replay format: question_id, text, image_stamp_ns, ┴─► <out>/<name>.json + <out>/images/*.png
                    answer) or the bag's sidecar <bag>.questions.jsonl       one record per asked-about frame: its
                                                                             questions as a multi-turn conversation

The same bags and questions files the replay evaluation plays (``replay.launch.xml``), read the same way
(``read_replay_bag``, ``questions_for``): each question is paired with the frame whose stamp it names, or else with
the newest frame recorded before it is asked, exactly as the device answers it live. Questions without a ground-truth
answer are skipped and counted. Pixels are decoded by the ``decode`` callable the caller passes (the command-line
tool passes ``nodes.images``' cv_bridge-equivalent conversion), so this module stays free of the node layer.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tofc_ros.data.llava_format import conversations, write_llava
from tofc_ros.eval.replay.bags import BagError, Frame, read_replay_bag
from tofc_ros.eval.replay.questions import load_questions_file, questions_for, sidecar_path

__all__ = ["BagConversion", "bag_to_llava"]


@dataclass(frozen=True)
class BagConversion:
    """What ``bag_to_llava`` wrote and skipped."""

    path: Path
    records: int
    questions: int
    without_answer: int
    without_frame: int


def bag_to_llava(
    bag: str | Path,
    out_dir: str | Path,
    decode: Callable[[Frame], np.ndarray],
    *,
    questions: str | Path | None = None,
    camera_topic: str | None = None,
    name: str = "data",
    max_turns: int | None = None,
    progress: bool = False,
) -> BagConversion:
    """Write LLaVA-format records from a bag's frames and the answered questions about them.

    Args:
        bag: rosbag2 directory or .mcap/.db3 file.
        out_dir: output folder (``<name>.json`` and ``images/``).
        decode: a recorded frame → uint8 RGB [H, W, 3].
        questions: a questions file with answers (default: the bag's sidecar).
        camera_topic: the camera topic (default: the bag's only one).
        max_turns: at most this many turns per record (a frame with more questions gets several records).

    Raises:
        BagError: an unreadable bag or ambiguous topic; FileNotFoundError: no questions file; ValueError: no question
            with an answer and a frame.
    """
    if not Path(bag).exists():
        raise BagError(f"bag {str(bag)!r} does not exist")
    qpath = Path(questions) if questions else sidecar_path(bag)
    if not qpath.is_file():
        raise FileNotFoundError(f"questions file {str(qpath)!r} not found (give one with answers, or a bag sidecar)")
    recorded = read_replay_bag(bag, camera_topic, need_questions=False)
    qfile = load_questions_file(qpath)
    if not recorded.frames:
        raise BagError(f"bag {str(bag)!r} has no frames on {recorded.camera_topic}")
    times = [f.t_ns for f in recorded.frames]
    by_stamp = {f.stamp_ns: i for i, f in enumerate(recorded.frames)}
    turns: dict[int, list[tuple[str, str]]] = {}
    without_answer = without_frame = 0
    for q in questions_for(recorded, qfile):
        answers = qfile.truth.get(q.question_id)
        if not answers:
            without_answer += 1
            continue
        if q.image_stamp_ns and q.image_stamp_ns in by_stamp:
            index = by_stamp[q.image_stamp_ns]
        else:
            index = bisect.bisect_right(times, q.t_ns) - 1  # the newest frame before the question
        if index < 0:
            without_frame += 1
            continue
        turns.setdefault(index, []).append((q.text, answers[0]))
    if not turns:
        raise ValueError(f"{qpath}: no question with an answer and a recorded frame in {str(bag)!r}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    stem = Path(bag).name.split(".")[0]
    records = []
    frames = sorted(turns)
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, desc=f"{stem} → llava", unit="frame")
    for index in frames:
        frame = recorded.frames[index]
        rel = f"images/{stem}_{frame.stamp_ns}.png"
        _save_png(decode(frame), out / rel)
        parts = conversations(turns[index], max_turns)
        for part, conv in enumerate(parts):
            rid = f"{stem}-{frame.stamp_ns}" + (f"-{part}" if len(parts) > 1 else "")
            records.append({"id": rid, "image": rel, "conversations": conv, "category": stem})
    path = write_llava(records, out / f"{name}.json")
    return BagConversion(path, len(records), sum(len(v) for v in turns.values()), without_answer, without_frame)


def _save_png(rgb: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path, format="PNG")
