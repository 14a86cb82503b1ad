"""Scene data set: determinism (pinned bytes, across processes), disjoint splits, answers true of the objects and the
pixels, geometry, balance, the CLI. Answers are recomputed here from each item's object list with this file's own
reading of the questions, never with the generator's question code."""

import dataclasses
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tofc_ros.data import easyvqa, scenes
from tofc_ros.data.scenes import COLOURS, PALETTE, SHAPES, TEMPLATES

ROOT = Path(__file__).resolve().parents[1]

# sha256 of the decoded pixels: a change here means another Pillow/libjpeg-turbo decodes the photo differently
# (or the package ships another file), not that the generator changed.
PHOTO_PIXELS = {
    "astronaut": "a8c429c18afa7b0fd5673e598d73a21225d94c864a71bbb3885126fdecb41071",
    "chelsea": "416b729128bfb2c3d1eb69bf9b1734a796293abc17939267b2dc94f8a5784031",
    "rocket": "3d4435cc745752b7f9724df88c6e18817de3ce7e3d2d71c55f85f7831e68f197",
    "china": "e701459344fd69797154c91add3bb5d70e5ed1a61d8bed889bab3a796104698d",
    "grace_hopper": "f7f982de68dd296af67ee51b2a95a2e5658f7bf064c6536520b66bae8d01fc34",
    "coffee": "0ce2b51640b9c95f19617f03eabf40c3f0368589cc1ee1190b70966165ac184f",
    "flower": "3202904ed246795bf616c66d7859cd7c6080eff736c6e38dc5cc62779742033f",
}
# (split, index, seed): sha256 of the spec JSON (objects, questions, answers), of rgb() and of object_index().
PINNED = {
    ("test", 0, 0): (
        "c1d4eef063c9d319562c520fbb9126848175f5423e12ba2127abb477664a9be6",
        "bbe79ed150d3cf0b67e2308d7cccd4e0ed2517e3746e728ebee6d3ac26794ca5",
        "b2c0ac2e025a1ca276f1fd2c8c7892da332fb5c8cd9f4b9b3ecc4ed8c766e038",
    ),
    ("test", 1, 0): (
        "03a351a926900e9888dc04659513d9bdad5ae5118784a54d81659efd02564927",
        "403be1f82d8f6e80ed4d63b1d1667148295941bd54789c99a53451f10898a0e9",
        "186dd7e92b0cbaca3ed86bbd4c1524dd6df322fc1408126b06d69926e3520d74",
    ),
    ("train", 3, 0): (
        "f1091afe3c9cc6ae761894498708bb97c2fb387e757e7d381c6f2a464e0d2205",
        "6257662b0cc3b20b7f55bf115e2cab2f51b25b861916dec6e16de7b39478bcd7",
        "2e403c89bd0c62545e229375b01845520069121c1bf7c24b6021a79673767a20",
    ),
    ("train", 4, 7): (
        "18d2a319f2bcf3101b57594973869f2998bd9a17f0678698631ad32d24d2b1f4",
        "a2907a12c375f1acca9cbb77a3101adba941d3a5509edd3cf97af8c57a757bff",
        "c7def357860b2d017e02c5170b4e523ba6e8dad48a4b0368a75e4b508ce551c9",
    ),
}
# Scenes per split whose every question is re-derived (generation is ~0.5 ms a scene); test: its default size.
N_CHECKED = {"train": 500, "test": 1000}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _spec_sha(item) -> str:
    return _sha(json.dumps(dataclasses.asdict(item), sort_keys=True).encode())


@pytest.fixture(scope="module")
def items():
    return {split: scenes.load_split(split, N_CHECKED[split]) for split in scenes.SPLITS}


# ------------------------------------------------------------------------------------------------- determinism
def test_photo_pixels_are_pinned():
    for photo in scenes.PHOTOS:
        assert _sha(scenes._photo_rgb(photo.name).tobytes()) == PHOTO_PIXELS[photo.name], (
            f"{photo.name}: decoded pixels differ (decoder or package file changed), so every frame will"
        )


