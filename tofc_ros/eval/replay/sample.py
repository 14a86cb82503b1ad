"""Sample replay bags: camera frames (sensor_msgs/Image rgb8) and tofc_msgs/Question from a data set's test split.

    data="scenes":  camera-resolution scenes (1280x720 by default), the demo's bag (rebuilt at setup, not committed)
    data="easyvqa": 64x64 easy-vqa images (data/easyvqa_sample.mcap, committed)

Deterministic: the first ``n_images`` test images by id, each image's first questions (alternately 3 and 2 when
``questions_per_image`` is None), log times and stamps from a fixed epoch, so a bag is reproducible byte for byte by
``tools/make_sample_bag.py``. The ground truth goes to the sidecar questions file (Question has no answer field).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tofc_ros.eval.replay.bags import BagQuestion, BagWriter
from tofc_ros.eval.replay.messages import image_cdr, question_cdr
from tofc_ros.eval.replay.questions import sidecar_path, write_questions_file
from tofc_ros.eval.replay.typestore import IMAGE, QUESTION

__all__ = ["EPOCH_NS", "CAMERA_TOPIC", "QUESTIONS_TOPIC", "write_sample_bag"]

EPOCH_NS = 1_700_000_000 * 1_000_000_000
CAMERA_TOPIC = "/camera/image_raw"
QUESTIONS_TOPIC = "/questions"


def write_sample_bag(
    out: str | Path,
    storage: str = "mcap",
    n_images: int = 20,
    rate_hz: float = 2.0,
    questions_per_image: int | None = None,
    camera: str = "front",
    question_offset_s: float = 0.05,
    data: str = "easyvqa",
    size: tuple[int, int] = (1280, 720),
) -> tuple[Path, Path, int]:
    """Write a replay bag of a data set's test images and its ground-truth sidecar.

    Args:
        out: a rosbag2 directory to create, or (mcap only) a ``.mcap`` file path: the bag's single file alone.
        storage: "mcap" or "sqlite3".
        n_images: how many test images (frames), played at ``rate_hz``.
        questions_per_image: questions per image; None alternates 3 and 2.
        camera: the Question.camera value.
        question_offset_s: questions are asked this long after their frame, one after another.
        data: "easyvqa" or "scenes".
        size: (width, height) of the scene frames.

    Returns:
        (bag path, sidecar path, number of questions).
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists")
    single_file = out.suffix == ".mcap"
    if single_file and storage != "mcap":
        raise ValueError("a single-file bag must be mcap")
    if data == "scenes":
        from tofc_ros.data import scenes

        images = scenes.load_split("test", n_images, sizes=(tuple(size),))
    elif data == "easyvqa":
        from tofc_ros.data.easyvqa import load_split

        images = load_split("test")[:n_images]
    else:
        raise ValueError(f"data must be 'easyvqa' or 'scenes', got {data!r}")
    if len(images) < n_images:
        raise ValueError(f"{data} test has only {len(images)} images")
    period_ns = int(round(1e9 / rate_hz))
    truth_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bag_dir = Path(tmp) / out.stem if single_file else out
        with BagWriter(bag_dir, storage) as writer:
            for i, item in enumerate(images):
                t = EPOCH_NS + i * period_ns
                writer.write(CAMERA_TOPIC, IMAGE, t, image_cdr(item.rgb(), t, f"{camera}_optical_frame"))
                k = questions_per_image or (3 if i % 2 == 0 else 2)
                for j, (text, answer) in enumerate(zip(item.questions[:k], item.answers[:k])):
                    qid = f"{data}-test-{item.image_id:04d}-{j}"
                    asked = t + int((j + 1) * question_offset_s * 1e9)
                    q = BagQuestion(asked, qid, text, camera, t, 0.0)
                    writer.write(QUESTIONS_TOPIC, QUESTION, asked, question_cdr(q, asked))
                    truth_rows.append({"question_id": qid, "answer": answer})
        if single_file:
            (mcap,) = bag_dir.glob("*.mcap")
            shutil.move(str(mcap), out)
    sidecar = sidecar_path(out)
    write_questions_file(sidecar, truth_rows)
    return out, sidecar, len(truth_rows)
