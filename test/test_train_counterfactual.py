"""Counterfactual yes/no questions (train.counterfactual): every rewrite is true of the image, the rate is as asked."""

from __future__ import annotations

import pytest

from tofc_ros.data.easyvqa import COLOURS, SHAPES, load_split, object_label
from tofc_ros.train.counterfactual import Counterfactuals, swap_probability


def _names_object(question: str, answer: str, item) -> bool | None:
    """Whether a yes/no question's word is the object's (None: no labelled word); asserts the answer is true."""
    words = question.rstrip("?").split()
    for vocab in (SHAPES, COLOURS):
        named = [w for w in vocab if w in words]
        label = object_label(item, vocab)
        if named and label is not None:
            present = named[0] == vocab[label]
            negated = "not" in words or "no" in words
            assert (answer == "yes") == (present != negated), (item.image_id, question, answer)
            return present
    return None


def test_rewritten_answers_are_true_and_the_share_is_balanced():
    train = load_split("train")[:1500]
    rewrite = Counterfactuals(0.5, seed=3)
    before = [0, 0]
    after = [0, 0]
    changed = 0
    for step, item in enumerate(train):
        qs, ans = rewrite.questions(item, step)
        assert len(qs) == len(item.questions) and len(ans) == len(item.answers)
        for q0, a0, q, a in zip(item.questions, item.answers, qs, ans):
            if a0 not in ("yes", "no"):
                assert (q, a) == (q0, a0)  # only yes/no questions are touched
                continue
            changed += q != q0
            assert (q == q0) == (a == a0)  # a swapped word always flips the answer
            for tally, (qq, aa) in ((before, (q0, a0)), (after, (q, a))):
                hit = _names_object(qq, aa, item)
                if hit is not None:
                    tally[hit] += 1
    assert changed > 1000
    assert before[1] / sum(before) < 0.2  # easy-vqa: 1 in 8 colours, 1 in 3 shapes
    assert after[1] / sum(after) == pytest.approx(0.5, abs=0.03)


def test_rewrites_are_seeded_and_rate_zero_changes_nothing():
    item = load_split("train")[0]
    a, b = Counterfactuals(0.5, seed=1), Counterfactuals(0.5, seed=1)
    assert [a.questions(item, s) for s in range(20)] == [b.questions(item, s) for s in range(20)]
    assert len({a.questions(item, s) for s in range(20)}) > 1  # differs from step to step
    assert Counterfactuals(0.0).questions(item, 0) == (item.questions, item.answers)


def test_swap_probability():
    assert swap_probability(0.5, 8) == pytest.approx(3 / 7)
    assert swap_probability(0.5, 3) == pytest.approx(0.25)
    assert swap_probability(0.1, 8) == 0.0  # below the base rate: no swaps (never fewer matches than easy-vqa)
    with pytest.raises(ValueError, match="match_rate"):
        swap_probability(1.5, 8)
