"""Tiny LLaVA-OneVision and LLaVA-1.5 checkpoints built offline, for tests and the demo.

The tiny models use the *same classes* as the real llava-hf checkpoints (LlavaOnevisionForConditionalGeneration with a
SigLIP vision tower and a Qwen2 language model; LlavaForConditionalGeneration with a CLIP vision tower and a Llama
language model). Only the widths and depths shrink: the vision geometry (384² tiles with 14-pixel patches → a 27×27
grid for OneVision, 336² with 14-pixel patches → 24×24 + CLS for LLaVA-1.5) is the real one, so tiling, token counts
and packing are exercised exactly as for the full-size models.

The tokenizer is a byte-level BPE trained with the `tokenizers` library on a small fixed corpus (no download), wrapped
as a PreTrainedTokenizerFast with the special tokens and a chat template in the style of the real model family.

Everything is seeded: ``save_tiny_model(kind, out_dir, seed)`` writes byte-identical weights for the same arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

__all__ = [
    "TINY_KINDS",
    "IMAGE_TOKEN",
    "build_tiny_tokenizer",
    "tiny_config",
    "build_tiny_model",
    "save_tiny_model",
]

TinyKind = Literal["onevision", "llava15"]
TINY_KINDS: tuple[str, ...] = ("onevision", "llava15")

IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"

# Special tokens get the first ids, in this order, for both families (ids are fixed so configs can name them).
_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",  # 0: Qwen2-style pad / end of text
    "<|im_start|>",  # 1
    "<|im_end|>",  # 2: Qwen2-style end of turn (OneVision EOS)
    IMAGE_TOKEN,  # 3
    VIDEO_TOKEN,  # 4
    "<s>",  # 5: Llama-style BOS
    "</s>",  # 6: Llama-style EOS
    "<unk>",  # 7
    "<pad>",  # 8
)
_TOKEN_ID = {tok: i for i, tok in enumerate(_SPECIAL_TOKENS)}

# A fixed training corpus: chat scaffolding plus the easy-vqa vocabulary, so that frequent words become single tokens.
_CORPUS_LINES: tuple[str, ...] = (
    "user assistant system USER: ASSISTANT: You are a helpful assistant.",
    "What shape is in the image? What color is the shape? Is there a circle in the image?",
    "Is there a rectangle in the image? Is there a triangle in the image? Is the shape red?",
    "Does the image contain a circle? Does the image not contain a triangle? What is the color of the shape?",
    "circle rectangle triangle red green blue black gray teal brown yellow yes no",
    "Describe the image. What is shown in this image? How many objects are there? The answer is",
    "a the an of in on is are this that there what which where how color shape image picture robot camera",
    "left right top bottom center near far door table chair person box cup bottle floor wall",
    "0 1 2 3 4 5 6 7 8 9 . , ? ! : ; ' \" ( ) - \n",
)

# Chat templates. Both accept `content` as a string or as a list of {"type": "text"|"image"} parts (the llava-hf
# convention) and emit one IMAGE_TOKEN per image part; the server expands it to the exact feature count.
_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>\\n' }}{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_LLAVA15_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>\\n' }}{% elif part['type'] == 'text' %}{{ part['text'] + ' ' }}"
    "{% endif %}{% endfor %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def build_tiny_tokenizer(kind: TinyKind, vocab_size: int = 512):
    """Build the tiny byte-level BPE tokenizer offline.

    Byte-level BPE never produces an unknown token, so any question text round-trips. Training on a fixed corpus is
    deterministic, so the vocabulary (and hence the model's embedding rows) is reproducible.

    Args:
        kind: "onevision" (Qwen2-style: no BOS, EOS = <|im_end|>) or "llava15" (Llama-style: BOS <s> prepended,
            EOS = </s>).
        vocab_size: target vocabulary size including the special tokens.

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with ``chat_template`` set.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    _check_kind(kind)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(_CORPUS_LINES), trainer=trainer)
    if kind == "llava15":
        # Llama tokenizers prepend BOS; the LLaVA-1.5 chat template relies on that (it does not write <s> itself).
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", _TOKEN_ID["<s>"])]
        )
        special = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
        template = _LLAVA15_CHAT_TEMPLATE
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        special = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>")
        template = _ONEVISION_CHAT_TEMPLATE
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        additional_special_tokens=[t for t in _SPECIAL_TOKENS if t not in special.values()],
        **special,
    )
    fast.chat_template = template
    return fast