@pytest.mark.parametrize("key", sorted(PINNED))
def test_same_seed_same_bytes_pinned(key):
    split, index, seed = key
    item = scenes.make_item(split, index, seed)
    rgb, index_map = item.render()
    assert rgb.shape == (item.size[1], item.size[0], 3) and rgb.dtype == np.uint8
    assert index_map.shape == rgb.shape[:2] and index_map.dtype == np.uint8
    assert (_spec_sha(item), _sha(rgb.tobytes()), _sha(index_map.tobytes())) == PINNED[key]
    again = scenes.make_item(split, index, seed)
    assert again == item and np.array_equal(again.rgb(), rgb)


def test_pinned_items_cover_both_sizes_and_a_flip():
    got = [scenes.make_item(*key) for key in PINNED]
    assert {it.size for it in got} == set(scenes.FRAME_SIZES) and any(it.flip for it in got)
    assert {len(it.objects) for it in got} >= {2, 3}


def test_other_seed_other_scenes():
    a = scenes.load_split("test", 20, seed=0)
    b = scenes.load_split("test", 20, seed=1)
    assert sum(x.objects != y.objects for x, y in zip(a, b)) >= 19
    assert not np.array_equal(a[0].rgb(), b[0].rgb()) or a[0].size != b[0].size


def test_scene_does_not_depend_on_how_many_are_asked(items):
    assert scenes.load_split("test", 7) == items["test"][:7]
    assert scenes.make_item("test", 123) == items["test"][123]


def test_limit_counts_questions_image_major(items):
    full = items["test"]
    part = scenes.load_split("test", 50, limit=20)
    assert scenes.num_questions(part) == 20
    assert part[:-1] == full[: len(part) - 1]
    last, ref = part[-1], full[len(part) - 1]
    assert last.questions == ref.questions[: len(last.questions)]
    assert last.answers == ref.answers[: len(last.questions)]
    assert last.question_types == ref.question_types[: len(last.questions)]


def test_bad_arguments_raise():
    for call in (
        lambda: scenes.load_split("val", 3),
        lambda: scenes.load_split("test", 0),
        lambda: scenes.load_split("test", 3, limit=0),
        lambda: scenes.make_item("test", -1),
        lambda: scenes.make_item("test", 0, seed=-2),
        lambda: scenes.make_item("test", 0, sizes=()),
    ):
        with pytest.raises(ValueError):
            call()


def test_missing_photo_package_fails_loudly_instead_of_downloading():
    ghost = dataclasses.replace(scenes.PHOTOS[0], module="no_such_package_tofc", pypi="no-such-package")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        ghost.path()
    moved = dataclasses.replace(scenes.PHOTOS[0], relpath="data/not_here.png")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        moved.path()


