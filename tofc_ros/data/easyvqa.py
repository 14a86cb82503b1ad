"""easy-vqa as (image, questions) groups: the offline data set for training and rate–accuracy evaluation.

easy-vqa (PyPI ``easy-vqa``; 4,000 train / 1,000 test 64×64 PNGs, 38,575 / 9,673 questions, 13 single-word answers)
ships its data inside the wheel, so nothing is downloaded. Questions are grouped by image because every consumer
encodes an image once and asks all of its questions against the same features (exactly what the robot does).

Order is deterministic: images by ascending id, and each image's questions in the package's own order. ``limit``
counts *questions* in that order (the last image may keep only some of its questions), so "the first 50 test
questions" means the same slice everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "SPLITS",
    "SHAPES",
    "COLOURS",
    "VQAImage",
    "answers",
    "load_split",
    "num_questions",
    "object_label",
    "read_rgb",
]

SPLITS = ("train", "test")
SHAPES = ("circle", "rectangle", "triangle")
COLOURS = ("black", "blue", "brown", "gray", "green", "red", "teal", "yellow")
_NEGATIONS = frozenset({"not", "no"})


@dataclass(frozen=True)
class VQAImage:
    """One image and its questions.

    Attributes:
        image_id: easy-vqa's id (the PNG's stem).
        path: the PNG inside the installed package.
        questions: the questions, in the package's order.
        answers: the ground-truth single-word answers, aligned with ``questions``.
    """

    image_id: int
    path: str
    questions: tuple[str, ...]
    answers: tuple[str, ...]

    def rgb(self) -> np.ndarray:
        """The image as uint8 [64, 64, 3]."""
        return read_rgb(self.path)


def object_label(item: VQAImage, words: tuple[str, ...]) -> int | None:
    """Index in ``words`` (SHAPES or COLOURS) of the image's object, read from its questions' answers.

    "what is the blue shape? -> rectangle" names it directly; "does the image contain a rectangle? -> yes" too.
    None when no question names it (about 1 image in 8 for shapes).
    """
    for q, a in zip(item.questions, item.answers):
        if a in words:
            return words.index(a)
        tokens = q.rstrip("?").split()
        if a == "yes" and not _NEGATIONS.intersection(tokens):  # "is no yellow shape present? -> yes" names none
            for k, word in enumerate(words):
                if word in tokens:
                    return k
    return None


def answers() -> tuple[str, ...]:
    """The 13 answer words, in easy-vqa's order."""
    from easy_vqa import get_answers

    return tuple(get_answers())


def load_split(split: str, limit: int | None = None) -> list[VQAImage]:
    """All images of a split with their questions.

    Args:
        split: "train" or "test".
        limit: keep only the first ``limit`` questions (image-major order, see module docstring); None keeps all.

    Returns:
        list of VQAImage, ascending image id.
    """
    import easy_vqa

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if split == "train":
        questions, answer_words, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    else:
        questions, answer_words, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    grouped: dict[int, tuple[list[str], list[str]]] = {}
    for q, a, i in zip(questions, answer_words, image_ids):
        qs, ans = grouped.setdefault(int(i), ([], []))
        qs.append(q)
        ans.append(a)
    out: list[VQAImage] = []
    remaining = limit
    for image_id in sorted(grouped):
        qs, ans = grouped[image_id]
        if remaining is not None:
            qs, ans = qs[:remaining], ans[:remaining]
            remaining -= len(qs)
        out.append(VQAImage(image_id, str(paths[image_id]), tuple(qs), tuple(ans)))
        if remaining is not None and remaining <= 0:
            break
    return out


def num_questions(items: list[VQAImage]) -> int:
    """Total number of questions over the images."""
    return sum(len(item.questions) for item in items)


def read_rgb(path: str | Path) -> np.ndarray:
    """A PNG as uint8 [H, W, 3] RGB."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
