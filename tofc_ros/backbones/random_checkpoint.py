"""Full-size llava-hf checkpoints with random weights, written offline: the real architecture without the real weights.

No pretrained weights are reachable here (no hub), but what breaks at full size (memory, key layouts, tied
embeddings, the 26-layer tower's truncation, anyres at 1152 wide, LoRA at rank 64, bf16) does not depend on the
weights' values. ``onevision_0_5b_config`` is llava-onevision-qwen2-0.5b-ov-hf's architecture:

    vision   SigLIP-SO400M/14 at 384²: hidden 1152, MLP 4304, 16 heads, 26 layers (transformers' LlavaOnevisionConfig
             default and the llava-hf checkpoint: SO400M has 27 layers, but LLaVA-OneVision reads layer −2, so the
             conversion keeps 26 and reads the last; the 27th is never computed), no pooling head; "full" selection
    text     Qwen2-0.5B: hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864, vocabulary 151,936, tied embeddings
             (no lm_head tensor is stored), RoPE θ = 10⁶
    joint    GELU projector 1152 → 896 → 896, image_newline, anyres_max_9 over the 36 default pinpoints

The tokenizer is the tiny byte-level BPE of ``backbones.tiny`` (its ids name the image token and EOS; the embedding
table keeps the real 151,936 rows). Weights: normal(0, 0.02), norms 1, biases 0, seeded, written in bf16 in either key
layout the loaders claim to read (``loading`` module docstring):

    legacy            vision_tower.vision_model.X, multi_modal_projector.X, language_model.model.X, image_newline
    model-prefixed    model.vision_tower.vision_model.X, model.multi_modal_projector.X, model.language_model.X,
                      model.image_newline                                            (transformers ≥ 4.52)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from .loading import canonical_key

__all__ = ["LAYOUTS", "onevision_0_5b_config", "random_state", "layout_key", "save_random_checkpoint"]

LAYOUTS = ("legacy", "model-prefixed")


def onevision_0_5b_config(vocab_size: int = 151936, image_token_id: int = 3, eos_token_id: int = 2, pad_token_id=0):
    """``LlavaOnevisionConfig`` of llava-onevision-qwen2-0.5b-ov-hf (token ids: the offline tokenizer's)."""
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    vision = SiglipVisionConfig(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=26,
        num_attention_heads=16,
        image_size=384,
        patch_size=14,
        layer_norm_eps=1e-6,
        vision_use_head=False,
    )
    text = Qwen2Config(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    return LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=image_token_id,
        video_token_id=image_token_id + 1,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )


def _init(name: str, shape: torch.Size, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed ^ int.from_bytes(hashlib.blake2b(name.encode(), digest_size=7).digest()))
    leaf = name.rsplit(".", 2)
    if name.endswith(".bias"):
        return torch.zeros(shape)
    if len(shape) == 1 and ("norm" in name or "layernorm" in name):
        return torch.ones(shape)
    if leaf[-1] == "image_newline":
        return torch.randn(shape, generator=gen) / shape[0] ** 0.5
    return torch.randn(shape, generator=gen) * 0.02


def random_state(config, seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """Every stored tensor of the model (canonical keys; no lm_head when embeddings are tied), seeded per name."""
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    tied = bool(config.get_text_config().tie_word_embeddings)
    state = {}
    for name, tensor in model.state_dict().items():
        key = canonical_key(name)
        if tied and key == "lm_head.weight":
            continue
        state[key] = _init(key, tensor.shape, seed).to(dtype)
    return state


def layout_key(canonical: str, layout: str) -> str:
    """A canonical key as stored in ``layout``."""
    head, _, rest = canonical.partition(".")
    if layout == "legacy":
        if head == "vision_tower":
            return f"vision_tower.vision_model.{rest}"
        if head == "language_model":
            return f"language_model.model.{rest}"
        return f"language_model.{canonical}" if head == "lm_head" else canonical
    if layout == "model-prefixed":
        if head == "vision_tower":
            return f"model.vision_tower.vision_model.{rest}"
        return canonical if head == "lm_head" else f"model.{canonical}"
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def save_random_checkpoint(
    out_dir: str | Path, layout: str = "legacy", seed: int = 0, state: dict | None = None, config=None
) -> Path:
    """Write a full-size random llava-hf directory (config, model.safetensors in bf16, tokenizer, preprocessor).

    Args:
        out_dir: the directory (created).
        layout: one of LAYOUTS.
        seed: weight seed (ignored when ``state`` is given).
        state: canonical tensors from ``random_state`` (to write the same weights in several layouts).
        config: default ``onevision_0_5b_config`` with the offline tokenizer's ids.
    """
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    from .tiny import build_tiny_image_processor, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer("onevision")
    if config is None:
        config = onevision_0_5b_config(
            image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        )
    state = random_state(config, seed) if state is None else state
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    text = config.get_text_config()
    GenerationConfig(eos_token_id=text.eos_token_id, pad_token_id=text.pad_token_id, do_sample=False).save_pretrained(
        out
    )
    save_file({layout_key(k, layout): v for k, v in state.items()}, str(out / "model.safetensors"), {"format": "pt"})
    tokenizer.save_pretrained(out)
    build_tiny_image_processor("onevision").save_pretrained(out)
    return out
