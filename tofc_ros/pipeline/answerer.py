"""The server's answerers: a decoded frame + a question in, the answer text out (no rclpy).

    ModelAnswerer:        features [T, C, d] (or pixels through the server's own vision tower)
                          -> projector -> token order -> LLM -> greedy answer           (answer)
                          several (frame, question) tasks in one batched prefill and decode, each streamed
                          token by token and stoppable on its own                        (answer_batch)
                          the same prompt and model, teacher-forced over every question of a frame at once
                          -> exact match of greedy generation, without generating        (score)
    PlaceholderAnswerer:  describes placeholder pixels and says plainly that no language model ran.

``build_server`` makes the decoder and the answerer a ServerConfig asks for; the server node, the offline replay,
rate-accuracy and latency evaluation and the benchmarks all answer through them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tofc_ros.pipeline.decoder import FrameDecoder
from tofc_ros.pipeline.records import DecodedFrame

__all__ = [
    "Answered",
    "AnswerTask",
    "Answerer",
    "BatchAnswerer",
    "ModelAnswerer",
    "PlaceholderAnswerer",
    "build_server",
    "model_server",
]

PLACEHOLDER_FORMAT = "placeholder-zstd/1"


class Answerer(Protocol):
    """What the server calls for every question paired with a decoded frame."""

    def answer(self, frame: DecodedFrame, question: str) -> str:
        """Answer ``question`` about ``frame``."""
        ...


@dataclass(frozen=True, eq=False)
class AnswerTask:
    """One question for ``BatchAnswerer.answer_batch``.

    Attributes:
        frame: the decoded frame.
        question: the question text.
        max_new_tokens: the asker's limit (0: the answerer's own; never above it).
        on_text: called with the answer so far after every generated token (streaming); must not raise.
        stop: polled after every generated token; True ends this answer where it is.
        history: earlier (question, answer) turns about the same frame, rendered before ``question`` by the chat
            template (offline evaluation of multi-turn conversations; the nodes ask single questions).
        detail: the robot's detailed crop of the same frame, answered from after the frame's own tokens (two-stage
            answering's second pass).
        look_above: find where the answer looked (``Answered.token_weights``) when its uncertainty is above this
            (two-stage answering's first pass); None: never.
    """

    frame: DecodedFrame
    question: str
    max_new_tokens: int = 0
    on_text: Callable[[str], None] | None = None
    stop: Callable[[], bool] | None = None
    history: tuple[tuple[str, str], ...] = ()
    detail: DecodedFrame | None = None
    look_above: float | None = None


@dataclass(frozen=True, eq=False)
class Answered:
    """What ``answer_batch`` gives for one task: the text, whether ``stop`` ended it early, how sure it was, and
    (when asked) where it looked: one weight per token of the frame's payload, payload order, summing to 1."""

    text: str
    stopped: bool = False
    tokens: int = 0
    uncertainty: float = float("nan")
    token_weights: np.ndarray | None = None
    token_uncertainty: np.ndarray | None = None  # [A, 3] per answer token (EOS excluded): min-entropy, entropy, 1-p


class BatchAnswerer(Protocol):
    """An answerer that also answers several tasks together (the server core uses it when present)."""

    def answer_batch(self, tasks: Sequence[AnswerTask]) -> list[Answered | Exception]:
        """Answer every task; a task that fails gets its exception in its place, the others their answers."""
        ...


class PlaceholderAnswerer:
    """Describes placeholder payloads (lossless pixels), saying that no language model ran."""

    def answer(self, frame: DecodedFrame, question: str) -> str:
        rgb = frame.rgb
        mean = np.round(rgb.reshape(-1, 3).mean(axis=0)).astype(int)
        return (
            f"[placeholder: no language model loaded] {rgb.shape[1]}x{rgb.shape[0]} image, "
            f"mean colour RGB({mean[0]}, {mean[1]}, {mean[2]})"
        )


class ModelAnswerer:
    """Answer with the LLaVA server half: decoded features, or pixels through its vision tower.

    Args:
        server_half: the projector + LLM side (tofc_ros.backbones.ServerHalf), with ``vision`` loaded for images.
        options: generation options (tofc_ros.backbones.GenerationOptions).
    """

    def __init__(self, server_half, options=None) -> None:
        from tofc_ros.backbones import GenerationOptions
        from tofc_ros.backbones.answer_scoring import PromptCache

        self.server_half = server_half
        self.options = options or GenerationOptions()
        self._prompts = PromptCache(server_half)

    def _features(self, frame: DecodedFrame):
        """(features [T, n, d], grid, image size) of a frame; images go through the server's vision tower, and
        features cut inside the tower (AlignedVQ) through the rest of it."""
        if frame.features is not None:
            features = self.server_half.finish_vision(frame.features, frame.header.vision_layers)
            return features, frame.header.grid, frame.header.image_size
        vision = self.server_half.encode_image(frame.rgb)
        return vision.features, vision.grid, vision.image_size

    def answer(self, frame: DecodedFrame, question: str) -> str:
        features, grid, size = self._features(frame)
        return self.server_half.answer(features, grid, size, question, self.options)

    def answer_batch(self, tasks: Sequence[AnswerTask]) -> list[Answered | Exception]:
        """Answer the tasks in one batched prefill and decode (``ServerHalf.generate_prepared``).

        Each task's prompt is built on its own first, so a frame that fails there (a vision tower missing, a shape)
        fails alone; a failure of the batched generation itself is every remaining task's. Greedy answers equal
        ``answer`` one at a time.
        """
        import torch

        out: list[Answered | Exception | None] = [None] * len(tasks)
        rows, prepared = [], []
        with torch.inference_mode():
            for i, task in enumerate(tasks):
                try:
                    detail = None if task.detail is None else self._features(task.detail)
                    prepared.append(
                        self.server_half.prepare_inputs(
                            *self._features(task.frame), task.question, history=tuple(task.history), detail=detail
                        )
                    )
                    rows.append(i)
                except Exception as exc:  # this task's own failure
                    out[i] = exc
        if rows:
            limit = self.options.max_new_tokens
            limits = [min(tasks[i].max_new_tokens or limit, limit) for i in rows]

            def on_tokens(row: int, ids) -> None:
                task = tasks[rows[row]]
                if task.on_text is not None:
                    task.on_text(self.server_half.answer_text(ids, self.options))

            def should_stop(row: int) -> bool:
                task = tasks[rows[row]]
                return task.stop is not None and bool(task.stop())

            try:
                streamed = any(tasks[i].on_text is not None for i in rows)  # else no per-token text to build
                results = self.server_half.generate_prepared(
                    prepared,
                    self.options,
                    max_new_tokens=limits,
                    on_tokens=on_tokens if streamed else None,
                    should_stop=should_stop,
                )
            except Exception as exc:  # the batch as a whole failed
                for i in rows:
                    out[i] = exc
            else:
                for i, result, inputs in zip(rows, results, prepared, strict=True):
                    try:
                        weights = self._looked_at(tasks[i], inputs, result)
                    except Exception as exc:  # this answer's own failure
                        out[i] = exc
                        continue
                    tokens = int(result.token_ids.shape[0])
                    per_token = None
                    if result.token_uncertainty is not None and len(result.token_uncertainty):
                        eos = set(self.server_half._eos_ids())
                        said = [j for j, t in enumerate(result.token_ids.tolist()) if t not in eos]
                        per_token = result.token_uncertainty[said].numpy()
                    out[i] = Answered(result.text, result.stopped, tokens, result.uncertainty, weights, per_token)
        return out

    def _looked_at(self, task: AnswerTask, inputs, result) -> np.ndarray | None:
        """Where an unsure answer looked, per token of the frame's payload (None when not asked, or sure enough)."""
        from tofc_ros.backbones.evidence import image_token_sources

        if task.look_above is None or result.stopped or not result.uncertainty > task.look_above:
            return None
        eos = set(self.server_half._eos_ids())
        ids = result.token_ids[: max(1, sum(1 for t in result.token_ids.tolist() if t not in eos))]
        over_image = self.server_half.attention_to_image(inputs, ids).numpy()  # [M], prompt order
        header = task.frame.header
        if task.frame.features is None or header.vision_layers != self.server_half.spec.vision_layers_needed:
            return None  # pixels, or a cut inside the tower: the device has no token -> pixel map for these
        t, n, _ = header.feature_shape
        sources = image_token_sources(self.server_half.spec, t, n, header.grid, header.image_size)
        weights = np.zeros(t * n, dtype=np.float64)
        keep = sources >= 0  # newline positions are no payload token
        np.add.at(weights, sources[keep], over_image[: len(sources)][keep])
        return (weights / weights.sum()).astype(np.float32)

    def score(
        self,
        frames: Sequence[DecodedFrame],
        questions: Sequence[Sequence[str]],
        references: Sequence[Sequence[str]],
        dialogue: Sequence[bool] | None = None,
    ) -> list[list[bool]]:
        """Whether greedy ``answer`` would return each reference exactly, for every question of every frame.

        Teacher-forced: greedy decoding returns the reference iff every reference token and the EOS is the argmax
        given the reference prefix, so one pass over each frame's shared prompt prefix scores all its questions
        (``backbones.answer_scoring``; its equality with ``answer`` is tested). This holds for references shorter
        than ``options.max_new_tokens`` tokens (every data set here answers in one or two). ``dialogue[b]``: frame b's
        questions are the turns of one conversation (each judged after the reference turns before it).
        """
        import torch

        from tofc_ros.backbones.answer_scoring import answer_logits, answer_stats

        with torch.inference_mode():
            embeds = [self.server_half.image_embeddings(*self._features(f)) for f in frames]
            scores = answer_logits(self.server_half, self._prompts, embeds, questions, references, dialogue=dialogue)
            _, ok = answer_stats(scores)
        flat = ok.tolist()
        out, pos = [], 0
        for qs in questions:
            out.append(flat[pos : pos + len(qs)])
            pos += len(qs)
        return out


def build_server(config) -> tuple[FrameDecoder, Answerer]:
    """The decoder and answerer a ServerConfig asks for."""
    if config.answerer == "placeholder":
        return FrameDecoder(
            formats=[PLACEHOLDER_FORMAT], accept_images=True, max_pixels=config.max_image_pixels
        ), PlaceholderAnswerer()
    from tofc_ros.backbones import GenerationOptions, load_server_half
    from tofc_ros.codec.registry import load_codec
    from tofc_ros.resources import resolve_resource

    codecs = [load_codec(str(resolve_resource(config.codec_path)), device=config.device)] if config.codec_path else []
    if config.alignedvq_path:  # codebooks for payloads cut inside the tower: the server runs the rest of it
        codecs.append(load_codec(str(resolve_resource(config.alignedvq_path)), device=config.device))
    server_half = load_server_half(
        resolve_resource(config.model_path),
        dtype=config.dtype,
        device=config.device,
        load_vision=config.load_vision,
        vision_splits=[c.split_layer for c in codecs if getattr(c, "split_layer", None) is not None],
    )
    if config.operating_points:  # an adaptive device's bundle: the server decodes every point of it
        from tofc_ros.codec.points import OperatingPoints

        held = {c.fingerprint for c in codecs}
        bundle = OperatingPoints.load(resolve_resource(config.operating_points), device=config.device)
        codecs += [c for c in bundle.learned_codecs() if c.fingerprint not in held]
    return model_server(
        server_half,
        codecs,
        GenerationOptions(max_new_tokens=config.max_new_tokens),
        accept_images=config.load_vision,
        max_pixels=config.max_image_pixels,
    )


def model_server(server_half, codecs, options=None, *, accept_images: bool, max_pixels: int | None = None):
    """(FrameDecoder, ModelAnswerer) around a loaded server half: the one place both are made, for the server node
    (``build_server``) and offline evaluation (``eval.deployment``) alike."""
    limits = {} if max_pixels is None else {"max_pixels": max_pixels}
    decoder = FrameDecoder(
        codecs,
        server_half.spec,
        server_half.fingerprint,
        accept_images=accept_images,
        splits=server_half.vision_tails,
        **limits,
    )
    return decoder, ModelAnswerer(server_half, options)
