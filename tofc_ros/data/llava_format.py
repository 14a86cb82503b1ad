"""LLaVA's instruction-tuning format (the LLaVA-1.5 665K mix, LLaVA-OneVision's data) as (image, conversation) items.

A JSON list (or JSONL, one record per line) of records::

    {"id": "000000033471",
     "image": "coco/train2017/000000033471.jpg",                   relative to the image folder
     "conversations": [
        {"from": "human", "value": "<image>\\nWhat are the colors of the bus in the image?"},
        {"from": "gpt",   "value": "The bus in the image is white and red."},
        {"from": "human", "value": "What feature can be seen on the back of the bus?"},
        {"from": "gpt",   "value": "The back of the bus features an advertisement."}],
     "category": "..."}                                            optional (evaluation: per-category accuracy)

Turns alternate human/gpt ("user"/"assistant" are accepted too), start with a human turn and end with a gpt turn;
``<image>`` appears exactly once, in the first human turn (before or after its text). Each record becomes a
``LlavaItem`` with the interface of the easy-vqa and scene items (``image_id``, ``questions``, ``answers``,
``rgb()``) plus ``dialogue = True``: its questions are the turns of one conversation, so the prompt of turn k holds
turns 0..k-1 (rendered by the model's chat template, ``ServerHalf.conversation_ids``) and training puts the loss on
every assistant turn. The image goes where the model's chat template puts it (first, in llava-hf templates): the
``<image>`` marker only says which turn it belongs to.

Records without an image (the mix's text-only ShareGPT conversations) cannot train a feature codec: they are skipped
and counted (``text_only="skip"``) or refused (``"error"``). Every other problem raises ``LlavaFormatError`` (a
ValueError) naming the file, the record's index and id, and what is wrong; image files are checked to exist when the
data is loaded, not when training reaches them. Images are read only by ``rgb()``, whose size is checked from the
file's header before its pixels are decoded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_MARKER",
    "MAX_IMAGE_PIXELS",
    "LlavaFormatError",
    "LlavaItem",
    "LlavaData",
    "conversations",
    "load_llava",
    "read_image",
    "write_llava",
]

IMAGE_MARKER = "<image>"
MAX_IMAGE_PIXELS = 100_000_000  # a bound on decoded pixels (100 MP = 300 MB of RGB); larger files are refused
_HUMAN = ("human", "user")
_GPT = ("gpt", "assistant")
_TEXT_ONLY = ("skip", "error")


class LlavaFormatError(ValueError):
    """A LLaVA-format file that cannot be used, with the file, record and reason in the message."""


@dataclass(frozen=True)
class LlavaItem:
    """One record: an image and its conversation.

    Attributes:
        image_id: the record's ``id`` (else its index in the file), as a string.
        path: the image file.
        questions: the human turns (the ``<image>`` marker removed).
        answers: the gpt turns, aligned with ``questions``.
        dialogue: True: the turns are one conversation (each prompt holds the earlier turns).
        category: the record's ``category`` ("" if none).
        record: the record's index in its file.
    """

    image_id: str
    path: str
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    dialogue: bool = True
    category: str = ""
    record: int = 0

    @property
    def categories(self) -> tuple[str, ...]:
        """One category per question (the record's)."""
        return (self.category or "all",) * len(self.questions)

    def rgb(self) -> np.ndarray:
        """The image as uint8 [H, W, 3]."""
        return read_image(self.path)


@dataclass(frozen=True)
class LlavaData:
    """What ``load_llava`` read: the items, and how many text-only records were skipped."""

    items: list[LlavaItem] = field(default_factory=list)
    skipped_text_only: int = 0
    source: str = ""


def read_image(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """An image file as uint8 [H, W, 3] RGB; the size is checked from the header before decoding.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable image, or more than ``max_pixels`` pixels.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"image {str(path)!r} not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"image {str(path)!r} is not a readable image ({exc})") from None
    with im:
        w, h = im.size
        if w < 1 or h < 1 or w * h > max_pixels:
            raise ValueError(f"image {str(path)!r} is {w}x{h}: more than {max_pixels:,} pixels or empty")
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _records(path: Path) -> Iterator[tuple[int, object]]:
    """(index, record) of a JSON list or a JSONL file."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LlavaFormatError(f"{path}: not valid JSON ({exc})") from None
        yield from enumerate(data)
        return
    for line_no, line in enumerate(text.splitlines()):
        if line.strip():
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as exc:
                raise LlavaFormatError(f"{path}: line {line_no + 1} is not a JSON record ({exc})") from None


def _strip_marker(text: str) -> str:
    for form in (IMAGE_MARKER + "\n", "\n" + IMAGE_MARKER, IMAGE_MARKER):
        text = text.replace(form, "", 1) if form in text else text
    return text.strip()


def _parse(record, index: int, where: str, folder: Path, check_images: bool) -> LlavaItem | None:
    """One record → LlavaItem, None for a text-only record; LlavaFormatError naming what is wrong."""

    def fail(what: str) -> LlavaFormatError:
        rid = record.get("id") if isinstance(record, dict) else None
        name = f"record {index}" + (f" (id {rid!r})" if rid is not None else "")
        return LlavaFormatError(f"{where}: {name}: {what}")

    if not isinstance(record, dict):
        raise fail(f"must be an object, got {type(record).__name__}")
    conv = record.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise fail("needs a non-empty 'conversations' list")
    questions, answers = [], []
    for k, turn in enumerate(conv):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise fail(f"turn {k} must be an object with a string 'value'")
        role = turn.get("from")
        expected = _HUMAN if k % 2 == 0 else _GPT
        if role not in expected:
            raise fail(f"turn {k} is from {role!r}; turns must alternate human/gpt, starting with human")
        (questions if k % 2 == 0 else answers).append(turn["value"])
    if len(questions) != len(answers):
        raise fail("the conversation ends with a human turn (no answer to learn)")
    if "video" in record:
        raise fail("video records are not supported")
    image = record.get("image")
    markers = [q.count(IMAGE_MARKER) for q in questions] + [a.count(IMAGE_MARKER) for a in answers]
    if image is None:
        if sum(markers):
            raise fail(f"has {IMAGE_MARKER} but no 'image'")
        return None
    if isinstance(image, list):
        if len(image) != 1:
            raise fail(f"has {len(image)} images; one image per record is supported")
        image = image[0]
    if not isinstance(image, str) or not image:
        raise fail(f"'image' must be a path string, got {image!r}")
    if markers[0] != 1 or sum(markers) != 1:
        raise fail(
            f"needs exactly one {IMAGE_MARKER} in the first human turn (found {markers[0]} there, "
            f"{sum(markers) - markers[0]} elsewhere)"
        )
    path = folder / image
    if check_images and not path.is_file():
        raise fail(f"image {image!r} not found under {folder}")
    questions[0] = _strip_marker(questions[0])
    category = record.get("category", "")
    return LlavaItem(
        image_id=str(record.get("id", index)),
        path=str(path),
        questions=tuple(questions),
        answers=tuple(answers),
        dialogue=True,
        category=str(category) if category is not None else "",
        record=index,
    )


def load_llava(
    path: str | os.PathLike,
    image_folder: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    text_only: str = "skip",
    check_images: bool = True,
) -> LlavaData:
    """Read a LLaVA-format JSON / JSONL file.

    Args:
        path: the file.
        image_folder: where the records' image paths are relative to (default: the file's folder).
        limit: keep only the first ``limit`` usable records.
        text_only: "skip" (count) or "error" for records without an image.
        check_images: check every image file exists now (False: only when it is read).

    Returns:
        LlavaData with the items in file order.

    Raises:
        FileNotFoundError: the file or the image folder does not exist.
        LlavaFormatError: a record that cannot be used (file, record index and id, reason).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LLaVA data file {str(path)!r} not found")
    folder = Path(image_folder) if image_folder else path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} not found")
    if text_only not in _TEXT_ONLY:
        raise ValueError(f"text_only must be one of {_TEXT_ONLY}, got {text_only!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    items: list[LlavaItem] = []
    skipped = 0
    for index, record in _records(path):
        item = _parse(record, index, str(path), folder, check_images)
        if item is None:
            if text_only == "error":
                raise LlavaFormatError(f"{path}: record {index}: has no image (text_only: error)")
            skipped += 1
            continue
        items.append(item)
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise LlavaFormatError(f"{path}: no records with an image")
    return LlavaData(items=items, skipped_text_only=skipped, source=str(path))


def conversations(qa: list[tuple[str, str]], max_turns: int | None = None) -> list[list[dict]]:
    """One image's (question, answer) pairs as LLaVA conversations of at most ``max_turns`` turns each (None: one
    conversation), ``<image>`` in each conversation's first human turn."""
    step = max_turns or len(qa) or 1
    out = []
    for start in range(0, len(qa), step):
        conv = []
        for k, (q, a) in enumerate(qa[start : start + step]):
            conv.append({"from": "human", "value": f"{IMAGE_MARKER}\n{q}" if k == 0 else q})
            conv.append({"from": "gpt", "value": a})
        out.append(conv)
    return out


def write_llava(records: list[dict], out: str | os.PathLike) -> Path:
    """Write records as a LLaVA JSON list (``.json``) or JSONL (``.jsonl``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".jsonl":
        out.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        out.write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    return out
