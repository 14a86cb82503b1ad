"""Other teams' data formats: LLaVA instruction JSON/JSONL, VLMEvalKit TSV, our converters into both, the scoring."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from tofc_ros.data import convert, llava_format, vlmevalkit
from tofc_ros.data.llava_format import LlavaFormatError, load_llava
from tofc_ros.data.vlmevalkit import TsvFormatError, load_tsv

FIXTURE_TSV = "test/fixtures/bench_mini.tsv"


def _png(path, h=20, w=30):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(path)


def _record(**kw):
    rec = {
        "id": "r0",
        "image": "a.png",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is it?"},
            {"from": "gpt", "value": "A box."},
            {"from": "human", "value": "What colour?"},
            {"from": "gpt", "value": "Gray."},
        ],
    }
    rec.update(kw)
    return rec


def test_records_become_dialogue_items(tmp_path):
    _png(tmp_path / "img" / "a.png", 20, 30)
    records = [
        _record(),
        {"id": "text", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
    ]
    records.append(
        _record(
            id="r2",
            image="a.png",
            conversations=[{"from": "user", "value": "Describe.\n<image>"}, {"from": "assistant", "value": "Gray."}],
        )
    )
    path = llava_format.write_llava(records, tmp_path / "d.json")
    data = load_llava(path, tmp_path / "img")
    assert data.skipped_text_only == 1 and len(data.items) == 2
    a, b = data.items
    assert a.image_id == "r0" and a.dialogue and a.questions == ("What is it?", "What colour?")
    assert a.answers == ("A box.", "Gray.") and a.rgb().shape == (20, 30, 3)
    assert b.questions == ("Describe.",) and b.record == 2
    # JSONL reads the same; text-only records can be refused instead of skipped.
    jl = llava_format.write_llava(records, tmp_path / "d.jsonl")
    assert [i.questions for i in load_llava(jl, tmp_path / "img").items] == [a.questions, b.questions]
    with pytest.raises(LlavaFormatError, match="record 1: has no image"):
        load_llava(path, tmp_path / "img", text_only="error")
    assert len(load_llava(path, tmp_path / "img", limit=1).items) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(image="missing.png"), r"record 0 \(id 'r0'\): image 'missing.png' not found under"),
        (
            dict(conversations=[{"from": "human", "value": "no marker"}, {"from": "gpt", "value": "x"}]),
            r"record 0 \(id 'r0'\): needs exactly one <image> in the first human turn",
        ),
        (
            dict(conversations=[{"from": "gpt", "value": "<image>"}, {"from": "human", "value": "x"}]),
            "turn 0 is from 'gpt'; turns must alternate",
        ),
        (dict(conversations=[{"from": "human", "value": "<image>\nq"}]), "ends with a human turn"),
        (dict(image=["a.png", "a.png"]), "has 2 images"),
        (dict(conversations="x"), "needs a non-empty 'conversations' list"),
    ],
)
def test_bad_records_name_the_file_record_and_reason(tmp_path, change, message):
    _png(tmp_path / "a.png")
    path = llava_format.write_llava([_record(**change)], tmp_path / "bad.json")
    with pytest.raises(LlavaFormatError, match=message) as err:
        load_llava(path)
    assert str(path) in str(err.value)


def test_missing_files_and_broken_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_llava(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("[{")
    with pytest.raises(LlavaFormatError, match="not valid JSON"):
        load_llava(tmp_path / "x.json")
    (tmp_path / "big.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        llava_format.read_image(tmp_path / "big.png")
    _png(tmp_path / "ok.png", 10, 10)
    with pytest.raises(ValueError, match="more than 50 pixels"):
        llava_format.read_image(tmp_path / "ok.png", max_pixels=50)


def test_converters_write_what_the_readers_read(tmp_path):
    items = convert.load_items("easyvqa", "train", limit=25)
    path = convert.to_llava(items, tmp_path / "llava", source="easyvqa", max_turns=4)
    data = load_llava(path)
    # Every question/answer survives, in order, in records of at most 4 turns, each image written once.
    assert [qa for it in data.items for qa in zip(it.questions, it.answers)] == [
        qa for it in items for qa in zip(it.questions, it.answers)
    ]
    assert max(len(it.questions) for it in data.items) == 4
    assert len(list((tmp_path / "llava" / "images").iterdir())) == len(items)
    np.testing.assert_array_equal(data.items[0].rgb(), items[0].rgb())
    tsv = convert.to_tsv(items, tmp_path / "b.tsv", source="easyvqa")
    rows = load_tsv(tsv, prompt_style="question")
    assert [it.image_id for it in rows] == [str(sum(len(i.questions) for i in items[:k])) for k in range(len(items))]
    np.testing.assert_array_equal(rows[1].rgb(), items[1].rgb())
    for src, got in zip(items, rows):
        for a, ref, kind, opts in zip(src.answers, got.answers, got.kinds, got.options):
            assert (opts[ref] if kind == "choice" else ref) == a


def test_committed_tsv_matches_its_generator(tmp_path):
    """test/fixtures/bench_mini.tsv is tools/make_tsv_fixture.py's output: the same rows, the same images (JPEG ones
    within a grey level or two: another libjpeg may encode other bytes)."""
    import subprocess
    import sys

    out = tmp_path / "mini.tsv"
    subprocess.run([sys.executable, "tools/make_tsv_fixture.py", "--out", str(out)], check=True, capture_output=True)
    fresh, committed = load_tsv(out), load_tsv(FIXTURE_TSV)
    assert [(i.questions, i.answers, i.categories) for i in fresh] == [
        (i.questions, i.answers, i.categories) for i in committed
    ]
    for a, b in zip(fresh, committed):
        diff = np.abs(a.rgb().astype(int) - b.rgb().astype(int))
        assert diff.max() <= 2


def test_committed_tsv_reads_with_every_kind_and_shared_images():
    items = load_tsv(FIXTURE_TSV)
    kinds = {k for it in items for k in it.kinds}
    assert kinds == {"choice", "yesno", "exact"}
    cats = {c for it in items for c in it.categories}
    assert {"easyvqa/shape", "easyvqa/color", "scenes/count"} <= cats
    sizes = {it.rgb().shape for it in items}
    assert {(64, 64, 3), (480, 640, 3)} <= sizes
    choice = next(q for it in items for q, k in zip(it.questions, it.kinds) if k == "choice")
    assert choice.startswith("Question: ") and "\nOptions:\nA. " in choice
    assert choice.endswith("Please select the correct answer from the options above.")
    assert sum(len(it.questions) for it in items) == 73


def _b64_png(h, w):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_tsv_errors_and_limits(tmp_path):
    def write(rows):
        return vlmevalkit.write_tsv(rows, tmp_path / "t.tsv")

    img = _b64_png(4, 4)
    with pytest.raises(TsvFormatError, match="refers to index '9'"):
        load_tsv(write([{"index": "0", "image": "9", "question": "q", "answer": "a"}]))
    with pytest.raises(TsvFormatError, match="answer 'E' is not one of the options"):
        load_tsv(write([{"index": "0", "image": img, "question": "q", "A": "x", "B": "y", "answer": "E"}]))
    (tmp_path / "h.tsv").write_text("index\tquestion\n0\tq\n")
    with pytest.raises(TsvFormatError, match=r"missing columns \['answer', 'image'\]"):
        load_tsv(tmp_path / "h.tsv")
    with pytest.raises(ValueError, match="more than 10 pixels"):
        vlmevalkit.decode_image(img, max_pixels=10)
    with pytest.raises(ValueError, match="base64 characters"):
        vlmevalkit.decode_image("A" * 1000, max_bytes=100)
    with pytest.raises(ValueError, match="not a readable image"):
        vlmevalkit.decode_image(base64.b64encode(b"junk" * 30).decode())
    # Identical images in two rows are one item.
    items = load_tsv(
        write(
            [
                {"index": "0", "image": img, "question": "q0", "answer": "yes"},
                {"index": "1", "image": img, "question": "q1", "answer": "No"},
            ]
        )
    )
    assert len(items) == 1 and items[0].kinds == ("yesno", "yesno")


@pytest.mark.parametrize(
    ("kind", "prediction", "answer", "options", "right"),
    [
        ("choice", "B", "B", {"A": "cat", "B": "dog"}, True),
        ("choice", "(B) dog", "B", {"A": "cat", "B": "dog"}, True),
        ("choice", "The answer is dog.", "B", {"A": "cat", "B": "dog"}, True),
        ("choice", "A dog is in the picture", "B", {"A": "cat", "B": "dog"}, True),  # "A" is the article here
        ("choice", "A or B", "B", {"A": "cat", "B": "dog"}, False),
        ("choice", "circle", "A", {"A": "circle", "B": "rectangle"}, True),
        ("yesno", "Yes, it is.", "Yes", {}, True),
        ("yesno", "yes and no", "yes", {}, False),
        ("yesno", "no", "yes", {}, False),
        ("exact", "Two.", "2", {}, True),
        ("exact", "the red one", "Red one", {}, True),
        ("exact", "blue", "red", {}, False),
    ],
)
def test_scoring_follows_vlmevalkit(kind, prediction, answer, options, right):
    assert vlmevalkit.score_prediction(kind, prediction, answer, options) is right


def test_prompt_styles():
    opts = {"A": "cat", "B": "dog"}
    assert vlmevalkit.build_prompt("Which?", opts, style="question") == "Which?"
    llava = vlmevalkit.build_prompt("Which?", opts, style="llava")
    assert llava == "Which?\nA. cat\nB. dog\nAnswer with the option's letter from the given choices directly."
    with pytest.raises(ValueError, match="prompt style"):
        vlmevalkit.build_prompt("q", opts, style="mine")
    assert json.dumps(vlmevalkit.KINDS)