def test_other_process_same_bytes_via_cli_and_pure_imports(tmp_path):
    """A fresh interpreter renders the same PNGs (CLI), and importing the module pulls in no ROS, torch, or the
    photo packages' code (their files are read, never their fetchers)."""
    code = (
        "import sys, runpy; sys.argv = ['scenes', '--split', 'test', '--n', '2', '--out', sys.argv[1]]; "
        "rc = 0\ntry:\n    runpy.run_module('tofc_ros.data.scenes', run_name='__main__')\n"
        "except SystemExit as e:\n    rc = e.code or 0\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('rclpy', 'torch', 'skimage', 'sklearn', 'pooch', 'matplotlib'))\n"
        "print('BAD', bad); sys.exit(rc or (1 if bad else 0))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stdout + res.stderr
    from PIL import Image

    for item in scenes.load_split("test", 2):
        with Image.open(tmp_path / "images" / f"{item.name}.png") as im:
            assert np.array_equal(np.asarray(im), item.rgb())


# ------------------------------------------------------------------------------------------------------ splits
def test_photos_split_disjoint_and_scenes_stay_in_their_split(items):
    by_split = {s: {p.name for p in scenes.PHOTOS if p.split == s} for s in scenes.SPLITS}
    assert by_split["train"] and by_split["test"] and not by_split["train"] & by_split["test"]
    assert {p.split for p in scenes.PHOTOS} == set(scenes.SPLITS)
    for split, its in items.items():
        assert {it.background for it in its} == by_split[split]
        assert all(it.split == split for it in its)


def _palette_colour(rgb: np.ndarray) -> str:
    counts = {name: int((rgb == np.array(c)).all(-1).sum()) for name, c in PALETTE.items()}
    return max(counts, key=counts.get)


def test_objects_come_from_their_own_easy_vqa_split(items):
    """Each object's vqa_id is an image of the scene's easy-vqa split whose own answers and pixels carry the
    object's labels (object ids of the other split would not match)."""
    for split, its in items.items():
        vqa = {it.image_id: it for it in easyvqa.load_split(split)}
        used = {(o.vqa_id, o.shape, o.color) for it in its[:150] for o in it.objects}
        for vqa_id, shape, colour in used:
            image = vqa[vqa_id]
            for word, words in ((shape, SHAPES), (colour, COLOURS)):
                ref = easyvqa.object_label(image, words)
                assert ref is None or words[ref] == word, (split, vqa_id, word)
                for q, a in zip(image.questions, image.answers):  # no answer of the image contradicts it
                    tokens = set(q.rstrip("?").split())
                    if a in words:
                        assert a == word, (split, vqa_id, q, a)
                    elif a in ("yes", "no") and word in tokens:
                        assert (a == "yes") != bool(tokens & {"not", "no"}), (split, vqa_id, q, a)
            assert _palette_colour(image.rgb()) == colour


def test_labels_agree_with_object_label_and_audit_counts():
    for vqa_id, item in scenes._easyvqa("test").items():
        shape, colour, _ = scenes._labels("test")[vqa_id]
        for got, words in ((shape, SHAPES), (colour, COLOURS)):
            ref = easyvqa.object_label(item, words)
            if ref is not None:
                assert got == words[ref], vqa_id
    audit = scenes.audit_cutouts("test")
    assert audit["images"] == 1000
    assert audit["usable"] + sum(v for k, v in audit.items() if k.startswith("refused")) == 1000
    assert audit["usable"] == 771 and audit["refused: touches the border"] == 117
    assert all(len(scenes._pool("test")[(s, c)]) >= 10 for s in SHAPES for c in COLOURS)


# ---------------------------------------------------------------------------------------------------- geometry
def test_objects_inside_frame_apart_and_sized(items):
    for its in items.values():
        for it in its:
            width, height = it.size
            assert it.size in scenes.FRAME_SIZES and 1 <= len(it.objects) <= 3
            x0, y0, x1, y1 = it.crop
            assert 0 <= x0 < x1 and 0 <= y0 < y1
            boxes = [o.box for o in it.objects]
            for bx0, by0, bx1, by1 in boxes:
                assert 0 <= bx0 < bx1 <= width and 0 <= by0 < by1 <= height
                assert 0.03 * width <= bx1 - bx0 <= 0.12 * width
                assert by1 - by0 <= 0.12 * width
            for i, a in enumerate(boxes):
                for b in boxes[i + 1 :]:
                    assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (it.name, a, b)


def test_rendered_objects_match_their_specs(items):
    """Pixels: each object's mask lies in its box, has its exact palette colour inside, and no two overlap."""
    for it in items["test"][:12] + items["train"][:12]:
        rgb, index_map = it.render()
        assert index_map.max() == len(it.objects)
        for k, obj in enumerate(it.objects, start=1):
            ys, xs = np.nonzero(index_map == k)
            assert ys.size > 0
            x0, y0, x1, y1 = obj.box
            assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
            inside = rgb[ys, xs]
            exact = (inside == np.array(PALETTE[obj.color])).all(-1).mean()
            assert exact > 0.5, (it.name, obj, exact)


def _reference_resize(src, out_w, out_h, bits, inset=0):
    one = 1 << bits

    def taps(n_out, length):
        n = length - 2 * inset
        pos = [((2 * i + 1) * n * one) // (2 * n_out) - one // 2 + inset * one for i in range(n_out)]
        pos = [min(max(p, 0), (length - 1) * one) for p in pos]
        return [(p // one, min(p // one + 1, length - 1), p % one) for p in pos]

    s = src.astype(np.int64)
    out = np.zeros((out_h, out_w) + src.shape[2:], dtype=np.int64)
    for y, (y0, y1, wy) in enumerate(taps(out_h, src.shape[0])):
        for x, (x0, x1, wx) in enumerate(taps(out_w, src.shape[1])):
            top = s[y0, x0] * (one - wx) + s[y0, x1] * wx
            bottom = s[y1, x0] * (one - wx) + s[y1, x1] * wx
            out[y, x] = (top * (one - wy) + bottom * wy + one * one // 2) // (one * one)
    return out.astype(np.uint8)


def test_integer_resize_matches_a_plain_reference():
    rng = np.random.default_rng(3)
    src = rng.integers(0, 256, size=(9, 13, 3), dtype=np.uint8)
    for out_w, out_h in ((31, 20), (13, 9), (8, 6)):
        for bits in (4, 8):
            got = scenes._resize_bilinear(src, out_w, out_h, bits=bits)
            assert np.array_equal(got, _reference_resize(src, out_w, out_h, bits))
            mirrored = scenes._resize_bilinear(src, out_w, out_h, bits=bits, mirror=True)
            assert np.array_equal(mirrored, got[:, ::-1])
    assert np.array_equal(scenes._resize_bilinear(src, 13, 9), src)
    alpha = np.pad(rng.integers(0, 256, size=(5, 7), dtype=np.uint8), 1)
    assert np.array_equal(
        scenes._resize_bilinear(alpha, 20, 15, bits=8, inset=1), _reference_resize(alpha, 20, 15, 8, inset=1)
    )


# --------------------------------------------------------------------------------------------------- questions
def _resolve(ref: str, objects) -> int:
    """The index of the one object ``ref`` names ("circle", "red shape", "red circle"); fails unless unique."""
    words = ref.split()
    if len(words) == 1:
        hits = [k for k, o in enumerate(objects) if o.shape == words[0]]
    elif words[1] == "shape":
        hits = [k for k, o in enumerate(objects) if o.color == words[0]]
    else:
        assert len(words) == 2 and words[0] in COLOURS and words[1] in SHAPES, ref
        hits = [k for k, o in enumerate(objects) if (o.color, o.shape) == tuple(words)]
    assert len(hits) == 1, f"{ref!r} names {len(hits)} objects"
    return hits[0]


def _expected(question: str, qtype: str, objects, width: int) -> str:
    tokens = question.rstrip("?").split()
    shapes, colours = [o.shape for o in objects], [o.color for o in objects]
    if qtype in ("color_presence", "shape_presence"):
        words, present = (COLOURS, colours) if qtype == "color_presence" else (SHAPES, shapes)
        named = [w for w in words if w in tokens]
        assert len(named) == 1
        negated = "not" in tokens or tokens[:2] == ["is", "no"]
        return "yes" if (named[0] in present) != negated else "no"
    if qtype == "shape":
        m = re.fullmatch(r"what is the (\w+) shape\?", question)
        if m:
            return objects[_resolve(f"{m[1]} shape", objects)].shape
        assert len(objects) == 1, question
        return shapes[0]
    if qtype == "color":
        m = re.fullmatch(r"what (?:color is|is the color of) the (\w+)\?", question)
        if m and m[1] != "shape":
            return objects[_resolve(m[1], objects)].color
        assert len(objects) == 1, question
        return colours[0]
    if qtype == "count":
        assert re.fullmatch(r"how many shapes are (there|in the image)\?", question)
        return str(len(objects))

    def left_of(a, b):  # every column of a left of every column of b
        assert a.box[2] <= b.box[0] or b.box[2] <= a.box[0], "column ranges overlap"
        return a.box[2] <= b.box[0]

    if m := re.fullmatch(r"is the (.+) on the left or the right\?", question):
        box = objects[_resolve(m[1], objects)].box
        assert box[2] <= width / 2 or box[0] >= width / 2, "object across the middle"
        return "left" if box[2] <= width / 2 else "right"
    if m := re.fullmatch(r"is the (.+) left or right of the (.+)\?", question):
        a, b = objects[_resolve(m[1], objects)], objects[_resolve(m[2], objects)]
        assert a is not b
        return "left" if left_of(a, b) else "right"
    m = re.fullmatch(r"is the (.+) to the (left|right) of the (.+)\?", question)
    assert m and qtype == "left_of", question
    a, b = objects[_resolve(m[1], objects)], objects[_resolve(m[3], objects)]
    assert a is not b
    return "yes" if left_of(a, b) == (m[2] == "left") else "no"


def _template_regex(template: str) -> str:
    pattern = re.escape(template)
    for field, alternatives in (("color", COLOURS), ("shape", SHAPES)):
        pattern = pattern.replace(re.escape("{" + field + "}"), "(" + "|".join(alternatives) + ")")
    ref = rf"(?:(?:{'|'.join(COLOURS)}) )?(?:{'|'.join(SHAPES)}|shape)"
    return pattern.replace(re.escape("{a}"), ref).replace(re.escape("{b}"), ref)


def test_every_answer_is_true_of_the_objects(items):
    checked = 0
    for its in items.values():
        for it in its:
            # presence and count always; shape/colour/position where the scene allows one
            assert len(it.questions) == len(it.answers) == len(it.question_types) >= 3
            assert len(set(it.question_types)) == len(it.question_types)
            for q, a, t in zip(it.questions, it.answers, it.question_types):
                assert any(re.fullmatch(_template_regex(tp), q) for tp in TEMPLATES[t]), (t, q)
                assert a in scenes.ANSWERS
                assert _expected(q, t, it.objects, it.size[0]) == a, (it.name, q, a, it.objects)
                checked += 1
    assert checked > 9000


def test_answer_balance_within_bounds(items):
    for split, its in items.items():
        balance = scenes.answer_balance(its)
        assert set(balance) == set(scenes.QUESTION_TYPES)
        bounds = {
            "color_presence": (0.45, 0.55),
            "shape_presence": (0.45, 0.55),
            "side": (0.45, 0.55),
            "left_of": (0.44, 0.56),
            "count": (0.29, 0.38),
            "shape": (0.28, 0.39),
            "color": (0.08, 0.17),
        }
        expected_answers = {
            "color_presence": {"yes", "no"},
            "shape_presence": {"yes", "no"},
            "left_of": {"yes", "no"},
            "side": set(scenes.SIDES),
            "count": set(scenes.COUNT_WORDS),
            "shape": set(SHAPES),
            "color": set(COLOURS),
        }
        for qtype, answers in balance.items():
            assert set(answers) == expected_answers[qtype], (split, qtype)
            total = sum(answers.values())
            lo, hi = bounds[qtype]
            for answer, n in answers.items():
                assert lo <= n / total <= hi, (split, qtype, answer, n / total)
        # no template gives its answer away: each yes/no template is near 50/50 on its own
        per_template = {}
        for it in its:
            for q, a, t in zip(it.questions, it.answers, it.question_types):
                if t.endswith("presence"):
                    key = re.sub(r"\b(" + "|".join(COLOURS + SHAPES) + r")\b", "X", q)
                    per_template.setdefault(key, []).append(a == "yes")
        assert len(per_template) == 16
        for key, yes in per_template.items():
            assert 0.3 <= np.mean(yes) <= 0.7, (split, key, np.mean(yes), len(yes))


# --------------------------------------------------------------------------------------------------------- CLI
def test_cli_writes_pngs_jsonl_and_llava_json(tmp_path, capsys):
    assert scenes.main(["--split", "test", "--n", "3", "--seed", "2", "--size", "640x480", "--out", str(tmp_path)]) == 0
    its = scenes.load_split("test", 3, seed=2, sizes=((640, 480),))
    pngs = sorted((tmp_path / "images").glob("*.png"))
    assert [p.stem for p in pngs] == [it.name for it in its]
    rows = [json.loads(line) for line in (tmp_path / "questions.jsonl").read_text().splitlines()]
    assert [(r["question"], r["answer"], r["question_type"]) for r in rows] == [
        qa for it in its for qa in zip(it.questions, it.answers, it.question_types)
    ]
    assert all((tmp_path / r["image"]).is_file() for r in rows)
    llava = json.loads((tmp_path / "llava.json").read_text())
    assert len(llava) == len(rows) and len({e["id"] for e in llava}) == len(llava)
    first = llava[0]
    assert set(first) == {"id", "image", "conversations"} and first["image"] == rows[0]["image"]
    assert first["conversations"] == [
        {"from": "human", "value": "<image>\n" + rows[0]["question"]},
        {"from": "gpt", "value": rows[0]["answer"]},
    ]
    specs = [json.loads(line) for line in (tmp_path / "scenes.jsonl").read_text().splitlines()]
    assert [s["objects"][0]["box"] for s in specs] == [list(it.objects[0].box) for it in its]
    assert "3 scenes" in capsys.readouterr().out
