"""Server half: per-tile (merged) features → projector → token order → prompt → language model → answer.

    features [T, n, d] (+ grid, image size)        question text
      │ multi_modal_projector (per token)             │ chat template, one image placeholder
      ▼                                               ▼
    [T, n, D] ── arrange_image_tokens ──► [M, D]    placeholder expanded to exactly M image tokens → input_ids [L]
                                            └──────► scattered into embed_tokens(input_ids) at the image positions
                                                     ▼
                                        language model (*ForCausalLM) → logits [L, V] / generate → answer text

In feature mode the vision tower is not loaded; with ``load_vision=True`` the server can also take pixels (image
baselines) through the same DeviceHalf code the robot runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .device_half import DeviceHalf, VisionFeatures
from .evidence import answer_uncertainty, eager_attention, image_attention, token_uncertainty
from .spec import BackboneSpec
from .token_order import arrange_views, check_tile_features

__all__ = ["ConversationIds", "GenerationOptions", "GenerationResult", "PreparedInputs", "ServerHalf"]

IGNORE_INDEX = -100  # label value ignored by the cross-entropy loss (prompt and image positions)
_SENTINEL = "\u2063tofc-answer\u2063"  # stands in for an answer to find where a template's answer text ends


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding options. Greedy by default.

    Attributes:
        max_new_tokens: upper bound on generated tokens.
        do_sample: sample instead of greedy decoding.
        temperature, top_p, top_k: sampling parameters (used only when do_sample).
        seed: RNG seed for sampling (None: the global RNG); the global RNG state is left untouched when given.
        stop_strings: generation stops at the first of these; the answer is cut before it.
        repetition_penalty: 1.0 disables it.
    """

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop_strings: tuple[str, ...] = field(default_factory=tuple)
    repetition_penalty: float = 1.0

    def __post_init__(self):
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {self.max_new_tokens!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be ≥ 0, got {self.top_k}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if isinstance(self.stop_strings, str) or any(not isinstance(s, str) or not s for s in self.stop_strings):
            raise ValueError(f"stop_strings must be a tuple of non-empty strings, got {self.stop_strings!r}")


@dataclass(frozen=True, eq=False)
class GenerationResult:
    """One generated answer.

    Attributes:
        text: the answer (special tokens removed, cut at a stop string, stripped).
        token_ids: [G] generated ids (including a final EOS if one was produced).
        prompt_tokens: L, the prompt length including image tokens.
        image_tokens: M.
        stopped: generation was ended by ``should_stop`` (not by EOS or the token limit).
        uncertainty: the answer's min-entropy in nats (its least sure token's, EOS excluded; ``evidence``).
        token_uncertainty: [G, 3] per generated token: min-entropy, Shannon entropy, 1 - max p.
    """

    text: str
    token_ids: torch.Tensor
    prompt_tokens: int
    image_tokens: int
    stopped: bool = False
    uncertainty: float = float("nan")
    token_uncertainty: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class PreparedInputs:
    """The language model's input for one (image, question[, answer]).

    Attributes:
        input_ids: [L] token ids (image positions hold the image token id).
        inputs_embeds: [L, D] with the image embeddings scattered in.
        image_mask: [L] bool, True at the M image positions.
        labels: [L] answer ids at answer positions, IGNORE_INDEX elsewhere (all IGNORE_INDEX without an answer).
            Position i's label is the token at i; shift by one for next-token loss (as HF's loss does).
    """

    input_ids: torch.Tensor
    inputs_embeds: torch.Tensor
    image_mask: torch.Tensor
    labels: torch.Tensor


@dataclass(frozen=True, eq=False)
class ConversationIds:
    """A tokenized conversation about one image (``ServerHalf.conversation_ids``).

    Attributes:
        input_ids: [L] token ids (M image tokens where the template put the image).
        labels: [L] answer ids + EOS of every answered turn, IGNORE_INDEX elsewhere (unshifted, as PreparedInputs).
        turns: [L] long, the turn k of each labelled position, -1 elsewhere.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    turns: torch.Tensor


class ServerHalf:
    """Projector + token order + language model + tokenizer. Build with ``loading.load_server_half``.

    Args:
        spec: the checkpoint's BackboneSpec.
        projector: the checkpoint's multi_modal_projector.
        image_newline: [D] (OneVision) or None (LLaVA-1.5).
        language_model: a ``*ForCausalLM`` with the checkpoint's language-model weights.
        tokenizer: the checkpoint's tokenizer with a chat template.
        dtype, device: where and in what precision the modules live.
        vision: optional DeviceHalf for image mode.
        fingerprint: ``loading.backbone_fingerprint`` of the checkpoint; a payload with another one must be refused.
        vision_tails: {split layer X: ``vision_split.VisionTail``} for payloads cut inside the tower (AlignedVQ).
    """

    def __init__(
        self,
        spec: BackboneSpec,
        projector,
        image_newline,
        language_model,
        tokenizer,
        *,
        dtype,
        device,
        vision: DeviceHalf | None = None,
        fingerprint: str = "",
        vision_tails: dict | None = None,
    ):
        self.spec = spec
        self.projector = projector
        self.image_newline = image_newline
        self.language_model = language_model
        self.tokenizer = tokenizer
        self.dtype = dtype
        self.device = torch.device(device)
        self.vision = vision
        self.fingerprint = fingerprint
        self.vision_tails = dict(vision_tails or {})
        self.image_token = tokenizer.convert_ids_to_tokens(spec.image_token_id)
        if tokenizer.convert_tokens_to_ids(self.image_token) != spec.image_token_id:
            raise ValueError(f"tokenizer and config disagree on the image token id {spec.image_token_id}")

    # ----------------------------------------------------------------------------------------------- image side
    def encode_image(self, rgb: np.ndarray) -> VisionFeatures:
        """Image mode: run the vision tower on the server (requires ``load_vision=True``)."""
        if self.vision is None:
            raise RuntimeError("the vision tower is not loaded: load_server_half(..., load_vision=True)")
        return self.vision.encode_image(rgb)

    def finish_vision(self, hidden: torch.Tensor, split_layer: int) -> torch.Tensor:
        """The rest of the tower for a payload cut after ``split_layer`` layers: [T, N, d] → [T, n_v, d]
        (at the feature layer itself: the features unchanged)."""
        if split_layer == self.spec.vision_layers_needed:
            return hidden
        tail = self.vision_tails.get(split_layer)
        if tail is None:
            raise RuntimeError(
                f"features cut after vision layer {split_layer}: this server holds tails for "
                f"{sorted(self.vision_tails) or 'no split'} (load_server_half(..., vision_splits=[{split_layer}]))"
            )
        return tail(self._as_features(hidden))

    def image_embeddings(self, features, grid, image_size, detail: tuple | None = None) -> torch.Tensor:
        """Project per-tile features and arrange them in prompt order: [T, n, d] → [M, D].

        ``detail``: a second view (features, grid, image size) of the same frame, the robot's crop of where the model
        looked (two-stage answering), arranged after the first (token_order's regime 3).
        Differentiable with respect to the features (gradients flow when called outside inference mode).
        """
        views = []
        for feats, view_grid, size in [(features, grid, image_size), *([detail] if detail is not None else [])]:
            feats = self._as_features(feats)
            check_tile_features(self.spec, feats.shape[0], feats.shape[1], view_grid, size)
            views.append((self.projector(feats), view_grid, size))  # a per-token MLP: tile order is kept
        return arrange_views(self.spec, views, self.image_newline)

    # ---------------------------------------------------------------------------------------------- text side
    def prompt_ids(self, question: str, n_image_tokens: int, history: Sequence[tuple[str, str]] = ()) -> torch.Tensor:
        """Token ids of the chat prompt with exactly ``n_image_tokens`` image tokens: [L].

        The chat template renders one image placeholder (llava-hf convention); it is expanded here in the text, then
        the whole string is tokenized, which is what the llava-hf processors do. ``history``: earlier (question,
        answer) turns of the same conversation, rendered before ``question`` (see ``conversation_ids``).
        """
        return self.conversation_ids([*history, (question, None)], n_image_tokens).input_ids

    def conversation_ids(self, turns: Sequence[tuple[str, str | None]], n_image_tokens: int) -> ConversationIds:
        """Token ids and labels of a conversation about one image, through the model's own chat template.

        ::

            turns  (q_0, a_0) (q_1, a_1) … (q_K-1, a_K-1 | None)       the image goes with q_0
            text   template(user q_0 + image, gen prompt) ─ a_0 ─ EOS ─ template text to the next gen prompt ─ a_1 …
            ids    [ context (image placeholder → M image tokens) | a_0 ids, EOS | context | a_1 ids, EOS | … ]
            labels [ IGNORE …                                      | a_0 ids, EOS | IGNORE  | a_1 ids, EOS | … ]

        Each answer follows the *generation prompt* of its turn and is tokenized on its own, then EOS: exactly what
        greedy generation after that prompt produces, what serving sees and what ``prepare_inputs(answer=...)``
        labels (some templates render a finished assistant turn a little differently from their generation prompt:
        llava-onevision-hf's writes "assistant \\n" where its prompt has "assistant\\n"; the generation form is the
        one the model is asked in). The text between an answer and the next turn's generation prompt is the
        template's own: what it renders after the answer (a leading EOS, e.g. Qwen2's <|im_end|>, is the EOS
        already there), then the next user turn. A template that does not render the next turn after the finished
        earlier ones is refused.

        Args:
            turns: (user text, assistant answer) pairs; only the last answer may be None (the ids then end with the
                generation prompt: the prompt to answer that question).
            n_image_tokens: M.

        Returns:
            ConversationIds with input_ids, labels and the turn of every labelled position.
        """
        if n_image_tokens < 1:
            raise ValueError(f"n_image_tokens must be ≥ 1, got {n_image_tokens}")
        if not turns:
            raise ValueError("a conversation needs at least one turn")
        eos_ids = self._eos_ids()
        eos_texts = [t for t in self.tokenizer.convert_ids_to_tokens(eos_ids) if t]
        pieces: list[tuple[int, str]] = []  # (turn or -1 for context, text)
        messages: list[dict] = []
        rendered = ""
        for k, (question, answer) in enumerate(turns):
            if not isinstance(question, str):
                raise TypeError(f"turn {k}: question must be a str, got {type(question).__name__}")
            if self.image_token in question:
                raise ValueError(f"turn {k}: question must not contain the image token {self.image_token!r}")
            if answer is None and k != len(turns) - 1:
                raise ValueError(f"turn {k}: only the last turn may be unanswered")
            content = [{"type": "text", "text": question}]
            messages.append({"role": "user", "content": [{"type": "image"}, *content] if k == 0 else content})
            prompt = self._render(messages, add_generation_prompt=True)
            if not prompt.startswith(rendered):
                raise ValueError(f"chat template does not render turn {k} after the earlier turns (not incremental)")
            context = prompt[len(rendered) :]
            if pieces and pieces[-1][0] == -1:  # the text after the previous answer joins this context
                pieces[-1] = (-1, pieces[-1][1] + context)
            else:
                pieces.append((-1, context))
            if answer is None:
                break
            if not isinstance(answer, str):
                raise TypeError(f"turn {k}: answer must be a str, got {type(answer).__name__}")
            # What the template writes after an answer: rendered with a sentinel answer that no template text holds.
            marked = self._render([*messages, _assistant(_SENTINEL)], add_generation_prompt=False)
            if marked.count(_SENTINEL) != 1:
                raise ValueError(f"chat template does not render turn {k}'s answer text as given")
            messages.append(_assistant(answer))
            rendered = self._render(messages, add_generation_prompt=False)
            pieces.append((k, answer))
            after = marked[marked.index(_SENTINEL) + len(_SENTINEL) :]
            for eos in eos_texts:
                if after.startswith(eos):
                    after = after[len(eos) :]
                    break
            if after and k < len(turns) - 1:  # after the last answer nothing is predicted: nothing to add
                pieces.append((-1, after))
        first = pieces[0][1]
        if first.count(self.image_token) != 1:
            raise ValueError(f"chat template rendered {first.count(self.image_token)} image placeholders, expected 1")
        ids: list[torch.Tensor] = []
        turn_of: list[torch.Tensor] = []
        for i, (k, text) in enumerate(pieces):
            if k < 0:
                if i == 0:
                    text = text.replace(self.image_token, self.image_token * n_image_tokens)
                    bos = self.tokenizer.bos_token
                    add_special = not (bos and text.startswith(bos))  # a template that writes BOS itself: no second
                else:
                    add_special = False
                t = self.tokenizer(text, add_special_tokens=add_special, return_tensors="pt")["input_ids"][0]
            else:
                t = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
                t = torch.cat([t, t.new_tensor([eos_ids[0]])])
            ids.append(t)
            turn_of.append(torch.full_like(t, k))
        input_ids = torch.cat(ids)
        turn = torch.cat(turn_of)
        found = int((input_ids == self.spec.image_token_id).sum())
        if found != n_image_tokens:
            raise RuntimeError(f"prompt has {found} image tokens after tokenization, expected {n_image_tokens}")
        labels = torch.where(turn >= 0, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        return ConversationIds(input_ids=input_ids, labels=labels, turns=turn)

    def _render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def prepare_inputs(
        self,
        features,
        grid,
        image_size,
        question: str,
        answer: str | None = None,
        history: Sequence[tuple[str, str]] = (),
        detail: tuple | None = None,
    ) -> PreparedInputs:
        """Build the language model's input embeddings (and labels when ``answer`` is given, for training).

        Args:
            features: [T, n, d] per-tile features (torch or numpy float).
            grid: (rows, cols).
            image_size: (height, width).
            question: user text.
            answer: optional assistant answer appended after the generation prompt, followed by EOS.
            history: earlier (question, answer) turns about the same image, rendered before ``question`` by the chat
                template (their answers are context: not labelled).
            detail: (features, grid, image size) of a detailed crop of the same frame, arranged after the first view
                (two-stage answering; see ``image_embeddings``).

        Returns:
            PreparedInputs with L = prompt length (+ answer length + 1).
        """
        image_embeds = self.image_embeddings(features, grid, image_size, detail)  # [M, D]
        conv = self.conversation_ids([*history, (question, answer)], image_embeds.shape[0])
        ids = conv.input_ids.to(self.device)
        labels = torch.where(conv.turns == len(history), conv.labels, IGNORE_INDEX).to(self.device)
        mask = ids == self.spec.image_token_id
        embeds = self.language_model.get_input_embeddings()(ids)  # [L, D]
        # Same operation as the reference's masked_scatter: image rows replace the placeholder rows in order.
        embeds = embeds.masked_scatter(mask[:, None], image_embeds.to(embeds.dtype))
        return PreparedInputs(input_ids=ids, inputs_embeds=embeds, image_mask=mask, labels=labels)

    def logits(self, features, grid, image_size, question: str, answer: str | None = None) -> torch.Tensor:
        """Forward logits [L, V] for the prompt (plus answer, if given). Not under no_grad: the caller decides."""
        inputs = self.prepare_inputs(features, grid, image_size, question, answer)
        return self.forward_embeds(inputs.inputs_embeds)

    def forward_embeds(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Language-model logits for input embeddings: [L, D] → [L, V] (or [B, L, D] → [B, L, V])."""
        batched = inputs_embeds.dim() == 3
        embeds = inputs_embeds if batched else inputs_embeds[None]
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        out = self.language_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
        return out if batched else out[0]

    def generate(
        self,
        features,
        grid,
        image_size,
        question: str,
        options: GenerationOptions | None = None,
        *,
        on_tokens: Callable[[torch.Tensor], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> GenerationResult:
        """Generate an answer for per-tile features.

        Args:
            features: [T, n, d] per-tile features (n = n_v: reference packing; n < n_v: merged order).
            grid: (rows, cols).
            image_size: (height, width).
            question: user text.
            options: decoding options (greedy by default).
            on_tokens: called after every generated token with the ids so far [G] (streaming).
            should_stop: polled after every token; True ends generation there (``GenerationResult.stopped``).
        """
        return self.generate_batch(
            [(features, grid, image_size, question)],
            options,
            on_tokens=None if on_tokens is None else lambda _, ids: on_tokens(ids),
            should_stop=None if should_stop is None else lambda _: should_stop(),
        )[0]

    @torch.inference_mode()
    def generate_batch(
        self,
        prompts: Sequence[tuple],
        options: GenerationOptions | None = None,
        *,
        max_new_tokens: Sequence[int] | None = None,
        on_tokens: Callable[[int, torch.Tensor], None] | None = None,
        should_stop: Callable[[int], bool] | None = None,
    ) -> list[GenerationResult]:
        """Answer B prompts in one batched prefill and decode.

        The prompts are left-padded to the longest one, with an attention mask that hides the padding and
        position ids counted from each prompt's first real token, so every row sees exactly the keys, values and
        positions it sees alone: greedy answers equal one-at-a-time ``generate`` (tested on the tiny model; floating
        point can differ in the last bits with the batch's shapes, so a near-tie can in principle flip).

            prompts b = 0..B-1:  [pad … pad | prompt_b (L_b)]  → inputs_embeds [B, L_max, D], attention_mask [B, L_max]
            step t:              next token of every unfinished row; a row finishes at EOS, at its own token limit
                                 or when ``should_stop(b)``; finished rows are padded until all are done

        Args:
            prompts: B tuples (features [T, n, d], grid, image_size, question).
            options: decoding options shared by the batch (greedy by default).
            max_new_tokens: B per-row limits (each at most ``options.max_new_tokens``); None: the option for all.
            on_tokens: called after every step with (row, that row's ids so far [G_b]) for each row that got a token.
            should_stop: polled with the row after each of its tokens; True finishes that row there.

        Returns:
            B GenerationResults, in prompt order.
        """
        inputs = [self.prepare_inputs(*prompt) for prompt in prompts]
        return self.generate_prepared(
            inputs, options, max_new_tokens=max_new_tokens, on_tokens=on_tokens, should_stop=should_stop
        )

    @torch.inference_mode()
    def generate_prepared(
        self,
        inputs: Sequence[PreparedInputs],
        options: GenerationOptions | None = None,
        *,
        max_new_tokens: Sequence[int] | None = None,
        on_tokens: Callable[[int, torch.Tensor], None] | None = None,
        should_stop: Callable[[int], bool] | None = None,
    ) -> list[GenerationResult]:
        """``generate_batch`` for inputs already built by ``prepare_inputs`` (a caller that answers each prompt's
        own failure separately prepares them one by one first)."""
        from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        options = options or GenerationOptions()
        if not inputs:
            return []
        limits = [options.max_new_tokens] * len(inputs) if max_new_tokens is None else list(max_new_tokens)
        if len(limits) != len(inputs) or any(not 1 <= n <= options.max_new_tokens for n in limits):
            raise ValueError(
                f"max_new_tokens must give one limit in 1..{options.max_new_tokens} per prompt, got {limits}"
            )
        lengths = [int(i.inputs_embeds.shape[0]) for i in inputs]
        longest, width = max(lengths), inputs[0].inputs_embeds.shape[1]
        embeds = inputs[0].inputs_embeds.new_zeros(len(inputs), longest, width)
        mask = torch.zeros(len(inputs), longest, dtype=torch.long, device=embeds.device)
        for b, (prepared, n) in enumerate(zip(inputs, lengths)):
            embeds[b, longest - n :] = prepared.inputs_embeds
            mask[b, longest - n :] = 1
        stops = options.stop_strings
        tracker = _RowTracker(
            self._eos_ids(),
            limits,
            on_tokens,
            should_stop,
            # Stop strings are checked here, per row, rather than by transformers' StopStringCriteria: a row it
            # finished would be padded, and padding cannot be told from tokens when the tracker reads the rows.
            (lambda ids: any(stop in self.tokenizer.decode(ids, skip_special_tokens=True) for stop in stops))
            if stops
            else None,
        )
        kwargs = dict(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=max(limits),
            do_sample=options.do_sample,
            eos_token_id=self._eos_ids(),
            pad_token_id=self._pad_id(),
            repetition_penalty=options.repetition_penalty,
            stopping_criteria=StoppingCriteriaList([_as_criterion(tracker, StoppingCriteria)]),
            # Each step's final scores (after HF's own processors) reach the tracker, which keeps only the chosen
            # tokens' uncertainty (two-stage answering's confidence): no second pass, and no [steps, B, V] scores
            # kept as output_scores would.
            logits_processor=LogitsProcessorList([_as_observer(tracker, LogitsProcessor)]),
        )
        if options.do_sample:
            kwargs.update(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k)
        else:  # override any sampling defaults in the checkpoint's generation_config
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.random.fork_rng(devices=self._rng_devices(), enabled=options.seed is not None):
            if options.seed is not None:
                torch.manual_seed(options.seed)
            self.language_model.generate(**kwargs)
        # With inputs_embeds only, decoder-only generate returns just the new tokens; the tracker holds each row's
        # own (what it saw before padding, cut at its EOS, limit or stop).
        out = []
        for prepared, ids, stopped, unsure in zip(inputs, tracker.ids, tracker.stopped, tracker.uncertainty):
            per_token = torch.stack(unsure) if unsure else torch.zeros(0, 3, dtype=torch.float64)
            out.append(
                GenerationResult(
                    text=self.answer_text(torch.tensor(ids, dtype=torch.long), options),
                    token_ids=torch.tensor(ids, dtype=torch.long),
                    prompt_tokens=int(prepared.input_ids.shape[0]),
                    image_tokens=int(prepared.image_mask.sum()),
                    stopped=stopped,
                    uncertainty=answer_uncertainty(per_token, ids, self._eos_ids()) if unsure else float("nan"),
                    token_uncertainty=per_token,
                )
            )
        return out

    @torch.inference_mode()
    def attention_to_image(self, prepared: PreparedInputs, answer_ids: torch.Tensor) -> torch.Tensor:
        """Where the answer looked: the attention of the positions that produced ``answer_ids`` over the prompt's image
        positions, one teacher-forced pass with eager attention (``evidence.image_attention``): [M], summing to 1."""
        answer_ids = answer_ids.to(self.device)
        if answer_ids.numel() == 0:
            raise ValueError("an empty answer attends to nothing")
        embed = self.language_model.get_input_embeddings()
        embeds = torch.cat([prepared.inputs_embeds, embed(answer_ids).to(prepared.inputs_embeds.dtype)])[None]
        n_prompt = prepared.inputs_embeds.shape[0]
        queries = torch.arange(n_prompt - 1, n_prompt - 1 + answer_ids.numel(), device=self.device)
        mask = torch.cat([prepared.image_mask, torch.zeros_like(answer_ids, dtype=torch.bool)])
        with eager_attention(self.language_model) as lm:
            out = lm(inputs_embeds=embeds, output_attentions=True, use_cache=False)
        return image_attention(out.attentions, mask, queries)

    def answer_text(self, token_ids: torch.Tensor, options: GenerationOptions | None = None) -> str:
        """The answer text of generated ids [G]: special tokens removed, cut at a stop string, stripped."""
        options = options or GenerationOptions()
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        for stop in options.stop_strings:
            cut = text.find(stop)
            if cut >= 0:
                text = text[:cut]
        return text.strip()

    def answer(self, features, grid, image_size, question: str, options: GenerationOptions | None = None) -> str:
        """Answer text for per-tile features (see ``generate``)."""
        return self.generate(features, grid, image_size, question, options).text

    # ------------------------------------------------------------------------------------------------ helpers
    def _as_features(self, features) -> torch.Tensor:
        if isinstance(features, np.ndarray):
            if not np.issubdtype(features.dtype, np.floating):
                raise TypeError(f"features must be floating point, got {features.dtype}")
            features = torch.from_numpy(features)
        if not isinstance(features, torch.Tensor):
            raise TypeError(f"features must be a torch.Tensor or numpy array, got {type(features).__name__}")
        if not features.is_floating_point():
            raise TypeError(f"features must be floating point, got {features.dtype}")
        if features.dim() != 3 or features.shape[2] != self.spec.vision_dim:
            raise ValueError(f"features must be [T, n, {self.spec.vision_dim}], got {tuple(features.shape)}")
        return features.to(self.device, self.dtype)

    def _eos_ids(self) -> list[int]:
        eos = self.language_model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ValueError("neither the generation config nor the tokenizer defines an EOS token")
        return list(eos) if isinstance(eos, (list, tuple)) else [int(eos)]

    def _pad_id(self) -> int:
        pad = self.language_model.generation_config.pad_token_id
        if pad is None:
            pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else self._eos_ids()[0]

    def _rng_devices(self) -> list:
        return [self.device] if self.device.type == "cuda" else []


class _RowTracker:
    """Each row's generated ids, finish point and streaming, fed by ``generate``'s stopping-criteria hook.

    HF's loop appends one token per row per step (padding for finished rows), then asks the stopping criteria which
    rows are done: that call sees every row's newest token before the next step, so it is where rows are followed,
    streamed and stopped.
    """

    def __init__(self, eos_ids: list[int], limits: list[int], on_tokens, should_stop, stop_text=None) -> None:
        self.eos = set(eos_ids)
        self.limits = limits
        self.on_tokens = on_tokens
        self.should_stop = should_stop
        self.stop_text = stop_text
        self.ids: list[list[int]] = [[] for _ in limits]
        self.uncertainty: list[list[torch.Tensor]] = [[] for _ in limits]
        self.done = [False] * len(limits)
        self.stopped = [False] * len(limits)
        self._step: torch.Tensor | None = None  # [B, 3] of the scores the newest tokens were chosen from

    def observe(self, scores: torch.Tensor) -> None:
        """This step's final scores [B, V], before a token is chosen from them."""
        self._step = token_uncertainty(scores.float())

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        newest = input_ids[:, -1].tolist()
        step, self._step = self._step, None
        for b, token in enumerate(newest):
            if self.done[b]:
                continue
            self.ids[b].append(int(token))
            if step is not None:
                self.uncertainty[b].append(step[b].cpu())
            if self.on_tokens is not None:
                self.on_tokens(b, torch.tensor(self.ids[b], dtype=torch.long))
            finished = int(token) in self.eos or len(self.ids[b]) >= self.limits[b]
            if finished or (self.stop_text is not None and self.stop_text(self.ids[b])):
                self.done[b] = True
            elif self.should_stop is not None and self.should_stop(b):
                self.done[b] = self.stopped[b] = True
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


def _as_observer(tracker: _RowTracker, base):
    """The tracker's ``observe`` as a transformers ``LogitsProcessor`` that returns the scores unchanged."""

    class _Observer(base):
        def __call__(self, input_ids, scores):
            tracker.observe(scores)
            return scores

    return _Observer()


def _as_criterion(tracker: _RowTracker, base):
    """The tracker as a transformers ``StoppingCriteria`` (imported lazily, like the rest of transformers here)."""

    class _Criterion(base):
        def __call__(self, input_ids, scores=None, **kwargs):
            return tracker(input_ids, scores, **kwargs)

    return _Criterion()
