"""The questions file (JSON Lines) and matching answers against ground truth.

One JSON object per line; blank lines and lines starting with ``#`` are skipped. Two kinds of line:

* ground truth for a question in the bag: ``{"question_id": "q0001", "answer": "red"}``
* a question to ask (replaces the bag's questions when the file has any):
  ``{"question_id": "q1", "text": "What color is the shape?", "camera": "front", "image_stamp_ns": 1700000000500000000,
  "time_s": 0.55, "timeout_s": 5.0, "answer": "red"}`` where ``image_stamp_ns`` names the frame (0 or absent: the
  latest one), ``time_s`` is when to ask, in seconds from the start of the bag (absent: just after the frame it
  names, or at the end of the bag), ``timeout_s`` 0 or absent = the server's default, and ``answer`` (optional)
  is the ground truth. ``answer`` may be a list of accepted answers.

Matching is exact after normalisation (:func:`normalise`: lowercase, punctuation removed, whitespace collapsed),
as easy-vqa's single-word answers need.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from tofc_ros.eval.replay.bags import BagQuestion, ReplayBag

__all__ = [
    "QuestionsFile",
    "is_correct",
    "load_questions_file",
    "normalise",
    "questions_for",
    "sidecar_path",
    "write_questions_file",
]

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_QUESTION_KEYS = {"question_id", "text", "camera", "image_stamp_ns", "time_s", "timeout_s", "answer"}


def normalise(text: str) -> str:
    """Lowercase, punctuation removed, whitespace collapsed: ``" Red."`` → ``"red"``."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def is_correct(answer: str, truths: list[str] | tuple[str, ...]) -> bool:
    """True when the normalised answer equals one of the normalised ground-truth answers."""
    got = normalise(answer)
    return bool(got) and any(got == normalise(t) for t in truths)


@dataclass(frozen=True)
class FileQuestion:
    """A question line: asked at ``time_s`` from the bag's start (None: derived, see module docstring)."""

    question_id: str
    text: str
    camera: str = ""
    image_stamp_ns: int = 0
    time_s: float | None = None
    timeout_s: float = 0.0


@dataclass
class QuestionsFile:
    """Parsed questions file: questions to ask (may be empty) and ground truth by question id."""

    questions: list[FileQuestion] = field(default_factory=list)
    truth: dict[str, list[str]] = field(default_factory=dict)


def _err(path, line_no: int, what: str) -> ValueError:
    return ValueError(f"{path}:{line_no}: {what}")


def load_questions_file(path: str | Path) -> QuestionsFile:
    """Parse a questions file; a bad line raises ValueError naming the file and line number."""
    path = Path(path)
    out = QuestionsFile()
    seen: set[str] = set()
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _err(path, line_no, f"not JSON: {exc}") from exc
        if not isinstance(row, dict):
            raise _err(path, line_no, f"expected a JSON object, got {type(row).__name__}")
        unknown = set(row) - _QUESTION_KEYS
        if unknown:
            raise _err(path, line_no, f"unknown keys {sorted(unknown)}; allowed: {sorted(_QUESTION_KEYS)}")
        qid = row.get("question_id")
        if not isinstance(qid, str) or not qid:
            raise _err(path, line_no, "question_id must be a non-empty string")
        if qid in seen:
            raise _err(path, line_no, f"question_id {qid!r} appears twice")
        seen.add(qid)
        if "answer" in row:
            answer = row["answer"]
            answers = [answer] if isinstance(answer, str) else answer
            if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
                raise _err(path, line_no, "answer must be a string or a non-empty list of strings")
            out.truth[qid] = list(answers)
        if "text" not in row:
            if "answer" not in row:
                raise _err(path, line_no, "a line needs 'text' (a question) or 'answer' (ground truth)")
            extra = set(row) - {"question_id", "answer"}
            if extra:
                raise _err(path, line_no, f"{sorted(extra)} given without 'text'")
            continue
        text = row["text"]
        if not isinstance(text, str) or not text.strip():
            raise _err(path, line_no, "text must be a non-empty string")
        try:
            stamp = int(row.get("image_stamp_ns", 0))
            time_s = None if row.get("time_s") is None else float(row["time_s"])
            timeout_s = float(row.get("timeout_s", 0.0))
        except (TypeError, ValueError) as exc:
            raise _err(path, line_no, f"bad number: {exc}") from exc
        if stamp < 0 or timeout_s < 0 or (time_s is not None and time_s < 0):
            raise _err(path, line_no, "image_stamp_ns, time_s and timeout_s must not be negative")
        camera = row.get("camera", "")
        if not isinstance(camera, str):
            raise _err(path, line_no, "camera must be a string")
        out.questions.append(FileQuestion(qid, text, camera, stamp, time_s, timeout_s))
    return out


def write_questions_file(path: str | Path, rows: list[dict]) -> None:
    """Write rows (dicts with the keys above) as JSON Lines."""
    with Path(path).open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def sidecar_path(bag: str | Path) -> Path:
    """The ground truth beside a bag: ``x.mcap`` → ``x.questions.jsonl``, ``d/`` → ``d.questions.jsonl``."""
    bag = Path(bag)
    stem = bag.name[: -len(bag.suffix)] if bag.is_file() and bag.suffix else bag.name.rstrip("/")
    return bag.with_name(f"{stem}.questions.jsonl")


def questions_for(bag: ReplayBag, qfile: QuestionsFile | None) -> list[BagQuestion]:
    """The questions a replay asks: the file's when it has any, else the bag's; sorted by ask time.

    A file question without ``time_s`` is asked 1 ms after the frame whose stamp it names, or at the bag's end
    when it names no recorded frame (or the latest one).
    """
    if qfile is None or not qfile.questions:
        return list(bag.questions)
    frame_t = {f.stamp_ns: f.t_ns for f in bag.frames}
    out = []
    for q in qfile.questions:
        if q.time_s is not None:
            t_ns = bag.start_ns + int(round(q.time_s * 1e9))
        elif q.image_stamp_ns and q.image_stamp_ns in frame_t:
            t_ns = frame_t[q.image_stamp_ns] + 1_000_000
        else:
            t_ns = bag.end_ns + 1_000_000
        out.append(BagQuestion(t_ns, q.question_id, q.text, q.camera, q.image_stamp_ns, q.timeout_s))
    out.sort(key=lambda q: q.t_ns)
    return out
