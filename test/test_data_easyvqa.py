"""easy-vqa adapter: split sizes, answers, the limit slice, image decoding."""

import numpy as np
import pytest

from tofc_ros.data.easyvqa import answers, load_split, num_questions


def test_answers_are_the_13_words():
    words = answers()
    assert len(words) == 13 and len(set(words)) == 13
    assert {"circle", "rectangle", "triangle", "yes", "no", "red", "blue"} <= set(words)


@pytest.mark.parametrize("split, images, questions", [("train", 4000, 38575), ("test", 1000, 9673)])
def test_split_counts_and_answers(split, images, questions):
    items = load_split(split)
    assert len(items) == images
    assert num_questions(items) == questions
    ids = [i.image_id for i in items]
    assert ids == sorted(ids) and len(set(ids)) == images
    vocab = set(answers())
    for item in items:
        assert len(item.questions) == len(item.answers) >= 1
        assert set(item.answers) <= vocab


def test_limit_counts_questions_in_image_major_order():
    full = load_split("test")
    part = load_split("test", 50)
    assert num_questions(part) == 50
    assert [i.image_id for i in part] == [i.image_id for i in full[: len(part)]]
    for a, b in zip(part[:-1], full):
        assert a == b
    last = part[-1]
    ref = full[len(part) - 1]
    assert last.questions == ref.questions[: len(last.questions)]
    with pytest.raises(ValueError):
        load_split("test", 0)
    with pytest.raises(ValueError):
        load_split("val")


def test_images_are_64x64_rgb():
    item = load_split("test", 1)[0]
    rgb = item.rgb()
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8


def test_object_labels_read_from_the_answers():
    from tofc_ros.data.easyvqa import COLOURS, SHAPES, object_label

    assert set(SHAPES) | set(COLOURS) | {"yes", "no"} == set(answers())
    train = load_split("train")
    first = train[0]  # "what is the blue shape? -> rectangle", "what color is the shape? -> blue"
    assert (SHAPES[object_label(first, SHAPES)], COLOURS[object_label(first, COLOURS)]) == ("rectangle", "blue")
    shape = [object_label(it, SHAPES) for it in train]
    colour = [object_label(it, COLOURS) for it in train]
    assert sum(s is not None for s in shape) == 3351 and sum(c is not None for c in colour) == 3392
    # Every direct answer agrees with the label, and no yes/no question contradicts it.
    for item, s, c in zip(train, shape, colour):
        for q, a in zip(item.questions, item.answers):
            words = q.rstrip("?").split()
            for vocab, label in ((SHAPES, s), (COLOURS, c)):
                if a in vocab:
                    assert vocab.index(a) == label
                named = [w for w in vocab if w in words]
                if label is not None and named and a in ("yes", "no"):
                    present = named[0] == vocab[label]
                    negated = "not" in words or "no" in words
                    assert (a == "yes") == (present != negated), (item.image_id, q, a)
