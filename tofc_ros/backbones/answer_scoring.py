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

A multi-turn conversation (LLaVA's instruction format: ``dialogue=True`` for that image) is one row whose suffix holds
every turn as the chat template renders it, each answer scored given the reference answers before it
(``ServerHalf.conversation_ids``). ``share_prefix=False`` runs each row as one whole sequence instead
(head + image + suffix, right-padded to the longest row with an attention mask): what gradient checkpointing needs,
since it drops the KV cache. Images of any size mix in one batch either way: rows sharing a prefix are grouped by
its length M, whole sequences are padded.

Prompt tokens come from ``ServerHalf.conversation_ids`` (the serving code), never re-implemented here.

Dimension legend: B images, Q questions (image-major), R rows (one per question, or one per conversation), P prefix
length, S suffix length (padded), D LM width, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .server_half import IGNORE_INDEX, ServerHalf

__all__ = ["PromptCache", "AnswerLogits", "answer_logits", "answer_stats", "answer_token_stats"]

Turns = tuple[tuple[str, str | None], ...]


class PromptCache:
    """Prompt token ids split into the question-independent head and each conversation's suffix (from ServerHalf).

    ``conversation_ids(turns, M)`` = head + M image tokens + suffix(turns). The split is checked for every new
    conversation: a template that put question-dependent text before the image would make prefix sharing wrong, so it
    raises instead.
    """

    def __init__(self, server: ServerHalf, max_entries: int = 100_000):
        self.server = server
        self.max_entries = max_entries  # a bound: a 665K-record data set must not keep every conversation's ids
        self._seq: dict[Turns, tuple[torch.Tensor, torch.Tensor]] = {}
        self._head: torch.Tensor | None = None

    @property
    def head(self) -> torch.Tensor:
        """Token ids [H] before the image tokens."""
        if self._head is None:
            self.sequence((("?", None),))
        return self._head

    def sequence(self, turns: Turns) -> tuple[torch.Tensor, torch.Tensor]:
        """(suffix ids [S], turn of each position [S]: k at turn k's answer tokens and EOS, -1 elsewhere)."""
        turns = tuple((q, a) for q, a in turns)
        if turns not in self._seq:
            conv = self.server.conversation_ids(turns, 1)
            pos = (conv.input_ids == self.server.spec.image_token_id).nonzero()
            first, last = int(pos[0, 0]), int(pos[-1, 0])
            head = conv.input_ids[:first]
            if self._head is None:
                self._head = head
            elif not torch.equal(head, self._head):
                raise ValueError("the chat template puts question-dependent tokens before the image: cannot share it")
            if len(self._seq) >= self.max_entries:
                del self._seq[next(iter(self._seq))]  # the oldest entry
            self._seq[turns] = (conv.input_ids[last + 1 :], conv.turns[last + 1 :])
        return self._seq[turns]

    def suffix(self, question: str, answer: str | None) -> tuple[torch.Tensor, int]:
        """(suffix ids [S], number of answer tokens at its end including EOS; 0 without an answer)."""
        ids, turn = self.sequence(((question, answer),))
        return ids, int((turn >= 0).sum())

    def scored_tokens(self, questions: Sequence[str], answers: Sequence[str], dialogue: bool = False) -> int:
        """How many tokens ``answer_logits`` scores for one image's questions (no model run: tokenization only)."""
        if dialogue:
            return int((self.sequence(tuple(zip(questions, answers)))[1] >= 0).sum())
        return sum(self.suffix(q, a)[1] for q, a in zip(questions, answers))


@dataclass(frozen=True, eq=False)
class AnswerLogits:
    """Teacher-forced logits of every row's suffix.

    Attributes:
        logits: [R, S, V] (padded positions hold garbage: use ``targets``).
        targets: [R, S] long, the token position s must predict, IGNORE_INDEX where nothing is scored.
        segments: [R, S] long, which turn of the row position s scores (0 for a single question), -1 where unscored.
        rows: [Q] long, the row of each question (image-major order).
        turns: [Q] long, the segment of each question within its row.
    """

    logits: torch.Tensor
    targets: torch.Tensor
    segments: torch.Tensor
    rows: torch.Tensor
    turns: torch.Tensor


def _rows(prompts: PromptCache, questions, answers, dialogue):
    """Per row: (image b, suffix ids, turn of each id); per question: (row, segment)."""
    rows, owners = [], []
    for b, (qs, ans) in enumerate(zip(questions, answers)):
        if len(qs) != len(ans) or not qs:
            raise ValueError(f"image {b}: needs ≥ 1 question and one answer per question")
        if dialogue is not None and dialogue[b]:
            ids, turn = prompts.sequence(tuple(zip(qs, ans)))
            owners += [(len(rows), k) for k in range(len(qs))]
            rows.append((b, ids, turn))
        else:
            for q, a in zip(qs, ans):
                ids, turn = prompts.sequence(((q, a),))
                owners.append((len(rows), 0))
                rows.append((b, ids, turn))
    return rows, owners


def _targets(ids: torch.Tensor, turn: torch.Tensor, s_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Position j predicts token j+1: targets and segments [S_max] of one suffix."""
    targets = torch.full((s_max,), IGNORE_INDEX, dtype=torch.long)
    segments = torch.full((s_max,), -1, dtype=torch.long)
    s = int(ids.numel())
    scored = turn[1:] >= 0
    targets[: s - 1] = torch.where(scored, ids[1:], IGNORE_INDEX)
    segments[: s - 1] = torch.where(scored, turn[1:], -1)
    return targets, segments


def answer_logits(
    server: ServerHalf,
    prompts: PromptCache,
    image_embeds: Sequence[torch.Tensor],
    questions: Sequence[Sequence[str]],
    answers: Sequence[Sequence[str]],
    *,
    dialogue: Sequence[bool] | None = None,
    share_prefix: bool = True,
) -> AnswerLogits:
    """Teacher-forced logits for B images' questions (differentiable w.r.t. the image embeddings and the LM).

    Args:
        server: the ServerHalf whose tokenizer and language model are used.
        prompts: a PromptCache of ``server``.
        image_embeds: B tensors [M_b, D] from ``server.image_embeddings``.
        questions, answers: B sequences of question / reference-answer strings.
        dialogue: per image, True when its questions are the turns of one conversation (each answer scored after
            the earlier turns); None: every question on its own.
        share_prefix: run each image's prefix once and its rows against the KV cache (False: whole sequences).

    Returns:
        AnswerLogits with Q = total number of questions, in image-major order.
    """
    if not (len(image_embeds) == len(questions) == len(answers)):
        raise ValueError("image_embeds, questions and answers must have the same length")
    if dialogue is not None and len(dialogue) != len(questions):
        raise ValueError("dialogue must give one flag per image")
    rows, owners = _rows(prompts, questions, answers, dialogue)
    lm = server.language_model
    embed = lm.get_input_embeddings()
    device = embed.weight.device
    head_emb = embed(prompts.head.to(device))  # [H, D]
    run = _shared_prefix if share_prefix else _whole_sequences
    logits = run(server, lm, embed, head_emb, image_embeds, rows)  # [R, S_max, V]
    s_all = logits.shape[1]
    tgt = [_targets(ids, turn, s_all) for _, ids, turn in rows]
    return AnswerLogits(
        logits,
        torch.stack([t for t, _ in tgt]).to(device),
        torch.stack([g for _, g in tgt]).to(device),
        torch.tensor([r for r, _ in owners], dtype=torch.long, device=device),
        torch.tensor([k for _, k in owners], dtype=torch.long, device=device),
    )


def _shared_prefix(server, lm, embed, head_emb, image_embeds, rows) -> torch.Tensor:
    device = head_emb.device
    groups: dict[int, list[int]] = {}  # images with the same prefix length run as one batch (no padding needed)
    for b, emb in enumerate(image_embeds):
        groups.setdefault(int(emb.shape[0]), []).append(b)
    by_image: dict[int, list[int]] = {}
    for r, (b, _, _) in enumerate(rows):
        by_image.setdefault(b, []).append(r)
    results: dict[int, torch.Tensor] = {}  # row -> logits [S, V]
    pad_id = server._pad_id()
    for members in groups.values():
        members = [b for b in members if b in by_image]
        if not members:
            continue
        prefix = torch.cat(
            [head_emb.expand(len(members), -1, -1), torch.stack([image_embeds[b].to(head_emb.dtype) for b in members])],
            dim=1,
        )  # [G, P, D]
        p = prefix.shape[1]
        out = lm(inputs_embeds=prefix, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        owner = [g for g, b in enumerate(members) for _ in by_image[b]]
        row_ids = [r for b in members for r in by_image[b]]
        cache.batch_select_indices(torch.tensor(owner, device=device))
        n_q, s_max = len(row_ids), max(int(rows[r][1].numel()) for r in row_ids)
        suffix_ids = torch.full((n_q, s_max), pad_id, dtype=torch.long)
        attn = torch.ones(n_q, p + s_max, dtype=torch.long)
        for i, r in enumerate(row_ids):
            s = int(rows[r][1].numel())
            suffix_ids[i, :s] = rows[r][1]
            attn[i, p + s :] = 0  # right padding: later than every real token, so causally invisible anyway
        positions = torch.arange(p, p + s_max).expand(n_q, -1)
        logits = lm(
            inputs_embeds=embed(suffix_ids.to(device)),
            attention_mask=attn.to(device),
            position_ids=positions.to(device),
            past_key_values=cache,
            use_cache=True,
        ).logits
        for i, r in enumerate(row_ids):
            results[r] = logits[i]
    s_all = max(lg.shape[0] for lg in results.values())
    return torch.stack([F.pad(results[r], (0, 0, 0, s_all - results[r].shape[0])) for r in range(len(rows))])


def _whole_sequences(server, lm, embed, head_emb, image_embeds, rows) -> torch.Tensor:
    """Each row as [head | image | suffix], right-padded; the LM head runs on the suffix positions only."""
    device = head_emb.device
    h = head_emb.shape[0]
    seqs, starts, lengths = [], [], []
    for b, ids, _ in rows:
        img = image_embeds[b].to(head_emb.dtype)
        seqs.append(torch.cat([head_emb, img, embed(ids.to(device))]))
        starts.append(h + img.shape[0])
        lengths.append(int(ids.numel()))
    longest = max(s.shape[0] for s in seqs)
    embeds = head_emb.new_zeros(len(seqs), longest, head_emb.shape[1])
    mask = torch.zeros(len(seqs), longest, dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        embeds[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = 1
    hidden = lm.model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
    s_max = max(lengths)
    index = torch.tensor(starts, device=device)[:, None] + torch.arange(s_max, device=device)[None]  # [R, S_max]
    index = index.clamp(max=longest - 1)  # positions past a row's end are padding: never scored
    picked = torch.gather(hidden, 1, index[..., None].expand(-1, -1, hidden.shape[-1]))
    return lm.lm_head(picked)


def answer_token_stats(scores: AnswerLogits) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Summed cross-entropy over scored tokens, their number, and greedy exact match per question.

    Greedy decoding returns the reference answer exactly iff at every answer position (and at the EOS) the argmax of
    the teacher-forced logits is the reference token: until the first disagreement greedy decoding has produced the
    reference prefix, so its logits are these. ``correct`` is therefore the exact-match accuracy of greedy generation
    (token-exact; ``test_pipeline_objects.py`` checks it against ``ServerHalf.answer``). In a conversation each turn
    is judged given the reference turns before it.

    Returns:
        (cross-entropy sum: scalar, scored tokens N, correct: [Q] bool).
    """
    scored = scores.targets != IGNORE_INDEX
    ce = F.cross_entropy(scores.logits[scored].float(), scores.targets[scored], reduction="sum")
    wrong = scored & (scores.logits.argmax(-1) != scores.targets)
    n_seg = int(scores.segments.max()) + 1 if scored.any() else 1
    rows = torch.arange(scores.targets.shape[0], device=scored.device)[:, None].expand_as(scored)
    keys = (rows * n_seg + scores.segments.clamp(min=0))[scored]
    wrong_per = torch.zeros(scores.targets.shape[0] * n_seg, dtype=torch.long, device=scored.device)
    wrong_per.index_add_(0, keys, wrong[scored].long())
    hit = wrong_per[scores.rows * n_seg + scores.turns] == 0
    return ce, int(scored.sum()), hit


def answer_stats(scores: AnswerLogits) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over scored tokens and greedy exact match per question (see ``answer_token_stats``).

    Returns:
        (mean cross-entropy over scored tokens: scalar, correct: [Q] bool).
    """
    ce, n, hit = answer_token_stats(scores)
    return ce / max(n, 1), hit