def tiny_config(kind: TinyKind, vocab_size: int):
    """Tiny config of the real model class, with the real vision geometry.

    Args:
        kind: "onevision" or "llava15".
        vocab_size: the tokenizer's vocabulary size (the embedding table's rows).

    Returns:
        ``LlavaOnevisionConfig`` (SigLIP 384/14, 2 layers, hidden 64; Qwen2 hidden 64, 2 layers; layer −1, "full",
        anyres_max_9 with the default 36 grid pinpoints) or ``LlavaConfig`` (CLIP 336/14, 3 layers, hidden 64; Llama
        hidden 64, 2 layers; layer −2, "default").
    """
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaOnevisionConfig,
        Qwen2Config,
        SiglipVisionConfig,
    )

    _check_kind(kind)
    text_kwargs = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=16384,  # a 37-tile image has ~7k image tokens with merging off
        tie_word_embeddings=False,
    )
    if kind == "onevision":
        vision = SiglipVisionConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=384,
            patch_size=14,
        )
        text = Qwen2Config(
            **text_kwargs,
            bos_token_id=None,
            eos_token_id=_TOKEN_ID["<|im_end|>"],
            pad_token_id=_TOKEN_ID["<|endoftext|>"],
        )
        return LlavaOnevisionConfig(
            vision_config=vision,
            text_config=text,
            image_token_id=_TOKEN_ID[IMAGE_TOKEN],
            video_token_id=_TOKEN_ID[VIDEO_TOKEN],
            vision_feature_layer=-1,
            vision_feature_select_strategy="full",
            vision_aspect_ratio="anyres_max_9",
            tie_word_embeddings=False,
        )
    vision = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,  # 3 so that layer −2 leaves one layer not computed on the device
        num_attention_heads=4,
        image_size=336,
        patch_size=14,
        projection_dim=32,
    )
    text = LlamaConfig(
        **text_kwargs,
        bos_token_id=_TOKEN_ID["<s>"],
        eos_token_id=_TOKEN_ID["</s>"],
        pad_token_id=_TOKEN_ID["<pad>"],
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=_TOKEN_ID[IMAGE_TOKEN],
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )


def build_tiny_image_processor(kind: TinyKind):
    """The PIL image processor of the real model family (no torchvision).

    OneVision: anyres tiling with the default 36 pinpoints plus a 384² thumbnail. LLaVA-1.5: pad to a square with the
    mean colour, resize to 336² (the LLaVA-1.5 paper's "pad" preprocessing).
    """
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    _check_kind(kind)
    if kind == "onevision":
        return LlavaOnevisionImageProcessorPil()
    return LlavaImageProcessorPil(
        do_pad=True,
        size={"shortest_edge": 336},
        crop_size={"height": 336, "width": 336},
        do_center_crop=True,
    )


def build_tiny_model(kind: TinyKind, seed: int = 0):
    """Build a seeded tiny model, its tokenizer and image processor in memory.

    Returns:
        (model, tokenizer, image_processor).
    """
    from transformers import LlavaForConditionalGeneration, LlavaOnevisionForConditionalGeneration

    tokenizer = build_tiny_tokenizer(kind)
    config = tiny_config(kind, vocab_size=len(tokenizer))
    cls = LlavaOnevisionForConditionalGeneration if kind == "onevision" else LlavaForConditionalGeneration
    # fork_rng: seeding must not leak into the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    model.eval()
    eos = config.text_config.eos_token_id
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.do_sample = False
    return model, tokenizer, build_tiny_image_processor(kind)


def save_tiny_model(kind: TinyKind, out_dir: str | Path, seed: int = 0) -> Path:
    """Build a tiny model and write it in llava-hf layout (config, safetensors, tokenizer, preprocessor config).

    Args:
        kind: "onevision" or "llava15".
        out_dir: target directory (created).
        seed: weight-initialisation seed.

    Returns:
        The directory, loadable by ``load_device_half`` / ``load_server_half`` and by ``from_pretrained``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer, image_processor = build_tiny_model(kind, seed)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)
    return out


def _check_kind(kind: str) -> None:
    if kind not in TINY_KINDS:
        raise ValueError(f"kind must be one of {TINY_KINDS}, got {kind!r}")


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m tofc_ros.backbones.tiny --kind onevision --out models/tiny-ov [--seed 0]``."""
    import argparse

    parser = argparse.ArgumentParser(description="Write a tiny LLaVA checkpoint (llava-hf layout) for tests and demos.")
    parser.add_argument("--kind", choices=TINY_KINDS, required=True)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(save_tiny_model(args.kind, args.out, args.seed))


if __name__ == "__main__":
    main()
