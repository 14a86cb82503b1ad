"""VLMEvalKit's TSV benchmark files (MMBench, MME, POPE, SEED, AI2D, ...) as (image, questions) items, and its scoring.

One row per question, tab-separated, with a header::

    index  image (base64 JPEG/PNG)  question  [hint]  [A  B  C  D ...]  answer  [category]  [l2-category]  [split]

- A row whose ``image`` is short (≤ 64 characters) names the ``index`` of the row holding the image (VLMEvalKit's
  de-duplication); rows that share an image become one item, encoded once, as the robot would.
- Multiple choice (any option column A..Z filled): the answer is an option letter; a prediction is scored by the
  letter it names, or else by the one option whose text it contains (VLMEvalKit's ``can_infer``).
- Yes/no (answer "yes"/"no", any case): the prediction's yes or no (VLMEvalKit's ``YOrN_Extraction``).
- Anything else: normalised exact match (case, punctuation, articles and number words ignored).

Prompt styles (``build_prompt``): "vlmevalkit" (Hint / Question / Options / "Please select the correct answer from
the options above."), "llava" (question, options as "A. ...", "Answer with the option's letter from the given choices
directly." as LLaVA's evaluation asks), "question" (the question alone: for models never trained on option prompts).

Images are decoded only by ``rgb()``, after the encoded length and the header's width and height are checked, so a
hostile or broken file cannot make us allocate more than ``MAX_IMAGE_PIXELS`` pixels. Nothing is downloaded.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import string
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "KINDS",
    "PROMPT_STYLES",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_BYTES",
    "TsvFormatError",
    "TsvItem",
    "load_tsv",
    "decode_image",
    "build_prompt",
    "question_kind",
    "extract_option",
    "yes_or_no",
    "normalize_answer",
    "score_prediction",
    "write_tsv",
]

KINDS = ("choice", "yesno", "exact")
PROMPT_STYLES = ("vlmevalkit", "llava", "question")
MAX_IMAGE_PIXELS = 100_000_000
MAX_IMAGE_BYTES = 64 * 1024 * 1024  # decoded bytes of one image
_OPTION_LETTERS = string.ascii_uppercase
_REF_MAX = 64  # VLMEvalKit: an image field this short is the index of another row
_ARTICLES = frozenset({"a", "an", "the"})
_NUMBERS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}


class TsvFormatError(ValueError):
    """A TSV benchmark file that cannot be used, with the file, row and reason in the message."""


@dataclass(frozen=True)
class TsvItem:
    """One image and the benchmark questions about it.

    Attributes:
        image_id: the ``index`` of the row holding the image.
        questions: the prompts sent to the model (``build_prompt`` of each row).
        answers: the references (an option letter for multiple choice).
        kinds: per question, one of KINDS.
        options: per question, {letter: option text} (empty unless multiple choice).
        categories: per question, the ``category`` column ("all" if absent).
        indices: per question, the row's ``index``.
        source: the TSV file (for error messages).
    """

    image_id: str
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    kinds: tuple[str, ...]
    options: tuple[dict, ...]
    categories: tuple[str, ...]
    indices: tuple[str, ...]
    image_b64: str = ""
    source: str = ""
    dialogue: bool = False

    def rgb(self) -> np.ndarray:
        """The image as uint8 [H, W, 3]."""
        return decode_image(self.image_b64, where=f"{self.source}: index {self.image_id}")


def decode_image(
    data: str, *, where: str = "image", max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """A base64 image as uint8 [H, W, 3] RGB, refusing oversized data before allocating it.

    Raises:
        ValueError: not base64, not an image, more than ``max_bytes`` encoded bytes or ``max_pixels`` pixels.
    """
    from PIL import Image, UnidentifiedImageError

    if len(data) > (max_bytes // 3 + 1) * 4 + 4:
        raise ValueError(f"{where}: {len(data):,} base64 characters, more than {max_bytes:,} bytes of image")
    try:
        raw = base64.b64decode(data, validate=False)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: image is not base64 ({exc})") from None
    try:
        im = Image.open(io.BytesIO(raw))
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{where}: not a readable image ({exc})") from None
    with im:
        w, h = im.size
        if w < 1 or h < 1 or w * h > max_pixels:
            raise ValueError(f"{where}: image is {w}x{h}: more than {max_pixels:,} pixels or empty")
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def question_kind(answer: str, options: dict) -> str:
    """ "choice" with options, "yesno" for a yes/no answer, else "exact"."""
    if options:
        return "choice"
    if answer.strip().lower() in ("yes", "no"):
        return "yesno"
    return "exact"


def build_prompt(question: str, options: dict, hint: str = "", style: str = "vlmevalkit") -> str:
    """The text the model is asked (see the module docstring for the styles)."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style must be one of {PROMPT_STYLES}, got {style!r}")
    if style == "question" or not options:
        return f"{hint}\n{question}" if hint and style != "question" else question
    lines = [f"{k}. {v}" for k, v in options.items()]
    if style == "llava":
        head = f"{hint}\n" if hint else ""
        return (
            head
            + question
            + "\n"
            + "\n".join(lines)
            + "\nAnswer with the option's letter from the given choices directly."
        )
    prompt = f"Hint: {hint}\n" if hint else ""
    prompt += f"Question: {question}\nOptions:\n" + "".join(line + "\n" for line in lines)
    return prompt + "Please select the correct answer from the options above."


def _words(text: str) -> list[str]:
    out = text
    for c in ".()[],:;!*#{}?\"'":
        out = out.replace(c, " ")
    return out.split()


