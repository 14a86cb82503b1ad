"""Counterfactual yes/no questions: re-balance easy-vqa's "is there a <word> ...?" questions during training.

easy-vqa names a random colour (1 in 8 is the object's) or shape (1 in 3) in its yes/no questions, so answering from
the base rate alone ("is there a red shape?" → no) is right 7 times in 8. A small LM settles there and never learns
to compare the question's word with the image (bundled model before this: 42.7 % on "is there a *colour* shape?" →
yes, 0 % on "is there not a *colour* shape?" → no; everything else ≥ 99.6 %).

The fix uses only the training split's own labels: in a yes/no question whose word is *not* the object's, swapping
that word for the object's word flips the answer, for every template ("is there a blue shape? → no" becomes "is there
a red shape? → yes"; "is there not a blue shape? → yes" becomes "is there not a red shape? → no"). Done with
probability p per question so that a share ``match_rate`` of the yes/no questions names the object; with a uniform
base rate 1/n, p = (match_rate − 1/n) / (1 − 1/n). The test split is never touched.
"""

from __future__ import annotations

import random

from tofc_ros.data.easyvqa import COLOURS, SHAPES, VQAImage, object_label

__all__ = ["swap_probability", "Counterfactuals"]

_FLIP = {"yes": "no", "no": "yes"}


def swap_probability(match_rate: float, n_words: int) -> float:
    """Probability of swapping a non-matching word so that ``match_rate`` of the questions name the object."""
    if not 0.0 <= match_rate <= 1.0:
        raise ValueError(f"match_rate must be in [0, 1], got {match_rate}")
    base = 1.0 / n_words
    return max(0.0, (match_rate - base) / (1.0 - base))


class Counterfactuals:
    """Rewrites a training image's yes/no questions (seeded, per call).

    Args:
        match_rate: target share of yes/no questions whose word is the object's (0.5: balanced).
        seed: seeds the swap decisions; ``questions(item, key)`` is a pure function of (seed, key, item).
    """

    def __init__(self, match_rate: float, seed: int = 0):
        self.seed = seed
        self._p = {
            SHAPES: swap_probability(match_rate, len(SHAPES)),
            COLOURS: swap_probability(match_rate, len(COLOURS)),
        }

    def questions(self, item: VQAImage, key: int | str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(questions, answers) of ``item`` with some non-matching yes/no words swapped for the object's.

        ``key`` (e.g. the training stage and step) picks the draw: other keys, other swaps.
        """
        rng = random.Random(f"{self.seed}/{key}/{item.image_id}")
        qs, ans = list(item.questions), list(item.answers)
        labels = {words: object_label(item, words) for words in (SHAPES, COLOURS)}
        for i, (q, a) in enumerate(zip(qs, ans)):
            if a not in _FLIP:
                continue
            tokens = q.rstrip("?").split()
            for words in (SHAPES, COLOURS):
                named = [k for k, w in enumerate(words) if w in tokens]
                label = labels[words]
                if len(named) != 1 or label is None or named[0] == label:
                    continue
                if rng.random() < self._p[words]:
                    tokens[tokens.index(words[named[0]])] = words[label]
                    qs[i], ans[i] = " ".join(tokens) + "?", _FLIP[a]
        return tuple(qs), tuple(ans)
