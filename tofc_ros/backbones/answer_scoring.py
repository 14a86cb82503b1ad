"""All questions about one image in one language-model pass over the image, exactly equal to one pass per question.

Every question about an image has the same prompt prefix (chat scaffolding + the M image tokens); only the text after
the image differs. In a causal LM the prefix's keys and values never depend on what follows, so we run the prefix once
per image (plain causal attention: the fast kernel), keep its KV cache, and run the question/answer suffixes as a
batch that attends to that cache::

    image b:   [ head tokens | M image embeddings ]  ──LM, use_cache──►  KV_b (P positions)
    question q of image b:   KV_b + [ question tokens + answer tokens + EOS ] at positions P … P+S-1  ──► logits

Each suffix token sees exactly the keys, values and positions it sees in ``ServerHalf.logits(features, grid,
image_size, question, answer)``, so the logits agree to float rounding (``test_pipeline_objects.py`` checks it against
that path). With uncompressed features (M = 1485 for a 64×64 easy-vqa image) this is one pass instead of ~10.

Prompt tokens come from ``ServerHalf.prompt_ids`` (the serving code), never re-implemented here.

Dimension legend: B images, Q questions (image-major), P prefix length, S suffix length (padded), D LM width,
V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .server_half import IGNORE_INDEX, ServerHalf

__all__ = ["PromptCache", "AnswerLogits", "answer_logits", "answer_stats"]


class PromptCache:
    """Prompt token ids split into the question-independent head and each question's suffix (from ServerHalf).

    ``prompt_ids(question, M)`` = head + M image tokens + suffix(question). The split is checked for every new
    question: a template that put question-dependent text before the image would make prefix sharing wrong, so it
    raises instead.
    """

    def __init__(self, server: ServerHalf):
        self.server = server
        self._suffix: dict[tuple[str, str | None], tuple[torch.Tensor, int]] = {}
        self._head: torch.Tensor | None = None

    def _split(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pos = (ids == self.server.spec.image_token_id).nonzero()
        first, last = int(pos[0, 0]), int(pos[-1, 0])
        return ids[:first], ids[last + 1 :]

    @property
    def head(self) -> torch.Tensor:
        """Token ids [H] before the image tokens."""
        if self._head is None:
            self.suffix("?", None)
        return self._head

    def suffix(self, question: str, answer: str | None) -> tuple[torch.Tensor, int]:
        """(suffix ids [S], number of answer tokens at its end including EOS; 0 without an answer)."""
        key = (question, answer)
        if key not in self._suffix:
            head, tail = self._split(self.server.prompt_ids(question, 1))
            if self._head is None:
                self._head = head
            elif not torch.equal(head, self._head):
                raise ValueError("the chat template puts question-dependent tokens before the image: cannot share it")
            n_ans = 0
            if answer is not None:
                if not isinstance(answer, str):
                    raise TypeError(f"answer must be a str, got {type(answer).__name__}")
                ans = self.server.tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
                ans = torch.cat([ans, ans.new_tensor([self.server._eos_ids()[0]])])
                tail = torch.cat([tail, ans])
                n_ans = int(ans.numel())
            self._suffix[key] = (tail, n_ans)
        return self._suffix[key]


@dataclass(frozen=True, eq=False)
class AnswerLogits:
    """Teacher-forced logits of every question's suffix.

    Attributes:
        logits: [Q, S, V] (padded positions hold garbage: use ``targets``).
        targets: [Q, S] long, the token position s must predict, IGNORE_INDEX where nothing is scored.
    """

    logits: torch.Tensor
    targets: torch.Tensor


def answer_logits(
    server: ServerHalf,
    prompts: PromptCache,
    image_embeds: Sequence[torch.Tensor],
    questions: Sequence[Sequence[str]],
    answers: Sequence[Sequence[str]],
) -> AnswerLogits:
    """Teacher-forced logits for B images' questions (differentiable w.r.t. the image embeddings and the LM).

    Args:
        server: the ServerHalf whose tokenizer and language model are used.
        prompts: a PromptCache of ``server``.
        image_embeds: B tensors [M_b, D] from ``server.image_embeddings``.
        questions, answers: B sequences of question / reference-answer strings.

    Returns:
        AnswerLogits with Q = total number of questions, in image-major order.
    """
    if not (len(image_embeds) == len(questions) == len(answers)):
        raise ValueError("image_embeds, questions and answers must have the same length")
    lm = server.language_model
    embed = lm.get_input_embeddings()
    device = embed.weight.device
    head = prompts.head.to(device)
    head_emb = embed(head)  # [H, D]
    groups: dict[int, list[int]] = {}  # images with the same prefix length run as one batch (no padding needed)
    for b, (emb, qs, ans) in enumerate(zip(image_embeds, questions, answers)):
        if len(qs) != len(ans) or not qs:
            raise ValueError(f"image {b}: needs ≥ 1 question and one answer per question")
        groups.setdefault(int(emb.shape[0]), []).append(b)
    q_offset = [0]
    for qs in questions:
        q_offset.append(q_offset[-1] + len(qs))
    results: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # question index -> (logits [S, V], targets [S])
    for _m, members in groups.items():
        prefix = torch.cat(
            [head_emb.expand(len(members), -1, -1), torch.stack([image_embeds[b].to(head_emb.dtype) for b in members])],
            dim=1,
        )  # [G, P, D]
        p = prefix.shape[1]
        out = lm(inputs_embeds=prefix, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        owner, ids_list, n_ans_list, q_index = [], [], [], []
        for g, b in enumerate(members):
            for k, (q, a) in enumerate(zip(questions[b], answers[b])):
                ids, n_ans = prompts.suffix(q, a)
                owner.append(g)
                ids_list.append(ids)
                n_ans_list.append(n_ans)
                q_index.append(q_offset[b] + k)
        cache.batch_select_indices(torch.tensor(owner, device=device))
        n_q, s_max = len(ids_list), max(int(i.numel()) for i in ids_list)
        pad_id = server._pad_id()
        suffix_ids = torch.full((n_q, s_max), pad_id, dtype=torch.long)
        attn = torch.ones(n_q, p + s_max, dtype=torch.long)
        targets = torch.full((n_q, s_max), IGNORE_INDEX, dtype=torch.long)
        for i, (ids, n_ans) in enumerate(zip(ids_list, n_ans_list)):
            s = int(ids.numel())
            suffix_ids[i, :s] = ids
            attn[i, p + s :] = 0  # right padding: later than every real token, so causally invisible anyway
            if n_ans:
                # Position j predicts token j+1: the last prompt token predicts the first answer token, and so on.
                targets[i, s - n_ans - 1 : s - 1] = ids[s - n_ans :]
        positions = torch.arange(p, p + s_max).expand(n_q, -1)
        logits = lm(
            inputs_embeds=embed(suffix_ids.to(device)),
            attention_mask=attn.to(device),
            position_ids=positions.to(device),
            past_key_values=cache,
            use_cache=True,
        ).logits
        for i, qi in enumerate(q_index):
            results[qi] = (logits[i], targets[i])
    s_all = max(r[0].shape[0] for r in results.values())
    order = [results[i] for i in range(q_offset[-1])]
    logits = torch.stack([F.pad(lg, (0, 0, 0, s_all - lg.shape[0])) for lg, _ in order])
    targets = torch.stack([F.pad(t, (0, s_all - t.shape[0]), value=IGNORE_INDEX) for _, t in order]).to(device)
    return AnswerLogits(logits, targets)


def answer_stats(scores: AnswerLogits) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy and greedy exact match from teacher-forced logits.

    Greedy decoding returns the reference answer exactly iff at every answer position (and at the EOS) the argmax of
    the teacher-forced logits is the reference token: until the first disagreement greedy decoding has produced the
    reference prefix, so its logits are these. ``correct`` is therefore the exact-match accuracy of greedy generation
    (token-exact; ``test_pipeline_objects.py`` checks it against ``ServerHalf.answer``).

    Returns:
        (mean cross-entropy over scored tokens: scalar, correct: [Q] bool).
    """
    scored = scores.targets != IGNORE_INDEX
    ce = F.cross_entropy(scores.logits[scored].float(), scores.targets[scored])
    hit = (scores.logits.argmax(-1) == scores.targets) | ~scored
    return ce, hit.all(-1)