def extract_option(prediction: str, options: dict) -> str | None:
    """The option letter a prediction names (VLMEvalKit ``can_infer``): one option letter standing alone, else the
    one option whose text it contains; None when it names none or several."""
    words = _words(prediction)
    named = [k for k in options if k in words]
    if len(named) > 1:
        return None
    # A lone "A" in a sentence of more than three words may be the article (VLMEvalKit's rule): judge by the texts.
    if len(named) == 1 and not (named == ["A"] and len(words) > 3):
        return named[0]
    low = prediction.lower()
    hits = [k for k, v in options.items() if v and str(v).lower() in low]
    return hits[0] if len(hits) == 1 else None


def yes_or_no(prediction: str) -> str | None:
    """ "yes" or "no" when the prediction says exactly one of them as a word, else None."""
    words = set(_words(prediction.lower()))
    if ("yes" in words) != ("no" in words):
        return "yes" if "yes" in words else "no"
    return None


def normalize_answer(text: str) -> str:
    """Lower case, punctuation to spaces, number words to digits, articles dropped, spaces collapsed."""
    words = []
    for w in re.sub(r"[^\w\s]", " ", text.lower()).split():
        w = _NUMBERS.get(w, w)
        if w not in _ARTICLES:
            words.append(w)
    return " ".join(words)


def score_prediction(kind: str, prediction: str, answer: str, options: dict | None = None) -> bool:
    """Whether a generated answer is right under the benchmark's rule for ``kind``."""
    if kind == "choice":
        return extract_option(prediction, options or {}) == answer.strip().upper()
    if kind == "yesno":
        return yes_or_no(prediction) == answer.strip().lower()
    if kind == "exact":
        return normalize_answer(prediction) == normalize_answer(answer)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _cell(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None:
        return ""
    value = value.strip()
    return "" if value.lower() == "nan" else value


def load_tsv(path: str | os.PathLike, *, limit: int | None = None, prompt_style: str = "vlmevalkit") -> list[TsvItem]:
    """Read a VLMEvalKit TSV file into items (rows sharing an image grouped, in first-appearance order).

    Args:
        path: the .tsv file.
        limit: keep only the first ``limit`` questions (rows).
        prompt_style: one of PROMPT_STYLES.

    Raises:
        FileNotFoundError: no such file.
        TsvFormatError: missing columns, a row without image or answer, an image reference to no row, a
            multiple-choice answer that is not one of its options (file, row and index in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TSV benchmark file {str(path)!r} not found")
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"prompt style must be one of {PROMPT_STYLES}, got {prompt_style!r}")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = {"index", "image", "question", "answer"} - set(reader.fieldnames or ())
        if missing:
            raise TsvFormatError(f"{path}: missing columns {sorted(missing)} (have {reader.fieldnames})")
        rows = []
        for row in reader:
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    images = {_cell(r, "index"): _cell(r, "image") for r in rows}
    first_with: dict[str, str] = {}  # image data -> the first index holding it (identical images encode once)
    groups: dict[str, list] = {}
    for n, row in enumerate(rows):
        where = f"{path}: row {n + 1} (index {_cell(row, 'index')})"
        image = _cell(row, "image")
        key = _cell(row, "index")
        if not image:
            raise TsvFormatError(f"{where}: no image")
        if image.startswith("["):
            raise TsvFormatError(f"{where}: several images per question are not supported")
        if len(image) <= _REF_MAX:
            if image not in images or len(images[image]) <= _REF_MAX:
                raise TsvFormatError(f"{where}: image refers to index {image!r}, which holds no image")
            key = image
        else:
            key = first_with.setdefault(image, key)
        answer = _cell(row, "answer")
        if not answer:
            raise TsvFormatError(f"{where}: no answer")
        options = {k: _cell(row, k) for k in _OPTION_LETTERS if _cell(row, k)}
        kind = question_kind(answer, options)
        if kind == "choice" and answer.upper() not in options:
            raise TsvFormatError(f"{where}: answer {answer!r} is not one of the options {sorted(options)}")
        prompt = build_prompt(_cell(row, "question"), options, _cell(row, "hint"), prompt_style)
        groups.setdefault(key, []).append(
            (prompt, answer, kind, options, _cell(row, "category") or "all", _cell(row, "index"))
        )
    return [
        TsvItem(
            image_id=key,
            questions=tuple(q[0] for q in qs),
            answers=tuple(q[1] for q in qs),
            kinds=tuple(q[2] for q in qs),
            options=tuple(q[3] for q in qs),
            categories=tuple(q[4] for q in qs),
            indices=tuple(q[5] for q in qs),
            image_b64=images[key],
            source=str(path),
        )
        for key, qs in groups.items()
    ]


def write_tsv(rows: list[dict], out: str | os.PathLike) -> Path:
    """Write rows (dicts with index, image, question, [A..D], answer, category) as a VLMEvalKit TSV."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    letters = [k for k in _OPTION_LETTERS if any(r.get(k) for r in rows)]
    fields = ["index", "image", "question", *letters, "answer", "category"]
    with open(out, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, delimiter="\t", lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k, "") for k in fields})
    return out


def image_b64(rgb: np.ndarray, fmt: str = "png", quality: int = 90) -> str:
    """Encode an RGB image for a TSV (PNG lossless, or JPEG at ``quality``)."""
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(rgb).save(buf, format="PNG", optimize=True)
    elif fmt in ("jpeg", "jpg"):
        Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    else:
        raise ValueError(f"image format must be 'png' or 'jpeg', got {fmt!r}")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def digest(text: str) -> str:
    """Short stable hash (de-duplicating images)."""
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
