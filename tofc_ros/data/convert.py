"""Our data sets in the formats other teams' tools read: LLaVA instruction JSON (training) and VLMEvalKit TSV (eval).

    easy-vqa / scenes items ──to_llava──► out/<name>.json + out/images/*.png   (one record per image: its questions
                                                                                 as a multi-turn conversation)
                            ──to_tsv────► out.tsv                              (one row per question: shape and colour
                                                                                 questions as multiple choice A-D,
                                                                                 yes/no, short answers; an image's
                                                                                 later rows refer to its first row)

``python -m tofc_ros.data.convert llava --from easyvqa --split train --out data/llava_easyvqa`` (or ``tofc make-data``)
writes what ``tofc train`` with ``data: llava`` and ``tofc eval --data-file`` read, so every path a team with its own
recordings takes is exercised here on our own data. Deterministic: the same arguments write the same files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tofc_ros.data import easyvqa, llava_format, vlmevalkit

__all__ = ["SOURCES", "load_items", "question_type", "to_llava", "to_tsv", "main"]

SOURCES = ("easyvqa", "scenes")
_CHOICES = {"shape": easyvqa.SHAPES, "color": easyvqa.COLOURS}


def load_items(source: str, split: str, *, limit: int | None = None, images: int | None = None, sizes=None, seed=0):
    """Items of one of our data sets (``limit``: first questions; ``images``, ``sizes``: scenes only)."""
    if source == "easyvqa":
        return easyvqa.load_split(split, limit)
    if source != "scenes":
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    from tofc_ros.data import scenes

    return scenes.load_split(split, images or 8, seed, limit=limit, sizes=tuple(sizes or scenes.FRAME_SIZES))


def question_type(item, k: int) -> str:
    """The question's type: the scene generator's own, else read from the easy-vqa answer."""
    types = getattr(item, "question_types", None)
    if types:
        return types[k]
    answer = item.answers[k]
    if answer in easyvqa.SHAPES:
        return "shape"
    if answer in easyvqa.COLOURS:
        return "color"
    return "presence" if answer in ("yes", "no") else "other"


def _image_name(source: str, item) -> str:
    split = getattr(item, "split", "")
    return f"{source}_{split + '_' if split else ''}{item.image_id}"


def _save_png(rgb: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, format="PNG")


def to_llava(
    items: Sequence,
    out_dir: str | Path,
    *,
    source: str,
    name: str = "data",
    max_turns: int | None = None,
    jsonl: bool = False,
    progress: bool = False,
) -> Path:
    """Write LLaVA-format records and their images.

    Args:
        items: easy-vqa or scene items (image_id, questions, answers, rgb()).
        out_dir: output folder: ``<name>.json`` (or .jsonl) plus ``images/``.
        source: the data set's name (image file prefix and each record's ``category``).
        max_turns: at most this many question/answer turns per record (an image with more gets several records).
        jsonl: write JSONL instead of a JSON list.

    Returns:
        The data file.
    """
    out_dir = Path(out_dir)
    records = []
    iterator = items
    if progress:
        from tqdm import tqdm

        iterator = tqdm(items, desc=f"{source} → llava", unit="image")
    for item in iterator:
        stem = _image_name(source, item)
        rel = f"images/{stem}.png"
        _save_png(item.rgb(), out_dir / rel)
        parts = llava_format.conversations(list(zip(item.questions, item.answers)), max_turns)
        for part, conv in enumerate(parts):
            rid = stem if len(parts) == 1 else f"{stem}_{part}"
            records.append({"id": rid, "image": rel, "conversations": conv, "category": source})
    return llava_format.write_llava(records, out_dir / f"{name}.{'jsonl' if jsonl else 'json'}")


def to_tsv(
    items: Sequence,
    out: str | Path,
    *,
    source: str,
    choice_types: Sequence[str] = ("shape", "color"),
    image_format: str = "png",
    jpeg_quality: int = 90,
    seed: int = 0,
    start_index: int = 0,
    rows: list[dict] | None = None,
) -> Path:
    """Write (or extend ``rows`` and write) a VLMEvalKit TSV: one row per question, category = question type.

    Questions of ``choice_types`` become multiple choice: the answer and up to three other words of its kind as
    options A-D in a seeded order (the answer letter is the reference). Yes/no and other questions keep their text
    answers. Each image is stored once, in its first row; later rows hold that row's index.
    """
    rows = [] if rows is None else rows
    index = start_index
    for item in items:
        first = None
        for k, (q, a) in enumerate(zip(item.questions, item.answers)):
            qtype = question_type(item, k)
            row = {"index": str(index), "question": q, "answer": a, "category": f"{source}/{qtype}"}
            if qtype in choice_types and a in _CHOICES.get(qtype, ()):
                rng = np.random.default_rng([seed, index])
                others = [w for w in _CHOICES[qtype] if w != a]
                picked = [others[i] for i in rng.permutation(len(others))[:3]]
                words = [a, *picked]
                words = [words[i] for i in rng.permutation(len(words))]
                for letter, word in zip("ABCD", words):
                    row[letter] = word
                row["answer"] = "ABCD"[words.index(a)]
            if first is None:
                row["image"] = vlmevalkit.image_b64(item.rgb(), image_format, jpeg_quality)
                first = row["index"]
            else:
                row["image"] = first
            rows.append(row)
            index += 1
    return vlmevalkit.write_tsv(rows, out)


def _size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise ValueError(f"size must be WxH (e.g. 640x480), got {text!r}")
    return int(w), int(h)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``llava`` or ``tsv`` from easy-vqa or the scenes."""
    ap = argparse.ArgumentParser(
        prog="tofc make-data",
        description=__doc__.split("\n\n")[0],
        epilog="A robot's recordings: tofc make-data llava --bag BAG [--questions FILE] --out DIR "
        "(tofc make-data llava --bag x --help for its options).",
    )
    ap.add_argument("format", choices=("llava", "tsv"), help="LLaVA instruction JSON or VLMEvalKit TSV")
    ap.add_argument("--from", dest="source", choices=SOURCES, default="easyvqa", help="our data set to convert")
    ap.add_argument("--split", choices=easyvqa.SPLITS, default="train")
    ap.add_argument("--out", required=True, help="llava: output folder; tsv: output .tsv file")
    ap.add_argument("--limit", type=int, default=None, help="first N questions")
    ap.add_argument("--images", type=int, default=None, help="scenes: how many scenes (default 8)")
    ap.add_argument("--size", action="append", default=[], help="scenes: frame size WxH (repeatable)")
    ap.add_argument("--seed", type=int, default=0, help="scenes: generator seed; tsv: option order")
    ap.add_argument("--max-turns", type=int, default=None, help="llava: turns per record (default: all)")
    ap.add_argument("--name", default="data", help="llava: data file stem")
    ap.add_argument("--jsonl", action="store_true", help="llava: write JSONL")
    ap.add_argument("--image-format", choices=("png", "jpeg"), default="png", help="tsv: image encoding")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    sizes = [_size(s) for s in args.size] or None
    items = load_items(args.source, args.split, limit=args.limit, images=args.images, sizes=sizes, seed=args.seed)
    if args.format == "llava":
        path = to_llava(
            items,
            args.out,
            source=args.source,
            name=args.name,
            max_turns=args.max_turns,
            jsonl=args.jsonl,
            progress=not args.no_progress,
        )
    else:
        path = to_tsv(items, args.out, source=args.source, image_format=args.image_format, seed=args.seed)
    print(f"{path}: {sum(len(i.questions) for i in items)} questions about {len(items)} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
